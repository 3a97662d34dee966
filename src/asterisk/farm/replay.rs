//! Replaying registrations to a node that came (back) up or was added by a reload: one job
//! per such node, paced at `replay_rate_per_sec`.
//!
//! The farm only keeps the jobs (which node, where the listing of the location table
//! stands, when the next batch is due); the batches are listed and sent by a worker
//! (`server`'s farm port: the registrar's paged listing, REGFWD's REGISTER for each user
//! the node should hold). A worker claims a due batch ([`Replays::claim`]), which marks the
//! job busy so no other worker takes the same page, and reports where the listing stopped
//! ([`Replays::done`]); a job whose listing is over is removed. A node that goes down or
//! leaves the configuration loses its job; it gets a new one when it comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use super::node::NEVER;

/// Shortest time between two batches of one job (ms).
const MIN_TICK_MS: u64 = 100;

/// One batch to send: list at most `limit` AORs of the location table after `after`
/// (from the start when `None`) and send those `node` should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayBatch {
    pub node: SocketAddr,
    pub after: Option<Box<str>>,
    /// AORs to list: the paced number of REGISTERs, times the node count in hash mode
    /// (where a node holds only its share of the users).
    pub limit: usize,
}

#[derive(Debug)]
struct Job {
    node: SocketAddr,
    cursor: Option<Box<str>>,
    next_ms: u64,
    /// A worker is sending a batch.
    busy: bool,
    sent: u64,
}

/// The replay jobs of a farm.
#[derive(Debug)]
pub(super) struct Replays {
    jobs: Mutex<Vec<Job>>,
    /// Earliest `next_ms` of a job not busy ([`NEVER`]: none): what workers poll without
    /// taking the lock.
    next_ms: AtomicU64,
}

/// Batch period and size for `rate` REGISTERs a second: every `max(100 ms, 1 s / rate)`,
/// `rate × period` of them.
pub(super) fn pacing(rate: u32) -> (u64, usize) {
    let rate = u64::from(rate.max(1));
    let tick = (1000 / rate).max(MIN_TICK_MS);
    let batch = (rate * tick / 1000).max(1);
    (tick, usize::try_from(batch).unwrap_or(usize::MAX))
}

impl Replays {
    pub(super) fn new() -> Replays {
        Replays {
            jobs: Mutex::new(Vec::new()),
            next_ms: AtomicU64::new(NEVER),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh_next(&self, jobs: &[Job]) {
        let next = jobs
            .iter()
            .filter(|j| !j.busy)
            .map(|j| j.next_ms)
            .min()
            .unwrap_or(NEVER);
        self.next_ms.store(next, Ordering::Release);
    }

    /// When a batch is next due (monotonic ms), [`NEVER`] when no job waits.
    pub(super) fn next_due(&self) -> u64 {
        self.next_ms.load(Ordering::Acquire)
    }

    /// Start (or restart from the beginning) the replay to `node`, due at once.
    pub(super) fn start(&self, node: SocketAddr) {
        let mut jobs = self.lock();
        jobs.retain(|j| j.node != node);
        jobs.push(Job {
            node,
            cursor: None,
            next_ms: 0,
            busy: false,
            sent: 0,
        });
        self.refresh_next(&jobs);
    }

    /// Drop the job of `node` (it went down or left the configuration).
    pub(super) fn cancel(&self, node: SocketAddr) {
        let mut jobs = self.lock();
        jobs.retain(|j| j.node != node);
        self.refresh_next(&jobs);
    }

    /// Keep only the jobs of nodes `keep` accepts.
    pub(super) fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        let mut jobs = self.lock();
        jobs.retain(|j| keep(j.node));
        self.refresh_next(&jobs);
    }

    /// Whether a replay to `node` is under way, and how many REGISTERs it sent so far.
    pub(super) fn progress(&self, node: SocketAddr) -> Option<u64> {
        self.lock().iter().find(|j| j.node == node).map(|j| j.sent)
    }

    /// The next due batch, marked busy until [`Replays::done`]; `None` when nothing is due
    /// or another worker holds the lock.
    pub(super) fn claim(&self, now_ms: u64, rate: u32, hash_share: usize) -> Option<ReplayBatch> {
        if self.next_due() > now_ms {
            return None;
        }
        let mut jobs = match self.jobs.try_lock() {
            Ok(j) => j,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let (tick, batch) = pacing(rate);
        let job = jobs.iter_mut().find(|j| !j.busy && j.next_ms <= now_ms)?;
        job.busy = true;
        job.next_ms = now_ms + tick;
        let out = ReplayBatch {
            node: job.node,
            after: job.cursor.clone(),
            limit: batch.saturating_mul(hash_share.max(1)),
        };
        self.refresh_next(&jobs);
        Some(out)
    }

    /// A claimed batch of `node` was sent: `sent` REGISTERs, the listing continues after
    /// `next` (`None`: it is over). Returns the job's total when it finished.
    pub(super) fn done(&self, node: SocketAddr, next: Option<Box<str>>, sent: u64) -> Option<u64> {
        let mut jobs = self.lock();
        let pos = jobs.iter().position(|j| j.node == node && j.busy)?;
        let finished = {
            let job = &mut jobs[pos];
            job.busy = false;
            job.sent += sent;
            match next {
                Some(c) => {
                    job.cursor = Some(c);
                    None
                }
                None => Some(job.sent),
            }
        };
        if finished.is_some() {
            jobs.remove(pos);
        }
        self.refresh_next(&jobs);
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_the_rate_over_ticks() {
        assert_eq!(pacing(500), (100, 50));
        assert_eq!(pacing(1), (1000, 1));
        assert_eq!(pacing(4), (250, 1));
        assert_eq!(pacing(25), (100, 2));
        assert_eq!(pacing(0), (1000, 1));
    }

    #[test]
    fn one_batch_at_a_time_per_job_paced_until_done() {
        let r = Replays::new();
        let node: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        assert_eq!(r.claim(0, 500, 1), None);
        r.start(node);
        let b = r.claim(10, 500, 1).expect("due at once");
        assert_eq!((b.node, b.after.as_deref(), b.limit), (node, None, 50));
        // Busy: nobody else gets it, even when due.
        assert_eq!(r.claim(500, 500, 1), None);
        assert_eq!(r.done(node, Some("k50".into()), 50), None);
        assert_eq!(r.progress(node), Some(50));
        // The next batch waits for its tick.
        assert_eq!(r.claim(50, 500, 1), None);
        let b = r.claim(110, 500, 3).expect("next tick");
        assert_eq!((b.after.as_deref(), b.limit), (Some("k50"), 150));
        assert_eq!(r.done(node, None, 7), Some(57));
        assert_eq!(r.progress(node), None);
        assert_eq!(r.next_due(), NEVER);
    }

    #[test]
    fn cancel_and_restart() {
        let r = Replays::new();
        let a: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let b: SocketAddr = "10.0.0.6:5060".parse().unwrap();
        r.start(a);
        r.start(b);
        r.cancel(a);
        assert_eq!(r.claim(0, 10, 1).map(|x| x.node), Some(b));
        r.start(b);
        // A restarted job begins from the start; the stale batch's report is ignored.
        assert_eq!(r.done(b, Some("x".into()), 3), None);
        let again = r.claim(0, 10, 1).expect("restarted");
        assert_eq!(again.after, None);
        r.retain(|n| n != b);
        assert_eq!(r.progress(b), None);
    }
}
