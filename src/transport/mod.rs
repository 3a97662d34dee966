//! Per-core UDP I/O shell: the only part of sipfront that touches sockets.
//!
//! A [`WorkerSet`] runs `workers` threads, each pinned to a core and running one
//! single-threaded loop (pingora-runtime style). Each worker owns:
//! - one `SO_REUSEPORT` UDP socket per listen address (the kernel spreads phones over
//!   workers by 4-tuple hash), addressed by [`Local::Listen`](crate::core::Local);
//! - one private "upstream" UDP socket ([`Local::Upstream`](crate::core::Local)) on the IP
//!   of the listen address facing Asterisk, with its own port, used to talk to Asterisk so that Asterisk's answers come back to the
//!   worker that sent the request and Asterisk traffic spreads over all cores;
//! - a [`Waker`] (eventfd) other threads use to wake the loop (DB answers, shutdown);
//! - a hand-off inbox with pooled fixed-size buffers, fed by the other workers;
//! - its own [`DatagramHandler`] (the sans-IO core), built by the factory in its thread.
//!
//! Data flow of one loop turn (both backends):
//! 1. read the clocks once (monotonic and wall, [`Now`]); at most once per millisecond read the kernel's receive queues
//!    (`SO_MEMINFO`: backlog and drops) and tell the handler the backlog
//!    ([`DatagramHandler::on_backlog`]); take a batch of received datagrams (io_uring
//!    multishot `RecvMsg` completions over a provided-buffer ring, or `recvmmsg`);
//! 2. for each datagram ask [`DatagramHandler::owner`]; if another worker owns it, copy it
//!    into a pooled buffer and pass it over that worker's channel, else call
//!    [`DatagramHandler::on_datagram`], which queues replies in the [`Outbox`];
//! 3. process datagrams handed off by other workers, then `on_wake` and `on_timer` if due;
//! 4. flush the outbox (io_uring `SendMsg` SQEs submitted with the turn's one
//!    `io_uring_enter`, or `sendmmsg`), publish the counters;
//! 5. sleep until I/O, a wake, or the handler's next deadline.
//!
//! Work per turn is capped ([`TransportConfig::max_datagrams_per_turn`], like quinn's work
//! limiter) so timers, wakes and hand-offs are never starved by a flood on one socket.
//! In steady state nothing here allocates per datagram: receive buffers, the send slab
//! and the hand-off buffers are all preallocated (`tests/transport_alloc.rs`).
//! Backends and the hand-off rule are described in `docs/transport.md`.

mod bufring;
mod config;
mod error;
mod handoff;
mod meminfo;
mod mmsg;
mod msgs;
mod outbox;
mod set;
mod shell;
mod sockaddr;
mod socket;
mod stats;
mod steer;
pub mod stream;
pub mod tls;
mod uring;
mod uring_loop;
mod waker;

use crate::core::{Flow, Now};

pub use config::{Backend, ConfigError, TransportConfig};
pub use error::{TransportError, UringUnavailable};
pub use meminfo::Backlog;
pub use outbox::Outbox;
pub use set::{worker_count, Endpoints, StreamListen, WorkerContext, WorkerSet};
pub use socket::mono_ms;
pub use stats::{StreamCounters, WorkerCounters};
pub use waker::Waker;

/// Most workers a [`WorkerSet`] runs (`workers` above this is a configuration error).
pub const MAX_WORKERS: usize = 1024;

/// Largest UDP payload (IPv4 limit); receive and hand-off buffers never need more.
pub const MAX_DATAGRAM: usize = 65_535;

/// The sans-IO handler one worker drives. Built once per worker by the factory passed to
/// [`WorkerSet::spawn`], in the worker's own thread, and never shared.
pub trait DatagramHandler: Send + 'static {
    /// Cheap peek: which worker (`0..n_workers`) owns this datagram, received over `from`
    /// (the local socket and the sender's address). Return the worker's own index (see
    /// [`WorkerContext::index`]) to process it here. Out-of-range values are treated as
    /// "this worker".
    fn owner(&self, from: Flow, data: &[u8], n_workers: usize) -> usize;
    /// One datagram received (or handed off to this worker). Replies go into `out`.
    fn on_datagram(&mut self, now: Now, from: Flow, data: &[u8], out: &mut Outbox);
    /// Some thread called [`Waker::wake`] on this worker's waker.
    fn on_wake(&mut self, now: Now, out: &mut Outbox);
    /// The deadline from [`DatagramHandler::next_deadline_ms`] has passed.
    fn on_timer(&mut self, now: Now, out: &mut Outbox);
    /// Earliest time `on_timer` should run, if any, on the monotonic clock
    /// ([`Now::mono_ms`]).
    fn next_deadline_ms(&self) -> Option<u64>;
    /// The received bytes waiting for this worker, read at the start of a loop turn (at
    /// most once per millisecond, and only in turns that run; never when the kernel cannot
    /// report it). A handler may shed new work while it is high. Returning `true` asks for
    /// one more reading before the loop next sleeps, so that a state the handler keeps
    /// while the backlog is high (shedding) does not outlive the burst when the worker goes
    /// idle. Default: ignored, `false`.
    fn on_backlog(&mut self, _now: Now, _backlog: Backlog) -> bool {
        false
    }
    /// A stream connection over `flow` was accepted (the limits allowed it): keep it?
    /// Default: yes. (A handler may refuse banned sources before any byte is read.)
    fn admit_connection(&mut self, _now: Now, _flow: Flow) -> bool {
        true
    }
}
