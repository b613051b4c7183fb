//! Test support shared by the anyedge crates' tests (a dev-dependency,
//! never shipped): bounded waits on conditions instead of fixed sleeps
//! ([`wait_until`], [`wait_eq`], [`holds_for`]), a real Knot DNS server
//! for conformance and transfer tests ([`knot`]), a validating Unbound for
//! DNSSEC tests ([`unbound`]) and a small blocking DNS client ([`dns`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dns;
pub mod knot;
pub mod unbound;
mod wait;

pub use wait::{holds_for, wait_eq, wait_until, Awaited, POLL};

/// A loopback TCP port nothing listens on now (the kernel's pick), for a
/// server started on it at once.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts `program ARGS` in the foreground, stdin and stdout closed,
/// stderr to the file `log`; panics naming `program` if it cannot start.
fn spawn_logged(program: &std::path::Path, args: &[&std::ffi::OsStr], log: &std::path::Path) -> std::process::Child {
    use std::process::{Command, Stdio};
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}
