//! The program attached for real: a sender and a receiver namespace joined
//! by a veth pair, the program in generic (SKB) mode on the receiver's end
//! (attached from a thread inside the receiver namespace), real UDP and TCP
//! traffic from many source addresses, and the counters afterwards.
//!
//! ```text
//!  snd  xs0 198.18.1.2/24 2001:db8:1::2/64     rcv  xr0 198.18.1.1/24 2001:db8:1::1/64  (XDP)
//!       sources: 198.18.100.0/22,          <->      services on lo: 198.18.200.1
//!       2001:db8:66::/48 (AnyIP on lo)                              2001:db8:200::1
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyedge_netns::{link, Netns};
use anyedge_xdp::{Counter, Counters, Destinations, Error, List, Mode, Prefix, Rates, Services, Xdp};
use common::*;

const SVC4: &str = "198.18.200.1";
const SVC6: &str = "2001:db8:200::1";
const RCV_IF: &str = "xr0";

struct Lab {
    snd: Netns,
    rcv: Netns,
}

/// The two namespaces, or None (after [`cannot_run`]) without root,
/// iproute2 or the program.
fn lab() -> Option<Lab> {
    if !is_root() {
        cannot_run("network namespaces and XDP need root");
        return None;
    }
    if let Some(why) = anyedge_xdp::unavailable_reason() {
        cannot_run(&format!("{why} (apt-get install clang libbpf-dev, then rebuild)"));
        return None;
    }
    let snd = match Netns::unique("snd") {
        Ok(n) => n,
        Err(e) => {
            cannot_run(&format!("cannot create a network namespace: {e}"));
            return None;
        }
    };
    let rcv = Netns::unique("rcv").expect("second namespace");
    link(
        &snd,
        "xs0",
        &["198.18.1.2/24", "2001:db8:1::2/64"],
        &rcv,
        RCV_IF,
        &["198.18.1.1/24", "2001:db8:1::1/64"],
    )
    .unwrap();
    // the sender owns whole ranges (AnyIP): any address in them is local
    snd.ip(&["route", "add", "local", "198.18.100.0/22", "dev", "lo"])
        .unwrap();
    snd.ip(&["-6", "route", "add", "local", "2001:db8:66::/48", "dev", "lo"])
        .unwrap();
    snd.ip(&["route", "add", "198.18.200.0/24", "via", "198.18.1.1"])
        .unwrap();
    snd.ip(&["-6", "route", "add", "2001:db8:200::/64", "via", "2001:db8:1::1"])
        .unwrap();
    rcv.ip(&["addr", "add", "198.18.200.1/32", "dev", "lo"]).unwrap();
    rcv.ip(&["-6", "addr", "add", "2001:db8:200::1/128", "dev", "lo", "nodad"])
        .unwrap();
    rcv.ip(&["route", "add", "198.18.100.0/22", "via", "198.18.1.2"])
        .unwrap();
    rcv.ip(&["-6", "route", "add", "2001:db8:66::/48", "via", "2001:db8:1::2"])
        .unwrap();
    // binding to AnyIP addresses needs this for IPv6 (IPv4 does without)
    snd.enter(|| std::fs::write("/proc/sys/net/ipv6/ip_nonlocal_bind", "1"))
        .expect("ip_nonlocal_bind");
    // neighbours resolved both ways before any test traffic
    snd.ip(&[
        "neigh",
        "replace",
        "198.18.1.1",
        "lladdr",
        &mac(&rcv, RCV_IF),
        "dev",
        "xs0",
    ])
    .unwrap();
    snd.ip(&[
        "-6",
        "neigh",
        "replace",
        "2001:db8:1::1",
        "lladdr",
        &mac(&rcv, RCV_IF),
        "dev",
        "xs0",
    ])
    .unwrap();
    rcv.ip(&[
        "neigh",
        "replace",
        "198.18.1.2",
        "lladdr",
        &mac(&snd, "xs0"),
        "dev",
        RCV_IF,
    ])
    .unwrap();
    rcv.ip(&[
        "-6",
        "neigh",
        "replace",
        "2001:db8:1::2",
        "lladdr",
        &mac(&snd, "xs0"),
        "dev",
        RCV_IF,
    ])
    .unwrap();
    Some(Lab { snd, rcv })
}

fn mac(ns: &Netns, ifname: &str) -> String {
    let out = ns.ip_output(&["-o", "link", "show", ifname]).unwrap();
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .expect("link/ether address")
        .to_string()
}

fn services() -> Services {
    Services {
        destinations: Destinations::Only(vec![ip(SVC4), ip(SVC6)]),
        tcp_ports: vec![443],
        dns_ports: vec![53],
    }
}

impl Lab {
    /// The program attached to the receiver's veth, from inside its
    /// namespace.
    fn attach(&self, mode: Mode) -> Xdp {
        self.rcv.enter(move || Xdp::attach(RCV_IF, mode)).expect("attach")
    }

    /// UDP sockets bound in the receiver namespace.
    fn udp_listen(&self, addrs: &[&str]) -> Vec<UdpSocket> {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.rcv.enter(move || {
            addrs
                .iter()
                .map(|a| {
                    let s = UdpSocket::bind(a).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                    s
                })
                .collect()
        })
    }

    /// Sends `count` datagrams of `size` bytes from each source to `dst`.
    fn send_udp(&self, plan: &[(&str, usize, &str, usize)]) {
        let plan: Vec<(IpAddr, usize, SocketAddr, usize)> = plan
            .iter()
            .map(|(s, n, d, size)| (ip(s), *n, d.parse().unwrap(), *size))
            .collect();
        self.snd.enter(move || {
            for (src, n, dst, size) in plan {
                let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
                for i in 0..n {
                    let payload = vec![i as u8; size];
                    s.send_to(&payload, dst)
                        .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
                }
            }
        });
    }
}

/// Datagrams received per source until the sockets stay quiet.
fn received(sockets: &[UdpSocket]) -> BTreeMap<IpAddr, usize> {
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 65536];
    for s in sockets {
        loop {
            match s.recv_from(&mut buf) {
                Ok((_, from)) => *out.entry(from.ip()).or_insert(0) += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    out
}

fn got(m: &BTreeMap<IpAddr, usize>, a: &str) -> usize {
    m.get(&ip(a)).copied().unwrap_or(0)
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn counts(d: &Counters) -> Vec<(Counter, u64)> {
    d.iter().filter(|(_, n)| *n > 0).collect()
}

#[test]
fn udp_deny_allow_and_dns_rate() {
    let Some(lab) = lab() else { return };
    let mut x = lab.attach(Mode::Generic);
    assert_eq!(x.interfaces().collect::<Vec<_>>(), vec![RCV_IF]);
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Allow, [p("198.18.100.7")]).unwrap();
    x.replace_prefixes(List::Deny, [p("198.18.100.0/24"), p("2001:db8:66:1::/64")])
        .unwrap();
    x.set_rates(&Rates {
        dns_per_address: rate(1, 5),
        ..Rates::default()
    })
    .unwrap();
    let socks = lab.udp_listen(&["198.18.200.1:53", "[2001:db8:200::1]:53"]);
    let before = x.counters().unwrap();
    let (d4, d6) = ("198.18.200.1:53", "[2001:db8:200::1]:53");
    lab.send_udp(&[
        ("198.18.100.5", 3, d4, 40),      // denied
        ("198.18.100.7", 10, d4, 40),     // allowlisted inside the denied /24: no rate either
        ("198.18.101.5", 10, d4, 40),     // rate: burst 5
        ("2001:db8:66:1::5", 3, d6, 40),  // denied
        ("2001:db8:66:2::5", 10, d6, 40), // rate: burst 5
    ]);
    let r = received(&socks);
    let d = x.counters().unwrap().since(&before);
    assert_eq!(got(&r, "198.18.100.5"), 0, "{r:?}");
    assert_eq!(got(&r, "198.18.100.7"), 10, "{r:?}");
    assert_eq!(got(&r, "198.18.101.5"), 5, "{r:?}");
    assert_eq!(got(&r, "2001:db8:66:1::5"), 0, "{r:?}");
    assert_eq!(got(&r, "2001:db8:66:2::5"), 5, "{r:?}");
    assert_eq!(d.get(Counter::DropDeny), 6, "{:?}", counts(&d));
    assert_eq!(d.get(Counter::PassAllowlist), 10, "{:?}", counts(&d));
    assert_eq!(d.get(Counter::DropDnsRateAddress), 10, "{:?}", counts(&d));
    assert_eq!(d.get(Counter::Pass), 10, "{:?}", counts(&d));
    assert_eq!(d.get(Counter::DropFragment), 0);

    // the same source to a non-service address on the receiver: untouched
    let other = lab.udp_listen(&["198.18.1.1:53"]);
    lab.send_udp(&[("198.18.100.5", 3, "198.18.1.1:53", 40)]);
    assert_eq!(got(&received(&other), "198.18.100.5"), 3);
}

#[test]
fn tcp_syn_rate_and_deny() {
    let Some(lab) = lab() else { return };
    let mut x = lab.attach(Mode::Generic);
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Deny, [p("198.18.102.0/24")]).unwrap();
    x.set_rates(&Rates {
        syn_per_address: rate(1, 3),
        ..Rates::default()
    })
    .unwrap();
    let listeners: Vec<TcpListener> = lab.rcv.enter(|| {
        ["198.18.200.1:443", "[2001:db8:200::1]:443"]
            .iter()
            .map(|a| {
                let l = TcpListener::bind(a).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect()
    });
    let before = x.counters().unwrap();
    // 8 connection attempts at once from each source; dropped SYNs would be
    // retransmitted after 1 s, so everything is counted well before that
    let plan: Vec<(IpAddr, SocketAddr)> = [
        ("198.18.101.9", "198.18.200.1:443"),
        ("198.18.102.1", "198.18.200.1:443"),
        ("2001:db8:66:3::9", "[2001:db8:200::1]:443"),
    ]
    .iter()
    .flat_map(|(s, d)| std::iter::repeat_n((ip(s), d.parse::<SocketAddr>().unwrap()), 8))
    .collect();
    let started = Instant::now();
    let clients = lab.snd.enter(move || {
        plan.into_iter()
            .map(|(src, dst)| {
                let domain = socket2::Domain::for_address(dst);
                let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
                s.bind(&SocketAddr::new(src, 0).into()).unwrap();
                s.set_nonblocking(true).unwrap();
                match s.connect(&dst.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => panic!("connect {src} -> {dst}: {e}"),
                }
                s
            })
            .collect::<Vec<_>>()
    });
    // accept until the expected 6 are in (or 800 ms), then a little longer
    // to catch any extra one
    let mut accepted: BTreeMap<IpAddr, Vec<TcpStream>> = BTreeMap::new();
    let mut settle = None;
    loop {
        for l in &listeners {
            while let Ok((s, from)) = l.accept() {
                accepted.entry(from.ip()).or_default().push(s);
            }
        }
        let n: usize = accepted.values().map(Vec::len).sum();
        if n >= 6 && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(100));
        }
        if settle.is_some_and(|t| Instant::now() >= t) || started.elapsed() > Duration::from_millis(800) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let d = x.counters().unwrap().since(&before);
    let quick = started.elapsed() < Duration::from_millis(900);
    let n = |a: &str| accepted.get(&ip(a)).map_or(0, Vec::len);
    assert_eq!(n("198.18.101.9"), 3, "burst 3: {accepted:?}");
    assert_eq!(n("198.18.102.1"), 0, "denied");
    assert_eq!(n("2001:db8:66:3::9"), 3, "burst 3");
    if quick {
        // before any SYN retransmission: exact
        assert_eq!(d.get(Counter::DropSynRateAddress), 10, "{:?}", counts(&d));
        assert_eq!(d.get(Counter::DropDeny), 8, "{:?}", counts(&d));
    } else {
        assert!(d.get(Counter::DropSynRateAddress) >= 10, "{:?}", counts(&d));
        assert!(d.get(Counter::DropDeny) >= 8, "{:?}", counts(&d));
    }
    // an admitted connection carries data both ways: ACKs are not SYNs
    let mut server = accepted.remove(&ip("198.18.101.9")).unwrap().remove(0);
    server.set_nonblocking(false).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer = server.peer_addr().unwrap();
    let client = clients
        .iter()
        .find(|c| {
            c.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a == peer)
        })
        .expect("the accepted client");
    client.set_nonblocking(false).unwrap();
    let mut client: TcpStream = client.try_clone().unwrap().into();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn fragments_to_service_addresses_are_dropped() {
    let Some(lab) = lab() else { return };
    let mut x = lab.attach(Mode::Generic);
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Allow, [p("198.18.100.7"), p("2001:db8:66:7::7")])
        .unwrap();
    let socks = lab.udp_listen(&["198.18.200.1:53", "[2001:db8:200::1]:53", "198.18.1.1:53"]);
    let before = x.counters().unwrap();
    // 3000 bytes over a 1500 MTU: three fragments each
    lab.send_udp(&[
        ("198.18.101.5", 1, "198.18.200.1:53", 3000),
        ("2001:db8:66:2::5", 1, "[2001:db8:200::1]:53", 3000),
        ("198.18.100.7", 1, "198.18.200.1:53", 3000),
        ("2001:db8:66:7::7", 1, "[2001:db8:200::1]:53", 3000),
        ("198.18.101.6", 1, "198.18.1.1:53", 3000),
        ("198.18.101.5", 1, "198.18.200.1:53", 500),
    ]);
    let r = received(&socks);
    let d = x.counters().unwrap().since(&before);
    assert_eq!(got(&r, "198.18.101.5"), 1, "only the small one: {r:?}");
    assert_eq!(got(&r, "2001:db8:66:2::5"), 0, "{r:?}");
    assert_eq!(got(&r, "198.18.100.7"), 1, "allowlisted sources pass fragments: {r:?}");
    assert_eq!(got(&r, "2001:db8:66:7::7"), 1, "{r:?}");
    assert_eq!(got(&r, "198.18.101.6"), 1, "not to a service address: {r:?}");
    assert_eq!(d.get(Counter::DropFragment), 6, "{:?}", counts(&d));
    assert_eq!(d.get(Counter::PassAllowlist), 6, "{:?}", counts(&d));
}

#[test]
fn attach_errors_modes_and_detach_on_drop() {
    let Some(lab) = lab() else { return };
    // "xdp" (native) or "xdpgeneric" in `ip link show`, or None
    let xdp_mode = |lab: &Lab| {
        let out = lab.rcv.ip_output(&["link", "show", RCV_IF]).unwrap();
        out.split_whitespace()
            .find(|w| w.starts_with("xdp"))
            .map(|w| w.split('/').next().unwrap_or(w).to_string())
    };

    let mut x = lab.attach(Mode::Generic);
    assert_eq!(xdp_mode(&lab).as_deref(), Some("xdpgeneric"));
    x.set_services(&services()).unwrap();
    x.replace_prefixes(List::Deny, [p("198.18.100.0/24")]).unwrap();
    let socks = lab.udp_listen(&["198.18.200.1:53"]);
    lab.send_udp(&[("198.18.100.5", 2, "198.18.200.1:53", 40)]);
    assert_eq!(got(&received(&socks), "198.18.100.5"), 0);

    // errors: the same interface twice, unknown and invalid names
    let err = lab.rcv.enter(move || {
        let e1 = x.attach_to(RCV_IF, Mode::Generic).unwrap_err();
        let e2 = x.attach_to("nosuch0", Mode::Generic).unwrap_err();
        let e3 = x.attach_to("bad/name", Mode::Generic).unwrap_err();
        let e4 = x.attach_to("", Mode::Generic).unwrap_err();
        (x, [e1, e2, e3, e4])
    });
    let (x, [e1, e2, e3, e4]) = err;
    assert!(matches!(e1, Error::AlreadyAttached(_)), "{e1}");
    assert!(matches!(e2, Error::Attach { .. }), "{e2}");
    assert!(e2.to_string().contains("nosuch0"), "{e2}");
    assert!(matches!(e3, Error::InterfaceName(_)), "{e3}");
    assert!(matches!(e4, Error::InterfaceName(_)), "{e4}");

    // dropping detaches: the denied source gets through again
    drop(x);
    assert_eq!(xdp_mode(&lab), None);
    lab.send_udp(&[("198.18.100.5", 2, "198.18.200.1:53", 40)]);
    assert_eq!(got(&received(&socks), "198.18.100.5"), 2);

    // native mode (veth has a native XDP driver), then explicit detach
    let mut x = lab.attach(Mode::Native);
    assert_eq!(xdp_mode(&lab).as_deref(), Some("xdp"));
    x.detach().unwrap();
    assert_eq!(x.interfaces().count(), 0);
    assert_eq!(xdp_mode(&lab), None);
    // still usable for rules after detaching
    x.set_services(&services()).unwrap();
}
