//! Services and backends: configuration snapshots, health state and its
//! active checks, counters, and backend selection (Maglev, round robin,
//! least connections).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyedge_lb::health::{FailReason, Health, State, Thresholds};
use anyedge_lb::maglev::{self, Maglev};
use anyedge_lb::pool::{self, Member, Origin, Overlay};
use anyedge_lb::select;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{BackendConfig, Balance, ServiceConfig};
use crate::health as checks;

/// Labels of per-backend metric families: (service, backend).
pub type BackendLabels = Vec<(String, String)>;

/// Latency of successful health checks, per backend (registered by the
/// admin API; recorded on the control path only).
pub static CHECK_LATENCY: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<BackendLabels, prometheus_client::metrics::histogram::Histogram>,
> = std::sync::LazyLock::new(|| {
    prometheus_client::metrics::family::Family::new_with_constructor(|| {
        prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
        )
    })
});

crate::counter_set! {
    /// Counters of one service. All relaxed atomics: exact totals, no ordering.
    pub struct ServiceStats {
        accepted: "accepted" => "anyedge_connections_accepted",
        completed: "completed" => "anyedge_connections_completed",
        rejected_global_cap: "rejected.global_cap" => "anyedge_connections_failed" ["reason" = "global_cap"],
        rejected_service_cap: "rejected.service_cap" => "anyedge_connections_failed" ["reason" = "service_cap"],
        /// Nothing to try: no backend healthy, all drained or at their cap.
        no_backend: "rejected.no_backend" => "anyedge_connections_failed" ["reason" = "no_backend"],
        /// Every backend tried failed to connect (refused, error, timeout):
        /// the access log's `connect_failed`.
        connect_failed: "rejected.connect_failed" => "anyedge_connections_failed" ["reason" = "connect_failed"],
        client_silent: "rejected.client_silent" => "anyedge_connections_failed" ["reason" = "client_silent"],
        /// The client closed (or failed) before sending its first bytes.
        client_closed_early: "rejected.client_closed_early" => "anyedge_connections_failed" ["reason" = "client_closed_early"],
        bad_proxy_header: "rejected.bad_proxy_header" => "anyedge_connections_failed" ["reason" = "bad_proxy_header"],
        untrusted_proxy_header: "rejected.untrusted_proxy_header" => "anyedge_connections_failed" ["reason" = "untrusted_proxy_header"],
        idle_timeouts: "idle_timeouts" => "anyedge_connections_failed" ["reason" = "idle_timeout"],
        retries: "retries" => "anyedge_backend_retries",
        /// Discovery answers or files refused (the last good set kept).
        discovery_errors: "discovery_errors" => "anyedge_discovery_errors",
    }
}

crate::counter_set! {
    /// Counters of one backend.
    pub struct BackendStats {
        connections: "connections" => "anyedge_backend_connections",
        bytes_to_backend: "bytes_to_backend" => "anyedge_backend_bytes" ["direction" = "to_backend"],
        bytes_to_client: "bytes_to_client" => "anyedge_backend_bytes" ["direction" = "to_client"],
        connect_refused: "connect_refused" => "anyedge_backend_connect_failures" ["cause" = "refused"],
        connect_timeout: "connect_timeout" => "anyedge_backend_connect_failures" ["cause" = "timeout"],
        connect_error: "connect_error" => "anyedge_backend_connect_failures" ["cause" = "error"],
        /// Connections the backend accepted but never answered (idle timeout).
        silent_backend: "silent_backend" => "anyedge_backend_silent",
        checks_ok: "checks_ok" => "anyedge_health_checks" ["result" = "ok"],
        checks_failed: "checks_failed" => "anyedge_health_checks" ["result" = "failed"],
    }
}

pub struct Backend {
    pub name: String,
    pub(super) cfg: ArcSwap<BackendConfig>,
    /// Where the backend comes from (file, DNS, watched file, runtime).
    pub(super) origin: Mutex<Origin>,
    /// Since when it is up (slow start ramps from there).
    pub(super) up_since: Mutex<Option<std::time::Instant>>,
    /// Removed from every source at this time: no new connections; it
    /// disappears once its connections end or `drain_timeout` passes.
    pub(super) removed_at: Mutex<Option<std::time::Instant>>,
    pub(super) up: AtomicBool,
    /// Drained through the admin API (kept across reloads, unlike `drain`
    /// in the config file, which the file controls).
    pub(super) admin_drain: AtomicBool,
    pub health: Mutex<Health>,
    pub active: AtomicU64,
    pub stats: BackendStats,
    /// Successful connects to this backend from real traffic.
    pub connect_time: crate::hist::AtomicHistogram,
    pub(super) checker: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    pub fn config(&self) -> Arc<BackendConfig> {
        self.cfg.load_full()
    }
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
    /// Draining: by config or by the admin API, or removed.
    pub fn is_draining(&self) -> bool {
        self.cfg.load().drain || self.admin_drain.load(Ordering::Relaxed) || self.is_removed()
    }
    /// Removed from its source, waiting for its connections to end.
    pub fn is_removed(&self) -> bool {
        self.removed_at.lock().map(|r| r.is_some()).unwrap_or(false)
    }
    pub fn origin(&self) -> Origin {
        self.origin.lock().map(|o| *o).unwrap_or(Origin::Config)
    }
    /// How long it has been up (`None`: down).
    pub fn up_for(&self) -> Option<Duration> {
        self.up_since.lock().ok().and_then(|u| u.map(|t| t.elapsed()))
    }
    pub(super) fn eligible(&self) -> bool {
        self.is_up() && !self.is_draining() && self.cfg.load().weight > 0
    }
    /// Removed but still up, undrained and weighted (see `rebuild_selector`).
    pub(super) fn fallback(&self) -> bool {
        let c = self.cfg.load();
        self.is_removed() && self.is_up() && !c.drain && !self.admin_drain.load(Ordering::Relaxed) && c.weight > 0
    }
    pub(super) fn at_capacity(&self) -> bool {
        self.cfg
            .load()
            .max_connections
            .is_some_and(|m| self.active.load(Ordering::Relaxed) >= u64::from(m.get()))
    }
    pub(super) fn stop_checker(&self) {
        if let Ok(mut g) = self.checker.lock() {
            if let Some(h) = g.take() {
                h.abort();
            }
        }
    }
}

/// The eligible backends of a service and the structures to pick among them.
pub(super) struct Selector {
    pub(super) eligible: Vec<Arc<Backend>>,
    pub(super) weights: Vec<u32>,
    pub(super) maglev: Option<Maglev>,
}

pub struct Service {
    pub name: String,
    pub(super) cfg: ArcSwap<ServiceConfig>,
    pub(super) backends: ArcSwap<Vec<Arc<Backend>>>,
    pub(super) selector: ArcSwap<Selector>,
    pub active: AtomicU64,
    /// Connections this service served (past the guard and the caps),
    /// from accept to close.
    pub duration: crate::hist::AtomicHistogram,
    pub(super) rr: AtomicU64,
    pub stats: ServiceStats,
    pub(super) listeners: Mutex<Vec<ListenerSet>>,
    pub(super) rebuild_lock: Mutex<()>,
    /// The edge's "a selector changed" signal (see `Edge::selectors_changed`).
    pub(super) rebuilt: Arc<tokio::sync::Notify>,
    /// The last good discovered sets (DNS, watched file), by origin.
    pub(super) discovered: Mutex<std::collections::BTreeMap<Origin, Vec<Member>>>,
    /// The operator's runtime changes.
    pub(super) overlay: Mutex<Overlay>,
    /// Serializes reconciling the backends to the desired set.
    pub(super) reconcile_lock: Mutex<()>,
    /// Discovery and maintenance tasks, with the settings they run for.
    pub(super) tasks: Mutex<super::pool::Tasks>,
}

pub(super) struct ListenerSet {
    pub(super) addr: SocketAddr,
    pub(super) backlog: u32,
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// The sockets' fds (owned by the accept tasks), for an upgrade hand-over.
    pub(super) fds: Vec<std::os::fd::RawFd>,
}

impl Service {
    pub fn config(&self) -> Arc<ServiceConfig> {
        self.cfg.load_full()
    }

    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.load_full()
    }

    /// Backends that can take new connections (healthy, not draining).
    pub fn eligible_count(&self) -> usize {
        self.selector.load().eligible.len()
    }

    /// The backends new connections go to now, with their effective
    /// weights (slow start applied): what the tunnel maps are built from.
    pub fn selection(&self) -> Vec<(Arc<Backend>, u32)> {
        let sel = self.selector.load();
        sel.eligible.iter().cloned().zip(sel.weights.iter().copied()).collect()
    }

    /// Recomputes the eligible set and the Maglev table, and signals the
    /// edge's `selectors_changed` (the tunnel maps follow). Called on health
    /// transitions, drains, reloads, discovery changes and slow-start steps
    /// (never per connection).
    pub(super) fn rebuild_selector(&self) {
        // Serialized: concurrent rebuilds (a health transition racing a
        // reload) must not let a rebuild from older state be stored last.
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = self.cfg.load();
        let backends = self.backends.load();
        let mut eligible: Vec<Arc<Backend>> = backends.iter().filter(|b| b.eligible()).cloned().collect();
        if eligible.is_empty() {
            // Make before break: removed backends still up take new
            // connections only while nothing else can (their replacements
            // are still passing their first checks), never an empty pool
            // because the set was swapped at once.
            eligible = backends.iter().filter(|b| b.fallback()).cloned().collect();
        }
        let weights: Vec<u32> = eligible
            .iter()
            .map(|b| {
                let w = b.cfg.load().weight;
                if cfg.slow_start.is_zero() {
                    w
                } else {
                    pool::effective_weight(w, b.up_for(), cfg.slow_start)
                }
            })
            .collect();
        let maglev = if cfg.balance == Balance::Maglev {
            let named: Vec<(&str, u32)> = eligible
                .iter()
                .zip(&weights)
                .map(|(b, w)| (b.name.as_str(), *w))
                .collect();
            match Maglev::new(&named, maglev::DEFAULT_TABLE_SIZE) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(service = %self.name, error = %e, "cannot build Maglev table; using round robin");
                    None
                }
            }
        } else {
            None
        };
        let names: Vec<&str> = eligible.iter().map(|b| b.name.as_str()).collect();
        debug!(service = %self.name, eligible = ?names, "selector rebuilt");
        self.selector.store(Arc::new(Selector {
            eligible,
            weights,
            maglev,
        }));
        // lock-free unless the sync task waits (then a short internal lock)
        self.rebuilt.notify_one();
    }

    /// Picks a backend for `client`, skipping those in `tried` and those at
    /// their connection cap.
    pub(super) fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<Arc<Backend>> {
        let sel = self.selector.load();
        let n = sel.eligible.len();
        if n == 0 {
            return None;
        }
        let usable = |i: usize| {
            let b = &sel.eligible[i];
            !tried.contains(&(Arc::as_ptr(b) as usize)) && !b.at_capacity()
        };
        let balance = self.cfg.load().balance;
        let first = match (balance, &sel.maglev) {
            (Balance::Maglev, Some(m)) => {
                let h = maglev::hash_ip(client);
                // Probe a deterministic sequence of alternative slots so that
                // a retry from every PoP lands on the same next backend.
                let mut found = None;
                for attempt in 0..(2 * n as u64 + 2) {
                    let key = h ^ splitmix(attempt);
                    if let Some(i) = m.lookup(if attempt == 0 { h } else { key }) {
                        if usable(i) {
                            found = Some(i);
                            break;
                        }
                    }
                }
                found
            }
            (Balance::LeastConn, _) => {
                let cands: Vec<(u64, u32)> = sel
                    .eligible
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let w = if usable(i) { sel.weights[i] } else { 0 };
                        (b.active.load(Ordering::Relaxed), w)
                    })
                    .collect();
                select::least_conn(&cands, self.rr.fetch_add(1, Ordering::Relaxed))
            }
            _ => {
                let c = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n as u64)
                    .filter_map(|k| select::weighted_rr(&sel.weights, c.wrapping_add(k)))
                    .find(|&i| usable(i))
            }
        };
        // Last resort: any usable eligible backend.
        first
            .or_else(|| (0..n).find(|&i| usable(i)))
            .map(|i| sel.eligible[i].clone())
    }

    /// Drains (or undrains) a backend at run time. Returns false if there is
    /// no such backend.
    pub fn set_admin_drain(&self, backend: &str, drain: bool) -> bool {
        let Some(b) = self
            .backends
            .load()
            .iter()
            .find(|b| b.name == backend && !b.is_removed())
            .cloned()
        else {
            return false;
        };
        if let Ok(mut o) = self.overlay.lock() {
            if drain {
                o.drained.insert(backend.to_string());
            } else {
                o.drained.remove(backend);
            }
        }
        if b.admin_drain.swap(drain, Ordering::Relaxed) != drain {
            info!(service = %self.name, backend = %b.name, drain, "backend drain changed by admin API");
            self.rebuild_selector();
        }
        true
    }

    pub(super) fn set_backend_state(&self, b: &Backend, state: State) {
        let was = b.up.swap(state == State::Up, Ordering::Relaxed);
        if was != (state == State::Up) {
            if let Ok(mut u) = b.up_since.lock() {
                *u = (state == State::Up).then(std::time::Instant::now);
            }
            self.rebuild_selector();
        }
    }

    /// Records a failed connect from real traffic (passive health).
    pub(super) fn passive_failure(&self, b: &Backend, reason: &FailReason) {
        let tr = match b.health.lock() {
            Ok(mut h) => h.on_connect_failure(std::time::Instant::now()),
            Err(_) => None,
        };
        if let Some(tr) = tr {
            // Selector first, then the log line: once "down" is logged, no
            // new connection goes there.
            self.set_backend_state(b, tr.to);
            warn!(service = %self.name, backend = %b.name, from = ?tr.from, to = ?tr.to,
                  reason = %tr.reason, last_error = %reason, "backend down: ejected by passive health");
        }
    }

    pub(super) fn passive_success(&self, b: &Backend) {
        if let Ok(mut h) = b.health.lock() {
            h.on_connect_success();
        }
    }

    /// Active health-check result from the checker task.
    pub(crate) fn check_result(&self, b: &Backend, r: anyedge_lb::health::CheckResult) {
        match &r {
            anyedge_lb::health::CheckResult::Ok { latency } => {
                CHECK_LATENCY
                    .get_or_create(&vec![
                        ("service".to_string(), self.name.clone()),
                        ("backend".to_string(), b.name.clone()),
                    ])
                    .observe(latency.as_secs_f64());
                b.stats.checks_ok.fetch_add(1, Ordering::Relaxed)
            }
            anyedge_lb::health::CheckResult::Failed { .. } => b.stats.checks_failed.fetch_add(1, Ordering::Relaxed),
        };
        let tr = match b.health.lock() {
            Ok(mut h) => h.on_check(r, std::time::Instant::now()),
            Err(_) => None,
        };
        if let Some(tr) = tr {
            // Selector first, then the log line: a backend logged "up" is
            // already selectable, one logged "down" no longer is.
            self.set_backend_state(b, tr.to);
            let addr = b.cfg.load().address;
            if tr.to == State::Up {
                info!(service = %self.name, backend = %b.name, %addr, reason = %tr.reason, "backend up");
            } else {
                warn!(service = %self.name, backend = %b.name, %addr, reason = %tr.reason, "backend down");
            }
        }
    }
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(super) fn thresholds(c: &ServiceConfig) -> Thresholds {
    Thresholds {
        rise: c.health.rise,
        fall: c.health.fall,
        passive_fall: c.health.passive_fall,
    }
}

/// Runs checks for `backend` until the backend or its service is dropped (or
/// the task is aborted on reload). The first check runs at once; later ones
/// every `interval` with a small per-backend phase offset so that checks of
/// many backends do not fire in lock-step.
pub(super) async fn run_checker(svc: Weak<Service>, backend: Weak<Backend>) {
    let mut first = true;
    loop {
        if !first {
            let (Some(s), Some(b)) = (svc.upgrade(), backend.upgrade()) else {
                return;
            };
            let jitter = Duration::from_millis(u64::from(phase(&b.name)) % 50);
            let interval = s.config().health.interval;
            drop((s, b));
            tokio::time::sleep(interval + jitter).await;
        }
        first = false;
        let (Some(s), Some(b)) = (svc.upgrade(), backend.upgrade()) else {
            return;
        };
        let (cfg, bcfg) = (s.config(), b.config());
        let r = checks::check_once(bcfg.address, &cfg.health, bcfg.proxy).await;
        s.check_result(&b, r);
    }
}

pub(super) fn phase(name: &str) -> u32 {
    name.bytes()
        .fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619))
}
