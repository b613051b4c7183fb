//! Binary upgrade without refusing a SYN or losing a DNS query: on SIGUSR2
//! the running process starts the (new) binary with the same arguments and
//! hands it every listening socket over a Unix socket (SCM_RIGHTS): the load
//! balancer's TCP listeners, and every DNS worker's SO_REUSEPORT UDP socket
//! and TCP listener. The sockets, and the connections and datagrams already
//! queued on them, stay open throughout: the new process serves from the
//! same kernel queues. Sequence:
//!
//! ```text
//! old: SIGUSR2 -> listen on upgrade socket -> spawn new (ANYEDGE_UPGRADE_FROM)
//! new: connect -> receive "<KIND> addr n" + n fds per line, "END"
//!      (KIND: ADDR = LB listener, DNS_UDP, DNS_TCP; type and address checked)
//! new: start the LB with those listeners (accept held closed); load the
//!      file zones, start secondary zones' transfers (DNS reading held)
//! new: backends checked -> open accept; every DNS zone loaded (a
//!      secondary's first transfer: up to 10 s) -> serve DNS on the
//!      inherited sockets (both processes read them now; each datagram or
//!      connection goes to one of them) -> "READY"
//! old: stop accepting (LB, DNS TCP); stop reading DNS UDP (each thread
//!      answers the batch it has read, then sees the stop flag within its
//!      200 ms receive timeout) -> close its copies of the sockets
//! old: close its BGP sessions (Cease) -> "BGP_RELEASED"
//! new: start BGP (announces again) ; old: drain LB and DNS TCP connections
//!      (up to limits.shutdown_grace) -> exit
//! ```
//!
//! Sockets that no longer match the new configuration (a `dns.listen`
//! address gone, fewer `dns.workers`) are closed by the new process and
//! missing ones bound, each logged; datagrams queued on a closed UDP socket
//! are lost when the old process stops, so change those with care.
//!
//! Without BGP graceful restart the prefixes are withdrawn from this PoP for
//! the second between the old Cease and the new session; anycast sends new
//! connections to the other PoPs meanwhile, and none are refused here.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

pub const ENV: &str = "ANYEDGE_UPGRADE_FROM";

/// What a handed-over socket is for; the word that starts its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A load balancer service's TCP listener ("ADDR", the original word).
    Lb,
    /// A DNS UDP socket (one per DNS worker thread and address).
    DnsUdp,
    /// A DNS TCP listener (one per worker runtime and address).
    DnsTcp,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Lb => "ADDR",
            Kind::DnsUdp => "DNS_UDP",
            Kind::DnsTcp => "DNS_TCP",
        }
    }

    fn from_word(w: &str) -> Option<Kind> {
        [Kind::Lb, Kind::DnsUdp, Kind::DnsTcp]
            .into_iter()
            .find(|k| k.word() == w)
    }

    fn socket_type(self) -> socket2::Type {
        match self {
            Kind::Lb | Kind::DnsTcp => socket2::Type::STREAM,
            Kind::DnsUdp => socket2::Type::DGRAM,
        }
    }
}

/// Listening sockets by address, as handed over.
pub type Listeners = HashMap<SocketAddr, Vec<TcpListener>>;

/// Everything the previous process handed over.
#[derive(Default)]
pub struct Inherited {
    pub lb: Listeners,
    pub dns: crate::dns::Inherited,
}

impl Inherited {
    pub fn count(&self) -> usize {
        self.lb.values().map(Vec::len).sum::<usize>() + self.dns.count()
    }
}

/// Old side: sends the sockets (kind, address -> fds) to the new process.
pub fn send_listeners(s: &UnixStream, sockets: &[(Kind, SocketAddr, Vec<RawFd>)]) -> anyhow::Result<()> {
    for (kind, addr, fds) in sockets {
        for chunk in fds.chunks(32) {
            let line = format!("{} {addr} {}\n", kind.word(), chunk.len());
            let iov = [IoSlice::new(line.as_bytes())];
            let cmsg = [ControlMessage::ScmRights(chunk)];
            sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).context("sendmsg listeners")?;
        }
    }
    let iov = [IoSlice::new(b"END\n")];
    sendmsg::<()>(s.as_raw_fd(), &iov, &[], MsgFlags::empty(), None).context("sendmsg END")?;
    Ok(())
}

/// New side: receives the sockets, grouped by kind and address. Each one
/// must be of its kind's type and bound to its address.
pub fn receive_listeners(s: &UnixStream) -> anyhow::Result<Inherited> {
    let mut out = Inherited::default();
    loop {
        let mut buf = [0u8; 256];
        let mut cmsg = nix::cmsg_space!([RawFd; 32]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("recvmsg listeners")?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs().context("control messages")? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(adopt));
            }
        }
        let n = msg.bytes;
        let line = std::str::from_utf8(buf.get(..n).unwrap_or(&[]))
            .context("upgrade message")?
            .trim()
            .to_string();
        if line == "END" {
            return Ok(out);
        }
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(addr), Some(count)) =
            (parts.next().and_then(Kind::from_word), parts.next(), parts.next())
        else {
            bail!("unexpected upgrade message {line:?}");
        };
        let addr: SocketAddr = addr.parse().context("upgrade address")?;
        let count: usize = count.parse().context("upgrade count")?;
        if fds.len() != count {
            bail!("expected {count} sockets for {addr}, got {}", fds.len());
        }
        for fd in &fds {
            let sock = socket2::SockRef::from(fd);
            let ty = sock.r#type().context("socket type")?;
            let local = sock.local_addr().ok().and_then(|a| a.as_socket());
            if ty != kind.socket_type() || local != Some(addr) {
                bail!(
                    "{} socket for {addr} is a {ty:?} socket bound to {local:?}",
                    kind.word()
                );
            }
        }
        match kind {
            Kind::Lb => out
                .lb
                .entry(addr)
                .or_default()
                .extend(fds.into_iter().map(TcpListener::from)),
            Kind::DnsTcp => out
                .dns
                .tcp
                .entry(addr)
                .or_default()
                .extend(fds.into_iter().map(TcpListener::from)),
            Kind::DnsUdp => out
                .dns
                .udp
                .entry(addr)
                .or_default()
                .extend(fds.into_iter().map(UdpSocket::from)),
        }
    }
}

#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just installed in this process by recvmsg(2) with
    // SCM_RIGHTS; nothing else owns it, so `OwnedFd` may (and must) close it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The line protocol both sides speak after the sockets: one word a line.
pub struct Channel {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// "the new process" / "the old process", for error messages.
    peer: &'static str,
}

impl Channel {
    fn new(stream: UnixStream, timeout: Duration, peer: &'static str) -> anyhow::Result<Channel> {
        stream.set_read_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Channel { stream, reader, peer })
    }

    /// Waits for the line `want` from the other process.
    pub fn expect(&mut self, want: &str) -> anyhow::Result<()> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.peer))?;
        if line.trim() != want {
            bail!("{} said {:?}, expected {want:?}", self.peer, line.trim());
        }
        Ok(())
    }

    pub fn say(&mut self, what: &str) -> anyhow::Result<()> {
        writeln!(self.stream, "{what}").with_context(|| format!("writing to {}", self.peer))?;
        Ok(())
    }
}

/// Old side: the new process and the channel to it.
pub struct Handover {
    pub chan: Channel,
    pub child_pid: u32,
}

impl Handover {
    /// Starts the new binary (same path and arguments) and waits for it to
    /// connect (10 s).
    pub fn start() -> anyhow::Result<Handover> {
        let path = std::env::temp_dir().join(format!("anyedge-upgrade-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).context("upgrade socket")?;
        listener.set_nonblocking(true)?;
        let exe = std::env::current_exe().context("own executable")?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let child = std::process::Command::new(exe)
            .args(&args)
            .env(ENV, &path)
            .spawn()
            .context("start the new process")?;
        let child_pid = child.id();
        // the new process outlives us; it is not ours to wait for
        drop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        bail!("the new process (PID {child_pid}) did not connect in 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let _ = std::fs::remove_file(&path);
        stream.set_nonblocking(false)?;
        Ok(Handover {
            // READY comes after the new process has loaded its DNS zones
            chan: Channel::new(stream, Duration::from_secs(120), "the new process")?,
            child_pid,
        })
    }
}

/// New side: if this start is an upgrade, the channel to the old process
/// and the listening sockets it handed over.
pub fn inherit() -> anyhow::Result<Option<(Channel, Inherited)>> {
    let Some(path) = std::env::var_os(ENV) else {
        return Ok(None);
    };
    // not inherited by any further upgrade of ours
    std::env::remove_var(ENV);
    let stream = UnixStream::connect(&path).context("connect to the old process")?;
    let listeners = receive_listeners(&stream)?;
    Ok(Some((
        Channel::new(stream, Duration::from_secs(60), "the old process")?,
        listeners,
    )))
}
