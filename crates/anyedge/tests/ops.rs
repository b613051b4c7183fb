//! Operating the daemon: systemd readiness notifications, and reloads under
//! a running client loop losing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]
balance = "round_robin"
[service.health]
kind = "tcp"
interval = "200ms"
timeout = "100ms"
rise = 1
[[service.backend]]
name = "a"
address = "{a}"
[[service.backend]]
name = "b"
address = "{b}"
weight = {weight_b}
"#
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
    std::thread::sleep(Duration::from_millis(300));
    e.signal(nix::sys::signal::Signal::SIGUSR2);
    e.wait_log("upgrade: new process ready", 1, Duration::from_secs(10));
    // the old process drains and exits; the new one keeps serving
    let old = e
        .wait_exit(Duration::from_secs(10))
        .expect("old process exits after the hand-over");
    assert!(old.success(), "{old:?}");
    let log = e.log();
    let new_pid: i32 = log
        .split("new_pid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("new PID logged");
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
