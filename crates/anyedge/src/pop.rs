//! The PoP: the one owner of a running configuration and its parts (load
//! balancer, DNS server, announcer, XDP fast path), with the lifecycle in
//! one place: [`Pop::start`], [`Pop::take_over`] (binary upgrade, new
//! process), [`Pop::announce`], [`Pop::reload`], [`Pop::shutdown`] and
//! [`Pop::hand_over`] (binary upgrade, old process). `main.rs` is only the
//! command line and the signals; the admin API receives the `Pop`.
//!
//! Invariants (each enforced by the test named):
//! - shutdown: routes are withdrawn (and BGP sessions closed) before the
//!   listeners close, and connections drain after that
//!   (`tests/pop.rs::shutdown_withdraws_then_closes_listeners_then_drains`);
//! - reload: the whole file is parsed and every listener bound before
//!   anything changes; a bad reload changes nothing
//!   (`tests/pop.rs::a_bad_reload_changes_nothing`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::announce::Announcer;
use crate::config::Config;
use crate::dns::Dns;
use crate::lb::Edge;
use crate::upgrade;

/// How long an upgrading process waits for its secondary DNS zones (first
/// transfer) before it serves anyway.
const DNS_UPGRADE_WAIT: Duration = Duration::from_secs(10);

/// What [`Pop::start`] needs besides the configuration.
pub struct StartOptions {
    /// The file the configuration came from (`None`: the embedded one);
    /// [`Pop::reload`] reads it again.
    pub config_path: Option<PathBuf>,
    /// Data-plane worker runtimes (see [`spawn_workers`]).
    pub worker_rts: Vec<tokio::runtime::Handle>,
    /// Sockets handed over by the previous process of an upgrade.
    pub inherited: upgrade::Inherited,
    /// Started by an upgrading process: serve only from [`Pop::take_over`] on.
    pub upgrading: bool,
}

/// A step of the PoP's lifecycle, recorded in order (see [`Pop::steps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Started,
    /// Routes withdrawn and BGP sessions closed; `announced` prefixes were
    /// still up at that moment (0 unless something is wrong).
    RoutesWithdrawn {
        announced: usize,
    },
    /// No more connections accepted (LB listeners closed, DNS stopped).
    ListenersClosed,
    /// Open connections drained; `left` were cut at the grace period.
    Drained {
        left: u64,
    },
    /// An upgrade's new process took the listeners over.
    HandedOver,
}

/// The running PoP.
pub struct Pop {
    pub edge: Arc<Edge>,
    pub dns: Option<Arc<Dns>>,
    announcer: OnceLock<Arc<Announcer>>,
    /// The XDP fast path, when attached (from [`Pop::announce`] on).
    fast_path: OnceLock<Arc<crate::xdp::FastPath>>,
    config_path: Option<PathBuf>,
    steps: Mutex<Vec<(Instant, Step)>>,
    reloads: Mutex<Reloads>,
    /// The last five minutes, sampled each second (`/api/v1/history`).
    pub history: crate::history::History,
}

/// The reloads asked of this process ([`Pop::reload`]: SIGHUP, the admin
/// API) and how the last one went.
#[derive(Debug, Clone, Default)]
pub struct Reloads {
    pub ok: u64,
    pub failed: u64,
    pub last: Option<LastReload>,
    /// When a reload last succeeded (Unix seconds).
    pub last_success_unix: Option<f64>,
}

/// The last reload: when (Unix seconds), and its error if it failed.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at_unix: f64,
    pub error: Option<String>,
}

impl Pop {
    /// Starts the load balancer and the DNS server (binding, or taking
    /// over from an upgrading predecessor, every listening socket, and
    /// loading every file zone). Nothing is announced yet: see
    /// [`Pop::announce`].
    pub async fn start(cfg: Config, opts: StartOptions) -> anyhow::Result<Arc<Pop>> {
        let StartOptions {
            config_path,
            worker_rts,
            inherited,
            upgrading,
        } = opts;
        for w in &cfg.warnings {
            warn!("config: {w}");
        }
        let workers = worker_rts.len();
        let upgrade::Inherited {
            lb: lb_inherited,
            dns: dns_inherited,
        } = inherited;
        if let (Some(a), false) = (&cfg.admin, upgrading) {
            // (an upgrade binds next to the old process's admin socket)
            crate::net::refuse_taken(a.listen, false)
                .map_err(|e| anyhow::anyhow!("admin API: cannot listen on {}: {e}", a.listen))?;
        }
        let dns_cfg = cfg.dns.clone();
        let pop_name = cfg.pop_name.clone();
        let edge = Edge::start(cfg, workers, lb_inherited, worker_rts.clone(), upgrading)?;
        // DNS binds (or takes over) its sockets once the file zones are
        // loaded; during an upgrade it reads them only from `take_over` on.
        let dns = match dns_cfg {
            Some(d) => {
                let load = tokio::task::spawn_blocking(move || {
                    Dns::start_with(&d, &pop_name, workers, &worker_rts, dns_inherited, upgrading)
                });
                Some(load.await??)
            }
            None => {
                let n = dns_inherited.count();
                if n > 0 {
                    warn!(
                        sockets = n,
                        "upgrade: no [dns] section any more: closing the inherited dns sockets"
                    );
                }
                None
            }
        };
        let pop = Arc::new(Pop {
            edge,
            dns,
            announcer: OnceLock::new(),
            fast_path: OnceLock::new(),
            config_path,
            steps: Mutex::new(Vec::new()),
            reloads: Mutex::new(Reloads::default()),
            history: crate::history::History::new(crate::history::SAMPLES),
        });
        crate::history::spawn_sampler(Arc::downgrade(&pop));
        // The guard's heavy-hitter detection and block expiry, once a
        // second, in userspace and (once attached) in the fast path.
        let weak = Arc::downgrade(&pop);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pop) = weak.upgrade() else { return };
                let (now, blocks) = pop.edge.guard_tick();
                if let Some(fp) = pop.fast_path.get() {
                    // the same blocks in the kernel, with the same expiry
                    let cfg = pop.edge.config();
                    if let Some(d) = &cfg.guard.dynamic_block {
                        for (p, _) in &blocks {
                            fp.block(*p, now.saturating_add(d.block_for));
                        }
                    }
                    fp.expire(now);
                }
            }
        });
        pop.step(Step::Started);
        Ok(pop)
    }

    /// Upgrade, new process: starts accepting once the backends have passed
    /// their checks (or had their chance) and reading DNS once every zone
    /// is loaded; the old process serves meanwhile.
    pub async fn take_over(&self) -> anyhow::Result<()> {
        let cfg = self.edge.config();
        let max_wait = cfg
            .services
            .iter()
            .map(|s| {
                s.health
                    .interval
                    .saturating_mul(s.health.rise)
                    .saturating_add(s.health.timeout)
            })
            .max()
            .unwrap_or_default()
            .saturating_add(Duration::from_secs(2));
        let deadline = crate::forward::deadline(tokio::time::Instant::now(), max_wait);
        while !self.edge.backends_settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.edge.open_gate();
        // Secondary zones without a saved copy need their first transfer
        // before this process answers for them (REFUSED otherwise).
        if let Some(d) = &self.dns {
            let deadline = tokio::time::Instant::now() + DNS_UPGRADE_WAIT;
            while let Err(why) = d.serving_all() {
                if tokio::time::Instant::now() >= deadline {
                    warn!(reason = %why, "upgrade: serving DNS although not every zone is loaded yet");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            d.open()?;
        }
        Ok(())
    }

    /// Starts the XDP fast path and the announcer: from now on the PoP
    /// tells its routers which prefixes it serves.
    pub fn announce(&self) {
        let cfg = self.edge.config();
        if let Some(fp) = crate::xdp::FastPath::start(&cfg) {
            let _ = self.fast_path.set(fp);
        }
        self.start_tunnels(&cfg);
        if let Some(b) = &cfg.bgp {
            let src = Arc::new(AnnouncerSources {
                edge: self.edge.clone(),
                dns: self.dns.clone(),
                fast_path: self.fast_path.get().cloned(),
            });
            let _ = self.announcer.set(Announcer::start(src, b));
        }
    }

    /// Tunnel forwarding (`forwarding = "tunnel"`): the maps follow the
    /// services' selectors (health, drain, reload, discovery, slow start)
    /// at once on each change, with a slow resync as a backstop (see
    /// [`crate::tunnel`]); without the fast path every tunnel service falls
    /// back, logged.
    fn start_tunnels(&self, cfg: &Config) {
        match self.fast_path.get() {
            Some(fp) => {
                fp.sync_tunnels(cfg, &self.edge.services());
                let (fp, edge) = (Arc::downgrade(fp), Arc::downgrade(&self.edge));
                let changed = self.edge.selectors_changed();
                tokio::spawn(async move {
                    loop {
                        // at once on a change; the timeout is the backstop
                        let _ = tokio::time::timeout(crate::tunnel::SAFETY_RESYNC, changed.notified()).await;
                        let (Some(fp), Some(edge)) = (fp.upgrade(), edge.upgrade()) else {
                            return;
                        };
                        fp.sync_tunnels(&edge.config(), &edge.services());
                    }
                });
            }
            None => {
                for sc in &cfg.services {
                    if matches!(sc.forwarding, crate::config::Forwarding::Tunnel(_)) {
                        let fallback = if crate::tunnel::fallback_reads_proxy(sc) {
                            "falls back to the proxy path (its backends read PROXY)"
                        } else {
                            "is not announced (its backends do not read PROXY)"
                        };
                        warn!(service = %sc.name, reason = "the XDP fast path is not attached (see above; [xdp] interfaces)", "forwarding = \"tunnel\" unavailable; the service {fallback}");
                    }
                }
            }
        }
    }

    /// The announcer, once [`Pop::announce`] started it (and `[bgp]` is
    /// configured).
    pub fn announcer(&self) -> Option<&Arc<Announcer>> {
        self.announcer.get()
    }

    /// The XDP fast path, if attached.
    pub fn fast_path(&self) -> Option<&Arc<crate::xdp::FastPath>> {
        self.fast_path.get()
    }

    /// The file the configuration is read from on reload.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// Reload: parses the whole file, then applies it all-or-nothing.
    /// Each call is counted, with its result (see [`Pop::reloads`]).
    pub fn reload(&self) -> Result<(), String> {
        let r = match &self.config_path {
            Some(p) => Config::load(p),
            None => Config::embedded(),
        }
        .map_err(|e| e.to_string())
        .and_then(|cfg| self.apply(cfg));
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(mut h) = self.reloads.lock() {
            match &r {
                Ok(()) => {
                    h.ok += 1;
                    h.last_success_unix = Some(at_unix);
                }
                Err(_) => h.failed += 1,
            }
            h.last = Some(LastReload {
                at_unix,
                error: r.as_ref().err().cloned(),
            });
        }
        r
    }

    /// The reloads so far.
    pub fn reloads(&self) -> Reloads {
        self.reloads.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Applies a parsed configuration: the load balancer first (it binds
    /// every new listener before changing anything, so an error leaves the
    /// running configuration as it was), then the fast path's rules and
    /// the DNS zones.
    pub fn apply(&self, cfg: Config) -> Result<(), String> {
        for w in &cfg.warnings {
            warn!("config: {w}");
        }
        let dns_cfg = cfg.dns.clone();
        let pop = cfg.pop_name.clone();
        self.edge.apply(cfg).map_err(|e| format!("{e:#}"))?;
        if let Some(fp) = self.fast_path.get() {
            if let Err(e) = fp.apply(&self.edge.config()) {
                warn!(error = %e, "XDP fast path: new rules not applied (the userspace layer has them)");
            }
            fp.sync_tunnels(&self.edge.config(), &self.edge.services());
        }
        match (&self.dns, dns_cfg) {
            (Some(d), Some(c)) => {
                let errors = d.reload(&c, &pop);
                if !errors.is_empty() {
                    let list: Vec<String> = errors.iter().map(|(z, e)| format!("{z}: {e}")).collect();
                    return Err(format!(
                        "configuration applied, but zone(s) kept their previous version: {}",
                        list.join("; ")
                    ));
                }
            }
            (None, Some(_)) | (Some(_), None) => {
                warn!("adding or removing the [dns] section takes effect after a restart (or an upgrade, SIGUSR2)");
            }
            (None, None) => {}
        }
        if let Some(a) = self.announcer() {
            a.evaluate();
        }
        Ok(())
    }

    /// Every listening socket, for an upgrade's hand-over.
    pub fn listener_fds(&self) -> Vec<(upgrade::Kind, std::net::SocketAddr, Vec<std::os::fd::RawFd>)> {
        let mut fds: Vec<_> = self
            .edge
            .listener_fds()
            .into_iter()
            .map(|(a, f)| (upgrade::Kind::Lb, a, f))
            .collect();
        if let Some(d) = &self.dns {
            let (udp, tcp) = d.socket_fds();
            fds.extend(udp.into_iter().map(|(a, f)| (upgrade::Kind::DnsUdp, a, f)));
            fds.extend(tcp.into_iter().map(|(a, f)| (upgrade::Kind::DnsTcp, a, f)));
        }
        fds
    }

    /// Graceful shutdown, in this order: drain and withdraw every route,
    /// then close the BGP sessions (Cease); stop accepting (LB listeners,
    /// DNS); drain open connections. [`Pop::drain`] finishes it.
    pub async fn shutdown(&self) {
        if let Some(a) = self.announcer() {
            a.shutdown(Duration::from_secs(2)).await;
        }
        self.routes_withdrawn();
        self.close_listeners().await;
    }

    /// Upgrade, old process (the new one serves on the same sockets
    /// already): stop accepting (closing only our copies), give BGP to the
    /// new process (withdraw and Cease at once, no drain), then
    /// [`Pop::drain`] our own connections.
    pub async fn hand_over(&self) {
        self.close_listeners().await;
        if let Some(a) = self.announcer() {
            a.shutdown_with(Duration::from_secs(2), false).await;
        }
        self.routes_withdrawn();
        self.step(Step::HandedOver);
    }

    /// Waits for open LB and DNS TCP connections to end, up to the grace
    /// period; returns how many were still open (then closed).
    pub async fn drain(&self) -> u64 {
        let grace = self.edge.config().shutdown_grace;
        info!(open_connections = self.open_connections(), grace = ?grace, "listeners closed; draining");
        let deadline = crate::forward::deadline(tokio::time::Instant::now(), grace);
        let dns_drain = async {
            match &self.dns {
                Some(d) => d.drain(deadline).await,
                None => 0,
            }
        };
        let (lb, dns) = tokio::join!(self.edge.drain(grace), dns_drain);
        let left = lb + dns;
        if lb > 0 {
            // cut what is still forwarding, so that each says so (cause
            // "shutdown") in the access log
            self.edge.cut_connections();
            self.edge.drain(Duration::from_secs(1)).await;
        }
        // the access log's last lines (those of the drained connections)
        let edge = self.edge.clone();
        let _ = tokio::task::spawn_blocking(move || edge.close_access_log(Duration::from_secs(2))).await;
        self.step(Step::Drained { left });
        left
    }

    /// Open LB and DNS TCP connections now.
    pub fn open_connections(&self) -> u64 {
        self.edge.active.load(std::sync::atomic::Ordering::Relaxed)
            + self.dns.as_ref().map_or(0, |d| d.tcp_connections())
    }

    /// The lifecycle so far, in order, with when each step happened.
    pub fn steps(&self) -> Vec<(Instant, Step)> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn step(&self, s: Step) {
        if let Ok(mut v) = self.steps.lock() {
            v.push((Instant::now(), s));
        }
    }

    fn routes_withdrawn(&self) {
        let announced = self
            .announcer()
            .map_or(0, |a| a.prefix_states().values().filter(|s| s.state.is_up()).count());
        self.step(Step::RoutesWithdrawn { announced });
    }

    async fn close_listeners(&self) {
        self.edge.stop_accepting().await;
        if let Some(d) = self.dns.clone() {
            // UDP threads answer what they have read, then stop reading;
            // open TCP connections are drained with the LB's.
            let _ = tokio::task::spawn_blocking(move || d.stop()).await;
        }
        self.step(Step::ListenersClosed);
    }
}

/// What the announcer reads of this PoP.
struct AnnouncerSources {
    edge: Arc<Edge>,
    dns: Option<Arc<Dns>>,
    fast_path: Option<Arc<crate::xdp::FastPath>>,
}

impl crate::announce::Sources for AnnouncerSources {
    fn config(&self) -> Arc<Config> {
        self.edge.config()
    }
    fn service(&self, name: &str) -> Option<(u32, u64)> {
        self.edge.service(name).map(|s| {
            // a tunnel service the kernel does not forward, whose backends
            // cannot learn the client address from PROXY: nothing to offer
            let sc = s.config();
            let stranded = matches!(sc.forwarding, crate::config::Forwarding::Tunnel(_))
                && !self.fast_path.as_ref().is_some_and(|f| f.tunnel_active(name))
                && !crate::tunnel::fallback_reads_proxy(&sc);
            (
                if stranded {
                    0
                } else {
                    u32::try_from(s.eligible_count()).unwrap_or(u32::MAX)
                },
                s.active.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }
    fn open_connections(&self) -> u64 {
        self.edge.active.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn dns_ready(&self) -> Result<(), String> {
        match &self.dns {
            None => Err("DNS server not running".to_string()),
            Some(d) => d.serving_all(),
        }
    }
}

/// Starts `n` data-plane workers: one thread each with a current-thread
/// runtime, which owns one SO_REUSEPORT socket per listen address and the
/// connections it accepts (no work stealing, no cross-thread wake-ups per
/// connection). Returns their handles.
pub fn spawn_workers(n: usize) -> anyhow::Result<Vec<tokio::runtime::Handle>> {
    let mut rts = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("anyedge-w{i}"))
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                },
            )
            .map_err(|e| anyhow::anyhow!("cannot start worker thread {i}: {e}"))?;
        let h = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("worker thread {i} ended at start"))?
            .map_err(|e| anyhow::anyhow!("cannot start worker runtime {i}: {e}"))?;
        rts.push(h);
    }
    Ok(rts)
}
