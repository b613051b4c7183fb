//! DNS over TCP (RFC 7766), built to survive hostile clients (section 6.2):
//!
//! - Output: answers are written as they are produced, while more queries
//!   are read. A connection stops parsing (and reading) queries while more
//!   than [`CONN_PENDING`] bytes of its answers wait for the client to read
//!   them (as Knot and NSD do); while all connections together hold more
//!   than [`TOTAL_PENDING`], each may hold one answer at most. A write that
//!   makes no progress for `tcp_io_timeout` closes the connection (counted:
//!   `write_stalled`), zone transfers included.
//! - Input: a query must arrive whole, length prefix to last byte, within
//!   `tcp_io_timeout` of its first byte (counted: `query_timeout`); between
//!   queries, with nothing to send, a connection may stay idle for
//!   `tcp_idle_timeout`.
//! - Admission: at most `tcp_max_per_address` connections per source
//!   address and `tcp_max_per_prefix` per IPv4 /24 or IPv6 /56 (counted:
//!   `source_limit`). When the table (`tcp_max_connections`) is full, the
//!   connection without progress for the longest (a query received whole,
//!   answers written out, transfer data written) is closed to make room for
//!   the newcomer (counted: `evicted`): slow or stalled connections cannot
//!   lock active clients out, and a TC answer over UDP stays useful.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyedge_dns::answer::{self, Context};
use anyedge_guard::prefix::Prefix;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tracing::{error, warn};

use super::{count_qtype, dnstap, unix_now, xfr, Counters, Dns};
use crate::config::TcpLimits;
use crate::logutil::LogLimiter;

/// Answer bytes a connection may have waiting for its client before it
/// stops parsing queries (one more answer, at most 64 KiB, may follow).
pub(super) const CONN_PENDING: usize = 64 * 1024;
/// Answer bytes all connections together may have waiting before each is
/// held to one answer at a time.
pub(super) const TOTAL_PENDING: usize = 16 * 1024 * 1024;
/// Read size; also the most a connection reads past a query it has not
/// parsed yet.
const CHUNK: usize = 16 * 1024;
/// Buffers larger than this are given back once empty.
const KEEP: usize = 16 * 1024;

static LOG_LIMIT: LogLimiter = LogLimiter::new(1);

/// IPv4 /24, IPv6 /56: the prefix `tcp_max_per_prefix` applies to.
fn prefix_of(ip: IpAddr) -> Prefix {
    match ip {
        IpAddr::V4(_) => Prefix::of(ip, 24),
        IpAddr::V6(_) => Prefix::of(ip, 56),
    }
}

/// Every open DNS TCP connection (all listeners and workers), with per
/// source counts, and the answer bytes they hold.
pub(super) struct Table {
    inner: Mutex<Inner>,
    pending: AtomicUsize,
    epoch: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
    per_address: HashMap<(u128, u8), u32>,
    per_prefix: HashMap<(u128, u8), u32>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let c = self.conns.remove(&id)?;
        for (m, k) in [
            (&mut self.per_address, Prefix::host(c.src).key()),
            (&mut self.per_prefix, prefix_of(c.src).key()),
        ] {
            if let Some(n) = m.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        Some(c)
    }
}

/// One connection as the table sees it.
pub(super) struct Conn {
    id: u64,
    src: IpAddr,
    /// Milliseconds since the table's epoch of the last progress.
    last: AtomicU64,
    /// Notified when the connection is evicted.
    close: Notify,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Per-address or per-prefix cap.
    Source,
    /// Table full and nothing to evict (only with a zero-size table).
    Full,
}

/// A place in the table; dropping it frees the place.
pub(super) struct Slot {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut g) = self.table.inner.lock() {
            g.remove(self.conn.id);
        }
    }
}

impl Table {
    pub(super) fn new() -> Arc<Table> {
        Arc::new(Table {
            inner: Mutex::new(Inner::default()),
            pending: AtomicUsize::new(0),
            epoch: std::time::Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new connection from `src`, evicting the connection without
    /// progress for the longest if the table already holds `max`. Returns
    /// the slot and whether a connection was evicted.
    pub(super) fn admit(
        self: &Arc<Self>,
        src: IpAddr,
        limits: &TcpLimits,
        max: usize,
    ) -> Result<(Slot, bool), Refused> {
        let src = src.to_canonical();
        let (ka, kp) = (Prefix::host(src).key(), prefix_of(src).key());
        let Ok(mut g) = self.inner.lock() else {
            return Err(Refused::Full);
        };
        let over = |m: &HashMap<(u128, u8), u32>, k, cap: u32| cap > 0 && m.get(&k).is_some_and(|&n| n >= cap);
        if over(&g.per_address, ka, limits.max_per_address) || over(&g.per_prefix, kp, limits.max_per_prefix) {
            return Err(Refused::Source);
        }
        let mut evicted = false;
        while g.conns.len() >= max {
            let victim = g
                .conns
                .values()
                .min_by_key(|c| c.last.load(Ordering::Relaxed))
                .map(|c| c.id);
            let Some(v) = victim.and_then(|id| g.remove(id)) else {
                return Err(Refused::Full);
            };
            v.close.notify_one();
            evicted = true;
        }
        g.next += 1;
        let conn = Arc::new(Conn {
            id: g.next,
            src,
            last: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        g.conns.insert(conn.id, conn.clone());
        *g.per_address.entry(ka).or_insert(0) += 1;
        *g.per_prefix.entry(kp).or_insert(0) += 1;
        Ok((
            Slot {
                table: self.clone(),
                conn,
            },
            evicted,
        ))
    }

    fn touch(&self, c: &Conn) {
        c.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Answer bytes waiting in all connections.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// The answers of one connection not written yet (counted in the table's
/// total while held).
struct Out<'a> {
    buf: Vec<u8>,
    at: usize,
    total: &'a AtomicUsize,
}

impl Out<'_> {
    fn pending(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Whether another answer may be produced now.
    fn has_room(&self) -> bool {
        let p = self.pending();
        p == 0 || (p < CONN_PENDING && self.total.load(Ordering::Relaxed) < TOTAL_PENDING)
    }

    /// Drops what was written already (before appending a batch).
    fn compact(&mut self) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
    }

    fn push(&mut self, msg: &[u8]) {
        self.buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(msg);
        self.total.fetch_add(2 + msg.len(), Ordering::Relaxed);
    }

    fn wrote(&mut self, n: usize) {
        let n = n.min(self.pending());
        self.at += n;
        self.total.fetch_sub(n, Ordering::Relaxed);
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if self.buf.capacity() > KEEP {
                self.buf = Vec::with_capacity(4096);
            }
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.pending(), Ordering::Relaxed);
    }
}

/// The length of the first query of `b` if it is there whole.
fn whole_query(b: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    (b.len() >= 2 + len).then_some(len)
}

/// A writer that fails with `TimedOut` when a write makes no progress for
/// `timeout`, and marks the connection active on each progress (zone
/// transfers stream through it).
struct Watched<'a, W> {
    inner: &'a mut W,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    stalled: bool,
    table: &'a Table,
    conn: &'a Conn,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Watched<'_, W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.armed {
            let at = Instant::now() + this.timeout;
            this.sleep.as_mut().reset(at);
            this.armed = true;
        }
        match Pin::new(&mut *this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.armed = false;
                if matches!(r, Ok(n) if n > 0) {
                    this.table.touch(this.conn);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stalled = true;
                    Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How a connection ended, for the counters.
enum End {
    Done,
    QueryTimeout,
    WriteStalled,
    Evicted,
}

impl Dns {
    pub(super) async fn serve_tcp(self: Arc<Self>, l: std::net::TcpListener, addr: SocketAddr, c: Arc<Counters>) {
        let l = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                error!(%addr, error = %e, "dns tcp listener");
                return;
            }
        };
        loop {
            let (s, peer) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(%addr, error = %e, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let cfg = self.cfg.load();
            let max = cfg.tcp_max_connections.get() as usize;
            let slot = match self.tcp.admit(peer.ip(), &cfg.tcp_limits, max) {
                Ok((slot, evicted)) => {
                    if evicted {
                        c.tcp_evicted.fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = LOG_LIMIT.allow() {
                            warn!(%addr, max, suppressed = n, "dns tcp: connection table full: closing the connection idle the longest");
                        }
                    }
                    slot
                }
                Err(r) => {
                    match r {
                        Refused::Source => c.tcp_refused_source.fetch_add(1, Ordering::Relaxed),
                        Refused::Full => c.tcp_refused_cap.fetch_add(1, Ordering::Relaxed),
                    };
                    continue; // dropped: closes the connection
                }
            };
            drop(cfg);
            self.tcp_open.fetch_add(1, Ordering::AcqRel);
            let d = self.clone();
            let c = c.clone();
            tokio::spawn(async move {
                match d.tcp_conn(s, peer, &c, &slot.conn).await {
                    End::Done | End::Evicted => {}
                    End::QueryTimeout => {
                        c.tcp_query_timeout.fetch_add(1, Ordering::Relaxed);
                    }
                    End::WriteStalled => {
                        c.tcp_write_stalled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(slot);
                d.tcp_closed();
            });
        }
    }

    /// One TCP connection: length-prefixed queries, answered in order, the
    /// answers written while more queries are read (see the module doc for
    /// the limits). A zone transfer request is streamed by the transfer
    /// module once the answers before it are written.
    async fn tcp_conn(&self, s: tokio::net::TcpStream, peer: SocketAddr, c: &Counters, conn: &Conn) -> End {
        let _ = s.set_nodelay(true);
        // the server's end, for dnstap
        let local = s.local_addr().ok();
        let (mut rd, mut wr) = s.into_split();
        let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
        let mut out = Out {
            buf: Vec::with_capacity(4096),
            at: 0,
            total: &self.tcp.pending,
        };
        let mut resp: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; CHUNK];
        let mut eof = false;
        let mut transfer: Option<Vec<u8>> = None;
        // the first byte of the query being received, while reading
        let mut query_start: Option<Instant> = None;
        // the last progress, and the start of the current wait to write
        let mut last = Instant::now();
        let mut write_since = last;
        loop {
            // answer what is buffered, while the output has room
            if transfer.is_none() && whole_query(&inbuf).is_some() && out.has_room() {
                let zones = self.zones.load();
                let st = self.settings.load();
                let tap = self.dnstap.load();
                let query_time = if tap.is_some() {
                    dnstap::wall_now()
                } else {
                    Duration::ZERO
                };
                let now = unix_now();
                let was_empty = out.pending() == 0;
                out.compact();
                let mut at = 0usize;
                while let Some(len) = whole_query(&inbuf[at..]) {
                    if !out.has_room() {
                        break;
                    }
                    let q = &inbuf[at + 2..at + 2 + len];
                    at += 2 + len;
                    c.tcp_queries.fetch_add(1, Ordering::Relaxed);
                    count_qtype(c, q);
                    let tap = tap.as_ref().as_ref().filter(|t| t.sampled());
                    if anyedge_dns::xfr::is_transfer_request(q) {
                        if let Some(t) = tap {
                            t.log(true, peer, local, query_time, q, &[]); // the query alone
                        }
                        // streamed by the transfer module after what is queued
                        transfer = Some(q.to_vec());
                        break;
                    }
                    let cx = Context {
                        src: peer.ip(),
                        tcp: true,
                        now,
                    };
                    let a = answer::answer(&zones, &st, q, &cx, &mut resp);
                    match a.special {
                        Some(answer::Special::Notify) => xfr::notify(self, q, peer, &mut resp),
                        Some(_) => answer::refuse(q, &mut resp),
                        None if a.rcode == u16::from(answer::RCODE_NOTAUTH) => {
                            xfr::signed_soa(self, q, peer, &mut resp);
                        }
                        None => {}
                    }
                    self.count(c, &a, !resp.is_empty());
                    if let Some(t) = tap {
                        t.log(true, peer, local, query_time, q, &resp);
                    }
                    if !resp.is_empty() {
                        out.push(&resp);
                    }
                }
                drop((zones, st, tap));
                inbuf.drain(..at);
                if at > 0 {
                    query_start = None; // the next query starts now at the earliest
                }
                if resp.capacity() > KEEP {
                    resp = Vec::with_capacity(4096);
                }
                last = Instant::now();
                self.tcp.touch(conn);
                if was_empty {
                    write_since = last;
                }
            }
            if let Some(q) = transfer.as_deref() {
                if out.pending() == 0 {
                    let io_timeout = self.cfg.load().tcp_limits.io_timeout;
                    let mut w = Watched {
                        inner: &mut wr,
                        timeout: io_timeout,
                        sleep: Box::pin(tokio::time::sleep(io_timeout)),
                        armed: false,
                        stalled: false,
                        table: &self.tcp,
                        conn,
                    };
                    let r = tokio::select! {
                        r = xfr::serve_transfer(self, q, peer, &mut w) => r,
                        () = conn.close.notified() => return End::Evicted,
                    };
                    if r.is_err() {
                        return if w.stalled { End::WriteStalled } else { End::Done };
                    }
                    transfer = None;
                    last = Instant::now();
                    self.tcp.touch(conn);
                    continue;
                }
            }
            let whole = whole_query(&inbuf).is_some();
            if eof && out.pending() == 0 && transfer.is_none() && !whole {
                return End::Done;
            }
            if inbuf.len() > 2 + 65535 + CHUNK {
                return End::Done; // cannot happen: reads stop at a whole query
            }
            let (idle_timeout, io_timeout) = {
                let cfg = self.cfg.load();
                (cfg.tcp_idle_timeout, cfg.tcp_limits.io_timeout)
            };
            let reading = !eof && transfer.is_none() && !whole && out.pending() < CONN_PENDING;
            let writing = out.pending() > 0;
            let partial = reading && !inbuf.is_empty();
            if !partial {
                query_start = None;
            }
            // the nearest deadline that applies, and what it means
            let mut deadline = (last + idle_timeout, End::Done);
            let mut consider = |t: Instant, e: End| {
                if t < deadline.0 {
                    deadline = (t, e);
                }
            };
            if partial {
                consider(
                    *query_start.get_or_insert_with(Instant::now) + io_timeout,
                    End::QueryTimeout,
                );
            }
            if writing {
                consider(write_since + io_timeout, End::WriteStalled);
            }
            let (at, why) = deadline;
            tokio::select! {
                r = rd.read(&mut chunk), if reading => match r {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        if inbuf.is_empty() {
                            query_start = Some(Instant::now());
                        }
                        inbuf.extend_from_slice(&chunk[..n]);
                    }
                    Err(_) => return End::Done,
                },
                r = wr.write(&out.buf[out.at..]), if writing => match r {
                    Ok(0) | Err(_) => return End::Done,
                    Ok(n) => {
                        out.wrote(n);
                        write_since = Instant::now();
                        if out.pending() == 0 {
                            last = write_since;
                            self.tcp.touch(conn);
                        }
                    }
                },
                () = tokio::time::sleep_until(at) => return why,
                () = conn.close.notified() => return End::Evicted,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(per_address: u32, per_prefix: u32) -> TcpLimits {
        TcpLimits {
            max_per_address: per_address,
            max_per_prefix: per_prefix,
            ..TcpLimits::default()
        }
    }

    #[test]
    fn per_address_and_per_prefix_caps_and_release() {
        let t = Table::new();
        let l = limits(2, 3);
        let a = t.admit(ip("192.0.2.1"), &l, 100).unwrap().0;
        let _b = t.admit(ip("192.0.2.1"), &l, 100).unwrap().0;
        assert_eq!(t.admit(ip("192.0.2.1"), &l, 100).err(), Some(Refused::Source));
        // v4-mapped IPv6 is the same address
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(t.admit(mapped, &l, 100).err(), Some(Refused::Source));
        let _c = t.admit(ip("192.0.2.2"), &l, 100).unwrap().0;
        assert_eq!(
            t.admit(ip("192.0.2.3"), &l, 100).err(),
            Some(Refused::Source),
            "the /24"
        );
        let _d = t.admit(ip("192.0.3.1"), &l, 100).unwrap().0;
        // IPv6: the /56
        let _e = t.admit(ip("2001:db8:0:1::1"), &l, 100).unwrap().0;
        let _f = t.admit(ip("2001:db8:0:2::1"), &l, 100).unwrap().0;
        let _g = t.admit(ip("2001:db8:0:3::1"), &l, 100).unwrap().0;
        assert_eq!(t.admit(ip("2001:db8:0:4::1"), &l, 100).err(), Some(Refused::Source));
        let _h = t.admit(ip("2001:db8:0:100::1"), &l, 100).unwrap().0;
        drop(a);
        let _a = t.admit(ip("192.0.2.1"), &l, 100).unwrap().0;
        // no caps
        let free = limits(0, 0);
        let many: Vec<_> = (0..10)
            .map(|_| t.admit(ip("198.51.100.1"), &free, 100).unwrap())
            .collect();
        drop(many);
        let g = t.inner.lock().unwrap();
        assert_eq!(g.conns.len(), 8);
        assert!(
            !g.per_address.contains_key(&Prefix::host(ip("198.51.100.1")).key()),
            "zero counts removed"
        );
    }

    #[test]
    fn a_full_table_evicts_the_connection_without_progress_the_longest() {
        let t = Table::new();
        let l = limits(0, 0);
        let slots: Vec<Slot> = (1..=3)
            .map(|i| t.admit(ip(&format!("192.0.2.{i}")), &l, 3).unwrap().0)
            .collect();
        for (s, ms) in slots.iter().zip([500, 100, 900]) {
            s.conn.last.store(ms, Ordering::Relaxed);
        }
        let (_new, evicted) = t.admit(ip("198.51.100.1"), &l, 3).unwrap();
        assert!(evicted);
        let g = t.inner.lock().unwrap();
        assert!(!g.conns.contains_key(&slots[1].conn.id), "the one idle since 100 ms");
        assert_eq!(g.conns.len(), 3);
        drop(g);
        // the evicted connection is told to close
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), slots[1].conn.close.notified())
                .await
                .unwrap();
        });
        // its slot, dropped later, frees nothing twice
        drop(slots);
        assert_eq!(t.inner.lock().unwrap().conns.len(), 1);
    }

    #[test]
    fn output_room_per_connection_and_in_total() {
        let total = AtomicUsize::new(0);
        let mut o = Out {
            buf: Vec::new(),
            at: 0,
            total: &total,
        };
        assert!(o.has_room());
        o.push(&[0u8; 40_000]);
        assert!(o.has_room());
        o.push(&[0u8; 40_000]);
        assert!(!o.has_room(), "over {CONN_PENDING}");
        assert_eq!(total.load(Ordering::Relaxed), 80_004);
        o.wrote(70_000);
        assert!(o.has_room());
        total.fetch_add(TOTAL_PENDING, Ordering::Relaxed);
        assert!(!o.has_room(), "the total is over its budget");
        o.wrote(10_004);
        assert!(o.has_room(), "an empty connection may always answer once");
        assert_eq!(o.buf.capacity(), 4096, "a large buffer is given back once empty");
        o.push(&[0u8; 10]);
        drop(o);
        assert_eq!(total.load(Ordering::Relaxed), TOTAL_PENDING);
    }

    #[test]
    fn a_transfer_write_without_progress_times_out() {
        let t = Table::new();
        let (slot, _) = t.admit(ip("192.0.2.1"), &limits(0, 0), 10).unwrap();
        slot.conn.last.store(u64::MAX, Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // a peer that reads 1 KiB, then nothing
            let (mut a, mut b) = tokio::io::duplex(4096);
            let timeout = Duration::from_millis(200);
            let mut w = Watched {
                inner: &mut a,
                timeout,
                sleep: Box::pin(tokio::time::sleep(timeout)),
                armed: false,
                stalled: false,
                table: &t,
                conn: &slot.conn,
            };
            let reader = async {
                let mut buf = [0u8; 1024];
                b.read_exact(&mut buf).await.unwrap();
                std::future::pending::<()>().await;
            };
            let started = Instant::now();
            let r = tokio::select! {
                r = w.write_all(&[7u8; 1 << 16]) => r,
                () = reader => unreachable!(),
            };
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
            assert!(w.stalled);
            assert!(started.elapsed() >= timeout);
        });
        assert_ne!(
            slot.conn.last.load(Ordering::Relaxed),
            u64::MAX,
            "progress marked the connection active"
        );
    }

    #[test]
    fn whole_query_needs_every_byte() {
        assert_eq!(whole_query(&[]), None);
        assert_eq!(whole_query(&[0]), None);
        assert_eq!(whole_query(&[0, 3, 1, 2]), None);
        assert_eq!(whole_query(&[0, 3, 1, 2, 3, 9]), Some(3));
        assert_eq!(whole_query(&[0, 0]), Some(0));
    }
}
