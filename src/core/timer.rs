//! The per-worker timer queue: a binary heap of deadlines with lazy cancellation.
//!
//! Each entry names a transaction slot, the slot generation it was armed for and what fires.
//! Cancelling a timer is free: when a slot is reused or its state moves on, stale entries are
//! recognised when they pop (generation or state mismatch) and ignored. The heap is reserved up
//! front, so arming a timer does not allocate in steady state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a timer does when it fires (RFC 3261 §17 names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// Client: retransmit the request (A for INVITE, E for non-INVITE).
    ClientRetransmit,
    /// Client: give up waiting for a final response (B / F): acts as a 408.
    ClientTimeout,
    /// Client: leave the Completed state (D / K).
    ClientLinger,
    /// Client: retransmit the CANCEL of an INVITE branch.
    CancelRetransmit,
    /// Client INVITE: no final response in time (Timer C, RFC 3261 §16.6 (11)).
    TimerC,
    /// Server INVITE: retransmit the final non-2xx response until the ACK (G).
    ServerRetransmit,
    /// Server: give up waiting for the ACK (H) / leave Completed (J) / Accepted (L).
    ServerLinger,
    /// A request parked for a credential lookup waited too long.
    ParkedTimeout,
    /// A held answer (a failed authentication) is due (`delayed.rs`).
    DelayedAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    pub deadline_ms: u64,
    pub slot: u32,
    pub gen: u32,
    pub kind: TimerKind,
}

/// A min-heap of timer entries.
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<TimerEntry>>,
}

impl TimerQueue {
    pub fn with_capacity(n: usize) -> Self {
        TimerQueue {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    pub fn arm(&mut self, deadline_ms: u64, slot: u32, gen: u32, kind: TimerKind) {
        self.heap.push(Reverse(TimerEntry {
            deadline_ms,
            slot,
            gen,
            kind,
        }));
    }

    /// The earliest deadline, stale or not (a stale one only causes an early wake-up).
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.0.deadline_ms)
    }

    /// Pop the next entry due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        if self.heap.peek()?.0.deadline_ms <= now_ms {
            self.heap.pop().map(|e| e.0)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order() {
        let mut q = TimerQueue::with_capacity(4);
        q.arm(30, 1, 0, TimerKind::ClientTimeout);
        q.arm(10, 2, 0, TimerKind::ClientRetransmit);
        q.arm(20, 3, 0, TimerKind::ServerLinger);
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(25).map(|e| e.slot), Some(2));
        assert_eq!(q.pop_due(25).map(|e| e.slot), Some(3));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.next_deadline(), Some(30));
    }
}
