//! sipfront: a SIP edge proxy for Asterisk.
//!
//! Layers (see `docs/ARCHITECTURE.md`):
//! - [`sip`]: zero-copy parser and allocation-free rewriter (knows nothing of sockets);
//! - [`core`]: the sans-IO, transaction-stateful proxy logic, one instance per worker;
//! - [`auth`]: digest authentication (nonces, replay guard, challenges, client side);
//! - [`db`]: credential sources (Asterisk realtime tables in MySQL/SQLite), cache and pool;
//! - [`registrar`]: registrar rules, the shared location table and its persistence;
//! - [`asterisk`]: forwarding registrations to Asterisk (REGFWD);
//! - [`transport`]: the per-core UDP worker shell (io_uring or recvmmsg);
//! - [`guard`]: per-source rate limits, failed-auth bans, scanner User-Agents;
//! - [`hep`]: HEPv3 capture of every SIP datagram to a Homer collector, off the hot path;
//! - [`server`]: wiring of all layers, and the core's ports over them;
//! - [`instance`]: one proxy per listen address (`--takeover` hands one over);
//! - [`config`]: the TOML configuration and its validation.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod asterisk;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod core;
pub mod db;
pub mod demo;
pub mod guard;
pub mod hep;
pub mod instance;
pub mod logging;
pub mod metrics;
pub mod registrar;
pub mod server;
pub mod sip;
pub mod transport;
pub mod util;
