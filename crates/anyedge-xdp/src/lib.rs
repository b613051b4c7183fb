//! The XDP fast path of the per-source admission guard: an eBPF program
//! (`bpf/guard.bpf.c`, built by `build.rs` with clang and embedded here) and
//! its loader on [aya].
//!
//! The program drops, before the network stack sees them, the packets the
//! userspace guard ([`anyedge_guard::Guard`]) would refuse anyway, with the
//! same rule semantics and in the same order:
//!
//! 1. only packets to a service destination ([`Services::destinations`]) are
//!    judged; everything else passes untouched;
//! 2. an allow-listed source passes everything (fragments too);
//! 3. a deny-listed source is dropped (any protocol, any port);
//! 4. IP fragments (IPv4 MF/offset, any IPv6 fragment header) are dropped;
//! 5. TCP SYN (without ACK) to a service TCP port and UDP to a DNS port are
//!    rate limited per source with GCRA, the aggregate first (IPv4 /24,
//!    IPv6 /64 and /48 at 4x) and then the address, exactly as
//!    [`anyedge_guard::Guard::admit`] does for new connections.
//!
//! Prefixes are [`Prefix`] values (the guard's type: IPv4 is kept as
//! IPv4-mapped IPv6, so an IPv4-mapped IPv6 source is the IPv4 source, and
//! an IPv6 prefix covering `::ffff:0:0/96` covers IPv4 too, as in the
//! guard). Build one from plain data with [`Prefix::of`]`(ip, len)` or parse
//! `"192.0.2.0/24"`. Dynamic entries (heavy-hitter blocks) carry an expiry
//! that [`Xdp::expire`] enforces: the kernel side has no clock for rules.
//!
//! Without clang at build time the crate still builds; [`Xdp::load`] and
//! [`Xdp::attach`] then return [`Error::Unavailable`] ("built without clang:
//! XDP unavailable") and the daemon stays on the userspace guard.
//!
//! Every method that changes rules takes `&mut self` (control path: keep the
//! [`Xdp`] behind a mutex); [`Xdp::counters`] takes `&self`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp as XdpProgram, XdpFlags};
use aya::{Ebpf, EbpfLoader};

pub mod decap;
mod tunnel;

pub use anyedge_guard::prefix::Prefix;
pub use anyedge_guard::{DropReason, GuardConfig, Rate};
pub use tunnel::{Encap, Proto, TunnelBackend, TunnelCounts, TunnelService, TunnelSource, TunnelVerdict, RING_SIZE};

/// The object file built from `bpf/guard.bpf.c`.
#[cfg(not(anyedge_xdp_unavailable))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard.bpf.o"));

// Names in the object (bpf/guard.bpf.c).
const PROGRAM: &str = "anyedge_guard";
const MAP_ALLOW: &str = "AE_ALLOW";
const MAP_DENY: &str = "AE_DENY";
const MAP_CONFIG: &str = "AE_CONFIG";
const MAP_PORTS: &str = "AE_PORTS";
const MAP_SERVICES: &str = "AE_SERVICES";
const MAP_RATES: &str = "AE_RATES";
const MAP_COUNTERS: &str = "AE_COUNTERS";

/// `struct config` as u64 words: flags, then `rate[class][level] = {t, tau}`.
const CONFIG_WORDS: usize = 13;
const CFG_ANY_DESTINATION: u64 = 1;
const CLASS_SYN: usize = 0;
const CLASS_DNS: usize = 1;
const LEVEL_ADDRESS: usize = 0;
const LEVEL_NET: usize = 1;
const LEVEL_WIDE: usize = 2;
/// `AE_PORTS` value bits.
const PORT_TCP_SERVICE: u32 = 1;
const PORT_UDP_DNS: u32 = 2;

/// Why the program could not be built into this binary, if it was not.
pub fn unavailable_reason() -> Option<&'static str> {
    object().err()
}

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

/// How the program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// In the driver (fastest; fails if the driver has no XDP support).
    Native,
    /// In the generic network stack, after the socket buffer is allocated
    /// (any interface; slower, but still before IP processing).
    Generic,
    /// Native where the driver supports it, generic otherwise (the kernel
    /// decides).
    #[default]
    Auto,
}

impl Mode {
    fn flags(self) -> XdpFlags {
        match self {
            Mode::Native => XdpFlags::DRV_MODE,
            Mode::Generic => XdpFlags::SKB_MODE,
            Mode::Auto => XdpFlags::default(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
            Mode::Auto => "auto",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which prefix list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// Sources that pass everything (checked first: allow beats deny).
    Allow,
    /// Sources whose packets to service destinations are dropped.
    Deny,
}

impl List {
    fn map_name(self) -> &'static str {
        match self {
            List::Allow => MAP_ALLOW,
            List::Deny => MAP_DENY,
        }
    }
}

/// Per-source rates. SYN rates apply to TCP SYN without ACK to a service
/// TCP port (the guard's new-connection rates); DNS rates to UDP datagrams
/// to a DNS port. `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Per source address (IPv4 /32, IPv6 /128).
    pub syn_per_address: Option<Rate>,
    /// Per aggregate: IPv4 /24, IPv6 /64 and /48 (the /48 gets 4x rate and
    /// burst), checked before the address like the guard's `rate_per_prefix`.
    pub syn_per_prefix: Option<Rate>,
    pub dns_per_address: Option<Rate>,
    pub dns_per_prefix: Option<Rate>,
}

impl Rates {
    /// The guard's new-connection rates as SYN rates (no DNS rates).
    pub fn from_guard(cfg: &GuardConfig) -> Rates {
        Rates {
            syn_per_address: cfg.rate_per_address,
            syn_per_prefix: cfg.rate_per_prefix,
            ..Rates::default()
        }
    }
}

/// Which packets are service traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Services {
    /// Destinations the rules apply to; packets to any other address pass.
    pub destinations: Destinations,
    /// TCP ports whose SYNs are rate limited with the SYN rates.
    pub tcp_ports: Vec<u16>,
    /// UDP ports whose datagrams are rate limited with the DNS rates.
    pub dns_ports: Vec<u16>,
}

/// Service destination addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destinations {
    /// Every destination (services listening on a wildcard address). Then
    /// the deny list applies to all IP traffic the interface receives, BGP
    /// and management included.
    Any,
    /// These addresses only (the anycast service addresses). Empty: the
    /// program judges nothing.
    Only(Vec<IpAddr>),
}

impl Default for Destinations {
    fn default() -> Self {
        Destinations::Only(Vec::new())
    }
}

/// Capacities of the kernel tables, fixed at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Allow-list prefixes.
    pub allow_capacity: u32,
    /// Deny-list prefixes (static and dynamic).
    pub deny_capacity: u32,
    /// Rate state entries (sources and aggregates); the least recently used
    /// go first when full.
    pub rate_table_capacity: u32,
    /// Tunnel services (each has a Maglev ring of [`RING_SIZE`] slots).
    pub tunnel_services: u32,
    /// Tunnel backends, over all services.
    pub tunnel_backends: u32,
    /// Tunnel connection table entries (flows kept on their node); the
    /// least recently used go first when full.
    pub tunnel_flows: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_capacity: 1 << 16,
            deny_capacity: 1 << 18,
            rate_table_capacity: 1 << 18,
            tunnel_services: 16,
            tunnel_backends: 4096,
            tunnel_flows: 1 << 20,
        }
    }
}

/// One counter of the program: every packet it sees bumps exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Service traffic that passed every check.
    Pass,
    /// From an allow-listed source.
    PassAllowlist,
    /// Not to a service destination.
    PassNotService,
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    PassNotIp,
    /// Truncated or invalid Ethernet/IP header (the stack drops it).
    PassUnparsed,
    DropDeny,
    DropFragment,
    /// Truncated TCP/UDP header or too many IPv6 extension headers.
    DropMalformed,
    DropSynRatePrefix,
    DropSynRateAddress,
    DropDnsRatePrefix,
    DropDnsRateAddress,
}

impl Counter {
    /// In the program's index order.
    pub const ALL: [Counter; 12] = [
        Counter::Pass,
        Counter::PassAllowlist,
        Counter::PassNotService,
        Counter::PassNotIp,
        Counter::PassUnparsed,
        Counter::DropDeny,
        Counter::DropFragment,
        Counter::DropMalformed,
        Counter::DropSynRatePrefix,
        Counter::DropSynRateAddress,
        Counter::DropDnsRatePrefix,
        Counter::DropDnsRateAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Pass => "pass",
            Counter::PassAllowlist => "pass_allowlist",
            Counter::PassNotService => "pass_not_service",
            Counter::PassNotIp => "pass_not_ip",
            Counter::PassUnparsed => "pass_unparsed",
            Counter::DropDeny => "drop_deny",
            Counter::DropFragment => "drop_fragment",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropSynRatePrefix => "drop_syn_rate_prefix",
            Counter::DropSynRateAddress => "drop_syn_rate_address",
            Counter::DropDnsRatePrefix => "drop_dns_rate_prefix",
            Counter::DropDnsRateAddress => "drop_dns_rate_address",
        }
    }

    pub fn is_drop(self) -> bool {
        self.index() >= Counter::DropDeny.index()
    }

    /// The userspace guard's reason for the same decision, where it has one.
    pub fn guard_reason(self) -> Option<DropReason> {
        match self {
            Counter::DropDeny => Some(DropReason::DenyList),
            Counter::DropSynRatePrefix | Counter::DropDnsRatePrefix => Some(DropReason::RatePrefix),
            Counter::DropSynRateAddress | Counter::DropDnsRateAddress => Some(DropReason::RateAddress),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Packet counts per [`Counter`], summed over CPUs, since load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters([u64; Counter::ALL.len()]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c, self.get(c)))
    }

    pub fn dropped(&self) -> u64 {
        self.iter().filter(|(c, _)| c.is_drop()).map(|(_, n)| n).sum()
    }

    pub fn passed(&self) -> u64 {
        self.iter().filter(|(c, _)| !c.is_drop()).map(|(_, n)| n).sum()
    }

    /// Counts since `earlier` (per counter, saturating).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = Counters::default();
        for (o, (a, b)) in out.0.iter_mut().zip(self.0.iter().zip(earlier.0.iter())) {
            *o = a.saturating_sub(*b);
        }
        out
    }
}

/// What a prefix-list update changed in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
}

/// Errors of the loader. Display shows the whole cause chain on one line
/// (aya keeps errno values in nested sources).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The binary carries no program (built without clang, or the program
    /// did not compile). The message says which.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("loading the XDP object: {0}")]
    Load(String),
    #[error("the XDP object has no {0:?}")]
    Missing(&'static str),
    #[error("XDP program: {0}")]
    Program(String),
    #[error("invalid interface name {0:?}")]
    InterfaceName(String),
    #[error("already attached to {0}")]
    AlreadyAttached(String),
    #[error("attaching XDP ({mode}) to {interface}: {message}")]
    Attach {
        interface: String,
        mode: Mode,
        message: String,
    },
    #[error("detaching XDP from {interface}: {message}")]
    Detach { interface: String, message: String },
    #[error("map {map}: {message}")]
    Map { map: &'static str, message: String },
}

/// `e` and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> Error {
    move |e| Error::Map {
        map,
        message: chain(&e),
    }
}

fn program_err(e: ProgramError) -> Error {
    Error::Program(chain(&e))
}

/// True when `e` is a failed syscall with `errno`.
fn is_errno(e: &MapError, errno: i32) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}
const ENOENT: i32 = 2;

/// A prefix list entry: `None` permanent, else removed by [`Xdp::expire`]
/// at that time.
type Expiry = Option<Duration>;

/// The loaded program, its maps, and the interfaces it is attached to.
/// Dropping it detaches the program from every interface.
pub struct Xdp {
    allow_map: LpmTrie<MapData, [u8; 16], u32>,
    deny_map: LpmTrie<MapData, [u8; 16], u32>,
    config_map: Array<MapData, [u64; CONFIG_WORDS]>,
    ports_map: HashMap<MapData, u16, u32>,
    services_map: HashMap<MapData, [u8; 16], u32>,
    counters_map: PerCpuArray<MapData, u64>,
    // What the kernel maps hold (updated only after the kernel accepted).
    allow: BTreeMap<Prefix, Expiry>,
    deny: BTreeMap<Prefix, Expiry>,
    config: [u64; CONFIG_WORDS],
    rates: Rates,
    ports: BTreeMap<u16, u32>,
    services: BTreeSet<[u8; 16]>,
    links: Vec<(String, XdpLinkId)>,
    tunnel: tunnel::Maps,
    /// Owns the program (and with it the links); dropped last.
    ebpf: Ebpf,
}

impl fmt::Debug for Xdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xdp")
            .field("interfaces", &self.interfaces().collect::<Vec<_>>())
            .field("allow", &self.allow.len())
            .field("deny", &self.deny.len())
            .field("ports", &self.ports)
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl Xdp {
    /// Loads the program with default [`Options`] and attaches it to
    /// `ifname`. Until [`Xdp::set_services`] it judges nothing.
    pub fn attach(ifname: &str, mode: Mode) -> Result<Xdp, Error> {
        let mut x = Xdp::load(&Options::default())?;
        x.attach_to(ifname, mode)?;
        Ok(x)
    }

    /// Loads and verifies the program and creates its maps, without
    /// attaching it anywhere (see [`Xdp::attach_to`], [`Xdp::program_fd`]).
    pub fn load(options: &Options) -> Result<Xdp, Error> {
        let object = object().map_err(Error::Unavailable)?;
        // 256 services x 65537 slots x 4 bytes = 64 MiB of ring at most
        let tunnel_services = options.tunnel_services.clamp(1, 256);
        let tunnel_backends = options.tunnel_backends.clamp(1, 1 << 20);
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(MAP_ALLOW, options.allow_capacity.max(1))
            .set_max_entries(MAP_DENY, options.deny_capacity.max(1))
            .set_max_entries(MAP_RATES, options.rate_table_capacity.max(1))
            .set_max_entries(tunnel::MAP_RING, tunnel_services.saturating_mul(RING_SIZE))
            .set_max_entries(
                tunnel::MAP_COUNTERS,
                tunnel_services.saturating_mul(TunnelVerdict::ALL.len() as u32),
            )
            .set_max_entries(tunnel::MAP_BACKENDS, tunnel_backends)
            .set_max_entries(tunnel::MAP_BACKEND_COUNTERS, tunnel_backends)
            .set_max_entries(tunnel::MAP_CONNS, options.tunnel_flows.max(1))
            .load(object)
            .map_err(|e| Error::Load(chain(&e)))?;
        let program: &mut XdpProgram = ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)?;
        program.load().map_err(program_err)?;
        let tunnel = tunnel::Maps::new(&mut ebpf, tunnel_services, tunnel_backends)?;
        let mut x = Xdp {
            allow_map: take_map(&mut ebpf, MAP_ALLOW)?,
            deny_map: take_map(&mut ebpf, MAP_DENY)?,
            config_map: take_map(&mut ebpf, MAP_CONFIG)?,
            ports_map: take_map(&mut ebpf, MAP_PORTS)?,
            services_map: take_map(&mut ebpf, MAP_SERVICES)?,
            counters_map: take_map(&mut ebpf, MAP_COUNTERS)?,
            allow: BTreeMap::new(),
            deny: BTreeMap::new(),
            config: [0; CONFIG_WORDS],
            rates: Rates::default(),
            ports: BTreeMap::new(),
            services: BTreeSet::new(),
            links: Vec::new(),
            tunnel,
            ebpf,
        };
        x.write_config()?;
        Ok(x)
    }

    /// Attaches the loaded program to `ifname` (one program, shared maps:
    /// it can be attached to several interfaces).
    pub fn attach_to(&mut self, ifname: &str, mode: Mode) -> Result<(), Error> {
        validate_ifname(ifname)?;
        if self.links.iter().any(|(n, _)| n == ifname) {
            return Err(Error::AlreadyAttached(ifname.to_string()));
        }
        let id = self
            .program_mut()?
            .attach(ifname, mode.flags())
            .map_err(|e| Error::Attach {
                interface: ifname.to_string(),
                mode,
                message: chain(&e),
            })?;
        self.links.push((ifname.to_string(), id));
        Ok(())
    }

    /// Detaches from `ifname`; false if it was not attached there.
    pub fn detach_from(&mut self, ifname: &str) -> Result<bool, Error> {
        let Some(i) = self.links.iter().position(|(n, _)| n == ifname) else {
            return Ok(false);
        };
        let (interface, id) = self.links.remove(i);
        self.program_mut()?.detach(id).map_err(|e| Error::Detach {
            interface,
            message: chain(&e),
        })?;
        Ok(true)
    }

    /// Detaches from every interface (also done on drop). Returns the
    /// first error after trying all.
    pub fn detach(&mut self) -> Result<(), Error> {
        let mut first = None;
        while let Some((ifname, _)) = self.links.first() {
            let ifname = ifname.clone();
            if let Err(e) = self.detach_from(&ifname) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> + '_ {
        self.links.iter().map(|(n, _)| n.as_str())
    }

    /// The program's file descriptor (e.g. for `BPF_PROG_TEST_RUN`).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        let program: &XdpProgram = self
            .ebpf
            .program(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)?;
        Ok(program.fd().map_err(program_err)?.as_fd())
    }

    fn program_mut(&mut self) -> Result<&mut XdpProgram, Error> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()
            .map_err(program_err)
    }

    fn list(&mut self, list: List) -> (&mut LpmTrie<MapData, [u8; 16], u32>, &mut BTreeMap<Prefix, Expiry>) {
        match list {
            List::Allow => (&mut self.allow_map, &mut self.allow),
            List::Deny => (&mut self.deny_map, &mut self.deny),
        }
    }

    /// Adds `p` to `list`, permanently (`expires: None`) or until
    /// [`Xdp::expire`] is called with a `now` at or past `expires` (time
    /// since a fixed origin of the caller's choosing, like the guard's).
    /// A permanent entry stays permanent; an expiring one is refreshed.
    /// Returns true if `p` was not in the list.
    pub fn insert_prefix(&mut self, list: List, p: Prefix, expires: Option<Duration>) -> Result<bool, Error> {
        let name = list.map_name();
        let (map, set) = self.list(list);
        match set.get_mut(&p) {
            Some(None) => Ok(false),
            Some(e) => {
                *e = expires;
                Ok(false)
            }
            None => {
                map.insert(&lpm_key(p), 1, 0).map_err(map_err(name))?;
                set.insert(p, expires);
                Ok(true)
            }
        }
    }

    /// Removes `p` from `list` (permanent or not); false if it was absent.
    pub fn remove_prefix(&mut self, list: List, p: Prefix) -> Result<bool, Error> {
        let name = list.map_name();
        let (map, set) = self.list(list);
        if !set.contains_key(&p) {
            return Ok(false);
        }
        match map.remove(&lpm_key(p)) {
            Ok(()) => {}
            Err(e) if is_errno(&e, ENOENT) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
        set.remove(&p);
        Ok(true)
    }

    /// Makes the permanent entries of `list` exactly `prefixes` (e.g. the
    /// configured list after a reload); expiring entries not named stay.
    /// New entries go in before stale ones go out, so the list is never
    /// transiently empty. On error the kernel and [`Xdp::prefixes`] still
    /// agree (with part of the change applied).
    pub fn replace_prefixes(
        &mut self,
        list: List,
        prefixes: impl IntoIterator<Item = Prefix>,
    ) -> Result<Changes, Error> {
        let want: BTreeSet<Prefix> = prefixes.into_iter().collect();
        let mut changes = Changes::default();
        for &p in &want {
            if self.insert_prefix(list, p, None)? {
                changes.added += 1;
            }
        }
        let (_, set) = self.list(list);
        let stale: Vec<Prefix> = set
            .iter()
            .filter(|(p, e)| e.is_none() && !want.contains(p))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if self.remove_prefix(list, p)? {
                changes.removed += 1;
            }
        }
        Ok(changes)
    }

    /// Removes the entries whose expiry is at or before `now`; returns how
    /// many.
    pub fn expire(&mut self, now: Duration) -> Result<usize, Error> {
        let mut n = 0;
        for list in [List::Allow, List::Deny] {
            let (_, set) = self.list(list);
            let due: Vec<Prefix> = set
                .iter()
                .filter(|(_, e)| e.is_some_and(|t| t <= now))
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                if self.remove_prefix(list, p)? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The entries of `list` with their expiry (`None`: permanent).
    pub fn prefixes(&self, list: List) -> impl Iterator<Item = (Prefix, Option<Duration>)> + '_ {
        match list {
            List::Allow => &self.allow,
            List::Deny => &self.deny,
        }
        .iter()
        .map(|(p, e)| (*p, *e))
    }

    /// Sets allow and deny lists (permanent entries) and the SYN rates
    /// from the guard's configuration, leaving expiring entries, DNS rates
    /// and services as they are.
    pub fn apply_guard_config(&mut self, cfg: &GuardConfig) -> Result<(), Error> {
        self.replace_prefixes(List::Allow, cfg.allow.iter().copied())?;
        self.replace_prefixes(List::Deny, cfg.deny.iter().copied())?;
        let rates = Rates {
            dns_per_address: self.rates.dns_per_address,
            dns_per_prefix: self.rates.dns_per_prefix,
            ..Rates::from_guard(cfg)
        };
        self.set_rates(&rates)
    }

    /// Sets the rates (rate state is kept: a source's debt carries over).
    pub fn set_rates(&mut self, rates: &Rates) -> Result<(), Error> {
        let mut cfg = self.config;
        encode_rates(&mut cfg, CLASS_SYN, rates.syn_per_address, rates.syn_per_prefix);
        encode_rates(&mut cfg, CLASS_DNS, rates.dns_per_address, rates.dns_per_prefix);
        let old = std::mem::replace(&mut self.config, cfg);
        if let Err(e) = self.write_config() {
            self.config = old;
            return Err(e);
        }
        self.rates = *rates;
        Ok(())
    }

    /// The rates last set.
    pub fn rates(&self) -> Rates {
        self.rates
    }

    /// Sets the service destinations and ports.
    pub fn set_services(&mut self, services: &Services) -> Result<(), Error> {
        // ports
        let mut want_ports: BTreeMap<u16, u32> = BTreeMap::new();
        for &p in &services.tcp_ports {
            *want_ports.entry(p).or_default() |= PORT_TCP_SERVICE;
        }
        for &p in &services.dns_ports {
            *want_ports.entry(p).or_default() |= PORT_UDP_DNS;
        }
        for (&port, &flags) in &want_ports {
            if self.ports.get(&port) != Some(&flags) {
                self.ports_map.insert(port, flags, 0).map_err(map_err(MAP_PORTS))?;
                self.ports.insert(port, flags);
            }
        }
        let stale: Vec<u16> = self
            .ports
            .keys()
            .filter(|p| !want_ports.contains_key(p))
            .copied()
            .collect();
        for port in stale {
            match self.ports_map.remove(&port) {
                Ok(()) => {}
                Err(e) if is_errno(&e, ENOENT) => {}
                Err(e) => return Err(map_err(MAP_PORTS)(e)),
            }
            self.ports.remove(&port);
        }
        // destinations
        let (any, addrs) = match &services.destinations {
            Destinations::Any => (true, BTreeSet::new()),
            Destinations::Only(a) => (false, a.iter().map(|&ip| addr_key(ip)).collect()),
        };
        for &a in &addrs {
            if !self.services.contains(&a) {
                self.services_map.insert(a, 1, 0).map_err(map_err(MAP_SERVICES))?;
                self.services.insert(a);
            }
        }
        let mut cfg = self.config;
        cfg[0] = if any {
            cfg[0] | CFG_ANY_DESTINATION
        } else {
            cfg[0] & !CFG_ANY_DESTINATION
        };
        if cfg != self.config {
            let old = std::mem::replace(&mut self.config, cfg);
            if let Err(e) = self.write_config() {
                self.config = old;
                return Err(e);
            }
        }
        let stale: Vec<[u8; 16]> = self.services.difference(&addrs).copied().collect();
        for a in stale {
            match self.services_map.remove(&a) {
                Ok(()) => {}
                Err(e) if is_errno(&e, ENOENT) => {}
                Err(e) => return Err(map_err(MAP_SERVICES)(e)),
            }
            self.services.remove(&a);
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let mut out = Counters::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let per_cpu = self.counters_map.get(&index, 0).map_err(map_err(MAP_COUNTERS))?;
            *slot = per_cpu.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        }
        Ok(out)
    }

    fn write_config(&mut self) -> Result<(), Error> {
        self.config_map.set(0, self.config, 0).map_err(map_err(MAP_CONFIG))
    }
}

impl Drop for Xdp {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// Linux interface names: 1 to 15 bytes, no NUL, `/` or whitespace.
fn validate_ifname(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(Error::InterfaceName(name.to_string()))
    }
}

/// The address in the program's 128-bit space (IPv4 as IPv4-mapped IPv6).
fn addr_key(ip: IpAddr) -> [u8; 16] {
    let (bits, _) = Prefix::host(ip).key();
    bits.to_be_bytes()
}

fn lpm_key(p: Prefix) -> Key<[u8; 16]> {
    let (bits, len) = p.key();
    Key::new(u32::from(len), bits.to_be_bytes())
}

/// `{t, tau}` in ns exactly as `anyedge_guard::gcra::Gcra::new` computes
/// them for `rate` scaled by `scale`; `{0, 0}` (no check) for `None` and
/// for rates above 1e9/s, where the guard's interval is 0 and everything
/// conforms.
fn gcra_params(rate: Option<Rate>, scale: u32) -> (u64, u64) {
    let Some(r) = rate else { return (0, 0) };
    let per_second = r.per_second.saturating_mul(scale);
    let burst = r.burst.saturating_mul(scale);
    let t = if per_second == 0 {
        u64::MAX
    } else {
        1_000_000_000 / u64::from(per_second)
    };
    (t, t.saturating_mul(u64::from(burst.max(1) - 1)))
}

fn encode_rates(cfg: &mut [u64; CONFIG_WORDS], class: usize, per_address: Option<Rate>, per_prefix: Option<Rate>) {
    for (level, (t, tau)) in [
        (LEVEL_ADDRESS, gcra_params(per_address, 1)),
        (LEVEL_NET, gcra_params(per_prefix, 1)),
        (LEVEL_WIDE, gcra_params(per_prefix, 4)),
    ] {
        let i = 1 + (class * 3 + level) * 2;
        cfg[i] = t;
        cfg[i + 1] = tau;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_guard::gcra::Gcra;

    /// `gcra_check` of bpf/guard.bpf.c, line by line.
    fn program_gcra(t: u64, tau: u64, tat: &mut u64, now: u64) -> bool {
        if t == 0 {
            return true;
        }
        let t0 = (*tat).max(now);
        if t0 - now > tau {
            return false;
        }
        *tat = t0.saturating_add(t);
        true
    }

    #[test]
    fn gcra_parameters_reproduce_the_guard() {
        let rates = [
            (1, 1),
            (1, 3),
            (10, 5),
            (100, 1),
            (1000, 1000),
            (7, 0),
            (0, 1),
            (0, 3),
            (999_999_999, 2),
            (1_000_000_000, 2),
            (u32::MAX, 10),
            (u32::MAX / 3, u32::MAX / 2),
        ];
        for (per_second, burst) in rates {
            for scale in [1, 4] {
                let (t, tau) = gcra_params(Some(Rate { per_second, burst }), scale);
                let g = Gcra::new(per_second.saturating_mul(scale), burst.saturating_mul(scale));
                let (mut a, mut b) = (0u64, 0u64);
                // bursts, gaps, exact interval boundaries, a clock near the top
                let mut now = 1_000_000_000u64;
                for i in 0..2000u64 {
                    now += match i % 7 {
                        0 => 0,
                        1 => 1,
                        2 => t.min(10_000_000_000),
                        3 => 333_333,
                        4 => 0,
                        5 => 50_000_000,
                        _ => 7,
                    };
                    let want = g.check(&mut a, now);
                    assert_eq!(
                        program_gcra(t, tau, &mut b, now),
                        want,
                        "{per_second}/s burst {burst} x{scale} at {i}"
                    );
                }
                let top = u64::MAX - 10;
                assert_eq!(program_gcra(t, tau, &mut b, top), g.check(&mut a, top));
            }
        }
        assert_eq!(gcra_params(None, 1), (0, 0));
        assert_eq!(gcra_params(None, 4), (0, 0));
    }

    #[test]
    fn config_layout() {
        let mut cfg = [0u64; CONFIG_WORDS];
        let r = |per_second, burst| Some(Rate { per_second, burst });
        encode_rates(&mut cfg, CLASS_SYN, r(10, 1), r(1, 2));
        encode_rates(&mut cfg, CLASS_DNS, None, r(1000, 10));
        assert_eq!(cfg[0], 0, "flags untouched");
        // SYN: address, net, wide (4x)
        assert_eq!(
            &cfg[1..7],
            &[100_000_000, 0, 1_000_000_000, 1_000_000_000, 250_000_000, 1_750_000_000]
        );
        // DNS: no address limit
        assert_eq!(&cfg[7..13], &[0, 0, 1_000_000, 9_000_000, 250_000, 9_750_000]);
    }

    #[test]
    fn addresses_live_in_one_128_bit_space() {
        let v4 = addr_key("198.18.0.1".parse().unwrap());
        assert_eq!(v4, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(addr_key("::ffff:198.18.0.1".parse().unwrap()), v4);
        let v6 = addr_key("2001:db8::1".parse().unwrap());
        assert_eq!(v6[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(v6[15], 1);

        let k = lpm_key("198.18.0.0/15".parse().unwrap());
        assert_eq!(k.prefix_len(), 96 + 15);
        assert_eq!(k.data(), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 0]);
        let k = lpm_key("2001:db8:66::/48".parse().unwrap());
        assert_eq!(k.prefix_len(), 48);
        assert_eq!(k.data()[..6], [0x20, 0x01, 0x0d, 0xb8, 0, 0x66]);
        let k = lpm_key(Prefix::of("0.0.0.0".parse().unwrap(), 0));
        assert_eq!(k.prefix_len(), 96, "IPv4 /0 is ::ffff:0:0/96");
        let k = lpm_key("::/0".parse().unwrap());
        assert_eq!(k.prefix_len(), 0);
        assert_eq!(std::mem::size_of::<Key<[u8; 16]>>(), 20, "struct lpm_key");
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "xr0", "enp3s0f1", "a", "veth-1.100", "abcdefghijklmno"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "eth0:1", "nul\0", "abcdefghijklmnop"] {
            assert!(matches!(validate_ifname(bad), Err(Error::InterfaceName(_))), "{bad:?}");
        }
    }

    #[test]
    fn counters_order_names_and_reasons() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let names: BTreeSet<&str> = Counter::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        let drops: Vec<Counter> = Counter::ALL.iter().copied().filter(|c| c.is_drop()).collect();
        assert!(drops.iter().all(|c| c.as_str().starts_with("drop_")));
        assert_eq!(drops.len(), 7);
        assert_eq!(Counter::DropDeny.guard_reason(), Some(DropReason::DenyList));
        assert_eq!(Counter::DropDnsRatePrefix.guard_reason(), Some(DropReason::RatePrefix));
        assert_eq!(
            Counter::DropSynRateAddress.guard_reason(),
            Some(DropReason::RateAddress)
        );
        assert_eq!(Counter::DropFragment.guard_reason(), None);
        assert_eq!(Counter::Pass.guard_reason(), None);

        let mut a = Counters::default();
        let mut b = Counters::default();
        a.0[Counter::Pass.index()] = 10;
        a.0[Counter::DropDeny.index()] = 4;
        b.0[Counter::Pass.index()] = 3;
        b.0[Counter::DropDeny.index()] = 9; // e.g. after a reload
        let d = a.since(&b);
        assert_eq!((d.get(Counter::Pass), d.get(Counter::DropDeny)), (7, 0));
        assert_eq!((a.passed(), a.dropped()), (10, 4));
        assert_eq!(a.iter().count(), Counter::ALL.len());
    }

    #[test]
    fn modes_and_rates_from_the_guard() {
        assert_eq!(Mode::Native.flags().bits(), XdpFlags::DRV_MODE.bits());
        assert_eq!(Mode::Generic.flags().bits(), XdpFlags::SKB_MODE.bits());
        assert_eq!(Mode::Auto.flags().bits(), 0);
        assert_eq!(Mode::default(), Mode::Auto);
        assert_eq!(Mode::Generic.to_string(), "generic");

        let r = Rate {
            per_second: 20,
            burst: 40,
        };
        let cfg = GuardConfig {
            rate_per_address: Some(r),
            ..GuardConfig::default()
        };
        let rates = Rates::from_guard(&cfg);
        assert_eq!(rates.syn_per_address, Some(r));
        assert_eq!(
            (rates.syn_per_prefix, rates.dns_per_address, rates.dns_per_prefix),
            (None, None, None)
        );
        assert_eq!(Destinations::default(), Destinations::Only(Vec::new()));
    }

    #[test]
    fn errors_carry_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("`bpf_link_create` failed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::from_raw_os_error(16));
        let s = chain(&e);
        assert!(s.starts_with("`bpf_link_create` failed: "), "{s}");
        assert!(s.contains("os error 16"), "{s}");
        let e = Error::Attach {
            interface: "eth0".into(),
            mode: Mode::Native,
            message: s,
        };
        assert!(e
            .to_string()
            .starts_with("attaching XDP (native) to eth0: `bpf_link_create` failed"));
    }

    #[cfg(not(anyedge_xdp_unavailable))]
    #[test]
    fn the_program_is_embedded() {
        assert_eq!(unavailable_reason(), None);
        let obj = object().unwrap_or_default();
        assert_eq!(&obj[..4], b"\x7fELF");
    }

    #[cfg(anyedge_xdp_unavailable)]
    #[test]
    fn without_the_program_loading_says_why() {
        let reason = unavailable_reason().unwrap_or_default();
        assert!(reason.ends_with("XDP unavailable"), "{reason}");
        match Xdp::load(&Options::default()) {
            Err(Error::Unavailable(r)) => assert_eq!(r, reason),
            other => panic!("{other:?}"),
        }
        let e = Xdp::attach("lo", Mode::Generic).unwrap_err();
        assert_eq!(e.to_string(), reason);
    }
}
