//! The cluster's threads: writer, subscriber, heartbeat and loader. Each owns its Redis
//! connection, reconnects on its own (backing off up to a second) and checks the stop flag
//! at least every [`TICK`]; none is ever waited on by a worker.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use redis::{Client, Connection};

use crate::core::Local;
use crate::registrar::table::ChangeSink;
use crate::registrar::{Registrar, SipEdge};

use super::apply::{apply, has_own, own_fields};
use super::store::{self, AorWrite, Keys};
use super::{wire, ClusterConfig, ClusterEdge, ClusterError, Peers, Shared};

/// How often a waiting thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Most AORs in one write pipeline.
const WRITE_BATCH: usize = 256;
/// How long the writer sleeps between looks at its queue while changes come, and when
/// idle. It never blocks on the queue, so a worker's `try_send` never has a thread to wake
/// (no system call per REGISTER), and one round trip carries many registrations.
const WRITE_TICK_BUSY: Duration = Duration::from_millis(10);
const WRITE_TICK_IDLE: Duration = Duration::from_millis(50);
/// Keys asked for per SCAN page.
const SCAN_COUNT: usize = 500;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(1_000);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// State the threads share besides [`Shared`].
struct Ctx {
    shared: Arc<Shared>,
    client: Client,
    keys: Keys,
    cfg: ClusterConfig,
    stop: AtomicBool,
    /// Set by the heartbeat when this node's bindings must all be written again.
    rewrite: AtomicBool,
    /// Load requests (start-up, reconnections): at most one waiting.
    load_tx: Sender<bool>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleep `d` in ticks; false when stopping.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(TICK.min(end.saturating_duration_since(Instant::now())));
        }
        !self.stopped()
    }

    fn error(&self, what: &str, e: &redis::RedisError) {
        self.shared
            .stats
            .redis_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(error = %e, "cluster {what} failed");
    }

    /// Connect, backing off while Redis is away; `None` when stopping.
    fn connect(&self, what: &str) -> Option<Connection> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.stopped() {
                return None;
            }
            match store::connect(&self.client) {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.error(what, &e);
                    if !self.pause(backoff) {
                        return None;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn request_load(&self) {
        let _ = self.load_tx.try_send(false);
    }
}

/// The running cluster threads of this node.
pub struct Cluster {
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// The secret every node shares (nonces and Record-Route tokens): set once in Redis by
    /// the first node, read by the others; `None` when Redis cannot be reached now.
    pub fn shared_secret(cfg: &ClusterConfig) -> Option<String> {
        let client = Client::open(cfg.redis_url.as_str()).ok()?;
        let mut con = store::connect(&client).ok()?;
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).ok()?;
        let mut hex = [0u8; 64];
        let n = crate::util::hex::encode_into(&raw, &mut hex);
        let candidate = std::str::from_utf8(hex.get(..n)?).ok()?.to_owned();
        store::shared_secret(&mut con, &Keys::new(&cfg.key_prefix), &candidate).ok()
    }

    /// Start the threads for `registrar` (its AORs in `realm`), reached by the other nodes
    /// at `node_addr`, and return the location port the cores use instead of `edge`
    /// (`node_local`: the listen index of `node_addr`).
    pub fn start(
        cfg: &ClusterConfig,
        registrar: Arc<Registrar>,
        realm: &str,
        node_addr: SocketAddr,
    ) -> Result<Cluster, ClusterError> {
        let client = Client::open(cfg.redis_url.as_str())?;
        let (tx, rx) = bounded(cfg.queue);
        let shared = Arc::new(Shared {
            me: cfg.node_name.as_str().into(),
            my_addr: node_addr,
            realm: realm.into(),
            registrar,
            stats: Default::default(),
            peers: RwLock::new(Arc::new(Peers::default())),
            changes: tx.clone(),
            overflow: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        });
        // Every REGISTER and removal the table applies is queued for the writer (not the
        // changes applied from Redis, nor expiry, which every copy applies by itself).
        let watch = ChangeSink {
            tx,
            overflow: shared.overflow.clone(),
            dropped: shared.dropped.clone(),
        };
        if !shared.registrar.table.set_watch(watch) {
            return Err(ClusterError::AlreadyStarted);
        }
        let (load_tx, load_rx) = bounded(1);
        let ctx = Arc::new(Ctx {
            shared,
            client,
            keys: Keys::new(&cfg.key_prefix),
            cfg: cfg.clone(),
            stop: AtomicBool::new(false),
            rewrite: AtomicBool::new(false),
            load_tx,
        });
        // The first load takes back this node's own bindings (a restart).
        let _ = ctx.load_tx.try_send(true);
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(ClusterError::Spawn)
        };
        let c = ctx.clone();
        threads.push(spawn(
            "sipfront-cluster-write",
            Box::new(move || writer(&c, rx)),
        )?);
        let c = ctx.clone();
        threads.push(spawn(
            "sipfront-cluster-sub",
            Box::new(move || subscriber(&c)),
        )?);
        let c = ctx.clone();
        threads.push(spawn(
            "sipfront-cluster-beat",
            Box::new(move || heartbeat(&c)),
        )?);
        let c = ctx.clone();
        threads.push(spawn(
            "sipfront-cluster-load",
            Box::new(move || loader(&c, load_rx)),
        )?);
        Ok(Cluster { ctx, threads })
    }

    /// The core's location port: `edge` shared through this cluster.
    pub fn edge(&self, edge: SipEdge, node_local: Local) -> ClusterEdge {
        ClusterEdge::new(edge, self.ctx.shared.clone(), node_local)
    }

    /// What the threads share (stats, live nodes).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.ctx.shared
    }

    /// Write what is queued (at most `limit`), then stop every thread.
    pub fn stop(mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.ctx.shared.stats.pending.load(Ordering::Relaxed) > 0
            || !self.ctx.shared.changes.is_empty()
        {
            if Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writer: collects changed AORs, writes this node's bindings of each (pipelined script
/// runs), keeps them on failure and retries; rewrites everything on request.
fn writer(ctx: &Ctx, rx: Receiver<Box<str>>) {
    let shared = &ctx.shared;
    let mut dirty: HashSet<Box<str>> = HashSet::new();
    let mut con: Option<(Connection, String)> = None;
    let mut backoff = Duration::from_millis(50);
    let mut tick = WRITE_TICK_IDLE;
    loop {
        std::thread::sleep(tick);
        loop {
            match rx.try_recv() {
                Ok(aor) => {
                    dirty.insert(aor);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        tick = if dirty.is_empty() {
            WRITE_TICK_IDLE
        } else {
            WRITE_TICK_BUSY
        };
        let full = ctx.rewrite.swap(false, Ordering::AcqRel)
            | shared.overflow.swap(false, Ordering::AcqRel);
        if full {
            // Only the AORs this node holds a phone of: the others' are theirs to write.
            shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            shared.registrar.for_each_aor(|aor| {
                if has_own(&shared.registrar, aor) {
                    dirty.insert(aor.into());
                }
            });
        }
        shared
            .stats
            .pending
            .store(dirty.len() as u64, Ordering::Relaxed);
        if ctx.stopped() && (dirty.is_empty() || con.is_none()) {
            return;
        }
        if dirty.is_empty() {
            continue;
        }
        if con.is_none() {
            match store::connect(&ctx.client)
                .and_then(|mut c| store::load_script(&mut c).map(|sha| (c, sha)))
            {
                Ok(c) => {
                    con = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    ctx.error("write connection", &e);
                    if !ctx.pause(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some((c, sha)) = con.as_mut() else {
            continue;
        };
        let now = now_ms();
        let aors: Vec<Box<str>> = dirty.iter().take(WRITE_BATCH).cloned().collect();
        let batch: Vec<AorWrite> = aors
            .iter()
            .map(|aor| AorWrite {
                aor: aor.clone(),
                fields: own_fields(&shared.registrar, aor, &shared.me, shared.my_addr, now),
            })
            .collect();
        match store::write_batch(c, sha, &ctx.keys, &shared.me, now, &batch) {
            Ok(()) => {
                for aor in &aors {
                    dirty.remove(aor);
                }
                shared
                    .stats
                    .aors_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Kept dirty; a script missing after a Redis restart is loaded again.
                ctx.error("write", &e);
                con = None;
            }
        }
        shared
            .stats
            .pending
            .store(dirty.len() as u64, Ordering::Relaxed);
    }
}

/// Apply one publication: `NODE \n AOR \n value \n value ...`.
fn on_publication(ctx: &Ctx, payload: &[u8]) {
    let shared = &ctx.shared;
    let mut lines = payload.split(|b| *b == b'\n');
    let (Some(node), Some(aor)) = (lines.next(), lines.next()) else {
        return;
    };
    if node == shared.me.as_bytes() {
        return;
    }
    let Ok(aor) = std::str::from_utf8(aor) else {
        return;
    };
    let values: Vec<wire::Value> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| wire::decode(aor, l).ok())
        .collect();
    apply(&shared.registrar, aor, &values, &shared.me, false, now_ms());
    shared
        .stats
        .updates_received
        .fetch_add(1, Ordering::Relaxed);
}

/// Subscriber: applies other nodes' publications; after a reconnection asks for a load
/// (what was published meanwhile is lost to it).
fn subscriber(ctx: &Ctx) {
    let channel = ctx.keys.channel();
    let mut first = true;
    while let Some(mut con) = ctx.connect("subscribe") {
        let mut ps = con.as_pubsub();
        if let Err(e) = ps
            .subscribe(&channel)
            .and_then(|()| ps.set_read_timeout(Some(TICK * 5)))
        {
            ctx.error("subscribe", &e);
            drop(ps);
            if !ctx.pause(MAX_BACKOFF) {
                return;
            }
            continue;
        }
        if !first {
            ctx.request_load();
        }
        first = false;
        loop {
            if ctx.stopped() {
                return;
            }
            match ps.get_message() {
                Ok(msg) => on_publication(ctx, msg.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(e) => {
                    ctx.error("subscription", &e);
                    break;
                }
            }
        }
    }
}

/// Heartbeat: refresh this node's key, read the live nodes; a lost key (Redis restarted
/// or flushed) or a reconnection starts a rewrite and a load.
fn heartbeat(ctx: &Ctx) {
    let shared = &ctx.shared;
    let period = Duration::from_millis(ctx.cfg.heartbeat_ms);
    let mut con: Option<Connection> = None;
    let mut was_up = true;
    let mut first = true;
    // After Redis lost its data, the other nodes' keys come back only with their next
    // beats: until then the nodes live before stay live (no 480 for their phones).
    let mut grace: Option<(Instant, Vec<(String, SocketAddr)>)> = None;
    loop {
        let started = Instant::now();
        if con.is_none() {
            con = store::connect(&ctx.client)
                .map_err(|e| ctx.error("heartbeat connection", &e))
                .ok();
        }
        let beat = con.as_mut().map(|c| {
            store::heartbeat(
                c,
                &ctx.keys,
                &shared.me,
                shared.my_addr,
                ctx.cfg.dead_after_ms,
            )
            .and_then(|kept| Ok((kept, store::live_nodes(c, &ctx.keys)?)))
        });
        match beat {
            Some(Ok((kept, mut live))) => {
                if !kept && !first {
                    let until = Instant::now() + Duration::from_millis(ctx.cfg.dead_after_ms);
                    grace = Some((until, shared.live_nodes()));
                }
                if let Some((until, before)) = &grace {
                    if Instant::now() < *until {
                        for n in before {
                            if !live.iter().any(|(name, _)| *name == n.0) {
                                live.push(n.clone());
                            }
                        }
                    } else {
                        grace = None;
                    }
                }
                live.sort();
                shared.set_peers(Peers { live });
                shared.stats.redis_up.store(1, Ordering::Relaxed);
                if !kept || !was_up {
                    if !first {
                        tracing::info!(
                            kept,
                            "redis is back: writing this node's bindings again and reloading"
                        );
                    }
                    ctx.rewrite.store(true, Ordering::Release);
                    if !was_up {
                        ctx.request_load();
                    }
                }
                was_up = true;
                first = false;
            }
            Some(Err(e)) => {
                ctx.error("heartbeat", &e);
                con = None;
                if was_up {
                    tracing::warn!(error = %e, "redis unreachable: serving from the local table");
                }
                was_up = false;
                shared.stats.redis_up.store(0, Ordering::Relaxed);
            }
            None => {
                was_up = false;
                shared.stats.redis_up.store(0, Ordering::Relaxed);
            }
        }
        if !ctx.pause(period.saturating_sub(started.elapsed())) {
            return;
        }
    }
}

/// Loader: scans every location key, `load_rate` AORs a second, and applies them.
fn loader(ctx: &Ctx, rx: Receiver<bool>) {
    let shared = &ctx.shared;
    loop {
        let take_own = match rx.recv_timeout(TICK) {
            Ok(t) => t,
            Err(RecvTimeoutError::Timeout) => {
                if ctx.stopped() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(mut con) = ctx.connect("load") else {
            return;
        };
        let started = Instant::now();
        let mut cursor = 0u64;
        let mut done = 0u64;
        loop {
            if ctx.stopped() {
                return;
            }
            let page = store::scan_page(&mut con, &ctx.keys, cursor, SCAN_COUNT)
                .and_then(|(next, keys)| Ok((next, store::values_of(&mut con, &keys)?, keys)));
            let (next, values, keys) = match page {
                Ok(p) => p,
                Err(e) => {
                    // Redis went away mid-scan: the reconnection asks for another load.
                    ctx.error("load", &e);
                    break;
                }
            };
            let now = now_ms();
            for (key, vals) in keys.iter().zip(values) {
                let Some(aor) = ctx.keys.aor_of(key) else {
                    continue;
                };
                let decoded: Vec<wire::Value> = vals
                    .iter()
                    .filter_map(|v| wire::decode(aor, v).ok())
                    .collect();
                apply(&shared.registrar, aor, &decoded, &shared.me, take_own, now);
            }
            done += keys.len() as u64;
            shared
                .stats
                .aors_loaded
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            // Pace: `done` AORs may take done / load_rate seconds.
            let due = Duration::from_secs_f64(done as f64 / f64::from(ctx.cfg.load_rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if !ctx.pause(wait) {
                    return;
                }
            }
            if next == 0 {
                tracing::info!(
                    aors = done,
                    ms = started.elapsed().as_millis() as u64,
                    "cluster location loaded"
                );
                break;
            }
            cursor = next;
        }
    }
}
