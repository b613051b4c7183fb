//! A validating Unbound (Debian package `unbound`; CI installs it) on
//! 127.0.0.1 in the foreground: our own configuration and process, not the
//! packaged service, everything under a temporary directory, ended by the
//! PID we started. It trusts the given DNSKEYs and asks one authority
//! (stub zones) for the given zones: what it says of an answer (AD,
//! SERVFAIL) is an independent DNSSEC validation.
//!
//! ```ignore
//! let u = Unbound::start(anyedge_addr, &anchors, &["example.com."], None);
//! assert_eq!(u.validate("www.example.com.", Rtype::A), Some((0, true)));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use domain::base::iana::Rtype;

use crate::{dns, wait_until};

/// How long `unbound` may take to answer after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `unbound` program, or a panic telling how to get it.
pub fn bin() -> PathBuf {
    for p in ["/usr/sbin/unbound", "/usr/bin/unbound"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("unbound not found: apt-get install unbound (.ci/run does)");
}

/// A running validating `unbound`.
pub struct Unbound {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Child,
}

impl Unbound {
    /// Starts `unbound` trusting `anchors` (DNSKEY lines, e.g. `example.com.
    /// 3600 IN DNSKEY 257 3 13 ...`) and asking `authority` for each of
    /// `apexes` (no cache: every question reaches the authority), and waits
    /// until it answers for the first apex. `date`: `val-override-date`
    /// (`YYYYMMDDHHMMSS`, see [`dns::utc_stamp`]): validate as at that time,
    /// e.g. after the signatures expired.
    pub fn start(authority: SocketAddr, anchors: &[String], apexes: &[&str], date: Option<&str>) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  access-control: 127.0.0.0/8 allow\n  \
             username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  \
             use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  \
             so-reuseport: no\n  do-not-query-localhost: no\n  module-config: \"validator iterator\"\n  \
             local-zone: \"test.\" nodefault\n  domain-insecure: \"example.net.\"\n  qname-minimisation: no\n  \
             cache-max-ttl: 0\n  cache-max-negative-ttl: 0\n",
            d = dir.path().display()
        );
        if let Some(d) = date {
            conf.push_str(&format!("  val-override-date: \"{d}\"\n"));
        }
        for a in anchors {
            conf.push_str(&format!("  trust-anchor: \"{a}\"\n"));
        }
        for apex in apexes {
            conf.push_str(&format!(
                "stub-zone:\n  name: \"{apex}\"\n  stub-addr: {}@{}\n",
                authority.ip(),
                authority.port()
            ));
        }
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = crate::spawn_logged(
            &bin(),
            &["-d".as_ref(), "-c".as_ref(), path.as_ref()],
            &dir.path().join("unbound.log"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut u = Unbound { dir, addr, child };
        let first = apexes.first().copied().unwrap_or(".");
        wait_until("unbound answers", START_TIMEOUT, || {
            if let Ok(Some(st)) = u.child.try_wait() {
                panic!("unbound exited ({st}):\n{}", u.log());
            }
            match u.validate(first, Rtype::SOA) {
                Some((0 | 2, _)) => Ok(()),
                other => Err(other),
            }
        });
        u
    }

    /// (RCODE, AD) of the answer to `name` `qtype` asked with RD and DO;
    /// None without an answer.
    pub fn validate(&self, name: &str, qtype: impl Into<Rtype>) -> Option<(u8, bool)> {
        let a = dns::exchange(
            self.addr,
            &dns::query(9, name, qtype.into(), &dns::dnssec_ok(true)),
            false,
        )
        .ok()?;
        Some((a[3] & 0x0f, a[3] & 0x20 != 0))
    }

    /// What unbound logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // SIGKILL to the PID we started, then reap it
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
