//! The admin API of a running daemon: every endpoint, the auth failures, the
//! refusal to expose an unauthenticated API beyond loopback, and /metrics
//! parsed by a Prometheus text parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const TOKEN: &str = "s3cret-token-for-tests-0123";

fn config(lb: u16, admin: u16, a: SocketAddr, b: SocketAddr, token: bool) -> String {
    let token = if token {
        format!("token = \"{TOKEN}\"")
    } else {
        String::new()
    };
    format!(
        r#"
[pop]
name = "adm"
[admin]
listen = "127.0.0.1:{admin}"
{token}
{web}"#,
        web = round_robin_web(lb, a, b, "")
    )
}

/// (status, body)
fn start(token: bool) -> (Anyedge, SocketAddr, SocketAddr) {
    let (a, b) = (proxy_backend("backend=a\n".into()), proxy_backend("backend=b\n".into()));
    let (lb_port, admin_port) = (free_port(), free_port());
    let lb = SocketAddr::from(([127, 0, 0, 1], lb_port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let e = Anyedge::start(&config(lb_port, admin_port, a, b, token), lb);
    wait_port(admin, Duration::from_secs(5));
    e.wait_log("backend up", 2, Duration::from_secs(5));
    (e, lb, admin)
}

#[test]
fn status_reports_services_and_backends() {
    let (_e, lb, admin) = start(true);
    get(lb).unwrap();
    let (code, body) = http(admin, "GET", "/api/v1/status", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pop"], "adm");
    let svc = &v["services"][0];
    assert_eq!(svc["name"], "web");
    assert!(svc["accepted"].as_u64().unwrap() >= 1);
    let backends = svc["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for b in backends {
        assert_eq!(b["health"], "up", "{b}");
        assert_eq!(b["last_check"]["ok"], true, "{b}");
        assert_eq!(b["draining"], false);
    }
}

#[test]
fn drain_and_undrain_need_the_token_and_move_traffic() {
    let (e, lb, admin) = start(true);
    let path = "/api/v1/services/web/backends/a/drain";
    // auth failures change nothing
    assert_eq!(http(admin, "POST", path, None).0, 401);
    assert_eq!(http(admin, "POST", path, Some("wrong-token-wrong-token")).0, 401);
    let served: Vec<String> = (0..6).map(|_| get(lb).unwrap().1).collect();
    assert!(served.iter().any(|b| b == "backend=a\n"), "{served:?}");
    // unknown names
    assert_eq!(
        http(admin, "POST", "/api/v1/services/nope/backends/a/drain", Some(TOKEN)).0,
        404
    );
    assert_eq!(
        http(admin, "POST", "/api/v1/services/web/backends/nope/drain", Some(TOKEN)).0,
        404
    );
    // drain a: only b gets new connections
    let (code, body) = http(admin, "POST", path, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    for _ in 0..10 {
        assert_eq!(get(lb).unwrap().1, "backend=b\n");
    }
    let v: serde_json::Value = serde_json::from_str(&http(admin, "GET", "/api/v1/status", None).1).unwrap();
    assert_eq!(v["services"][0]["backends"][0]["draining"], true);
    e.wait_log("backend drain changed by admin API", 1, Duration::from_secs(1));
    // undrain: a is back
    assert_eq!(
        http(admin, "POST", "/api/v1/services/web/backends/a/undrain", Some(TOKEN)).0,
        200
    );
    let served: Vec<String> = (0..6).map(|_| get(lb).unwrap().1).collect();
    assert!(served.iter().any(|b| b == "backend=a\n"), "{served:?}");
}

#[test]
fn reload_endpoint_applies_good_and_rejects_bad_config() {
    let (e, _lb, admin) = start(true);
    assert_eq!(http(admin, "POST", "/api/v1/reload", None).0, 401);
    let (code, body) = http(admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let good = std::fs::read_to_string(&e.config).unwrap();
    e.rewrite_config(&good.replace("[[service.backend]]\nname = \"b\"", "[[service.backend]]\nnme = \"b\""));
    let (code, body) = http(admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown field `nme`"), "{body}");
    // still running the old config
    let v: serde_json::Value = serde_json::from_str(&http(admin, "GET", "/api/v1/status", None).1).unwrap();
    assert_eq!(v["services"][0]["backends"].as_array().unwrap().len(), 2);
}

/// Every state-changing endpoint.
const ACTIONS: [&str; 8] = [
    "/api/v1/services/web/backends/a/drain",
    "/api/v1/services/web/backends/a/undrain",
    "/api/v1/pop/drain",
    "/api/v1/pop/undrain",
    "/api/v1/anycast/192.0.2.10%2F32/drain",
    "/api/v1/anycast/192.0.2.10%2F32/undrain",
    "/api/v1/reload",
    "/api/v1/dns/zones/example.com/reload",
];

#[test]
fn every_endpoint_auth_and_errors() {
    let (e, _lb, admin) = start(true);
    // reads need no token
    let (code, body) = http(admin, "GET", "/", None);
    assert_eq!(code, 200);
    assert!(body.contains("<title>anyedge PoP</title>"), "{body}");
    assert_eq!(http(admin, "GET", "/api/v1/status", None).0, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).0, 200);
    // every action: no token, a wrong one, a token of another scheme
    for path in ACTIONS {
        assert_eq!(http(admin, "POST", path, None).0, 401, "{path}");
        assert_eq!(
            http(admin, "POST", path, Some("not-the-token-at-all-000000")).0,
            401,
            "{path}"
        );
        assert_eq!(
            http(admin, "POST", path, Some(&TOKEN[..TOKEN.len() - 1])).0,
            401,
            "{path}"
        );
        // actions are POST only
        assert_eq!(http(admin, "GET", path, Some(TOKEN)).0, 405, "{path}");
    }
    assert!(!e.log().contains("drain changed"), "a refused call changed nothing");
    // with the token: what this PoP lacks is said, not faked
    let (code, body) = http(admin, "POST", "/api/v1/pop/drain", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("no [bgp] configured"), "{body}");
    let (code, body) = http(admin, "POST", "/api/v1/anycast/192.0.2.10%2F32/drain", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    let (code, body) = http(admin, "POST", "/api/v1/dns/zones/example.com/reload", Some(TOKEN));
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no [dns] section"), "{body}");
    assert_eq!(http(admin, "GET", "/api/v1/nothing-here", None).0, 404);
    // errors are JSON with an "error" field
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].is_string(), "{v}");
}

#[test]
fn without_a_token_the_api_is_read_only() {
    let (_e, _lb, admin) = start(false);
    assert_eq!(http(admin, "GET", "/api/v1/status", None).0, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).0, 200);
    for path in ACTIONS {
        let (code, body) = http(admin, "POST", path, Some(TOKEN));
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("token"), "says why: {body}");
        assert_eq!(http(admin, "POST", path, None).0, 403, "{path}");
    }
}

#[test]
fn refuses_unauthenticated_admin_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.toml");
    std::fs::write(&p, "[pop]\nname = \"x\"\n[admin]\nlisten = \"0.0.0.0:9180\"\n").unwrap();
    for cmd in ["check", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args([cmd, "-c"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing to expose the admin API"), "{err}");
        assert!(err.contains(":4:"), "names the line: {err}");
    }
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let (_e, lb, admin) = start(true);
    for _ in 0..4 {
        get(lb).unwrap();
    }
    let (code, body) = http(admin, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let find = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{body}"))
    };
    assert!(find("anyedge_connections_accepted_total", &[("service", "web")]) >= 4.0);
    assert_eq!(find("anyedge_backend_up", &[("service", "web"), ("backend", "a")]), 1.0);
    let conns = find("anyedge_backend_connections_total", &[("backend", "a")])
        + find("anyedge_backend_connections_total", &[("backend", "b")]);
    assert!(conns >= 4.0);
    assert!(
        find(
            "anyedge_backend_bytes_total",
            &[("backend", "a"), ("direction", "to_client")]
        ) > 0.0
    );
    assert!(find("anyedge_health_checks_total", &[("backend", "b"), ("result", "ok")]) >= 1.0);
    let hist = scrape
        .samples
        .iter()
        .find(|s| s.metric == "anyedge_health_check_duration_seconds" && s.labels.get("backend") == Some("a"))
        .unwrap_or_else(|| panic!("no health check histogram in\n{body}"));
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.last().is_some_and(|b| b.count >= 1.0), "{buckets:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

fn ctl(admin: SocketAddr, args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_anyedge"));
    c.arg("ctl").arg("--admin").arg(admin.to_string()).args(args);
    c.env_remove("ANYEDGE_TOKEN");
    if let Some(t) = token {
        c.env("ANYEDGE_TOKEN", t);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctl_status_drain_reload() {
    let (_e, lb, admin) = start(true);
    let (ok, out, err) = ctl(admin, &["status"], None);
    assert!(ok, "{err}");
    assert!(out.contains("PoP adm"), "{out}");
    assert!(out.contains("SERVICE web"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains(" up ")),
        "{out}"
    );
    let (ok, out, _) = ctl(admin, &["status", "--json"], None);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"][0]["backends"].as_array().unwrap().len(), 2);
    // state changes need the token
    let (ok, _, err) = ctl(admin, &["drain", "--service", "web", "--backend", "a"], None);
    assert!(!ok);
    assert!(err.contains("HTTP 401") && err.contains("ANYEDGE_TOKEN"), "{err}");
    let (ok, _, err) = ctl(
        admin,
        &["drain", "--service", "web", "--backend", "a"],
        Some("wrong-token-wrong-token"),
    );
    assert!(!ok);
    assert!(
        err.contains("HTTP 401") && err.contains("is not the server's [admin] token"),
        "{err}"
    );
    let (ok, out, err) = ctl(admin, &["drain", "--service", "web", "--backend", "a"], Some(TOKEN));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "web/a: draining");
    for _ in 0..6 {
        assert_eq!(get(lb).unwrap().1, "backend=b\n");
    }
    let (ok, _, _) = ctl(admin, &["undrain", "--service", "web", "--backend", "a"], Some(TOKEN));
    assert!(ok);
    let (ok, out, err) = ctl(admin, &["reload"], Some(TOKEN));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configuration reloaded");
    // a PoP drain without [bgp] says why it cannot
    let (ok, _, err) = ctl(admin, &["drain"], Some(TOKEN));
    assert!(!ok);
    assert!(err.contains("no [bgp] configured"), "{err}");
}

/// Against a server without a token no --token can help: ctl says that the
/// server has none, and how to configure one; doing so enables state changes.
#[test]
fn ctl_says_when_the_server_has_no_token() {
    let (e, _lb, admin) = start(false);
    for token in [None, Some(TOKEN)] {
        for args in [&["drain", "--service", "web", "--backend", "a"][..], &["drain"][..]] {
            let (ok, _, err) = ctl(admin, args, token);
            assert!(!ok);
            assert!(
                err.contains("HTTP 403")
                    && err.contains(&format!("The server at {admin} has no admin token configured"))
                    && err.contains("state changes are disabled there")
                    && err.contains("[admin]\n  token = "),
                "{err}"
            );
            assert!(!err.contains("pass --token"), "{err}");
        }
    }
    // the advice works: a token in the config and a reload (SIGHUP)
    let cfg = std::fs::read_to_string(&e.config).unwrap();
    let listen = format!("[admin]\nlisten = \"{admin}\"\n");
    assert!(cfg.contains(&listen), "{cfg}");
    e.rewrite_config(&cfg.replace(&listen, &format!("{listen}token = \"{TOKEN}\"\n")));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload applied", 1, Duration::from_secs(5));
    let (ok, out, err) = ctl(admin, &["drain", "--service", "web", "--backend", "a"], Some(TOKEN));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "web/a: draining");
}
