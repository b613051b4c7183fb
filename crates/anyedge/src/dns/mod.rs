//! The authoritative DNS server: sockets and threads around the sans-IO
//! core in `anyedge-dns`.
//!
//! - UDP: per worker and address, one `SO_REUSEPORT` socket served by a
//!   plain thread with `recvmmsg`/`sendmmsg` batches (no async machinery
//!   per datagram).
//! - TCP: per worker runtime, one `SO_REUSEPORT` listener; connections
//!   carry pipelined queries, with an idle timeout and a connection cap.
//! - Zones and answering settings are `ArcSwap` snapshots: a reload parses
//!   everything first, then swaps; in-flight queries finish on the old one.

mod udp;
mod xfr;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyedge_dns::answer::{self, Context, Kind, Settings};
use anyedge_dns::zone::{self, Zone, ZoneSet};
use anyedge_guard::rrl::{ResponseClass, Rrl, RrlVerdict};
use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    pub axfr_in: u64,
    pub ixfr_in: u64,
    pub transfers_served: u64,
    pub transfers_refused: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ZoneStatus {
    pub name: String,
    pub serial: u32,
    pub records: usize,
    pub source: String,
    /// Last load/transfer error (the previous version keeps serving).
    pub error: Option<String>,
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
    stop: AtomicBool,
    tcp_open: AtomicU32,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    tcp_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
pub fn load_zones(cfg: &DnsConfig, old: Option<&ZoneSet>) -> (ZoneSet, Vec<(String, String)>) {
    let mut set = ZoneSet::new();
    let mut errors = Vec::new();
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
                        set.insert(Arc::new(loaded));
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
                    set.insert(Arc::new(saved));
                }
            }
        }
    }
    (set, errors)
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
    /// Loads the zones (any failure is fatal here), binds every socket, and
    /// starts the UDP threads and the TCP accept loops.
    pub fn start(
        cfg: &DnsConfig,
        pop: &str,
        workers: usize,
        rts: &[tokio::runtime::Handle],
    ) -> anyhow::Result<Arc<Dns>> {
        let (zones, errors) = load_zones(cfg, None);
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
            stop: AtomicBool::new(false),
            tcp_open: AtomicU32::new(0),
            threads: Mutex::new(Vec::new()),
            tcp_tasks: Mutex::new(Vec::new()),
            xfr: xfr::Xfr::new(),
        });
        let workers = cfg.workers.map_or(workers, |w| w.get() as usize).max(1);
        // bind everything first: a port in use fails the start cleanly
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &cfg.listen {
            for _ in 0..workers {
                udp.push((*addr, bind_udp(*addr)?));
            }
            for _ in 0..workers.min(rts.len()).max(1) {
                tcp.push((*addr, bind_tcp(*addr)?));
            }
        }
        for (i, (addr, sock)) in udp.into_iter().enumerate() {
            let d = dns.clone();
            let c = dns.new_counters();
            let h = std::thread::Builder::new()
                .name(format!("anyedge-dns{i}"))
                .spawn(move || d.serve_udp(sock, addr, &c))?;
            dns.threads.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(h);
        }
        for (i, (addr, l)) in tcp.into_iter().enumerate() {
            let rt = rts.get(i % rts.len().max(1)).cloned();
            let d = dns.clone();
            let c = dns.new_counters();
            let task = match rt {
                Some(rt) => rt.spawn(async move { d.serve_tcp(l, addr, c).await }),
                None => tokio::spawn(async move { d.serve_tcp(l, addr, c).await }),
            };
            dns.tcp_tasks.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(task);
        }
        for a in &cfg.listen {
            info!(addr = %a, workers, zones = cfg.zones.len(), "dns listening (udp+tcp)");
        }
        xfr::start(&dns);
        Ok(dns)
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
        let (set, errors) = load_zones(cfg, Some(&old));
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
    pub fn install(&self, z: Zone) {
        let z = Arc::new(z);
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
        cfg.zones
            .iter()
            .map(|z| {
                let loaded = zones.get(&domain_wire(&z.name));
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
            }
        }
        s.axfr_in = r(&self.xfr.axfr_in);
        s.ixfr_in = r(&self.xfr.ixfr_in);
        s.transfers_served = r(&self.xfr.served_out);
        s.transfers_refused = r(&self.xfr.refused_out);
        s
    }

    /// Stops serving: UDP threads exit within their receive timeout, TCP
    /// listeners close.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.xfr.stop();
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

    async fn serve_tcp(self: Arc<Self>, l: std::net::TcpListener, addr: SocketAddr, c: Arc<Counters>) {
        let l = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                error!(%addr, error = %e, "dns tcp listener");
                return;
            }
        };
        loop {
            let (s, peer) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(%addr, error = %e, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let max = self.cfg.load().tcp_max_connections.get();
            if self.tcp_open.fetch_add(1, Ordering::AcqRel) >= max {
                self.tcp_open.fetch_sub(1, Ordering::AcqRel);
                c.tcp_refused_cap.fetch_add(1, Ordering::Relaxed);
                continue; // dropped: closes the connection
            }
            let d = self.clone();
            let c = c.clone();
            tokio::spawn(async move {
                d.tcp_conn(s, peer, &c).await;
                d.tcp_open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// One TCP connection: length-prefixed queries, answered in order;
    /// responses are batched into one write while more queries are buffered.
    /// A zone transfer request is streamed by the transfer module once the
    /// responses before it are written.
    async fn tcp_conn(&self, s: tokio::net::TcpStream, peer: SocketAddr, c: &Counters) {
        let _ = s.set_nodelay(true);
        let (mut rd, mut wr) = s.into_split();
        let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
        let mut outbuf: Vec<u8> = Vec::with_capacity(4096);
        let mut resp: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16384];
        loop {
            let idle = self.cfg.load().tcp_idle_timeout;
            // no read while a whole query is still buffered (after a transfer)
            let buffered = inbuf.len() >= 2 && inbuf.len() >= 2 + usize::from(u16::from_be_bytes([inbuf[0], inbuf[1]]));
            let n = if buffered {
                0
            } else {
                match tokio::time::timeout(idle, rd.read(&mut chunk)).await {
                    Ok(Ok(0)) | Err(_) => return,
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return,
                }
            };
            inbuf.extend_from_slice(&chunk[..n]);
            let mut at = 0usize;
            let mut transfer: Option<Vec<u8>> = None;
            let zones = self.zones.load();
            let st = self.settings.load();
            let now = unix_now();
            while inbuf.len() >= at + 2 {
                let len = u16::from_be_bytes([inbuf[at], inbuf[at + 1]]) as usize;
                if inbuf.len() < at + 2 + len {
                    break;
                }
                let q = &inbuf[at + 2..at + 2 + len];
                at += 2 + len;
                c.tcp_queries.fetch_add(1, Ordering::Relaxed);
                if anyedge_dns::xfr::is_transfer_request(q) {
                    // streamed by the transfer module after what is queued
                    transfer = Some(q.to_vec());
                    break;
                }
                let cx = Context {
                    src: peer.ip(),
                    tcp: true,
                    now,
                };
                let a = answer::answer(&zones, &st, q, &cx, &mut resp);
                match a.special {
                    Some(answer::Special::Notify) => xfr::notify(self, q, peer, &mut resp),
                    Some(_) => answer::refuse(q, &mut resp),
                    None if a.rcode == u16::from(answer::RCODE_NOTAUTH) => {
                        xfr::signed_soa(self, q, peer, &mut resp);
                    }
                    None => {}
                }
                self.count(c, &a, !resp.is_empty());
                if resp.is_empty() {
                    continue;
                }
                outbuf.extend_from_slice(&(resp.len() as u16).to_be_bytes());
                outbuf.extend_from_slice(&resp);
            }
            drop((zones, st));
            inbuf.drain(..at);
            if inbuf.len() > 2 + 65535 {
                return;
            }
            if !outbuf.is_empty() {
                if wr.write_all(&outbuf).await.is_err() {
                    return;
                }
                outbuf.clear();
            }
            if let Some(q) = transfer {
                if xfr::serve_transfer(self, &q, peer, &mut wr).await.is_err() {
                    return;
                }
            }
        }
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
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
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
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("dns: cannot bind tcp {addr}: {e}"))?;
    s.listen(1024)?;
    Ok(s.into())
}
