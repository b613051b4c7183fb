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

/// A counter of the fast path, for metrics and status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    pub name: &'static str,
    pub drop: bool,
    pub packets: u64,
}

#[cfg(feature = "xdp")]
mod imp {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyedge_guard::prefix::Prefix;
    use anyedge_xdp::{Destinations, List, Mode, Options, Rates, Services, Xdp};
    use tracing::{info, warn};

    use super::{destinations, Config, Count};

    pub struct FastPath {
        xdp: Mutex<Xdp>,
        pub interfaces: Vec<String>,
        pub mode: &'static str,
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
    }
}

pub use imp::FastPath;
