//! The authoritative DNS server: sockets and threads around the sans-IO
//! core in `anyedge-dns`.
//!
//! - UDP: per worker and address, one `SO_REUSEPORT` socket served by a
//!   plain thread with `recvmmsg`/`sendmmsg` batches (no async machinery
//!   per datagram).
//! - TCP: per worker runtime, one `SO_REUSEPORT` listener; connections
//!   carry pipelined queries, with bounded output, per-query deadlines, an
//!   idle timeout, per-source caps and a connection table that evicts the
//!   idlest connection when full (see `tcp.rs`).
//! - Zones and answering settings are `ArcSwap` snapshots: a reload parses
//!   everything first, then swaps; in-flight queries finish on the old one.
//!
//! Here: the server's state and its stop and drain. `sockets.rs` (binding,
//! inheriting, holding and serving the sockets), `udp_thread.rs` (the UDP
//! answering loop, RRL), `zones.rs` (loading, reloading, saved copies,
//! per-zone status), `counters.rs` (query counters and their sum),
//! `xfr/` (transfers and NOTIFY).

mod counters;
mod dnstap;
mod sigexpiry;
mod sockets;
mod tcp;
mod udp;
mod udp_thread;
mod xfr;
mod zones;

pub use counters::{Counters, StatsSnapshot, KINDS, QTYPES};
pub use dnstap::DnstapStats;
pub use sockets::{Inherited, SocketFds};
pub use zones::{check_zones, load_zones, Fresh, LoadedBy, ZoneStatus};
pub(crate) use zones::{save_zone, touch_saved};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyedge_dns::answer::Settings;
use anyedge_dns::zone::ZoneSet;
use anyedge_guard::rrl::Rrl;
use arc_swap::ArcSwap;

use crate::config::DnsConfig;
use counters::count_qtype;
use sockets::Held;
use zones::Origin;

pub struct Dns {
    pub zones: ArcSwap<ZoneSet>,
    settings: ArcSwap<Settings>,
    /// Response rate limiting; its buckets survive reloads that keep the
    /// same `[dns.rrl]`.
    rrl: ArcSwap<Option<Arc<Rrl>>>,
    cfg: ArcSwap<DnsConfig>,
    epoch: std::time::Instant,
    counters: Mutex<Vec<Arc<Counters>>>,
    /// Last load error per zone name.
    errors: Mutex<std::collections::HashMap<String, String>>,
    /// Where each zone version served came from, by `Arc` address (the
    /// `Weak` confirms it is the same version).
    origins: Mutex<std::collections::HashMap<usize, Origin>>,
    /// Secondaries: last successful refresh check (Unix seconds), by name.
    refreshed: Mutex<std::collections::HashMap<String, u64>>,
    /// Failed loads per zone name: file (reload, reload-zone) or secondary
    /// refresh/transfer.
    load_failures: Mutex<std::collections::HashMap<String, u64>>,
    /// Secondaries: when the version served expires unless refreshed.
    expires: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    stop: AtomicBool,
    tcp_open: AtomicU32,
    /// Open TCP connections by source, for the caps and eviction.
    tcp: Arc<tcp::Table>,
    /// Notified when `tcp_open` drops to 0 (drain).
    tcp_idle: tokio::sync::Notify,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    tcp_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// A duplicate of every listening socket, for the upgrade hand-over
    /// (closed by [`Dns::stop`]).
    handover_udp: Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>,
    handover_tcp: Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>,
    /// Bound but not served yet (see [`Dns::open`]).
    held: Mutex<Option<Held>>,
    /// Zone transfers in and out, NOTIFY.
    xfr: xfr::Xfr,
    /// Query and response logging (`[dns.dnstap]`), replaced on reload;
    /// its counters survive reloads.
    dnstap: ArcSwap<Option<Arc<dnstap::Tap>>>,
    dnstap_counters: Arc<dnstap::TapCounters>,
}

fn settings_of(cfg: &DnsConfig, pop: &str) -> Settings {
    Settings {
        nsid: Some(
            cfg.nsid
                .clone()
                .unwrap_or_else(|| pop.to_string())
                .into_bytes()
                .into_boxed_slice(),
        )
        .filter(|n| !n.is_empty()),
        udp_max: cfg.udp_payload,
        cookies: cfg.cookies.clone(),
    }
}

fn rrl_of(cfg: &DnsConfig) -> Option<Arc<Rrl>> {
    cfg.rrl.as_ref().map(|r| Arc::new(Rrl::new(r)))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// [`unix_secs`] as DNS cookies and answers take it (32 bits).
fn unix_now() -> u32 {
    unix_secs() as u32
}

/// Wire form of a presentation name (already validated by the config).
pub fn domain_wire(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 1);
    for l in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v.to_ascii_lowercase()
}

impl Dns {
    /// Starts, replaces or stops the dnstap output when `[dns.dnstap]`
    /// changed (start and reload). A failure to start the writer thread is
    /// logged; answering goes on without it.
    fn apply_dnstap(&self, cfg: &DnsConfig, pop: &str) {
        let cur = self.dnstap.load_full();
        if cur.as_ref().as_ref().map(|t| t.config()) == cfg.dnstap.as_ref() {
            return;
        }
        let next = cfg
            .dnstap
            .as_ref()
            .and_then(|c| match dnstap::Tap::start(c, pop, self.dnstap_counters.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "dnstap: cannot start the writer thread: not logging");
                    None
                }
            });
        self.dnstap.store(Arc::new(next));
        if let Some(old) = cur.as_ref() {
            old.stop(false); // writes what it holds, STOP/FINISH, on its own thread
        }
    }

    /// dnstap's state for the status and metrics.
    pub fn dnstap_stats(&self) -> DnstapStats {
        let c = &self.dnstap_counters;
        DnstapStats {
            enabled: self.dnstap.load().is_some(),
            connected: c.connected.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops serving: UDP threads answer what they have read and exit
    /// within their receive timeout (`sockets::UDP_WAKEUP`), TCP accept
    /// loops end; then this process's copies of the sockets are closed (after an
    /// upgrade the new process still has them, with everything queued).
    /// Open TCP connections carry on: see [`Dns::drain`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.xfr.stop();
        if let Ok(mut h) = self.held.lock() {
            h.take();
        }
        if let Ok(mut t) = self.tcp_tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for h in threads {
            let _ = h.join();
        }
        // after the UDP threads: what they logged is written, then STOP
        if let Some(t) = self.dnstap.swap(Arc::new(None)).as_ref() {
            t.stop(true);
        }
        for v in [&self.handover_udp, &self.handover_tcp] {
            if let Ok(mut v) = v.lock() {
                v.clear();
            }
        }
    }

    /// DNS TCP connections open now.
    pub fn tcp_connections(&self) -> u64 {
        u64::from(self.tcp_open.load(Ordering::Relaxed))
    }

    /// Waits until no DNS TCP connection is open or `deadline` passes;
    /// returns the number still open.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> u64 {
        loop {
            let idle = self.tcp_idle.notified();
            let n = self.tcp_open.load(Ordering::Acquire);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return u64::from(self.tcp_open.load(Ordering::Acquire));
            }
        }
    }

    fn tcp_closed(&self) {
        if self.tcp_open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tcp_idle.notify_waiters();
        }
    }
}
