//! The layer-4 load balancer runtime: the service table and its reload
//! (`Edge`, here), listeners and upgrades' inherited sockets, services and
//! backends with health and selection (`service.rs`), and the
//! per-connection path (`conn.rs`: accept -> guard -> inspect -> select ->
//! connect with retry -> PROXY header -> forward).
//!
//! Hot-path state is read lock-free: the service config, backend list and
//! selector are `ArcSwap`s replaced wholesale by the control path (health
//! transitions, reload); counters are relaxed atomics. Mutexes are only taken
//! by the control path and on a backend's passive failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyedge_guard::Guard;
use anyedge_lb::pool::Overlay;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::accesslog::{self, AccessLog, AccessLogStats, Record};
use crate::config::Config;
use crate::forward;
use crate::net;

pub(crate) mod api;
mod conn;
mod discovery;
mod pool;
mod service;

use conn::accept_loop;
pub use pool::{Change, RuntimeDone, RuntimeError};
pub use service::{Backend, BackendLabels, BackendStats, Service, ServiceStats, CHECK_LATENCY};
use service::{ListenerSet, Selector};

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
    /// Signalled whenever a service's selector is rebuilt (health, drain,
    /// reload, discovery, slow-start step): the tunnel maps follow it.
    selectors_changed: Arc<Notify>,
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
    /// Runtime changes (from the state directory) of services not running
    /// now: taken by a service when it is created.
    pending_overlays: Mutex<BTreeMap<String, Overlay>>,
    /// Serializes runtime changes and their saving.
    runtime_lock: Mutex<()>,
    /// Fired when the drain's grace period is over: the connections still
    /// open end (waiting for the client, connecting or forwarding).
    cut: Cut,
    /// The access log's writer, while a service logs.
    access_log: ArcSwapOption<AccessLog>,
    pub access_log_stats: Arc<AccessLogStats>,
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
        // (microseconds: two processes of one PoP, e.g. during an upgrade,
        // never share it, so neither do their connections' unique ids)
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        // The operator's runtime changes survive restarts: a state file that
        // cannot be read stops the start rather than undoing them silently.
        let overlays = match &config.state_dir {
            Some(d) => pool::load_overlays(d)?,
            None => BTreeMap::new(),
        };
        if !overlays.is_empty() {
            info!(
                services = overlays.len(),
                "runtime backend changes loaded from the state directory"
            );
        }
        let edge = Arc::new(Edge {
            pending_overlays: Mutex::new(overlays),
            runtime_lock: Mutex::new(()),
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
            selectors_changed: Arc::new(Notify::new()),
            conn_seq: AtomicU64::new(0),
            boot,
            workers: workers.max(1),
            inherited: Mutex::new(inherited),
            worker_rts,
            gate: tokio::sync::watch::Sender::new(!hold_accept),
            cut: Cut::default(),
            access_log: ArcSwapOption::empty(),
            access_log_stats: Arc::default(),
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

    /// Signalled (`notify_one`) whenever a service's selector is rebuilt;
    /// for one waiter (the tunnel map sync). Changes while it does not wait
    /// leave one permit, so a burst (a reload rebuilds every service) wakes
    /// it once more, not once per change.
    pub fn selectors_changed(&self) -> Arc<Notify> {
        self.selectors_changed.clone()
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

        // 0. The access log: a new writer if its settings changed (opening
        //    its file can fail, which refuses the reload).
        let log_wanted = new.services.iter().any(|s| s.access_log).then(|| accesslog::Settings {
            config: new.access_log.clone(),
            pop: new.pop_name.clone(),
        });
        let log_now = self.access_log.load().as_ref().map(|l| l.settings.clone());
        let new_log = if log_wanted != log_now {
            Some(match log_wanted {
                Some(s) => Some(Arc::new(AccessLog::start(s, self.access_log_stats.clone())?)),
                None => None,
            })
        } else {
            None
        };

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
                if let Ok(mut t) = s.tasks.lock() {
                    t.abort_all();
                }
                for b in s.backends.load().iter() {
                    b.stop_checker();
                }
                if let (Ok(o), Ok(mut p)) = (s.overlay.lock(), self.pending_overlays.lock()) {
                    if !o.is_empty() {
                        p.insert(name.clone(), o.clone());
                    }
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
                        duration: crate::hist::AtomicHistogram::new(crate::hist::DURATION_BUCKETS),
                        rr: AtomicU64::new(0),
                        stats: ServiceStats::default(),
                        listeners: Mutex::new(Vec::new()),
                        rebuild_lock: Mutex::new(()),
                        rebuilt: self.selectors_changed.clone(),
                        discovered: Mutex::new(BTreeMap::new()),
                        overlay: Mutex::new(
                            self.pending_overlays
                                .lock()
                                .ok()
                                .and_then(|mut p| p.remove(&sc.name))
                                .unwrap_or_default(),
                        ),
                        reconcile_lock: Mutex::new(()),
                        tasks: Mutex::new(pool::Tasks::default()),
                    });
                    services.insert(sc.name.clone(), s.clone());
                    info!(service = %sc.name, listen = ?sc.listen, backends = sc.backends.len(), "service added");
                    s
                }
            };
            svc.cfg.store(Arc::new(sc.clone()));

            // Backends, matched by name: the file's, the discovered ones and
            // the runtime changes (a reload keeps the last two).
            pool::reconcile(&svc);
            pool::ensure_tasks(&svc);

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
        if let Some(l) = new_log {
            // (the one replaced writes what it has queued, then ends)
            self.access_log.store(l);
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

    /// Ends the connections still forwarding (the grace period is over),
    /// so that each says so in the access log before the process exits.
    pub fn cut_connections(&self) {
        self.cut.fire();
    }

    /// Queues an access-log line (if a writer runs).
    fn log(&self, r: Box<Record>) {
        if let Some(l) = &*self.access_log.load() {
            l.log(r);
        }
    }

    /// Reopens the access log's file before its next lines (SIGHUP, for
    /// logrotate; a reload that fails reopens it too).
    pub fn reopen_access_log(&self) {
        if let Some(l) = &*self.access_log.load() {
            l.reopen();
        }
    }

    /// Stops the access log once connections are drained, waiting up to
    /// `max` until what was queued is written.
    pub fn close_access_log(&self, max: Duration) {
        let Some(mut l) = self.access_log.swap(None) else {
            return;
        };
        // (a connection closing right now may hold it for a moment)
        for _ in 0..100 {
            match Arc::try_unwrap(l) {
                Ok(l) => return l.close(max),
                Err(again) => l = again,
            }
            std::thread::sleep(Duration::from_millis(1));
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

/// The end of the shutdown grace period, as each connection waits for it
/// (`Edge::cut_connections`).
///
/// Not a `watch` or a bare `Notify`: a connection's forwarding `select!`
/// polls this on every wake-up, and a waiting `Notified` takes its
/// `Notify`'s lock on each poll, one lock shared by every connection of
/// every worker. Here only the first poll registers (under that lock); later
/// polls are one atomic load, and the registered waker (the connection
/// task's, which does not change) wakes the task when it fires.
#[derive(Default)]
struct Cut {
    fired: AtomicBool,
    notify: Notify,
}

impl Cut {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Completes once fired.
    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if self.fired.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            if !registered {
                if std::future::Future::poll(notified.as_mut(), cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
                registered = true;
            }
            std::task::Poll::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_wakes_each_waiter_once_fired_and_not_before() {
        let cut = Arc::new(Cut::default());
        // waiters registered before the cut, polled again and again by
        // other wake-ups of their task (as a forwarding select! does)
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let c = cut.clone();
            let busy = Arc::new(Notify::new());
            let b = busy.clone();
            waiters.push((
                tokio::spawn(async move {
                    let mut wakes = 0u32;
                    let wait = c.wait();
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            () = &mut wait => return wakes,
                            () = b.notified() => wakes += 1,
                        }
                    }
                }),
                busy,
            ));
        }
        for _ in 0..5 {
            tokio::task::yield_now().await;
            for (_, busy) in &waiters {
                busy.notify_one();
            }
        }
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|(t, _)| !t.is_finished()), "finished before the cut");
        cut.fire();
        for (t, _) in waiters {
            let wakes = tokio::time::timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
            assert!(wakes >= 1, "the select! was polled again before the cut");
        }
        // a waiter that comes after the cut completes at once
        tokio::time::timeout(Duration::from_secs(1), cut.wait()).await.unwrap();
    }
}
