//! Packets per second the tunnel path's program forwards on one core, for
//! `bench/tunnel.sh` (not a test). `BPF_PROG_TEST_RUN` runs the guard +
//! tunnel program on one client TCP segment of an established flow, as
//! received on a veth in a scratch namespace (route and neighbour of the
//! backend in place, so every run takes the real path: guard, VIP and flow
//! lookups, IPIP encapsulation, `bpf_fib_lookup`, redirect), CALLS times
//! with repeat 1 (a repeat reuses the already encapsulated buffer, and the
//! live-frames mode used by xdp-trafficgen does not restore the bytes a
//! program rewrote either), summing the kernel's per-run `duration`.
//! Prints `ns_per_packet` and `mpps` = 1000 / ns: the program's cost on one
//! core, not a wire measurement (no NIC, driver RX or the redirect's
//! transmit).
//!
//!   cargo run --release -p anyedge-xdp --example tunnel_pps [CALLS]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use anyedge_netns::Netns;
use anyedge_xdp::decap::Decap;
use anyedge_xdp::{Encap, Mode, Options, Proto, TunnelBackend, TunnelService, TunnelSource, Xdp};

// `BPF_PROG_TEST_RUN` and `ifindex`, as the tests run them
#[path = "../tests/common/mod.rs"]
mod common;
use common::{ifindex, test_run_timed};

/// Ethernet + IPv4 + TCP ACK from 198.18.1.2:40000 to 198.18.200.1:80.
fn frame() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20u16 + 20 + 64).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 18, 1, 2]);
    ip[16..20].copy_from_slice(&[198, 18, 200, 1]);
    let mut s: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10;
    f.extend_from_slice(&t);
    f.extend_from_slice(&[0u8; 64]);
    f
}

fn main() {
    let repeat: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let ns = Netns::unique("pps").expect("namespace (root?)");
    for a in [
        "link add in0 type veth peer name in1",
        "link add out0 type veth peer name out1",
        "link set in0 up",
        "link set in1 up",
        "link set out0 up",
        "link set out1 up",
        "addr add 198.18.1.1/24 dev in0",
        "addr add 198.18.3.1/24 dev out0",
        "neigh replace 198.18.3.2 lladdr 02:00:00:00:03:02 dev out0 nud permanent",
    ] {
        ns.ip(&a.split(' ').collect::<Vec<_>>()).unwrap();
    }
    ns.sysctl("net.ipv4.ip_forward=1").unwrap();
    let ns_per_packet = ns.enter(move || {
        // the sink: out1 drops every encapsulated packet in XDP
        let mut sink = Decap::load().unwrap();
        sink.attach_to("out1", Mode::Native).unwrap();
        let mut x = Xdp::load(&Options::default()).unwrap();
        x.set_tunnel_source(&TunnelSource {
            v4: Some((Ipv4Addr::new(198, 18, 9, 0), 24)),
            v6: None,
        })
        .unwrap();
        let svc = TunnelService {
            vip: IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1)),
            port: 80,
            proto: Proto::Tcp,
            encap: Encap::Ipip,
            underlay_mtu: 1600,
        };
        let b = TunnelBackend {
            name: "n1".into(),
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, 2)),
            weight: 1,
            eligible: true,
        };
        x.set_tunnel_service("web", &svc, &[b]).unwrap();
        let f = frame();
        let ifi = ifindex("in0");
        for _ in 0..10_000 {
            test_run_timed(x.program_fd().unwrap(), &f, ifi); // warm up, flow in the table
        }
        let before = x.tunnel_counters().unwrap();
        let fd = x.program_fd().unwrap();
        let mut total: u64 = 0;
        for _ in 0..repeat {
            let (action, ns) = test_run_timed(fd, &f, ifi);
            assert_eq!(action, 4, "XDP_REDIRECT");
            total += u64::from(ns);
        }
        let after = x.tunnel_counters().unwrap();
        let tx = |c: &[anyedge_xdp::TunnelCounts]| c[0].get(anyedge_xdp::TunnelVerdict::TxFlow);
        assert_eq!(tx(&after) - tx(&before), u64::from(repeat), "every run forwarded");
        drop(sink);
        total as f64 / f64::from(repeat)
    });
    println!(
        "calls={repeat} ns_per_packet={ns_per_packet:.1} mpps={:.2}",
        1e3 / ns_per_packet.max(1.0)
    );
}
