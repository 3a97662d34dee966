//! The sipfront SIP layer compiled on its own for fuzzing: the exact sources of
//! `src/sip/`, without the rest of the proxy (whose database and io_uring dependencies
//! would only slow an instrumented build down).
#[path = "../../src/sip/mod.rs"]
pub mod sip;
