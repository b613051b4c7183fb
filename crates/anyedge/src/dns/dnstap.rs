//! Query and response logging as dnstap: AUTH_QUERY and AUTH_RESPONSE
//! messages (dnstap.proto) in Frame Streams (bidirectional, content type
//! `protobuf:dnstap.Dnstap`) to a collector's unix socket, as Knot, BIND,
//! Unbound and dnsdist emit them.
//!
//! The answer path never waits for it:
//! - 1 exchange in `sample` is logged, decided by a per-thread count before
//!   anything is copied;
//! - a logged exchange is copied into a pooled [`Record`] (buffers come
//!   back from the writer and are reused: no allocation once warm) and
//!   offered to a bounded queue; a full queue drops it and counts
//!   (`dropped`);
//! - one writer thread encodes (prost) and writes the frames; it alone
//!   blocks on the collector. While no collector is connected it keeps
//!   draining the queue (counted as dropped) and retries with backoff,
//!   logging each change of state once.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use prost::Message as _;
use tracing::{debug, info, warn};

use crate::config::DnstapConfig;
use crate::logutil::LogLimiter;

/// The Frame Streams content type of dnstap.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// dnstap.proto's `Dnstap`, the fields we send (hand-derived: no protoc at
/// build time).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
    /// `Dnstap.Type`: MESSAGE = 1.
    #[prost(int32, required, tag = "15")]
    pub r#type: i32,
}

/// dnstap.proto's `Message`, the fields an authoritative server fills.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// `Message.Type`: AUTH_QUERY = 1, AUTH_RESPONSE = 2.
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    /// `SocketFamily`: INET = 1, INET6 = 2.
    #[prost(int32, optional, tag = "2")]
    pub socket_family: Option<i32>,
    /// `SocketProtocol`: UDP = 1, TCP = 2.
    #[prost(int32, optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
}

pub const AUTH_QUERY: i32 = 1;
pub const AUTH_RESPONSE: i32 = 2;

/// One logged exchange: the query and the response (empty: none was sent),
/// both ends, when. Pooled: its buffers keep their capacity.
#[derive(Default)]
pub(super) struct Record {
    tcp: bool,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    query_time: Duration,
    response_time: Duration,
    query: Vec<u8>,
    response: Vec<u8>,
}

/// Sent and dropped messages, kept across reloads.
#[derive(Default)]
pub struct TapCounters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub connected: AtomicBool,
}

/// The dnstap state for the status and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DnstapStats {
    pub enabled: bool,
    /// A collector is connected now.
    pub connected: bool,
    /// Messages written to the collector.
    pub sent: u64,
    /// Messages not logged: the queue was full or no collector connected.
    pub dropped: u64,
}

/// Time since the Unix epoch (zero before it).
pub(super) fn wall_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

thread_local! {
    /// Exchanges seen by this thread since the last one sampled.
    static SEEN: Cell<u32> = const { Cell::new(0) };
}

/// A running dnstap output: the answer path's side of the queue and the
/// writer thread.
pub(super) struct Tap {
    cfg: DnstapConfig,
    tx: Sender<Box<Record>>,
    pool: Receiver<Box<Record>>,
    counters: Arc<TapCounters>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Tap {
    /// Starts the writer thread (it connects in the background: a missing
    /// collector is no error).
    pub(super) fn start(cfg: &DnstapConfig, pop: &str, counters: Arc<TapCounters>) -> io::Result<Arc<Tap>> {
        let queue = cfg.queue.get() as usize;
        let (tx, rx) = crossbeam_channel::bounded::<Box<Record>>(queue);
        // buffers come back here; a few more than the queue holds, for
        // those in the answering threads' hands
        let (pool_tx, pool) = crossbeam_channel::bounded::<Box<Record>>(queue + 256);
        let stop = Arc::new(AtomicBool::new(false));
        let text = |v: &Option<String>, default: String| {
            let t = v.clone().unwrap_or(default);
            (!t.is_empty()).then(|| t.into_bytes())
        };
        let writer = Writer {
            socket: cfg.socket.clone(),
            identity: text(&cfg.identity, pop.to_string()),
            version: text(&cfg.version, format!("anyedge {}", env!("CARGO_PKG_VERSION"))),
            log_queries: cfg.log_queries,
            log_responses: cfg.log_responses,
            rx,
            pool: pool_tx,
            counters: counters.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("anyedge-dnstap".into())
            .spawn(move || writer.run())?;
        info!(socket = %cfg.socket.display(), sample = cfg.sample.get(), queue, "dnstap: logging dns queries and responses");
        Ok(Arc::new(Tap {
            cfg: cfg.clone(),
            tx,
            pool,
            counters,
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub(super) fn config(&self) -> &DnstapConfig {
        &self.cfg
    }

    /// Whether this exchange is logged: 1 in `sample`, counted per thread
    /// (no shared state, nothing copied yet).
    pub(super) fn sampled(&self) -> bool {
        let n = self.cfg.sample.get();
        if n == 1 {
            return true;
        }
        SEEN.with(|c| {
            let seen = c.get() + 1;
            if seen >= n {
                c.set(0);
                true
            } else {
                c.set(seen);
                false
            }
        })
    }

    /// Queues one exchange for the writer (call only if [`Tap::sampled`]).
    /// Never waits: a full queue drops it (counted).
    pub(super) fn log(
        &self,
        tcp: bool,
        client: SocketAddr,
        server: Option<SocketAddr>,
        query_time: Duration,
        query: &[u8],
        response: &[u8],
    ) {
        let messages = u64::from(self.cfg.log_queries) + u64::from(self.cfg.log_responses && !response.is_empty());
        if self.tx.is_full() {
            self.counters.dropped.fetch_add(messages, Ordering::Relaxed);
            return;
        }
        // a pooled record; a new one while warming up (the pool grows to
        // the queue's size, then the writer's returns keep it full)
        let mut r = self.pool.try_recv().unwrap_or_default();
        r.tcp = tcp;
        r.client = Some(client);
        r.server = server;
        r.query_time = query_time;
        r.response_time = if response.is_empty() {
            Duration::ZERO
        } else {
            wall_now()
        };
        r.query.clear();
        r.response.clear();
        if self.cfg.log_queries {
            r.query.extend_from_slice(query);
        }
        if self.cfg.log_responses {
            r.response.extend_from_slice(response);
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(r) {
            self.counters.dropped.fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// Stops the writer: what is queued is written, then STOP and FINISH
    /// (a collector that does not answer is given up on after a second).
    pub(super) fn stop(&self, wait: bool) {
        self.stop.store(true, Ordering::SeqCst);
        if !wait {
            return;
        }
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Frame Streams control frame types.
const FSTRM_ACCEPT: u32 = 1;
const FSTRM_START: u32 = 2;
const FSTRM_STOP: u32 = 3;
const FSTRM_READY: u32 = 4;
const FSTRM_FINISH: u32 = 5;
const FSTRM_FIELD_CONTENT_TYPE: u32 = 1;
/// The largest control frame we read (fstrm's own limit is 512).
const CONTROL_MAX: usize = 512;
/// How long the handshake and STOP/FINISH may take, and how long one write
/// blocks before the writer looks at its stop flag again.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of frames gathered before a write.
const FLUSH_AT: usize = 64 * 1024;
/// A pooled record's buffers larger than this are not kept.
const KEEP: usize = 4096;
/// Reconnect backoff: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A control frame: escape (0), length, type, and the content type field.
pub fn control_frame(kind: u32, content_type: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if content_type {
        body.extend_from_slice(&FSTRM_FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut f = 0u32.to_be_bytes().to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Reads one control frame; returns its type and whether it names our
/// content type (or names none).
fn read_control(s: &mut UnixStream) -> io::Result<(u32, bool)> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h)?;
    let (esc, len) = (
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize,
    );
    if esc != 0 || !(4..=CONTROL_MAX).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a frame streams control frame",
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let kind = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut rest = &body[4..];
    let (mut any, mut ours) = (false, false);
    while rest.len() >= 8 {
        let ft = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let fl = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let Some(v) = rest.get(8..8 + fl) else { break };
        if ft == FSTRM_FIELD_CONTENT_TYPE {
            any = true;
            ours |= v == CONTENT_TYPE;
        }
        rest = &rest[8 + fl..];
    }
    Ok((kind, ours || !any))
}

/// Connects and runs the bidirectional handshake: READY -> ACCEPT -> START.
fn connect(path: &Path) -> io::Result<UnixStream> {
    // bounded: a collector whose backlog is full must not hold the writer
    // (and so a shutdown) in connect(2)
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    sock.connect_timeout(&socket2::SockAddr::unix(path)?, IO_TIMEOUT)?;
    let mut s = UnixStream::from(sock);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&control_frame(FSTRM_READY, true))?;
    match read_control(&mut s)? {
        (FSTRM_ACCEPT, true) => {}
        (FSTRM_ACCEPT, false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the collector does not accept protobuf:dnstap.Dnstap",
            ))
        }
        (k, _) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected ACCEPT, got control frame {k}"),
            ))
        }
    }
    s.write_all(&control_frame(FSTRM_START, true))?;
    Ok(s)
}

static LOG_LIMIT: LogLimiter = LogLimiter::new(1);

/// The writer thread's state.
struct Writer {
    socket: PathBuf,
    identity: Option<Vec<u8>>,
    version: Option<Vec<u8>>,
    log_queries: bool,
    log_responses: bool,
    rx: Receiver<Box<Record>>,
    pool: Sender<Box<Record>>,
    counters: Arc<TapCounters>,
    stop: Arc<AtomicBool>,
}

/// A connection to the collector and the frames gathered for it.
struct Conn {
    s: UnixStream,
    buf: Vec<u8>,
    frames: u64,
}

impl Writer {
    fn run(self) {
        let mut conn: Option<Conn> = None;
        let mut backoff = BACKOFF_MIN;
        let mut next_try = Instant::now();
        // the last failure said, so that each state change is said once
        let mut said_down: Option<String> = None;
        let mut msg = Dnstap {
            identity: self.identity.clone(),
            version: self.version.clone(),
            message: None,
            r#type: 1,
        };
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if conn.is_none() && !stopping && Instant::now() >= next_try {
                match connect(&self.socket) {
                    Ok(s) => {
                        info!(socket = %self.socket.display(), "dnstap: connected to the collector");
                        self.counters.connected.store(true, Ordering::Relaxed);
                        said_down = None;
                        backoff = BACKOFF_MIN;
                        conn = Some(Conn {
                            s,
                            buf: Vec::with_capacity(FLUSH_AT + 8192),
                            frames: 0,
                        });
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if said_down.as_deref() != Some(e.as_str()) {
                            if let Some(n) = LOG_LIMIT.allow() {
                                warn!(socket = %self.socket.display(), error = %e, suppressed = n, "dnstap: cannot reach the collector: dropping messages and retrying (up to every {}s)", BACKOFF_MAX.as_secs());
                            }
                            said_down = Some(e);
                        }
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let got = if stopping {
                self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                self.rx.recv_timeout(Duration::from_millis(100))
            };
            match got {
                Ok(mut r) => {
                    match conn.as_mut() {
                        Some(c) => {
                            self.encode(&mut msg, &mut r, c);
                            if c.buf.len() >= FLUSH_AT || self.rx.is_empty() {
                                if let Err(e) = self.flush(c) {
                                    conn = self.lost(conn, &e);
                                    next_try = Instant::now() + backoff;
                                }
                            }
                        }
                        None => {
                            let n = u64::from(self.log_queries && !r.query.is_empty())
                                + u64::from(self.log_responses && !r.response.is_empty());
                            self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    // back to the pool, without the room of a large answer
                    // (a TCP response may be 64 KiB)
                    for b in [&mut r.query, &mut r.response] {
                        if b.capacity() > KEEP {
                            *b = Vec::new();
                        }
                    }
                    let _ = self.pool.try_send(r);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(c) = conn.as_mut() {
                        if let Err(e) = self.flush(c) {
                            conn = self.lost(conn, &e);
                            next_try = Instant::now() + backoff;
                        }
                    }
                    if stopping {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(mut c) = conn {
            if self.flush(&mut c).is_ok() {
                // STOP -> FINISH (the collector closes its file cleanly)
                let _ = c.s.write_all(&control_frame(FSTRM_STOP, false));
                if !matches!(read_control(&mut c.s), Ok((FSTRM_FINISH, _))) {
                    debug!(socket = %self.socket.display(), "dnstap: the collector did not FINISH");
                }
            }
            self.counters.connected.store(false, Ordering::Relaxed);
            info!(socket = %self.socket.display(), "dnstap: stopped");
        }
    }

    /// The connection is gone: what it had gathered is counted as dropped.
    fn lost(&self, conn: Option<Conn>, e: &io::Error) -> Option<Conn> {
        if let Some(c) = conn {
            self.counters.dropped.fetch_add(c.frames, Ordering::Relaxed);
        }
        self.counters.connected.store(false, Ordering::Relaxed);
        if let Some(n) = LOG_LIMIT.allow() {
            warn!(socket = %self.socket.display(), error = %e, suppressed = n, "dnstap: lost the collector: dropping messages and reconnecting");
        }
        None
    }

    /// Appends the frames of one exchange (the record's buffers are lent
    /// to the message and given back: nothing allocated once warm).
    fn encode(&self, msg: &mut Dnstap, r: &mut Record, c: &mut Conn) {
        let (Some(client), server) = (r.client, r.server) else {
            return;
        };
        let family = if client.is_ipv4() { 1 } else { 2 };
        let ip_bytes = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let m = msg.message.get_or_insert_with(Message::default);
        m.socket_family = Some(family);
        m.socket_protocol = Some(if r.tcp { 2 } else { 1 });
        m.query_address = Some(ip_bytes(client.ip()));
        m.query_port = Some(u32::from(client.port()));
        m.response_address = server.map(|s| ip_bytes(s.ip()));
        m.response_port = server.map(|s| u32::from(s.port()));
        m.query_time_sec = Some(r.query_time.as_secs());
        m.query_time_nsec = Some(r.query_time.subsec_nanos());
        if self.log_queries && !r.query.is_empty() {
            m.r#type = AUTH_QUERY;
            m.query_message = Some(std::mem::take(&mut r.query));
            m.response_time_sec = None;
            m.response_time_nsec = None;
            m.response_message = None;
            push_frame(msg, c);
            if let Some(m) = msg.message.as_mut() {
                r.query = m.query_message.take().unwrap_or_default();
            }
        }
        let Some(m) = msg.message.as_mut() else { return };
        if self.log_responses && !r.response.is_empty() {
            m.r#type = AUTH_RESPONSE;
            m.query_message = None;
            m.response_time_sec = Some(r.response_time.as_secs());
            m.response_time_nsec = Some(r.response_time.subsec_nanos());
            m.response_message = Some(std::mem::take(&mut r.response));
            push_frame(msg, c);
            if let Some(m) = msg.message.as_mut() {
                r.response = m.response_message.take().unwrap_or_default();
            }
        }
    }

    /// Writes what is gathered; a write blocked by a collector that does
    /// not read is retried until it goes through or the writer stops.
    fn flush(&self, c: &mut Conn) -> io::Result<()> {
        let mut at = 0;
        while at < c.buf.len() {
            match c.s.write(&c.buf[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.stop.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.counters.sent.fetch_add(c.frames, Ordering::Relaxed);
        c.buf.clear();
        c.frames = 0;
        Ok(())
    }
}

/// Appends one data frame (length, then the protobuf).
fn push_frame(msg: &Dnstap, c: &mut Conn) {
    let len = msg.encoded_len();
    c.buf.extend_from_slice(&(len as u32).to_be_bytes());
    // a Vec grows as needed: encoding into it cannot fail
    let _ = msg.encode(&mut c.buf);
    c.frames += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_have_the_frame_streams_layout() {
        let f = control_frame(FSTRM_READY, true);
        assert_eq!(&f[..4], &[0, 0, 0, 0], "escape");
        assert_eq!(u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize, f.len() - 8);
        assert_eq!(&f[8..12], &FSTRM_READY.to_be_bytes());
        assert_eq!(&f[12..16], &FSTRM_FIELD_CONTENT_TYPE.to_be_bytes());
        assert_eq!(&f[16..20], &(CONTENT_TYPE.len() as u32).to_be_bytes());
        assert_eq!(&f[20..], CONTENT_TYPE);
        assert_eq!(control_frame(FSTRM_STOP, false), [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]);
    }

    #[test]
    fn messages_round_trip_through_prost() {
        let m = Dnstap {
            identity: Some(b"pop1".to_vec()),
            version: None,
            message: Some(Message {
                r#type: AUTH_RESPONSE,
                socket_family: Some(1),
                socket_protocol: Some(2),
                query_address: Some(vec![192, 0, 2, 1]),
                query_port: Some(5300),
                response_time_nsec: Some(7),
                response_message: Some(vec![1, 2, 3]),
                ..Default::default()
            }),
            r#type: 1,
        };
        let b = m.encode_to_vec();
        // field 15 (type, varint): key 0x78
        assert!(b.windows(2).any(|w| w == [0x78, 1]));
        assert_eq!(Dnstap::decode(&b[..]).unwrap(), m);
    }

    #[test]
    fn sampling_takes_one_in_n_per_thread() {
        let counters = Arc::new(TapCounters::default());
        let cfg = DnstapConfig {
            socket: "/nonexistent/anyedge-test.sock".into(),
            log_queries: true,
            log_responses: true,
            sample: std::num::NonZeroU32::new(10).unwrap(),
            queue: std::num::NonZeroU32::new(4).unwrap(),
            identity: None,
            version: None,
        };
        let t = Tap::start(&cfg, "p", counters.clone()).unwrap();
        let n = (0..1000).filter(|_| t.sampled()).count();
        assert_eq!(n, 100);
        t.stop(true);
    }
}
