//! Zone transfers and NOTIFY around the sans-IO core in
//! `anyedge_dns::xfr`.
//!
//! - Secondary zones: one task per zone keeps it current. It follows the
//!   SOA timers ([`Refresh`](anyedge_dns::xfr::Refresh): refresh, retry, expire), asks the primaries
//!   (in order) for their SOA over TCP, pulls an IXFR when their serial is
//!   newer (AXFR when the primary cannot send differences, or when we have
//!   nothing yet), verifies TSIG on every message when the zone has a key,
//!   and installs the new version. A NOTIFY from one of the zone's
//!   primaries makes the check due at once. When the zone expires it is
//!   withdrawn (queries for it are refused) until a transfer succeeds.
//! - Serving transfers (TCP): to clients in `allow_transfer`, signed with
//!   the zone's key when it has one (unsigned: REFUSED; a bad signature:
//!   NOTAUTH with the TSIG error). IXFR is answered from a bounded journal
//!   of differences, else with the whole zone.
//! - File zones whose serial changes on reload get a journal entry (the
//!   difference between the two versions) and a NOTIFY (UDP, retried,
//!   signed with the zone's key) to each `notify` address.
//!
//! Here: the transfer state, start and reload, and what the parts share
//! (the request's OPT, message framing). `secondary` (refresh tasks and
//! transfers in), `serve` (transfers out, signed SOA answers), `notify`
//! (NOTIFY in and out), `journal` (differences for IXFR, change
//! propagation), `tsig` (keys and request signatures).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyedge_dns::answer::RCODE_FORMERR;
use anyedge_dns::xfr::{self, Journal, OptReply, Timers};
use anyedge_dns::zone::{Zone, ZoneSet};
use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{Key, ServerSequence};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tracing::error;

use super::{domain_wire, Dns};
use crate::config::{DnsConfig, TsigKey, ZoneConfig};
use crate::logutil::LogLimiter;

/// Reading or writing one transfer message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Transfer state of the DNS server (one per [`Dns`]).
pub(super) struct Xfr {
    me: OnceLock<Weak<Dns>>,
    rt: OnceLock<tokio::runtime::Handle>,
    secondaries: Mutex<HashMap<String, Secondary>>,
    journals: Mutex<HashMap<Box<[u8]>, Journal>>,
    changes: OnceLock<mpsc::UnboundedSender<Change>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    log_refused: LogLimiter,
    log_notify: LogLimiter,
    /// Transfers in, by kind.
    pub(super) axfr_in: AtomicU64,
    pub(super) ixfr_in: AtomicU64,
    /// Transfers served, and requests refused (policy or TSIG).
    pub(super) served_out: AtomicU64,
    pub(super) refused_out: AtomicU64,
}

/// The task keeping one secondary zone current.
struct Secondary {
    zc: ZoneConfig,
    key: Option<TsigKey>,
    kick: Arc<Notify>,
    /// The version the task installed last: put back if a reload raced it.
    last: Arc<Mutex<Option<Arc<Zone>>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A zone changed (file reload, transfer in) or was loaded (start): a
/// journal entry when `old` is given, NOTIFY to `notify`.
struct Change {
    name: String,
    apex: Box<[u8]>,
    old: Option<Arc<Zone>>,
    new: Arc<Zone>,
    notify: Vec<SocketAddr>,
    key: Option<Arc<Key>>,
}

impl Xfr {
    pub(super) fn new() -> Xfr {
        Xfr {
            me: OnceLock::new(),
            rt: OnceLock::new(),
            secondaries: Mutex::new(HashMap::new()),
            journals: Mutex::new(HashMap::new()),
            changes: OnceLock::new(),
            worker: Mutex::new(None),
            log_refused: LogLimiter::new(5),
            log_notify: LogLimiter::new(5),
            axfr_in: AtomicU64::new(0),
            ixfr_in: AtomicU64::new(0),
            served_out: AtomicU64::new(0),
            refused_out: AtomicU64::new(0),
        }
    }

    /// Stops the secondary tasks and the NOTIFY sender.
    pub(super) fn stop(&self) {
        if let Ok(mut m) = self.secondaries.lock() {
            for (_, s) in m.drain() {
                s.task.abort();
            }
        }
        if let Ok(mut w) = self.worker.lock() {
            if let Some(h) = w.take() {
                h.abort();
            }
        }
    }

    fn spawn<F>(&self, f: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.rt.get() {
            Some(rt) => Some(rt.spawn(f)),
            None => {
                error!("dns: zone transfer tasks need a runtime; not started");
                None
            }
        }
    }
}

fn time48() -> Time48 {
    Time48::from_u64(crate::dns::unix_secs())
}

fn random_id() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() as u16
}

/// FORMERR to a request that does not parse.
fn formerr(msg: &Message<Vec<u8>>, opt: Option<&OptReply>) -> Vec<u8> {
    refusal(msg, RCODE_FORMERR, opt, None)
}

/// A refusal of a transfer or NOTIFY request with `rcode` (signed when the
/// request was); empty if it cannot be built.
fn refusal(
    msg: &Message<Vec<u8>>,
    rcode: u8,
    opt: Option<&OptReply>,
    seq: Option<&mut ServerSequence<Arc<Key>>>,
) -> Vec<u8> {
    xfr::reply(msg, rcode, false, opt, seq, time48()).unwrap_or_default()
}

fn find_zone<'c>(cfg: &'c DnsConfig, apex: &[u8]) -> Option<&'c ZoneConfig> {
    cfg.zones.iter().find(|z| domain_wire(&z.name) == apex)
}

/// The OPT record of our response, as `answer` writes it: our UDP size,
/// DO echoed, NSID when asked for (and configured), a server cookie when
/// the client sent a cookie (and cookies are on). `None` without EDNS.
fn opt_reply(dns: &Dns, msg: &Message<Vec<u8>>, src: IpAddr) -> Option<OptReply> {
    const NSID: u16 = 3;
    const COOKIE: u16 = 10;
    let e = xfr::request_edns(msg)?;
    let st = dns.settings.load();
    let mut options = Vec::new();
    if let (true, Some(n)) = (e.options.iter().any(|(c, _)| *c == NSID), &st.nsid) {
        options.push((NSID, n[..n.len().min(32)].to_vec()));
    }
    if let (Some((_, c)), Some(s)) = (e.options.iter().find(|(c, _)| *c == COOKIE), &st.cookies) {
        if c.len() >= 8 {
            let mut v = c[..8].to_vec();
            v.extend_from_slice(&anyedge_dns::cookie::make(s, &c[..8], src, super::unix_now()));
            options.push((COOKIE, v));
        }
    }
    Some(OptReply {
        udp_size: st.udp_max.max(512),
        dnssec_ok: e.dnssec_ok,
        options,
    })
}

pub(super) fn soa_timers(z: &Zone) -> Option<Timers> {
    Timers::from_soa(&z.soa()?.rdata.first()?.wire)
}

// ---------------------------------------------------------------------------
// Start, reload, stop

/// Starts the secondary tasks and the NOTIFY sender, and announces the
/// loaded file zones to their `notify` addresses.
pub(super) fn start(dns: &Arc<Dns>) {
    let x = &dns.xfr;
    let _ = x.me.set(Arc::downgrade(dns));
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            let _ = x.rt.set(h);
        }
        Err(_) => {
            error!("dns: no tokio runtime: zone transfers and NOTIFY are disabled");
            return;
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = x.changes.set(tx);
    let worker = x.spawn(change_worker(Arc::downgrade(dns), rx));
    if let Ok(mut w) = x.worker.lock() {
        *w = worker;
    }
    let cfg = dns.cfg.load_full();
    reconcile(dns, &cfg);
    queue_changes(dns, &cfg, None);
}

/// After `Dns::reload` (or `reload_zone`): secondaries follow the new
/// configuration, file zones whose version changed get a journal entry and
/// a NOTIFY.
pub(super) fn reloaded(dns: &Dns, old: &ZoneSet) {
    let Some(me) = dns.xfr.me.get().and_then(Weak::upgrade) else {
        return;
    };
    let cfg = dns.cfg.load_full();
    reconcile(&me, &cfg);
    // a transfer that finished while the reload built its zone set
    if let Ok(m) = dns.xfr.secondaries.lock() {
        for s in m.values() {
            let last = s.last.lock().ok().and_then(|l| l.clone());
            if let Some(z) = last {
                let cur = dns.zones.load().get(&z.apex).cloned();
                if !cur.is_some_and(|c| Arc::ptr_eq(&c, &z)) {
                    dns.install(z);
                }
            }
        }
    }
    queue_changes(dns, &cfg, Some(old));
    // journals of zones no longer configured
    if let Ok(mut j) = dns.xfr.journals.lock() {
        j.retain(|apex, _| find_zone(&cfg, apex).is_some());
    }
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, m: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(m.len()).map_err(|_| std::io::Error::other("message longer than 65535"))?;
    let mut buf = Vec::with_capacity(m.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(m);
    match tokio::time::timeout(MESSAGE_TIMEOUT, w.write_all(&buf)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    }
}

use journal::{change_worker, queue_changes};
use secondary::reconcile;

mod journal;
mod notify;
mod secondary;
mod serve;
#[cfg(test)]
mod tests;
mod tsig;

pub(super) use notify::notify;
pub(super) use serve::{serve_transfer, signed_soa};
