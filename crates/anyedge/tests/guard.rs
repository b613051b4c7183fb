//! Per-source admission on the real daemon, with many loopback source
//! addresses as attackers and one legitimate client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_testkit::{wait_eq, wait_until};
use common::*;

/// A backend counting the client connections it gets (PROXY header seen)
/// and answering each request.
fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    serve_proxied(l, "ok\n".into(), move |header| {
        if matches!(header.addrs, anyedge_proxy::Addresses::Tcp { .. }) {
            s2.fetch_add(1, Ordering::Relaxed);
        }
    });
    (a, seen)
}

fn start(guard: &str) -> (Anyedge, SocketAddr, Arc<AtomicUsize>, SocketAddr) {
    let (b, seen) = backend();
    let port = free_port();
    let admin_port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = format!(
        r#"
[pop]
name = "guard"
[admin]
listen = "127.0.0.1:{admin_port}"
[guard]
{guard}
[[service]]
name = "web"
listen = ["{lb}"]
{health}
"#,
        health = health_and_backend(b)
    );
    // the start-up probe comes from 127.0.0.1: keep it allowlisted
    let e = Anyedge::start(&cfg, lb);
    e.wait_log("backend up", 1, Duration::from_secs(5));
    // (the admin API starts listening after the service does)
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    wait_port(admin, Duration::from_secs(10));
    (e, lb, seen, admin)
}

/// Attack: `n` new connections from `src`, each sending a request.
fn flood(srcs: &[Ipv4Addr], lb: SocketAddr, n: usize) {
    for i in 0..n {
        let src = srcs[i % srcs.len()];
        let _ = get_from(src, lb, "/");
    }
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let (_, body) = http(admin, "GET", "/api/v1/status", None);
    serde_json::from_str(&body).unwrap()
}

fn drops(admin: SocketAddr, reason: &str) -> u64 {
    status(admin)["guard"]["drops"][reason].as_u64().unwrap()
}

/// The legitimate client (its own /24) keeps succeeding during `attack`.
fn legit_during(lb: SocketAddr, attack: impl FnOnce() + Send + 'static) -> (usize, usize) {
    let h = std::thread::spawn(attack);
    let (mut ok, mut total) = (0, 0);
    let start = Instant::now();
    while !h.is_finished() && start.elapsed() < Duration::from_secs(20) {
        total += 1;
        if get_from(Ipv4Addr::new(127, 9, 9, 9), lb, "/").is_ok() {
            ok += 1;
        }
        // a real user: 10 new connections a second, below every limit (this
        // sleep paces the client; it waits for nothing)
        std::thread::sleep(Duration::from_millis(100));
    }
    h.join().unwrap();
    (ok, total)
}

#[test]
fn per_address_flood_is_cut_to_its_rate_and_legit_client_is_unaffected() {
    let guard = "allow = [\"127.0.0.1\"]\nnew_connections_per_address = { per_second = 20, burst = 20 }";
    let (_e, lb, seen, admin) = start(guard);
    let attacker = Ipv4Addr::new(127, 66, 0, 1);
    let t0 = Instant::now();
    let (ok, total) = legit_during(lb, move || flood(&[attacker], lb, 1000));
    let secs = t0.elapsed().as_secs_f64();
    assert!(ok * 100 >= total * 99, "legit success {ok}/{total}");
    let backend_conns = seen.load(Ordering::Relaxed) - ok;
    let bound = 20.0 + 20.0 * secs + 5.0;
    assert!(
        (backend_conns as f64) <= bound,
        "attacker reached the backend {backend_conns} times (bound {bound:.0})"
    );
    assert!(drops(admin, "rate_address") >= 1000 - bound as u64);
}

#[test]
fn rotating_sources_in_one_prefix_hit_the_prefix_limit() {
    let guard = "allow = [\"127.0.0.1\"]\nnew_connections_per_address = { per_second = 100 }\nnew_connections_per_prefix = { per_second = 30, burst = 30 }";
    let (_e, lb, seen, admin) = start(guard);
    // 250 addresses of 127.77.1.0/24, 4 connections each
    let srcs: Vec<Ipv4Addr> = (1..=250).map(|h| Ipv4Addr::new(127, 77, 1, h)).collect();
    let t0 = Instant::now();
    let (ok, total) = legit_during(lb, move || flood(&srcs, lb, 1000));
    let secs = t0.elapsed().as_secs_f64();
    assert!(ok * 100 >= total * 99, "legit success {ok}/{total}");
    let attack = seen.load(Ordering::Relaxed) - ok;
    let bound = 30.0 + 30.0 * secs + 5.0;
    assert!((attack as f64) <= bound, "{attack} > {bound:.0}");
    assert!(drops(admin, "rate_prefix") > 0);
}

#[test]
fn deny_list_and_concurrency_cap() {
    let guard = "allow = [\"127.0.0.1\"]\ndeny = [\"127.13.0.0/16\"]\nmax_connections_per_address = 3";
    let (_e, lb, _seen, admin) = start(guard);
    assert!(get_from(Ipv4Addr::new(127, 13, 5, 5), lb, "/").is_err());
    assert_eq!(drops(admin, "deny_list"), 1);
    // slowloris: one address holding connections open; only 3 are admitted
    let src = Ipv4Addr::new(127, 55, 0, 1);
    let mut held = Vec::new();
    for _ in 0..10 {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((src, 0)).into()).unwrap();
        sock.connect(&lb.into()).unwrap();
        let mut s: TcpStream = sock.into();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n"); // never finished
        held.push(s);
    }
    wait_eq("7 connections refused by the cap", Duration::from_secs(5), 7, || {
        drops(admin, "concurrency")
    });
    // another address is not affected
    assert!(get_from(Ipv4Addr::new(127, 56, 0, 1), lb, "/").is_ok());
    drop(held);
    // slots are released when the connections end
    wait_until(
        "a request from the capped address succeeds",
        Duration::from_secs(5),
        || get_from(src, lb, "/"),
    );
}

#[test]
fn heavy_hitter_gets_a_dynamic_block() {
    let guard = "allow = [\"127.0.0.1\"]\ndynamic_block = { threshold_per_second = 50, block_for = \"30s\", exclude = [\"127.44.0.0/16\"] }";
    let (e, lb, _seen, admin) = start(guard);
    // 300 connections as fast as possible from one source, and from an
    // excluded one
    let heavy = Ipv4Addr::new(127, 66, 6, 6);
    let excluded = Ipv4Addr::new(127, 44, 0, 1);
    let t = Instant::now();
    let mut blocked_after = None;
    while t.elapsed() < Duration::from_secs(5) {
        let _ = get_from(excluded, lb, "/");
        if get_from(heavy, lb, "/").is_err() {
            blocked_after = Some(t.elapsed());
            break;
        }
    }
    let after = blocked_after.expect("heavy hitter never blocked");
    assert!(after <= Duration::from_millis(2100), "{after:?}");
    e.wait_log("heavy hitter: dynamic block added", 1, Duration::from_secs(1));
    assert!(drops(admin, "deny_list") >= 1);
    assert!(get_from(excluded, lb, "/").is_ok(), "excluded source never blocked");
    assert!(get_from(Ipv4Addr::new(127, 67, 0, 1), lb, "/").is_ok());
}

/// With a tarpit, a refused connection stays open and silent for the hold
/// time (the attacker's slot is tied up), then closes; the cap bounds how
/// many are held at once.
#[test]
fn tarpit_holds_refused_connections_silently_up_to_its_cap() {
    let guard =
        "allow = [\"127.0.0.1\"]\ndeny = [\"127.13.0.0/16\"]\ntarpit = { hold = \"1500ms\", max_connections = 2 }";
    let (_e, lb, seen, admin) = start(guard);
    let connect = |last: u8| {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((Ipv4Addr::new(127, 13, 0, last), 0)).into())
            .unwrap();
        sock.connect(&lb.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s
    };
    // Connect one at a time: the daemon's workers accept in parallel, so
    // "the third" is only the third once the first two are held.
    let t0 = Instant::now();
    let mut held = Vec::new();
    for last in 1..=2u8 {
        held.push(connect(last));
        wait_eq(
            &format!("connection {last} tarpitted"),
            Duration::from_secs(5),
            Some(u64::from(last)),
            || status(admin)["guard"]["tarpit_open"].as_u64(),
        );
    }
    // the third is over the cap: closed at once
    let t3 = Instant::now();
    let mut third = connect(3);
    let mut buf = [0u8; 64];
    third.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let r = third.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "over the cap: closed, got {r:?}"
    );
    assert!(
        t3.elapsed() < Duration::from_millis(900),
        "over the cap closed after {:?}",
        t3.elapsed()
    );
    // the first two: nothing for the hold time, then closed
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = s.read(&mut buf);
        assert!(matches!(r, Ok(0) | Err(_)), "no data from a tarpit: {r:?}");
    }
    let held_for = t0.elapsed();
    assert!(held_for >= Duration::from_millis(1400), "held {held_for:?}");
    assert!(held_for < Duration::from_secs(4), "released {held_for:?}");
    assert_eq!(drops(admin, "deny_list"), 3);
    assert_eq!(seen.load(Ordering::Relaxed), 0, "the backend saw none");
    assert_eq!(status(admin)["guard"]["tarpitted"], 2);
    // the count drops as the tarpit lets go, which the client may see first
    wait_eq("no tarpitted connection open", Duration::from_secs(2), Some(0), || {
        status(admin)["guard"]["tarpit_open"].as_u64()
    });
}
