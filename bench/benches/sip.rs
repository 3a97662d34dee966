//! Placeholder until the sip benchmark lands.
fn main() {}
