//! Zone transfers and NOTIFY around the sans-IO core in
//! `anyedge_dns::xfr`.
//!
//! - Secondary zones: one task per zone keeps it current. It follows the
//!   SOA timers ([`Refresh`]: refresh, retry, expire), asks the primaries
//!   (in order) for their SOA over TCP, pulls an IXFR when their serial is
//!   newer (AXFR when the primary cannot send differences, or when we have
//!   nothing yet), verifies TSIG on every message when the zone has a key,
//!   and installs the new version. A NOTIFY from one of the zone's
//!   primaries makes the check due at once. When the zone expires it is
//!   withdrawn (queries for it are refused) until a transfer succeeds.
//! - Serving transfers (TCP): to clients in `allow_transfer`, signed with
//!   the zone's key when it has one (unsigned: REFUSED; a bad signature:
//!   NOTAUTH with the TSIG error). IXFR is answered from a bounded journal
//!   of differences, else with the whole zone.
//! - File zones whose serial changes on reload get a journal entry (the
//!   difference between the two versions) and a NOTIFY (UDP, retried,
//!   signed with the zone's key) to each `notify` address.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyedge_dns::answer::{RCODE_FORMERR, RCODE_NOERROR, RCODE_NOTAUTH, RCODE_NOTIMP, RCODE_REFUSED, RCODE_SERVFAIL};
use anyedge_dns::xfr::{
    self, Diff, Due, Journal, OptReply, Plan, Received, Refresh, Responder, Rr, Signed, Timers, XfrError,
};
use anyedge_dns::zone::{Zone, ZoneSet};
use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{Algorithm, Key, KeyName, ServerSequence};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, warn};

use super::{domain_wire, Dns};
use crate::config::{DnsConfig, TsigAlgorithm, TsigKey, ZoneConfig, ZoneSource};
use crate::logutil::LogLimiter;

/// Connecting to a primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reading or writing one transfer message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for a NOTIFY response, per attempt.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
const NOTIFY_ATTEMPTS: u32 = 5;
/// Journal bounds per zone (differences, records in them).
const JOURNAL_DIFFS: usize = 64;
const JOURNAL_RECORDS: usize = 250_000;
/// Largest transfer we accept (records), against a runaway primary.
const MAX_TRANSFER_RECORDS: usize = 10_000_000;

type KeyStore = HashMap<(KeyName, Algorithm), Arc<Key>>;
/// The TSIG state for signing our response(s) to a signed request.
type ServerSeq = Box<ServerSequence<Arc<Key>>>;

/// Transfer state of the DNS server (one per [`Dns`]).
pub(super) struct Xfr {
    me: OnceLock<Weak<Dns>>,
    rt: OnceLock<tokio::runtime::Handle>,
    secondaries: Mutex<HashMap<String, Secondary>>,
    journals: Mutex<HashMap<Box<[u8]>, Journal>>,
    changes: OnceLock<mpsc::UnboundedSender<Change>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    log_refused: LogLimiter,
    log_notify: LogLimiter,
    /// Transfers in, by kind.
    pub(super) axfr_in: AtomicU64,
    pub(super) ixfr_in: AtomicU64,
    /// Transfers served, and requests refused (policy or TSIG).
    pub(super) served_out: AtomicU64,
    pub(super) refused_out: AtomicU64,
}

/// The task keeping one secondary zone current.
struct Secondary {
    zc: ZoneConfig,
    key: Option<TsigKey>,
    kick: Arc<Notify>,
    /// The version the task installed last: put back if a reload raced it.
    last: Arc<Mutex<Option<Arc<Zone>>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A zone changed (file reload, transfer in) or was loaded (start): a
/// journal entry when `old` is given, NOTIFY to `notify`.
struct Change {
    name: String,
    apex: Box<[u8]>,
    old: Option<Arc<Zone>>,
    new: Arc<Zone>,
    notify: Vec<SocketAddr>,
    key: Option<Arc<Key>>,
}

impl Xfr {
    pub(super) fn new() -> Xfr {
        Xfr {
            me: OnceLock::new(),
            rt: OnceLock::new(),
            secondaries: Mutex::new(HashMap::new()),
            journals: Mutex::new(HashMap::new()),
            changes: OnceLock::new(),
            worker: Mutex::new(None),
            log_refused: LogLimiter::new(5),
            log_notify: LogLimiter::new(5),
            axfr_in: AtomicU64::new(0),
            ixfr_in: AtomicU64::new(0),
            served_out: AtomicU64::new(0),
            refused_out: AtomicU64::new(0),
        }
    }

    /// Stops the secondary tasks and the NOTIFY sender.
    pub(super) fn stop(&self) {
        if let Ok(mut m) = self.secondaries.lock() {
            for (_, s) in m.drain() {
                s.task.abort();
            }
        }
        if let Ok(mut w) = self.worker.lock() {
            if let Some(h) = w.take() {
                h.abort();
            }
        }
    }

    fn journal_push(&self, apex: &[u8], diffs: impl IntoIterator<Item = Arc<Diff>>) {
        if let Ok(mut j) = self.journals.lock() {
            let j = j
                .entry(apex.into())
                .or_insert_with(|| Journal::new(JOURNAL_DIFFS, JOURNAL_RECORDS));
            for d in diffs {
                if d.is_empty() && d.from_serial() == d.to_serial() {
                    continue;
                }
                j.push(d);
            }
        }
    }

    fn journal_clear(&self, apex: &[u8]) {
        if let Ok(mut j) = self.journals.lock() {
            j.remove(apex);
        }
    }

    fn spawn<F>(&self, f: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.rt.get() {
            Some(rt) => Some(rt.spawn(f)),
            None => {
                error!("dns: zone transfer tasks need a runtime; not started");
                None
            }
        }
    }
}

fn time48() -> Time48 {
    Time48::from_u64(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn random_id() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u16
}

/// The `domain` TSIG key for a configured key.
pub(super) fn make_key(k: &TsigKey) -> Result<Key, String> {
    let alg = match k.algorithm {
        TsigAlgorithm::HmacSha256 => Algorithm::Sha256,
        TsigAlgorithm::HmacSha384 => Algorithm::Sha384,
        TsigAlgorithm::HmacSha512 => Algorithm::Sha512,
    };
    let name: KeyName = k.name.parse().map_err(|e| format!("TSIG key name {:?}: {e}", k.name))?;
    Key::new(alg, &k.secret, name, None, None).map_err(|e| format!("TSIG key {}: {e}", k.name))
}

fn key_config<'c>(cfg: &'c DnsConfig, zc: &ZoneConfig) -> Option<&'c TsigKey> {
    let name = zc.key.as_ref()?;
    cfg.tsig_keys.iter().find(|k| &k.name == name)
}

/// The zone's key (`Ok(None)`: the zone has none).
fn zone_key(cfg: &DnsConfig, zc: &ZoneConfig) -> Result<Option<Arc<Key>>, String> {
    match (&zc.key, key_config(cfg, zc)) {
        (None, _) => Ok(None),
        (Some(n), None) => Err(format!("no TSIG key {n}")),
        (Some(_), Some(k)) => make_key(k).map(|k| Some(Arc::new(k))),
    }
}

/// The keys a request about `zc` may be signed with: the zone's key if it
/// has one, else any configured key (a signed request gets a signed answer).
fn key_store(cfg: &DnsConfig, zc: Option<&ZoneConfig>) -> KeyStore {
    let mut s = KeyStore::new();
    let wanted = zc.and_then(|z| z.key.as_ref());
    for k in &cfg.tsig_keys {
        if wanted.is_some_and(|w| w != &k.name) {
            continue;
        }
        match make_key(k) {
            Ok(key) => {
                s.insert((key.name().clone(), key.algorithm()), Arc::new(key));
            }
            Err(e) => warn!(error = %e, "dns: unusable TSIG key"),
        }
    }
    s
}

/// The request's TSIG checked with the keys of `zc`: the sequence to sign
/// the response(s) with when validly signed, `None` when unsigned, or the
/// error response and the reason for the log.
fn check_tsig(
    msg: &mut Message<Vec<u8>>,
    cfg: &DnsConfig,
    zc: Option<&ZoneConfig>,
) -> Result<Option<ServerSeq>, (Vec<u8>, String)> {
    match xfr::verify_request(msg, &key_store(cfg, zc), time48()) {
        Signed::Valid(s) => Ok(Some(s)),
        Signed::Unsigned => Ok(None),
        Signed::Invalid(resp, why) => Err((resp, why)),
    }
}

/// FORMERR to a request that does not parse.
fn formerr(msg: &Message<Vec<u8>>, opt: Option<&OptReply>) -> Vec<u8> {
    xfr::reply::<_, Arc<Key>>(msg, RCODE_FORMERR, false, opt, None, time48()).unwrap_or_default()
}

fn find_zone<'c>(cfg: &'c DnsConfig, apex: &[u8]) -> Option<&'c ZoneConfig> {
    cfg.zones.iter().find(|z| domain_wire(&z.name) == apex)
}

/// The OPT record of our response, as `answer` writes it: our UDP size,
/// DO echoed, NSID when asked for (and configured), a server cookie when
/// the client sent a cookie (and cookies are on). `None` without EDNS.
fn opt_reply(dns: &Dns, msg: &Message<Vec<u8>>, src: IpAddr) -> Option<OptReply> {
    const NSID: u16 = 3;
    const COOKIE: u16 = 10;
    let e = xfr::request_edns(msg)?;
    let st = dns.settings.load();
    let mut options = Vec::new();
    if let (true, Some(n)) = (e.options.iter().any(|(c, _)| *c == NSID), &st.nsid) {
        options.push((NSID, n[..n.len().min(32)].to_vec()));
    }
    if let (Some((_, c)), Some(s)) = (e.options.iter().find(|(c, _)| *c == COOKIE), &st.cookies) {
        if c.len() >= 8 {
            let mut v = c[..8].to_vec();
            v.extend_from_slice(&anyedge_dns::cookie::make(s, &c[..8], src, super::unix_now()));
            options.push((COOKIE, v));
        }
    }
    Some(OptReply {
        udp_size: st.udp_max.max(512),
        dnssec_ok: e.dnssec_ok,
        options,
    })
}

pub(super) fn soa_timers(z: &Zone) -> Option<Timers> {
    Timers::from_soa(&z.soa()?.rdata.first()?.wire)
}

// ---------------------------------------------------------------------------
// Start, reload, stop

/// Starts the secondary tasks and the NOTIFY sender, and announces the
/// loaded file zones to their `notify` addresses.
pub(super) fn start(dns: &Arc<Dns>) {
    let x = &dns.xfr;
    let _ = x.me.set(Arc::downgrade(dns));
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            let _ = x.rt.set(h);
        }
        Err(_) => {
            error!("dns: no tokio runtime: zone transfers and NOTIFY are disabled");
            return;
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = x.changes.set(tx);
    let worker = x.spawn(change_worker(Arc::downgrade(dns), rx));
    if let Ok(mut w) = x.worker.lock() {
        *w = worker;
    }
    let cfg = dns.cfg.load_full();
    reconcile(dns, &cfg);
    queue_changes(dns, &cfg, None);
}

/// After `Dns::reload` (or `reload_zone`): secondaries follow the new
/// configuration, file zones whose version changed get a journal entry and
/// a NOTIFY.
pub(super) fn reloaded(dns: &Dns, old: &ZoneSet) {
    let Some(me) = dns.xfr.me.get().and_then(Weak::upgrade) else {
        return;
    };
    let cfg = dns.cfg.load_full();
    reconcile(&me, &cfg);
    // a transfer that finished while the reload built its zone set
    if let Ok(m) = dns.xfr.secondaries.lock() {
        for s in m.values() {
            let last = s.last.lock().ok().and_then(|l| l.clone());
            if let Some(z) = last {
                let cur = dns.zones.load().get(&z.apex).cloned();
                if !cur.is_some_and(|c| Arc::ptr_eq(&c, &z)) {
                    install(dns, z);
                }
            }
        }
    }
    queue_changes(dns, &cfg, Some(old));
    // journals of zones no longer configured
    if let Ok(mut j) = dns.xfr.journals.lock() {
        j.retain(|apex, _| find_zone(&cfg, apex).is_some());
    }
}

fn queue_changes(dns: &Dns, cfg: &DnsConfig, old: Option<&ZoneSet>) {
    let Some(tx) = dns.xfr.changes.get() else { return };
    let zones = dns.zones.load_full();
    for zc in &cfg.zones {
        if !matches!(zc.source, ZoneSource::File(_)) {
            continue;
        }
        let apex = domain_wire(&zc.name);
        let Some(new) = zones.get(&apex).cloned() else { continue };
        let prev = old.and_then(|o| o.get(&apex).cloned());
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, &new)) {
            continue;
        }
        // the journal serves IXFR to `allow_transfer`; NOTIFY goes to `notify`
        if zc.notify.is_empty() && (old.is_none() || zc.allow_transfer.is_empty()) {
            continue;
        }
        let key = match zone_key(cfg, zc) {
            Ok(k) => k,
            Err(e) => {
                error!(zone = %zc.name, error = %e, "dns: cannot sign NOTIFY");
                None
            }
        };
        let _ = tx.send(Change {
            name: zc.name.clone(),
            apex: apex.into(),
            old: prev,
            new,
            notify: zc.notify.clone(),
            key,
        });
    }
}

/// One secondary task per secondary zone, restarted when its settings
/// (primaries, key) change.
fn reconcile(dns: &Arc<Dns>, cfg: &DnsConfig) {
    let x = &dns.xfr;
    let Ok(mut map) = x.secondaries.lock() else { return };
    let wanted: HashMap<&str, &ZoneConfig> = cfg
        .zones
        .iter()
        .filter(|z| matches!(z.source, ZoneSource::Secondary { .. }))
        .map(|z| (z.name.as_str(), z))
        .collect();
    let mut carried: HashMap<String, Arc<Mutex<Option<Arc<Zone>>>>> = HashMap::new();
    map.retain(|name, s| {
        let keep = wanted
            .get(name.as_str())
            .is_some_and(|zc| **zc == s.zc && key_config(cfg, zc) == s.key.as_ref());
        if !keep {
            s.task.abort();
            carried.insert(name.clone(), s.last.clone());
        }
        keep
    });
    for (name, zc) in wanted {
        if map.contains_key(name) {
            continue;
        }
        let key = match zone_key(cfg, zc) {
            Ok(k) => k,
            Err(e) => {
                error!(zone = %name, error = %e, "dns: secondary zone not started");
                continue;
            }
        };
        let kick = Arc::new(Notify::new());
        let last = carried.remove(name).unwrap_or_default();
        let task = x.spawn(run_secondary(
            Arc::downgrade(dns),
            zc.clone(),
            key,
            kick.clone(),
            last.clone(),
        ));
        if let Some(task) = task {
            map.insert(
                name.to_string(),
                Secondary {
                    zc: zc.clone(),
                    key: key_config(cfg, zc).cloned(),
                    kick,
                    last,
                    task,
                },
            );
        }
    }
}

fn install(dns: &Dns, z: Arc<Zone>) {
    dns.zones.rcu(|cur| {
        let mut s = ZoneSet::clone(cur);
        s.insert(z.clone());
        s
    });
}

fn set_error(dns: &Dns, zone: &str, e: Option<String>) {
    if let Ok(mut m) = dns.errors.lock() {
        match e {
            Some(e) => m.insert(zone.to_string(), e),
            None => m.remove(zone),
        };
    }
}

// ---------------------------------------------------------------------------
// Secondary: refresh, transfer in

async fn run_secondary(
    weak: Weak<Dns>,
    zc: ZoneConfig,
    key: Option<Arc<Key>>,
    kick: Arc<Notify>,
    last: Arc<Mutex<Option<Arc<Zone>>>>,
) {
    let apex = domain_wire(&zc.name);
    let mut refresh = Refresh::new(Instant::now());
    // a version kept across a reload: its timers run from now, checked at once
    if let Some(d) = weak.upgrade() {
        if let Some(t) = d.zones.load().get(&apex).and_then(|z| soa_timers(z)) {
            refresh.on_success(Instant::now(), t);
            refresh.on_notify(Instant::now());
        }
    }
    let mut last_error: Option<String> = None;
    loop {
        let wait = refresh.next_check(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = kick.notified() => refresh.on_notify(Instant::now()),
        }
        let Some(dns) = weak.upgrade() else { return };
        match refresh.poll(Instant::now()) {
            None => continue,
            Some(Due::Expire) => {
                dns.zones.rcu(|cur| {
                    let mut s = ZoneSet::clone(cur);
                    s.remove(&apex);
                    s
                });
                if let Ok(mut l) = last.lock() {
                    *l = None;
                }
                dns.xfr.journal_clear(&apex);
                let why = format!(
                    "expired: no primary answered within the SOA expire time ({})",
                    last_error.as_deref().unwrap_or("no error recorded")
                );
                error!(zone = %zc.name, "zone expired; no longer answering for it until a transfer succeeds");
                set_error(&dns, &zc.name, Some(why));
                continue;
            }
            Some(Due::Check) => {}
        }
        let current = dns.zones.load().get(&apex).cloned();
        match check(&dns, &zc, &apex, key.clone(), current.clone()).await {
            Ok(zone) => {
                if current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &zone)) {
                    install(&dns, zone.clone());
                    // our own secondaries (the journal was updated by the pull)
                    if let (false, Some(tx)) = (zc.notify.is_empty(), dns.xfr.changes.get()) {
                        let cfg = dns.cfg.load();
                        let _ = tx.send(Change {
                            name: zc.name.clone(),
                            apex: apex.clone().into(),
                            old: None,
                            new: zone.clone(),
                            notify: zc.notify.clone(),
                            key: zone_key(&cfg, &zc).ok().flatten(),
                        });
                    }
                }
                // keep a copy on disk: a restarted PoP serves it at once
                if let Some(dir) = dns.cfg.load().state_dir.clone() {
                    let changed = current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &zone));
                    let (name, z) = (zc.name.clone(), zone.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        if changed {
                            super::save_zone(&dir, &name, &z);
                        } else {
                            super::touch_saved(&dir, &name);
                        }
                    })
                    .await;
                }
                if let Ok(mut l) = last.lock() {
                    *l = Some(zone.clone());
                }
                dns.note_refreshed(&zc.name);
                if last_error.take().is_some() {
                    info!(zone = %zc.name, serial = zone.serial, "zone refresh works again");
                }
                set_error(&dns, &zc.name, None);
                match soa_timers(&zone) {
                    Some(t) => refresh.on_success(Instant::now(), t),
                    None => refresh.on_failure(Instant::now()),
                }
            }
            Err(e) => {
                refresh.on_failure(Instant::now());
                let retry = refresh.next_check(Instant::now());
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!(zone = %zc.name, error = %e, retry_in = ?retry, "zone refresh failed");
                } else {
                    debug!(zone = %zc.name, error = %e, retry_in = ?retry, "zone refresh failed again");
                }
                if !refresh.is_expired() {
                    set_error(&dns, &zc.name, Some(format!("refresh failed: {e}")));
                }
                last_error = Some(e);
            }
        }
    }
}

/// Asks the primaries in order; the first useful answer wins. Returns the
/// version to serve (the current one if it is up to date).
async fn check(
    dns: &Dns,
    zc: &ZoneConfig,
    apex: &[u8],
    key: Option<Arc<Key>>,
    current: Option<Arc<Zone>>,
) -> Result<Arc<Zone>, String> {
    let ZoneSource::Secondary { primaries } = &zc.source else {
        return Err("not a secondary zone".into());
    };
    let mut errors = Vec::new();
    for p in primaries {
        match pull(dns, zc, apex, *p, key.clone(), current.clone()).await {
            Ok(z) => return Ok(z),
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// Why pulling from one primary failed.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Xfr(#[from] XfrError),
    #[error("timed out")]
    Timeout,
}

impl From<tokio::time::error::Elapsed> for PullError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        PullError::Timeout
    }
}

/// Does an IXFR failure call for an AXFR from the same primary?
fn axfr_fallback(e: &PullError) -> bool {
    match e {
        PullError::Xfr(XfrError::Ixfr(_) | XfrError::Protocol(_) | XfrError::Malformed(_) | XfrError::Zone(_)) => true,
        PullError::Xfr(XfrError::Rcode(rc)) => matches!(*rc, RCODE_FORMERR | RCODE_SERVFAIL | RCODE_NOTIMP),
        _ => false,
    }
}

async fn pull(
    dns: &Dns,
    zc: &ZoneConfig,
    apex: &[u8],
    primary: SocketAddr,
    key: Option<Arc<Key>>,
    current: Option<Arc<Zone>>,
) -> Result<Arc<Zone>, PullError> {
    let t = Instant::now();
    let mut conn = connect(primary).await?;
    let got = match &current {
        Some(cur) => {
            // The SOA query saves a transfer when nothing changed; a primary
            // that does not answer it usefully still gets the IXFR (which
            // says "up to date" by itself).
            let remote = match soa_query(&mut conn, apex, key.clone()).await {
                Ok(soa) => soa.soa_serial(),
                Err(PullError::Xfr(e)) => {
                    debug!(zone = %zc.name, %primary, error = %e, "SOA query failed; asking for IXFR directly");
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(remote) = remote.filter(|r| !xfr::serial_gt(*r, cur.serial)) {
                if xfr::serial_gt(cur.serial, remote) {
                    warn!(zone = %zc.name, %primary, ours = cur.serial, theirs = remote, "primary has an older serial than ours; keeping ours");
                }
                debug!(zone = %zc.name, %primary, serial = cur.serial, "zone is current");
                return Ok(cur.clone());
            }
            let ours = xfr::zone_soa(cur);
            match transfer(
                &mut conn,
                apex,
                xfr::T_IXFR,
                ours.as_ref(),
                key.clone(),
                Some(cur.clone()),
            )
            .await
            {
                Ok(r) => r,
                Err(e) if axfr_fallback(&e) => {
                    info!(zone = %zc.name, %primary, reason = %e, "IXFR not usable; transferring the whole zone (AXFR)");
                    drop(conn);
                    let mut conn = connect(primary).await?;
                    transfer(&mut conn, apex, xfr::T_AXFR, None, key.clone(), None).await?
                }
                Err(e) => return Err(e),
            }
        }
        None => transfer(&mut conn, apex, xfr::T_AXFR, None, key.clone(), None).await?,
    };
    let kind = got.kind();
    let (zone, diffs) = match got {
        Received::UpToDate(_) => match current {
            Some(c) => return Ok(c),
            None => return Err(XfrError::Protocol("primary sent no zone".into()).into()),
        },
        Received::Axfr(z) => {
            dns.xfr.axfr_in.fetch_add(1, Ordering::Relaxed);
            let z = Arc::new(z);
            dns.note_loaded(&z, super::LoadedBy::Axfr);
            (z, None)
        }
        Received::Ixfr { zone, diffs } => {
            dns.xfr.ixfr_in.fetch_add(1, Ordering::Relaxed);
            let z = Arc::new(zone);
            dns.note_loaded(&z, super::LoadedBy::Ixfr);
            (z, Some(diffs))
        }
    };
    for w in zone.warnings.iter().take(20) {
        warn!(zone = %zc.name, "{w}");
    }
    // the journal, for our own secondaries' IXFR
    match (diffs, &current) {
        (Some(d), _) => dns.xfr.journal_push(apex, d.into_iter().map(Arc::new)),
        (None, Some(old)) if xfr::serial_gt(zone.serial, old.serial) => {
            let (o, n) = (old.clone(), zone.clone());
            match tokio::task::spawn_blocking(move || xfr::diff(&o, &n)).await {
                Ok(Ok(d)) => dns.xfr.journal_push(apex, [Arc::new(d)]),
                _ => dns.xfr.journal_clear(apex),
            }
        }
        (None, _) => dns.xfr.journal_clear(apex),
    }
    info!(
        zone = %zc.name,
        %primary,
        kind = %kind,
        serial = zone.serial,
        records = zone.records,
        took = ?t.elapsed(),
        "zone transferred"
    );
    Ok(zone)
}

async fn connect(primary: SocketAddr) -> Result<tokio::net::TcpStream, PullError> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(primary)).await??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, m: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(m.len()).map_err(|_| std::io::Error::other("message longer than 65535"))?;
    let mut buf = Vec::with_capacity(m.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(m);
    match tokio::time::timeout(MESSAGE_TIMEOUT, w.write_all(&buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    }
}

async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, PullError> {
    let mut len = [0u8; 2];
    tokio::time::timeout(MESSAGE_TIMEOUT, r.read_exact(&mut len)).await??;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tokio::time::timeout(MESSAGE_TIMEOUT, r.read_exact(&mut buf)).await??;
    Ok(buf)
}

/// The primary's SOA (over the transfer connection).
async fn soa_query(conn: &mut tokio::net::TcpStream, apex: &[u8], key: Option<Arc<Key>>) -> Result<Rr, PullError> {
    let id = random_id();
    let (q, mut seq) = xfr::build_query(id, apex, 6, None, key, time48())?;
    write_msg(conn, &q).await?;
    let raw = read_msg(conn).await?;
    let m = xfr::check_response(raw, id, seq.as_mut(), time48())?;
    if let Some(s) = seq {
        s.done().map_err(|e| XfrError::Tsig(e.to_string()))?;
    }
    Ok(xfr::soa_answer(&m, apex)?)
}

/// One AXFR or IXFR on `conn`, every message checked (TSIG included).
async fn transfer(
    conn: &mut tokio::net::TcpStream,
    apex: &[u8],
    qtype: u16,
    ours: Option<&Rr>,
    key: Option<Arc<Key>>,
    base: Option<Arc<Zone>>,
) -> Result<Received, PullError> {
    let id = random_id();
    let (q, mut seq) = xfr::build_query(id, apex, qtype, ours, key, time48())?;
    write_msg(conn, &q).await?;
    let mut rx = xfr::Receiver::new(apex, base, qtype == xfr::T_IXFR, MAX_TRANSFER_RECORDS);
    loop {
        let raw = read_msg(conn).await?;
        let m = xfr::check_response(raw, id, seq.as_mut(), time48())?;
        if rx.feed(&m)? {
            break;
        }
    }
    if let Some(s) = seq {
        s.done()
            .map_err(|e| XfrError::Tsig(format!("the last message is not signed ({e})")))?;
    }
    match tokio::task::spawn_blocking(move || rx.finish()).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(std::io::Error::other(format!("zone build task: {e}")).into()),
    }
}

// ---------------------------------------------------------------------------
// NOTIFY in

/// A NOTIFY received on UDP or TCP (`answer` said [`Special::Notify`]):
/// accepted from one of the zone's primaries (signed with the zone's key if
/// it has one), it makes a refresh due at once. `out`: the response.
///
/// [`Special::Notify`]: anyedge_dns::answer::Special::Notify
pub(super) fn notify(dns: &Dns, q: &[u8], src: SocketAddr, out: &mut Vec<u8>) {
    out.clear();
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return;
    };
    let opt = opt_reply(dns, &msg, src.ip());
    let req = match xfr::parse_notify(&msg) {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = dns.xfr.log_notify.allow() {
                debug!(%src, error = %e, suppressed = s, "dns: malformed NOTIFY");
            }
            *out = formerr(&msg, opt.as_ref());
            return;
        }
    };
    let cfg = dns.cfg.load();
    let zc = find_zone(&cfg, &req.apex);
    let mut seq = match check_tsig(&mut msg, &cfg, zc) {
        Ok(s) => s,
        Err((resp, why)) => {
            if let Some(s) = dns.xfr.log_notify.allow() {
                warn!(%src, zone = %anyedge_dns::name::display(&req.apex), %why, suppressed = s, "dns: NOTIFY refused: bad TSIG");
            }
            *out = resp;
            return;
        }
    };
    let refuse = |rcode: u8, why: &str, seq: Option<&mut ServerSequence<Arc<Key>>>, out: &mut Vec<u8>| {
        if let Some(s) = dns.xfr.log_notify.allow() {
            warn!(%src, zone = %anyedge_dns::name::display(&req.apex), reason = why, suppressed = s, "dns: NOTIFY refused");
        }
        *out = xfr::reply(&msg, rcode, false, opt.as_ref(), seq, time48()).unwrap_or_default();
    };
    let Some(zc) = zc else {
        return refuse(RCODE_NOTAUTH, "not a zone of ours", seq.as_deref_mut(), out);
    };
    let ZoneSource::Secondary { primaries } = &zc.source else {
        return refuse(
            RCODE_REFUSED,
            "we are the primary of this zone",
            seq.as_deref_mut(),
            out,
        );
    };
    if !primaries.iter().any(|p| p.ip() == src.ip()) {
        return refuse(
            RCODE_REFUSED,
            "not from one of the zone's primaries",
            seq.as_deref_mut(),
            out,
        );
    }
    if zc.key.is_some() && seq.is_none() {
        return refuse(
            RCODE_REFUSED,
            "unsigned; the zone requires its TSIG key",
            seq.as_deref_mut(),
            out,
        );
    }
    let kicked = dns
        .xfr
        .secondaries
        .lock()
        .ok()
        .and_then(|m| m.get(&zc.name).map(|s| s.kick.clone()));
    match kicked {
        Some(k) => k.notify_one(),
        None => {
            return refuse(
                RCODE_SERVFAIL,
                "zone transfer task not running",
                seq.as_deref_mut(),
                out,
            )
        }
    }
    info!(zone = %zc.name, from = %src, serial = ?req.serial, "NOTIFY received; refreshing");
    *out = xfr::reply(&msg, RCODE_NOERROR, true, opt.as_ref(), seq.as_deref_mut(), time48()).unwrap_or_default();
}

/// A TSIG-signed SOA query for one of our zones (a secondary checking our
/// serial; `answer` refuses signed queries with NOTAUTH): verified and
/// answered with the SOA, signed. Returns false, leaving `out` alone, for
/// anything else.
pub(super) fn signed_soa(dns: &Dns, q: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
    let Ok(parsed) = anyedge_dns::answer::parse(q) else {
        return false;
    };
    if parsed.tsig_at.is_none() || parsed.qtype != anyedge_dns::zone::T_SOA || parsed.qclass != 1 {
        return false;
    }
    let apex = anyedge_dns::name::lower(parsed.qname);
    let Some(zone) = dns.zones.load().get(&apex).cloned() else {
        return false;
    };
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return false;
    };
    let cfg = dns.cfg.load();
    let store = key_store(&cfg, find_zone(&cfg, &apex));
    match xfr::verify_request(&mut msg, &store, time48()) {
        Signed::Valid(mut seq) => match xfr::soa_response(
            &msg,
            &zone,
            opt_reply(dns, &msg, src.ip()).as_ref(),
            Some(&mut *seq),
            time48(),
        ) {
            Ok(r) => {
                *out = r;
                true
            }
            Err(_) => false,
        },
        Signed::Invalid(resp, why) => {
            if let Some(s) = dns.xfr.log_refused.allow() {
                warn!(%src, zone = %zone.name(), %why, suppressed = s, "dns: signed SOA query refused: bad TSIG");
            }
            *out = resp;
            true
        }
        Signed::Unsigned => false,
    }
}

// ---------------------------------------------------------------------------
// Transfers out

enum Prepared {
    /// Send this one message (refusal, error).
    Reply(Vec<u8>),
    Serve {
        msg: Message<Vec<u8>>,
        plan: Plan,
        seq: Option<ServerSeq>,
        opt: Option<OptReply>,
        name: String,
    },
}

/// Decides whether and what to transfer (no I/O).
fn prepare(dns: &Dns, q: &[u8], peer: SocketAddr) -> Prepared {
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return Prepared::Reply(Vec::new());
    };
    let opt = opt_reply(dns, &msg, peer.ip());
    let req = match xfr::parse_request(&msg) {
        Ok(r) => r,
        Err(_) => {
            return Prepared::Reply(formerr(&msg, opt.as_ref()));
        }
    };
    let zname = anyedge_dns::name::display(&req.apex);
    let cfg = dns.cfg.load();
    let zc = find_zone(&cfg, &req.apex);
    let mut seq = match check_tsig(&mut msg, &cfg, zc) {
        Ok(s) => s,
        Err((resp, why)) => {
            if let Some(s) = dns.xfr.log_refused.allow() {
                warn!(%peer, zone = %zname, kind = %req.kind(), %why, suppressed = s, "dns: transfer refused: bad TSIG");
            }
            return Prepared::Reply(resp);
        }
    };
    let signed = seq.is_some();
    let mut refuse = |rcode: u8, why: &str| {
        if let Some(s) = dns.xfr.log_refused.allow() {
            warn!(%peer, zone = %zname, kind = %req.kind(), reason = why, suppressed = s, "dns: transfer refused");
        }
        Prepared::Reply(xfr::reply(&msg, rcode, false, opt.as_ref(), seq.as_deref_mut(), time48()).unwrap_or_default())
    };
    let Some(zc) = zc else {
        return refuse(RCODE_NOTAUTH, "not a zone of ours");
    };
    if req.qclass != 1 {
        return refuse(RCODE_REFUSED, "class is not IN");
    }
    if !zc.allow_transfer.iter().any(|n| n.contains(&peer.ip())) {
        return refuse(RCODE_REFUSED, "client not in allow_transfer");
    }
    if zc.key.is_some() && !signed {
        return refuse(RCODE_REFUSED, "unsigned; the zone requires its TSIG key");
    }
    if req.qtype == xfr::T_IXFR && req.client_serial.is_none() {
        return refuse(RCODE_FORMERR, "IXFR without the client's SOA (RFC 1995 3)");
    }
    let Some(zone) = dns.zones.load().get(&req.apex).cloned() else {
        return refuse(RCODE_SERVFAIL, "zone not loaded (not transferred yet, or expired)");
    };
    let plan = match dns.xfr.journals.lock() {
        Ok(j) => xfr::plan(&req, zone, j.get(&req.apex)),
        Err(_) => xfr::plan(&req, zone, None),
    };
    Prepared::Serve {
        msg,
        plan,
        seq,
        opt,
        name: zc.name.clone(),
    }
}

/// Serves one AXFR/IXFR request on a TCP connection (after the responses
/// to earlier queries were written). An error means: close the connection.
pub(super) async fn serve_transfer<W: AsyncWrite + Unpin>(
    dns: &Dns,
    q: &[u8],
    peer: SocketAddr,
    wr: &mut W,
) -> std::io::Result<()> {
    let t = Instant::now();
    let (msg, plan, mut seq, opt, name) = match prepare(dns, q, peer) {
        Prepared::Reply(r) if r.is_empty() => return Ok(()),
        Prepared::Reply(r) => {
            dns.xfr.refused_out.fetch_add(1, Ordering::Relaxed);
            return write_msg(wr, &r).await;
        }
        Prepared::Serve {
            msg,
            plan,
            seq,
            opt,
            name,
        } => (msg, plan, seq, opt, name),
    };
    let mut r = Responder::new(&msg, &plan, xfr::MAX_MESSAGE)
        .map_err(std::io::Error::other)?
        .with_opt(opt);
    loop {
        match r.next_message(seq.as_deref_mut(), time48()) {
            Ok(Some(m)) => write_msg(wr, &m).await?,
            Ok(None) => break,
            Err(e) => {
                error!(zone = %name, %peer, error = %e, "dns: transfer out failed");
                return Err(std::io::Error::other(e));
            }
        }
    }
    info!(
        zone = %name,
        %peer,
        kind = %plan.kind(),
        serial = plan.zone().serial,
        messages = r.messages,
        records = r.records,
        signed = seq.is_some(),
        took = ?t.elapsed(),
        "zone transfer served"
    );
    dns.xfr.served_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

// ---------------------------------------------------------------------------
// Journal and NOTIFY out

async fn change_worker(weak: Weak<Dns>, mut rx: mpsc::UnboundedReceiver<Change>) {
    while let Some(c) = rx.recv().await {
        let Some(dns) = weak.upgrade() else { return };
        if let Some(old) = &c.old {
            match xfr::serial_cmp(c.new.serial, old.serial) {
                Some(std::cmp::Ordering::Greater) => {
                    let (o, n) = (old.clone(), c.new.clone());
                    match tokio::task::spawn_blocking(move || xfr::diff(&o, &n)).await {
                        Ok(Ok(d)) => dns.xfr.journal_push(&c.apex, [Arc::new(d)]),
                        Ok(Err(e)) => {
                            warn!(zone = %c.name, error = %e, "dns: no IXFR journal entry for this change");
                            dns.xfr.journal_clear(&c.apex);
                        }
                        Err(_) => dns.xfr.journal_clear(&c.apex),
                    }
                }
                Some(std::cmp::Ordering::Equal) => {
                    let (o, n) = (old.clone(), c.new.clone());
                    let changed = tokio::task::spawn_blocking(move || xfr::diff(&o, &n).map(|d| !d.is_empty()))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(false);
                    if changed {
                        warn!(zone = %c.name, serial = c.new.serial, "zone content changed but its SOA serial did not: secondaries keep the old version (increase the serial)");
                    }
                    continue;
                }
                _ => {
                    warn!(zone = %c.name, old = old.serial, new = c.new.serial, "zone serial went backwards: secondaries will not transfer it");
                    dns.xfr.journal_clear(&c.apex);
                }
            }
        }
        let Some(soa) = xfr::zone_soa(&c.new) else { continue };
        for target in &c.notify {
            let (name, apex, soa, key, target) = (c.name.clone(), c.apex.clone(), soa.clone(), c.key.clone(), *target);
            dns.xfr
                .spawn(async move { send_notify(&name, &apex, &soa, target, key).await });
        }
    }
}

/// Sends a NOTIFY until it is acknowledged or the attempts run out.
async fn send_notify(name: &str, apex: &[u8], soa: &Rr, target: SocketAddr, key: Option<Arc<Key>>) {
    let serial = soa.soa_serial().unwrap_or(0);
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(zone = %name, %target, error = %e, "dns: NOTIFY not sent: cannot open a socket");
            return;
        }
    };
    let mut last = String::from("no response");
    let mut buf = vec![0u8; 4096];
    for attempt in 1..=NOTIFY_ATTEMPTS {
        let id = random_id();
        let (msg, seq) = match xfr::build_notify(id, apex, Some(soa), key.clone(), time48()) {
            Ok(m) => m,
            Err(e) => {
                error!(zone = %name, error = %e, "dns: cannot build NOTIFY");
                return;
            }
        };
        if let Err(e) = sock.send_to(&msg, target).await {
            last = e.to_string();
        } else {
            let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT * attempt;
            let mut seq = seq;
            loop {
                let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                let (n, from) = match r {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        last = e.to_string();
                        break;
                    }
                    Ok(Ok(x)) => x,
                };
                if from != target || n < 12 || buf[..2] != id.to_be_bytes() {
                    continue; // not the answer to this attempt
                }
                match xfr::check_notify_response(buf[..n].to_vec(), id, seq.take(), time48()) {
                    Ok(()) => {
                        info!(zone = %name, %target, serial, attempt, "NOTIFY acknowledged");
                        return;
                    }
                    Err(e) => {
                        last = e.to_string();
                        break;
                    }
                }
            }
        }
    }
    warn!(zone = %name, %target, serial, attempts = NOTIFY_ATTEMPTS, last_error = %last, "dns: NOTIFY not acknowledged");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const ZONE_V1: &str = "$ORIGIN example.com.\n$TTL 3600\n\
        @ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n\
        @ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A 192.0.2.10\n";
    const APEX: &[u8] = b"\x07example\x03com\x00";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn tsig(secret: &[u8]) -> TsigKey {
        TsigKey {
            name: "xfr-key.".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: secret.to_vec(),
        }
    }

    fn cfg(listen: SocketAddr, zone: ZoneConfig) -> DnsConfig {
        DnsConfig {
            listen: vec![listen],
            workers: NonZeroU32::new(1),
            nsid: None,
            udp_payload: 1232,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_max_connections: NonZeroU32::new(64).unwrap(),
            tcp_limits: Default::default(),
            cookies: None,
            rrl: None,
            tsig_keys: vec![tsig(SECRET)],
            zones: vec![zone],
            state_dir: None,
        }
    }

    fn primary_zone(file: &std::path::Path, notify: Vec<SocketAddr>) -> ZoneConfig {
        ZoneConfig {
            name: "example.com.".into(),
            source: ZoneSource::File(file.to_path_buf()),
            key: Some("xfr-key.".into()),
            notify,
            allow_transfer: vec!["127.0.0.1/32".parse().unwrap()],
        }
    }

    fn secondary_zone(primary: SocketAddr) -> ZoneConfig {
        ZoneConfig {
            name: "example.com.".into(),
            source: ZoneSource::Secondary {
                primaries: vec![primary],
            },
            key: Some("xfr-key.".into()),
            notify: vec![],
            allow_transfer: vec![],
        }
    }

    /// A secondary that its own secondary at `downstream` transfers from.
    fn middle_zone(primary: SocketAddr, downstream: SocketAddr) -> ZoneConfig {
        ZoneConfig {
            notify: vec![downstream],
            allow_transfer: vec!["127.0.0.1/32".parse().unwrap()],
            ..secondary_zone(primary)
        }
    }

    fn key(secret: &[u8]) -> Arc<Key> {
        Arc::new(make_key(&tsig(secret)).unwrap())
    }

    async fn wait_serial(dns: &Dns, serial: u32) -> Arc<Zone> {
        let t = Instant::now();
        loop {
            if let Some(z) = dns.zones.load().get(APEX) {
                if z.serial == serial {
                    return z.clone();
                }
            }
            assert!(t.elapsed() < Duration::from_secs(15), "serial {serial} never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn rcode(m: &[u8]) -> u8 {
        m[3] & 0x0f
    }

    async fn stop(d: Arc<Dns>) {
        tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secondary_follows_primary_by_notify_and_ixfr() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("example.com.zone");
        std::fs::write(&file, ZONE_V1).unwrap();
        let (pa, sa, ta) = (free_addr(), free_addr(), free_addr());
        let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![sa])), "p", 1, &[]).unwrap();
        let secondary = Dns::start(&cfg(sa, middle_zone(pa, ta)), "s", 1, &[]).unwrap();
        let z1 = wait_serial(&secondary, 1).await;
        assert_eq!(z1.records, 4);
        assert_eq!(secondary.xfr.axfr_in.load(Ordering::Relaxed), 1);
        // the status says how and when each version came
        let st = &primary.zone_status()[0];
        assert_eq!((st.loaded_by, st.refreshed_unix), (Some("file"), None), "{st:?}");
        let st = &secondary.zone_status()[0];
        assert_eq!(st.loaded_by, Some("axfr"), "{st:?}");
        let loaded = st.loaded_unix.expect("load time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(loaded > 1_600_000_000 && loaded <= now, "{st:?}");
        // the refresh check is recorded right after the install
        let t = Instant::now();
        while secondary.zone_status()[0].refreshed_unix.is_none() {
            assert!(t.elapsed() < Duration::from_secs(15), "refresh time never recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(secondary.zone_status()[0].refreshed_unix >= Some(loaded));
        // a secondary of the secondary
        let tertiary = Dns::start(&cfg(ta, secondary_zone(sa)), "t", 1, &[]).unwrap();
        wait_serial(&tertiary, 1).await;

        // a new serial on the primary: NOTIFY, then an IXFR from its journal
        let v2 = ZONE_V1
            .replace(" 1 7200 ", " 2 7200 ")
            .replace("192.0.2.10", "192.0.2.11")
            + "new IN A 192.0.2.99\n";
        std::fs::write(&file, v2).unwrap();
        assert_eq!(primary.reload_zone("example.com").unwrap(), 2);
        let z2 = wait_serial(&secondary, 2).await;
        assert_eq!(secondary.xfr.ixfr_in.load(Ordering::Relaxed), 1);
        assert_eq!(secondary.zone_status()[0].loaded_by, Some("ixfr"));
        assert_eq!(secondary.zone_status()[0].serial, 2);
        assert_eq!(secondary.xfr.axfr_in.load(Ordering::Relaxed), 1);
        assert!(z2.node(b"\x03new\x07example\x03com\x00").is_some());
        let www = z2.node(b"\x03www\x07example\x03com\x00").unwrap().get(1).unwrap();
        assert_eq!(&www.rdata[0].wire[..], &[192, 0, 2, 11]);
        assert_eq!(
            primary.xfr.journals.lock().unwrap().get(APEX).map(Journal::len),
            Some(1)
        );
        // the secondary's journal has the difference too: its own secondary,
        // NOTIFYed, gets it as an IXFR
        assert_eq!(
            secondary.xfr.journals.lock().unwrap().get(APEX).map(Journal::len),
            Some(1)
        );
        let z3 = wait_serial(&tertiary, 2).await;
        assert_eq!(tertiary.xfr.ixfr_in.load(Ordering::Relaxed), 1);
        assert!(z3.node(b"\x03new\x07example\x03com\x00").is_some());
        stop(primary).await;
        stop(secondary).await;
        stop(tertiary).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_and_notify_policy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("example.com.zone");
        std::fs::write(&file, ZONE_V1).unwrap();
        let (pa, sa) = (free_addr(), free_addr());
        let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![])), "p", 1, &[]).unwrap();
        let here = SocketAddr::from(([127, 0, 0, 1], 5353));
        let elsewhere = SocketAddr::from(([127, 0, 0, 2], 5353));
        let axfr = |k: Option<Arc<Key>>| xfr::build_query(7, APEX, xfr::T_AXFR, None, k, time48()).unwrap().0;
        let reply_of = |p: Prepared| match p {
            Prepared::Reply(r) => r,
            Prepared::Serve { .. } => panic!("transfer allowed"),
        };
        // unsigned, though the zone has a key
        assert_eq!(rcode(&reply_of(prepare(&primary, &axfr(None), here))), RCODE_REFUSED);
        // a wrong secret: NOTAUTH (TSIG error BADSIG)
        let r = reply_of(prepare(
            &primary,
            &axfr(Some(key(b"fedcba9876543210fedcba9876543210"))),
            here,
        ));
        assert_eq!(rcode(&r), RCODE_NOTAUTH);
        // signed, but not in allow_transfer
        assert_eq!(
            rcode(&reply_of(prepare(&primary, &axfr(Some(key(SECRET))), elsewhere))),
            RCODE_REFUSED
        );
        // another zone
        let other = xfr::build_query::<Arc<Key>>(8, b"\x07example\x03org\x00", xfr::T_AXFR, None, None, time48())
            .unwrap()
            .0;
        assert_eq!(rcode(&reply_of(prepare(&primary, &other, here))), RCODE_NOTAUTH);
        // allowed
        match prepare(&primary, &axfr(Some(key(SECRET))), here) {
            Prepared::Serve { plan, seq, .. } => {
                assert_eq!(plan.kind(), "AXFR");
                assert!(seq.is_some());
            }
            Prepared::Reply(_) => panic!("transfer refused"),
        }

        // a signed SOA query is answered, signed; an unsigned one is not ours
        let soa_q = |k: Option<Arc<Key>>| xfr::build_query(10, APEX, 6, None, k, time48()).unwrap().0;
        let mut out = Vec::new();
        assert!(signed_soa(&primary, &soa_q(Some(key(SECRET))), here, &mut out));
        assert_eq!(rcode(&out), RCODE_NOERROR);
        assert!(signed_soa(
            &primary,
            &soa_q(Some(key(b"fedcba9876543210fedcba9876543210"))),
            here,
            &mut out
        ));
        assert_eq!(rcode(&out), RCODE_NOTAUTH);
        assert!(!signed_soa(&primary, &soa_q(None), here, &mut out));

        // NOTIFY: from the primary's address and signed, or refused
        let secondary = Dns::start(&cfg(sa, secondary_zone(pa)), "s", 1, &[]).unwrap();
        wait_serial(&secondary, 1).await;
        let soa = xfr::zone_soa(&secondary.zones.load().get(APEX).unwrap().clone()).unwrap();
        let n = |k: Option<Arc<Key>>| xfr::build_notify(9, APEX, Some(&soa), k, time48()).unwrap().0;
        let mut out = Vec::new();
        notify(&secondary, &n(None), here, &mut out);
        assert_eq!(rcode(&out), RCODE_REFUSED);
        notify(&secondary, &n(Some(key(SECRET))), elsewhere, &mut out);
        assert_eq!(rcode(&out), RCODE_REFUSED);
        notify(&secondary, &n(Some(key(SECRET))), here, &mut out);
        assert_eq!(rcode(&out), RCODE_NOERROR);
        assert_eq!(out[2] & 0x84, 0x84, "QR and AA");
        assert_eq!((out[2] >> 3) & 0x0f, 4, "opcode NOTIFY");
        // the primary is not a secondary of its own zone
        notify(&primary, &n(Some(key(SECRET))), here, &mut out);
        assert_eq!(rcode(&out), RCODE_REFUSED);
        stop(primary).await;
        stop(secondary).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_zone_expires_when_its_primary_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("example.com.zone");
        // refresh 2 s, retry 1 s, expire 3 s (the smallest the clamps allow)
        std::fs::write(&file, ZONE_V1.replace(" 1 7200 3600 1209600 300", " 1 2 1 3 300")).unwrap();
        let (pa, sa) = (free_addr(), free_addr());
        let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![])), "p", 1, &[]).unwrap();
        let secondary = Dns::start(&cfg(sa, secondary_zone(pa)), "s", 1, &[]).unwrap();
        wait_serial(&secondary, 1).await;
        let t = Instant::now();
        stop(primary).await;
        while secondary.zones.load().get(APEX).is_some() {
            assert!(t.elapsed() < Duration::from_secs(10), "the zone never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "expired early: {:?}",
            t.elapsed()
        );
        let status = secondary.zone_status();
        assert!(
            status[0].error.as_deref().is_some_and(|e| e.starts_with("expired")),
            "{:?}",
            status[0].error
        );
        stop(secondary).await;
    }

    #[test]
    fn keys_for_every_algorithm() {
        for a in [
            TsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512,
        ] {
            let k = make_key(&TsigKey {
                algorithm: a,
                ..tsig(SECRET)
            })
            .unwrap();
            assert_eq!(k.name().to_string(), "xfr-key");
        }
    }
}
