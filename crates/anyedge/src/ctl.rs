//! `anyedge ctl`: the operator's client for the admin API. Human-readable
//! tables by default, the API's JSON with `--json`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

pub enum Action {
    Status,
    DrainBackend {
        service: String,
        backend: String,
        drain: bool,
    },
    DrainPop {
        drain: bool,
    },
    DrainPrefix {
        prefix: String,
        drain: bool,
    },
    Reload,
    ReloadZone {
        zone: String,
    },
    /// A backend added at run time (kept in the state directory).
    BackendAdd {
        service: String,
        address: String,
        name: Option<String>,
        weight: Option<u32>,
    },
    /// A backend of any origin removed at run time (it drains out).
    BackendRemove {
        service: String,
        backend: String,
    },
    /// A backend's weight set at run time.
    BackendWeight {
        service: String,
        backend: String,
        weight: u32,
    },
}

/// One HTTP/1.1 request to the admin API; returns (status, body).
fn request(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let addr: SocketAddr = admin
        .to_socket_addrs()
        .with_context(|| format!("admin address {admin:?}"))?
        .next()
        .with_context(|| format!("admin address {admin:?} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("cannot reach the admin API at {addr} (is [admin] configured and anyedge running?)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or_default();
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((status, body.to_string()))
}

pub fn run(admin: &str, token: Option<&str>, json: bool, action: Action) -> anyhow::Result<()> {
    let mut body = None;
    let (method, path) = match &action {
        Action::Status => ("GET", "/api/v1/status".to_string()),
        Action::BackendAdd {
            service,
            address,
            name,
            weight,
        } => {
            let mut o = serde_json::json!({ "address": address });
            if let Some(n) = name {
                o["name"] = n.clone().into();
            }
            if let Some(w) = weight {
                o["weight"] = (*w).into();
            }
            body = Some(o.to_string());
            ("POST", format!("/api/v1/services/{service}/backends"))
        }
        Action::BackendRemove { service, backend } => {
            ("DELETE", format!("/api/v1/services/{service}/backends/{backend}"))
        }
        Action::BackendWeight {
            service,
            backend,
            weight,
        } => {
            body = Some(serde_json::json!({ "weight": weight }).to_string());
            ("POST", format!("/api/v1/services/{service}/backends/{backend}/weight"))
        }
        Action::DrainBackend {
            service,
            backend,
            drain,
        } => (
            "POST",
            format!(
                "/api/v1/services/{service}/backends/{backend}/{}",
                if *drain { "drain" } else { "undrain" }
            ),
        ),
        Action::DrainPop { drain } => (
            "POST",
            format!("/api/v1/pop/{}", if *drain { "drain" } else { "undrain" }),
        ),
        Action::DrainPrefix { prefix, drain } => (
            "POST",
            format!(
                "/api/v1/anycast/{}/{}",
                prefix.replace('/', "%2F"),
                if *drain { "drain" } else { "undrain" }
            ),
        ),
        Action::Reload => ("POST", "/api/v1/reload".to_string()),
        Action::ReloadZone { zone } => ("POST", format!("/api/v1/dns/zones/{zone}/reload")),
    };
    let (status, body) = request(admin, method, &path, token, body.as_deref())?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if !(200..300).contains(&status) {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or(body.trim());
        bail!(
            "{method} {path}: HTTP {status}: {msg}{}",
            refusal_hint(status, msg, admin, token.is_some())
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match action {
        Action::Status => print!("{}", render_status(&v)),
        Action::DrainBackend {
            service,
            backend,
            drain,
        } => {
            println!("{service}/{backend}: {}", if drain { "draining" } else { "undrained" })
        }
        Action::DrainPop { drain } => println!("PoP {}", if drain { "draining" } else { "undrained" }),
        Action::DrainPrefix { drain, .. } => println!(
            "{}: {}",
            v.get("prefix").map(s).unwrap_or_default(),
            if drain { "draining" } else { "undrained" }
        ),
        Action::Reload => println!("configuration reloaded"),
        Action::BackendAdd { service, .. }
        | Action::BackendRemove { service, .. }
        | Action::BackendWeight { service, .. } => println!(
            "{service}/{}: {}{}",
            v.get("backend").map(s).unwrap_or_default(),
            match v.get("change").and_then(Value::as_str) {
                Some("add") => "added (traffic once it passes its checks)",
                Some("remove") => "removed (draining: open connections finish)",
                _ => "weight set",
            },
            if v.get("persisted").and_then(Value::as_bool) == Some(true) {
                ""
            } else {
                " (not kept across a restart: no pop.state_dir)"
            }
        ),
        Action::ReloadZone { zone } => println!(
            "zone {zone} reloaded, serial {}",
            v.get("serial").map(s).unwrap_or_default()
        ),
    }
    Ok(())
}

/// What the operator can do about a refused request: a token helps only
/// where the server has one configured.
fn refusal_hint(status: u16, msg: &str, admin: &str, token_given: bool) -> String {
    match status {
        403 if msg.contains("no admin token configured") => format!(
            "\nThe server at {admin} has no admin token configured, so state changes are disabled there \
             and no --token can help. To enable them, set a token of 16 or more \
             printable characters in its configuration:\n  [admin]\n  token = \"...\"   (or token_file = \"/path\")\n\
             then reload it (SIGHUP, e.g. systemctl reload anyedge) and pass the same token with --token or ANYEDGE_TOKEN."
        ),
        401 if token_given => " (the token given with --token or ANYEDGE_TOKEN is not the server's [admin] token)".into(),
        401 => " (pass --token or set ANYEDGE_TOKEN)".into(),
        _ => String::new(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A duration as "42s", "3m12s", "2h05m" or "3d04h".
fn duration(secs: f64) -> String {
    let t = secs.max(0.0) as u64;
    match t {
        0..60 => format!("{t}s"),
        60..3600 => format!("{}m{:02}s", t / 60, t % 60),
        3600..86400 => format!("{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("{}d{:02}h", t / 86400, t % 86400 / 3600),
    }
}

/// The status JSON as an operator reads it.
pub fn render_status(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "PoP {}  ({})  connections {}/{}",
        s(&v["pop"]),
        s(&v["config"]),
        s(&v["active_connections"]),
        s(&v["max_connections"])
    );
    if let Some(why) = v["pop_drain"].as_str() {
        let _ = writeln!(o, "PoP DRAINING: {why}");
    }
    if let Some(prefixes) = v["anycast"].as_array() {
        let _ = writeln!(
            o,
            "\n{:<24} {:<11} {:<6} {:<8} REASON",
            "ANYCAST PREFIX", "STATE", "PEERS", "DRAINED"
        );
        for p in prefixes {
            let drained = if p["operator_drain"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            };
            // announced to n of the m peers that can carry it
            let peers = match (p["announced_to"].as_u64(), p["carriers"].as_u64()) {
                (Some(n), Some(m)) => format!("{n}/{m}"),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                o,
                "{:<24} {:<11} {:<6} {:<8} {}",
                s(&p["prefix"]),
                s(&p["state"]),
                peers,
                drained,
                s(&p["reason"])
            );
        }
    }
    if let Some(peers) = v["bgp_peers"].as_array() {
        let _ = writeln!(
            o,
            "\n{:<16} {:<28} {:<12} {:<5} {:<6} LAST ERROR",
            "BGP PEER", "ADDRESS", "STATE", "BFD", "FLAPS"
        );
        for p in peers {
            let st = if p["established"].as_bool() == Some(true) {
                "established"
            } else {
                "down"
            };
            let _ = writeln!(
                o,
                "{:<16} {:<28} {:<12} {:<5} {:<6} {}",
                s(&p["name"]),
                s(&p["address"]),
                st,
                p["bfd"].as_str().unwrap_or("-"),
                s(&p["flaps"]),
                s(&p["last_error"])
            );
        }
    }
    for svc in v["services"].as_array().into_iter().flatten() {
        let r = &svc["rejected"];
        let _ = writeln!(
            o,
            "\nSERVICE {}  listen {}  {}  active {}  accepted {}  no_backend {}  connect_failed {}  silent {}  cap {}",
            s(&svc["name"]),
            svc["listen"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            s(&svc["balance"]),
            s(&svc["active_connections"]),
            s(&svc["accepted"]),
            s(&r["no_backend"]),
            s(&r["connect_failed"]),
            s(&r["client_silent"]),
            r["global_cap"].as_u64().unwrap_or(0) + r["service_cap"].as_u64().unwrap_or(0),
        );
        let _ = writeln!(
            o,
            "  {:<16} {:<24} {:<7} {:<6} {:<7} {:<7} {:<9} {:<8} {:<9} {:<8} {:<10} WHY",
            "BACKEND",
            "ADDRESS",
            "ORIGIN",
            "HEALTH",
            "DRAIN",
            "ACTIVE",
            "CONNS",
            "CHKFAIL",
            "DOWNTIME",
            "LASTCHG",
            "CHECK"
        );
        for b in svc["backends"].as_array().into_iter().flatten() {
            let check = match b["last_check"].get("ok").and_then(Value::as_bool) {
                Some(true) => format!("ok {:.1}ms", b["last_check"]["latency_ms"].as_f64().unwrap_or(0.0)),
                Some(false) => format!("failed: {}", s(&b["last_check"]["error"])),
                None => "-".to_string(),
            };
            let _ = writeln!(
                o,
                "  {:<16} {:<24} {:<7} {:<6} {:<7} {:<7} {:<9} {:<8} {:<9} {:<8} {:<10} {}",
                s(&b["name"]),
                s(&b["address"]),
                s(&b["origin"]),
                s(&b["health"]),
                if b["removed"].as_bool() == Some(true) {
                    "removed"
                } else if b["draining"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                s(&b["active_connections"]),
                s(&b["connections"]),
                s(&b["checks_failed"]),
                b["downtime_seconds"].as_f64().map_or("-".into(), duration),
                b["health_since_seconds"].as_f64().map_or("-".into(), duration),
                check,
                match b["failing_for_seconds"].as_f64() {
                    Some(t) => format!("{} (failing for {t:.0}s)", s(&b["health_reason"])),
                    None => s(&b["health_reason"]),
                }
            );
        }
    }
    if let Some(zones) = v["dns"]["zones"].as_array() {
        let _ = writeln!(
            o,
            "\n{:<28} {:<12} {:<10} {:<11} SOURCE / ERROR",
            "DNS ZONE", "SERIAL", "RECORDS", "LOADED BY"
        );
        for z in zones {
            let source = match z["error"].as_str() {
                Some(e) => format!("{}  ERROR: {e}", s(&z["source"])),
                None => s(&z["source"]),
            };
            let _ = writeln!(
                o,
                "{:<28} {:<12} {:<10} {:<11} {}",
                s(&z["name"]),
                s(&z["serial"]),
                s(&z["records"]),
                s(&z["loaded_by"]),
                source
            );
        }
        let st = &v["dns"]["stats"];
        let _ = writeln!(
            o,
            "DNS queries: udp {}  tcp {}",
            s(&st["udp_queries"]),
            s(&st["tcp_queries"])
        );
    }
    if let Some(d) = v["guard"]["drops"].as_object() {
        let parts: Vec<String> = d.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            o,
            "\nGUARD drops: {}  dynamic blocks {}",
            parts.join(", "),
            s(&v["guard"]["dynamic_blocks"])
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::render_status;

    #[test]
    fn renders_the_operator_view() {
        let v = serde_json::json!({
            "pop": "fra1", "config": "/etc/anyedge.toml", "active_connections": 3, "max_connections": 100,
            "anycast": [{"prefix": "192.0.2.10/32", "state": "announced", "reason": "all checks pass",
                "announced_to": 1, "carriers": 1}],
            "bgp_peers": [{"name": "r1", "address": "198.18.0.2:179", "established": true, "bfd": "up", "flaps": 0, "last_error": ""}],
            "services": [{"name": "web", "listen": ["0.0.0.0:80"], "balance": "Maglev", "active_connections": 3,
                "accepted": 10, "rejected": {"no_backend": 0, "client_silent": 1, "global_cap": 0, "service_cap": 0},
                "backends": [{"name": "a", "address": "198.18.31.2:8080", "health": "up", "draining": false,
                    "active_connections": 3, "connections": 10, "last_check": {"ok": true, "latency_ms": 0.4},
                    "health_reason": "2 consecutive passing checks"},
                    {"name": "b", "address": "198.18.31.3:8080", "health": "down", "draining": false,
                    "active_connections": 0, "connections": 0, "last_check": {"ok": false, "error": "connection refused"},
                    "health_reason": "never up: 40 consecutive failed checks: connection refused",
                    "failing_for_seconds": 120.2, "checks_failed": 40, "downtime_seconds": 3725.2,
                    "health_since_seconds": 3725.2}]}],
            "guard": {"drops": {"deny_list": 2}, "dynamic_blocks": 1},
            "dns": {"zones": [{"name": "example.com", "serial": 7, "records": 12, "source": "/z/example.com.zone",
                "loaded_by": "file", "error": null}], "stats": {"udp_queries": 5, "tcp_queries": 1}}
        });
        let out = render_status(&v);
        assert!(out.contains("PoP fra1"), "{out}");
        assert!(out.contains("192.0.2.10/32            announced   1/1    no"), "{out}");
        assert!(
            out.contains("r1               198.18.0.2:179               established  up"),
            "{out}"
        );
        assert!(out.contains("failed: connection refused"), "{out}");
        assert!(
            out.contains("never up: 40 consecutive failed checks: connection refused (failing for 120s)"),
            "{out}"
        );
        assert!(
            out.contains("r1               198.18.0.2:179               established"),
            "{out}"
        );
        assert!(out.contains("ok 0.4ms"), "{out}");
        // HAProxy's columns: failed checks, downtime, last state change
        assert!(
            out.contains("  b                198.18.31.3:8080         -       down   no      0       0         40       1h02m     1h02m    failed: connection refused"),
            "{out}"
        );
        assert_eq!(
            [0.4, 59.9, 60.0, 3599.0, 3600.0, 90000.0].map(super::duration),
            ["0s", "59s", "1m00s", "59m59s", "1h00m", "1d01h"]
        );
        assert!(out.contains("deny_list 2"), "{out}");
        assert!(
            out.contains("example.com                  7            12         file"),
            "{out}"
        );
        assert!(out.contains("udp 5  tcp 1"), "{out}");
    }
}
