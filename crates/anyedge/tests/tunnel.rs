//! `forwarding = "tunnel"` through the daemon: anyedge on the PoP programs
//! its XDP program's tunnel maps from the service's backends (health and
//! drain, at once on each change: well within the 5 s backstop resync),
//! `anyedge node attach` decapsulates on the node, and nginx there (no
//! proxy_protocol) logs the client's own address and port: IPv4 over IPIP,
//! IPv6 over IP6IP6, IPv4 over GUE. Also: the fallback when XDP cannot
//! attach is logged and a service whose backends do not read PROXY is not
//! offered to the announcer.
//!
//! ```text
//!  cli c0 198.18.1.2 2001:db8:1::2 <-> p0 198.18.1.1 2001:db8:1::1  pop (anyedge, XDP on p0)
//!                           p1 198.18.3.1 2001:db8:3::1 <-> n0 198.18.3.2 2001:db8:3::2
//!                                 node (anyedge node attach; nginx on the VIPs
//!                                 198.18.200.1, 2001:db8:200::1 (lo) and its own addresses)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_netns::{link, Netns};
use anyedge_testkit::wait_until;
use common::*;

const VIP: &str = "198.18.200.1";
const VIP6: &str = "2001:db8:200::1";
const NODE: &str = "198.18.3.2";
const NODE6: &str = "2001:db8:3::2";
const CLI: &str = "198.18.1.2";
const CLI6: &str = "2001:db8:1::2";
const GUE_PORT: u16 = 6080;
const TOKEN: &str = "tunnel-test-token-0123456789";
/// The admin API, inside the PoP's namespace.
const ADMIN: &str = "127.0.0.1:9180";
/// A map change must show well within the backstop resync (5 s): only the
/// event-driven sync makes it.
const PROMPT: Duration = Duration::from_secs(1);

fn cannot_run(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIPPED (set CI=1 to make this a failure): {why}");
    true
}

/// Effective UID 0 (from /proc: the test crate forbids `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get_keepalive(s: &mut TcpStream) -> String {
    request(s, "")
}

/// A keep-alive GET with `headers` (more header lines) on `s`: the answer.
fn request(s: &mut TcpStream, headers: &str) -> String {
    s.write_all(format!("GET /index.html HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"hello\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Client, PoP and node namespaces, dual-stack; nginx and the decapsulation
/// program on the node. Fields drop in order: processes before namespaces.
struct Topo {
    nginx: Option<Kill>,
    attach: Option<Kill>,
    _cli_pass: Kill,
    attach_log: PathBuf,
    dir: tempfile::TempDir,
    cli: Netns,
    pop: Netns,
    _node: Netns,
}

/// The topology, or `None` if this machine cannot run it (skipped, unless
/// under CI). `gue_port`: the node also decapsulates GUE on that port.
fn topology(gue_port: Option<u16>) -> Option<Topo> {
    if !is_root() && cannot_run("needs root") {
        return None;
    }
    for bin in ["/usr/sbin/nginx", "/usr/sbin/ethtool"] {
        if !std::path::Path::new(bin).exists() && cannot_run(&format!("{bin} missing")) {
            return None;
        }
    }
    let cli = Netns::unique("tcli").unwrap();
    let pop = Netns::unique("tpop").unwrap();
    let node = Netns::unique("tnode").unwrap();
    link(
        &cli,
        "c0",
        &[&format!("{CLI}/24"), &format!("{CLI6}/64")],
        &pop,
        "p0",
        &["198.18.1.1/24", "2001:db8:1::1/64"],
    )
    .unwrap();
    link(
        &pop,
        "p1",
        &["198.18.3.1/24", "2001:db8:3::1/64"],
        &node,
        "n0",
        &[&format!("{NODE}/24"), &format!("{NODE6}/64")],
    )
    .unwrap();
    cli.ip(&["route", "add", "default", "via", "198.18.1.1"]).unwrap();
    cli.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])
        .unwrap();
    // veth test bed: a partial checksum is not completed across an XDP redirect
    assert!(cli
        .command("ethtool")
        .args(["-K", "c0", "tx", "off"])
        .status()
        .unwrap()
        .success());
    pop.ip(&["link", "set", "p1", "mtu", "1600"]).unwrap();
    node.ip(&["link", "set", "n0", "mtu", "1600"]).unwrap();
    pop.sysctl("net.ipv4.ip_forward=1").unwrap();
    pop.sysctl("net.ipv6.conf.all.forwarding=1").unwrap();
    node.add_addr("lo", &format!("{VIP}/32")).unwrap();
    node.add_addr("lo", &format!("{VIP6}/128")).unwrap();
    node.ip(&["route", "add", "default", "via", "198.18.3.1"]).unwrap();
    node.ip(&["-6", "route", "add", "default", "via", "2001:db8:3::1"])
        .unwrap();
    // the node's replies come from the VIP, which is not on its n0
    node.sysctl("net.ipv4.conf.all.rp_filter=0").unwrap();
    node.sysctl("net.ipv4.conf.n0.rp_filter=0").unwrap();

    // the node: nginx on the VIPs (and its own addresses, for health checks)
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hello\n").unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  log_format peer '$remote_addr $remote_port';\n  access_log {d}/access.log peer;\n\
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             keepalive_timeout 60s;\n\
             server {{ listen {VIP}:80; listen {NODE}:80; listen [{VIP6}]:80; listen [{NODE6}]:80; root {d}/www; }}\n}}\n"
        ),
    )
    .unwrap();
    let nginx = Kill(
        node.command(nginx_bin().to_str().unwrap())
            .args([
                "-c",
                &format!("{d}/nginx.conf"),
                "-g",
                "daemon off; master_process off;",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let attach_log = dir.path().join("attach.log");
    let vips = format!("{VIP},{VIP6}");
    let mut args = vec![
        "node",
        "attach",
        "--interface",
        "n0",
        "--vips",
        &vips,
        "--from",
        "198.18.9.0/24,2001:db8:9::/112",
        "--mode",
        "native",
    ];
    let gue = gue_port.map(|p| p.to_string());
    if let Some(p) = &gue {
        args.extend(["--gue-port", p]);
    }
    let attach = Kill(
        node.command(env!("CARGO_BIN_EXE_anyedge"))
            .args(&args)
            .stdout(std::fs::File::create(&attach_log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_until("node attach reports", Duration::from_secs(10), || {
        std::fs::read_to_string(&attach_log)
            .unwrap_or_default()
            .contains("decapsulating on n0")
    });
    // native veth XDP_TX back to the client needs a program on its end
    let cli_pass = Kill(
        cli.command(env!("CARGO_BIN_EXE_anyedge"))
            .args([
                "node",
                "attach",
                "--interface",
                "c0",
                "--vips",
                "192.0.2.1",
                "--from",
                "192.0.2.1/32",
                "--mode",
                "native",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Some(Topo {
        nginx: Some(nginx),
        attach: Some(attach),
        _cli_pass: cli_pass,
        attach_log,
        dir,
        cli,
        pop,
        _node: node,
    })
}

impl Topo {
    /// anyedge in the PoP: one tunnel service "web" on `vip`:80 (`extra`:
    /// more service lines) to the node at `node`:80, with the admin API.
    fn start_pop(&self, vip: &str, node: &str, underlay_mtu: u16, extra: &str) -> Anyedge {
        let listen = SocketAddr::new(vip.parse().unwrap(), 80);
        let backend = SocketAddr::new(node.parse().unwrap(), 80);
        let cfg = format!(
            r#"
[pop]
name = "tunnel-pop"
[admin]
listen = "{ADMIN}"
token = "{TOKEN}"
[xdp]
interfaces = ["p0"]
mode = "native"
tunnel_source_v4 = "198.18.9.0/24"
tunnel_source_v6 = "2001:db8:9::/112"
[[service]]
name = "web"
listen = ["{listen}"]
forwarding = "tunnel"
underlay_mtu = {underlay_mtu}
{extra}
{FAST_TCP_HEALTH}
send_proxy = false
[[service.backend]]
name = "n1"
address = "{backend}"
proxy_protocol = "none"
"#
        );
        let edge = Anyedge::start_in(&self.pop, &cfg, ADMIN.parse().unwrap());
        edge.wait_log("XDP tunnel: service programmed", 2, Duration::from_secs(10));
        edge.wait_log("eligible=[\"n1\"]", 2, Duration::from_secs(10));
        edge
    }

    /// A keep-alive connection from the client to `vip`:80 through the
    /// tunnel, after one request whose log line on the node has the
    /// client's own address `client` and port.
    fn connect_through(&self, vip: &str, client: &str) -> TcpStream {
        let to = SocketAddr::new(vip.parse().unwrap(), 80);
        let mut conn = self.cli.enter(move || {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        });
        let port = conn.local_addr().unwrap().port();
        assert!(get_keepalive(&mut conn).contains("200 OK"));
        let log = self.dir.path().join("access.log");
        let want = format!("{client} {port}");
        wait_until("nginx logged the client", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).unwrap_or_default().contains(&want)
        });
        conn
    }

    /// Whether a new connection to `vip`:80 is refused (or times out).
    fn refused(&self, vip: &str) -> bool {
        let to = SocketAddr::new(vip.parse().unwrap(), 80);
        self.cli
            .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_err())
    }

    /// The PoP's tunnel packets with verdict `reason` (e.g. "tx_new"), from
    /// /metrics.
    fn tunnel_packets(&self, reason: &str) -> u64 {
        let metrics = self
            .pop
            .enter(|| http(ADMIN.parse().unwrap(), "GET", "/metrics", None).1);
        let label = format!("reason=\"{reason}\"");
        metrics
            .lines()
            .filter(|l| {
                let name = l.split('{').next().unwrap_or("");
                matches!(name, "anyedge_xdp_tunnel_packets" | "anyedge_xdp_tunnel_packets_total") && l.contains(&label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// An admin API call from inside the PoP.
    fn admin(&self, method: &'static str, path: &'static str) -> u16 {
        self.pop
            .enter(move || http(ADMIN.parse().unwrap(), method, path, Some(TOKEN)).0)
    }

    /// Runs `change` and waits for the log to have `needle` `count` times:
    /// the maps were rewritten. Asserts that came `within`.
    fn promptly(
        &self,
        edge: &Anyedge,
        what: &str,
        needle: &str,
        count: usize,
        within: Duration,
        change: impl FnOnce(),
    ) {
        let t0 = Instant::now();
        change();
        edge.wait_log(needle, count, Duration::from_secs(10));
        let took = t0.elapsed();
        eprintln!("{what}: maps rewritten after {took:?}");
        assert!(
            took < within,
            "{what}: the tunnel maps changed only after {took:?} (the backstop resync?), not at once"
        );
    }
}

#[test]
fn daemon_forwards_in_the_kernel_to_a_decapsulating_node() {
    let Some(mut topo) = topology(None) else { return };
    let edge = topo.start_pop(VIP, NODE, 1600, "");

    // a keep-alive connection through the tunnel: nginx sees the client
    let mut conn = topo.connect_through(VIP, CLI);

    // counters in /metrics and status
    let metrics = topo
        .pop
        .enter(|| http(ADMIN.parse().unwrap(), "GET", "/metrics", None).1);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("anyedge_xdp_tunnel_packets") && l.contains("reason=\"tx_new\"") && l.contains("/tcp"))
        .unwrap_or_else(|| panic!("no tx_new sample:\n{metrics}"));
    assert!(!line.ends_with(" 0"), "{line}");
    assert!(metrics.contains("anyedge_xdp_tunnel_backend_packets"));
    let status = topo
        .pop
        .enter(|| http(ADMIN.parse().unwrap(), "GET", "/api/v1/status", None).1);
    assert!(status.contains("\"tunnels\""), "{status}");

    // drain n1 through the admin API: the maps change at once (twice in a
    // row: a periodic sync could make at most one of them in time); the
    // established connection goes on, a new one gets nowhere (no other node)
    topo.promptly(&edge, "drain", "eligible=[]", 2, PROMPT, || {
        assert_eq!(topo.admin("POST", "/api/v1/services/web/backends/n1/drain"), 200);
    });
    assert!(
        get_keepalive(&mut conn).contains("200 OK"),
        "a draining node keeps its flows"
    );
    assert!(topo.refused(VIP), "no new flow for a draining node");
    topo.promptly(&edge, "undrain", "eligible=[\"n1\"]", 4, PROMPT, || {
        assert_eq!(topo.admin("POST", "/api/v1/services/web/backends/n1/undrain"), 200);
    });
    drop(topo.connect_through(VIP, CLI));

    // the node's counters: decapsulated packets, nothing dropped
    drop(topo.attach.take());
    let log = std::fs::read_to_string(&topo.attach_log).unwrap_or_default();
    assert!(log.contains("detached from n0") || log.contains("decap="), "{log}");
}

#[test]
fn daemon_forwards_ipv6_over_ip6ip6() {
    let Some(mut topo) = topology(None) else { return };
    let edge = topo.start_pop(VIP6, NODE6, 1600, "");
    let mut conn = topo.connect_through(VIP6, CLI6);
    assert!(get_keepalive(&mut conn).contains("200 OK"));
    assert!(topo.tunnel_packets("tx_new") > 0, "the PoP's kernel encapsulated");
    // the node's web server stops: its health checks fail (refused: fall
    // 3 × 200 ms), and the maps follow the health transition at once
    let nginx = topo.nginx.take();
    topo.promptly(&edge, "node down", "eligible=[]", 2, PROMPT * 3, move || drop(nginx));
    assert!(topo.refused(VIP6), "no new flow to a node that is down");
}

#[test]
fn daemon_forwards_over_gue() {
    // underlay MTU 1520: a full-size client packet (1500) fits with IPIP's
    // 20 bytes but not with GUE's 28, so the PoP answers "fragmentation
    // needed" only if it really encapsulates in GUE
    let Some(topo) = topology(Some(GUE_PORT)) else { return };
    let _edge = topo.start_pop(VIP, NODE, 1520, &format!("encap = \"gue\"\ngue_port = {GUE_PORT}"));
    let mut conn = topo.connect_through(VIP, CLI);
    assert!(topo.tunnel_packets("tx_new") > 0, "the PoP's kernel encapsulated");
    assert_eq!(topo.tunnel_packets("icmp_too_big"), 0);
    // a request larger than one segment: the first full-size segment gets
    // ICMP (MTU 1492), the client retransmits smaller, nginx answers
    let pad = format!("X-Pad: {}\r\n", "x".repeat(3000));
    assert!(request(&mut conn, &pad).contains("200 OK"));
    assert!(
        topo.tunnel_packets("icmp_too_big") > 0,
        "GUE's 28 bytes did not fit: ICMP"
    );
}

#[test]
fn without_xdp_a_tunnel_service_falls_back_and_says_why() {
    // Both services have a healthy backend; XDP cannot attach. "plain"'s
    // backend does not read PROXY: it has no path at all, so its prefix is
    // withdrawn (the policy's own verdict: no BGP session is needed to see
    // it). "proxied" falls back to the proxy path: its prefix is ready to
    // announce and a request through it reaches the backend with PROXY.
    let healthy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_backend = healthy.local_addr().unwrap();
    let proxied_backend = proxy_backend("backend=proxied\n".into());
    let (p1, p2, admin_port, bgp_port) = (free_port(), free_port(), free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let cfg = format!(
        r#"
[pop]
name = "tunnel-fallback"
[admin]
listen = "{admin}"
[xdp]
interfaces = ["nosuchif0"]
[bgp]
asn = 65001
router_id = "198.18.0.1"
connect_retry = "1s"
[[bgp.peer]]
name = "nobody"
address = "127.0.0.1"
port = {bgp_port}
asn = 65000
local_address = "127.0.0.1"
[[anycast]]
prefix = "192.0.2.10/32"
services = ["plain"]
[[anycast]]
prefix = "192.0.2.11/32"
services = ["proxied"]
[[service]]
name = "plain"
listen = ["127.0.0.1:{p1}"]
forwarding = "tunnel"
[service.health]
kind = "tcp"
interval = "200ms"
timeout = "100ms"
[[service.backend]]
name = "n1"
address = "{plain_backend}"
proxy_protocol = "none"
[[service]]
name = "proxied"
listen = ["127.0.0.1:{p2}"]
forwarding = "tunnel"
encap = "gue"
[service.health]
kind = "tcp"
interval = "200ms"
timeout = "100ms"
[[service.backend]]
name = "n1"
address = "{proxied_backend}"
"#
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anyedge"));
    cmd.env("RUST_LOG", "info");
    let edge = Anyedge::spawn(cmd, &cfg);
    edge.wait_log("forwarding = \"tunnel\" unavailable", 2, Duration::from_secs(10));
    let log = edge.log();
    let plain = log
        .lines()
        .find(|l| l.contains("unavailable") && l.contains("plain"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(plain.contains("is not announced"), "{plain}");
    let proxied = log
        .lines()
        .find(|l| l.contains("unavailable") && l.contains("proxied"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(proxied.contains("falls back to the proxy path"), "{proxied}");

    // what the announcer decides, once both backends passed their checks
    edge.wait_ready();
    let policy = |prefix: &str| -> (String, String) {
        let (code, body) = http(admin, "GET", "/api/v1/status", None);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let p = v["anycast"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["prefix"] == prefix).cloned())
            .unwrap_or_else(|| panic!("{prefix} not in {body}"));
        (p["policy"].as_str().unwrap_or("").to_string(), p["reason"].to_string())
    };
    wait_until(
        "the proxied service's prefix ready to announce",
        Duration::from_secs(10),
        || policy("192.0.2.11/32").0 == "announced",
    );
    let (state, reason) = policy("192.0.2.10/32");
    assert_eq!(state, "withdrawn", "plain has no path: {reason}");
    // the fallback path works: PROXY header and all (get requires a 200)
    let (_, body) = get(SocketAddr::from(([127, 0, 0, 1], p2))).unwrap();
    assert!(body.contains("backend=proxied"), "{body}");
    drop(healthy);
}
