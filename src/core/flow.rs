//! The core's vocabulary for where a message comes from and goes to, and for time. The I/O
//! shell (`crate::transport`) speaks it too, so a message's way in and out is named once,
//! the same way, from the socket to the location table.
//!
//! - [`Local`]: which of the proxy's own sockets — a listen address (by its index in
//!   [`super::CoreConfig::listen`], the order the transport binds them in) or the worker's
//!   upstream socket towards Asterisk.
//! - [`Flow`]: a local socket and the peer's address: where a request came from (its
//!   responses go back the same way), where a phone registered from (requests to it leave
//!   the same way, keeping its NAT pinhole open), where a branch was sent.
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

/// A local socket and a remote address: the way a message came in or goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub local: Local,
    pub remote: SocketAddr,
}

impl Flow {
    pub const fn new(local: Local, remote: SocketAddr) -> Flow {
        Flow { local, remote }
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
