//! Serving zone transfers over TCP, and the signed SOA answer a
//! secondary asks for first.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyedge_dns::answer::{RCODE_FORMERR, RCODE_NOTAUTH, RCODE_REFUSED, RCODE_SERVFAIL};
use anyedge_dns::xfr::{self, OptReply, Plan, Responder, Signed};
use domain::base::Message;
use tokio::io::AsyncWrite;
use tracing::{error, info, warn};

use super::tsig::{check_tsig, key_store, ServerSeq};
use super::{find_zone, formerr, opt_reply, refusal, time48, write_msg};
use crate::dns::Dns;

/// A TSIG-signed SOA query for one of our zones (a secondary checking our
/// serial; `answer` refuses signed queries with NOTAUTH): verified and
/// answered with the SOA, signed. Returns false, leaving `out` alone, for
/// anything else.
pub(in crate::dns) fn signed_soa(dns: &Dns, q: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
    let Ok(parsed) = anyedge_dns::answer::parse(q) else {
        return false;
    };
    if parsed.tsig_at.is_none() || parsed.qtype != anyedge_dns::zone::T_SOA || parsed.qclass != 1 {
        return false;
    }
    let apex = anyedge_dns::name::lower(parsed.qname);
    let Some(zone) = dns.zones.load().get(&apex).cloned() else {
        return false;
    };
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return false;
    };
    let cfg = dns.cfg.load();
    let store = key_store(&cfg, find_zone(&cfg, &apex));
    match xfr::verify_request(&mut msg, &store, time48()) {
        Signed::Valid(mut seq) => match xfr::soa_response(
            &msg,
            &zone,
            opt_reply(dns, &msg, src.ip()).as_ref(),
            Some(&mut *seq),
            time48(),
        ) {
            Ok(r) => {
                *out = r;
                true
            }
            Err(_) => false,
        },
        Signed::Invalid(resp, why) => {
            if let Some(s) = dns.xfr.log_refused.allow() {
                warn!(%src, zone = %zone.name(), %why, suppressed = s, "dns: signed SOA query refused: bad TSIG");
            }
            *out = resp;
            true
        }
        Signed::Unsigned => false,
    }
}

pub(super) enum Prepared {
    /// Send this one message (refusal, error).
    Reply(Vec<u8>),
    Serve {
        msg: Message<Vec<u8>>,
        plan: Plan,
        seq: Option<ServerSeq>,
        opt: Option<OptReply>,
        name: String,
    },
}

/// Decides whether and what to transfer (no I/O).
pub(super) fn prepare(dns: &Dns, q: &[u8], peer: SocketAddr) -> Prepared {
    let Ok(mut msg) = Message::from_octets(q.to_vec()) else {
        return Prepared::Reply(Vec::new());
    };
    let opt = opt_reply(dns, &msg, peer.ip());
    let req = match xfr::parse_request(&msg) {
        Ok(r) => r,
        Err(_) => {
            return Prepared::Reply(formerr(&msg, opt.as_ref()));
        }
    };
    let zname = anyedge_dns::name::display(&req.apex);
    let cfg = dns.cfg.load();
    let zc = find_zone(&cfg, &req.apex);
    let mut seq = match check_tsig(&mut msg, &cfg, zc) {
        Ok(s) => s,
        Err((resp, why)) => {
            if let Some(s) = dns.xfr.log_refused.allow() {
                warn!(%peer, zone = %zname, kind = %req.kind(), %why, suppressed = s, "dns: transfer refused: bad TSIG");
            }
            return Prepared::Reply(resp);
        }
    };
    let signed = seq.is_some();
    let mut refuse = |rcode: u8, why: &str| {
        if let Some(s) = dns.xfr.log_refused.allow() {
            warn!(%peer, zone = %zname, kind = %req.kind(), reason = why, suppressed = s, "dns: transfer refused");
        }
        Prepared::Reply(refusal(&msg, rcode, opt.as_ref(), seq.as_deref_mut()))
    };
    let Some(zc) = zc else {
        return refuse(RCODE_NOTAUTH, "not a zone of ours");
    };
    if req.qclass != 1 {
        return refuse(RCODE_REFUSED, "class is not IN");
    }
    if !zc.allow_transfer.iter().any(|n| n.contains(&peer.ip())) {
        return refuse(RCODE_REFUSED, "client not in allow_transfer");
    }
    if zc.key.is_some() && !signed {
        return refuse(RCODE_REFUSED, "unsigned; the zone requires its TSIG key");
    }
    if req.qtype == xfr::T_IXFR && req.client_serial.is_none() {
        return refuse(RCODE_FORMERR, "IXFR without the client's SOA (RFC 1995 3)");
    }
    let Some(zone) = dns.zones.load().get(&req.apex).cloned() else {
        return refuse(RCODE_SERVFAIL, "zone not loaded (not transferred yet, or expired)");
    };
    let plan = match dns.xfr.journals.lock() {
        Ok(j) => xfr::plan(&req, zone, j.get(&req.apex)),
        Err(_) => xfr::plan(&req, zone, None),
    };
    Prepared::Serve {
        msg,
        plan,
        seq,
        opt,
        name: zc.name.clone(),
    }
}

/// Serves one AXFR/IXFR request on a TCP connection (after the responses
/// to earlier queries were written). An error means: close the connection.
pub(in crate::dns) async fn serve_transfer<W: AsyncWrite + Unpin>(
    dns: &Dns,
    q: &[u8],
    peer: SocketAddr,
    wr: &mut W,
) -> std::io::Result<()> {
    let t = Instant::now();
    let (msg, plan, mut seq, opt, name) = match prepare(dns, q, peer) {
        Prepared::Reply(r) if r.is_empty() => return Ok(()),
        Prepared::Reply(r) => {
            dns.xfr.refused_out.fetch_add(1, Ordering::Relaxed);
            return write_msg(wr, &r).await;
        }
        Prepared::Serve {
            msg,
            plan,
            seq,
            opt,
            name,
        } => (msg, plan, seq, opt, name),
    };
    let mut r = Responder::new(&msg, &plan, xfr::MAX_MESSAGE)
        .map_err(std::io::Error::other)?
        .with_opt(opt);
    loop {
        match r.next_message(seq.as_deref_mut(), time48()) {
            Ok(Some(m)) => write_msg(wr, &m).await?,
            Ok(None) => break,
            Err(e) => {
                error!(zone = %name, %peer, error = %e, "dns: transfer out failed");
                return Err(std::io::Error::other(e));
            }
        }
    }
    info!(
        zone = %name,
        %peer,
        kind = %plan.kind(),
        serial = plan.zone().serial,
        messages = r.messages,
        records = r.records,
        signed = seq.is_some(),
        took = ?t.elapsed(),
        "zone transfer served"
    );
    dns.xfr.served_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
