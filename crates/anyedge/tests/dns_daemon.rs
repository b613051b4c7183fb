//! The DNS server of a running daemon: UDP and pipelined TCP, NSID, cookies,
//! zone reloads that keep the old version on errors, response rate limiting
//! with slip, the DNS metrics (by query type too) and zone status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyedge_testkit::{wait_eq, wait_until};
use common::*;

const TOKEN: &str = "dns-admin-token-0123456789";

const ZONE_V1: &str = "$ORIGIN example.com.
$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
     NS  ns1
ns1  A   192.0.2.1
www  A   192.0.2.10
";

struct Resp {
    rcode: u8,
    tc: bool,
    answers: Vec<String>,
    raw: Vec<u8>,
}

fn decode(raw: Vec<u8>) -> Resp {
    let msg = domain::base::Message::from_octets(raw.clone()).expect("response parses");
    let answers = msg
        .answer()
        .unwrap()
        .limit_to::<domain::rdata::AllRecordData<_, domain::base::ParsedName<_>>>()
        .map(|r| {
            let r = r.unwrap();
            format!("{} {} {}", r.owner(), r.rtype(), r.data())
        })
        .collect();
    Resp {
        rcode: msg.header().rcode().to_int(),
        tc: msg.header().tc(),
        answers,
        raw,
    }
}

fn udp(server: SocketAddr, q: &[u8]) -> Option<Resp> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s.send_to(q, server).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Some(decode(buf[..n].to_vec()))
}

fn start(dir: &std::path::Path, rrl: &str) -> (Anyedge, SocketAddr, SocketAddr) {
    let (port, admin_port) = (free_port(), free_port());
    let dns = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    std::fs::write(dir.join("example.com.zone"), ZONE_V1).unwrap();
    let cfg = format!(
        r#"
[pop]
name = "pop-dns"
[admin]
listen = "{admin}"
token = "{TOKEN}"
[dns]
listen = ["{dns}"]
nsid = "pop-dns-1"
cookie_secret = "000102030405060708090a0b0c0d0e0f"
{rrl}
[[dns.zone]]
name = "example.com"
file = "{}"
"#,
        dir.join("example.com.zone").display()
    );
    let e = Anyedge::start(&cfg, dns);
    (e, dns, admin)
}

#[test]
fn answers_over_udp_and_pipelined_tcp_with_nsid() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, dns, _) = start(dir.path(), "");
    let r = udp(dns, &dns_query(1, "www.example.com", 1, false, &[])).unwrap();
    assert_eq!(r.rcode, 0);
    assert_eq!(r.answers, vec!["www.example.com A 192.0.2.10"]);
    let r = udp(dns, &dns_query(2, "www.example.com", 1, true, &[(3, b"")])).unwrap();
    assert!(r.raw.windows(9).any(|w| w == b"pop-dns-1"), "NSID names the PoP");
    let r = udp(dns, &dns_query(3, "nope.example.com", 1, false, &[])).unwrap();
    assert_eq!(r.rcode, 3);
    let r = udp(dns, &dns_query(4, "www.example.org", 1, false, &[])).unwrap();
    assert_eq!(r.rcode, 5, "REFUSED outside our zones");

    // three queries in one TCP write; three answers in order
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut batch = Vec::new();
    for (id, n) in [
        (10u16, "www.example.com"),
        (11, "ns1.example.com"),
        (12, "x.example.com"),
    ] {
        let q = dns_query(id, n, 1, false, &[]);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).unwrap();
    for (id, rcode) in [(10u16, 0u8), (11, 0), (12, 3)] {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut m).unwrap();
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), id);
        assert_eq!(decode(m).rcode, rcode);
    }
}

#[test]
fn zone_reload_swaps_good_versions_and_keeps_serving_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (e, dns, admin) = start(dir.path(), "");
    let zf = dir.path().join("example.com.zone");
    // a new version with a new record
    std::fs::write(
        &zf,
        ZONE_V1.replace("hostmaster 1 ", "hostmaster 2 ") + "new A 192.0.2.77\n",
    )
    .unwrap();
    let (st, body) = http(admin, "POST", "/api/v1/dns/zones/example.com/reload", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"serial\":2"), "{body}");
    let r = udp(dns, &dns_query(1, "new.example.com", 1, false, &[])).unwrap();
    assert_eq!(r.answers, vec!["new.example.com A 192.0.2.77"]);
    // a broken file: the API says why (file and line), version 2 keeps serving
    std::fs::write(&zf, ZONE_V1.replace("www  A   192.0.2.10", "www  A   192.0.2.300")).unwrap();
    let (st, body) = http(admin, "POST", "/api/v1/dns/zones/example.com/reload", Some(TOKEN));
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("example.com.zone:6"), "error names file and line: {body}");
    let r = udp(dns, &dns_query(2, "new.example.com", 1, false, &[])).unwrap();
    assert_eq!(r.answers.len(), 1, "previous version still served");
    // SIGHUP with the broken file: same, and the log says so
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("keeping the previous version of the zone", 1, Duration::from_secs(5));
    let r = udp(dns, &dns_query(3, "new.example.com", 1, false, &[])).unwrap();
    assert_eq!(r.answers.len(), 1);
    // the status API reports the error and the serial served
    let (_, body) = http(admin, "GET", "/api/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let z = &v["dns"]["zones"][0];
    assert_eq!(z["serial"], 2);
    assert!(z["error"].as_str().unwrap_or("").contains("example.com.zone:6"), "{z}");
}

#[test]
fn rrl_slips_and_drops_a_flood_but_not_cookie_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, dns, admin) = start(dir.path(), "[dns.rrl]\nrate = 5\nburst = 5\nslip = 2\n");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // 200 random-subdomain queries: one bucket (the zone, NXDOMAIN)
    for i in 0..200u16 {
        s.send_to(&dns_query(i, &format!("r{i}.example.com"), 1, false, &[]), dns)
            .unwrap();
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 1500];
    while let Ok(n) = s.recv(&mut buf) {
        let r = decode(buf[..n].to_vec());
        if r.tc {
            truncated += 1;
        } else {
            full += 1;
        }
    }
    eprintln!(
        "measured: 200 queries -> {full} answered, {truncated} slipped (TC), {} dropped",
        200 - full - truncated
    );
    assert!(full <= 10, "burst 5 + 5/s: {full}");
    assert!(truncated >= 80, "every 2nd limited response slips: {truncated}");
    assert!(full + truncated < 200, "some are dropped");
    // a client with a valid server cookie is not limited
    let first = udp(dns, &dns_query(1, "zz.example.com", 1, true, &[(10, b"abcdefgh")])).unwrap();
    let pos = first
        .raw
        .windows(4)
        .position(|w| w == [0, 10, 0, 24])
        .expect("server cookie issued");
    let cookie = first.raw[pos + 4..pos + 28].to_vec();
    let mut ok = 0;
    for i in 0..30u16 {
        if let Some(r) = udp(
            dns,
            &dns_query(i, &format!("c{i}.example.com"), 1, true, &[(10, &cookie)]),
        ) {
            if !r.tc && r.rcode == 3 {
                ok += 1;
            }
        }
    }
    assert_eq!(ok, 30, "cookie clients bypass RRL");
    let (_, m) = http(admin, "GET", "/metrics", None);
    let line = |needle: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(line("anyedge_dns_rrl_total{action=\"slip\"}") >= 80, "{m}");
    assert!(line("anyedge_dns_rrl_total{action=\"drop\"}") >= 1);
    assert!(line("anyedge_dns_cookies_valid_total") >= 30);
    assert!(line("anyedge_dns_queries_total{transport=\"udp\"}") >= 230);
}

#[test]
fn zone_reloads_under_a_query_loop_lose_no_dns_query() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, dns, admin) = start(dir.path(), "");
    let zf = dir.path().join("example.com.zone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let client = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
        let (mut ok, mut lost) = (0u32, 0u32);
        let mut buf = [0u8; 1500];
        let mut i = 0u16;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && ok + lost < 200_000 {
            i = i.wrapping_add(1);
            s.send_to(&dns_query(i, "www.example.com", 1, false, &[]), dns).unwrap();
            match s.recv(&mut buf) {
                Ok(n) if n > 12 && u16::from_be_bytes([buf[0], buf[1]]) == i && buf[3] & 0x0f == 0 && buf[7] == 1 => {
                    ok += 1
                }
                _ => lost += 1,
            }
        }
        (ok, lost)
    });
    for serial in 2..=11 {
        // paces the reloads so queries run on every version (waits for nothing)
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(
            &zf,
            ZONE_V1.replace("hostmaster 1 ", &format!("hostmaster {serial} "))
                + &format!("r{serial} A 192.0.2.{serial}\n"),
        )
        .unwrap();
        let (st, body) = http(admin, "POST", "/api/v1/dns/zones/example.com/reload", Some(TOKEN));
        assert_eq!(st, 200, "{body}");
    }
    // queries on the last version too, for a moment (on purpose)
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, lost) = client.join().unwrap();
    eprintln!("measured: {ok} queries answered, {lost} lost, across 10 zone reloads");
    assert!(ok > 500, "the loop ran: {ok}");
    assert_eq!(lost, 0);
    wait_eq("the last version serves r11", Duration::from_secs(5), Some(1), || {
        udp(dns, &dns_query(1, "r11.example.com", 1, false, &[])).map(|r| r.answers.len())
    });
}

#[test]
fn compression_loops_and_oversized_queries_get_formerr_or_silence() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, dns, _) = start(dir.path(), "");
    // an additional record whose owner is a pointer to itself
    let mut q = dns_query(7, "www.example.com", 1, false, &[]);
    q[11] = 1;
    let at = q.len();
    q.extend_from_slice(&[0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    let r = udp(dns, &q).expect("an answer (FORMERR or the data), not a crash");
    assert!(r.rcode == 1 || r.rcode == 0);
    // 4000 bytes of trailing garbage: FORMERR, never more than asked
    let mut q = dns_query(8, "www.example.com", 1, false, &[]);
    q.extend_from_slice(&[0xab; 4000]);
    let r = udp(dns, &q).expect("FORMERR");
    assert_eq!(r.rcode, 1);
    assert!(r.raw.len() <= 512);
    // still serving
    assert_eq!(
        udp(dns, &dns_query(9, "www.example.com", 1, false, &[])).unwrap().rcode,
        0
    );
}

/// An anycast prefix with `dns = true` is announced only while every zone
/// is loaded: a secondary zone still waiting for its first transfer keeps
/// it withdrawn (this PoP would answer REFUSED for it).
#[test]
fn anycast_dns_prefix_waits_for_every_zone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), ZONE_V1).unwrap();
    let (port, admin_port, dead) = (free_port(), free_port(), free_port());
    let dns = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let cfg = |secondary: bool| {
        format!(
            r#"
[pop]
name = "pop-dns"
[admin]
listen = "{admin}"
[bgp]
asn = 65001
router_id = "198.18.0.1"
connect_retry = "200ms"
[[bgp.peer]]
name = "router"
address = "127.0.0.1"
port = {dead}
asn = 65000
local_address = "127.0.0.1"
[[anycast]]
prefix = "192.0.2.53/32"
dns = true
[dns]
listen = ["{dns}"]
[[dns.zone]]
name = "example.com"
file = "{}"
{}
"#,
            dir.path().join("example.com.zone").display(),
            if secondary {
                format!("[[dns.zone]]\nname = \"example.net\"\nprimary = [\"127.0.0.1:{dead}\"]\n")
            } else {
                String::new()
            }
        )
    };
    let e = Anyedge::start(&cfg(true), dns);
    // (the admin API starts listening after DNS does)
    wait_port(admin, Duration::from_secs(10));
    let state = || {
        let (_, body) = http(admin, "GET", "/api/v1/status", None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            v["anycast"][0]["state"].as_str().unwrap_or("").to_string(),
            v["anycast"][0]["reason"].to_string(),
        )
    };
    let (st, why) = wait_until(
        "the prefix held back by the unloaded zone",
        Duration::from_secs(5),
        || {
            let (st, why) = state();
            if why.contains("example.net") && why.contains("not loaded") {
                Ok((st, why))
            } else {
                Err(format!("{st}: {why}"))
            }
        },
    );
    assert_ne!(st, "announced", "{why}");
    // without the unloadable zone the prefix is announced
    e.rewrite_config(&cfg(false));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload applied", 1, Duration::from_secs(5));
    // ready to announce; the only BGP peer is down, so the routers were
    // told nothing and the status says so
    wait_until("the prefix ready to announce", Duration::from_secs(5), || {
        let (st, why) = state();
        if why.contains("no BGP session established (ready to announce: all checks pass)") {
            Ok(())
        } else {
            Err(format!("{st}: {why}"))
        }
    });
    let (st, _) = state();
    assert_eq!(st, "withdrawn");
}

#[test]
fn serves_over_ipv6_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.com.zone"), ZONE_V1).unwrap();
    let port = free_port();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let cfg = format!(
        "[pop]\nname = \"p6\"\n[dns]\nlisten = [\"{v4}\", \"{v6}\"]\n[[dns.zone]]\nname = \"example.com\"\nfile = \"{}\"\n",
        dir.path().join("example.com.zone").display()
    );
    let _e = Anyedge::start(&cfg, v4);
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&dns_query(5, "www.example.com", 1, false, &[]), v6).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(from, v6, "answered from the address asked");
    assert_eq!(decode(buf[..n].to_vec()).answers, vec!["www.example.com A 192.0.2.10"]);
    let mut t = TcpStream::connect(v6).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = dns_query(6, "ns1.example.com", 1, false, &[]);
    t.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .unwrap();
    let mut len = [0u8; 2];
    t.read_exact(&mut len).unwrap();
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut m).unwrap();
    assert_eq!(decode(m).answers, vec!["ns1.example.com A 192.0.2.1"]);
}

#[test]
fn metrics_count_queries_by_type_and_status_says_how_each_zone_was_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let started = unix();
    let (_e, dns, admin) = start(dir.path(), "");
    for i in 0..5 {
        assert!(udp(dns, &dns_query(i, "www.example.com", 28, false, &[])).is_some());
    }
    for i in 0..3 {
        assert!(udp(dns, &dns_query(i, "example.com", 15, false, &[])).is_some());
    }
    // type 99 (SPF) is not one of the named types
    assert!(udp(dns, &dns_query(9, "example.com", 99, false, &[])).is_some());
    // over TCP too
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let q = dns_query(10, "example.com", 16, false, &[]);
    s.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();

    let (code, body) = http(admin, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text");
    let qtype = |t: &str| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "anyedge_dns_query_types_total" && s.labels.get("type") == Some(t))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no query type {t} in\n{body}"))
    };
    assert_eq!(qtype("AAAA"), 5.0);
    assert_eq!(qtype("MX"), 3.0);
    assert_eq!(qtype("OTHER"), 1.0);
    assert_eq!(qtype("TXT"), 1.0);
    assert_eq!(qtype("A"), 0.0);

    let status = || -> serde_json::Value {
        let (_, body) = http(admin, "GET", "/api/v1/status", None);
        serde_json::from_str(&body).unwrap()
    };
    let v = status();
    assert_eq!(v["dns"]["stats"]["query_types"]["AAAA"], 5, "{v}");
    let z = &v["dns"]["zones"][0];
    assert_eq!(z["loaded_by"], "file", "{z}");
    let loaded = z["loaded_unix"].as_u64().expect("loaded_unix");
    assert!(loaded >= started && loaded <= unix(), "{z}");
    assert!(z["refreshed_unix"].is_null(), "not a secondary: {z}");
    // a zone reload is a new version loaded now
    std::fs::write(
        dir.path().join("example.com.zone"),
        ZONE_V1.replace("hostmaster 1 ", "hostmaster 2 "),
    )
    .unwrap();
    let (st, body) = http(admin, "POST", "/api/v1/dns/zones/example.com/reload", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    let v = status();
    let z = &v["dns"]["zones"][0];
    assert_eq!(
        (z["serial"].as_u64(), z["loaded_by"].as_str()),
        (Some(2), Some("file")),
        "{z}"
    );
    assert!(z["loaded_unix"].as_u64() >= Some(loaded), "{z}");
}
