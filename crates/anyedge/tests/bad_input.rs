//! Hostile or broken peers: each gets a clear log line and a bounded cost,
//! and normal clients are not disturbed meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A minimal backend that requires a PROXY header and answers 200 with the
/// client address it was handed. `mute` makes it accept and never answer.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections the balancer forwarded from a client: their PROXY
    /// header names the balancer's listener as destination (a health
    /// check's names this backend).
    pub forwarded: Arc<AtomicUsize>,
}

impl Backend {
    fn start(mute: bool) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (st, fwd) = (stop.clone(), forwarded.clone());
        thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let fwd = fwd.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    // the PROXY header, then the request head (the v2
                    // signature itself starts with CRLF CRLF)
                    let mut client = "none".to_string();
                    loop {
                        let n = match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let body_start = match anyedge_proxy::decode(&buf, 4096) {
                            Ok(anyedge_proxy::Decoded::Complete { header, len }) => {
                                if let anyedge_proxy::Addresses::Tcp { src, dst } = header.addrs {
                                    if client == "none" && dst != addr {
                                        fwd.fetch_add(1, Ordering::Relaxed);
                                    }
                                    client = src.to_string();
                                }
                                len
                            }
                            Ok(anyedge_proxy::Decoded::Incomplete { .. }) => continue,
                            Err(_) => 0,
                        };
                        if buf[body_start..].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    if mute {
                        thread::sleep(Duration::from_secs(10));
                        return;
                    }
                    let body = format!("client={client}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Backend { addr, stop, forwarded }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn config(lb: u16, backend: SocketAddr, trusted: &str, idle: &str) -> String {
    format!(
        r#"
[pop]
name = "bad-input"
workers = 2

[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]
accept_proxy_from = [{trusted}]

[service.timeouts]
connect = "1s"
idle = "{idle}"
client_first_byte = "300ms"

{FAST_TCP_HEALTH}

[[service.backend]]
name = "b1"
address = "{backend}"
"#
    )
}

fn start(trusted: &str, idle: &str, mute: bool) -> (Backend, Anyedge, SocketAddr) {
    let b = Backend::start(mute);
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let e = Anyedge::start(&config(port, b.addr, trusted, idle), lb);
    e.wait_log("backend up", 1, Duration::from_secs(5));
    (b, e, lb)
}

/// Normal requests keep working while `attack` runs in another thread.
/// Returns how many were served.
fn with_background_clients(lb: SocketAddr, attack: impl FnOnce() + Send + 'static) -> usize {
    let h = thread::spawn(attack);
    let mut ok = 0;
    while !h.is_finished() {
        let (_, body) = get(lb).expect("normal client disturbed");
        assert!(body.starts_with("client=127.0.0.1:"), "{body}");
        ok += 1;
    }
    h.join().unwrap();
    assert!(ok > 0);
    ok
}

/// Reads until EOF or reset; returns bytes read and time taken.
fn read_until_closed(s: &mut TcpStream) -> (usize, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (n, start.elapsed()),
            Ok(m) => n += m,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("connection still open after {:?}", start.elapsed())
            }
            Err(_) => return (n, start.elapsed()),
        }
    }
}

#[test]
fn proxy_header_from_untrusted_source_is_refused() {
    let (b, e, lb) = start("\"192.0.2.1\"", "5s", false);
    let before = b.forwarded.load(Ordering::Relaxed);
    let served = with_background_clients(lb, move || {
        for _ in 0..20 {
            let mut s = TcpStream::connect(lb).unwrap();
            s.write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 1234 80\r\nGET / HTTP/1.1\r\n\r\n")
                .unwrap();
            let (n, _) = read_until_closed(&mut s);
            assert_eq!(n, 0, "no response to a spoofed PROXY header");
        }
    });
    e.wait_log(
        "PROXY header from a source not in accept_proxy_from",
        1,
        Duration::from_secs(2),
    );
    // the spoofed connections never reached the backend: only the normal
    // clients did (health checks aside)
    assert_eq!(b.forwarded.load(Ordering::Relaxed) - before, served);
}

#[test]
fn proxy_header_from_trusted_source_is_used_and_malformed_one_refused() {
    let (_b, e, lb) = start("\"127.0.0.0/8\"", "5s", false);
    // a valid v1 header from a trusted LB: the backend sees its client
    let mut s = TcpStream::connect(lb).unwrap();
    s.write_all(b"PROXY TCP4 198.18.0.7 198.18.0.1 40000 443\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.contains("client=198.18.0.7:40000"), "{resp}");

    with_background_clients(lb, move || {
        // oversized v2: declares 65535 bytes of addresses/TLVs
        let mut s = TcpStream::connect(lb).unwrap();
        let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        h.extend_from_slice(&[0u8; 200]);
        let _ = s.write_all(&h);
        let (n, t) = read_until_closed(&mut s);
        assert_eq!(n, 0);
        assert!(t < Duration::from_secs(1), "closed at once, not after a timeout: {t:?}");
        // malformed v1
        let mut s = TcpStream::connect(lb).unwrap();
        s.write_all(b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n").unwrap();
        let (n, _) = read_until_closed(&mut s);
        assert_eq!(n, 0);
    });
    e.wait_log("malformed PROXY header", 2, Duration::from_secs(2));
}

#[test]
fn silent_client_is_closed_after_first_byte_timeout() {
    let (b, e, lb) = start("", "5s", false);
    let before = b.forwarded.load(Ordering::Relaxed);
    let served = with_background_clients(lb, move || {
        let mut silent: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(lb).unwrap()).collect();
        for s in &mut silent {
            let (n, t) = read_until_closed(s);
            assert_eq!(n, 0);
            assert!(t < Duration::from_secs(2), "silent client held for {t:?}");
        }
    });
    e.wait_log("client sent nothing", 1, Duration::from_secs(2));
    // silent clients never cost a backend connection (an ARCHITECTURE
    // invariant): only the normal clients reached it
    assert_eq!(b.forwarded.load(Ordering::Relaxed) - before, served);
}

#[test]
fn backend_that_never_answers_is_bounded_by_idle_timeout() {
    let (_b, e, lb) = start("", "600ms", true);
    let mut s = TcpStream::connect(lb).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (n, t) = read_until_closed(&mut s);
    assert_eq!(n, 0);
    assert!(t >= Duration::from_millis(500) && t < Duration::from_secs(3), "{t:?}");
    e.wait_log("backend accepted but never answered", 1, Duration::from_secs(2));
}

#[test]
fn bad_reload_keeps_running_config() {
    let (_b, e, lb) = start("", "5s", false);
    e.rewrite_config("[pop]\nname = \"x\"\nbogus = 1\n");
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload rejected", 1, Duration::from_secs(2));
    assert!(e.log().contains("unknown field `bogus`"), "{}", e.log());
    assert!(get(lb).is_ok(), "old config still serving");
}

#[test]
fn service_connection_cap_refuses_extra_connections_and_keeps_established_ones() {
    let b = Backend::start(false);
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = config(port, b.addr, "", "5s").replace("listen = [", "max_connections = 2\nlisten = [");
    let e = Anyedge::start(&cfg, lb);
    e.wait_log("backend up", 1, Duration::from_secs(5));
    // the start-up probe connection (see `Anyedge::start`) has been closed
    wait_status(&e, "service web active=0 ");
    // two established connections (request sent, response pending on read)
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(lb).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(); // head not finished: stays open
            s
        })
        .collect();
    // wait until the balancer holds both
    wait_status(&e, "service web active=2 ");
    // the third is closed at once
    let mut third = TcpStream::connect(lb).unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let (n, t) = read_until_closed(&mut third);
    assert_eq!(n, 0);
    assert!(t < Duration::from_secs(1), "{t:?}");
    e.wait_log("service connection cap reached", 1, Duration::from_secs(2));
    // the established ones still complete
    for mut s in held {
        s.write_all(b"\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    // and once they are gone, new connections are accepted again
    assert!(get(lb).is_ok());
}

/// Asks for status reports (SIGUSR1) until one contains `needle`.
fn wait_status(e: &Anyedge, needle: &str) {
    let start = Instant::now();
    let before = e.log().len();
    loop {
        e.signal(nix::sys::signal::Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(50));
        if e.log().get(before..).is_some_and(|l| l.contains(needle)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {needle:?} in\n{}",
            e.log()
        );
    }
}

/// A client whose first segment is only the start of a PROXY signature
/// ("P" of "PUT", or the CRLF some clients send before a request line) is
/// not a PROXY header: it is served once the next bytes show that.
#[test]
fn untrusted_client_starting_like_a_proxy_signature_is_served() {
    let (_b, _e, lb) = start("", "5s", false);
    for (first, rest) in [
        (&b"P"[..], &b"UT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..]),
        (b"\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (b"PROXY", b"_PASS / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let mut s = TcpStream::connect(lb).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(first).unwrap();
        // the first segment alone must not be judged: give the daemon time
        // to read it by itself (a refusal would close the connection)
        thread::sleep(Duration::from_millis(100));
        s.write_all(rest).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.contains("client=127.0.0.1:"),
            "first segment {first:?}: {resp:?}"
        );
    }
}
