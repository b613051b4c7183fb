//! Network namespaces joined by veth pairs, created and deleted by the tests
//! (root needed). Addresses: 198.18.0.0/15 and 2001:db8::/32, only inside
//! the namespaces.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip (apt-get install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A fresh namespace with `lo` up, named uniquely per process and call.
    pub fn new(tag: &str) -> Result<Netns, String> {
        let name = format!(
            "aefp{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let n = Netns { name };
        n.try_ip(&["link", "set", "lo", "up"])?;
        Ok(n)
    }

    /// `ip -n NAME ...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        if let Err(e) = self.try_ip(args) {
            panic!("{e}");
        }
    }

    pub fn try_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Output of `ip -n NAME ...`.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that joined this namespace (sockets it creates
    /// and interfaces it names are this namespace's); returns `f`'s result.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns")
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
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up, with the given
/// addresses (IPv6 without duplicate address detection).
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
