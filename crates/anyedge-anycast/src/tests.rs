//! Every rule of the policy, driven in simulated time: each case is a
//! table of steps (time passes, an input changes or an operator acts)
//! and the state and reason expected after each.

#![allow(clippy::unwrap_used)]

use super::*;

const A: &str = "192.0.2.10/32";
const B: &str = "2001:db8::10/128";

#[derive(Debug, Clone)]
enum Act {
    /// Nothing changes; time passes.
    Wait(u64),
    /// Eligible backends of service "web" (behind A).
    Eligible(u32),
    /// Service "web" is not running.
    WebGone,
    /// DNS readiness (prefix A has `dns = true` in the cases that set it).
    Dns(Result<(), &'static str>),
    /// Open connections: the whole PoP, and A's services.
    Open(u64, u64),
    Maintenance(bool),
    DrainPop(&'static str),
    UndrainPop,
    DrainPrefix(&'static str),
    UndrainPrefix(&'static str),
    ShutDown,
    /// The first peer's session.
    Session(bool),
    /// Prefix B leaves / returns to the configuration.
    RemoveB,
    AddB,
}

struct Sim {
    policy: Policy,
    input: Input,
    now: Instant,
}

fn settings() -> Settings {
    Settings {
        drain_until_connections: 0,
        drain_timeout: Duration::from_secs(30),
        flap_half_life: Duration::from_secs(60),
    }
}

fn prefix_b() -> PrefixInput {
    PrefixInput {
        key: B.into(),
        services: vec![ServiceInput {
            name: "dns-tcp".into(),
            eligible: Some(1),
        }],
        min_healthy_backends: 1,
        dns: None,
        open_connections: 0,
        ipv6: true,
    }
}

impl Sim {
    /// Prefix A (IPv4, service "web" with 2 eligible backends, needs
    /// `min`) and B (IPv6, always healthy); one peer with both families,
    /// established, and one with an IPv4 next hop only.
    fn new(min: u32, dns: bool) -> Sim {
        Sim {
            policy: Policy::new(settings()),
            input: Input {
                prefixes: vec![
                    PrefixInput {
                        key: A.into(),
                        services: vec![ServiceInput {
                            name: "web".into(),
                            eligible: Some(2),
                        }],
                        min_healthy_backends: min,
                        dns: dns.then_some(Ok(())),
                        open_connections: 0,
                        ipv6: false,
                    },
                    prefix_b(),
                ],
                open_connections: 0,
                maintenance_file: None,
                peers: vec![
                    PeerInput {
                        established: true,
                        v4: true,
                        v6: true,
                    },
                    PeerInput {
                        established: true,
                        v4: true,
                        v6: false,
                    },
                ],
            },
            now: Instant::now(),
        }
    }

    fn act(&mut self, a: &Act) {
        let now = self.now;
        let web = &mut self.input.prefixes[0];
        match a {
            Act::Wait(s) => self.now += Duration::from_secs(*s),
            Act::Eligible(n) => web.services[0].eligible = Some(*n),
            Act::WebGone => web.services[0].eligible = None,
            Act::Dns(r) => web.dns = Some(r.map_err(str::to_string)),
            Act::Open(pop, a) => {
                self.input.open_connections = *pop;
                web.open_connections = *a;
            }
            Act::Maintenance(on) => {
                self.input.maintenance_file = on.then(|| "/run/anyedge/maintenance".to_string());
            }
            Act::DrainPop(why) => {
                self.policy.drain_pop(why, now);
            }
            Act::UndrainPop => {
                self.policy.undrain_pop();
            }
            Act::DrainPrefix(k) => {
                self.policy.drain_prefix(k, "operator", now);
            }
            Act::UndrainPrefix(k) => {
                self.policy.undrain_prefix(k);
            }
            Act::ShutDown => self.policy.shut_down(),
            Act::Session(up) => self.input.peers[0].established = *up,
            Act::RemoveB => self.input.prefixes.truncate(1),
            Act::AddB => self.input.prefixes.push(prefix_b()),
        }
    }

    fn step(&mut self) -> Vec<Decision> {
        self.policy.evaluate(&self.input, self.now)
    }
}

/// Runs `steps` of (action, expected state of `key`, a part of its reason)
/// from a fresh simulation, evaluating after each step (and at least
/// every 100 ms of simulated time in between, as the daemon does).
fn run(name: &str, min: u32, dns: bool, key: &str, steps: &[(Act, State, &str)]) -> Sim {
    let mut sim = Sim::new(min, dns);
    sim.step();
    for (i, (a, want, why)) in steps.iter().enumerate() {
        if let Act::Wait(s) = a {
            for _ in 0..(s * 10) {
                sim.now += Duration::from_millis(100);
                sim.step();
            }
        } else {
            sim.act(a);
        }
        let d = sim.step();
        let got = d.iter().find(|d| d.key == key);
        match got {
            Some(got) => {
                assert_eq!(got.state, *want, "{name}, step {i} ({a:?}): {got:?}");
                assert!(
                    got.reason.contains(why),
                    "{name}, step {i} ({a:?}): reason {:?}",
                    got.reason
                );
            }
            None => panic!("{name}, step {i}: no decision for {key}"),
        }
    }
    sim
}

use Act::*;
use State::*;

#[test]
fn min_healthy_backends() {
    run(
        "min 2",
        2,
        false,
        A,
        &[
            (Wait(1), Announced, "all checks pass"),
            (
                Eligible(1),
                Withdrawn,
                "service \"web\" has 1 healthy backend(s), needs 2",
            ),
            (Eligible(0), Withdrawn, "has 0 healthy"),
            (Eligible(2), Announced, "all checks pass"),
            (Eligible(3), Announced, ""),
            (WebGone, Withdrawn, "service \"web\" not running"),
            (Eligible(2), Announced, ""),
        ],
    );
    // min 0: a prefix may stay up with no backend (e.g. DNS-only)
    run("min 0", 0, false, A, &[(Eligible(0), Announced, "all checks pass")]);
}

#[test]
fn dns_readiness_gates_prefixes_with_dns_true_only() {
    run(
        "dns = true",
        1,
        true,
        A,
        &[
            (Wait(1), Announced, ""),
            (
                Dns(Err("zone example.com not loaded")),
                Withdrawn,
                "zone example.com not loaded",
            ),
            (Dns(Ok(())), Announced, "all checks pass"),
        ],
    );
    // B has no DNS dependency: A's DNS trouble leaves it announced
    run("dns = false", 1, true, B, &[(Dns(Err("not serving")), Announced, "")]);
}

#[test]
fn flap_damping_suppresses_the_third_quick_flap_and_releases_after_decay() {
    let sim = run(
        "damping",
        1,
        false,
        A,
        &[
            (Eligible(0), Withdrawn, "0 healthy"),
            (Eligible(1), Announced, ""),
            (Eligible(0), Withdrawn, ""),
            (Eligible(1), Announced, ""),
            (Eligible(0), Withdrawn, ""),
            // the third withdrawal in seconds: held down although healthy
            (Eligible(1), Suppressed, "flap damping: healthy again, held down for"),
            (Wait(60), Suppressed, "after 3 recent flaps"),
            // penalty ~3000 -> below 750 after 2 half-lives
            (Wait(65), Announced, "all checks pass"),
            // released: stays up
            (Wait(600), Announced, ""),
        ],
    );
    let d = sim.policy.clone().evaluate(&sim.input, sim.now);
    assert_eq!(d[0].peers[0], PeerRoute::Announced { draining: false });
}

#[test]
fn slow_flaps_and_operator_drains_never_suppress() {
    let mut steps = Vec::new();
    for _ in 0..5 {
        steps.push((Eligible(0), Withdrawn, ""));
        steps.push((Wait(120), Withdrawn, ""));
        steps.push((Eligible(1), Announced, ""));
        steps.push((Wait(120), Announced, ""));
    }
    run("slow flaps", 1, false, A, &steps);
    let mut steps = Vec::new();
    for _ in 0..5 {
        steps.push((DrainPrefix(A), Withdrawn, "drained (operator): 0 open"));
        steps.push((UndrainPrefix(A), Announced, ""));
    }
    run("operator drains are not flaps", 1, false, A, &steps);
}

#[test]
fn pop_drain_waits_for_connections_then_withdraws() {
    let sim = run(
        "pop drain",
        1,
        false,
        A,
        &[
            (Open(5, 2), Announced, ""),
            (
                DrainPop("admin API"),
                Draining,
                "admin API: waiting for 5 open connection(s)",
            ),
            (Open(1, 0), Draining, "waiting for 1"),
            (Open(0, 0), Withdrawn, "drained (admin API): 0 open connection(s)"),
            // a connection arriving late does not bring the route back
            (Open(1, 0), Draining, ""),
            (UndrainPop, Announced, "all checks pass"),
        ],
    );
    assert!(sim.policy.pop_drain().is_none());
    // every prefix drains with the PoP
    run(
        "pop drain, B",
        1,
        false,
        B,
        &[(Open(3, 0), Announced, ""), (DrainPop("x"), Draining, "waiting for 3")],
    );
}

#[test]
fn drain_until_connections_threshold() {
    let mut sim = Sim::new(1, false);
    sim.policy.set_settings(Settings {
        drain_until_connections: 10,
        ..settings()
    });
    sim.act(&Open(50, 0));
    sim.act(&DrainPop("maintenance"));
    assert_eq!(sim.step()[0].state, Draining);
    sim.act(&Open(11, 0));
    assert_eq!(sim.step()[0].state, Draining);
    sim.act(&Open(10, 0));
    let d = sim.step();
    assert_eq!(d[0].state, Withdrawn);
    assert!(d[0].reason.contains("10 open connection(s)"), "{}", d[0].reason);
}

#[test]
fn drain_timeout_withdraws_with_connections_still_open() {
    run(
        "drain timeout",
        1,
        false,
        A,
        &[
            (Open(5, 5), Announced, ""),
            (DrainPop("SIGTERM"), Draining, ""),
            (Wait(29), Draining, "waiting for 5"),
            (
                Wait(2),
                Withdrawn,
                "drained (SIGTERM): drain timeout with 5 open connection(s)",
            ),
        ],
    );
    run(
        "prefix drain timeout",
        1,
        false,
        A,
        &[
            (Open(5, 5), Announced, ""),
            (DrainPrefix(A), Draining, ""),
            (Wait(31), Withdrawn, "drain timeout with 5"),
        ],
    );
}

#[test]
fn prefix_drain_counts_its_own_connections_and_leaves_the_others() {
    // the PoP has 100 open connections, none of them A's: A goes at once
    run(
        "prefix drain",
        1,
        false,
        A,
        &[
            (Open(100, 0), Announced, ""),
            (DrainPrefix(A), Withdrawn, "drained (operator): 0 open connection(s)"),
            (UndrainPrefix(A), Announced, ""),
            (Open(100, 4), Announced, ""),
            (DrainPrefix(A), Draining, "waiting for 4"),
        ],
    );
    let sim = run(
        "other prefix",
        1,
        false,
        B,
        &[
            (Open(100, 4), Announced, ""),
            (DrainPrefix(A), Announced, "all checks pass"),
        ],
    );
    // the drained prefix goes to the peers less preferred
    let d = sim.policy.clone().evaluate(&sim.input, sim.now);
    assert_eq!(d[0].peers[0], PeerRoute::Announced { draining: true });
    assert_eq!(d[1].peers[0], PeerRoute::Announced { draining: false });
    assert_eq!(sim.policy.drained_prefixes().collect::<Vec<_>>(), vec![A]);
}

#[test]
fn a_prefix_that_leaves_the_config_forgets_its_drain() {
    // re-added: announced again, no drain left over
    let mut sim = Sim::new(1, false);
    sim.act(&DrainPrefix(B));
    assert_eq!(sim.step()[1].state, Withdrawn);
    sim.act(&RemoveB);
    assert_eq!(sim.step().len(), 1);
    sim.act(&AddB);
    let d = sim.step();
    assert_eq!((d[1].state, d[1].changed), (Announced, true));
    assert_eq!(sim.policy.drained_prefixes().count(), 0);
}

#[test]
fn maintenance_file_drains_without_deadline() {
    run(
        "maintenance file",
        1,
        false,
        A,
        &[
            (Open(3, 0), Announced, ""),
            (
                Maintenance(true),
                Draining,
                "maintenance file /run/anyedge/maintenance exists: waiting for 3",
            ),
            (Wait(3600), Draining, "waiting for 3"),
            (
                Open(0, 0),
                Withdrawn,
                "drained (maintenance file /run/anyedge/maintenance exists)",
            ),
            (Maintenance(false), Announced, "all checks pass"),
        ],
    );
    // an operator's drain takes precedence over the file (and its deadline applies)
    run(
        "operator and file",
        1,
        false,
        A,
        &[
            (Open(3, 0), Announced, ""),
            (Maintenance(true), Draining, "maintenance file"),
            (DrainPop("admin API"), Draining, "admin API"),
            (Wait(31), Withdrawn, "drain timeout"),
            (UndrainPop, Draining, "maintenance file"),
        ],
    );
}

#[test]
fn sigterm_order_drain_then_withdraw_everything() {
    let mut sim = run(
        "sigterm",
        1,
        false,
        A,
        &[
            (Open(2, 2), Announced, ""),
            (DrainPop("shutting down"), Draining, "shutting down: waiting for 2"),
        ],
    );
    assert!(sim.policy.any_draining());
    let d = sim.step();
    assert!(d.iter().all(|d| d.peers[0] == PeerRoute::Announced { draining: true }));
    sim.act(&Open(0, 0));
    let d = sim.step();
    assert!(d.iter().all(|d| d.state == Withdrawn), "{d:?}");
    assert!(!sim.policy.any_draining());
    // then everything is withdrawn for good, whatever else happens
    sim.act(&ShutDown);
    sim.act(&UndrainPop);
    let d = sim.step();
    assert!(
        d.iter().all(|d| d.state == Withdrawn && d.reason == "shutting down"),
        "{d:?}"
    );
    assert!(d
        .iter()
        .all(|d| d.peers.iter().all(|p| !matches!(p, PeerRoute::Announced { .. }))));
    // a second drain request while draining does not restart the deadline
    let mut sim = Sim::new(1, false);
    assert!(sim.policy.drain_pop("admin API", sim.now));
    sim.act(&Wait(20));
    assert!(!sim.policy.drain_pop("shutting down", sim.now));
    assert_eq!(sim.policy.pop_drain().map(|d| d.reason.as_str()), Some("admin API"));
}

#[test]
fn peer_session_down_and_back() {
    let mut sim = Sim::new(1, false);
    let d = sim.step();
    assert_eq!(d[0].peers, vec![PeerRoute::Announced { draining: false }; 2]);
    assert_eq!(d[0].announced_to(), 2);
    // B is IPv6: the second peer has no IPv6 next hop
    assert_eq!(d[1].peers[1], PeerRoute::NoNextHop);
    sim.act(&Session(false));
    let d = sim.step();
    // the policy still wants A announced; the first peer cannot be told
    assert_eq!((d[0].state, d[0].changed), (Announced, false));
    assert_eq!(d[0].peers[0], PeerRoute::NoSession);
    assert_eq!(d[0].announced_to(), 1);
    assert_eq!(d[1].announced_to(), 0);
    // unhealthy while the session is down: withdrawn, not "no session"
    sim.act(&Eligible(0));
    assert_eq!(sim.step()[0].peers[0], PeerRoute::Withdrawn);
    sim.act(&Eligible(2));
    sim.act(&Session(true));
    let d = sim.step();
    assert_eq!(d[0].peers, vec![PeerRoute::Announced { draining: false }; 2]);
}

#[test]
fn changed_is_reported_once_per_transition() {
    let mut sim = Sim::new(1, false);
    assert!(sim.step().iter().all(|d| d.changed));
    assert!(sim.step().iter().all(|d| !d.changed));
    sim.act(&Eligible(0));
    let d = sim.step();
    assert!(d[0].changed && !d[1].changed);
    assert!(!sim.step()[0].changed);
}

#[test]
fn a_reload_keeps_drains_and_damping() {
    let mut sim = Sim::new(1, false);
    sim.act(&Open(5, 5));
    sim.act(&DrainPrefix(A));
    assert_eq!(sim.step()[0].state, Draining);
    sim.policy.set_settings(Settings {
        drain_until_connections: 5,
        ..settings()
    });
    let d = sim.step();
    assert_eq!(d[0].state, Withdrawn);
    assert_eq!(sim.policy.drained_prefixes().collect::<Vec<_>>(), vec![A]);
}

#[test]
fn reported_state_is_what_the_routers_were_told() {
    let mut sim = Sim::new(1, false);
    let d = sim.step();
    assert_eq!(d[0].reported(), (Announced, "all checks pass".to_string()));
    // B (IPv6) reaches only the first peer, which carries it: fully told
    assert_eq!((d[1].announced_to(), d[1].carriers()), (1, 1));
    assert_eq!(d[1].reported().0, Announced);
    sim.act(&Session(false));
    let d = sim.step();
    assert_eq!(
        d[0].reported(),
        (Announced, "all checks pass; announced to 1 of 2 peers".to_string())
    );
    assert_eq!(
        d[1].reported(),
        (
            Withdrawn,
            "no BGP session established (ready to announce: all checks pass)".to_string()
        )
    );
    // withdrawn by the policy: its own reason, whatever the sessions
    sim.act(&Eligible(0));
    let d = sim.step();
    assert_eq!(d[0].reported().0, Withdrawn);
    assert!(d[0].reported().1.contains("0 healthy"), "{:?}", d[0].reported());
    // draining to the peers that have a session
    sim.act(&Eligible(2));
    sim.act(&Open(3, 3));
    sim.act(&DrainPop("x"));
    let d = sim.step();
    assert_eq!(d[0].reported().0, Draining);
    assert_eq!(d[0].peers[1].as_str(), "draining");
    assert_eq!(d[0].peers[0].as_str(), "no session");
}
