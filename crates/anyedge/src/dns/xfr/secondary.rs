//! Secondary zones: one task per zone follows the SOA timers, asks the
//! primaries for their SOA and pulls IXFR/AXFR, installs and saves the new
//! version; the tasks follow the configuration on reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyedge_dns::answer::{RCODE_FORMERR, RCODE_NOTIMP, RCODE_SERVFAIL};
use anyedge_dns::xfr::{self, Due, Received, Refresh, Rr, XfrError};
use anyedge_dns::zone::Zone;
use domain::tsig::Key;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::tsig::{key_config, zone_key};
use super::{random_id, soa_timers, time48, write_msg, Change, Secondary, MESSAGE_TIMEOUT};
use crate::config::{DnsConfig, ZoneConfig, ZoneSource};
use crate::dns::{domain_wire, Dns};

/// Connecting to a primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest transfer we accept (records), against a runaway primary.
const MAX_TRANSFER_RECORDS: usize = 10_000_000;

/// One secondary task per secondary zone, restarted when its settings
/// (primaries, key) change.
pub(super) fn reconcile(dns: &Arc<Dns>, cfg: &DnsConfig) {
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
            d.note_expires(&zc.name, refresh.expires_at());
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
                dns.withdraw(&apex);
                if let Ok(mut l) = last.lock() {
                    *l = None;
                }
                dns.xfr.journal_clear(&apex);
                let why = format!(
                    "expired: no primary answered within the SOA expire time ({})",
                    last_error.as_deref().unwrap_or("no error recorded")
                );
                error!(zone = %zc.name, "zone expired; no longer answering for it until a transfer succeeds");
                dns.set_error(&zc.name, Some(why));
                continue;
            }
            Some(Due::Check) => {}
        }
        let current = dns.zones.load().get(&apex).cloned();
        match check(&dns, &zc, &apex, key.clone(), current.clone()).await {
            Ok(zone) => {
                if current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &zone)) {
                    dns.install(zone.clone());
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
                            crate::dns::save_zone(&dir, &name, &z);
                        } else {
                            crate::dns::touch_saved(&dir, &name);
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
                dns.set_error(&zc.name, None);
                match soa_timers(&zone) {
                    Some(t) => refresh.on_success(Instant::now(), t),
                    None => refresh.on_failure(Instant::now()),
                }
                dns.note_expires(&zc.name, refresh.expires_at());
            }
            Err(e) => {
                refresh.on_failure(Instant::now());
                dns.note_load_failure(&zc.name);
                let retry = refresh.next_check(Instant::now());
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!(zone = %zc.name, error = %e, retry_in = ?retry, "zone refresh failed");
                } else {
                    debug!(zone = %zc.name, error = %e, retry_in = ?retry, "zone refresh failed again");
                }
                if !refresh.is_expired() {
                    dns.set_error(&zc.name, Some(format!("refresh failed: {e}")));
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
            dns.note_loaded(&z, crate::dns::LoadedBy::Axfr);
            (z, None)
        }
        Received::Ixfr { zone, diffs } => {
            dns.xfr.ixfr_in.fetch_add(1, Ordering::Relaxed);
            let z = Arc::new(zone);
            dns.note_loaded(&z, crate::dns::LoadedBy::Ixfr);
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
            let _ = dns.xfr.journal_diff(apex, old.clone(), zone.clone()).await;
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
