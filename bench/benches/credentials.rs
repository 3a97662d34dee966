//! Placeholder until the credentials benchmark lands.
fn main() {}
