//! The `[xdp]` section: the kernel fast path of the per-source rules.

use std::net::IpAddr;

use anyedge_guard::Rate;
use serde::Deserialize;
use toml::Spanned;

use super::guard::{parse_rate, RawRate};
use super::value::parse_list;
use super::{ConfigError, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, else generic.
    Auto,
    Native,
    /// Generic (SKB) mode: works on any interface, slower.
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// Ingress interfaces the program is attached to.
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    /// Packets to these addresses are judged; empty: the addresses the
    /// services and DNS listen on (an unspecified listener, 0.0.0.0 or
    /// `::`, means every destination).
    pub destinations: Vec<IpAddr>,
    /// UDP datagrams to the DNS ports, per source address / prefix.
    pub dns_per_address: Option<Rate>,
    pub dns_per_prefix: Option<Rate>,
    /// Outer source prefixes of tunnel forwarding (host bits per flow).
    pub tunnel_source_v4: Option<(std::net::Ipv4Addr, u8)>,
    pub tunnel_source_v6: Option<(std::net::Ipv6Addr, u8)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXdp {
    interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "d_mode")]
    mode: XdpMode,
    #[serde(default)]
    destinations: Vec<Spanned<String>>,
    #[serde(default)]
    dns_queries_per_address: Option<RawRate>,
    #[serde(default)]
    dns_queries_per_prefix: Option<RawRate>,
    #[serde(default)]
    tunnel_source_v4: Option<Spanned<String>>,
    #[serde(default)]
    tunnel_source_v6: Option<Spanned<String>>,
}

fn d_mode() -> XdpMode {
    XdpMode::Auto
}

pub(super) fn parse_xdp(cx: &Ctx<'_>, x: RawXdp) -> Result<XdpConfig, ConfigError> {
    let mut interfaces = Vec::new();
    for (i, n) in x.interfaces.get_ref().iter().enumerate() {
        let name = n.get_ref();
        if name.is_empty() || name.len() > 15 || name.contains('/') || name.contains(char::is_whitespace) {
            return Err(cx.err(
                n.span(),
                format!("xdp.interfaces[{i}]"),
                format!("{name:?} is not an interface name"),
            ));
        }
        interfaces.push(name.clone());
    }
    if interfaces.is_empty() {
        return Err(cx.err(
            x.interfaces.span(),
            "xdp.interfaces",
            "name at least one ingress interface",
        ));
    }
    let destinations = parse_list(cx, &x.destinations, "xdp.destinations", "an address", |s| {
        s.parse::<IpAddr>().ok()
    })?;
    Ok(XdpConfig {
        interfaces,
        mode: x.mode,
        destinations,
        dns_per_address: parse_rate(cx, x.dns_queries_per_address, "xdp.dns_queries_per_address")?,
        dns_per_prefix: parse_rate(cx, x.dns_queries_per_prefix, "xdp.dns_queries_per_prefix")?,
        tunnel_source_v4: x
            .tunnel_source_v4
            .as_ref()
            .map(|v| super::tunnel::parse_source4(cx, v, "xdp.tunnel_source_v4"))
            .transpose()?,
        tunnel_source_v6: x
            .tunnel_source_v6
            .as_ref()
            .map(|v| super::tunnel::parse_source6(cx, v, "xdp.tunnel_source_v6"))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn xdp_section_parses_and_checks() {
        let base = "[pop]\nname = \"p\"\n[xdp]\n";
        let c = Config::parse(
            &format!(
                "{base}interfaces = [\"eth0\"]\nmode = \"generic\"\ndns_queries_per_address = {{ per_second = 5 }}\n"
            ),
            "t.toml",
        )
        .unwrap();
        let x = c.xdp.unwrap();
        assert_eq!(x.mode, XdpMode::Generic);
        assert_eq!(x.dns_per_address.map(|r| (r.per_second, r.burst)), Some((5, 5)));
        let e = Config::parse(&format!("{base}interfaces = []\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "xdp.interfaces");
        let e = Config::parse(
            &format!("{base}interfaces = [\"eth0\"]\ndestinations = [\"nope\"]\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "xdp.destinations[0]"));
    }
}
