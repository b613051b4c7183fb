//! NOTIFY: received (from a secondary zone's primaries: refresh now) and
//! sent (to a file zone's `notify` addresses, retried).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyedge_dns::answer::{RCODE_NOERROR, RCODE_NOTAUTH, RCODE_REFUSED, RCODE_SERVFAIL};
use anyedge_dns::xfr::{self, Rr};
use domain::base::Message;
use domain::tsig::{Key, ServerSequence};
use tracing::{debug, error, info, warn};

use super::tsig::check_tsig;
use super::{find_zone, formerr, opt_reply, random_id, refusal, time48};
use crate::config::ZoneSource;
use crate::dns::Dns;

/// Waiting for a NOTIFY response, per attempt.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
const NOTIFY_ATTEMPTS: u32 = 5;

/// A NOTIFY received on UDP or TCP (`answer` said [`Special::Notify`]):
/// accepted from one of the zone's primaries (signed with the zone's key if
/// it has one), it makes a refresh due at once. `out`: the response.
///
/// [`Special::Notify`]: anyedge_dns::answer::Special::Notify
pub(in crate::dns) fn notify(dns: &Dns, q: &[u8], src: SocketAddr, out: &mut Vec<u8>) {
    out.clear();
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return;
    };
    let opt = opt_reply(dns, &msg, src.ip());
    let req = match xfr::parse_notify(&msg) {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = dns.xfr.log_notify.allow() {
                debug!(%src, error = %e, suppressed = s, "dns: malformed NOTIFY");
            }
            *out = formerr(&msg, opt.as_ref());
            return;
        }
    };
    let cfg = dns.cfg.load();
    let zc = find_zone(&cfg, &req.apex);
    let mut seq = match check_tsig(&mut msg, &cfg, zc) {
        Ok(s) => s,
        Err((resp, why)) => {
            if let Some(s) = dns.xfr.log_notify.allow() {
                warn!(%src, zone = %anyedge_dns::name::display(&req.apex), %why, suppressed = s, "dns: NOTIFY refused: bad TSIG");
            }
            *out = resp;
            return;
        }
    };
    let refuse = |rcode: u8, why: &str, seq: Option<&mut ServerSequence<Arc<Key>>>, out: &mut Vec<u8>| {
        if let Some(s) = dns.xfr.log_notify.allow() {
            warn!(%src, zone = %anyedge_dns::name::display(&req.apex), reason = why, suppressed = s, "dns: NOTIFY refused");
        }
        *out = refusal(&msg, rcode, opt.as_ref(), seq);
    };
    let Some(zc) = zc else {
        return refuse(RCODE_NOTAUTH, "not a zone of ours", seq.as_deref_mut(), out);
    };
    let ZoneSource::Secondary { primaries } = &zc.source else {
        return refuse(
            RCODE_REFUSED,
            "we are the primary of this zone",
            seq.as_deref_mut(),
            out,
        );
    };
    if !primaries.iter().any(|p| p.ip() == src.ip()) {
        return refuse(
            RCODE_REFUSED,
            "not from one of the zone's primaries",
            seq.as_deref_mut(),
            out,
        );
    }
    if zc.key.is_some() && seq.is_none() {
        return refuse(
            RCODE_REFUSED,
            "unsigned; the zone requires its TSIG key",
            seq.as_deref_mut(),
            out,
        );
    }
    let kicked = dns
        .xfr
        .secondaries
        .lock()
        .ok()
        .and_then(|m| m.get(&zc.name).map(|s| s.kick.clone()));
    match kicked {
        Some(k) => k.notify_one(),
        None => {
            return refuse(
                RCODE_SERVFAIL,
                "zone transfer task not running",
                seq.as_deref_mut(),
                out,
            )
        }
    }
    info!(zone = %zc.name, from = %src, serial = ?req.serial, "NOTIFY received; refreshing");
    *out = xfr::reply(&msg, RCODE_NOERROR, true, opt.as_ref(), seq.as_deref_mut(), time48()).unwrap_or_default();
}

/// Sends a NOTIFY until it is acknowledged or the attempts run out.
pub(super) async fn send_notify(name: &str, apex: &[u8], soa: &Rr, target: SocketAddr, key: Option<Arc<Key>>) {
    let serial = soa.soa_serial().unwrap_or(0);
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(zone = %name, %target, error = %e, "dns: NOTIFY not sent: cannot open a socket");
            return;
        }
    };
    let mut last = String::from("no response");
    let mut buf = vec![0u8; 4096];
    for attempt in 1..=NOTIFY_ATTEMPTS {
        let id = random_id();
        let (msg, seq) = match xfr::build_notify(id, apex, Some(soa), key.clone(), time48()) {
            Ok(m) => m,
            Err(e) => {
                error!(zone = %name, error = %e, "dns: cannot build NOTIFY");
                return;
            }
        };
        if let Err(e) = sock.send_to(&msg, target).await {
            last = e.to_string();
        } else {
            let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT * attempt;
            let mut seq = seq;
            loop {
                let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                let (n, from) = match r {
                    Err(_) => break,
                    Ok(Err(e)) => {
                        last = e.to_string();
                        break;
                    }
                    Ok(Ok(x)) => x,
                };
                if from != target || n < 12 || buf[..2] != id.to_be_bytes() {
                    continue; // not the answer to this attempt
                }
                match xfr::check_notify_response(buf[..n].to_vec(), id, seq.take(), time48()) {
                    Ok(()) => {
                        info!(zone = %name, %target, serial, attempt, "NOTIFY acknowledged");
                        return;
                    }
                    Err(e) => {
                        last = e.to_string();
                        break;
                    }
                }
            }
        }
    }
    warn!(zone = %name, %target, serial, attempts = NOTIFY_ATTEMPTS, last_error = %last, "dns: NOTIFY not acknowledged");
}
