//! `forwarding = "tunnel"` through the daemon: anyedge on the PoP programs
//! its XDP program's tunnel maps from the service's backends (health and
//! drain), `anyedge node attach` decapsulates on the node, and nginx there
//! (no proxy_protocol) logs the client's own address and port. Also: the
//! fallback when XDP cannot attach is logged and a service whose backends
//! do not read PROXY is not offered to the announcer.
//!
//! ```text
//!  cli c0 198.18.1.2 <-> p0 198.18.1.1  pop (anyedge, XDP on p0)
//!                           p1 198.18.3.1 <-> n0 198.18.3.2  node (anyedge node attach,
//!                                                   nginx on 198.18.200.1:80 and :80)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyedge_netns::{link, Netns};
use anyedge_testkit::wait_until;
use common::*;

const VIP: &str = "198.18.200.1";
const NODE: &str = "198.18.3.2";
const TOKEN: &str = "tunnel-test-token-0123456789";

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
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"hello\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_string()
}

#[test]
fn daemon_forwards_in_the_kernel_to_a_decapsulating_node() {
    if !is_root() && cannot_run("needs root") {
        return;
    }
    for bin in ["/usr/sbin/nginx", "/usr/sbin/ethtool"] {
        if !std::path::Path::new(bin).exists() && cannot_run(&format!("{bin} missing")) {
            return;
        }
    }
    let cli = Netns::unique("tcli").unwrap();
    let pop = Netns::unique("tpop").unwrap();
    let node = Netns::unique("tnode").unwrap();
    link(&cli, "c0", &["198.18.1.2/24"], &pop, "p0", &["198.18.1.1/24"]).unwrap();
    link(&pop, "p1", &["198.18.3.1/24"], &node, "n0", &[&format!("{NODE}/24")]).unwrap();
    cli.ip(&["route", "add", "default", "via", "198.18.1.1"]).unwrap();
    assert!(cli
        .command("ethtool")
        .args(["-K", "c0", "tx", "off"])
        .status()
        .unwrap()
        .success());
    pop.ip(&["link", "set", "p1", "mtu", "1600"]).unwrap();
    node.ip(&["link", "set", "n0", "mtu", "1600"]).unwrap();
    pop.sysctl("net.ipv4.ip_forward=1").unwrap();
    node.add_addr("lo", &format!("{VIP}/32")).unwrap();
    node.ip(&["route", "add", "default", "via", "198.18.3.1"]).unwrap();
    node.sysctl("net.ipv4.conf.all.rp_filter=0").unwrap();
    node.sysctl("net.ipv4.conf.n0.rp_filter=0").unwrap();

    // the node: nginx on the VIP (and its own address, for health checks)
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
             server {{ listen {VIP}:80; listen {NODE}:80; root {d}/www; }}\n}}\n"
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
    let attach = Kill(
        node.command(env!("CARGO_BIN_EXE_anyedge"))
            .args([
                "node",
                "attach",
                "--interface",
                "n0",
                "--vips",
                VIP,
                "--from",
                "198.18.9.0/24",
                "--mode",
                "native",
            ])
            .stdout(std::fs::File::create(dir.path().join("attach.log")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let attach_log = dir.path().join("attach.log");
    wait_until("node attach reports", Duration::from_secs(10), || {
        std::fs::read_to_string(&attach_log)
            .unwrap_or_default()
            .contains("decapsulating on n0")
    });
    // native veth XDP_TX back to the client needs a program on its end
    let _cli_pass = Kill(
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

    let cfg = format!(
        r#"
[pop]
name = "tunnel-pop"
[admin]
listen = "127.0.0.1:9180"
token = "{TOKEN}"
[xdp]
interfaces = ["p0"]
mode = "native"
tunnel_source_v4 = "198.18.9.0/24"
[[service]]
name = "web"
listen = ["{VIP}:80"]
forwarding = "tunnel"
underlay_mtu = 1600
{FAST_TCP_HEALTH}
send_proxy = false
[[service.backend]]
name = "n1"
address = "{NODE}:80"
proxy_protocol = "none"
"#
    );
    let edge = Anyedge::start_in(&pop, &cfg, "127.0.0.1:9180".parse().unwrap());
    edge.wait_log("XDP tunnel: service programmed", 2, Duration::from_secs(10));
    edge.wait_log("eligible=[\"n1\"]", 2, Duration::from_secs(10));

    // a keep-alive connection through the tunnel: nginx sees the client
    let mut conn = cli.enter(|| {
        let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    });
    let port = conn.local_addr().unwrap().port();
    assert!(get_keepalive(&mut conn).contains("200 OK"));
    wait_until("nginx logged the client", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("access.log"))
            .unwrap_or_default()
            .contains(&format!("198.18.1.2 {port}"))
    });

    // counters in /metrics and status
    let metrics = pop.enter(|| http("127.0.0.1:9180".parse().unwrap(), "GET", "/metrics", None).1);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("anyedge_xdp_tunnel_packets") && l.contains("reason=\"tx_new\"") && l.contains("/tcp"))
        .unwrap_or_else(|| panic!("no tx_new sample:\n{metrics}"));
    assert!(!line.ends_with(" 0"), "{line}");
    assert!(metrics.contains("anyedge_xdp_tunnel_backend_packets"));
    let status = pop.enter(|| http("127.0.0.1:9180".parse().unwrap(), "GET", "/api/v1/status", None).1);
    assert!(status.contains("\"tunnels\""), "{status}");

    // drain n1 through the admin API: the established connection goes on,
    // a new one gets nowhere (no other node)
    let (code, _) = pop.enter(|| {
        http(
            "127.0.0.1:9180".parse().unwrap(),
            "POST",
            "/api/v1/services/web/backends/n1/drain",
            Some(TOKEN),
        )
    });
    assert_eq!(code, 200);
    edge.wait_log("eligible=[]", 2, Duration::from_secs(10));
    assert!(
        get_keepalive(&mut conn).contains("200 OK"),
        "a draining node keeps its flows"
    );
    let refused = cli.enter(|| {
        let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
        TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_err()
    });
    assert!(refused, "no new flow for a draining node");
    pop.enter(|| {
        http(
            "127.0.0.1:9180".parse().unwrap(),
            "POST",
            "/api/v1/services/web/backends/n1/undrain",
            Some(TOKEN),
        )
    });
    edge.wait_log("eligible=[\"n1\"]", 4, Duration::from_secs(10));
    cli.enter(|| {
        let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(get_keepalive(&mut s).contains("200 OK"));
    });

    // the node's counters: decapsulated packets, nothing dropped
    drop(attach);
    let log = std::fs::read_to_string(&attach_log).unwrap_or_default();
    assert!(log.contains("detached from n0") || log.contains("decap="), "{log}");
    drop(nginx);
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
