//! The DNS sockets: bound or inherited from the previous process (binary
//! upgrade), held until the zones are loaded, served by UDP threads and TCP
//! accept loops, and duplicated for the next upgrade's hand-over.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::{load_zones, rrl_of, settings_of, tcp, xfr, Dns};
use crate::config::DnsConfig;

/// Sockets by address, as raw fds (for the upgrade hand-over).
pub type SocketFds = Vec<(SocketAddr, Vec<RawFd>)>;

/// Sockets bound (or inherited) and not served yet.
pub(super) struct Held {
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    tcp: Vec<(SocketAddr, std::net::TcpListener)>,
    rts: Vec<tokio::runtime::Handle>,
    workers: usize,
}

/// Sockets handed over by the previous process (binary upgrade), by
/// address: used instead of binding new ones.
#[derive(Default)]
pub struct Inherited {
    pub udp: std::collections::HashMap<SocketAddr, Vec<std::net::UdpSocket>>,
    pub tcp: std::collections::HashMap<SocketAddr, Vec<std::net::TcpListener>>,
}

impl Inherited {
    /// Sockets held, UDP and TCP.
    pub fn count(&self) -> usize {
        self.udp.values().map(Vec::len).sum::<usize>() + self.tcp.values().map(Vec::len).sum::<usize>()
    }
}

impl Dns {
    /// [`Dns::start_with`] binding every socket anew.
    #[cfg(test)]
    pub fn start(
        cfg: &DnsConfig,
        pop: &str,
        workers: usize,
        rts: &[tokio::runtime::Handle],
    ) -> anyhow::Result<Arc<Dns>> {
        Dns::start_with(cfg, pop, workers, rts, Inherited::default(), false)
    }

    /// Loads the zones (any failure is fatal here), binds every socket, and
    /// starts the UDP threads and the TCP accept loops. Sockets handed over
    /// by the previous process (binary upgrade) are used where they match
    /// `dns.listen` and the worker count; ones that do not match are closed,
    /// missing ones are bound (both logged). With `hold`, nothing is read
    /// from the sockets until [`Dns::open`] (an upgrading process opens once
    /// its zones are loaded: the old process answers meanwhile).
    pub fn start_with(
        cfg: &DnsConfig,
        pop: &str,
        workers: usize,
        rts: &[tokio::runtime::Handle],
        mut inherited: Inherited,
        hold: bool,
    ) -> anyhow::Result<Arc<Dns>> {
        let (zones, errors, fresh) = load_zones(cfg, None);
        if let Some((z, e)) = errors.first() {
            anyhow::bail!("zone {z}: {e}");
        }
        let dns = Arc::new(Dns {
            zones: ArcSwap::from_pointee(zones),
            settings: ArcSwap::from_pointee(settings_of(cfg, pop)),
            rrl: ArcSwap::from_pointee(rrl_of(cfg)),
            cfg: ArcSwap::from_pointee(cfg.clone()),
            epoch: std::time::Instant::now(),
            counters: Mutex::new(Vec::new()),
            errors: Mutex::new(Default::default()),
            origins: Mutex::new(Default::default()),
            refreshed: Mutex::new(Default::default()),
            load_failures: Mutex::new(Default::default()),
            expires: Mutex::new(Default::default()),
            stop: AtomicBool::new(false),
            tcp_open: AtomicU32::new(0),
            tcp: tcp::Table::new(),
            tcp_idle: tokio::sync::Notify::new(),
            threads: Mutex::new(Vec::new()),
            tcp_tasks: Mutex::new(Vec::new()),
            handover_udp: Mutex::new(Vec::new()),
            handover_tcp: Mutex::new(Vec::new()),
            held: Mutex::new(None),
            xfr: xfr::Xfr::new(),
            dnstap: ArcSwap::from_pointee(None),
            dnstap_counters: Default::default(),
        });
        dns.apply_dnstap(cfg, pop);
        for (z, by) in &fresh {
            dns.note_loaded(z, *by);
        }
        let workers = cfg.workers.map_or(workers, |w| w.get() as usize).max(1);
        let tcp_workers = workers.min(rts.len()).max(1);
        // bind everything first: a port in use fails the start cleanly
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let upgrading = !inherited.udp.is_empty() || !inherited.tcp.is_empty();
        for addr in &cfg.listen {
            let mut u = inherited.udp.remove(addr).unwrap_or_default();
            let mut t = inherited.tcp.remove(addr).unwrap_or_default();
            let (got_u, got_t) = (u.len(), t.len());
            if got_u > workers || got_t > tcp_workers {
                warn!(addr = %addr, udp = got_u.saturating_sub(workers), tcp = got_t.saturating_sub(tcp_workers),
                    "upgrade: dns.workers is smaller now: closing the extra inherited dns sockets (datagrams queued on them when the previous process stops are lost)");
                u.truncate(workers);
                t.truncate(tcp_workers);
            }
            if got_u + got_t > 0 {
                info!(addr = %addr, udp = u.len(), tcp = t.len(), "upgrade: dns serving on the inherited sockets");
                // what `bind_udp`/`bind_tcp` set (the socket may come from
                // an older version; the old process uses the same modes)
                for s in &u {
                    s.set_read_timeout(Some(UDP_WAKEUP))?;
                }
                for l in &t {
                    l.set_nonblocking(true)?;
                }
            }
            if upgrading && got_u + got_t == 0 {
                info!(addr = %addr, "upgrade: new dns address (nothing inherited): binding its sockets");
            }
            if u.len() < workers || t.len() < tcp_workers {
                if got_u + got_t > 0 {
                    info!(addr = %addr, udp = workers - u.len(), tcp = tcp_workers - t.len(), "upgrade: binding additional dns sockets (dns.workers is larger now)");
                }
                if got_u + got_t == 0 {
                    crate::net::warn_if_not_local("dns", *addr);
                    for udp in [true, false] {
                        crate::net::refuse_taken(*addr, udp)
                            .map_err(|e| anyhow::anyhow!("dns: cannot bind {addr}: {e}"))?;
                    }
                }
                while u.len() < workers {
                    u.push(bind_udp(*addr)?);
                }
                while t.len() < tcp_workers {
                    t.push(bind_tcp(*addr)?);
                }
            }
            udp.extend(u.into_iter().map(|s| (*addr, s)));
            tcp.extend(t.into_iter().map(|l| (*addr, l)));
        }
        for (addr, socks) in inherited.udp.drain() {
            warn!(addr = %addr, sockets = socks.len(), "upgrade: inherited dns udp socket(s) for an address no longer in dns.listen: closed");
        }
        for (addr, socks) in inherited.tcp.drain() {
            warn!(addr = %addr, sockets = socks.len(), "upgrade: inherited dns tcp listener(s) for an address no longer in dns.listen: closed");
        }
        keep_duplicates(&udp, &dns.handover_udp)?;
        keep_duplicates(&tcp, &dns.handover_tcp)?;
        let held = Held {
            udp,
            tcp,
            rts: rts.to_vec(),
            workers,
        };
        if hold {
            info!("dns: sockets ready; serving once every zone is loaded");
            *dns.held.lock().map_err(|_| anyhow::anyhow!("lock"))? = Some(held);
        } else {
            dns.serve(held)?;
        }
        xfr::start(&dns);
        super::zones::start_resigner(&dns);
        Ok(dns)
    }

    /// Starts serving on the sockets held back by `start_with(.., hold)`
    /// (nothing to do if already serving).
    pub fn open(self: &Arc<Self>) -> anyhow::Result<()> {
        let held = self.held.lock().map_err(|_| anyhow::anyhow!("lock"))?.take();
        match held {
            Some(h) => self.serve(h),
            None => Ok(()),
        }
    }

    /// UDP threads and TCP accept loops on `h`'s sockets.
    fn serve(self: &Arc<Self>, h: Held) -> anyhow::Result<()> {
        for (i, (addr, sock)) in h.udp.into_iter().enumerate() {
            let d = self.clone();
            let c = self.new_counters();
            let t = std::thread::Builder::new()
                .name(format!("anyedge-dns{i}"))
                .spawn(move || d.serve_udp(sock, addr, &c))?;
            self.threads.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(t);
        }
        for (i, (addr, l)) in h.tcp.into_iter().enumerate() {
            let rt = h.rts.get(i % h.rts.len().max(1)).cloned();
            let d = self.clone();
            let c = self.new_counters();
            let task = match rt {
                Some(rt) => rt.spawn(async move { d.serve_tcp(l, addr, c).await }),
                None => tokio::spawn(async move { d.serve_tcp(l, addr, c).await }),
            };
            self.tcp_tasks.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(task);
        }
        let cfg = self.cfg.load();
        for a in &cfg.listen {
            info!(addr = %a, workers = h.workers, zones = cfg.zones.len(), "dns listening (udp+tcp)");
        }
        Ok(())
    }

    /// Every listening socket (UDP: one per worker and address; TCP: one
    /// per worker runtime and address), for the upgrade hand-over. The fds
    /// stay valid until [`Dns::stop`].
    pub fn socket_fds(&self) -> (SocketFds, SocketFds) {
        let group = |v: &Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>| {
            let mut out: SocketFds = Vec::new();
            if let Ok(v) = v.lock() {
                for (addr, fd) in v.iter() {
                    match out.iter_mut().find(|(a, _)| a == addr) {
                        Some((_, fds)) => fds.push(fd.as_raw_fd()),
                        None => out.push((*addr, vec![fd.as_raw_fd()])),
                    }
                }
            }
            out
        };
        (group(&self.handover_udp), group(&self.handover_tcp))
    }
}

/// Duplicates of `sockets` (same open file, close-on-exec), kept in `into`
/// for the upgrade hand-over.
fn keep_duplicates<S: AsFd>(
    sockets: &[(SocketAddr, S)],
    into: &Mutex<Vec<(SocketAddr, OwnedFd)>>,
) -> anyhow::Result<()> {
    let mut v = into.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    for (addr, s) in sockets {
        v.push((*addr, s.as_fd().try_clone_to_owned()?));
    }
    Ok(())
}

/// How long a UDP thread waits in `recvmmsg` before it looks at the stop
/// flag again (the receive timeout of the socket; no busy loop).
pub(super) const UDP_WAKEUP: Duration = Duration::from_millis(200);

fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // large buffers absorb bursts while a batch is being answered
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_read_timeout(Some(UDP_WAKEUP))?;
    crate::net::set_freebind(&s, addr)?;
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("dns: cannot bind udp {addr}: {e}"))?;
    Ok(s.into())
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    crate::net::set_freebind(&s, addr)?;
    s.bind(&addr.into())
        .map_err(|e| anyhow::anyhow!("dns: cannot bind tcp {addr}: {e}"))?;
    s.listen(1024)?;
    Ok(s.into())
}
