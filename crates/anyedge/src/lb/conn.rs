//! The per-connection path: accept -> guard and caps -> inspect (inbound
//! PROXY header, TLS SNI) -> select -> connect with retry -> PROXY header
//! -> forward; refused connections go to the tarpit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyedge_guard::{DropReason, Guard, Verdict};
use anyedge_lb::health::FailReason;
use anyedge_proxy::{sni, tlv, Addresses, Decoded, Tlv};
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

use crate::accesslog::{Cause, Record};
use crate::config::{ProxyMode, ServiceConfig};
use crate::forward::{self, End, Side};
use crate::logutil::LogLimiter;
use crate::net::{self, Sock};

use super::{Backend, Edge, Service};

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

/// Decrements the connection gauges when a connection ends, however it
/// ends; records its duration and queues its access-log line.
struct ConnGuard {
    edge: Arc<Edge>,
    svc: Arc<Service>,
    /// The guard that admitted this connection and the source, to release
    /// its concurrency slot.
    admitted: Option<(Arc<Guard>, IpAddr)>,
    accepted: Instant,
    /// Served (past the caps): its duration counts in the histogram.
    served: bool,
    /// Its access-log line, filled in as it goes (`None`: not logged).
    /// (boxed: a connection that is not logged carries 8 bytes for it)
    rec: Option<Box<Record>>,
}

impl ConnGuard {
    /// Fills in the access-log line, if there is one.
    fn note(&mut self, f: impl FnOnce(&mut Record)) {
        if let Some(r) = &mut self.rec {
            f(r);
        }
    }

    fn end(&mut self, cause: Cause, detail: &'static str) {
        self.note(|r| {
            r.cause = cause;
            r.detail = detail;
        });
    }
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
        let total = self.accepted.elapsed();
        if self.served {
            self.svc.duration.observe(total);
        }
        if let Some(mut r) = self.rec.take() {
            r.total = total;
            r.time = std::time::SystemTime::now();
            self.edge.log(r);
        }
    }
}

/// A connection's access-log line, `cause` unless something else happens
/// (`None` if its service does not log).
fn record(
    edge: &Edge,
    svc: &Arc<Service>,
    peer: SocketAddr,
    listener: Option<SocketAddr>,
    cause: Cause,
) -> Option<Box<Record>> {
    if !svc.cfg.load().access_log {
        return None;
    }
    let mut r = edge.access_log.load().as_ref()?.record(svc, peer, cause);
    r.listener = listener;
    Some(r)
}

/// Queues a refused connection's line, closed now.
fn log_refused(edge: &Edge, rec: Option<Box<Record>>, accepted: Instant) {
    if let Some(mut r) = rec {
        r.total = accepted.elapsed();
        r.time = std::time::SystemTime::now();
        edge.log(r);
    }
}

struct BackendGuard(Arc<Backend>);
impl Drop for BackendGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn accept_loop(edge: Weak<Edge>, svc: Weak<Service>, listener: std::net::TcpListener) {
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
        let accepted = Instant::now();
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
                let mut rec = record(&edge, &svc, peer, addr, Cause::Guard);
                if let Some(r) = &mut rec {
                    r.detail = reason.as_str();
                }
                tarpit(&edge, stream, rec, accepted);
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
            drop(stream);
            log_refused(&edge, record(&edge, &svc, peer, addr, Cause::GlobalCap), accepted);
            continue;
        }
        svc.active.fetch_add(1, Ordering::Relaxed);
        let mut guard = ConnGuard {
            edge: edge.clone(),
            svc: svc.clone(),
            admitted,
            accepted,
            served: false,
            rec: record(&edge, &svc, peer, addr, Cause::Aborted),
        };
        if let Some(m) = svc.cfg.load().max_connections {
            if svc.active.load(Ordering::Relaxed) > u64::from(m.get()) {
                svc.stats.rejected_service_cap.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = LOG_CAP.allow() {
                    warn!(service = %svc.name, %peer, limit = m.get(), suppressed = s, "service connection cap reached; connection refused");
                }
                drop(stream);
                guard.end(Cause::ServiceCap, "");
                drop(guard);
                continue;
            }
        }
        guard.served = true;
        tokio::spawn(handle(edge, svc, stream, peer, guard));
    }
}

/// A refused connection: closed at once, or, with `[guard.tarpit]`, held
/// open unread for the hold time (the attacker's slot stays busy, ours costs
/// one idle socket), up to the tarpit's cap. Its access-log line (`rec`,
/// cause `guard`) is queued when it closes (cause `tarpit` if held).
fn tarpit(edge: &Arc<Edge>, stream: Sock, mut rec: Option<Box<Record>>, accepted: Instant) {
    let Some(t) = edge.config.load().tarpit else {
        drop(stream);
        return log_refused(edge, rec, accepted);
    };
    if edge.tarpit_open.fetch_add(1, Ordering::AcqRel) >= u64::from(t.max_connections) {
        edge.tarpit_open.fetch_sub(1, Ordering::AcqRel);
        drop(stream);
        return log_refused(edge, rec, accepted);
    }
    edge.tarpitted.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = &mut rec {
        r.cause = Cause::Tarpit;
    }
    let edge = edge.clone();
    tokio::spawn(async move {
        tokio::time::sleep(t.hold).await;
        drop(stream);
        edge.tarpit_open.fetch_sub(1, Ordering::AcqRel);
        log_refused(&edge, rec, accepted);
    });
}

/// What the client sent before we chose a backend.
struct Inspected {
    client: SocketAddr,
    local: SocketAddr,
    /// Client payload already read (forwarded after our PROXY header).
    payload: Vec<u8>,
    sni: Option<String>,
    /// When the client's first byte was read.
    first_byte: Option<Instant>,
}

enum InspectError {
    Silent,
    ClosedEarly,
    Untrusted,
    BadProxy(anyedge_proxy::DecodeError),
    Io(io::Error),
}

async fn handle(edge: Arc<Edge>, svc: Arc<Service>, client: Sock, peer: SocketAddr, mut guard: ConnGuard) {
    let cfg = svc.cfg.load_full();
    let _ = client.get_ref().set_nodelay(true);
    let local = match client.get_ref().local_addr() {
        Ok(a) => a,
        Err(_) => return guard.end(Cause::ClientError, "getsockname"),
    };
    let accepted = guard.accepted;
    // Cut at the end of the shutdown grace period in every phase, so that
    // each connection still open then gets its access-log line (cause
    // `shutdown`) before the log closes. One waiter for all the phases (it
    // registers once).
    let cut = edge.cut.wait();
    tokio::pin!(cut);
    let mut insp = if cfg.inspect {
        let r = tokio::select! {
            r = timeout(cfg.timeouts.client_first_byte, inspect(&client, peer, local, &cfg)) => r,
            () = &mut cut => return guard.end(Cause::Shutdown, "before_first_byte"),
        };
        let r = match r {
            Ok(r) => r,
            Err(_) => Err(InspectError::Silent),
        };
        match r {
            Ok(i) => i,
            Err(e) => {
                let cause = report_inspect_error(&svc, peer, e);
                return guard.end(cause, "");
            }
        }
    } else {
        Inspected {
            client: peer,
            local,
            payload: Vec::new(),
            sni: None,
            first_byte: None,
        }
    };
    // (a trusted inbound PROXY header names the real client)
    let real_client = insp.client;
    guard.note(|r| {
        r.client = real_client;
        r.first_byte = insp.first_byte.map(|t| t.duration_since(accepted));
    });

    // Select and connect, retrying on the next backend within the budget.
    let connect_start = Instant::now();
    let deadline = forward::deadline(connect_start, cfg.timeouts.connect);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure = "";
    let (backend, upstream) = loop {
        let Some(b) = svc.pick(insp.client.ip(), &tried) else {
            if let Some(s) = LOG_NO_BACKEND.allow() {
                warn!(service = %svc.name, client = %insp.client, tried = tried.len(), suppressed = s, "no backend available; connection closed");
            }
            let retries = u32::try_from(tried.len().saturating_sub(1)).unwrap_or(u32::MAX);
            guard.note(|r| r.retries = retries);
            return if tried.is_empty() {
                svc.stats.no_backend.fetch_add(1, Ordering::Relaxed);
                guard.end(Cause::NoBackend, "")
            } else {
                svc.stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                guard.end(Cause::ConnectFailed, last_failure)
            };
        };
        tried.push(Arc::as_ptr(&b) as usize);
        if tried.len() > 1 {
            svc.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let addr = b.cfg.load().address;
        b.active.fetch_add(1, Ordering::Relaxed);
        let bguard = BackendGuard(b.clone());
        let attempt = Instant::now();
        let attempt_result = tokio::select! {
            r = tokio::time::timeout_at(deadline, net::connect(addr)) => r,
            () = &mut cut => return guard.end(Cause::Shutdown, "connecting"),
        };
        match attempt_result {
            Ok(Ok(s)) => {
                b.connect_time.observe(attempt.elapsed());
                svc.passive_success(&b);
                let retries = u32::try_from(tried.len() - 1).unwrap_or(u32::MAX);
                guard.note(|r| {
                    r.connect = Some(connect_start.elapsed());
                    r.retries = retries;
                    r.backend = Some((b.clone(), addr));
                });
                break (bguard, s);
            }
            Ok(Err(e)) => {
                let reason = if e.kind() == io::ErrorKind::ConnectionRefused {
                    b.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
                    last_failure = "refused";
                    FailReason::ConnectRefused
                } else {
                    b.stats.connect_error.fetch_add(1, Ordering::Relaxed);
                    last_failure = "error";
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
                svc.stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                let retries = u32::try_from(tried.len() - 1).unwrap_or(u32::MAX);
                guard.note(|r| r.retries = retries);
                return guard.end(Cause::ConnectFailed, "timeout");
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
                return guard.end(Cause::BackendError, "proxy_header");
            }
            if cfg.proxy.unique_id {
                guard.note(|r| r.unique_id.push_str(&uid));
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
            return guard.end(Cause::BackendError, "write");
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
        cut,
    )
    .await;
    svc.stats.completed.fetch_add(1, Ordering::Relaxed);
    let (cause, detail) = match (end, totals.closed_by) {
        (End::Idle, _) => (Cause::IdleTimeout, ""),
        (End::Closed, Some(Side::Client)) => (Cause::ClientClosed, ""),
        (End::Closed, _) => (Cause::BackendClosed, ""),
        (End::Error, Some(Side::Client)) => (Cause::ClientError, ""),
        (End::Error, _) => (Cause::BackendError, ""),
        (End::Cut, _) => (Cause::Shutdown, ""),
    };
    guard.note(|r| {
        r.bytes_to_backend = early + totals.to_backend;
        r.bytes_to_client = totals.to_client;
        if r.first_byte.is_none() {
            r.first_byte = totals.first_from_client.map(|t| t.duration_since(accepted));
        }
    });
    guard.end(cause, detail);
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

/// Counts and logs (rate limited) a connection closed while inspecting
/// the client's first bytes; returns its access-log cause.
fn report_inspect_error(svc: &Service, peer: SocketAddr, e: InspectError) -> Cause {
    match e {
        InspectError::Silent => {
            svc.stats.client_silent.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_SILENT_CLIENT.allow() {
                let t = svc.cfg.load().timeouts.client_first_byte;
                warn!(service = %svc.name, %peer, timeout = ?t, suppressed = s, "client sent nothing before client_first_byte timeout; closed");
            }
            Cause::ClientSilent
        }
        InspectError::ClosedEarly => {
            svc.stats.client_closed_early.fetch_add(1, Ordering::Relaxed);
            debug!(service = %svc.name, %peer, "client closed before sending data");
            Cause::ClientClosedEarly
        }
        InspectError::Io(e) => {
            svc.stats.client_closed_early.fetch_add(1, Ordering::Relaxed);
            debug!(service = %svc.name, %peer, error = %e, "client connection failed before sending data");
            Cause::ClientClosedEarly
        }
        InspectError::Untrusted => {
            svc.stats.untrusted_proxy_header.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_UNTRUSTED_PROXY.allow() {
                warn!(service = %svc.name, %peer, suppressed = s, "PROXY header from a source not in accept_proxy_from; refused");
            }
            Cause::UntrustedProxyHeader
        }
        InspectError::BadProxy(err) => {
            svc.stats.bad_proxy_header.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = LOG_BAD_PROXY.allow() {
                warn!(service = %svc.name, %peer, error = %err, suppressed = s, "malformed PROXY header from trusted source; refused");
            }
            Cause::BadProxyHeader
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
        first_byte: None,
    };
    let mut proxy_done = false;
    loop {
        let got = read_more(client, &mut buf).await?;
        if got == 0 {
            return Err(InspectError::ClosedEarly);
        }
        out.first_byte.get_or_insert_with(Instant::now);
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
