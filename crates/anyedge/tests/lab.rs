//! End-to-end in the multi-PoP lab (`anyedge lab up`): a BIRD router with
//! ECMP and BFD in front of two PoPs announcing the same anycast /32 and
//! /128, each with an nginx `proxy_protocol` backend, and a client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_netns::Netns;
use anyedge_testkit::{wait_eq, wait_until};

/// The admin token `anyedge lab` configures.
const LAB_TOKEN: &str = "lab-admin-token-0123456789";

struct Lab {
    name: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn up(tag: &str) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let name = format!("l{}{tag}", std::process::id() % 10000);
        let dir = tmp.path().join("lab");
        let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args(["lab", "up", "--name", &name, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "lab up: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // DNS is suggested with a tool this machine has, else how to get one
        let dig = ["dig", "kdig"]
            .into_iter()
            .find(|t| std::path::Path::new("/usr/bin").join(t).exists());
        match dig {
            Some(t) => assert!(said.contains(&format!("-client {t} @192.0.2.10 ")), "{said}"),
            None => assert!(said.contains("no dig or kdig here"), "{said}"),
        }
        Lab { name, dir, _tmp: tmp }
    }

    /// `anyedge lab ACTION` for this lab: (success, stdout, stderr).
    fn cmd(&self, action: &str) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args(["lab", action, "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status(&self) -> String {
        let (ok, out, err) = self.cmd("status");
        assert!(ok, "{err}");
        out
    }

    fn ns(&self, role: &str) -> Netns {
        // borrowed handle: the lab deletes the namespaces itself
        Netns::open(&format!("{}-{role}", self.name))
    }

    fn nexthops(&self) -> Vec<String> {
        let text = self.ns("router").ip_output(&["route", "show", "192.0.2.10"]).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut v: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        v.sort();
        v
    }

    fn wait_nexthops(&self, want: &[&str], max: Duration) -> Duration {
        let t = Instant::now();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        wait_eq("the router's next hops", max, want, || self.nexthops());
        t.elapsed()
    }

    fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn signal(&self, name: &str, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid(name)), sig).unwrap();
    }

    /// POST to PoP `n`'s admin API with the lab's token; the raw response.
    fn admin_post(&self, n: u8, path: &str) -> String {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LAB_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        self.ns(&format!("pop{n}")).enter(move || {
            let mut s = TcpStream::connect("127.0.0.1:9180").unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        })
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in ["pop1", "pop2"] {
                eprintln!("---- {n} log ----\n{}", self.log(n));
            }
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args(["lab", "down", "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .output();
    }
}

/// A client loop in the client namespace: one request per new connection to
/// the anycast address, until stopped. Counts successes and failures.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// (start, end) of every failed request
    failures: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ClientLoop {
    fn start(ns: &Netns) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f, fl) = (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        let handle = ns.spawn(move || {
            let dst: SocketAddr = "192.0.2.10:80".parse().unwrap();
            let start = Instant::now();
            while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let t0 = Instant::now();
                if request(dst) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                    fl.lock().unwrap().push((t0, Instant::now()));
                }
                // paces the client (waits for nothing)
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        ClientLoop {
            stop,
            ok,
            failed,
            failures,
            handle: Some(handle),
        }
    }

    /// Failed requests that started after `t` (a request in flight on a
    /// connection the router moves to another PoP at `t` breaks: anycast
    /// without flow hand-over between PoPs; those are reported apart).
    fn failed_started_after(&self, t: Instant) -> usize {
        self.failures.lock().unwrap().iter().filter(|(s, _)| *s > t).count()
    }

    /// Waits until `n` more requests than now have succeeded.
    fn wait_more_ok(&self, what: &str, n: usize) {
        let from = self.ok.load(Ordering::Relaxed);
        wait_until(what, Duration::from_secs(10), || {
            let more = self.ok.load(Ordering::Relaxed) - from;
            if more >= n {
                Ok(())
            } else {
                Err(format!(
                    "{more} more ok, {} failed in all",
                    self.failed.load(Ordering::Relaxed)
                ))
            }
        });
    }

    fn counts(&self) -> (usize, usize) {
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.counts()
    }
}

fn request(dst: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&dst, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: anycast\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut r = String::new();
    s.read_to_string(&mut r).is_ok() && r.starts_with("HTTP/1.1 200") && r.contains("client=198.18.10.2:")
}

/// One request to the anycast address from the client namespace: the body.
fn get_body(dst: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: anycast\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(r)
}

#[test]
fn ecmp_backend_failure_drain_and_silent_pop() {
    let lab = Lab::up("a");
    let client = lab.ns("client");
    // both PoPs announce: ECMP at the router
    lab.wait_nexthops(&["198.18.1.2", "198.18.2.2"], Duration::from_secs(10));
    // IPv6 anycast too
    let v6 = lab
        .ns("router")
        .ip_output(&["-6", "route", "show", "2001:db8:a::10"])
        .unwrap();
    assert!(v6.contains("2001:db8:1::2") && v6.contains("2001:db8:2::2"), "{v6}");
    let st = lab.status();
    for name in ["bird", "pop1", "pop2", "be1", "be2"] {
        assert!(
            st.contains(&format!("  {name:5} running (pid {})\n", lab.pid(name))),
            "{st}"
        );
    }

    // the backends' replies name the PoP that forwarded the request (not
    // the backend's own address): be1 sits behind pop1, be2 behind pop2,
    // and ECMP spreads new connections over both
    let replies = client.enter(|| {
        (0..32)
            .map(|_| get_body("192.0.2.10:80".parse().unwrap()))
            .collect::<Vec<_>>()
    });
    for r in &replies {
        let ok = (r.starts_with("backend=be1 pop=pop1 ") || r.starts_with("backend=be2 pop=pop2 "))
            && r.contains(" client=198.18.10.2:")
            && r.contains(" anycast=192.0.2.10:80 ");
        assert!(ok, "{r}");
    }
    assert!(
        replies.iter().any(|r| r.contains("pop=pop1")) && replies.iter().any(|r| r.contains("pop=pop2")),
        "{replies:?}"
    );

    // the tunnel service: whichever PoP ECMP picks, its XDP program sends
    // the client's packets to the node both PoPs' Maglev tables name for
    // this client; the node sees the client's own address (no PROXY
    // header) and answers it directly
    let tunnel: SocketAddr = "192.0.2.10:8000".parse().unwrap();
    client.enter(move || {
        wait_until("the tunnel service answers", Duration::from_secs(20), || {
            std::panic::catch_unwind(|| get_body(tunnel)).is_ok_and(|b| b.contains("client=198.18.10.2:"))
        })
    });
    // once both PoPs see both nodes healthy, their tables agree: every
    // connection of this client lands on the same node, through either PoP
    wait_until(
        "both PoPs send this client to the same node",
        Duration::from_secs(20),
        || {
            let replies = client.enter(move || (0..16).map(|_| get_body(tunnel)).collect::<Vec<_>>());
            let first = replies[0].split_whitespace().next().unwrap_or("").to_string();
            replies
                .iter()
                .all(|r| r.starts_with(&format!("{first} client=198.18.10.2:")) && r.contains("(tunnel"))
        },
    );
    // the nodes' counters (written every second by `node attach`)
    let decapsulated = || -> u64 {
        ["node1", "node2"]
            .iter()
            .map(|n| std::fs::read_to_string(lab.dir.join(format!("{n}.stats"))).unwrap_or_default())
            .collect::<String>()
            .split_whitespace()
            .filter_map(|kv| kv.strip_prefix("decap="))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    wait_until(
        "the nodes counted what they decapsulated",
        Duration::from_secs(10),
        || decapsulated() >= 16,
    );

    // anycast DNS: both PoPs answer for the zone; NSID says which one
    let seen = client.enter(dns_nsids);
    eprintln!("measured: 64 DNS queries to the anycast address answered by {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 64, "every query answered: {seen:?}");
    assert!(
        seen.contains_key("pop1") && seen.contains_key("pop2"),
        "ECMP spreads DNS over both PoPs: {seen:?}"
    );

    // (a) PoP1's backend dies: PoP1 withdraws, clients keep succeeding via PoP2
    let clients = ClientLoop::start(&client);
    clients.wait_more_ok("the clients get answers before the failure", 20);
    lab.signal("be1", nix::sys::signal::Signal::SIGKILL);
    let t = lab.wait_nexthops(&["198.18.2.2"], Duration::from_secs(5));
    eprintln!("measured: backend failure -> PoP1 route gone after {t:?}");
    // fall (2) x interval (200 ms) + a check timeout + 1 s
    assert!(t <= Duration::from_millis(2 * 200 + 150 + 1000), "{t:?}");
    let withdrawn_at = Instant::now();
    clients.wait_more_ok("100 requests after the withdrawal", 100);
    let after = clients.failed_started_after(withdrawn_at);
    let (ok, failed) = clients.finish();
    assert_eq!(after, 0, "every request started after the withdrawal succeeds");
    assert!(ok > 50);
    eprintln!("measured: requests failed during backend failover: {failed}");

    // backend back: PoP1 re-announces
    let st = lab.status();
    assert!(
        st.contains(&format!("  be1   dead (pid {} not running", lab.pid("be1"))),
        "{st}"
    );
    restart_backend(&lab, "be1");
    lab.wait_nexthops(&["198.18.1.2", "198.18.2.2"], Duration::from_secs(5));

    // (c) planned drain of PoP1 with a client loop running: zero failures
    let clients = ClientLoop::start(&client);
    clients.wait_more_ok("the clients get answers before the drain", 20);
    let resp = lab.admin_post(1, "/api/v1/pop/drain");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    lab.wait_nexthops(&["198.18.2.2"], Duration::from_secs(5));
    let switched_at = Instant::now();
    clients.wait_more_ok("50 requests after the switch", 50);
    let after = clients.failed_started_after(switched_at);
    let (ok, failed) = clients.finish();
    eprintln!("measured: drain: {ok} requests ok, {failed} failed (in flight when the router switched)");
    assert_eq!(after, 0, "no request started after the switch fails");
    assert!(failed <= 1, "at most the one request in flight at the switch: {failed}");
    let resp = lab.admin_post(1, "/api/v1/pop/undrain");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    lab.wait_nexthops(&["198.18.1.2", "198.18.2.2"], Duration::from_secs(5));

    // (b) a silent PoP (process frozen, no FIN): BFD takes it out
    lab.signal("pop1", nix::sys::signal::Signal::SIGSTOP);
    let t = lab.wait_nexthops(&["198.18.2.2"], Duration::from_secs(3));
    eprintln!("measured: silent PoP1 -> route gone after {t:?}");
    assert!(t <= Duration::from_millis(3 * 100 + 200), "{t:?}");
    // DNS keeps answering from the PoP that is left
    let seen = client.enter(dns_nsids);
    assert_eq!(seen.get("pop2"), Some(&64), "PoP2 answers every query: {seen:?}");
    let st = lab.status();
    assert!(
        st.contains(&format!("  pop1  suspended (pid {} ", lab.pid("pop1"))),
        "{st}"
    );
    lab.signal("pop1", nix::sys::signal::Signal::SIGCONT);

    // down says what it ends and removes; a second down has nothing to do
    let names = ["bird", "pop1", "pop2", "be1", "be2"];
    let pids = names.map(|n| lab.pid(n));
    let (ok, said, err) = lab.cmd("down");
    assert!(ok, "{err}");
    for (name, pid) in names.iter().zip(pids) {
        assert!(said.contains(&format!("killed {name} (pid {pid})\n")), "{said}");
    }
    for role in ["client", "router", "pop1", "pop2", "be1", "be2"] {
        let ns = format!("{}-{role}", lab.name);
        assert!(said.contains(&format!("deleted namespace {ns}\n")), "{said}");
        assert!(!std::path::Path::new("/run/netns").join(&ns).exists(), "{ns}");
    }
    assert!(
        said.contains(&format!("removed run directory {}", lab.dir.display())),
        "{said}"
    );
    assert!(!lab.dir.exists());
    for pid in pids {
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        wait_until(&format!("pid {pid} ends"), Duration::from_secs(2), || {
            if gone() {
                Ok(())
            } else {
                Err("still running".to_string())
            }
        });
    }
    let (ok, said, err) = lab.cmd("down");
    assert!(ok, "{err}");
    assert!(said.starts_with("nothing to stop"), "{said}");
}

/// 64 queries for www.lab.example to the anycast address, each from a new
/// UDP socket (a new source port, so the router's L4 ECMP hash spreads
/// them); counts the answers by the NSID (PoP name) they carry.
fn dns_nsids() -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..64u16 {
        let s = std::net::UdpSocket::bind("198.18.10.2:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        // with an empty NSID option
        let q = common::dns_query(i, "www.lab.example", 1, true, &[(3, b"")]);
        s.send_to(&q, "192.0.2.10:53").unwrap();
        let mut buf = [0u8; 1500];
        let Ok(n) = s.recv(&mut buf) else { continue };
        let r = &buf[..n];
        if r[3] & 0x0f != 0 || r[7] != 1 {
            continue;
        }
        // the NSID option (code 3) near the end: [0, 3, len_hi, len_lo, name...]
        if let Some(p) = r.windows(2).rposition(|w| w == [0, 3]) {
            let len = r.get(p + 3).copied().unwrap_or(0) as usize;
            if let Some(name) = r.get(p + 4..p + 4 + len) {
                *seen.entry(String::from_utf8_lossy(name).into_owned()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// The new nginx is ended by `lab down` through its recorded PID.
#[allow(clippy::zombie_processes)]
fn restart_backend(lab: &Lab, be: &str) {
    let d = lab.dir.join(be);
    let log = std::fs::File::create(lab.dir.join(format!("{be}.log"))).unwrap();
    let child = lab
        .ns(be)
        .command("nginx")
        .arg("-p")
        .arg(&d)
        .arg("-e")
        .arg(d.join("error.log"))
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(lab.dir.join(format!("{be}.pid")), child.id().to_string()).unwrap();
}

/// The live status page in headless Chromium: it shows the lab's real
/// state, version and uptime, the history (charts, prefix and backend
/// timelines) and the backend columns; with the lab's admin token every
/// action button is enabled, and clicking a prefix's "Drain" takes PoP1
/// out for that prefix at the BIRD router (its timeline shows the change),
/// and so does "Drain PoP". Clients send requests meanwhile (the charts
/// have something to show). Screenshots land in target/status-page*.png.
#[test]
fn status_page_in_chromium_drains_the_pop() {
    let lab = Lab::up("b");
    lab.wait_nexthops(&["198.18.1.2", "198.18.2.2"], Duration::from_secs(10));
    let clients = ClientLoop::start(&lab.ns("client"));
    let shot = common::browser::root().join("target/status-page.png");
    let browser = |action: &str| {
        common::browser::status_page(
            lab.ns("pop1").command("node"),
            "http://127.0.0.1:9180/",
            &shot,
            LAB_TOKEN,
            action,
            &[("MIN_POINTS", "3")],
        );
    };
    // one prefix's Drain button: the router stops using PoP1 for it
    browser("prefix:192.0.2.10/32");
    assert!(shot.exists());
    let t = lab.wait_nexthops(&["198.18.2.2"], Duration::from_secs(5));
    eprintln!("measured: prefix drain clicked on the status page -> PoP1 out of ECMP after {t:?}");
    let r = lab.admin_post(1, "/api/v1/anycast/192.0.2.10%2F32/undrain");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    lab.wait_nexthops(&["198.18.1.2", "198.18.2.2"], Duration::from_secs(5));
    // "Drain PoP"
    browser("pop");
    let t = lab.wait_nexthops(&["198.18.2.2"], Duration::from_secs(5));
    eprintln!("measured: drain clicked on the status page -> PoP1 out of ECMP after {t:?}");
    let (ok, failed) = clients.finish();
    eprintln!("measured: {ok} client requests during the page test, {failed} failed");
}
