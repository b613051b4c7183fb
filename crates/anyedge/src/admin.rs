//! Admin HTTP API (axum): status, actions, Prometheus metrics.
//!
//! - `GET  /api/v1/status`                                   everything, JSON
//! - `GET  /api/v1/history`                                  the last 5 minutes, JSON (`history.rs`)
//! - `POST /api/v1/services/{service}/backends/{backend}/drain`   (token)
//! - `POST /api/v1/services/{service}/backends/{backend}/undrain` (token)
//! - `POST   /api/v1/services/{service}/backends`            (token) add: `{"address", "name"?, "weight"?}`
//! - `DELETE /api/v1/services/{service}/backends/{backend}`  (token) remove (drains out)
//! - `POST   /api/v1/services/{service}/backends/{backend}/weight` (token) `{"weight"}`
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::AdminConfig;
use crate::logutil::LogLimiter;
use crate::pop::Pop;
use crate::status::Status;

pub(crate) struct AppState {
    pub(crate) ctl: Arc<Pop>,
    registry: Registry,
}

/// Binds the admin listener and serves it in a background task.
pub async fn serve(listen: SocketAddr, ctl: Arc<Pop>) -> anyhow::Result<()> {
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
        .route("/api/v1/history", get(history))
        .route("/api/v1/services/{service}/backends/{backend}/drain", post(drain))
        .route("/api/v1/services/{service}/backends/{backend}/undrain", post(undrain))
        .route("/api/v1/services/{service}/backends", post(crate::lb::api::add))
        .route(
            "/api/v1/services/{service}/backends/{backend}",
            axum::routing::delete(crate::lb::api::remove),
        )
        .route(
            "/api/v1/services/{service}/backends/{backend}/weight",
            post(crate::lb::api::weight),
        )
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

crate::counter_set! {
    /// What the admin API refused or closed.
    pub struct AdminCounters {
        refused_cap: "refused.cap" => "anyedge_admin_connections_refused" ["reason" = "cap"],
        refused_source_cap: "refused.source_cap" => "anyedge_admin_connections_refused" ["reason" = "source_cap"],
        refused_fd_reserve: "refused.fd_reserve" => "anyedge_admin_connections_refused" ["reason" = "fd_reserve"],
        header_timeouts: "header_timeouts" => "anyedge_admin_header_timeouts",
    }
}

/// Admin connections: open now, per source, and what was refused.
#[derive(Default)]
struct Conns {
    open: AtomicU64,
    per_source: Mutex<HashMap<IpAddr, u32>>,
    counters: AdminCounters,
}

static CONNS: LazyLock<Conns> = LazyLock::new(Conns::default);

/// Admin connections open now.
pub fn open_connections() -> u64 {
    CONNS.open.load(Ordering::Relaxed)
}

/// The admin API's counters (process-wide).
pub fn counters() -> &'static AdminCounters {
    &CONNS.counters
}

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
        CONNS.counters.refused_cap.fetch_add(1, Ordering::Relaxed);
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
            CONNS.counters.refused_source_cap.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceCap);
        }
        *n += 1;
    }
    let slot = Slot { source };
    if crate::fdlimit::in_reserve(fd) {
        CONNS.counters.refused_fd_reserve.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::FdReserve);
    }
    Ok(slot)
}

/// Accepts admin connections: each is served by hyper's HTTP/1 with a
/// header-read timeout (which also closes idle kept-alive connections),
/// under a total cap, a per-source cap and the descriptor reserve; a
/// connection over any of them is closed at once.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, ctl: Arc<Pop>, started: AdminConfig) {
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
            CONNS.counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(slot);
}

pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Checks the bearer token of a state-changing call: `Some(refusal)` if the
/// call must not proceed.
pub(crate) fn refuse(state: &AppState, headers: &HeaderMap) -> Option<Response> {
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
    Json(Status::read(&state.ctl).to_json())
}

async fn history(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.ctl.history.to_json())
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
    // kept in the state directory with the other runtime changes
    let persisted = match state.ctl.edge.save_runtime() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    Json(json!({ "service": service, "backend": backend, "draining": drain, "persisted": persisted })).into_response()
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
        .announcer()
        .map(|a| &**a)
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

/// OpenMetrics for a client that asks for it (Prometheus does), else the
/// Prometheus text format (curl, `promtool check metrics`).
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if !crate::promtext::wants_openmetrics(accept) {
        return (
            [(header::CONTENT_TYPE, crate::promtext::CONTENT_TYPE)],
            crate::promtext::to_text(&body),
        )
            .into_response();
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
struct EdgeCollector(Arc<Pop>);

impl std::fmt::Debug for EdgeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeCollector")
    }
}

impl Collector for EdgeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        Status::read(&self.0).encode_metrics(&mut enc)
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
