//! Binary upgrade without refusing a SYN: on SIGUSR2 the running process
//! starts the (new) binary with the same arguments and hands it every
//! listening socket over a Unix socket (SCM_RIGHTS). The sockets, and the
//! connections already queued on them, stay open throughout: the new
//! process accepts from the same queues. Sequence:
//!
//! ```text
//! old: SIGUSR2 -> listen on upgrade socket -> spawn new (ANYEDGE_UPGRADE_FROM)
//! new: connect -> receive "ADDR n" + n fds per address, "END"
//! new: apply config using those listeners -> "READY"
//! old: stop accepting -> close its BGP sessions (Cease) -> "BGP_RELEASED"
//! new: start BGP (announces again) ; old: drain connections -> exit
//! ```
//!
//! Without BGP graceful restart the prefixes are withdrawn from this PoP for
//! the second between the old Cease and the new session; anycast sends new
//! connections to the other PoPs meanwhile, and none are refused here.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

pub const ENV: &str = "ANYEDGE_UPGRADE_FROM";

/// Listening sockets by address, as handed over.
pub type Listeners = HashMap<SocketAddr, Vec<TcpListener>>;

/// Old side: sends `listeners` (address -> sockets) to the new process.
pub fn send_listeners(s: &UnixStream, listeners: &[(SocketAddr, Vec<RawFd>)]) -> anyhow::Result<()> {
    for (addr, fds) in listeners {
        for chunk in fds.chunks(32) {
            let line = format!("ADDR {addr} {}\n", chunk.len());
            let iov = [IoSlice::new(line.as_bytes())];
            let cmsg = [ControlMessage::ScmRights(chunk)];
            sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).context("sendmsg listeners")?;
        }
    }
    let iov = [IoSlice::new(b"END\n")];
    sendmsg::<()>(s.as_raw_fd(), &iov, &[], MsgFlags::empty(), None).context("sendmsg END")?;
    Ok(())
}

/// New side: receives the listening sockets, grouped by address.
pub fn receive_listeners(s: &UnixStream) -> anyhow::Result<Listeners> {
    let mut out: Listeners = HashMap::new();
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
        let (Some("ADDR"), Some(addr), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("unexpected upgrade message {line:?}");
        };
        let addr: SocketAddr = addr.parse().context("upgrade address")?;
        let count: usize = count.parse().context("upgrade count")?;
        if fds.len() != count {
            bail!("expected {count} sockets for {addr}, got {}", fds.len());
        }
        out.entry(addr)
            .or_default()
            .extend(fds.into_iter().map(TcpListener::from));
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
            chan: Channel::new(stream, Duration::from_secs(30), "the new process")?,
            child_pid,
        })
    }
}

/// New side: if this start is an upgrade, the channel to the old process
/// and the listening sockets it handed over.
pub fn inherit() -> anyhow::Result<Option<(Channel, Listeners)>> {
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
