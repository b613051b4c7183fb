//! Tunnel forwarding and the node's decapsulation, verdict by verdict, run
//! in the kernel with `BPF_PROG_TEST_RUN` on crafted frames (as the guard's
//! verdict and parity tests do). The PoP program runs as if received on a
//! veth in a scratch namespace that has routes and permanent neighbours for
//! the backends, so `bpf_fib_lookup` answers as on a PoP; the frames it
//! leaves are checked byte by byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyedge_netns::Netns;
use anyedge_xdp::decap::{Decap, DecapVerdict};
use anyedge_xdp::{Encap, Prefix, Proto, TunnelBackend, TunnelCounts, TunnelService, TunnelSource, TunnelVerdict, Xdp};
use common::*;

const XDP_TX: u32 = 3;
const VIP4: &str = "198.18.200.1";
const VIP6: &str = "2001:db8:200::1";
const B1: &str = "198.18.3.2";
const B2: &str = "198.18.3.3";
const B6: &str = "2001:db8:3::2";
const B_NO_NEIGH: &str = "198.18.3.9";
const B_NO_ROUTE: &str = "198.18.77.1";
const MAC1: [u8; 6] = [0x02, 0, 0, 0, 3, 2];
const MAC2: [u8; 6] = [0x02, 0, 0, 0, 3, 3];
const MAC6: [u8; 6] = [0x02, 0, 0, 0, 6, 2];

fn svc(vip: &str, port: u16, proto: Proto, encap: Encap) -> TunnelService {
    TunnelService {
        vip: ip(vip),
        port,
        proto,
        encap,
        underlay_mtu: 1600,
    }
}

fn backend(name: &str, addr: &str, eligible: bool) -> TunnelBackend {
    TunnelBackend {
        name: name.into(),
        addr: ip(addr),
        weight: 1,
        eligible,
    }
}

/// The scratch namespace: `tp0` (the PoP's interface) with routes and
/// permanent neighbours for B1, B2, B6; B_NO_NEIGH routed but unresolved.
fn namespace() -> Option<Netns> {
    if !is_root() {
        cannot_run("network namespaces and XDP need root");
        return None;
    }
    if let Some(why) = anyedge_xdp::unavailable_reason() {
        cannot_run(why);
        return None;
    }
    let ns = Netns::unique("tun").expect("namespace");
    ns.ip(&["link", "add", "tp0", "type", "veth", "peer", "name", "tp1"])
        .unwrap();
    ns.ip(&["link", "set", "tp0", "address", "02:00:00:00:03:01"]).unwrap();
    ns.ip(&["link", "set", "tp0", "up"]).unwrap();
    ns.ip(&["link", "set", "tp1", "up"]).unwrap();
    ns.sysctl("net.ipv4.ip_forward=1").unwrap();
    ns.sysctl("net.ipv6.conf.all.forwarding=1").unwrap();
    ns.ip(&["addr", "add", "198.18.3.1/24", "dev", "tp0"]).unwrap();
    ns.ip(&["addr", "add", "2001:db8:3::1/64", "dev", "tp0", "nodad"])
        .unwrap();
    for (a, mac) in [(B1, MAC1), (B2, MAC2), (B6, MAC6)] {
        let mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        ns.ip(&["neigh", "replace", a, "lladdr", &mac, "dev", "tp0", "nud", "permanent"])
            .unwrap();
    }
    Some(ns)
}

/// Runs one frame; returns the action, the frame out, and the tunnel
/// verdict it bumped (None: not tunnel traffic).
fn run(x: &Xdp, ifi: u32, frame: &[u8]) -> (u32, Vec<u8>, Option<TunnelVerdict>) {
    let before = x.tunnel_counters().unwrap();
    let (action, out) = test_run_io(x.program_fd().unwrap(), frame, ifi);
    let after = x.tunnel_counters().unwrap();
    let mut bumped = Vec::new();
    for (a, b) in after.iter().zip(&before) {
        for v in TunnelVerdict::ALL {
            let d = a.get(v) - b.get(v);
            if d > 0 {
                bumped.push((v, d));
            }
        }
    }
    assert!(bumped.len() <= 1 && bumped.iter().all(|(_, n)| *n == 1), "{bumped:?}");
    (action, out, bumped.first().map(|(v, _)| *v))
}

fn csum_ok(b: &[u8]) -> bool {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// The outer IPv4 header of an encapsulated frame: (proto, src, dst).
fn outer4(out: &[u8]) -> (u8, Ipv4Addr, Ipv4Addr) {
    assert_eq!(&out[12..14], &[0x08, 0x00], "outer ethertype IPv4");
    assert_eq!(out[14], 0x45);
    assert!(csum_ok(&out[14..34]), "outer IPv4 checksum");
    let total = u16::from_be_bytes([out[16], out[17]]) as usize;
    assert_eq!(total, out.len() - 14, "outer total length");
    let s = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    let d = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    (out[23], s, d)
}

fn counts(x: &Xdp, name: &str) -> TunnelCounts {
    x.tunnel_counters()
        .unwrap()
        .into_iter()
        .find(|c| c.service == name)
        .unwrap()
}

#[test]
fn pop_verdicts_encapsulation_and_tables() {
    let Some(ns) = namespace() else { return };
    ns.enter(move || {
        let ifi = ifindex("tp0");
        let mut x = load().expect("program");
        x.set_tunnel_source(&TunnelSource {
            v4: Some((Ipv4Addr::new(198, 18, 9, 0), 24)),
            v6: Some(("2001:db8:9::".parse().unwrap(), 112)),
        })
        .unwrap();
        let web = svc(VIP4, 80, Proto::Tcp, Encap::Ipip);
        let both = [backend("n1", B1, true), backend("n2", B2, true)];
        x.set_tunnel_service("web", &web, &both).unwrap();
        x.set_tunnel_service("dns", &svc(VIP4, 53, Proto::Udp, Encap::Gue { port: 6080 }), &both)
            .unwrap();
        x.set_tunnel_service(
            "web6",
            &svc(VIP6, 80, Proto::Tcp, Encap::Ipip),
            &[backend("n6", B6, true)],
        )
        .unwrap();
        let vip4 = ip(VIP4);
        let vip6 = ip(VIP6);
        let mac_of = |b: &str| if b == "n1" { MAC1 } else { MAC2 };
        let addr_of = |b: &str| -> Ipv4Addr { if b == "n1" { B1 } else { B2 }.parse().unwrap() };

        // 1. Parity with the proxy path's Maglev hash: 64 clients each go to
        // the node the userspace table names, in IPIP with a source from
        // the configured /24, MACs from the neighbour table, the inner
        // packet untouched.
        let mut seen_sources = std::collections::BTreeSet::new();
        let mut per_node = [0; 2];
        for i in 0..64u8 {
            let client = IpAddr::V4(Ipv4Addr::new(198, 18, 100 + i / 32, i));
            let frame = Frame::syn(client, vip4, 80).build();
            let (action, out, v) = run(&x, ifi, &frame);
            assert_eq!(action, XDP_TX, "client {client}");
            assert_eq!(v, Some(TunnelVerdict::TxNew));
            let want = x.tunnel_backend_for("web", client).unwrap().to_string();
            per_node[usize::from(want == "n2")] += 1;
            let (proto, src, dst) = outer4(&out);
            assert_eq!(proto, 4, "IPIP");
            assert_eq!(dst, addr_of(&want), "client {client} goes where the Maglev table says");
            assert_eq!(&src.octets()[..3], &[198, 18, 9]);
            seen_sources.insert(src);
            assert_eq!(&out[0..6], &mac_of(&want), "next hop MAC");
            assert_eq!(&out[6..12], &[0x02, 0, 0, 0, 3, 1], "our MAC");
            assert_eq!(&out[34..], &frame[14..], "inner packet untouched");
        }
        assert!(per_node[0] > 10 && per_node[1] > 10, "{per_node:?}");
        assert!(seen_sources.len() > 16, "outer sources spread: {}", seen_sources.len());

        // 2. The same flow again: from the connection table.
        let client = ip("198.18.100.1");
        let syn = Frame::syn(client, vip4, 80).build();
        let ack = Frame::ack(client, vip4, 80).build();
        let (_, first, _) = run(&x, ifi, &syn);
        assert_eq!(run(&x, ifi, &ack).2, Some(TunnelVerdict::TxFlow));
        let owner = x.tunnel_backend_for("web", client).unwrap().to_string();
        let other = if owner == "n1" { "n2" } else { "n1" };

        // 3. Draining the owner: its flow stays, new flows go to the other.
        let drained = [
            backend(&owner, if owner == "n1" { B1 } else { B2 }, false),
            backend(other, if other == "n1" { B1 } else { B2 }, true),
        ];
        x.set_tunnel_service("web", &web, &drained).unwrap();
        let (action, out, v) = run(&x, ifi, &ack);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::TxFlow)));
        assert_eq!(outer4(&out).2, addr_of(&owner), "a drained node keeps its flows");
        assert_eq!(outer4(&first).2, addr_of(&owner));
        let newcomer = Frame::syn(client, vip4, 80).truncate(0);
        let mut other_port = newcomer.build();
        other_port[34..36].copy_from_slice(&40001u16.to_be_bytes()); // new source port
        let (_, out, v) = run(&x, ifi, &other_port);
        assert_eq!(v, Some(TunnelVerdict::TxNew));
        assert_eq!(outer4(&out).2, addr_of(other), "new flows avoid the drained node");

        // 4. A TCP segment of an unknown flow after the change: the table.
        let stranger = ip("198.18.101.77");
        let (_, out, v) = run(&x, ifi, &Frame::ack(stranger, vip4, 80).build());
        assert_eq!(v, Some(TunnelVerdict::TxUnknown));
        assert_eq!(outer4(&out).2, addr_of(other));

        // 5. The owner removed: its flows fall back to the table.
        x.set_tunnel_service("web", &web, &drained[1..]).unwrap();
        let (_, out, v) = run(&x, ifi, &ack);
        assert_eq!(v, Some(TunnelVerdict::TxUnknown));
        assert_eq!(outer4(&out).2, addr_of(other));
        // and no backend at all
        x.set_tunnel_service("web", &web, &[]).unwrap();
        let (action, _, v) = run(&x, ifi, &syn);
        assert_eq!((action, v), (XDP_DROP, Some(TunnelVerdict::DropNoBackend)));
        x.set_tunnel_service("web", &web, &both).unwrap();

        // 6. UDP in GUE: outer UDP to 6080, the inner IP packet right after.
        let dgram = Frame::udp(client, vip4, 53).build();
        let (action, out, v) = run(&x, ifi, &dgram);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::TxNew)));
        let (proto, _, _) = outer4(&out);
        assert_eq!(proto, 17);
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 6080);
        assert!(
            u16::from_be_bytes([out[34], out[35]]) >= 0x8000,
            "source port from the flow hash"
        );
        assert_eq!(usize::from(u16::from_be_bytes([out[38], out[39]])), out.len() - 34);
        assert_eq!(&out[42..], &dgram[14..]);

        // 7. IPv6 in IP6IP6.
        let c6 = ip("2001:db8:66::5");
        let f6 = Frame::syn(c6, vip6, 80).build();
        let (action, out, v) = run(&x, ifi, &f6);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::TxNew)));
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert_eq!(out[20], 41, "IPv6-in-IPv6");
        assert_eq!(&out[38..54], &ip6(B6).octets());
        assert_eq!(&out[22..34], &ip6("2001:db8:9::").octets()[..12]);
        assert_eq!(usize::from(u16::from_be_bytes([out[18], out[19]])), out.len() - 54);
        assert_eq!(&out[0..6], &MAC6);
        assert_eq!(&out[54..], &f6[14..]);

        // 8. Bad input.
        let frag = |off, more| Frame::new(client, vip4, L4::Tcp { dport: 80, flags: ACK }).fragment(off, more);
        let cases: Vec<(&str, Vec<u8>, u32, Option<TunnelVerdict>)> = vec![
            (
                "first fragment",
                frag(0, true).build(),
                XDP_DROP,
                Some(TunnelVerdict::DropFragment),
            ),
            (
                "non-first fragment (no ports)",
                Frame::udp(client, vip4, 53).fragment(185, false).build(),
                XDP_DROP,
                Some(TunnelVerdict::DropFragment),
            ),
            (
                "v6 fragment",
                Frame::syn(c6, vip6, 80).fragment(0, true).build(),
                XDP_DROP,
                Some(TunnelVerdict::DropFragment),
            ),
            (
                "IPv4 options",
                Frame::syn(client, vip4, 80).ip_options(2).build(),
                XDP_DROP,
                Some(TunnelVerdict::DropIpOptions),
            ),
            (
                "truncated TCP header",
                Frame::syn(client, vip4, 80).truncate(10).build(),
                XDP_DROP,
                Some(TunnelVerdict::DropMalformed),
            ),
            (
                "another port of the VIP",
                Frame::syn(client, vip4, 8080).build(),
                XDP_PASS,
                None,
            ),
            (
                "UDP to the TCP port",
                Frame::udp(client, vip4, 80).build(),
                XDP_PASS,
                None,
            ),
            (
                "not a VIP",
                Frame::syn(client, ip("198.18.200.2"), 80).build(),
                XDP_PASS,
                None,
            ),
            (
                "ICMP echo to the VIP",
                Frame::new(client, vip4, L4::Icmp).build(),
                XDP_PASS,
                Some(TunnelVerdict::PassIcmp),
            ),
            (
                "truncated IPv4 header",
                Frame::syn(client, vip4, 80).truncate(30).build(),
                XDP_PASS,
                None,
            ),
        ];
        let mut failures = Vec::new();
        for (name, frame, want_action, want) in cases {
            let (action, _, v) = run(&x, ifi, &frame);
            if (action, v) != (want_action, want) {
                failures.push(format!("{name}: want {want_action} {want:?}, got {action} {v:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // 9. An ICMP error about a VIP flow goes to that flow's node.
        let mut quoted = Frame::syn(vip4, client, 40000).build()[14..].to_vec();
        quoted[20..22].copy_from_slice(&80u16.to_be_bytes()); // from VIP:80 to client:40000
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend_from_slice(&quoted[..28]);
        let mut err = Vec::new();
        err.extend_from_slice(&[0x02, 0, 0, 0, 3, 1, 0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
        let router: Ipv4Addr = "198.18.50.1".parse().unwrap();
        err.extend_from_slice(&ipv4_header(router, VIP4.parse().unwrap(), 1, icmp.len(), None, 0));
        err.extend_from_slice(&icmp);
        let (action, out, v) = run(&x, ifi, &err);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::TxIcmp)));
        assert_eq!(outer4(&out).2, addr_of(&owner), "the flow's node");
        assert_eq!(&out[34..], &err[14..]);

        // 10. Too big for the underlay: ICMP back, from the VIP.
        let big = Frame::new(
            client,
            vip4,
            L4::Udp {
                dport: 53,
                payload: 1600,
            },
        )
        .build();
        let (action, out, v) = run(&x, ifi, &big);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::IcmpTooBig)));
        assert_eq!(out.len(), 70);
        assert_eq!(&out[0..6], &big[6..12], "back to the sender's MAC");
        assert!(csum_ok(&out[14..34]));
        assert_eq!(&out[26..30], &ip4(VIP4).octets());
        assert_eq!(&out[30..34], &ip4("198.18.100.1").octets());
        assert_eq!((out[23], out[34], out[35]), (1, 3, 4), "ICMP fragmentation needed");
        assert_eq!(
            u16::from_be_bytes([out[40], out[41]]),
            1600 - 20 - 8,
            "MTU minus GUE in IPv4"
        );
        assert!(csum_ok(&out[34..70]), "ICMP checksum");
        assert_eq!(&out[42..70], &big[14..42], "quotes the header and 8 bytes");
        let big6 = Frame::new(c6, vip6, L4::Tcp { dport: 80, flags: ACK });
        let mut b6 = big6.build();
        b6.extend_from_slice(&[0u8; 1600]);
        let plen = u16::try_from(b6.len() - 54).unwrap();
        b6[18..20].copy_from_slice(&plen.to_be_bytes());
        let (action, out, v) = run(&x, ifi, &b6);
        assert_eq!((action, v), (XDP_TX, Some(TunnelVerdict::IcmpTooBig)));
        assert_eq!(out.len(), 110);
        assert_eq!((out[20], out[54]), (58, 2), "ICMPv6 packet too big");
        assert_eq!(u32::from_be_bytes([out[58], out[59], out[60], out[61]]), 1600 - 40);
        let mut pseudo = out[22..54].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 56, 0, 0, 0, 58]);
        pseudo.extend_from_slice(&out[54..110]);
        assert!(csum_ok(&pseudo), "ICMPv6 checksum");

        // 11. Next hop unresolved: the kernel forwards it; no route: dropped.
        x.set_tunnel_service("web", &web, &[backend("n9", B_NO_NEIGH, true)])
            .unwrap();
        let f = Frame::syn(ip("198.18.102.1"), vip4, 80).build();
        let (action, out, v) = run(&x, ifi, &f);
        assert_eq!((action, v), (XDP_PASS, Some(TunnelVerdict::PassNeigh)));
        assert_eq!(&out[0..12], &f[0..12], "still addressed to this host");
        assert_eq!(outer4(&out).2, ip4(B_NO_NEIGH));
        x.set_tunnel_service("web", &web, &[backend("nx", B_NO_ROUTE, true)])
            .unwrap();
        let (action, _, v) = run(&x, ifi, &Frame::syn(ip("198.18.102.2"), vip4, 80).build());
        assert_eq!((action, v), (XDP_DROP, Some(TunnelVerdict::DropNoRoute)));

        // 12. Counters per backend; removal restores plain passing.
        let c = counts(&x, "dns");
        assert!(c.backends.iter().map(|b| b.1).sum::<u64>() >= 1, "{c:?}");
        assert!(x.remove_tunnel_service("web").unwrap());
        let (action, _, v) = run(&x, ifi, &syn);
        assert_eq!((action, v), (XDP_PASS, None));
    });
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn decap_counts(d: &Decap) -> Vec<(DecapVerdict, u64)> {
    d.counters().unwrap()
}

fn decap_judge(d: &Decap, frame: &[u8]) -> (u32, Vec<u8>, DecapVerdict) {
    let before = decap_counts(d);
    let (action, out) = test_run_io(d.program_fd().unwrap(), frame, 1);
    let after = decap_counts(d);
    let bumped: Vec<DecapVerdict> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.1 > b.1)
        .map(|(a, _)| a.0)
        .collect();
    assert_eq!(bumped.len(), 1, "{bumped:?}");
    assert_eq!(action == XDP_DROP, bumped[0].is_drop());
    (action, out, bumped[0])
}

/// An encapsulated frame: `inner` (an Ethernet frame) in IPIP/GUE from `from`.
fn encapsulate(inner: &[u8], from: IpAddr, to: IpAddr, gue: Option<u16>) -> Vec<u8> {
    let ip_inner = &inner[14..];
    let inner_proto = if inner[12] == 0x08 { 4 } else { 41 };
    let mut payload = Vec::new();
    if let Some(port) = gue {
        payload.extend_from_slice(&40000u16.to_be_bytes());
        payload.extend_from_slice(&port.to_be_bytes());
        payload.extend_from_slice(&u16::try_from(8 + ip_inner.len()).unwrap().to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
    }
    payload.extend_from_slice(ip_inner);
    let proto = if gue.is_some() { 17 } else { inner_proto };
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (from, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ipv4_header(s, d, proto, payload.len(), None, 0));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&ipv6_header(s, d, proto, payload.len()));
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(&payload);
    f
}

#[test]
fn node_decapsulates_only_from_pop_sources() {
    if !is_root() {
        cannot_run("loading XDP programs needs root");
        return;
    }
    let mut d = match anyedge_xdp::decap::Decap::load() {
        Ok(d) => d,
        Err(e @ anyedge_xdp::Error::Unavailable(_)) => {
            cannot_run(&e.to_string());
            return;
        }
        Err(e) => panic!("{e}"),
    };
    d.set_from(&[
        "198.18.9.0/24".parse::<Prefix>().unwrap(),
        "2001:db8:9::/64".parse().unwrap(),
    ])
    .unwrap();
    d.set_vips(&[ip(VIP4), ip(VIP6)]).unwrap();
    d.set_gue_port(Some(6080)).unwrap();
    let client = ip("198.18.100.1");
    let inner = Frame::syn(client, ip(VIP4), 80).build();
    let inner6 = Frame::syn(ip("2001:db8:66::5"), ip(VIP6), 80).build();
    let pop = ip("198.18.9.77");
    let pop6 = ip("2001:db8:9::77");
    let node = ip("198.18.3.2");
    let node6 = ip("2001:db8:3::2");

    use DecapVerdict::*;
    for (name, frame, want_inner) in [
        ("IPIP", encapsulate(&inner, pop, node, None), &inner),
        ("GUE", encapsulate(&inner, pop, node, Some(6080)), &inner),
        ("IP6IP6", encapsulate(&inner6, pop6, node6, None), &inner6),
        ("IPv4 in IPv6", encapsulate(&inner, pop6, node6, None), &inner),
        ("GUE over IPv6", encapsulate(&inner6, pop6, node6, Some(6080)), &inner6),
    ] {
        let (action, out, v) = decap_judge(&d, &frame);
        assert_eq!((action, v), (XDP_PASS, Decap), "{name}");
        assert_eq!(&out[..12], &frame[..12], "{name}: MACs kept");
        assert_eq!(&out[12..], &want_inner[12..], "{name}: the client's packet, untouched");
    }
    let cases = [
        (
            "IPIP from a non-PoP source",
            encapsulate(&inner, ip("198.18.10.1"), node, None),
            DropNotFromPop,
        ),
        (
            "GUE from a non-PoP source",
            encapsulate(&inner, ip("198.18.10.1"), node, Some(6080)),
            DropNotFromPop,
        ),
        (
            "IP6IP6 from a non-PoP source",
            encapsulate(&inner6, ip("2001:db8:10::1"), node6, None),
            DropNotFromPop,
        ),
        (
            "to a non-VIP",
            encapsulate(&Frame::syn(client, ip("198.18.200.9"), 80).build(), pop, node, None),
            DropNotVip,
        ),
        (
            "protocol 4 carrying IPv6",
            {
                let mut f = encapsulate(&inner6, pop, node, None);
                f[23] = 4;
                f[24..26].fill(0);
                let c = ipv4_header(ip4("198.18.9.77"), ip4("198.18.3.2"), 4, f.len() - 34, None, 0);
                f[14..34].copy_from_slice(&c);
                f
            },
            DropMalformed,
        ),
        (
            "truncated inner",
            encapsulate(&inner, pop, node, None)[..40].to_vec(),
            DropMalformed,
        ),
        ("plain TCP", inner.clone(), PassNotEncap),
        ("UDP to another port", Frame::udp(pop, node, 6081).build(), PassNotEncap),
        ("ARP", arp(), PassNotEncap),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in cases {
        let (_, _, v) = decap_judge(&d, &frame);
        if v != want {
            failures.push(format!("{name}: want {want:?}, got {v:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
