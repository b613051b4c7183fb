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

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
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
    /// Still forwarding when `limits.shutdown_grace` ended (stop, upgrade).
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
pub struct Record {
    /// When the connection closed.
    pub time: SystemTime,
    pub service: Arc<Service>,
    pub client: SocketAddr,
    /// The address the client connected to (from an inbound PROXY header
    /// if a trusted one came).
    pub listener: Option<SocketAddr>,
    pub backend: Option<(Arc<Backend>, SocketAddr)>,
    /// The PROXY header's `PP2_TYPE_UNIQUE_ID`, if one was sent.
    pub unique_id: Option<String>,
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
            service,
            client,
            listener: None,
            backend: None,
            unique_id: None,
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
        let reopen = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel();
        let w = Writer {
            rx,
            out,
            format: settings.config.format,
            pop: settings.pop.clone(),
            reopen: reopen.clone(),
            stats: stats.clone(),
            buf: Vec::with_capacity(BATCH_BYTES + 1024),
            pending: 0,
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
            reopen,
            stats,
            done: std::sync::Mutex::new(done),
        })
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
    out: Output,
    format: AccessLogFormat,
    pop: String,
    reopen: Arc<AtomicBool>,
    stats: Arc<AccessLogStats>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
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
                        self.add(&r);
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
                    self.add(&r);
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn add(&mut self, r: &Record) {
        match self.format {
            AccessLogFormat::Text => text(&mut self.buf, &self.pop, r),
            AccessLogFormat::Json => json(&mut self.buf, &self.pop, r),
        }
        self.pending += 1;
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

/// Formatting helpers: lines are written straight into the batch buffer,
/// without a `String` or a JSON tree per line (the writer thread shares the
/// cores with the data path).
///
/// A duration in milliseconds (microsecond precision), or `none`.
struct Ms(Option<Duration>, &'static str);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}.{:03}", d.as_micros() / 1000, d.as_micros() % 1000),
            None => f.write_str(self.1),
        }
    }
}

/// A displayable value, or `none`.
struct Or<T>(Option<T>, &'static str);

impl<T: fmt::Display> fmt::Display for Or<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str(self.1),
        }
    }
}

/// A JSON string (quoted, escaped), or `null`.
struct Js<'a>(Option<&'a str>);

impl fmt::Display for Js<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = self.0 else { return f.write_str("null") };
        f.write_char('"')?;
        for c in s.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A displayable value as a JSON string, or `null`.
struct JsDisplay<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for JsDisplay<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // (addresses and times: no character that needs escaping)
        match &self.0 {
            Some(v) => write!(f, "\"{v}\""),
            None => f.write_str("null"),
        }
    }
}

/// `time=... pop=... service=... key=value ...` (logfmt), `-` for none.
pub fn text(buf: &mut Vec<u8>, pop: &str, r: &Record) {
    let _ = writeln!(
        buf,
        "time={} pop={pop} service={} client={} listener={} backend={} backend_addr={} unique_id={} \
         bytes_to_backend={} bytes_to_client={} first_byte_ms={} connect_ms={} total_ms={} retries={} cause={} detail={}",
        humantime::format_rfc3339_micros(r.time),
        r.service.name,
        r.client,
        Or(r.listener, "-"),
        Or(r.backend.as_ref().map(|(b, _)| &b.name), "-"),
        Or(r.backend.as_ref().map(|(_, a)| a), "-"),
        r.unique_id.as_deref().unwrap_or("-"),
        r.bytes_to_backend,
        r.bytes_to_client,
        Ms(r.first_byte, "-"),
        Ms(r.connect, "-"),
        Ms(Some(r.total), "-"),
        r.retries,
        r.cause.as_str(),
        if r.detail.is_empty() { "-" } else { r.detail },
    );
}

/// One JSON object; absent values are `null`.
pub fn json(buf: &mut Vec<u8>, pop: &str, r: &Record) {
    let _ = writeln!(
        buf,
        "{{\"time\":{},\"pop\":{},\"service\":{},\"client_ip\":\"{}\",\"client_port\":{},\"listener\":{},\
         \"backend\":{},\"backend_addr\":{},\"unique_id\":{},\"bytes_to_backend\":{},\"bytes_to_client\":{},\
         \"first_byte_ms\":{},\"connect_ms\":{},\"total_ms\":{},\"retries\":{},\"cause\":\"{}\",\"detail\":{}}}",
        JsDisplay(Some(humantime::format_rfc3339_micros(r.time))),
        Js(Some(pop)),
        Js(Some(&r.service.name)),
        r.client.ip(),
        r.client.port(),
        JsDisplay(r.listener),
        Js(r.backend.as_ref().map(|(b, _)| b.name.as_str())),
        JsDisplay(r.backend.as_ref().map(|(_, a)| a)),
        Js(r.unique_id.as_deref()),
        r.bytes_to_backend,
        r.bytes_to_client,
        Ms(r.first_byte, "null"),
        Ms(r.connect, "null"),
        Ms(Some(r.total), "null"),
        r.retries,
        r.cause.as_str(),
        Js((!r.detail.is_empty()).then_some(r.detail)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_and_numbers_exact() {
        let mut b = Vec::new();
        let _ = write!(
            b,
            "{} {} {}",
            Js(Some("a\"b\\c\n")),
            Js(None),
            Ms(Some(Duration::from_micros(1_234_567)), "-")
        );
        assert_eq!(String::from_utf8(b).unwrap(), r#""a\"b\\c\u000a" null 1234.567"#);
        let mut b = Vec::new();
        let _ = write!(b, "{} {}", Ms(Some(Duration::from_nanos(999)), "-"), Ms(None, "-"));
        assert_eq!(String::from_utf8(b).unwrap(), "0.000 -");
    }
}
