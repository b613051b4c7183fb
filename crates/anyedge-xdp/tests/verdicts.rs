//! The program's verdicts on crafted frames, run in the kernel with
//! `BPF_PROG_TEST_RUN` (no interface needed): each rule, each parser path,
//! and the counter each frame bumps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use anyedge_testkit::wait_until;
use anyedge_xdp::{Changes, Counter, Destinations, Error, List, Options, Prefix, Rates, Services};
use common::*;

const SVC4: &str = "198.18.200.1";
const SVC6: &str = "2001:db8:200::1";

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn services() -> Services {
    Services {
        destinations: Destinations::Only(vec![ip(SVC4), ip(SVC6)]),
        tcp_ports: vec![443, 53],
        dns_ports: vec![53],
    }
}

fn check(x: &anyedge_xdp::Xdp, cases: &[(&str, Frame, Counter)]) {
    let mut failures = Vec::new();
    for (name, frame, want) in cases {
        let (_, got) = judge(x, &frame.build());
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rules_parsing_and_counters() {
    let Some(mut x) = load() else { return };
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Allow, [p("198.18.100.7"), p("2001:db8:66::7")])
        .unwrap();
    x.replace_prefixes(List::Deny, [p("198.18.100.0/24"), p("2001:db8:66::/64")])
        .unwrap();

    let (svc4, svc6) = (ip(SVC4), ip(SVC6));
    let denied4 = ip("198.18.100.5");
    let allowed4 = ip("198.18.100.7");
    let other4 = ip("198.18.101.5");
    let denied6 = ip("2001:db8:66::5");
    let allowed6 = ip("2001:db8:66::7");
    let other6 = ip("2001:db8:67::5");
    // a SYN to the HTTPS port; a UDP datagram to the DNS port, fragmented
    let syn = |src, dst| Frame::syn(src, dst, 443);
    let frag = |src, dst, offset, more| Frame::udp(src, dst, 53).fragment(offset, more);
    use Counter::*;
    let cases = [
        ("v4 denied SYN", syn(denied4, svc4), DropDeny),
        ("v4 allowlisted inside a denied /24", syn(allowed4, svc4), PassAllowlist),
        ("v4 other source", syn(other4, svc4), Pass),
        (
            "denied source to a non-service address",
            syn(denied4, ip("198.18.200.2")),
            PassNotService,
        ),
        ("denied ICMP", Frame::new(denied4, svc4, L4::Icmp), DropDeny),
        ("denied UDP, any port", Frame::udp(denied4, svc4, 9999), DropDeny),
        ("denied TCP ACK", Frame::ack(denied4, svc4, 443), DropDeny),
        ("802.1Q tagged denied", syn(denied4, svc4).vlan(0x8100, 10), DropDeny),
        ("802.1ad tagged denied", syn(denied4, svc4).vlan(0x88a8, 20), DropDeny),
        ("802.1Q tagged other", syn(other4, svc4).vlan(0x8100, 10), Pass),
        ("v6 denied SYN", syn(denied6, svc6), DropDeny),
        ("v6 allowlisted inside a denied /64", syn(allowed6, svc6), PassAllowlist),
        ("v6 other source", syn(other6, svc6), Pass),
        ("v6 tagged denied", syn(denied6, svc6).vlan(0x8100, 7), DropDeny),
        (
            "v6 to a non-service address",
            syn(denied6, ip("2001:db8:200::2")),
            PassNotService,
        ),
        (
            "IPv4-mapped source is the IPv4 source",
            syn(ip("::ffff:198.18.100.5"), svc6),
            DropDeny,
        ),
        (
            "IPv4-mapped allowlisted",
            syn(ip("::ffff:198.18.100.7"), svc6),
            PassAllowlist,
        ),
        ("IPv4-mapped other", syn(ip("::ffff:198.18.101.5"), svc6), Pass),
        ("ICMPv6 other", Frame::new(other6, svc6, L4::Icmp), Pass),
        ("truncated IPv4 header", syn(denied4, svc4).truncate(30), PassUnparsed),
        ("truncated IPv6 header", syn(denied6, svc6).truncate(30), PassUnparsed),
        ("truncated TCP header", syn(other4, svc4).truncate(10), DropMalformed),
        (
            "truncated UDP header",
            Frame::new(other6, svc6, L4::Udp { dport: 53, payload: 0 }).truncate(4),
            DropMalformed,
        ),
        ("v4 first fragment", frag(other4, svc4, 0, true), DropFragment),
        ("v4 later fragment", frag(other4, svc4, 185, false), DropFragment),
        ("v4 fragment, allowlisted", frag(allowed4, svc4, 0, true), PassAllowlist),
        ("v4 fragment, denied", frag(denied4, svc4, 0, true), DropDeny),
        (
            "v4 fragment to a non-service address",
            frag(other4, ip("198.18.200.9"), 0, true),
            PassNotService,
        ),
        ("v6 fragment header", frag(other6, svc6, 0, true), DropFragment),
        ("v6 later fragment", frag(other6, svc6, 100, false), DropFragment),
        ("v6 atomic fragment", frag(other6, svc6, 0, false), DropFragment),
        (
            "v6 fragment after extension headers",
            Frame::udp(other6, svc6, 53).ext(&[0, 60]).fragment(0, true),
            DropFragment,
        ),
        ("v6 fragment, allowlisted", frag(allowed6, svc6, 0, true), PassAllowlist),
        (
            "v6 extension headers, then UDP",
            Frame::udp(other6, svc6, 53).ext(&[0, 43, 60, 51]),
            Pass,
        ),
        (
            "v6 8 extension headers, then TCP",
            syn(other6, svc6).ext(&[60; 8]),
            Pass,
        ),
        ("v6 9 extension headers", syn(other6, svc6).ext(&[60; 9]), DropMalformed),
        (
            "v6 truncated extension header",
            Frame::new(other6, svc6, L4::Udp { dport: 53, payload: 0 })
                .ext(&[60])
                .truncate(12),
            DropMalformed,
        ),
    ];
    check(&x, &cases);
    let (action, c) = judge(&x, &arp());
    assert_eq!((action, c), (XDP_PASS, PassNotIp));
    // a frame shorter than an Ethernet header cannot be test-run (the
    // kernel wants 14 bytes); an Ethernet header alone is "unparsed"
    let (_, c) = judge(&x, &Frame::syn(other4, svc4, 443).build()[..14]);
    assert_eq!(c, PassUnparsed);

    // the totals add up per counter
    let total = x.counters().unwrap();
    let mut want = [0u64; 12];
    for (_, _, c) in &cases {
        want[Counter::ALL.iter().position(|a| a == c).unwrap()] += 1;
    }
    want[Counter::ALL.iter().position(|a| *a == PassNotIp).unwrap()] += 1;
    want[Counter::ALL.iter().position(|a| *a == PassUnparsed).unwrap()] += 1;
    let got: Vec<u64> = Counter::ALL.iter().map(|&c| total.get(c)).collect();
    assert_eq!(got, want.to_vec());
    assert_eq!(total.dropped() + total.passed(), cases.len() as u64 + 2);
}

#[test]
fn nothing_is_judged_before_services_are_set() {
    let Some(mut x) = load() else { return };
    x.replace_prefixes(List::Deny, [p("0.0.0.0/0"), p("::/0")]).unwrap();
    let (action, c) = judge(&x, &Frame::syn(ip("198.18.100.5"), ip(SVC4), 443).build());
    assert_eq!((action, c), (XDP_PASS, Counter::PassNotService));
    // Any: every destination is a service destination
    x.set_services(&Services {
        destinations: Destinations::Any,
        ..services()
    })
    .unwrap();
    let (_, c) = judge(&x, &Frame::syn(ip("198.18.100.5"), ip("198.18.1.1"), 22).build());
    assert_eq!(c, Counter::DropDeny);
    let (_, c) = judge(&x, &Frame::syn(ip("2001:db8:1::5"), ip("2001:db8:2::1"), 22).build());
    assert_eq!(c, Counter::DropDeny);
    // back to a list: only that address
    x.set_services(&Services {
        destinations: Destinations::Only(vec![ip("198.18.200.9")]),
        ..services()
    })
    .unwrap();
    let (_, c) = judge(&x, &Frame::syn(ip("198.18.100.5"), ip(SVC4), 443).build());
    assert_eq!(c, Counter::PassNotService);
    let (_, c) = judge(&x, &Frame::syn(ip("198.18.100.5"), ip("198.18.200.9"), 443).build());
    assert_eq!(c, Counter::DropDeny);
}

#[test]
fn syn_rate_per_address() {
    let Some(mut x) = load() else { return };
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Allow, [p("198.18.100.7")]).unwrap();
    x.set_rates(&Rates {
        syn_per_address: rate(1, 3),
        ..Rates::default()
    })
    .unwrap();
    let fd = x.program_fd().unwrap();
    let src = ip("198.18.101.9");
    let before = x.counters().unwrap();
    let burst_at = Instant::now();
    assert_eq!(
        test_run_repeat(fd, &Frame::syn(src, ip(SVC4), 443).build(), 10),
        XDP_DROP
    );
    let d = delta(&x, &before);
    assert_eq!(
        (d.get(Counter::Pass), d.get(Counter::DropSynRateAddress)),
        (3, 7),
        "{d:?}"
    );
    use Counter::*;
    check(
        &x,
        &[
            ("the next SYN", Frame::syn(src, ip(SVC4), 443), DropSynRateAddress),
            ("another address", Frame::syn(ip("198.18.101.10"), ip(SVC4), 443), Pass),
            ("ACK of an established connection", Frame::ack(src, ip(SVC4), 443), Pass),
            (
                "SYN+ACK is not a new connection",
                Frame::new(
                    src,
                    ip(SVC4),
                    L4::Tcp {
                        dport: 443,
                        flags: SYN | ACK,
                    },
                ),
                Pass,
            ),
            (
                "SYN to a port that is not a service port",
                Frame::syn(src, ip(SVC4), 80),
                Pass,
            ),
            (
                "UDP to the DNS port: no DNS rate set",
                Frame::udp(src, ip(SVC4), 53),
                Pass,
            ),
            (
                "IPv4 options before the TCP header",
                Frame::syn(src, ip(SVC4), 443).ip_options(3),
                DropSynRateAddress,
            ),
            ("IPv4 options, ACK", Frame::ack(src, ip(SVC4), 443).ip_options(10), Pass),
            (
                "IPv4 options, truncated TCP header",
                Frame::syn(src, ip(SVC4), 443).ip_options(2).truncate(1),
                DropMalformed,
            ),
            (
                "the same source over IPv4-mapped IPv6",
                Frame::syn(ip("::ffff:198.18.101.9"), ip(SVC6), 443),
                DropSynRateAddress,
            ),
        ],
    );
    // allowlisted sources are never limited
    let before = x.counters().unwrap();
    test_run_repeat(fd, &Frame::syn(ip("198.18.100.7"), ip(SVC4), 443).build(), 20);
    assert_eq!(delta(&x, &before).get(Counter::PassAllowlist), 20);
    // IPv6
    let before = x.counters().unwrap();
    test_run_repeat(fd, &Frame::syn(ip("2001:db8:67::9"), ip(SVC6), 53).build(), 10);
    let d = delta(&x, &before);
    assert_eq!((d.get(Counter::Pass), d.get(Counter::DropSynRateAddress)), (3, 7));
    // refill: one more token a second after the burst (a refused SYN
    // takes none, so polling does not delay it), and only one
    wait_until(
        "a SYN from the limited source passes again",
        Duration::from_secs(3),
        || {
            let (_, c) = judge(&x, &Frame::syn(src, ip(SVC4), 443).build());
            if c == Pass {
                Ok(())
            } else {
                Err(c)
            }
        },
    );
    let refilled = burst_at.elapsed();
    assert!(refilled >= Duration::from_millis(950), "refilled after {refilled:?}");
    check(&x, &[("only one", Frame::syn(src, ip(SVC4), 443), DropSynRateAddress)]);
}

/// What `frames` bump, run one by one.
fn count(x: &anyedge_xdp::Xdp, frames: impl IntoIterator<Item = Frame>) -> anyedge_xdp::Counters {
    let before = x.counters().unwrap();
    for f in frames {
        test_run(x, &f.build());
    }
    delta(x, &before)
}

/// Runs `frames` and asserts how many passed and how many `dropped` took.
fn assert_split(x: &anyedge_xdp::Xdp, frames: impl IntoIterator<Item = Frame>, dropped: Counter, want: (u64, u64)) {
    let d = count(x, frames);
    assert_eq!((d.get(Counter::Pass), d.get(dropped)), want, "{d:?}");
}

#[test]
fn prefix_rates_and_dns_rates() {
    let Some(mut x) = load() else { return };
    x.set_services(&services()).unwrap();
    x.set_rates(&Rates {
        syn_per_prefix: rate(1, 5),
        dns_per_address: rate(1, 2),
        ..Rates::default()
    })
    .unwrap();
    let syn = |src: String, dst| Frame::syn(ip(&src), ip(dst), 443);
    let dns = |src: String, dst| Frame::udp(ip(&src), ip(dst), 53);
    use Counter::*;
    // IPv4: one /24, 20 addresses
    let frames = (1..=20).map(|h| syn(format!("198.18.102.{h}"), SVC4));
    assert_split(&x, frames, DropSynRatePrefix, (5, 15));
    // the next /24 is independent
    let d = count(&x, [Frame::syn(ip("198.18.103.1"), ip(SVC4), 443)]);
    assert_eq!(d.get(Pass), 1);
    // IPv6: one /64, 20 addresses
    let frames = (1..=20).map(|h| syn(format!("2001:db8:70:1::{h:x}"), SVC6));
    assert_split(&x, frames, DropSynRatePrefix, (5, 15));
    // rotating over /64s of one /48: the /48 has 4x the burst (20), and the
    // /64 above already took 5 of it
    let frames = (2..=40).map(|n| syn(format!("2001:db8:70:{n:x}::1"), SVC6));
    assert_split(&x, frames, DropSynRatePrefix, (15, 24));
    // DNS: per address, separate from the SYN state
    let frames = (0..5).map(|_| dns("198.18.104.1".into(), SVC4));
    assert_split(&x, frames, DropDnsRateAddress, (2, 3));
    let d = count(&x, [Frame::syn(ip("198.18.104.1"), ip(SVC4), 53)]);
    assert_eq!(d.get(Pass), 1, "TCP to 53 has the SYN limits");
    let frames = (0..5).map(|_| dns("2001:db8:71::1".into(), SVC6));
    assert_split(&x, frames, DropDnsRateAddress, (2, 3));
    // UDP to a port that is not a DNS port is not limited
    let d = count(&x, (0..5).map(|_| Frame::udp(ip("198.18.104.1"), ip(SVC4), 443)));
    assert_eq!(d.get(Pass), 5);
    // DNS per prefix
    x.set_rates(&Rates {
        dns_per_prefix: rate(1, 3),
        ..Rates::default()
    })
    .unwrap();
    let frames = (1..=10).map(|h| dns(format!("198.18.105.{h}"), SVC4));
    assert_split(&x, frames, DropDnsRatePrefix, (3, 7));
    // removing the port removes the limit
    x.set_services(&Services {
        dns_ports: vec![],
        ..services()
    })
    .unwrap();
    let d = count(&x, (1..=10).map(|h| dns(format!("198.18.105.{h}"), SVC4)));
    assert_eq!(d.get(Pass), 10);
}

#[test]
fn prefix_list_sync_and_expiry() {
    let Some(mut x) = load() else { return };
    x.set_services(&services()).unwrap();
    let s = |a: &str| Frame::syn(ip(a), ip(SVC4), 443).build();
    let secs = Duration::from_secs;

    // a dynamic block until t=10s, and the configured list
    assert!(x.insert_prefix(List::Deny, p("198.18.100.66"), Some(secs(10))).unwrap());
    let ch = x
        .replace_prefixes(List::Deny, [p("198.18.110.0/24"), p("198.18.111.0/24")])
        .unwrap();
    assert_eq!(ch, Changes { added: 2, removed: 0 });
    assert_eq!(judge(&x, &s("198.18.100.66")).1, Counter::DropDeny);
    assert_eq!(judge(&x, &s("198.18.110.1")).1, Counter::DropDeny);
    assert_eq!(judge(&x, &s("198.18.111.1")).1, Counter::DropDeny);

    // a reload drops a configured entry but keeps the dynamic block
    let ch = x.replace_prefixes(List::Deny, [p("198.18.110.0/24")]).unwrap();
    assert_eq!(ch, Changes { added: 0, removed: 1 });
    assert_eq!(judge(&x, &s("198.18.111.1")).1, Counter::Pass);
    assert_eq!(judge(&x, &s("198.18.100.66")).1, Counter::DropDeny);
    let listed: Vec<(Prefix, Option<Duration>)> = x.prefixes(List::Deny).collect();
    assert_eq!(
        listed,
        vec![(p("198.18.100.66"), Some(secs(10))), (p("198.18.110.0/24"), None)]
    );

    // refresh, then expiry
    assert!(!x.insert_prefix(List::Deny, p("198.18.100.66"), Some(secs(20))).unwrap());
    assert_eq!(x.expire(secs(10)).unwrap(), 0);
    assert_eq!(judge(&x, &s("198.18.100.66")).1, Counter::DropDeny);
    assert_eq!(x.expire(secs(20)).unwrap(), 1);
    assert_eq!(judge(&x, &s("198.18.100.66")).1, Counter::Pass);

    // a permanent entry does not become an expiring one
    assert!(!x
        .insert_prefix(List::Deny, p("198.18.110.0/24"), Some(secs(1)))
        .unwrap());
    assert_eq!(x.expire(secs(100)).unwrap(), 0);
    assert_eq!(judge(&x, &s("198.18.110.1")).1, Counter::DropDeny);

    // allow beats deny, whatever the prefix lengths
    x.insert_prefix(List::Deny, p("198.18.112.7"), None).unwrap();
    x.insert_prefix(List::Allow, p("198.18.0.0/15"), None).unwrap();
    assert_eq!(judge(&x, &s("198.18.112.7")).1, Counter::PassAllowlist);
    assert!(x.remove_prefix(List::Allow, p("198.18.0.0/15")).unwrap());
    assert!(!x.remove_prefix(List::Allow, p("198.18.0.0/15")).unwrap());
    assert_eq!(judge(&x, &s("198.18.112.7")).1, Counter::DropDeny);

    // the guard's configuration in one call
    x.apply_guard_config(&anyedge_xdp::GuardConfig {
        allow: vec![p("198.18.112.7")],
        deny: vec![p("198.18.112.0/24")],
        rate_per_address: rate(1, 1),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(judge(&x, &s("198.18.112.7")).1, Counter::PassAllowlist);
    assert_eq!(judge(&x, &s("198.18.112.8")).1, Counter::DropDeny);
    assert_eq!(judge(&x, &s("198.18.110.1")).1, Counter::Pass);
    assert_eq!(judge(&x, &s("198.18.110.1")).1, Counter::DropSynRateAddress);
    assert_eq!(x.prefixes(List::Deny).count(), 1);
}

#[test]
fn full_tables_fail_without_losing_track() {
    let Some(mut x) = load_with(&Options {
        deny_capacity: 2,
        ..Options::default()
    }) else {
        return;
    };
    x.insert_prefix(List::Deny, p("198.18.120.0/24"), None).unwrap();
    x.insert_prefix(List::Deny, p("198.18.121.0/24"), None).unwrap();
    let e = x.insert_prefix(List::Deny, p("198.18.122.0/24"), None).unwrap_err();
    assert!(matches!(e, Error::Map { map: "AE_DENY", .. }), "{e}");
    assert!(e.to_string().contains("os error"), "the errno is in the message: {e}");
    assert_eq!(x.prefixes(List::Deny).count(), 2);
    // a replace that does not fit applies what fits and stays consistent
    let e = x
        .replace_prefixes(List::Deny, [p("198.18.123.0/24"), p("198.18.124.0/24")])
        .unwrap_err();
    assert!(matches!(e, Error::Map { .. }));
    assert_eq!(x.prefixes(List::Deny).count(), 2);
    // with room it converges
    x.replace_prefixes(List::Deny, []).unwrap();
    x.replace_prefixes(List::Deny, [p("198.18.123.0/24"), p("198.18.124.0/24")])
        .unwrap();
    assert_eq!(x.prefixes(List::Deny).count(), 2);
}
