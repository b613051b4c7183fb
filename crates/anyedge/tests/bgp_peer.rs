//! A hostile or broken BGP peer (played by this test on loopback, with the
//! `anyedge_bgp` codec): malformed UPDATEs, oversized messages, silence.
//! Each must get the right NOTIFICATION, and the session must come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyedge_bgp::codec::{Capability, Open};
use anyedge_bgp::{decode, encode_to_vec, Message};
use common::*;

fn start() -> (TcpListener, Anyedge) {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let lb_port = free_port();
    let cfg = format!(
        r#"
[pop]
name = "p"
[bgp]
asn = 65001
router_id = "198.18.0.1"
hold_time = 3
connect_retry = "200ms"
[[bgp.peer]]
name = "fake"
address = "127.0.0.1"
port = {port}
asn = 65000
local_address = "127.0.0.1"
[[service]]
name = "web"
listen = ["127.0.0.1:{lb_port}"]
[[service.backend]]
name = "b"
address = "127.0.0.1:9"
"#
    );
    let e = Anyedge::start(&cfg, SocketAddr::from(([127, 0, 0, 1], lb_port)));
    (peer, e)
}

/// Reads one BGP message (or None on EOF / timeout).
fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Message> {
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    loop {
        if let Ok(Some((m, used))) = decode(buf) {
            buf.drain(..used);
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Accepts the daemon's connection and completes the OPEN exchange.
fn establish(l: &TcpListener) -> (TcpStream, Vec<u8>) {
    let (mut s, _) = l.accept().unwrap();
    let mut buf = Vec::new();
    match read_msg(&mut s, &mut buf) {
        Some(Message::Open(o)) => assert_eq!(o.asn(), 65001),
        other => panic!("expected OPEN, got {other:?}"),
    }
    let open = Open::new(
        65000,
        3,
        Ipv4Addr::new(198, 18, 0, 2),
        vec![Capability::Multiprotocol { afi: 1, safi: 1 }],
    );
    s.write_all(&encode_to_vec(&Message::Open(open)).unwrap()).unwrap();
    s.write_all(&encode_to_vec(&Message::Keepalive).unwrap()).unwrap();
    loop {
        match read_msg(&mut s, &mut buf) {
            Some(Message::Keepalive) => return (s, buf),
            Some(_) => continue,
            None => panic!("connection closed during OPEN exchange"),
        }
    }
}

/// Reads until a NOTIFICATION; returns (code, subcode).
fn expect_notification(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, u8) {
    loop {
        match read_msg(s, buf) {
            Some(Message::Notification(n)) => return (n.code, n.subcode),
            Some(_) => continue,
            None => panic!("connection closed without NOTIFICATION"),
        }
    }
}

#[test]
fn malformed_update_oversized_message_and_silence_get_notifications_and_the_session_recovers() {
    let (l, e) = start();

    // 1. UPDATE whose ORIGIN is 7 (valid values are 0-2): 3/6 Invalid ORIGIN
    let (mut s, mut buf) = establish(&l);
    e.wait_log("announce: BGP session established", 1, Duration::from_secs(5));
    let mut upd = vec![0xff; 16];
    let attrs: &[u8] = &[0x40, 1, 1, 7]; // ORIGIN = 7
    let body_len = 2 + 2 + attrs.len() + 5;
    upd.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
    upd.push(2);
    upd.extend_from_slice(&0u16.to_be_bytes()); // no withdrawn
    upd.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    upd.extend_from_slice(attrs);
    upd.extend_from_slice(&[32, 192, 0, 2, 99]); // 192.0.2.99/32
    s.write_all(&upd).unwrap();
    let (code, sub) = expect_notification(&mut s, &mut buf);
    assert_eq!(code, 3, "UPDATE Message Error (subcode {sub})");
    drop(s);

    // recovers: the daemon reconnects and establishes again
    let t = Instant::now();
    let (mut s, mut buf) = establish(&l);
    assert!(t.elapsed() < Duration::from_secs(3));

    // 2. a message header announcing 5000 bytes: 1/2 Bad Message Length
    let mut big = vec![0xff; 16];
    big.extend_from_slice(&5000u16.to_be_bytes());
    big.push(2);
    s.write_all(&big).unwrap();
    assert_eq!(expect_notification(&mut s, &mut buf), (1, 2));
    drop(s);

    // 3. silence after OPEN (hold time 3 s): 4/0 Hold Timer Expired
    let (mut s, mut buf) = establish(&l);
    let t = Instant::now();
    // the daemon keeps sending KEEPALIVEs; we send nothing
    assert_eq!(expect_notification(&mut s, &mut buf), (4, 0));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    drop(s);

    // and it still comes back
    let _s = establish(&l);
    e.wait_log("announce: BGP session established", 4, Duration::from_secs(2));
    let log = e.log();
    assert!(log.contains("code: 3, subcode: 6"), "{log}");
    assert!(log.contains("HoldTimerExpired"), "{log}");
}

/// A peer that never answers is said once at warn (not on every retry),
/// and shutdown does not claim to Cease a session that never existed.
#[test]
fn an_unreachable_peer_is_logged_once_and_not_ceased() {
    let (peer, mut e) = start();
    drop(peer); // nothing listens: every connect is refused
    e.wait_log("Connection refused", 1, Duration::from_secs(5));
    // connect_retry is 200 ms: through several more attempts, still one line
    let refused = || {
        let log = e.log();
        let n = log
            .lines()
            .filter(|l| l.contains("BGP session not established; retrying") && l.contains("Connection refused"))
            .count();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} lines:\n{log}"))
        }
    };
    anyedge_testkit::holds_for("one line for the same refusal", Duration::from_millis(1200), refused);
    e.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(e.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let log = e.log();
    assert!(!log.contains("Cease sent"), "{log}");
    assert!(log.contains("BGP peer stopped (no session was established)"), "{log}");
}
