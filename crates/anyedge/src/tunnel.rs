//! Tunnel forwarding's control side: from the services with
//! `forwarding = "tunnel"` and their backends' live state (health, drain,
//! weight: what the proxy path's selector is built from) to the XDP
//! program's tunnel maps, and the fallback when those cannot be used.
//!
//! The maps follow the same events as the proxy path's selector: the PoP
//! calls [`crate::xdp::FastPath::sync_tunnels`] every 100 ms and on reload;
//! it compares the wanted state with what it last pushed and only writes
//! the difference (a Maglev table is rebuilt only when a service's eligible
//! set changed).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, Forwarding, ProxyMode, ServiceConfig, TunnelEncap};
use crate::lb::Service;

/// One map entry the program matches: a service's listen address and a
/// protocol (a tunnel service forwards TCP and UDP, e.g. HTTPS and QUIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `service/address/proto`: the key of the kernel entry.
    pub key: String,
    pub service: String,
    pub vip: IpAddr,
    pub port: u16,
    pub udp: bool,
    pub encap: TunnelEncap,
    pub underlay_mtu: u16,
    /// name, address, weight, eligible (healthy, not draining, weight > 0)
    pub backends: Vec<(String, IpAddr, u32, bool)>,
}

/// The tunnel entries `cfg` wants, with the backends' live state.
pub fn wanted(cfg: &Config, services: &[Arc<Service>]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for sc in &cfg.services {
        let Forwarding::Tunnel(t) = sc.forwarding else { continue };
        let live = services.iter().find(|s| s.name == sc.name);
        let backends: Vec<(String, IpAddr, u32, bool)> = match live {
            Some(s) => s
                .backends()
                .iter()
                .map(|b| {
                    let c = b.config();
                    let eligible = b.is_up() && !b.is_draining() && c.weight > 0;
                    (b.name.clone(), c.address.ip(), c.weight, eligible)
                })
                .collect(),
            None => Vec::new(),
        };
        for a in &sc.listen {
            for udp in [false, true] {
                out.push(Wanted {
                    key: format!("{}/{}/{}", sc.name, a, if udp { "udp" } else { "tcp" }),
                    service: sc.name.clone(),
                    vip: a.ip(),
                    port: a.port(),
                    udp,
                    encap: t.encap,
                    underlay_mtu: t.underlay_mtu,
                    backends: backends.clone(),
                });
            }
        }
    }
    out
}

/// Where a tunnel service goes when the tunnel cannot carry it: the proxy
/// path if its backends read PROXY (they learn the client address that
/// way), else nowhere (the service is not announced).
pub fn fallback_reads_proxy(sc: &ServiceConfig) -> bool {
    sc.backends.iter().all(|b| b.proxy != ProxyMode::None)
}
