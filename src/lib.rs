//! sipfront: a SIP edge proxy for Asterisk.
//!
//! Layers (see `docs/ARCHITECTURE.md`):
//! - [`sip`]: zero-copy parser and allocation-free rewriter (knows nothing of sockets);
//! - [`core`]: the sans-IO, transaction-stateful proxy logic, one instance per worker;
//! - [`config`]: the TOML configuration and its validation.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod core;
pub mod sip;
