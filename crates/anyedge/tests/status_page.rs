//! The status page of a daemon without an admin token, in headless
//! Chromium: the history (charts and timelines from the in-process ring
//! buffer, `/api/v1/history`), version and uptime, HAProxy's backend
//! columns (failed checks, downs, downtime, last change) true for a
//! backend that never came up and for one that went down, a failed reload,
//! and every action button disabled, saying why. (With a token: `lab.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_testkit::wait_until;
use common::*;
use serde_json::Value;

/// A backend that passes TCP checks until stopped, then refuses them.
struct Flaky {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flaky {
    fn start() -> Flaky {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            // accepts and closes, until stopped; then the listener closes
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Flaky {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests through the LB and DNS queries, every 20 ms, until dropped
/// (at most a minute).
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lb: SocketAddr, dns: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = Instant::now();
            let mut id = 0u16;
            while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let _ = get(lb);
                id = id.wrapping_add(1);
                let name = if id % 4 == 0 { "nope.page.test" } else { "www.page.test" };
                let _ = udp.send_to(&dns_query(id, name, 1, false, &[]), dns);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn json(admin: SocketAddr, path: &str) -> Value {
    let (code, body) = http(admin, "GET", path, None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn backend<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {v}"))
}

#[test]
fn status_page_in_chromium_shows_history_and_backend_columns_read_only() {
    let a = proxy_backend("backend=a\n".into());
    let mut flaky = Flaky::start();
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port())); // nothing listens
    let (lb_port, admin_port, dns_port, bgp_port) = (free_port(), free_port(), free_port(), free_port());
    let lb = SocketAddr::from(([127, 0, 0, 1], lb_port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let zones = tempfile::tempdir().unwrap();
    let zone = zones.path().join("page.test.zone");
    std::fs::write(
        &zone,
        "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.80\n",
    )
    .unwrap();
    // no admin token: the API is read-only; a BGP peer that never answers
    // (the prefix stays withdrawn); flaky has weight 0 (checked, never
    // sent traffic)
    let cfg = format!(
        r#"
[pop]
name = "page"
[admin]
listen = "{admin}"
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
services = ["web"]
[dns]
listen = ["{dns}"]
[[dns.zone]]
name = "page.test"
file = "{zone}"
[[service]]
name = "web"
listen = ["{lb}"]
balance = "round_robin"
{FAST_TCP_HEALTH}
[[service.backend]]
name = "a"
address = "{a}"
[[service.backend]]
name = "flaky"
address = "{flaky}"
weight = 0
[[service.backend]]
name = "dead"
address = "{dead}"
"#,
        zone = zone.display(),
        flaky = flaky.addr,
    );
    let e = Anyedge::start(&cfg, lb);
    wait_port(admin, Duration::from_secs(5));
    e.wait_log("backend up", 2, Duration::from_secs(5));
    let _traffic = Traffic::start(lb, dns);
    // flaky's timeline has it up (the sampler takes one sample a second)
    wait_until("history has flaky up", Duration::from_secs(10), || {
        let h = json(admin, "/api/v1/history");
        let up = h["backends"].as_array().into_iter().flatten().any(|b| {
            b["name"] == "flaky"
                && b["timeline"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["state"] == "up")
        });
        if up {
            Ok(())
        } else {
            Err(h["backends"].to_string())
        }
    });

    // flaky goes down (3 failed checks, 200 ms apart)
    let stopped = Instant::now();
    flaky.stop();
    wait_until("flaky is down", Duration::from_secs(5), || {
        let v = json(admin, "/api/v1/status");
        let b = backend(&v, "flaky");
        if b["health"] == "down" {
            Ok(())
        } else {
            Err(b.to_string())
        }
    });

    // the status JSON: version, uptime, read-only, and the columns, true
    let v = json(admin, "/api/v1/status");
    let since_stop = stopped.elapsed().as_secs_f64();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let uptime = v["uptime_seconds"].as_f64().unwrap();
    let started = v["started_unix"].as_f64().unwrap();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now_unix - uptime - started).abs() < 2.0,
        "{uptime} {started} {now_unix}"
    );
    assert_eq!(v["admin"]["read_only"], true, "{}", v["admin"]);
    let f = backend(&v, "flaky");
    assert_eq!(f["down_transitions"], 1, "{f}");
    assert_eq!(f["weight"], 0, "{f}");
    // down since its health changed, after it stopped; before that only
    // the moment at start until its first check passed
    let downtime = f["downtime_seconds"].as_f64().unwrap();
    let down_for = f["health_since_seconds"].as_f64().unwrap();
    assert!(
        down_for <= since_stop,
        "flaky: down for {down_for} s, stopped {since_stop} s ago"
    );
    assert!(
        downtime >= down_for && downtime < down_for + 2.0,
        "flaky: downtime {downtime}, down for {down_for} s"
    );
    let up = backend(&v, "a");
    assert_eq!(up["down_transitions"], 0, "{up}");
    assert!(up["downtime_seconds"].as_f64().unwrap() < 1.0, "{up}");
    assert_eq!(up["checks_failed"], 0, "{up}");

    // the history: a few samples with rates of the traffic
    wait_until("5 samples of history", Duration::from_secs(15), || {
        let h = json(admin, "/api/v1/history");
        let n = h["t"].as_array().map_or(0, Vec::len);
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} samples"))
        }
    });
    // never up: down since the start (read once the PoP has run a while)
    let v = json(admin, "/api/v1/status");
    let uptime = v["uptime_seconds"].as_f64().unwrap();
    assert!(uptime > 3.5, "{uptime}");
    let d = backend(&v, "dead");
    assert_eq!(d["health"], "down", "{d}");
    assert_eq!(d["down_transitions"], 0, "never up, never went down: {d}");
    assert!(d["checks_failed"].as_u64().unwrap() >= 3, "{d}");
    let downtime = d["downtime_seconds"].as_f64().unwrap();
    assert!(
        (downtime - uptime).abs() < 2.0,
        "dead: downtime {downtime}, uptime {uptime}"
    );
    let h = json(admin, "/api/v1/history");
    let max = |s: &Value| {
        s.as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .fold(0.0, f64::max)
    };
    let web = &h["services"][0];
    assert_eq!(web["name"], "web");
    assert!(max(&web["conn_rate"]) > 1.0, "{web}");
    assert!(max(&web["bytes_rate"]) > 10.0, "{web}");
    assert!(max(&h["dns"]["queries"]) > 1.0, "{}", h["dns"]);
    assert!(max(&h["dns"]["rcode"]["NXDOMAIN"]) > 0.0, "{}", h["dns"]);
    let tl = |name: &str| -> Vec<String> {
        h["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(tl("dead"), ["down"]);
    assert_eq!(tl("a").last().map(String::as_str), Some("up"), "{}", h["backends"]);
    let flaky_tl = tl("flaky");
    assert_eq!(flaky_tl.last().map(String::as_str), Some("down"), "{flaky_tl:?}");
    assert!(flaky_tl.iter().any(|s| s == "up"), "{flaky_tl:?}");
    assert_eq!(h["prefixes"][0]["prefix"], "192.0.2.10/32");

    // a reload that fails (the page shows it with its error)
    let good = std::fs::read_to_string(&e.config).unwrap();
    e.rewrite_config(&good.replace("[pop]\n", "[pop]\nbogus = 1\n"));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload rejected", 1, Duration::from_secs(5));

    // the page shows all that; no button works without a token
    let shot = common::browser::root().join("target/status-page-read-only.png");
    common::browser::status_page(
        std::process::Command::new("node"),
        &format!("http://{admin}/"),
        &shot,
        "",
        "readonly",
        &[
            ("MIN_POINTS", "5"),
            ("DOWN_BACKEND", "web/dead"),
            ("CHANGED_BACKEND", "web/flaky"),
            ("EXPECT_RELOAD", "failed"),
        ],
    );
    assert!(shot.exists());
}
