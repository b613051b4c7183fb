//! Tunnel forwarding's control side: from the services with
//! `forwarding = "tunnel"` and their backends' live state (health, drain,
//! weight: what the proxy path's selector is built from) to the XDP
//! program's tunnel maps, and the fallback when those cannot be used.
//!
//! The maps follow the same events as the proxy path's selector: every
//! rebuild of a service's selector (health transition, drain, reload,
//! discovery change, slow-start step) signals
//! [`crate::lb::Edge::selectors_changed`], and the PoP's sync task calls
//! [`crate::xdp::FastPath::sync_tunnels`] at once (a burst of signals
//! coalesces into one more sync); a reload syncs too, and a resync every
//! [`SAFETY_RESYNC`] is only a backstop. A sync compares the wanted state
//! with what it last pushed and only writes the difference (a Maglev table
//! is rebuilt only when a service's eligible set or weights changed).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Forwarding, ProxyMode, ServiceConfig, TunnelEncap};
use crate::lb::Service;

/// The backstop: the maps are resynced this often even without a signal
/// (every change that matters signals; this only bounds the damage of a
/// missed one).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(5);

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
    /// name, address, weight, eligible: as in the proxy path's selector
    /// (healthy, not draining, weight > 0; the weight with slow start
    /// applied)
    pub backends: Vec<(String, IpAddr, u32, bool)>,
}

/// The tunnel entries `cfg` wants, with the backends' live state.
pub fn wanted(cfg: &Config, services: &[Arc<Service>]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for sc in &cfg.services {
        let Forwarding::Tunnel(t) = sc.forwarding else { continue };
        let live = services.iter().find(|s| s.name == sc.name);
        let backends: Vec<(String, IpAddr, u32, bool)> = match live {
            Some(s) => {
                let selected = s.selection();
                s.backends()
                    .iter()
                    .map(|b| {
                        let c = b.config();
                        match selected.iter().find(|(e, _)| Arc::ptr_eq(e, b)) {
                            Some((_, w)) => (b.name.clone(), c.address.ip(), *w, true),
                            None => (b.name.clone(), c.address.ip(), c.weight, false),
                        }
                    })
                    .collect()
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow start changes only weights, in steps of the pool's maintenance
    /// task: each step must signal the edge and show in the wanted entries
    /// (the kernel's Maglev table then follows, as the proxy path's does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_start_steps_signal_and_reach_the_wanted_weights() {
        let node = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let cfg = Config::parse(
            &format!(
                r#"
[pop]
name = "t"
[[service]]
name = "web"
listen = ["{listen}"]
forwarding = "tunnel"
slow_start = "2s"
[service.health]
kind = "tcp"
interval = "100ms"
timeout = "100ms"
rise = 1
[[service.backend]]
name = "n1"
address = "{}"
weight = 2
proxy_protocol = "none"
"#,
                node.local_addr().unwrap()
            ),
            "test.toml",
        )
        .unwrap();
        let edge = crate::lb::Edge::start(cfg, 1, Default::default(), Vec::new(), false).unwrap();
        let changed = edge.selectors_changed();
        let full = 2 * anyedge_lb::pool::WEIGHT_SCALE;
        let mut seen: Vec<u32> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while seen.last() != Some(&full) {
            assert!(tokio::time::Instant::now() < deadline, "no full weight: {seen:?}");
            // each step signals: a 1 s wait is far shorter than the ramp
            // would leave without signals (the backstop resync is 5 s)
            tokio::time::timeout(Duration::from_secs(1), changed.notified())
                .await
                .unwrap_or_else(|_| {
                    panic!("no signal within 1 s before the full weight {full} (weights so far: {seen:?})")
                });
            let w = wanted(&edge.config(), &edge.services());
            assert_eq!(w.len(), 2, "tcp and udp entries");
            assert_eq!(w[0].backends, w[1].backends);
            if let Some(&(_, _, weight, true)) = w[0].backends.first() {
                if seen.last() != Some(&weight) {
                    seen.push(weight);
                }
            }
        }
        assert!(seen.len() >= 3, "ramped in steps: {seen:?}");
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "rising: {seen:?}");
        drop(node);
    }
}
