//! io_uring backend: `recv_batch` `RecvMsg` SQEs in flight per socket over preallocated
//! buffers, `SendMsg` SQEs for the whole outbox submitted once per flush, a `PollAdd` on
//! the eventfd for wakes, and `io_uring_enter` with an `EXT_ARG` timeout to sleep until I/O,
//! a wake or the handler's deadline.
//!
//! The turn's sends are only pushed; the loop's single `io_uring_enter` submits them and
//! sleeps for `sends + 1` completions (UDP sends complete inline, so in effect for the next
//! event). Before the outbox slab or the send headers are written again, `settle` makes sure
//! every send completed. At low load that is one syscall per loop turn.
//!
//! Every SQE's `user_data` is `kind << 32 | slot`. A receive slot belongs to one socket
//! (`slot / recv_batch`) and is re-armed right after its datagram was processed. Receive
//! completions reaped while settling sends are queued in `ready` for the next turn.

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::error::UringUnavailable;
use super::mmsg::fd_for;
use super::msgs::MsgArray;
use super::outbox::Outbox;
use super::shell::{SendBackend, Shell};
use super::socket::WorkerSockets;
use super::{DatagramHandler, SockId, TransportConfig, TransportError, WorkerCounters};

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;

fn tag(kind: u64, slot: usize) -> u64 {
    kind << 32 | slot as u64
}

/// Checks that io_uring can be used here: sysctl, setup, and `EXT_ARG` support.
pub(crate) fn probe() -> Result<(), UringUnavailable> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() == "2" {
            return Err(UringUnavailable::DisabledBySysctl(2));
        }
    }
    let ring = IoUring::new(8).map_err(UringUnavailable::Setup)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(UringUnavailable::NoExtArg);
    }
    Ok(())
}

/// The ring plus the sending side and completions reaped out of turn.
struct UringIo {
    ring: IoUring,
    fds: Vec<RawFd>,
    send: MsgArray,
    /// Receive completions `(slot, result)` not yet processed.
    ready: VecDeque<(usize, i32)>,
    /// The eventfd poll completed.
    woke: bool,
    /// Receive SQEs currently owned by the kernel.
    recv_armed: usize,
    /// Send SQEs pushed whose completion was not reaped yet (they read the outbox slab).
    send_inflight: usize,
    /// Failed sends reaped but not yet added to the shell's counters.
    sent_failed: u64,
    /// Number of receive slots (all sockets).
    n_recv: usize,
    index: usize,
}

impl UringIo {
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry we build points at memory (msghdrs, buffers, the outbox
            // slab) owned by this worker that stays alive and untouched until its
            // completion is reaped (`settle`, `cancel_all`).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Moves every completion out of the CQ.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let (kind, slot) = (
                cqe.user_data() >> 32,
                (cqe.user_data() & 0xffff_ffff) as usize,
            );
            match kind {
                KIND_RECV => {
                    self.recv_armed = self.recv_armed.saturating_sub(1);
                    self.ready.push_back((slot, cqe.result()));
                }
                KIND_SEND => {
                    self.send_inflight = self.send_inflight.saturating_sub(1);
                    if cqe.result() < 0 {
                        self.sent_failed += 1;
                    }
                }
                KIND_WAKE => self.woke = true,
                _ => {}
            }
        }
    }

    fn arm_wake(&mut self, efd: RawFd) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(efd), libc::POLLIN as u32)
            .build()
            .user_data(tag(KIND_WAKE, 0));
        self.push(&e)
    }

    fn worker_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
        let index = self.index;
        move |source| TransportError::Worker { index, op, source }
    }
}

impl SendBackend for UringIo {
    /// Pushes one `SendMsg` per entry; they are submitted by the loop's next
    /// `io_uring_enter` (or by `settle` if the outbox is needed again first).
    fn send_all(&mut self, out: &Outbox, c: &mut WorkerCounters) {
        // The send headers are reused: earlier sends must be done.
        self.settle(c);
        for (j, e) in out.entries().iter().enumerate().take(self.send.len()) {
            let Some(fd) = fd_for(&self.fds, e.sock) else {
                c.dropped += 1;
                continue;
            };
            self.send.set_send(j, e.dst, out.bytes(e));
            let sqe = opcode::SendMsg::new(types::Fd(fd), self.send.msghdr_ptr(j))
                .build()
                .user_data(tag(KIND_SEND, j));
            if self.push(&sqe).is_err() {
                c.dropped += 1;
                continue;
            }
            self.send_inflight += 1;
            c.tx += 1;
        }
    }

    fn settle(&mut self, c: &mut WorkerCounters) {
        if self.send_inflight > 0 {
            self.reap();
        }
        while self.send_inflight > 0 {
            // EINTR/EBUSY: reap what is there and retry.
            let _ = self.ring.submit_and_wait(1);
            self.reap();
        }
        c.send_errors += std::mem::take(&mut self.sent_failed);
    }
}

/// Creates a worker's ring, sized for `n_socks` sockets' receives plus the send slots.
pub(crate) fn new_ring(cfg: &TransportConfig, n_socks: usize) -> io::Result<IoUring> {
    let entries = (n_socks * cfg.recv_batch + cfg.send_slots + 8)
        .next_power_of_two()
        .min(32_768) as u32;
    IoUring::new(entries)
}

/// Runs the worker loop until shutdown.
pub(crate) fn run<H: DatagramHandler>(
    mut shell: Shell<H>,
    ring: IoUring,
    sockets: WorkerSockets,
    cfg: &TransportConfig,
    index: usize,
) -> Result<(), TransportError> {
    let socks: Vec<UdpSocket> = sockets
        .listen
        .into_iter()
        .chain([sockets.upstream])
        .collect();
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let upstream_idx = fds.len() - 1;
    let batch = cfg.recv_batch;
    let n_recv = fds.len() * batch;
    let mut rx = MsgArray::new(n_recv, cfg.max_datagram);
    let mut io = UringIo {
        ring,
        fds: fds.clone(),
        send: MsgArray::new(cfg.send_slots, 0),
        ready: VecDeque::with_capacity(n_recv),
        woke: false,
        recv_armed: 0,
        send_inflight: 0,
        sent_failed: 0,
        n_recv,
        index,
    };
    let efd = shell.waker().fd();
    let result = run_loop(&mut shell, &mut io, &mut rx, &fds, upstream_idx, batch, efd);
    if !cancel_all(&mut io) {
        // The kernel may still write into `rx`: never free it.
        tracing::warn!(
            worker = index,
            "io_uring receives not cancelled; leaking buffers"
        );
        std::mem::forget(rx);
    }
    result
}

fn arm_recv(
    io: &mut UringIo,
    rx: &mut MsgArray,
    fds: &[RawFd],
    batch: usize,
    slot: usize,
) -> io::Result<()> {
    let Some(&fd) = fds.get(slot / batch) else {
        return Ok(());
    };
    rx.reset_recv(slot);
    let e = opcode::RecvMsg::new(types::Fd(fd), rx.msghdr_ptr(slot))
        .build()
        .user_data(tag(KIND_RECV, slot));
    io.push(&e)?;
    io.recv_armed += 1;
    Ok(())
}

fn run_loop<H: DatagramHandler>(
    shell: &mut Shell<H>,
    io: &mut UringIo,
    rx: &mut MsgArray,
    fds: &[RawFd],
    upstream_idx: usize,
    batch: usize,
    efd: RawFd,
) -> Result<(), TransportError> {
    for slot in 0..rx.len() {
        arm_recv(io, rx, fds, batch, slot).map_err(io.worker_err("arm recv"))?;
    }
    io.arm_wake(efd).map_err(io.worker_err("arm eventfd"))?;
    io.ring.submit().map_err(io.worker_err("io_uring_enter"))?;

    while !shell.shutting_down() {
        shell.begin_turn();
        let mut budget = shell.budget();
        while budget > 0 {
            let Some((slot, res)) = io.ready.pop_front() else {
                break;
            };
            budget -= 1;
            let k = slot / batch;
            let sock = if k == upstream_idx {
                SockId::Upstream
            } else {
                SockId::Listen(k as u16)
            };
            match usize::try_from(res).ok().and_then(|n| rx.received(slot, n)) {
                Some((src, data)) => shell.on_received(sock, src, data, io),
                None if res == -libc::EAGAIN => {}
                None => shell.on_bad_receive(),
            }
            arm_recv(io, rx, fds, batch, slot).map_err(io.worker_err("arm recv"))?;
        }
        let handed = shell.drain_handoffs(budget, io);
        if std::mem::take(&mut io.woke) {
            shell.waker().drain();
            io.arm_wake(efd).map_err(io.worker_err("arm eventfd"))?;
        }
        shell.wakes_and_timers(io);
        shell.end_turn(io);

        shell.publish();
        let busy = !io.ready.is_empty() || handed > 0;
        let wait = if busy { 0 } else { shell.wait_ms() };
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

/// Cancels every armed receive and waits (bounded) for the kernel to give the buffers
/// back. Returns `false` if some are still owned by the kernel.
fn cancel_all(io: &mut UringIo) -> bool {
    let mut scratch = WorkerCounters::default();
    io.settle(&mut scratch);
    io.reap();
    for slot in 0..io.n_recv {
        let e = opcode::AsyncCancel::new(tag(KIND_RECV, slot))
            .build()
            .user_data(tag(KIND_CANCEL, slot));
        if io.push(&e).is_err() {
            return false;
        }
    }
    for _ in 0..50 {
        if io.recv_armed == 0 {
            return true;
        }
        let ts = types::Timespec::new().nsec(20_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        let _ = io.ring.submitter().submit_with_args(1, &args);
        io.reap();
    }
    io.recv_armed == 0
}
