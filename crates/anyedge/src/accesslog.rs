//! The L4 access log: one line per connection at close (`[access_log]`).
//!
//! Off the data path: the connection fills a [`Record`] (a fixed struct:
//! references to its service and backend, addresses, counts, durations;
//! one allocation, only when its service logs) and `try_send`s it into a bounded queue (`std::sync::mpsc::sync_channel`,
//! a lock-free array channel); a full queue drops the line and counts it.
//! One writer thread formats the lines and writes them in batches. While
//! lines keep coming it polls the queue every [`POLL`] (senders then never
//! wake it: no syscall on the connection's path); after a second without
//! lines it blocks until the next one. A file is reopened at the writer's
//! next batch after [`AccessLog::reopen`] (SIGHUP, for logrotate), or
//! within a second when idle.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
use crate::lb::{Backend, Service};
use crate::logutil::LogLimiter;

/// How often the writer looks at the queue while lines keep coming.
const POLL: Duration = Duration::from_millis(20);
/// Empty polls before the writer blocks instead (a second).
const IDLE_POLLS: u32 = 50;
/// Bytes formatted before they are written even within one batch.
const BATCH_BYTES: usize = 64 * 1024;

static LOG_WRITE: LogLimiter = LogLimiter::new(1);

crate::counter_set! {
    /// The access log's counters (kept across reloads).
    pub struct AccessLogStats {
        written: "written" => "anyedge_access_log_lines" ["result" = "written"],
        /// Lines not written: the queue was full.
        dropped: "dropped" => "anyedge_access_log_dropped",
        /// Lines lost because writing them failed (disk full, ...).
        write_errors: "write_errors" => "anyedge_access_log_lines" ["result" = "write_error"],
    }
}

/// Why a connection ended (the `cause` field). The causes named like an
/// `anyedge_connections_failed{reason}` are counted there too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client ended its side first (EOF), the backend's end followed.
    ClientClosed,
    /// The backend ended its side first.
    BackendClosed,
    /// The client's socket failed (reset, ...).
    ClientError,
    /// The backend's socket failed (reset, the PROXY header not written, ...).
    BackendError,
    /// Nothing moved either way for `timeouts.idle`.
    IdleTimeout,
    /// Every backend tried failed to connect (`detail`: the last failure).
    ConnectFailed,
    /// No backend to try (none healthy, all drained or at their cap).
    NoBackend,
    /// Refused by the guard (`detail`: its reason), closed at once.
    Guard,
    /// Refused by the guard (`detail`: its reason), held by the tarpit.
    Tarpit,
    GlobalCap,
    ServiceCap,
    /// Nothing from the client within `timeouts.client_first_byte`.
    ClientSilent,
    /// The client closed before sending anything.
    ClientClosedEarly,
    BadProxyHeader,
    UntrustedProxyHeader,
    /// Still open when `limits.shutdown_grace` ended (stop, upgrade);
    /// `detail` `before_first_byte` or `connecting` if not yet forwarding.
    Shutdown,
    /// The connection's task ended without a cause.
    Aborted,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ClientClosed => "client_closed",
            Cause::BackendClosed => "backend_closed",
            Cause::ClientError => "client_error",
            Cause::BackendError => "backend_error",
            Cause::IdleTimeout => "idle_timeout",
            Cause::ConnectFailed => "connect_failed",
            Cause::NoBackend => "no_backend",
            Cause::Guard => "guard",
            Cause::Tarpit => "tarpit",
            Cause::GlobalCap => "global_cap",
            Cause::ServiceCap => "service_cap",
            Cause::ClientSilent => "client_silent",
            Cause::ClientClosedEarly => "client_closed_early",
            Cause::BadProxyHeader => "bad_proxy_header",
            Cause::UntrustedProxyHeader => "untrusted_proxy_header",
            Cause::Shutdown => "shutdown",
            Cause::Aborted => "aborted",
        }
    }
}

/// One connection, as the connection path leaves it at close.
///
/// Records are pooled: the writer hands them back after formatting (see
/// [`AccessLog::record`]), so a logged connection allocates nothing in the
/// steady state, and memory is never freed on a thread other than the one
/// that allocated it (glibc then takes the other arena's lock).
pub struct Record {
    /// When the connection closed.
    pub time: SystemTime,
    /// (`None` only while pooled)
    pub service: Option<Arc<Service>>,
    pub client: SocketAddr,
    /// The address the client connected to (from an inbound PROXY header
    /// if a trusted one came).
    pub listener: Option<SocketAddr>,
    pub backend: Option<(Arc<Backend>, SocketAddr)>,
    /// The PROXY header's `PP2_TYPE_UNIQUE_ID` (empty: none sent). Kept
    /// with its capacity when pooled.
    pub unique_id: String,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// From accept to the client's first byte.
    pub first_byte: Option<Duration>,
    /// From the first connect attempt to the backend connection (with
    /// `retries` > 0 this includes the failed attempts).
    pub connect: Option<Duration>,
    /// From accept to close.
    pub total: Duration,
    /// Connect attempts after the first.
    pub retries: u32,
    pub cause: Cause,
    /// More about the cause (the guard's reason, the last connect failure).
    pub detail: &'static str,
}

impl Record {
    pub fn new(service: Arc<Service>, client: SocketAddr, cause: Cause) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH,
            service: Some(service),
            client,
            listener: None,
            backend: None,
            unique_id: String::new(),
            bytes_to_backend: 0,
            bytes_to_client: 0,
            first_byte: None,
            connect: None,
            total: Duration::ZERO,
            retries: 0,
            cause,
            detail: "",
        }
    }

    /// A pooled record made new (its `unique_id` keeps its capacity).
    fn reset(&mut self, service: Arc<Service>, client: SocketAddr, cause: Cause) {
        let mut uid = std::mem::take(&mut self.unique_id);
        uid.clear();
        *self = Record {
            unique_id: uid,
            ..Record::new(service, client, cause)
        };
    }
}

/// What a writer is made with: a change of either starts a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub config: AccessLogConfig,
    pub pop: String,
}

/// A running access log: the queue's sending side and its writer thread.
pub struct AccessLog {
    pub settings: Settings,
    tx: SyncSender<Box<Record>>,
    /// Records the writer is done with, for the next connections.
    pool: crossbeam_channel::Receiver<Box<Record>>,
    reopen: Arc<AtomicBool>,
    stats: Arc<AccessLogStats>,
    /// Closed by the writer thread when it ends (a `Mutex` only to be
    /// `Sync`: taken once, by `close`).
    done: std::sync::Mutex<Receiver<()>>,
}

impl AccessLog {
    /// Opens the output (an error names the file) and starts the writer.
    pub fn start(settings: Settings, stats: Arc<AccessLogStats>) -> anyhow::Result<AccessLog> {
        let out = Output::open(&settings.config.target)?;
        let queue = usize::try_from(settings.config.queue).unwrap_or(usize::MAX);
        let (tx, rx) = mpsc::sync_channel(queue);
        // a few more than the queue holds, for those closing right now
        let (pool_tx, pool) = crossbeam_channel::bounded(queue.saturating_add(256));
        let reopen = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel();
        let w = Writer {
            rx,
            pool: pool_tx,
            out,
            format: settings.config.format,
            pop: settings.pop.clone(),
            reopen: reopen.clone(),
            stats: stats.clone(),
            buf: Vec::with_capacity(BATCH_BYTES + 1024),
            pending: 0,
            clock: Clock::default(),
        };
        std::thread::Builder::new()
            .name("anyedge-accesslog".into())
            .spawn(move || {
                w.run();
                drop(done_tx);
            })
            .map_err(|e| anyhow::anyhow!("access log: cannot start its writer thread: {e}"))?;
        Ok(AccessLog {
            settings,
            tx,
            pool,
            reopen,
            stats,
            done: std::sync::Mutex::new(done),
        })
    }

    /// A record for a connection of `service`: a pooled one, or a new one
    /// while the pool warms up.
    pub fn record(&self, service: &Arc<Service>, client: SocketAddr, cause: Cause) -> Box<Record> {
        match self.pool.try_recv() {
            Ok(mut r) => {
                r.reset(service.clone(), client, cause);
                r
            }
            Err(_) => Box::new(Record::new(service.clone(), client, cause)),
        }
    }

    /// Queues `r`; a full queue drops it (counted).
    pub fn log(&self, r: Box<Record>) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the file before the next lines are written (SIGHUP).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Stops taking lines and waits up to `max` until the writer wrote
    /// what was queued.
    pub fn close(self, max: Duration) {
        let AccessLog { tx, done, .. } = self;
        drop(tx);
        if let Ok(done) = done.into_inner() {
            let _ = done.recv_timeout(max);
        }
    }
}

enum Output {
    Stdout(io::Stdout),
    File { path: std::path::PathBuf, file: File },
}

impl Output {
    fn open(t: &AccessLogTarget) -> anyhow::Result<Output> {
        Ok(match t {
            AccessLogTarget::Stdout => Output::Stdout(io::stdout()),
            AccessLogTarget::File(p) => Output::File {
                path: p.clone(),
                file: open_file(p)?,
            },
        })
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match open_file(path) {
                Ok(f) => *file = f,
                Err(e) => warn!("{e:#}; still writing to the file open before"),
            }
        }
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(b)?;
                s.flush()
            }
            Output::File { file, .. } => file.write_all(b),
        }
    }
}

fn open_file(p: &std::path::Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(p)
        .map_err(|e| anyhow::anyhow!("access_log.path: cannot open {}: {e}", p.display()))
}

struct Writer {
    rx: Receiver<Box<Record>>,
    pool: crossbeam_channel::Sender<Box<Record>>,
    out: Output,
    format: AccessLogFormat,
    pop: String,
    reopen: Arc<AtomicBool>,
    stats: Arc<AccessLogStats>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    clock: Clock,
}

impl Writer {
    fn run(mut self) {
        let mut empty_polls = 0u32;
        loop {
            // Whatever is queued, in batches.
            let mut got = false;
            loop {
                match self.rx.try_recv() {
                    Ok(r) => {
                        got = true;
                        self.add(r);
                        if self.buf.len() >= BATCH_BYTES {
                            self.flush();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            self.flush();
            if got {
                empty_polls = 0;
            } else {
                empty_polls = empty_polls.saturating_add(1);
            }
            if empty_polls < IDLE_POLLS {
                std::thread::sleep(POLL);
                continue;
            }
            // Idle: block until a line comes (a sender wakes us then), and
            // look at the reopen flag once a second.
            match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => {
                    empty_polls = 0;
                    self.add(r);
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Formats `r` into the batch and hands it back to the pool.
    fn add(&mut self, mut r: Box<Record>) {
        let time = self.clock.format(r.time);
        let line = Line {
            pop: &self.pop,
            time: &time,
            service: r.service.as_ref().map_or("-", |s| s.name.as_str()),
            backend: r.backend.as_ref().map(|(b, a)| (b.name.as_str(), *a)),
            r: &r,
        };
        match self.format {
            AccessLogFormat::Text => line.text(&mut self.buf),
            AccessLogFormat::Json => line.json(&mut self.buf),
        }
        self.pending += 1;
        // (no reference to a service or backend kept while pooled)
        r.service = None;
        r.backend = None;
        let _ = self.pool.try_send(r);
    }

    /// Writes the batch (reopening the file first if asked).
    fn flush(&mut self) {
        if self.reopen.swap(false, Ordering::Relaxed) {
            self.out.reopen();
        }
        if self.buf.is_empty() {
            return;
        }
        match self.out.write_all(&self.buf) {
            Ok(()) => {
                self.stats.written.fetch_add(self.pending, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(self.pending, Ordering::Relaxed);
                if let Some(s) = LOG_WRITE.allow() {
                    warn!(error = %e, lines = self.pending, suppressed = s, "access log: lines lost, cannot write");
                }
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

/// The `time` field, RFC 3339 in UTC with microseconds. The part up to
/// the seconds is formatted once per second, not per line.
#[derive(Default)]
struct Clock {
    secs: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `secs` (empty before the first line)
    prefix: String,
}

impl Clock {
    fn format(&mut self, t: SystemTime) -> [u8; 27] {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || d.as_secs() != self.secs {
            self.secs = d.as_secs();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(self.secs);
            self.prefix = humantime::format_rfc3339_seconds(whole).to_string();
            self.prefix.pop(); // the `Z`
        }
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        if let Some(p) = out.get_mut(..19) {
            if self.prefix.len() == 19 {
                p.copy_from_slice(self.prefix.as_bytes());
            }
        }
        let mut us = d.subsec_micros();
        for i in (20..26).rev() {
            out[i] = b'0' + (us % 10) as u8;
            us /= 10;
        }
        out
    }
}

/// One line's fields, as the writer formats them.
///
/// Written by hand straight into the batch buffer (integers with `itoa`,
/// IPv4 addresses octet by octet), without `core::fmt`, a `String` or a JSON
/// tree per line: the writer thread shares the cores with the data path,
/// and with `core::fmt` formatting was most of its time.
struct Line<'a> {
    pop: &'a str,
    time: &'a [u8],
    service: &'a str,
    backend: Option<(&'a str, SocketAddr)>,
    r: &'a Record,
}

impl Line<'_> {
    /// `time=... pop=... service=... key=value ...` (logfmt), `-` for none.
    fn text(&self, b: &mut Vec<u8>) {
        let r = self.r;
        b.extend_from_slice(b"time=");
        b.extend_from_slice(self.time);
        b.extend_from_slice(b" pop=");
        b.extend_from_slice(self.pop.as_bytes());
        b.extend_from_slice(b" service=");
        b.extend_from_slice(self.service.as_bytes());
        b.extend_from_slice(b" client=");
        sockaddr(b, r.client);
        b.extend_from_slice(b" listener=");
        match r.listener {
            Some(a) => sockaddr(b, a),
            None => b.push(b'-'),
        }
        b.extend_from_slice(b" backend=");
        b.extend_from_slice(self.backend.map_or("-", |(n, _)| n).as_bytes());
        b.extend_from_slice(b" backend_addr=");
        match self.backend {
            Some((_, a)) => sockaddr(b, a),
            None => b.push(b'-'),
        }
        b.extend_from_slice(b" unique_id=");
        b.extend_from_slice(if r.unique_id.is_empty() { "-" } else { &r.unique_id }.as_bytes());
        b.extend_from_slice(b" bytes_to_backend=");
        int(b, r.bytes_to_backend);
        b.extend_from_slice(b" bytes_to_client=");
        int(b, r.bytes_to_client);
        b.extend_from_slice(b" first_byte_ms=");
        ms(b, r.first_byte, b"-");
        b.extend_from_slice(b" connect_ms=");
        ms(b, r.connect, b"-");
        b.extend_from_slice(b" total_ms=");
        ms(b, Some(r.total), b"-");
        b.extend_from_slice(b" retries=");
        int(b, u64::from(r.retries));
        b.extend_from_slice(b" cause=");
        b.extend_from_slice(r.cause.as_str().as_bytes());
        b.extend_from_slice(b" detail=");
        b.extend_from_slice(if r.detail.is_empty() { "-" } else { r.detail }.as_bytes());
        b.push(b'\n');
    }

    /// One JSON object; absent values are `null`.
    fn json(&self, b: &mut Vec<u8>) {
        let r = self.r;
        b.extend_from_slice(b"{\"time\":\"");
        b.extend_from_slice(self.time);
        b.extend_from_slice(b"\",\"pop\":");
        json_str(b, Some(self.pop));
        b.extend_from_slice(b",\"service\":");
        json_str(b, Some(self.service));
        b.extend_from_slice(b",\"client_ip\":\"");
        ip(b, r.client.ip());
        b.extend_from_slice(b"\",\"client_port\":");
        int(b, u64::from(r.client.port()));
        b.extend_from_slice(b",\"listener\":");
        json_addr(b, r.listener);
        b.extend_from_slice(b",\"backend\":");
        json_str(b, self.backend.map(|(n, _)| n));
        b.extend_from_slice(b",\"backend_addr\":");
        json_addr(b, self.backend.map(|(_, a)| a));
        b.extend_from_slice(b",\"unique_id\":");
        json_str(b, (!r.unique_id.is_empty()).then_some(r.unique_id.as_str()));
        b.extend_from_slice(b",\"bytes_to_backend\":");
        int(b, r.bytes_to_backend);
        b.extend_from_slice(b",\"bytes_to_client\":");
        int(b, r.bytes_to_client);
        b.extend_from_slice(b",\"first_byte_ms\":");
        ms(b, r.first_byte, b"null");
        b.extend_from_slice(b",\"connect_ms\":");
        ms(b, r.connect, b"null");
        b.extend_from_slice(b",\"total_ms\":");
        ms(b, Some(r.total), b"null");
        b.extend_from_slice(b",\"retries\":");
        int(b, u64::from(r.retries));
        b.extend_from_slice(b",\"cause\":\"");
        b.extend_from_slice(r.cause.as_str().as_bytes());
        b.extend_from_slice(b"\",\"detail\":");
        json_str(b, (!r.detail.is_empty()).then_some(r.detail));
        b.extend_from_slice(b"}\n");
    }
}

fn int(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A duration in milliseconds (microsecond precision), or `none`.
fn ms(b: &mut Vec<u8>, d: Option<Duration>, none: &[u8]) {
    let Some(d) = d else {
        return b.extend_from_slice(none);
    };
    let us = d.as_micros();
    int(b, u64::try_from(us / 1000).unwrap_or(u64::MAX));
    let frac = (us % 1000) as u16;
    b.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn ip(b: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                int(b, u64::from(o));
            }
        }
        // (rarer; std's formatting handles the `::` compression)
        IpAddr::V6(v6) => {
            let _ = write!(b, "{v6}");
        }
    }
}

/// `a.b.c.d:port` or `[v6]:port`, as `SocketAddr` displays them.
fn sockaddr(b: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => ip(b, IpAddr::V4(*v4.ip())),
        // (with a scope id, if any)
        SocketAddr::V6(v6) => {
            let _ = write!(b, "[{}", v6.ip());
            if v6.scope_id() != 0 {
                let _ = write!(b, "%{}", v6.scope_id());
            }
            b.push(b']');
        }
    }
    b.push(b':');
    int(b, u64::from(a.port()));
}

/// An address as a JSON string, or `null`.
fn json_addr(b: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        Some(a) => {
            b.push(b'"');
            sockaddr(b, a);
            b.push(b'"');
        }
        None => b.extend_from_slice(b"null"),
    }
}

/// A JSON string (quoted, escaped), or `null`.
fn json_str(b: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        return b.extend_from_slice(b"null");
    };
    b.push(b'"');
    for &c in s.as_bytes() {
        match c {
            b'"' => b.extend_from_slice(b"\\\""),
            b'\\' => b.extend_from_slice(b"\\\\"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                b.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 15)],
                ]);
            }
            // (bytes of multi-byte characters pass through unchanged)
            c => b.push(c),
        }
    }
    b.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::new(1_764_000_000, 12_345_678),
            service: None,
            client: "192.0.2.7:40001".parse().unwrap(),
            listener: Some("[2001:db8::1]:443".parse().unwrap()),
            backend: None,
            unique_id: "pop1-1a-2b".into(),
            bytes_to_backend: 517,
            bytes_to_client: 0,
            first_byte: Some(Duration::from_micros(1_234_567)),
            connect: None,
            total: Duration::from_nanos(999),
            retries: 2,
            cause: Cause::ConnectFailed,
            detail: "refused",
        }
    }

    fn lines(r: &Record, service: &str, backend: Option<(&str, SocketAddr)>) -> (String, String) {
        let mut clock = Clock::default();
        let time = clock.format(r.time);
        let l = Line {
            pop: "fra \"1\"\\\n",
            time: &time,
            service,
            backend,
            r,
        };
        let (mut t, mut j) = (Vec::new(), Vec::new());
        l.text(&mut t);
        l.json(&mut j);
        (String::from_utf8(t).unwrap(), String::from_utf8(j).unwrap())
    }

    #[test]
    fn lines_are_exact() {
        let (t, j) = lines(&record(), "web", None);
        assert_eq!(
            t,
            "time=2025-11-24T16:00:00.012345Z pop=fra \"1\"\\\n service=web client=192.0.2.7:40001 \
             listener=[2001:db8::1]:443 backend=- backend_addr=- unique_id=pop1-1a-2b bytes_to_backend=517 \
             bytes_to_client=0 first_byte_ms=1234.567 connect_ms=- total_ms=0.000 retries=2 cause=connect_failed \
             detail=refused\n"
        );
        assert_eq!(
            j,
            r#"{"time":"2025-11-24T16:00:00.012345Z","pop":"fra \"1\"\\\u000a","service":"web","client_ip":"192.0.2.7","client_port":40001,"listener":"[2001:db8::1]:443","backend":null,"backend_addr":null,"unique_id":"pop1-1a-2b","bytes_to_backend":517,"bytes_to_client":0,"first_byte_ms":1234.567,"connect_ms":null,"total_ms":0.000,"retries":2,"cause":"connect_failed","detail":"refused"}"#
                .to_owned()
                + "\n"
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["pop"], "fra \"1\"\\\n");
    }

    #[test]
    fn lines_with_a_backend_and_ipv6_client() {
        let mut r = record();
        r.client = "[2001:db8::7]:5353".parse().unwrap();
        r.listener = None;
        r.unique_id.clear();
        r.detail = "";
        r.connect = Some(Duration::from_micros(1500));
        let (t, j) = lines(&r, "web", Some(("node-a", "198.18.0.10:8080".parse().unwrap())));
        assert!(
            t.contains(
                " client=[2001:db8::7]:5353 listener=- backend=node-a backend_addr=198.18.0.10:8080 unique_id=- "
            ),
            "{t}"
        );
        assert!(
            t.ends_with(" connect_ms=1.500 total_ms=0.000 retries=2 cause=connect_failed detail=-\n"),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["client_ip"], "2001:db8::7");
        assert_eq!(v["client_port"], 5353);
        assert_eq!(v["backend"], "node-a");
        assert_eq!(v["backend_addr"], "198.18.0.10:8080");
        assert_eq!(v["unique_id"], serde_json::Value::Null);
        assert_eq!(v["detail"], serde_json::Value::Null);
        assert_eq!(v["connect_ms"].as_f64(), Some(1.5));
    }

    #[test]
    fn clock_follows_seconds_and_pads_micros() {
        let mut c = Clock::default();
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_764_000_000, 5_000);
        assert_eq!(&c.format(t), b"2025-11-24T16:00:00.000005Z");
        assert_eq!(&c.format(t + Duration::from_secs(61)), b"2025-11-24T16:01:01.000005Z");
        assert_eq!(
            &c.format(t + Duration::from_micros(999_990)),
            b"2025-11-24T16:00:00.999995Z"
        );
        // as humantime formats it
        let u = t + Duration::from_millis(86_400_123);
        assert_eq!(
            c.format(u).to_vec(),
            humantime::format_rfc3339_micros(u).to_string().into_bytes()
        );
    }
}
