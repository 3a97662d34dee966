//! `sipfront-loadgen`: a load generator that plays thousands of phones (and, for
//! Asterisk-originated calls, the Asterisk side) against a running sipfront (or Kamailio,
//! started by `bench/kamailio/run`).
//!
//! Data flow: [`runner`] builds the [`users::Users`], spawns one [`worker::Worker`] per
//! thread and runs phases (a fixed rate, or the steps of a maximum-rate search). Each worker
//! owns its nonblocking UDP sockets ([`net`]: epoll, `recvmmsg`, `sendmmsg`) or, for phones
//! on TCP/TLS/WS/WSS, one connection per phone socket ([`stream`]: Content-Length framing,
//! rustls, WebSocket frames by [`ws`]), a slab of
//! operations ([`op`]) addressed through their Call-IDs, and a [`wheel::TimerWheel`] for
//! retransmissions (T1 doubling) and op timeouts. Messages are written by [`build`] and read by
//! the minimal [`sip`] reader; 401/407 challenges are answered by [`digest`] (MD5). Each step's
//! latency goes to an hdrhistogram in [`stats`], merged across threads at the end of a phase,
//! printed as percentiles and written as `.hgrm` files, and with `--json` summarised by
//! [`summary`].

pub mod build;
pub mod digest;
pub mod net;
pub mod op;
pub mod runner;
pub mod sip;
pub mod stats;
pub mod stream;
pub mod summary;
pub mod users;
pub mod wheel;
pub mod worker;
pub mod ws;
