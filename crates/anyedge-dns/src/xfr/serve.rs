//! Serving transfers: what a request gets ([`plan`]) and the response
//! messages ([`Responder`]), refusals and SOA answers, signed when the
//! request was (RFC 5936, RFC 1995, RFC 8945 4.4).

use std::cmp::Ordering;
use std::sync::Arc;

use domain::base::iana::{Class, Opcode, OptionCode, Rcode, Rtype};
use domain::base::message_builder::{AdditionalBuilder, MessageBuilder, PushError, TreeCompressor};
use domain::base::name::{Name, ToName};
use domain::base::wire::Composer;
use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{Key, ServerSequence};

use super::records::zone_soa_ref;
use super::{
    malformed, push_err, serial_cmp, soa_record, wire_record, zone_soa, Diff, Journal, OptReply, RecRef, Rr, XfrError,
    XfrRequest, T_IXFR,
};
use crate::zone::{Zone, T_SOA};

fn push_opt<T: Composer>(add: &mut AdditionalBuilder<T>, opt: Option<&OptReply>) -> Result<(), XfrError> {
    let Some(o) = opt else { return Ok(()) };
    add.opt(|b| {
        b.set_udp_payload_size(o.udp_size);
        b.set_dnssec_ok(o.dnssec_ok);
        for (code, data) in &o.options {
            let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
            b.push_raw_option(OptionCode::from_int(*code), len, |t| {
                t.append_slice(&data[..usize::from(len)])
            })?;
        }
        Ok(())
    })
    .map_err(push_err)
}

/// What a transfer request gets.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The whole zone (also the answer to an IXFR the journal cannot serve).
    Axfr(Arc<Zone>),
    /// The differences from the client's version to ours.
    Ixfr { zone: Arc<Zone>, diffs: Vec<Arc<Diff>> },
    /// The client is current: our SOA only.
    UpToDate(Arc<Zone>),
}

impl Plan {
    pub fn kind(&self) -> &'static str {
        match self {
            Plan::Axfr(_) => "AXFR",
            Plan::Ixfr { .. } => "IXFR",
            Plan::UpToDate(_) => "up-to-date",
        }
    }
    pub fn zone(&self) -> &Arc<Zone> {
        match self {
            Plan::Axfr(z) | Plan::UpToDate(z) | Plan::Ixfr { zone: z, .. } => z,
        }
    }
}

/// Decides the response to `req` for `zone` (RFC 1995 4: a client at our
/// serial or newer gets our SOA; one the journal cannot bring up to date
/// gets the whole zone).
pub fn plan(req: &XfrRequest, zone: Arc<Zone>, journal: Option<&Journal>) -> Plan {
    let Some(client) = req.client_serial.filter(|_| req.qtype == T_IXFR) else {
        return Plan::Axfr(zone);
    };
    match serial_cmp(client, zone.serial) {
        Some(Ordering::Equal | Ordering::Greater) => Plan::UpToDate(zone),
        Some(Ordering::Less) => match journal.and_then(|j| j.chain(client, zone.serial)) {
            Some(diffs) => Plan::Ixfr { zone, diffs },
            None => Plan::Axfr(zone),
        },
        None => Plan::Axfr(zone),
    }
}

type RecIter<'a> = Box<dyn Iterator<Item = RecRef<'a>> + Send + 'a>;

fn plan_records(plan: &Plan) -> Result<RecIter<'_>, XfrError> {
    let soa = zone_soa_ref(plan.zone()).ok_or_else(|| XfrError::Zone("no SOA".into()))?;
    Ok(match plan {
        Plan::UpToDate(_) => Box::new(std::iter::once(soa)),
        Plan::Axfr(z) => {
            let body = z
                .iter_records()
                .into_iter()
                .filter(|(_, s)| s.rtype != T_SOA)
                .flat_map(|(owner, s)| {
                    s.rdata.iter().map(move |rd| RecRef {
                        owner,
                        rtype: s.rtype,
                        ttl: s.ttl,
                        rdata: &rd.wire,
                    })
                });
            Box::new(std::iter::once(soa).chain(body).chain(std::iter::once(soa)))
        }
        Plan::Ixfr { diffs, .. } => {
            let body = diffs.iter().flat_map(|d| {
                std::iter::once(d.old_soa.as_ref())
                    .chain(d.removed.iter().map(Rr::as_ref))
                    .chain(std::iter::once(d.new_soa.as_ref()))
                    .chain(d.added.iter().map(Rr::as_ref))
            });
            Box::new(std::iter::once(soa).chain(body).chain(std::iter::once(soa)))
        }
    })
}

/// Writes the response messages of a [`Plan`], one per call.
pub struct Responder<'a> {
    id: u16,
    rd: bool,
    qname: Box<[u8]>,
    qtype: u16,
    recs: RecIter<'a>,
    pending: Option<RecRef<'a>>,
    max_len: usize,
    opt: Option<OptReply>,
    done: bool,
    /// Messages and records written so far.
    pub messages: usize,
    pub records: usize,
}

impl<'a> Responder<'a> {
    /// `query`: the request (its ID, RD bit and question are echoed).
    /// `max_len`: soft limit per message (a single larger record still goes
    /// out alone, up to 65535 octets).
    pub fn new<Octs>(query: &Message<Octs>, plan: &'a Plan, max_len: usize) -> Result<Responder<'a>, XfrError>
    where
        Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
    {
        let q = query.sole_question().map_err(malformed)?;
        Ok(Responder {
            id: query.header().id(),
            rd: query.header().rd(),
            qname: q.qname().to_vec().into_octets().into_boxed_slice(),
            qtype: q.qtype().to_int(),
            recs: plan_records(plan)?,
            pending: None,
            max_len: max_len.clamp(512, 65535),
            opt: None,
            done: false,
            messages: 0,
            records: 0,
        })
    }

    /// Puts this OPT record in every message (the request had EDNS).
    pub fn with_opt(mut self, opt: Option<OptReply>) -> Responder<'a> {
        self.opt = opt;
        self
    }

    /// The next message, signed with `tsig` if given; `None` after the last.
    pub fn next_message<K: AsRef<Key>>(
        &mut self,
        tsig: Option<&mut ServerSequence<K>>,
        now: Time48,
    ) -> Result<Option<Vec<u8>>, XfrError> {
        if self.done {
            return Ok(None);
        }
        let reserve = tsig.as_ref().map_or(0, |t| usize::from(t.key().compose_len()))
            + self.opt.as_ref().map_or(0, OptReply::wire_len);
        let mut mb = MessageBuilder::from_target(TreeCompressor::new(Vec::with_capacity(self.max_len)))
            .map_err(|_| XfrError::RecordTooLong)?;
        {
            let h = mb.header_mut();
            h.set_id(self.id);
            h.set_qr(true);
            h.set_aa(true);
            h.set_opcode(Opcode::QUERY);
            h.set_rd(self.rd);
            h.set_rcode(Rcode::NOERROR);
        }
        let mut qb = mb.question();
        if self.messages == 0 {
            let qn = Name::from_slice(&self.qname).map_err(malformed)?;
            qb.push((qn, Rtype::from_int(self.qtype), Class::IN))
                .map_err(push_err)?;
        }
        let mut ab = qb.answer();
        ab.set_push_limit(self.max_len.saturating_sub(reserve));
        let mut n = 0usize;
        loop {
            let Some(r) = self.pending.take().or_else(|| self.recs.next()) else {
                self.done = true;
                break;
            };
            let rec = wire_record(r.owner, Rtype::from_int(r.rtype), r.ttl, r.rdata)?;
            match ab.push(&rec) {
                Ok(()) => n += 1,
                Err(PushError::LimitExceeded | PushError::ShortBuf) if n > 0 => {
                    self.pending = Some(r);
                    break;
                }
                Err(PushError::LimitExceeded) => {
                    // alone in its message: up to the protocol limit
                    ab.set_push_limit(65535usize.saturating_sub(reserve));
                    ab.push(&rec).map_err(push_err)?;
                    ab.set_push_limit(self.max_len.saturating_sub(reserve));
                    n += 1;
                }
                Err(e) => return Err(push_err(e)),
            }
        }
        if n == 0 && self.messages > 0 {
            return Ok(None);
        }
        let mut add: AdditionalBuilder<TreeCompressor<Vec<u8>>> = ab.additional();
        add.clear_push_limit();
        close_additional(&mut add, self.opt.as_ref(), tsig, now)?;
        self.messages += 1;
        self.records += n;
        Ok(Some(add.finish().into_target()))
    }
}

/// A reply with only header, question and `rcode` (and the TSIG record
/// when the request was validly signed), e.g. REFUSED to a transfer or the
/// response to a NOTIFY. `aa`: the AA bit (set for NOTIFY responses).
pub fn reply<Octs, K>(
    query: &Message<Octs>,
    rcode: u8,
    aa: bool,
    opt: Option<&OptReply>,
    tsig: Option<&mut ServerSequence<K>>,
    now: Time48,
) -> Result<Vec<u8>, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
    K: AsRef<Key>,
{
    respond(query, Rcode::masked_from_int(rcode), aa, None, opt, tsig, now)
}

/// The answer to an SOA query for the apex of `zone` (authoritative, the
/// SOA in the answer section), signed with `tsig` if given: what a
/// secondary asks before transferring, often TSIG-signed.
pub fn soa_response<Octs, K>(
    query: &Message<Octs>,
    zone: &Zone,
    opt: Option<&OptReply>,
    tsig: Option<&mut ServerSequence<K>>,
    now: Time48,
) -> Result<Vec<u8>, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
    K: AsRef<Key>,
{
    let soa = zone_soa(zone).ok_or_else(|| XfrError::Zone("no SOA".into()))?;
    respond(query, Rcode::NOERROR, true, Some(&soa), opt, tsig, now)
}

/// A response echoing `query`'s question, with `soa` (if any) in the
/// answer section, then [`close_additional`].
fn respond<Octs, K>(
    query: &Message<Octs>,
    rcode: Rcode,
    aa: bool,
    soa: Option<&Rr>,
    opt: Option<&OptReply>,
    tsig: Option<&mut ServerSequence<K>>,
    now: Time48,
) -> Result<Vec<u8>, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
    K: AsRef<Key>,
{
    let mut mb = MessageBuilder::new_vec();
    mb.header_mut().set_aa(aa);
    let mut ab = mb.start_answer(query, rcode).map_err(push_err)?;
    if let Some(s) = soa {
        ab.push(soa_record(s)?).map_err(push_err)?;
    }
    let mut add = ab.additional();
    close_additional(&mut add, opt, tsig, now)?;
    Ok(add.finish())
}

/// The end of every response: the OPT record (when the request had one),
/// then the TSIG record (when the request was signed).
fn close_additional<T: Composer, K: AsRef<Key>>(
    add: &mut AdditionalBuilder<T>,
    opt: Option<&OptReply>,
    tsig: Option<&mut ServerSequence<K>>,
    now: Time48,
) -> Result<(), XfrError> {
    push_opt(add, opt)?;
    if let Some(t) = tsig {
        t.answer(add, now).map_err(push_err)?;
    }
    Ok(())
}
