//! The last five minutes of the PoP, in process: each second a task of the
//! [`Pop`] reads the status model ([`Status::read`], the one read model)
//! and pushes one sample into fixed-size rings: per service the rates of
//! connections and bytes (deltas of the counters) and the open
//! connections, DNS queries per second (in all and per RCODE), and the
//! state of every backend and anycast prefix. `/api/v1/history` serves it
//! ([`History::to_json`]); the status page draws it.
//!
//! Memory is fixed: every ring holds at most [`SAMPLES`] values and is
//! allocated whole when its series appears (a service, backend or prefix
//! of the configuration); a series that a reload removed goes with its
//! ring. Nothing is written to disk: a restart starts an empty history.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use crate::counters::CounterDef;
use crate::lb::{BackendStats, ServiceStats};
use crate::pop::Pop;
use crate::status::Status;

/// One sample a second ...
pub const INTERVAL: Duration = Duration::from_secs(1);
/// ... five minutes of them.
pub const SAMPLES: usize = 300;

/// The RCODEs whose rates are kept (index = RCODE), as the page names them.
pub const RCODES: [&str; 6] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

/// Starts the sampler: one sample each [`INTERVAL`] until the PoP is gone.
pub fn spawn_sampler(pop: Weak<Pop>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pop) = pop.upgrade() else { return };
            let st = Status::read(&pop);
            pop.history.record(&Reading::of(&st), Instant::now(), SystemTime::now());
        }
    });
}

/// What one sample reads of the PoP (built from a [`Status`], or by hand in
/// tests).
#[derive(Debug, Default)]
pub struct Reading<'a> {
    pub services: Vec<ServiceReading<'a>>,
    pub dns: Option<DnsReading>,
    /// (prefix, state the routers were told)
    pub prefixes: Vec<(&'a str, &'static str)>,
}

#[derive(Debug)]
pub struct ServiceReading<'a> {
    pub name: &'a str,
    /// Connections accepted (a counter).
    pub accepted: u64,
    /// Open connections now.
    pub active: u64,
    pub backends: Vec<BackendReading<'a>>,
}

#[derive(Debug)]
pub struct BackendReading<'a> {
    pub name: &'a str,
    /// Bytes forwarded both ways (a counter).
    pub bytes: u64,
    /// "up", "down" or "draining" (up, but given no new connections).
    pub state: &'static str,
}

#[derive(Debug)]
pub struct DnsReading {
    /// Queries received, UDP and TCP (a counter).
    pub queries: u64,
    /// Answers by RCODE, indexed like [`RCODES`] (counters).
    pub rcode: [u64; RCODES.len()],
}

impl<'a> Reading<'a> {
    pub fn of(st: &'a Status) -> Reading<'a> {
        Reading {
            services: st
                .services
                .iter()
                .map(|s| ServiceReading {
                    name: &s.name,
                    accepted: counter(ServiceStats::COUNTERS, &s.counters, "accepted"),
                    active: s.active,
                    backends: s
                        .backends
                        .iter()
                        .map(|b| BackendReading {
                            name: &b.name,
                            bytes: counter(BackendStats::COUNTERS, &b.counters, "bytes_to_backend")
                                .saturating_add(counter(BackendStats::COUNTERS, &b.counters, "bytes_to_client")),
                            state: match (b.up, b.draining) {
                                (false, _) => "down",
                                (true, true) => "draining",
                                (true, false) => "up",
                            },
                        })
                        .collect(),
                })
                .collect(),
            dns: st.dns.as_ref().map(|d| DnsReading {
                queries: d.stats.udp_queries.saturating_add(d.stats.tcp_queries),
                rcode: std::array::from_fn(|i| d.stats.rcode.get(i).copied().unwrap_or(0)),
            }),
            prefixes: st
                .anycast
                .iter()
                .flat_map(|a| a.prefixes.iter().map(|p| (p.prefix.as_str(), p.state.as_str())))
                .collect(),
        }
    }
}

/// The value of the counter with JSON key `json` (0 if the table has none).
fn counter<S>(defs: &[CounterDef<S>], values: &[u64], json: &str) -> u64 {
    defs.iter()
        .zip(values)
        .find(|(d, _)| d.json == json)
        .map_or(0, |(_, v)| *v)
}

/// A ring of at most `cap` values: std's `VecDeque` with its capacity
/// reserved up front and its oldest value popped before a push once full,
/// so it never reallocates.
#[derive(Debug)]
struct Ring<T> {
    v: VecDeque<T>,
    cap: usize,
}

impl<T: Clone> Ring<T> {
    /// A ring that starts with `fill` copies of `with` (the samples taken
    /// before its series appeared).
    fn new(cap: usize, fill: usize, with: T) -> Ring<T> {
        let mut v = VecDeque::with_capacity(cap);
        v.extend(std::iter::repeat_n(with, fill.min(cap)));
        Ring { v, cap }
    }

    fn push(&mut self, x: T) {
        if self.v.len() >= self.cap {
            self.v.pop_front();
        }
        self.v.push_back(x);
    }
}

/// The rate of a counter, from the difference of two readings.
#[derive(Debug)]
struct Rate {
    prev: Option<u64>,
    ring: Ring<Option<f64>>,
}

impl Rate {
    /// `first`: the history's first sample (nothing to take a difference
    /// from). A series that appears later was created since the previous
    /// sample, and its counter counted from 0.
    fn new(cap: usize, fill: usize, first: bool) -> Rate {
        Rate {
            prev: if first { None } else { Some(0) },
            ring: Ring::new(cap, fill, None),
        }
    }

    /// `dt`: seconds since the previous sample.
    fn push(&mut self, now: u64, dt: f64) {
        let r = self.prev.filter(|_| dt > 0.0).map(|p| delta(p, now) as f64 / dt);
        self.prev = Some(now);
        self.ring.push(r);
    }
}

/// What a counter counted between two readings. One that went back was
/// reset (its owner was created anew, e.g. a backend a reload re-created
/// with a new address): it counted `now` from 0.
fn delta(prev: u64, now: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

#[derive(Debug)]
struct ServiceSeries {
    name: String,
    conn_rate: Rate,
    bytes_rate: Ring<Option<f64>>,
    active: Ring<Option<f64>>,
}

#[derive(Debug)]
struct BackendSeries {
    service: String,
    name: String,
    /// Its bytes counter at the previous sample; summed per service.
    bytes: Rate,
    state: Ring<Option<&'static str>>,
}

#[derive(Debug)]
struct DnsSeries {
    queries: Rate,
    rcode: [Rate; RCODES.len()],
}

#[derive(Debug)]
struct PrefixSeries {
    prefix: String,
    state: Ring<Option<&'static str>>,
}

#[derive(Debug)]
struct Rings {
    cap: usize,
    /// When each sample was taken (Unix seconds), oldest first; every
    /// series' ring is aligned with it.
    t: Ring<f64>,
    /// The previous sample (monotonic), for the rates.
    last: Option<Instant>,
    services: Vec<ServiceSeries>,
    backends: Vec<BackendSeries>,
    dns: Option<DnsSeries>,
    prefixes: Vec<PrefixSeries>,
}

/// The rings, behind one lock (taken once a second by the sampler and by
/// each `/api/v1/history` request, never across an await).
pub struct History {
    rings: Mutex<Rings>,
}

/// Takes the series with key `key` out of `old`, or makes one.
fn take<S>(old: &mut Vec<S>, is: impl Fn(&S) -> bool, make: impl FnOnce() -> S) -> S {
    match old.iter().position(is) {
        Some(i) => old.swap_remove(i),
        None => make(),
    }
}

impl History {
    /// An empty history of `cap` samples per series.
    pub fn new(cap: usize) -> History {
        let cap = cap.max(1);
        History {
            rings: Mutex::new(Rings {
                cap,
                t: Ring::new(cap, 0, 0.0),
                last: None,
                services: Vec::new(),
                backends: Vec::new(),
                dns: None,
                prefixes: Vec::new(),
            }),
        }
    }

    /// Pushes one sample: `now` (monotonic) gives the rates' interval,
    /// `wall` the sample's time as served.
    pub fn record(&self, r: &Reading<'_>, now: Instant, wall: SystemTime) {
        let Ok(mut g) = self.rings.lock() else { return };
        let h = &mut *g;
        let (cap, fill) = (h.cap, h.t.v.len());
        let first = h.last.is_none();
        let dt = h.last.map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        h.last = Some(now);
        h.t.push(crate::status::unix(wall));

        let mut old_services = std::mem::take(&mut h.services);
        let mut old_backends = std::mem::take(&mut h.backends);
        for s in &r.services {
            let mut svc = take(
                &mut old_services,
                |x| x.name == s.name,
                || ServiceSeries {
                    name: s.name.to_string(),
                    conn_rate: Rate::new(cap, fill, first),
                    bytes_rate: Ring::new(cap, fill, None),
                    active: Ring::new(cap, fill, None),
                },
            );
            svc.conn_rate.push(s.accepted, dt);
            svc.active.push(Some(s.active as f64));
            // the service's bytes: the sum of its backends' (each one's
            // difference on its own, so a backend that comes or goes is
            // no jump)
            let mut bytes = None;
            for b in &s.backends {
                let mut bs = take(
                    &mut old_backends,
                    |x| x.service == s.name && x.name == b.name,
                    || BackendSeries {
                        service: s.name.to_string(),
                        name: b.name.to_string(),
                        bytes: Rate::new(cap, fill, first),
                        state: Ring::new(cap, fill, None),
                    },
                );
                bs.bytes.push(b.bytes, dt);
                if let Some(Some(v)) = bs.bytes.ring.v.back() {
                    *bytes.get_or_insert(0.0) += v;
                }
                bs.state.push(Some(b.state));
                h.backends.push(bs);
            }
            if bytes.is_none() && !first && dt > 0.0 {
                bytes = Some(0.0);
            }
            svc.bytes_rate.push(bytes);
            h.services.push(svc);
        }

        h.dns = r.dns.as_ref().map(|d| {
            let mut ds = h.dns.take().unwrap_or_else(|| DnsSeries {
                queries: Rate::new(cap, fill, first),
                rcode: std::array::from_fn(|_| Rate::new(cap, fill, first)),
            });
            ds.queries.push(d.queries, dt);
            for (s, n) in ds.rcode.iter_mut().zip(d.rcode) {
                s.push(n, dt);
            }
            ds
        });

        let mut old_prefixes = std::mem::take(&mut h.prefixes);
        for (p, state) in &r.prefixes {
            let mut ps = take(
                &mut old_prefixes,
                |x| x.prefix == *p,
                || PrefixSeries {
                    prefix: p.to_string(),
                    state: Ring::new(cap, fill, None),
                },
            );
            ps.state.push(Some(*state));
            h.prefixes.push(ps);
        }
    }

    /// The history as `/api/v1/history` serves it: the sample times
    /// (`t`, Unix seconds, oldest first) and per series one value per
    /// sample (`null` before the series existed or where no rate could be
    /// taken); states as runs (`timeline`: state, from, until).
    pub fn to_json(&self) -> Value {
        let Ok(h) = self.rings.lock() else {
            return json!({});
        };
        let t: Vec<f64> = h.t.v.iter().copied().collect();
        let values = |r: &Ring<Option<f64>>| -> Value {
            Value::Array(
                r.v.iter()
                    .map(|x| x.map_or(Value::Null, |v| json!((v * 100.0).round() / 100.0)))
                    .collect(),
            )
        };
        let services: Vec<Value> = h
            .services
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "conn_rate": values(&s.conn_rate.ring),
                    "bytes_rate": values(&s.bytes_rate),
                    "active": values(&s.active),
                })
            })
            .collect();
        let backends: Vec<Value> = h
            .backends
            .iter()
            .map(|b| json!({ "service": b.service, "name": b.name, "timeline": runs(&t, &b.state) }))
            .collect();
        let prefixes: Vec<Value> = h
            .prefixes
            .iter()
            .map(|p| json!({ "prefix": p.prefix, "timeline": runs(&t, &p.state) }))
            .collect();
        let dns = h.dns.as_ref().map(|d| {
            let rcode: Map<String, Value> = RCODES
                .iter()
                .zip(&d.rcode)
                .map(|(n, r)| ((*n).to_string(), values(&r.ring)))
                .collect();
            json!({ "queries": values(&d.queries.ring), "rcode": rcode })
        });
        json!({
            "interval_seconds": INTERVAL.as_secs_f64(),
            "samples": h.cap,
            "t": t,
            "services": services,
            "dns": dns,
            "backends": backends,
            "prefixes": prefixes,
        })
    }
}

/// A state ring as runs of equal states: each from the sample where it was
/// first seen until the next run's first sample (the last run: until the
/// latest sample).
fn runs(t: &[f64], states: &Ring<Option<&'static str>>) -> Value {
    let mut out = Vec::new();
    let mut cur: Option<(&str, f64)> = None;
    for (i, s) in states.v.iter().enumerate() {
        let at = t.get(i).copied().unwrap_or(0.0);
        if cur.map(|c| c.0) != *s {
            if let Some((state, from)) = cur.take() {
                out.push(json!({ "state": state, "from_unix": from, "until_unix": at }));
            }
            cur = s.map(|s| (s, at));
        }
    }
    if let (Some((state, from)), Some(last)) = (cur, t.last()) {
        out.push(json!({ "state": state, "from_unix": from, "until_unix": last }));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn svc<'a>(name: &'a str, accepted: u64, backends: Vec<BackendReading<'a>>) -> ServiceReading<'a> {
        ServiceReading {
            name,
            accepted,
            active: 1,
            backends,
        }
    }

    fn be<'a>(name: &'a str, bytes: u64, state: &'static str) -> BackendReading<'a> {
        BackendReading { name, bytes, state }
    }

    /// `n` samples one second apart, from `reading(i)`.
    fn run<'a>(h: &History, t0: Instant, from: u64, n: u64, reading: impl Fn(u64) -> Reading<'a>) {
        for i in from..from + n {
            let at = t0 + Duration::from_secs(i);
            let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i);
            h.record(&reading(i), at, wall);
        }
    }

    fn floats(v: &Value) -> Vec<Option<f64>> {
        v.as_array().unwrap().iter().map(Value::as_f64).collect()
    }

    #[test]
    fn rates_are_counter_differences_over_the_interval() {
        let h = History::new(10);
        let t0 = Instant::now();
        // 5 connections and 1000 + 500 bytes a second
        run(&h, t0, 0, 4, |i| Reading {
            services: vec![svc("web", 5 * i, vec![be("a", 1000 * i, "up"), be("b", 500 * i, "up")])],
            ..Reading::default()
        });
        // a sample 2 s later: the rate is over 2 s
        h.record(
            &Reading {
                services: vec![svc(
                    "web",
                    15 + 20,
                    vec![be("a", 3000 + 4000, "up"), be("b", 1500, "up")],
                )],
                ..Reading::default()
            },
            t0 + Duration::from_secs(5),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1005),
        );
        let v = h.to_json();
        assert_eq!(floats(&v["t"]), [1000.0, 1001.0, 1002.0, 1003.0, 1005.0].map(Some));
        let s = &v["services"][0];
        assert_eq!(s["name"], "web");
        // nothing to take a difference from at the first sample
        assert_eq!(
            floats(&s["conn_rate"]),
            [None, Some(5.0), Some(5.0), Some(5.0), Some(10.0)]
        );
        assert_eq!(
            floats(&s["bytes_rate"]),
            [None, Some(1500.0), Some(1500.0), Some(1500.0), Some(2000.0)]
        );
        assert_eq!(floats(&s["active"]), [Some(1.0); 5]);
    }

    #[test]
    fn a_counter_that_goes_back_was_reset() {
        let h = History::new(10);
        let t0 = Instant::now();
        // backend a re-created at sample 3 (counters from 0): 7 bytes since
        let bytes = [100, 200, 300, 7, 17];
        run(&h, t0, 0, 5, |i| Reading {
            services: vec![svc(
                "web",
                [10, 20, 30, 2, 4][i as usize],
                vec![be("a", bytes[i as usize], "up")],
            )],
            ..Reading::default()
        });
        let v = h.to_json();
        let s = &v["services"][0];
        assert_eq!(
            floats(&s["conn_rate"]),
            [None, Some(10.0), Some(10.0), Some(2.0), Some(2.0)]
        );
        assert_eq!(
            floats(&s["bytes_rate"]),
            [None, Some(100.0), Some(100.0), Some(7.0), Some(10.0)]
        );
        assert_eq!(delta(5, 3), 3);
        assert_eq!(delta(3, 5), 2);
    }

    #[test]
    fn the_ring_wraps_and_never_grows() {
        let cap = 300;
        let h = History::new(cap);
        let t0 = Instant::now();
        let reading = |i: u64| Reading {
            services: vec![svc(
                "web",
                i,
                vec![be("a", 10 * i, if i % 7 == 0 { "down" } else { "up" })],
            )],
            dns: Some(DnsReading {
                queries: 3 * i,
                rcode: [2 * i, 0, 0, i, 0, 0],
            }),
            prefixes: vec![("192.0.2.10/32", "announced")],
        };
        run(&h, t0, 0, 10, reading);
        let capacities = |h: &History| {
            let g = h.rings.lock().unwrap();
            let mut c = vec![g.t.v.capacity(), g.services[0].conn_rate.ring.v.capacity()];
            c.push(g.backends[0].state.v.capacity());
            c.push(g.prefixes[0].state.v.capacity());
            c.push(g.dns.as_ref().unwrap().rcode[3].ring.v.capacity());
            c
        };
        let before = capacities(&h);
        assert!(before.iter().all(|&c| c >= cap), "{before:?}");
        // ten times round
        run(&h, t0, 10, 10 * cap as u64, reading);
        assert_eq!(capacities(&h), before, "no ring reallocated");
        let v = h.to_json();
        let t = floats(&v["t"]);
        assert_eq!(t.len(), cap);
        // the newest 300 samples, oldest first
        let last = 1000.0 + (10 + 10 * cap) as f64 - 1.0;
        assert_eq!(t[cap - 1], Some(last));
        assert_eq!(t[0], Some(last - (cap - 1) as f64));
        for series in [
            &v["services"][0]["conn_rate"],
            &v["dns"]["queries"],
            &v["dns"]["rcode"]["NXDOMAIN"],
        ] {
            assert_eq!(floats(series).len(), cap);
        }
        assert_eq!(floats(&v["services"][0]["conn_rate"])[cap - 1], Some(1.0));
        assert_eq!(floats(&v["dns"]["queries"])[0], Some(3.0));
        assert_eq!(floats(&v["dns"]["rcode"]["NOERROR"])[0], Some(2.0));
        assert_eq!(floats(&v["dns"]["rcode"]["NXDOMAIN"])[0], Some(1.0));
        // the state timeline covers the window, with the down samples
        let tl = v["backends"][0]["timeline"].as_array().unwrap();
        assert_eq!(tl[0]["from_unix"].as_f64(), t[0]);
        assert_eq!(tl.last().unwrap()["until_unix"].as_f64(), t[cap - 1]);
        let downs = tl.iter().filter(|r| r["state"] == "down").count();
        assert!((40..=45).contains(&downs), "{downs} down runs in 300 samples");
    }

    #[test]
    fn series_come_and_go_with_the_configuration_aligned_to_the_samples() {
        let h = History::new(5);
        let t0 = Instant::now();
        run(&h, t0, 0, 2, |_| Reading {
            services: vec![svc("web", 0, vec![be("a", 0, "up")])],
            prefixes: vec![("192.0.2.10/32", "withdrawn")],
            ..Reading::default()
        });
        // a reload adds service "api" with backend "x" (new: counted from 0)
        // and removes prefix 192.0.2.10/32
        run(&h, t0, 2, 2, |i| Reading {
            services: vec![
                svc("web", 0, vec![be("a", 0, "up")]),
                svc("api", 4 * (i - 1), vec![be("x", 10 * (i - 1), "down")]),
            ],
            prefixes: vec![("192.0.2.11/32", "announced")],
            ..Reading::default()
        });
        let v = h.to_json();
        assert_eq!(floats(&v["t"]).len(), 4);
        let api = &v["services"][1];
        assert_eq!(api["name"], "api");
        assert_eq!(floats(&api["conn_rate"]), [None, None, Some(4.0), Some(4.0)]);
        assert_eq!(floats(&api["bytes_rate"]), [None, None, Some(10.0), Some(10.0)]);
        assert_eq!(v["backends"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["backends"][1]["timeline"],
            json!([{ "state": "down", "from_unix": 1002.0, "until_unix": 1003.0 }])
        );
        assert_eq!(
            v["prefixes"],
            json!([{ "prefix": "192.0.2.11/32",
                     "timeline": [{ "state": "announced", "from_unix": 1002.0, "until_unix": 1003.0 }] }])
        );
        // once full, the new series stay aligned with the sample times
        run(&h, t0, 4, 3, |_| Reading {
            services: vec![svc("api", 12, vec![be("x", 30, "up")])],
            ..Reading::default()
        });
        let v = h.to_json();
        assert_eq!(floats(&v["t"]), [1002.0, 1003.0, 1004.0, 1005.0, 1006.0].map(Some));
        assert_eq!(v["services"].as_array().unwrap().len(), 1);
        assert_eq!(
            floats(&v["services"][0]["conn_rate"]),
            [Some(4.0), Some(4.0), Some(4.0), Some(0.0), Some(0.0)]
        );
        assert_eq!(
            v["backends"][0]["timeline"],
            json!([{ "state": "down", "from_unix": 1002.0, "until_unix": 1004.0 },
                   { "state": "up", "from_unix": 1004.0, "until_unix": 1006.0 }])
        );
    }
}
