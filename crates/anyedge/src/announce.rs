//! Health-tied anycast announcements: the driver of the sans-IO anycast
//! policy (`anyedge_anycast::Policy`: which prefixes this PoP announces,
//! drains, damps or withdraws) and one BGP session driver per peer (the
//! protocol itself is the sans-IO `anyedge_bgp::Session`; this module only
//! moves bytes, timers and snapshots).
//!
//! ```text
//! controller (every 100 ms): snapshot (backends, DNS, connections, sessions)
//!      -> Policy::evaluate(now) -> prefix states -> routes
//!      │ watch<Vec<Route>> per peer
//!      ▼
//! peer driver: Session <-> TCP (connect, read, write), timers, Stop
//! ```
//!
//! Shutdown invariant: [`Announcer::shutdown`] withdraws every prefix and
//! waits until each established peer has been sent the withdrawals, then
//! sends NOTIFICATION Cease; only then does the caller close listeners.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyedge_anycast::{Input, PeerInput, Policy, PrefixInput, ServiceInput, Settings, State};
use anyedge_bgp::{Action, Event, Route, Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{AnycastConfig, BgpConfig, Config, PeerConfig};
use crate::logutil::LogLimiter;

/// Where a prefix stands and why. `state` and `reason` are what the
/// routers were told: "announced" (to at least one peer), "draining"
/// (announced less preferred), "withdrawn" (by the policy, or because no
/// BGP session is established), or "suppressed" (held down by flap
/// damping although healthy). `policy` is what the policy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixState {
    pub state: State,
    pub reason: String,
    /// Since when `state` holds.
    pub since: std::time::SystemTime,
    pub policy: State,
    /// Per configured peer, in configuration order: its name and what it
    /// was told ("announced", "draining", "withdrawn", "no session", "no
    /// next hop").
    pub peers: Vec<(String, &'static str)>,
    pub announced_to: usize,
    /// Peers with a next hop of the prefix's family.
    pub carriers: usize,
}

/// Live state of one BGP peer.
#[derive(Debug, Default)]
pub struct PeerStatus {
    pub established: AtomicBool,
    /// BFD session state (false without BFD).
    pub bfd_up: AtomicBool,
    /// Times the session went down after having been established.
    pub flaps: AtomicU64,
    /// TCP connections attempted to the peer (each retry counts).
    pub connect_attempts: AtomicU64,
    /// Prefixes currently announced to the peer (as far as we sent them).
    pub advertised: AtomicU64,
    pub last_error: Mutex<String>,
}

/// What the announcer reads of the rest of the PoP on every tick (the
/// `Pop` provides it; tests may provide their own).
pub trait Sources: Send + Sync + 'static {
    /// The configuration in force (`[bgp]`, `[[anycast]]`).
    fn config(&self) -> Arc<Config>;
    /// A service's eligible backends and open connections; `None`: the
    /// service is not running.
    fn service(&self, name: &str) -> Option<(u32, u64)>;
    /// Open connections of the whole PoP.
    fn open_connections(&self) -> u64;
    /// Whether the DNS server serves every zone (`Err(why)` if not, or if
    /// there is no DNS server).
    fn dns_ready(&self) -> Result<(), String>;
}

pub struct Announcer {
    src: Arc<dyn Sources>,
    /// The decisions: drains, damping, previous states. Locked only by
    /// the controller tick and operators' commands, never on the data path.
    policy: Mutex<Policy>,
    /// The last decisions, with the time each state began (for status).
    prefixes: Mutex<BTreeMap<String, PrefixState>>,
    pub peers: Vec<(PeerConfig, Arc<PeerStatus>)>,
    route_tx: Vec<watch::Sender<Vec<Route>>>,
    stop_tx: watch::Sender<Option<String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn prefix_str(p: &(IpAddr, u8)) -> String {
    format!("{}/{}", p.0, p.1)
}

/// The configured prefix an operator means by `text` ("addr/len", or
/// "addr" alone when exactly one prefix has that address).
fn find_prefix(anycast: &[AnycastConfig], text: &str) -> Result<String, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (
            a,
            Some(l.parse::<u8>().map_err(|_| format!("bad prefix length in {text:?}"))?),
        ),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an address or prefix"))?;
    let found: Vec<String> = anycast
        .iter()
        .filter(|ac| ac.prefix.0 == addr && len.is_none_or(|l| l == ac.prefix.1))
        .map(|ac| prefix_str(&ac.prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no [[anycast]] prefix {text}")),
        _ => Err(format!("{text} matches {}: give the length", found.join(", "))),
    }
}

impl Announcer {
    /// Starts the peer drivers and the controller.
    pub fn start(src: Arc<dyn Sources>, bgp: &BgpConfig) -> Arc<Announcer> {
        let (stop_tx, stop_rx) = watch::channel(None);
        let session_changed = Arc::new(tokio::sync::Notify::new());
        let mut peers = Vec::new();
        let mut route_tx = Vec::new();
        let mut tasks = Vec::new();
        for pc in &bgp.peers {
            let status = Arc::new(PeerStatus::default());
            let (tx, rx) = watch::channel(Vec::new());
            let (bfd_tx, bfd_rx) = watch::channel(0u64);
            if pc.bfd.is_some() {
                tasks.push(tokio::spawn(run_bfd(
                    pc.clone(),
                    bfd_tx,
                    stop_rx.clone(),
                    status.clone(),
                )));
            }
            tasks.push(tokio::spawn(run_peer(
                pc.clone(),
                bgp.clone(),
                rx,
                stop_rx.clone(),
                bfd_rx,
                status.clone(),
                session_changed.clone(),
            )));
            peers.push((pc.clone(), status));
            route_tx.push(tx);
        }
        let a = Arc::new(Announcer {
            src,
            policy: Mutex::new(Policy::new(settings(Some(bgp)))),
            prefixes: Mutex::new(BTreeMap::new()),
            peers,
            route_tx,
            stop_tx,
            tasks: Mutex::new(tasks),
        });
        let weak = Arc::downgrade(&a);
        let changed = session_changed;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // every 100 ms, and at once when a BGP session comes up or
                // goes down (what the routers were told changed)
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = changed.notified() => {}
                }
                let Some(a) = weak.upgrade() else { return };
                a.evaluate();
            }
        });
        a.evaluate();
        a
    }

    /// The policy, with the settings of the configuration in force (a
    /// reload may have changed them).
    fn policy(&self) -> MutexGuard<'_, Policy> {
        // The policy holds no invariant a panic elsewhere could break half-way.
        let mut p = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        p.set_settings(settings(self.src.config().bgp.as_ref()));
        p
    }

    /// Starts draining the whole PoP: prefixes are announced less preferred
    /// (GRACEFUL_SHUTDOWN community, prepends) until open connections fall
    /// to `drain_until_connections` or `drain_timeout` passes, then withdrawn.
    pub fn start_drain(&self, reason: &str) {
        let started = {
            let mut p = self.policy();
            p.drain_pop(reason, std::time::Instant::now())
                .then(|| p.settings().drain_timeout)
        };
        if let Some(timeout) = started {
            info!(reason, ?timeout, "PoP drain started");
        }
        self.evaluate();
    }

    /// Ends an operator's drain (not a maintenance file's, not shutdown).
    pub fn stop_drain(&self) {
        if self.policy().undrain_pop() {
            info!("PoP drain ended");
        }
        self.evaluate();
    }

    /// Drains one anycast prefix the way [`Self::start_drain`] drains the
    /// PoP, counting only the connections of the prefix's services. `prefix`
    /// is "addr/len", or just "addr" when one configured prefix has it.
    /// Returns the prefix drained.
    pub fn drain_prefix(&self, prefix: &str, drain: bool, reason: &str) -> Result<String, String> {
        let cfg = self.src.config();
        let key = find_prefix(&cfg.anycast, prefix)?;
        {
            let mut p = self.policy();
            if drain {
                if p.drain_prefix(&key, reason, std::time::Instant::now()) {
                    info!(prefix = %key, reason, timeout = ?p.settings().drain_timeout, "prefix drain started");
                }
            } else if p.undrain_prefix(&key) {
                info!(prefix = %key, "prefix drain ended");
            }
        }
        self.evaluate();
        Ok(key)
    }

    /// Why the whole PoP is draining (admin API, SIGTERM, maintenance
    /// file), if it is.
    pub fn pop_drain(&self) -> Option<String> {
        let file = maintenance_file(&self.src.config());
        self.policy().pop_drain_in(file.as_deref()).map(|d| d.reason)
    }

    /// Prefixes an operator has drained one by one.
    pub fn drained_prefixes(&self) -> Vec<String> {
        self.policy().drained_prefixes().map(str::to_string).collect()
    }

    /// The policy's input, read now: backends per service, DNS readiness,
    /// open connections, the maintenance file, the BGP sessions.
    fn snapshot(&self, cfg: &Config) -> Input {
        let prefixes = cfg
            .anycast
            .iter()
            .map(|ac| {
                let mut open = 0;
                let services = ac
                    .services
                    .iter()
                    .map(|name| {
                        let svc = self.src.service(name);
                        open += svc.map_or(0, |(_, o)| o);
                        ServiceInput {
                            name: name.clone(),
                            eligible: svc.map(|(e, _)| e),
                        }
                    })
                    .collect();
                PrefixInput {
                    key: prefix_str(&ac.prefix),
                    services,
                    min_healthy_backends: ac.min_healthy_backends,
                    dns: ac.dns.then(|| self.src.dns_ready()),
                    open_connections: open,
                    ipv6: ac.prefix.0.is_ipv6(),
                }
            })
            .collect();
        Input {
            prefixes,
            open_connections: self.src.open_connections(),
            maintenance_file: maintenance_file(cfg),
            peers: self
                .peers
                .iter()
                .map(|(pc, st)| PeerInput {
                    established: st.established.load(Ordering::SeqCst),
                    v4: next_hop(pc, false).is_some(),
                    v6: next_hop(pc, true).is_some(),
                })
                .collect(),
        }
    }

    /// Recomputes prefix states and pushes route sets to the peers.
    pub fn evaluate(&self) {
        let cfg = self.src.config();
        let input = self.snapshot(&cfg);
        let decisions = self.policy().evaluate(&input, std::time::Instant::now());
        if let Ok(mut cur) = self.prefixes.lock() {
            cur.retain(|k, _| decisions.iter().any(|d| d.key == *k));
            for d in &decisions {
                let (state, reason) = d.reported();
                let previous = cur.get(&d.key);
                let told_changed = previous.is_none_or(|s| s.state != state);
                // Said once per change of what the policy wants or of what
                // the routers were told, with both.
                if d.changed || told_changed {
                    let peers = format!("{}/{}", d.announced_to(), d.carriers());
                    if state == State::Announced {
                        info!(prefix = %d.key, state = state.as_str(), policy = d.state.as_str(), peers, reason = %reason, "anycast prefix state changed");
                    } else {
                        warn!(prefix = %d.key, state = state.as_str(), policy = d.state.as_str(), peers, reason = %reason, "anycast prefix state changed");
                    }
                }
                let since = match previous {
                    Some(s) if !told_changed => s.since,
                    _ => std::time::SystemTime::now(),
                };
                let peers = self
                    .peers
                    .iter()
                    .zip(&d.peers)
                    .map(|((pc, _), r)| (pc.name.clone(), r.as_str()))
                    .collect();
                cur.insert(
                    d.key.clone(),
                    PrefixState {
                        state,
                        reason,
                        since,
                        policy: d.state,
                        peers,
                        announced_to: d.announced_to(),
                        carriers: d.carriers(),
                    },
                );
            }
        }
        // Each peer gets every prefix the policy wants up, whether or not
        // its session is established now: the driver announces them once
        // it is.
        for ((pc, _), tx) in self.peers.iter().zip(&self.route_tx) {
            let routes: Vec<Route> = cfg
                .anycast
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| d.state.is_up())
                .filter_map(|(ac, d)| route_for(ac, pc, d.state == State::Draining))
                .collect();
            tx.send_if_modified(|cur| {
                if *cur != routes {
                    *cur = routes;
                    true
                } else {
                    false
                }
            });
        }
    }

    pub fn prefix_states(&self) -> BTreeMap<String, PrefixState> {
        self.prefixes.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Withdraws everything, waits (up to `max`) until every established
    /// peer has been sent the withdrawals, then closes the sessions with
    /// NOTIFICATION Cease / Administrative Shutdown.
    pub async fn shutdown(&self, max: Duration) {
        self.shutdown_with(max, true).await;
    }

    /// `drain: false` (upgrade hand-over): withdraw and Cease at once; the
    /// connections stay with the new process anyway.
    pub async fn shutdown_with(&self, max: Duration, drain: bool) {
        if drain {
            self.drain_then_wait().await;
        }
        self.withdraw_and_close(max).await;
    }

    async fn drain_then_wait(&self) {
        // Drain first (less preferred, wait for connections), then withdraw.
        self.start_drain("shutting down");
        let deadline = self
            .policy()
            .pop_drain()
            .and_then(|d| d.deadline)
            .unwrap_or_else(std::time::Instant::now);
        while std::time::Instant::now() < deadline && self.policy().any_draining() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.evaluate();
        }
    }

    async fn withdraw_and_close(&self, max: Duration) {
        self.policy().shut_down();
        self.evaluate();
        let deadline = crate::forward::deadline(Instant::now(), max);
        while Instant::now() < deadline {
            let pending = self
                .peers
                .iter()
                .any(|(_, s)| s.established.load(Ordering::SeqCst) && s.advertised.load(Ordering::SeqCst) > 0);
            if !pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!("anycast routes withdrawn; closing BGP sessions");
        let _ = self.stop_tx.send(Some("anyedge shutting down".into()));
        let tasks: Vec<_> = self.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), t).await;
        }
    }
}

/// The policy's settings from the `[bgp]` section.
fn settings(bgp: Option<&BgpConfig>) -> Settings {
    Settings {
        drain_until_connections: bgp.map_or(0, |b| b.drain_until_connections),
        drain_timeout: bgp.map_or(Duration::ZERO, |b| b.drain_timeout),
        flap_half_life: bgp.map_or(Duration::from_secs(60), |b| b.flap_half_life),
    }
}

/// The maintenance file's path while it exists.
fn maintenance_file(cfg: &Config) -> Option<String> {
    let file = cfg.bgp.as_ref()?.maintenance_file.as_ref()?;
    file.exists().then(|| file.display().to_string())
}

/// The next hop peer `pc` is given for prefixes of one family, if any.
fn next_hop(pc: &PeerConfig, v6: bool) -> Option<IpAddr> {
    if v6 {
        pc.next_hop_v6
            .or(match pc.local_address {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            })
            .map(IpAddr::V6)
    } else {
        pc.next_hop
            .or(match pc.local_address {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            })
            .map(IpAddr::V4)
    }
}

/// The route for `ac` as sent to peer `pc`, or None when the peer has no
/// next hop of the prefix's family.
fn route_for(ac: &AnycastConfig, pc: &PeerConfig, draining: bool) -> Option<Route> {
    let next_hop = next_hop(pc, ac.prefix.0.is_ipv6())?;
    let mut communities = ac.communities.clone();
    if draining {
        communities.extend(
            ac.drain_communities
                .iter()
                .copied()
                .filter(|c| !ac.communities.contains(c)),
        );
    }
    Some(Route {
        prefix: ac.prefix,
        next_hop,
        as_path_prepend: if draining { ac.drain_prepend } else { 0 },
        med: ac.med,
        communities,
        large_communities: Vec::new(),
    })
}

async fn connect(pc: &PeerConfig) -> std::io::Result<TcpStream> {
    let sock = match pc.address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    {
        use std::os::fd::AsFd;
        if let Some(key) = &pc.password {
            crate::net::set_tcp_md5(sock.as_fd(), pc.address.ip(), key.as_bytes())?;
        }
        if pc.ttl_security {
            crate::net::set_gtsm(sock.as_fd(), pc.address.is_ipv6())?;
        }
    }
    if let Some(local) = pc.local_address {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    let s = tokio::time::timeout(Duration::from_secs(5), sock.connect(pc.address))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Drives one BGP session until Stop.
async fn run_peer(
    pc: PeerConfig,
    bgp: BgpConfig,
    mut routes: watch::Receiver<Vec<Route>>,
    mut stop: watch::Receiver<Option<String>>,
    mut bfd_down: watch::Receiver<u64>,
    status: Arc<PeerStatus>,
    session_changed: Arc<tokio::sync::Notify>,
) {
    let mut scfg = SessionConfig::new(bgp.asn, pc.asn, bgp.router_id);
    scfg.hold_time = bgp.hold_time;
    scfg.connect_retry = bgp.connect_retry;
    scfg.connect_retry_max = bgp.connect_retry.max(Duration::from_secs(30));
    let mut sess = Session::new(scfg, std::time::Instant::now());
    let _ = sess.set_routes(routes.borrow_and_update().clone());
    sess.handle_event(Event::Start, std::time::Instant::now());
    let mut stream: Option<TcpStream> = None;
    let mut connecting: Option<
        std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>,
    > = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stopping = false;
    // Whether a session was up when the stop came (only then was Cease sent).
    let mut had_session = false;
    // Why the session is not up, as last logged: a peer that never answers
    // is said once (and again when the reason changes), not on every retry.
    let mut logged: Option<String> = None;
    let log_limit = LogLimiter::new(1);
    let not_up = |why: String, logged: &mut Option<String>| {
        if logged.as_deref() != Some(why.as_str()) {
            if let Some(suppressed) = log_limit.allow() {
                warn!(peer = %pc.name, address = %pc.address, reason = %why, suppressed,
                      retry = ?bgp.connect_retry, "BGP session not established; retrying");
                *logged = Some(why);
            }
        }
    };
    loop {
        // Perform every queued action.
        while let Some(action) = sess.poll_action() {
            match action {
                Action::Connect => {
                    status.connect_attempts.fetch_add(1, Ordering::Relaxed);
                    let pc2 = pc.clone();
                    connecting = Some(Box::pin(async move { connect(&pc2).await }));
                }
                Action::Send(bytes) => {
                    let failed = match stream.as_mut() {
                        Some(s) => s.write_all(&bytes).await.is_err(),
                        None => false,
                    };
                    if failed {
                        stream = None;
                        sess.handle_event(Event::TcpClosed, std::time::Instant::now());
                    }
                }
                Action::CloseTcp => {
                    if let Some(mut s) = stream.take() {
                        let _ = s.shutdown().await;
                    }
                    connecting = None;
                }
                Action::Established => {
                    status.established.store(true, Ordering::SeqCst);
                    session_changed.notify_one();
                    if let Ok(mut e) = status.last_error.lock() {
                        e.clear();
                    }
                    logged = None;
                    info!(peer = %pc.name, address = %pc.address, "BGP session established");
                }
                Action::Down { reason } => {
                    let was_up = status.established.swap(false, Ordering::SeqCst);
                    if was_up {
                        status.flaps.fetch_add(1, Ordering::Relaxed);
                        session_changed.notify_one();
                    }
                    status.advertised.store(0, Ordering::SeqCst);
                    let why = format!("{reason:?}");
                    if let Ok(mut e) = status.last_error.lock() {
                        e.clone_from(&why);
                    }
                    if was_up && !stopping {
                        warn!(peer = %pc.name, address = %pc.address, ?reason, "BGP session down");
                        logged = Some(why);
                    } else if !stopping && reason != anyedge_bgp::DownReason::TcpClosed {
                        // (a refused or failed connect was said where it failed)
                        not_up(why, &mut logged);
                    }
                }
            }
        }
        if status.established.load(Ordering::SeqCst) {
            status.advertised.store(routes.borrow().len() as u64, Ordering::SeqCst);
        }
        if stopping {
            if let Some(mut s) = stream.take() {
                let _ = s.shutdown().await;
            }
            if had_session {
                info!(peer = %pc.name, "BGP session closed (Cease sent)");
            } else {
                info!(peer = %pc.name, "BGP peer stopped (no session was established)");
            }
            return;
        }
        let deadline = sess.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = async { match connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                connecting = None;
                match r {
                    Ok(s) => {
                        stream = Some(s);
                        sess.handle_event(Event::TcpConnected, std::time::Instant::now());
                    }
                    Err(e) => {
                        let why = format!("connect: {e}");
                        if let Ok(mut le) = status.last_error.lock() {
                            le.clone_from(&why);
                        }
                        not_up(why, &mut logged);
                        sess.handle_event(Event::TcpFailed, std::time::Instant::now());
                    }
                }
            }
            r = async { match stream.as_mut() { Some(s) => s.read(&mut buf).await, None => std::future::pending().await } } => {
                match r {
                    Ok(0) | Err(_) => {
                        stream = None;
                        sess.handle_event(Event::TcpClosed, std::time::Instant::now());
                    }
                    Ok(n) => sess.handle_event(Event::Bytes(&buf[..n]), std::time::Instant::now()),
                }
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                sess.handle_timeout(std::time::Instant::now());
            }
            r = routes.changed() => {
                if r.is_ok() {
                    let set = routes.borrow_and_update().clone();
                    if let Err(e) = sess.set_routes(set) {
                        warn!(peer = %pc.name, error = %e, "route rejected");
                    }
                    // advertised count follows once the UPDATEs are written
                    status.advertised.store(u64::MAX, Ordering::SeqCst);
                }
            }
            r = stop.changed() => {
                let reason = if r.is_ok() { stop.borrow().clone() } else { None };
                had_session = status.established.load(Ordering::SeqCst);
                sess.handle_event(Event::Stop { reason }, std::time::Instant::now());
                stopping = true;
            }
            r = bfd_down.changed(), if pc.bfd.is_some() => {
                if r.is_ok() && stream.is_some() {
                    // RFC 5882: the forwarding path is gone; tear the session
                    // down at once instead of waiting for the hold timer.
                    warn!(peer = %pc.name, "BFD down: closing the BGP session");
                    stream = None;
                    sess.handle_event(Event::TcpClosed, std::time::Instant::now());
                }
            }
        }
    }
}

/// BFD for one peer (RFC 5881 single hop): control packets from a source
/// port in 49152-65535 with TTL 255 to the peer's port 3784; ours arrive on
/// local_address:3784. A transition out of Up closes the BGP session.
async fn run_bfd(
    pc: PeerConfig,
    down_tx: watch::Sender<u64>,
    mut stop: watch::Receiver<Option<String>>,
    status: Arc<PeerStatus>,
) {
    use anyedge_bfd::{BfdEvent, Session as Bfd, SessionConfig as BfdConfig};
    let (Some(local), Some((interval, mult))) = (pc.local_address, pc.bfd) else {
        return;
    };
    let peer = pc.address.ip();
    let rx = match bind_udp(SocketAddr::new(local, 3784), None) {
        Ok(s) => s,
        Err(e) => {
            warn!(peer = %pc.name, error = %e, "BFD: cannot bind port 3784; BFD disabled for this peer");
            return;
        }
    };
    let mut tx = None;
    for port in 49152u16..=49152 + 512 {
        if let Ok(s) = bind_udp(SocketAddr::new(local, port), Some(255)) {
            tx = Some(s);
            break;
        }
    }
    let Some(tx) = tx else {
        warn!(peer = %pc.name, "BFD: no free source port in 49152-49664; BFD disabled for this peer");
        return;
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() | 1);
    let mut bfd = Bfd::new(
        BfdConfig {
            local_discriminator: seed,
            desired_min_tx: interval,
            required_min_rx: interval,
            detect_mult: mult,
            jitter_seed: seed.rotate_left(7),
        },
        std::time::Instant::now(),
    );
    let dst = SocketAddr::new(peer, 3784);
    let mut buf = [0u8; 128];
    let mut downs = 0u64;
    loop {
        while let Some(pkt) = bfd.poll_transmit(std::time::Instant::now()) {
            let _ = tx.send_to(&pkt, dst).await;
        }
        while let Some(ev) = bfd.poll_event() {
            match ev {
                BfdEvent::Up => {
                    status.bfd_up.store(true, Ordering::SeqCst);
                    info!(peer = %pc.name, "BFD session up");
                }
                BfdEvent::Down { diag } => {
                    status.bfd_up.store(false, Ordering::SeqCst);
                    warn!(peer = %pc.name, ?diag, "BFD session down");
                    downs += 1;
                    let _ = down_tx.send(downs);
                }
            }
        }
        let deadline = bfd.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = rx.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    if from.ip() == peer {
                        let _ = bfd.handle_packet(&buf[..n], std::time::Instant::now());
                    }
                }
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                bfd.handle_timeout(std::time::Instant::now());
            }
            _ = stop.changed() => {
                bfd.set_admin_down(std::time::Instant::now());
                while let Some(pkt) = bfd.poll_transmit(std::time::Instant::now()) {
                    let _ = tx.send_to(&pkt, dst).await;
                }
                return;
            }
        }
    }
}

fn bind_udp(addr: SocketAddr, ttl: Option<u32>) -> std::io::Result<tokio::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    s.set_nonblocking(true)?;
    if let Some(t) = ttl {
        if addr.is_ipv6() {
            s.set_unicast_hops_v6(t)?;
        } else {
            s.set_ttl(t)?;
        }
    }
    s.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::find_prefix;
    use crate::config::AnycastConfig;

    #[test]
    fn an_operator_names_a_prefix_with_or_without_its_length() {
        let ac = |p: &str, len: u8| AnycastConfig {
            prefix: (p.parse().unwrap(), len),
            services: vec![],
            min_healthy_backends: 1,
            communities: vec![],
            med: None,
            drain_prepend: 0,
            drain_communities: vec![],
            dns: false,
        };
        let cfg = [
            ac("198.18.0.10", 32),
            ac("2001:db8::10", 128),
            ac("198.18.8.0", 24),
            ac("198.18.8.0", 23),
        ];
        assert_eq!(find_prefix(&cfg, "198.18.0.10").unwrap(), "198.18.0.10/32");
        assert_eq!(find_prefix(&cfg, "198.18.0.10/32").unwrap(), "198.18.0.10/32");
        assert_eq!(find_prefix(&cfg, "2001:db8::10").unwrap(), "2001:db8::10/128");
        assert_eq!(find_prefix(&cfg, "198.18.8.0/23").unwrap(), "198.18.8.0/23");
        let e = find_prefix(&cfg, "198.18.8.0").unwrap_err();
        assert!(e.contains("198.18.8.0/24, 198.18.8.0/23"), "{e}");
        assert!(find_prefix(&cfg, "198.18.0.10/31")
            .unwrap_err()
            .contains("no [[anycast]] prefix"));
        assert!(find_prefix(&cfg, "198.18.0.10/x")
            .unwrap_err()
            .contains("bad prefix length"));
        assert!(find_prefix(&cfg, "web").unwrap_err().contains("not an address"));
    }
}
