//! Per-source admission control for the L4 balancer, without I/O: source
//! address and `now` in, a verdict out.
//!
//! - [`prefix::PrefixSet`]: allow/deny CIDR sets with optional expiry
//!   (longest-prefix semantics are not needed: membership is enough).
//! - [`gcra`]: the Generic Cell Rate Algorithm: one `u64` of state per key.
//! - [`table`]: bounded, sharded tables of per-key state with eviction, so
//!   memory stays fixed however many spoofed sources show up, and no lock is
//!   global (one mutex per shard, held for a hash-map probe).
//! - [`Guard`]: the rule model: allow list (bypasses limits), deny list,
//!   hierarchical new-connection rates (per address, and per /24, /64 and /48
//!   aggregate so rotating addresses inside a prefix does not escape), and
//!   per-source concurrency caps.
//! - [`rrl`]: DNS Response Rate Limiting (Knot/BIND style) on the same
//!   tables, GCRA and prefix sets: responses per second per (source
//!   netblock, response class, name) bucket, with slip, whitelist and
//!   dry-run.
#![forbid(unsafe_code)]

pub mod gcra;
pub mod prefix;
pub mod rrl;
pub mod table;

use std::net::IpAddr;
use std::time::Duration;

use gcra::Gcra;
use prefix::{Prefix, PrefixSet};
use table::{ConcurrencyTable, CountTable, RateTable};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    DenyList,
    /// New-connection rate of one address exceeded.
    RateAddress,
    /// New-connection rate of the aggregate prefix (/24, /64, /48) exceeded.
    RatePrefix,
    /// Too many open connections from one address.
    Concurrency,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::DenyList,
        DropReason::RateAddress,
        DropReason::RatePrefix,
        DropReason::Concurrency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::DenyList => "deny_list",
            DropReason::RateAddress => "rate_address",
            DropReason::RatePrefix => "rate_prefix",
            DropReason::Concurrency => "concurrency",
        }
    }
}

/// The verdict for one new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; the caller must call [`Guard::release`] with this source
    /// when the connection ends (concurrency accounting).
    Admit,
    /// On the allow list: no limits applied, nothing to release.
    Allowlisted,
    Drop(DropReason),
}

/// Rate: `per_second` new connections sustained, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub allow: Vec<Prefix>,
    pub deny: Vec<Prefix>,
    /// Per address (IPv4 /32, IPv6 /128).
    pub rate_per_address: Option<Rate>,
    /// Per aggregate prefix: IPv4 /24, IPv6 /64 and /48 (the /48 gets 4x).
    pub rate_per_prefix: Option<Rate>,
    /// Open connections per address.
    pub max_concurrent_per_address: Option<u32>,
    /// Entries per table, at least 64 (memory bound: about 48 bytes an
    /// entry).
    pub table_capacity: usize,
    /// Heavy-hitter detection: sources making at least this many new
    /// connections in one second are denied for `block_for`.
    pub dynamic_block: Option<DynamicBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicBlock {
    pub threshold_per_second: u32,
    pub block_for: Duration,
    /// Never counted, never blocked (besides the allow list).
    pub exclude: Vec<Prefix>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            rate_per_address: None,
            rate_per_prefix: None,
            max_concurrent_per_address: None,
            table_capacity: 1 << 16,
            dynamic_block: None,
        }
    }
}

/// The admission guard. Shareable between threads (`&self` everywhere).
pub struct Guard {
    allow: PrefixSet,
    deny: PrefixSet,
    per_address: Option<(Gcra, RateTable)>,
    per_prefix: Option<(Gcra, RateTable, Gcra)>,
    concurrent: Option<(u32, ConcurrencyTable)>,
    heavy: Option<(DynamicBlock, PrefixSet, CountTable)>,
}

impl Guard {
    pub fn new(cfg: &GuardConfig) -> Guard {
        let cap = cfg.table_capacity.max(64);
        Guard {
            allow: PrefixSet::from_prefixes(cfg.allow.iter().copied()),
            deny: PrefixSet::from_prefixes(cfg.deny.iter().copied()),
            per_address: cfg
                .rate_per_address
                .map(|r| (Gcra::new(r.per_second, r.burst), RateTable::new(cap))),
            per_prefix: cfg.rate_per_prefix.map(|r| {
                (
                    Gcra::new(r.per_second, r.burst),
                    RateTable::new(cap),
                    Gcra::new(r.per_second.saturating_mul(4), r.burst.saturating_mul(4)),
                )
            }),
            concurrent: cfg.max_concurrent_per_address.map(|m| (m, ConcurrencyTable::new(cap))),
            heavy: cfg.dynamic_block.as_ref().map(|d| {
                (
                    d.clone(),
                    PrefixSet::from_prefixes(d.exclude.iter().copied()),
                    CountTable::new(cap),
                )
            }),
        }
    }

    /// Once a second: sources over the heavy-hitter threshold in the window
    /// just ended are added to the deny list until `now + block_for`;
    /// expired blocks are removed. Returns the new blocks (source, count).
    pub fn tick(&self, now: Duration) -> Vec<(Prefix, u32)> {
        self.deny.expire(now);
        let Some((d, _, counts)) = &self.heavy else {
            return Vec::new();
        };
        let hits = counts.take_over(d.threshold_per_second);
        let mut out = Vec::with_capacity(hits.len());
        for (key, n) in hits {
            let p = Prefix::from_key(key);
            self.deny.insert(p, Some(now + d.block_for));
            out.push((p, n));
        }
        out
    }

    /// The dynamic deny list (heavy hitters, admin blocks).
    pub fn deny_set(&self) -> &PrefixSet {
        &self.deny
    }

    /// Decides on a new connection from `ip` at `now` (time since any fixed
    /// origin, e.g. process start).
    pub fn admit(&self, ip: IpAddr, now: Duration) -> Verdict {
        let ip = canonical(ip);
        if self.allow.contains(ip, now) {
            return Verdict::Allowlisted;
        }
        if let Some((_, exclude, counts)) = &self.heavy {
            if !exclude.contains(ip, now) {
                counts.add(Prefix::host(ip).key());
            }
        }
        if self.deny.contains(ip, now) {
            return Verdict::Drop(DropReason::DenyList);
        }
        let now_ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        // Aggregates first: a rotating attacker is stopped without filling
        // the per-address table with one-shot entries.
        if let Some((g, t, g48)) = &self.per_prefix {
            let (net, wide) = match ip {
                IpAddr::V4(_) => (Prefix::of(ip, 24), None),
                IpAddr::V6(_) => (Prefix::of(ip, 64), Some(Prefix::of(ip, 48))),
            };
            if !t.check(net.key(), now_ns, g) {
                return Verdict::Drop(DropReason::RatePrefix);
            }
            if let Some(w) = wide {
                if !t.check(w.key(), now_ns, g48) {
                    return Verdict::Drop(DropReason::RatePrefix);
                }
            }
        }
        if let Some((g, t)) = &self.per_address {
            if !t.check(Prefix::host(ip).key(), now_ns, g) {
                return Verdict::Drop(DropReason::RateAddress);
            }
        }
        if let Some((max, t)) = &self.concurrent {
            if !t.acquire(Prefix::host(ip).key(), *max) {
                return Verdict::Drop(DropReason::Concurrency);
            }
        }
        Verdict::Admit
    }

    /// A connection admitted with [`Verdict::Admit`] ended.
    pub fn release(&self, ip: IpAddr) {
        if let Some((_, t)) = &self.concurrent {
            t.release(Prefix::host(canonical(ip)).key());
        }
    }

    /// Entries held in the per-address, per-prefix and concurrency tables.
    pub fn table_sizes(&self) -> [usize; 3] {
        [
            self.per_address.as_ref().map_or(0, |(_, t)| t.len()),
            self.per_prefix.as_ref().map_or(0, |(_, t, _)| t.len()),
            self.concurrent.as_ref().map_or(0, |(_, t)| t.len()),
        ]
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn allow_beats_deny_and_limits() {
        let g = Guard::new(&GuardConfig {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            deny: vec!["192.0.2.0/23".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            rate_per_address: Some(Rate {
                per_second: 1,
                burst: 1,
            }),
            ..GuardConfig::default()
        });
        for _ in 0..10 {
            assert_eq!(g.admit("192.0.2.7".parse().unwrap(), ms(0)), Verdict::Allowlisted);
        }
        assert_eq!(
            g.admit("192.0.3.7".parse().unwrap(), ms(0)),
            Verdict::Drop(DropReason::DenyList)
        );
        assert_eq!(
            g.admit("2001:db8::1".parse().unwrap(), ms(0)),
            Verdict::Drop(DropReason::DenyList)
        );
        // v4-mapped v6 is the v4 address
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 3, 1).to_ipv6_mapped());
        assert_eq!(g.admit(mapped, ms(0)), Verdict::Drop(DropReason::DenyList));
    }

    #[test]
    fn per_address_rate_with_burst_then_refill() {
        let g = Guard::new(&GuardConfig {
            rate_per_address: Some(Rate {
                per_second: 10,
                burst: 5,
            }),
            ..GuardConfig::default()
        });
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let admitted = (0..20).filter(|_| g.admit(ip, ms(1000)) == Verdict::Admit).count();
        assert_eq!(admitted, 5, "burst");
        assert_eq!(g.admit(ip, ms(1000)), Verdict::Drop(DropReason::RateAddress));
        // 100 ms later one more token
        assert_eq!(g.admit(ip, ms(1100)), Verdict::Admit);
        assert_eq!(g.admit(ip, ms(1100)), Verdict::Drop(DropReason::RateAddress));
        // another address is independent
        assert_eq!(g.admit("198.18.0.2".parse().unwrap(), ms(1100)), Verdict::Admit);
    }

    #[test]
    fn rotating_inside_a_64_hits_the_prefix_limit() {
        let g = Guard::new(&GuardConfig {
            rate_per_address: Some(Rate {
                per_second: 10,
                burst: 10,
            }),
            rate_per_prefix: Some(Rate {
                per_second: 50,
                burst: 50,
            }),
            ..GuardConfig::default()
        });
        let mut admitted = 0;
        for i in 0..1000u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, i, 1));
            if g.admit(ip, ms(0)) == Verdict::Admit {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 50, "one /64's burst, whatever the address");
        // a different /64 in the same /48 still gets in (the /48 has 4x)
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(g.admit(other, ms(0)), Verdict::Admit);
        // rotating over many /64s of one /48 is caught by the /48 aggregate
        let mut admitted48 = 0;
        for net in 0..100u16 {
            for host in 0..10u16 {
                let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, net, 0, 0, host, 1));
                if g.admit(ip, ms(0)) == Verdict::Admit {
                    admitted48 += 1;
                }
            }
        }
        assert_eq!(admitted48, 200, "/48 burst is 4 x 50");
        // IPv4: the /24 aggregate
        let v4 = (0..=255u8)
            .filter(|&h| g.admit(IpAddr::V4(Ipv4Addr::new(203, 0, 113, h)), ms(0)) == Verdict::Admit)
            .count();
        assert_eq!(v4, 50);
    }

    #[test]
    fn concurrency_cap_and_release() {
        let g = Guard::new(&GuardConfig {
            max_concurrent_per_address: Some(2),
            ..GuardConfig::default()
        });
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        assert_eq!(g.admit(ip, ms(0)), Verdict::Admit);
        assert_eq!(g.admit(ip, ms(0)), Verdict::Admit);
        assert_eq!(g.admit(ip, ms(0)), Verdict::Drop(DropReason::Concurrency));
        g.release(ip);
        assert_eq!(g.admit(ip, ms(0)), Verdict::Admit);
        g.release(ip);
        g.release(ip);
        assert_eq!(g.table_sizes()[2], 0, "entries at zero are removed");
    }

    #[test]
    fn heavy_hitters_are_blocked_for_a_while_and_excluded_ranges_never() {
        let g = Guard::new(&GuardConfig {
            dynamic_block: Some(DynamicBlock {
                threshold_per_second: 100,
                block_for: Duration::from_secs(60),
                exclude: vec!["198.18.9.0/24".parse().unwrap()],
            }),
            ..GuardConfig::default()
        });
        let heavy: IpAddr = "198.18.0.66".parse().unwrap();
        let excluded: IpAddr = "198.18.9.9".parse().unwrap();
        let light: IpAddr = "198.18.0.7".parse().unwrap();
        for _ in 0..150 {
            assert_eq!(g.admit(heavy, ms(500)), Verdict::Admit);
            assert_eq!(g.admit(excluded, ms(500)), Verdict::Admit);
        }
        for _ in 0..10 {
            g.admit(light, ms(500));
        }
        let blocked = g.tick(ms(1000));
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert_eq!(blocked[0].0, Prefix::host(heavy));
        assert!(blocked[0].1 >= 150);
        assert_eq!(g.admit(heavy, ms(1500)), Verdict::Drop(DropReason::DenyList));
        assert_eq!(g.admit(excluded, ms(1500)), Verdict::Admit);
        assert_eq!(g.admit(light, ms(1500)), Verdict::Admit);
        // the block expires
        assert!(g.tick(ms(62_000)).is_empty());
        assert_eq!(g.admit(heavy, ms(62_500)), Verdict::Admit);
    }

    #[test]
    fn memory_stays_bounded_under_a_million_sources() {
        let cap = 10_000;
        let g = Guard::new(&GuardConfig {
            rate_per_address: Some(Rate {
                per_second: 1,
                burst: 1,
            }),
            rate_per_prefix: Some(Rate {
                per_second: 1000,
                burst: 1000,
            }),
            table_capacity: cap,
            ..GuardConfig::default()
        });
        for i in 0..1_000_000u32 {
            let _ = g.admit(
                IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))),
                ms(u64::from(i / 1000)),
            );
        }
        let [a, p, _] = g.table_sizes();
        let bound = cap.div_ceil(64) * 64; // capacity rounds up to whole shards
        assert!(a <= bound && p <= bound, "{a} {p}");
        assert!(a > bound / 2, "the table is used: {a}");
    }
}
