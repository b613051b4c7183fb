//! Network namespaces joined by veth pairs (root needed), for the namespace
//! lab (`anyedge lab`) and the tests: create, address, run a command or a
//! closure inside, delete on drop. Everything goes through `ip` (iproute2);
//! a closure runs on a thread that joined the namespace with `setns`.
//!
//! Addresses the tests and the lab use come from 198.18.0.0/15,
//! 192.0.2.0/24 and 2001:db8::/32 only, inside the namespaces.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// What failed: the command line and its error output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

pub type Result<T> = std::result::Result<T, Error>;

/// A network namespace, `/var/run/netns/NAME`.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Deleted on drop (false for namespaces someone else manages).
    owned: bool,
}

/// Runs `program args`; its standard output, or an error naming the command
/// and its standard error.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error(format!("running {program} (apt-get install iproute2): {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// A fresh namespace with `lo` up, deleted on drop; the name
    /// (`ae<pid>-<n>-<tag>`) is unique per process and call.
    pub fn unique(tag: &str) -> Result<Netns> {
        let name = format!("ae{}-{}-{tag}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        Netns::create(&name)
    }

    /// A new namespace called `name` with `lo` up, deleted on drop (see
    /// [`Netns::persist`]).
    pub fn create(name: &str) -> Result<Netns> {
        run("ip", &["netns", "add", name])?;
        let n = Netns {
            name: name.to_string(),
            owned: true,
        };
        n.ip(&["link", "set", "lo", "up"])?;
        Ok(n)
    }

    /// A handle on an existing namespace, not deleted on drop.
    pub fn open(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            owned: false,
        }
    }

    /// Keeps the namespace after this handle is dropped.
    pub fn persist(mut self) -> Netns {
        self.owned = false;
        self
    }

    /// Deletes the namespace now (processes still inside keep it alive
    /// until they end).
    pub fn delete(mut self) -> Result<()> {
        self.owned = false;
        run("ip", &["netns", "del", &self.name]).map(drop)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        self.ip_output(args).map(drop)
    }

    /// The output of `ip -n NAME ARGS...`.
    pub fn ip_output(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Adds an address (CIDR) to `dev`; IPv6 without duplicate address
    /// detection, so it is usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])
        }
    }

    /// `sysctl -qw KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key_value: &str) -> Result<()> {
        run("ip", &["netns", "exec", &self.name, "sysctl", "-qw", key_value]).map(drop)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`;
    /// its PID is that of the program, which `ip` execs).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that joined this namespace (sockets it creates
    /// and interfaces it names are this namespace's) and returns its result.
    ///
    /// # Panics
    /// If the namespace cannot be joined, and with `f`'s panic if it panics.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`Netns::enter`] without waiting: the thread panics if it cannot
    /// join the namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            if let Err(e) = join(&path) {
                panic!("joining network namespace {path}: {e}");
            }
            f()
        })
    }
}

/// Moves the calling thread into the namespace at `path`.
fn join(path: &str) -> std::result::Result<(), String> {
    let fd = std::fs::File::open(path).map_err(|e| e.to_string())?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = run("ip", &["netns", "del", &self.name]);
        }
    }
}

/// A veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up, with the given
/// addresses (CIDR; IPv6 without duplicate address detection).
pub fn link(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    for (ns, ifc, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            ns.add_addr(ifc, addr)?;
        }
        ns.ip(&["link", "set", ifc, "up"])?;
    }
    Ok(())
}
