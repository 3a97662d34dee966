//! sipfront: a SIP edge proxy for Asterisk.
//!
//! Layers (see `docs/ARCHITECTURE.md`):
//! - [`sip`]: zero-copy parser and allocation-free rewriter (knows nothing of sockets).
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod sip;
pub mod transport;
