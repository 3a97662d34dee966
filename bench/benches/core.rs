//! Placeholder until the core benchmark lands.
fn main() {}
