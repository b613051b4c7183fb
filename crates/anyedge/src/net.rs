//! Sockets on the connection path, registered with tokio's reactor through
//! `AsyncFd` once, for their whole life (accept -> inspect -> connect ->
//! forward), instead of tokio's `TcpStream`. Two reasons, both measured in
//! `bench/l4_vs_haproxy.sh`:
//! - after a short read we clear read readiness ourselves (tick-checked by
//!   tokio, so no edge is lost) instead of paying one more `read` = EAGAIN;
//! - splice needs the raw fd, and converting a tokio stream to a raw one
//!   costs an epoll deregistration and registration per socket.
//!
//! This is the one module of the daemon with `unsafe` (fd registration and
//! adoption), each block with its SAFETY argument.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

/// A connected, non-blocking TCP socket registered with the reactor.
pub type Sock = AsyncFd<TcpStream>;
/// A listening, non-blocking TCP socket registered with the reactor.
pub type Listener = AsyncFd<TcpListener>;

#[allow(unsafe_code)]
fn register<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `AsyncFd::register` requires the fd to stay open while it is
    // registered. `inner` owns its fd and is moved into the `AsyncFd`, which
    // deregisters it before dropping (and so closing) `inner`.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

/// A listening socket with SO_REUSEPORT (several per address, one per
/// worker, so the kernel spreads new connections) and the given backlog.
/// Not yet registered: [`adopt_listener`] does that on the runtime (worker
/// thread) that will accept from it.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    set_freebind(&sock, addr)?;
    sock.bind(&addr.into())?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from(sock))
}

/// Refuses to share `addr` with a socket that is not ours. Our listeners
/// bind with SO_REUSEPORT (one per worker; the new process of a binary
/// upgrade binds next to the old one), so another program that also uses it
/// on the same address and port (nginx `reuseport`, another anyedge) would
/// not make our bind fail: the kernel would split the connections between
/// us. A probe without SO_REUSEPORT (TCP: with SO_REUSEADDR, so a TIME_WAIT
/// leftover does not count) binds only if no one holds the address.
///
/// Call it before binding a fresh group of sockets, not for sockets handed
/// over by an upgrade or an address this process already listens on.
pub fn refuse_taken(addr: SocketAddr, udp: bool) -> io::Result<()> {
    let (ty, proto) = if udp {
        (Type::DGRAM, "udp")
    } else {
        (Type::STREAM, "tcp")
    };
    let probe = Socket::new(Domain::for_address(addr), ty, None)?;
    if !udp {
        probe.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    set_freebind(&probe, addr)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{proto} {addr} is already in use by another process (refusing to share it: with SO_REUSEPORT the kernel would split the traffic between us)"
            ),
        )),
        Err(e) => Err(e),
    }
}

/// Lets a socket bind an address this host does not have yet (IP_FREEBIND,
/// as Knot and NSD's `ip-freebind` do): an anycast address may be added to
/// `lo` after the daemon starts, and traffic arrives once it is there.
pub fn set_freebind(sock: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        sock.set_freebind_ipv6(true)
    } else {
        sock.set_freebind(true)
    }
}

/// Whether `ip` is an address of this host (in this network namespace) now.
/// The wildcard address counts as local.
pub fn is_local(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Says once, at the place a listener is set up, that its address is not
/// (yet) on this host: with IP_FREEBIND the bind succeeds anyway, so a
/// typo would otherwise go unnoticed.
pub fn warn_if_not_local(what: &str, addr: SocketAddr) {
    if !is_local(addr.ip()) {
        tracing::warn!(
            what,
            addr = %addr,
            "listening on an address this host does not have (yet): traffic arrives once it is added, e.g. `ip addr add {}/{} dev lo`",
            addr.ip(),
            if addr.is_ipv6() { 128 } else { 32 }
        );
    }
}

/// Registers a listening socket with the current runtime's reactor.
pub fn adopt_listener(l: TcpListener) -> io::Result<Listener> {
    l.set_nonblocking(true)?;
    register(l)
}

/// Accepts one connection (non-blocking, close-on-exec, and the peer's
/// address, all from one `accept4`).
///
/// Errors that concern only the connection being accepted (the client
/// reset it while it waited in the queue: ECONNABORTED; network errors
/// Linux passes on from the new socket, see accept(2); EPERM from a
/// firewall rule) skip that connection at once and accept the next one.
/// Asking the socket for its peer afterwards would fail with ENOTCONN for
/// a reset connection, which is why the address comes from accept itself.
/// Only errors that say the process or the system is short of resources
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM) and unexpected ones reach the caller,
/// which backs off briefly.
pub async fn accept(l: &Listener) -> io::Result<(Sock, SocketAddr)> {
    use std::os::fd::AsRawFd;
    loop {
        let mut g = l.readable().await?;
        match accept_raw(l.get_ref().as_raw_fd()) {
            Ok((s, peer)) => return Ok((register(s)?, peer)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => g.clear_ready(),
                Some(code) if skips_connection(code) => {}
                _ => return Err(e),
            },
        }
    }
}

/// Whether an accept(2) error concerns only the connection it tried to
/// accept (skip it and go on) rather than the listener or the process.
fn skips_connection(code: i32) -> bool {
    matches!(
        code,
        libc::EINTR
            | libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::ENOTCONN
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT
    )
}

/// Whether an accept(2) error means the process or system is out of a
/// resource (descriptors, buffers, memory): back off briefly and retry.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[allow(unsafe_code)]
fn accept_raw(fd: std::os::fd::RawFd) -> io::Result<(TcpStream, SocketAddr)> {
    // SAFETY: `try_init` hands us a zeroed `sockaddr_storage` and its
    // length; accept4(2) writes at most `*len` bytes of address there and
    // updates `*len`, which is exactly the contract `try_init` asks for.
    // `fd` is a listening socket that outlives the call.
    let (fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let r = libc::accept4(fd, storage.cast(), len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r)
            }
        })
    }?;
    let s = adopt(fd);
    // A TCP listener's peers are IPv4 or IPv6; anything else (never seen)
    // is a per-connection oddity: the connection is dropped and skipped.
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EPROTO))?;
    Ok((s, peer))
}

#[allow(unsafe_code)]
fn adopt(fd: std::os::fd::RawFd) -> TcpStream {
    // SAFETY: `fd` was just returned by a successful accept4(2): it is open
    // and owned by nobody else, so `OwnedFd` may take ownership (and close it).
    TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Non-blocking connect; resolves once connected (or failed).
pub async fn connect(addr: SocketAddr) -> io::Result<Sock> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let s = register(TcpStream::from(sock))?;
    let _g = s.writable().await?;
    if let Some(e) = s.get_ref().take_error()? {
        return Err(e);
    }
    // Writable with no error: connected (peer_addr fails if not).
    s.get_ref().peer_addr()?;
    Ok(s)
}

/// Writes all of `data`.
pub async fn write_all(s: &Sock, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut g = s.writable().await?;
        match s.get_ref().write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => g.clear_ready(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// TCP MD5 signatures (RFC 2385) for connections to/from `peer` with `key`
/// (at most 80 bytes). Linux `struct tcp_md5sig`, laid out byte by byte:
/// sockaddr_storage (128) | flags u8 | prefixlen u8 | keylen u16 | ifindex
/// i32 | key [80].
pub fn set_tcp_md5(fd: std::os::fd::BorrowedFd<'_>, peer: std::net::IpAddr, key: &[u8]) -> io::Result<()> {
    const MAXKEY: usize = 80;
    if key.is_empty() || key.len() > MAXKEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key must be 1-80 bytes",
        ));
    }
    let mut sig = [0u8; 128 + 1 + 1 + 2 + 4 + MAXKEY];
    match peer {
        std::net::IpAddr::V4(a) => {
            sig[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            sig[4..8].copy_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            sig[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            sig[8..24].copy_from_slice(&a.octets());
        }
    }
    sig[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    sig[136..136 + key.len()].copy_from_slice(key);
    setsockopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM (RFC 5082): send with TTL/hop limit 255 and accept only segments
/// that arrive with at least 254 (one hop away at most).
pub fn set_gtsm(fd: std::os::fd::BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    let sock = socket2::SockRef::from(&fd);
    if ipv6 {
        sock.set_unicast_hops_v6(255)?;
        setsockopt_bytes(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &254i32.to_ne_bytes())
    } else {
        sock.set_ttl(255)?;
        setsockopt_bytes(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &254i32.to_ne_bytes())
    }
}

#[allow(unsafe_code)]
fn setsockopt_bytes(fd: std::os::fd::BorrowedFd<'_>, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::socklen_t::try_from(val.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a valid open socket for the borrow's lifetime; the
    // kernel reads exactly `len` bytes from `val`, which is that long and
    // lives across the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, val.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
