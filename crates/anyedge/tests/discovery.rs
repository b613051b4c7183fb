//! Backends that follow the cluster: DNS discovery against a real Knot,
//! a watched backends file, the runtime API (kept across reload and
//! restart), and bad input keeping the last good pool. The provider move
//! under load through the lab's router and two PoPs: `discovery_lab.rs`.
//!
//! Everything runs in a network namespace (root): discovered backends on
//! loopback are refused by design, so the nodes live on 198.18.7.0/24
//! addresses of the namespace's `lo`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyedge_netns::Netns;
use anyedge_testkit::knot::{Knot, KnotConf};
use anyedge_testkit::{holds_for, wait_until};
use common::Anyedge;
use serde_json::Value;

const TOKEN: &str = "discovery-test-token-0123456789";
const ZONE: &str = "example.test.";

/// A namespace with `lo` carrying the node, PoP and client addresses.
fn lab(tag: &str) -> Netns {
    let ns = Netns::unique(tag).unwrap();
    for i in 1..=8 {
        ns.add_addr("lo", &format!("198.18.7.{i}/32")).unwrap();
    }
    for i in 101..=102 {
        ns.add_addr("lo", &format!("198.18.7.{i}/32")).unwrap();
    }
    for i in 1..=16 {
        ns.add_addr("lo", &format!("198.18.9.{i}/32")).unwrap();
    }
    ns
}

fn node_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 7, i], 8080))
}

/// A node (like nginx with `listen ... proxy_protocol`) at `node_addr(i)`
/// in `ns`: reads the PROXY header and the request head (waiting up to a
/// minute, so a test can hold a request open across a move), answers
/// `node=n<i> pop=<PoP address the connection came from>`.
fn node(ns: &Netns, i: u8) {
    let l: TcpListener = ns.enter(move || TcpListener::bind(node_addr(i)).unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                let client = loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Ok(anyedge_proxy::Decoded::Complete { len, header }) = anyedge_proxy::decode(&buf, 4096) {
                        if buf[len..].windows(4).any(|w| w == b"\r\n\r\n") {
                            break match header.addrs {
                                anyedge_proxy::Addresses::Tcp { src, .. } => src.ip().to_string(),
                                _ => String::new(),
                            };
                        }
                    }
                };
                let body = format!("node=n{i} client={client}");
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

/// One GET from `src` to `target`: the node that answered.
fn get(src: Ipv4Addr, target: SocketAddr) -> std::io::Result<String> {
    common::get_from(src, target, "/").map(|(_, b)| common::field(&b, "node").to_string())
}

/// An admin API request with a JSON body, from inside `ns`.
fn api(ns: &Netns, admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    ns.enter(move || {
        let mut s = TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    })
}

/// Starts anyedge in `ns` and waits for its service and admin API.
fn start(ns: &Netns, cfg: &str, lb: SocketAddr, admin: SocketAddr) -> Anyedge {
    let a = Anyedge::start_in(ns, cfg, lb);
    ns.enter(move || common::wait_port(admin, Duration::from_secs(10)));
    a
}

fn status(ns: &Netns, admin: SocketAddr) -> Value {
    api(ns, admin, "GET", "/api/v1/status", "").1
}

/// The backends of `service`: name -> (origin, health, removed, active).
fn backends(st: &Value, service: &str) -> BTreeMap<String, (String, String, bool, u64)> {
    st["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                (
                    b["origin"].as_str().unwrap_or_default().to_string(),
                    b["health"].as_str().unwrap_or_default().to_string(),
                    b["removed"].as_bool().unwrap_or(false),
                    b["active_connections"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn discovery_errors(st: &Value, service: &str) -> u64 {
    st["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == service)
        .and_then(|s| s["discovery_errors"].as_u64())
        .unwrap_or(0)
}

/// Names of the backends of `service` that are up and not removed.
fn serving(st: &Value, service: &str) -> BTreeSet<String> {
    backends(st, service)
        .into_iter()
        .filter(|(_, (_, h, removed, _))| h == "up" && !removed)
        .map(|(n, _)| n)
        .collect()
}

fn names(nodes: &[u8]) -> BTreeSet<String> {
    nodes.iter().map(|i| node_addr(*i).to_string()).collect()
}

/// The zone with `nodes` as A records of `nodes.example.test.` (TTL 1)
/// and SRV records of `_web._tcp` pointing at `srv` nodes (or `bulk` of
/// them: that many SRV records).
fn zone(serial: u32, nodes: &[&str], srv: &[u8], bulk: usize) -> String {
    let mut z =
        format!("$ORIGIN {ZONE}\n$TTL 1\n@ SOA ns1 hostmaster {serial} 60 60 600 1\n@ NS ns1\nns1 A 198.18.7.53\n");
    for a in nodes {
        z.push_str(&format!("nodes 1 A {a}\n"));
    }
    for i in srv {
        z.push_str(&format!("n{i} 1 A 198.18.7.{i}\n_web._tcp 1 SRV 10 5 8080 n{i}\n"));
    }
    for k in 0..bulk {
        z.push_str(&format!("_web._tcp 1 SRV 10 1 {} n1\n", 1000 + k));
    }
    z
}

fn knot(ns: &Netns, dir: &Path, text: &str) -> Knot {
    let file = dir.join("example.test.zone");
    std::fs::write(&file, text).unwrap();
    let conf = KnotConf::new().primary(ZONE, &file, &[]);
    ns.enter(move || Knot::start(&conf))
}

fn set_zone(k: &Knot, dir: &Path, text: &str) -> Instant {
    std::fs::write(dir.join("example.test.zone"), text).unwrap();
    k.knotc(&["zone-reload", ZONE]);
    Instant::now()
}

const HEALTH: &str = r#"[service.health]
kind = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 2"#;

/// Opens a connection through `lb` from `src` and sends the PROXY-less
/// start of a request (the node waits for the rest).
fn open_held(ns: &Netns, src: Ipv4Addr, lb: SocketAddr) -> TcpStream {
    ns.enter(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((src, 0)).into()).unwrap();
        sock.connect_timeout(&lb.into(), Duration::from_secs(2)).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: held\r\n").unwrap();
        s
    })
}

/// Ends a held request: the node that answered it.
fn finish_held(mut s: TcpStream) -> String {
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "held request failed: {resp:?}");
    common::field(resp.split_once("\r\n\r\n").unwrap().1, "node").to_string()
}

/// A lab (see [`lab`]) with nodes 1..=`nodes` serving, and the addresses
/// the PoP listens on.
struct Setup {
    ns: Netns,
    /// The service "web".
    lb: SocketAddr,
    admin: SocketAddr,
}

fn setup(tag: &str, nodes: u8) -> Setup {
    let ns = lab(tag);
    for i in 1..=nodes {
        node(&ns, i);
    }
    Setup {
        ns,
        lb: SocketAddr::from(([198, 18, 7, 101], 80)),
        admin: SocketAddr::from(([198, 18, 7, 101], 9000)),
    }
}

impl Setup {
    /// A config: the PoP (with `state_dir` if given), the admin API and the
    /// round-robin service "web" on `lb` with `web` (more of its keys) and
    /// [`HEALTH`]; `rest`: what follows (its backends, other services).
    fn config(&self, state: Option<&Path>, web: &str, rest: &str) -> String {
        let state = state.map_or(String::new(), |d| format!("state_dir = \"{}\"\n", d.display()));
        format!(
            "[pop]\nname = \"p1\"\n{state}[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n\
             [[service]]\nname = \"web\"\nlisten = [\"{lb}\"]\nbalance = \"round_robin\"\n{web}\n{HEALTH}\n{rest}",
            admin = self.admin,
            lb = self.lb,
        )
    }

    fn start(&self, cfg: &str) -> Anyedge {
        start(&self.ns, cfg, self.lb, self.admin)
    }

    fn status(&self) -> Value {
        status(&self.ns, self.admin)
    }

    /// Waits until `cond` holds of the status.
    #[track_caller]
    fn wait_status(&self, what: &str, max: Duration, cond: impl Fn(&Value) -> bool) {
        wait_until(what, max, || {
            let st = self.status();
            cond(&st).then_some(()).ok_or(st)
        });
    }

    /// Runs `change`, then waits until `service` counts one more discovery
    /// error.
    #[track_caller]
    fn wait_refused(&self, service: &str, what: &str, max: Duration, change: impl FnOnce()) {
        let before = discovery_errors(&self.status(), service);
        change();
        self.wait_status(what, max, |st| discovery_errors(st, service) > before);
    }
}

/// Replaces `file` with `text` atomically, as a controller or Ansible
/// would; when.
fn write_backends(file: &Path, text: &str) -> Instant {
    let tmp = file.with_file_name(".backends.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
    Instant::now()
}

#[test]
fn dns_discovery_follows_knot_records_and_keeps_the_pool_on_bad_answers() {
    let s = setup("dnsd", 4);
    let (ns, lb) = (&s.ns, s.lb);
    let zdir = tempfile::tempdir().unwrap();
    let k = knot(ns, zdir.path(), &zone(1, &["198.18.7.1", "198.18.7.2"], &[1, 2], 0));
    let srv_lb = SocketAddr::from(([198, 18, 7, 101], 81));
    let state = tempfile::tempdir().unwrap();
    let cfg = s.config(
        Some(state.path()),
        &format!(
            r#"discover = {{ name = "nodes.{ZONE}", type = "A", port = 8080, resolvers = ["{knot}"], min_refresh = "500ms", max_refresh = "5s" }}"#,
            knot = k.addr
        ),
        &format!(
            r#"[[service]]
name = "srv"
listen = ["{srv_lb}"]
discover = {{ name = "_web._tcp.{ZONE}", type = "SRV", resolvers = ["{knot}"], min_refresh = "500ms", max_refresh = "5s" }}
{HEALTH}
"#,
            knot = k.addr
        ),
    );
    let a = s.start(&cfg);
    s.wait_status("the A records' nodes serve", Duration::from_secs(10), |st| {
        serving(st, "web") == names(&[1, 2])
    });
    s.wait_status("the SRV records' nodes serve", Duration::from_secs(10), |st| {
        serving(st, "srv") == names(&[1, 2])
    });
    let st = s.status();
    assert!(backends(&st, "web").values().all(|b| b.0 == "dns"), "{st}");

    // A request held on n1 across its removal must finish on n1.
    let held: Vec<TcpStream> = (1..=4)
        .map(|i| open_held(ns, Ipv4Addr::new(198, 18, 9, i), lb))
        .collect();
    wait_until("held connections reach both nodes", Duration::from_secs(5), || {
        let b = backends(&s.status(), "web");
        let n1 = b.get(&node_addr(1).to_string()).map_or(0, |x| x.3);
        (n1 > 0).then_some(()).ok_or(b)
    });

    // n3 added, n1 removed: n3 gets traffic within TTL (1 s) + 1 s.
    let t0 = set_zone(&k, zdir.path(), &zone(2, &["198.18.7.2", "198.18.7.3"], &[1, 2], 0));
    let to_n3 = wait_until("a request reaches n3", Duration::from_secs(10), || {
        match ns.enter(move || get(Ipv4Addr::new(198, 18, 9, 9), lb)) {
            Ok(n) if n == "n3" => Ok(t0.elapsed()),
            other => Err(other.map_err(|e| e.to_string())),
        }
    });
    println!("DNS: record change -> first request on the new node: {to_n3:?}");
    assert!(
        to_n3 < Duration::from_secs(2) + Duration::from_millis(1500),
        "{to_n3:?}"
    );
    // n1 drains: no new connection, but still listed while held open
    let st = s.status();
    let n1 = backends(&st, "web")[&node_addr(1).to_string()].clone();
    assert!(n1.2 && n1.3 > 0, "n1 removed but holding its connections: {st}");
    holds_for(
        "n1 gets no new connection while draining",
        Duration::from_secs(1),
        || match ns.enter(move || get(Ipv4Addr::new(198, 18, 9, 10), lb)) {
            Ok(n) if n == "n2" || n == "n3" => Ok(()),
            other => Err(other.map_err(|e| e.to_string())),
        },
    );
    let answered: Vec<String> = held.into_iter().map(finish_held).collect();
    assert!(answered.iter().any(|n| n == "n1"), "{answered:?}");
    wait_until(
        "n1 disappears once its connections ended",
        Duration::from_secs(5),
        || {
            let b = backends(&s.status(), "web");
            (!b.contains_key(&node_addr(1).to_string())).then_some(()).ok_or(b)
        },
    );

    // Bad records: loopback, unspecified, multicast -> refused, pool kept.
    for (serial, bad) in [(3, "127.0.0.1"), (4, "0.0.0.0"), (5, "224.0.0.1")] {
        s.wait_refused(
            "web",
            &format!("records with {bad} counted as an error"),
            Duration::from_secs(10),
            || {
                set_zone(&k, zdir.path(), &zone(serial, &["198.18.7.2", bad], &[1, 2], 0));
            },
        );
        let st = s.status();
        assert_eq!(serving(&st, "web"), names(&[2, 3]), "{bad}: {st}");
    }
    // 2,000 A records (they fit in one TCP answer): over our bound of 1024
    // backends, refused, the last good pool keeps serving.
    let many: Vec<String> = (0..2000u32)
        .map(|i| format!("198.18.{}.{}", 100 + i / 250, 1 + i % 250))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    s.wait_refused("web", "2,000 A records refused", Duration::from_secs(15), || {
        set_zone(&k, zdir.path(), &zone(6, &many, &[1, 2], 0));
    });
    assert_eq!(serving(&s.status(), "web"), names(&[2, 3]));
    assert!(a.log().contains("2000 records exceed the bound of 1024"), "{}", a.log());
    // 10,000 SRV records: more than DNS can carry (Knot answers SERVFAIL):
    // the last good SRV pool keeps serving.
    s.wait_refused(
        "srv",
        "the SRV flood counted as an error",
        Duration::from_secs(15),
        || {
            set_zone(&k, zdir.path(), &zone(7, &["198.18.7.2", "198.18.7.3"], &[], 10_000));
        },
    );
    let st = s.status();
    assert_eq!(serving(&st, "srv"), names(&[1, 2]), "{st}");
    let r = ns.enter(move || get(Ipv4Addr::new(198, 18, 9, 11), srv_lb));
    assert!(r.is_ok(), "{r:?}");
    assert!(a.log().contains("keeping the last good backends"), "{}", a.log());

    // A Knot outage keeps the pool.
    let pid = nix::unistd::Pid::from_raw(k.pid().unwrap() as i32);
    s.wait_refused("web", "resolver failures counted", Duration::from_secs(15), || {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    });
    // a reload during the outage keeps the discovered backends too
    a.signal(nix::sys::signal::Signal::SIGHUP);
    a.wait_log("reload applied", 1, Duration::from_secs(10));
    holds_for("the pool serves through the outage", Duration::from_secs(2), || {
        let st = s.status();
        let ok =
            serving(&st, "web") == names(&[2, 3]) && ns.enter(move || get(Ipv4Addr::new(198, 18, 9, 12), lb)).is_ok();
        ok.then_some(()).ok_or(st)
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    drop(a);
}

#[test]
fn watched_file_changes_apply_within_a_second_and_bad_files_keep_the_pool() {
    let s = setup("filed", 3);
    let (ns, lb) = (&s.ns, s.lb);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends.json");
    let write = |text: &str| write_backends(&file, text);
    write(&format!(
        r#"[{{"address": "{}"}}, {{"address": "{}", "weight": 2}}]"#,
        node_addr(1),
        node_addr(2)
    ));
    let a = s.start(&s.config(None, &format!("backends_file = \"{}\"", file.display()), ""));
    s.wait_status("the file's nodes serve", Duration::from_secs(10), |st| {
        serving(st, "web") == names(&[1, 2])
    });
    assert!(backends(&s.status(), "web").values().all(|b| b.0 == "file"));
    let t0 = write(&format!(
        r#"[{{"address": "{}"}}, {{"address": "{}"}}]"#,
        node_addr(2),
        node_addr(3)
    ));
    let to_n3 = wait_until("a request reaches n3", Duration::from_secs(10), || {
        match ns.enter(move || get(Ipv4Addr::new(198, 18, 9, 1), lb)) {
            Ok(n) if n == "n3" => Ok(t0.elapsed()),
            other => Err(other.map_err(|e| e.to_string())),
        }
    });
    println!("file: change -> first request on the new node: {to_n3:?}");
    assert!(to_n3 < Duration::from_millis(1500), "{to_n3:?}");
    s.wait_status("n1 is gone", Duration::from_secs(5), |st| {
        serving(st, "web") == names(&[2, 3]) && backends(st, "web").len() == 2
    });
    // Bad files: a duplicate name, a bad weight, garbage: the pool stays.
    for bad in [
        format!(
            r#"[{{"name": "x", "address": "{}"}}, {{"name": "x", "address": "{}"}}]"#,
            node_addr(1),
            node_addr(2)
        ),
        format!(r#"[{{"address": "{}", "weight": 10001}}]"#, node_addr(1)),
        format!(r#"[{{"address": "{}", "weight": -1}}]"#, node_addr(1)),
        "[{\"address\": ".to_string(),
    ] {
        s.wait_refused("web", &format!("{bad} refused"), Duration::from_secs(5), || {
            write(&bad);
        });
        let st = s.status();
        assert_eq!(serving(&st, "web"), names(&[2, 3]), "{bad}: {st}");
    }
    assert!(a.log().contains("backends file refused"), "{}", a.log());
}

#[test]
fn runtime_changes_survive_reload_and_restart() {
    let s = setup("rtd", 3);
    let (ns, admin) = (&s.ns, s.admin);
    let state = tempfile::tempdir().unwrap();
    let cfg = s.config(
        Some(state.path()),
        "slow_start = \"2s\"",
        &format!("[[service.backend]]\nname = \"n1\"\naddress = \"{}\"\n", node_addr(1)),
    );
    let mut a = s.start(&cfg);
    let addr2 = node_addr(2).to_string();
    let (code, v) = api(
        ns,
        admin,
        "POST",
        "/api/v1/services/web/backends",
        &format!(r#"{{"address": "{addr2}"}}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["persisted"], true);
    // through ctl too
    let out = ns
        .command(env!("CARGO_BIN_EXE_anyedge"))
        .args([
            "ctl",
            "--admin",
            &admin.to_string(),
            "--token",
            TOKEN,
            "backend",
            "add",
            "--service",
            "web",
        ])
        .args(["--address", &node_addr(3).to_string(), "--name", "n3", "--weight", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("added"), "{out:?}");
    let (code, v) = api(
        ns,
        admin,
        "POST",
        "/api/v1/services/web/backends/n1/weight",
        r#"{"weight": 3}"#,
    );
    assert_eq!(code, 200, "{v}");
    // bad input: loopback, a name in use, a weight out of range, no token
    let (code, _) = api(
        ns,
        admin,
        "POST",
        "/api/v1/services/web/backends",
        r#"{"address": "127.0.0.1:80"}"#,
    );
    assert_eq!(code, 422);
    let (code, _) = api(
        ns,
        admin,
        "POST",
        "/api/v1/services/web/backends",
        &format!(r#"{{"name": "n1", "address": "{addr2}"}}"#),
    );
    assert_eq!(code, 422);
    let (code, _) = api(
        ns,
        admin,
        "POST",
        "/api/v1/services/web/backends/n1/weight",
        r#"{"weight": 10001}"#,
    );
    assert_eq!(code, 422);
    let (code, _) = api(ns, admin, "DELETE", "/api/v1/services/web/backends/nope", "");
    assert_eq!(code, 404);
    let (code, _) = ns.enter(move || common::http(admin, "DELETE", "/api/v1/services/web/backends/n1", None));
    assert_eq!(code, 401);

    let want = |st: &Value| {
        let b = backends(st, "web");
        let o: BTreeMap<String, String> = b.iter().map(|(n, x)| (n.clone(), x.0.clone())).collect();
        o == BTreeMap::from([
            ("n1".to_string(), "config".to_string()),
            (addr2.clone(), "runtime".to_string()),
            ("n3".to_string(), "runtime".to_string()),
        ]) && b.values().all(|x| x.1 == "up")
    };
    s.wait_status("runtime backends up", Duration::from_secs(10), want);
    let weight_of = |st: &Value, n: &str| -> u64 {
        st["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == n)
            .map_or(0, |b| b["weight"].as_u64().unwrap_or(0))
    };
    assert_eq!(weight_of(&s.status(), "n1"), 3);
    // ctl status shows where each backend comes from
    let out = ns
        .command(env!("CARGO_BIN_EXE_anyedge"))
        .args(["ctl", "--admin", &admin.to_string(), "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("n3 ") && l.contains(" runtime "))
            && table
                .lines()
                .any(|l| l.trim_start().starts_with("n1 ") && l.contains(" config ")),
        "{table}"
    );

    // a reload keeps them (HAProxy's would not)
    a.signal(nix::sys::signal::Signal::SIGHUP);
    a.wait_log("reload applied", 1, Duration::from_secs(10));
    let st = s.status();
    assert!(want(&st), "after reload: {st}");
    assert_eq!(weight_of(&st, "n1"), 3);

    // a restart too (from the state directory)
    drop(a);
    a = s.start(&cfg);
    s.wait_status("runtime backends back after a restart", Duration::from_secs(10), want);
    assert_eq!(weight_of(&s.status(), "n1"), 3);

    // removing a config backend at run time drains it and survives a restart
    let (code, v) = api(ns, admin, "DELETE", "/api/v1/services/web/backends/n1", "");
    assert_eq!(code, 200, "{v}");
    wait_until("n1 gone", Duration::from_secs(5), || {
        let b = backends(&s.status(), "web");
        (!b.contains_key("n1")).then_some(()).ok_or(b)
    });
    drop(a);
    let _a = s.start(&cfg);
    holds_for("n1 stays removed after a restart", Duration::from_secs(1), || {
        let b = backends(&s.status(), "web");
        (!b.contains_key("n1") && b.len() == 2).then_some(()).ok_or(b)
    });
}

#[test]
fn slow_start_ramps_a_new_backends_share_up() {
    let s = setup("slowd", 3);
    let lb = s.lb;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backends.json");
    let write = |nodes: &[u8]| {
        let list: Vec<String> = nodes
            .iter()
            .map(|i| format!(r#"{{"address": "{}"}}"#, node_addr(*i)))
            .collect();
        write_backends(&file, &format!("[{}]", list.join(",")));
    };
    write(&[1, 2]);
    let _a = s.start(&s.config(
        None,
        &format!("slow_start = \"4s\"\nbackends_file = \"{}\"", file.display()),
        "",
    ));
    let up_for = |name: String| {
        move |st: &Value| -> f64 {
            st["services"][0]["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["name"] == name.as_str() && b["health"] == "up")
                .and_then(|b| b["health_since_seconds"].as_f64())
                .unwrap_or(0.0)
        }
    };
    let (n1, n3) = (up_for(node_addr(1).to_string()), up_for(node_addr(3).to_string()));
    s.wait_status("n1 and n2 past their ramp", Duration::from_secs(15), |st| n1(st) > 4.5);
    // 90 requests: the share of n3
    let share = |ns: &Netns| -> f64 {
        let got: Vec<String> = ns.enter(move || {
            (0..90)
                .map(|k| get(Ipv4Addr::new(198, 18, 9, 1 + k % 16), lb).unwrap())
                .collect()
        });
        got.iter().filter(|n| *n == "n3").count() as f64 / got.len() as f64
    };
    write(&[1, 2, 3]);
    s.wait_status("n3 up", Duration::from_secs(5), |st| n3(st) > 0.0);
    let early = share(&s.ns);
    s.wait_status("n3 past its ramp", Duration::from_secs(15), |st| n3(st) > 4.5);
    let full = share(&s.ns);
    println!("slow start: n3's share right after it came up {early:.2}, after slow_start {full:.2}");
    assert!(early < 0.2, "a cold node took {early:.2} of the traffic at once");
    assert!((0.25..=0.42).contains(&full), "{full:.2}");
}
