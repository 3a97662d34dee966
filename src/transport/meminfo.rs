//! The kernel's view of a worker's receive queues: `getsockopt(SO_MEMINFO)` on each of its
//! sockets, read by the loop at most once per millisecond.
//!
//! Two numbers come out of it:
//! - the **backlog**: bytes received by the kernel for this worker and not processed yet
//!   (`SK_MEMINFO_RMEM_ALLOC` of every socket, i.e. queued datagrams at their kernel
//!   `truesize`, plus what the backend already took off the sockets but has not handed to
//!   the handler: io_uring completions queued in user space). The handler uses it to shed
//!   load before the kernel has to drop it (`DatagramHandler::on_backlog`);
//! - the **kernel drops**: `SK_MEMINFO_DROPS` summed over the sockets, datagrams the kernel
//!   discarded because a receive buffer was full (cumulative since each socket was created;
//!   what `/proc/net/udp` shows as `drops`).
//!
//! A kernel without `SO_MEMINFO` (before 4.6) or without the drop counter in it (before
//! 4.18) reports nothing: the meter switches itself off after the first failure, logs that
//! once, and the handler is never told of a backlog (so it never sheds).

use std::io;
use std::os::fd::RawFd;

/// `SO_MEMINFO` (Linux >= 4.6). The `libc` crate exports the `SK_MEMINFO_*` indexes but
/// not the option itself on every target; 55 is `asm-generic/socket.h` (every architecture
/// sipfront builds for), sparc has its own number.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_MEMINFO: libc::c_int = 55;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_MEMINFO: libc::c_int = 0x0039;

/// `SK_MEMINFO_VARS` as of Linux 4.18 (the last index is `SK_MEMINFO_DROPS`).
const MEMINFO_VARS: usize = libc::SK_MEMINFO_DROPS as usize + 1;

/// One socket's reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SockMem {
    /// Bytes queued in the receive buffer (`sk_rmem_alloc`, skb truesize).
    pub(crate) rmem_alloc: u32,
    /// The receive buffer size the kernel applied (`sk_rcvbuf`).
    pub(crate) rcvbuf: u32,
    /// Datagrams dropped at this socket since it was created (`sk_drops`).
    pub(crate) drops: u32,
}

/// `getsockopt(fd, SOL_SOCKET, SO_MEMINFO)`. Fails with `ENOPROTOOPT` on kernels before
/// 4.6, and with `EINVAL` when the kernel's array lacks the drop counter.
pub(crate) fn read_meminfo(fd: RawFd) -> io::Result<SockMem> {
    let mut mem = [0u32; MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&mem) as libc::socklen_t;
    // SAFETY: `mem` is a writable buffer of `len` bytes; the kernel writes at most `len`
    // bytes and stores the length it wrote in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            mem.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < std::mem::size_of_val(&mem) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let at = |i: libc::c_int| mem.get(i as usize).copied().unwrap_or(0);
    Ok(SockMem {
        rmem_alloc: at(libc::SK_MEMINFO_RMEM_ALLOC),
        rcvbuf: at(libc::SK_MEMINFO_RCVBUF),
        drops: at(libc::SK_MEMINFO_DROPS),
    })
}

/// What a worker learns from one reading of all its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Received bytes not processed yet: the sockets' queued bytes (kernel `truesize`,
    /// somewhat more than the payload) plus the payload bytes of datagrams the backend
    /// holds in user space (io_uring completions not processed yet).
    pub bytes: u64,
    /// The smallest receive buffer (`SO_RCVBUF` as the kernel applied it, i.e. doubled and
    /// capped by `net.core.rmem_max`) among the worker's sockets: a socket whose queue
    /// reaches its buffer drops, so a threshold above this is never reached.
    pub min_rcvbuf: u64,
}

/// Reads the worker's sockets at most once per millisecond.
pub(crate) struct BacklogMeter {
    fds: Vec<RawFd>,
    /// Per socket: the last `sk_drops` seen (a u32 in the kernel: wraps).
    last_drops: Vec<u32>,
    last_ms: u64,
    enabled: bool,
}

impl BacklogMeter {
    /// A meter for `fds` (the worker's sockets; they must outlive the meter's use).
    pub(crate) fn new(fds: &[RawFd]) -> Self {
        BacklogMeter {
            fds: fds.to_vec(),
            last_drops: vec![0; fds.len()],
            last_ms: 0,
            enabled: !fds.is_empty(),
        }
    }

    /// Whether a reading is due at `now_ms` (not yet read this millisecond, not disabled).
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        self.enabled && now_ms != self.last_ms
    }

    /// False once `SO_MEMINFO` failed (or without sockets).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Reads every socket. Returns the backlog (`user_bytes` added to the kernel's queued
    /// bytes) and the datagrams the kernel dropped since the previous reading; `None` when
    /// `SO_MEMINFO` is unavailable (the meter then stays off).
    pub(crate) fn read(&mut self, now_ms: u64, user_bytes: u64) -> Option<(Backlog, u64)> {
        self.last_ms = now_ms;
        let mut b = Backlog {
            bytes: user_bytes,
            min_rcvbuf: u64::MAX,
        };
        let mut new_drops = 0u64;
        for (fd, last) in self.fds.iter().zip(self.last_drops.iter_mut()) {
            match read_meminfo(*fd) {
                Ok(m) => {
                    b.bytes += u64::from(m.rmem_alloc);
                    b.min_rcvbuf = b.min_rcvbuf.min(u64::from(m.rcvbuf));
                    new_drops += u64::from(m.drops.wrapping_sub(*last));
                    *last = m.drops;
                }
                Err(e) => {
                    self.enabled = false;
                    tracing::warn!(
                        error = %e,
                        "SO_MEMINFO unavailable: no kernel drop counts, no backlog-based load shedding"
                    );
                    return None;
                }
            }
        }
        Some((b, new_drops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use socket2::{Domain, Protocol, Socket, Type};

    fn udp(rcvbuf: Option<usize>) -> UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n).unwrap();
        }
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.into()
    }

    #[test]
    fn queued_datagrams_show_as_backlog_and_leave_it_when_read() {
        let rx = udp(Some(1 << 20));
        let tx = udp(None);
        let to = rx.local_addr().unwrap();
        let empty = read_meminfo(rx.as_raw_fd()).unwrap();
        assert_eq!(empty.rmem_alloc, 0, "{empty:?}");
        assert!(empty.rcvbuf >= 1 << 16, "{empty:?}");
        for _ in 0..50 {
            tx.send_to(&[7u8; 500], to).unwrap();
        }
        // Loopback delivery is synchronous in send_to: the datagrams are queued now.
        let full = read_meminfo(rx.as_raw_fd()).unwrap();
        assert!(full.rmem_alloc >= 50 * 500, "{full:?}");
        assert_eq!(full.drops, 0, "{full:?}");

        let mut meter = BacklogMeter::new(&[rx.as_raw_fd(), tx.as_raw_fd()]);
        assert!(meter.due(1));
        let (b, drops) = meter.read(1, 100).unwrap();
        assert_eq!(b.bytes, u64::from(full.rmem_alloc) + 100);
        assert!(b.min_rcvbuf > 0 && b.min_rcvbuf < u64::MAX, "{b:?}");
        assert_eq!(drops, 0);
        assert!(!meter.due(1), "at most one reading per millisecond");
        assert!(meter.due(2));

        let mut buf = [0u8; 600];
        rx.set_nonblocking(true).unwrap();
        while rx.recv_from(&mut buf).is_ok() {}
        let (b, _) = meter.read(2, 0).unwrap();
        assert_eq!(b.bytes, 0, "{b:?}");
    }

    #[test]
    fn an_overfilled_socket_counts_kernel_drops() {
        // The kernel's minimum receive buffer (about 2 KiB after doubling) holds a couple
        // of datagrams; the rest of the burst is dropped and counted.
        let rx = udp(Some(1));
        let tx = udp(None);
        let to = rx.local_addr().unwrap();
        let mut meter = BacklogMeter::new(&[rx.as_raw_fd()]);
        let (_, before) = meter.read(1, 0).unwrap();
        assert_eq!(before, 0);
        for _ in 0..200 {
            tx.send_to(&[1u8; 1000], to).unwrap();
        }
        let m = read_meminfo(rx.as_raw_fd()).unwrap();
        assert!(m.drops > 100, "{m:?}");
        let (b, drops) = meter.read(2, 0).unwrap();
        assert_eq!(drops, u64::from(m.drops));
        assert!(b.bytes > 0 && b.bytes <= 2 * b.min_rcvbuf, "{b:?}");
        // Drops are reported once: the next reading adds nothing.
        let (_, again) = meter.read(3, 0).unwrap();
        assert_eq!(again, 0);
    }

    /// Cost of one reading of two sockets (a worker with one listen address), for
    /// docs/benchmarks.md: `cargo test --release --lib meminfo::tests::overhead --
    /// --ignored --nocapture`. Prints, asserts nothing about time.
    #[test]
    #[ignore]
    fn overhead() {
        let (a, b) = (udp(Some(1 << 20)), udp(None));
        let mut meter = BacklogMeter::new(&[a.as_raw_fd(), b.as_raw_fd()]);
        let n = 200_000u64;
        let t = std::time::Instant::now();
        for i in 0..n {
            assert!(meter.read(i + 1, 0).is_some());
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("one backlog reading of 2 sockets: {ns:.0} ns");
    }

    #[test]
    fn a_bad_descriptor_switches_the_meter_off() {
        let mut meter = BacklogMeter::new(&[-1]);
        assert!(meter.due(5));
        assert!(meter.read(5, 0).is_none());
        assert!(!meter.due(6));
    }
}
