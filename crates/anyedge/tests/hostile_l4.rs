//! Hostile clients against the L4 path, each test alone in this binary so
//! that its latency measurements are not disturbed by sibling tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn config(lb: u16, backend: SocketAddr) -> String {
    format!(
        r#"
[pop]
name = "hostile-l4"
workers = 2

[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]

{FAST_TCP_HEALTH}

[[service.backend]]
name = "b1"
address = "{backend}"
"#
    )
}

/// Connects and resets at once (SO_LINGER 0, then close), `per_second`
/// times a second for `dur`: a connection the kernel completed and the
/// client reset before the daemon accepted it. Returns how many were made.
fn connect_reset_flood(target: SocketAddr, per_second: u32, dur: Duration) -> usize {
    let start = Instant::now();
    let gap = Duration::from_secs(1) / per_second;
    let mut n = 0usize;
    while start.elapsed() < dur {
        let due = start + gap * u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if let Ok(s) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        n += 1;
    }
    n
}

/// Requests one after another until `stop`; returns each one's latency
/// (`None` for a failure).
fn timed_requests(lb: SocketAddr, stop: &AtomicBool) -> Vec<Option<Duration>> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) && out.len() < 5_000 {
        let t = Instant::now();
        let ok = get(lb).is_ok_and(|(_, body)| body == "ok\n");
        out.push(ok.then(|| t.elapsed()));
        thread::sleep(Duration::from_millis(10));
    }
    out
}

/// Issue 9, case 1: connections reset before they are accepted used to
/// fail `peer_addr()` with ENOTCONN, which the accept loop took for an
/// accept failure and slept 50 ms on: ~1,000 such connections a second
/// starved every listener of the daemon for minutes.
#[test]
fn connect_then_reset_flood_does_not_stop_the_service() {
    let backend = proxy_backend("ok\n".into());
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let e = Anyedge::start(&config(port, backend), lb);
    e.wait_log("backend up", 1, Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let clients = thread::spawn(move || timed_requests(lb, &st));
    let flood: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || connect_reset_flood(lb, 500, Duration::from_secs(8))))
        .collect();
    let sent: usize = flood.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let flood_end = Instant::now();
    let lat = clients.join().unwrap();
    let ok: Vec<Duration> = lat.iter().flatten().copied().collect();
    let mut sorted = ok.clone();
    sorted.sort();
    let p99 = sorted.get(sorted.len() * 99 / 100).copied().unwrap_or(Duration::MAX);
    eprintln!(
        "flood: {sent} connect+RST in 8 s; legitimate: {}/{} ok, p99 {p99:?}",
        ok.len(),
        lat.len()
    );
    assert!(sent > 4_000, "the flood itself was too slow to mean anything: {sent}");
    assert!(
        ok.len() * 100 >= lat.len() * 99 && lat.len() >= 100,
        "legitimate requests under the flood: {}/{} ok",
        ok.len(),
        lat.len()
    );
    assert!(
        p99 < Duration::from_millis(50),
        "p99 under the flood: {p99:?} (slowest: {:?})",
        sorted.iter().rev().take(5).collect::<Vec<_>>()
    );
    // normal at once after the flood: the listen queue holds no backlog
    let (_, body) = get(lb).expect("first request after the flood");
    assert_eq!(body, "ok\n");
    assert!(
        flood_end.elapsed() < Duration::from_secs(1),
        "{:?}",
        flood_end.elapsed()
    );
    assert!(
        !e.log().contains("accept failed"),
        "reset connections are not accept failures"
    );
}
