//! A service's forwarding mode (`forwarding`, `encap`, `gue_port`,
//! `underlay_mtu` in `[[service]]`) and the tunnel's outer source prefixes
//! (`tunnel_source_v4`/`_v6` in `[xdp]`).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use toml::Spanned;

use super::value::int_in;
use super::{ConfigError, Ctx};

/// How a service's connections reach its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Terminated here and proxied (PROXY protocol header to the backend).
    Proxy,
    /// Forwarded in the kernel (XDP), encapsulated to the backend node,
    /// which decapsulates and answers the client directly.
    Tunnel(TunnelOptions),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelOptions {
    pub encap: TunnelEncap,
    /// The largest outer IP packet the path to the nodes carries.
    pub underlay_mtu: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEncap {
    /// IPv4-in-IPv4 / IPv6-in-IPv6 (IP protocols 4 and 41).
    Ipip,
    /// GUE (direct IP in UDP) to this port, for networks dropping 4/41.
    Gue { port: u16 },
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawForwarding {
    #[default]
    Proxy,
    Tunnel,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawEncap {
    #[default]
    Ipip,
    Gue,
}

pub(super) const DEFAULT_GUE_PORT: u16 = 6080;
pub(super) const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// The raw fields, parsed together (they only mean something together).
pub(super) fn parse_forwarding(
    cx: &Ctx<'_>,
    sp: &str,
    forwarding: RawForwarding,
    encap: Option<Spanned<RawEncap>>,
    gue_port: Option<Spanned<u32>>,
    underlay_mtu: Option<Spanned<u32>>,
) -> Result<Forwarding, ConfigError> {
    if forwarding == RawForwarding::Proxy {
        for (span, field) in [
            (encap.as_ref().map(|e| e.span()), "encap"),
            (gue_port.as_ref().map(|e| e.span()), "gue_port"),
            (underlay_mtu.as_ref().map(|e| e.span()), "underlay_mtu"),
        ] {
            if let Some(span) = span {
                return Err(cx.err(span, format!("{sp}.{field}"), "only for forwarding = \"tunnel\""));
            }
        }
        return Ok(Forwarding::Proxy);
    }
    let encap = match encap.map(Spanned::into_inner).unwrap_or_default() {
        RawEncap::Ipip => {
            if let Some(p) = &gue_port {
                return Err(cx.err(p.span(), format!("{sp}.gue_port"), "only for encap = \"gue\""));
            }
            TunnelEncap::Ipip
        }
        RawEncap::Gue => TunnelEncap::Gue {
            port: match &gue_port {
                Some(p) => int_in(cx, p, format!("{sp}.gue_port"), 1, 65535)?,
                None => DEFAULT_GUE_PORT,
            },
        },
    };
    let underlay_mtu = match &underlay_mtu {
        // IPv6's minimum link MTU up to jumbo frames
        Some(m) => int_in(cx, m, format!("{sp}.underlay_mtu"), 1280, 9216)?,
        None => u16::try_from(DEFAULT_UNDERLAY_MTU).unwrap_or(1500),
    };
    Ok(Forwarding::Tunnel(TunnelOptions { encap, underlay_mtu }))
}

/// `"198.18.9.0/24"`: (network, prefix length).
pub(super) fn parse_source4(cx: &Ctx<'_>, v: &Spanned<String>, field: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    match v.get_ref().parse::<ipnet::Ipv4Net>() {
        Ok(n) => Ok((n.network(), n.prefix_len())),
        Err(_) => Err(cx.err(v.span(), field, format!("{:?} is not an IPv4 prefix", v.get_ref()))),
    }
}

pub(super) fn parse_source6(cx: &Ctx<'_>, v: &Spanned<String>, field: &str) -> Result<(Ipv6Addr, u8), ConfigError> {
    match v.get_ref().parse::<ipnet::Ipv6Net>() {
        // the flow hash goes into at most the last 32 bits
        Ok(n) => Ok((n.network(), n.prefix_len())),
        Err(_) => Err(cx.err(v.span(), field, format!("{:?} is not an IPv6 prefix", v.get_ref()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn svc(extra: &str) -> String {
        format!(
            "[pop]\nname = \"p\"\n[[service]]\nname = \"v\"\nlisten = [\"192.0.2.20:443\"]\n{extra}\n\
             [[service.backend]]\nname = \"n\"\naddress = \"198.51.100.1:443\"\n"
        )
    }

    #[test]
    fn forwarding_parses_and_checks() {
        let c = Config::parse(&svc(""), "t.toml").unwrap();
        assert_eq!(c.services[0].forwarding, Forwarding::Proxy);
        let c = Config::parse(&svc("forwarding = \"tunnel\""), "t.toml").unwrap();
        assert_eq!(
            c.services[0].forwarding,
            Forwarding::Tunnel(TunnelOptions {
                encap: TunnelEncap::Ipip,
                underlay_mtu: 1500
            })
        );
        let c = Config::parse(
            &svc("forwarding = \"tunnel\"\nencap = \"gue\"\ngue_port = 7000\nunderlay_mtu = 9000"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.services[0].forwarding,
            Forwarding::Tunnel(TunnelOptions {
                encap: TunnelEncap::Gue { port: 7000 },
                underlay_mtu: 9000
            })
        );
        let c = Config::parse(&svc("forwarding = \"tunnel\"\nencap = \"gue\""), "t.toml").unwrap();
        assert!(matches!(
            c.services[0].forwarding,
            Forwarding::Tunnel(TunnelOptions {
                encap: TunnelEncap::Gue { port: DEFAULT_GUE_PORT },
                ..
            })
        ));
        for (extra, field, line) in [
            ("encap = \"gue\"", "service \"v\".encap", 6),
            ("underlay_mtu = 1600", "service \"v\".underlay_mtu", 6),
            ("forwarding = \"tunnel\"\ngue_port = 7000", "service \"v\".gue_port", 7),
            (
                "forwarding = \"tunnel\"\nunderlay_mtu = 1000",
                "service \"v\".underlay_mtu",
                7,
            ),
            (
                "forwarding = \"tunnel\"\nencap = \"gue\"\ngue_port = 0",
                "service \"v\".gue_port",
                8,
            ),
        ] {
            let e = Config::parse(&svc(extra), "t.toml").unwrap_err();
            assert_eq!((e.field.as_str(), e.line), (field, line), "{extra}: {e}");
        }
        let e = Config::parse(&svc("forwarding = \"nat\""), "t.toml").unwrap_err();
        assert!(e.to_string().contains("forwarding") || e.message.contains("nat"), "{e}");
    }

    #[test]
    fn tunnel_sources_parse_and_check() {
        let base = "[pop]\nname = \"p\"\n[xdp]\ninterfaces = [\"eth0\"]\n";
        let c = Config::parse(
            &format!("{base}tunnel_source_v4 = \"198.51.100.0/26\"\ntunnel_source_v6 = \"2001:db8:9::/112\"\n"),
            "t.toml",
        )
        .unwrap();
        let x = c.xdp.unwrap();
        assert_eq!(x.tunnel_source_v4, Some((std::net::Ipv4Addr::new(198, 51, 100, 0), 26)));
        assert_eq!(x.tunnel_source_v6.map(|(_, l)| l), Some(112));
        let e = Config::parse(&format!("{base}tunnel_source_v4 = \"2001:db8::/64\"\n"), "t.toml").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("xdp.tunnel_source_v4", 5));
    }
}
