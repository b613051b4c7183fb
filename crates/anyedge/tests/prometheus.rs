//! The metrics, alerts and dashboard against a real Prometheus (Debian's
//! `prometheus` package: `promtool` and `prometheus`, started here on a free
//! loopback port with its own storage, independent of a packaged service):
//! `promtool check metrics` on `/metrics`, `promtool check rules` on the
//! shipped rules, Prometheus scraping a running PoP fires the backend-down
//! alert when a backend dies and clears it when it returns (and the BGP,
//! BFD, prefix, zone and reload alerts where this PoP gives them cause),
//! and every query of the shipped Grafana dashboard returns series.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{name} not found: apt-get install prometheus (.ci/run does)"
    );
    p
}

/// Prometheus, ended by the PID we started.
struct Prometheus {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `rules` every second.
    fn start(target: SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("alerts.yml"), rules).unwrap();
        std::fs::write(
            d.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: anyedge\n    static_configs:\n      - targets: [\"{target}\"]\n",
                d.join("alerts.yml").display()
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(d.join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", d.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { addr, dir, child };
        p.wait("Prometheus ready", Duration::from_secs(30), || {
            prom_get(addr, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An API call's `data` (panics unless the status is success).
    fn api(&self, path: &str) -> Value {
        let (code, body) = prom_get(self.addr, path).unwrap_or_else(|| panic!("GET {path} failed"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        assert!(code == 200 && v["status"] == "success", "GET {path}: {code} {body}");
        v["data"].clone()
    }

    fn query(&self, expr: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", urlencode(expr)));
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts in state `state` named `name` whose labels include `labels`.
    fn alerts(&self, name: &str, labels: &[(&str, &str)], state: &str) -> usize {
        let d = self.api("/api/v1/alerts");
        d["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| {
                        a["labels"]["alertname"] == name
                            && a["state"] == state
                            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (bounded) until `cond`, or panics with `what` and the log.
    fn wait(&self, what: &str, max: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let t = Instant::now();
        while t.elapsed() < max {
            if cond() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not within {max:?}\n---- prometheus log ----\n{}", self.log());
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.0 (so the answer is not chunked): (status, body).
fn prom_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.get(9..12)?.parse().ok()?;
    let (_, body) = resp.split_once("\r\n\r\n")?;
    Some((code, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` shortened to 1 s, so that the test
/// sees alerts fire and clear in seconds (the shipped durations are for
/// production; the expressions, labels and annotations are unchanged).
fn rules_for_test() -> String {
    let shipped = std::fs::read_to_string(repo().join("packaging/prometheus/alerts.yml")).unwrap();
    shipped
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `expr` of every panel target of the shipped dashboard (rows
/// included), with its panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("packaging/grafana/anyedge.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"DS_PROMETHEUS") && vars.contains(&"instance"),
        "{vars:?}"
    );
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            if p["type"] != "row" {
                assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {}", p["title"]);
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((p["title"].as_str().unwrap_or("").to_string(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut out);
    out
}

fn status(admin: SocketAddr) -> Value {
    let (code, body) = http(admin, "GET", "/api/v1/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The loopback ports of one run.
struct Ports {
    admin: u16,
    lb: u16,
    dns: u16,
    /// nginx backends
    a: u16,
    b: u16,
    /// a BGP peer and a DNS primary that never answer
    bgp: u16,
    dead: u16,
}

fn config(p: &Ports, zone: &Path) -> String {
    let Ports {
        admin,
        lb,
        dns,
        a,
        b,
        bgp,
        dead,
    } = p;
    format!(
        r#"
[pop]
name = "prom"
[admin]
listen = "127.0.0.1:{admin}"
[bgp]
asn = 65001
router_id = "198.18.0.1"
connect_retry = "1s"
# a peer that never answers: its BGP and BFD sessions stay down
[[bgp.peer]]
name = "upstream"
address = "127.0.0.2"
port = {bgp}
asn = 65000
local_address = "127.0.0.1"
bfd = true
[[anycast]]
prefix = "192.0.2.10/32"
services = ["web"]
[dns]
listen = ["127.0.0.1:{dns}"]
[[dns.zone]]
name = "example.com"
file = "{zone}"
# a secondary whose primary never answers: not loaded, failing
[[dns.zone]]
name = "example.net"
primary = ["127.0.0.1:{dead}"]
[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]
balance = "round_robin"
{FAST_TCP_HEALTH}
[[service.backend]]
name = "a"
address = "127.0.0.1:{a}"
[[service.backend]]
name = "b"
address = "127.0.0.1:{b}"
"#,
        zone = zone.display()
    )
}

#[test]
fn prometheus_scrapes_the_pop_alerts_fire_and_clear_and_every_dashboard_query_has_data() {
    let started = Instant::now();
    let p = Ports {
        admin: free_port(),
        lb: free_port(),
        dns: free_port(),
        a: free_port(),
        b: free_port(),
        bgp: free_port(),
        dead: free_port(),
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], p.admin));
    let lb = SocketAddr::from(([127, 0, 0, 1], p.lb));
    let dns = SocketAddr::from(([127, 0, 0, 1], p.dns));
    let _a = Nginx::start("a", p.a);
    let mut b = Nginx::start("b", p.b);
    let cfg = config(&p, &repo().join("examples/zones/example.com.zone"));
    let e = Anyedge::start(&cfg, lb);
    wait_port(admin, Duration::from_secs(10));

    // traffic for every panel: connections through both backends, DNS
    // answers (NOERROR and NXDOMAIN)
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && get(lb).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..6 {
        get(lb).unwrap();
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for (i, name) in ["www.example.com", "nope.example.com", "example.com"]
        .iter()
        .enumerate()
    {
        udp.send_to(&dns_query(i as u16, name, 1, false, &[]), dns).unwrap();
        let mut buf = [0u8; 1500];
        udp.recv(&mut buf).expect("DNS answer");
    }

    // promtool lints /metrics as served to a plain client (text format)
    let (code, body) = http(admin, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for name in [
        "anyedge_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "anyedge_config_reloads_total{result=\"failure\"} 0",
        "anyedge_dns_zone_load_failures_total{zone=\"example.com.\"} 0",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    let mut lint = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{body}"
    );

    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(repo().join("packaging/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = Prometheus::start(admin, &rules_for_test());
    let long = Duration::from_secs(30);
    prom.wait("the PoP scraped", long, || {
        prom.query("up{job=\"anyedge\"} == 1").len() == 1
            && !prom.query("anyedge_connections_accepted_total").is_empty()
    });

    // what this PoP's configuration gives cause for
    for (alert, labels) in [
        ("AnyedgeBgpSessionDown", &[("peer", "upstream")][..]),
        ("AnyedgeBfdDown", &[("peer", "upstream")][..]),
        (
            "AnyedgePrefixNotAnnounced",
            &[("prefix", "192.0.2.10/32"), ("state", "withdrawn")][..],
        ),
        ("AnyedgeDnsZoneNotLoaded", &[("zone", "example.net.")][..]),
        ("AnyedgeDnsZoneFailing", &[("zone", "example.net.")][..]),
    ] {
        prom.wait(&format!("{alert} {labels:?} firing"), long, || {
            prom.alerts(alert, labels, "firing") == 1
        });
    }
    assert_eq!(
        prom.alerts("AnyedgeDnsZoneFailing", &[("zone", "example.com.")], "firing"),
        0
    );
    assert_eq!(
        prom.query("anyedge_dns_zone_load_failures_total{zone=\"example.net.\"} > 0")
            .len(),
        1,
        "the secondary's failed refreshes are counted"
    );
    assert_eq!(
        prom.alerts("AnyedgeBackendDown", &[], "firing"),
        0,
        "both backends are up"
    );
    assert_eq!(prom.alerts("AnyedgeReloadFailed", &[], "firing"), 0);

    // a backend dies: its alert fires, naming service and backend; it returns: cleared
    b.kill();
    let down = [("service", "web"), ("backend", "b")];
    let fired = prom.wait("AnyedgeBackendDown firing for b", long, || {
        prom.alerts("AnyedgeBackendDown", &down, "firing") == 1
    });
    assert_eq!(prom.alerts("AnyedgeBackendDown", &[("backend", "a")], "firing"), 0);
    b.spawn();
    let cleared = prom.wait("AnyedgeBackendDown cleared", long, || {
        prom.alerts("AnyedgeBackendDown", &[], "firing") + prom.alerts("AnyedgeBackendDown", &[], "pending") == 0
    });
    eprintln!("backend-down alert fired {fired:?} after the kill, cleared {cleared:?} after the restart");
    // HAProxy's "Chk down" and "Dwntme" columns, as Prometheus sees them
    let sel = r#"{service="web",backend="b"}"#;
    let transitions = prom.query(&format!("anyedge_backend_down_transitions_total{sel}"));
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(transitions[0]["value"][1], "1", "b went down once: {transitions:?}");
    let downtime = prom.query(&format!("anyedge_backend_downtime_seconds_total{sel} > 0"));
    assert_eq!(downtime.len(), 1, "b's downtime is counted: {downtime:?}");
    let a = prom.query(r#"anyedge_backend_down_transitions_total{service="web",backend="a"} == 0"#);
    assert_eq!(a.len(), 1, "a never went down: {a:?}");

    // a failed reload: counted, in the status JSON, alerted; a good one clears it
    let s = status(admin);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["started_unix"].as_f64().unwrap() > 1.5e9, "{s}");
    assert!(s["uptime_seconds"].as_f64().unwrap() >= 0.0, "{s}");
    assert_eq!(
        s["reload"],
        serde_json::json!({ "ok": 0, "failed": 0, "last": null, "last_success_unix": null })
    );
    e.rewrite_config(&cfg.replace("[[service]]", "[[service]]\nnot_an_option = 1"));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    prom.wait("AnyedgeReloadFailed firing", long, || {
        prom.alerts("AnyedgeReloadFailed", &[], "firing") == 1
    });
    let r = &status(admin)["reload"];
    assert_eq!((r["ok"].as_u64(), r["failed"].as_u64()), (Some(0), Some(1)), "{r}");
    assert_eq!(r["last"]["result"], "failed", "{r}");
    assert!(
        r["last"]["error"].as_str().is_some_and(|e| e.contains("not_an_option")),
        "{r}"
    );
    assert!(
        r["last"]["at_unix"].as_f64().is_some() && r["last_success_unix"].is_null(),
        "{r}"
    );
    e.rewrite_config(&cfg);
    e.signal(nix::sys::signal::Signal::SIGHUP);
    prom.wait("AnyedgeReloadFailed cleared", long, || {
        prom.alerts("AnyedgeReloadFailed", &[], "firing") == 0
    });
    let r = &status(admin)["reload"];
    assert_eq!((r["ok"].as_u64(), r["failed"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(r["last"]["result"], "ok", "{r}");
    assert!(
        r["last"]["error"].is_null() && r["last_success_unix"].as_f64().is_some(),
        "{r}"
    );

    // every rule of the shipped file was loaded and evaluates without error
    let groups = prom.api("/api/v1/rules");
    let rules: Vec<&Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let shipped = std::fs::read_to_string(repo().join("packaging/prometheus/alerts.yml")).unwrap();
    assert_eq!(rules.len(), shipped.matches("- alert: ").count(), "{groups}");
    for r in &rules {
        assert_eq!(
            r["health"], "ok",
            "rule {} evaluates with an error: {}",
            r["name"], r["lastError"]
        );
    }

    // every query of the dashboard, with Grafana's variables as Grafana
    // would substitute them for this one PoP
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let empty: Vec<String> = queries
        .iter()
        .filter_map(|(title, expr)| {
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$__range", "5m")
                .replace("$instance", &admin.to_string());
            assert!(!q.contains('$'), "a Grafana variable left in {title}: {q}");
            prom.query(&q).is_empty().then(|| format!("{title}: {q}"))
        })
        .collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without series:\n{}",
        empty.join("\n")
    );
    eprintln!(
        "{} dashboard queries, took {:?} in all",
        queries.len(),
        started.elapsed()
    );
}
