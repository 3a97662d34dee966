//! The Asterisk farm: which node takes a new call or subscription, which nodes are alive,
//! drained or overloaded, and the pings and replayed registrations that keep it so.
//!
//! One [`Farm`] is shared by every worker (and read by the admin API). Its node set
//! ([`NodeSet`]: the nodes with their weights and the farm settings) is swapped whole by a
//! reload; each [`Node`] holds its state in atomics, so the hot path (one [`Farm::pick`]
//! per new call) takes no lock and allocates nothing. Whatever changes a node's health, the
//! node set or the settings bumps [`Farm::generation`] and wakes every worker (the waker
//! the server installs), so each re-checks its pending branches to nodes now down.
//!
//! - **Choice.** Weighted rendezvous hashing ([`super::hrw`]) of an affinity key: the
//!   Call-ID or the caller (`call_affinity`), always the subscriber for subscriptions. Down,
//!   drained and busy nodes and those already tried are skipped, so losing a node moves
//!   only its own share.
//! - **Probing.** Every `probe_interval_ms` each node gets an OPTIONS ping from exactly one
//!   worker (the first to claim it with a compare-and-swap, [`Farm::due_probes`]); a ping
//!   still unanswered when the next is due, or answered 503, is a failure (see `node.rs`
//!   for the thresholds).
//! - **Back-pressure.** A node that answers 503 gets no new calls for its Retry-After
//!   (at most [`MAX_RETRY_AFTER_SECS`]) or `busy_backoff_ms`; a node whose smoothed time to
//!   first answer (calls' 100 Trying and pings) exceeds `busy_latency_ms` gets none for
//!   `busy_backoff_ms`. When every usable node is busy, [`Pick::Busy`] says for how long.
//! - **Drain.** A drained node gets no new calls or subscriptions; its dialogs, pings and
//!   forwarded REGISTERs go on.
//! - **Replay.** A node that comes back up, or joins by a reload, gets the registrations it
//!   should hold, paced (`replay.rs`).

mod node;
mod replay;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use super::hrw::{key_of, score};
use super::policy::RegisterMode;

pub use node::Node;
use node::{Transition, NEVER};
pub use replay::ReplayBatch;
use replay::Replays;

/// Most nodes a farm has (tried nodes are a 64-bit mask).
pub const MAX_NODES: usize = 64;

/// Longest Retry-After of a node's 503 the farm honours.
pub const MAX_RETRY_AFTER_SECS: u32 = 300;

/// What keeps a phone's calls on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Affinity {
    /// The Call-ID: calls spread evenly.
    #[default]
    CallId,
    /// The caller: a user's calls, pickups, parkings and hints meet on one node.
    User,
}

/// The farm's settings (from `[asterisk]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmSettings {
    pub nodes: Vec<SocketAddr>,
    /// One weight (≥ 1) per node; empty: all 1.
    pub weights: Vec<u32>,
    pub affinity: Affinity,
    /// Which nodes hold a registration (and so get it replayed).
    pub register_mode: RegisterMode,
    /// 0: no pings, every node counts as up.
    pub probe_interval_ms: u64,
    pub probe_failures: u32,
    pub probe_successes: u32,
    pub replay_rate_per_sec: u32,
    /// 0: no latency rule.
    pub busy_latency_ms: u64,
    pub busy_backoff_ms: u64,
}

impl Default for FarmSettings {
    fn default() -> Self {
        FarmSettings {
            nodes: Vec::new(),
            weights: Vec::new(),
            affinity: Affinity::CallId,
            register_mode: RegisterMode::All,
            probe_interval_ms: 5000,
            probe_failures: 3,
            probe_successes: 2,
            replay_rate_per_sec: 500,
            busy_latency_ms: 1000,
            busy_backoff_ms: 5000,
        }
    }
}

/// Settings a farm cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FarmError {
    #[error("asterisk.nodes: needs 1..=64 distinct nodes")]
    Nodes,
    #[error("asterisk.weights: needs one weight of at least 1 per node (or none)")]
    Weights,
}

impl FarmSettings {
    pub fn validate(&self) -> Result<(), FarmError> {
        let n = self.nodes.len();
        let distinct = self
            .nodes
            .iter()
            .enumerate()
            .all(|(i, a)| !self.nodes[..i].contains(a));
        if n == 0 || n > MAX_NODES || !distinct {
            return Err(FarmError::Nodes);
        }
        if !(self.weights.is_empty() || self.weights.len() == n) || self.weights.contains(&0) {
            return Err(FarmError::Weights);
        }
        Ok(())
    }

    fn weight(&self, i: usize) -> u32 {
        self.weights.get(i).copied().unwrap_or(1)
    }
}

/// The nodes and settings in force (swapped whole by a reload).
#[derive(Debug)]
pub struct NodeSet {
    nodes: Box<[Arc<Node>]>,
    settings: FarmSettings,
}

impl NodeSet {
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn settings(&self) -> &FarmSettings {
        &self.settings
    }

    fn find(&self, addr: SocketAddr) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.addr == addr)
    }
}

/// Where a new call or subscription goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Node number `index` (in the node set now in force) at `addr`.
    Node { index: usize, addr: SocketAddr },
    /// Every usable node is busy (back-pressure): answer 503 with this Retry-After.
    Busy { retry_after_secs: u32 },
    /// No node is up and undrained (or every one was tried).
    NoNode,
}

/// One node as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub addr: SocketAddr,
    pub weight: u32,
    pub up: bool,
    pub drained: bool,
    /// Milliseconds of back-pressure left (0: not busy).
    pub busy_ms: u64,
    pub last_ping_ms: Option<u64>,
    /// Smoothed time to first answer (ms).
    pub latency_ms: u64,
    pub pings_sent: u64,
    pub pings_answered: u64,
    pub pings_failed: u64,
    pub went_down: u64,
    pub came_up: u64,
    pub busy_count: u64,
    /// Milliseconds since the last health change (None: none since start).
    pub since_ms: Option<u64>,
    /// REGISTERs sent by a replay under way (None: no replay under way).
    pub replaying: Option<u64>,
    pub replayed: u64,
}

/// The farm (see the module docs). Share it (`Arc`) between workers and the admin API.
pub struct Farm {
    set: ArcSwap<NodeSet>,
    generation: AtomicU64,
    seq: AtomicU32,
    replays: Replays,
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Farm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Farm")
            .field("set", &self.set.load())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn build_set(s: &FarmSettings, keep: Option<&NodeSet>) -> (NodeSet, Vec<SocketAddr>) {
    let mut added = Vec::new();
    let nodes = s
        .nodes
        .iter()
        .enumerate()
        .map(|(i, &addr)| match keep.and_then(|k| k.find(addr)) {
            Some(n) => {
                n.weight.store(s.weight(i), Ordering::Relaxed);
                n.clone()
            }
            None => {
                added.push(addr);
                Arc::new(Node::new(addr, s.weight(i)))
            }
        })
        .collect();
    let set = NodeSet {
        nodes,
        settings: s.clone(),
    };
    (set, added)
}

impl Farm {
    pub fn new(settings: &FarmSettings) -> Result<Farm, FarmError> {
        settings.validate()?;
        let (set, _) = build_set(settings, None);
        Ok(Farm {
            set: ArcSwap::from_pointee(set),
            generation: AtomicU64::new(0),
            seq: AtomicU32::new(1),
            replays: Replays::new(),
            wake: OnceLock::new(),
        })
    }

    /// Install what wakes every worker after a change (once; later calls are ignored).
    pub fn set_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.wake.set(wake);
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(w) = self.wake.get() {
            w();
        }
    }

    /// Take new settings (a reload): nodes that stay keep their state, counters and drain
    /// flag; new nodes start up and get a replay of the registrations; removed nodes are
    /// forgotten. With probing switched off every node counts as up.
    pub fn reconfigure(&self, settings: &FarmSettings, now_ms: u64) -> Result<(), FarmError> {
        settings.validate()?;
        let old = self.set.load_full();
        let (set, added) = build_set(settings, Some(&old));
        if settings.probe_interval_ms == 0 {
            for n in set.nodes.iter() {
                self.apply(n, n.force_up(now_ms));
            }
        }
        self.set.store(Arc::new(set));
        self.replays.retain(|a| settings.nodes.contains(&a));
        for addr in added {
            tracing::info!(node = %addr, "Asterisk node added: replaying registrations to it");
            self.replays.start(addr);
        }
        self.changed();
        Ok(())
    }

    /// The node set now in force.
    pub fn node_set(&self) -> Arc<NodeSet> {
        self.set.load_full()
    }

    /// Changes whenever a node's health, the node set or the settings change.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The affinity key of a request from `user` with `call_id`: the subscriber for a
    /// subscription, else per `call_affinity`.
    pub fn key(&self, user: &str, call_id: &str, subscription: bool) -> u64 {
        let by_user = subscription || self.set.load().settings.affinity == Affinity::User;
        if by_user && !user.is_empty() {
            key_of(user)
        } else {
            key_of(call_id)
        }
    }

    /// The node for a new request with affinity `key`, skipping the nodes whose bit is set
    /// in `tried` (indices in the node set now in force), down, drained and busy ones.
    pub fn pick(&self, key: u64, tried: u64, now_ms: u64) -> Pick {
        let set = self.set.load();
        let mut best: Option<(f64, usize)> = None;
        let mut busy_until = NEVER;
        for (i, n) in set.nodes.iter().enumerate() {
            if tried & (1u64 << (i % MAX_NODES)) != 0 || n.is_down() || n.is_drained() {
                continue;
            }
            let until = n.busy_until();
            if until > now_ms {
                busy_until = busy_until.min(until);
                continue;
            }
            let s = score(key, n.key, n.weight.load(Ordering::Relaxed));
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, i));
            }
        }
        match best {
            Some((_, index)) => Pick::Node {
                index,
                addr: set.nodes[index].addr,
            },
            None if busy_until != NEVER => Pick::Busy {
                retry_after_secs: u32::try_from(busy_until.saturating_sub(now_ms).div_ceil(1000))
                    .unwrap_or(MAX_RETRY_AFTER_SECS)
                    .clamp(1, MAX_RETRY_AFTER_SECS),
            },
            None => Pick::NoNode,
        }
    }

    /// The node `user`'s REGISTER goes to in `hash` mode: the best-ranked node that is not
    /// down (drained and busy nodes still hold registrations).
    pub fn register_node(&self, user: &str) -> Option<SocketAddr> {
        let set = self.set.load();
        let key = key_of(user);
        set.nodes
            .iter()
            .filter(|n| !n.is_down())
            .map(|n| (score(key, n.key, n.weight.load(Ordering::Relaxed)), n.addr))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, a)| a)
    }

    /// Call `f` with every node that is not down (where `all`-mode REGISTERs go).
    pub fn for_each_up(&self, mut f: impl FnMut(SocketAddr)) {
        for n in self.set.load().nodes.iter().filter(|n| !n.is_down()) {
            f(n.addr);
        }
    }

    /// Whether `addr` is a node that is down.
    pub fn is_down(&self, addr: SocketAddr) -> bool {
        self.set.load().find(addr).is_some_and(|n| n.is_down())
    }

    /// Claim the pings due at `now_ms`: `f(node, seq)` for each one this caller must send
    /// (a previous ping still unanswered counts as a failure). Returns when the next ping
    /// is due ([`u64::MAX`]: probing off).
    pub fn due_probes(&self, now_ms: u64, mut f: impl FnMut(SocketAddr, u32)) -> u64 {
        let set = self.set.load();
        let s = &set.settings;
        if s.probe_interval_ms == 0 {
            return NEVER;
        }
        let mut next = NEVER;
        for n in set.nodes.iter() {
            let due = n.next_probe_ms.load(Ordering::Acquire);
            let claimed = due <= now_ms
                && n.next_probe_ms
                    .compare_exchange(
                        due,
                        now_ms + s.probe_interval_ms,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if !claimed {
                next = next.min(n.next_probe_ms.load(Ordering::Acquire).max(now_ms + 1));
                continue;
            }
            next = next.min(now_ms + s.probe_interval_ms);
            let seq = self.next_seq();
            let unanswered = n.probe_seq.swap(seq, Ordering::AcqRel);
            n.probe_sent_ms.store(now_ms, Ordering::Release);
            if unanswered != 0 {
                n.pings_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %n.addr, "Asterisk node left a ping unanswered");
                self.apply(n, n.record_failure(s.probe_failures, now_ms));
            }
            n.pings_sent.fetch_add(1, Ordering::Relaxed);
            f(n.addr, seq);
        }
        next
    }

    fn next_seq(&self) -> u32 {
        loop {
            let s = self.seq.fetch_add(1, Ordering::Relaxed);
            if s != 0 {
                return s;
            }
        }
    }

    /// The answer `code` to ping `seq` of `node` (late or unknown answers are ignored).
    pub fn on_probe_answer(&self, node: SocketAddr, seq: u32, code: u16, now_ms: u64) {
        let set = self.set.load();
        let Some(n) = set.find(node) else {
            return;
        };
        if seq == 0
            || n.probe_seq
                .compare_exchange(seq, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        n.pings_answered.fetch_add(1, Ordering::Relaxed);
        let s = &set.settings;
        if code == 503 {
            n.pings_failed.fetch_add(1, Ordering::Relaxed);
            self.apply(n, n.record_failure(s.probe_failures, now_ms));
            return;
        }
        let rtt = now_ms.saturating_sub(n.probe_sent_ms.load(Ordering::Acquire));
        n.last_ping_ms.store(rtt, Ordering::Relaxed);
        self.latency_sample(n, s, rtt, now_ms);
        self.apply(n, n.record_success(s.probe_successes, now_ms));
    }

    /// The transport could not reach `node` (a connection refused or reset): down at once.
    pub fn on_transport_error(&self, node: SocketAddr, now_ms: u64) {
        let set = self.set.load();
        if let Some(n) = set.find(node) {
            self.apply(n, n.force_down(now_ms));
        }
    }

    /// What `node` answered to a call or subscription (back-pressure, see the module
    /// docs): `code`, the time from the request to this response when it is the first
    /// one, and a 503's Retry-After.
    pub fn on_answer(
        &self,
        node: SocketAddr,
        code: u16,
        first_answer_ms: Option<u64>,
        retry_after_secs: Option<u32>,
        now_ms: u64,
    ) {
        let set = self.set.load();
        let Some(n) = set.find(node) else {
            return;
        };
        let s = &set.settings;
        if let Some(ms) = first_answer_ms {
            self.latency_sample(n, s, ms, now_ms);
        }
        if code == 503 {
            let hold = retry_after_secs.map_or(s.busy_backoff_ms, |r| {
                u64::from(r.clamp(1, MAX_RETRY_AFTER_SECS)) * 1000
            });
            if n.mark_busy(now_ms + hold, now_ms) {
                tracing::info!(node = %n.addr, hold_ms = hold, "Asterisk node answered 503: no new calls for it meanwhile");
            }
        }
    }

    fn latency_sample(&self, n: &Node, s: &FarmSettings, ms: u64, now_ms: u64) {
        let smoothed = n.add_latency(ms);
        if s.busy_latency_ms > 0 && smoothed > s.busy_latency_ms {
            // Start afresh after the pause, at half the limit, so one slow spell does not
            // keep the node out once it answers quickly again.
            n.latency_x8.store(s.busy_latency_ms * 4, Ordering::Relaxed);
            if n.mark_busy(now_ms + s.busy_backoff_ms, now_ms) {
                tracing::warn!(node = %n.addr, latency_ms = smoothed, limit_ms = s.busy_latency_ms, "Asterisk node answers slowly: no new calls for it meanwhile");
            }
        }
    }

    fn apply(&self, n: &Node, t: Transition) {
        match t {
            Transition::None => return,
            Transition::WentDown => {
                tracing::warn!(node = %n.addr, "Asterisk node is down: no calls or REGISTERs to it; calls waiting on it fail over");
                self.replays.cancel(n.addr);
            }
            Transition::CameUp => {
                tracing::info!(node = %n.addr, "Asterisk node is up again: replaying registrations to it");
                self.replays.start(n.addr);
            }
        }
        self.changed();
    }

    /// Drain (`true`) or undrain a node; `None` when `addr` is no node, else whether the
    /// flag changed.
    pub fn set_drained(&self, addr: SocketAddr, drained: bool) -> Option<bool> {
        let set = self.set.load();
        let n = set.find(addr)?;
        let changed = n.drained.swap(drained, Ordering::AcqRel) != drained;
        if changed {
            tracing::info!(node = %addr, drained, "Asterisk node drain changed: {}", if drained { "no new calls, its dialogs go on" } else { "new calls again" });
        }
        Some(changed)
    }

    /// The next replay batch due at `now_ms`, if any (see `replay.rs`).
    pub fn replay_claim(&self, now_ms: u64) -> Option<ReplayBatch> {
        let set = self.set.load();
        let s = &set.settings;
        let share = match s.register_mode {
            RegisterMode::All => 1,
            RegisterMode::Hash => set.nodes.len(),
        };
        let batch = self.replays.claim(now_ms, s.replay_rate_per_sec, share)?;
        if set.find(batch.node).is_none_or(|n| n.is_down()) {
            self.replays.cancel(batch.node);
            return None;
        }
        Some(batch)
    }

    /// A claimed batch was sent (`sent` REGISTERs; the listing goes on after `next`).
    pub fn replay_done(&self, node: SocketAddr, next: Option<Box<str>>, sent: u64) {
        if let Some(n) = self.set.load().find(node) {
            n.replayed.fetch_add(sent, Ordering::Relaxed);
        }
        if let Some(total) = self.replays.done(node, next, sent) {
            tracing::info!(%node, registrations = total, "replay of registrations to Asterisk node done");
        }
    }

    /// When the next ping or replay batch is due (monotonic ms; [`u64::MAX`]: nothing).
    pub fn next_due(&self) -> u64 {
        let set = self.set.load();
        let probes = if set.settings.probe_interval_ms == 0 {
            NEVER
        } else {
            set.nodes
                .iter()
                .map(|n| n.next_probe_ms.load(Ordering::Acquire))
                .min()
                .unwrap_or(NEVER)
        };
        probes.min(self.replays.next_due())
    }

    /// Every node's state at `now_ms` (monotonic).
    pub fn views(&self, now_ms: u64) -> Vec<NodeView> {
        let set = self.set.load();
        set.nodes
            .iter()
            .map(|n| {
                let ping = n.last_ping_ms.load(Ordering::Relaxed);
                let changed = n.changed_ms.load(Ordering::Relaxed);
                NodeView {
                    addr: n.addr,
                    weight: n.weight.load(Ordering::Relaxed),
                    up: !n.is_down(),
                    drained: n.is_drained(),
                    busy_ms: n.busy_until().saturating_sub(now_ms),
                    last_ping_ms: (ping != NEVER).then_some(ping),
                    latency_ms: n.latency_x8.load(Ordering::Relaxed) / 8,
                    pings_sent: n.pings_sent.load(Ordering::Relaxed),
                    pings_answered: n.pings_answered.load(Ordering::Relaxed),
                    pings_failed: n.pings_failed.load(Ordering::Relaxed),
                    went_down: n.went_down.load(Ordering::Relaxed),
                    came_up: n.came_up.load(Ordering::Relaxed),
                    busy_count: n.busy_count.load(Ordering::Relaxed),
                    since_ms: (changed != 0).then(|| now_ms.saturating_sub(changed)),
                    replaying: self.replays.progress(n.addr),
                    replayed: n.replayed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}
