//! The refresher thread: reloads every credential every `refresh_secs` (and on demand with
//! [`RefreshHandle::refresh_now`]), so changed passwords take effect and deleted users stop
//! authenticating. Lookups keep reading the cache meanwhile (see [`super::cache`]).
//!
//! A failed refresh removes nothing (cached users keep working while the DB is down) and is
//! retried after the reconnect backoff rather than a whole period later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::pool::Conn;
use super::schema::to_credential;
use super::service::Ctx;
use super::source::Source;
use super::{system_now_ms, CredentialCache, DbError};

/// What one full load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Rows read.
    pub rows: u64,
    /// Users cached after the load.
    pub users: usize,
    /// Credentials new or changed.
    pub changed: u64,
    /// Users removed (no longer in the table, or no longer usable).
    pub removed: usize,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    #[error("refresh failed: {0}")]
    Db(#[from] DbError),
    #[error("refresh did not finish in time")]
    Timeout,
    #[error("refresher stopped")]
    Stopped,
}

/// Counters of the refresher.
#[derive(Debug, Default)]
pub struct RefreshStatus {
    pub successes: AtomicU64,
    pub failures: AtomicU64,
    /// `system_now_ms` of the last successful refresh.
    pub last_success_ms: AtomicU64,
    /// Seconds between periodic refreshes (0: only on demand); a reload may change it.
    period_secs: AtomicU64,
    /// Refreshes finished (success or failure), for [`RefreshHandle::wait_finished`].
    finished: Mutex<u64>,
    cond: Condvar,
}

impl RefreshStatus {
    fn record(&self, ok: bool) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
            self.last_success_ms
                .store(system_now_ms(), Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut n = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        self.cond.notify_all();
    }

    /// Refreshes finished so far (periodic, retried and explicit ones).
    pub fn finished(&self) -> u64 {
        *self.finished.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Reply = Sender<Result<RefreshStats, DbError>>;

/// A message to the refresher: refresh now and answer, or (`None`) re-read the period.
type Request = Option<Reply>;

/// Handle to the refresher thread; dropping it stops the thread.
pub struct RefreshHandle {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<RefreshStatus>,
}

/// One full load into `cache`.
pub(crate) fn load_into(
    cache: &CredentialCache,
    src: &mut dyn Source,
    ctx: &Ctx,
) -> Result<RefreshStats, DbError> {
    let start = Instant::now();
    let generation = cache.begin_refresh();
    let mut changed = 0;
    let rows = src.load_all(&mut |row| {
        if let Some(c) = to_credential(&ctx.layout.kind, &row, &ctx.realm, ctx.cfg.keep_plain) {
            if cache.refresh_upsert(&row.user, c, generation) {
                changed += 1;
            }
        }
    })?;
    let removed = cache.finish_refresh(generation, system_now_ms());
    Ok(RefreshStats {
        rows,
        users: cache.len(),
        changed,
        removed,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

impl RefreshHandle {
    /// `first_wait`: delay before the first periodic refresh (short when the initial load
    /// failed and the cache must catch up).
    pub(crate) fn spawn(
        ctx: Arc<Ctx>,
        cache: Arc<CredentialCache>,
        src: Option<Box<dyn Source>>,
        first_wait: Duration,
    ) -> Result<Self, DbError> {
        let (tx, rx) = crossbeam_channel::bounded::<Request>(16);
        let status = Arc::new(RefreshStatus::default());
        status
            .period_secs
            .store(ctx.cfg.refresh_secs, Ordering::Relaxed);
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("cred-refresh".into())
            .spawn(move || {
                let mut conn = Conn::new(ctx.clone(), src);
                let mut wait = first_wait;
                let mut started = Instant::now();
                loop {
                    let period_secs = st.period_secs.load(Ordering::Relaxed);
                    let period = Duration::from_secs(period_secs);
                    let got = if period_secs == 0 {
                        match rx.recv() {
                            Ok(r) => Some(r),
                            Err(_) => return,
                        }
                    } else {
                        match rx.recv_timeout(wait.saturating_sub(started.elapsed())) {
                            Ok(r) => Some(r),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    };
                    let reply = match got {
                        // The period changed: wait for the new one, counted from the last
                        // refresh (or from now if there was none to wait for).
                        Some(None) => {
                            if wait.is_zero() || period_secs == 0 {
                                started = Instant::now();
                            }
                            wait = Duration::from_secs(st.period_secs.load(Ordering::Relaxed));
                            continue;
                        }
                        Some(Some(r)) => Some(r),
                        None => None,
                    };
                    let r = conn.with(None, |s| load_into(&cache, s, &ctx));
                    started = Instant::now();
                    match &r {
                        Ok(stats) => {
                            st.record(true);
                            tracing::debug!(?stats, "credentials refreshed");
                            wait = period;
                        }
                        Err(e) => {
                            st.record(false);
                            tracing::warn!(error = %e, "credential refresh failed; cache kept");
                            wait =
                                period.min(Duration::from_millis(ctx.cfg.reconnect_max_ms.max(50)));
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
            })
            .map_err(|e| DbError::Thread(Arc::new(e)))?;
        Ok(RefreshHandle {
            tx: Some(tx),
            thread: Some(thread),
            status,
        })
    }

    /// Runs a refresh now and waits (at most `timeout`) for its outcome.
    pub fn refresh_now(&self, timeout: Duration) -> Result<RefreshStats, RefreshError> {
        let tx = self.tx.as_ref().ok_or(RefreshError::Stopped)?;
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        tx.send_timeout(Some(rtx), timeout)
            .map_err(|_| RefreshError::Timeout)?;
        match rrx.recv_timeout(timeout) {
            Ok(r) => r.map_err(RefreshError::Db),
            Err(RecvTimeoutError::Timeout) => Err(RefreshError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(RefreshError::Stopped),
        }
    }

    /// Refresh every `secs` seconds from now on (0: only on demand); a reload.
    pub fn set_period_secs(&self, secs: u64) {
        self.status.period_secs.store(secs, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            // The refresher re-reads the period; if its queue is full it will anyway soon.
            let _ = tx.try_send(None);
        }
    }

    /// Success/failure counters.
    pub fn status(&self) -> &RefreshStatus {
        &self.status
    }

    /// Waits (at most `timeout`) until at least `n` refreshes have finished in total; returns
    /// whether they have. For tests and for startup code that wants the cache caught up.
    pub fn wait_finished(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = self
            .status
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *done < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = match self.status.cond.wait_timeout(done, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl Drop for RefreshHandle {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
