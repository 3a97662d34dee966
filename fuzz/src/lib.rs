//! The sipfront SIP layer compiled on its own for fuzzing: the exact sources of
//! `src/sip/`, without the rest of the proxy (whose database and io_uring dependencies
//! would only slow an instrumented build down). The sans-IO core (`src/core/`, with the
//! small encoders of `src/util/` it uses) is compiled the same way for `core_response`.
#[path = "../../src/sip/mod.rs"]
pub mod sip;

#[path = "../../src/util/mod.rs"]
pub mod util;

#[path = "../../src/core/mod.rs"]
pub mod core;
