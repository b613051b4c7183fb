//! Tunnel forwarding for real: a client, a PoP and two backend nodes in
//! network namespaces joined by veth pairs. The PoP's XDP program (native
//! veth mode) encapsulates packets to the VIP and redirects them to a node,
//! whose decapsulation program hands the client's own packet to the stack;
//! the node answers the client directly (its replies are routed back through
//! the PoP's kernel here, as any router would). nginx on the node, without
//! proxy_protocol, logs the client's real address and port.
//!
//! ```text
//!  cli c0 198.18.1.2/24 (+ .10-.29)   pop p0 198.18.1.1/24 (XDP: guard + tunnel)
//!         2001:db8:1::2/64     <->        2001:db8:1::1/64
//!                                     p1 198.18.3.1/24 2001:db8:3::1/64 <-> n1 n0 198.18.3.2 (decap)
//!                                     p2 198.18.4.1/24                  <-> n2 n0 198.18.4.2 (decap)
//!  underlay MTU 1600 (p1, p2), client side 1500; VIPs on the nodes' lo only:
//!  198.18.200.1, 2001:db8:200::1
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_netns::{link, Netns};
use anyedge_testkit::wait_until;
use anyedge_xdp::decap::{Decap, DecapVerdict};
use anyedge_xdp::{
    Destinations, Encap, Mode, Proto, Services, TunnelBackend, TunnelService, TunnelSource, TunnelVerdict, Xdp,
};
use common::*;

const VIP4: &str = "198.18.200.1";
const VIP6: &str = "2001:db8:200::1";
const N1: &str = "198.18.3.2";
const N1_6: &str = "2001:db8:3::2";
const N2: &str = "198.18.4.2";
const WEB: u16 = 80;
const ECHO: u16 = 7000;
const SINK: u16 = 9000;
const SINK_SMALL_MTU: u16 = 9001;
const UDP_ECHO: u16 = 5353;
const BIG: usize = 16 << 20;

struct Lab {
    cli: Netns,
    pop: Netns,
    n1: Netns,
    n2: Netns,
    dir: PathBuf,
    nginx: Option<Child>,
    stop: Arc<AtomicBool>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.nginx.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(ns: &Netns, args: &[&str]) {
    let st = ns.command(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

fn lab() -> Option<Lab> {
    if !is_root() {
        cannot_run("network namespaces and XDP need root");
        return None;
    }
    if let Some(why) = anyedge_xdp::unavailable_reason() {
        cannot_run(why);
        return None;
    }
    for bin in ["/usr/sbin/nginx", "/usr/sbin/ethtool"] {
        if !std::path::Path::new(bin).exists() {
            cannot_run(&format!("{bin} missing (apt-get install nginx ethtool)"));
            return None;
        }
    }
    let cli = Netns::unique("cli").unwrap();
    let pop = Netns::unique("pop").unwrap();
    let n1 = Netns::unique("n1").unwrap();
    let n2 = Netns::unique("n2").unwrap();
    link(
        &cli,
        "c0",
        &["198.18.1.2/24", "2001:db8:1::2/64"],
        &pop,
        "p0",
        &["198.18.1.1/24", "2001:db8:1::1/64"],
    )
    .unwrap();
    link(
        &pop,
        "p1",
        &["198.18.3.1/24", "2001:db8:3::1/64"],
        &n1,
        "n0",
        &[&format!("{N1}/24"), &format!("{N1_6}/64")],
    )
    .unwrap();
    link(&pop, "p2", &["198.18.4.1/24"], &n2, "n0", &[&format!("{N2}/24")]).unwrap();
    for i in 10..30 {
        cli.add_addr("c0", &format!("198.18.1.{i}/24")).unwrap();
    }
    cli.ip(&["route", "add", "default", "via", "198.18.1.1"]).unwrap();
    cli.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])
        .unwrap();
    // veth test bed: packets that start on a veth carry a partial checksum
    // that a redirect does not complete (every SYN would count as a
    // checksum error on the node)
    sh(&cli, &["ethtool", "-K", "c0", "tx", "off"]);
    for (ns, dev) in [(&pop, "p1"), (&pop, "p2"), (&n1, "n0"), (&n2, "n0")] {
        ns.ip(&["link", "set", dev, "mtu", "1600"]).unwrap();
    }
    pop.sysctl("net.ipv4.ip_forward=1").unwrap();
    pop.sysctl("net.ipv6.conf.all.forwarding=1").unwrap();
    for (ns, gw4) in [(&n1, "198.18.3.1"), (&n2, "198.18.4.1")] {
        ns.add_addr("lo", &format!("{VIP4}/32")).unwrap();
        ns.ip(&["route", "add", "default", "via", gw4]).unwrap();
    }
    n1.add_addr("lo", &format!("{VIP6}/128")).unwrap();
    n1.ip(&["-6", "route", "add", "default", "via", "2001:db8:3::1"])
        .unwrap();
    // the nodes' replies come from the VIP, which is not on their n0
    for ns in [&n1, &n2] {
        ns.sysctl("net.ipv4.conf.all.rp_filter=0").unwrap();
        ns.sysctl("net.ipv4.conf.n0.rp_filter=0").unwrap();
    }
    let dir = std::env::temp_dir().join(format!("anyedge-tunnel-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    Some(Lab {
        cli,
        pop,
        n1,
        n2,
        dir,
        nginx: None,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// nginx on node 1, without proxy_protocol, logging `$remote_addr $remote_port`.
fn start_nginx(lab: &mut Lab) {
    let d = &lab.dir;
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("www/big"), big).unwrap();
    std::fs::write(d.join("www/index.html"), "hello\n").unwrap();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n  log_format peer '$remote_addr $remote_port';\n  access_log {d}/access.log peer;\n\
         client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen {VIP4}:{WEB}; listen [{VIP6}]:{WEB}; root {d}/www; }}\n}}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let child = lab
        .n1
        .command("/usr/sbin/nginx")
        .args([
            "-c",
            &d.join("nginx.conf").display().to_string(),
            "-g",
            "daemon off; master_process off;",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    lab.nginx = Some(child);
}

/// Node servers: TCP echo answering each line with the node's name; a sink
/// counting bytes until EOF and answering the count; UDP echo.
fn start_servers(ns: &Netns, name: &'static str, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        use std::net::TcpListener;
        let echo = TcpListener::bind((VIP4.parse::<Ipv4Addr>().unwrap(), ECHO)).unwrap();
        let sinks = [
            TcpListener::bind((VIP4.parse::<Ipv4Addr>().unwrap(), SINK)).unwrap(),
            TcpListener::bind((VIP4.parse::<Ipv4Addr>().unwrap(), SINK_SMALL_MTU)).unwrap(),
        ];
        let udp = UdpSocket::bind((VIP4.parse::<Ipv4Addr>().unwrap(), UDP_ECHO)).unwrap();
        tx.send(()).unwrap();
        let s2 = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            while !s2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let mut reply = format!("{name} {from} ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = udp.send_to(&reply, from);
                }
            }
        });
        for l in sinks {
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut c = c;
                        let mut buf = vec![0u8; 65536];
                        let mut total = 0u64;
                        loop {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => total += n as u64,
                            }
                        }
                        let _ = writeln!(c, "{total}");
                    });
                }
            });
        }
        for c in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                for line in BufReader::new(c).lines() {
                    if line.is_err() || writeln!(w, "{name}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
}

fn svc(vip: &str, port: u16, proto: Proto, encap: Encap, mtu: u16) -> TunnelService {
    TunnelService {
        vip: ip(vip),
        port,
        proto,
        encap,
        underlay_mtu: mtu,
    }
}

fn node(name: &str, addr: &str, eligible: bool) -> TunnelBackend {
    TunnelBackend {
        name: name.into(),
        addr: ip(addr),
        weight: 1,
        eligible,
    }
}

/// `f` on a thread in the client namespace.
fn on_client<T: Send + 'static>(lab: &Lab, f: impl FnOnce() -> T + Send + 'static) -> T {
    lab.cli.enter(f)
}

fn http_get(src: Option<IpAddr>, vip: IpAddr, path: &str) -> (u16, Vec<u8>) {
    let s = connect(src, SocketAddr::new(vip, WEB));
    let port = s.local_addr().unwrap().port();
    let mut s = s;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    (port, body)
}

fn connect(src: Option<IpAddr>, to: SocketAddr) -> TcpStream {
    let domain = if to.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    if let Some(src) = src {
        s.bind(&SocketAddr::new(src, 0).into()).unwrap();
    }
    s.connect_timeout(&to.into(), Duration::from_secs(10)).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn upload(port: u16, bytes: usize) -> u64 {
    let mut s = connect(None, SocketAddr::new(ip(VIP4), port));
    let chunk = vec![7u8; 65536];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.trim().parse().unwrap()
}

#[test]
fn client_pop_node_end_to_end() {
    let Some(mut lab) = lab() else { return };
    start_nginx(&mut lab);
    start_servers(&lab.n1, "n1", lab.stop.clone());
    start_servers(&lab.n2, "n2", lab.stop.clone());

    // node side: the decapsulation program on each node's n0, accepting
    // only the PoP's outer source prefixes; an XDP_PASS-only instance on
    // the client's veth so native XDP_TX back to it works
    let pop_from = ["198.18.9.0/24".parse().unwrap(), "2001:db8:9::/64".parse().unwrap()];
    let decaps: Vec<Decap> = [&lab.n1, &lab.n2]
        .into_iter()
        .map(|ns| {
            let from = pop_from;
            ns.enter(move || {
                let mut d = Decap::load().unwrap();
                d.set_from(&from).unwrap();
                d.set_vips(&[ip(VIP4), ip(VIP6)]).unwrap();
                d.set_gue_port(Some(6080)).unwrap();
                d.attach_to("n0", Mode::Native).unwrap();
                d
            })
        })
        .collect();
    let _cli_pass = lab.cli.enter(|| {
        let mut d = Decap::load().unwrap();
        d.attach_to("c0", Mode::Native).unwrap();
        d
    });

    // the PoP: guard + tunnel on p0
    let mut x = lab.pop.enter(|| {
        let mut x = Xdp::load(&anyedge_xdp::Options::default()).unwrap();
        x.attach_to("p0", Mode::Native).unwrap();
        x
    });
    x.set_services(&Services {
        destinations: Destinations::Only(vec![]),
        tcp_ports: vec![],
        dns_ports: vec![],
    })
    .unwrap();
    x.set_tunnel_source(&TunnelSource {
        v4: Some((Ipv4Addr::new(198, 18, 9, 0), 24)),
        v6: Some(("2001:db8:9::".parse().unwrap(), 64)),
    })
    .unwrap();
    let only_n1 = [node("n1", N1, true)];
    x.set_tunnel_service("web", &svc(VIP4, WEB, Proto::Tcp, Encap::Ipip, 1600), &only_n1)
        .unwrap();
    x.set_tunnel_service(
        "web6",
        &svc(VIP6, WEB, Proto::Tcp, Encap::Ipip, 1600),
        &[node("n1", N1_6, true)],
    )
    .unwrap();
    x.set_tunnel_service("sink", &svc(VIP4, SINK, Proto::Tcp, Encap::Ipip, 1600), &only_n1)
        .unwrap();
    x.set_tunnel_service(
        "sink-small",
        &svc(VIP4, SINK_SMALL_MTU, Proto::Tcp, Encap::Gue { port: 6080 }, 1400),
        &only_n1,
    )
    .unwrap();
    x.set_tunnel_service(
        "udp",
        &svc(VIP4, UDP_ECHO, Proto::Udp, Encap::Gue { port: 6080 }, 1600),
        &only_n1,
    )
    .unwrap();

    // 1. IPv4 and IPv6 through nginx: the node sees the client's address
    // and port, no PROXY header
    let log = lab.dir.join("access.log");
    let (port4, body) = on_client(&lab, || {
        wait_until("nginx answers through the tunnel", Duration::from_secs(20), || {
            std::panic::catch_unwind(|| http_get(None, ip(VIP4), "/index.html")).is_ok()
        });
        http_get(None, ip(VIP4), "/index.html")
    });
    assert!(body.ends_with(b"hello\n"), "{}", String::from_utf8_lossy(&body));
    let (port6, body6) = on_client(&lab, || http_get(None, ip(VIP6), "/index.html"));
    assert!(body6.ends_with(b"hello\n"));
    wait_until("nginx logged both", Duration::from_secs(10), || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.contains(&format!("198.18.1.2 {port4}")) && l.contains(&format!("2001:db8:1::2 {port6}"))
    });

    // 2. a big download and upload, and an upload through a 1400-byte
    // underlay: the PoP answers "fragmentation needed", the client's path
    // MTU drops, the transfer completes
    let (_, big) = on_client(&lab, || http_get(None, ip(VIP4), "/big"));
    let expected: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    assert!(
        big.ends_with(&expected),
        "download complete and intact ({} bytes)",
        big.len()
    );
    assert_eq!(on_client(&lab, || upload(SINK, 8 << 20)), 8 << 20);
    assert_eq!(on_client(&lab, || upload(SINK_SMALL_MTU, 4 << 20)), 4 << 20);
    let small = x
        .tunnel_counters()
        .unwrap()
        .into_iter()
        .find(|c| c.service == "sink-small")
        .unwrap();
    assert!(small.get(TunnelVerdict::IcmpTooBig) > 0, "{small:?}");

    // 3. UDP echo through the same VIP, in GUE; the node sees the client
    let reply = on_client(&lab, || {
        let u = UdpSocket::bind("198.18.1.2:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..10 {
            u.send_to(b"ping", (ip(VIP4), UDP_ECHO)).unwrap();
            if let Ok(n) = u.recv(&mut buf) {
                return (u.local_addr().unwrap(), String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
        panic!("no UDP echo");
    });
    assert_eq!(reply.1, format!("n1 {} ping", reply.0));

    // 4. backend set changes under a client loop: 20 client addresses keep
    // a connection each and ask which node answers, all the time
    x.set_tunnel_service("echo", &svc(VIP4, ECHO, Proto::Tcp, Encap::Ipip, 1600), &only_n1)
        .unwrap();
    let sources: Vec<IpAddr> = (10..30).map(|i| ip(&format!("198.18.1.{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut loops = Vec::new();
    for &src in &sources {
        let (stop, failures, answered) = (stop.clone(), failures.clone(), answered.clone());
        loops.push(lab.cli.spawn(move || {
            let mut s = connect(Some(src), SocketAddr::new(ip(VIP4), ECHO));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut nodes = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let mut line = String::new();
                if writeln!(s, "which").is_err() || r.read_line(&mut line).is_err() || line.is_empty() {
                    failures.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                nodes.insert(line.trim().to_string());
                answered.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            nodes
        }));
    }
    let progress = |what: &str| {
        let before = answered.load(Ordering::SeqCst);
        wait_until(what, Duration::from_secs(20), || {
            answered.load(Ordering::SeqCst) > before + 200
        });
    };
    progress("requests answered by n1");
    // add n2: established connections stay on n1
    x.set_tunnel_service(
        "echo",
        &svc(VIP4, ECHO, Proto::Tcp, Encap::Ipip, 1600),
        &[node("n1", N1, true), node("n2", N2, true)],
    )
    .unwrap();
    progress("requests answered after adding n2");
    // new connections from the clients the table now gives to n2 land there
    let moved: Vec<IpAddr> = sources
        .iter()
        .copied()
        .filter(|&s| x.tunnel_backend_for("echo", s) == Some("n2"))
        .collect();
    assert!(!moved.is_empty(), "some clients map to n2 now");
    let fresh = moved[0];
    let who = on_client(&lab, move || {
        let mut s = connect(Some(fresh), SocketAddr::new(ip(VIP4), ECHO));
        writeln!(s, "which").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line.trim().to_string()
    });
    assert_eq!(who, "n2", "a new flow follows the new table");
    // drain n1: its connections keep going, new ones all go to n2
    x.set_tunnel_service(
        "echo",
        &svc(VIP4, ECHO, Proto::Tcp, Encap::Ipip, 1600),
        &[node("n1", N1, false), node("n2", N2, true)],
    )
    .unwrap();
    progress("requests answered while n1 drains");
    let stayers: Vec<IpAddr> = sources
        .iter()
        .copied()
        .filter(|&s| !moved.contains(&s))
        .take(3)
        .collect();
    for src in stayers {
        let who = on_client(&lab, move || {
            let mut s = connect(Some(src), SocketAddr::new(ip(VIP4), ECHO));
            writeln!(s, "which").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line.trim().to_string()
        });
        assert_eq!(who, "n2", "no new flow for a draining node");
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let nodes = l.join().unwrap();
        assert_eq!(
            nodes.into_iter().collect::<Vec<_>>(),
            vec!["n1".to_string()],
            "established flows never moved"
        );
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no failed request");

    // 5. an encapsulated packet from a non-PoP source is dropped by the node
    let before = decaps[0].counters().unwrap();
    on_client(&lab, || {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(4)),
        )
        .unwrap();
        let inner = Frame::syn(ip("198.18.1.77"), ip(VIP4), WEB).build();
        for _ in 0..3 {
            s.send_to(&inner[14..], &SocketAddr::new(ip(N1), 0).into()).unwrap();
        }
    });
    wait_until("the node dropped the forged packets", Duration::from_secs(10), || {
        let now = decaps[0].counters().unwrap();
        let get = |c: &[(DecapVerdict, u64)]| {
            c.iter()
                .find(|(v, _)| *v == DecapVerdict::DropNotFromPop)
                .map_or(0, |(_, n)| *n)
        };
        get(&now) >= get(&before) + 3
    });
    let c = x.tunnel_counters().unwrap();
    let web = c.iter().find(|c| c.service == "web").unwrap();
    assert!(web.get(TunnelVerdict::TxNew) > 0 && web.backends[0].1 > 100, "{web:?}");
    drop(lab);
}
