//! Zone transfers and NOTIFY, without I/O.
//!
//! - Serving: [`plan`] decides what a transfer request gets (AXFR, the
//!   IXFR difference sequence from a [`Journal`], or "up to date"), and a
//!   [`Responder`] turns that into DNS messages of at most a given size, one
//!   at a time, each signed when the request was (RFC 5936, RFC 1995,
//!   RFC 8945 4.4 for multi-message TSIG).
//! - Receiving: a [`Receiver`] is fed the messages of an AXFR or IXFR
//!   response stream and ends with a new [`Zone`] (built with
//!   [`ZoneBuilder`], or the current zone with the IXFR differences applied).
//! - [`diff`] computes the RFC 1995 (condensed) difference of two snapshots;
//!   the [`Journal`] keeps a bounded chain of them.
//! - NOTIFY (RFC 1996) requests and responses, SOA serial arithmetic
//!   (RFC 1982), and [`Refresh`], the refresh/retry/expire timing of a
//!   secondary zone as a state machine driven by the caller's clock.
//!
//! TSIG is NLnet Labs' `domain::tsig`; the caller passes the time in.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use domain::base::iana::OptionCode;
use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::message_builder::{AdditionalBuilder, MessageBuilder, PushError, TreeCompressor};
use domain::base::name::{Name, ParsedName, ToName};
use domain::base::rdata::{ComposeRecordData, UnknownRecordData};
use domain::base::wire::Composer;
use domain::base::{Message, ParsedRecord, Ttl};
use domain::rdata::tsig::Time48;
use domain::rdata::AllRecordData;
use domain::tsig::{ClientSequence, Key, KeyStore, ServerSequence};

use crate::name;
pub use crate::zone::soa_fields;
use crate::zone::{Zone, ZoneBuilder, T_SOA};

pub const T_IXFR: u16 = 251;
pub const T_AXFR: u16 = 252;

/// Default largest transfer message (RFC 5936 leaves it to us; 16 KiB keeps
/// TCP writes and the receiver's buffers small).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Why a transfer, a NOTIFY or a message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfrError {
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer answered with this RCODE.
    #[error("answered {}", rcode_name(*.0))]
    Rcode(u8),
    #[error("TSIG: {0}")]
    Tsig(String),
    /// The response stream does not follow RFC 5936 / RFC 1995.
    #[error("{0}")]
    Protocol(String),
    /// The IXFR does not apply to our version: fall back to AXFR.
    #[error("IXFR does not apply: {0}")]
    Ixfr(String),
    /// The transferred records do not make a valid zone.
    #[error("transferred zone is invalid: {0}")]
    Zone(String),
    #[error("transfer exceeds {0} records")]
    TooLarge(usize),
    #[error("a record does not fit in a message")]
    RecordTooLong,
}

/// The mnemonic of an RCODE (for logs and errors).
pub fn rcode_name(rcode: u8) -> String {
    let r = Rcode::masked_from_int(rcode);
    match r.to_mnemonic_str() {
        Some(s) => s.to_string(),
        None => format!("RCODE{rcode}"),
    }
}

fn malformed(e: impl std::fmt::Display) -> XfrError {
    XfrError::Malformed(e.to_string())
}

/// A record (class IN) in the form a message builder pushes.
type WireRecord<'a> = (&'a Name<[u8]>, Class, Ttl, UnknownRecordData<&'a [u8]>);

fn wire_record<'a>(owner: &'a [u8], rtype: Rtype, ttl: u32, rdata: &'a [u8]) -> Result<WireRecord<'a>, XfrError> {
    let owner = Name::from_slice(owner).map_err(malformed)?;
    let data = UnknownRecordData::from_octets(rtype, rdata).map_err(malformed)?;
    Ok((owner, Class::IN, Ttl::from_secs(ttl), data))
}

/// `s` as an SOA record to push.
fn soa_record(s: &Rr) -> Result<WireRecord<'_>, XfrError> {
    wire_record(&s.owner, Rtype::SOA, s.ttl, &s.rdata)
}

fn push_err(e: PushError) -> XfrError {
    match e {
        PushError::CountOverflow => XfrError::Malformed("too many records in one message".into()),
        PushError::ShortBuf | PushError::LimitExceeded => XfrError::RecordTooLong,
    }
}

// ---------------------------------------------------------------------------
// RFC 1982 serial number arithmetic

/// Compares two SOA serials (RFC 1982 3.2). `None` when they are exactly
/// 2^31 apart, where the order is undefined.
pub fn serial_cmp(a: u32, b: u32) -> Option<Ordering> {
    if a == b {
        return Some(Ordering::Equal);
    }
    let d = b.wrapping_sub(a);
    match d.cmp(&(1u32 << 31)) {
        Ordering::Less => Some(Ordering::Less),
        Ordering::Greater => Some(Ordering::Greater),
        Ordering::Equal => None,
    }
}

/// Is serial `a` newer than `b`?
pub fn serial_gt(a: u32, b: u32) -> bool {
    serial_cmp(a, b) == Some(Ordering::Greater)
}

// ---------------------------------------------------------------------------
// Records and differences

/// One record, owned: owner (uncompressed wire, case as received), type,
/// TTL and uncompressed wire rdata. Class IN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rr {
    pub owner: Box<[u8]>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Box<[u8]>,
}

/// A record borrowed from a zone or a difference.
#[derive(Clone, Copy, Debug)]
pub struct RecRef<'a> {
    pub owner: &'a [u8],
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

impl Rr {
    pub fn as_ref(&self) -> RecRef<'_> {
        RecRef {
            owner: &self.owner,
            rtype: self.rtype,
            ttl: self.ttl,
            rdata: &self.rdata,
        }
    }

    /// The serial, if this is an SOA record.
    pub fn soa_serial(&self) -> Option<u32> {
        if self.rtype != T_SOA {
            return None;
        }
        soa_fields(&self.rdata).map(|f| f[0])
    }

    /// Identity for IXFR deletions: owner (case-insensitive), type, rdata;
    /// not the TTL.
    fn key(&self) -> RrKey {
        (name::lower(&self.owner), self.rtype, self.rdata.clone())
    }
}

type RrKey = (Box<[u8]>, u16, Box<[u8]>);

/// The zone's SOA record.
pub fn zone_soa(z: &Zone) -> Option<Rr> {
    let apex = z.apex_node()?;
    let soa = apex.get(T_SOA)?;
    let rd = soa.rdata.first()?;
    Some(Rr {
        owner: apex.owner(&z.apex).into(),
        rtype: T_SOA,
        ttl: soa.ttl,
        rdata: rd.wire.clone(),
    })
}

/// One RFC 1995 difference: the records to delete from the version with
/// `old_soa` and to add, giving the version with `new_soa`. SOA records are
/// only the version markers, never in `removed`/`added`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    pub old_soa: Rr,
    pub new_soa: Rr,
    pub removed: Vec<Rr>,
    pub added: Vec<Rr>,
}

impl Diff {
    pub fn from_serial(&self) -> u32 {
        self.old_soa.soa_serial().unwrap_or(0)
    }
    pub fn to_serial(&self) -> u32 {
        self.new_soa.soa_serial().unwrap_or(0)
    }
    /// Records in its IXFR form (both SOAs included).
    pub fn records(&self) -> usize {
        self.removed.len() + self.added.len() + 2
    }
    /// No record changed (only, perhaps, the SOA).
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

fn sort_canonical(v: &mut [Rr]) {
    v.sort_by(|a, b| {
        crate::zone::canonical_cmp(&name::lower(&a.owner), &name::lower(&b.owner))
            .then(a.rtype.cmp(&b.rtype))
            .then(a.rdata.cmp(&b.rdata))
    });
}

/// The condensed difference from `old` to `new` (no record both removed and
/// added; a TTL change is a removal and an addition).
pub fn diff(old: &Zone, new: &Zone) -> Result<Diff, XfrError> {
    let old_soa = zone_soa(old).ok_or_else(|| XfrError::Zone("old version has no SOA".into()))?;
    let new_soa = zone_soa(new).ok_or_else(|| XfrError::Zone("new version has no SOA".into()))?;
    let mut removed = Vec::new();
    let mut added = Vec::new();
    // records of `a` that `b` does not have (same TTL), as (owner, set, rdata)
    let one_way = |a: &Zone, b: &Zone, out: &mut Vec<Rr>| {
        for (key, n) in &a.nodes {
            let other = b.nodes.get(key);
            for set in &n.rrsets {
                if set.rtype == T_SOA {
                    continue;
                }
                let os = other.and_then(|o| o.get(set.rtype)).filter(|os| os.ttl == set.ttl);
                for rd in &set.rdata {
                    if os.is_some_and(|os| os.rdata.iter().any(|x| x.wire == rd.wire)) {
                        continue;
                    }
                    out.push(Rr {
                        owner: n.owner(key).into(),
                        rtype: set.rtype,
                        ttl: set.ttl,
                        rdata: rd.wire.clone(),
                    });
                }
            }
        }
    };
    one_way(new, old, &mut added);
    one_way(old, new, &mut removed);
    sort_canonical(&mut removed);
    sort_canonical(&mut added);
    Ok(Diff {
        old_soa,
        new_soa,
        removed,
        added,
    })
}

/// Applies a chain of differences to `base`; the result's SOA is the last
/// difference's new SOA. Deleting a record the zone does not have is an
/// error (the versions diverged: transfer the whole zone instead).
pub fn apply(base: &Zone, diffs: &[Diff]) -> Result<Zone, XfrError> {
    let last = diffs.last().ok_or_else(|| XfrError::Ixfr("no differences".into()))?;
    let has_base = |k: &RrKey| -> bool {
        base.node(&k.0)
            .and_then(|n| n.get(k.1))
            .is_some_and(|s| s.rdata.iter().any(|r| r.wire == k.2))
    };
    let mut expect = base.serial;
    let mut removed: HashSet<RrKey> = HashSet::new();
    let mut added: HashMap<RrKey, Rr> = HashMap::new();
    for d in diffs {
        if d.from_serial() != expect {
            return Err(XfrError::Ixfr(format!(
                "difference from serial {} does not follow serial {expect}",
                d.from_serial()
            )));
        }
        expect = d.to_serial();
        for r in &d.removed {
            let k = r.key();
            if added.remove(&k).is_some() {
                continue;
            }
            if !has_base(&k) || !removed.insert(k) {
                return Err(XfrError::Ixfr(format!(
                    "deletes {} type {} which the zone at serial {} does not have",
                    name::display(&r.owner),
                    Rtype::from_int(r.rtype),
                    d.from_serial()
                )));
            }
        }
        for r in &d.added {
            let k = r.key();
            // re-adding an existing record replaces it (new TTL)
            if has_base(&k) {
                removed.insert(k.clone());
            }
            added.insert(k, r.clone());
        }
    }
    let mut b = ZoneBuilder::new(&base.apex);
    for (owner, set) in base.iter_records() {
        if set.rtype == T_SOA {
            continue;
        }
        let lc = name::lower(owner);
        for rd in &set.rdata {
            let k = (lc.clone(), set.rtype, rd.wire.clone());
            if removed.contains(&k) {
                continue;
            }
            b.add(owner, set.rtype, set.ttl, &rd.wire).map_err(XfrError::Zone)?;
        }
    }
    let mut adds: Vec<Rr> = added.into_values().collect();
    sort_canonical(&mut adds);
    for r in &adds {
        b.add(&r.owner, r.rtype, r.ttl, &r.rdata).map_err(XfrError::Zone)?;
    }
    let s = &last.new_soa;
    b.add(&s.owner, T_SOA, s.ttl, &s.rdata).map_err(XfrError::Zone)?;
    b.finish().map_err(XfrError::Zone)
}

// ---------------------------------------------------------------------------
// Journal

/// A bounded chain of consecutive differences ending at the current version
/// of one zone, for answering IXFR.
#[derive(Debug, Clone)]
pub struct Journal {
    diffs: VecDeque<Arc<Diff>>,
    records: usize,
    max_diffs: usize,
    max_records: usize,
}

impl Journal {
    /// At most `max_diffs` differences and `max_records` records in all;
    /// the oldest go first.
    pub fn new(max_diffs: usize, max_records: usize) -> Journal {
        Journal {
            diffs: VecDeque::new(),
            records: 0,
            max_diffs: max_diffs.max(1),
            max_records,
        }
    }

    /// Appends the next difference. One that does not start where the chain
    /// ends restarts the chain; one larger than the whole budget empties it
    /// (an IXFR that big is no better than an AXFR). Returns whether it was
    /// kept.
    pub fn push(&mut self, d: Arc<Diff>) -> bool {
        if d.records() > self.max_records {
            self.clear();
            return false;
        }
        if self
            .diffs
            .back()
            .is_some_and(|last| last.to_serial() != d.from_serial())
        {
            self.clear();
        }
        self.records += d.records();
        self.diffs.push_back(d);
        while self.diffs.len() > self.max_diffs || self.records > self.max_records {
            match self.diffs.pop_front() {
                Some(old) => self.records -= old.records(),
                None => break,
            }
        }
        true
    }

    /// The differences leading from serial `from` to serial `to`, if the
    /// journal has all of them.
    pub fn chain(&self, from: u32, to: u32) -> Option<Vec<Arc<Diff>>> {
        let start = self.diffs.iter().position(|d| d.from_serial() == from)?;
        let v: Vec<Arc<Diff>> = self.diffs.iter().skip(start).cloned().collect();
        (v.last()?.to_serial() == to).then_some(v)
    }

    pub fn clear(&mut self) {
        self.diffs.clear();
        self.records = 0;
    }
    pub fn len(&self) -> usize {
        self.diffs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }
    /// Oldest serial an IXFR can start from.
    pub fn oldest_serial(&self) -> Option<u32> {
        self.diffs.front().map(|d| d.from_serial())
    }
}

// ---------------------------------------------------------------------------
// Serving transfers

/// Cheap test on the raw query: a QUERY for AXFR or IXFR.
pub fn is_transfer_request(p: &[u8]) -> bool {
    if p.len() < 12 || p[2] & 0x80 != 0 || (p[2] >> 3) & 0x0f != 0 || p[4..6] != [0, 1] {
        return false;
    }
    let Some(l) = name::wire_len(&p[12..]) else {
        return false;
    };
    match p.get(12 + l..12 + l + 2) {
        Some(t) => matches!(u16::from_be_bytes([t[0], t[1]]), T_AXFR | T_IXFR),
        None => false,
    }
}

/// A transfer request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrRequest {
    pub id: u16,
    /// Question name, lowercase wire.
    pub apex: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    /// IXFR: the serial of the client's version (its SOA in authority;
    /// RFC 1995 requires it, the caller answers FORMERR without).
    pub client_serial: Option<u32>,
}

impl XfrRequest {
    pub fn kind(&self) -> &'static str {
        if self.qtype == T_IXFR {
            "IXFR"
        } else {
            "AXFR"
        }
    }
}

/// Parses an AXFR/IXFR request (with or without its TSIG record).
pub fn parse_request<Octs>(msg: &Message<Octs>) -> Result<XfrRequest, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let h = msg.header();
    if h.qr() || h.opcode() != Opcode::QUERY {
        return Err(malformed("not a query"));
    }
    let q = msg.sole_question().map_err(malformed)?;
    let qtype = q.qtype().to_int();
    if qtype != T_AXFR && qtype != T_IXFR {
        return Err(malformed("not a transfer request"));
    }
    let apex = name::lower(q.qname().to_vec().as_slice());
    let mut client_serial = None;
    if qtype == T_IXFR {
        let auth = msg.authority().map_err(malformed)?;
        for rr in auth {
            let rr = rr.map_err(malformed)?;
            if rr.rtype() == Rtype::SOA {
                let r = parse_rr(&rr)?;
                client_serial = r.soa_serial();
                break;
            }
        }
    }
    Ok(XfrRequest {
        id: h.id(),
        apex,
        qtype,
        qclass: q.qclass().to_int(),
        client_serial,
    })
}

/// The OPT record of a response (RFC 6891 6.1.1: only to a request that
/// had one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptReply {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    /// (code, data), in this order.
    pub options: Vec<(u16, Vec<u8>)>,
}

impl OptReply {
    fn wire_len(&self) -> usize {
        11 + self.options.iter().map(|(_, d)| 4 + d.len()).sum::<usize>()
    }
}

/// A request's EDNS, if it has an OPT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEdns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// (code, data) in the order received.
    pub options: Vec<(u16, Vec<u8>)>,
}

/// The request's OPT record, parsed.
pub fn request_edns<Octs>(msg: &Message<Octs>) -> Option<RequestEdns>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let opt = msg.opt()?;
    let mut raw: Vec<u8> = Vec::new();
    opt.opt().compose_rdata(&mut raw).ok()?;
    let mut options = Vec::new();
    let mut i = 0usize;
    while i + 4 <= raw.len() {
        let code = u16::from_be_bytes([raw[i], raw[i + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[i + 2], raw[i + 3]]));
        let data = raw.get(i + 4..i + 4 + len)?;
        options.push((code, data.to_vec()));
        i += 4 + len;
    }
    Some(RequestEdns {
        udp_size: opt.udp_payload_size(),
        version: opt.version(),
        dnssec_ok: opt.dnssec_ok(),
        options,
    })
}

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
    let zone = plan.zone();
    let apex = zone.apex_node().ok_or_else(|| XfrError::Zone("no apex".into()))?;
    let set = apex.get(T_SOA).ok_or_else(|| XfrError::Zone("no SOA".into()))?;
    let rd = set.rdata.first().ok_or_else(|| XfrError::Zone("no SOA".into()))?;
    let soa = RecRef {
        owner: apex.owner(&zone.apex),
        rtype: T_SOA,
        ttl: set.ttl,
        rdata: &rd.wire,
    };
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
        push_opt(&mut add, self.opt.as_ref())?;
        if let Some(t) = tsig {
            t.answer(&mut add, now).map_err(push_err)?;
        }
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
    let mut mb = MessageBuilder::new_vec();
    mb.header_mut().set_aa(aa);
    let ab = mb
        .start_answer(query, Rcode::masked_from_int(rcode))
        .map_err(push_err)?;
    let mut add = ab.additional();
    push_opt(&mut add, opt)?;
    if let Some(t) = tsig {
        t.answer(&mut add, now).map_err(push_err)?;
    }
    Ok(add.finish())
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
    let mut mb = MessageBuilder::new_vec();
    mb.header_mut().set_aa(true);
    let mut ab = mb.start_answer(query, Rcode::NOERROR).map_err(push_err)?;
    ab.push(soa_record(&soa)?).map_err(push_err)?;
    let mut add = ab.additional();
    push_opt(&mut add, opt)?;
    if let Some(t) = tsig {
        t.answer(&mut add, now).map_err(push_err)?;
    }
    Ok(add.finish())
}

/// The outcome of checking a request's TSIG.
pub enum Signed<K> {
    /// No TSIG record.
    Unsigned,
    /// Valid: sign the response(s) with this.
    Valid(Box<ServerSequence<K>>),
    /// Invalid: send this error response (NOTAUTH with the TSIG error, or
    /// FORMERR), and the reason for the log.
    Invalid(Vec<u8>, String),
}

/// Verifies the TSIG of a request against the keys in `store` (RFC 8945
/// 5.2). On success the TSIG record is removed from `msg`.
pub fn verify_request<S: KeyStore>(msg: &mut Message<Vec<u8>>, store: &S, now: Time48) -> Signed<S::Key> {
    match ServerSequence::request(store, msg, now) {
        Ok(None) => Signed::Unsigned,
        Ok(Some(seq)) => Signed::Valid(Box::new(seq)),
        Err(e) => {
            let why = format!("TSIG error {}", e.error());
            match e.build_message(msg, MessageBuilder::new_vec()) {
                Ok(b) => {
                    let mut out = b.finish();
                    if fix_badsig(&mut out) {
                        Signed::Invalid(out, "TSIG error BADSIG (wrong secret or altered message)".into())
                    } else {
                        Signed::Invalid(out, why)
                    }
                }
                Err(_) => Signed::Invalid(Vec::new(), why),
            }
        }
    }
}

/// `domain` 0.12 reports a MAC mismatch as TSIG error FORMERR in an
/// unsigned NOTAUTH; RFC 8945 5.2.2 says BADSIG (16). The TSIG record is
/// last and its rdata ends with error (2 octets) and other-len (2, zero).
fn fix_badsig(out: &mut [u8]) -> bool {
    let n = out.len();
    if n < 16 || out[3] & 0x0f != Rcode::NOTAUTH.to_int() || out[n - 2..] != [0, 0] || out[n - 4..n - 2] != [0, 1] {
        return false;
    }
    out[n - 4..n - 2].copy_from_slice(&16u16.to_be_bytes());
    true
}

// ---------------------------------------------------------------------------
// Requesting and receiving transfers

/// A query for `qtype` (SOA, AXFR, IXFR with `ixfr_soa` in authority) about
/// zone `apex` (wire), signed with `key` if given. Returns the message and
/// the TSIG state to verify the response(s) with.
pub fn build_query<K: AsRef<Key>>(
    id: u16,
    apex: &[u8],
    qtype: u16,
    ixfr_soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    build_request(
        id,
        Opcode::QUERY,
        apex,
        Rtype::from_int(qtype),
        None,
        ixfr_soa,
        key,
        now,
    )
}

/// A request about zone `apex` (wire): `opcode` (AA set for a NOTIFY), the
/// question `qtype` IN, an SOA record in the answer section (NOTIFY) or in
/// the authority section (IXFR) when given, signed with `key` if given.
#[allow(clippy::too_many_arguments)]
fn build_request<K: AsRef<Key>>(
    id: u16,
    opcode: Opcode,
    apex: &[u8],
    qtype: Rtype,
    answer_soa: Option<&Rr>,
    authority_soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    let mut mb = MessageBuilder::new_vec();
    {
        let h = mb.header_mut();
        h.set_id(id);
        h.set_opcode(opcode);
        h.set_aa(opcode == Opcode::NOTIFY);
    }
    let mut qb = mb.question();
    qb.push((Name::from_slice(apex).map_err(malformed)?, qtype, Class::IN))
        .map_err(push_err)?;
    let mut ab = qb.answer();
    if let Some(s) = answer_soa {
        ab.push(soa_record(s)?).map_err(push_err)?;
    }
    let mut auth = ab.authority();
    if let Some(s) = authority_soa {
        auth.push(soa_record(s)?).map_err(push_err)?;
    }
    let mut add = auth.additional();
    let seq = match key {
        Some(k) => Some(ClientSequence::request(k, &mut add, now).map_err(push_err)?),
        None => None,
    };
    Ok((add.finish(), seq))
}

/// Checks one response message: it answers query `id`, and, when the query
/// was signed, its TSIG verifies in the sequence. Returns the message with
/// the TSIG record removed.
pub fn check_response<K: AsRef<Key>>(
    raw: Vec<u8>,
    id: u16,
    tsig: Option<&mut ClientSequence<K>>,
    now: Time48,
) -> Result<Message<Bytes>, XfrError> {
    let mut m = Message::from_octets(raw).map_err(malformed)?;
    let h = m.header();
    if !h.qr() || h.id() != id {
        return Err(malformed(format!(
            "not the response to query {id} (id {}, qr {})",
            h.id(),
            h.qr()
        )));
    }
    if let Some(t) = tsig {
        t.answer(&mut m, now).map_err(|e| XfrError::Tsig(e.to_string()))?;
    }
    Message::from_octets(Bytes::from(m.into_octets())).map_err(malformed)
}

/// Parses one record of a message into an [`Rr`] (names in rdata
/// decompressed), checking class IN.
pub fn parse_rr(rr: &ParsedRecord<'_, impl domain::dep::octseq::Octets + ?Sized>) -> Result<Rr, XfrError> {
    if rr.class() != Class::IN {
        return Err(malformed(format!("class {} record", rr.class())));
    }
    let owner = rr.owner().to_vec().into_octets().into_boxed_slice();
    let rec = rr
        .to_any_record::<AllRecordData<_, ParsedName<_>>>()
        .map_err(malformed)?;
    let mut rdata: Vec<u8> = Vec::new();
    rec.data().compose_rdata(&mut rdata).map_err(malformed)?;
    Ok(Rr {
        owner,
        rtype: rr.rtype().to_int(),
        ttl: rr.ttl().as_secs(),
        rdata: rdata.into_boxed_slice(),
    })
}

/// The SOA serial in an SOA query's response.
pub fn soa_answer(msg: &Message<Bytes>, apex: &[u8]) -> Result<Rr, XfrError> {
    let rcode = msg.header().rcode().to_int();
    if rcode != 0 {
        return Err(XfrError::Rcode(rcode));
    }
    for rr in msg.answer().map_err(malformed)? {
        let rr = rr.map_err(malformed)?;
        if rr.rtype() == Rtype::SOA {
            let r = parse_rr(&rr)?;
            if name::lower(&r.owner)[..] == *apex && r.soa_serial().is_some() {
                return Ok(r);
            }
        }
    }
    Err(XfrError::Protocol("no SOA for the zone in the answer".into()))
}

/// What an incoming transfer produced.
#[derive(Debug)]
pub enum Received {
    /// The whole zone.
    Axfr(Zone),
    /// Our version with the differences applied (kept for our journal).
    Ixfr { zone: Zone, diffs: Vec<Diff> },
    /// We already have this serial (or newer).
    UpToDate(u32),
}

impl Received {
    pub fn kind(&self) -> &'static str {
        match self {
            Received::Axfr(_) => "AXFR",
            Received::Ixfr { .. } => "IXFR",
            Received::UpToDate(_) => "up-to-date",
        }
    }
}

enum Rx {
    /// Waiting for the first SOA.
    Start,
    /// IXFR asked: the second record decides incremental or whole.
    Second,
    Axfr(Box<ZoneBuilder>),
    /// Incremental: in a difference's deletions (`true`) or additions.
    Ixfr(Diff, bool),
    Done(Option<Box<ZoneBuilder>>),
}

impl Rx {
    /// A difference from the version with `old_soa` starts: its deletions
    /// follow.
    fn diff_from(old_soa: Rr) -> Rx {
        let new_soa = Rr {
            owner: Box::new([]),
            rtype: 0,
            ttl: 0,
            rdata: Box::new([]),
        };
        let diff = Diff {
            old_soa,
            new_soa,
            removed: Vec::new(),
            added: Vec::new(),
        };
        Rx::Ixfr(diff, true)
    }
}

/// Consumes the messages of an AXFR/IXFR response stream (RFC 5936 2.2,
/// RFC 1995 4).
pub struct Receiver {
    apex: Box<[u8]>,
    base: Option<Arc<Zone>>,
    asked_ixfr: bool,
    max_records: usize,
    state: Rx,
    /// The first (and final) SOA.
    final_soa: Option<Rr>,
    diffs: Vec<Diff>,
    pub records: usize,
    pub messages: usize,
}

impl Receiver {
    /// `apex`: wire (any case). `base`: our current version (needed to
    /// apply an IXFR; `asked_ixfr` with no base is treated as AXFR).
    pub fn new(apex: &[u8], base: Option<Arc<Zone>>, asked_ixfr: bool, max_records: usize) -> Receiver {
        Receiver {
            apex: name::lower(apex),
            asked_ixfr: asked_ixfr && base.is_some(),
            base,
            max_records,
            state: Rx::Start,
            final_soa: None,
            diffs: Vec::new(),
            records: 0,
            messages: 0,
        }
    }

    /// Feeds the next (TSIG-checked) message. `Ok(true)`: the transfer is
    /// complete, call [`Receiver::finish`].
    pub fn feed(&mut self, msg: &Message<Bytes>) -> Result<bool, XfrError> {
        let h = msg.header();
        let rcode = h.rcode().to_int();
        if rcode != 0 {
            return Err(XfrError::Rcode(rcode));
        }
        if h.tc() {
            return Err(XfrError::Protocol("truncated transfer message".into()));
        }
        if matches!(self.state, Rx::Done(_)) {
            return Err(XfrError::Protocol("records after the end of the transfer".into()));
        }
        if self.messages == 0 {
            if let Some(q) = msg.first_question() {
                if name::lower(q.qname().to_vec().as_slice()) != self.apex {
                    return Err(XfrError::Protocol("response is about another zone".into()));
                }
            }
        }
        self.messages += 1;
        let answer = msg.answer().map_err(malformed)?;
        let total = usize::from(h_ancount(msg));
        let mut i = 0usize;
        for rr in answer {
            let rr = rr.map_err(malformed)?;
            i += 1;
            if matches!(self.state, Rx::Done(_)) {
                return Err(XfrError::Protocol("records after the closing SOA".into()));
            }
            let r = parse_rr(&rr)?;
            self.records += 1;
            if self.records > self.max_records {
                return Err(XfrError::TooLarge(self.max_records));
            }
            self.record(r)?;
        }
        // an IXFR answered by a lone SOA in its first message: nothing newer
        if self.messages == 1 && total == 1 && i == 1 && matches!(self.state, Rx::Second) {
            self.state = Rx::Done(None);
        }
        Ok(matches!(self.state, Rx::Done(_)))
    }

    fn record(&mut self, r: Rr) -> Result<(), XfrError> {
        let serial = r.soa_serial().filter(|_| name::lower(&r.owner) == self.apex);
        let state = std::mem::replace(&mut self.state, Rx::Start);
        self.state = match state {
            Rx::Start => {
                if serial.is_none() {
                    return Err(XfrError::Protocol("transfer does not start with the zone's SOA".into()));
                }
                self.final_soa = Some(r.clone());
                if self.asked_ixfr {
                    Rx::Second
                } else {
                    let mut b = Box::new(ZoneBuilder::new(&self.apex));
                    b.add(&r.owner, r.rtype, r.ttl, &r.rdata).map_err(XfrError::Zone)?;
                    Rx::Axfr(b)
                }
            }
            Rx::Second => {
                let fin = self.final_serial();
                match serial {
                    Some(s) if s != fin => {
                        let have = self.base.as_ref().map_or(0, |b| b.serial);
                        if s != have {
                            return Err(XfrError::Ixfr(format!(
                                "the differences start at serial {s}, we have {have}"
                            )));
                        }
                        Rx::diff_from(r)
                    }
                    _ => {
                        // AXFR-style answer to our IXFR
                        let mut b = Box::new(ZoneBuilder::new(&self.apex));
                        if let Some(f) = &self.final_soa {
                            b.add(&f.owner, f.rtype, f.ttl, &f.rdata).map_err(XfrError::Zone)?;
                        }
                        if serial == Some(fin) {
                            Rx::Done(Some(b))
                        } else {
                            b.add(&r.owner, r.rtype, r.ttl, &r.rdata).map_err(XfrError::Zone)?;
                            Rx::Axfr(b)
                        }
                    }
                }
            }
            Rx::Axfr(mut b) => {
                if serial.is_some() && serial == Some(self.final_serial()) {
                    Rx::Done(Some(b))
                } else {
                    b.add(&r.owner, r.rtype, r.ttl, &r.rdata).map_err(XfrError::Zone)?;
                    Rx::Axfr(b)
                }
            }
            Rx::Ixfr(mut d, true) => {
                if serial.is_some() {
                    d.new_soa = r;
                    Rx::Ixfr(d, false)
                } else {
                    d.removed.push(r);
                    Rx::Ixfr(d, true)
                }
            }
            Rx::Ixfr(mut d, false) => match serial {
                Some(s) => {
                    let to = d.to_serial();
                    let fin = self.final_serial();
                    if s == fin && to == fin {
                        self.diffs.push(d);
                        Rx::Done(None)
                    } else if s == to {
                        self.diffs.push(d);
                        Rx::diff_from(r)
                    } else {
                        return Err(XfrError::Protocol(format!(
                            "IXFR difference starts at serial {s}, the previous one ended at {to}"
                        )));
                    }
                }
                None => {
                    d.added.push(r);
                    Rx::Ixfr(d, false)
                }
            },
            Rx::Done(b) => {
                self.state = Rx::Done(b);
                return Err(XfrError::Protocol("records after the closing SOA".into()));
            }
        };
        Ok(())
    }

    fn final_serial(&self) -> u32 {
        self.final_soa.as_ref().and_then(Rr::soa_serial).unwrap_or(0)
    }

    /// The transferred version (the costly part: indexing the new zone or
    /// applying the differences).
    pub fn finish(self) -> Result<Received, XfrError> {
        let fin = self.final_serial();
        match self.state {
            Rx::Done(Some(b)) => Ok(Received::Axfr(b.finish().map_err(XfrError::Zone)?)),
            Rx::Done(None) if self.diffs.is_empty() => {
                let have = self.base.as_ref().map_or(0, |b| b.serial);
                if serial_gt(fin, have) {
                    // a lone newer SOA: the server cannot send differences
                    return Err(XfrError::Ixfr(format!(
                        "server has serial {fin} but sent no differences"
                    )));
                }
                Ok(Received::UpToDate(fin))
            }
            Rx::Done(None) => {
                let base = self
                    .base
                    .ok_or_else(|| XfrError::Ixfr("no version to apply it to".into()))?;
                let zone = apply(&base, &self.diffs)?;
                Ok(Received::Ixfr {
                    zone,
                    diffs: self.diffs,
                })
            }
            _ => Err(XfrError::Protocol("transfer ended before its closing SOA".into())),
        }
    }
}

fn h_ancount(msg: &Message<Bytes>) -> u16 {
    msg.header_counts().ancount()
}

// ---------------------------------------------------------------------------
// NOTIFY (RFC 1996)

/// A NOTIFY for zone `apex` (wire), with the new SOA in the answer section
/// when given (RFC 1996 3.7), signed with `key` if given.
pub fn build_notify<K: AsRef<Key>>(
    id: u16,
    apex: &[u8],
    soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    build_request(id, Opcode::NOTIFY, apex, Rtype::SOA, soa, None, key, now)
}

/// A NOTIFY request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRequest {
    pub id: u16,
    /// Zone, lowercase wire.
    pub apex: Box<[u8]>,
    /// The serial the primary announced, if it sent its SOA.
    pub serial: Option<u32>,
}

/// Parses a NOTIFY request (RFC 1996 3.7: question is the zone's SOA).
pub fn parse_notify<Octs>(msg: &Message<Octs>) -> Result<NotifyRequest, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let h = msg.header();
    if h.qr() || h.opcode() != Opcode::NOTIFY {
        return Err(malformed("not a NOTIFY request"));
    }
    let q = msg.sole_question().map_err(malformed)?;
    if q.qtype() != Rtype::SOA || q.qclass() != Class::IN {
        return Err(malformed(format!("NOTIFY for type {} class {}", q.qtype(), q.qclass())));
    }
    let apex = name::lower(q.qname().to_vec().as_slice());
    let mut serial = None;
    if let Ok(answer) = msg.answer() {
        for rr in answer.flatten() {
            if rr.rtype() == Rtype::SOA {
                if let Ok(r) = parse_rr(&rr) {
                    if name::lower(&r.owner) == apex {
                        serial = r.soa_serial();
                    }
                }
            }
        }
    }
    Ok(NotifyRequest {
        id: h.id(),
        apex,
        serial,
    })
}

/// Checks a NOTIFY response: it must answer `id` with NOERROR (and verify
/// when we signed).
pub fn check_notify_response<K: AsRef<Key>>(
    raw: Vec<u8>,
    id: u16,
    tsig: Option<ClientSequence<K>>,
    now: Time48,
) -> Result<(), XfrError> {
    let mut tsig = tsig;
    let m = check_response(raw, id, tsig.as_mut(), now)?;
    if let Some(t) = tsig {
        t.done().map_err(|e| XfrError::Tsig(e.to_string()))?;
    }
    if m.header().opcode() != Opcode::NOTIFY {
        return Err(XfrError::Protocol("response is not a NOTIFY response".into()));
    }
    let rcode = m.header().rcode().to_int();
    if rcode != 0 {
        return Err(XfrError::Rcode(rcode));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Secondary timing

/// A secondary's SOA timers, clamped to sane bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub refresh: Duration,
    pub retry: Duration,
    pub expire: Duration,
}

pub const MIN_REFRESH: Duration = Duration::from_secs(2);
pub const MAX_REFRESH: Duration = Duration::from_secs(7 * 86400);
pub const MIN_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(86400);
/// First retry while we have no version of the zone (doubles up to
/// [`MAX_BOOTSTRAP_RETRY`]).
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(1);
pub const MAX_BOOTSTRAP_RETRY: Duration = Duration::from_secs(300);

impl Timers {
    /// From uncompressed SOA rdata. The expiry is at least refresh + retry,
    /// so that a zone gets a retry before it expires.
    pub fn from_soa(rdata: &[u8]) -> Option<Timers> {
        let f = soa_fields(rdata)?;
        let secs = |v: u32| Duration::from_secs(u64::from(v));
        let refresh = secs(f[1]).clamp(MIN_REFRESH, MAX_REFRESH);
        let retry = secs(f[2]).clamp(MIN_RETRY, MAX_RETRY);
        let expire = secs(f[3]).max(refresh + retry);
        Some(Timers { refresh, retry, expire })
    }
}

/// What [`Refresh::poll`] says to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Query the primaries (SOA, then IXFR/AXFR).
    Check,
    /// The expire time passed without a successful refresh: stop serving.
    Expire,
}

/// Refresh/retry/expire of one secondary zone (RFC 1034 4.3.5, RFC 1996).
/// Sans I/O: the caller passes `now` and performs the checks.
#[derive(Clone, Debug)]
pub struct Refresh {
    next: Instant,
    /// When the zone expires unless refreshed (none before the first load).
    expires_at: Option<Instant>,
    timers: Option<Timers>,
    failures: u32,
    expired: bool,
}

fn add(t: Instant, d: Duration) -> Instant {
    // far-future timers saturate instead of overflowing
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(86400 * 365)))
        .unwrap_or(t)
}

impl Refresh {
    /// A zone we do not have yet: check at once.
    pub fn new(now: Instant) -> Refresh {
        Refresh {
            next: now,
            expires_at: None,
            timers: None,
            failures: 0,
            expired: false,
        }
    }

    /// How long until something is due (zero: now).
    pub fn next_check(&self, now: Instant) -> Duration {
        let mut at = self.next;
        if let (Some(e), false) = (self.expires_at, self.expired) {
            at = at.min(e);
        }
        at.saturating_duration_since(now)
    }

    /// What is due at `now`, if anything. Expiry comes first and is
    /// reported once.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if let (Some(e), false) = (self.expires_at, self.expired) {
            if now >= e {
                self.expired = true;
                return Some(Due::Expire);
            }
        }
        (now >= self.next).then_some(Due::Check)
    }

    /// The zone is current (transferred, or the primary's serial is not
    /// newer): next check after REFRESH, expiry after EXPIRE.
    pub fn on_success(&mut self, now: Instant, timers: Timers) {
        self.timers = Some(timers);
        self.failures = 0;
        self.expired = false;
        self.next = add(now, timers.refresh);
        self.expires_at = Some(add(now, timers.expire));
    }

    /// No primary answered usefully: retry after RETRY (or, before the
    /// first load, after a doubling bootstrap delay).
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let wait = match self.timers {
            Some(t) => t.retry,
            None => {
                let exp = self.failures.saturating_sub(1).min(16);
                (BOOTSTRAP_RETRY * (1u32 << exp)).min(MAX_BOOTSTRAP_RETRY)
            }
        };
        self.next = add(now, wait);
    }

    /// A NOTIFY from a primary: check now.
    pub fn on_notify(&mut self, now: Instant) {
        self.next = self.next.min(now);
    }

    pub fn is_expired(&self) -> bool {
        self.expired
    }
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::load_str;
    use std::collections::BTreeSet;

    const V1: &str = r#"
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster 1 7200 3600 1209600 300
    IN NS  ns1
    IN NS  ns2.example.net.
ns1 IN A   192.0.2.1
www IN A   192.0.2.10
    IN AAAA 2001:db8::10
alias IN CNAME www
mail IN MX 10 mx1
mx1 IN A 192.0.2.25
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
odd IN TYPE65534 \# 3 010203
"#;

    fn v2() -> String {
        V1.replace("@   IN SOA ns1 hostmaster 1 ", "@   IN SOA ns1 hostmaster 2 ")
            .replace("www IN A   192.0.2.10", "www IN A   192.0.2.11")
            .replace("mx1 IN A 192.0.2.25", "mx1 600 IN A 192.0.2.25")
            + "new IN TXT \"added in 2\"\n"
    }

    fn v3() -> String {
        v2().replace("@   IN SOA ns1 hostmaster 2 ", "@   IN SOA ns1 hostmaster 3 ")
            .replace("alias IN CNAME www\n", "")
            + "new IN TXT \"another\"\n"
    }

    /// V1 with `n` more hosts (several 512-octet messages' worth).
    fn big(n: usize) -> String {
        let mut t = V1.to_string();
        for i in 0..n {
            t.push_str(&format!("host{i} IN A 192.0.2.{}\n", i % 250));
        }
        t
    }

    fn with_serial(r: &Rr, serial: u32) -> Rr {
        let mut r = r.clone();
        let n = r.rdata.len();
        r.rdata[n - 20..n - 16].copy_from_slice(&serial.to_be_bytes());
        r
    }

    /// A journal of the differences between consecutive `versions`.
    fn journal(versions: &[&Arc<Zone>]) -> Journal {
        let mut j = Journal::new(8, 10_000);
        for w in versions.windows(2) {
            j.push(Arc::new(diff(w[0], w[1]).unwrap()));
        }
        j
    }

    /// An unsigned IXFR query from the version `have`.
    fn ixfr_query(id: u16, have: &Zone) -> Vec<u8> {
        let soa = zone_soa(have).unwrap();
        build_query::<Arc<Key>>(id, APEX, T_IXFR, Some(&soa), None, now())
            .unwrap()
            .0
    }

    fn zone(text: &str) -> Arc<Zone> {
        Arc::new(load_str(text, "example.com.").unwrap())
    }

    const APEX: &[u8] = b"\x07example\x03com\x00";

    /// Every record as comparable tuples.
    fn content(z: &Zone) -> BTreeSet<(Vec<u8>, u16, u32, Vec<u8>)> {
        z.iter_records()
            .into_iter()
            .flat_map(|(o, s)| {
                s.rdata
                    .iter()
                    .map(move |r| (name::lower(o).to_vec(), s.rtype, s.ttl, r.wire.to_vec()))
            })
            .collect()
    }

    fn now() -> Time48 {
        Time48::from_u64(1_700_000_000)
    }

    fn key(secret: &[u8]) -> Arc<Key> {
        let name: domain::tsig::KeyName = "xfr-key.".parse().unwrap();
        Arc::new(Key::new(domain::tsig::Algorithm::Sha256, secret, name, None, None).unwrap())
    }

    /// Serves `query` (raw, maybe signed) from `zone`/`journal` and feeds
    /// every message to a receiver on `base`. Returns what was received and
    /// the number of messages.
    fn transfer(
        query: Vec<u8>,
        client: Option<ClientSequence<Arc<Key>>>,
        server_key: Option<Arc<Key>>,
        zone: Arc<Zone>,
        journal: Option<&Journal>,
        base: Option<Arc<Zone>>,
        max_len: usize,
    ) -> (Result<Received, XfrError>, usize) {
        let mut msg = Message::from_octets(query).unwrap();
        let mut seq = match &server_key {
            Some(k) => match verify_request(&mut msg, k, now()) {
                Signed::Valid(s) => Some(s),
                _ => panic!("request did not verify"),
            },
            None => None,
        };
        let req = parse_request(&msg).unwrap();
        let p = plan(&req, zone, journal);
        let mut r = Responder::new(&msg, &p, max_len).unwrap();
        let mut rx = Receiver::new(APEX, base, req.qtype == T_IXFR, 1_000_000);
        let mut client = client;
        let mut n = 0;
        while let Some(m) = r.next_message(seq.as_deref_mut(), now()).unwrap() {
            let ancount = u16::from_be_bytes([m[6], m[7]]);
            assert!(
                m.len() <= max_len.max(512) || ancount == 1,
                "message of {} octets",
                m.len()
            );
            n += 1;
            let m = check_response(m, req.id, client.as_mut(), now()).unwrap();
            if rx.feed(&m).unwrap() {
                assert!(r.next_message(seq.as_deref_mut(), now()).unwrap().is_none());
                break;
            }
        }
        if let Some(c) = client {
            c.done().unwrap();
        }
        (rx.finish(), n)
    }

    #[test]
    fn serial_arithmetic_follows_rfc1982() {
        assert_eq!(serial_cmp(1, 1), Some(Ordering::Equal));
        assert_eq!(serial_cmp(1, 2), Some(Ordering::Less));
        assert_eq!(serial_cmp(2, 1), Some(Ordering::Greater));
        // wrap-around: 0 is newer than 4294967295
        assert!(serial_gt(0, u32::MAX));
        assert!(serial_gt(5, u32::MAX - 5));
        assert!(!serial_gt(u32::MAX - 5, 5));
        assert_eq!(serial_cmp(0, 1 << 31), None);
        assert_eq!(serial_cmp(1, (1 << 31) + 2), Some(Ordering::Greater));
        assert_eq!(serial_cmp(1, 1 << 31), Some(Ordering::Less));
    }

    #[test]
    fn diff_then_apply_gives_the_new_version() {
        let (a, b) = (zone(V1), zone(&v2()));
        let d = diff(&a, &b).unwrap();
        assert_eq!((d.from_serial(), d.to_serial()), (1, 2));
        // www A changed, mx1 TTL changed: 2 removed; those 2 back + TXT added
        assert_eq!(d.removed.len(), 2, "{:?}", d.removed);
        assert_eq!(d.added.len(), 3, "{:?}", d.added);
        let c = apply(&a, std::slice::from_ref(&d)).unwrap();
        assert_eq!(content(&c), content(&b));
        assert_eq!(c.serial, 2);
        // nothing changed but the serial: an empty difference
        let e = diff(&b, &b).unwrap();
        assert!(e.is_empty());
        // the same difference does not apply twice
        let err = apply(&c, &[d]).unwrap_err();
        assert!(matches!(err, XfrError::Ixfr(_)), "{err}");
    }

    #[test]
    fn apply_refuses_deleting_what_is_not_there() {
        let (a, b) = (zone(V1), zone(&v2()));
        let mut d = diff(&a, &b).unwrap();
        d.removed.push(Rr {
            owner: b"\x05ghost\x07example\x03com\x00"[..].into(),
            rtype: 1,
            ttl: 60,
            rdata: vec![192, 0, 2, 7].into(),
        });
        let e = apply(&a, &[d]).unwrap_err();
        assert!(e.to_string().contains("ghost.example.com."), "{e}");
    }

    #[test]
    fn journal_keeps_a_bounded_contiguous_chain() {
        let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
        let d1 = Arc::new(diff(&a, &b).unwrap());
        let d2 = Arc::new(diff(&b, &c).unwrap());
        let mut j = Journal::new(8, 1000);
        assert!(j.push(d1.clone()));
        assert!(j.push(d2.clone()));
        assert_eq!(j.chain(1, 3).unwrap().len(), 2);
        assert_eq!(j.chain(2, 3).unwrap().len(), 1);
        assert!(j.chain(2, 4).is_none());
        assert!(j.chain(0, 3).is_none());
        assert_eq!(j.oldest_serial(), Some(1));
        // a gap restarts the chain
        let mut gap = (*d2).clone();
        gap.old_soa = with_serial(&gap.old_soa, 7);
        gap.new_soa = with_serial(&gap.new_soa, 8);
        let mut j2 = j.clone();
        j2.push(Arc::new(gap));
        assert_eq!(j2.len(), 1);
        // count bound: the oldest goes
        let mut j3 = Journal::new(1, 1000);
        j3.push(d1.clone());
        j3.push(d2.clone());
        assert_eq!(j3.oldest_serial(), Some(2));
        // record bound: a difference larger than the budget empties it
        let mut j4 = Journal::new(8, d1.records() + 1);
        assert!(j4.push(d1.clone()));
        j4.push(d2.clone());
        assert_eq!(j4.len(), 1);
        assert!(!j4.push(Arc::new(Diff {
            added: vec![d1.added[0].clone(); 100],
            ..(*d1).clone()
        })));
        assert!(j4.is_empty());
    }

    #[test]
    fn axfr_round_trip_in_several_messages() {
        let a = zone(&big(40));
        let (q, _) = build_query::<Arc<Key>>(7, APEX, T_AXFR, None, None, now()).unwrap();
        assert!(is_transfer_request(&q));
        let (got, messages) = transfer(q, None, None, a.clone(), None, None, 512);
        assert!(messages > 1, "{messages}");
        match got.unwrap() {
            Received::Axfr(z) => {
                assert_eq!(content(&z), content(&a));
                assert_eq!(z.serial, 1);
            }
            other => panic!("{other:?}"),
        }
        let (q, _) = build_query::<Arc<Key>>(7, APEX, T_AXFR, None, None, now()).unwrap();
        let (got, messages) = transfer(q, None, None, a.clone(), None, None, MAX_MESSAGE);
        assert_eq!(messages, 1);
        assert!(matches!(got.unwrap(), Received::Axfr(_)));
    }

    #[test]
    fn a_record_larger_than_the_limit_goes_alone() {
        let big = format!("{V1}big IN TXT \"{}\" \"{}\"\n", "x".repeat(250), "y".repeat(250));
        let a = zone(&big);
        let (q, _) = build_query::<Arc<Key>>(9, APEX, T_AXFR, None, None, now()).unwrap();
        let (got, _) = transfer(q, None, None, a.clone(), None, None, 512);
        match got.unwrap() {
            Received::Axfr(z) => assert_eq!(content(&z), content(&a)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ixfr_from_the_journal_applies_on_the_secondary() {
        let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
        let j = journal(&[&a, &b, &c]);
        let q = ixfr_query(11, &a);
        let m = Message::from_octets(q.clone()).unwrap();
        let req = parse_request(&m).unwrap();
        assert_eq!((req.qtype, req.client_serial), (T_IXFR, Some(1)));
        let (got, _) = transfer(q, None, None, c.clone(), Some(&j), Some(a.clone()), 512);
        match got.unwrap() {
            Received::Ixfr { zone, diffs } => {
                assert_eq!(diffs.len(), 2);
                assert_eq!(content(&zone), content(&c));
                assert_eq!(zone.serial, 3);
            }
            other => panic!("{other:?}"),
        }
        // from serial 2: one difference
        let q = ixfr_query(12, &b);
        let (got, _) = transfer(q, None, None, c.clone(), Some(&j), Some(b.clone()), MAX_MESSAGE);
        match got.unwrap() {
            Received::Ixfr { zone, diffs } => {
                assert_eq!(diffs.len(), 1);
                assert_eq!(content(&zone), content(&c));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ixfr_when_current_is_one_soa_and_without_journal_is_axfr() {
        let (a, c) = (zone(V1), zone(&v3()));
        let q = ixfr_query(13, &c);
        let (got, n) = transfer(q, None, None, c.clone(), None, Some(c.clone()), MAX_MESSAGE);
        assert_eq!(n, 1);
        assert!(matches!(got.unwrap(), Received::UpToDate(3)));
        // the journal cannot serve serial 1: the whole zone, AXFR-style
        let q = ixfr_query(14, &a);
        let (got, _) = transfer(q, None, None, c.clone(), Some(&Journal::new(4, 100)), Some(a), 512);
        match got.unwrap() {
            Received::Axfr(z) => assert_eq!(content(&z), content(&c)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ixfr_for_another_base_is_refused_by_the_receiver() {
        let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
        let j = journal(&[&a, &b, &c]);
        let q = ixfr_query(15, &a);
        // the secondary actually has version 2 (it asked with the wrong SOA)
        let msg = Message::from_octets(q).unwrap();
        let req = parse_request(&msg).unwrap();
        let p = plan(&req, c, Some(&j));
        let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
        let mut rx = Receiver::new(APEX, Some(b), true, 1000);
        let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
        let m = check_response::<Arc<Key>>(m, 15, None, now()).unwrap();
        let e = rx.feed(&m).unwrap_err();
        assert!(matches!(e, XfrError::Ixfr(_)), "{e}");
    }

    #[test]
    fn tsig_signs_every_message_and_the_client_verifies_them() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let a = zone(V1);
        let (q, client) = build_query(21, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
        let (got, n) = transfer(q, client, Some(k.clone()), a.clone(), None, None, 512);
        assert!(n > 1);
        assert!(matches!(got.unwrap(), Received::Axfr(_)));

        // a wrong secret: NOTAUTH, TSIG error BADSIG
        let other = key(b"fedcba9876543210fedcba9876543210");
        let (q, _) = build_query(22, APEX, T_AXFR, None, Some(other), now()).unwrap();
        let mut msg = Message::from_octets(q).unwrap();
        match verify_request(&mut msg, &k, now()) {
            Signed::Invalid(out, why) => {
                assert_eq!(out[3] & 0x0f, 9, "{why}");
                assert_eq!(&out[out.len() - 4..out.len() - 2], &[0, 16]);
            }
            _ => panic!("a bad signature verified"),
        }
        // unsigned
        let (q, _) = build_query::<Arc<Key>>(23, APEX, T_AXFR, None, None, now()).unwrap();
        let mut msg = Message::from_octets(q).unwrap();
        assert!(matches!(verify_request(&mut msg, &k, now()), Signed::Unsigned));
        // an unsigned response to a signed request does not verify
        let (q, mut client) = build_query(24, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
        let msg = Message::from_octets(q).unwrap();
        let refused = reply::<_, Arc<Key>>(&msg, 5, false, None, None, now()).unwrap();
        let e = check_response(refused, 24, client.as_mut(), now()).unwrap_err();
        assert!(matches!(e, XfrError::Tsig(_)), "{e}");
    }

    #[test]
    fn notify_round_trip_signed() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let a = zone(V1);
        let soa = zone_soa(&a).unwrap();
        let (n, client) = build_notify(31, APEX, Some(&soa), Some(k.clone()), now()).unwrap();
        let mut msg = Message::from_octets(n).unwrap();
        let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
            panic!("NOTIFY did not verify");
        };
        let req = parse_notify(&msg).unwrap();
        assert_eq!(req.apex[..], *APEX);
        assert_eq!(req.serial, Some(1));
        let resp = reply(&msg, 0, true, None, Some(&mut *seq), now()).unwrap();
        check_notify_response(resp, 31, client, now()).unwrap();
        // a query is not a NOTIFY
        let (q, _) = build_query::<Arc<Key>>(32, APEX, 6, None, None, now()).unwrap();
        assert!(parse_notify(&Message::from_octets(q).unwrap()).is_err());
    }

    #[test]
    fn soa_query_answer_is_parsed() {
        let a = zone(V1);
        let soa = zone_soa(&a).unwrap();
        // an AXFR's first message carries the SOA like an SOA answer does
        let (q, _) = build_query::<Arc<Key>>(41, APEX, T_IXFR, Some(&soa), None, now()).unwrap();
        let msg = Message::from_octets(q).unwrap();
        let p = Plan::UpToDate(a.clone());
        let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
        let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
        let m = check_response::<Arc<Key>>(m, 41, None, now()).unwrap();
        assert_eq!(soa_answer(&m, APEX).unwrap().soa_serial(), Some(1));
        assert!(!is_transfer_request(m.as_slice()));
    }

    #[test]
    fn signed_soa_query_gets_a_signed_answer() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let a = zone(V1);
        let (q, mut client) = build_query(61, APEX, T_SOA, None, Some(k.clone()), now()).unwrap();
        let mut msg = Message::from_octets(q).unwrap();
        let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
            panic!("SOA query did not verify");
        };
        let r = soa_response(&msg, &a, None, Some(&mut *seq), now()).unwrap();
        let m = check_response(r, 61, client.as_mut(), now()).unwrap();
        client.unwrap().done().unwrap();
        assert!(m.header().aa());
        assert_eq!(soa_answer(&m, APEX).unwrap().soa_serial(), Some(1));
    }

    #[test]
    fn opt_goes_in_every_message_before_the_tsig() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let a = zone(&big(40));
        let (q, mut client) = build_query(71, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
        let mut msg = Message::from_octets(q).unwrap();
        assert!(request_edns(&msg).is_none());
        let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
            panic!("did not verify");
        };
        let opt = OptReply {
            udp_size: 1232,
            dnssec_ok: true,
            options: vec![(3, b"pop1".to_vec())],
        };
        let p = Plan::Axfr(a);
        let mut r = Responder::new(&msg, &p, 512).unwrap().with_opt(Some(opt.clone()));
        let mut n = 0;
        while let Some(m) = r.next_message(Some(&mut *seq), now()).unwrap() {
            assert!(m.len() <= 512, "{}", m.len());
            let m = check_response(m, 71, client.as_mut(), now()).unwrap();
            let e = request_edns(&m).expect("OPT");
            assert_eq!(
                (e.udp_size, e.dnssec_ok, e.options.clone()),
                (1232, true, opt.options.clone())
            );
            n += 1;
        }
        assert!(n > 1);
        client.unwrap().done().unwrap();
        // and in a refusal
        let refused = reply::<_, Arc<Key>>(&msg, 5, false, Some(&opt), None, now()).unwrap();
        let m = Message::from_octets(refused).unwrap();
        assert_eq!(request_edns(&m).unwrap().udp_size, 1232);
    }

    #[test]
    fn timers_are_clamped() {
        let a = zone(V1);
        let t = Timers::from_soa(&a.soa().unwrap().rdata[0].wire).unwrap();
        assert_eq!(t.refresh, Duration::from_secs(7200));
        assert_eq!(t.retry, Duration::from_secs(3600));
        assert_eq!(t.expire, Duration::from_secs(1209600));
        let tiny = zone(&V1.replace("1 7200 3600 1209600 300", "1 0 0 1 300"));
        let t = Timers::from_soa(&tiny.soa().unwrap().rdata[0].wire).unwrap();
        assert_eq!(t.refresh, MIN_REFRESH);
        assert_eq!(t.retry, MIN_RETRY);
        assert_eq!(t.expire, MIN_REFRESH + MIN_RETRY);
    }

    #[test]
    fn refresh_retry_expire_in_simulated_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Refresh::new(t0);
        assert_eq!(r.poll(t0), Some(Due::Check));
        // bootstrap: 1, 2, 4 ... seconds
        r.on_failure(t0);
        assert_eq!(r.next_check(t0), s(1));
        assert_eq!(r.poll(t0), None);
        r.on_failure(t0 + s(1));
        assert_eq!(r.next_check(t0 + s(1)), s(2));
        r.on_failure(t0 + s(3));
        assert_eq!(r.next_check(t0 + s(3)), s(4));
        // loaded: refresh 60, retry 10, expire 100
        let timers = Timers {
            refresh: s(60),
            retry: s(10),
            expire: s(100),
        };
        let t1 = t0 + s(10);
        r.on_success(t1, timers);
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_check(t1), s(60));
        assert_eq!(r.poll(t1 + s(59)), None);
        assert_eq!(r.poll(t1 + s(60)), Some(Due::Check));
        // the primaries are down: retry every 10 s
        let mut t = t1 + s(60);
        r.on_failure(t);
        assert_eq!(r.next_check(t), s(10));
        t += s(10);
        assert_eq!(r.poll(t), Some(Due::Check));
        r.on_failure(t);
        t += s(10);
        r.on_failure(t); // t1 + 80
                         // the expiry (t1 + 100) comes before the retry would
        r.timers = Some(Timers { retry: s(50), ..timers });
        r.on_failure(t + s(5));
        assert_eq!(r.next_check(t + s(5)), s(15));
        assert_eq!(r.poll(t1 + s(100)), Some(Due::Expire));
        assert!(r.is_expired());
        // reported once; checks continue at the retry interval
        assert_eq!(r.poll(t1 + s(100)), None);
        assert_eq!(r.poll(t1 + s(135)), Some(Due::Check));
        // a NOTIFY makes a check due at once
        r.on_failure(t1 + s(135));
        r.on_notify(t1 + s(140));
        assert_eq!(r.next_check(t1 + s(140)), Duration::ZERO);
        assert_eq!(r.poll(t1 + s(140)), Some(Due::Check));
        // a success revives the zone
        r.on_success(t1 + s(141), timers);
        assert!(!r.is_expired());
        assert_eq!(r.next_check(t1 + s(141)), s(60));
    }

    #[test]
    fn transfer_stream_errors() {
        let a = zone(&big(40));
        // REFUSED
        let (q, _) = build_query::<Arc<Key>>(51, APEX, T_AXFR, None, None, now()).unwrap();
        let msg = Message::from_octets(q).unwrap();
        let refused = reply::<_, Arc<Key>>(&msg, 5, false, None, None, now()).unwrap();
        let m = check_response::<Arc<Key>>(refused, 51, None, now()).unwrap();
        let mut rx = Receiver::new(APEX, None, false, 1000);
        assert_eq!(rx.feed(&m).unwrap_err(), XfrError::Rcode(5));
        assert_eq!(XfrError::Rcode(5).to_string(), "answered REFUSED");
        // wrong ID
        let p = Plan::Axfr(a.clone());
        let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
        let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
        assert!(check_response::<Arc<Key>>(m.clone(), 52, None, now()).is_err());
        // the record limit
        let m = check_response::<Arc<Key>>(m, 51, None, now()).unwrap();
        let mut rx = Receiver::new(APEX, None, false, 3);
        assert_eq!(rx.feed(&m).unwrap_err(), XfrError::TooLarge(3));
        // a stream cut short
        let mut r = Responder::new(&msg, &p, 512).unwrap();
        let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
        let m = check_response::<Arc<Key>>(m, 51, None, now()).unwrap();
        let mut rx = Receiver::new(APEX, None, false, 1000);
        assert!(!rx.feed(&m).unwrap());
        assert!(matches!(rx.finish(), Err(XfrError::Protocol(_))));
    }
}
