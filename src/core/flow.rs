//! The core's vocabulary for where a message comes from and goes to, and for time. The I/O
//! shell (`crate::transport`) speaks it too, so a message's way in and out is named once,
//! the same way, from the socket to the location table.
//!
//! - [`Local`]: which of the proxy's own sockets — a listen address (by its index in
//!   [`super::CoreConfig::listen`], the order the transport binds them in) or the worker's
//!   upstream socket towards Asterisk.
//! - [`Flow`]: a local socket and the peer's address, and for a stream transport the
//!   connection ([`ConnId`]): where a request came from (its responses go back the same
//!   way), where a phone registered from (requests to it leave the same way, keeping its NAT
//!   pinhole open or reusing its TCP/TLS connection), where a branch was sent.
//! - [`Now`]: the two clocks a loop turn reads once — monotonic for the RFC 3261 timers,
//!   wall clock for what is compared with other processes or persisted (binding expiry,
//!   `Date`, nonces, bans).

use std::net::SocketAddr;

/// One of the proxy's own sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Local {
    /// Listen address number `.0` (every worker has its own `SO_REUSEPORT` socket bound to
    /// it, so a message sent on it by any worker leaves from the same address and port).
    Listen(u16),
    /// The worker's own upstream socket towards Asterisk: on the IP of the listen address
    /// facing Asterisk ([`super::CoreConfig::asterisk_side`]), with a port of its own, so
    /// Asterisk's answers come back to the worker that sent the request.
    Upstream,
}

/// A stream connection: the worker that owns it, its slot in that worker's connection
/// table, and the slot's generation (so the id of a closed connection never names the next
/// one in the same slot). Any worker may send on it: the transport passes the bytes to the
/// owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub worker: u16,
    pub slot: u32,
    pub gen: u32,
}

/// Bits of the slot and of the generation in [`ConnId::pack`]; bit 47 is always set, so a
/// packed id is never 0.
const SLOT_BITS: u32 = 23;
const GEN_BITS: u32 = 24;
const MARK: u64 = 1 << 47;

impl ConnId {
    /// Most connection slots per worker ([`ConnId::pack`] keeps 23 bits of the slot).
    pub const MAX_SLOTS: u32 = 1 << SLOT_BITS;

    /// The id in 64 bits (worker 16, a marker bit, slot 23, generation 24 — the generation
    /// wraps), never 0; for tables that store a connection beside other data.
    pub fn pack(self) -> u64 {
        let gen = u64::from(self.gen) & ((1 << GEN_BITS) - 1);
        let slot = u64::from(self.slot & (Self::MAX_SLOTS - 1));
        (u64::from(self.worker) << 48) | MARK | (slot << GEN_BITS) | gen
    }

    /// The id of [`ConnId::pack`] (generation modulo 2^24); `None` for a value without the
    /// marker (0 = no connection).
    pub fn unpack(v: u64) -> Option<ConnId> {
        (v & MARK != 0).then(|| ConnId {
            worker: (v >> 48) as u16,
            slot: ((v >> GEN_BITS) & u64::from(Self::MAX_SLOTS - 1)) as u32,
            gen: (v & ((1 << GEN_BITS) - 1)) as u32,
        })
    }
}

/// A local socket and a remote address (and the connection, on a stream transport): the way
/// a message came in or goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub local: Local,
    pub remote: SocketAddr,
    /// The connection, on a stream listen address; `None` on UDP (and on a stream address
    /// when the connection to `remote` is still to be found).
    pub conn: Option<ConnId>,
}

impl Flow {
    /// A datagram flow.
    pub const fn new(local: Local, remote: SocketAddr) -> Flow {
        Flow {
            local,
            remote,
            conn: None,
        }
    }

    /// A flow over connection `conn` of stream listen address `local`.
    pub const fn on_conn(local: Local, remote: SocketAddr, conn: ConnId) -> Flow {
        Flow {
            local,
            remote,
            conn: Some(conn),
        }
    }
}

/// The clocks, read once per loop turn by the shell (or set by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic milliseconds (any origin): RFC 3261 timers, parking, caches. Never goes
    /// back when the wall clock is stepped.
    pub mono_ms: u64,
    /// Milliseconds since the UNIX epoch: binding expiry (persisted, shared with other
    /// processes), `Date` headers, nonce timestamps, ban deadlines.
    pub wall_ms: u64,
}

impl Now {
    /// Both clocks at the same reading (tests on a virtual clock).
    pub const fn same(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: ms,
        }
    }

    /// `ms` later on both clocks.
    pub const fn plus(self, ms: u64) -> Now {
        Now {
            mono_ms: self.mono_ms + ms,
            wall_ms: self.wall_ms + ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_pack_into_64_bits() {
        let c = ConnId {
            worker: 3,
            slot: 0x12_3456,
            gen: 0xab_cdef,
        };
        assert_eq!(ConnId::unpack(c.pack()), Some(c));
        let zero = ConnId {
            worker: 0,
            slot: 0,
            gen: 0,
        };
        assert_ne!(zero.pack(), 0);
        assert_eq!(ConnId::unpack(zero.pack()), Some(zero));
        assert_eq!(ConnId::unpack(0), None);
        let wrapped = ConnId {
            gen: (1 << 24) + 5,
            ..c
        };
        assert_eq!(ConnId::unpack(wrapped.pack()).map(|c| c.gen), Some(5));
    }
}
