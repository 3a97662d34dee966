//! Hand-off between workers: the only way a datagram moves across cores.
//!
//! Every worker owns a pool of `handoff_buffers` fixed-capacity buffers (a bounded
//! crossbeam channel used as a free list). To hand a datagram to its owner, the receiving
//! worker takes a buffer from its own pool, copies the bytes in, sends it over the owner's
//! inbox channel and (once per batch) notifies the owner's [`Waker`]. The owner processes it
//! like its own datagram and sends the buffer back to the origin's pool. In steady state
//! nothing is allocated; when the pool is empty or an inbox is full, the datagram is
//! dropped and counted (UDP semantics: the peer retransmits).

use crossbeam_channel::{bounded, Receiver, Sender};

use super::Waker;
use crate::core::Flow;

/// A datagram in transit to its owner.
#[derive(Debug)]
pub(crate) struct Handoff {
    /// The local socket it arrived on and its sender; for outgoing bytes, where they go.
    pub(crate) from: Flow,
    /// Bytes to write to a connection the receiving worker owns (not a message to
    /// process).
    pub(crate) outgoing: bool,
    /// Index of the worker whose pool `buf` belongs to.
    pub(crate) pool: usize,
    /// The datagram (`len()` bytes); capacity is the pool's buffer size.
    pub(crate) buf: Vec<u8>,
}

/// The channels of all workers, built before the threads start.
pub(crate) struct HandoffMesh {
    inbox_tx: Vec<Sender<Handoff>>,
    inbox_rx: Vec<Option<Receiver<Handoff>>>,
    free_tx: Vec<Sender<Vec<u8>>>,
    free_rx: Vec<Option<Receiver<Vec<u8>>>>,
}

impl HandoffMesh {
    /// Channels for `n` workers with `pool` buffers of `buf_size` bytes each.
    pub(crate) fn new(n: usize, pool: usize, buf_size: usize) -> Self {
        let mut mesh = HandoffMesh {
            inbox_tx: Vec::with_capacity(n),
            inbox_rx: Vec::with_capacity(n),
            free_tx: Vec::with_capacity(n),
            free_rx: Vec::with_capacity(n),
        };
        for _ in 0..n {
            // Every buffer in flight to this inbox comes from some worker's pool, so
            // `pool * n` slots are never exceeded.
            let (itx, irx) = bounded(pool.saturating_mul(n).max(1));
            let (ftx, frx) = bounded(pool);
            for _ in 0..pool {
                // Cannot fail: the channel has exactly `pool` slots and we hold the receiver.
                let _ = ftx.try_send(Vec::with_capacity(buf_size));
            }
            mesh.inbox_tx.push(itx);
            mesh.inbox_rx.push(Some(irx));
            mesh.free_tx.push(ftx);
            mesh.free_rx.push(Some(frx));
        }
        mesh
    }

    /// The port of worker `index`; `wakers` holds every worker's waker, by index.
    pub(crate) fn port(&mut self, index: usize, wakers: &[Waker]) -> Option<HandoffPort> {
        let inbox = self.inbox_rx.get_mut(index)?.take()?;
        let free = self.free_rx.get_mut(index)?.take()?;
        Some(HandoffPort {
            index,
            inbox,
            free,
            peers: self.inbox_tx.clone(),
            returns: self.free_tx.clone(),
            wakers: wakers.to_vec(),
            pending_wake: vec![false; wakers.len()],
        })
    }
}

/// One worker's end of the mesh.
pub(crate) struct HandoffPort {
    index: usize,
    inbox: Receiver<Handoff>,
    free: Receiver<Vec<u8>>,
    peers: Vec<Sender<Handoff>>,
    returns: Vec<Sender<Vec<u8>>>,
    wakers: Vec<Waker>,
    pending_wake: Vec<bool>,
}

impl HandoffPort {
    /// Passes a copy of `data` to worker `owner`. Returns `false` if it had to be dropped.
    /// The owner is woken at the next [`HandoffPort::flush_wakes`].
    pub(crate) fn send(&mut self, owner: usize, from: Flow, data: &[u8]) -> bool {
        self.pass(owner, from, data, false)
    }

    /// Passes `data` to worker `owner` to be written to the connection of `to` (which
    /// that worker owns). Returns `false` if it had to be dropped.
    pub(crate) fn send_out(&mut self, owner: usize, to: Flow, data: &[u8]) -> bool {
        self.pass(owner, to, data, true)
    }

    fn pass(&mut self, owner: usize, from: Flow, data: &[u8], outgoing: bool) -> bool {
        let Some(peer) = self.peers.get(owner) else {
            return false;
        };
        let Ok(mut buf) = self.free.try_recv() else {
            return false;
        };
        if data.len() > buf.capacity() {
            let _ = self.returns[self.index].try_send(buf);
            return false;
        }
        buf.clear();
        buf.extend_from_slice(data);
        let h = Handoff {
            from,
            outgoing,
            pool: self.index,
            buf,
        };
        match peer.try_send(h) {
            Ok(()) => {
                if let Some(p) = self.pending_wake.get_mut(owner) {
                    *p = true;
                }
                true
            }
            Err(e) => {
                // Inbox full or owner gone: recycle the buffer into our own pool.
                let _ = self.returns[self.index].try_send(e.into_inner().buf);
                false
            }
        }
    }

    /// Notifies every worker handed something since the last call.
    pub(crate) fn flush_wakes(&mut self) {
        for (i, p) in self.pending_wake.iter_mut().enumerate() {
            if std::mem::take(p) {
                if let Some(w) = self.wakers.get(i) {
                    w.notify();
                }
            }
        }
    }

    /// Next datagram handed to this worker, if any.
    pub(crate) fn try_recv(&self) -> Option<Handoff> {
        self.inbox.try_recv().ok()
    }

    /// True when datagrams are waiting in the inbox.
    pub(crate) fn has_pending(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Returns a processed hand-off's buffer to the pool it came from.
    pub(crate) fn recycle(&self, h: Handoff) {
        if let Some(ret) = self.returns.get(h.pool) {
            let _ = ret.try_send(h.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Local;

    #[test]
    fn buffers_travel_and_come_back() {
        let wakers = [Waker::new().unwrap(), Waker::new().unwrap()];
        let mut mesh = HandoffMesh::new(2, 2, 16);
        let mut a = mesh.port(0, &wakers).unwrap();
        let b = mesh.port(1, &wakers).unwrap();
        assert!(mesh.port(0, &wakers).is_none());
        let src: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let listen = Flow::new(Local::Listen(0), src);
        let upstream = Flow::new(Local::Upstream, src);
        assert!(a.send(1, listen, b"one"));
        assert!(a.send(1, upstream, b"two"));
        // Pool of 2 exhausted: dropped.
        assert!(!a.send(1, upstream, b"three"));
        // Too big for the buffers, unknown owner: dropped.
        a.flush_wakes();
        let h = b.try_recv().unwrap();
        assert_eq!((h.from, &h.buf[..], h.pool), (listen, &b"one"[..], 0));
        b.recycle(h);
        assert!(!a.send(1, upstream, &[0; 17]));
        assert!(!a.send(7, upstream, b"x"));
        assert!(a.send(1, upstream, b"four"));
        assert_eq!(&b.try_recv().unwrap().buf[..], b"two");
        assert!(b.has_pending());
        assert_eq!(&b.try_recv().unwrap().buf[..], b"four");
        assert!(b.try_recv().is_none());
    }
}
