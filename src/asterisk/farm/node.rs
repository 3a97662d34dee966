//! One Asterisk node's shared state: atomics every worker reads and updates without a lock
//! (health, drain flag, ping bookkeeping, back-pressure). A node is kept across reloads
//! while its address stays in `[asterisk] nodes`, so its state and counters survive them.
//!
//! Health: a node is `up` or `down`. `probe_failures` consecutive failed pings (no answer
//! before the next ping is due, or a 503) take an up node down; `probe_successes`
//! consecutive answered pings bring a down node up. The transition is made by whichever
//! worker records the deciding result, with a compare-and-swap so it happens once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::super::hrw::node_key;

const UP: u8 = 0;
const DOWN: u8 = 1;

/// Monotonic milliseconds that mean "never".
pub(super) const NEVER: u64 = u64::MAX;

/// A health change a result caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    None,
    WentDown,
    CameUp,
}

/// One node (see the module docs).
#[derive(Debug)]
pub struct Node {
    pub(super) addr: SocketAddr,
    pub(super) key: u64,
    pub(super) weight: AtomicU32,
    health: AtomicU8,
    pub(super) drained: AtomicBool,
    ok_streak: AtomicU32,
    fail_streak: AtomicU32,
    /// When the next ping is due (monotonic ms); claimed by one worker per interval.
    pub(super) next_probe_ms: AtomicU64,
    /// Sequence number of the ping in flight (0: none).
    pub(super) probe_seq: AtomicU32,
    pub(super) probe_sent_ms: AtomicU64,
    /// Round trip of the last answered ping (ms), [`NEVER`] before the first.
    pub(super) last_ping_ms: AtomicU64,
    pub(super) pings_sent: AtomicU64,
    pub(super) pings_answered: AtomicU64,
    pub(super) pings_failed: AtomicU64,
    pub(super) went_down: AtomicU64,
    pub(super) came_up: AtomicU64,
    /// Monotonic ms of the last health change (0: none since start).
    pub(super) changed_ms: AtomicU64,
    /// No new calls before this (monotonic ms): back-pressure.
    pub(super) busy_until_ms: AtomicU64,
    pub(super) busy_count: AtomicU64,
    /// Smoothed time to first answer, in eighths of a millisecond.
    pub(super) latency_x8: AtomicU64,
    pub(super) replayed: AtomicU64,
}

impl Node {
    pub(super) fn new(addr: SocketAddr, weight: u32) -> Node {
        Node {
            addr,
            key: node_key(addr),
            weight: AtomicU32::new(weight.max(1)),
            health: AtomicU8::new(UP),
            drained: AtomicBool::new(false),
            ok_streak: AtomicU32::new(0),
            fail_streak: AtomicU32::new(0),
            next_probe_ms: AtomicU64::new(0),
            probe_seq: AtomicU32::new(0),
            probe_sent_ms: AtomicU64::new(0),
            last_ping_ms: AtomicU64::new(NEVER),
            pings_sent: AtomicU64::new(0),
            pings_answered: AtomicU64::new(0),
            pings_failed: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            came_up: AtomicU64::new(0),
            changed_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
            busy_count: AtomicU64::new(0),
            latency_x8: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[inline]
    pub fn is_down(&self) -> bool {
        self.health.load(Ordering::Acquire) == DOWN
    }

    #[inline]
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn busy_until(&self) -> u64 {
        self.busy_until_ms.load(Ordering::Relaxed)
    }

    /// A ping answered (or a probe otherwise succeeded); `needed` consecutive successes bring
    /// a down node up.
    pub(super) fn record_success(&self, needed: u32, now_ms: u64) -> Transition {
        self.fail_streak.store(0, Ordering::Relaxed);
        let ok = self.ok_streak.fetch_add(1, Ordering::AcqRel) + 1;
        if ok >= needed.max(1) && self.set_health(DOWN, UP, now_ms) {
            self.came_up.fetch_add(1, Ordering::Relaxed);
            return Transition::CameUp;
        }
        Transition::None
    }

    /// A ping failed; `needed` consecutive failures take an up node down.
    pub(super) fn record_failure(&self, needed: u32, now_ms: u64) -> Transition {
        self.ok_streak.store(0, Ordering::Relaxed);
        let failed = self.fail_streak.fetch_add(1, Ordering::AcqRel) + 1;
        if failed >= needed.max(1) {
            return self.force_down(now_ms);
        }
        Transition::None
    }

    /// Down at once (a transport error).
    pub(super) fn force_down(&self, now_ms: u64) -> Transition {
        if self.set_health(UP, DOWN, now_ms) {
            self.went_down.fetch_add(1, Ordering::Relaxed);
            self.ok_streak.store(0, Ordering::Relaxed);
            return Transition::WentDown;
        }
        Transition::None
    }

    /// Up at once (probing switched off).
    pub(super) fn force_up(&self, now_ms: u64) -> Transition {
        self.fail_streak.store(0, Ordering::Relaxed);
        if self.set_health(DOWN, UP, now_ms) {
            self.came_up.fetch_add(1, Ordering::Relaxed);
            return Transition::CameUp;
        }
        Transition::None
    }

    fn set_health(&self, from: u8, to: u8, now_ms: u64) -> bool {
        let done = self
            .health
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if done {
            self.changed_ms.store(now_ms, Ordering::Relaxed);
        }
        done
    }

    /// Fold a time-to-first-answer sample into the smoothed latency (weight 1/8); its new
    /// value in ms.
    pub(super) fn add_latency(&self, sample_ms: u64) -> u64 {
        let mut cur = self.latency_x8.load(Ordering::Relaxed);
        loop {
            let next = cur - cur / 8 + sample_ms.min(1 << 40);
            match self.latency_x8.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next / 8,
                Err(seen) => cur = seen,
            }
        }
    }

    /// No new calls before `until_ms`; true when the node was not busy at `now_ms`.
    pub(super) fn mark_busy(&self, until_ms: u64, now_ms: u64) -> bool {
        let before = self.busy_until_ms.fetch_max(until_ms, Ordering::AcqRel);
        let newly = before <= now_ms;
        if newly {
            self.busy_count.fetch_add(1, Ordering::Relaxed);
        }
        newly
    }
}
