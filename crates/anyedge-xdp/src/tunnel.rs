//! Tunnel forwarding (the kernel side is `bpf/tunnel.h`, in the same XDP
//! program as the guard): packets to a tunnel service's VIP, port and
//! protocol are encapsulated (IPIP / IP6IP6, or GUE) to a backend node
//! picked by the service's Maglev table, which the node decapsulates
//! (`crate::decap`) and answers directly (DSR).
//!
//! Userspace keeps the maps: one entry per service (VIP:port/proto), its
//! Maglev ring (the same [`anyedge_lb::maglev::Maglev`] table the proxy path
//! builds, from the same names and weights), the backends (alive: they keep
//! their established flows; eligible: they get new ones), and reads the
//! per-CPU counters per service and verdict, and per backend.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyedge_lb::maglev::{Maglev, DEFAULT_TABLE_SIZE};

use crate::{addr_key, is_errno, map_err, Error, Xdp, ENOENT};

pub(crate) const MAP_VIPS: &str = "AE_TUN_VIPS";
pub(crate) const MAP_ADDRS: &str = "AE_TUN_ADDRS";
pub(crate) const MAP_RING: &str = "AE_TUN_RING";
pub(crate) const MAP_BACKENDS: &str = "AE_TUN_BACKENDS";
pub(crate) const MAP_CONNS: &str = "AE_TUN_CONNS";
pub(crate) const MAP_CONFIG: &str = "AE_TUN_CONFIG";
pub(crate) const MAP_COUNTERS: &str = "AE_TUN_COUNTERS";
pub(crate) const MAP_BACKEND_COUNTERS: &str = "AE_TUN_BACKEND_COUNTERS";

/// `TUN_RING_SIZE` in the program: the proxy path's Maglev table size.
pub const RING_SIZE: u32 = DEFAULT_TABLE_SIZE as u32;
const NO_BACKEND: u32 = u32::MAX;
const TS_GUE: u32 = 1;
const TB_ALIVE: u32 = 1;
const TB_V4: u32 = 2;

/// The encapsulation a service's packets travel in to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IPv4-in-IPv4 (IP protocol 4) or IPv6-in-IPv6 (41), by the families of
    /// the client packet and the backend address (mixed works too).
    Ipip,
    /// The same inner packet in UDP to `port` (GUE variant 1, "direct IP"):
    /// for underlays that drop IP protocol 4/41. The outer source port
    /// carries the flow hash.
    Gue { port: u16 },
}

/// Transport protocol of a tunnel service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One tunnel service: what it matches and how it encapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelService {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    pub encap: Encap,
    /// The underlay MTU: the largest outer IP packet the path to the nodes
    /// carries. Larger client packets are answered with ICMP "fragmentation
    /// needed" / "packet too big" carrying this minus the encapsulation.
    pub underlay_mtu: u16,
}

/// One backend node of a tunnel service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelBackend {
    /// The proxy path's backend name: the Maglev table is built from names
    /// and weights, so both paths map a client to the same node.
    pub name: String,
    /// The node's underlay address (the outer destination).
    pub addr: IpAddr,
    pub weight: u32,
    /// In the Maglev table (healthy, not drained): gets new flows. A
    /// backend listed but not eligible keeps its established flows.
    pub eligible: bool,
}

/// Outer source addresses: `prefix` with the host bits taken from a hash of
/// the flow, so the node's receive hashing (RSS on the outer header)
/// spreads flows over its queues. The node's `--from` must cover them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelSource {
    pub v4: Option<(Ipv4Addr, u8)>,
    pub v6: Option<(Ipv6Addr, u8)>,
}

/// What the program did with a tunnel service's packet (one per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelVerdict {
    /// A new flow, from the Maglev table.
    TxNew,
    /// A flow in the connection table.
    TxFlow,
    /// A TCP segment without SYN of a flow not in the table (a table change,
    /// an evicted entry): sent where the Maglev table points now.
    TxUnknown,
    /// An ICMP error quoting a VIP flow, sent to that flow's node.
    TxIcmp,
    /// Encapsulated, but the next hop's address was not resolved: passed
    /// to the kernel, which forwards it and resolves the neighbour.
    PassNeigh,
    /// ICMP to a VIP that is not an error about one of its flows (left to
    /// the stack).
    PassIcmp,
    /// Too big for the underlay: ICMP "fragmentation needed" / "packet too
    /// big" sent back to the client.
    IcmpTooBig,
    /// Too big and IPv4 without DF: dropped.
    DropTooBig,
    DropNoBackend,
    DropFragment,
    DropIpOptions,
    DropMalformed,
    /// No route to the backend's address.
    DropNoRoute,
    /// The encapsulation could not be pushed (no headroom).
    DropEncap,
}

impl TunnelVerdict {
    /// In the program's index order.
    pub const ALL: [TunnelVerdict; 14] = [
        TunnelVerdict::TxNew,
        TunnelVerdict::TxFlow,
        TunnelVerdict::TxUnknown,
        TunnelVerdict::TxIcmp,
        TunnelVerdict::PassNeigh,
        TunnelVerdict::PassIcmp,
        TunnelVerdict::IcmpTooBig,
        TunnelVerdict::DropTooBig,
        TunnelVerdict::DropNoBackend,
        TunnelVerdict::DropFragment,
        TunnelVerdict::DropIpOptions,
        TunnelVerdict::DropMalformed,
        TunnelVerdict::DropNoRoute,
        TunnelVerdict::DropEncap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelVerdict::TxNew => "tx_new",
            TunnelVerdict::TxFlow => "tx_flow",
            TunnelVerdict::TxUnknown => "tx_unknown",
            TunnelVerdict::TxIcmp => "tx_icmp",
            TunnelVerdict::PassNeigh => "pass_neigh",
            TunnelVerdict::PassIcmp => "pass_icmp",
            TunnelVerdict::IcmpTooBig => "icmp_too_big",
            TunnelVerdict::DropTooBig => "drop_too_big",
            TunnelVerdict::DropNoBackend => "drop_no_backend",
            TunnelVerdict::DropFragment => "drop_fragment",
            TunnelVerdict::DropIpOptions => "drop_ip_options",
            TunnelVerdict::DropMalformed => "drop_malformed",
            TunnelVerdict::DropNoRoute => "drop_no_route",
            TunnelVerdict::DropEncap => "drop_encap",
        }
    }

    pub fn is_drop(self) -> bool {
        self as usize >= TunnelVerdict::DropTooBig as usize
    }
}

const T_COUNT: u32 = TunnelVerdict::ALL.len() as u32;

/// Counts of one tunnel service, summed over CPUs, since load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelCounts {
    pub service: String,
    pub verdicts: Vec<(TunnelVerdict, u64)>,
    /// Per backend: name, packets and inner bytes forwarded.
    pub backends: Vec<(String, u64, u64)>,
}

impl TunnelCounts {
    pub fn get(&self, v: TunnelVerdict) -> u64 {
        self.verdicts.iter().find(|(k, _)| *k == v).map_or(0, |(_, n)| *n)
    }
}

/// Userspace's copy of one service's state in the maps.
#[derive(Debug)]
pub(crate) struct ServiceState {
    id: u32,
    svc: TunnelService,
    /// backend name -> (id, address)
    backends: BTreeMap<String, (u32, IpAddr)>,
    ring: Vec<u32>,
}

/// The tunnel's maps and userspace's copy of them.
pub(crate) struct Maps {
    pub(crate) vips: aya::maps::HashMap<aya::maps::MapData, [u8; 20], [u8; 12]>,
    pub(crate) addrs: aya::maps::HashMap<aya::maps::MapData, [u8; 16], u32>,
    pub(crate) ring: aya::maps::Array<aya::maps::MapData, u32>,
    pub(crate) backends: aya::maps::Array<aya::maps::MapData, [u8; 20]>,
    pub(crate) config: aya::maps::Array<aya::maps::MapData, [u8; 28]>,
    pub(crate) counters: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    pub(crate) backend_counters: aya::maps::PerCpuArray<aya::maps::MapData, [u64; 2]>,
    pub(crate) services: BTreeMap<String, ServiceState>,
    pub(crate) free_services: Vec<u32>,
    /// Freed backend ids are reused last (FIFO), so a connection-table
    /// entry of a removed backend is unlikely to name a new one.
    pub(crate) free_backends: VecDeque<u32>,
}

impl Maps {
    pub(crate) fn new(ebpf: &mut aya::Ebpf, max_services: u32, max_backends: u32) -> Result<Maps, Error> {
        Ok(Maps {
            vips: crate::take_map(ebpf, MAP_VIPS)?,
            addrs: crate::take_map(ebpf, MAP_ADDRS)?,
            ring: crate::take_map(ebpf, MAP_RING)?,
            backends: crate::take_map(ebpf, MAP_BACKENDS)?,
            config: crate::take_map(ebpf, MAP_CONFIG)?,
            counters: crate::take_map(ebpf, MAP_COUNTERS)?,
            backend_counters: crate::take_map(ebpf, MAP_BACKEND_COUNTERS)?,
            services: BTreeMap::new(),
            free_services: (0..max_services).rev().collect(),
            free_backends: (0..max_backends).collect(),
        })
    }
}

fn vip_key(s: &TunnelService) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&addr_key(s.vip));
    k[16..18].copy_from_slice(&s.port.to_be_bytes());
    k[18] = s.proto.number();
    k
}

fn service_value(id: u32, s: &TunnelService) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&id.to_ne_bytes());
    let (flags, port) = match s.encap {
        Encap::Ipip => (0, 0),
        Encap::Gue { port } => (TS_GUE, port),
    };
    v[4..8].copy_from_slice(&flags.to_ne_bytes());
    v[8..10].copy_from_slice(&s.underlay_mtu.to_ne_bytes());
    v[10..12].copy_from_slice(&port.to_be_bytes());
    v
}

fn backend_value(addr: IpAddr, alive: bool) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..16].copy_from_slice(&addr_key(addr));
    let mut flags = if alive { TB_ALIVE } else { 0 };
    if addr_key(addr)[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        flags |= TB_V4;
    }
    v[16..20].copy_from_slice(&flags.to_ne_bytes());
    v
}

/// The bytes of an address with the low `host_bits` bits set.
fn host_mask(host_bits: u32) -> u32 {
    match host_bits {
        0 => 0,
        32.. => u32::MAX,
        n => (1u32 << n) - 1,
    }
}

impl Xdp {
    /// Sets the outer source prefixes (see [`TunnelSource`]). An IPv6 prefix
    /// spreads at most the last 32 bits.
    pub fn set_tunnel_source(&mut self, src: &TunnelSource) -> Result<(), Error> {
        let mut v = [0u8; 28];
        if let Some((a, len)) = src.v4 {
            let mask = host_mask(32 - u32::from(len.min(32)));
            let base = u32::from(a) & !mask;
            v[0..4].copy_from_slice(&base.to_be_bytes());
            v[4..8].copy_from_slice(&mask.to_be_bytes());
        }
        if let Some((a, len)) = src.v6 {
            let host = 128 - u32::from(len.min(128));
            let mask = host_mask(host);
            let mut o = a.octets();
            let last = u32::from_be_bytes([o[12], o[13], o[14], o[15]]) & !mask;
            o[12..16].copy_from_slice(&last.to_be_bytes());
            v[8..24].copy_from_slice(&o);
            v[24..28].copy_from_slice(&mask.to_be_bytes());
        }
        self.tunnel.config.set(0, v, 0).map_err(map_err(MAP_CONFIG))
    }

    /// Adds or updates a tunnel service `name` with its backends. Backends
    /// no longer listed lose their flows (their connection-table entries
    /// fall back to the table); listed but not eligible ones keep them.
    /// Returns the number of Maglev slots that changed.
    pub fn set_tunnel_service(
        &mut self,
        name: &str,
        svc: &TunnelService,
        backends: &[TunnelBackend],
    ) -> Result<usize, Error> {
        // A changed VIP:port/proto is a new key: drop the old one first.
        let rekey = self
            .tunnel
            .services
            .get(name)
            .is_some_and(|old| vip_key(&old.svc) != vip_key(svc));
        if rekey {
            self.remove_tunnel_service(name)?;
        }
        let t = &mut self.tunnel;
        if !t.services.contains_key(name) {
            let id = t.free_services.pop().ok_or(Error::Map {
                map: MAP_VIPS,
                message: "too many tunnel services".into(),
            })?;
            t.services.insert(
                name.to_string(),
                ServiceState {
                    id,
                    svc: *svc,
                    backends: BTreeMap::new(),
                    ring: vec![NO_BACKEND; RING_SIZE as usize],
                },
            );
        }
        let Some(st) = t.services.get_mut(name) else {
            return Err(Error::Missing(MAP_VIPS));
        };
        st.svc = *svc;
        // backends: ids for new ones, entries for all listed
        for b in backends {
            let entry = match st.backends.get(&b.name) {
                Some(&(id, _)) => (id, b.addr),
                None => {
                    let id = t.free_backends.pop_front().ok_or(Error::Map {
                        map: MAP_BACKENDS,
                        message: "too many tunnel backends".into(),
                    })?;
                    (id, b.addr)
                }
            };
            t.backends
                .set(entry.0, backend_value(b.addr, true), 0)
                .map_err(map_err(MAP_BACKENDS))?;
            st.backends.insert(b.name.clone(), entry);
        }
        // the ring, from the eligible ones (the proxy path's table)
        let eligible: Vec<(&str, u32, u32)> = backends
            .iter()
            .filter(|b| b.eligible)
            .filter_map(|b| st.backends.get(&b.name).map(|&(id, _)| (b.name.as_str(), b.weight, id)))
            .collect();
        let mut ring = vec![NO_BACKEND; RING_SIZE as usize];
        if !eligible.is_empty() {
            let named: Vec<(&str, u32)> = eligible.iter().map(|&(n, w, _)| (n, w)).collect();
            let m = Maglev::new(&named, DEFAULT_TABLE_SIZE).map_err(|e| Error::Map {
                map: MAP_RING,
                message: e.to_string(),
            })?;
            for (slot, &i) in ring.iter_mut().zip(m.table()) {
                *slot = eligible.get(i as usize).map_or(NO_BACKEND, |&(_, _, id)| id);
            }
        }
        let base = st.id * RING_SIZE;
        let mut changed = 0;
        for (i, (&new, old)) in ring.iter().zip(st.ring.iter_mut()).enumerate() {
            if new != *old {
                let slot = u32::try_from(i).unwrap_or(u32::MAX);
                t.ring.set(base + slot, new, 0).map_err(map_err(MAP_RING))?;
                *old = new;
                changed += 1;
            }
        }
        // the VIP entry last: the ring is complete when packets find it
        t.vips
            .insert(vip_key(svc), service_value(st.id, svc), 0)
            .map_err(map_err(MAP_VIPS))?;
        let addr = addr_key(svc.vip);
        if t.addrs.get(&addr, 0).is_err() {
            t.addrs.insert(addr, st.id, 0).map_err(map_err(MAP_ADDRS))?;
        }
        // backends no longer listed: not alive, ids freed
        let stale: Vec<String> = st
            .backends
            .keys()
            .filter(|n| !backends.iter().any(|b| &b.name == *n))
            .cloned()
            .collect();
        for n in stale {
            if let Some((id, addr)) = st.backends.remove(&n) {
                t.backends
                    .set(id, backend_value(addr, false), 0)
                    .map_err(map_err(MAP_BACKENDS))?;
                t.free_backends.push_back(id);
            }
        }
        Ok(changed)
    }

    /// Removes a tunnel service: its packets go to the stack again.
    pub fn remove_tunnel_service(&mut self, name: &str) -> Result<bool, Error> {
        let t = &mut self.tunnel;
        let Some(st) = t.services.remove(name) else {
            return Ok(false);
        };
        match t.vips.remove(&vip_key(&st.svc)) {
            Ok(()) => {}
            Err(e) if is_errno(&e, ENOENT) => {}
            Err(e) => return Err(map_err(MAP_VIPS)(e)),
        }
        let addr = addr_key(st.svc.vip);
        let others: Vec<u32> = t
            .services
            .values()
            .filter(|s| addr_key(s.svc.vip) == addr)
            .map(|s| s.id)
            .collect();
        match others.first() {
            Some(&id) => t.addrs.insert(addr, id, 0).map_err(map_err(MAP_ADDRS))?,
            None => match t.addrs.remove(&addr) {
                Ok(()) => {}
                Err(e) if is_errno(&e, ENOENT) => {}
                Err(e) => return Err(map_err(MAP_ADDRS)(e)),
            },
        }
        for (_, (id, addr)) in st.backends {
            t.backends
                .set(id, backend_value(addr, false), 0)
                .map_err(map_err(MAP_BACKENDS))?;
            t.free_backends.push_back(id);
        }
        let base = st.id * RING_SIZE;
        for (i, &old) in st.ring.iter().enumerate() {
            if old != NO_BACKEND {
                let slot = u32::try_from(i).unwrap_or(u32::MAX);
                t.ring.set(base + slot, NO_BACKEND, 0).map_err(map_err(MAP_RING))?;
            }
        }
        t.free_services.push(st.id);
        Ok(true)
    }

    /// The names of the tunnel services set.
    pub fn tunnel_services(&self) -> impl Iterator<Item = &str> + '_ {
        self.tunnel.services.keys().map(String::as_str)
    }

    /// The backend id the Maglev ring of `name` holds for a client address
    /// (for tests and status: which node a client maps to).
    pub fn tunnel_backend_for(&self, name: &str, client: IpAddr) -> Option<&str> {
        let st = self.tunnel.services.get(name)?;
        let slot = anyedge_lb::maglev::hash_ip(client) % u64::from(RING_SIZE);
        let id = *st.ring.get(usize::try_from(slot).ok()?)?;
        st.backends.iter().find(|(_, (i, _))| *i == id).map(|(n, _)| n.as_str())
    }

    /// Per service: verdict counts and per-backend packets/bytes, summed
    /// over CPUs.
    pub fn tunnel_counters(&self) -> Result<Vec<TunnelCounts>, Error> {
        let t = &self.tunnel;
        let mut out = Vec::with_capacity(t.services.len());
        for (name, st) in &t.services {
            let mut verdicts = Vec::with_capacity(TunnelVerdict::ALL.len());
            for (i, v) in TunnelVerdict::ALL.iter().enumerate() {
                let k = st.id * T_COUNT + u32::try_from(i).unwrap_or(0);
                let per_cpu = t.counters.get(&k, 0).map_err(map_err(MAP_COUNTERS))?;
                verdicts.push((*v, per_cpu.iter().fold(0u64, |a, &b| a.wrapping_add(b))));
            }
            let mut backends = Vec::with_capacity(st.backends.len());
            for (bname, &(id, _)) in &st.backends {
                let per_cpu = t.backend_counters.get(&id, 0).map_err(map_err(MAP_BACKEND_COUNTERS))?;
                let (p, b) = per_cpu
                    .iter()
                    .fold((0u64, 0u64), |(p, b), c| (p.wrapping_add(c[0]), b.wrapping_add(c[1])));
                backends.push((bname.clone(), p, b));
            }
            out.push(TunnelCounts {
                service: name.clone(),
                verdicts,
                backends,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let s = TunnelService {
            vip: "198.18.200.1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: 443,
            proto: Proto::Tcp,
            encap: Encap::Gue { port: 6080 },
            underlay_mtu: 1600,
        };
        let k = vip_key(&s);
        assert_eq!(&k[10..16], &[0xff, 0xff, 198, 18, 200, 1]);
        assert_eq!(&k[16..19], &[1, 187, 6]);
        let v = service_value(3, &s);
        assert_eq!(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]), 3);
        assert_eq!(u32::from_ne_bytes([v[4], v[5], v[6], v[7]]), TS_GUE);
        assert_eq!(u16::from_ne_bytes([v[8], v[9]]), 1600);
        assert_eq!(&v[10..12], &6080u16.to_be_bytes());
        let b = backend_value(IpAddr::V4(Ipv4Addr::new(198, 18, 3, 2)), true);
        assert_eq!(u32::from_ne_bytes([b[16], b[17], b[18], b[19]]), TB_ALIVE | TB_V4);
        assert_eq!(host_mask(8), 0xff);
        assert_eq!(host_mask(0), 0);
        assert_eq!(host_mask(32), u32::MAX);
        assert!(TunnelVerdict::DropTooBig.is_drop() && !TunnelVerdict::IcmpTooBig.is_drop());
    }
}
