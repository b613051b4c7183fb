//! The `[bgp]` section (the speaker and its peers) and the `[[anycast]]`
//! prefixes it announces.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::value::{not_example_secret, valid_name};
use super::{ConfigError, Ctx, ServiceConfig};

/// BGP speaker settings (announce-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub asn: u32,
    pub router_id: std::net::Ipv4Addr,
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Draining (admin, maintenance file, SIGTERM) lasts until open
    /// connections are at most `drain_until_connections`, or this long.
    pub drain_timeout: Duration,
    pub drain_until_connections: u64,
    /// While this file exists the PoP drains (maintenance).
    pub maintenance_file: Option<std::path::PathBuf>,
    /// Half-life of the flap-damping penalty.
    pub flap_half_life: Duration,
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub asn: u32,
    pub local_address: Option<std::net::IpAddr>,
    pub next_hop: Option<std::net::Ipv4Addr>,
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// GTSM (RFC 5082): TTL 255 out, >= 254 in.
    pub ttl_security: bool,
    /// BFD (RFC 5880/5881 single hop): (interval, multiplier).
    pub bfd: Option<(Duration, u8)>,
}

/// One anycast prefix and what must be healthy for this PoP to announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastConfig {
    pub prefix: (std::net::IpAddr, u8),
    /// L4 services that must each have at least `min_healthy_backends`
    /// healthy, undrained backends.
    pub services: Vec<String>,
    pub min_healthy_backends: u32,
    pub communities: Vec<u32>,
    pub med: Option<u32>,
    /// While draining: extra prepends and communities (65535:0,
    /// GRACEFUL_SHUTDOWN, RFC 8326, is always added).
    pub drain_prepend: u8,
    pub drain_communities: Vec<u32>,
    /// Also requires the DNS server to serve every configured zone (an
    /// anycast name-server address).
    pub dns: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    asn: Spanned<u32>,
    router_id: Spanned<String>,
    #[serde(default = "d_hold")]
    hold_time: Spanned<u16>,
    #[serde(default = "d_retry", with = "humantime_spanned")]
    connect_retry: Spanned<Duration>,
    #[serde(default = "d_drain_timeout", with = "humantime_spanned")]
    drain_timeout: Spanned<Duration>,
    #[serde(default)]
    drain_until_connections: u64,
    #[serde(default)]
    maintenance_file: Option<String>,
    #[serde(default = "d_half_life", with = "humantime_spanned")]
    flap_half_life: Spanned<Duration>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
}

impl RawBgp {
    /// Where each peer's name is written, in order.
    pub(super) fn peer_spans(&self) -> Vec<std::ops::Range<usize>> {
        self.peers.iter().map(|p| p.name.span()).collect()
    }
}
fn d_hold() -> Spanned<u16> {
    Spanned::new(0..0, 90)
}
fn d_half_life() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(60))
}
fn d_drain_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(30))
}
fn d_retry() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(5))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    port: Option<u16>,
    asn: Spanned<u32>,
    #[serde(default)]
    local_address: Option<Spanned<String>>,
    #[serde(default)]
    next_hop: Option<Spanned<String>>,
    #[serde(default)]
    next_hop_v6: Option<Spanned<String>>,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    ttl_security: bool,
    #[serde(default)]
    bfd: bool,
    #[serde(default = "d_bfd_interval", with = "humantime_spanned")]
    bfd_interval: Spanned<Duration>,
    #[serde(default = "d_bfd_mult")]
    bfd_multiplier: Spanned<u8>,
}
fn d_bfd_interval() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(300))
}
fn d_bfd_mult() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnycast {
    pub(super) prefix: Spanned<String>,
    #[serde(default)]
    services: Vec<Spanned<String>>,
    #[serde(default = "d_min_healthy")]
    min_healthy_backends: u32,
    #[serde(default)]
    communities: Vec<Spanned<String>>,
    #[serde(default)]
    med: Option<u32>,
    #[serde(default)]
    drain_prepend: Option<Spanned<u8>>,
    #[serde(default)]
    drain_communities: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) dns: Option<Spanned<bool>>,
}
fn d_min_healthy() -> u32 {
    1
}

fn community(cx: &Ctx<'_>, c: &Spanned<String>, field: &str) -> Result<u32, ConfigError> {
    let bad = || {
        cx.err(
            c.span(),
            field,
            format!("{:?} is not a community ASN:VALUE (16-bit each)", c.get_ref()),
        )
    };
    let (a, v) = c.get_ref().split_once(':').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let v: u16 = v.trim().parse().map_err(|_| bad())?;
    Ok((u32::from(a) << 16) | u32::from(v))
}

pub(super) fn parse_bgp(cx: &Ctx<'_>, b: RawBgp) -> Result<BgpConfig, ConfigError> {
    if *b.asn.get_ref() == 0 || *b.asn.get_ref() == 23456 {
        return Err(cx.err(b.asn.span(), "bgp.asn", "must be a valid ASN (not 0 or AS_TRANS 23456)"));
    }
    let router_id: std::net::Ipv4Addr = b
        .router_id
        .get_ref()
        .parse()
        .ok()
        .filter(|r: &std::net::Ipv4Addr| !r.is_unspecified())
        .ok_or_else(|| cx.err(b.router_id.span(), "bgp.router_id", "must be a non-zero IPv4 address"))?;
    let hold = *b.hold_time.get_ref();
    if hold != 0 && hold < 3 {
        return Err(cx.err(b.hold_time.span(), "bgp.hold_time", "must be 0 or at least 3 seconds"));
    }
    let connect_retry = duration_in(
        cx,
        &b.connect_retry,
        "bgp.connect_retry",
        Duration::from_millis(100),
        range::HOUR,
    )?;
    let drain_timeout = duration_in(cx, &b.drain_timeout, "bgp.drain_timeout", Duration::ZERO, range::DAY)?;
    let flap_half_life = duration_in(
        cx,
        &b.flap_half_life,
        "bgp.flap_half_life",
        Duration::from_secs(1),
        range::DAY,
    )?;
    let mut peers: Vec<PeerConfig> = Vec::new();
    for (i, p) in b.peers.into_iter().enumerate() {
        let f = |n: &str| format!("bgp.peer[{i}].{n}");
        if !valid_name(p.name.get_ref()) || peers.iter().any(|x| &x.name == p.name.get_ref()) {
            return Err(cx.err(p.name.span(), f("name"), "must be a unique name of [A-Za-z0-9._-]"));
        }
        let ip: std::net::IpAddr = p
            .address
            .get_ref()
            .parse()
            .map_err(|_| cx.err(p.address.span(), f("address"), "must be an IP address"))?;
        let parse_ip = |v: &Option<Spanned<String>>, n: &str| -> Result<Option<std::net::IpAddr>, ConfigError> {
            v.as_ref()
                .map(|s| {
                    s.get_ref()
                        .parse()
                        .map_err(|_| cx.err(s.span(), f(n), "must be an IP address"))
                })
                .transpose()
        };
        let local_address = parse_ip(&p.local_address, "local_address")?;
        let next_hop = match parse_ip(&p.next_hop, "next_hop")? {
            None => None,
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(_) => {
                let at = p.next_hop.as_ref().map_or(0..0, Spanned::span);
                return Err(cx.err(at, f("next_hop"), "must be IPv4 (use next_hop_v6 for IPv6)"));
            }
        };
        let next_hop_v6 = match parse_ip(&p.next_hop_v6, "next_hop_v6")? {
            None => None,
            Some(std::net::IpAddr::V6(a)) => Some(a),
            Some(_) => {
                let at = p.next_hop_v6.as_ref().map_or(0..0, Spanned::span);
                return Err(cx.err(at, f("next_hop_v6"), "must be IPv6"));
            }
        };
        if let Some(pw) = &p.password {
            if pw.get_ref().is_empty() || pw.get_ref().len() > 80 {
                return Err(cx.err(pw.span(), f("password"), "TCP MD5 keys are 1-80 bytes"));
            }
            not_example_secret(cx, pw.span(), f("password"), pw.get_ref(), "openssl rand -hex 32")?;
        }
        // checked even with BFD off: it is still a typo
        duration_in(
            cx,
            &p.bfd_interval,
            f("bfd_interval"),
            Duration::from_millis(10),
            Duration::from_secs(10),
        )?;
        if p.bfd {
            if *p.bfd_multiplier.get_ref() == 0 {
                return Err(cx.err(p.bfd_multiplier.span(), f("bfd_multiplier"), "must be at least 1"));
            }
            if local_address.is_none() {
                return Err(cx.err(
                    p.name.span(),
                    f("bfd"),
                    "BFD needs local_address (the BFD packets' source)",
                ));
            }
        }
        peers.push(PeerConfig {
            bfd: p.bfd.then(|| (*p.bfd_interval.get_ref(), *p.bfd_multiplier.get_ref())),
            password: p.password.map(Spanned::into_inner),
            ttl_security: p.ttl_security,
            name: p.name.into_inner(),
            address: SocketAddr::new(ip, p.port.unwrap_or(179)),
            asn: p.asn.into_inner(),
            local_address,
            next_hop,
            next_hop_v6,
        });
    }
    Ok(BgpConfig {
        asn: b.asn.into_inner(),
        router_id,
        hold_time: hold,
        connect_retry,
        drain_timeout,
        drain_until_connections: b.drain_until_connections,
        maintenance_file: b.maintenance_file.map(std::path::PathBuf::from),
        flap_half_life,
        peers,
    })
}

pub(super) fn parse_anycast(
    cx: &Ctx<'_>,
    i: usize,
    a: RawAnycast,
    services: &[ServiceConfig],
) -> Result<AnycastConfig, ConfigError> {
    let f = |n: &str| format!("anycast[{i}].{n}");
    let net: IpNet = a.prefix.get_ref().parse().map_err(|_| {
        cx.err(
            a.prefix.span(),
            f("prefix"),
            format!("{:?} is not a CIDR prefix", a.prefix.get_ref()),
        )
    })?;
    if net.trunc() != net {
        return Err(cx.err(
            a.prefix.span(),
            f("prefix"),
            format!("host bits set; did you mean {}?", net.trunc()),
        ));
    }
    let mut svcs = Vec::new();
    for s in &a.services {
        if !services.iter().any(|x| &x.name == s.get_ref()) {
            return Err(cx.err(s.span(), f("services"), format!("no service named {:?}", s.get_ref())));
        }
        svcs.push(s.get_ref().clone());
    }
    let communities = a
        .communities
        .iter()
        .map(|c| community(cx, c, &f("communities")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut drain_communities = a
        .drain_communities
        .iter()
        .map(|c| community(cx, c, &f("drain_communities")))
        .collect::<Result<Vec<_>, _>>()?;
    const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;
    if !drain_communities.contains(&GRACEFUL_SHUTDOWN) {
        drain_communities.push(GRACEFUL_SHUTDOWN);
    }
    let drain_prepend = a.drain_prepend.map_or(Ok(2), |p| {
        if *p.get_ref() > 16 {
            Err(cx.err(p.span(), f("drain_prepend"), "at most 16"))
        } else {
            Ok(p.into_inner())
        }
    })?;
    Ok(AnycastConfig {
        prefix: (net.addr(), net.prefix_len()),
        services: svcs,
        min_healthy_backends: a.min_healthy_backends,
        communities,
        med: a.med,
        drain_prepend,
        drain_communities,
        dns: a.dns.as_ref().is_some_and(|d| *d.get_ref()),
    })
}
