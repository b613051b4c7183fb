//! The L4 access log (`[access_log]`): one line per connection at close,
//! with the right cause and fields for each way a connection ends; text and
//! JSON; reopened on SIGHUP (logrotate), also when the reload fails; a
//! changed config applies on reload; a full queue drops and counts; and the
//! connect-time and duration histograms count the connections made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyedge_testkit::wait_until;
use common::*;
use serde_json::Value;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers the request head, then closes.
    Answer,
    /// Reads until the client's EOF, then answers and closes.
    AfterEof,
    /// Reads the request and never answers.
    Mute,
}

/// The UNIQUE_ID of each PROXY header a backend received, by the client
/// port it names.
type UniqueIds = Arc<Mutex<HashMap<u16, String>>>;

fn backend(mode: Mode, ids: UniqueIds) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let ids = ids.clone();
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return, // (a health check)
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Ok(anyedge_proxy::Decoded::Complete { len, header }) = anyedge_proxy::decode(&buf, 4096) {
                        if buf[len..].windows(4).any(|w| w == b"\r\n\r\n") {
                            if let (anyedge_proxy::Addresses::Tcp { src, .. }, Some(u)) =
                                (header.addrs, header.unique_id())
                            {
                                ids.lock()
                                    .unwrap()
                                    .insert(src.port(), String::from_utf8_lossy(u).into_owned());
                            }
                            break;
                        }
                    }
                }
                match mode {
                    Mode::Answer => {
                        let _ = s.write_all(RESPONSE);
                    }
                    Mode::AfterEof => {
                        while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
                        let _ = s.write_all(RESPONSE);
                    }
                    Mode::Mute => thread::sleep(Duration::from_secs(10)),
                }
            });
        }
    });
    addr
}

/// Connects from `src`, sends `send`, half-closes if `half_close`, reads
/// until the server closes. Returns the client port and the bytes read.
fn client(src: Ipv4Addr, lb: SocketAddr, send: &[u8], half_close: bool) -> (u16, Vec<u8>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into()).unwrap();
    sock.connect_timeout(&lb.into(), Duration::from_secs(2)).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(send).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (port, got)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The JSON line of the connection from client port `port`, once written.
fn json_line(path: &Path, port: u16) -> Value {
    let mut found = None;
    wait_until(
        &format!("access-log line of client port {port}"),
        Duration::from_secs(10),
        || {
            found = lines(path)
                .iter()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
                .find(|v| v["client_port"] == port);
            found.is_some()
        },
    );
    found.unwrap()
}

fn status(admin: SocketAddr) -> Value {
    serde_json::from_str(&http(admin, "GET", "/api/v1/status", None).1).unwrap()
}

/// The value of the sample `series` (name and labels as printed) in /metrics.
fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http(admin, "GET", "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn service(name: &str, listen: SocketAddr, extra: &str, backends: &[(&str, SocketAddr)]) -> String {
    let mut s =
        format!("[[service]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nbalance = \"round_robin\"\n{extra}\n");
    for (n, a) in backends {
        s.push_str(&format!("[[service.backend]]\nname = \"{n}\"\naddress = \"{a}\"\n"));
    }
    s
}

fn lb() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn each_way_a_connection_ends_gives_its_line_and_the_histograms_count_them() {
    let ids: UniqueIds = Arc::default();
    let answer = backend(Mode::Answer, ids.clone());
    let after_eof = backend(Mode::AfterEof, ids.clone());
    let mute = backend(Mode::Mute, ids.clone());
    // up at their first check, then gone: every connect is refused
    let gone1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let gone2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let never = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (web, eof, idle, dead, down, silent, quiet) = (lb(), lb(), lb(), lb(), lb(), lb(), lb());
    let admin = lb();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let slow_checks =
        "[service.health]\nkind = \"tcp\"\ninterval = \"1h\"\ntimeout = \"1s\"\nrise = 1\npassive_fall = 1000";
    let cfg = format!(
        r#"[pop]
name = "t1"
[admin]
listen = "{admin}"
[guard]
allow = ["127.0.0.1"]
deny = ["127.13.0.0/16"]
tarpit = {{ hold = "700ms", max_connections = 1 }}
[access_log]
format = "json"
path = "{log}"
{web}
{eof}
{idle}
{dead}
{down}
{silent}
{quiet}"#,
        log = log.display(),
        web = service("web", web, FAST_TCP_HEALTH, &[("answer", answer)]),
        eof = service("eof", eof, FAST_TCP_HEALTH, &[("after_eof", after_eof)]),
        idle = service(
            "idle",
            idle,
            // (not inspected: the request goes through the forwarding loop)
            &format!("inspect = false\n[service.timeouts]\nidle = \"300ms\"\n{FAST_TCP_HEALTH}"),
            &[("mute", mute)]
        ),
        dead = service(
            "dead",
            dead,
            slow_checks,
            &[("d1", gone1.local_addr().unwrap()), ("d2", gone2.local_addr().unwrap())]
        ),
        down = service("down", down, FAST_TCP_HEALTH, &[("never", never)]),
        silent = service(
            "silent",
            silent,
            &format!("[service.timeouts]\nclient_first_byte = \"300ms\"\n{FAST_TCP_HEALTH}"),
            &[("answer", answer)]
        ),
        quiet = service(
            "quiet",
            quiet,
            &format!("access_log = false\n{FAST_TCP_HEALTH}"),
            &[("answer", answer)]
        ),
    );
    let e = Anyedge::start(&cfg, web);
    // answer (3 services), after_eof, mute, d1, d2
    e.wait_log("backend up", 7, Duration::from_secs(10));
    drop((gone1, gone2));
    let local = Ipv4Addr::LOCALHOST;

    // The backend answers and closes first.
    let (port, got) = client(local, web, REQUEST, false);
    assert_eq!(got, RESPONSE);
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "backend_closed", "{l}");
    assert_eq!(l["pop"], "t1");
    assert_eq!(l["service"], "web");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["listener"], web.to_string());
    assert_eq!(l["backend"], "answer");
    assert_eq!(l["backend_addr"], answer.to_string());
    assert_eq!(l["bytes_to_backend"], REQUEST.len());
    assert_eq!(l["bytes_to_client"], RESPONSE.len());
    assert_eq!(l["retries"], 0);
    assert_eq!(l["detail"], Value::Null);
    let uid = ids
        .lock()
        .unwrap()
        .get(&port)
        .cloned()
        .expect("the backend got a UNIQUE_ID");
    assert!(uid.starts_with("t1-"), "{uid}");
    assert_eq!(l["unique_id"], uid, "the line names the id the backend received");
    let (first, connect, total) = (
        l["first_byte_ms"].as_f64().unwrap(),
        l["connect_ms"].as_f64().unwrap(),
        l["total_ms"].as_f64().unwrap(),
    );
    assert!(
        first >= 0.0 && connect >= 0.0 && total >= first.max(connect) && total < 10_000.0,
        "{l}"
    );
    assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");

    // The client ends first (half-close), the backend answers after it.
    let (port, got) = client(local, eof, REQUEST, true);
    assert_eq!(got, RESPONSE);
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "client_closed", "{l}");
    assert_eq!(l["backend"], "after_eof");
    assert_eq!(l["bytes_to_backend"], REQUEST.len());
    assert_eq!(l["bytes_to_client"], RESPONSE.len());
    let uid = ids.lock().unwrap().get(&port).cloned().unwrap();
    assert_eq!(l["unique_id"], uid);

    // Nothing moves for timeouts.idle: what did move is still counted.
    let start = Instant::now();
    let (port, got) = client(local, idle, REQUEST, false);
    assert!(got.is_empty() && start.elapsed() >= Duration::from_millis(300));
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "idle_timeout", "{l}");
    assert_eq!(l["bytes_to_backend"], REQUEST.len());
    assert_eq!(l["bytes_to_client"], 0);
    assert!(l["total_ms"].as_f64().unwrap() >= 300.0, "{l}");
    assert!(
        l["first_byte_ms"].as_f64().is_some(),
        "the first byte seen by the forwarding loop: {l}"
    );

    // Both backends refuse: tried one, retried the other.
    let (port, _) = client(local, dead, REQUEST, false);
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "connect_failed", "{l}");
    assert_eq!(l["detail"], "refused");
    assert_eq!(l["retries"], 1);
    assert_eq!(l["backend"], Value::Null);
    assert_eq!(l["unique_id"], Value::Null);
    assert_eq!(l["bytes_to_client"], 0);

    // No backend was ever up.
    let (port, _) = client(local, down, REQUEST, false);
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "no_backend", "{l}");
    assert_eq!(l["retries"], 0);

    // A client that says nothing.
    let s = TcpStream::connect(silent).unwrap();
    let port = s.local_addr().unwrap().port();
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "client_silent", "{l}");
    assert_eq!(l["first_byte_ms"], Value::Null);
    drop(s);

    // Refused by the guard: the first held by the tarpit (its line when it
    // lets go), the second closed at once (the tarpit is full).
    let bad = Ipv4Addr::new(127, 13, 0, 1);
    let held = thread::spawn(move || client(bad, web, b"x", false).0);
    let t = json_line(&log, {
        // wait until the first is held before the second comes
        wait_until("one connection tarpitted", Duration::from_secs(5), || {
            status(admin)["guard"]["tarpit_open"] == 1
        });
        let (port, _) = client(bad, web, b"x", false);
        port
    });
    assert_eq!(t["cause"], "guard", "{t}");
    assert_eq!(t["detail"], "deny_list");
    assert_eq!(t["client_ip"], "127.13.0.1");
    assert_eq!(t["listener"], web.to_string());
    let l = json_line(&log, held.join().unwrap());
    assert_eq!(l["cause"], "tarpit", "{l}");
    assert_eq!(l["detail"], "deny_list");
    assert!(l["total_ms"].as_f64().unwrap() >= 700.0, "{l}");

    // A service with access_log = false logs nothing.
    let (port, got) = client(local, quiet, REQUEST, false);
    assert_eq!(got, RESPONSE);
    let (port2, _) = client(local, web, REQUEST, false);
    json_line(&log, port2);
    assert!(
        !lines(&log)
            .iter()
            .any(|l| l.contains("\"quiet\"") || l.contains(&format!("\"client_port\":{port},"))),
        "a line for the quiet service"
    );
    for l in lines(&log) {
        serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
    }

    // Histograms: connects that succeeded (the two web clients), and
    // every connection served from accept to close (web: those two and the
    // start-up probe; the guard's refusals are not served).
    let c = |s: &str| metric(admin, s).unwrap_or_else(|| panic!("no {s} in /metrics"));
    assert_eq!(
        c("anyedge_backend_connect_duration_seconds_count{service=\"web\",backend=\"answer\"}"),
        2.0
    );
    assert_eq!(
        c("anyedge_backend_connect_duration_seconds_count{service=\"dead\",backend=\"d1\"}"),
        0.0
    );
    assert_eq!(c("anyedge_connection_duration_seconds_count{service=\"web\"}"), 3.0);
    assert_eq!(c("anyedge_connection_duration_seconds_count{service=\"dead\"}"), 1.0);
    assert_eq!(c("anyedge_connection_duration_seconds_count{service=\"quiet\"}"), 1.0);
    assert_eq!(
        c("anyedge_connection_duration_seconds_bucket{le=\"0.1\",service=\"idle\"}"),
        0.0,
        "the idle connection lasted 300 ms"
    );
    assert_eq!(
        c("anyedge_connection_duration_seconds_bucket{le=\"0.5\",service=\"idle\"}"),
        1.0
    );
    assert!(c("anyedge_connection_duration_seconds_sum{service=\"idle\"}") >= 0.3);
    assert!(c("anyedge_backend_connect_duration_seconds_sum{service=\"web\",backend=\"answer\"}") > 0.0);
    assert!(c("anyedge_access_log_lines_total{result=\"written\"}") >= 10.0);
    // the metric's reasons say what the access log's causes say
    assert_eq!(
        c("anyedge_connections_failed_total{service=\"dead\",reason=\"connect_failed\"}"),
        1.0
    );
    assert_eq!(
        c("anyedge_connections_failed_total{service=\"dead\",reason=\"no_backend\"}"),
        0.0
    );
    assert_eq!(
        c("anyedge_connections_failed_total{service=\"down\",reason=\"no_backend\"}"),
        1.0
    );
    assert_eq!(
        c("anyedge_connections_failed_total{service=\"down\",reason=\"connect_failed\"}"),
        0.0
    );
    assert_eq!(c("anyedge_access_log_dropped_total"), 0.0);
}

/// `key=value` pairs of a text line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ').filter_map(|kv| kv.split_once('=')).collect()
}

fn text_line(path: &Path, port: u16) -> String {
    let needle = format!("client=127.0.0.1:{port} ");
    let mut found = None;
    wait_until(
        &format!("text line of client port {port}"),
        Duration::from_secs(10),
        || {
            found = lines(path).into_iter().find(|l| l.contains(&needle));
            found.is_some()
        },
    );
    found.unwrap()
}

#[test]
fn text_lines_reopen_on_sighup_even_when_the_reload_fails_and_a_new_config_applies() {
    let answer = backend(Mode::Answer, Arc::default());
    let web = lb();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = |format: &str| {
        format!(
            "[pop]\nname = \"t2\"\n[access_log]\nformat = \"{format}\"\npath = \"{}\"\n{}",
            log.display(),
            service("web", web, FAST_TCP_HEALTH, &[("answer", answer)])
        )
    };
    let e = Anyedge::start(&cfg("text"), web);
    e.wait_log("backend up", 1, Duration::from_secs(10));
    let get = || client(Ipv4Addr::LOCALHOST, web, REQUEST, false).0;

    let p1 = get();
    let l = text_line(&log, p1);
    let f = fields(&l);
    assert_eq!(f["pop"], "t2", "{l}");
    assert_eq!(f["service"], "web");
    assert_eq!(f["client"], format!("127.0.0.1:{p1}"));
    assert_eq!(f["listener"], web.to_string());
    assert_eq!(f["backend"], "answer");
    assert_eq!(f["bytes_to_backend"], REQUEST.len().to_string());
    assert_eq!(f["bytes_to_client"], RESPONSE.len().to_string());
    assert_eq!(f["cause"], "backend_closed");
    assert_eq!(f["retries"], "0");
    assert_eq!(f["detail"], "-");
    assert!(f["unique_id"].starts_with("t2-"), "{l}");
    assert!(f["total_ms"].parse::<f64>().is_ok(), "{l}");
    assert!(f["time"].ends_with('Z'), "{l}");

    // logrotate: rename, SIGHUP; new lines go to a new file
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload applied", 1, Duration::from_secs(5));
    let p2 = get();
    text_line(&log, p2);
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&format!(":{p2} ")));

    // a reload that fails still reopens
    let rotated2 = dir.path().join("access.log.2");
    std::fs::rename(&log, &rotated2).unwrap();
    e.rewrite_config("this is not toml");
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload rejected", 1, Duration::from_secs(5));
    let p3 = get();
    text_line(&log, p3);
    assert!(!std::fs::read_to_string(&rotated2).unwrap().contains(&format!(":{p3} ")));

    // a changed access-log config applies on reload
    e.rewrite_config(&cfg("json"));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload applied", 2, Duration::from_secs(5));
    let p4 = get();
    let l = json_line(&log, p4);
    assert_eq!(l["cause"], "backend_closed");
}

#[test]
fn a_full_queue_drops_lines_and_counts_them() {
    // A FIFO that we hold open and do not read: the writer blocks once the
    // pipe is full, the queue (4 lines) fills, and the rest are dropped.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let answer = backend(Mode::Answer, Arc::default());
    let (web, admin) = (lb(), lb());
    let cfg = format!(
        "[pop]\nname = \"t3\"\n[admin]\nlisten = \"{admin}\"\n[guard]\nallow = [\"127.0.0.1\"]\ndeny = [\"127.13.0.0/16\"]\n\
         [access_log]\nformat = \"json\"\npath = \"{}\"\nqueue = 4\n{}",
        fifo.display(),
        service("web", web, FAST_TCP_HEALTH, &[("answer", answer)])
    );
    let _e = Anyedge::start(&cfg, web);
    // A flood of refused connections: one line each, none may block.
    let n = 1500u64;
    let bad = Ipv4Addr::new(127, 13, 0, 1);
    let start = Instant::now();
    for _ in 0..n {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(bad, 0)).into()).unwrap();
        sock.connect_timeout(&web.into(), Duration::from_secs(2)).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    wait_until("refused connections counted", Duration::from_secs(10), || {
        status(admin)["guard"]["drops"]["deny_list"].as_u64() == Some(n)
    });
    let s = status(admin);
    let d = s["access_log"]["dropped"].as_u64().unwrap();
    assert!(d > n / 2, "most lines dropped while the writer is blocked: {s}");
    assert_eq!(metric(admin, "anyedge_access_log_dropped_total"), Some(d as f64));

    // Read what was written: every line is accounted for, written or
    // dropped (the refused ones and the start-up probe's).
    let mut text = Vec::new();
    let mut chunk = [0u8; 65536];
    wait_until("every line written or dropped", Duration::from_secs(10), || {
        while let Ok(k) = reader.read(&mut chunk) {
            if k == 0 {
                break;
            }
            text.extend_from_slice(&chunk[..k]);
        }
        let s = status(admin);
        s["access_log"]["written"].as_u64().unwrap() + s["access_log"]["dropped"].as_u64().unwrap() == n + 1
    });
    let s = status(admin);
    let w = s["access_log"]["written"].as_u64().unwrap();
    // the last lines may still be on their way through the pipe
    wait_until("written lines read", Duration::from_secs(5), || {
        while let Ok(k) = reader.read(&mut chunk) {
            if k == 0 {
                break;
            }
            text.extend_from_slice(&chunk[..k]);
        }
        text.iter().filter(|b| **b == b'\n').count() as u64 == w
    });
    for l in String::from_utf8(text).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["cause"] == "guard" || v["cause"] == "client_closed_early", "{v}");
    }
}

#[test]
fn a_connection_cut_when_the_grace_period_ends_is_logged_before_exit() {
    let ids: UniqueIds = Arc::default();
    let mute = backend(Mode::Mute, ids.clone());
    // A backend whose accept queue is full (backlog 0, one connection in
    // it that nobody accepts: its one health check's): a connect to it hangs,
    // its SYNs dropped.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let (web, stuck, admin) = (lb(), lb(), lb());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let one_check =
        "[service.timeouts]\nconnect = \"20s\"\n[service.health]\nkind = \"tcp\"\ninterval = \"1h\"\nrise = 1\npassive_fall = 1000";
    let cfg = format!(
        "[pop]\nname = \"t4\"\n[admin]\nlisten = \"{admin}\"\n[limits]\nshutdown_grace = \"300ms\"\n[access_log]\nformat = \"json\"\npath = \"{}\"\n{}\n{}",
        log.display(),
        service("web", web, FAST_TCP_HEALTH, &[("mute", mute)]),
        service("stuck", stuck, one_check, &[("full", full_addr)]),
    );
    let mut e = Anyedge::start(&cfg, web);
    e.wait_log("backend up", 2, Duration::from_secs(10));
    // forwarding
    let mut s = TcpStream::connect(web).unwrap();
    s.write_all(REQUEST).unwrap();
    let port = s.local_addr().unwrap().port();
    wait_until("request forwarded", Duration::from_secs(5), || {
        ids.lock().unwrap().contains_key(&port)
    });
    // waiting for its first bytes (client_first_byte is 10 s)
    let silent = TcpStream::connect(web).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // connecting to the backend that never answers (connect timeout 20 s)
    let mut c = TcpStream::connect(stuck).unwrap();
    c.write_all(REQUEST).unwrap();
    let connecting_port = c.local_addr().unwrap().port();
    wait_until("all three open", Duration::from_secs(5), || {
        status(admin)["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["active_connections"].as_u64().unwrap())
            .sum::<u64>()
            == 3
    });
    e.signal(nix::sys::signal::Signal::SIGTERM);
    let st = e.wait_exit(Duration::from_secs(15)).expect("anyedge exits");
    assert!(st.success(), "{st:?}");
    // written before the process exited
    let l = json_line(&log, port);
    assert_eq!(l["cause"], "shutdown", "{l}");
    assert_eq!(l["bytes_to_backend"], REQUEST.len());
    assert!(l["total_ms"].as_f64().unwrap() >= 300.0, "{l}");
    let l = json_line(&log, silent_port);
    assert_eq!(l["cause"], "shutdown", "{l}");
    assert_eq!(l["detail"], "before_first_byte", "{l}");
    assert_eq!(l["first_byte_ms"], Value::Null, "{l}");
    let l = json_line(&log, connecting_port);
    assert_eq!(l["cause"], "shutdown", "{l}");
    assert_eq!(l["detail"], "connecting", "{l}");
    assert_eq!(l["service"], "stuck", "{l}");
    assert!(l["first_byte_ms"].as_f64().is_some(), "{l}");
    drop((s, silent, c, full));
}
