//! Bidirectional byte forwarding between client and backend.
//!
//! Each direction starts with plain `read`/`write` through a small buffer (a
//! request or a short response costs two syscalls and no pipe). When a read
//! fills the whole buffer the direction is carrying bulk data and switches to
//! `splice(2)` through a pipe, so the payload moves socket -> pipe -> socket
//! inside the kernel and never enters our address space (the "splice-auto"
//! idea). Half-close is propagated: EOF from one side becomes `shutdown(WR)`
//! on the other, and the other direction keeps flowing until it ends too.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::io::Read;

use crate::net::Sock;
use tokio::time::Instant;

/// Read buffer per direction; a full read switches the direction to splice.
const BUF: usize = 16 * 1024;
/// Bytes moved per splice call (the default pipe capacity).
const SPLICE_LEN: usize = 64 * 1024;

/// `from + d`, or a time decades away if that overflows (`d` from the
/// configuration: `Instant + Duration` panics on overflow).
pub fn deadline(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86_400))
}

/// How a forwarded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions reached EOF.
    Closed,
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// A socket error (reset by peer, ...).
    Error,
    /// `stop` completed (the process stops: `limits.shutdown_grace` is over).
    Cut,
}

/// A side of a forwarded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Bytes moved each way (also those of a direction an error or the
    /// idle timeout cut short).
    pub to_backend: u64,
    pub to_client: u64,
    /// `End::Closed`: the side whose end (EOF) came first; `End::Error`:
    /// the side whose socket failed; `End::Idle`: none.
    pub closed_by: Option<Side>,
    /// When the first byte from the client was read here.
    pub first_from_client: Option<Instant>,
}

/// Forwards until both directions end, an error happens, `idle` passes
/// without any byte moving, or `stop` completes. `counters` are (client->backend, backend->client)
/// byte counters updated as data moves.
pub async fn forward(
    client: &Sock,
    backend: &Sock,
    idle: Duration,
    counters: [&AtomicU64; 2],
    use_splice: bool,
    stop: impl std::future::Future<Output = ()>,
) -> (End, Totals) {
    let activity = Activity::new();
    tokio::pin!(stop);
    let up = pump(client, backend, &activity, counters[0], Side::Client, use_splice);
    let down = pump(backend, client, &activity, counters[1], Side::Backend, use_splice);
    tokio::pin!(up, down);
    let mut up_done = false;
    let mut down_done = false;
    let mut closed_by = None;
    let end = loop {
        let deadline = self::deadline(activity.last(), idle);
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                match r {
                    Ok(()) => { closed_by.get_or_insert(Side::Client); }
                    Err(side) => { closed_by = Some(side); break End::Error; }
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                match r {
                    Ok(()) => { closed_by.get_or_insert(Side::Backend); }
                    Err(side) => { closed_by = Some(side); break End::Error; }
                }
            }
            () = &mut stop => break End::Cut,
            _ = tokio::time::sleep_until(deadline) => {
                if self::deadline(activity.last(), idle) <= Instant::now() {
                    closed_by = None;
                    break End::Idle;
                }
            }
        }
        if up_done && down_done {
            break End::Closed;
        }
    };
    (
        end,
        Totals {
            to_backend: activity.up.load(Ordering::Relaxed),
            to_client: activity.down.load(Ordering::Relaxed),
            closed_by,
            first_from_client: activity.first_up(),
        },
    )
}

/// Last time a byte moved, shared by both directions of one connection,
/// and what this connection moved each way.
/// (Atomics rather than `Cell`s so the connection future stays `Send`;
/// they are this connection's own, never contended.)
struct Activity {
    base: Instant,
    nanos: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Nanoseconds from `base` to the first byte from the client, plus 1
    /// (0: none yet).
    first_up: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            first_up: AtomicU64::new(0),
        }
    }
    fn touch(&self) -> u64 {
        let n = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.nanos.store(n, Ordering::Relaxed);
        n
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
    fn first_up(&self) -> Option<Instant> {
        match self.first_up.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
    /// `n` bytes from `from` moved to the other side (and into `shared`).
    fn moved(&self, from: Side, shared: &AtomicU64, n: u64) {
        shared.fetch_add(n, Ordering::Relaxed);
        let mine = if from == Side::Client { &self.up } else { &self.down };
        let before = mine.fetch_add(n, Ordering::Relaxed);
        let at = self.touch();
        if before == 0 && from == Side::Client {
            self.first_up.store(at + 1, Ordering::Relaxed);
        }
    }
}

/// One direction: `src` (the `src_side`) -> `dst`, counting into `counter`
/// and `activity`. Ends at EOF from `src`; an error names the side whose
/// socket failed.
async fn pump(
    src: &Sock,
    dst: &Sock,
    activity: &Activity,
    counter: &AtomicU64,
    src_side: Side,
    use_splice: bool,
) -> Result<(), Side> {
    let dst_side = match src_side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    };
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    loop {
        let mut rg = src.readable().await.map_err(|_| src_side)?;
        if let Some((pr, pw)) = &pipe {
            // splice mode: socket -> pipe -> socket, in the kernel
            let n = match splice(src.get_ref(), pw, SPLICE_LEN) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rg.clear_ready();
                    continue;
                }
                Err(_) => return Err(src_side),
            };
            drop(rg);
            let mut left = n;
            while left > 0 {
                let mut wg = dst.writable().await.map_err(|_| dst_side)?;
                match splice(pr, dst.get_ref(), left) {
                    Ok(0) => return Err(dst_side),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => wg.clear_ready(),
                    Err(_) => return Err(dst_side),
                }
            }
            activity.moved(src_side, counter, n as u64);
        } else {
            // A buffer only while data is in flight: idle connections hold none.
            let mut buf = pool::Buf::take();
            let n = match src.get_ref().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rg.clear_ready();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(src_side),
            };
            if n < buf.len() {
                // short read: the socket is drained (see `Sock`)
                rg.clear_ready();
            }
            drop(rg);
            // Read now, write after the other connections this wake-up
            // made readable have read too: the worker's sends then leave
            // back to back (as HAProxy's do: its receives run before its
            // sends in each loop). Sends in a burst share the receiving
            // CPU's wake-up (an RPS or NIC queue's interrupt, a VM exit
            // where virtualised); one per read costs one each. Measured
            // by bench/tunnel.sh's CPU phase (veths, receive steered to the
            // other CPU): PoP CPU per keep-alive request 1.14x -> 0.82x
            // HAProxy's, requests/s 0.91x -> 1.1x; on loopback, where
            // nothing is handed to another CPU, unchanged within noise.
            behind_the_others().await;
            crate::net::write_all(dst, &buf[..n]).await.map_err(|_| dst_side)?;
            activity.moved(src_side, counter, n as u64);
            if n == BUF && use_splice {
                // Bulk transfer: move to the kernel path. If no pipe can be
                // had (fd limit), keep copying.
                if let Ok(p) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC) {
                    pipe = Some(p);
                }
            }
        }
    }
    // EOF from src: pass the half-close on, keep the other direction open.
    let _ = dst.get_ref().shutdown(Shutdown::Write);
    Ok(())
}

/// Pending once, with the task woken at once: it goes to the back of its
/// worker's run queue (each worker runs a current-thread runtime, whose
/// queue is first in, first out), behind the tasks woken with it, and runs
/// again when they have run. Not `tokio::task::yield_now`, which waits for
/// the next poll of the I/O driver too (one more `epoll_wait` per batch: a
/// few percent of the worker's time where nothing is gained, on loopback).
fn behind_the_others() -> impl std::future::Future<Output = ()> {
    let mut woken = false;
    std::future::poll_fn(move |cx| {
        if woken {
            return std::task::Poll::Ready(());
        }
        woken = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// Copy buffers, per worker thread. A direction takes one when its socket
/// is readable and gives it back once the bytes are written, so 5,000 idle
/// connections cost no buffers (HAProxy does the same with its buffer
/// pools), and busy ones reuse the same few without allocating.
mod pool {
    use std::cell::RefCell;
    use std::ops::{Deref, DerefMut};

    use super::BUF;

    /// Free buffers kept per thread (4 MiB); beyond that they are freed.
    const KEEP: usize = 256;

    thread_local! {
        static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    }

    pub struct Buf(Box<[u8]>);

    impl Buf {
        pub fn take() -> Buf {
            let b = FREE.with(|f| f.borrow_mut().pop());
            Buf(b.unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice()))
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            let b = std::mem::take(&mut self.0);
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < KEEP {
                    f.push(b);
                }
            });
        }
    }

    impl Deref for Buf {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.0
        }
    }

    impl DerefMut for Buf {
        fn deref_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }
}

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    use nix::fcntl::SpliceFFlags;
    nix::fcntl::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn deadline_saturates_instead_of_panicking() {
        let now = Instant::now();
        // `now + Duration::MAX` panics ("overflow when adding duration to instant")
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(deadline(now, Duration::from_secs(5)), now + Duration::from_secs(5));
    }

    /// (plain tokio stream for the test side, registered `Sock` for forward)
    async fn pair() -> (TcpStream, Sock) {
        let l = crate::net::adopt_listener(crate::net::listen("127.0.0.1:0".parse().unwrap(), 16).unwrap()).unwrap();
        let addr = l.get_ref().local_addr().unwrap();
        let a = TcpStream::connect(addr).await.unwrap();
        let (b, _) = crate::net::accept(&l).await.unwrap();
        (a, b)
    }

    async fn roundtrip(use_splice: bool) {
        // client_peer <-> client | forward | backend <-> backend_peer
        let (mut client_peer, client) = pair().await;
        let (mut backend_peer, backend) = pair().await;
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client_peer.write_all(&p2).await.unwrap();
            client_peer.shutdown().await.unwrap(); // half-close
            let mut back = Vec::new();
            client_peer.read_to_end(&mut back).await.unwrap();
            back
        });
        let echo = tokio::spawn(async move {
            let mut got = Vec::new();
            backend_peer.read_to_end(&mut got).await.unwrap();
            // answer after the client's half-close
            backend_peer.write_all(&got[..1000]).await.unwrap();
            backend_peer.shutdown().await.unwrap();
            got
        });
        let (end, totals) = forward(
            &client,
            &backend,
            Duration::from_secs(5),
            [&up, &down],
            use_splice,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, End::Closed);
        assert_eq!(totals.to_backend, payload.len() as u64);
        assert_eq!(totals.to_client, 1000);
        assert_eq!(up.load(Ordering::Relaxed), payload.len() as u64);
        let got = echo.await.unwrap();
        assert_eq!(got, payload);
        let back = writer.await.unwrap();
        assert_eq!(back, payload[..1000]);
    }

    #[tokio::test]
    async fn forwards_with_half_close_splice() {
        roundtrip(true).await;
    }

    #[tokio::test]
    async fn forwards_with_half_close_copy() {
        roundtrip(false).await;
    }

    #[tokio::test]
    async fn idle_timeout_ends_silent_connection() {
        let (_client_peer, client) = pair().await;
        let (_backend_peer, backend) = pair().await;
        let c = AtomicU64::new(0);
        let start = Instant::now();
        let (end, _) = forward(
            &client,
            &backend,
            Duration::from_millis(200),
            [&c, &c],
            true,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, End::Idle);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
