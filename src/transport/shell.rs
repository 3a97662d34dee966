//! The backend-independent part of a worker loop: ownership check and hand-off, handler
//! calls, wakes, timers, counters. A backend (io_uring or mmsg) owns the sockets, feeds
//! received datagrams to [`Shell::on_received`] and implements [`SendBackend`] to put the
//! outbox on the wire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::handoff::HandoffPort;
use super::meminfo::BacklogMeter;
use super::outbox::Outbox;
use super::socket::{mono_ms, now};
use super::stats::CounterBlock;
use super::stream::{CloseReason, Event, ReadEnd, Streams};
use super::{DatagramHandler, Waker, WorkerCounters};
use crate::core::{Flow, Now};
use crate::sip::{Frame, Status};

/// How a backend sends everything queued in an outbox.
pub(crate) trait SendBackend {
    /// Sends (or starts sending) every entry of `out`; the shell clears the outbox
    /// afterwards but does not write into it again before calling [`SendBackend::settle`].
    /// Adds to `c.tx`, `c.send_errors` and `c.dropped` (errors possibly only at `settle`).
    fn send_all(&mut self, out: &Outbox, c: &mut WorkerCounters);
    /// Waits until no send started by `send_all` still reads the outbox, and adds the
    /// results to `c`. Backends that send synchronously need not override it.
    fn settle(&mut self, _c: &mut WorkerCounters) {}
}

/// Everything a worker loop needs besides its sockets.
pub(crate) struct Shell<H> {
    handler: H,
    index: usize,
    n_workers: usize,
    out: Outbox,
    handoff: HandoffPort,
    waker: Waker,
    shutdown: Arc<AtomicBool>,
    counts: WorkerCounters,
    shared: Arc<[CounterBlock]>,
    now: Now,
    max_per_turn: usize,
    max_idle_ms: u64,
    /// Reads the sockets' receive queues (set by the backend with its descriptors).
    meter: BacklogMeter,
    /// The handler asked for a reading before the loop sleeps.
    recheck_backlog: bool,
    /// This worker's TCP/TLS connections (when stream listen addresses are configured).
    streams: Option<Streams>,
    /// Stream events are waiting (the backend saw the epoll descriptor readable).
    streams_ready: bool,
}

/// Construction parameters of a [`Shell`].
pub(crate) struct ShellParts<H> {
    pub(crate) handler: H,
    pub(crate) index: usize,
    pub(crate) n_workers: usize,
    pub(crate) out: Outbox,
    pub(crate) handoff: HandoffPort,
    pub(crate) waker: Waker,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) shared: Arc<[CounterBlock]>,
    pub(crate) max_per_turn: usize,
    pub(crate) max_idle_ms: u64,
    pub(crate) streams: Option<Streams>,
}

impl<H: DatagramHandler> Shell<H> {
    pub(crate) fn new(p: ShellParts<H>) -> Self {
        Shell {
            handler: p.handler,
            index: p.index,
            n_workers: p.n_workers,
            out: p.out,
            handoff: p.handoff,
            waker: p.waker,
            shutdown: p.shutdown,
            counts: WorkerCounters::default(),
            shared: p.shared,
            now: now(),
            max_per_turn: p.max_per_turn,
            max_idle_ms: p.max_idle_ms,
            meter: BacklogMeter::new(&[]),
            recheck_backlog: false,
            // A worker with stream listeners looks at them once at the start.
            streams_ready: p.streams.is_some(),
            streams: p.streams,
        }
    }

    /// The descriptor of the stream connections' readiness, for the backend to watch.
    pub(crate) fn stream_fd(&self) -> Option<std::os::fd::RawFd> {
        self.streams.as_ref().map(Streams::fd)
    }

    /// The backend saw the stream descriptor readable.
    pub(crate) fn streams_ready(&mut self) {
        self.streams_ready = true;
    }

    /// Accepts, reads and frames what the stream sockets have: each message goes to the
    /// handler like a datagram (see [`super::stream`]). Cheap when nothing is ready.
    pub(crate) fn service_streams(&mut self, io: &mut impl SendBackend) {
        let Some(st) = self.streams.as_mut() else {
            return;
        };
        let now = self.now.mono_ms;
        if self.streams_ready {
            self.streams_ready = false;
            let n = st.poll();
            // Level-triggered: anything left is reported again by the next poll.
            self.streams_ready = n > 0;
            for k in 0..n {
                let Some(ev) = self.streams.as_ref().and_then(|s| s.event(k)) else {
                    break;
                };
                match ev {
                    Event::Accept(li) => self.accept_all(li),
                    Event::Conn {
                        slot,
                        readable,
                        writable,
                        hangup,
                    } => {
                        if writable {
                            if let Some(s) = self.streams.as_mut() {
                                s.writable(slot);
                            }
                        }
                        if readable || hangup {
                            self.read_conn(slot, io);
                        }
                    }
                }
            }
        }
        if let Some(s) = self.streams.as_mut() {
            s.sweep(now);
        }
    }

    fn accept_all(&mut self, li: usize) {
        let now = self.now;
        loop {
            let Some(s) = self.streams.as_mut() else {
                return;
            };
            let Some((slot, flow)) = s.accept(li, now.mono_ms) else {
                return;
            };
            if !self.handler.admit_connection(now, flow) {
                if let Some(s) = self.streams.as_mut() {
                    s.close(slot, CloseReason::Refused);
                }
            }
        }
    }

    /// Reads connection `slot`, then hands each whole message to the handler.
    fn read_conn(&mut self, slot: u32, io: &mut impl SendBackend) {
        let now = self.now.mono_ms;
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let end = match s.read(slot, now) {
            Ok(end) => end,
            Err(reason) => {
                s.close(slot, reason);
                return;
            }
        };
        if end == ReadEnd::Capped {
            self.streams_ready = true;
        }
        if s.is_ws(slot) {
            self.read_ws(slot, end, io);
            return;
        }
        let max = s.max_message();
        let Some((flow, rx)) = s.take_rx(slot) else {
            if end == ReadEnd::Eof {
                s.close(slot, CloseReason::Eof);
            }
            return;
        };
        let Some(id) = flow.conn else {
            return;
        };
        let mut off = 0;
        let mut messages = 0;
        let failed = loop {
            match crate::sip::frame(rx.get(off..).unwrap_or(&[]), max) {
                Ok(Status::Complete(Frame::Message { len })) => {
                    self.dispatch(flow, rx.get(off..off + len).unwrap_or(&[]), io);
                    off += len;
                    messages += 1;
                }
                Ok(Status::Complete(Frame::Ping { len })) => {
                    // RFC 5626 §3.5.1: a CRLF "pong" answers a double-CRLF "ping".
                    if let Some(s) = self.streams.as_mut() {
                        s.send(id, b"\r\n");
                    }
                    off += len;
                }
                Ok(Status::Complete(Frame::Pong { len })) => off += len,
                Ok(Status::Partial) => break None,
                Err(e) => break Some(e),
            }
        };
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        s.put_rx(id, rx, off, messages, now);
        if let Some(e) = failed {
            tracing::info!(remote = %flow.remote, error = %e, "closing a connection: bad stream data");
            let reason = match e {
                crate::sip::FrameError::TooLarge(_) => CloseReason::TooLarge,
                _ => CloseReason::Framing,
            };
            s.close(id.slot, reason);
        } else if end == ReadEnd::Eof {
            s.close(id.slot, CloseReason::Eof);
        }
    }

    /// Hands the WebSocket messages read on `slot` to the handler, one SIP message each.
    fn read_ws(&mut self, slot: u32, end: ReadEnd, io: &mut impl SendBackend) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some((flow, msgs)) = s.take_ws(slot) else {
            if end == ReadEnd::Eof {
                s.close(slot, CloseReason::Eof);
            }
            return;
        };
        let Some(id) = flow.conn else {
            return;
        };
        let mut messages = 0;
        for m in super::stream::ws::messages(&msgs) {
            self.dispatch(flow, m, io);
            messages += 1;
        }
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        s.put_ws(id, msgs, messages);
        if end == ReadEnd::Eof {
            s.close(id.slot, CloseReason::Eof);
        }
    }

    /// One message received on a connection: to the worker that owns it, or handled here.
    fn dispatch(&mut self, flow: Flow, data: &[u8], io: &mut impl SendBackend) {
        self.counts.rx += 1;
        let owner = self.handler.owner(flow, data, self.n_workers);
        if owner != self.index && owner < self.n_workers {
            if self.handoff.send(owner, flow, data) {
                self.counts.handed_off += 1;
            } else {
                self.counts.dropped += 1;
            }
        } else {
            self.deliver(flow, data, io);
        }
    }

    /// Closes every connection (the loop is ending).
    pub(crate) fn close_streams(&mut self) {
        if let Some(s) = self.streams.as_mut() {
            s.close_all();
        }
    }

    /// The backend's sockets, for the backlog readings (`SO_MEMINFO`).
    pub(crate) fn watch_sockets(&mut self, fds: &[std::os::fd::RawFd]) {
        self.meter = BacklogMeter::new(fds);
    }

    /// At most once per millisecond (call right after [`Shell::begin_turn`]): reads the
    /// sockets' receive queues, counts the kernel's drops, and tells the handler the backlog.
    /// `user_bytes` gives the bytes the backend already took off the sockets but has not
    /// processed; it is only called when a reading is due.
    pub(crate) fn sample_backlog(&mut self, user_bytes: impl FnOnce() -> u64) {
        if self.meter.due(self.now.mono_ms) {
            self.read_backlog(user_bytes());
        }
    }

    /// Before the loop sleeps: one more reading if the handler asked for it (see
    /// [`DatagramHandler::on_backlog`]), whatever the time of the last one.
    pub(crate) fn recheck_backlog(&mut self, user_bytes: impl FnOnce() -> u64) {
        if self.recheck_backlog && self.meter.enabled() {
            self.read_backlog(user_bytes());
        }
    }

    fn read_backlog(&mut self, user_bytes: u64) {
        self.recheck_backlog = false;
        if let Some((backlog, drops)) = self.meter.read(self.now.mono_ms, user_bytes) {
            self.counts.kernel_drops += drops;
            self.counts.rx_backlog_bytes = backlog.bytes;
            self.recheck_backlog = self.handler.on_backlog(self.now, backlog);
        }
    }

    /// Starts a loop turn: reads the clocks once.
    pub(crate) fn begin_turn(&mut self) {
        self.now = now();
        self.counts.turns += 1;
    }

    /// Datagrams (own + handed off) one turn may process.
    pub(crate) fn budget(&self) -> usize {
        self.max_per_turn
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// A datagram that could not be read (truncated, bad source address, socket error).
    pub(crate) fn on_bad_receive(&mut self) {
        self.counts.rx += 1;
        self.counts.dropped += 1;
    }

    /// A datagram received on one of this worker's sockets.
    pub(crate) fn on_received(&mut self, from: Flow, data: &[u8], io: &mut impl SendBackend) {
        self.counts.rx += 1;
        let owner = self.handler.owner(from, data, self.n_workers);
        if owner != self.index && owner < self.n_workers {
            if self.handoff.send(owner, from, data) {
                self.counts.handed_off += 1;
            } else {
                self.counts.dropped += 1;
            }
            return;
        }
        self.deliver(from, data, io);
    }

    fn deliver(&mut self, from: Flow, data: &[u8], io: &mut impl SendBackend) {
        self.make_room(io);
        self.handler
            .on_datagram(self.now, from, data, &mut self.out);
    }

    fn make_room(&mut self, io: &mut impl SendBackend) {
        io.settle(&mut self.counts);
        if self.out.needs_flush() {
            self.flush(io);
            io.settle(&mut self.counts);
        }
    }

    /// Processes up to `budget` datagrams handed to this worker; returns how many.
    pub(crate) fn drain_handoffs(&mut self, budget: usize, io: &mut impl SendBackend) -> usize {
        let mut done = 0;
        while done < budget {
            let Some(h) = self.handoff.try_recv() else {
                break;
            };
            self.counts.handoff_in += 1;
            if h.outgoing {
                // Bytes for a connection this worker owns.
                let sent = h
                    .from
                    .conn
                    .is_some_and(|id| self.streams.as_mut().is_some_and(|s| s.send(id, &h.buf)));
                if !sent {
                    self.counts.dropped += 1;
                }
            } else {
                self.deliver(h.from, &h.buf, io);
            }
            self.handoff.recycle(h);
            done += 1;
        }
        done
    }

    /// After receiving: wake owners of hand-offs, run `on_wake` and `on_timer` if due.
    pub(crate) fn wakes_and_timers(&mut self, io: &mut impl SendBackend) {
        self.handoff.flush_wakes();
        if self.waker.take_user_wake() {
            self.make_room(io);
            self.handler.on_wake(self.now, &mut self.out);
        }
        if self
            .handler
            .next_deadline_ms()
            .is_some_and(|d| d <= self.now.mono_ms)
        {
            self.make_room(io);
            self.handler.on_timer(self.now, &mut self.out);
        }
    }

    /// Sends the outbox and clears it: messages for a connection are written to it (or
    /// passed to the worker owning it); datagrams go to the backend.
    pub(crate) fn flush(&mut self, io: &mut impl SendBackend) {
        if self.out.is_empty() {
            return;
        }
        if self.streams.is_some() {
            for e in self.out.entries() {
                let Some(id) = e.to.conn else {
                    continue;
                };
                let bytes = self.out.bytes(e);
                let ok = if usize::from(id.worker) == self.index {
                    self.streams.as_mut().is_some_and(|s| s.send(id, bytes))
                } else {
                    self.handoff.send_out(usize::from(id.worker), e.to, bytes)
                };
                if ok {
                    self.counts.tx += 1;
                } else {
                    self.counts.dropped += 1;
                }
            }
        }
        io.send_all(&self.out, &mut self.counts);
        self.out.clear();
    }

    /// Ends a turn: flush (the sends may still be in flight, see [`SendBackend::settle`]).
    pub(crate) fn end_turn(&mut self, io: &mut impl SendBackend) {
        self.flush(io);
        self.counts.dropped += self.out.take_rejected();
        // Output for another worker's connections was handed to it in `flush`: wake it now,
        // not at this worker's next turn (which may be a whole idle sleep away).
        self.handoff.flush_wakes();
    }

    /// Publishes the counters for other threads (once per turn, before sleeping). Send
    /// errors the backend has not reported yet appear at a later turn.
    pub(crate) fn publish(&mut self) {
        if let Some(s) = &self.streams {
            self.counts.streams = s.counters();
        }
        if let Some(block) = self.shared.get(self.index) {
            block.publish(&self.counts);
        }
    }

    /// How long the loop may sleep: 0 when work is already waiting, else until the
    /// handler's deadline, capped by `max_idle_ms`.
    pub(crate) fn wait_ms(&self) -> u64 {
        if self.handoff.has_pending() || self.shutting_down() || self.streams_ready {
            return 0;
        }
        // Connections are swept for timeouts a few times a second.
        let cap = match &self.streams {
            Some(_) => self.max_idle_ms.min(250),
            None => self.max_idle_ms,
        };
        match self.handler.next_deadline_ms() {
            Some(d) => d.saturating_sub(mono_ms()).min(cap),
            None => cap,
        }
    }
}
