//! The backend pool of a service as a pure function of its sources: the
//! configuration file's backends, the discovered ones (DNS records, a
//! watched file) and the operator's runtime changes. Also the checks on
//! discovered addresses and sizes, and slow start's weight as a function of
//! the time a backend has been up. No I/O: the daemon resolves, reads files
//! and keeps the runtime changes, and reconciles its backends to [`desired`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where a backend comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// `[[service.backend]]` in the configuration file.
    Config,
    /// DNS records (`discover`).
    Dns,
    /// The watched backends file (`backends_file`).
    File,
    /// Added through the admin API.
    Runtime,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Dns => "dns",
            Origin::File => "file",
            Origin::Runtime => "runtime",
        }
    }
}

/// One backend the pool should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub origin: Origin,
}

/// The operator's runtime changes to one service's pool (kept in the state
/// directory across reloads and restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Backends added at run time, by name: (address, weight).
    pub added: BTreeMap<String, (SocketAddr, u32)>,
    /// Backends of any origin removed at run time, by name.
    pub removed: BTreeSet<String>,
    /// Weights set at run time, by name (override every origin's weight).
    pub weights: BTreeMap<String, u32>,
    /// Backends drained at run time.
    pub drained: BTreeSet<String>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.weights.is_empty() && self.drained.is_empty()
    }
}

/// The most backends one discovery source may give (an answer or file
/// beyond it is refused and the last good set kept).
pub const MAX_DISCOVERED: usize = 1024;
/// The highest weight (as in the configuration file).
pub const MAX_WEIGHT: u32 = 10_000;

/// Why a discovered set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{address} is a {what} address, not a backend")]
    BadAddress { address: IpAddr, what: &'static str },
    #[error("{n} backends exceed the bound of {max}")]
    TooMany { n: usize, max: usize },
    #[error("backend {name:?} listed twice")]
    Duplicate { name: String },
    #[error("backend {name:?}: weight {weight} is out of range 0..={max}")]
    BadWeight { name: String, weight: u32, max: u32 },
    #[error("backend {name:?}: port 0")]
    PortZero { name: String },
}

/// Refuses addresses no discovered backend may have: loopback, unspecified,
/// multicast, broadcast (a record pointing there is a mistake or an attack
/// on the PoP itself).
pub fn check_address(ip: IpAddr) -> Result<(), PoolError> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let what = if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("broadcast")
    } else {
        None
    };
    match what {
        Some(what) => Err(PoolError::BadAddress { address: ip, what }),
        None => Ok(()),
    }
}

/// The name of a discovered backend: its address (`192.0.2.1:443`,
/// `[2001:db8::1]:443`), so every PoP that sees the same records builds
/// the same Maglev table.
pub fn derived_name(address: SocketAddr) -> String {
    address.to_string()
}

/// Checks one discovered set (DNS answer or watched file): its size, each
/// address, unique names, weights in range. The daemon keeps the last good
/// set when this fails.
pub fn check_discovered(members: &[Member]) -> Result<(), PoolError> {
    if members.len() > MAX_DISCOVERED {
        return Err(PoolError::TooMany {
            n: members.len(),
            max: MAX_DISCOVERED,
        });
    }
    let mut names = BTreeSet::new();
    for m in members {
        check_address(m.address.ip())?;
        if m.address.port() == 0 {
            return Err(PoolError::PortZero { name: m.name.clone() });
        }
        if m.weight > MAX_WEIGHT {
            return Err(PoolError::BadWeight {
                name: m.name.clone(),
                weight: m.weight,
                max: MAX_WEIGHT,
            });
        }
        if !names.insert(m.name.as_str()) {
            return Err(PoolError::Duplicate { name: m.name.clone() });
        }
    }
    Ok(())
}

/// The pool a service should have now: the configuration's backends, then
/// each discovered set, then the runtime additions; the first source to
/// use a name keeps it (the others are returned as conflicts, for a log
/// line). Runtime removals drop a name of any origin, runtime weights
/// override. The result is sorted by name, so it does not depend on the
/// order records or lines arrived in.
pub fn desired(sources: &[&[Member]], overlay: &Overlay) -> (Vec<Member>, Vec<Member>) {
    let mut out: BTreeMap<String, Member> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let runtime: Vec<Member> = overlay
        .added
        .iter()
        .map(|(name, &(address, weight))| Member {
            name: name.clone(),
            address,
            weight,
            origin: Origin::Runtime,
        })
        .collect();
    for m in sources.iter().flat_map(|s| s.iter()).chain(runtime.iter()) {
        if overlay.removed.contains(&m.name) {
            continue;
        }
        if out.contains_key(&m.name) {
            conflicts.push(m.clone());
            continue;
        }
        let mut m = m.clone();
        if let Some(&w) = overlay.weights.get(&m.name) {
            m.weight = w;
        }
        out.insert(m.name.clone(), m);
    }
    (out.into_values().collect(), conflicts)
}

/// Weights given to Maglev are scaled by this, so a ramping backend can
/// take a fraction of a unit (Maglev's table depends only on the weights'
/// ratios: scaling all of them changes nothing).
pub const WEIGHT_SCALE: u32 = 64;

/// The (scaled) weight of a backend that has been up for `up_for`, under
/// `slow_start`: it grows linearly from 1/WEIGHT_SCALE of `weight` to
/// `weight` over `slow_start` (HAProxy's `slowstart`), so a cold node does
/// not take its full share at once. `None` (not up) or a zero slow start:
/// the full weight. Weight 0 stays 0.
pub fn effective_weight(weight: u32, up_for: Option<Duration>, slow_start: Duration) -> u32 {
    let full = weight.saturating_mul(WEIGHT_SCALE);
    if weight == 0 || slow_start.is_zero() {
        return full;
    }
    let Some(up) = up_for else { return full };
    if up >= slow_start {
        return full;
    }
    let frac = up.as_secs_f64() / slow_start.as_secs_f64();
    // truncation is intended; at least 1 so the backend is in the table
    ((f64::from(full) * frac) as u32).clamp(1, full)
}

/// True while `up_for` is inside the ramp (the daemon rebuilds its tables
/// until every backend is out of it).
pub fn ramping(weight: u32, up_for: Option<Duration>, slow_start: Duration) -> bool {
    weight > 0 && !slow_start.is_zero() && up_for.is_some_and(|u| u < slow_start)
}

/// What happens to a removed backend that still has connections: it stays
/// (draining, no new connections) until they end or `drain_timeout` has
/// passed since its removal, then it is gone.
pub fn removal_done(active: u64, removed_for: Duration, drain_timeout: Duration) -> bool {
    active == 0 || removed_for >= drain_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, addr: &str, w: u32, o: Origin) -> Member {
        Member {
            name: name.into(),
            address: addr.parse().unwrap(),
            weight: w,
            origin: o,
        }
    }

    #[test]
    fn merge_keeps_first_origin_and_applies_overlay() {
        let cfg = [m("a", "192.0.2.1:80", 1, Origin::Config)];
        let dns = [
            m("192.0.2.9:80", "192.0.2.9:80", 1, Origin::Dns),
            m("a", "192.0.2.2:80", 1, Origin::Dns),
        ];
        let mut ov = Overlay::default();
        ov.added.insert("r".into(), ("192.0.2.7:80".parse().unwrap(), 3));
        ov.weights.insert("192.0.2.9:80".into(), 5);
        let (set, conflicts) = desired(&[&cfg, &dns], &ov);
        let names: Vec<_> = set.iter().map(|x| (x.name.as_str(), x.weight, x.origin)).collect();
        assert_eq!(
            names,
            [
                ("192.0.2.9:80", 5, Origin::Dns),
                ("a", 1, Origin::Config),
                ("r", 3, Origin::Runtime)
            ]
        );
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].address, "192.0.2.2:80".parse().unwrap());
        ov.removed.insert("a".into());
        let (set, _) = desired(&[&cfg, &dns], &ov);
        assert!(set.iter().all(|x| x.name != "a"));
    }

    #[test]
    fn order_of_records_does_not_matter() {
        let a = [
            m("b", "192.0.2.2:80", 1, Origin::Dns),
            m("a", "192.0.2.1:80", 1, Origin::Dns),
        ];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(desired(&[&a], &Overlay::default()), desired(&[&b], &Overlay::default()));
    }

    #[test]
    fn bad_discovered_sets() {
        for bad in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "[::1]:80",
            "[::]:80",
            "[ff02::1]:80",
            "[::ffff:127.0.0.1]:80",
            "255.255.255.255:80",
        ] {
            let e = check_discovered(&[m(bad, bad, 1, Origin::Dns)]).unwrap_err();
            assert!(matches!(e, PoolError::BadAddress { .. }), "{bad}: {e}");
        }
        let dup = [
            m("x", "192.0.2.1:80", 1, Origin::File),
            m("x", "192.0.2.2:80", 1, Origin::File),
        ];
        assert!(matches!(check_discovered(&dup), Err(PoolError::Duplicate { .. })));
        let heavy = [m("x", "192.0.2.1:80", MAX_WEIGHT + 1, Origin::File)];
        assert!(matches!(check_discovered(&heavy), Err(PoolError::BadWeight { .. })));
        let many: Vec<Member> = (0..10_000u32)
            .map(|i| {
                let a = SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 80));
                m(&derived_name(a), &a.to_string(), 1, Origin::Dns)
            })
            .collect();
        assert_eq!(
            check_discovered(&many),
            Err(PoolError::TooMany {
                n: 10_000,
                max: MAX_DISCOVERED
            })
        );
        assert_eq!(check_discovered(&many[..MAX_DISCOVERED]), Ok(()));
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let s = Duration::from_secs(10);
        assert_eq!(effective_weight(2, None, s), 2 * WEIGHT_SCALE);
        assert_eq!(effective_weight(2, Some(Duration::ZERO), s), 1);
        assert_eq!(effective_weight(2, Some(Duration::from_secs(5)), s), WEIGHT_SCALE);
        assert_eq!(effective_weight(2, Some(Duration::from_secs(10)), s), 2 * WEIGHT_SCALE);
        assert_eq!(
            effective_weight(2, Some(Duration::from_secs(1)), Duration::ZERO),
            2 * WEIGHT_SCALE
        );
        assert_eq!(effective_weight(0, Some(Duration::from_secs(1)), s), 0);
        assert!(ramping(1, Some(Duration::from_secs(9)), s));
        assert!(!ramping(1, Some(Duration::from_secs(10)), s));
        // monotonic
        let mut last = 0;
        for ms in (0..=10_000).step_by(250) {
            let w = effective_weight(3, Some(Duration::from_millis(ms)), s);
            assert!(w >= last);
            last = w;
        }
    }

    #[test]
    fn removal_waits_for_connections_or_timeout() {
        let t = Duration::from_secs(30);
        assert!(removal_done(0, Duration::ZERO, t));
        assert!(!removal_done(2, Duration::from_secs(29), t));
        assert!(removal_done(2, Duration::from_secs(30), t));
    }
}
