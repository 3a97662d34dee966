//! The miss path: a small pool of blocking DB threads behind a bounded crossbeam channel.
//!
//! A worker that missed in the cache calls [`LookupPool::request`] with its own reply channel,
//! a token identifying the parked request and a waker. Requests for a user already in flight
//! only add a waiter (one query per user however many requests wait for it). A DB thread
//! queries the user, fills the cache (or the negative cache when the user does not exist), then
//! sends a [`LookupDone`] to every waiter and calls each waiter's waker.
//!
//! Failure: any query error drops the connection; the thread reconnects on the next job once
//! the backoff (doubling from 50 ms up to `reconnect_max_ms`) has elapsed, and answers
//! [`DbError::Unavailable`] without touching the network meanwhile. A full queue is
//! [`PoolFull`] immediately — the core answers 503, nothing piles up.
//!
//! Clock: the negative-cache expiry of an unknown user is stamped here with the system clock
//! ([`super::system_now_ms`]); [`CredentialCache::lookup`] compares it with the caller's
//! `now_ms`, which must therefore be real UNIX-epoch milliseconds in production (it is).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::schema::to_credential;
use super::service::Ctx;
use super::source::{connect, Source};
use super::{system_now_ms, CredentialCache, DbError};
use crate::auth::Credential;

/// Called (from a DB thread) after a [`LookupDone`] was sent, to wake the worker's loop.
pub type WakeFn = Arc<dyn Fn() + Send + Sync>;

/// Most requests that may wait for the same user's query.
const MAX_WAITERS_PER_USER: usize = 256;

/// The answer to one [`LookupPool::request`].
#[derive(Debug)]
pub struct LookupDone {
    pub token: u64,
    pub user: Box<str>,
    /// `Ok(Some)`: found (now cached); `Ok(None)`: no such user (now negatively cached);
    /// `Err`: the database could not answer — not a wrong password (answer 503/500).
    pub result: Result<Option<Arc<Credential>>, DbError>,
}

/// The miss queue is full (or the pool is shut down): answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("credential lookup queue full")]
pub struct PoolFull;

struct Waiter {
    token: u64,
    reply: Sender<LookupDone>,
    waker: WakeFn,
}

/// Counters of the miss path.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub queries: AtomicU64,
    pub coalesced: AtomicU64,
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    pub replies_dropped: AtomicU64,
}

struct Shared {
    ctx: Arc<Ctx>,
    cache: Arc<CredentialCache>,
    inflight: Mutex<HashMap<Box<str>, Vec<Waiter>>>,
    stats: PoolStats,
}

/// Handle to the DB threads serving misses. Dropping it stops them (after their current query).
pub struct LookupPool {
    tx: Option<Sender<Box<str>>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl LookupPool {
    pub(crate) fn spawn(ctx: Arc<Ctx>, cache: Arc<CredentialCache>) -> Result<Self, DbError> {
        let (tx, rx) = crossbeam_channel::bounded::<Box<str>>(ctx.cfg.queue_size);
        let shared = Arc::new(Shared {
            ctx,
            cache,
            inflight: Mutex::new(HashMap::new()),
            stats: PoolStats::default(),
        });
        let mut pool = LookupPool {
            tx: Some(tx),
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for i in 0..shared.ctx.cfg.pool_size {
            let (s, r) = (shared.clone(), rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("cred-db-{i}"))
                .spawn(move || worker(&s, &r))
                .map_err(|e| DbError::Thread(Arc::new(e)))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Queues a lookup of `user` for the request identified by `token`. The answer arrives as a
    /// [`LookupDone`] on `reply` (use an unbounded channel, or one sized to the number of
    /// requests the worker may park: a full reply channel drops the answer), followed by a call
    /// of `waker`. Never blocks.
    pub fn request(
        &self,
        user: &str,
        token: u64,
        reply: &Sender<LookupDone>,
        waker: &WakeFn,
    ) -> Result<(), PoolFull> {
        let tx = self.tx.as_ref().ok_or(PoolFull)?;
        let mut inflight = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let waiter = Waiter {
            token,
            reply: reply.clone(),
            waker: waker.clone(),
        };
        if let Some(waiters) = inflight.get_mut(user) {
            if waiters.len() >= MAX_WAITERS_PER_USER {
                return Err(PoolFull);
            }
            waiters.push(waiter);
            self.shared.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match tx.try_send(user.into()) {
            Ok(()) => {
                inflight.insert(user.into(), vec![waiter]);
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(PoolFull),
        }
    }

    /// Misses queued and not yet picked up by a DB thread.
    pub fn queue_len(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Counters (queries run, requests coalesced, errors, connects).
    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }
}

impl Drop for LookupPool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Exponential reconnect backoff.
pub(crate) struct Backoff {
    failures: u32,
    next: Option<Instant>,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max_ms: u64) -> Self {
        Backoff {
            failures: 0,
            next: None,
            max: Duration::from_millis(max_ms),
        }
    }

    /// Time left before the next attempt is allowed (zero: go ahead).
    pub(crate) fn wait_left(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    pub(crate) fn fail(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let d = Duration::from_millis(50u64 << self.failures.min(16)).min(self.max);
        self.next = Some(now + d);
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
        self.next = None;
    }
}

/// A connection that reconnects with backoff.
pub(crate) struct Conn {
    ctx: Arc<Ctx>,
    source: Option<Box<dyn Source>>,
    backoff: Backoff,
}

impl Conn {
    pub(crate) fn new(ctx: Arc<Ctx>, source: Option<Box<dyn Source>>) -> Self {
        let backoff = Backoff::new(ctx.cfg.reconnect_max_ms);
        Conn {
            ctx,
            source,
            backoff,
        }
    }

    /// Runs `f` on a connection; on error drops it and (if it was an old connection that may
    /// simply have gone stale) retries once on a fresh one.
    pub(crate) fn with<T>(
        &mut self,
        stats: Option<&PoolStats>,
        mut f: impl FnMut(&mut dyn Source) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        for attempt in 0..2 {
            let fresh = self.source.is_none();
            if fresh {
                let left = self.backoff.wait_left(Instant::now());
                if !left.is_zero() {
                    return Err(DbError::Unavailable {
                        retry_in_ms: left.as_millis() as u64,
                    });
                }
                if let Some(s) = stats {
                    s.connects.fetch_add(1, Ordering::Relaxed);
                }
                match connect(&self.ctx.cfg, &self.ctx.layout) {
                    Ok(s) => self.source = Some(s),
                    Err(e) => {
                        self.backoff.fail(Instant::now());
                        return Err(e);
                    }
                }
            }
            let Some(src) = self.source.as_mut() else {
                continue;
            };
            match f(src.as_mut()) {
                Ok(v) => {
                    self.backoff.reset();
                    return Ok(v);
                }
                Err(e) => {
                    self.source = None;
                    if fresh || attempt == 1 {
                        self.backoff.fail(Instant::now());
                        return Err(e);
                    }
                }
            }
        }
        Err(DbError::Unavailable { retry_in_ms: 0 })
    }
}

fn worker(shared: &Shared, rx: &Receiver<Box<str>>) {
    let ctx = shared.ctx.clone();
    let mut conn = Conn::new(ctx.clone(), None);
    while let Ok(user) = rx.recv() {
        shared.stats.queries.fetch_add(1, Ordering::Relaxed);
        let found = conn.with(Some(&shared.stats), |src| {
            let mut best: Option<Credential> = None;
            src.load_user(&user, &mut |row| {
                if best.is_none() {
                    best = to_credential(&ctx.layout.kind, &row, &ctx.realm, ctx.cfg.keep_plain);
                }
            })?;
            Ok(best)
        });
        let result = match found {
            Ok(Some(c)) => Ok(Some(shared.cache.insert(&user, c))),
            Ok(None) => {
                shared.cache.insert_negative(&user, system_now_ms());
                Ok(None)
            }
            Err(e) => {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "credential lookup failed");
                Err(e)
            }
        };
        let waiters = shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&user)
            .unwrap_or_default();
        for w in waiters {
            let done = LookupDone {
                token: w.token,
                user: user.clone(),
                result: result.clone(),
            };
            if w.reply.try_send(done).is_err() {
                shared.stats.replies_dropped.fetch_add(1, Ordering::Relaxed);
            }
            (w.waker)();
        }
    }
}
