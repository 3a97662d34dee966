//! Per-worker packet counters, readable from any thread (metrics) without shared hot
//! counters: each worker counts in plain locals during a turn and publishes them once per
//! turn into its own cache-line-padded atomics (single writer, `Relaxed`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// A snapshot of one worker's counters (monotonic since spawn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Datagrams received on this worker's sockets.
    pub rx: u64,
    /// Datagrams passed to the kernel for sending.
    pub tx: u64,
    /// Of `tx`, datagrams the kernel refused (reported late on io_uring, at the next
    /// completion reaping).
    pub send_errors: u64,
    /// Datagrams this worker received but passed to their owner.
    pub handed_off: u64,
    /// Datagrams other workers passed to this one.
    pub handoff_in: u64,
    /// Datagrams dropped before reaching a handler or the kernel: truncated or unreadable
    /// on receive, no free hand-off buffer, full hand-off channel, full outbox, or a reply
    /// on a socket id that does not exist.
    pub dropped: u64,
    /// Loop turns (a liveness indicator).
    pub turns: u64,
    /// Datagrams the kernel dropped at this worker's sockets because a receive buffer was
    /// full (`SO_MEMINFO` drops; 0 when the kernel cannot tell).
    pub kernel_drops: u64,
    /// A gauge, not a counter: received bytes waiting for this worker at its last reading
    /// (see [`super::Backlog`]; at most one reading per millisecond, none while idle).
    pub rx_backlog_bytes: u64,
    /// Stream connections by transport: TCP, TLS, WS, WSS ([`WorkerCounters::stream`]).
    pub streams: [StreamCounters; 4],
}

impl WorkerCounters {
    /// The stream counters of `transport` (zero for UDP).
    pub fn stream(&self, transport: crate::sip::Transport) -> StreamCounters {
        use crate::sip::Transport as T;
        match transport {
            T::Tcp => self.streams[0],
            T::Tls => self.streams[1],
            T::Ws => self.streams[2],
            T::Wss => self.streams[3],
            _ => StreamCounters::default(),
        }
    }
}

/// One worker's connections of one stream transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused at accept (limits, bans).
    pub refused: u64,
    /// Connections closed (for any reason).
    pub closed: u64,
    /// Of `closed`, closed because of an error (bad framing, TLS, timeouts, limits).
    pub errors: u64,
    /// TLS handshakes that failed.
    pub handshake_failures: u64,
    /// A gauge: connections open now.
    pub open: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// SIP messages received.
    pub messages_in: u64,
}

impl StreamCounters {
    fn to_array(self) -> [u64; 9] {
        [
            self.accepted,
            self.refused,
            self.closed,
            self.errors,
            self.handshake_failures,
            self.open,
            self.bytes_in,
            self.bytes_out,
            self.messages_in,
        ]
    }

    fn from_array(a: [u64; 9]) -> Self {
        StreamCounters {
            accepted: a[0],
            refused: a[1],
            closed: a[2],
            errors: a[3],
            handshake_failures: a[4],
            open: a[5],
            bytes_in: a[6],
            bytes_out: a[7],
            messages_in: a[8],
        }
    }
}

/// The published counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    rx: AtomicU64,
    tx: AtomicU64,
    send_errors: AtomicU64,
    handed_off: AtomicU64,
    handoff_in: AtomicU64,
    dropped: AtomicU64,
    turns: AtomicU64,
    kernel_drops: AtomicU64,
    rx_backlog_bytes: AtomicU64,
    streams: [[AtomicU64; 9]; 4],
}

impl SharedCounters {
    /// Called by the owning worker only (single writer), once per loop turn.
    pub(crate) fn publish(&self, c: &WorkerCounters) {
        self.rx.store(c.rx, Relaxed);
        self.tx.store(c.tx, Relaxed);
        self.send_errors.store(c.send_errors, Relaxed);
        self.handed_off.store(c.handed_off, Relaxed);
        self.handoff_in.store(c.handoff_in, Relaxed);
        self.dropped.store(c.dropped, Relaxed);
        self.turns.store(c.turns, Relaxed);
        self.kernel_drops.store(c.kernel_drops, Relaxed);
        self.rx_backlog_bytes.store(c.rx_backlog_bytes, Relaxed);
        for (cells, values) in self.streams.iter().zip(c.streams) {
            for (cell, v) in cells.iter().zip(values.to_array()) {
                cell.store(v, Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> WorkerCounters {
        WorkerCounters {
            rx: self.rx.load(Relaxed),
            tx: self.tx.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            handed_off: self.handed_off.load(Relaxed),
            handoff_in: self.handoff_in.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            turns: self.turns.load(Relaxed),
            kernel_drops: self.kernel_drops.load(Relaxed),
            rx_backlog_bytes: self.rx_backlog_bytes.load(Relaxed),
            streams: std::array::from_fn(|k| {
                StreamCounters::from_array(std::array::from_fn(|i| {
                    self.streams[k][i].load(Relaxed)
                }))
            }),
        }
    }
}

/// The per-worker counter blocks, each on its own cache line(s).
pub(crate) type CounterBlock = CachePadded<SharedCounters>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_snapshot() {
        let s = CounterBlock::default();
        let c = WorkerCounters {
            rx: 5,
            tx: 4,
            send_errors: 6,
            handed_off: 3,
            handoff_in: 2,
            dropped: 1,
            turns: 9,
            kernel_drops: 7,
            rx_backlog_bytes: 8,
            streams: [
                StreamCounters {
                    accepted: 1,
                    open: 2,
                    messages_in: 3,
                    ..StreamCounters::default()
                },
                StreamCounters {
                    handshake_failures: 4,
                    ..StreamCounters::default()
                },
                StreamCounters::default(),
                StreamCounters::default(),
            ],
        };
        s.publish(&c);
        assert_eq!(s.snapshot(), c);
    }
}
