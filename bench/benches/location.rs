//! Placeholder until the location benchmark lands.
fn main() {}
