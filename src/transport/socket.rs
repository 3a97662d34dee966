//! Socket setup (socket2), core pinning and the loop clocks.
//!
//! Every worker binds its own `SO_REUSEPORT` socket on each listen address and one private
//! upstream socket on the IP of the listen address facing Asterisk (port
//! `upstream_port_base + index`, or ephemeral).
//! All sockets are nonblocking with large kernel buffers.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::{TransportConfig, TransportError};
use crate::core::Now;

/// The sockets of one worker.
pub(crate) struct WorkerSockets {
    /// One per UDP listen address, same order as the listen list.
    pub(crate) listen: Vec<UdpSocket>,
    /// The private upstream socket.
    pub(crate) upstream: UdpSocket,
    /// One listener per stream listen address, same order.
    pub(crate) streams: Vec<TcpListener>,
}

/// A TCP listener with `SO_REUSEPORT`, so every worker has its own and the kernel spreads
/// new connections over them.
fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(sock_err(addr, "socket"))?;
    sock.set_reuse_address(true)
        .map_err(sock_err(addr, "SO_REUSEADDR"))?;
    sock.set_reuse_port(true)
        .map_err(sock_err(addr, "SO_REUSEPORT"))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(sock_err(addr, "IPV6_V6ONLY"))?;
    }
    sock.set_nonblocking(true)
        .map_err(sock_err(addr, "O_NONBLOCK"))?;
    sock.bind(&addr.into()).map_err(sock_err(addr, "bind"))?;
    sock.listen(1024).map_err(sock_err(addr, "listen"))?;
    Ok(sock.into())
}

fn sock_err(addr: SocketAddr, op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Socket { addr, op, source }
}

fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    cfg: &TransportConfig,
) -> Result<UdpSocket, TransportError> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err(addr, "socket"))?;
    if reuse_port {
        sock.set_reuse_port(true)
            .map_err(sock_err(addr, "SO_REUSEPORT"))?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(sock_err(addr, "IPV6_V6ONLY"))?;
    }
    // The kernel caps these at net.core.{r,w}mem_max; a smaller result is not an error.
    sock.set_recv_buffer_size(cfg.recv_buffer_bytes)
        .map_err(sock_err(addr, "SO_RCVBUF"))?;
    sock.set_send_buffer_size(cfg.send_buffer_bytes)
        .map_err(sock_err(addr, "SO_SNDBUF"))?;
    sock.set_nonblocking(true)
        .map_err(sock_err(addr, "O_NONBLOCK"))?;
    sock.bind(&addr.into()).map_err(sock_err(addr, "bind"))?;
    Ok(sock.into())
}

/// True when nothing holds UDP `addr` yet: a bind without `SO_REUSEPORT` succeeds (and
/// is closed at once). A port of 0 is always free. Then the reuseport group the workers
/// form holds only their sockets, in bind order (what `steer.rs` relies on).
pub(crate) fn udp_address_free(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return true;
    }
    let Ok(sock) = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)) else {
        return false;
    };
    if addr.is_ipv6() && sock.set_only_v6(true).is_err() {
        return false;
    }
    sock.bind(&addr.into()).is_ok()
}

/// Binds the listen sockets of worker `index`, and its upstream socket on the IP of
/// `listen[upstream_on]`. `listen` must be nonempty; listen ports of 0 must already be
/// resolved (see [`resolve_listen`]) so that all workers share one port.
pub(crate) fn bind_worker(
    index: usize,
    listen: &[SocketAddr],
    upstream_on: usize,
    streams: &[SocketAddr],
    cfg: &TransportConfig,
) -> Result<WorkerSockets, TransportError> {
    let first = *listen
        .get(upstream_on)
        .or(listen.first())
        .ok_or(TransportError::NoListenAddress)?;
    let mut socks = Vec::with_capacity(listen.len());
    for &addr in listen {
        socks.push(bind_udp(addr, true, cfg)?);
    }
    let port = if cfg.upstream_port_base == 0 {
        0
    } else {
        u16::try_from(usize::from(cfg.upstream_port_base) + index).map_err(|_| {
            TransportError::UpstreamPortOverflow {
                base: cfg.upstream_port_base,
                index,
            }
        })?
    };
    let upstream = bind_udp(SocketAddr::new(first.ip(), port), false, cfg)?;
    let streams = streams
        .iter()
        .map(|&a| bind_tcp(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WorkerSockets {
        listen: socks,
        upstream,
        streams,
    })
}

/// Resolves listen addresses with port 0 by binding them once (worker 0's sockets), so
/// every worker then binds the same concrete port. Returns the UDP and the stream
/// addresses, resolved.
pub(crate) fn resolve_listen(
    listen: &[SocketAddr],
    upstream_on: usize,
    streams: &[SocketAddr],
    cfg: &TransportConfig,
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>, WorkerSockets), TransportError> {
    let w0 = bind_worker(0, listen, upstream_on, streams, cfg)?;
    let mut resolved = Vec::with_capacity(listen.len());
    for (sock, &want) in w0.listen.iter().zip(listen) {
        resolved.push(sock.local_addr().map_err(sock_err(want, "getsockname"))?);
    }
    let mut stream_addrs = Vec::with_capacity(streams.len());
    for (sock, &want) in w0.streams.iter().zip(streams) {
        stream_addrs.push(sock.local_addr().map_err(sock_err(want, "getsockname"))?);
    }
    Ok((resolved, stream_addrs, w0))
}

/// Pins the calling thread to the `index`-th CPU it is allowed to run on (modulo their
/// count). Returns the CPU chosen.
pub(crate) fn pin_to_core(index: usize) -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain old data; zeroed is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `allowed` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i < CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &allowed) })
        .collect();
    let Some(&cpu) = cpus.get(index % cpus.len().max(1)) else {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no allowed CPU"));
    };
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes; 0 = calling thread.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}

/// Number of CPUs this process may use (the `workers = 0` default).
pub(crate) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Milliseconds of a coarse clock (a vDSO read, no syscall; resolution of one tick, 1-4 ms).
fn coarse_ms(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer; both clock ids used exist on every Linux >= 2.6.32.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// `CLOCK_MONOTONIC_COARSE` in milliseconds: the clock of
/// [`super::DatagramHandler::next_deadline_ms`].
pub fn mono_ms() -> u64 {
    coarse_ms(libc::CLOCK_MONOTONIC_COARSE)
}

/// Both clocks, read once per loop turn: monotonic for timers, `CLOCK_REALTIME_COARSE`
/// (milliseconds since the UNIX epoch) for what is persisted or compared across processes.
pub(crate) fn now() -> Now {
    Now {
        mono_ms: mono_ms(),
        wall_ms: coarse_ms(libc::CLOCK_REALTIME_COARSE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_listen_port_and_get_own_upstream() {
        let cfg = TransportConfig::default();
        let (listen, _, w0) =
            resolve_listen(&["127.0.0.1:0".parse().unwrap()], 0, &[], &cfg).unwrap();
        let w1 = bind_worker(1, &listen, 0, &[], &cfg).unwrap();
        assert_eq!(w1.listen[0].local_addr().unwrap(), listen[0]);
        let u0 = w0.upstream.local_addr().unwrap();
        let u1 = w1.upstream.local_addr().unwrap();
        assert_eq!(u0.ip(), listen[0].ip());
        assert_ne!(u0.port(), u1.port());
    }

    #[test]
    fn upstream_binds_the_chosen_interface() {
        let cfg = TransportConfig::default();
        let want = [
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.10:0".parse().unwrap(),
        ];
        let (_, _, w0) = resolve_listen(&want, 1, &[], &cfg).unwrap();
        let u0 = w0.upstream.local_addr().unwrap();
        assert_eq!(u0.ip(), want[1].ip());
    }

    #[test]
    fn upstream_port_overflow_is_an_error() {
        let cfg = TransportConfig {
            upstream_port_base: 65_535,
            ..TransportConfig::default()
        };
        let r = bind_worker(1, &["127.0.0.1:0".parse().unwrap()], 0, &[], &cfg);
        assert!(matches!(
            r,
            Err(TransportError::UpstreamPortOverflow { index: 1, .. })
        ));
    }

    #[test]
    fn clocks_are_epoch_and_monotonic_ms() {
        let t = now();
        assert!(t.wall_ms > 1_600_000_000_000, "{t:?}");
        assert!(mono_ms() >= t.mono_ms);
    }
}
