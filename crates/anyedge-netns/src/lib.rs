//! Test hosts in network namespaces joined by veth pairs, made and removed
//! by the tests themselves (root needed). Addresses come from 198.18.0.0/15
//! and 2001:db8::/32 only, inside the namespaces.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
    /// Deleted on drop (false for namespaces someone else manages).
    owned: bool,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace with `lo` up; the name is unique per process and call.
    pub fn new(tag: &str) -> Netns {
        let name = format!("ae{}-{}-{tag}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let n = Netns { name, owned: true };
        n.ip(&["link", "set", "lo", "up"]);
        n
    }

    /// A handle on an existing namespace that is not deleted on drop.
    pub fn borrow(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            owned: false,
        }
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it makes
    /// live there. Returns `f`'s result.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    }

    /// Like [`Netns::enter`] without waiting.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up, with the given
/// addresses (CIDR strings; IPv6 added without duplicate address detection).
pub fn link(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, ifc, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["-6", "addr", "add", addr, "dev", ifc, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifc]);
            }
        }
        ns.ip(&["link", "set", ifc, "up"]);
    }
}
