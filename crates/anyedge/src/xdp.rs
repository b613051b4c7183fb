//! The kernel fast path: keeps the XDP program's maps in step with the same
//! rules the userspace guard applies (allow/deny lists, per-source SYN
//! rates, dynamic blocks) plus per-source DNS datagram rates. When XDP
//! cannot be used (built without the `xdp` feature or without clang, no
//! privileges, interface missing), the daemon says why once and the
//! userspace layer alone applies the rules.

use std::net::IpAddr;

use crate::config::Config;

/// Which destinations the rules apply to, from the config.
fn destinations(cfg: &Config) -> Option<Vec<IpAddr>> {
    let x = cfg.xdp.as_ref()?;
    if !x.destinations.is_empty() {
        return Some(x.destinations.clone());
    }
    let mut v: Vec<IpAddr> = cfg
        .services
        .iter()
        .flat_map(|s| s.listen.iter().map(|a| a.ip()))
        .chain(cfg.dns.iter().flat_map(|d| d.listen.iter().map(|a| a.ip())))
        .collect();
    if v.iter().any(|ip| ip.is_unspecified()) {
        return None; // a wildcard listener: every destination
    }
    v.sort();
    v.dedup();
    Some(v)
}

/// A tunnel service's counts, for metrics and status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunnelCount {
    /// `service/address/proto`
    pub entry: String,
    pub service: String,
    /// (verdict, drop, packets)
    pub verdicts: Vec<(&'static str, bool, u64)>,
    /// (backend, packets, inner bytes)
    pub backends: Vec<(String, u64, u64)>,
}

/// A counter of the fast path, for metrics and status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    pub name: &'static str,
    pub drop: bool,
    pub packets: u64,
}

#[cfg(feature = "xdp")]
mod imp {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyedge_guard::prefix::Prefix;
    use anyedge_xdp::{
        Destinations, Encap, List, Mode, Options, Proto, Rates, Services, TunnelBackend, TunnelService, TunnelSource,
        Xdp,
    };
    use tracing::{debug, info, warn};

    use super::{destinations, Config, Count, TunnelCount};
    use crate::tunnel::Wanted;

    pub struct FastPath {
        xdp: Mutex<Xdp>,
        pub interfaces: Vec<String>,
        pub mode: &'static str,
        tunnel: Mutex<TunnelState>,
    }

    /// What the tunnel maps hold, and why a service is not in them.
    #[derive(Default)]
    struct TunnelState {
        pushed: BTreeMap<String, Wanted>,
        source: Option<TunnelSource>,
        /// service -> why it is not forwarded (logged on change)
        problems: BTreeMap<String, String>,
        active: BTreeSet<String>,
    }

    impl FastPath {
        pub fn start(cfg: &Config) -> Option<Arc<FastPath>> {
            let x = cfg.xdp.as_ref()?;
            let mode = match x.mode {
                crate::config::XdpMode::Auto => Mode::Auto,
                crate::config::XdpMode::Native => Mode::Native,
                crate::config::XdpMode::Generic => Mode::Generic,
            };
            let r = (|| -> Result<Xdp, anyedge_xdp::Error> {
                let mut xdp = Xdp::load(&Options::default())?;
                for i in &x.interfaces {
                    xdp.attach_to(i, mode)?;
                }
                Ok(xdp)
            })();
            match r {
                Ok(xdp) => {
                    let fp = Arc::new(FastPath {
                        xdp: Mutex::new(xdp),
                        interfaces: x.interfaces.clone(),
                        mode: mode.as_str(),
                        tunnel: Mutex::new(TunnelState::default()),
                    });
                    if let Err(e) = fp.apply(cfg) {
                        warn!(error = %e, "XDP fast path: rules not applied; detaching (userspace layer only)");
                        return None;
                    }
                    info!(interfaces = ?x.interfaces, mode = mode.as_str(), "XDP fast path attached");
                    Some(fp)
                }
                Err(e) => {
                    warn!(error = %e, "XDP fast path unavailable; the userspace layer alone applies the rules");
                    None
                }
            }
        }

        /// Pushes the rules of `cfg` into the maps (start and reload).
        pub fn apply(&self, cfg: &Config) -> anyhow::Result<()> {
            let mut x = self.xdp.lock().map_err(|_| anyhow::anyhow!("xdp lock poisoned"))?;
            x.apply_guard_config(&cfg.guard)?;
            let mut rates = Rates::from_guard(&cfg.guard);
            if let Some(xc) = &cfg.xdp {
                rates.dns_per_address = xc.dns_per_address;
                rates.dns_per_prefix = xc.dns_per_prefix;
            }
            x.set_rates(&rates)?;
            let mut tcp_ports: Vec<u16> = cfg
                .services
                .iter()
                .flat_map(|s| s.listen.iter().map(|a| a.port()))
                .collect();
            tcp_ports.sort_unstable();
            tcp_ports.dedup();
            let mut dns_ports: Vec<u16> = cfg.dns.iter().flat_map(|d| d.listen.iter().map(|a| a.port())).collect();
            dns_ports.sort_unstable();
            dns_ports.dedup();
            x.set_services(&Services {
                destinations: match destinations(cfg) {
                    Some(v) => Destinations::Only(v),
                    None => Destinations::Any,
                },
                tcp_ports,
                dns_ports,
            })?;
            Ok(())
        }

        /// Brings the tunnel maps in step with the tunnel services and their
        /// backends' live state (health, drain, weight); writes only what
        /// changed. Services that cannot be forwarded are logged once per
        /// reason and fall back (see [`crate::tunnel::fallback_reads_proxy`]).
        pub fn sync_tunnels(&self, cfg: &Config, services: &[Arc<crate::lb::Service>]) {
            let wanted = crate::tunnel::wanted(cfg, services);
            let (Ok(mut x), Ok(mut t)) = (self.xdp.lock(), self.tunnel.lock()) else {
                return;
            };
            let source = TunnelSource {
                v4: cfg.xdp.as_ref().and_then(|c| c.tunnel_source_v4),
                v6: cfg.xdp.as_ref().and_then(|c| c.tunnel_source_v6),
            };
            if t.source != Some(source) {
                if let Err(e) = x.set_tunnel_source(&source) {
                    warn!(error = %e, "XDP tunnel: outer source prefixes not set");
                    return;
                }
                t.source = Some(source);
            }
            let mut problems: BTreeMap<String, String> = BTreeMap::new();
            let mut active = BTreeSet::new();
            for w in &wanted {
                let v4 = w.backends.iter().any(|b| b.1.is_ipv4());
                let v6 = w.backends.iter().any(|b| b.1.is_ipv6());
                if (v4 && source.v4.is_none()) || (v6 && source.v6.is_none()) {
                    let fam = if v4 && source.v4.is_none() { "v4" } else { "v6" };
                    problems.insert(
                        w.service.clone(),
                        format!("[xdp] tunnel_source_{fam} is not set (the outer source of the encapsulation)"),
                    );
                    continue;
                }
                if t.pushed.get(&w.key) == Some(w) {
                    active.insert(w.service.clone());
                    continue;
                }
                let svc = TunnelService {
                    vip: w.vip,
                    port: w.port,
                    proto: if w.udp { Proto::Udp } else { Proto::Tcp },
                    encap: match w.encap {
                        crate::config::TunnelEncap::Ipip => Encap::Ipip,
                        crate::config::TunnelEncap::Gue { port } => Encap::Gue { port },
                    },
                    underlay_mtu: w.underlay_mtu,
                };
                let backends: Vec<TunnelBackend> = w
                    .backends
                    .iter()
                    .map(|(name, addr, weight, eligible)| TunnelBackend {
                        name: name.clone(),
                        addr: *addr,
                        weight: *weight,
                        eligible: *eligible,
                    })
                    .collect();
                match x.set_tunnel_service(&w.key, &svc, &backends) {
                    Ok(changed) => {
                        let names = |w: &Wanted| -> Vec<String> {
                            w.backends.iter().filter(|b| b.3).map(|b| b.0.clone()).collect()
                        };
                        let eligible = names(w);
                        // a slow-start step changes only weights, every 250 ms
                        // while a backend ramps up: not worth a line each
                        if t.pushed.get(&w.key).is_some_and(|p| names(p) == eligible) {
                            debug!(entry = %w.key, eligible = ?eligible, slots_changed = changed, "XDP tunnel: service programmed");
                        } else {
                            info!(entry = %w.key, eligible = ?eligible, slots_changed = changed, "XDP tunnel: service programmed");
                        }
                        t.pushed.insert(w.key.clone(), w.clone());
                        active.insert(w.service.clone());
                    }
                    Err(e) => {
                        problems.insert(w.service.clone(), format!("programming the XDP maps failed: {e}"));
                        t.pushed.remove(&w.key);
                    }
                }
            }
            // a service forwarded only in part is not forwarded
            for s in problems.keys() {
                active.remove(s);
            }
            let stale: Vec<String> = t
                .pushed
                .keys()
                .filter(|k| !wanted.iter().any(|w| &w.key == *k && active.contains(&w.service)))
                .cloned()
                .collect();
            for k in stale {
                if let Err(e) = x.remove_tunnel_service(&k) {
                    warn!(entry = %k, error = %e, "XDP tunnel: removing the entry failed");
                }
                t.pushed.remove(&k);
            }
            for (svc, why) in &problems {
                if t.problems.get(svc) != Some(why) {
                    let sc = cfg.services.iter().find(|s| &s.name == svc);
                    let fallback = if sc.is_some_and(crate::tunnel::fallback_reads_proxy) {
                        "falls back to the proxy path (its backends read PROXY)"
                    } else {
                        "is not announced (its backends do not read PROXY)"
                    };
                    warn!(service = %svc, reason = %why, "forwarding = \"tunnel\" unavailable; the service {fallback}");
                }
            }
            t.problems = problems;
            t.active = active;
        }

        /// Whether a tunnel service is forwarded by the kernel now.
        pub fn tunnel_active(&self, service: &str) -> bool {
            self.tunnel.lock().is_ok_and(|t| t.active.contains(service))
        }

        /// Per tunnel entry: verdicts and per-backend counts.
        pub fn tunnel_counts(&self) -> Vec<TunnelCount> {
            let Ok(x) = self.xdp.lock() else { return Vec::new() };
            let Ok(t) = self.tunnel.lock() else { return Vec::new() };
            let Ok(counts) = x.tunnel_counters() else {
                return Vec::new();
            };
            counts
                .into_iter()
                .map(|c| TunnelCount {
                    service: t.pushed.get(&c.service).map_or_else(String::new, |w| w.service.clone()),
                    verdicts: c.verdicts.iter().map(|(v, n)| (v.as_str(), v.is_drop(), *n)).collect(),
                    backends: c.backends,
                    entry: c.service,
                })
                .collect()
        }

        /// A dynamic block (heavy hitter) until `until` (guard clock).
        pub fn block(&self, p: Prefix, until: Duration) {
            if let Ok(mut x) = self.xdp.lock() {
                if let Err(e) = x.insert_prefix(List::Deny, p, Some(until)) {
                    warn!(source = %p, error = %e, "XDP: dynamic block not installed (userspace still blocks)");
                }
            }
        }

        pub fn expire(&self, now: Duration) {
            if let Ok(mut x) = self.xdp.lock() {
                if let Err(e) = x.expire(now) {
                    warn!(error = %e, "XDP: expiring blocks failed");
                }
            }
        }

        pub fn counters(&self) -> Vec<Count> {
            let Ok(x) = self.xdp.lock() else { return Vec::new() };
            match x.counters() {
                Ok(c) => c
                    .iter()
                    .map(|(k, n)| Count {
                        name: k.as_str(),
                        drop: k.is_drop(),
                        packets: n,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
    }
}

#[cfg(not(feature = "xdp"))]
mod imp {
    use std::sync::Arc;
    use std::time::Duration;

    use anyedge_guard::prefix::Prefix;
    use tracing::warn;

    use super::{destinations, Config, Count};

    /// Built without the `xdp` feature: never constructed.
    pub struct FastPath {
        pub interfaces: Vec<String>,
        pub mode: &'static str,
    }

    impl FastPath {
        pub fn start(cfg: &Config) -> Option<Arc<FastPath>> {
            if cfg.xdp.is_some() {
                warn!("[xdp] configured, but this binary was built without the `xdp` feature; the userspace layer alone applies the rules");
            }
            let _ = destinations(cfg);
            None
        }
        pub fn apply(&self, _cfg: &Config) -> anyhow::Result<()> {
            Ok(())
        }
        pub fn block(&self, _p: Prefix, _until: Duration) {}
        pub fn expire(&self, _now: Duration) {}
        pub fn counters(&self) -> Vec<Count> {
            Vec::new()
        }
        pub fn sync_tunnels(&self, _cfg: &Config, _services: &[Arc<crate::lb::Service>]) {}
        pub fn tunnel_active(&self, _service: &str) -> bool {
            false
        }
        pub fn tunnel_counts(&self) -> Vec<super::TunnelCount> {
            Vec::new()
        }
    }
}

pub use imp::FastPath;
