//! The PoP's lifecycle invariants, in-process: a `Pop` driven directly
//! (no daemon process, no signals), each test well under a second once
//! the backend's first health check has passed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyedge::config::Config;
use anyedge::pop::{spawn_workers, Pop, StartOptions, Step};
use common::{free_port, proxy_backend};

/// A backend that reads a PROXY header and a request head, then answers.
fn backend() -> SocketAddr {
    proxy_backend("ok\n".into())
}

fn config(lb: u16, b1: SocketAddr, b2: SocketAddr, extra: &str) -> Config {
    let bgp_port = free_port(); // nothing listens there: the session never comes up
    let src = format!(
        r#"
[pop]
name = "inproc"
workers = 1
[limits]
shutdown_grace = "2s"
[bgp]
asn = 65001
router_id = "198.18.0.1"
drain_timeout = "300ms"
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
[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]
{extra}
[service.health]
kind = "tcp"
interval = "50ms"
timeout = "50ms"
rise = 1
[[service.backend]]
name = "b1"
address = "{b1}"
[[service.backend]]
name = "b2"
address = "{b2}"
"#
    );
    Config::parse(&src, "inproc.toml").unwrap()
}

async fn start(cfg: Config) -> std::sync::Arc<Pop> {
    let pop = Pop::start(
        cfg,
        StartOptions {
            config_path: None,
            worker_rts: spawn_workers(1).unwrap(),
            inherited: Default::default(),
            upgrading: false,
        },
    )
    .await
    .unwrap();
    pop.announce();
    pop
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < max, "not within {max:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the policy wants for the prefix (no BGP session is up in these
/// tests, so the routers are told nothing: see `status_tells_...` below).
fn prefix_state(pop: &Pop) -> &'static str {
    pop.announcer()
        .and_then(|a| a.prefix_states().get("192.0.2.10/32").map(|s| s.policy.as_str()))
        .unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_withdraws_then_closes_listeners_then_drains() {
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let pop = start(config(port, backend(), backend(), "")).await;
    let web = pop.edge.service("web").unwrap();
    until("both backends up", Duration::from_secs(3), || web.eligible_count() == 2).await;
    until("prefix announced", Duration::from_secs(1), || {
        prefix_state(&pop) == "announced"
    })
    .await;

    // a client in the middle of a request when shutdown starts
    let mut held = TcpStream::connect(lb).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    until("the held connection counted", Duration::from_secs(1), || {
        pop.open_connections() == 1
    })
    .await;

    let t = Instant::now();
    let p = pop.clone();
    let shutdown = tokio::spawn(async move { p.shutdown().await });
    // draining first: still announced (less preferred) and still accepting
    until("prefix draining", Duration::from_secs(1), || {
        prefix_state(&pop) == "draining"
    })
    .await;
    assert!(TcpStream::connect(lb).is_ok(), "listeners stay open while routes drain");
    shutdown.await.unwrap();
    // the drain timeout (300 ms) withdrew the route with the client still there
    assert_eq!(prefix_state(&pop), "withdrawn");
    let steps: Vec<Step> = pop.steps().into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        steps,
        vec![
            Step::Started,
            Step::RoutesWithdrawn { announced: 0 },
            Step::ListenersClosed
        ]
    );
    assert!(
        TcpStream::connect_timeout(&lb, Duration::from_millis(200)).is_err(),
        "no new connections once listeners are closed"
    );

    // the held client is still served, then the drain ends
    let drain = tokio::spawn({
        let p = pop.clone();
        async move { p.drain().await }
    });
    held.write_all(b"Host: x\r\n\r\n").unwrap();
    let resp = tokio::task::spawn_blocking(move || {
        let mut r = String::new();
        held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        held.read_to_string(&mut r).unwrap();
        r
    })
    .await
    .unwrap();
    assert!(resp.ends_with("ok\n"), "{resp:?}");
    assert_eq!(drain.await.unwrap(), 0, "nothing cut at the grace period");
    assert_eq!(
        pop.steps().last().map(|(_, s)| s.clone()),
        Some(Step::Drained { left: 0 })
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_changes_nothing() {
    let port = free_port();
    let (b1, b2) = (backend(), backend());
    let pop = start(config(port, b1, b2, "")).await;
    let web = pop.edge.service("web").unwrap();
    until("both backends up", Duration::from_secs(3), || web.eligible_count() == 2).await;
    assert!(web.set_admin_drain("b2", true));

    // a new listener on a port another process holds: refused as a whole
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    let mut bad = config(port, b1, b2, "");
    bad.services[0].listen.push(taken.local_addr().unwrap());
    bad.services[0].max_connections = std::num::NonZeroU32::new(7);
    let before = pop.edge.config();
    let err = pop.apply(bad).unwrap_err();
    assert!(err.contains("another process"), "{err}");
    // nothing changed: same configuration, same listeners, drain and health kept
    assert!(std::sync::Arc::ptr_eq(&before, &pop.edge.config()));
    let web_now = pop.edge.service("web").unwrap();
    assert!(std::sync::Arc::ptr_eq(&web, &web_now));
    assert_eq!(web.config().max_connections, None);
    assert_eq!(web.eligible_count(), 1, "b2 still drained, b1 still up");
    assert!(TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_matches_backends_by_name_and_keeps_their_state() {
    let port = free_port();
    let (b1, b2, b3) = (backend(), backend(), backend());
    let pop = start(config(port, b1, b2, "")).await;
    let web = pop.edge.service("web").unwrap();
    until("both backends up", Duration::from_secs(3), || web.eligible_count() == 2).await;
    assert!(web.set_admin_drain("b1", true));
    pop.announcer()
        .unwrap()
        .drain_prefix("192.0.2.10", true, "test")
        .unwrap();

    // b2 moves to another address (same name), a weight changes
    let t = Instant::now();
    let mut next = config(port, b1, b3, "");
    next.services[0].backends[0].weight = 5;
    pop.apply(next).unwrap();
    let web = pop.edge.service("web").unwrap();
    let names: Vec<(String, bool, bool)> = web
        .backends()
        .iter()
        .map(|b| (b.name.clone(), b.is_up(), b.is_draining()))
        .collect();
    // b1: same name, still up (no new rise) and still drained by the operator
    assert_eq!(names[0], ("b1".to_string(), true, true));
    assert_eq!(web.backends()[0].config().weight, 5);
    assert_eq!(web.backends()[1].config().address, b3);
    // the operator's prefix drain survives the reload
    assert_eq!(
        pop.announcer().unwrap().drained_prefixes(),
        vec!["192.0.2.10/32".to_string()]
    );
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
}

/// A prefix the policy wants up is not shown as announced while its only
/// BGP peer is down: the status says what the routers were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_what_the_routers_were_told() {
    let port = free_port();
    let pop = start(config(port, backend(), backend(), "")).await;
    until("prefix ready", Duration::from_secs(3), || {
        prefix_state(&pop) == "announced"
    })
    .await;
    let v = anyedge::status::Status::read(&pop).to_json();
    let p = &v["anycast"][0];
    assert_eq!(p["state"], "withdrawn", "{p}");
    assert_eq!(p["policy"], "announced", "{p}");
    assert_eq!(
        p["reason"], "no BGP session established (ready to announce: all checks pass)",
        "{p}"
    );
    assert_eq!((p["announced_to"].as_u64(), p["carriers"].as_u64()), (Some(0), Some(1)));
    assert_eq!(p["peers"][0]["peer"], "nobody");
    assert_eq!(p["peers"][0]["route"], "no session");
    let report = anyedge::status::Status::read(&pop).report();
    assert!(
        report.contains("prefix 192.0.2.10/32 withdrawn (to 0 of 1 peers): no BGP session established"),
        "{report}"
    );
}
