//! The connection registry every worker shares: which connections are open (a generation
//! word per slot of each worker, read without locks), which one reaches a remote address
//! (connection reuse), and how many are open in all and per source IP (the limits checked
//! at accept). It is the core's [`Links`] port.
//!
//! Only the worker that owns a connection writes its slot; anyone reads. The address index
//! and the per-IP counts are `DashMap`s touched once per connection open and close, never
//! per message.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::core::{ConnId, Links};
use crate::sip::Transport;

/// Mask of the generation kept in a slot word (24 bits, like [`ConnId::pack`]).
const GEN_MASK: u32 = (1 << 24) - 1;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this IP.
    PerIp,
}

/// Every worker's connections.
#[derive(Debug)]
pub struct Registry {
    /// Per worker, per slot: `generation << 1 | open`.
    slots: Box<[Box<[AtomicU32]>]>,
    by_remote: DashMap<(Transport, SocketAddr), ConnId>,
    per_ip: DashMap<IpAddr, u32>,
    total: AtomicUsize,
    max_total: usize,
    max_per_ip: u32,
}

impl Registry {
    /// A registry for `workers` workers of `slots` connection slots each, admitting at most
    /// `max_total` open connections, `max_per_ip` from one IP.
    pub fn new(workers: usize, slots: usize, max_total: usize, max_per_ip: u32) -> Registry {
        let slots = slots.min(ConnId::MAX_SLOTS as usize);
        Registry {
            slots: (0..workers)
                .map(|_| (0..slots).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            by_remote: DashMap::new(),
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            max_total,
            max_per_ip,
        }
    }

    /// Connection slots per worker.
    pub fn slots_per_worker(&self) -> usize {
        self.slots.first().map_or(0, |s| s.len())
    }

    /// Counts a new connection from `ip` if the limits allow it.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut n = self.per_ip.entry(ip.to_canonical()).or_insert(0);
        if *n >= self.max_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(())
    }

    /// Uncounts a connection from `ip` (admitted, then closed or given up).
    pub fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let ip = ip.to_canonical();
        let gone = match self.per_ip.get_mut(&ip) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.per_ip.remove_if(&ip, |_, n| *n == 0);
        }
    }

    /// Connection `id` of `transport` from `remote` is open (called by its owner).
    pub fn opened(&self, id: ConnId, transport: Transport, remote: SocketAddr) {
        if let Some(w) = self.word(id) {
            w.store(((id.gen & GEN_MASK) << 1) | 1, Ordering::Release);
        }
        self.by_remote.insert((transport, remote), id);
    }

    /// Connection `id` is closed (called by its owner).
    pub fn closed(&self, id: ConnId, transport: Transport, remote: SocketAddr) {
        if let Some(w) = self.word(id) {
            w.store((id.gen & GEN_MASK) << 1, Ordering::Release);
        }
        self.by_remote
            .remove_if(&(transport, remote), |_, c| *c == id);
    }

    /// Open connections in all.
    pub fn open_count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn word(&self, id: ConnId) -> Option<&AtomicU32> {
        self.slots
            .get(usize::from(id.worker))
            .and_then(|s| s.get(id.slot as usize))
    }
}

impl Links for Registry {
    fn is_open(&self, conn: ConnId) -> bool {
        self.word(conn)
            .is_some_and(|w| w.load(Ordering::Acquire) == ((conn.gen & GEN_MASK) << 1) | 1)
    }

    fn find(&self, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        let id = *self.by_remote.get(&(transport, remote))?;
        self.is_open(id).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_liveness_and_reuse() {
        let r = Registry::new(2, 4, 3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(r.admit(a), Ok(()));
        assert_eq!(r.admit(a), Ok(()));
        assert_eq!(r.admit(a), Err(Refusal::PerIp));
        assert_eq!(r.admit(b), Ok(()));
        assert_eq!(r.admit(b), Err(Refusal::Total));
        assert_eq!(r.open_count(), 3);
        r.release(a);
        assert_eq!(r.admit(b), Ok(()));

        let remote: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let id = ConnId {
            worker: 1,
            slot: 2,
            gen: 7,
        };
        assert!(!r.is_open(id));
        r.opened(id, Transport::Tls, remote);
        assert!(r.is_open(id));
        assert_eq!(r.find(Transport::Tls, remote), Some(id));
        assert_eq!(r.find(Transport::Tcp, remote), None);
        let next = ConnId { gen: 8, ..id };
        assert!(!r.is_open(next), "another generation of the slot");
        r.closed(id, Transport::Tls, remote);
        assert!(!r.is_open(id));
        assert_eq!(r.find(Transport::Tls, remote), None);
        // Out-of-range ids are never open.
        assert!(!r.is_open(ConnId {
            worker: 9,
            slot: 0,
            gen: 1
        }));
    }
}
