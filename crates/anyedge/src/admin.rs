//! Admin HTTP API (axum): status, actions, Prometheus metrics.
//!
//! - `GET  /api/v1/status`                                   everything, JSON
//! - `POST /api/v1/services/{service}/backends/{backend}/drain`   (token)
//! - `POST /api/v1/services/{service}/backends/{backend}/undrain` (token)
//! - `POST /api/v1/reload`                                   (token)
//! - `GET  /metrics`                                         Prometheus / OpenMetrics text
//!
//! Reads are open (the listener is loopback unless a token is set); every
//! call that changes state needs `Authorization: Bearer <admin.token>`, and
//! without a configured token the API is read-only. The token is read from
//! the running configuration on each call, so a reload rotates it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyedge_lb::health::CheckResult;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::AdminConfig;
use crate::lb::Edge;
use crate::logutil::LogLimiter;

/// What the admin API and the signal handlers act on.
pub struct Control {
    pub edge: Arc<Edge>,
    pub config_path: Option<PathBuf>,
    pub announcer: Option<Arc<crate::announce::Announcer>>,
    pub dns: Option<Arc<crate::dns::Dns>>,
}

impl Control {
    /// Reload: parse the whole file, then apply all-or-nothing.
    pub fn reload(&self) -> Result<(), String> {
        let cfg = match &self.config_path {
            Some(p) => crate::config::Config::load(p),
            None => crate::config::Config::embedded(),
        }
        .map_err(|e| e.to_string())?;
        for w in &cfg.warnings {
            tracing::warn!("config: {w}");
        }
        let dns_cfg = cfg.dns.clone();
        let pop = cfg.pop_name.clone();
        self.edge.apply(cfg).map_err(|e| format!("{e:#}"))?;
        if let Some(fp) = self.edge.fast_path.get() {
            if let Err(e) = fp.apply(&self.edge.config()) {
                tracing::warn!(error = %e, "XDP fast path: new rules not applied (the userspace layer has them)");
            }
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
                tracing::warn!(
                    "adding or removing the [dns] section takes effect after a restart (or an upgrade, SIGUSR2)"
                );
            }
            (None, None) => {}
        }
        Ok(())
    }
}

struct AppState {
    ctl: Arc<Control>,
    registry: Registry,
}

/// Binds the admin listener and serves it in a background task.
pub async fn serve(listen: SocketAddr, ctl: Arc<Control>) -> anyhow::Result<()> {
    let Some(started) = ctl.edge.config().admin.clone() else {
        anyhow::bail!("admin API: no [admin] section");
    };
    // SO_REUSEPORT: during a binary upgrade the new process binds the same
    // address while the old one is still draining.
    let listener = (|| -> std::io::Result<tokio::net::TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&listen.into())?;
        s.listen(128)?;
        tokio::net::TcpListener::from_std(s.into())
    })()
    .map_err(|e| anyhow::anyhow!("admin API: cannot listen on {listen}: {e}"))?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EdgeCollector(ctl.clone())));
    registry.register(
        "anyedge_health_check_duration_seconds",
        "Duration of successful active health checks",
        crate::lb::CHECK_LATENCY.clone(),
    );
    let ctl_for_limits = ctl.clone();
    let state = Arc::new(AppState { ctl, registry });
    let app = Router::new()
        .route("/", get(status_page))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services/{service}/backends/{backend}/drain", post(drain))
        .route("/api/v1/services/{service}/backends/{backend}/undrain", post(undrain))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/dns/zones/{zone}/reload", post(dns_zone_reload))
        .route("/api/v1/pop/drain", post(pop_drain))
        .route("/api/v1/pop/undrain", post(pop_undrain))
        .route("/api/v1/anycast/{prefix}/drain", post(prefix_drain))
        .route("/api/v1/anycast/{prefix}/undrain", post(prefix_undrain))
        .route("/metrics", get(metrics))
        .with_state(state);
    info!(%listen, "admin API listening");
    tokio::spawn(accept_loop(listener, app, ctl_for_limits, started));
    Ok(())
}

/// Log lines a remote party can cause, each rate-limited.
static LOG_REFUSED: LogLimiter = LogLimiter::new(5);
static LOG_ACCEPT: LogLimiter = LogLimiter::new(5);
static LOG_TOKEN: LogLimiter = LogLimiter::new(5);

/// A connection is asked to close once it has been open this long (after the
/// response in flight), and is closed whatever it does `CLOSE_GRACE` later.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Admin connections: open now, per source, and what was refused.
#[derive(Default)]
struct Conns {
    open: AtomicU64,
    per_source: Mutex<HashMap<IpAddr, u32>>,
    refused_cap: AtomicU64,
    refused_source_cap: AtomicU64,
    refused_fd_reserve: AtomicU64,
    header_timeouts: AtomicU64,
}

static CONNS: LazyLock<Conns> = LazyLock::new(Conns::default);

/// The key a per-source cap counts by: the address, or its /64 for IPv6
/// (one host has a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// One admitted connection; dropping it gives its slots back.
struct Slot {
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        CONNS.open.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut m) = CONNS.per_source.lock() {
            if let Some(n) = m.get_mut(&self.source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.source);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Cap,
    SourceCap,
    FdReserve,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Cap => "cap",
            Refusal::SourceCap => "source_cap",
            Refusal::FdReserve => "fd_reserve",
        }
    }
}

/// Admits a connection from `peer` under the caps and the descriptor
/// reserve (`fd`: the connection's descriptor).
fn admit(peer: IpAddr, limits: &AdminConfig, fd: std::os::fd::RawFd) -> Result<Slot, Refusal> {
    let source = source_key(peer);
    if CONNS.open.fetch_add(1, Ordering::AcqRel) >= u64::from(limits.max_connections) {
        CONNS.open.fetch_sub(1, Ordering::AcqRel);
        CONNS.refused_cap.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::Cap);
    }
    {
        let Ok(mut m) = CONNS.per_source.lock() else {
            CONNS.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Cap);
        };
        // (max_connections_per_source >= 1: no zero entry is left behind)
        let n = m.entry(source).or_insert(0);
        if *n >= limits.max_connections_per_source {
            drop(m);
            CONNS.open.fetch_sub(1, Ordering::AcqRel);
            CONNS.refused_source_cap.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceCap);
        }
        *n += 1;
    }
    let slot = Slot { source };
    if crate::fdlimit::in_reserve(fd) {
        CONNS.refused_fd_reserve.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::FdReserve);
    }
    Ok(slot)
}

/// Accepts admin connections: each is served by hyper's HTTP/1 with a
/// header-read timeout (which also closes idle kept-alive connections),
/// under a total cap, a per-source cap and the descriptor reserve; a
/// connection over any of them is closed at once.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, ctl: Arc<Control>, started: AdminConfig) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(s) = LOG_ACCEPT.allow() {
                    warn!(error = %e, suppressed = s, "admin API: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The caps and timeout in force: the running configuration's (a
        // reload changes them), or those the listener started with if a
        // reload removed `[admin]` (the listener stays until a restart).
        let cfg = ctl.edge.config();
        let limits = cfg.admin.as_ref().unwrap_or(&started);
        let slot = match admit(peer.ip(), limits, stream.as_raw_fd()) {
            Ok(s) => s,
            Err(why) => {
                if let Some(s) = LOG_REFUSED.allow() {
                    warn!(%peer, reason = why.as_str(), max_connections = limits.max_connections,
                          max_connections_per_source = limits.max_connections_per_source,
                          suppressed = s, "admin API: connection refused");
                }
                continue;
            }
        };
        let header_timeout = limits.header_timeout;
        drop(cfg);
        tokio::spawn(serve_connection(stream, app.clone(), header_timeout, slot));
    }
}

/// Serves one admitted connection until it closes, its head times out, or
/// it reaches `MAX_CONNECTION_AGE`; then gives its slot back.
async fn serve_connection(stream: tokio::net::TcpStream, app: Router, header_timeout: Duration, slot: Slot) {
    let _ = stream.set_nodelay(true);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        // a request head (and what is read with it) of at most 16 KiB
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let conn = http.serve_connection(
        hyper_util::rt::TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(app),
    );
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = r {
        if e.is_timeout() {
            CONNS.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(slot);
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Checks the bearer token of a state-changing call: `Some(refusal)` if the
/// call must not proceed.
fn refuse(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    authorize(state, headers).err().map(|b| *b)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let cfg = state.ctl.edge.config();
    let Some(want) = cfg.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "no admin token configured: the admin API is read-only",
        )));
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match got {
        Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
        Some(_) => {
            if let Some(s) = LOG_TOKEN.allow() {
                warn!(suppressed = s, "admin API: wrong bearer token");
            }
            Err(Box::new(error(StatusCode::UNAUTHORIZED, "wrong token")))
        }
        None => Err(Box::new(error(StatusCode::UNAUTHORIZED, "missing bearer token"))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The live status page: one static file, no external assets; it polls
/// `/api/v1/status` every second and posts actions with the token typed in.
async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("status.html"),
    )
        .into_response()
}

async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut v = status_json(&state.ctl.edge);
    if let (Some(a), Some(obj)) = (&state.ctl.announcer, v.as_object_mut()) {
        let drained = a.drained_prefixes();
        let prefixes: Vec<Value> = a
            .prefix_states()
            .into_iter()
            .map(|(p, s)| {
                let since = s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let operator_drain = drained.contains(&p);
                json!({ "prefix": p, "state": s.state, "reason": s.reason, "since_unix": since,
                        "operator_drain": operator_drain })
            })
            .collect();
        let peers: Vec<Value> = a
            .peers
            .iter()
            .map(|(pc, st)| {
                json!({
                    "name": pc.name,
                    "address": pc.address.to_string(),
                    "asn": pc.asn,
                    "established": st.established.load(Ordering::Relaxed),
                    "bfd": pc.bfd.as_ref().map(|_| if st.bfd_up.load(Ordering::Relaxed) { "up" } else { "down" }),
                    "flaps": st.flaps.load(Ordering::Relaxed),
                    "last_error": st.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
                })
            })
            .collect();
        obj.insert("anycast".into(), json!(prefixes));
        obj.insert("pop_drain".into(), json!(a.pop_drain()));
        obj.insert("bgp_peers".into(), json!(peers));
    }
    if let (Some(fp), Some(obj)) = (state.ctl.edge.fast_path.get(), v.as_object_mut()) {
        obj.insert(
            "xdp".into(),
            json!({ "interfaces": fp.interfaces, "mode": fp.mode, "counters": fp.counters() }),
        );
    }
    if let (Some(d), Some(obj)) = (&state.ctl.dns, v.as_object_mut()) {
        obj.insert("dns".into(), json!({ "zones": d.zone_status(), "stats": d.stats() }));
    }
    if let Some(obj) = v.as_object_mut() {
        let c = &*CONNS;
        obj.insert(
            "admin".into(),
            json!({
                "open_connections": c.open.load(Ordering::Relaxed),
                "refused": {
                    "cap": c.refused_cap.load(Ordering::Relaxed),
                    "source_cap": c.refused_source_cap.load(Ordering::Relaxed),
                    "fd_reserve": c.refused_fd_reserve.load(Ordering::Relaxed),
                },
                "header_timeouts": c.header_timeouts.load(Ordering::Relaxed),
                "fd_limit": crate::fdlimit::limit(),
            }),
        );
    }
    Json(v)
}

/// Reloads one zone from its file; the previous version keeps serving if
/// the new one does not load.
async fn dns_zone_reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(zone): axum::extract::Path<String>,
) -> Response {
    if let Some(r) = refuse(&state, &headers) {
        return r;
    }
    let Some(d) = state.ctl.dns.clone() else {
        return error(StatusCode::NOT_FOUND, "no [dns] section configured");
    };
    match tokio::task::spawn_blocking(move || d.reload_zone(&zone)).await {
        Ok(Ok(serial)) => Json(json!({ "reloaded": true, "serial": serial })).into_response(),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub fn status_json(edge: &Edge) -> Value {
    let cfg = edge.config();
    let services: Vec<Value> = edge
        .services()
        .iter()
        .map(|svc| {
            let sc = svc.config();
            let st = &svc.stats;
            let backends: Vec<Value> = svc
                .backends()
                .iter()
                .map(|b| {
                    let bc = b.config();
                    let bs = &b.stats;
                    let (reason, since_s, last) = match b.health.lock() {
                        Ok(h) => (
                            h.last_reason().to_string(),
                            h.since().elapsed().as_secs_f64(),
                            match h.last_result() {
                                None => json!(null),
                                Some(CheckResult::Ok { latency }) => {
                                    json!({ "ok": true, "latency_ms": latency.as_secs_f64() * 1e3 })
                                }
                                Some(CheckResult::Failed { reason }) => {
                                    json!({ "ok": false, "error": reason.to_string() })
                                }
                            },
                        ),
                        Err(_) => (String::new(), 0.0, json!(null)),
                    };
                    json!({
                        "name": b.name,
                        "address": bc.address.to_string(),
                        "weight": bc.weight,
                        "proxy_protocol": format!("{:?}", bc.proxy).to_lowercase(),
                        "health": if b.is_up() { "up" } else { "down" },
                        "health_reason": reason,
                        "health_since_seconds": since_s,
                        "last_check": last,
                        "draining": b.is_draining(),
                        "active_connections": b.active.load(Ordering::Relaxed),
                        "connections": bs.connections.load(Ordering::Relaxed),
                        "bytes_to_backend": bs.bytes_to_backend.load(Ordering::Relaxed),
                        "bytes_to_client": bs.bytes_to_client.load(Ordering::Relaxed),
                        "connect_refused": bs.connect_refused.load(Ordering::Relaxed),
                        "connect_timeout": bs.connect_timeout.load(Ordering::Relaxed),
                        "connect_error": bs.connect_error.load(Ordering::Relaxed),
                        "silent_backend": bs.silent_backend.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": svc.name,
                "listen": sc.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "balance": format!("{:?}", sc.balance),
                "active_connections": svc.active.load(Ordering::Relaxed),
                "accepted": st.accepted.load(Ordering::Relaxed),
                "completed": st.completed.load(Ordering::Relaxed),
                "rejected": {
                    "global_cap": st.rejected_global_cap.load(Ordering::Relaxed),
                    "service_cap": st.rejected_service_cap.load(Ordering::Relaxed),
                    "no_backend": st.no_backend.load(Ordering::Relaxed),
                    "client_silent": st.client_silent.load(Ordering::Relaxed),
                    "bad_proxy_header": st.bad_proxy_header.load(Ordering::Relaxed),
                    "untrusted_proxy_header": st.untrusted_proxy_header.load(Ordering::Relaxed),
                },
                "idle_timeouts": st.idle_timeouts.load(Ordering::Relaxed),
                "retries": st.retries.load(Ordering::Relaxed),
                "backends": backends,
            })
        })
        .collect();
    let drops: serde_json::Map<String, Value> = anyedge_guard::DropReason::ALL
        .iter()
        .zip(&edge.guard_drops)
        .map(|(r, v)| (r.as_str().to_string(), json!(v.load(Ordering::Relaxed))))
        .collect();
    json!({
        "pop": cfg.pop_name,
        "guard": {
            "drops": drops,
            "dynamic_blocks": edge.dynamic_blocks.load(Ordering::Relaxed),
            "tarpitted": edge.tarpitted.load(Ordering::Relaxed),
            "tarpit_open": edge.tarpit_open.load(Ordering::Relaxed),
        },
        "config": cfg.source,
        "active_connections": edge.active.load(Ordering::Relaxed),
        "max_connections": cfg.max_connections.get(),
        "services": services,
    })
}

async fn set_drain(state: &AppState, headers: &HeaderMap, service: &str, backend: &str, drain: bool) -> Response {
    if let Some(r) = refuse(state, headers) {
        return r;
    }
    let Some(svc) = state.ctl.edge.service(service) else {
        return error(StatusCode::NOT_FOUND, format!("no service {service:?}"));
    };
    if !svc.set_admin_drain(backend, drain) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no backend {backend:?} in service {service:?}"),
        );
    }
    Json(json!({ "service": service, "backend": backend, "draining": drain })).into_response()
}

async fn drain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
) -> Response {
    set_drain(&state, &headers, &service, &backend, true).await
}

async fn undrain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
) -> Response {
    set_drain(&state, &headers, &service, &backend, false).await
}

async fn pop_drain(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    pop_set_drain(&state, &headers, true)
}

async fn pop_undrain(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    pop_set_drain(&state, &headers, false)
}

/// The announcer for a drain call, once the caller may change state.
fn drain_announcer<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
) -> Result<&'s crate::announce::Announcer, Box<Response>> {
    if let Some(r) = refuse(state, headers) {
        return Err(Box::new(r));
    }
    state
        .ctl
        .announcer
        .as_deref()
        .ok_or_else(|| Box::new(error(StatusCode::CONFLICT, "no [bgp] configured: nothing to drain")))
}

fn pop_set_drain(state: &AppState, headers: &HeaderMap, drain: bool) -> Response {
    let a = match drain_announcer(state, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if drain {
        a.start_drain("admin API");
    } else {
        a.stop_drain();
    }
    Json(json!({ "draining": drain })).into_response()
}

async fn prefix_drain(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(prefix): Path<String>) -> Response {
    prefix_set_drain(&state, &headers, &prefix, true)
}

async fn prefix_undrain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(prefix): Path<String>,
) -> Response {
    prefix_set_drain(&state, &headers, &prefix, false)
}

/// `prefix` is "addr/len" (the slash sent as %2F) or a bare address.
fn prefix_set_drain(state: &AppState, headers: &HeaderMap, prefix: &str, drain: bool) -> Response {
    let a = match drain_announcer(state, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match a.drain_prefix(prefix, drain, "admin API") {
        Ok(p) => {
            info!(prefix = %p, drain, "prefix drain changed by admin API");
            Json(json!({ "prefix": p, "draining": drain })).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&state, &headers) {
        return r;
    }
    info!("admin API: reloading configuration");
    match state.ctl.reload() {
        Ok(()) => {
            info!("reload applied");
            Json(json!({ "reloaded": true })).into_response()
        }
        Err(e) => {
            warn!(error = %e, "reload rejected; keeping the running configuration");
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Reads the live atomics on each scrape: nothing is recorded twice and the
/// connection path never touches the metrics registry.
struct EdgeCollector(Arc<Control>);

impl std::fmt::Debug for EdgeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeCollector")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// DNS counters: queries by transport and type, responses by RCODE and
/// kind, RRL verdicts, and per-zone serials.
fn dns_metrics(enc: &mut DescriptorEncoder, d: &crate::dns::Dns) -> std::fmt::Result {
    let s = d.stats();
    counter(
        enc,
        "anyedge_dns_queries",
        "DNS queries received, by transport.",
        &[
            (vec![("transport", "udp")], s.udp_queries),
            (vec![("transport", "tcp")], s.tcp_queries),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_query_types",
        "DNS queries received, by QTYPE (OTHER: any type not named).",
        &s.query_types
            .iter()
            .map(|(t, v)| (vec![("type", *t)], *v))
            .collect::<Vec<_>>(),
    )?;
    const RCODES: [&str; 17] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
        "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15", "BADVERS",
    ];
    counter(
        enc,
        "anyedge_dns_responses",
        "DNS answers computed, by RCODE.",
        &RCODES
            .iter()
            .zip(&s.rcode)
            .filter(|(_, v)| **v > 0)
            .map(|(r, v)| (vec![("rcode", *r)], *v))
            .collect::<Vec<_>>(),
    )?;
    counter(
        enc,
        "anyedge_dns_answers",
        "DNS answers by kind (positive, wildcard, nxdomain, nodata, referral, error).",
        &crate::dns::KINDS
            .iter()
            .zip(&s.kind)
            .map(|(k, v)| (vec![("kind", *k)], *v))
            .collect::<Vec<_>>(),
    )?;
    counter(
        enc,
        "anyedge_dns_dropped",
        "DNS packets not answered (not a query, or dropped by response rate limiting).",
        &[(vec![], s.dropped)],
    )?;
    counter(
        enc,
        "anyedge_dns_truncated",
        "UDP answers sent truncated (TC).",
        &[(vec![], s.truncated)],
    )?;
    counter(
        enc,
        "anyedge_dns_rrl",
        "Response rate limiting verdicts other than send (layer=dns, by reason).",
        &[
            (vec![("action", "drop")], s.rrl_dropped),
            (vec![("action", "slip")], s.rrl_slipped),
            (vec![("action", "would_limit")], s.rrl_would_limit),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_cookies_valid",
        "Queries carrying a valid server cookie (exempt from RRL).",
        &[(vec![], s.cookies_valid)],
    )?;
    counter(
        enc,
        "anyedge_dns_tcp_refused",
        "DNS TCP connections closed at once because of dns.tcp_max_connections.",
        &[(vec![], s.tcp_refused_cap)],
    )?;
    counter(
        enc,
        "anyedge_dns_tcp_closed",
        "DNS TCP connections closed by the server's limits: source_limit (refused: dns.tcp_max_per_address or tcp_max_per_prefix), evicted (idlest connection of a full table), query_timeout (a query not received whole within dns.tcp_io_timeout), write_stalled (answers not read by the client within dns.tcp_io_timeout).",
        &[
            (vec![("reason", "source_limit")], s.tcp_refused_source),
            (vec![("reason", "evicted")], s.tcp_evicted),
            (vec![("reason", "query_timeout")], s.tcp_query_timeout),
            (vec![("reason", "write_stalled")], s.tcp_write_stalled),
        ],
    )?;
    gauge(
        enc,
        "anyedge_dns_tcp_pending_bytes",
        "DNS answer bytes waiting for TCP clients to read them, all connections.",
        &[(vec![], i64::try_from(s.tcp_pending_bytes).unwrap_or(i64::MAX))],
    )?;
    counter(
        enc,
        "anyedge_dns_transfers",
        "Zone transfers: pulled as secondary (axfr_in, ixfr_in), served, refused.",
        &[
            (vec![("kind", "axfr_in")], s.axfr_in),
            (vec![("kind", "ixfr_in")], s.ixfr_in),
            (vec![("kind", "served")], s.transfers_served),
            (vec![("kind", "refused")], s.transfers_refused),
        ],
    )?;
    let zones = d.zone_status();
    gauge(
        enc,
        "anyedge_dns_zone_serial",
        "SOA serial served per zone (0: not loaded).",
        &zones
            .iter()
            .map(|z| (vec![("zone", z.name.as_str())], i64::from(z.serial)))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "anyedge_dns_zone_records",
        "Records served per zone.",
        &zones
            .iter()
            .map(|z| {
                (
                    vec![("zone", z.name.as_str())],
                    i64::try_from(z.records).unwrap_or(i64::MAX),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

impl Collector for EdgeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let edge = &self.0.edge;
        let services = edge.services();
        let backends: Vec<_> = services
            .iter()
            .flat_map(|s| s.backends().iter().map(|b| (s.clone(), b.clone())).collect::<Vec<_>>())
            .collect();
        let ld = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let gi = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);

        gauge(
            &mut enc,
            "anyedge_connections_active",
            "Open client connections per service.",
            &services
                .iter()
                .map(|s| (vec![("service", s.name.as_str())], gi(ld(&s.active))))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut enc,
            "anyedge_connections_accepted",
            "Client connections accepted per service.",
            &services
                .iter()
                .map(|s| (vec![("service", s.name.as_str())], ld(&s.stats.accepted)))
                .collect::<Vec<_>>(),
        )?;
        let mut rejected = Vec::new();
        for s in &services {
            let st = &s.stats;
            for (reason, v) in [
                ("global_cap", &st.rejected_global_cap),
                ("service_cap", &st.rejected_service_cap),
                ("no_backend", &st.no_backend),
                ("client_silent", &st.client_silent),
                ("bad_proxy_header", &st.bad_proxy_header),
                ("untrusted_proxy_header", &st.untrusted_proxy_header),
                ("idle_timeout", &st.idle_timeouts),
            ] {
                rejected.push((vec![("service", s.name.as_str()), ("reason", reason)], ld(v)));
            }
        }
        counter(
            &mut enc,
            "anyedge_connections_failed",
            "Client connections closed by anyedge, by reason.",
            &rejected,
        )?;
        counter(
            &mut enc,
            "anyedge_backend_retries",
            "Connects retried on another backend.",
            &services
                .iter()
                .map(|s| (vec![("service", s.name.as_str())], ld(&s.stats.retries)))
                .collect::<Vec<_>>(),
        )?;
        let lbl =
            |s: &crate::lb::Service, b: &crate::lb::Backend| -> (String, String) { (s.name.clone(), b.name.clone()) };
        let names: Vec<(String, String)> = backends.iter().map(|(s, b)| lbl(s, b)).collect();
        let per_backend = |f: &dyn Fn(&crate::lb::Backend) -> u64| -> Vec<(Vec<(&str, &str)>, u64)> {
            backends
                .iter()
                .zip(&names)
                .map(|((_, b), (sn, bn))| (vec![("service", sn.as_str()), ("backend", bn.as_str())], f(b)))
                .collect()
        };
        let up: Vec<(Vec<(&str, &str)>, i64)> = per_backend(&|b| u64::from(b.is_up()))
            .into_iter()
            .map(|(l, v)| (l, gi(v)))
            .collect();
        gauge(
            &mut enc,
            "anyedge_backend_up",
            "1 if the backend passes health checks.",
            &up,
        )?;
        let draining: Vec<(Vec<(&str, &str)>, i64)> = per_backend(&|b| u64::from(b.is_draining()))
            .into_iter()
            .map(|(l, v)| (l, gi(v)))
            .collect();
        gauge(
            &mut enc,
            "anyedge_backend_draining",
            "1 if the backend is draining.",
            &draining,
        )?;
        let active: Vec<(Vec<(&str, &str)>, i64)> = per_backend(&|b| ld(&b.active))
            .into_iter()
            .map(|(l, v)| (l, gi(v)))
            .collect();
        gauge(
            &mut enc,
            "anyedge_backend_connections_active",
            "Open connections per backend.",
            &active,
        )?;
        counter(
            &mut enc,
            "anyedge_backend_connections",
            "Connections forwarded per backend.",
            &per_backend(&|b| ld(&b.stats.connections)),
        )?;
        let mut bytes = Vec::new();
        let mut fails = Vec::new();
        let mut checks = Vec::new();
        for ((_, b), (sn, bn)) in backends.iter().zip(&names) {
            let bs = &b.stats;
            bytes.push((
                vec![
                    ("service", sn.as_str()),
                    ("backend", bn.as_str()),
                    ("direction", "to_backend"),
                ],
                ld(&bs.bytes_to_backend),
            ));
            bytes.push((
                vec![
                    ("service", sn.as_str()),
                    ("backend", bn.as_str()),
                    ("direction", "to_client"),
                ],
                ld(&bs.bytes_to_client),
            ));
            for (cause, v) in [
                ("refused", &bs.connect_refused),
                ("timeout", &bs.connect_timeout),
                ("error", &bs.connect_error),
            ] {
                fails.push((
                    vec![("service", sn.as_str()), ("backend", bn.as_str()), ("cause", cause)],
                    ld(v),
                ));
            }
            checks.push((
                vec![("service", sn.as_str()), ("backend", bn.as_str()), ("result", "ok")],
                ld(&bs.checks_ok),
            ));
            checks.push((
                vec![("service", sn.as_str()), ("backend", bn.as_str()), ("result", "failed")],
                ld(&bs.checks_failed),
            ));
        }
        counter(
            &mut enc,
            "anyedge_backend_bytes",
            "Bytes forwarded per backend and direction.",
            &bytes,
        )?;
        counter(
            &mut enc,
            "anyedge_backend_connect_failures",
            "Failed connects to a backend, by cause.",
            &fails,
        )?;
        counter(
            &mut enc,
            "anyedge_health_checks",
            "Active health checks, by result.",
            &checks,
        )?;
        let drops: Vec<(Vec<(&str, &str)>, u64)> = anyedge_guard::DropReason::ALL
            .iter()
            .zip(&edge.guard_drops)
            .map(|(r, v)| (vec![("layer", "userspace"), ("reason", r.as_str())], ld(v)))
            .collect();
        counter(
            &mut enc,
            "anyedge_guard_drops",
            "Connections dropped by the guard, by layer and reason.",
            &drops,
        )?;
        if let Some(a) = &self.0.announcer {
            let up: Vec<(Vec<(&str, &str)>, i64)> = a
                .peers
                .iter()
                .map(|(pc, st)| {
                    (
                        vec![("peer", pc.name.as_str())],
                        i64::from(st.established.load(Ordering::Relaxed)),
                    )
                })
                .collect();
            gauge(
                &mut enc,
                "anyedge_bgp_session_up",
                "1 if the BGP session is established.",
                &up,
            )?;
            let flaps: Vec<(Vec<(&str, &str)>, u64)> = a
                .peers
                .iter()
                .map(|(pc, st)| (vec![("peer", pc.name.as_str())], st.flaps.load(Ordering::Relaxed)))
                .collect();
            counter(
                &mut enc,
                "anyedge_bgp_session_flaps",
                "Established BGP sessions that went down.",
                &flaps,
            )?;
            let bfd: Vec<(Vec<(&str, &str)>, i64)> = a
                .peers
                .iter()
                .filter(|(pc, _)| pc.bfd.is_some())
                .map(|(pc, st)| {
                    (
                        vec![("peer", pc.name.as_str())],
                        i64::from(st.bfd_up.load(Ordering::Relaxed)),
                    )
                })
                .collect();
            gauge(&mut enc, "anyedge_bfd_session_up", "1 if the BFD session is up.", &bfd)?;
            let states = a.prefix_states();
            let announced: Vec<(Vec<(&str, &str)>, i64)> = states
                .iter()
                .map(|(p, s)| {
                    let v = i64::from(s.state == "announced" || s.state == "draining");
                    (vec![("prefix", p.as_str()), ("state", s.state)], v)
                })
                .collect();
            gauge(
                &mut enc,
                "anyedge_anycast_prefix_announced",
                "1 if the prefix is announced (state label: announced, draining, withdrawn, suppressed).",
                &announced,
            )?;
        }
        counter(
            &mut enc,
            "anyedge_guard_tarpitted",
            "Refused connections held open by the tarpit.",
            &[(vec![], ld(&edge.tarpitted))],
        )?;
        gauge(
            &mut enc,
            "anyedge_guard_tarpit_open",
            "Refused connections held open by the tarpit now.",
            &[(vec![], gi(ld(&edge.tarpit_open)))],
        )?;
        if let Some(d) = &self.0.dns {
            dns_metrics(&mut enc, d)?;
        }
        let c = &*CONNS;
        gauge(
            &mut enc,
            "anyedge_admin_connections_open",
            "Open admin API connections.",
            &[(vec![], gi(ld(&c.open)))],
        )?;
        counter(
            &mut enc,
            "anyedge_admin_connections_refused",
            "Admin API connections closed at once: admin.max_connections (cap), admin.max_connections_per_source (source_cap), or descriptors near the process limit (fd_reserve).",
            &[
                (vec![("reason", Refusal::Cap.as_str())], ld(&c.refused_cap)),
                (vec![("reason", Refusal::SourceCap.as_str())], ld(&c.refused_source_cap)),
                (vec![("reason", Refusal::FdReserve.as_str())], ld(&c.refused_fd_reserve)),
            ],
        )?;
        counter(
            &mut enc,
            "anyedge_admin_header_timeouts",
            "Admin API connections closed because a request head did not arrive within admin.header_timeout.",
            &[(vec![], ld(&c.header_timeouts))],
        )?;
        if let Some(fp) = edge.fast_path.get() {
            let c = fp.counters();
            counter(
                &mut enc,
                "anyedge_xdp_packets",
                "Packets judged by the XDP fast path (layer=xdp), by verdict and reason.",
                &c.iter()
                    .map(|c| {
                        (
                            vec![("verdict", if c.drop { "drop" } else { "pass" }), ("reason", c.name)],
                            c.packets,
                        )
                    })
                    .collect::<Vec<_>>(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
