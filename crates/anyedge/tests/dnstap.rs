//! dnstap query and response logging, checked with the reference tools:
//! Debian's `fstrm_capture` (fstrm-bin) receives the Frame Streams and
//! `dnstap-ldns` (dnstap-ldns) reads what it wrote. Every exchange arrives
//! with its addresses, ports, protocol, message and type; sampling logs
//! 1 in N; a collector absent at start, or restarted, is reached later; a
//! collector that stops reading never slows the answers and the messages
//! it cannot take are counted as dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_testkit::{holds_for, wait_eq, wait_until};
use common::*;

const ZONE: &str = "$ORIGIN example.com.
$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
     NS  ns1
ns1  A   192.0.2.1
www  A   192.0.2.10
*.w  A   192.0.2.11
";

/// `fstrm_capture` writing to a file, stopped with SIGTERM (it closes the
/// file properly).
struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    fn start(socket: &Path, file: &Path) -> Capture {
        let _ = std::fs::remove_file(socket);
        let log = file.with_extension("log");
        let child = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
            .arg(socket)
            .arg("-w")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fstrm_capture (Debian package fstrm-bin) runs");
        let c = Capture {
            child: Some(child),
            file: file.to_path_buf(),
            log,
        };
        wait_until("fstrm_capture listens", Duration::from_secs(10), || socket.exists());
        c
    }

    /// Stops the capture and returns what `dnstap-ldns` reads in its file.
    fn stop(mut self) -> Vec<Tapped> {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = wait_until("fstrm_capture exits", Duration::from_secs(10), || {
            child.try_wait().unwrap()
        });
        assert!(
            st.success(),
            "fstrm_capture: {st}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        read_dnstap(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One dnstap message as `dnstap-ldns -y` shows it.
#[derive(Debug, Default, Clone)]
struct Tapped {
    identity: String,
    version: String,
    kind: String,
    family: String,
    protocol: String,
    query_address: String,
    query_port: u16,
    response_address: String,
    response_port: u16,
    has_query_time: bool,
    has_response_time: bool,
    /// From the DNS message carried (query or response).
    id: u16,
    rcode: String,
    qr: bool,
    question: String,
}

fn read_dnstap(file: &Path) -> Vec<Tapped> {
    let out = Command::new("dnstap-ldns")
        .arg("-y")
        .arg("-r")
        .arg(file)
        .output()
        .expect("dnstap-ldns (Debian package dnstap-ldns) runs");
    assert!(
        out.status.success(),
        "dnstap-ldns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---")
        .filter(|d| d.contains("type: MESSAGE"))
        .map(|doc| {
            let mut t = Tapped::default();
            let val = |l: &str| {
                l.split_once(": ")
                    .map(|x| x.1.trim_matches('"').to_string())
                    .unwrap_or_default()
            };
            for l in doc.lines() {
                let s = l.trim();
                match l {
                    _ if l.starts_with("identity: ") => t.identity = val(l),
                    _ if l.starts_with("version: ") => t.version = val(l),
                    _ if l.starts_with("  type: ") => t.kind = val(s),
                    _ if l.starts_with("  socket_family: ") => t.family = val(s),
                    _ if l.starts_with("  socket_protocol: ") => t.protocol = val(s),
                    _ if l.starts_with("  query_address: ") => t.query_address = val(s),
                    _ if l.starts_with("  response_address: ") => t.response_address = val(s),
                    _ if l.starts_with("  query_port: ") => t.query_port = val(s).parse().unwrap(),
                    _ if l.starts_with("  response_port: ") => t.response_port = val(s).parse().unwrap(),
                    _ if l.starts_with("  query_time: ") => t.has_query_time = true,
                    _ if l.starts_with("  response_time: ") => t.has_response_time = true,
                    _ if s.starts_with(";; ->>HEADER<<-") => {
                        // ";; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 25297"
                        for part in s.split(", ") {
                            if let Some(r) = part.strip_prefix("rcode: ") {
                                t.rcode = r.to_string();
                            }
                            if let Some(i) = part.strip_prefix("id: ") {
                                t.id = i.trim().parse().unwrap();
                            }
                        }
                    }
                    _ if s.starts_with(";; flags:") => t.qr = s.split_whitespace().any(|f| f == "qr"),
                    _ if s.starts_with(';') && !s.starts_with(";;") && t.question.is_empty() => {
                        t.question = s[1..].split_whitespace().collect::<Vec<_>>().join(" ");
                    }
                    _ => {}
                }
            }
            t
        })
        .collect()
}

fn config(dir: &Path, listen: &[SocketAddr], admin: SocketAddr, dnstap: &str) -> String {
    std::fs::write(dir.join("example.com.zone"), ZONE).unwrap();
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[pop]
name = "pop-tap"
[admin]
listen = "{admin}"
[dns]
listen = [{}]
workers = 2
[dns.dnstap]
socket = "{}"
{dnstap}
[[dns.zone]]
name = "example.com"
file = "{}"
"#,
        listen.join(", "),
        dir.join("tap.sock").display(),
        dir.join("example.com.zone").display()
    )
}

/// The `dnstap` object of the status JSON.
fn tap_status(admin: SocketAddr) -> serde_json::Value {
    let (_, body) = http(admin, "GET", "/api/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["dns"]["dnstap"].clone()
}

fn count(admin: SocketAddr, what: &str) -> u64 {
    tap_status(admin)[what].as_u64().unwrap()
}

/// Sends one query from a fresh socket; returns the source port and the
/// response (None: no answer within `wait`).
fn udp_query(bind: &str, server: SocketAddr, q: &[u8], wait: Duration) -> (u16, Option<Vec<u8>>) {
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(q, server).unwrap();
    let mut buf = [0u8; 4096];
    let r = s.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
    (s.local_addr().unwrap().port(), r)
}

fn rcode(resp: &[u8]) -> u8 {
    resp[3] & 0x0f
}

#[test]
fn udp_and_tcp_queries_and_responses_arrive_with_addresses_ports_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (v4, v6) = (
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::new("::1".parse().unwrap(), port),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cap = Capture::start(&dir.path().join("tap.sock"), &dir.path().join("all.fstrm"));
    let e = Anyedge::start(&config(dir.path(), &[v4, v6], admin, ""), v4);
    wait_until("the collector is connected", Duration::from_secs(10), || {
        tap_status(admin)["connected"] == true
    });

    // (id, transport, client port, server, qname, rcode)
    let mut sent: Vec<(u16, &str, u16, SocketAddr, &str, &str)> = Vec::new();
    for (id, name, rc) in [
        (1u16, "www.example.com", "NOERROR"),
        (2, "nope.example.com", "NXDOMAIN"),
        (3, "a.w.example.com", "NOERROR"),
    ] {
        let (p, r) = udp_query(
            "127.0.0.1:0",
            v4,
            &dns_query(id, name, 1, false, &[]),
            Duration::from_secs(3),
        );
        assert!(r.is_some(), "{name} answered");
        sent.push((id, "UDP", p, v4, name, rc));
    }
    let (p, r) = udp_query(
        "[::1]:0",
        v6,
        &dns_query(4, "www.example.com", 28, true, &[]),
        Duration::from_secs(3),
    );
    assert_eq!(rcode(&r.unwrap()), 0);
    sent.push((4, "UDP", p, v6, "www.example.com", "NOERROR"));
    // two queries pipelined on one TCP connection
    let mut s = TcpStream::connect(v4).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut batch = Vec::new();
    for (id, name) in [(5u16, "ns1.example.com"), (6, "gone.example.com")] {
        let q = dns_query(id, name, 1, false, &[]);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).unwrap();
    for _ in 0..2 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut m).unwrap();
    }
    let tcp_port = s.local_addr().unwrap().port();
    sent.push((5, "TCP", tcp_port, v4, "ns1.example.com", "NOERROR"));
    sent.push((6, "TCP", tcp_port, v4, "gone.example.com", "NXDOMAIN"));

    wait_eq("every message written", Duration::from_secs(10), 12, || {
        count(admin, "sent")
    });
    assert_eq!(count(admin, "dropped"), 0);
    let (_, m) = http(admin, "GET", "/metrics", None);
    assert!(m.contains("anyedge_dns_dnstap_sent_total 12"), "{m}");
    assert!(m.contains("anyedge_dns_dnstap_dropped_total 0"), "{m}");
    assert!(m.contains("anyedge_dns_dnstap_connected 1"), "{m}");
    let got = cap.stop();
    assert_eq!(got.len(), 12, "{got:#?}");
    for (id, proto, cport, server, name, rc) in sent {
        let qtype = if id == 4 { "AAAA" } else { "A" };
        for kind in ["AUTH_QUERY", "AUTH_RESPONSE"] {
            let m: Vec<&Tapped> = got.iter().filter(|t| t.id == id && t.kind == kind).collect();
            assert_eq!(m.len(), 1, "one {kind} for query {id}: {got:#?}");
            let t = m[0];
            let family = if server.is_ipv4() { "INET" } else { "INET6" };
            assert_eq!((t.family.as_str(), t.protocol.as_str()), (family, proto), "{t:?}");
            assert_eq!(
                (t.query_address.as_str(), t.query_port),
                (server.ip().to_string().as_str(), cport),
                "the client's end: {t:?}"
            );
            assert_eq!(
                (t.response_address.as_str(), t.response_port),
                (server.ip().to_string().as_str(), port),
                "the server's end: {t:?}"
            );
            assert_eq!(t.question, format!("{name}. IN {qtype}"), "{t:?}");
            assert_eq!((t.identity.as_str(), t.version.as_str()), ("pop-tap", "anyedge 0.1.0"));
            assert!(t.has_query_time, "{t:?}");
            if kind == "AUTH_QUERY" {
                assert!(!t.qr && !t.has_response_time, "the query as received: {t:?}");
            } else {
                assert!(t.qr && t.has_response_time, "the response as sent: {t:?}");
                assert_eq!(t.rcode, rc, "{t:?}");
            }
        }
    }
    drop(e);
}

#[test]
fn sampling_logs_one_exchange_in_n() {
    let dir = tempfile::tempdir().unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cap = Capture::start(&dir.path().join("tap.sock"), &dir.path().join("sampled.fstrm"));
    let mut e = Anyedge::start(&config(dir.path(), &[dns], admin, "sample = 10"), dns);
    wait_until("the collector is connected", Duration::from_secs(10), || {
        tap_status(admin)["connected"] == true
    });
    const N: u16 = 300;
    for id in 0..N {
        let (_, r) = udp_query(
            "127.0.0.1:0",
            dns,
            &dns_query(id, "www.example.com", 1, false, &[]),
            Duration::from_secs(3),
        );
        assert!(r.is_some(), "query {id} answered");
    }
    // a clean stop writes what is queued, then STOP/FINISH
    e.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(e.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let got = cap.stop();
    let q = got.iter().filter(|t| t.kind == "AUTH_QUERY").count();
    let r = got.iter().filter(|t| t.kind == "AUTH_RESPONSE").count();
    // 1 in 10 per UDP thread (two threads): 28..=30 of 300
    assert!((28..=30).contains(&q), "{q} queries logged of {N}");
    assert_eq!(q, r, "a sampled exchange logs both messages");
    assert_eq!(got.len(), q + r);
}

#[test]
fn a_collector_absent_at_start_or_restarted_is_reached_later() {
    let dir = tempfile::tempdir().unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sock = dir.path().join("tap.sock");
    let e = Anyedge::start(&config(dir.path(), &[dns], admin, ""), dns);
    let ask = |id: u16, name: &str| {
        let (_, r) = udp_query(
            "127.0.0.1:0",
            dns,
            &dns_query(id, name, 1, false, &[]),
            Duration::from_secs(3),
        );
        assert!(r.is_some(), "{name} answered without a collector");
    };
    for i in 0..5 {
        ask(100 + i, &format!("before{i}.w.example.com"));
    }
    // no collector: messages dropped and counted, the state said once
    wait_eq("messages dropped", Duration::from_secs(10), 10, || {
        count(admin, "dropped")
    });
    assert_eq!(tap_status(admin)["connected"], false);
    e.wait_log("dnstap: cannot reach the collector", 1, Duration::from_secs(5));
    holds_for("the unreachable collector is said once", Duration::from_secs(2), || {
        e.log().matches("cannot reach the collector").count() == 1
    });

    // the collector appears: connected within the backoff (at most 5 s)
    let cap = Capture::start(&sock, &dir.path().join("first.fstrm"));
    wait_until("the collector is connected", Duration::from_secs(15), || {
        tap_status(admin)["connected"] == true
    });
    for i in 0..3 {
        ask(200 + i, &format!("after{i}.w.example.com"));
    }
    wait_eq("sent", Duration::from_secs(10), 6, || count(admin, "sent"));
    let first = cap.stop();
    let names: Vec<&str> = first.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(first.len(), 6, "{names:?}");
    for i in 0..3 {
        let n = format!("after{i}.w.example.com. IN A");
        assert_eq!(names.iter().filter(|x| **x == n).count(), 2, "{names:?}");
    }

    // the collector restarts: the writer notices, reconnects, and logs again
    let cap = Capture::start(&sock, &dir.path().join("second.fstrm"));
    let mut i = 0u16;
    wait_until(
        "messages reach the restarted collector",
        Duration::from_secs(20),
        || {
            ask(300 + i, &format!("again{i}.w.example.com"));
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
            count(admin, "sent") >= 8 && tap_status(admin)["connected"] == true
        },
    );
    let before = count(admin, "sent");
    ask(999, "last.w.example.com");
    wait_eq("sent", Duration::from_secs(10), before + 2, || count(admin, "sent"));
    let second = cap.stop();
    assert!(
        second
            .iter()
            .filter(|t| t.question == "last.w.example.com. IN A")
            .count()
            == 2,
        "{second:#?}"
    );
    assert!(second
        .iter()
        .all(|t| !t.question.starts_with("after") && !t.question.starts_with("before")));
    assert_eq!(e.log().matches("dnstap: lost the collector").count(), 1, "{}", e.log());
}

#[test]
fn a_collector_that_stops_reading_never_slows_answers_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // a collector that completes the handshake, then never reads
    let l = UnixListener::bind(dir.path().join("tap.sock")).unwrap();
    let collector = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let control = |s: &mut std::os::unix::net::UnixStream| {
            let mut h = [0u8; 8];
            s.read_exact(&mut h).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize];
            s.read_exact(&mut body).unwrap();
            u32::from_be_bytes([body[0], body[1], body[2], body[3]])
        };
        assert_eq!(control(&mut s), 4, "READY");
        let ct = b"protobuf:dnstap.Dnstap";
        let mut accept = vec![0, 0, 0, 0];
        accept.extend_from_slice(&(12 + ct.len() as u32).to_be_bytes());
        accept.extend_from_slice(&1u32.to_be_bytes());
        accept.extend_from_slice(&1u32.to_be_bytes());
        accept.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        accept.extend_from_slice(ct);
        s.write_all(&accept).unwrap();
        assert_eq!(control(&mut s), 2, "START");
        s // held open, never read
    });
    let mut e = Anyedge::start(&config(dir.path(), &[dns], admin, "queue = 64"), dns);
    let held = collector.join().unwrap();
    wait_until("the collector is connected", Duration::from_secs(10), || {
        tap_status(admin)["connected"] == true
    });
    // far more messages than the socket buffer and the queue hold: every
    // query is still answered, at once
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for id in 0..4000u16 {
        let t = Instant::now();
        s.send_to(&dns_query(id, "www.example.com", 1, false, &[]), dns)
            .unwrap();
        let mut buf = [0u8; 1500];
        let n = s
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("query {id} not answered: {e}"));
        assert_eq!(&buf[..2], &id.to_be_bytes()[..n.min(2)]);
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    wait_until("drops counted", Duration::from_secs(10), || {
        count(admin, "dropped") > 1000
    });
    let st = tap_status(admin);
    assert!(
        took < Duration::from_secs(60),
        "4000 answers took {took:?} (slowest {slowest:?})"
    );
    eprintln!("4000 answers in {took:?}, slowest {slowest:?}; dnstap {st}");
    // and a stuck collector does not hold up the shutdown
    e.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(e.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    drop(held);
}

#[test]
fn reload_turns_dnstap_on_changes_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let with = |extra: &str| config(dir.path(), &[dns], admin, extra);
    let without = || {
        let c = with("");
        let (head, tail) = c.split_once("[dns.dnstap]").unwrap();
        let (_, rest) = tail.split_once("[[dns.zone]]").unwrap();
        format!("{head}[[dns.zone]]{rest}")
    };
    let ask = |id: u16, name: &str| {
        let (_, r) = udp_query(
            "127.0.0.1:0",
            dns,
            &dns_query(id, name, 1, false, &[]),
            Duration::from_secs(3),
        );
        assert!(r.is_some(), "{name} answered");
    };
    let cap = Capture::start(&dir.path().join("tap.sock"), &dir.path().join("reload.fstrm"));
    let e = Anyedge::start(&without(), dns);
    assert_eq!(tap_status(admin)["enabled"], false);
    ask(1, "off.w.example.com");

    let reload = |cfg: String, n: usize| {
        e.rewrite_config(&cfg);
        e.signal(nix::sys::signal::Signal::SIGHUP);
        e.wait_log("reload applied", n, Duration::from_secs(10));
    };
    reload(with(""), 1);
    wait_until("connected after the reload", Duration::from_secs(10), || {
        tap_status(admin)["connected"] == true
    });
    ask(2, "on.w.example.com");
    wait_eq("sent", Duration::from_secs(10), 2, || count(admin, "sent"));
    // a change (queries only) replaces the writer
    reload(with("log_responses = false"), 2);
    e.wait_log("dnstap: connected to the collector", 2, Duration::from_secs(10));
    ask(3, "queries-only.w.example.com");
    wait_eq("sent", Duration::from_secs(10), 3, || count(admin, "sent"));
    reload(without(), 3);
    wait_until("off after the reload", Duration::from_secs(10), || {
        tap_status(admin)["enabled"] == false && tap_status(admin)["connected"] == false
    });
    ask(4, "off-again.w.example.com");
    let got = cap.stop();
    let seen: Vec<(&str, &str)> = got.iter().map(|t| (t.kind.as_str(), t.question.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("AUTH_QUERY", "on.w.example.com. IN A"),
            ("AUTH_RESPONSE", "on.w.example.com. IN A"),
            ("AUTH_QUERY", "queries-only.w.example.com. IN A"),
        ]
    );
}
