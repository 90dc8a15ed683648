//! The fleet drill (written next).
fn main() {}
