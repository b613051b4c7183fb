//! The layer-4 load balancer runtime: services, backends, listeners, and the
//! per-connection path (inspect -> select -> connect with retry -> PROXY
//! header -> forward).
//!
//! Hot-path state is read lock-free: the service config, backend list and
//! selector are `ArcSwap`s replaced wholesale by the control path (health
//! transitions, reload); counters are relaxed atomics. Mutexes are only taken
//! by the control path and on a backend's passive failure.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyedge_guard::{DropReason, Guard, Verdict};
use anyedge_lb::health::{FailReason, Health, State, Thresholds};
use anyedge_lb::maglev::{self, Maglev};
use anyedge_lb::select;
use anyedge_proxy::{sni, tlv, Addresses, Decoded, Tlv};
use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::config::{BackendConfig, Balance, Config, ProxyMode, ServiceConfig};
use crate::forward::{self, End};
use crate::health as checks;
use crate::logutil::LogLimiter;
use crate::net::{self, Sock};

/// Largest inbound PROXY header accepted from a trusted source.
const MAX_INBOUND_PROXY: usize = 4096;
/// Most client bytes buffered while looking for a TLS ClientHello.
const MAX_PEEK: usize = 16 * 1024;

static LOG_BAD_PROXY: LogLimiter = LogLimiter::new(10);
static LOG_UNTRUSTED_PROXY: LogLimiter = LogLimiter::new(10);
static LOG_SILENT_CLIENT: LogLimiter = LogLimiter::new(10);
static LOG_CONNECT_FAIL: LogLimiter = LogLimiter::new(20);
static LOG_NO_BACKEND: LogLimiter = LogLimiter::new(10);
static LOG_CAP: LogLimiter = LogLimiter::new(5);
static LOG_SILENT_BACKEND: LogLimiter = LogLimiter::new(10);
static LOG_GUARD: LogLimiter = LogLimiter::new(5);
static LOG_ACCEPT: LogLimiter = LogLimiter::new(2);

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
        no_backend: "rejected.no_backend" => "anyedge_connections_failed" ["reason" = "no_backend"],
        client_silent: "rejected.client_silent" => "anyedge_connections_failed" ["reason" = "client_silent"],
        /// The client closed (or failed) before sending its first bytes.
        client_closed_early: "rejected.client_closed_early" => "anyedge_connections_failed" ["reason" = "client_closed_early"],
        bad_proxy_header: "rejected.bad_proxy_header" => "anyedge_connections_failed" ["reason" = "bad_proxy_header"],
        untrusted_proxy_header: "rejected.untrusted_proxy_header" => "anyedge_connections_failed" ["reason" = "untrusted_proxy_header"],
        idle_timeouts: "idle_timeouts" => "anyedge_connections_failed" ["reason" = "idle_timeout"],
        retries: "retries" => "anyedge_backend_retries",
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
    cfg: ArcSwap<BackendConfig>,
    up: AtomicBool,
    /// Drained through the admin API (kept across reloads, unlike `drain`
    /// in the config file, which the file controls).
    admin_drain: AtomicBool,
    pub health: Mutex<Health>,
    pub active: AtomicU64,
    pub stats: BackendStats,
    checker: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    pub fn config(&self) -> Arc<BackendConfig> {
        self.cfg.load_full()
    }
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
    /// Draining: by config or by the admin API.
    pub fn is_draining(&self) -> bool {
        self.cfg.load().drain || self.admin_drain.load(Ordering::Relaxed)
    }
    fn eligible(&self) -> bool {
        self.is_up() && !self.is_draining() && self.cfg.load().weight > 0
    }
    fn at_capacity(&self) -> bool {
        self.cfg
            .load()
            .max_connections
            .is_some_and(|m| self.active.load(Ordering::Relaxed) >= u64::from(m.get()))
    }
    fn stop_checker(&self) {
        if let Ok(mut g) = self.checker.lock() {
            if let Some(h) = g.take() {
                h.abort();
            }
        }
    }
}

/// The eligible backends of a service and the structures to pick among them.
struct Selector {
    eligible: Vec<Arc<Backend>>,
    weights: Vec<u32>,
    maglev: Option<Maglev>,
}

pub struct Service {
    pub name: String,
    cfg: ArcSwap<ServiceConfig>,
    backends: ArcSwap<Vec<Arc<Backend>>>,
    selector: ArcSwap<Selector>,
    pub active: AtomicU64,
    rr: AtomicU64,
    pub stats: ServiceStats,
    listeners: Mutex<Vec<ListenerSet>>,
    rebuild_lock: Mutex<()>,
}

struct ListenerSet {
    addr: SocketAddr,
    backlog: u32,
    tasks: Vec<JoinHandle<()>>,
    /// The sockets' fds (owned by the accept tasks), for an upgrade hand-over.
    fds: Vec<std::os::fd::RawFd>,
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

    /// Recomputes the eligible set and the Maglev table. Called on health
    /// transitions, drains and reloads (never per connection).
    fn rebuild_selector(&self) {
        // Serialized: concurrent rebuilds (a health transition racing a
        // reload) must not let a rebuild from older state be stored last.
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = self.cfg.load();
        let eligible: Vec<Arc<Backend>> = self.backends.load().iter().filter(|b| b.eligible()).cloned().collect();
        let weights: Vec<u32> = eligible.iter().map(|b| b.cfg.load().weight).collect();
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
    }

    /// Picks a backend for `client`, skipping those in `tried` and those at
    /// their connection cap.
    fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<Arc<Backend>> {
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
        let Some(b) = self.backends.load().iter().find(|b| b.name == backend).cloned() else {
            return false;
        };
        if b.admin_drain.swap(drain, Ordering::Relaxed) != drain {
            info!(service = %self.name, backend = %b.name, drain, "backend drain changed by admin API");
            self.rebuild_selector();
        }
        true
    }

    fn set_backend_state(&self, b: &Backend, state: State) {
        let was = b.up.swap(state == State::Up, Ordering::Relaxed);
        if was != (state == State::Up) {
            self.rebuild_selector();
        }
    }

    /// Records a failed connect from real traffic (passive health).
    fn passive_failure(&self, b: &Backend, reason: &FailReason) {
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

    fn passive_success(&self, b: &Backend) {
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

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn thresholds(c: &ServiceConfig) -> Thresholds {
    Thresholds {
        rise: c.health.rise,
        fall: c.health.fall,
        passive_fall: c.health.passive_fall,
    }
}

/// The whole L4 runtime of one PoP.
pub struct Edge {
    config: ArcSwap<Config>,
    /// Per-source admission (replaced when its config changes on reload).
    guard: ArcSwap<Guard>,
    /// Connections dropped by the guard, indexed like `DropReason::ALL`.
    pub guard_drops: [AtomicU64; 4],
    /// Deny entries added by the heavy-hitter detector.
    pub dynamic_blocks: AtomicU64,
    /// Refused connections held open by the tarpit now, and in all.
    pub tarpit_open: AtomicU64,
    pub tarpitted: AtomicU64,
    /// Origin of the guard's clock.
    epoch: Instant,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    pub active: AtomicU64,
    idle: Notify,
    conn_seq: AtomicU64,
    boot: u64,
    workers: usize,
    /// Listening sockets received from the previous process, by address,
    /// used (once) instead of binding new ones.
    inherited: Mutex<std::collections::HashMap<SocketAddr, Vec<std::net::TcpListener>>>,
    /// One current-thread runtime per worker (empty: use the ambient one).
    worker_rts: Vec<tokio::runtime::Handle>,
    /// Accept loops wait until this is true (held closed during an upgrade
    /// until the backends' health is known).
    gate: tokio::sync::watch::Sender<bool>,
}

/// Decrements the connection gauges when a connection ends, however it ends.
struct ConnGuard {
    edge: Arc<Edge>,
    svc: Arc<Service>,
    /// The guard that admitted this connection and the source, to release
    /// its concurrency slot.
    admitted: Option<(Arc<Guard>, IpAddr)>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some((g, ip)) = self.admitted.take() {
            g.release(ip);
        }
        self.svc.active.fetch_sub(1, Ordering::Relaxed);
        if self.edge.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.edge.idle.notify_waiters();
        }
    }
}

struct BackendGuard(Arc<Backend>);
impl Drop for BackendGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Edge {
    /// Builds the runtime and opens every listener. Fails if a listener
    /// cannot be bound (the daemon must not half-start).
    pub fn start(
        config: Config,
        workers: usize,
        inherited: std::collections::HashMap<SocketAddr, Vec<std::net::TcpListener>>,
        worker_rts: Vec<tokio::runtime::Handle>,
        hold_accept: bool,
    ) -> anyhow::Result<Arc<Edge>> {
        let boot = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let edge = Arc::new(Edge {
            guard: ArcSwap::from_pointee(Guard::new(&config.guard)),
            guard_drops: Default::default(),
            dynamic_blocks: AtomicU64::new(0),
            tarpit_open: AtomicU64::new(0),
            tarpitted: AtomicU64::new(0),
            epoch: Instant::now(),
            config: ArcSwap::from_pointee(config.clone()),
            services: Mutex::new(BTreeMap::new()),
            active: AtomicU64::new(0),
            idle: Notify::new(),
            conn_seq: AtomicU64::new(0),
            boot,
            workers: workers.max(1),
            inherited: Mutex::new(inherited),
            worker_rts,
            gate: tokio::sync::watch::Sender::new(!hold_accept),
        });
        edge.apply(config)?;
        Ok(edge)
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Heavy-hitter detection and block expiry (the PoP calls this once a
    /// second): returns the guard clock's time and the sources blocked now,
    /// each with its rate, for the fast path to block too.
    pub fn guard_tick(&self) -> (Duration, Vec<(anyedge_guard::prefix::Prefix, u32)>) {
        let now = self.epoch.elapsed();
        let blocks = self.guard.load().tick(now);
        self.dynamic_blocks.fetch_add(blocks.len() as u64, Ordering::Relaxed);
        let secs = self
            .config
            .load()
            .guard
            .dynamic_block
            .as_ref()
            .map_or(0, |d| d.block_for.as_secs());
        for (p, n) in blocks.iter().take(10) {
            warn!(source = %p, connections_per_second = n, block_for_s = secs, "heavy hitter: dynamic block added");
        }
        if blocks.len() > 10 {
            warn!(more = blocks.len() - 10, "heavy hitter: more dynamic blocks added");
        }
        (now, blocks)
    }

    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services.lock().ok().and_then(|m| m.get(name).cloned())
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies a new, already validated configuration: services and backends
    /// are matched by name so health state, counters and open connections
    /// survive; listeners are opened for new addresses before old ones close.
    /// If a new listener cannot be bound the whole reload is refused and the
    /// running configuration stays as it was.
    pub fn apply(self: &Arc<Self>, new: Config) -> anyhow::Result<()> {
        let mut services = self
            .services
            .lock()
            .map_err(|_| anyhow::anyhow!("service table lock poisoned"))?;

        // 1. Bind every listener that does not exist yet, before changing
        //    anything: a bind failure aborts the reload with nothing changed.
        let mut fresh: BTreeMap<(String, SocketAddr), Vec<std::net::TcpListener>> = BTreeMap::new();
        let ours: Vec<SocketAddr> = services
            .values()
            .filter_map(|s| {
                s.listeners
                    .lock()
                    .ok()
                    .map(|l| l.iter().map(|x| x.addr).collect::<Vec<_>>())
            })
            .flatten()
            .collect();
        for sc in &new.services {
            let existing = services.get(&sc.name);
            for addr in &sc.listen {
                let have = existing.is_some_and(|s| {
                    s.listeners
                        .lock()
                        .map(|l| l.iter().any(|ls| ls.addr == *addr && ls.backlog == sc.backlog))
                        .unwrap_or(false)
                });
                if !have {
                    // Sockets handed over by the previous process (upgrade)
                    // first: their queued connections are served, not reset.
                    let inherited = self
                        .inherited
                        .lock()
                        .ok()
                        .and_then(|mut m| m.remove(addr))
                        .unwrap_or_default();
                    let mut socks = inherited;
                    if socks.is_empty() {
                        net::warn_if_not_local(&format!("service {:?}", sc.name), *addr);
                        // a new address: nobody else may listen there (our
                        // own listeners may, on a reload that moves it)
                        if !ours.contains(addr) {
                            if let Err(e) = net::refuse_taken(*addr, false) {
                                if !ours.iter().any(|o| crate::config::listen_overlap(*o, *addr)) {
                                    anyhow::bail!("service {:?}: cannot listen on {addr}: {e}", sc.name);
                                }
                            }
                        }
                    }
                    while socks.len() < self.workers {
                        socks.push(
                            net::listen(*addr, sc.backlog)
                                .map_err(|e| anyhow::anyhow!("service {:?}: cannot listen on {addr}: {e}", sc.name))?,
                        );
                    }
                    fresh.insert((sc.name.clone(), *addr), socks);
                }
            }
        }

        // 2. Services that disappeared: stop listening and checking; their
        //    open connections finish on their own.
        let keep: Vec<&str> = new.services.iter().map(|s| s.name.as_str()).collect();
        let gone: Vec<String> = services
            .keys()
            .filter(|k| !keep.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(s) = services.remove(&name) {
                s.close_listeners();
                for b in s.backends.load().iter() {
                    b.stop_checker();
                }
                info!(service = %name, "service removed");
            }
        }

        // 3. New and changed services.
        for sc in new.services.iter().cloned() {
            let svc = match services.get(&sc.name) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Service {
                        name: sc.name.clone(),
                        cfg: ArcSwap::from_pointee(sc.clone()),
                        backends: ArcSwap::from_pointee(Vec::new()),
                        selector: ArcSwap::from_pointee(Selector {
                            eligible: Vec::new(),
                            weights: Vec::new(),
                            maglev: None,
                        }),
                        active: AtomicU64::new(0),
                        rr: AtomicU64::new(0),
                        stats: ServiceStats::default(),
                        listeners: Mutex::new(Vec::new()),
                        rebuild_lock: Mutex::new(()),
                    });
                    services.insert(sc.name.clone(), s.clone());
                    info!(service = %sc.name, listen = ?sc.listen, backends = sc.backends.len(), "service added");
                    s
                }
            };
            svc.cfg.store(Arc::new(sc.clone()));

            // Backends, matched by name.
            let old = svc.backends.load_full();
            let mut next = Vec::with_capacity(sc.backends.len());
            for bc in &sc.backends {
                let reuse = old
                    .iter()
                    .find(|b| b.name == bc.name && b.cfg.load().address == bc.address);
                let b = match reuse {
                    Some(b) => {
                        let prev = b.cfg.swap(Arc::new(bc.clone()));
                        if prev.drain != bc.drain {
                            info!(service = %sc.name, backend = %bc.name, drain = bc.drain, "backend drain changed");
                        }
                        if let Ok(mut h) = b.health.lock() {
                            h.set_thresholds(thresholds(&sc));
                        }
                        b.clone()
                    }
                    None => {
                        // A new backend starts down: traffic only after it
                        // passed `rise` checks (the first check runs at once).
                        let b = Arc::new(Backend {
                            name: bc.name.clone(),
                            cfg: ArcSwap::from_pointee(bc.clone()),
                            up: AtomicBool::new(false),
                            admin_drain: AtomicBool::new(false),
                            health: Mutex::new(Health::new(thresholds(&sc), State::Down, std::time::Instant::now())),
                            active: AtomicU64::new(0),
                            stats: BackendStats::default(),
                            checker: Mutex::new(None),
                        });
                        let h = tokio::spawn(run_checker(Arc::downgrade(&svc), Arc::downgrade(&b)));
                        if let Ok(mut g) = b.checker.lock() {
                            *g = Some(h);
                        }
                        b
                    }
                };
                next.push(b);
            }
            for b in old.iter() {
                if !next.iter().any(|n| Arc::ptr_eq(n, b)) {
                    b.stop_checker();
                    info!(service = %sc.name, backend = %b.name, "backend removed");
                }
            }
            svc.backends.store(Arc::new(next));
            svc.rebuild_selector();

            // Listeners: open new, then close the ones no longer configured.
            {
                let mut ls = svc.listeners.lock().unwrap_or_else(|p| p.into_inner());
                for addr in &sc.listen {
                    if let Some(socks) = fresh.remove(&(sc.name.clone(), *addr)) {
                        let fds = socks.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
                        // One socket per worker thread: that worker accepts
                        // from it and runs its connections (thread per core).
                        let tasks = socks
                            .into_iter()
                            .enumerate()
                            .map(|(i, l)| {
                                let fut = accept_loop(Arc::downgrade(self), Arc::downgrade(&svc), l);
                                match self.worker_rts.get(i % self.worker_rts.len().max(1)) {
                                    Some(h) => h.spawn(fut),
                                    None => tokio::spawn(fut),
                                }
                            })
                            .collect();
                        // Replace a listener on the same address (backlog change).
                        if let Some(pos) = ls.iter().position(|x| x.addr == *addr) {
                            for t in ls.remove(pos).tasks {
                                t.abort();
                            }
                        }
                        ls.push(ListenerSet {
                            addr: *addr,
                            backlog: sc.backlog,
                            tasks,
                            fds,
                        });
                        info!(service = %sc.name, %addr, "listening");
                    }
                }
                ls.retain(|x| {
                    let keep = sc.listen.contains(&x.addr);
                    if !keep {
                        for t in &x.tasks {
                            t.abort();
                        }
                        info!(service = %sc.name, addr = %x.addr, "listener closed");
                    }
                    keep
                });
                drop(ls);
            }
        }
        if self.config.load().guard != new.guard {
            // New rules, fresh state: open connections release into the
            // guard that admitted them.
            self.guard.store(Arc::new(Guard::new(&new.guard)));
            info!("guard rules replaced");
        }
        self.config.store(Arc::new(new));
        Ok(())
    }

    /// Lets the accept loops start (see `hold_accept` in [`Edge::start`]).
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// True once every service can serve as well as its config allows:
    /// each backend that is not drained and has weight is selectable.
    pub fn backends_settled(&self) -> bool {
        self.services().iter().all(|s| {
            let wanted = s
                .backends()
                .iter()
                .filter(|b| !b.is_draining() && b.cfg.load().weight > 0)
                .count();
            s.eligible_count() >= wanted
        })
    }

    /// Every listening socket by address (for the upgrade hand-over). The
    /// fds stay valid while the accept tasks run.
    pub fn listener_fds(&self) -> Vec<(SocketAddr, Vec<std::os::fd::RawFd>)> {
        let mut out = Vec::new();
        for s in self.services() {
            if let Ok(ls) = s.listeners.lock() {
                out.extend(ls.iter().map(|l| (l.addr, l.fds.clone())));
            }
        }
        out
    }

    /// Stops accepting on every listener and waits (up to a second) until
    /// the accept tasks, which own the listening sockets, are gone: when
    /// this returns, a new connection is refused by the kernel (unless an
    /// upgrade's new process holds the same sockets).
    pub async fn stop_accepting(&self) {
        let tasks: Vec<JoinHandle<()>> = self.services().iter().flat_map(|s| s.close_listeners()).collect();
        let all = futures_join(tasks);
        if tokio::time::timeout(Duration::from_secs(1), all).await.is_err() {
            warn!("accept tasks did not stop within 1 s");
        }
    }

    /// Waits until no connection is open or `grace` passes; returns the
    /// number still open.
    pub async fn drain(&self, grace: Duration) -> u64 {
        let deadline = forward::deadline(Instant::now(), grace);
        loop {
            let idle = self.idle.notified();
            let n = self.active.load(Ordering::Acquire);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.active.load(Ordering::Acquire);
            }
        }
    }

    fn next_unique_id(&self, pop: &str) -> String {
        let seq = self.conn_seq.fetch_add(1, Ordering::Relaxed);
        format!("{pop}-{:x}-{seq:x}", self.boot)
    }
}

impl Service {
    /// Aborts the accept tasks (closing the listening sockets they own as
    /// their runtimes drop them); returns them to await.
    fn close_listeners(&self) -> Vec<JoinHandle<()>> {
        let mut out = Vec::new();
        if let Ok(mut ls) = self.listeners.lock() {
            for l in ls.drain(..) {
                for t in l.tasks {
                    t.abort();
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Waits for every task (a cancelled one counts as finished).
async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Runs checks for `backend` until the backend or its service is dropped (or
/// the task is aborted on reload). The first check runs at once; later ones
/// every `interval` with a small per-backend phase offset so that checks of
/// many backends do not fire in lock-step.
pub async fn run_checker(svc: Weak<Service>, backend: Weak<Backend>) {
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

fn phase(name: &str) -> u32 {
    name.bytes()
        .fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619))
}

async fn accept_loop(edge: Weak<Edge>, svc: Weak<Service>, listener: std::net::TcpListener) {
    let addr = listener.local_addr().ok();
    let listener = match net::adopt_listener(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(?addr, error = %e, "cannot register listening socket");
            return;
        }
    };
    // Wait for the gate (an upgrading process opens it once its backends
    // are healthy; until then the previous process keeps accepting).
    let mut gate = match edge.upgrade() {
        Some(e) => e.gate.subscribe(),
        None => return,
    };
    while !*gate.borrow_and_update() {
        if gate.changed().await.is_err() {
            return;
        }
    }
    loop {
        let (stream, peer) = match net::accept(&listener).await {
            Ok(x) => x,
            Err(e) => {
                // Per-connection errors never get here (net::accept skips
                // them). Out of descriptors or buffers: the connection
                // stays in the listen queue, so back off briefly instead of
                // spinning, and say so at most a few times a second.
                if let Some(s) = LOG_ACCEPT.allow() {
                    warn!(listener = ?addr, error = %e, resource = net::is_resource_exhaustion(&e), suppressed = s, "accept failed; retrying in 10 ms");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (Some(edge), Some(svc)) = (edge.upgrade(), svc.upgrade()) else {
            return;
        };
        // No `accepting` check here: a connection accept(2) returned is ours
        // and is served (and drained). Dropping it would reset a client the
        // kernel already completed a handshake with, e.g. during an upgrade.
        // Stopping happens by aborting this task at its next `accept` await.
        svc.stats.accepted.fetch_add(1, Ordering::Relaxed);
        // Per-source rules first: a flood must not take global slots.
        let guard = edge.guard.load_full();
        let admitted = match guard.admit(peer.ip(), edge.epoch.elapsed()) {
            Verdict::Admit => Some((guard, peer.ip())),
            Verdict::Allowlisted => None,
            Verdict::Drop(reason) => {
                let i = DropReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
                edge.guard_drops[i].fetch_add(1, Ordering::Relaxed);
                if let Some(s) = LOG_GUARD.allow() {
                    warn!(service = %svc.name, %peer, reason = reason.as_str(), suppressed = s, "connection dropped by guard");
                }
                tarpit(&edge, stream);
                continue;
            }
        };
        let global_max = u64::from(edge.config.load().max_connections.get());
        if edge.active.fetch_add(1, Ordering::AcqRel) >= global_max {
            edge.active.fetch_sub(1, Ordering::AcqRel);
            if let Some((g, ip)) = &admitted {
                g.release(*ip);
            }
            svc.stats.rejected_global_cap.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_CAP.allow() {
                warn!(service = %svc.name, %peer, limit = global_max, suppressed = s, "global connection cap reached; connection refused");
            }
            continue;
        }
        svc.active.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard {
            edge: edge.clone(),
            svc: svc.clone(),
            admitted,
        };
        if let Some(m) = svc.cfg.load().max_connections {
            if svc.active.load(Ordering::Relaxed) > u64::from(m.get()) {
                svc.stats.rejected_service_cap.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = LOG_CAP.allow() {
                    warn!(service = %svc.name, %peer, limit = m.get(), suppressed = s, "service connection cap reached; connection refused");
                }
                drop(guard);
                continue;
            }
        }
        tokio::spawn(handle(edge, svc, stream, peer, guard));
    }
}

/// A refused connection: closed at once, or, with `[guard.tarpit]`, held
/// open unread for the hold time (the attacker's slot stays busy, ours costs
/// one idle socket), up to the tarpit's cap.
fn tarpit(edge: &Arc<Edge>, stream: Sock) {
    let Some(t) = edge.config.load().tarpit else { return };
    if edge.tarpit_open.fetch_add(1, Ordering::AcqRel) >= u64::from(t.max_connections) {
        edge.tarpit_open.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    edge.tarpitted.fetch_add(1, Ordering::Relaxed);
    let edge = edge.clone();
    tokio::spawn(async move {
        tokio::time::sleep(t.hold).await;
        drop(stream);
        edge.tarpit_open.fetch_sub(1, Ordering::AcqRel);
    });
}

/// What the client sent before we chose a backend.
struct Inspected {
    client: SocketAddr,
    local: SocketAddr,
    /// Client payload already read (forwarded after our PROXY header).
    payload: Vec<u8>,
    sni: Option<String>,
}

enum InspectError {
    Silent,
    ClosedEarly,
    Untrusted,
    BadProxy(anyedge_proxy::DecodeError),
    Io(io::Error),
}

async fn handle(edge: Arc<Edge>, svc: Arc<Service>, client: Sock, peer: SocketAddr, _guard: ConnGuard) {
    let cfg = svc.cfg.load_full();
    let _ = client.get_ref().set_nodelay(true);
    let local = match client.get_ref().local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut insp = if cfg.inspect {
        match timeout(cfg.timeouts.client_first_byte, inspect(&client, peer, local, &cfg)).await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                report_inspect_error(&svc, peer, e);
                return;
            }
            Err(_) => {
                report_inspect_error(&svc, peer, InspectError::Silent);
                return;
            }
        }
    } else {
        Inspected {
            client: peer,
            local,
            payload: Vec::new(),
            sni: None,
        }
    };

    // Select and connect, retrying on the next backend within the budget.
    let deadline = forward::deadline(Instant::now(), cfg.timeouts.connect);
    let mut tried: Vec<usize> = Vec::new();
    let (backend, upstream) = loop {
        let Some(b) = svc.pick(insp.client.ip(), &tried) else {
            svc.stats.no_backend.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_NO_BACKEND.allow() {
                warn!(service = %svc.name, client = %insp.client, tried = tried.len(), suppressed = s, "no backend available; connection closed");
            }
            return;
        };
        tried.push(Arc::as_ptr(&b) as usize);
        if tried.len() > 1 {
            svc.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let addr = b.cfg.load().address;
        b.active.fetch_add(1, Ordering::Relaxed);
        let bguard = BackendGuard(b.clone());
        match tokio::time::timeout_at(deadline, net::connect(addr)).await {
            Ok(Ok(s)) => {
                svc.passive_success(&b);
                break (bguard, s);
            }
            Ok(Err(e)) => {
                let reason = if e.kind() == io::ErrorKind::ConnectionRefused {
                    b.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
                    FailReason::ConnectRefused
                } else {
                    b.stats.connect_error.fetch_add(1, Ordering::Relaxed);
                    FailReason::Io(e.to_string())
                };
                if let Some(s) = LOG_CONNECT_FAIL.allow() {
                    warn!(service = %svc.name, backend = %b.name, %addr, error = %e, suppressed = s, "backend connect failed; trying next");
                }
                svc.passive_failure(&b, &reason);
            }
            Err(_) => {
                b.stats.connect_timeout.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = LOG_CONNECT_FAIL.allow() {
                    warn!(service = %svc.name, backend = %b.name, %addr, timeout = ?cfg.timeouts.connect, suppressed = s, "backend connect timed out");
                }
                svc.passive_failure(&b, &FailReason::ConnectTimeout);
                return;
            }
        }
    };
    let b = &backend.0;
    let _ = upstream.get_ref().set_nodelay(true);
    b.stats.connections.fetch_add(1, Ordering::Relaxed);
    let bcfg = b.cfg.load_full();

    // PROXY header + what the client already sent, in one write.
    // What the client sent early is freed once written: an idle
    // connection then holds no buffer at all.
    let payload = std::mem::take(&mut insp.payload);
    let early = payload.len() as u64;
    let mut head = Vec::with_capacity(128 + payload.len());
    let addrs = Addresses::Tcp {
        src: insp.client,
        dst: insp.local,
    };
    match bcfg.proxy {
        ProxyMode::None => {}
        ProxyMode::V1 => anyedge_proxy::encode_v1(&mut head, &addrs),
        ProxyMode::V2 => {
            let pop = edge.config.load().pop_name.clone();
            let uid = if cfg.proxy.unique_id {
                edge.next_unique_id(&pop)
            } else {
                String::new()
            };
            let mut tlvs: [Tlv<'_>; 3] = [Tlv {
                kind: tlv::NOOP,
                value: &[],
            }; 3];
            let mut n = 0;
            if let Some(sni) = &insp.sni {
                tlvs[n] = Tlv {
                    kind: tlv::AUTHORITY,
                    value: sni.as_bytes(),
                };
                n += 1;
            }
            if cfg.proxy.unique_id {
                tlvs[n] = Tlv {
                    kind: tlv::UNIQUE_ID,
                    value: uid.as_bytes(),
                };
                n += 1;
            }
            if cfg.proxy.pop_tlv {
                tlvs[n] = Tlv {
                    kind: tlv::ANYEDGE_POP,
                    value: pop.as_bytes(),
                };
                n += 1;
            }
            if let Err(e) = anyedge_proxy::encode_v2(&mut head, &addrs, &tlvs[..n], cfg.proxy.crc32c) {
                warn!(service = %svc.name, error = %e, "cannot encode PROXY header");
                return;
            }
        }
    }
    head.extend_from_slice(&payload);
    drop(payload);
    if !head.is_empty() {
        if let Err(e) = timeout(cfg.timeouts.idle, net::write_all(&upstream, &head))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        {
            debug!(service = %svc.name, backend = %b.name, error = %e, "write to backend failed");
            return;
        }
        b.stats.bytes_to_backend.fetch_add(early, Ordering::Relaxed);
    }
    drop(head);

    let (end, totals) = forward::forward(
        &client,
        &upstream,
        cfg.timeouts.idle,
        [&b.stats.bytes_to_backend, &b.stats.bytes_to_client],
        true,
    )
    .await;
    svc.stats.completed.fetch_add(1, Ordering::Relaxed);
    if end == End::Idle {
        svc.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
        if totals.to_client == 0 {
            b.stats.silent_backend.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_SILENT_BACKEND.allow() {
                warn!(service = %svc.name, backend = %b.name, client = %insp.client, idle = ?cfg.timeouts.idle,
                      suppressed = s, "backend accepted but never answered; connection closed after idle timeout");
            }
        } else {
            debug!(service = %svc.name, backend = %b.name, client = %insp.client, "idle timeout");
        }
    }
    debug!(service = %svc.name, backend = %b.name, client = %insp.client, ?end,
           up = totals.to_backend + early, down = totals.to_client, "connection closed");
}

fn report_inspect_error(svc: &Service, peer: SocketAddr, e: InspectError) {
    match e {
        InspectError::Silent => {
            svc.stats.client_silent.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_SILENT_CLIENT.allow() {
                let t = svc.cfg.load().timeouts.client_first_byte;
                warn!(service = %svc.name, %peer, timeout = ?t, suppressed = s, "client sent nothing before client_first_byte timeout; closed");
            }
        }
        InspectError::ClosedEarly => {
            svc.stats.client_closed_early.fetch_add(1, Ordering::Relaxed);
            debug!(service = %svc.name, %peer, "client closed before sending data");
        }
        InspectError::Io(e) => {
            svc.stats.client_closed_early.fetch_add(1, Ordering::Relaxed);
            debug!(service = %svc.name, %peer, error = %e, "client connection failed before sending data");
        }
        InspectError::Untrusted => {
            svc.stats.untrusted_proxy_header.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_UNTRUSTED_PROXY.allow() {
                warn!(service = %svc.name, %peer, suppressed = s, "PROXY header from a source not in accept_proxy_from; refused");
            }
        }
        InspectError::BadProxy(err) => {
            svc.stats.bad_proxy_header.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_BAD_PROXY.allow() {
                warn!(service = %svc.name, %peer, error = %err, suppressed = s, "malformed PROXY header from trusted source; refused");
            }
        }
    }
}

/// Reads the client's first bytes: an inbound PROXY header (trusted sources
/// only) and, when the client speaks TLS, the SNI of its ClientHello.
/// Bounded by MAX_PEEK bytes; the caller bounds it in time.
async fn inspect(
    client: &Sock,
    peer: SocketAddr,
    local: SocketAddr,
    cfg: &ServiceConfig,
) -> Result<Inspected, InspectError> {
    let trusted = cfg.accept_proxy_from.iter().any(|n| n.contains(&peer.ip()));
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Inspected {
        client: peer,
        local,
        payload: Vec::new(),
        sni: None,
    };
    let mut proxy_done = false;
    loop {
        let got = read_more(client, &mut buf).await?;
        if got == 0 {
            return Err(InspectError::ClosedEarly);
        }
        if !proxy_done {
            match anyedge_proxy::decode(&buf, MAX_INBOUND_PROXY) {
                Err(anyedge_proxy::DecodeError::NotProxy) => proxy_done = true,
                // "P" or "\r\n" may begin an ordinary request: refuse only
                // once a whole signature is there.
                _ if !trusted && !anyedge_proxy::has_signature(&buf) => continue,
                _ if !trusted => return Err(InspectError::Untrusted),
                Err(e) => return Err(InspectError::BadProxy(e)),
                Ok(Decoded::Incomplete { .. }) => continue,
                Ok(Decoded::Complete { header, len }) => {
                    if let Addresses::Tcp { src, dst } = header.addrs {
                        out.client = src;
                        out.local = dst;
                    }
                    buf.drain(..len);
                    proxy_done = true;
                    if buf.is_empty() {
                        continue;
                    }
                }
            }
        }
        if !cfg.proxy.sni {
            break;
        }
        let mut scratch = [0u8; 255];
        match sni::peek_with_scratch(&buf, &mut scratch) {
            sni::Peek::Incomplete { .. } if buf.len() < MAX_PEEK => continue,
            sni::Peek::Sni(name) => {
                out.sni = Some(name.to_string());
                break;
            }
            _ => break,
        }
    }
    out.payload = buf;
    Ok(out)
}

/// Reads more of the client's first bytes into `buf`. The buffer grows
/// only once data is there, so a connected client that stays silent costs
/// no buffer.
async fn read_more(client: &Sock, buf: &mut Vec<u8>) -> Result<usize, InspectError> {
    if buf.len() >= MAX_PEEK {
        return Ok(0);
    }
    let start = buf.len();
    loop {
        let mut g = client.readable().await.map_err(InspectError::Io)?;
        buf.resize(MAX_PEEK.min(start + 4096), 0);
        match io::Read::read(&mut client.get_ref(), &mut buf[start..]) {
            Ok(n) => {
                if n > 0 && start + n < buf.len() {
                    // short read: drained (see `net::Sock`)
                    g.clear_ready();
                }
                buf.truncate(start + n);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                g.clear_ready();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(InspectError::Io(e));
            }
        }
    }
}

impl Edge {}
