//! Placeholder until the request bench lands.
fn main() {}
