//! The backend node's end of tunnel forwarding: an XDP program
//! (`bpf/decap.bpf.c`) that strips the PoP's IPIP / IP6IP6 / GUE
//! encapsulation so the node's stack sees the client's own packet to the
//! VIP (which sits on the node's loopback; replies leave directly, DSR).
//! No kernel tunnel module is needed.
//!
//! Only packets from the configured PoP source prefixes are decapsulated;
//! encapsulated packets from anywhere else are dropped and counted (else
//! anyone could hand the node packets with forged client addresses), as are
//! those whose inner destination is not a configured VIP.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::Xdp as XdpProgram;
use aya::{Ebpf, EbpfLoader};

use crate::{addr_key, chain, lpm_key, map_err, program_err, take_map, validate_ifname, Error, Mode, Prefix};

#[cfg(not(anyedge_xdp_unavailable))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.bpf.o"));

const PROGRAM: &str = "anyedge_decap";
const MAP_FROM: &str = "AE_DECAP_FROM";
const MAP_VIPS: &str = "AE_DECAP_VIPS";
const MAP_CONFIG: &str = "AE_DECAP_CONFIG";
const MAP_COUNTERS: &str = "AE_DECAP_COUNTERS";

fn object() -> Result<&'static [u8], &'static str> {
    #[cfg(not(anyedge_xdp_unavailable))]
    {
        Ok(OBJECT)
    }
    #[cfg(anyedge_xdp_unavailable)]
    {
        Err(env!("ANYEDGE_XDP_UNAVAILABLE"))
    }
}

/// What the decapsulation program did with a packet (one per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecapVerdict {
    /// Not an encapsulated packet: the stack gets it as it is.
    PassNotEncap,
    /// Decapsulated and passed to the stack.
    Decap,
    /// Encapsulated, but not from a PoP source prefix.
    DropNotFromPop,
    /// Encapsulated for an address that is not a configured VIP.
    DropNotVip,
    /// Truncated, or the inner IP version does not match the outer protocol.
    DropMalformed,
}

impl DecapVerdict {
    pub const ALL: [DecapVerdict; 5] = [
        DecapVerdict::PassNotEncap,
        DecapVerdict::Decap,
        DecapVerdict::DropNotFromPop,
        DecapVerdict::DropNotVip,
        DecapVerdict::DropMalformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecapVerdict::PassNotEncap => "pass_not_encap",
            DecapVerdict::Decap => "decap",
            DecapVerdict::DropNotFromPop => "drop_not_from_pop",
            DecapVerdict::DropNotVip => "drop_not_vip",
            DecapVerdict::DropMalformed => "drop_malformed",
        }
    }

    pub fn is_drop(self) -> bool {
        self as usize >= DecapVerdict::DropNotFromPop as usize
    }
}

/// The loaded decapsulation program and its maps. Dropping it detaches it.
pub struct Decap {
    from: LpmTrie<MapData, [u8; 16], u32>,
    vips: HashMap<MapData, [u8; 16], u32>,
    config: Array<MapData, [u8; 4]>,
    counters: PerCpuArray<MapData, u64>,
    links: Vec<(String, XdpLinkId)>,
    ebpf: Ebpf,
}

impl fmt::Debug for Decap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decap")
            .field("interfaces", &self.links.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Decap {
    /// Loads and verifies the program; it decapsulates nothing until
    /// [`Decap::set_from`] and [`Decap::set_vips`].
    pub fn load() -> Result<Decap, Error> {
        let object = object().map_err(Error::Unavailable)?;
        let mut ebpf = EbpfLoader::new().load(object).map_err(|e| Error::Load(chain(&e)))?;
        let program: &mut XdpProgram = ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)?;
        program.load().map_err(program_err)?;
        let mut d = Decap {
            from: take_map(&mut ebpf, MAP_FROM)?,
            vips: take_map(&mut ebpf, MAP_VIPS)?,
            config: take_map(&mut ebpf, MAP_CONFIG)?,
            counters: take_map(&mut ebpf, MAP_COUNTERS)?,
            links: Vec::new(),
            ebpf,
        };
        d.set_gue_port(None)?;
        Ok(d)
    }

    pub fn attach_to(&mut self, ifname: &str, mode: Mode) -> Result<(), Error> {
        validate_ifname(ifname)?;
        if self.links.iter().any(|(n, _)| n == ifname) {
            return Err(Error::AlreadyAttached(ifname.to_string()));
        }
        let program: &mut XdpProgram = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)?;
        let id = program.attach(ifname, mode.flags()).map_err(|e| Error::Attach {
            interface: ifname.to_string(),
            mode,
            message: chain(&e),
        })?;
        self.links.push((ifname.to_string(), id));
        Ok(())
    }

    /// The program's file descriptor (e.g. for `BPF_PROG_TEST_RUN`, or to
    /// pin it).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        let program: &XdpProgram = self
            .ebpf
            .program(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)?;
        Ok(program.fd().map_err(program_err)?.as_fd())
    }

    /// The PoP source prefixes encapsulated packets are accepted from
    /// (adds; the program starts with none).
    pub fn set_from(&mut self, prefixes: &[Prefix]) -> Result<(), Error> {
        for &p in prefixes {
            self.from.insert(&lpm_key(p), 1, 0).map_err(map_err(MAP_FROM))?;
        }
        Ok(())
    }

    /// The VIPs this node serves (adds).
    pub fn set_vips(&mut self, vips: &[IpAddr]) -> Result<(), Error> {
        for &v in vips {
            self.vips.insert(addr_key(v), 1, 0).map_err(map_err(MAP_VIPS))?;
        }
        Ok(())
    }

    /// The UDP port of GUE encapsulation (None: IPIP / IP6IP6 only).
    pub fn set_gue_port(&mut self, port: Option<u16>) -> Result<(), Error> {
        let mut v = [0u8; 4];
        v[..2].copy_from_slice(&port.unwrap_or(0).to_be_bytes());
        self.config.set(0, v, 0).map_err(map_err(MAP_CONFIG))
    }

    /// Packets per verdict, summed over CPUs, since load.
    pub fn counters(&self) -> Result<Vec<(DecapVerdict, u64)>, Error> {
        let mut out = Vec::with_capacity(DecapVerdict::ALL.len());
        for (i, v) in DecapVerdict::ALL.iter().enumerate() {
            let k = u32::try_from(i).unwrap_or(u32::MAX);
            let per_cpu = self.counters.get(&k, 0).map_err(map_err(MAP_COUNTERS))?;
            out.push((*v, per_cpu.iter().fold(0u64, |a, &b| a.wrapping_add(b))));
        }
        Ok(out)
    }

    /// Detaches from every interface (also done on drop).
    pub fn detach(&mut self) -> Result<(), Error> {
        let mut first = None;
        while let Some((interface, id)) = self.links.pop() {
            let program: Result<&mut XdpProgram, Error> = self
                .ebpf
                .program_mut(PROGRAM)
                .ok_or(Error::Missing(PROGRAM))
                .and_then(|p| p.try_into().map_err(program_err));
            if let Err(e) = program.and_then(|p| {
                p.detach(id).map_err(|e| Error::Detach {
                    interface,
                    message: chain(&e),
                })
            }) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
