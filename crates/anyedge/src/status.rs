//! The PoP's state, read once: the one model that the status JSON
//! (`/api/v1/status`, which `anyedge ctl status` and the status page
//! render), `/metrics` and the SIGUSR1 report are renderings of.
//!
//! Counters come from the tables declared with `counter_set!` (services,
//! backends, the admin API): each counter is rendered everywhere from its
//! one line there, so a new counter needs no edit here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use anyedge_lb::health::CheckResult;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{json, Map, Value};

use crate::accesslog::AccessLogStats;
use crate::admin::AdminCounters;
use crate::counters::CounterDef;
use crate::lb::{BackendStats, ServiceStats};
use crate::pop::Pop;

/// HELP text of each metric family the counter tables feed.
const FAMILY_HELP: &[(&str, &str)] = &[
    ("anyedge_connections_accepted", "Client connections accepted per service."),
    ("anyedge_connections_completed", "Client connections forwarded and closed per service."),
    ("anyedge_connections_failed", "Client connections closed by anyedge, by reason."),
    ("anyedge_backend_retries", "Connects retried on another backend."),
    ("anyedge_discovery_errors", "Backend discovery failures (resolver, records, file): the last good set kept serving."),
    ("anyedge_backend_connections", "Connections forwarded per backend."),
    ("anyedge_backend_bytes", "Bytes forwarded per backend and direction."),
    ("anyedge_backend_connect_failures", "Failed connects to a backend, by cause."),
    ("anyedge_backend_silent", "Connections a backend accepted but never answered before the idle timeout."),
    ("anyedge_health_checks", "Active health checks, by result."),
    (
        "anyedge_admin_connections_refused",
        "Admin API connections closed at once: admin.max_connections (cap), admin.max_connections_per_source (source_cap), or descriptors near the process limit (fd_reserve).",
    ),
    ("anyedge_access_log_lines", "Access-log lines written, or lost to a write error (result)."),
    (
        "anyedge_access_log_dropped",
        "Access-log lines dropped because the queue to the writer was full (access_log.queue).",
    ),
    (
        "anyedge_admin_header_timeouts",
        "Admin API connections closed because a request head did not arrive within admin.header_timeout.",
    ),
];

fn help(family: &str) -> &'static str {
    FAMILY_HELP.iter().find(|(f, _)| *f == family).map_or("", |(_, h)| h)
}

/// The whole PoP, read at one moment.
pub struct Status {
    pub pop: String,
    pub config: String,
    pub active_connections: u64,
    pub max_connections: u32,
    pub guard: Guard,
    pub services: Vec<Service>,
    pub anycast: Option<Anycast>,
    pub xdp: Option<Xdp>,
    pub dns: Option<Dns>,
    pub admin_open: u64,
    /// No admin token configured: the API refuses every change.
    pub admin_read_only: bool,
    /// `AdminCounters::COUNTERS` order.
    pub admin: Vec<u64>,
    pub fd_limit: Option<u64>,
    pub version: &'static str,
    pub started_unix: f64,
    pub uptime_seconds: f64,
    pub reloads: crate::pop::Reloads,
    pub process: crate::process::Process,
    /// `AccessLogStats::COUNTERS` order.
    pub access_log: Vec<u64>,
}

pub struct Guard {
    pub drops: Vec<(&'static str, u64)>,
    pub dynamic_blocks: u64,
    pub tarpitted: u64,
    pub tarpit_open: u64,
}

pub struct Service {
    pub name: String,
    pub listen: Vec<String>,
    pub balance: String,
    pub active: u64,
    /// `ServiceStats::COUNTERS` order.
    pub counters: Vec<u64>,
    pub backends: Vec<Backend>,
    pub duration: crate::hist::Snapshot,
}

pub struct Backend {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub proxy_protocol: String,
    /// Where it comes from: config, dns, file, runtime.
    pub origin: &'static str,
    /// Removed from its source; gone once its connections end.
    pub removed: bool,
    pub up: bool,
    pub draining: bool,
    pub health_reason: String,
    pub health_since_seconds: f64,
    /// Total time down, from the transitions (since the backend was
    /// created, in this process).
    pub downtime_seconds: f64,
    /// Transitions from up to down.
    pub down_transitions: u64,
    /// How long checks have been failing in a row (`None`: the last passed).
    pub failing_for_seconds: Option<f64>,
    /// The last check: `Ok(latency)` or `Err(what failed)`.
    pub last_check: Option<Result<std::time::Duration, String>>,
    pub active: u64,
    /// `BackendStats::COUNTERS` order.
    pub counters: Vec<u64>,
    pub connect_time: crate::hist::Snapshot,
}

pub struct Anycast {
    pub prefixes: Vec<Prefix>,
    pub pop_drain: Option<String>,
    pub peers: Vec<Peer>,
}

pub struct Prefix {
    pub prefix: String,
    /// What the routers were told (see `announce::PrefixState`).
    pub state: anyedge_anycast::State,
    pub reason: String,
    pub since_unix: u64,
    pub operator_drain: bool,
    /// What the policy wants.
    pub policy: anyedge_anycast::State,
    pub peers: Vec<(String, &'static str)>,
    pub announced_to: usize,
    pub carriers: usize,
}

pub struct Peer {
    pub name: String,
    pub address: String,
    pub asn: u32,
    pub established: bool,
    /// `None` without BFD.
    pub bfd_up: Option<bool>,
    pub flaps: u64,
    pub connect_attempts: u64,
    pub last_error: String,
}

pub struct Xdp {
    pub interfaces: Vec<String>,
    pub mode: &'static str,
    pub counters: Vec<crate::xdp::Count>,
    pub tunnels: Vec<crate::xdp::TunnelCount>,
}

pub struct Dns {
    pub zones: Vec<crate::dns::ZoneStatus>,
    pub stats: crate::dns::StatsSnapshot,
    pub dnstap: crate::dns::DnstapStats,
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

impl Status {
    /// Reads every part of `pop` now.
    pub fn read(pop: &Pop) -> Status {
        let edge = &pop.edge;
        let cfg = edge.config();
        let services = edge
            .services()
            .iter()
            .map(|svc| {
                let sc = svc.config();
                Service {
                    name: svc.name.clone(),
                    listen: sc.listen.iter().map(|a| a.to_string()).collect(),
                    balance: format!("{:?}", sc.balance),
                    active: load(&svc.active),
                    counters: svc.stats.values(),
                    duration: svc.duration.snapshot(),
                    backends: svc
                        .backends()
                        .iter()
                        .map(|b| {
                            let bc = b.config();
                            let now = std::time::Instant::now();
                            let (health_reason, health_since_seconds, failing_for_seconds, last_check, downs) =
                                match b.health.lock() {
                                    Ok(h) => (
                                        h.last_reason().to_string(),
                                        now.saturating_duration_since(h.since()).as_secs_f64(),
                                        h.failing_since().map(|t| t.elapsed().as_secs_f64()),
                                        h.last_result().map(|r| match r {
                                            CheckResult::Ok { latency } => Ok(*latency),
                                            CheckResult::Failed { reason } => Err(reason.to_string()),
                                        }),
                                        (h.downtime(now).as_secs_f64(), h.down_transitions()),
                                    ),
                                    Err(_) => (String::new(), 0.0, None, None, (0.0, 0)),
                                };
                            Backend {
                                name: b.name.clone(),
                                address: bc.address.to_string(),
                                weight: bc.weight,
                                proxy_protocol: format!("{:?}", bc.proxy).to_lowercase(),
                                origin: b.origin().as_str(),
                                removed: b.is_removed(),
                                up: b.is_up(),
                                draining: b.is_draining(),
                                health_reason,
                                health_since_seconds,
                                downtime_seconds: downs.0,
                                down_transitions: downs.1,
                                failing_for_seconds,
                                last_check,
                                active: load(&b.active),
                                counters: b.stats.values(),
                                connect_time: b.connect_time.snapshot(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let anycast = pop.announcer().map(|a| {
            let drained = a.drained_prefixes();
            Anycast {
                prefixes: a
                    .prefix_states()
                    .into_iter()
                    .map(|(p, s)| Prefix {
                        operator_drain: drained.contains(&p),
                        prefix: p,
                        state: s.state,
                        reason: s.reason,
                        since_unix: s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                        policy: s.policy,
                        peers: s.peers,
                        announced_to: s.announced_to,
                        carriers: s.carriers,
                    })
                    .collect(),
                pop_drain: a.pop_drain(),
                peers: a
                    .peers
                    .iter()
                    .map(|(pc, st)| Peer {
                        name: pc.name.clone(),
                        address: pc.address.to_string(),
                        asn: pc.asn,
                        established: st.established.load(Ordering::Relaxed),
                        bfd_up: pc.bfd.as_ref().map(|_| st.bfd_up.load(Ordering::Relaxed)),
                        flaps: load(&st.flaps),
                        connect_attempts: load(&st.connect_attempts),
                        last_error: st.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
                    })
                    .collect(),
            }
        });
        Status {
            pop: cfg.pop_name.clone(),
            config: cfg.source.clone(),
            active_connections: load(&edge.active),
            max_connections: cfg.max_connections.get(),
            guard: Guard {
                drops: anyedge_guard::DropReason::ALL
                    .iter()
                    .zip(&edge.guard_drops)
                    .map(|(r, v)| (r.as_str(), load(v)))
                    .collect(),
                dynamic_blocks: load(&edge.dynamic_blocks),
                tarpitted: load(&edge.tarpitted),
                tarpit_open: load(&edge.tarpit_open),
            },
            services,
            anycast,
            xdp: pop.fast_path().map(|fp| Xdp {
                interfaces: fp.interfaces.clone(),
                mode: fp.mode,
                counters: fp.counters(),
                tunnels: fp.tunnel_counts(),
            }),
            dns: pop.dns.as_ref().map(|d| Dns {
                zones: d.zone_status(),
                stats: d.stats(),
                dnstap: d.dnstap_stats(),
            }),
            admin_open: crate::admin::open_connections(),
            admin_read_only: cfg.admin.as_ref().is_none_or(|a| a.token.is_none()),
            admin: crate::admin::counters().values(),
            fd_limit: crate::fdlimit::limit(),
            version: crate::process::VERSION,
            started_unix: crate::process::started_unix(),
            uptime_seconds: crate::process::uptime_seconds(),
            reloads: pop.reloads(),
            process: crate::process::Process::read(),
            access_log: edge.access_log_stats.values(),
        }
    }

    /// The status JSON (`/api/v1/status`).
    pub fn to_json(&self) -> Value {
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|s| {
                let backends: Vec<Value> = s
                    .backends
                    .iter()
                    .map(|b| {
                        let mut o = json!({
                            "name": b.name,
                            "address": b.address,
                            "weight": b.weight,
                            "proxy_protocol": b.proxy_protocol,
                            "origin": b.origin,
                            "removed": b.removed,
                            "health": if b.up { "up" } else { "down" },
                            "health_reason": b.health_reason,
                            "health_since_seconds": b.health_since_seconds,
                            "downtime_seconds": b.downtime_seconds,
                            "down_transitions": b.down_transitions,
                            "failing_for_seconds": b.failing_for_seconds,
                            "last_check": match &b.last_check {
                                None => Value::Null,
                                Some(Ok(l)) => json!({ "ok": true, "latency_ms": l.as_secs_f64() * 1e3 }),
                                Some(Err(e)) => json!({ "ok": false, "error": e }),
                            },
                            "draining": b.draining,
                            "active_connections": b.active,
                        });
                        put_counters(&mut o, BackendStats::COUNTERS, &b.counters);
                        o
                    })
                    .collect();
                let mut o = json!({
                    "name": s.name,
                    "listen": s.listen,
                    "balance": s.balance,
                    "active_connections": s.active,
                    "backends": backends,
                });
                put_counters(&mut o, ServiceStats::COUNTERS, &s.counters);
                o
            })
            .collect();
        let drops: Map<String, Value> = self
            .guard
            .drops
            .iter()
            .map(|(r, v)| ((*r).to_string(), json!(v)))
            .collect();
        let mut admin = json!({ "open_connections": self.admin_open, "fd_limit": self.fd_limit,
                                "read_only": self.admin_read_only });
        put_counters(&mut admin, AdminCounters::COUNTERS, &self.admin);
        let r = &self.reloads;
        let reload = json!({
            "ok": r.ok,
            "failed": r.failed,
            "last": r.last.as_ref().map(|l| json!({
                "at_unix": l.at_unix,
                "result": if l.error.is_none() { "ok" } else { "failed" },
                "error": l.error,
            })),
            "last_success_unix": r.last_success_unix,
        });
        let mut access_log = json!({});
        put_counters(&mut access_log, AccessLogStats::COUNTERS, &self.access_log);
        let mut v = json!({
            "pop": self.pop,
            "version": self.version,
            "started_unix": self.started_unix,
            "uptime_seconds": self.uptime_seconds,
            "reload": reload,
            "guard": {
                "drops": drops,
                "dynamic_blocks": self.guard.dynamic_blocks,
                "tarpitted": self.guard.tarpitted,
                "tarpit_open": self.guard.tarpit_open,
            },
            "config": self.config,
            "active_connections": self.active_connections,
            "max_connections": self.max_connections,
            "services": services,
            "admin": admin,
            "access_log": access_log,
        });
        let Some(obj) = v.as_object_mut() else { return v };
        if let Some(a) = &self.anycast {
            let prefixes: Vec<Value> = a
                .prefixes
                .iter()
                .map(|p| {
                    let peers: Vec<Value> = p
                        .peers
                        .iter()
                        .map(|(name, route)| json!({ "peer": name, "route": route }))
                        .collect();
                    json!({ "prefix": p.prefix, "state": p.state.as_str(), "reason": p.reason, "since_unix": p.since_unix,
                            "operator_drain": p.operator_drain, "policy": p.policy.as_str(),
                            "announced_to": p.announced_to, "carriers": p.carriers, "peers": peers })
                })
                .collect();
            let peers: Vec<Value> = a
                .peers
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "address": p.address,
                        "asn": p.asn,
                        "established": p.established,
                        "bfd": p.bfd_up.map(|up| if up { "up" } else { "down" }),
                        "flaps": p.flaps,
                        "connect_attempts": p.connect_attempts,
                        "last_error": p.last_error,
                    })
                })
                .collect();
            obj.insert("anycast".into(), json!(prefixes));
            obj.insert("pop_drain".into(), json!(a.pop_drain));
            obj.insert("bgp_peers".into(), json!(peers));
        }
        if let Some(x) = &self.xdp {
            obj.insert(
                "xdp".into(),
                json!({ "interfaces": x.interfaces, "mode": x.mode, "counters": x.counters, "tunnels": x.tunnels }),
            );
        }
        if let Some(d) = &self.dns {
            obj.insert(
                "dns".into(),
                json!({ "zones": d.zones, "stats": d.stats, "dnstap": d.dnstap }),
            );
        }
        v
    }

    /// The text report logged on SIGUSR1.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pop={} version={} uptime={:.0}s active_connections={} max_connections={}",
            self.pop, self.version, self.uptime_seconds, self.active_connections, self.max_connections
        );
        if let Some(l) = &self.reloads.last {
            let _ = writeln!(
                s,
                "reloads ok={} failed={} last: {}",
                self.reloads.ok,
                self.reloads.failed,
                l.error
                    .as_deref()
                    .map_or_else(|| "ok".to_string(), |e| format!("failed: {e}"))
            );
        }
        if let Some(a) = &self.anycast {
            if let Some(d) = &a.pop_drain {
                let _ = writeln!(s, "pop draining: {d}");
            }
            for p in &a.prefixes {
                let _ = writeln!(
                    s,
                    "prefix {} {} (to {} of {} peers): {}",
                    p.prefix,
                    p.state.as_str(),
                    p.announced_to,
                    p.carriers,
                    p.reason
                );
            }
            for p in &a.peers {
                let _ = writeln!(
                    s,
                    "bgp peer {} {} {}{} flaps={} connect_attempts={}{}",
                    p.name,
                    p.address,
                    if p.established { "established" } else { "down" },
                    match p.bfd_up {
                        Some(true) => " bfd=up",
                        Some(false) => " bfd=down",
                        None => "",
                    },
                    p.flaps,
                    p.connect_attempts,
                    if p.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" last_error={:?}", p.last_error)
                    }
                );
            }
        }
        for svc in &self.services {
            let _ = write!(s, "service {} active={}", svc.name, svc.active);
            write_counters(&mut s, ServiceStats::COUNTERS, &svc.counters);
            for b in &svc.backends {
                let _ = write!(
                    s,
                    "  backend {} {} {}{} active={}",
                    b.name,
                    b.address,
                    if b.up { "UP" } else { "DOWN" },
                    if b.draining { " DRAINING" } else { "" },
                    b.active
                );
                write_counters(&mut s, BackendStats::COUNTERS, &b.counters);
                let _ = writeln!(s, "    reason={:?}", b.health_reason);
            }
        }
        if let Some(d) = &self.dns {
            for z in &d.zones {
                let _ = writeln!(s, "dns zone {} serial={} records={}", z.name, z.serial, z.records);
            }
            if d.dnstap.enabled {
                let t = &d.dnstap;
                let _ = writeln!(
                    s,
                    "dns dnstap connected={} sent={} dropped={}",
                    t.connected, t.sent, t.dropped
                );
            }
        }
        s
    }

    /// Every metric of the PoP, for `/metrics`.
    pub fn encode_metrics(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let gi = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.process_metrics(enc)?;
        gauge(
            enc,
            "anyedge_connections_active",
            "Open client connections per service.",
            &self
                .services
                .iter()
                .map(|s| (vec![("service", s.name.as_str())], gi(s.active)))
                .collect::<Vec<_>>(),
        )?;
        let svc_samples: Vec<Owner<'_>> = self
            .services
            .iter()
            .map(|s| (vec![("service", s.name.as_str())], s.counters.as_slice()))
            .collect();
        encode_table(enc, ServiceStats::COUNTERS, &svc_samples)?;
        let backends: Vec<(Vec<(&str, &str)>, &Backend)> = self
            .services
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(move |b| (vec![("service", s.name.as_str()), ("backend", b.name.as_str())], b))
            })
            .collect();
        let per_backend = |f: &dyn Fn(&Backend) -> i64| -> Vec<(Vec<(&str, &str)>, i64)> {
            backends.iter().map(|(l, b)| (l.clone(), f(b))).collect()
        };
        gauge(
            enc,
            "anyedge_backend_up",
            "1 if the backend passes health checks.",
            &per_backend(&|b| i64::from(b.up)),
        )?;
        gauge(
            enc,
            "anyedge_backend_draining",
            "1 if the backend is draining.",
            &per_backend(&|b| i64::from(b.draining)),
        )?;
        gauge(
            enc,
            "anyedge_backend_connections_active",
            "Open connections per backend.",
            &per_backend(&|b| gi(b.active)),
        )?;
        // HAProxy's stats page columns "Dwntme" and "Chk down", as counters.
        counter_f64(
            enc,
            "anyedge_backend_downtime_seconds",
            "Time the backend has spent down since it was added (a backend never up: since it was added).",
            &backends
                .iter()
                .map(|(l, b)| (l.clone(), b.downtime_seconds))
                .collect::<Vec<_>>(),
        )?;
        counter(
            enc,
            "anyedge_backend_down_transitions",
            "Times the backend went from up to down.",
            &backends
                .iter()
                .map(|(l, b)| (l.clone(), b.down_transitions))
                .collect::<Vec<_>>(),
        )?;
        let be_samples: Vec<Owner<'_>> = backends
            .iter()
            .map(|(l, b)| (l.clone(), b.counters.as_slice()))
            .collect();
        encode_table(enc, BackendStats::COUNTERS, &be_samples)?;
        crate::hist::encode(
            enc,
            "anyedge_backend_connect_duration_seconds",
            "Time of successful connects to the backend (real traffic, not health checks).",
            &backends
                .iter()
                .map(|(l, b)| (l.clone(), &b.connect_time))
                .collect::<Vec<_>>(),
        )?;
        crate::hist::encode(
            enc,
            "anyedge_connection_duration_seconds",
            "Client connections served (past the guard and the caps), from accept to close.",
            &self
                .services
                .iter()
                .map(|s| (vec![("service", s.name.as_str())], &s.duration))
                .collect::<Vec<_>>(),
        )?;
        counter(
            enc,
            "anyedge_guard_drops",
            "Connections dropped by the guard, by layer and reason.",
            &self
                .guard
                .drops
                .iter()
                .map(|(r, v)| (vec![("layer", "userspace"), ("reason", *r)], *v))
                .collect::<Vec<_>>(),
        )?;
        counter(
            enc,
            "anyedge_guard_tarpitted",
            "Refused connections held open by the tarpit.",
            &[(vec![], self.guard.tarpitted)],
        )?;
        gauge(
            enc,
            "anyedge_guard_tarpit_open",
            "Refused connections held open by the tarpit now.",
            &[(vec![], gi(self.guard.tarpit_open))],
        )?;
        if let Some(a) = &self.anycast {
            self.anycast_metrics(enc, a)?;
        }
        if let Some(d) = &self.dns {
            dns_metrics(enc, d)?;
        }
        gauge(
            enc,
            "anyedge_admin_connections_open",
            "Open admin API connections.",
            &[(vec![], gi(self.admin_open))],
        )?;
        encode_table(enc, AdminCounters::COUNTERS, &[(vec![], self.admin.as_slice())])?;
        encode_table(enc, AccessLogStats::COUNTERS, &[(vec![], self.access_log.as_slice())])?;
        if let Some(x) = &self.xdp {
            counter(
                enc,
                "anyedge_xdp_packets",
                "Packets judged by the XDP fast path (layer=xdp), by verdict and reason.",
                &x.counters
                    .iter()
                    .map(|c| {
                        (
                            vec![("verdict", if c.drop { "drop" } else { "pass" }), ("reason", c.name)],
                            c.packets,
                        )
                    })
                    .collect::<Vec<_>>(),
            )?;
            let mut verdicts = Vec::new();
            let mut backends = Vec::new();
            for t in &x.tunnels {
                for (v, drop, n) in &t.verdicts {
                    verdicts.push((
                        vec![
                            ("service", t.service.as_str()),
                            ("entry", t.entry.as_str()),
                            ("verdict", if *drop { "drop" } else { "forward" }),
                            ("reason", *v),
                        ],
                        *n,
                    ));
                }
                for (b, p, _) in &t.backends {
                    backends.push((
                        vec![
                            ("service", t.service.as_str()),
                            ("entry", t.entry.as_str()),
                            ("backend", b.as_str()),
                        ],
                        *p,
                    ));
                }
            }
            counter(
                enc,
                "anyedge_xdp_tunnel_packets",
                "Packets of tunnel services (forwarding = \"tunnel\") by the XDP program, by service, entry (address/protocol), verdict and reason.",
                &verdicts,
            )?;
            counter(
                enc,
                "anyedge_xdp_tunnel_backend_packets",
                "Packets the XDP program encapsulated to each backend node.",
                &backends,
            )?;
        }
        Ok(())
    }

    /// The build, the standard process metrics, and configuration reloads.
    fn process_metrics(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        gauge(
            enc,
            "anyedge_build_info",
            "Always 1; the version of the running binary is the label.",
            &[(vec![("version", self.version)], 1)],
        )?;
        let p = &self.process;
        if let Some(c) = p.cpu_seconds {
            counter_f64(
                enc,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                &[(vec![], c)],
            )?;
        }
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Some(self.started_unix),
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                gauge_f64(enc, name, help, &[(vec![], v)])?;
            }
        }
        let r = &self.reloads;
        counter(
            enc,
            "anyedge_config_reloads",
            "Configuration reloads asked (SIGHUP, admin API), by result.",
            &[
                (vec![("result", "success")], r.ok),
                (vec![("result", "failure")], r.failed),
            ],
        )?;
        gauge(
            enc,
            "anyedge_config_last_reload_successful",
            "0 if the last configuration reload failed (the previous configuration, or part of it, is running), else 1.",
            &[(vec![], i64::from(r.last.as_ref().is_none_or(|l| l.error.is_none())))],
        )?;
        gauge_f64(
            enc,
            "anyedge_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix seconds): the last successful reload, else the start.",
            &[(vec![], r.last_success_unix.unwrap_or(self.started_unix))],
        )
    }

    fn anycast_metrics(&self, enc: &mut DescriptorEncoder, a: &Anycast) -> std::fmt::Result {
        let by_peer = |f: &dyn Fn(&Peer) -> i64| -> Vec<(Vec<(&str, &str)>, i64)> {
            a.peers
                .iter()
                .map(|p| (vec![("peer", p.name.as_str())], f(p)))
                .collect()
        };
        gauge(
            enc,
            "anyedge_bgp_session_up",
            "1 if the BGP session is established.",
            &by_peer(&|p| i64::from(p.established)),
        )?;
        counter(
            enc,
            "anyedge_bgp_session_flaps",
            "Established BGP sessions that went down.",
            &a.peers
                .iter()
                .map(|p| (vec![("peer", p.name.as_str())], p.flaps))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "anyedge_bfd_session_up",
            "1 if the BFD session is up.",
            &a.peers
                .iter()
                .filter_map(|p| p.bfd_up.map(|up| (vec![("peer", p.name.as_str())], i64::from(up))))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "anyedge_anycast_prefix_announced",
            "1 if the prefix is announced to at least one BGP peer (also while draining), else 0.",
            &a.prefixes
                .iter()
                .map(|p| (vec![("prefix", p.prefix.as_str())], i64::from(p.state.is_up())))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "anyedge_anycast_prefix_peers_announced",
            "BGP peers the prefix is announced to now.",
            &a.prefixes
                .iter()
                .map(|p| {
                    let n = i64::try_from(p.announced_to).unwrap_or(i64::MAX);
                    (vec![("prefix", p.prefix.as_str())], n)
                })
                .collect::<Vec<_>>(),
        )?;
        // One series per state, exactly one of them 1: a state change
        // changes values, not series.
        let mut states = Vec::new();
        for p in &a.prefixes {
            for s in anyedge_anycast::State::ALL {
                states.push((
                    vec![("prefix", p.prefix.as_str()), ("state", s.as_str())],
                    i64::from(p.state == s),
                ));
            }
        }
        gauge(
            enc,
            "anyedge_anycast_prefix_state",
            "1 for the state the prefix is in (announced, draining, withdrawn, suppressed), 0 for the others.",
            &states,
        )
    }
}

/// The labels of one owner of a counter set (a service, a backend) and
/// its values in table order.
type Owner<'a> = (Vec<(&'a str, &'a str)>, &'a [u64]);

/// Puts each counter of a table into `o` at its JSON key ("a.b" nests).
fn put_counters<S>(o: &mut Value, defs: &[CounterDef<S>], values: &[u64]) {
    for (d, v) in defs.iter().zip(values) {
        let mut at = &mut *o;
        let mut parts = d.json.split('.').peekable();
        while let Some(k) = parts.next() {
            let Some(obj) = at.as_object_mut() else { return };
            if parts.peek().is_none() {
                obj.insert(k.to_string(), json!(v));
                break;
            }
            at = obj.entry(k.to_string()).or_insert_with(|| json!({}));
        }
    }
}

fn write_counters<S>(s: &mut String, defs: &[CounterDef<S>], values: &[u64]) {
    for (d, v) in defs.iter().zip(values) {
        let _ = write!(s, " {}={v}", d.json.rsplit('.').next().unwrap_or(d.json));
    }
    s.push('\n');
}

/// Encodes a counter table: one family per distinct metric name, one
/// sample per (owner, counter) with the owner's labels and the counter's.
fn encode_table<S>(enc: &mut DescriptorEncoder, defs: &[CounterDef<S>], owners: &[Owner<'_>]) -> std::fmt::Result {
    let mut families: Vec<&str> = Vec::new();
    for d in defs {
        if !families.contains(&d.metric) {
            families.push(d.metric);
        }
    }
    for family in families {
        let mut samples = Vec::new();
        for (labels, values) in owners {
            for (d, v) in defs.iter().zip(values.iter()) {
                if d.metric != family {
                    continue;
                }
                let mut l = labels.clone();
                if let Some(extra) = d.label {
                    l.push(extra);
                }
                samples.push((l, *v));
            }
        }
        counter(enc, family, help(family), &samples)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) -> std::fmt::Result {
    let c = ConstCounter::new(0f64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, f64)],
) -> std::fmt::Result {
    let g = ConstGauge::new(0f64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// DNS counters: queries by transport and type, responses by RCODE and
/// kind, RRL verdicts, and per-zone serials.
fn dns_metrics(enc: &mut DescriptorEncoder, d: &Dns) -> std::fmt::Result {
    let s = &d.stats;
    counter(
        enc,
        "anyedge_dns_queries",
        "DNS queries received, by transport.",
        &[
            (vec![("transport", "udp")], s.udp_queries),
            (vec![("transport", "tcp")], s.tcp_queries),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_query_types",
        "DNS queries received, by QTYPE (OTHER: any type not named).",
        &s.query_types
            .iter()
            .map(|(t, v)| (vec![("type", *t)], *v))
            .collect::<Vec<_>>(),
    )?;
    const RCODES: [&str; 17] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
        "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15", "BADVERS",
    ];
    counter(
        enc,
        "anyedge_dns_responses",
        "DNS answers computed, by RCODE.",
        &RCODES
            .iter()
            .zip(&s.rcode)
            .filter(|(_, v)| **v > 0)
            .map(|(r, v)| (vec![("rcode", *r)], *v))
            .collect::<Vec<_>>(),
    )?;
    counter(
        enc,
        "anyedge_dns_answers",
        "DNS answers by kind (positive, wildcard, nxdomain, nodata, referral, error).",
        &crate::dns::KINDS
            .iter()
            .zip(&s.kind)
            .map(|(k, v)| (vec![("kind", *k)], *v))
            .collect::<Vec<_>>(),
    )?;
    counter(
        enc,
        "anyedge_dns_dropped",
        "DNS packets not answered (not a query, or dropped by response rate limiting).",
        &[(vec![], s.dropped)],
    )?;
    counter(
        enc,
        "anyedge_dns_truncated",
        "UDP answers sent truncated (TC).",
        &[(vec![], s.truncated)],
    )?;
    counter(
        enc,
        "anyedge_dns_rrl",
        "Response rate limiting verdicts other than send (layer=dns, by action: drop, slip, would_limit in dry-run).",
        &[
            (vec![("action", "drop")], s.rrl_dropped),
            (vec![("action", "slip")], s.rrl_slipped),
            (vec![("action", "would_limit")], s.rrl_would_limit),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_cookies_valid",
        "Queries carrying a valid server cookie (exempt from RRL).",
        &[(vec![], s.cookies_valid)],
    )?;
    counter(
        enc,
        "anyedge_dns_tcp_refused",
        "DNS TCP connections refused because the table (dns.tcp_max_connections) was full and no connection could be evicted (a full table normally closes the connection idle the longest: see anyedge_dns_tcp_closed{reason=\"evicted\"}).",
        &[(vec![], s.tcp_refused_cap)],
    )?;
    counter(
        enc,
        "anyedge_dns_tcp_closed",
        "DNS TCP connections closed by the server's limits: source_limit (refused: dns.tcp_max_per_address or tcp_max_per_prefix), evicted (idlest connection of a full table), query_timeout (a query not received whole within dns.tcp_io_timeout), write_stalled (answers not read by the client within dns.tcp_io_timeout).",
        &[
            (vec![("reason", "source_limit")], s.tcp_refused_source),
            (vec![("reason", "evicted")], s.tcp_evicted),
            (vec![("reason", "query_timeout")], s.tcp_query_timeout),
            (vec![("reason", "write_stalled")], s.tcp_write_stalled),
        ],
    )?;
    gauge(
        enc,
        "anyedge_dns_tcp_pending_bytes",
        "DNS answer bytes waiting for TCP clients to read them, all connections.",
        &[(vec![], i64::try_from(s.tcp_pending_bytes).unwrap_or(i64::MAX))],
    )?;
    counter(
        enc,
        "anyedge_dns_transfers",
        "Zone transfers: pulled as secondary (axfr_in, ixfr_in), served, refused.",
        &[
            (vec![("kind", "axfr_in")], s.axfr_in),
            (vec![("kind", "ixfr_in")], s.ixfr_in),
            (vec![("kind", "served")], s.transfers_served),
            (vec![("kind", "refused")], s.transfers_refused),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_signatures",
        "DNSSEC signatures computed on line (compact denial: negative answers signed per response), all zones.",
        &[(vec![], s.signatures)],
    )?;
    counter(
        enc,
        "anyedge_dns_signature_cache",
        "Online signature cache lookups, by result: hit (a fresh signature reused), miss (signed anew).",
        &[
            (vec![("result", "hit")], s.signature_cache_hits),
            (vec![("result", "miss")], s.signature_cache_misses),
        ],
    )?;
    counter(
        enc,
        "anyedge_dns_signature_cache_evictions",
        "Online signature cache entries dropped to make room in a full cache.",
        &[(vec![], s.signature_cache_evictions)],
    )?;
    if d.dnstap.enabled {
        counter(
            enc,
            "anyedge_dns_dnstap_sent",
            "dnstap messages written to the collector (dns.dnstap).",
            &[(vec![], d.dnstap.sent)],
        )?;
        counter(
            enc,
            "anyedge_dns_dnstap_dropped",
            "dnstap messages not logged: the queue (dns.dnstap.queue) was full, or no collector was connected.",
            &[(vec![], d.dnstap.dropped)],
        )?;
        gauge(
            enc,
            "anyedge_dns_dnstap_connected",
            "1 while the dnstap collector is connected.",
            &[(vec![], i64::from(d.dnstap.connected))],
        )?;
    }
    let zones = &d.zones;
    gauge(
        enc,
        "anyedge_dns_zone_serial",
        "SOA serial served per zone (0: not loaded).",
        &zones
            .iter()
            .map(|z| (vec![("zone", z.name.as_str())], i64::from(z.serial)))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "anyedge_dns_zone_records",
        "Records served per zone.",
        &zones
            .iter()
            .map(|z| {
                (
                    vec![("zone", z.name.as_str())],
                    i64::try_from(z.records).unwrap_or(i64::MAX),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    fn zone(z: &crate::dns::ZoneStatus) -> Vec<(&str, &str)> {
        vec![("zone", z.name.as_str())]
    }
    counter(
        enc,
        "anyedge_dns_zone_load_failures",
        "Zone loads that failed, per zone: the file (reload, reload-zone; the previous version keeps serving), or a secondary's refresh or transfer.",
        &zones.iter().map(|z| (zone(z), z.load_failures)).collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "anyedge_dns_zone_loaded",
        "1 if the zone is served (0: not loaded yet, or expired).",
        &zones
            .iter()
            .map(|z| (zone(z), i64::from(z.records > 0)))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "anyedge_dns_zone_failing",
        "1 while the zone's last load, refresh or transfer failed or it is not loaded (a previous version may still serve; the status says why).",
        &zones
            .iter()
            .map(|z| (zone(z), i64::from(z.error.is_some())))
            .collect::<Vec<_>>(),
    )?;
    gauge_f64(
        enc,
        "anyedge_dns_zone_last_load_success_timestamp_seconds",
        "When the zone's version served was loaded, or (secondaries) last confirmed by a primary, in Unix seconds.",
        &zones
            .iter()
            .filter_map(|z| {
                let t = z.loaded_unix.max(z.refreshed_unix)?;
                Some((zone(z), t as f64))
            })
            .collect::<Vec<_>>(),
    )?;
    gauge_f64(
        enc,
        "anyedge_dns_zone_expires_in_seconds",
        "Secondary zones: seconds until the version served expires (SOA expire) unless a primary confirms it; 0: expired.",
        &zones
            .iter()
            .filter_map(|z| Some((zone(z), z.expires_in_seconds?)))
            .collect::<Vec<_>>(),
    )?;
    gauge_f64(
        enc,
        "anyedge_dns_zone_signatures_expire_in_seconds",
        "Signed zones: seconds until the earliest RRSIG of the version served expires (negative: expired; still served, validators fail).",
        &zones
            .iter()
            .filter_map(|z| Some((zone(z), z.signatures_expire_in_seconds?)))
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}
