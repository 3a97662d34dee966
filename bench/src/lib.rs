//! sipfront-bench: benchmarks, load tools and test doubles for sipfront.
//!
//! - [`standin`]: the Asterisk stand-in B2BUA (binary `asterisk-standin`).

pub mod standin;
