//! The outbox: a preallocated send slab the handler fills during one loop turn.
//!
//! [`Outbox::send`] copies the bytes into one contiguous slab and records
//! `(flow, range)`. The shell flushes it (io_uring `SendMsg` SQEs or one
//! `sendmmsg` per socket run) at the end of the turn, or earlier when it could no longer
//! hold one more full-size datagram. Nothing here allocates after construction.

use crate::core::Flow;

/// One queued datagram: a range of the slab plus where it goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutEntry {
    /// The local socket to send from and the destination.
    pub(crate) to: Flow,
    pub(crate) off: usize,
    pub(crate) len: usize,
}

/// Datagrams queued by the handler, sent by the shell at the end of the loop turn.
pub struct Outbox {
    slab: Vec<u8>,
    entries: Vec<OutEntry>,
    /// Slab bytes the shell keeps free before each handler call.
    reserve: usize,
    /// Entries the shell keeps free before each handler call.
    reserve_slots: usize,
    rejected: u64,
}

impl Outbox {
    /// An outbox for `slots` datagrams sharing `slab_bytes` of storage; the shell flushes
    /// it before a handler call whenever less than `reserve` bytes (one full-size
    /// datagram) or fewer than `reserve_slots` entries remain free.
    pub(crate) fn new(
        slots: usize,
        slab_bytes: usize,
        reserve: usize,
        reserve_slots: usize,
    ) -> Self {
        Outbox {
            slab: Vec::with_capacity(slab_bytes),
            entries: Vec::with_capacity(slots),
            reserve: reserve.min(slab_bytes),
            reserve_slots: reserve_slots.clamp(1, slots.max(1)),
            rejected: 0,
        }
    }

    /// A standalone outbox for unit tests of handlers (no worker needed).
    pub fn for_tests(slots: usize, slab_bytes: usize) -> Self {
        Self::new(slots, slab_bytes, 0, 1)
    }

    /// Queues `bytes` for `to.remote`, sent from the local socket `to.local`. Returns `false` (and counts the datagram
    /// as dropped) if the outbox is full or `bytes` is empty; the shell makes sure one
    /// full-size datagram always fits at the start of each handler call.
    pub fn send(&mut self, to: Flow, bytes: &[u8]) -> bool {
        let off = self.slab.len();
        if bytes.is_empty()
            || self.entries.len() == self.entries.capacity()
            || self.slab.capacity() - off < bytes.len()
        {
            self.rejected += 1;
            return false;
        }
        self.slab.extend_from_slice(bytes);
        self.entries.push(OutEntry {
            to,
            off,
            len: bytes.len(),
        });
        true
    }

    /// Number of datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queued datagrams as `(flow, bytes)`, in order (for handler tests).
    pub fn iter(&self) -> impl Iterator<Item = (Flow, &[u8])> + '_ {
        self.entries.iter().map(|e| (e.to, self.bytes(e)))
    }

    /// Forgets everything queued (for handler tests; the shell clears after flushing).
    pub fn clear(&mut self) {
        self.slab.clear();
        self.entries.clear();
    }

    /// True when another handler call might not fit (flush before calling it).
    pub(crate) fn needs_flush(&self) -> bool {
        self.entries.capacity() - self.entries.len() < self.reserve_slots
            || self.slab.capacity() - self.slab.len() < self.reserve
    }

    pub(crate) fn entries(&self) -> &[OutEntry] {
        &self.entries
    }

    pub(crate) fn bytes(&self, e: &OutEntry) -> &[u8] {
        self.slab.get(e.off..e.off + e.len).unwrap_or(&[])
    }

    /// Datagrams refused since the last call (full outbox), resetting the count.
    pub(crate) fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::Local;

    fn to(local: Local) -> Flow {
        Flow::new(local, "127.0.0.1:5060".parse().unwrap())
    }

    #[test]
    fn queues_in_order_without_reallocating() {
        let mut out = Outbox::new(4, 64, 16, 1);
        let cap = out.slab.capacity();
        assert!(out.send(to(Local::Listen(0)), b"hello"));
        assert!(out.send(to(Local::Upstream), b"world!"));
        let got: Vec<_> = out.iter().map(|(f, b)| (f.local, b.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (Local::Listen(0), b"hello".to_vec()),
                (Local::Upstream, b"world!".to_vec())
            ]
        );
        assert_eq!(out.slab.capacity(), cap);
        out.clear();
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_when_full_and_counts() {
        let mut out = Outbox::new(2, 8, 4, 1);
        assert!(!out.send(to(Local::Upstream), b""));
        assert!(out.send(to(Local::Upstream), b"123456"));
        assert!(out.needs_flush());
        assert!(!out.send(to(Local::Upstream), b"789"));
        assert!(out.send(to(Local::Upstream), b"78"));
        assert!(!out.send(to(Local::Upstream), b"9"));
        assert_eq!(out.take_rejected(), 3);
        assert_eq!(out.take_rejected(), 0);
        assert_eq!(out.len(), 2);
    }
}
