//! The binary upgrade as systemd sees it (`Type=notify`, `NotifyAccess=main`):
//! the notification socket records who sent each message (SO_PASSCRED, as
//! systemd does), so the test checks what systemd would accept.
//!
//! Without `MAINPID=` from the old process, systemd would see its main
//! process exit at the end of an upgrade, consider the service stopped, and
//! kill the new process with the rest of the cgroup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::IoSliceMut;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;

/// The notification socket: (sender PID, message).
struct Notify(UnixDatagram);

impl Notify {
    fn recv(&self) -> (i32, String) {
        let mut buf = [0u8; 512];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(self.0.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .expect("a notification within the timeout");
        let pid = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cr) => Some(cr.pid()),
                _ => None,
            })
            .expect("sender credentials");
        let n = msg.bytes;
        (pid, String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Children of every thread of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[test]
fn upgrade_under_systemd_moves_the_main_pid_before_the_old_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    setsockopt(&sock, sockopt::PassCred, &true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let notify = Notify(sock);
    // a backend that health checks can connect to (the kernel accepts)
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[pop]\nname = \"sd\"\n[limits]\nshutdown_grace = \"1s\"\n[[service]]\nname = \"web\"\n\
             listen = [\"127.0.0.1:{port}\"]\n[service.health]\nkind = \"tcp\"\nsend_proxy = false\n\
             interval = \"200ms\"\ntimeout = \"100ms\"\n[[service.backend]]\nname = \"b\"\naddress = \"{}\"\n",
            backend.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut old = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        // the new process inherits these: never the test's own pipes
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let old_pid = old.id() as i32;
    let mut new_pid = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (from, m) = notify.recv();
        assert_eq!((from, m.starts_with("READY=1")), (old_pid, true), "{m}");

        kill(Pid::from_raw(old_pid), Signal::SIGUSR2).unwrap();
        // the new process's PID, from the kernel (so it is ended whatever
        // the notifications say)
        let t = Instant::now();
        while new_pid.is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "no new process started");
            new_pid = children(old_pid).first().copied();
            std::thread::sleep(Duration::from_millis(10));
        }
        // first: the old (main) process names the new one as main
        let (from, m) = notify.recv();
        assert_eq!(from, old_pid, "MAINPID must come from the current main process: {m}");
        let pid: i32 = m
            .strip_prefix("MAINPID=")
            .and_then(|r| r.lines().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected MAINPID=, got {m:?}"));
        assert_eq!(Some(pid), new_pid, "MAINPID names the new process");
        assert!(!m.contains("STOPPING=1"), "an upgrade is not a stop: {m}");
        // then the new process, now main, says it is ready
        let (from, m) = notify.recv();
        assert_eq!((from, m.starts_with("READY=1")), (pid, true), "{m}");
        // the old one exits; the new one keeps serving and answering systemd
        let t = Instant::now();
        while old.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "old process still running");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
        let (from, m) = notify.recv();
        assert_eq!((from, m.starts_with("RELOADING=1")), (pid, true), "{m}");
        assert_eq!(notify.recv(), (pid, "READY=1".to_string()));
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        let (from, m) = notify.recv();
        assert_eq!((from, m.starts_with("STOPPING=1")), (pid, true), "{m}");
        // it exits by itself (not our child: poll its PID)
        let t = Instant::now();
        while kill(Pid::from_raw(pid), None).is_ok() {
            assert!(t.elapsed() < Duration::from_secs(10), "new process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }));
    // end what we started, by PID, whatever happened
    let _ = old.kill();
    let _ = old.wait();
    if let Some(p) = new_pid {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
