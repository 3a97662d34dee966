//! Fallback backend: `recvmmsg`/`sendmmsg` on nonblocking sockets, `poll(2)` to sleep.
//!
//! A turn calls `recvmmsg` (one batch each, within the work cap) on every socket that is
//! "hot" (the last batch was full, or `poll` reported it readable), then one `poll` on all
//! sockets plus the eventfd: timeout 0 while some socket is hot, else the handler's
//! deadline. At low load that is three syscalls per datagram (poll, recvmmsg, sendmmsg);
//! under load the batches amortise them.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};

use super::msgs::MsgArray;
use super::outbox::Outbox;
use super::shell::{SendBackend, Shell};
use super::socket::WorkerSockets;
use super::{DatagramHandler, TransportConfig, TransportError, WorkerCounters};
use crate::core::{Flow, Local};

/// Sending half: one `sendmmsg` per run of consecutive entries on the same socket.
struct MmsgSend {
    /// Listen sockets first, upstream last.
    fds: Vec<RawFd>,
    msgs: MsgArray,
}

/// The descriptor for `sock`, given `fds` = listen sockets in order, then upstream.
pub(crate) fn fd_for(fds: &[RawFd], sock: Local) -> Option<RawFd> {
    let (upstream, listen) = fds.split_last()?;
    match sock {
        Local::Listen(i) => listen.get(usize::from(i)).copied(),
        Local::Upstream => Some(*upstream),
    }
}

/// Waits up to 5 ms for `fd` to accept more data (send buffer full).
fn wait_writable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 5) == 1 }
}

impl SendBackend for MmsgSend {
    fn send_all(&mut self, out: &Outbox, c: &mut WorkerCounters) {
        let entries = out.entries();
        let mut start = 0;
        while start < entries.len() {
            if entries[start].to.conn.is_some() {
                // A connection's message: written by the shell.
                start += 1;
                continue;
            }
            let sock = entries[start].to.local;
            let mut end = start;
            while end < entries.len()
                && entries[end].to.local == sock
                && entries[end].to.conn.is_none()
                && end - start < self.msgs.len()
            {
                self.msgs.set_send(
                    end - start,
                    entries[end].to.remote,
                    out.bytes(&entries[end]),
                );
                end += 1;
            }
            let Some(fd) = fd_for(&self.fds, sock) else {
                c.dropped += (end - start) as u64;
                start = end;
                continue;
            };
            let mut sent = 0;
            let mut eagain_retries = 0;
            while sent < end - start {
                // SAFETY: headers sent..end-start are wired to live iovecs/addresses and to
                // bytes inside `out`, which is borrowed for the whole call.
                let r = unsafe {
                    libc::sendmmsg(fd, self.msgs.mmsg_ptr(sent), (end - start - sent) as u32, 0)
                };
                if r > 0 {
                    sent += r as usize;
                    c.tx += r as u64;
                    continue;
                }
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock
                    && eagain_retries < 3
                    && wait_writable(fd)
                {
                    eagain_retries += 1;
                    continue;
                }
                if err.kind() != io::ErrorKind::Interrupted {
                    // The first remaining datagram failed (bad destination, full buffer):
                    // count it and carry on with the rest.
                    c.tx += 1;
                    c.send_errors += 1;
                    sent += 1;
                }
            }
            start = end;
        }
    }
}

/// Runs the worker loop until shutdown.
pub(crate) fn run<H: DatagramHandler>(
    mut shell: Shell<H>,
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
    let mut rx = MsgArray::new(cfg.recv_batch, cfg.max_datagram);
    let mut tx = MmsgSend {
        fds: fds.clone(),
        msgs: MsgArray::new(cfg.send_slots, 0),
    };
    // Watched: the UDP sockets, the stream connections' epoll descriptor (if any), and the
    // waker last.
    let stream_fd = shell.stream_fd();
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .chain(stream_fd.iter())
        .chain([shell.waker().fd()].iter())
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let stream_idx = stream_fd.map(|_| fds.len());
    let upstream_idx = fds.len() - 1;

    // Sockets that may have datagrams queued: tried without polling first. A socket
    // turns cold when `recvmmsg` returns less than it asked for, hot again when `poll`
    // says so. Cold sockets are polled every turn (timeout 0 while any socket is hot), so
    // a busy socket cannot starve the others.
    let mut hot = vec![true; fds.len()];
    shell.watch_sockets(&fds);
    while !shell.shutting_down() {
        shell.begin_turn();
        // recvmmsg takes datagrams off a socket only to process them in the same turn:
        // the whole backlog is in the kernel's queues.
        shell.sample_backlog(|| 0);
        let mut budget = shell.budget();
        for (k, &fd) in fds.iter().enumerate() {
            if budget == 0 || !hot[k] {
                continue;
            }
            let sock = if k == upstream_idx {
                Local::Upstream
            } else {
                Local::Listen(k as u16)
            };
            let asked = budget.min(rx.len());
            for i in 0..asked {
                rx.reset_recv(i);
            }
            // SAFETY: the first `asked` headers point at live buffers and addresses owned
            // by `rx`, which outlives the call.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    rx.mmsg_ptr(0),
                    asked as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r <= 0 {
                let interrupted = io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
                hot[k] = r < 0 && interrupted;
                continue;
            }
            let got = r as usize;
            hot[k] = got == asked;
            budget -= got;
            for i in 0..got {
                match rx.received(i, rx.msg_len(i)) {
                    Some((src, data)) => shell.on_received(Flow::new(sock, src), data, &mut tx),
                    None => shell.on_bad_receive(),
                }
            }
        }
        shell.service_streams(&mut tx);
        shell.drain_handoffs(budget, &mut tx);
        shell.wakes_and_timers(&mut tx);
        shell.end_turn(&mut tx);
        let timeout = if hot.iter().any(|&h| h) {
            0
        } else {
            shell.wait_ms()
        };
        if timeout > 0 {
            shell.recheck_backlog(|| 0);
        }
        shell.publish();
        // SAFETY: `pfds` is a valid array of pollfd for the duration of the call.
        let r = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                timeout as i32,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(TransportError::Worker {
                    index,
                    op: "poll",
                    source: err,
                });
            }
        }
        for (k, p) in pfds.iter_mut().enumerate() {
            if p.revents != 0 {
                match hot.get_mut(k) {
                    Some(h) => *h = true,
                    None if Some(k) == stream_idx => shell.streams_ready(),
                    None => shell.waker().drain(),
                }
            }
            p.revents = 0;
        }
    }
    shell.close_streams();
    Ok(())
}
