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

mod tcp;
mod udp;
mod xfr;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyedge_dns::answer::{self, Context, Kind, Settings};
use anyedge_dns::zone::{self, Zone, ZoneSet};
use anyedge_guard::rrl::{ResponseClass, Rrl, RrlVerdict};
use arc_swap::ArcSwap;
use tracing::{debug, error, info, warn};

use crate::config::{DnsConfig, ZoneSource};

/// Counters, one block per thread (no shared cache line on the hot path),
/// summed when read.
#[derive(Default)]
#[repr(align(128))]
pub struct Counters {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// by RCODE 0..=15 (16 = BADVERS and other extended)
    pub rcode: [AtomicU64; 17],
    pub kind: [AtomicU64; 6],
    /// Queries not answered (not a query, or RRL drop).
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub rrl_dropped: AtomicU64,
    pub rrl_slipped: AtomicU64,
    pub rrl_would_limit: AtomicU64,
    pub cookies_valid: AtomicU64,
    pub tcp_refused_cap: AtomicU64,
    /// TCP connections refused by the per-address or per-prefix cap.
    pub tcp_refused_source: AtomicU64,
    /// TCP connections closed to make room in a full table.
    pub tcp_evicted: AtomicU64,
    /// TCP connections closed: a query not received whole in time.
    pub tcp_query_timeout: AtomicU64,
    /// TCP connections closed: a write of answers made no progress in time.
    pub tcp_write_stalled: AtomicU64,
    /// Queries by QTYPE, indexed like [`QTYPES`].
    pub qtype: [AtomicU64; QTYPES.len()],
}

/// Query types counted by name; everything else is `OTHER` (the last).
pub const QTYPES: [(&str, u16); 19] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("DNSKEY", 48),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("CAA", 257),
    ("ANY", 255),
    ("AXFR", 252),
    ("IXFR", 251),
    ("OTHER", 0),
];

/// Index into [`QTYPES`] (a match: no search, no allocation).
fn qtype_index(t: u16) -> usize {
    match t {
        1 => 0,
        2 => 1,
        5 => 2,
        6 => 3,
        12 => 4,
        15 => 5,
        16 => 6,
        28 => 7,
        33 => 8,
        35 => 9,
        43 => 10,
        48 => 11,
        64 => 12,
        65 => 13,
        257 => 14,
        255 => 15,
        252 => 16,
        251 => 17,
        _ => 18,
    }
}

/// The QTYPE of a query's (first) question: None for responses, messages
/// without a question and truncated names. Reads the packet in place.
fn question_type(p: &[u8]) -> Option<u16> {
    if p.len() < 12 || p[2] & 0x80 != 0 || u16::from_be_bytes([p[4], p[5]]) == 0 {
        return None;
    }
    let mut i = 12usize;
    loop {
        let len = *p.get(i)?;
        match len {
            0 => {
                i += 1;
                break;
            }
            // a compression pointer ends the name (not valid here, but the
            // type still follows it)
            l if l & 0xc0 == 0xc0 => {
                i += 2;
                break;
            }
            l if l & 0xc0 != 0 => return None,
            l => i += 1 + usize::from(l),
        }
        if i > 12 + 255 {
            return None;
        }
    }
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

pub const KINDS: [&str; 6] = ["positive", "wildcard", "nxdomain", "nodata", "referral", "error"];

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Positive => 0,
        Kind::Wildcard => 1,
        Kind::NxDomain => 2,
        Kind::NoData => 3,
        Kind::Referral => 4,
        Kind::Error => 5,
    }
}

/// Summed view of all threads' counters.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    pub rcode: Vec<u64>,
    pub kind: Vec<u64>,
    pub dropped: u64,
    pub truncated: u64,
    pub rrl_dropped: u64,
    pub rrl_slipped: u64,
    pub rrl_would_limit: u64,
    pub cookies_valid: u64,
    pub tcp_refused_cap: u64,
    pub tcp_refused_source: u64,
    pub tcp_evicted: u64,
    pub tcp_query_timeout: u64,
    pub tcp_write_stalled: u64,
    /// Answer bytes waiting to be written, all TCP connections (a gauge).
    pub tcp_pending_bytes: u64,
    pub axfr_in: u64,
    pub ixfr_in: u64,
    pub transfers_served: u64,
    pub transfers_refused: u64,
    /// Queries by QTYPE name (see [`QTYPES`]).
    pub query_types: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ZoneStatus {
    pub name: String,
    pub serial: u32,
    pub records: usize,
    pub source: String,
    /// Last load/transfer error (the previous version keeps serving).
    pub error: Option<String>,
    /// When the version served now was loaded (Unix seconds) and how:
    /// "file", "axfr", "ixfr" or "saved copy".
    pub loaded_unix: Option<u64>,
    pub loaded_by: Option<&'static str>,
    /// Secondaries: when a primary last confirmed (or sent) the version
    /// served (Unix seconds).
    pub refreshed_unix: Option<u64>,
}

/// How a zone version came to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedBy {
    File,
    Axfr,
    Ixfr,
    SavedCopy,
}

impl LoadedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedBy::File => "file",
            LoadedBy::Axfr => "axfr",
            LoadedBy::Ixfr => "ixfr",
            LoadedBy::SavedCopy => "saved copy",
        }
    }
}

/// A zone version just loaded, and how.
pub type Fresh = (Arc<Zone>, LoadedBy);

/// Sockets by address, as raw fds (for the upgrade hand-over).
pub type SocketFds = Vec<(SocketAddr, Vec<RawFd>)>;

/// Where one zone version (one `Arc<Zone>`) came from.
struct Origin {
    zone: std::sync::Weak<Zone>,
    unix: u64,
    by: LoadedBy,
}

/// Sockets bound (or inherited) and not served yet.
struct Held {
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    tcp: Vec<(SocketAddr, std::net::TcpListener)>,
    rts: Vec<tokio::runtime::Handle>,
    workers: usize,
}

/// Sockets handed over by the previous process (binary upgrade), by
/// address: used instead of binding new ones.
#[derive(Default)]
pub struct Inherited {
    pub udp: std::collections::HashMap<SocketAddr, Vec<std::net::UdpSocket>>,
    pub tcp: std::collections::HashMap<SocketAddr, Vec<std::net::TcpListener>>,
}

impl Inherited {
    /// Sockets held, UDP and TCP.
    pub fn count(&self) -> usize {
        self.udp.values().map(Vec::len).sum::<usize>() + self.tcp.values().map(Vec::len).sum::<usize>()
    }
}

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

fn rrl_class(k: Kind, len: usize) -> ResponseClass {
    if len >= anyedge_guard::rrl::LARGE_RESPONSE {
        return ResponseClass::Large;
    }
    match k {
        Kind::Positive => ResponseClass::Positive,
        Kind::Wildcard => ResponseClass::Wildcard,
        Kind::NxDomain => ResponseClass::NxDomain,
        Kind::NoData => ResponseClass::NoData,
        Kind::Referral => ResponseClass::Referral,
        Kind::Error => ResponseClass::Error,
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Loads every file zone of `cfg`. With `old`, a zone that fails keeps its
/// previous version (and the error is returned); without, any failure is
/// fatal (start-up).
/// Also returns the versions it loaded anew, and how (for the status).
pub fn load_zones(cfg: &DnsConfig, old: Option<&ZoneSet>) -> (ZoneSet, Vec<(String, String)>, Vec<Fresh>) {
    let mut set = ZoneSet::new();
    let mut errors = Vec::new();
    let mut fresh = Vec::new();
    for z in &cfg.zones {
        let apex = domain_wire(&z.name);
        match &z.source {
            ZoneSource::File(path) => {
                let t = std::time::Instant::now();
                match zone::load_file(path, &z.name) {
                    Ok(loaded) => {
                        for w in loaded.warnings.iter().take(20) {
                            warn!(zone = %z.name, "{w}");
                        }
                        info!(zone = %z.name, serial = loaded.serial, records = loaded.records, took = ?t.elapsed(), "zone loaded");
                        let loaded = Arc::new(loaded);
                        fresh.push((loaded.clone(), LoadedBy::File));
                        set.insert(loaded);
                    }
                    Err(e) => {
                        error!(zone = %z.name, error = %e, "zone failed to load");
                        errors.push((z.name.clone(), e.to_string()));
                        if let Some(prev) = old.and_then(|o| o.get(&apex)) {
                            warn!(zone = %z.name, serial = prev.serial, "keeping the previous version of the zone");
                            set.insert(prev.clone());
                        }
                    }
                }
            }
            ZoneSource::Secondary { .. } => {
                // transferred zones carry over; the transfer task refreshes them
                if let Some(prev) = old.and_then(|o| o.get(&apex)) {
                    set.insert(prev.clone());
                } else if let Some(saved) = cfg.state_dir.as_deref().and_then(|d| load_saved(d, &z.name, &apex)) {
                    let saved = Arc::new(saved);
                    fresh.push((saved.clone(), LoadedBy::SavedCopy));
                    set.insert(saved);
                }
            }
        }
    }
    (set, errors, fresh)
}

fn saved_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{}zone", name.trim_end_matches('.').to_string() + "."))
}

/// A secondary zone saved by [`save_zone`], unless it is older than its SOA
/// expire (then it must not be served: the primary may have changed it).
fn load_saved(dir: &std::path::Path, name: &str, apex: &[u8]) -> Option<Zone> {
    let path = saved_path(dir, name);
    let bytes = std::fs::read(&path).ok()?;
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    match zone::load_dump(&bytes, apex) {
        Ok(z) => {
            let expire = soa_expire(&z);
            if age > expire {
                warn!(zone = %name, age = ?age, ?expire, "saved copy is older than the SOA expire; not served until a transfer succeeds");
                return None;
            }
            info!(zone = %name, serial = z.serial, records = z.records, age = ?age, "secondary zone loaded from its saved copy");
            Some(z)
        }
        Err(e) => {
            warn!(zone = %name, path = %path.display(), error = %e, "saved copy unreadable; waiting for a transfer");
            None
        }
    }
}

/// The SOA expire as the refresh task applies it (one definition).
fn soa_expire(z: &Zone) -> Duration {
    xfr::soa_timers(z).map_or(Duration::from_secs(7 * 86400), |t| t.expire)
}

/// Saves a transferred zone (write a temporary file, then rename); called
/// after each successful transfer, and `touch`es it after each successful
/// refresh check so its age is the time since the primary last confirmed it.
pub(crate) fn save_zone(dir: &std::path::Path, name: &str, z: &Zone) {
    let path = saved_path(dir, name);
    let tmp = path.with_extension("zone.tmp");
    let r = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, z.dump()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        warn!(zone = %name, path = %path.display(), error = %e, "cannot save the transferred zone");
    }
}

/// Marks the saved copy as confirmed by the primary now.
pub(crate) fn touch_saved(dir: &std::path::Path, name: &str) {
    let path = saved_path(dir, name);
    if let Ok(f) = std::fs::File::options().write(true).open(&path) {
        let _ = f.set_modified(SystemTime::now());
    }
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

/// Checks that every file zone loads (for `anyedge check`).
pub fn check_zones(cfg: &DnsConfig) -> Result<usize, String> {
    let mut n = 0;
    for z in &cfg.zones {
        if let ZoneSource::File(p) = &z.source {
            let loaded = zone::load_file(p, &z.name).map_err(|e| e.to_string())?;
            n += loaded.records;
        }
    }
    Ok(n)
}

impl Dns {
    /// [`Dns::start_with`] binding every socket anew.
    #[cfg(test)]
    pub fn start(
        cfg: &DnsConfig,
        pop: &str,
        workers: usize,
        rts: &[tokio::runtime::Handle],
    ) -> anyhow::Result<Arc<Dns>> {
        Dns::start_with(cfg, pop, workers, rts, Inherited::default(), false)
    }

    /// Loads the zones (any failure is fatal here), binds every socket, and
    /// starts the UDP threads and the TCP accept loops. Sockets handed over
    /// by the previous process (binary upgrade) are used where they match
    /// `dns.listen` and the worker count; ones that do not match are closed,
    /// missing ones are bound (both logged). With `hold`, nothing is read
    /// from the sockets until [`Dns::open`] (an upgrading process opens once
    /// its zones are loaded: the old process answers meanwhile).
    pub fn start_with(
        cfg: &DnsConfig,
        pop: &str,
        workers: usize,
        rts: &[tokio::runtime::Handle],
        mut inherited: Inherited,
        hold: bool,
    ) -> anyhow::Result<Arc<Dns>> {
        let (zones, errors, fresh) = load_zones(cfg, None);
        if let Some((z, e)) = errors.first() {
            anyhow::bail!("zone {z}: {e}");
        }
        let dns = Arc::new(Dns {
            zones: ArcSwap::from_pointee(zones),
            settings: ArcSwap::from_pointee(settings_of(cfg, pop)),
            rrl: ArcSwap::from_pointee(rrl_of(cfg)),
            cfg: ArcSwap::from_pointee(cfg.clone()),
            epoch: std::time::Instant::now(),
            counters: Mutex::new(Vec::new()),
            errors: Mutex::new(Default::default()),
            origins: Mutex::new(Default::default()),
            refreshed: Mutex::new(Default::default()),
            stop: AtomicBool::new(false),
            tcp_open: AtomicU32::new(0),
            tcp: tcp::Table::new(),
            tcp_idle: tokio::sync::Notify::new(),
            threads: Mutex::new(Vec::new()),
            tcp_tasks: Mutex::new(Vec::new()),
            handover_udp: Mutex::new(Vec::new()),
            handover_tcp: Mutex::new(Vec::new()),
            held: Mutex::new(None),
            xfr: xfr::Xfr::new(),
        });
        for (z, by) in &fresh {
            dns.note_loaded(z, *by);
        }
        let workers = cfg.workers.map_or(workers, |w| w.get() as usize).max(1);
        let tcp_workers = workers.min(rts.len()).max(1);
        // bind everything first: a port in use fails the start cleanly
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let upgrading = !inherited.udp.is_empty() || !inherited.tcp.is_empty();
        for addr in &cfg.listen {
            let mut u = inherited.udp.remove(addr).unwrap_or_default();
            let mut t = inherited.tcp.remove(addr).unwrap_or_default();
            let (got_u, got_t) = (u.len(), t.len());
            if got_u > workers || got_t > tcp_workers {
                warn!(addr = %addr, udp = got_u.saturating_sub(workers), tcp = got_t.saturating_sub(tcp_workers),
                    "upgrade: dns.workers is smaller now: closing the extra inherited dns sockets (datagrams queued on them when the previous process stops are lost)");
                u.truncate(workers);
                t.truncate(tcp_workers);
            }
            if got_u + got_t > 0 {
                info!(addr = %addr, udp = u.len(), tcp = t.len(), "upgrade: dns serving on the inherited sockets");
                // what `bind_udp`/`bind_tcp` set (the socket may come from
                // an older version; the old process uses the same modes)
                for s in &u {
                    s.set_read_timeout(Some(UDP_WAKEUP))?;
                }
                for l in &t {
                    l.set_nonblocking(true)?;
                }
            }
            if upgrading && got_u + got_t == 0 {
                info!(addr = %addr, "upgrade: new dns address (nothing inherited): binding its sockets");
            }
            if u.len() < workers || t.len() < tcp_workers {
                if got_u + got_t > 0 {
                    info!(addr = %addr, udp = workers - u.len(), tcp = tcp_workers - t.len(), "upgrade: binding additional dns sockets (dns.workers is larger now)");
                }
                if got_u + got_t == 0 {
                    crate::net::warn_if_not_local("dns", *addr);
                    for udp in [true, false] {
                        crate::net::refuse_taken(*addr, udp)
                            .map_err(|e| anyhow::anyhow!("dns: cannot bind {addr}: {e}"))?;
                    }
                }
                while u.len() < workers {
                    u.push(bind_udp(*addr)?);
                }
                while t.len() < tcp_workers {
                    t.push(bind_tcp(*addr)?);
                }
            }
            udp.extend(u.into_iter().map(|s| (*addr, s)));
            tcp.extend(t.into_iter().map(|l| (*addr, l)));
        }
        for (addr, socks) in inherited.udp.drain() {
            warn!(addr = %addr, sockets = socks.len(), "upgrade: inherited dns udp socket(s) for an address no longer in dns.listen: closed");
        }
        for (addr, socks) in inherited.tcp.drain() {
            warn!(addr = %addr, sockets = socks.len(), "upgrade: inherited dns tcp listener(s) for an address no longer in dns.listen: closed");
        }
        {
            let mut hu = dns.handover_udp.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            for (addr, sock) in &udp {
                hu.push((*addr, std::os::fd::OwnedFd::from(sock.try_clone()?)));
            }
            let mut ht = dns.handover_tcp.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            for (addr, l) in &tcp {
                ht.push((*addr, std::os::fd::OwnedFd::from(l.try_clone()?)));
            }
        }
        let held = Held {
            udp,
            tcp,
            rts: rts.to_vec(),
            workers,
        };
        if hold {
            info!("dns: sockets ready; serving once every zone is loaded");
            *dns.held.lock().map_err(|_| anyhow::anyhow!("lock"))? = Some(held);
        } else {
            dns.serve(held)?;
        }
        xfr::start(&dns);
        Ok(dns)
    }

    /// Starts serving on the sockets held back by `start_with(.., hold)`
    /// (nothing to do if already serving).
    pub fn open(self: &Arc<Self>) -> anyhow::Result<()> {
        let held = self.held.lock().map_err(|_| anyhow::anyhow!("lock"))?.take();
        match held {
            Some(h) => self.serve(h),
            None => Ok(()),
        }
    }

    /// UDP threads and TCP accept loops on `h`'s sockets.
    fn serve(self: &Arc<Self>, h: Held) -> anyhow::Result<()> {
        for (i, (addr, sock)) in h.udp.into_iter().enumerate() {
            let d = self.clone();
            let c = self.new_counters();
            let t = std::thread::Builder::new()
                .name(format!("anyedge-dns{i}"))
                .spawn(move || d.serve_udp(sock, addr, &c))?;
            self.threads.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(t);
        }
        for (i, (addr, l)) in h.tcp.into_iter().enumerate() {
            let rt = h.rts.get(i % h.rts.len().max(1)).cloned();
            let d = self.clone();
            let c = self.new_counters();
            let task = match rt {
                Some(rt) => rt.spawn(async move { d.serve_tcp(l, addr, c).await }),
                None => tokio::spawn(async move { d.serve_tcp(l, addr, c).await }),
            };
            self.tcp_tasks.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(task);
        }
        let cfg = self.cfg.load();
        for a in &cfg.listen {
            info!(addr = %a, workers = h.workers, zones = cfg.zones.len(), "dns listening (udp+tcp)");
        }
        Ok(())
    }

    /// Every listening socket (UDP: one per worker and address; TCP: one
    /// per worker runtime and address), for the upgrade hand-over. The fds
    /// stay valid until [`Dns::stop`].
    pub fn socket_fds(&self) -> (SocketFds, SocketFds) {
        let group = |v: &Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>| {
            let mut out: SocketFds = Vec::new();
            if let Ok(v) = v.lock() {
                for (addr, fd) in v.iter() {
                    match out.iter_mut().find(|(a, _)| a == addr) {
                        Some((_, fds)) => fds.push(fd.as_raw_fd()),
                        None => out.push((*addr, vec![fd.as_raw_fd()])),
                    }
                }
            }
            out
        };
        (group(&self.handover_udp), group(&self.handover_tcp))
    }

    /// Records where a zone version came from (for the status).
    pub(crate) fn note_loaded(&self, z: &Arc<Zone>, by: LoadedBy) {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok(mut m) = self.origins.lock() {
            m.retain(|_, o| o.zone.strong_count() > 0);
            m.insert(
                Arc::as_ptr(z) as usize,
                Origin {
                    zone: Arc::downgrade(z),
                    unix,
                    by,
                },
            );
        }
    }

    /// Records a successful refresh check of a secondary zone.
    pub(crate) fn note_refreshed(&self, name: &str) {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok(mut m) = self.refreshed.lock() {
            m.insert(name.to_string(), unix);
        }
    }

    fn new_counters(&self) -> Arc<Counters> {
        let c = Arc::new(Counters::default());
        if let Ok(mut v) = self.counters.lock() {
            v.push(c.clone());
        }
        c
    }

    /// Applies a new `[dns]` section: settings swap at once; zones are all
    /// parsed first, and one that fails keeps serving its previous version.
    /// Listener changes need a restart (reported).
    pub fn reload(&self, cfg: &DnsConfig, pop: &str) -> Vec<(String, String)> {
        let old_cfg = self.cfg.load_full();
        if old_cfg.listen != cfg.listen || old_cfg.workers != cfg.workers {
            warn!("dns.listen/dns.workers changed: takes effect after a restart (or an upgrade, SIGUSR2)");
        }
        let old = self.zones.load_full();
        let (set, errors, fresh) = load_zones(cfg, Some(&old));
        for (z, by) in &fresh {
            self.note_loaded(z, *by);
        }
        self.zones.store(Arc::new(set));
        self.settings.store(Arc::new(settings_of(cfg, pop)));
        if old_cfg.rrl != cfg.rrl {
            self.rrl.store(Arc::new(rrl_of(cfg)));
        }
        self.cfg.store(Arc::new(cfg.clone()));
        if let Ok(mut e) = self.errors.lock() {
            // file zones were all just (re)loaded; a secondary's refresh
            // error stands until its next refresh
            let secondaries: std::collections::HashSet<&str> = cfg
                .zones
                .iter()
                .filter(|z| matches!(z.source, ZoneSource::Secondary { .. }))
                .map(|z| z.name.as_str())
                .collect();
            e.retain(|zone, _| secondaries.contains(zone.as_str()));
            e.extend(errors.iter().cloned());
        }
        xfr::reloaded(self, &old);
        errors
    }

    /// Reloads one zone from its file; the old version keeps serving if the
    /// new one fails.
    pub fn reload_zone(&self, name: &str) -> Result<u32, String> {
        let cfg = self.cfg.load_full();
        let canon = crate::config::canonical_name(name).ok_or_else(|| format!("{name:?} is not a domain name"))?;
        let zc = cfg
            .zones
            .iter()
            .find(|z| z.name == canon)
            .ok_or_else(|| format!("no zone {canon} configured"))?;
        let ZoneSource::File(path) = &zc.source else {
            return Err(format!("{canon} is a secondary zone: it is refreshed by transfer"));
        };
        let r = zone::load_file(path, &canon);
        match r {
            Ok(z) => {
                let serial = z.serial;
                let old = self.zones.load_full();
                let z = Arc::new(z);
                self.note_loaded(&z, LoadedBy::File);
                self.install(z);
                xfr::reloaded(self, &old);
                if let Ok(mut e) = self.errors.lock() {
                    e.remove(&canon);
                }
                info!(zone = %canon, serial, "zone reloaded");
                Ok(serial)
            }
            Err(e) => {
                error!(zone = %canon, error = %e, "zone reload failed; the previous version keeps serving");
                if let Ok(mut m) = self.errors.lock() {
                    m.insert(canon, e.to_string());
                }
                Err(e.to_string())
            }
        }
    }

    /// Swaps in a new version of one zone (reload or transfer).
    pub fn install(&self, z: Arc<Zone>) {
        self.zones.rcu(|cur| {
            let mut s = ZoneSet::clone(cur);
            s.insert(z.clone());
            s
        });
    }

    /// Ok if every configured zone is loaded (for anycast prefixes with
    /// `dns = true`: a PoP that cannot answer for a zone must not attract
    /// its queries); otherwise why not.
    pub fn serving_all(&self) -> Result<(), String> {
        if self.stop.load(Ordering::Relaxed) {
            return Err("DNS server stopped".into());
        }
        let cfg = self.cfg.load();
        let zones = self.zones.load();
        match cfg.zones.iter().find(|z| zones.get(&domain_wire(&z.name)).is_none()) {
            Some(z) => Err(format!(
                "DNS zone {} is not loaded (transfer pending, failed or expired)",
                z.name
            )),
            None => Ok(()),
        }
    }

    pub fn zone_status(&self) -> Vec<ZoneStatus> {
        let cfg = self.cfg.load_full();
        let zones = self.zones.load_full();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        let refreshed = self.refreshed.lock().map(|r| r.clone()).unwrap_or_default();
        let origins = self.origins.lock();
        cfg.zones
            .iter()
            .map(|z| {
                let loaded = zones.get(&domain_wire(&z.name));
                // the origin of exactly this version (not of an earlier one)
                let origin = loaded.and_then(|l| {
                    let o = origins.as_ref().ok()?.get(&(Arc::as_ptr(l) as usize))?;
                    let same = o.zone.upgrade().is_some_and(|oz| Arc::ptr_eq(&oz, l));
                    same.then_some((o.unix, o.by))
                });
                let secondary = matches!(z.source, ZoneSource::Secondary { .. });
                ZoneStatus {
                    name: z.name.clone(),
                    serial: loaded.map_or(0, |l| l.serial),
                    records: loaded.map_or(0, |l| l.records),
                    source: match &z.source {
                        ZoneSource::File(p) => p.display().to_string(),
                        ZoneSource::Secondary { primaries } => format!(
                            "secondary of {}",
                            primaries.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    },
                    error: errors
                        .get(&z.name)
                        .cloned()
                        .or_else(|| loaded.is_none().then(|| "not loaded".to_string())),
                    loaded_unix: origin.map(|o| o.0),
                    loaded_by: origin.map(|o| o.1.as_str()),
                    refreshed_unix: if secondary {
                        refreshed.get(&z.name).copied()
                    } else {
                        None
                    },
                }
            })
            .collect()
    }

    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot {
            rcode: vec![0; 17],
            kind: vec![0; 6],
            ..Default::default()
        };
        let mut qtype = [0u64; QTYPES.len()];
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if let Ok(v) = self.counters.lock() {
            for c in v.iter() {
                s.udp_queries += r(&c.udp_queries);
                s.tcp_queries += r(&c.tcp_queries);
                for (i, x) in c.rcode.iter().enumerate() {
                    s.rcode[i] += r(x);
                }
                for (i, x) in c.kind.iter().enumerate() {
                    s.kind[i] += r(x);
                }
                s.dropped += r(&c.dropped);
                s.truncated += r(&c.truncated);
                s.rrl_dropped += r(&c.rrl_dropped);
                s.rrl_slipped += r(&c.rrl_slipped);
                s.rrl_would_limit += r(&c.rrl_would_limit);
                s.cookies_valid += r(&c.cookies_valid);
                s.tcp_refused_cap += r(&c.tcp_refused_cap);
                s.tcp_refused_source += r(&c.tcp_refused_source);
                s.tcp_evicted += r(&c.tcp_evicted);
                s.tcp_query_timeout += r(&c.tcp_query_timeout);
                s.tcp_write_stalled += r(&c.tcp_write_stalled);
                for (i, x) in c.qtype.iter().enumerate() {
                    qtype[i] += r(x);
                }
            }
        }
        s.query_types = QTYPES.iter().map(|(n, _)| *n).zip(qtype).collect();
        s.tcp_pending_bytes = self.tcp.pending() as u64;
        s.axfr_in = r(&self.xfr.axfr_in);
        s.ixfr_in = r(&self.xfr.ixfr_in);
        s.transfers_served = r(&self.xfr.served_out);
        s.transfers_refused = r(&self.xfr.refused_out);
        s
    }

    /// Stops serving: UDP threads answer what they have read and exit
    /// within their receive timeout ([`UDP_WAKEUP`]), TCP accept loops end;
    /// then this process's copies of the sockets are closed (after an
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

    fn count(&self, c: &Counters, a: &answer::Answered<'_>, sent: bool) {
        c.rcode[(a.rcode as usize).min(16)].fetch_add(1, Ordering::Relaxed);
        c.kind[kind_index(a.kind)].fetch_add(1, Ordering::Relaxed);
        if a.truncated {
            c.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if a.cookie == anyedge_dns::cookie::CookieState::Valid {
            c.cookies_valid.fetch_add(1, Ordering::Relaxed);
        }
        if !sent {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn serve_udp(&self, sock: std::net::UdpSocket, addr: SocketAddr, c: &Counters) {
        let mut batch = udp::Batch::new();
        while !self.stop.load(Ordering::Relaxed) {
            match batch.recv(&sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    warn!(%addr, error = %e, "dns udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let zones = self.zones.load();
            let st = self.settings.load();
            let rrl = self.rrl.load();
            let now = unix_now();
            let mono = self.epoch.elapsed();
            let n = batch.len();
            c.udp_queries.fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let Some((q, src, out)) = batch.slot(i) else { continue };
                count_qtype(c, q);
                let cx = Context {
                    src: src.ip(),
                    tcp: false,
                    now,
                };
                let a = answer::answer(&zones, &st, q, &cx, out);
                match a.special {
                    Some(answer::Special::Notify) => xfr::notify(self, q, src, out),
                    Some(_) => out.clear(),
                    None if a.rcode == u16::from(answer::RCODE_NOTAUTH) => {
                        xfr::signed_soa(self, q, src, out);
                    }
                    None => {}
                }
                // RRL (UDP only): a valid server cookie proves the source
                // address, so such clients are never limited.
                if let (Some(r), false) = (
                    &**rrl,
                    out.is_empty() || a.cookie == anyedge_dns::cookie::CookieState::Valid,
                ) {
                    let class = rrl_class(a.kind, out.len());
                    let d = r.check(src.ip(), class, a.rrl_name, mono);
                    if d.is_dry_run_limited() {
                        c.rrl_would_limit.fetch_add(1, Ordering::Relaxed);
                    }
                    if d.episode_start {
                        warn!(%src, class = class.as_str(), decided = d.decided.as_str(), dry_run = d.is_dry_run_limited(), "dns: response rate limit reached for this source prefix");
                    }
                    match d.verdict {
                        RrlVerdict::Send => {}
                        RrlVerdict::Slip => {
                            c.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                            if class != ResponseClass::Error {
                                answer::slip(out);
                            }
                        }
                        RrlVerdict::Drop => {
                            c.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                            out.clear();
                        }
                    }
                }
                self.count(c, &a, !out.is_empty());
            }
            batch.send(&sock);
        }
        debug!(%addr, "dns udp thread stopped");
    }
}

/// How long a UDP thread waits in `recvmmsg` before it looks at the stop
/// flag again (the receive timeout of the socket; no busy loop).
const UDP_WAKEUP: Duration = Duration::from_millis(200);

fn count_qtype(c: &Counters, q: &[u8]) {
    if let Some(t) = question_type(q) {
        c.qtype[qtype_index(t)].fetch_add(1, Ordering::Relaxed);
    }
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // large buffers absorb bursts while a batch is being answered
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_read_timeout(Some(UDP_WAKEUP))?;
    crate::net::set_freebind(&s, addr)?;
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("dns: cannot bind udp {addr}: {e}"))?;
    Ok(s.into())
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    crate::net::set_freebind(&s, addr)?;
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("dns: cannot bind tcp {addr}: {e}"))?;
    s.listen(1024)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    #[test]
    fn qtype_table_and_index_agree() {
        for (i, (name, t)) in QTYPES.iter().enumerate().take(QTYPES.len() - 1) {
            assert_eq!(qtype_index(*t), i, "{name}");
        }
        assert_eq!(QTYPES[qtype_index(99)].0, "OTHER");
        assert_eq!(QTYPES[qtype_index(0)].0, "OTHER");
    }

    #[test]
    fn question_type_reads_the_first_question() {
        assert_eq!(question_type(&query(b"\x03www\x07example\x03com\x00", 28)), Some(28));
        assert_eq!(question_type(&query(b"\x00", 2)), Some(2));
        // a response, no question, a cut name, a cut type: not counted
        let mut r = query(b"\x03www\x00", 1);
        r[2] |= 0x80;
        assert_eq!(question_type(&r), None);
        let mut r = query(b"\x03www\x00", 1);
        r[5] = 0;
        assert_eq!(question_type(&r), None);
        assert_eq!(question_type(&query(b"\x3fwww", 1)[..16]), None);
        assert_eq!(question_type(&query(b"\x03www\x00", 1)[..18]), None);
        // reserved label types
        assert_eq!(question_type(&query(b"\x43www\x00", 1)), None);
        assert_eq!(question_type(&[0u8; 5]), None);
    }
}
