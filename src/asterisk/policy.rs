//! REGFWD policy: when to tell Asterisk about a user, which node(s), with which Call-ID,
//! tag and CSeq.
//!
//! Per-user state (Call-ID kept across refreshes, From tag, last CSeq, when and with which
//! Expires Asterisk was last told) lives in a lock-striped `DashMap`, so any worker may call.
//! It exists only while the user is registered at Asterisk and is bounded by `max_users`
//! (past it, users are forwarded statelessly: fresh Call-ID, no throttle, counted).
//!
//! Throttle: a pure refresh (binding set unchanged) is forwarded only when the throttle
//! window has passed since the last REGISTER sent, or when forwarding now would extend
//! Asterisk's registration by more than one window. `held` = the Expires last sent, or
//! what Asterisk granted if less ([`RegFwd::on_asterisk_ok`]); `window` = half of `held`,
//! or `refresh_min_interval_secs` if smaller. So Asterisk never lapses while the phone
//! refreshes at least once per window, and a phone re-registering every 30 s with Expires
//! 3600 costs Asterisk one REGISTER per 30 minutes.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::hrw::{mix, node_key};
use super::message::{write_register, BuildError, RegisterMsg, Via};
// FNV-1a: stable everywhere (node choice must not change across restarts).
use crate::util::fnv::fnv1a;

/// Where forwarded REGISTERs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegisterMode {
    /// Every node (default).
    #[default]
    All,
    /// One node per user, chosen by rendezvous hashing of the user name (stable across
    /// restarts and processes; removing a node moves only its users).
    Hash,
}

/// What [`RegFwd`] needs from the lead's `[asterisk]` config.
#[derive(Debug, Clone)]
pub struct RegFwdSettings {
    pub nodes: Vec<SocketAddr>,
    /// `host:port` given to Asterisk as the phones' Contact.
    pub advertise: String,
    pub mode: RegisterMode,
    /// `asterisk.refresh_min_interval_secs`: `None` = half the Expires last sent, `Some(0)` =
    /// forward every refresh.
    pub refresh_min_interval_secs: Option<u32>,
    pub user_agent: String,
    /// Users tracked at most (bounds memory).
    pub max_users: usize,
}

/// Settings [`RegFwd::new`] cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegFwdError {
    #[error("asterisk.nodes: needs 1..=64 nodes")]
    Nodes,
    #[error("asterisk.advertise: must be a concrete host:port")]
    Advertise,
    #[error("user agent must be a single line")]
    UserAgent,
}

/// Which nodes a [`Forward`] goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    All,
    One(usize),
}

/// A From tag: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag([u8; 16]);

impl Tag {
    fn from_u64(v: u64) -> Tag {
        Tag(crate::util::hex::u64_fixed(v))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0")
    }
}

/// A REGISTER to send (to each target node): build it with [`RegFwd::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub expires: u32,
    pub call_id: Arc<str>,
    pub from_tag: Tag,
    pub cseq: u32,
    pub targets: Targets,
}

#[derive(Debug)]
struct UserState {
    call_id: Arc<str>,
    tag: Tag,
    cseq: u32,
    last_sent_ms: u64,
    sent_expires: u32,
    /// What Asterisk granted when it granted less than asked (`u32::MAX`: no cap).
    cap: u32,
}

impl UserState {
    /// The next REGISTER of this user's series: same Call-ID and tag, next CSeq.
    fn next_forward(&mut self, expires: u32, targets: Targets) -> Forward {
        self.cseq = self.cseq.wrapping_add(1).max(1);
        Forward {
            expires,
            call_id: Arc::clone(&self.call_id),
            from_tag: self.tag,
            cseq: self.cseq,
            targets,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct RegFwdStats {
    pub forwarded: AtomicU64,
    pub unregistered: AtomicU64,
    pub throttled: AtomicU64,
    /// Forwarded without per-user state because `max_users` was reached.
    pub untracked: AtomicU64,
}

/// The part of the settings a reload may swap: where REGISTERs go and how often.
#[derive(Debug)]
pub struct Targeting {
    nodes: Box<[SocketAddr]>,
    node_keys: Box<[u64]>,
    advertise: Box<str>,
    mode: RegisterMode,
    min_interval_ms: Option<u64>,
}

impl Targeting {
    fn new(s: &RegFwdSettings) -> Result<Targeting, RegFwdError> {
        if s.nodes.is_empty() || s.nodes.len() > 64 {
            return Err(RegFwdError::Nodes);
        }
        let ok = s.advertise.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0) && h != "0.0.0.0" && h != "[::]"
        }) && !s
            .advertise
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'>');
        if !ok {
            return Err(RegFwdError::Advertise);
        }
        Ok(Targeting {
            node_keys: s.nodes.iter().map(|n| node_key(*n)).collect(),
            nodes: s.nodes.clone().into_boxed_slice(),
            advertise: s.advertise.as_str().into(),
            mode: s.mode,
            min_interval_ms: s.refresh_min_interval_secs.map(|v| u64::from(v) * 1000),
        })
    }
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// The node `user` maps to in `hash` mode (rendezvous hashing; the farm's weighted
    /// ranking with equal weights, see `hrw.rs`).
    pub fn node_for(&self, user: &str) -> usize {
        let u = fnv1a(user.as_bytes());
        self.node_keys
            .iter()
            .enumerate()
            .max_by_key(|(_, k)| mix(u ^ **k))
            .map_or(0, |(i, _)| i)
    }

    fn targets(&self, user: &str) -> Targets {
        match (self.mode, self.nodes.len()) {
            (_, 1) => Targets::One(0),
            (RegisterMode::All, _) => Targets::All,
            (RegisterMode::Hash, _) => Targets::One(self.node_for(user)),
        }
    }

    /// Node indices and addresses of a forward.
    pub fn target_nodes(&self, fwd: &Forward) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
        let (lo, hi) = match fwd.targets {
            Targets::All => (0, self.nodes.len()),
            Targets::One(i) => (i, i + 1),
        };
        (lo..hi).filter_map(|i| self.nodes.get(i).map(|a| (i, *a)))
    }

    fn window_ms(&self, sent_expires: u32) -> u64 {
        let half = u64::from(sent_expires) * 500;
        self.min_interval_ms.map_or(half, |m| m.min(half))
    }
}

/// The REGFWD policy and message builder. Share it (`Arc`) between workers.
pub struct RegFwd {
    targeting: ArcSwap<Targeting>,
    user_agent: Box<str>,
    max_users: usize,
    users: DashMap<Box<str>, UserState>,
    tracked: AtomicUsize,
    seed: u64,
    counter: AtomicU64,
    stats: RegFwdStats,
}

impl RegFwdSettings {
    /// The checks [`RegFwd::new`] and [`RegFwd::reconfigure`] make, without building anything.
    pub fn validate(&self) -> Result<(), RegFwdError> {
        Targeting::new(self)?;
        if self.user_agent.contains(['\r', '\n']) {
            return Err(RegFwdError::UserAgent);
        }
        Ok(())
    }
}

impl RegFwd {
    pub fn new(s: RegFwdSettings) -> Result<RegFwd, RegFwdError> {
        s.validate()?;
        let targeting = Targeting::new(&s)?;
        let mut seed = [0u8; 8];
        // Without OS randomness, fall back to the clock: Call-IDs only need to be unique.
        if getrandom::getrandom(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = t.to_le_bytes();
        }
        Ok(RegFwd {
            targeting: ArcSwap::from_pointee(targeting),
            user_agent: s.user_agent.into_boxed_str(),
            max_users: s.max_users,
            users: DashMap::new(),
            tracked: AtomicUsize::new(0),
            seed: u64::from_le_bytes(seed),
            counter: AtomicU64::new(1),
            stats: RegFwdStats::default(),
        })
    }

    /// The node list and forwarding mode now in force (a snapshot: a reload swaps it).
    pub fn targeting(&self) -> Arc<Targeting> {
        self.targeting.load_full()
    }

    /// The Asterisk nodes now in force.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.targeting.load().nodes.to_vec()
    }

    /// Take new nodes, advertise address, mode and throttle (a configuration reload). When
    /// the node list changes, every user's throttle state is forgotten, so the next refresh
    /// of each phone is forwarded at once and new nodes learn every registration within one
    /// phone refresh interval; REGISTERs in flight finish with the nodes they were sent to.
    pub fn reconfigure(&self, s: &RegFwdSettings) -> Result<(), RegFwdError> {
        let next = Targeting::new(s)?;
        let nodes_changed = self.targeting.load().nodes != next.nodes;
        self.targeting.store(Arc::new(next));
        if nodes_changed {
            self.users.clear();
            self.tracked.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn stats(&self) -> &RegFwdStats {
        &self.stats
    }

    /// The node `user` maps to in `hash` mode (rendezvous hashing).
    pub fn node_for(&self, user: &str) -> usize {
        self.targeting.load().node_for(user)
    }

    fn targets(&self, user: &str) -> Targets {
        self.targeting.load().targets(user)
    }

    /// Node indices and addresses of a forward (under the node list now in force).
    pub fn target_nodes(&self, fwd: &Forward) -> Vec<(usize, SocketAddr)> {
        self.targeting.load().target_nodes(fwd).collect()
    }

    fn fresh_identity(&self, user: &str) -> (Arc<str>, Tag) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let u = fnv1a(user.as_bytes());
        let id = mix(self.seed ^ u ^ mix(n));
        let call_id: Arc<str> = Arc::from(format!("{id:016x}-{n:x}@sipfront"));
        (call_id, Tag::from_u64(mix(id ^ self.seed)))
    }

    fn window_ms(&self, sent_expires: u32) -> u64 {
        self.targeting.load().window_ms(sent_expires)
    }

    /// After a successful REGISTER from the phone: `expires` is
    /// [`crate::registrar::RegisterOutcome::expires`] (0 = the AOR has no binding left),
    /// `changed` is `RegisterOutcome::changed`. Returns the REGISTER to send, if any.
    pub fn on_register(
        &self,
        user: &str,
        expires: u32,
        changed: bool,
        now_ms: u64,
    ) -> Option<Forward> {
        if expires == 0 {
            return self.unregister(user);
        }
        let targets = self.targets(user);
        if let Some(mut st) = self.users.get_mut(user) {
            let held = st.sent_expires.min(st.cap);
            let window = self.window_ms(held);
            let asterisk_end = st.last_sent_ms + u64::from(held) * 1000;
            // What Asterisk would hold if told now.
            let new_end = now_ms + u64::from(expires.min(st.cap)) * 1000;
            let due =
                changed || now_ms >= st.last_sent_ms + window || new_end > asterisk_end + window;
            if !due {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            st.last_sent_ms = now_ms;
            st.sent_expires = expires;
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            return Some(st.next_forward(expires, targets));
        }
        let (call_id, tag) = self.fresh_identity(user);
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let fwd = Forward {
            expires,
            call_id: Arc::clone(&call_id),
            from_tag: tag,
            cseq: 1,
            targets,
        };
        if self.tracked.load(Ordering::Relaxed) >= self.max_users {
            self.stats.untracked.fetch_add(1, Ordering::Relaxed);
            return Some(fwd);
        }
        match self.users.entry(user.into()) {
            Entry::Vacant(v) => {
                self.tracked.fetch_add(1, Ordering::Relaxed);
                v.insert(UserState {
                    call_id,
                    tag,
                    cseq: 1,
                    last_sent_ms: now_ms,
                    sent_expires: expires,
                    cap: u32::MAX,
                });
                Some(fwd)
            }
            // Another worker registered the same user meanwhile: it forwarded already.
            Entry::Occupied(_) => None,
        }
    }

    /// A registration replayed to a node that missed it (it came back up, or a reload
    /// added it): the user's Call-ID and tag with the next CSeq, so a node that still holds
    /// the registration takes it as a refresh. A user without state gets a fresh identity
    /// and no state: nothing says the other nodes hold it, so its next refresh is
    /// forwarded everywhere.
    pub fn on_replay(&self, user: &str, expires: u32) -> Forward {
        let targets = self.targets(user);
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if let Some(mut st) = self.users.get_mut(user) {
            return st.next_forward(expires, targets);
        }
        let (call_id, from_tag) = self.fresh_identity(user);
        Forward {
            expires,
            call_id,
            from_tag,
            cseq: 1,
            targets,
        }
    }

    /// The AOR lost its last binding by expiry: tell Asterisk once (Expires: 0).
    pub fn on_aor_empty(&self, user: &str) -> Option<Forward> {
        self.unregister(user)
    }

    fn unregister(&self, user: &str) -> Option<Forward> {
        let (_, st) = self.users.remove(user)?;
        self.tracked.fetch_sub(1, Ordering::Relaxed);
        self.stats.unregistered.fetch_add(1, Ordering::Relaxed);
        Some(Forward {
            expires: 0,
            call_id: st.call_id,
            from_tag: st.tag,
            cseq: st.cseq.wrapping_add(1).max(1),
            targets: self.targets(user),
        })
    }

    /// Asterisk answered a forwarded REGISTER with 2xx granting `granted_secs` (the
    /// `expires` of our Contact in its 200, or its Expires header). When Asterisk granted
    /// less than we asked (PJSIP `maximum_expiration`), the throttle follows its value, so
    /// its registration never lapses between forwards. Ignored for a stale Call-ID.
    pub fn on_asterisk_ok(&self, user: &str, call_id: &str, granted_secs: u32) {
        if let Some(mut st) = self.users.get_mut(user) {
            if &*st.call_id == call_id && granted_secs > 0 {
                st.cap = if granted_secs < st.sent_expires {
                    granted_secs
                } else {
                    u32::MAX
                };
            }
        }
    }

    /// The forwarded REGISTER failed (timeout, error response): forget the user's state so
    /// the next phone REGISTER is forwarded whatever the throttle says.
    pub fn on_failed(&self, user: &str, call_id: &str) {
        if self
            .users
            .remove_if(user, |_, st| &*st.call_id == call_id)
            .is_some()
        {
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// CSeq for re-sending a forwarded REGISTER with credentials after a 401/407 (same
    /// Call-ID): one above `last_cseq`, and the user's counter moves past it so later
    /// refreshes stay increasing.
    pub fn retry_cseq(&self, user: &str, call_id: &str, last_cseq: u32) -> u32 {
        let next = last_cseq.wrapping_add(1).max(1);
        if let Some(mut st) = self.users.get_mut(user) {
            if &*st.call_id == call_id && st.cseq < next {
                st.cseq = next;
            }
        }
        next
    }

    /// Write `o` into `out` (cleared first): `via` is our Via, `branch` a complete
    /// `z9hG4bK...` value, `authorization` complete header line(s) answering a challenge.
    /// The Contact is the advertised address in force.
    pub fn write(
        &self,
        o: &Outgoing<'_>,
        via: Via<'_>,
        branch: &str,
        authorization: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), BuildError> {
        let targeting = self.targeting.load();
        write_register(
            &RegisterMsg {
                node: o.node,
                user: o.user,
                advertise: &targeting.advertise,
                via,
                branch,
                call_id: o.call_id,
                from_tag: o.from_tag,
                cseq: o.cseq,
                expires: o.expires,
                user_agent: &self.user_agent,
                authorization,
            },
            out,
        )
    }
}

/// One REGISTER to write: a [`Forward`]'s copy for one node (see [`Forward::to`]), or its
/// retry with credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub node: SocketAddr,
    pub user: &'a str,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub cseq: u32,
    pub expires: u32,
}

impl Forward {
    /// This forward's REGISTER for `user` to `node`.
    pub fn to<'a>(&'a self, node: SocketAddr, user: &'a str) -> Outgoing<'a> {
        Outgoing {
            node,
            user,
            call_id: &self.call_id,
            from_tag: self.from_tag.as_str(),
            cseq: self.cseq,
            expires: self.expires,
        }
    }
}

/// A branch value on the stack: `z9hG4bK` + prefix + 16 hex digits.
#[derive(Debug, Clone, Copy)]
pub struct Branch {
    buf: [u8; 64],
    len: usize,
}

impl Branch {
    pub fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("z9hG4bK")
    }
}

/// A branch unique per (Call-ID, CSeq, node): `z9hG4bK<prefix><hash>`; `prefix` (e.g. the
/// core's per-worker marker, at most 32 bytes, no spaces) lets responses be routed back.
pub fn branch_for(prefix: &str, call_id: &str, cseq: u32, node: usize) -> Branch {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (call_id, cseq, node).hash(&mut h);
    let tag = Tag::from_u64(h.finish());
    let mut buf = [0u8; 64];
    let mut len = 0;
    let prefix = if prefix.len() <= 32 && !prefix.contains([' ', '\r', '\n', ';']) {
        prefix
    } else {
        ""
    };
    for part in [
        b"z9hG4bK".as_slice(),
        prefix.as_bytes(),
        tag.as_str().as_bytes(),
    ] {
        if let Some(dst) = buf.get_mut(len..len + part.len()) {
            dst.copy_from_slice(part);
            len += part.len();
        }
    }
    Branch { buf, len }
}
