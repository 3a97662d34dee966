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
use super::{DatagramHandler, Waker, WorkerCounters};
use crate::core::{Flow, Now};

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
            self.deliver(h.from, &h.buf, io);
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

    /// Sends the outbox and clears it.
    pub(crate) fn flush(&mut self, io: &mut impl SendBackend) {
        if !self.out.is_empty() {
            io.send_all(&self.out, &mut self.counts);
            self.out.clear();
        }
    }

    /// Ends a turn: flush (the sends may still be in flight, see [`SendBackend::settle`]).
    pub(crate) fn end_turn(&mut self, io: &mut impl SendBackend) {
        self.flush(io);
        self.counts.dropped += self.out.take_rejected();
    }

    /// Publishes the counters for other threads (once per turn, before sleeping). Send
    /// errors the backend has not reported yet appear at a later turn.
    pub(crate) fn publish(&self) {
        if let Some(block) = self.shared.get(self.index) {
            block.publish(&self.counts);
        }
    }

    /// How long the loop may sleep: 0 when work is already waiting, else until the
    /// handler's deadline, capped by `max_idle_ms`.
    pub(crate) fn wait_ms(&self) -> u64 {
        if self.handoff.has_pending() || self.shutting_down() {
            return 0;
        }
        match self.handler.next_deadline_ms() {
            Some(d) => d.saturating_sub(mono_ms()).min(self.max_idle_ms),
            None => self.max_idle_ms,
        }
    }
}
