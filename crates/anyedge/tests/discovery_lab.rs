//! A provider move in the multi-PoP lab (`anyedge lab up`: BIRD router
//! with ECMP in front of two PoPs announcing 192.0.2.10/32): four nginx
//! nodes with `proxy_protocol` reachable from both PoPs ("provider A": n1,
//! n2; "provider B": n3, n4), a steady client loop through the router, and
//! three moves A -> B, each by one means only: the DNS records (a Knot per
//! PoP serving the same zone file), the watched file, the runtime API.
//! Zero failed requests, every connection opened before the move finishes
//! on provider A, and both PoPs pick the same node for the same client
//! before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyedge_netns::Netns;
use anyedge_testkit::knot::{Knot, KnotConf};
use anyedge_testkit::wait_until;
use serde_json::Value;

const LAB_TOKEN: &str = "lab-admin-token-0123456789";
const ANYCAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const ZONE: &str = "nodes.test.";

struct Lab {
    name: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn ns(&self, role: &str) -> Netns {
        Netns::open(&format!("{}-{role}", self.name))
    }
    fn pid(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in ["pop1", "pop2"] {
                let log = std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(80).collect();
                eprintln!("---- {n} log (end) ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args(["lab", "down", "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .output();
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 40, i], 8080))
}

fn names(nodes: &[u8]) -> BTreeSet<String> {
    nodes.iter().map(|i| node_addr(*i).to_string()).collect()
}

/// An admin API request to PoP `pop`'s admin API (127.0.0.1:9180 in its
/// namespace).
fn api(lab: &Lab, pop: u8, method: &str, path: &str, body: &str) -> (u16, Value) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LAB_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    lab.ns(&format!("pop{pop}")).enter(move || {
        let mut s = TcpStream::connect("127.0.0.1:9180").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
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

/// (names up and not removed, number listed) of `service` at PoP `pop`.
fn pool(lab: &Lab, pop: u8, service: &str) -> (BTreeSet<String>, usize) {
    let st = api(lab, pop, "GET", "/api/v1/status", "").1;
    let bs: Vec<Value> = st["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .collect();
    let up = bs
        .iter()
        .filter(|b| b["health"] == "up" && b["removed"] == false)
        .map(|b| b["name"].as_str().unwrap_or_default().to_string())
        .collect();
    (up, bs.len())
}

fn zone(serial: u32, nodes: &[u8]) -> String {
    let mut z =
        format!("$ORIGIN {ZONE}\n$TTL 1\n@ SOA ns1 hostmaster {serial} 60 60 600 1\n@ NS ns1\nns1 A 198.18.40.53\n");
    for i in nodes {
        z.push_str(&format!("web 1 A 198.18.40.{i}\n"));
    }
    z
}

/// One GET from `src` to the anycast address on `port`: (node, PoP).
fn get(src: Ipv4Addr, port: u16) -> std::io::Result<(String, String)> {
    common::get_from(src, SocketAddr::from((ANYCAST, port)), "/").map(|(_, b)| {
        (
            common::field(&b, "node").to_string(),
            common::field(&b, "pop").to_string(),
        )
    })
}

#[derive(Default)]
struct Loop {
    ok: AtomicU64,
    failed: AtomicU64,
    /// (client, PoP, node, when)
    seen: Mutex<Vec<(u8, String, String, Instant)>>,
    errors: Mutex<Vec<String>>,
}

fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 10, 10 + i)
}

/// Per client, the nodes each PoP gave in the window: the same one at
/// both. Returns the number of clients seen at both PoPs.
fn maglev_consistent(l: &Loop, from: Instant, to: Instant, want: &[&str]) -> usize {
    let seen = l.seen.lock().unwrap();
    let mut by: BTreeMap<u8, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (c, p, n, t) in seen.iter() {
        if *t >= from && *t <= to {
            by.entry(*c)
                .or_default()
                .entry(p.clone())
                .or_default()
                .insert(n.clone());
        }
    }
    let mut both = 0;
    for (c, per_pop) in &by {
        let all: BTreeSet<&String> = per_pop.values().flatten().collect();
        assert_eq!(all.len(), 1, "client {c}: PoPs chose {per_pop:?}");
        assert!(
            want.contains(&all.iter().next().unwrap().as_str()),
            "client {c}: {per_pop:?}"
        );
        if per_pop.len() == 2 {
            both += 1;
        }
    }
    both
}

#[test]
fn provider_moves_through_the_lab_router_lose_nothing() {
    // the lab: router (BIRD, ECMP), pop1, pop2, client
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("d{}", std::process::id() % 10000);
    let dir = tmp.path().join("lab");
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["lab", "up", "--name", &name, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "lab up: {}", String::from_utf8_lossy(&out.stderr));
    let lab = Lab { name, dir, _tmp: tmp };

    // the nodes of both providers, reachable from both PoPs
    let nodes = Netns::unique("nodes").unwrap();
    for i in 1..=4 {
        nodes.add_addr("lo", &format!("198.18.40.{i}/32")).unwrap();
    }
    for (p, net) in [(1, 41), (2, 42)] {
        let pop = lab.ns(&format!("pop{p}"));
        anyedge_netns::link(
            &pop,
            "to-nodes",
            &[&format!("198.18.{net}.1/30")],
            &nodes,
            &format!("p{p}"),
            &[&format!("198.18.{net}.2/30")],
        )
        .unwrap();
        pop.ip(&["route", "add", "198.18.40.0/24", "via", &format!("198.18.{net}.2")])
            .unwrap();
    }
    let client_ns = lab.ns("client");
    for i in 0..16 {
        client_ns.add_addr("eth0", &format!("{}/32", client(i))).unwrap();
    }
    let nd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(nd.path().join("tmp")).unwrap();
    let listens: String = (1..=4)
        .map(|i| format!("        listen 198.18.40.{i}:8080 proxy_protocol;\n"))
        .collect();
    std::fs::write(
        nd.path().join("nginx.conf"),
        format!(
            r#"daemon off;
master_process off;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    map $server_addr $node {{ 198.18.40.1 n1; 198.18.40.2 n2; 198.18.40.3 n3; 198.18.40.4 n4; default unknown; }}
    map $remote_addr $pop {{ 198.18.41.1 pop1; 198.18.42.1 pop2; default unknown; }}
    access_log off;
    client_header_timeout 60s;
    client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p;
    fastcgi_temp_path {d}/tmp/f; uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
    server {{
{listens}        location / {{ return 200 "node=$node pop=$pop client=$proxy_protocol_addr\n"; }}
    }}
}}
"#,
            d = nd.path().display()
        ),
    )
    .unwrap();
    let _nginx = Kill(
        nodes
            .command(common::nginx_bin().to_str().unwrap())
            .arg("-p")
            .arg(nd.path())
            .arg("-c")
            .arg(nd.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // a resolver at each PoP serving the same zone file
    let zfile = nd.path().join("nodes.test.zone");
    std::fs::write(&zfile, zone(1, &[1, 2])).unwrap();
    let knots: Vec<Knot> = (1..=2)
        .map(|p| {
            let conf = KnotConf::new().primary(ZONE, &zfile, &[]);
            lab.ns(&format!("pop{p}")).enter(move || Knot::start(&conf))
        })
        .collect();
    let bfile = nd.path().join("backends.json");
    let write_file = |ns: &[u8]| {
        let list: Vec<String> = ns
            .iter()
            .map(|i| format!(r#"{{"address": "{}"}}"#, node_addr(*i)))
            .collect();
        let tmp = nd.path().join(".backends.tmp");
        std::fs::write(&tmp, format!("[{}]", list.join(","))).unwrap();
        std::fs::rename(&tmp, &bfile).unwrap();
    };
    write_file(&[1, 2]);

    // each PoP: "web" (the lab's anycast service) follows DNS, "web-file"
    // the watched file, "web-api" starts with provider A in its file and
    // is moved through the API
    let health = "[service.health]\nkind = \"http\"\npath = \"/\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 2\n";
    for p in 1..=2u8 {
        let path = lab.dir.join(format!("pop{p}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let head = &text[..text.find("[[service]]").unwrap()];
        let state = lab.dir.join(format!("state{p}"));
        let head = head.replacen(
            &format!("name = \"pop{p}\"\n"),
            &format!("name = \"pop{p}\"\nstate_dir = \"{}\"\n", state.display()),
            1,
        );
        let cfg = format!(
            r#"{head}
[[service]]
name = "web"
listen = ["{ANYCAST}:80"]
discover = {{ name = "web.{ZONE}", type = "A", port = 8080, resolvers = ["{knot}"], min_refresh = "500ms" }}
{health}
[[service]]
name = "web-file"
listen = ["{ANYCAST}:81"]
backends_file = "{bfile}"
{health}
[[service]]
name = "web-api"
listen = ["{ANYCAST}:82"]
{health}
[[service.backend]]
name = "a1"
address = "{a1}"
[[service.backend]]
name = "a2"
address = "{a2}"
"#,
            knot = knots[usize::from(p - 1)].addr,
            bfile = bfile.display(),
            a1 = node_addr(1),
            a2 = node_addr(2),
        );
        std::fs::write(&path, cfg).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(lab.pid(&format!("pop{p}"))),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
    let a_api = BTreeSet::from(["a1".to_string(), "a2".to_string()]);
    for p in 1..=2 {
        for (svc, want) in [
            ("web", names(&[1, 2])),
            ("web-file", names(&[1, 2])),
            ("web-api", a_api.clone()),
        ] {
            wait_until(&format!("pop{p} {svc}: provider A up"), Duration::from_secs(20), || {
                let (up, n) = pool(&lab, p, svc);
                (up == want && n == 2).then_some(()).ok_or((up, n))
            });
        }
    }
    // both PoPs carry traffic (ECMP)
    wait_until("the router has both PoPs' routes", Duration::from_secs(20), || {
        let out = lab.ns("router").ip_output(&["route", "show", "192.0.2.10"]).unwrap();
        (out.matches("via").count() == 2).then_some(()).ok_or(out)
    });

    let mut report = Vec::new();
    for (svc, port, how) in [
        ("web", 80u16, "DNS records"),
        ("web-file", 81, "watched file"),
        ("web-api", 82, "runtime API"),
    ] {
        let l = Arc::new(Loop::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let h = {
            let (l, stop) = (l.clone(), stop.clone());
            client_ns.spawn(move || {
                let mut k: u64 = 0;
                while !stop.load(Ordering::Relaxed) && k < 100_000 {
                    let c = (k % 16) as u8;
                    k += 1;
                    match get(client(c), port) {
                        Ok((n, p)) if n.starts_with('n') && p.starts_with("pop") => {
                            l.ok.fetch_add(1, Ordering::Relaxed);
                            l.seen.lock().unwrap().push((c, p, n, Instant::now()));
                        }
                        other => {
                            l.failed.fetch_add(1, Ordering::Relaxed);
                            l.errors.lock().unwrap().push(format!("client {c}: {other:?}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        // long-lived connections opened before the move
        let held: Vec<TcpStream> = (0..8u8)
            .map(|i| {
                client_ns.enter(move || {
                    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                    sock.bind(&SocketAddr::from((client(i), 0)).into()).unwrap();
                    sock.connect_timeout(&SocketAddr::from((ANYCAST, port)).into(), Duration::from_secs(2))
                        .unwrap();
                    let mut s: TcpStream = sock.into();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHost: held\r\n").unwrap();
                    s
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let before = maglev_consistent(&l, started, Instant::now(), &["n1", "n2"]);

        let t0 = Instant::now();
        match how {
            "DNS records" => {
                std::fs::write(&zfile, zone(2, &[3, 4])).unwrap();
                for k in &knots {
                    k.knotc(&["zone-reload", ZONE]);
                }
            }
            "watched file" => write_file(&[3, 4]),
            _ => {
                for p in 1..=2 {
                    for i in [3, 4] {
                        let body = format!(r#"{{"address": "{}"}}"#, node_addr(i));
                        let (code, v) = api(&lab, p, "POST", &format!("/api/v1/services/{svc}/backends"), &body);
                        assert_eq!(code, 200, "{v}");
                    }
                    for b in ["a1", "a2"] {
                        let (code, v) = api(&lab, p, "DELETE", &format!("/api/v1/services/{svc}/backends/{b}"), "");
                        assert_eq!(code, 200, "{v}");
                    }
                }
            }
        }
        let first_new = wait_until("a request reaches provider B", Duration::from_secs(10), || {
            l.seen
                .lock()
                .unwrap()
                .iter()
                .find(|(_, _, n, t)| *t >= t0 && (n == "n3" || n == "n4"))
                .map(|(_, _, _, t)| t.duration_since(t0))
        });
        for p in 1..=2 {
            wait_until(
                &format!("pop{p} {svc}: provider B alone"),
                Duration::from_secs(10),
                || {
                    let (up, n) = pool(&lab, p, svc);
                    (up == names(&[3, 4])).then_some(()).ok_or((up, n))
                },
            );
        }
        let answered: Vec<String> = held
            .into_iter()
            .map(|mut s| {
                s.write_all(b"Connection: close\r\n\r\n").unwrap();
                let mut resp = String::new();
                s.read_to_string(&mut resp).unwrap();
                assert!(resp.starts_with("HTTP/1.1 200"), "held request failed: {resp:?}");
                common::field(resp.split_once("\r\n\r\n").unwrap().1, "node").to_string()
            })
            .collect();
        assert!(answered.iter().all(|n| n == "n1" || n == "n2"), "{answered:?}");
        for p in 1..=2 {
            wait_until(
                &format!("pop{p} {svc}: provider A gone"),
                Duration::from_secs(10),
                || {
                    let (up, n) = pool(&lab, p, svc);
                    (n == 2).then_some(()).ok_or((up, n))
                },
            );
        }
        let after_start = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let after = maglev_consistent(&l, after_start, Instant::now(), &["n3", "n4"]);
        let (ok, failed) = (l.ok.load(Ordering::Relaxed), l.failed.load(Ordering::Relaxed));
        let line = format!(
            "lab provider move by {how}: {ok} requests, {failed} failed, {} held connections finished on provider A, \
             change -> first request on provider B {first_new:?}, clients seen at both PoPs with the same node: \
             {before}/16 before, {after}/16 after",
            answered.len()
        );
        println!("{line}");
        report.push(line);
        assert_eq!(failed, 0, "{:?}", l.errors.lock().unwrap());
        assert!(ok > 200, "{ok}");
        assert!(
            before >= 8 && after >= 8,
            "clients at both PoPs: {before} before, {after} after"
        );
    }
    drop(knots);
    drop(nodes);
    for r in report {
        println!("{r}");
    }
}
