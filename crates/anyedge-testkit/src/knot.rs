//! A real `knotd` (Debian package `knot`; CI installs it) in the foreground
//! on 127.0.0.1, run as the test's own user with everything under a
//! temporary directory (configuration, storage, journal, control socket,
//! log), ended by the PID we started.
//!
//! ```ignore
//! let knot = Knot::start(&KnotConf::new().nsid("pop1").primary("example.com.", &file, &[]));
//! knot.knotc(&["zone-reload", "example.com."]);
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyedge_dnscompare::QueryOptions;
use domain::base::iana::Rtype;

use crate::wait_until;

/// How long `knotd` may take to answer after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A Knot program (`knotd`, `knotc`), or a panic telling how to get it.
pub fn bin(name: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: these tests run against Knot DNS; install it (apt-get install knot; .ci/run does)");
}

struct Zone {
    apex: String,
    /// None: a secondary (its `master:` among `extra`).
    file: Option<PathBuf>,
    extra: Vec<String>,
}

/// What `knot.conf` says.
#[derive(Default)]
pub struct KnotConf {
    port: Option<u16>,
    nsid: Option<String>,
    tsig: Option<(String, String)>,
    sections: String,
    journal: bool,
    zones: Vec<Zone>,
}

impl KnotConf {
    pub fn new() -> KnotConf {
        KnotConf::default()
    }

    /// Listen on this port (default: a free one).
    pub fn port(mut self, port: u16) -> KnotConf {
        self.port = Some(port);
        self
    }

    pub fn nsid(mut self, nsid: &str) -> KnotConf {
        self.nsid = Some(nsid.to_string());
        self
    }

    /// An hmac-sha256 TSIG key (`secret`: base64).
    pub fn tsig_key(mut self, id: &str, secret: &str) -> KnotConf {
        self.tsig = Some((id.to_string(), secret.to_string()));
        self
    }

    /// Top-level YAML (`remote:`, `acl:` ...) placed before the zones.
    pub fn sections(mut self, yaml: &str) -> KnotConf {
        self.sections.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.sections.push('\n');
        }
        self
    }

    /// Keep a journal of changes (`zonefile-load: difference`): Knot then
    /// serves IXFR and computes the difference on a zone file reload.
    /// Default: each load replaces the zone whole, no journal.
    pub fn journal(mut self, on: bool) -> KnotConf {
        self.journal = on;
        self
    }

    /// A zone loaded from `file`; `extra`: more of its settings
    /// (`"acl: xfr"`, `"notify: anyedge"`).
    pub fn primary(mut self, apex: &str, file: &Path, extra: &[&str]) -> KnotConf {
        self.zones.push(Zone {
            apex: apex.to_string(),
            file: Some(file.to_path_buf()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// A zone transferred from elsewhere; `extra` names its `master:` and
    /// ACLs.
    pub fn secondary(mut self, apex: &str, extra: &[&str]) -> KnotConf {
        self.zones.push(Zone {
            apex: apex.to_string(),
            file: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// The configuration text for a server in `dir` on 127.0.0.1@`port`.
    pub fn render(&self, dir: &Path, port: u16) -> String {
        let d = dir.display();
        let mut c = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    \
             tcp-workers: 1\n    background-workers: 1\n"
        );
        if let Some(nsid) = &self.nsid {
            let _ = writeln!(c, "    nsid: {nsid}");
        }
        let _ = write!(
            c,
            "control:\n    listen: \"{d}/knot.sock\"\nlog:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}\"\n"
        );
        if let Some((id, secret)) = &self.tsig {
            let _ = write!(
                c,
                "key:\n  - id: {id}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
            );
        }
        c.push_str(&self.sections);
        let (load, journal) = if self.journal {
            ("difference", "changes")
        } else {
            ("whole", "none")
        };
        let _ = write!(
            c,
            "template:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\n    \
             zonefile-sync: -1\n    zonefile-load: {load}\n    journal-content: {journal}\nzone:\n"
        );
        for z in &self.zones {
            let _ = writeln!(c, "  - domain: {}", z.apex);
            if let Some(f) = &z.file {
                let _ = writeln!(c, "    file: \"{}\"", f.display());
            }
            for e in &z.extra {
                let _ = writeln!(c, "    {e}");
            }
        }
        c
    }
}

/// A running `knotd`.
pub struct Knot {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Knot {
    /// Starts `knotd` and waits until it answers: every primary zone's SOA
    /// with authority, and some answer at all for secondaries (they may
    /// still be transferring).
    pub fn start(conf: &KnotConf) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let port = conf.port.unwrap_or_else(crate::free_port);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let path = dir.path().join("knot.conf");
        std::fs::write(&path, conf.render(dir.path(), port)).unwrap();
        let child = crate::spawn_logged(
            &bin("knotd"),
            &["-c".as_ref(), path.as_ref()],
            &dir.path().join("knot.log"),
        );
        let mut k = Knot {
            dir,
            addr,
            child: Some(child),
        };
        for z in &conf.zones {
            let apex = z.apex.as_str();
            let authoritative = z.file.is_some();
            wait_until(&format!("knotd answers for {apex}"), START_TIMEOUT, || {
                if let Some(st) = k.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("knotd exited ({st}):\n{}", k.log());
                }
                match k.soa_rcode(apex) {
                    Some((aa, rcode)) if !authoritative || (aa && rcode == 0) => Ok(()),
                    other => Err(other),
                }
            });
        }
        k
    }

    /// The server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A file in the server's directory.
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// What knotd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("knot.log")).unwrap_or_default()
    }

    /// Runs `knotc ARGS` on this server's control socket and returns its
    /// output; panics if it fails.
    pub fn knotc(&self, args: &[&str]) -> String {
        let out = Command::new(bin("knotc"))
            .arg("-s")
            .arg(self.path("knot.sock"))
            .args(args)
            .output()
            .expect("run knotc");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "knotc {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// (AA, RCODE) of the answer to `apex SOA` over UDP, or None without one
    /// within 200 ms.
    pub fn soa_rcode(&self, apex: &str) -> Option<(bool, u8)> {
        let id = 0x7e57u16;
        let q = crate::dns::query(id, apex, Rtype::SOA, &QueryOptions::default());
        let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        sock.send_to(&q, self.addr).ok()?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        (n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0).then(|| (buf[2] & 0x04 != 0, buf[3] & 0x0f))
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL to the PID we started, then reap it
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- knotd log ----\n{}", self.log());
        }
    }
}
