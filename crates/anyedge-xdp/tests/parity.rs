//! Parity with the userspace guard: a table of rule sets x packet sequences,
//! each packet judged by `anyedge_guard::Guard::admit` (the verdict for a
//! new connection from its source) and by the XDP program (a TCP SYN to a
//! service port, or a UDP datagram to the DNS port with the rates given to
//! the DNS class, run in the kernel with `BPF_PROG_TEST_RUN`). Verdict and
//! reason must agree for every packet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyedge_guard::{DropReason, Guard, GuardConfig, Verdict};
use anyedge_xdp::{Counter, Destinations, List, Prefix, Rate, Rates, Services, Xdp};
use common::*;

const SVC4: &str = "198.18.200.1";
const SVC6: &str = "2001:db8:200::1";

struct RuleSet {
    name: &'static str,
    allow: &'static [&'static str],
    deny: &'static [&'static str],
    per_address: Option<Rate>,
    per_prefix: Option<Rate>,
}

const RULE_SETS: &[RuleSet] = &[
    RuleSet {
        name: "lists",
        allow: &["198.18.100.7", "2001:db8:66::7/128", "198.18.104.0/22"],
        deny: &[
            "198.18.100.0/24",
            "2001:db8:66::/64",
            "198.18.104.0/24",
            "2001:db8:68::/48",
        ],
        per_address: None,
        per_prefix: None,
    },
    RuleSet {
        name: "nested: allow beats a longer deny",
        allow: &["198.18.100.0/24", "2001:db8::/32"],
        deny: &["198.18.0.0/15", "198.18.100.7", "2001:db8:66::5/128", "::/1"],
        per_address: None,
        per_prefix: None,
    },
    RuleSet {
        // the guard keeps IPv4 as IPv4-mapped IPv6: ::/0 covers IPv4 too,
        // and an IPv6 prefix inside ::ffff:0:0/96 is an IPv4 prefix
        name: "IPv6 prefixes covering IPv4",
        allow: &["::ffff:198.18.100.0/120"],
        deny: &["::/0"],
        per_address: None,
        per_prefix: None,
    },
    RuleSet {
        name: "IPv4 everything denied, IPv6 not",
        allow: &[],
        deny: &["0.0.0.0/0"],
        per_address: None,
        per_prefix: None,
    },
    RuleSet {
        name: "per-address rate",
        allow: &[],
        deny: &["198.18.100.0/24"],
        per_address: rate(1, 3),
        per_prefix: None,
    },
    RuleSet {
        name: "per-prefix rate",
        allow: &["2001:db8:67::1"],
        deny: &[],
        per_address: None,
        per_prefix: rate(1, 4),
    },
    RuleSet {
        name: "both rates",
        allow: &["198.18.101.0/24"],
        deny: &["2001:db8:66::/64"],
        per_address: rate(1, 2),
        per_prefix: rate(1, 6),
    },
    RuleSet {
        name: "rate beyond 1e9/s (interval 0: no limit)",
        allow: &[],
        deny: &[],
        per_address: rate(u32::MAX, 1),
        per_prefix: rate(2_000_000_000, 1),
    },
    RuleSet {
        name: "rate 0, burst 1: only the first",
        allow: &[],
        deny: &[],
        per_address: rate(0, 1),
        per_prefix: None,
    },
    RuleSet {
        name: "rate 0, burst 3 (tolerance saturates: all pass)",
        allow: &[],
        deny: &[],
        per_address: rate(0, 3),
        per_prefix: None,
    },
];

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

/// The packet sequence: repeated sources (rates), neighbours in one /24,
/// /64 and /48 (aggregates), IPv4-mapped IPv6 sources, VLAN tags.
fn sources() -> Vec<(IpAddr, bool)> {
    let mut out: Vec<IpAddr> = Vec::new();
    for _ in 0..3 {
        out.push(v4("198.18.100.5"));
        out.push(v4("198.18.100.7"));
        out.push(v6("2001:db8:66::5"));
        out.push(v6("2001:db8:66::7"));
    }
    for h in 1..=6 {
        out.push(v4(&format!("198.18.101.{h}")));
        out.push(v6(&format!("2001:db8:67::{h}")));
    }
    for _ in 0..4 {
        out.push(v4("198.18.101.1"));
        out.push(v6("2001:db8:67::1"));
        out.push(v6("::ffff:198.18.101.2"));
    }
    out.push(v4("198.18.104.9"));
    out.push(v4("198.18.105.9"));
    out.push(v4("198.18.108.9"));
    out.push(v4("198.19.255.254"));
    for n in 1..=3 {
        out.push(v6(&format!("2001:db8:68:{n}::1")));
    }
    // rotating over the /64s of one /48
    for n in 0..30 {
        out.push(v6(&format!("2001:db8:69:{n:x}::1")));
    }
    out.push(v6("::ffff:198.18.100.5"));
    out.push(v6("::ffff:198.18.100.9"));
    out.push(v6("2001:db8:ffff::1"));
    out.push(v6("8000::1"));
    out.into_iter().enumerate().map(|(i, a)| (a, i % 3 == 2)).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Syn,
    Dns,
}

fn expected(v: Verdict, class: Class) -> Counter {
    match (v, class) {
        (Verdict::Admit, _) => Counter::Pass,
        (Verdict::Allowlisted, _) => Counter::PassAllowlist,
        (Verdict::Drop(DropReason::DenyList), _) => Counter::DropDeny,
        (Verdict::Drop(DropReason::RateAddress), Class::Syn) => Counter::DropSynRateAddress,
        (Verdict::Drop(DropReason::RatePrefix), Class::Syn) => Counter::DropSynRatePrefix,
        (Verdict::Drop(DropReason::RateAddress), Class::Dns) => Counter::DropDnsRateAddress,
        (Verdict::Drop(DropReason::RatePrefix), Class::Dns) => Counter::DropDnsRatePrefix,
        (Verdict::Drop(DropReason::Concurrency), _) => unreachable!("no concurrency cap configured"),
    }
}

fn frame(src: IpAddr, vlan: bool, class: Class) -> Vec<u8> {
    let dst = if src.is_ipv4() { ip(SVC4) } else { ip(SVC6) };
    let f = match class {
        Class::Syn => Frame::syn(src, dst, 443),
        Class::Dns => Frame::udp(src, dst, 53),
    };
    if vlan { f.vlan(0x8100, 100) } else { f }.build()
}

/// One rule set and class against fresh state on both sides. Returns the
/// mismatches, or None when the run took so long that a 1/s refill may
/// have landed differently on the two clocks (the caller retries).
fn run(rs: &RuleSet, class: Class) -> Option<Vec<String>> {
    let prefixes = |l: &[&str]| l.iter().map(|s| s.parse::<Prefix>().unwrap()).collect::<Vec<_>>();
    let cfg = GuardConfig {
        allow: prefixes(rs.allow),
        deny: prefixes(rs.deny),
        rate_per_address: rs.per_address,
        rate_per_prefix: rs.per_prefix,
        ..GuardConfig::default()
    };
    let guard = Guard::new(&cfg);
    let mut x: Xdp = load()?;
    x.set_services(&Services {
        destinations: Destinations::Only(vec![ip(SVC4), ip(SVC6)]),
        tcp_ports: vec![443],
        dns_ports: vec![53],
    })
    .unwrap();
    x.replace_prefixes(List::Allow, cfg.allow.iter().copied()).unwrap();
    x.replace_prefixes(List::Deny, cfg.deny.iter().copied()).unwrap();
    x.set_rates(&match class {
        Class::Syn => Rates {
            syn_per_address: rs.per_address,
            syn_per_prefix: rs.per_prefix,
            ..Rates::default()
        },
        Class::Dns => Rates {
            dns_per_address: rs.per_address,
            dns_per_prefix: rs.per_prefix,
            ..Rates::default()
        },
    })
    .unwrap();

    let start = Instant::now();
    let mut mismatches = Vec::new();
    for (src, vlan) in sources() {
        let want = expected(guard.admit(src, start.elapsed()), class);
        let (_, got) = judge(&x, &frame(src, vlan, class));
        if got != want {
            mismatches.push(format!(
                "{} / {class:?} / {src}{}: guard {want:?}, xdp {got:?}",
                rs.name,
                if vlan { " (VLAN)" } else { "" }
            ));
        }
    }
    if start.elapsed() > Duration::from_millis(800) {
        return None;
    }
    Some(mismatches)
}

#[test]
fn xdp_verdicts_match_the_userspace_guard() {
    if load().is_none() {
        return;
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for rs in RULE_SETS {
        for class in [Class::Syn, Class::Dns] {
            let mut result = None;
            for _ in 0..5 {
                result = run(rs, class);
                if result.is_some() {
                    break;
                }
            }
            let Some(m) = result else {
                panic!(
                    "{} / {class:?}: five runs over 800 ms; machine too slow to compare 1/s rates",
                    rs.name
                );
            };
            failures.extend(m);
            compared += 1;
        }
    }
    assert_eq!(compared, RULE_SETS.len() * 2);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The table must exercise every verdict, or parity proves little.
#[test]
fn the_table_covers_every_verdict() {
    let mut seen = std::collections::BTreeSet::new();
    let start = Instant::now();
    for rs in RULE_SETS {
        let prefixes = |l: &[&str]| l.iter().map(|s| s.parse::<Prefix>().unwrap()).collect::<Vec<_>>();
        let guard = Guard::new(&GuardConfig {
            allow: prefixes(rs.allow),
            deny: prefixes(rs.deny),
            rate_per_address: rs.per_address,
            rate_per_prefix: rs.per_prefix,
            ..GuardConfig::default()
        });
        for (src, _) in sources() {
            seen.insert(format!("{:?}", guard.admit(src, start.elapsed())));
        }
    }
    for v in [
        "Admit",
        "Allowlisted",
        "Drop(DenyList)",
        "Drop(RateAddress)",
        "Drop(RatePrefix)",
    ] {
        assert!(seen.contains(v), "no packet gets {v}: {seen:?}");
    }
}
