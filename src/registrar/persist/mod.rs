//! Write-behind persistence of the location table.
//!
//! Data flow: every change in the table sends the AOR (a small boxed copy) into a bounded
//! crossbeam channel with `try_send` — a worker never blocks on it. A
//! background thread collects AORs into a set (coalescing repeated changes) and, at most
//! every `persist_interval_ms` (1 s by default), snapshots each AOR's current bindings from
//! the table (one short read lock per AOR) and replaces that AOR's rows in the store in one
//! transaction. If the channel was ever full, the change is counted and the next flush
//! rewrites the whole table instead, so nothing is lost, only batched larger.
//!
//! At start, [`Persister::start`] loads the stored rows into the table, dropping bindings
//! already expired, then attaches the channel and starts the thread.
//!
//! What `kill -9` loses: changes made after the last completed flush, i.e. at most the
//! last `persist_interval_ms` (plus the duration of one flush) of registrations, refreshes
//! and removals. A lost new binding is simply absent after restart (the phone's next
//! refresh restores it); a lost refresh reloads with its previous expiry; a lost removal
//! reloads the binding until its stored expiry. SQLite runs in WAL mode: a committed flush
//! survives the kill of the process.

mod mysql;
mod row;
mod sqlite;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

pub use row::Row;
pub(crate) use row::UNKNOWN_SOCKET;

use super::config::PersistTarget;
use super::table::ChangeSink;
use super::Registrar;

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("mysql: {0}")]
    Mysql(#[from] ::mysql::Error),
    #[error("mysql url invalid: {0}")]
    MysqlUrl(#[from] ::mysql::UrlError),
    #[error("a stored row is not usable: {0}")]
    BadRow(&'static str),
    #[error("persistence was already attached to this registrar")]
    AlreadyStarted,
    #[error("persistence thread is gone")]
    ThreadGone,
    #[error("flush did not finish within the timeout")]
    Timeout,
    #[error("cannot start the persistence thread: {0}")]
    Spawn(std::io::Error),
}

/// A backend holding the rows.
pub(crate) trait Store: Send {
    /// Stream every stored row into `sink` (a row that cannot be used is passed as an
    /// error and skipped by the caller); an error here means the store could not be read.
    fn load(&mut self, sink: &mut dyn FnMut(Result<Row, PersistError>))
        -> Result<(), PersistError>;
    /// Replace the rows of each listed AOR by the given ones (empty: delete the AOR). With
    /// `all`, every other AOR's rows are deleted too. One transaction.
    fn write(&mut self, aors: &[(Arc<str>, Vec<Row>)], all: bool) -> Result<(), PersistError>;
}

/// Counters of the persistence thread.
#[derive(Debug, Default)]
pub struct PersistStats {
    pub flushes: AtomicU64,
    pub rows_written: AtomicU64,
    pub aors_written: AtomicU64,
    pub errors: AtomicU64,
    pub full_rewrites: AtomicU64,
    /// Changes that found the queue full (each forces a full rewrite).
    pub dropped: Arc<AtomicU64>,
    pub loaded: AtomicU64,
    pub expired_on_load: AtomicU64,
}

enum Ctl {
    Flush(Sender<Result<(), PersistError>>),
    Stop,
}

/// Handle of the persistence thread. Dropping it stops the thread after a final flush.
pub struct Persister {
    ctl: Option<Sender<Ctl>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PersistStats>,
}

fn open_store(target: &PersistTarget<'_>) -> Result<Option<Box<dyn Store>>, PersistError> {
    Ok(match target {
        PersistTarget::None => None,
        PersistTarget::Sqlite(path) => Some(Box::new(sqlite::SqliteStore::open(path)?)),
        PersistTarget::Mysql(url) => Some(Box::new(mysql::MysqlStore::open(url)?)),
    })
}

impl Persister {
    /// Load stored bindings into `registrar` (dropping those expired at `now_ms`), then
    /// start the write-behind thread. With `persist = "none"` nothing is loaded or started
    /// and [`Persister::flush`] returns at once.
    pub fn start(registrar: &Arc<Registrar>, now_ms: u64) -> Result<Persister, PersistError> {
        let cfg = registrar.config().clone();
        let target = cfg.persist_target().unwrap_or(PersistTarget::None);
        let stats = Arc::new(PersistStats::default());
        match open_store(&target)? {
            Some(store) => Self::start_with(registrar, store, now_ms),
            None => Ok(Persister {
                ctl: None,
                thread: None,
                stats,
            }),
        }
    }

    /// [`Persister::start`] with a given store.
    pub(crate) fn start_with(
        registrar: &Arc<Registrar>,
        mut store: Box<dyn Store>,
        now_ms: u64,
    ) -> Result<Persister, PersistError> {
        let cfg = registrar.config().clone();
        let stats = Arc::new(PersistStats::default());
        store.load(
            &mut |row| match row.and_then(|r| r.to_slot().map(|s| (r, s))) {
                Ok((row, _)) if row.expires_at_ms <= now_ms => {
                    stats.expired_on_load.fetch_add(1, Ordering::Relaxed);
                }
                Ok((row, slot)) => {
                    registrar.restore(&row.aor, slot);
                    stats.loaded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored binding skipped");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            },
        )?;
        let (tx, rx) = bounded(cfg.persist_queue);
        let overflow = Arc::new(AtomicBool::new(false));
        let sink = ChangeSink {
            tx,
            overflow: Arc::clone(&overflow),
            dropped: Arc::clone(&stats.dropped),
        };
        if !registrar.table.set_sink(sink) {
            return Err(PersistError::AlreadyStarted);
        }
        let (ctl_tx, ctl_rx) = unbounded();
        let worker = Writer {
            registrar: Arc::clone(registrar),
            store,
            changes: rx,
            ctl: ctl_rx,
            overflow,
            interval: Duration::from_millis(cfg.persist_interval_ms),
            stats: Arc::clone(&stats),
            dirty: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("sipfront-location-persist".into())
            .spawn(move || worker.run())
            .map_err(PersistError::Spawn)?;
        Ok(Persister {
            ctl: Some(ctl_tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Write every pending change now and wait (at most `timeout`) until it is stored.
    pub fn flush(&self, timeout: Duration) -> Result<(), PersistError> {
        let Some(ctl) = &self.ctl else { return Ok(()) };
        let (done_tx, done_rx) = bounded(1);
        ctl.send(Ctl::Flush(done_tx))
            .map_err(|_| PersistError::ThreadGone)?;
        match done_rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(PersistError::Timeout),
            Err(_) => Err(PersistError::ThreadGone),
        }
    }

    /// Final flush, then stop the thread (SIGTERM path).
    pub fn stop(mut self) -> Result<(), PersistError> {
        let r = self.flush(Duration::from_secs(30));
        self.shutdown();
        r
    }

    fn shutdown(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            let _ = ctl.send(Ctl::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn stats(&self) -> &PersistStats {
        &self.stats
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Writer {
    registrar: Arc<Registrar>,
    store: Box<dyn Store>,
    changes: Receiver<Box<str>>,
    ctl: Receiver<Ctl>,
    overflow: Arc<AtomicBool>,
    interval: Duration,
    stats: Arc<PersistStats>,
    dirty: HashSet<Box<str>>,
}

impl Writer {
    /// Wake once per interval (or for a control message), never per change: workers only
    /// `try_send` into a queue nobody blocks on, so a registration costs them no wake-up
    /// system call. Each wake drains the queue and writes what changed.
    fn run(mut self) {
        loop {
            match self.ctl.recv_timeout(self.interval) {
                Ok(Ctl::Flush(done)) => {
                    let r = self.flush();
                    let _ = done.send(r);
                }
                Ok(Ctl::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.flush();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.flush() {
                        // The changes stay dirty; the next interval retries.
                        tracing::warn!(error = %e, "location persistence flush failed; retrying next interval");
                    }
                }
            }
        }
    }

    /// Drain the queue, snapshot the dirty AORs and write them in one transaction.
    fn flush(&mut self) -> Result<(), PersistError> {
        while let Ok(aor) = self.changes.try_recv() {
            self.dirty.insert(aor);
        }
        let full = self.overflow.swap(false, Ordering::AcqRel);
        let table = &self.registrar.table;
        if full {
            self.dirty.clear();
            table.for_each_aor(|aor| {
                self.dirty.insert(Box::from(aor));
            });
        }
        if self.dirty.is_empty() && !full {
            return Ok(());
        }
        let mut batch: Vec<(Arc<str>, Vec<Row>)> = Vec::with_capacity(self.dirty.len());
        let mut rows = 0u64;
        for aor in self.dirty.iter() {
            let mut v = Vec::new();
            table.snapshot(aor, |s| v.push(Row::from_binding(aor, s)));
            rows += v.len() as u64;
            batch.push((Arc::from(&**aor), v));
        }
        // Key order: the store's B-tree takes sorted inserts much faster than hash order.
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        match self.store.write(&batch, full) {
            Ok(()) => {
                self.dirty.clear();
                let st = &self.stats;
                st.flushes.fetch_add(1, Ordering::Relaxed);
                st.rows_written.fetch_add(rows, Ordering::Relaxed);
                st.aors_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if full {
                    st.full_rewrites.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if full {
                    self.overflow.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::{ContactInput, RegisterRequest, RegistrarConfig};
    use crate::sip::Transport;
    use std::sync::Mutex;

    /// Fails the first `fail` writes, then records what it is given.
    struct FlakyStore {
        fail: usize,
        written: Arc<Mutex<Vec<(String, usize)>>>,
    }

    impl Store for FlakyStore {
        fn load(
            &mut self,
            _sink: &mut dyn FnMut(Result<Row, PersistError>),
        ) -> Result<(), PersistError> {
            Ok(())
        }
        fn write(&mut self, aors: &[(Arc<str>, Vec<Row>)], _all: bool) -> Result<(), PersistError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(PersistError::BadRow("injected failure"));
            }
            let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
            w.extend(aors.iter().map(|(a, r)| (a.to_string(), r.len())));
            Ok(())
        }
    }

    #[test]
    fn failed_flush_keeps_changes_for_the_next_one() {
        let cfg = RegistrarConfig {
            persist: "none".into(),
            ..RegistrarConfig::default()
        };
        let r = Arc::new(Registrar::new(cfg).unwrap());
        let written = Arc::new(Mutex::new(Vec::new()));
        let store = FlakyStore {
            fail: 1,
            written: Arc::clone(&written),
        };
        let p = Persister::start_with(&r, Box::new(store), 0).unwrap();
        let contacts = [ContactInput {
            uri: "sip:a@10.0.0.1",
            expires: Some(600),
            q: None,
        }];
        let req = RegisterRequest {
            aor: "a@example.com",
            call_id: "c",
            cseq: 1,
            expires_header: None,
            star: false,
            contacts: &contacts,
            source: "198.51.100.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            socket: "127.0.0.1:5060".parse().unwrap(),
            conn: 0,
            path: &[],
            user_agent: None,
        };
        r.register(&req, 1000, &mut Vec::new()).unwrap();
        assert!(p.flush(Duration::from_secs(10)).is_err());
        assert_eq!(p.stats().errors.load(Ordering::Relaxed), 1);
        p.flush(Duration::from_secs(10)).unwrap();
        let w = written.lock().unwrap().clone();
        assert_eq!(w, [("a".to_owned(), 1)]); // the key: use_domain is off by default
        p.stop().unwrap();
    }
}
