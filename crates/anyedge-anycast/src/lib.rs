//! The anycast policy of a PoP, without I/O: which prefixes it announces,
//! announces less preferred while draining, holds down (flap damping) or
//! withdraws, and why.
//!
//! The caller (the daemon's announcer) owns a [`Policy`], tells it about
//! operators' commands ([`Policy::drain_pop`], [`Policy::drain_prefix`],
//! [`Policy::shut_down`]) and, on every tick, hands it an [`Input`]
//! snapshot (backends per service, DNS readiness, open connections, the
//! maintenance file, BGP sessions) with the current time. [`Policy::evaluate`]
//! answers with one [`Decision`] per prefix: the intended state and its
//! reason, whether it changed, and what each peer is told. No clock, no
//! locks, no tasks: every rule is tested below in simulated time.
//!
//! Rules, in order of precedence, per prefix:
//! 1. shutting down: withdrawn;
//! 2. unhealthy (a service not running or with fewer eligible backends than
//!    `min_healthy_backends`, or `dns = true` and the DNS server not serving
//!    every zone): withdrawn; if it was up, that counts as a flap;
//! 3. flap damping (see [`Damping`]): healthy but held down ("suppressed");
//! 4. draining (the PoP: operator, SIGTERM or maintenance file, counting all
//!    open connections; or this prefix alone, counting its services'
//!    connections): announced less preferred until the count falls to
//!    `drain_until_connections` or the drain's deadline passes, then
//!    withdrawn. A maintenance file has no deadline;
//! 5. otherwise announced.

#![forbid(unsafe_code)]

mod damping;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use damping::Damping;

/// Settings from the `[bgp]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A drain withdraws once open connections fall to this many.
    pub drain_until_connections: u64,
    /// A drain (but a maintenance file's) withdraws at the latest after this.
    pub drain_timeout: Duration,
    /// Flap damping half-life.
    pub flap_half_life: Duration,
}

/// Where a prefix stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Announced to the peers.
    Announced,
    /// Announced less preferred (GRACEFUL_SHUTDOWN, prepends) while a
    /// drain waits for connections to end.
    Draining,
    /// Not announced.
    Withdrawn,
    /// Healthy but held down by flap damping: not announced.
    Suppressed,
}

impl State {
    pub const ALL: [State; 4] = [State::Announced, State::Draining, State::Withdrawn, State::Suppressed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Announced => "announced",
            State::Draining => "draining",
            State::Withdrawn => "withdrawn",
            State::Suppressed => "suppressed",
        }
    }

    /// Whether a route goes to the peers in this state.
    pub fn is_up(self) -> bool {
        matches!(self, State::Announced | State::Draining)
    }
}

/// One service a prefix depends on, as the load balancer sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    pub name: String,
    /// Backends that may take new connections; `None`: the service is not
    /// running.
    pub eligible: Option<u32>,
}

/// One prefix, as configured and as its services stand now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInput {
    /// "addr/len".
    pub key: String,
    pub services: Vec<ServiceInput>,
    pub min_healthy_backends: u32,
    /// `dns = true`: `Some(Ok(()))` while the DNS server serves every zone,
    /// `Some(Err(why))` otherwise; `None`: the prefix does not depend on DNS.
    pub dns: Option<Result<(), String>>,
    /// Open connections of this prefix's services.
    pub open_connections: u64,
    /// Whether the prefix is IPv6 (peers without a next hop of the family
    /// are not told about it).
    pub ipv6: bool,
}

/// One configured BGP peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInput {
    /// The session is Established.
    pub established: bool,
    /// The peer has a next hop for IPv4 / IPv6 prefixes.
    pub v4: bool,
    pub v6: bool,
}

/// Everything the policy looks at, read once per evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub prefixes: Vec<PrefixInput>,
    /// Open connections of the whole PoP (a PoP drain counts these).
    pub open_connections: u64,
    /// `Some(path)` while the maintenance file exists.
    pub maintenance_file: Option<String>,
    pub peers: Vec<PeerInput>,
}

/// What one peer is told about a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRoute {
    /// Announced (less preferred when `draining`).
    Announced { draining: bool },
    /// Withdrawn (or never announced).
    Withdrawn,
    /// The policy would announce, but the session is not established.
    NoSession,
    /// The peer has no next hop of the prefix's family.
    NoNextHop,
}

/// The policy's answer for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: String,
    pub state: State,
    pub reason: String,
    /// The state differs from the previous evaluation's (or is the first).
    pub changed: bool,
    /// Per configured peer, in input order.
    pub peers: Vec<PeerRoute>,
}

impl Decision {
    /// Peers the prefix is announced to now.
    pub fn announced_to(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| matches!(p, PeerRoute::Announced { .. }))
            .count()
    }

    /// Peers that can carry the prefix (with a next hop of its family).
    pub fn carriers(&self) -> usize {
        self.peers.iter().filter(|p| **p != PeerRoute::NoNextHop).count()
    }

    /// What the routers were told, and why: the policy's state while at
    /// least one peer has the route, else withdrawn with the reason no
    /// peer has it. This, not [`Decision::state`], is what an operator is
    /// shown: a prefix the policy wants up is not announced anywhere while
    /// no BGP session is established.
    pub fn reported(&self) -> (State, String) {
        if !self.state.is_up() {
            return (self.state, self.reason.clone());
        }
        let (n, m) = (self.announced_to(), self.carriers());
        if m == 0 {
            (
                State::Withdrawn,
                format!(
                    "no BGP peer has a next hop for this address family (ready to announce: {})",
                    self.reason
                ),
            )
        } else if n == 0 {
            (
                State::Withdrawn,
                format!("no BGP session established (ready to announce: {})", self.reason),
            )
        } else if n < m {
            (self.state, format!("{}; announced to {n} of {m} peers", self.reason))
        } else {
            (self.state, self.reason.clone())
        }
    }
}

impl PeerRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRoute::Announced { draining: false } => "announced",
            PeerRoute::Announced { draining: true } => "draining",
            PeerRoute::Withdrawn => "withdrawn",
            PeerRoute::NoSession => "no session",
            PeerRoute::NoNextHop => "no next hop",
        }
    }
}

/// A drain in force: why, and until when at the latest (`None`: until the
/// connection threshold only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub reason: String,
    pub deadline: Option<Instant>,
}

impl Drain {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// The policy's memory: operators' drains, damping, previous states.
#[derive(Debug, Clone)]
pub struct Policy {
    settings: Settings,
    pop_drain: Option<Drain>,
    prefix_drains: BTreeMap<String, Drain>,
    damping: BTreeMap<String, Damping>,
    states: BTreeMap<String, State>,
    shutting_down: bool,
}

impl Policy {
    pub fn new(settings: Settings) -> Policy {
        Policy {
            settings,
            pop_drain: None,
            prefix_drains: BTreeMap::new(),
            damping: BTreeMap::new(),
            states: BTreeMap::new(),
            shutting_down: false,
        }
    }

    /// New settings (a reload); drains, damping and states are kept.
    pub fn set_settings(&mut self, settings: Settings) {
        if settings.flap_half_life != self.settings.flap_half_life {
            for d in self.damping.values_mut() {
                d.set_half_life(settings.flap_half_life);
            }
        }
        self.settings = settings;
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Starts draining the whole PoP (no effect if a PoP drain is already
    /// in force). Returns whether it started now.
    pub fn drain_pop(&mut self, reason: &str, now: Instant) -> bool {
        if self.pop_drain.is_some() {
            return false;
        }
        self.pop_drain = Some(Drain {
            reason: reason.to_string(),
            deadline: now.checked_add(self.settings.drain_timeout),
        });
        true
    }

    /// Ends an operator's PoP drain. Returns whether one was in force.
    pub fn undrain_pop(&mut self) -> bool {
        self.pop_drain.take().is_some()
    }

    /// Drains one prefix. Returns whether it started now.
    pub fn drain_prefix(&mut self, key: &str, reason: &str, now: Instant) -> bool {
        if self.prefix_drains.contains_key(key) {
            return false;
        }
        self.prefix_drains.insert(
            key.to_string(),
            Drain {
                reason: reason.to_string(),
                deadline: now.checked_add(self.settings.drain_timeout),
            },
        );
        true
    }

    /// Ends a prefix drain. Returns whether one was in force.
    pub fn undrain_prefix(&mut self, key: &str) -> bool {
        self.prefix_drains.remove(key).is_some()
    }

    /// From now on everything is withdrawn (the last step of shutdown).
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// The operator's (or SIGTERM's) PoP drain, if any.
    pub fn pop_drain(&self) -> Option<&Drain> {
        self.pop_drain.as_ref()
    }

    /// The PoP drain in force while the maintenance file is (`Some(path)`)
    /// or is not there: an operator's, else the file's.
    pub fn pop_drain_in(&self, maintenance_file: Option<&str>) -> Option<Drain> {
        self.pop_drain.clone().or_else(|| {
            maintenance_file.map(|f| Drain {
                reason: format!("maintenance file {f} exists"),
                deadline: None,
            })
        })
    }

    /// Prefixes drained one by one.
    pub fn drained_prefixes(&self) -> impl Iterator<Item = &str> {
        self.prefix_drains.keys().map(String::as_str)
    }

    /// Decides every prefix of `input` at `now`.
    pub fn evaluate(&mut self, input: &Input, now: Instant) -> Vec<Decision> {
        // Forget what belongs to prefixes no longer configured.
        let keep = |k: &String| input.prefixes.iter().any(|p| p.key == *k);
        self.prefix_drains.retain(|k, _| keep(k));
        self.damping.retain(|k, _| keep(k));
        self.states.retain(|k, _| keep(k));

        let pop_drain = self.pop_drain_in(input.maintenance_file.as_deref());
        let below = self.settings.drain_until_connections;
        let mut out = Vec::with_capacity(input.prefixes.len());
        for p in &input.prefixes {
            let previous = self.states.get(&p.key).copied();
            let damping = self
                .damping
                .entry(p.key.clone())
                .or_insert_with(|| Damping::new(self.settings.flap_half_life, now));
            let (drain, open) = match (&pop_drain, self.prefix_drains.get(&p.key)) {
                (Some(d), _) => (Some(d), input.open_connections),
                (None, Some(d)) => (Some(d), p.open_connections),
                (None, None) => (None, 0),
            };
            let (state, reason) = if self.shutting_down {
                (State::Withdrawn, "shutting down".to_string())
            } else if let Some(why) = unhealthy(p) {
                if previous.is_some_and(State::is_up) {
                    damping.on_health_withdraw(now);
                }
                (State::Withdrawn, why)
            } else if let Err(left) = damping.may_announce(now) {
                (
                    State::Suppressed,
                    format!(
                        "flap damping: healthy again, held down for {}s more after {} recent flaps",
                        left.as_secs() + 1,
                        damping.flaps
                    ),
                )
            } else if let Some(d) = drain {
                if open <= below {
                    (
                        State::Withdrawn,
                        format!("drained ({}): {open} open connection(s)", d.reason),
                    )
                } else if d.expired(now) {
                    (
                        State::Withdrawn,
                        format!("drained ({}): drain timeout with {open} open connection(s)", d.reason),
                    )
                } else {
                    (
                        State::Draining,
                        format!("{}: waiting for {open} open connection(s)", d.reason),
                    )
                }
            } else {
                (State::Announced, "all checks pass".to_string())
            };
            self.states.insert(p.key.clone(), state);
            let peers = input
                .peers
                .iter()
                .map(|peer| {
                    if !(if p.ipv6 { peer.v6 } else { peer.v4 }) {
                        PeerRoute::NoNextHop
                    } else if !state.is_up() {
                        PeerRoute::Withdrawn
                    } else if !peer.established {
                        PeerRoute::NoSession
                    } else {
                        PeerRoute::Announced {
                            draining: state == State::Draining,
                        }
                    }
                })
                .collect();
            out.push(Decision {
                key: p.key.clone(),
                state,
                reason,
                changed: previous != Some(state),
                peers,
            });
        }
        out
    }

    /// Whether any prefix is still draining (shutdown waits for this).
    pub fn any_draining(&self) -> bool {
        self.states.values().any(|s| *s == State::Draining)
    }
}

/// Why `p`'s traffic cannot be served here, if it cannot.
fn unhealthy(p: &PrefixInput) -> Option<String> {
    if let Some(Err(why)) = &p.dns {
        return Some(why.clone());
    }
    for s in &p.services {
        match s.eligible {
            None => return Some(format!("service {:?} not running", s.name)),
            Some(n) if n < p.min_healthy_backends => {
                return Some(format!(
                    "service {:?} has {n} healthy backend(s), needs {}",
                    s.name, p.min_healthy_backends
                ))
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
