//! Operating the daemon: systemd readiness notifications, and reloads and
//! binary upgrades under a running client loop (HTTP through the load
//! balancer, DNS over UDP and TCP) losing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyedge_testkit::wait_until;
use common::*;

fn backend() -> SocketAddr {
    proxy_backend("ok\n".into())
}

fn config(lb: u16, a: SocketAddr, b: SocketAddr, weight_b: u32) -> String {
    format!(
        r#"
[pop]
name = "ops"
[limits]
shutdown_grace = "2s"
{web}"#,
        web = round_robin_web(lb, a, b, &format!("weight = {weight_b}"))
    )
}

type Counter = Arc<AtomicUsize>;

/// 4 client threads making new-connection requests to `lb` until 10,000
/// are done or `stop` is set; counts successes and failures.
fn client_loop(lb: SocketAddr) -> (Arc<AtomicBool>, Counter, Counter, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed)
                    && ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < 10_000
                {
                    match get(lb) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    (stop, ok, failed, clients)
}

#[test]
fn systemd_notifications_ready_reloading_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (a, b) = (backend(), backend());
    let port = free_port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, config(port, a, b, 1)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // listening by the time READY=1 is sent
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let r = recv();
    assert!(r.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{r}");
    assert_eq!(recv(), "READY=1");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(recv().starts_with("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn ten_thousand_requests_across_reloads_lose_nothing() {
    let (a, b) = (backend(), backend());
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let e = Anyedge::start(&config(port, a, b, 1), lb);
    e.wait_log("backend up", 2, Duration::from_secs(5));
    let (stop, ok, failed, clients) = client_loop(lb);
    // reload every 150 ms while the clients run, changing the weights
    let mut reloads = 0;
    while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < 10_000 && reloads < 200 {
        // paces the reloads (waits for nothing): clients run between them
        std::thread::sleep(Duration::from_millis(150));
        e.rewrite_config(&config(port, a, b, 1 + reloads % 3));
        e.signal(nix::sys::signal::Signal::SIGHUP);
        reloads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("measured: {ok} requests ok, {failed} failed, across {reloads} reloads");
    assert!(ok + failed >= 10_000);
    assert!(reloads >= 3, "reloads happened during the run");
    assert_eq!(failed, 0);
    e.wait_log("reload applied", reloads as usize, Duration::from_secs(5));
}

#[test]
fn binary_upgrade_hands_over_listeners_without_refusing_a_connection() {
    let (a, b) = (backend(), backend());
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let mut e = Anyedge::start(&config(port, a, b, 1), lb);
    e.wait_log("backend up", 2, Duration::from_secs(5));
    let (stop, ok, failed, clients) = client_loop(lb);
    // the upgrade starts while the clients are busy
    wait_until("the clients get answers", Duration::from_secs(10), || {
        let n = ok.load(Ordering::Relaxed);
        if n >= 100 {
            Ok(())
        } else {
            Err(format!("{n} ok, {} failed", failed.load(Ordering::Relaxed)))
        }
    });
    e.signal(nix::sys::signal::Signal::SIGUSR2);
    e.wait_log("upgrade: new process ready", 1, Duration::from_secs(10));
    // the old process drains and exits; the new one keeps serving
    let old = e
        .wait_exit(Duration::from_secs(10))
        .expect("old process exits after the hand-over");
    assert!(old.success(), "{old:?}");
    let log = e.log();
    let new_pid = e.new_pid(1);
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("measured: upgrade under load: {ok} requests ok, {failed} failed");
    // still served after the old process is gone
    let served_after = get(lb).is_ok();
    // end the new process (started by ours) by its PID
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_pid), nix::sys::signal::Signal::SIGKILL);
    assert!(log.contains("upgrade: took over from the previous process"), "{log}");
    assert!(served_after, "the new process serves");
    assert!(ok + failed >= 10_000);
    assert_eq!(failed, 0, "no connection refused or reset during the upgrade");
}

// ---------------------------------------------------------------------------
// DNS under reloads and upgrades

const ZONE: &str = "$ORIGIN example.com.
$TTL 300
@    SOA ns1 hostmaster SERIAL 7200 3600 1209600 60
     NS  ns1
ns1  A   192.0.2.1
www  A   192.0.2.10
";

/// Zone version `serial`: the base records plus `r<serial>` (written to a
/// temporary file and renamed, so a reload never reads half a file).
fn write_zone(path: &std::path::Path, serial: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        ZONE.replace("SERIAL", &serial.to_string()) + &format!("r{serial} A 192.0.2.{}\n", serial % 250),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn dns_config(port: u16, zone: &std::path::Path, nsid: u32) -> String {
    format!(
        r#"
[pop]
name = "ops-dns"
[limits]
shutdown_grace = "3s"
[dns]
listen = ["127.0.0.1:{port}"]
workers = 2
nsid = "ops-{nsid}"
[[dns.zone]]
name = "example.com"
file = "{}"
"#,
        zone.display()
    )
}

/// Questions every zone version answers with at least one record.
const QUESTIONS: [(&str, u16); 4] = [
    ("www.example.com", 1),
    ("example.com", 6),
    ("example.com", 2),
    ("ns1.example.com", 1),
];

/// How long a query may go unanswered before it counts as lost (no retry).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Checks one response to query `id`: a NOERROR answer with records.
fn check_answer(m: &[u8], id: u16) -> Result<(), String> {
    if m.len() < 12 {
        return Err(format!("short response ({} bytes)", m.len()));
    }
    let (rid, qr, rcode, an) = (
        u16::from_be_bytes([m[0], m[1]]),
        m[2] & 0x80 != 0,
        m[3] & 0x0f,
        u16::from_be_bytes([m[6], m[7]]),
    );
    if rid != id || !qr || rcode != 0 || an == 0 {
        return Err(format!(
            "bad answer: id {rid} (asked {id}), qr {qr}, rcode {rcode}, answers {an}"
        ));
    }
    Ok(())
}

/// One UDP query from a fresh socket (a new source port each time, so the
/// queries spread over every SO_REUSEPORT socket of the server).
fn udp_query(server: SocketAddr, id: u16, (name, qtype): (&str, u16)) -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    s.set_read_timeout(Some(ANSWER_WITHIN)).map_err(|e| e.to_string())?;
    s.send_to(&dns_query(id, name, qtype, false, &[]), server)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, from) = s
        .recv_from(&mut buf)
        .map_err(|e| format!("lost: no answer within {ANSWER_WITHIN:?} ({e})"))?;
    if from != server {
        return Err(format!("answer from {from}"));
    }
    check_answer(&buf[..n], id)
}

/// One TCP query on a new connection (connect, ask, read the answer).
fn tcp_query(server: SocketAddr, id: u16, (name, qtype): (&str, u16)) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&server, ANSWER_WITHIN).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(ANSWER_WITHIN)).map_err(|e| e.to_string())?;
    let q = dns_query(id, name, qtype, false, &[]);
    s.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| format!("read length: {e}"))?;
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut m).map_err(|e| format!("read answer: {e}"))?;
    check_answer(&m, id)
}

/// A DNS client loop: 3 UDP threads and 1 TCP thread, each one query at a
/// time, until `stop`. Every query either gets its answer or counts as
/// failed (the first few failures are kept for the report).
struct DnsLoad {
    stop: Arc<AtomicBool>,
    udp_ok: Counter,
    tcp_ok: Counter,
    failed: Counter,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DnsLoad {
    fn start(server: SocketAddr) -> DnsLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (udp_ok, tcp_ok, failed) = (Counter::default(), Counter::default(), Counter::default());
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4u16)
            .map(|t| {
                let (stop, failed, errors) = (stop.clone(), failed.clone(), errors.clone());
                let tcp = t == 3;
                let ok = if tcp { tcp_ok.clone() } else { udp_ok.clone() };
                std::thread::spawn(move || {
                    let mut i = 0u16;
                    while !stop.load(Ordering::Relaxed) {
                        i = i.wrapping_add(1);
                        let id = (t << 14) | (i & 0x3fff);
                        let q = QUESTIONS[usize::from(i) % QUESTIONS.len()];
                        let r = if tcp {
                            tcp_query(server, id, q)
                        } else {
                            udp_query(server, id, q)
                        };
                        match r {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                let mut v = errors.lock().unwrap();
                                if v.len() < 10 {
                                    v.push(format!("{} {q:?}: {e}", if tcp { "tcp" } else { "udp" }));
                                }
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        DnsLoad {
            stop,
            udp_ok,
            tcp_ok,
            failed,
            errors,
            threads,
        }
    }

    fn total(&self) -> usize {
        self.udp_ok.load(Ordering::Relaxed) + self.tcp_ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Waits (up to `max`, else panics) until `n` queries are done.
    fn wait_total(&self, n: usize, max: Duration) {
        wait_until(&format!("{n} queries done"), max, || {
            let done = self.total();
            if done >= n {
                Ok(())
            } else {
                Err(format!("{done} done, {} failed", self.failed.load(Ordering::Relaxed)))
            }
        });
    }

    /// Stops the loop; (udp ok, tcp ok, failed, first errors).
    fn finish(self) -> (usize, usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.udp_ok.load(Ordering::Relaxed),
            self.tcp_ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// The inodes of the UDP sockets and listening TCP sockets bound to
/// 127.0.0.1:`port`, asked of the kernel by socket diagnostics (`ss`) with
/// a filter on the port. Not from `/proc/net/udp`: that file is read a page
/// at a time and each read resumes by counting entries from the start of
/// the table, so sockets that other tests open and close meanwhile shift
/// it and a line can be skipped (the "1 UDP socket where 2 were expected"
/// failure); the diagnostics dump resumes within the port's hash slot.
fn socket_inodes(port: u16) -> (std::collections::BTreeSet<u64>, std::collections::BTreeSet<u64>) {
    let out = std::process::Command::new("ss")
        .args(["-H", "-n", "-l", "-u", "-t", "-e", "src"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    let (mut udp, mut tcp) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let inode = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("ino:"))
            .and_then(|i| i.parse().ok());
        match (line.split_whitespace().next(), inode) {
            (Some("udp"), Some(i)) => {
                udp.insert(i);
            }
            (Some("tcp"), Some(i)) => {
                tcp.insert(i);
            }
            _ => {}
        }
    }
    (udp, tcp)
}

/// Ends, on drop, a process this test caused to start (the upgraded
/// daemon, started by the daemon we started), by its PID.
struct KillOnDrop(i32);

/// A binary upgrade (SIGUSR2): waits for the new process to be ready and
/// for the old one to exit cleanly; the new process is killed on drop.
fn upgrade(e: &mut Anyedge) -> KillOnDrop {
    e.signal(nix::sys::signal::Signal::SIGUSR2);
    e.wait_log("upgrade: new process ready", 1, Duration::from_secs(60));
    let new = KillOnDrop(e.new_pid(1));
    assert!(e.wait_exit(Duration::from_secs(60)).is_some_and(|s| s.success()));
    new
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn ten_thousand_dns_queries_across_reloads_and_zone_changes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    write_zone(&zone, 1);
    let port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let e = Anyedge::start(&dns_config(port, &zone, 0), server);
    let load = DnsLoad::start(server);
    // a reload every ~100 ms, each one confirmed in the log before the next
    // (signals sent faster than reloads finish would merge); every second
    // one with a new zone version
    let (mut reloads, mut serial) = (0u32, 1u32);
    let t = Instant::now();
    while (load.total() < 10_000 || reloads < 20) && t.elapsed() < Duration::from_secs(300) {
        // paces the reloads (waits for nothing)
        std::thread::sleep(Duration::from_millis(100));
        reloads += 1;
        if reloads % 2 == 0 {
            serial += 1;
            write_zone(&zone, serial);
        }
        e.rewrite_config(&dns_config(port, &zone, reloads));
        e.signal(nix::sys::signal::Signal::SIGHUP);
        e.wait_log("reload applied", reloads as usize, Duration::from_secs(20));
    }
    let (udp, tcp, failed, errors) = load.finish();
    eprintln!(
        "measured: {} DNS queries ({udp} udp ok, {tcp} tcp ok), {failed} lost or failed, across {reloads} reloads ({} zone versions)",
        udp + tcp + failed,
        serial
    );
    assert!(udp + tcp + failed >= 10_000, "the loop ran to 10,000");
    assert!(tcp > 0 && udp > 0, "both transports were used");
    assert_eq!(failed, 0, "lost or failed queries: {errors:?}");
    assert!(reloads >= 20 && serial >= 11);
    // the last version serves
    let r = udp_query(server, 7, (&format!("r{serial}.example.com"), 1));
    assert!(r.is_ok(), "r{serial} from the newest zone: {r:?}");
    assert!(!e.log().contains("reload rejected"), "{}", e.log());
}

/// True once process `pid` has exited (gone, or a zombie nobody reaped: an
/// upgraded process's parent is the process it replaced, which exits).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z"),
    }
}

/// Three upgrades in a row (the second and third hand over sockets that
/// were themselves inherited) under one client loop.
#[test]
fn ten_thousand_dns_queries_across_binary_upgrades_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    write_zone(&zone, 1);
    let port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mut e = Anyedge::start(&dns_config(port, &zone, 0), server);
    let sockets = socket_inodes(port);
    assert_eq!(sockets.0.len(), 2, "one UDP socket per DNS worker");
    assert!(!sockets.1.is_empty());
    let load = DnsLoad::start(server);
    let mut current = KillOnDrop(0); // the upgraded process serving now
    let mut at_exit = 0;
    for round in 1..=3 {
        load.wait_total(at_exit + 1_000, Duration::from_secs(60));
        match current.0 {
            0 => e.signal(nix::sys::signal::Signal::SIGUSR2),
            pid => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR2).unwrap(),
        }
        e.wait_log("upgrade: new process ready", round, Duration::from_secs(60));
        let new_pid = e.new_pid(round);
        let old = std::mem::replace(&mut current, KillOnDrop(new_pid));
        if old.0 == 0 {
            let st = e.wait_exit(Duration::from_secs(60)).expect("old process exits");
            assert!(st.success(), "{st:?}");
        } else {
            wait_until(
                &format!("upgrade {round}: the old process exited"),
                Duration::from_secs(60),
                || exited(old.0),
            );
            std::mem::forget(old); // gone: nothing to end
        }
        at_exit = load.total();
        // the new process serves on the very same kernel sockets
        assert_eq!(socket_inodes(port), sockets, "upgrade {round}: same sockets");
    }
    // answers keep coming after the last old process is gone
    load.wait_total((at_exit + 2_000).max(10_000), Duration::from_secs(300));
    let (udp, tcp, failed, errors) = load.finish();
    let total = udp + tcp + failed;
    eprintln!(
        "measured: {total} DNS queries ({udp} udp ok, {tcp} tcp ok), {failed} lost or failed, across 3 binary upgrades ({} after the last old process exited)",
        total - at_exit
    );
    let log = e.log();
    assert_eq!(
        log.matches("upgrade: dns serving on the inherited sockets").count(),
        3,
        "{log}"
    );
    assert!(!log.contains("binding additional dns sockets"), "{log}");
    assert!(total >= 10_000 && total - at_exit >= 2_000, "the loop ran on");
    assert!(tcp > 0 && udp > 0, "both transports were used");
    assert_eq!(failed, 0, "lost or failed queries: {errors:?}");
}

/// An upgrade whose new configuration has fewer DNS workers and one more
/// address: the extra inherited socket is closed, the new address bound,
/// both logged, and both addresses answer afterwards.
#[test]
fn upgrade_with_other_dns_listeners_closes_and_binds_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    write_zone(&zone, 1);
    let (port, port2) = (free_port(), free_port());
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let server2 = SocketAddr::from(([127, 0, 0, 1], port2));
    let mut e = Anyedge::start(&dns_config(port, &zone, 0), server);
    let (udp_before, _) = socket_inodes(port);
    assert_eq!(udp_before.len(), 2);
    e.rewrite_config(
        &dns_config(port, &zone, 1)
            .replace("workers = 2", "workers = 1")
            .replace(
                &format!("listen = [\"{server}\"]"),
                &format!("listen = [\"{server}\", \"{server2}\"]"),
            ),
    );
    let _new = upgrade(&mut e);
    let log = e.log();
    assert!(log.contains("dns.workers is smaller now"), "{log}");
    assert!(log.contains("upgrade: new dns address"), "{log}");
    let (udp_after, _) = socket_inodes(port);
    assert_eq!(udp_after.len(), 1, "one worker now");
    assert!(udp_after.is_subset(&udp_before), "an inherited socket kept");
    assert_eq!(socket_inodes(port2).0.len(), 1, "the new address bound");
    for (i, s) in [server, server2].into_iter().enumerate() {
        let r = udp_query(s, i as u16, QUESTIONS[0]);
        assert!(r.is_ok(), "{s}: {r:?}");
        let r = tcp_query(s, i as u16, QUESTIONS[1]);
        assert!(r.is_ok(), "{s}: {r:?}");
    }
}

/// A secondary zone (no saved copy) across an upgrade: the new process
/// says READY only once its first transfer is in, so the old process,
/// which has the zone, serves until then: no query is REFUSED or lost.
#[test]
fn secondary_zone_answers_across_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.com.zone");
    write_zone(&zone, 1);
    let (pport, sport) = (free_port(), free_port());
    let primary = SocketAddr::from(([127, 0, 0, 1], pport));
    let secondary = SocketAddr::from(([127, 0, 0, 1], sport));
    let _p = Anyedge::start(
        &(dns_config(pport, &zone, 0) + "allow_transfer = [\"127.0.0.1\"]\n"),
        primary,
    );
    let cfg = dns_config(sport, &zone, 1).replace(
        &format!("file = \"{}\"", zone.display()),
        &format!("primary = [\"{primary}\"]"),
    );
    let mut e = Anyedge::start(&cfg, secondary);
    wait_until("the first transfer served", Duration::from_secs(30), || {
        udp_query(secondary, 1, QUESTIONS[0])
    });
    let load = DnsLoad::start(secondary);
    load.wait_total(1_000, Duration::from_secs(60));
    let _new = upgrade(&mut e);
    let at_exit = load.total();
    load.wait_total(at_exit + 1_000, Duration::from_secs(120));
    let (udp, tcp, failed, errors) = load.finish();
    eprintln!(
        "measured: secondary zone across an upgrade: {udp} udp ok, {tcp} tcp ok, {failed} lost or failed ({} after the old process exited)",
        udp + tcp + failed - at_exit
    );
    let log = e.log();
    assert!(!log.contains("although not every zone"), "{log}");
    assert!(udp + tcp + failed >= at_exit + 1_000);
    assert_eq!(failed, 0, "lost, failed or refused queries: {errors:?}");
}
