//! sipfront-bench: benchmarks, load tools and test doubles for sipfront.
//!
//! - [`cpu`]: CPU time of the process and of named threads (benchmarks).
//! - [`standin`]: the Asterisk stand-in B2BUA (binary `asterisk-standin`).
//! - [`loadgen`]: the load generator (binary `sipfront-loadgen`).

pub mod cpu;
pub mod loadgen;
pub mod standin;
