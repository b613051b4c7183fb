//! A service's backend pool at run time: reconciling the backends to the
//! desired set (`anyedge_lb::pool::desired` of the configuration's
//! backends, the discovered sets and the operator's runtime changes),
//! removed backends draining out, slow start's table rebuilds, the runtime
//! changes kept in the state directory, and the discovery tasks' lifecycle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyedge_lb::health::{Health, State};
use anyedge_lb::pool::{self, Member, Origin, Overlay};
use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::service::{run_checker, thresholds};
use super::{Backend, BackendStats, Service};
use crate::config::{BackendConfig, Discover, ServiceConfig};
use crate::logutil::LogLimiter;

/// How often a service looks at its draining-out and ramping backends.
const MAINTAIN_EVERY: Duration = Duration::from_millis(250);
/// The runtime changes' file in the state directory.
pub const RUNTIME_FILE: &str = "lb-runtime.json";

static LOG_CONFLICT: LogLimiter = LogLimiter::new(5);
/// Pool changes (a resolver or file may churn through many backends).
static LOG_POOL: LogLimiter = LogLimiter::new(50);

/// A service's background tasks and the settings they run for.
#[derive(Default)]
pub struct Tasks {
    key: Option<(Option<Discover>, Option<PathBuf>)>,
    discovery: Vec<JoinHandle<()>>,
    maintain: Option<JoinHandle<()>>,
}

impl Tasks {
    pub(super) fn abort_all(&mut self) {
        for h in self.discovery.drain(..) {
            h.abort();
        }
        if let Some(h) = self.maintain.take() {
            h.abort();
        }
        self.key = None;
    }
}

/// Starts (or restarts, when their settings changed) the service's
/// discovery tasks and its maintenance task.
pub(super) fn ensure_tasks(svc: &Arc<Service>) {
    let sc = svc.cfg.load_full();
    let key = (sc.discover.clone(), sc.backends_file.clone());
    let mut t = svc.tasks.lock().unwrap_or_else(|p| p.into_inner());
    if t.maintain.is_none() {
        t.maintain = Some(tokio::spawn(maintain(Arc::downgrade(svc))));
    }
    if t.key.as_ref() == Some(&key) {
        return;
    }
    for h in t.discovery.drain(..) {
        h.abort();
    }
    if let Ok(mut d) = svc.discovered.lock() {
        // a source no longer configured gives nothing any more
        if key.0.is_none() {
            d.remove(&Origin::Dns);
        }
        if key.1.is_none() {
            d.remove(&Origin::File);
        }
    }
    if let Some(d) = &key.0 {
        t.discovery
            .push(tokio::spawn(super::discovery::run_dns(Arc::downgrade(svc), d.clone())));
    }
    if let Some(f) = &key.1 {
        t.discovery
            .push(tokio::spawn(super::discovery::run_file(Arc::downgrade(svc), f.clone())));
    }
    t.key = Some(key);
}

/// Drops backends whose drain is over, and rebuilds the tables while a
/// backend's weight ramps up (slow start).
async fn maintain(svc: Weak<Service>) {
    loop {
        tokio::time::sleep(MAINTAIN_EVERY).await;
        let Some(s) = svc.upgrade() else { return };
        let backends = s.backends();
        if backends.iter().any(|b| b.is_removed()) {
            reconcile(&s);
        } else {
            let slow = s.cfg.load().slow_start;
            if backends
                .iter()
                .any(|b| b.eligible() && pool::ramping(b.cfg.load().weight, b.up_for(), slow))
                // and once more right after the ramp ended
                || backends.iter().any(|b| {
                    b.up_for()
                        .is_some_and(|u| !slow.is_zero() && u >= slow && u < slow + MAINTAIN_EVERY * 2)
                })
            {
                s.rebuild_selector();
            }
        }
    }
}

/// The configuration file's backends as pool members.
fn config_members(sc: &ServiceConfig) -> Vec<Member> {
    sc.backends
        .iter()
        .map(|b| Member {
            name: b.name.clone(),
            address: b.address,
            weight: b.weight,
            origin: Origin::Config,
        })
        .collect()
}

/// Replaces one discovered set; reconciles if it changed. Returns whether
/// it changed.
pub(super) fn install(svc: &Arc<Service>, origin: Origin, mut members: Vec<Member>) -> bool {
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let changed = match svc.discovered.lock() {
        Ok(mut d) => {
            if d.get(&origin) == Some(&members) {
                false
            } else {
                let before = d.get(&origin).map_or(0, Vec::len);
                if let Some(s) = LOG_POOL.allow() {
                    info!(suppressed = s, service = %svc.name, origin = origin.as_str(), before, now = members.len(),
                          backends = ?members.iter().take(32).map(|m| m.name.as_str()).collect::<Vec<_>>(),
                          "discovered backends changed");
                }
                d.insert(origin, members);
                true
            }
        }
        Err(_) => false,
    };
    if changed {
        reconcile(svc);
    }
    changed
}

/// Brings the service's backends to the desired set: new ones start down
/// (traffic after `rise` checks), kept ones keep health, counters and
/// connections, removed ones drain out.
pub(super) fn reconcile(svc: &Arc<Service>) {
    let _g = svc.reconcile_lock.lock().unwrap_or_else(|p| p.into_inner());
    let sc = svc.cfg.load_full();
    let statics = config_members(&sc);
    let discovered = svc.discovered.lock().map(|d| d.clone()).unwrap_or_default();
    let overlay = svc.overlay.lock().map(|o| o.clone()).unwrap_or_default();
    let none = Vec::new();
    let dns = discovered.get(&Origin::Dns).unwrap_or(&none);
    let file = discovered.get(&Origin::File).unwrap_or(&none);
    let (want, conflicts) = pool::desired(&[&statics, dns, file], &overlay);
    for c in conflicts {
        if let Some(s) = LOG_CONFLICT.allow() {
            warn!(service = %svc.name, backend = %c.name, address = %c.address, origin = c.origin.as_str(),
                  suppressed = s, "backend name already used by another source: ignored");
        }
    }
    let old = svc.backends.load_full();
    let now = Instant::now();
    let mut next: Vec<Arc<Backend>> = Vec::with_capacity(want.len());
    for m in &want {
        let bc = match sc
            .backends
            .iter()
            .find(|b| m.origin == Origin::Config && b.name == m.name)
        {
            Some(b) => BackendConfig {
                weight: m.weight,
                ..b.clone()
            },
            None => BackendConfig {
                name: m.name.clone(),
                address: m.address,
                weight: m.weight,
                proxy: sc.default_proxy,
                drain: false,
                max_connections: None,
            },
        };
        let reuse = old
            .iter()
            .find(|b| b.name == m.name && b.cfg.load().address == m.address);
        let b = match reuse {
            Some(b) => {
                let prev = b.cfg.swap(Arc::new(bc.clone()));
                if prev.drain != bc.drain {
                    info!(service = %sc.name, backend = %bc.name, drain = bc.drain, "backend drain changed");
                }
                if prev.weight != bc.weight {
                    if let Some(s) = LOG_POOL.allow() {
                        info!(suppressed = s, service = %sc.name, backend = %bc.name, from = prev.weight, to = bc.weight, "backend weight changed");
                    }
                }
                if let Ok(mut h) = b.health.lock() {
                    h.set_thresholds(thresholds(&sc));
                }
                if let Ok(mut o) = b.origin.lock() {
                    *o = m.origin;
                }
                let back = b.removed_at.lock().map(|mut r| r.take().is_some()).unwrap_or(false);
                if back {
                    // back before its drain ended: checks again, from down
                    b.up.store(false, Ordering::Relaxed);
                    if let Ok(mut h) = b.health.lock() {
                        *h = Health::new(thresholds(&sc), State::Down, now);
                    }
                    start_checker(svc, b);
                    if let Some(s) = LOG_POOL.allow() {
                        info!(suppressed = s, service = %sc.name, backend = %b.name, origin = m.origin.as_str(), "backend added back");
                    }
                }
                b.clone()
            }
            None => {
                // A new backend starts down: traffic only after it passed
                // `rise` checks (the first check runs at once).
                let b = Arc::new(Backend {
                    name: bc.name.clone(),
                    cfg: ArcSwap::from_pointee(bc.clone()),
                    origin: Mutex::new(m.origin),
                    up_since: Mutex::new(None),
                    removed_at: Mutex::new(None),
                    up: AtomicBool::new(false),
                    admin_drain: AtomicBool::new(false),
                    health: Mutex::new(Health::new(thresholds(&sc), State::Down, now)),
                    active: AtomicU64::new(0),
                    stats: BackendStats::default(),
                    connect_time: crate::hist::AtomicHistogram::new(crate::hist::CONNECT_BUCKETS),
                    checker: Mutex::new(None),
                });
                start_checker(svc, &b);
                if !old.is_empty() || m.origin != Origin::Config {
                    if let Some(s) = LOG_POOL.allow() {
                        info!(suppressed = s, service = %sc.name, backend = %b.name, address = %m.address, origin = m.origin.as_str(),
                              "backend added");
                    }
                }
                b
            }
        };
        b.admin_drain
            .store(overlay.drained.contains(&m.name), Ordering::Relaxed);
        next.push(b);
    }
    for b in old.iter() {
        if next.iter().any(|n| Arc::ptr_eq(n, b)) {
            continue;
        }
        let since = match b.removed_at.lock() {
            Ok(mut r) => match *r {
                Some(t) => t,
                None => {
                    // (its checks go on: it may serve as the fallback
                    // until a replacement is up)
                    *r = Some(now);
                    if let Some(s) = LOG_POOL.allow() {
                        info!(suppressed = s, service = %sc.name, backend = %b.name, active = b.active.load(Ordering::Relaxed),
                              "backend removed: draining (no new connections)");
                    }
                    now
                }
            },
            Err(_) => now,
        };
        let active = b.active.load(Ordering::Relaxed);
        // a removed backend still up is the last resort while nothing else
        // can serve (until its drain_timeout); one that is down just goes
        let last_resort = b.fallback() && !next.iter().any(|n| n.eligible());
        let removed_for = now.duration_since(since);
        if pool::removal_done(
            if last_resort { active.max(1) } else { active },
            removed_for,
            sc.drain_timeout,
        ) {
            b.stop_checker();
            if let Some(s) = LOG_POOL.allow() {
                info!(suppressed = s, service = %sc.name, backend = %b.name, cut = active, "backend removed");
            }
        } else {
            next.push(b.clone());
        }
    }
    svc.backends.store(Arc::new(next));
    svc.rebuild_selector();
}

fn start_checker(svc: &Arc<Service>, b: &Arc<Backend>) {
    let h = tokio::spawn(run_checker(Arc::downgrade(svc), Arc::downgrade(b)));
    if let Ok(mut g) = b.checker.lock() {
        if let Some(old) = g.replace(h) {
            old.abort();
        }
    }
}

// ------------------------------------------------------------ runtime changes

/// Why a runtime change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no service {0:?}")]
    NoService(String),
    #[error("no backend {backend:?} in service {service:?}")]
    NoBackend { service: String, backend: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save the runtime changes in {path}: {error}")]
    Save { path: String, error: String },
}

/// What one runtime change did.
pub struct RuntimeDone {
    pub backend: String,
    /// Kept in the state directory (false without `pop.state_dir`: lost at
    /// the next restart).
    pub persisted: bool,
}

/// A runtime change of one service's overlay.
pub enum Change {
    Add {
        name: Option<String>,
        address: SocketAddr,
        weight: u32,
    },
    Remove {
        backend: String,
    },
    Weight {
        backend: String,
        weight: u32,
    },
}

impl super::Edge {
    /// Applies a runtime change: checks it, saves every service's changes in
    /// the state directory (refused if that fails), then reconciles.
    pub fn runtime_change(&self, service: &str, change: Change) -> Result<RuntimeDone, RuntimeError> {
        let _g = self.runtime_lock.lock().unwrap_or_else(|p| p.into_inner());
        let svc = self
            .service(service)
            .ok_or_else(|| RuntimeError::NoService(service.to_string()))?;
        let mut ov = svc.overlay.lock().map(|o| o.clone()).unwrap_or_default();
        let known = |n: &str| svc.backends().iter().any(|b| b.name == n && !b.is_removed());
        let backend = match change {
            Change::Add { name, address, weight } => {
                let name = name.unwrap_or_else(|| pool::derived_name(address));
                check_runtime_name(&name)?;
                pool::check_address(address.ip()).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
                if address.port() == 0 {
                    return Err(RuntimeError::Invalid("port must not be 0".into()));
                }
                check_weight(weight)?;
                if known(&name) && !ov.added.contains_key(&name) {
                    return Err(RuntimeError::Invalid(format!(
                        "backend {name:?} exists already (set its weight, or remove it first)"
                    )));
                }
                ov.removed.remove(&name);
                ov.weights.remove(&name);
                ov.added.insert(name.clone(), (address, weight));
                name
            }
            Change::Remove { backend } => {
                if !known(&backend) {
                    return Err(RuntimeError::NoBackend {
                        service: service.to_string(),
                        backend,
                    });
                }
                if ov.added.remove(&backend).is_none() {
                    ov.removed.insert(backend.clone());
                }
                ov.weights.remove(&backend);
                ov.drained.remove(&backend);
                backend
            }
            Change::Weight { backend, weight } => {
                check_weight(weight)?;
                if !known(&backend) {
                    return Err(RuntimeError::NoBackend {
                        service: service.to_string(),
                        backend,
                    });
                }
                match ov.added.get_mut(&backend) {
                    Some(a) => a.1 = weight,
                    None => {
                        ov.weights.insert(backend.clone(), weight);
                    }
                }
                backend
            }
        };
        let persisted = self.save_overlays(Some((service, &ov)))?;
        if let Ok(mut o) = svc.overlay.lock() {
            *o = ov;
        }
        reconcile(&svc);
        Ok(RuntimeDone { backend, persisted })
    }

    /// Saves the drains after an admin drain/undrain (which changed the
    /// service's overlay already). Returns whether they were saved.
    pub fn save_runtime(&self) -> Result<bool, RuntimeError> {
        let _g = self.runtime_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.save_overlays(None)
    }

    /// Writes every service's overlay (with `replace` instead of one) to
    /// the state directory. Ok(false): no state directory configured.
    fn save_overlays(&self, replace: Option<(&str, &Overlay)>) -> Result<bool, RuntimeError> {
        let Some(dir) = self.config().state_dir.clone() else {
            return Ok(false);
        };
        let mut all: BTreeMap<String, Overlay> = self
            .services()
            .iter()
            .filter_map(|s| s.overlay.lock().ok().map(|o| (s.name.clone(), o.clone())))
            .collect();
        // services not running now (removed by a reload) keep theirs
        if let Ok(p) = self.pending_overlays.lock() {
            for (k, v) in p.iter() {
                all.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some((s, o)) = replace {
            all.insert(s.to_string(), o.clone());
        }
        all.retain(|_, o| !o.is_empty());
        let path = dir.join(RUNTIME_FILE);
        write_atomic(&path, &overlays_to_json(&all)).map_err(|e| RuntimeError::Save {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        Ok(true)
    }
}

fn check_weight(w: u32) -> Result<(), RuntimeError> {
    if w > pool::MAX_WEIGHT {
        return Err(RuntimeError::Invalid(format!(
            "weight {w} is out of range 0..={}",
            pool::MAX_WEIGHT
        )));
    }
    Ok(())
}

/// A backend name from the API or a file: 1-128 characters of letters,
/// digits and `.-_:[]` (derived names are `IP:PORT`).
pub(super) fn check_runtime_name(n: &str) -> Result<(), RuntimeError> {
    if n.is_empty() || n.len() > 128 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b)) {
        return Err(RuntimeError::Invalid(format!(
            "backend name {n:?}: 1-128 characters of letters, digits and .-_:[]"
        )));
    }
    Ok(())
}

fn write_atomic(path: &Path, v: &Value) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(v).unwrap_or_default().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn overlays_to_json(all: &BTreeMap<String, Overlay>) -> Value {
    let services: serde_json::Map<String, Value> = all
        .iter()
        .map(|(name, o)| {
            let added: serde_json::Map<String, Value> = o
                .added
                .iter()
                .map(|(n, (a, w))| (n.clone(), json!({ "address": a.to_string(), "weight": w })))
                .collect();
            (
                name.clone(),
                json!({
                    "added": added,
                    "removed": o.removed,
                    "weights": o.weights,
                    "drained": o.drained,
                }),
            )
        })
        .collect();
    json!({ "version": 1, "services": services })
}

/// Reads the runtime changes saved in `dir` (none if there is no file; an
/// unreadable file is an error: starting without them would silently undo
/// the operator's changes).
pub fn load_overlays(dir: &Path) -> anyhow::Result<BTreeMap<String, Overlay>> {
    let path = dir.join(RUNTIME_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    overlays_from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn overlays_from_json(text: &str) -> Result<BTreeMap<String, Overlay>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let Some(services) = v.get("services").and_then(Value::as_object) else {
        return Err("no \"services\" object".into());
    };
    let names = |x: Option<&Value>| -> Result<std::collections::BTreeSet<String>, String> {
        match x {
            None => Ok(Default::default()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "a name is not a string".to_string())
                })
                .collect(),
            Some(_) => Err("expected a list of names".into()),
        }
    };
    for (svc, o) in services {
        let mut ov = Overlay {
            removed: names(o.get("removed"))?,
            drained: names(o.get("drained"))?,
            ..Overlay::default()
        };
        if let Some(a) = o.get("added").and_then(Value::as_object) {
            for (n, b) in a {
                let addr: SocketAddr = b
                    .get("address")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{svc}: added {n:?}: bad address"))?;
                let w = b
                    .get("weight")
                    .and_then(Value::as_u64)
                    .and_then(|w| u32::try_from(w).ok())
                    .filter(|w| *w <= pool::MAX_WEIGHT)
                    .ok_or_else(|| format!("{svc}: added {n:?}: bad weight"))?;
                ov.added.insert(n.clone(), (addr, w));
            }
        }
        if let Some(ws) = o.get("weights").and_then(Value::as_object) {
            for (n, w) in ws {
                let w = w
                    .as_u64()
                    .and_then(|w| u32::try_from(w).ok())
                    .filter(|w| *w <= pool::MAX_WEIGHT)
                    .ok_or_else(|| format!("{svc}: weight of {n:?}: bad weight"))?;
                ov.weights.insert(n.clone(), w);
            }
        }
        out.insert(svc.clone(), ov);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_round_trip() {
        let mut o = Overlay::default();
        o.added.insert("n1".into(), ("192.0.2.1:80".parse().unwrap(), 3));
        o.removed.insert("192.0.2.9:80".into());
        o.weights.insert("b1".into(), 0);
        o.drained.insert("b2".into());
        let all = BTreeMap::from([("web".to_string(), o)]);
        let text = overlays_to_json(&all).to_string();
        assert_eq!(overlays_from_json(&text).unwrap(), all);
        assert!(overlays_from_json("{\"services\":{\"w\":{\"weights\":{\"x\":99999}}}}").is_err());
        assert!(overlays_from_json("[]").is_err());
    }

    #[test]
    fn runtime_names() {
        assert!(check_runtime_name("192.0.2.1:80").is_ok());
        assert!(check_runtime_name("[2001:db8::1]:80").is_ok());
        assert!(check_runtime_name("node-b1").is_ok());
        assert!(check_runtime_name("").is_err());
        assert!(check_runtime_name("a b").is_err());
        assert!(check_runtime_name(&"x".repeat(129)).is_err());
    }
}
