//! Test support shared by the anyedge crates' tests (a dev-dependency,
//! never shipped): bounded waits on conditions instead of fixed sleeps
//! ([`wait_until`], [`wait_eq`], [`holds_for`]) and a real Knot DNS server
//! for conformance and transfer tests ([`knot`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod knot;
mod wait;

pub use wait::{holds_for, wait_eq, wait_until, Awaited, POLL};
