//! anyedge in front of real nginx (`listen ... proxy_protocol`) backends.
//!
//! Clients use many loopback source addresses (127.0.0.x) so Maglev spreads
//! them over both backends, as it would real clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;

const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;

fn config(lb_port: u16, a: u16, b: u16, a_extra: &str, b_proxy: &str) -> String {
    format!(
        r#"
[pop]
name = "test-pop"
workers = 2

[limits]
shutdown_grace = "2s"

[[service]]
name = "web"
listen = ["127.0.0.1:{lb_port}"]
balance = "maglev"

[service.timeouts]
connect = "1s"
idle = "10s"
client_first_byte = "2s"

[service.health]
kind = "http"
path = "/healthz"
interval = "{INTERVAL_MS}ms"
timeout = "150ms"
rise = 2
fall = {FALL}

[[service.backend]]
name = "nginx-a"
address = "127.0.0.1:{a}"
{a_extra}

[[service.backend]]
name = "nginx-b"
address = "127.0.0.1:{b}"
proxy_protocol = "{b_proxy}"
"#
    )
}

struct Lab {
    lb: SocketAddr,
    a: Nginx,
    /// kept alive for the test (dropping it stops nginx-b)
    _b: Nginx,
    edge: Anyedge,
    a_port: u16,
    b_port: u16,
}

fn lab(b_proxy: &str) -> Lab {
    let (lb_port, a_port, b_port) = (free_port(), free_port(), free_port());
    let a = Nginx::start("a", a_port);
    let b = Nginx::start("b", b_port);
    let lb = SocketAddr::from(([127, 0, 0, 1], lb_port));
    let edge = Anyedge::start(&config(lb_port, a_port, b_port, "", b_proxy), lb);
    // both backends pass `rise` checks
    edge.wait_log("backend up", 2, Duration::from_secs(5));
    Lab {
        lb,
        a,
        _b: b,
        edge,
        a_port,
        b_port,
    }
}

fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + i)
}

/// One request from each of `n` client addresses; backend name per client.
fn sweep(lb: SocketAddr, n: u8) -> Vec<Result<String, String>> {
    (0..n)
        .map(|i| {
            get_from(client(i), lb, "/")
                .map(|(_, body)| field(&body, "backend").to_string())
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[test]
fn nginx_sees_real_client_address_via_proxy_v2_and_v1() {
    for proto in ["v2", "v1"] {
        let l = lab(proto);
        let mut seen = HashMap::new();
        for i in 0..40u8 {
            let src = client(i);
            let (port, body) = get_from(src, l.lb, "/").unwrap();
            assert_eq!(field(&body, "proxy_addr"), src.to_string(), "{body}");
            assert_eq!(field(&body, "proxy_port"), port.to_string(), "{body}");
            assert_eq!(field(&body, "server_addr"), "127.0.0.1", "{body}");
            assert_eq!(field(&body, "server_port"), l.lb.port().to_string(), "{body}");
            *seen.entry(field(&body, "backend").to_string()).or_insert(0) += 1;
            // Maglev: the same client always lands on the same backend
            let (_, again) = get_from(src, l.lb, "/").unwrap();
            assert_eq!(field(&again, "backend"), field(&body, "backend"));
        }
        assert_eq!(seen.len(), 2, "both backends used: {seen:?} ({proto})");
        let _ = (l.a_port, l.b_port);
    }
}

#[test]
fn killed_backend_fails_over_and_comes_back() {
    let mut l = lab("v2");
    let before = sweep(l.lb, 40);
    assert!(before.iter().all(|r| r.is_ok()), "{before:?}");
    let on_a = before.iter().filter(|r| r.as_deref() == Ok("a")).count();
    assert!(on_a > 0);

    let killed = Instant::now();
    l.a.kill();
    // Every following request succeeds: refused connects retry on nginx-b
    // at once, and the health checks take nginx-a out within fall x interval.
    let mut failures = 0;
    while killed.elapsed() < Duration::from_millis(FALL * INTERVAL_MS * 3) {
        for r in sweep(l.lb, 40) {
            match r {
                Ok(b) => assert_eq!(b, "b"),
                Err(_) => failures += 1,
            }
        }
    }
    assert_eq!(failures, 0, "requests failed during failover");
    // ... and by the end of that window (3 x fall x interval) the health
    // checks had taken nginx-a out, without waiting any longer
    let window = killed.elapsed();
    let log = l.edge.log();
    assert!(
        log.lines()
            .any(|line| line.contains("backend down") && line.contains("nginx-a")),
        "nginx-a not marked down {window:?} after it was killed:\n{log}"
    );

    // Bring it back: after `rise` checks its clients return to it.
    l.a.spawn();
    l.edge.wait_log("backend up", 3, Duration::from_secs(5));
    let after = sweep(l.lb, 40);
    assert_eq!(after, before, "Maglev restores the same mapping");
}

#[test]
fn health_check_marks_backend_down_within_fall_times_interval() {
    let mut l = lab("v2");
    let killed = Instant::now();
    l.a.kill();
    l.edge.wait_log("backend down", 1, Duration::from_secs(3));
    let took = killed.elapsed();
    // fall x interval, plus one check timeout, jitter and scheduling slack
    let bound = Duration::from_millis(FALL * INTERVAL_MS + 150 + 50 + 650);
    assert!(took <= bound, "down after {took:?}, bound {bound:?}");
}

#[test]
fn drained_backend_gets_no_new_connections_but_keeps_old_ones() {
    let l = lab("v2");
    // A keep-alive connection that is on nginx-a before the drain.
    let mut held = None;
    for i in 0..40u8 {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((client(i), 0)).into()).unwrap();
        sock.connect(&l.lb.into()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        let body = keepalive_get(&mut s);
        if field(&body, "backend") == "a" {
            held = Some(s);
            break;
        }
    }
    let mut held = held.expect("some client maps to nginx-a");

    let cfg = config(l.lb.port(), l.a_port, l.b_port, "drain = true", "v2");
    l.edge.rewrite_config(&cfg);
    l.edge.signal(nix::sys::signal::Signal::SIGHUP);
    l.edge.wait_log("reload applied", 1, Duration::from_secs(3));
    let lines_a = l.a.access_log().lines().count();

    for r in sweep(l.lb, 40) {
        assert_eq!(r.as_deref(), Ok("b"), "drained backend got a new connection");
    }
    // health checks still reach it (it is drained, not dead), but no client
    // requests do: the access log only grows by /healthz lines
    let new_lines: Vec<String> = l.a.access_log().lines().skip(lines_a).map(String::from).collect();
    assert!(new_lines.iter().all(|l| l.contains("/healthz")), "{new_lines:?}");
    // the existing connection still works and still ends on nginx-a
    assert_eq!(field(&keepalive_get(&mut held), "backend"), "a");
}

fn keepalive_get(s: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return body[..len].to_string();
            }
        }
    }
}

#[test]
fn sigterm_drains_then_exits() {
    let mut l = lab("v2");
    assert!(get(l.lb).is_ok());
    l.edge.signal(nix::sys::signal::Signal::SIGTERM);
    let st = l.edge.wait_exit(Duration::from_secs(5)).expect("exits after SIGTERM");
    assert!(st.success(), "{st:?}");
    let log = l.edge.log();
    let closed = log.find("listeners closed").expect("listeners closed logged");
    let stopped = log.find("anyedge stopped").expect("stop logged");
    assert!(closed < stopped);
    assert!(get(l.lb).is_err(), "nothing listens after exit");
}
