//! io_uring backend, ring side: probing, the ring, pushing SQEs, reaping CQEs, and the
//! send path. The receive side and the loop are in `uring_loop`.
//!
//! - Receives: one multishot `RecvMsg` per socket drawing from a provided-buffer ring
//!   (`bufring`), so one SQE yields a datagram per completion with no re-arming per
//!   datagram and no thundering herd of parked receives on one socket.
//! - Sends: one `SendMsg` SQE per outbox entry, pushed at the end of the turn and submitted
//!   by the loop's single `io_uring_enter`, which sleeps for `sends + 1` completions (UDP
//!   sends complete inline, so in effect until the next event or the deadline, via an
//!   `EXT_ARG` timeout). Before the outbox or the send headers are written again,
//!   [`SendBackend::settle`] makes sure every send completed. At low load that is one
//!   syscall per loop turn.
//! - Wakes: a `PollAdd` on the worker's eventfd.
//!
//! Every SQE's `user_data` is `kind << 32 | index` (socket index for receives, outbox
//! entry for sends).

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::error::UringUnavailable;
use super::mmsg::fd_for;
use super::msgs::MsgArray;
use super::outbox::Outbox;
use super::shell::SendBackend;
use super::{TransportConfig, TransportError, WorkerCounters};

pub(crate) const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_STREAMS: u64 = 5;

pub(crate) fn tag(kind: u64, index: usize) -> u64 {
    kind << 32 | index as u64
}

/// A receive completion: socket index, result, CQE flags (buffer id, `MORE`).
pub(crate) type RecvCqe = (usize, i32, u32);

/// A `msghdr` template for multishot `RecvMsg`: room for any source address, no control
/// data, no iovec (the buffer comes from the buffer ring).
pub(crate) fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    h
}

/// Checks that io_uring can be used here: sysctl, setup, `EXT_ARG`, and a live multishot
/// `RecvMsg` with a provided-buffer ring on a loopback socket.
pub(crate) fn probe() -> Result<(), UringUnavailable> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() == "2" {
            return Err(UringUnavailable::DisabledBySysctl(2));
        }
    }
    // Declared first so it is dropped last, after the ring.
    let bufs = BufRing::new(2, 512, 0).map_err(UringUnavailable::Multishot)?;
    let mut ring = IoUring::new(8).map_err(UringUnavailable::Setup)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(UringUnavailable::NoExtArg);
    }
    bufs.register(&ring).map_err(UringUnavailable::Multishot)?;
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(UringUnavailable::Multishot)?;
    let addr = sock.local_addr().map_err(UringUnavailable::Multishot)?;
    let tmpl = Box::new(recv_template());
    let e = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), &*tmpl, bufs.bgid)
        .build()
        .user_data(tag(KIND_RECV, 0));
    // SAFETY: `tmpl`, `bufs` and `sock` outlive the request (cancelled below).
    unsafe { ring.submission().push(&e) }
        .map_err(|_| UringUnavailable::Multishot(io::Error::from_raw_os_error(libc::EBUSY)))?;
    sock.send_to(b"probe", addr)
        .map_err(UringUnavailable::Multishot)?;
    let ts = types::Timespec::from(Duration::from_secs(1));
    let args = types::SubmitArgs::new().timespec(&ts);
    let _ = ring.submitter().submit_with_args(1, &args);
    let first = ring.completion().next().map(|c| (c.result(), c.flags()));
    let ok = matches!(first, Some((res, f)) if res > 0 && cqueue::buffer_select(f).is_some());
    // Cancel the multishot and wait for its last completion before anything is freed.
    let cancel = opcode::AsyncCancel::new(tag(KIND_RECV, 0))
        .build()
        .user_data(tag(KIND_CANCEL, 0));
    // SAFETY: a cancel request references no memory.
    let _ = unsafe { ring.submission().push(&cancel) };
    let mut done = first.is_some_and(|(_, f)| !cqueue::more(f));
    for _ in 0..10 {
        if done {
            break;
        }
        let _ = ring.submitter().submit_with_args(1, &args);
        done = ring
            .completion()
            .any(|c| c.user_data() == tag(KIND_RECV, 0) && !cqueue::more(c.flags()));
    }
    if !done {
        std::mem::forget(bufs);
        std::mem::forget(tmpl);
    }
    match (ok, first) {
        (true, _) => Ok(()),
        (false, Some((res, _))) if res < 0 => Err(UringUnavailable::Multishot(
            io::Error::from_raw_os_error(-res),
        )),
        _ => Err(UringUnavailable::Multishot(io::Error::from_raw_os_error(
            libc::EIO,
        ))),
    }
}

/// Creates a worker's ring, sized for `n_socks` sockets' receive buffers plus the send
/// slots (the CQ is twice that).
pub(crate) fn new_ring(cfg: &TransportConfig, n_socks: usize) -> io::Result<IoUring> {
    IoUring::new(ring_entries(cfg, n_socks) as u32)
}

/// Receive buffers for `n_socks` sockets: `recv_batch` each, rounded up to a power of two.
pub(crate) fn recv_buffers(cfg: &TransportConfig, n_socks: usize) -> u16 {
    (n_socks * cfg.recv_batch).next_power_of_two().min(32_768) as u16
}

fn ring_entries(cfg: &TransportConfig, n_socks: usize) -> usize {
    (usize::from(recv_buffers(cfg, n_socks)) + cfg.send_slots + n_socks + 8)
        .next_power_of_two()
        .min(32_768)
}

/// The ring plus the sending side and completions reaped out of turn.
pub(crate) struct UringIo {
    pub(crate) ring: IoUring,
    fds: Vec<RawFd>,
    send: MsgArray,
    /// Receive completions not yet processed.
    pub(crate) ready: VecDeque<RecvCqe>,
    /// The eventfd poll completed.
    pub(crate) woke: bool,
    /// The stream connections' epoll descriptor poll completed.
    pub(crate) streams_woke: bool,
    /// Which sockets have a multishot receive armed.
    pub(crate) armed: Vec<bool>,
    /// Send SQEs pushed whose completion was not reaped yet (they read the outbox slab).
    pub(crate) send_inflight: usize,
    /// Failed sends reaped but not yet added to the shell's counters.
    sent_failed: u64,
    index: usize,
}

impl UringIo {
    pub(crate) fn new(ring: IoUring, fds: Vec<RawFd>, cfg: &TransportConfig, index: usize) -> Self {
        let n = fds.len();
        UringIo {
            ring,
            send: MsgArray::new(cfg.send_slots, 0),
            ready: VecDeque::with_capacity(usize::from(recv_buffers(cfg, n)) + 2 * n + 8),
            woke: false,
            streams_woke: false,
            armed: vec![false; n],
            send_inflight: 0,
            sent_failed: 0,
            fds,
            index,
        }
    }

    pub(crate) fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
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
    pub(crate) fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let (kind, idx) = (
                cqe.user_data() >> 32,
                (cqe.user_data() & 0xffff_ffff) as usize,
            );
            match kind {
                KIND_RECV => {
                    if !cqueue::more(cqe.flags()) {
                        if let Some(a) = self.armed.get_mut(idx) {
                            *a = false;
                        }
                    }
                    self.ready.push_back((idx, cqe.result(), cqe.flags()));
                }
                KIND_SEND => {
                    self.send_inflight = self.send_inflight.saturating_sub(1);
                    if cqe.result() < 0 {
                        self.sent_failed += 1;
                    }
                }
                KIND_WAKE => self.woke = true,
                KIND_STREAMS => self.streams_woke = true,
                _ => {}
            }
        }
    }

    /// Bytes of the receive completions reaped but not processed yet (each completion's
    /// result is the bytes the kernel wrote into its buffer: header, address, payload).
    pub(crate) fn ready_bytes(&self) -> u64 {
        self.ready
            .iter()
            .map(|&(_, res, _)| u64::try_from(res).unwrap_or(0))
            .sum()
    }

    pub(crate) fn arm_wake(&mut self, efd: RawFd) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(efd), libc::POLLIN as u32)
            .build()
            .user_data(tag(KIND_WAKE, 0));
        self.push(&e)
    }

    /// Watches the stream connections' epoll descriptor (one-shot, re-armed after it
    /// fires).
    pub(crate) fn arm_streams(&mut self, epfd: RawFd) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(epfd), libc::POLLIN as u32)
            .build()
            .user_data(tag(KIND_STREAMS, 0));
        self.push(&e)
    }

    pub(crate) fn worker_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
        let index = self.index;
        move |source| TransportError::Worker { index, op, source }
    }

    /// Cancels every armed receive and waits (bounded) for their last completions.
    /// Returns `false` if the kernel may still write into the receive buffers.
    pub(crate) fn cancel_all(&mut self) -> bool {
        let mut scratch = WorkerCounters::default();
        self.settle(&mut scratch);
        self.reap();
        for k in 0..self.armed.len() {
            if self.armed[k] {
                let e = opcode::AsyncCancel::new(tag(KIND_RECV, k))
                    .build()
                    .user_data(tag(KIND_CANCEL, k));
                if self.push(&e).is_err() {
                    return false;
                }
            }
        }
        let ts = types::Timespec::from(Duration::from_millis(20));
        for _ in 0..50 {
            if !self.armed.iter().any(|&a| a) {
                return true;
            }
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        !self.armed.iter().any(|&a| a)
    }
}

impl SendBackend for UringIo {
    /// Pushes one `SendMsg` per entry; they are submitted by the loop's next
    /// `io_uring_enter` (or by `settle` if the outbox is needed again first).
    fn send_all(&mut self, out: &Outbox, c: &mut WorkerCounters) {
        // The send headers are reused: earlier sends must be done.
        self.settle(c);
        for (j, e) in out.entries().iter().enumerate().take(self.send.len()) {
            if e.to.conn.is_some() {
                // A connection's message: written by the shell.
                continue;
            }
            let Some(fd) = fd_for(&self.fds, e.to.local) else {
                c.dropped += 1;
                continue;
            };
            self.send.set_send(j, e.to.remote, out.bytes(e));
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
