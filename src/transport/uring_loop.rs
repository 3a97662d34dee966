//! io_uring backend, loop side: arms one multishot `RecvMsg` per socket over the
//! provided-buffer ring, processes receive completions (within the turn's work cap),
//! gives buffers back, re-arms a multishot the kernel ended (`ENOBUFS`, errors), and
//! sleeps in one `io_uring_enter` per turn. The backlog it reports adds the receive
//! completions already reaped but not processed (they left the socket's queue).

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, types, IoUring};

use super::bufring::BufRing;
use super::shell::Shell;
use super::sockaddr::read_sockaddr_bytes;
use super::socket::WorkerSockets;
use super::uring::{new_ring, recv_buffers, recv_template, tag, UringIo, KIND_RECV};
use super::{DatagramHandler, TransportConfig, TransportError};
use crate::core::{Flow, Local};

/// Bytes before the payload in a multishot receive buffer: the `io_uring_recvmsg_out`
/// header plus room for the source address.
const RECV_HEADROOM: usize = 16 + std::mem::size_of::<libc::sockaddr_storage>();

/// Receive state: the buffer ring and the per-socket `msghdr` templates.
struct RecvSide {
    bufs: BufRing,
    /// One template per socket; boxed so their addresses stay fixed while armed.
    templates: Box<[libc::msghdr]>,
    fds: Vec<RawFd>,
}

impl RecvSide {
    fn arm(&self, io: &mut UringIo, k: usize) -> std::io::Result<()> {
        let (Some(&fd), Some(tmpl)) = (self.fds.get(k), self.templates.get(k)) else {
            return Ok(());
        };
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), tmpl, self.bufs.bgid)
            .build()
            .user_data(tag(KIND_RECV, k));
        io.push(&e)?;
        io.armed[k] = true;
        Ok(())
    }
}

/// A worker's ring with its receive buffer ring registered: everything that can fail
/// before the loop starts (so `WorkerSet::spawn` can report it or fall back).
pub(crate) struct UringSetup {
    ring: IoUring,
    bufs: BufRing,
}

impl UringSetup {
    /// Ring and buffer ring for `n_socks` sockets.
    pub(crate) fn new(cfg: &TransportConfig, n_socks: usize) -> std::io::Result<Self> {
        // Buffers first: on error the ring is dropped before them.
        let bufs = BufRing::new(
            recv_buffers(cfg, n_socks),
            RECV_HEADROOM + cfg.max_datagram,
            0,
        )?;
        let ring = new_ring(cfg, n_socks)?;
        bufs.register(&ring)?;
        Ok(UringSetup { ring, bufs })
    }
}

/// Runs the worker loop until shutdown.
pub(crate) fn run<H: DatagramHandler>(
    mut shell: Shell<H>,
    setup: UringSetup,
    sockets: WorkerSockets,
    cfg: &TransportConfig,
    index: usize,
) -> Result<(), TransportError> {
    let UringSetup { ring, bufs } = setup;
    let socks: Vec<UdpSocket> = sockets
        .listen
        .into_iter()
        .chain([sockets.upstream])
        .collect();
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut rx = RecvSide {
        bufs,
        templates: fds.iter().map(|_| recv_template()).collect(),
        fds: fds.clone(),
    };
    shell.watch_sockets(&fds);
    let mut io = UringIo::new(ring, fds, cfg, index);
    let result = run_loop(&mut shell, &mut io, &mut rx);
    shell.close_streams();
    if io.cancel_all() {
        let _ = io.ring.submitter().unregister_buf_ring(rx.bufs.bgid);
    } else {
        // The kernel may still write into the buffers: never free them.
        tracing::warn!(
            worker = index,
            "io_uring receives not cancelled; leaking buffers"
        );
        std::mem::forget(rx);
    }
    result
}

fn run_loop<H: DatagramHandler>(
    shell: &mut Shell<H>,
    io: &mut UringIo,
    rx: &mut RecvSide,
) -> Result<(), TransportError> {
    let efd = shell.waker().fd();
    let upstream_idx = rx.fds.len() - 1;
    for k in 0..rx.fds.len() {
        rx.arm(io, k).map_err(io.worker_err("arm recv"))?;
    }
    io.arm_wake(efd).map_err(io.worker_err("arm eventfd"))?;
    let stream_fd = shell.stream_fd();
    if let Some(fd) = stream_fd {
        io.arm_streams(fd).map_err(io.worker_err("arm epoll"))?;
    }
    io.ring.submit().map_err(io.worker_err("io_uring_enter"))?;

    while !shell.shutting_down() {
        shell.begin_turn();
        shell.sample_backlog(|| io.ready_bytes());
        let mut budget = shell.budget();
        let mut returned = false;
        while budget > 0 {
            let Some((k, res, flags)) = io.ready.pop_front() else {
                break;
            };
            let bid = cqueue::buffer_select(flags);
            let sock = if k == upstream_idx {
                Local::Upstream
            } else {
                Local::Listen(k as u16)
            };
            if let (Some(bid), Ok(len)) = (bid, usize::try_from(res)) {
                budget -= 1;
                let tmpl = rx.templates.get(k).copied().unwrap_or_else(recv_template);
                let parsed = rx
                    .bufs
                    .data(bid, len)
                    .and_then(|b| types::RecvMsgOut::parse(b, &tmpl).ok())
                    .filter(|m| !m.is_payload_truncated() && !m.is_name_data_truncated())
                    .and_then(|m| Some((read_sockaddr_bytes(m.name_data())?, m)));
                match parsed {
                    Some((src, m)) => shell.on_received(Flow::new(sock, src), m.payload_data(), io),
                    None => shell.on_bad_receive(),
                }
            } else if res != -libc::ENOBUFS && res != -libc::ECANCELED && res < 0 {
                shell.on_bad_receive();
            }
            if let Some(bid) = bid {
                rx.bufs.push(bid);
                returned = true;
            }
        }
        if returned {
            rx.bufs.publish();
        }
        // Re-arm receives the kernel ended (ENOBUFS, errors) once buffers are free again:
        // every queued completion holds at most one buffer.
        if io.ready.len() < usize::from(rx.bufs.entries()) {
            for k in 0..rx.fds.len() {
                if !io.armed[k] {
                    rx.arm(io, k).map_err(io.worker_err("arm recv"))?;
                }
            }
        }
        if std::mem::take(&mut io.streams_woke) {
            shell.streams_ready();
            if let Some(fd) = stream_fd {
                io.arm_streams(fd).map_err(io.worker_err("arm epoll"))?;
            }
        }
        shell.service_streams(io);
        let handed = shell.drain_handoffs(budget, io);
        if std::mem::take(&mut io.woke) {
            shell.waker().drain();
            io.arm_wake(efd).map_err(io.worker_err("arm eventfd"))?;
        }
        shell.wakes_and_timers(io);
        shell.end_turn(io);

        let busy = !io.ready.is_empty() || handed > 0;
        let wait = if busy { 0 } else { shell.wait_ms() };
        if wait > 0 {
            shell.recheck_backlog(|| io.ready_bytes());
        }
        shell.publish();
        // One syscall submits the turn's sends and sleeps: the sends complete inline on
        // UDP, so wait for one completion more than there are sends in flight.
        let r = if wait == 0 {
            io.ring.submit()
        } else {
            let ts = types::Timespec::new()
                .sec(wait / 1000)
                .nsec((wait % 1000) as u32 * 1_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            io.ring
                .submitter()
                .submit_with_args(io.send_inflight + 1, &args)
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => return Err(io.worker_err("io_uring_enter")(e)),
            }
        }
        io.reap();
    }
    Ok(())
}
