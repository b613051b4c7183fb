//! Zone transfers and NOTIFY against a real Knot DNS (Debian `knot`; CI
//! installs it), TSIG hmac-sha256 both ways:
//!
//! 1. anyedge as a secondary of Knot: the initial AXFR, then a serial bump
//!    in Knot's zone file + `knotc zone-reload`; Knot NOTIFYs anyedge, which
//!    pulls an IXFR (Knot's journal has the difference) and serves the new
//!    record within seconds.
//! 2. Knot as a secondary of anyedge: Knot's AXFR gives it the same zone;
//!    after an anyedge zone file change and SIGHUP, anyedge NOTIFYs Knot,
//!    Knot pulls an IXFR from anyedge's journal and serves the new serial.
//! 3. Transfers refused: a client outside `allow_transfer`, no TSIG, a wrong
//!    TSIG secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_dns::xfr::{self, Received, T_AXFR};
use anyedge_dns::zone::Zone;
use anyedge_testkit::knot::{Knot, KnotConf};
use anyedge_testkit::wait_until;
use bytes::Bytes;
use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{Algorithm, Key, KeyName};

/// "0123456789abcdef0123456789abcdef"
const SECRET_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const WRONG_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";
const APEX: &str = "example.com.";

fn zone_text(serial: u32, extra: &str) -> String {
    format!(
        "$ORIGIN example.com.\n$TTL 3600\n\
         @ IN SOA ns1 hostmaster {serial} 3600 600 1209600 300\n\
         @ IN NS ns1\n@ IN NS ns2.example.net.\n\
         ns1 IN A 192.0.2.1\n\
         www IN A 192.0.2.10\nwww IN AAAA 2001:db8::10\n\
         mail IN MX 10 mx1\nmx1 IN A 192.0.2.25\n\
         alias IN CNAME www\n\
         txt IN TXT \"v=spf1 -all\"\n\
         sub IN NS ns.sub\nns.sub IN A 192.0.2.53\n\
         {extra}"
    )
}

// ---------------------------------------------------------------------------
// Knot (the harness: anyedge_testkit::knot)

/// A `knotd` on `port` with the TSIG key `xfr-key` and a journal (so it
/// serves and pulls IXFR); `sections`: its `remote:`/`acl:` YAML.
fn knot_conf(port: u16, sections: &str) -> KnotConf {
    KnotConf::new()
        .port(port)
        .tsig_key("xfr-key", SECRET_B64)
        .sections(sections)
        .journal(true)
}

// ---------------------------------------------------------------------------
// A small client

fn wire(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

fn now() -> Time48 {
    Time48::now()
}

fn key(secret: &[u8]) -> Arc<Key> {
    let name: KeyName = "xfr-key.".parse().unwrap();
    Arc::new(Key::new(Algorithm::Sha256, secret, name, None, None).unwrap())
}

/// One UDP question; the answer with the TSIG (if any) removed.
fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<Message<Bytes>> {
    let id = 0x4242;
    let (q, _) = xfr::build_query::<Arc<Key>>(id, &wire(name), qtype, None, None, now()).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    sock.send_to(&q, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    xfr::check_response::<Arc<Key>>(buf, id, None, now()).ok()
}

fn soa_serial(server: SocketAddr) -> Option<u32> {
    let m = query(server, APEX, 6)?;
    xfr::soa_answer(&m, &wire(APEX)).ok()?.soa_serial()
}

/// The IPv4 addresses of `name` (empty: none, or no answer).
fn a_records(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let Some(m) = query(server, name, 1) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for rr in m.answer().unwrap().flatten() {
        let r = xfr::parse_rr(&rr).unwrap();
        if r.rtype == 1 && r.rdata.len() == 4 {
            v.push(Ipv4Addr::new(r.rdata[0], r.rdata[1], r.rdata[2], r.rdata[3]));
        }
    }
    v
}

fn write_framed(s: &mut TcpStream, m: &[u8]) {
    let mut b = (m.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(m);
    s.write_all(&b).unwrap();
}

fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// An AXFR over TCP from source address `src`, signed with `key` if given.
/// `Err(rcode)` when the server refuses (the TSIG of the refusal checked if
/// it is signed).
fn axfr(server: SocketAddr, src: IpAddr, key: Option<Arc<Key>>) -> Result<Zone, u8> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(2)).unwrap();
    let mut s: TcpStream = sock.into();
    let id = 0x1234;
    let signed = key.is_some();
    let (q, mut seq) = xfr::build_query(id, &wire(APEX), T_AXFR, None, key, now()).unwrap();
    write_framed(&mut s, &q);
    let mut rx = xfr::Receiver::new(&wire(APEX), None, false, 1_000_000);
    loop {
        let raw = read_framed(&mut s).unwrap();
        let rcode = raw[3] & 0x0f;
        if rcode != 0 {
            // a refusal of a signed request is signed too, unless it is a
            // TSIG error (RFC 8945 5.3.2)
            if signed && rcode != 9 {
                xfr::check_response(raw, id, seq.as_mut(), now()).expect("signed refusal");
            }
            return Err(rcode);
        }
        let m = xfr::check_response(raw, id, seq.as_mut(), now()).unwrap();
        if rx.feed(&m).unwrap() {
            break;
        }
    }
    if let Some(seq) = seq {
        seq.done().unwrap();
    }
    match rx.finish().unwrap() {
        Received::Axfr(z) => Ok(z),
        other => panic!("{other:?}"),
    }
}

/// Every record, comparable.
fn content(z: &Zone) -> BTreeSet<(Vec<u8>, u16, u32, Vec<u8>)> {
    z.iter_records()
        .into_iter()
        .flat_map(|(o, s)| {
            s.rdata
                .iter()
                .map(move |r| (o.to_ascii_lowercase(), s.rtype, s.ttl, r.wire.to_vec()))
        })
        .collect()
}

/// Knot's `remote` for anyedge on port `aport` (with the TSIG key), and
/// the start of its `acl` list.
fn knot_remote_anyedge(aport: u16) -> String {
    format!("remote:\n  - id: anyedge\n    address: 127.0.0.1@{aport}\n    key: xfr-key\nacl:")
}

fn anyedge_head(port: u16) -> String {
    format!(
        r#"[pop]
name = "pop1"

[dns]
listen = ["127.0.0.1:{port}"]

[[dns.tsig_key]]
name = "xfr-key"
algorithm = "hmac-sha256"
secret = "{SECRET_B64}"
"#
    )
}

// ---------------------------------------------------------------------------

#[test]
fn anyedge_is_secondary_of_knot_axfr_then_notify_and_ixfr() {
    let (kport, aport) = (common::free_port(), common::free_port());
    let aaddr = SocketAddr::from(([127, 0, 0, 1], aport));
    let zones_dir = tempfile::tempdir().unwrap();
    let zfile = zones_dir.path().join("example.com.zone");
    std::fs::write(&zfile, zone_text(2024010101, "")).unwrap();
    let knot = Knot::start(
        &knot_conf(
            kport,
            &format!(
                r#"{}
  - id: anyedge_xfr
    address: 127.0.0.1
    key: xfr-key
    action: transfer
"#,
                knot_remote_anyedge(aport)
            ),
        )
        .primary(APEX, &zfile, &["notify: anyedge", "acl: anyedge_xfr"]),
    );
    wait_until("knot serves the zone", Duration::from_secs(10), || {
        soa_serial(knot.addr) == Some(2024010101)
    });

    let state = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n[[dns.zone]]\nname = \"{APEX}\"\nprimary = [\"127.0.0.1:{kport}\"]\nkey = \"xfr-key\"\n",
        anyedge_head(aport).replace(
            "[dns]\n",
            &format!("[dns]\nstate_dir = \"{}\"\n", state.path().display())
        ),
    );
    let mut ours = common::Anyedge::start(&cfg, aaddr);
    ours.wait_log("kind=AXFR serial=2024010101", 1, Duration::from_secs(10));
    wait_until("anyedge serves the transferred zone", Duration::from_secs(5), || {
        a_records(aaddr, "www.example.com.") == [Ipv4Addr::new(192, 0, 2, 10)]
    });
    assert_eq!(soa_serial(aaddr), Some(2024010101));
    assert!(a_records(aaddr, "new.example.com.").is_empty());

    // a change on the primary: Knot computes the difference (zonefile-load:
    // difference), NOTIFYs us, and we pull it incrementally
    std::fs::write(&zfile, zone_text(2024010102, "new IN A 192.0.2.99\n")).unwrap();
    knot.knotc(&["zone-reload", APEX]);
    let t = Instant::now();
    wait_until("anyedge serves the new record", Duration::from_secs(10), || {
        a_records(aaddr, "new.example.com.") == [Ipv4Addr::new(192, 0, 2, 99)]
    });
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(soa_serial(aaddr), Some(2024010102));
    let log = ours.log();
    assert!(log.contains("NOTIFY received; refreshing"), "{log}");
    assert!(log.contains("kind=IXFR serial=2024010102"), "no IXFR:\n{log}");
    assert_eq!(log.matches("kind=AXFR").count(), 1, "{log}");
    // unchanged data still there
    assert_eq!(a_records(aaddr, "www.example.com."), [Ipv4Addr::new(192, 0, 2, 10)]);

    // the primary goes away and the PoP restarts: the saved copy answers at
    // once (no REFUSED window while a transfer cannot happen)
    drop(knot);
    wait_until("the saved copy is written", Duration::from_secs(5), || {
        std::fs::read_dir(state.path()).map(|d| d.count() > 0).unwrap_or(false)
    });
    ours.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(ours.wait_exit(Duration::from_secs(10)).is_some());
    drop(ours);
    let ours = common::Anyedge::start(&cfg, aaddr);
    ours.wait_log("loaded from its saved copy", 1, Duration::from_secs(5));
    assert_eq!(soa_serial(aaddr), Some(2024010102));
    assert_eq!(a_records(aaddr, "new.example.com."), [Ipv4Addr::new(192, 0, 2, 99)]);
}

#[test]
fn knot_is_secondary_of_anyedge_and_follows_its_notify() {
    let (kport, aport) = (common::free_port(), common::free_port());
    let aaddr = SocketAddr::from(([127, 0, 0, 1], aport));
    let zones_dir = tempfile::tempdir().unwrap();
    let zfile = zones_dir.path().join("example.com.zone");
    std::fs::write(&zfile, zone_text(7, "")).unwrap();
    let cfg = format!(
        "{}\n[[dns.zone]]\nname = \"{APEX}\"\nfile = \"{}\"\nkey = \"xfr-key\"\n\
         allow_transfer = [\"127.0.0.1\"]\nnotify = [\"127.0.0.1:{kport}\"]\n",
        anyedge_head(aport),
        zfile.display()
    );
    let ours = common::Anyedge::start(&cfg, aaddr);

    let knot = Knot::start(
        &knot_conf(
            kport,
            &format!(
                r#"{}
  - id: notify_from_anyedge
    address: 127.0.0.1
    key: xfr-key
    action: notify
  - id: local_axfr
    address: 127.0.0.1
    action: transfer
"#,
                knot_remote_anyedge(aport)
            ),
        )
        .secondary(APEX, &["master: anyedge", "acl: [notify_from_anyedge, local_axfr]"]),
    );
    wait_until(
        "knot transferred the zone from anyedge",
        Duration::from_secs(15),
        || soa_serial(knot.addr) == Some(7),
    );
    ours.wait_log("zone transfer served", 1, Duration::from_secs(5));
    // Knot serves the same data
    let local = IpAddr::from([127, 0, 0, 1]);
    let from_knot = axfr(knot.addr, local, None).unwrap();
    let from_us = axfr(aaddr, local, Some(key(SECRET))).unwrap();
    assert_eq!(content(&from_knot), content(&from_us));
    assert_eq!(a_records(knot.addr, "www.example.com."), [Ipv4Addr::new(192, 0, 2, 10)]);

    // a change: SIGHUP, NOTIFY, Knot pulls the difference from our journal
    std::fs::write(&zfile, zone_text(8, "new IN A 192.0.2.99\n")).unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("knot serves serial 8", Duration::from_secs(10), || {
        soa_serial(knot.addr) == Some(8)
    });
    assert_eq!(a_records(knot.addr, "new.example.com."), [Ipv4Addr::new(192, 0, 2, 99)]);
    ours.wait_log("NOTIFY acknowledged", 1, Duration::from_secs(5));
    ours.wait_log("kind=IXFR serial=8", 1, Duration::from_secs(5));
    let from_knot = axfr(knot.addr, local, None).unwrap();
    let from_us = axfr(aaddr, local, Some(key(SECRET))).unwrap();
    assert_eq!(content(&from_knot), content(&from_us));
    assert!(knot.log().contains("IXFR"), "{}", knot.log());
}

#[test]
fn transfers_are_refused_without_permission() {
    let aport = common::free_port();
    let aaddr = SocketAddr::from(([127, 0, 0, 1], aport));
    let zones_dir = tempfile::tempdir().unwrap();
    let signed_zone = zones_dir.path().join("example.com.zone");
    std::fs::write(&signed_zone, zone_text(1, "")).unwrap();
    let open_zone = zones_dir.path().join("example.org.zone");
    std::fs::write(
        &open_zone,
        zone_text(1, "").replace("$ORIGIN example.com.", "$ORIGIN example.org."),
    )
    .unwrap();
    let cfg = format!(
        "{}\n[[dns.zone]]\nname = \"{APEX}\"\nfile = \"{}\"\nkey = \"xfr-key\"\nallow_transfer = [\"127.0.0.1\"]\n\
         \n[[dns.zone]]\nname = \"example.org.\"\nfile = \"{}\"\n",
        anyedge_head(aport),
        signed_zone.display(),
        open_zone.display()
    );
    let ours = common::Anyedge::start(&cfg, aaddr);
    let local = IpAddr::from([127, 0, 0, 1]);
    let other = IpAddr::from([127, 0, 0, 2]);

    // allowed: from 127.0.0.1, signed
    let z = axfr(aaddr, local, Some(key(SECRET))).unwrap();
    assert_eq!(z.serial, 1);
    // no TSIG: REFUSED
    assert_eq!(axfr(aaddr, local, None).unwrap_err(), 5);
    // a wrong secret: NOTAUTH (BADSIG)
    assert_eq!(axfr(aaddr, local, Some(key(WRONG_SECRET))).unwrap_err(), 9);
    // not in allow_transfer, though signed: REFUSED (signed)
    assert_eq!(axfr(aaddr, other, Some(key(SECRET))).unwrap_err(), 5);
    // a zone without allow_transfer: nobody
    assert_eq!(axfr_org(aaddr), 5);
    // over UDP a transfer is not served
    let m = query(aaddr, APEX, T_AXFR).unwrap();
    assert_ne!(m.header().rcode().to_int(), 0);
    let log = ours.log();
    assert!(log.contains("client not in allow_transfer"), "{log}");
    assert!(log.contains("unsigned; the zone requires its TSIG key"), "{log}");
    assert!(log.contains("bad TSIG"), "{log}");
}

/// An unsigned AXFR of example.org; the RCODE.
fn axfr_org(server: SocketAddr) -> u8 {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (q, _) = xfr::build_query::<Arc<Key>>(5, &wire("example.org."), T_AXFR, None, None, now()).unwrap();
    write_framed(&mut s, &q);
    let r = read_framed(&mut s).unwrap();
    r[3] & 0x0f
}
