//! Zones: loading files (start, reload, one zone), secondaries' saved
//! copies, installing a version, and the per-zone status (where each
//! version came from, errors, refresh checks).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyedge_dns::zone::{self, Zone, ZoneSet};
use tracing::{error, info, warn};

use super::{domain_wire, rrl_of, settings_of, unix_secs, xfr, Dns};
use crate::config::{DnsConfig, SigningConfig, ZoneConfig, ZoneSource};

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
    /// Loads that failed since start: file (reload, reload-zone) or
    /// secondary refresh/transfer.
    pub load_failures: u64,
    /// Secondaries: seconds until the version served expires unless a
    /// primary confirms it (0: expired).
    pub expires_in_seconds: Option<f64>,
    /// Signed zones: seconds until the earliest RRSIG of the version
    /// served expires (negative: expired, still served).
    pub signatures_expire_in_seconds: Option<f64>,
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

/// Where one zone version (one `Arc<Zone>`) came from.
pub(super) struct Origin {
    zone: std::sync::Weak<Zone>,
    unix: u64,
    by: LoadedBy,
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
                let prev = old.and_then(|o| o.get(&apex)).map(|p| &**p);
                match load_file_zone(z, path, prev) {
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

/// Loads a file zone; with `dnssec` configured, signs it (keys read now,
/// signatures of unchanged RRsets reused from `prev` while fresh). Errors
/// name the zone.
pub fn load_file_zone(z: &ZoneConfig, path: &std::path::Path, prev: Option<&Zone>) -> Result<Zone, String> {
    let Some(d) = &z.dnssec else {
        return zone::load_file(path, &z.name).map_err(|e| e.to_string());
    };
    let policy = signing_policy(&z.name, d)?;
    let b = zone::load_file_records(path, &z.name).map_err(|e| e.to_string())?;
    anyedge_dns::sign::sign_zone(b, &policy, prev, unix_secs()).map_err(|e| format!("zone {}: {e}", z.name))
}

/// The keys of a signed zone, read from their files.
pub fn signing_policy(zone: &str, d: &SigningConfig) -> Result<anyedge_dns::sign::Policy, String> {
    let mut keys = Vec::with_capacity(d.keys.len());
    for stem in &d.keys {
        let read = |ext: &str| {
            let p = std::path::PathBuf::from(format!("{}.{ext}", stem.display()));
            std::fs::read_to_string(&p).map_err(|e| format!("zone {zone}: key file {}: {e}", p.display()))
        };
        let k = anyedge_dns::sign::SigningKey::from_files(&read("key")?, &read("private")?)
            .map_err(|e| format!("zone {zone}: key {}: {e}", stem.display()))?;
        keys.push(Arc::new(k));
    }
    Ok(anyedge_dns::sign::Policy {
        keys,
        denial: d.denial,
        validity: u32::try_from(d.signature_validity.as_secs()).unwrap_or(u32::MAX / 4),
    })
}

/// Signature lifetime of a zone signed here.
fn validity_of(d: &SigningConfig) -> u32 {
    u32::try_from(d.signature_validity.as_secs()).unwrap_or(u32::MAX / 4)
}

/// Re-signs signed zones before their signatures expire: every
/// `interval`, a zone with less than a third of its signature validity
/// left on some RRSIG is reloaded (its file read again and signed; the
/// signatures still fresh are kept).
pub(super) fn start_resigner(dns: &Arc<super::Dns>) {
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(dns);
    h.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let Some(dns) = weak.upgrade() else { return };
            if dns.stop.load(Ordering::Relaxed) {
                return;
            }
            let cfg = dns.cfg.load_full();
            let zones = dns.zones.load_full();
            for z in &cfg.zones {
                if let Some(cur) = zones.get(&domain_wire(&z.name)) {
                    let v = z.dnssec.as_ref().map(validity_of);
                    super::sigexpiry::observe(&z.name, cur, v, unix_secs());
                }
                let Some(d) = &z.dnssec else { continue };
                let Some(cur) = zones.get(&domain_wire(&z.name)) else {
                    continue;
                };
                let validity = u32::try_from(d.signature_validity.as_secs()).unwrap_or(u32::MAX / 4);
                if anyedge_dns::sign::needs_resign(cur, validity, unix_secs()) {
                    info!(zone = %z.name, "signatures due for renewal: re-signing");
                    let (d2, name) = (dns.clone(), z.name.clone());
                    let _ = tokio::task::spawn_blocking(move || d2.reload_zone(&name)).await;
                }
            }
        }
    });
}

/// Checks that every file zone loads (for `anyedge check`).
pub fn check_zones(cfg: &DnsConfig) -> Result<usize, String> {
    let mut n = 0;
    for z in &cfg.zones {
        if let ZoneSource::File(p) = &z.source {
            let loaded = load_file_zone(z, p, None)?;
            n += loaded.records;
        }
    }
    Ok(n)
}

impl Dns {
    /// Records where a zone version came from (for the status).
    pub(crate) fn note_loaded(&self, z: &Arc<Zone>, by: LoadedBy) {
        let unix = unix_secs();
        let cfg = self.cfg.load();
        let zc = cfg.zones.iter().find(|c| domain_wire(&c.name)[..] == z.apex[..]);
        if let Some(zc) = zc {
            let v = zc.dnssec.as_ref().map(validity_of);
            super::sigexpiry::observe(&zc.name, z, v, unix);
        }
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

    /// Counts a failed load of zone `name` (file or transfer).
    pub(crate) fn note_load_failure(&self, name: &str) {
        if let Ok(mut m) = self.load_failures.lock() {
            *m.entry(name.to_string()).or_default() += 1;
        }
    }

    /// Records when a secondary zone expires unless refreshed.
    pub(crate) fn note_expires(&self, name: &str, at: Option<std::time::Instant>) {
        if let (Ok(mut m), Some(at)) = (self.expires.lock(), at) {
            m.insert(name.to_string(), at);
        }
    }

    /// Records a successful refresh check of a secondary zone.
    pub(crate) fn note_refreshed(&self, name: &str) {
        let unix = unix_secs();
        if let Ok(mut m) = self.refreshed.lock() {
            m.insert(name.to_string(), unix);
        }
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
        for (z, _) in &errors {
            self.note_load_failure(z);
        }
        self.zones.store(Arc::new(set));
        self.settings.store(Arc::new(settings_of(cfg, pop)));
        if old_cfg.rrl != cfg.rrl {
            self.rrl.store(Arc::new(rrl_of(cfg)));
        }
        self.apply_dnstap(cfg, pop);
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
        let prev = self.zones.load_full().get(&domain_wire(&canon)).cloned();
        let r = load_file_zone(zc, path, prev.as_deref());
        match r {
            Ok(z) => {
                let serial = z.serial;
                let old = self.zones.load_full();
                let z = Arc::new(z);
                self.note_loaded(&z, LoadedBy::File);
                self.install(z);
                xfr::reloaded(self, &old);
                self.set_error(&canon, None);
                info!(zone = %canon, serial, "zone reloaded");
                Ok(serial)
            }
            Err(e) => {
                error!(zone = %canon, error = %e, "zone reload failed; the previous version keeps serving");
                self.note_load_failure(&canon);
                self.set_error(&canon, Some(e.to_string()));
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

    /// Stops answering for zone `apex` (a secondary zone expired).
    pub(super) fn withdraw(&self, apex: &[u8]) {
        self.zones.rcu(|cur| {
            let mut s = ZoneSet::clone(cur);
            s.remove(apex);
            s
        });
    }

    /// Sets (`Some`) or clears the last error of zone `name` (shown in the
    /// status; the previous version keeps serving).
    pub(super) fn set_error(&self, name: &str, e: Option<String>) {
        if let Ok(mut m) = self.errors.lock() {
            match e {
                Some(e) => m.insert(name.to_string(), e),
                None => m.remove(name),
            };
        }
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
        let failures = self.load_failures.lock().map(|r| r.clone()).unwrap_or_default();
        let expires = self.expires.lock().map(|r| r.clone()).unwrap_or_default();
        let now = std::time::Instant::now();
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
                    load_failures: failures.get(&z.name).copied().unwrap_or(0),
                    expires_in_seconds: if secondary {
                        expires
                            .get(&z.name)
                            .map(|at| at.saturating_duration_since(now).as_secs_f64())
                    } else {
                        None
                    },
                    signatures_expire_in_seconds: loaded.and_then(|l| super::sigexpiry::expire_in(l, unix_secs())),
                }
            })
            .collect()
    }
}
