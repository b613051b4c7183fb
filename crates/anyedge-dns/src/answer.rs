//! Answering: query bytes in, response bytes out.
//!
//! The query parser and the response writer are hand-written rather than
//! built on `domain`'s `Message`/`MessageBuilder`: this is the per-packet
//! hot path, and working on the raw bytes with stack buffers means no
//! allocation per query (the response goes into a caller-owned buffer).
//! `domain` still does all the presentation-format parsing (zone files) and
//! is used by the tests to check that what we write parses.

use std::net::IpAddr;

use crate::cookie::{self, CookieState, Secrets};
use crate::name::{self, Labels, MAX_NAME};
use crate::zone::{
    Node, RRset, Zone, ZoneSet, F_CNAME, F_DNAME, T_A, T_AAAA, T_CNAME, T_DNAME, T_DS, T_HTTPS, T_MX, T_NS, T_NSEC,
    T_RRSIG, T_SRV, T_SVCB,
};

pub const OPCODE_QUERY: u8 = 0;
pub const OPCODE_NOTIFY: u8 = 4;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
pub const RCODE_YXDOMAIN: u8 = 6;
pub const RCODE_NOTAUTH: u8 = 9;
/// Extended RCODE 16 (RFC 6891 6.1.3), high bits in OPT.
pub const RCODE_BADVERS: u16 = 16;

const T_OPT: u16 = 41;
const T_TSIG: u16 = 250;
const T_IXFR: u16 = 251;
const T_AXFR: u16 = 252;
const T_ANY: u16 = 255;
const C_IN: u16 = 1;
const C_ANY: u16 = 255;

const OPT_NSID: u16 = 3;
const OPT_COOKIE: u16 = 10;
/// RFC 8914 Extended DNS Error option and the one code we send.
const OPT_EDE: u16 = 15;
/// "Not Authoritative": a query for a name outside our zones (as Knot).
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// Longest CNAME/DNAME chain followed inside our zones.
const MAX_CHAIN: usize = 16;

/// Server-wide answering settings (part of the config snapshot).
#[derive(Clone, Debug)]
pub struct Settings {
    /// NSID payload (RFC 5001), e.g. the PoP name; `None` = not sent.
    pub nsid: Option<Box<[u8]>>,
    /// Our largest UDP response (EDNS), typically 1232.
    pub udp_max: u16,
    pub cookies: Option<Secrets>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nsid: None,
            udp_max: 1232,
            cookies: None,
        }
    }
}

/// Transport facts the answer depends on.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub src: IpAddr,
    pub tcp: bool,
    /// UNIX time in seconds (cookies).
    pub now: u32,
}

/// A parsed query: offsets into the packet, no copies.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// Question name as received (case preserved), uncompressed wire.
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question section.
    pub question_end: usize,
    pub edns: Option<Edns<'a>>,
    /// Offset of a TSIG record (always last), if any.
    pub tsig_at: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Edns<'a> {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub nsid: bool,
    /// COOKIE option payload (client cookie [+ server cookie]).
    pub cookie: Option<&'a [u8]>,
}

/// Why a query was not parsed into [`Query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not worth a response (too short for a header, or a response).
    #[error("ignored (not a query)")]
    Ignore,
    /// FORMERR; `question` says whether the question can be echoed.
    #[error("malformed query")]
    FormErr { question_end: Option<usize> },
    /// An opcode we do not implement.
    #[error("opcode not implemented")]
    NotImp { question_end: Option<usize> },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses a query (header, question, EDNS OPT, TSIG position).
pub fn parse(p: &[u8]) -> Result<Query<'_>, ParseError> {
    if p.len() < 12 {
        return Err(ParseError::Ignore);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let f1 = p[2];
    if f1 & 0x80 != 0 {
        return Err(ParseError::Ignore); // a response: never answer it
    }
    let opcode = (f1 >> 3) & 0x0f;
    let qd = be16(p, 4).unwrap_or(0);
    let an = be16(p, 6).unwrap_or(0);
    let ns = be16(p, 8).unwrap_or(0);
    let ar = be16(p, 10).unwrap_or(0);
    // question
    let question_end = if qd == 1 {
        name::wire_len(&p[12..]).and_then(|l| {
            let end = 12 + l + 4;
            (end <= p.len()).then_some(end)
        })
    } else {
        None
    };
    if opcode != OPCODE_QUERY && opcode != OPCODE_NOTIFY {
        return Err(ParseError::NotImp { question_end });
    }
    let Some(qend) = question_end else {
        return Err(ParseError::FormErr { question_end: None });
    };
    let formerr = Err(ParseError::FormErr {
        question_end: Some(qend),
    });
    let qname = &p[12..qend - 4];
    let qtype = be16(p, qend - 4).unwrap_or(0);
    let qclass = be16(p, qend - 2).unwrap_or(0);
    // answer/authority: a NOTIFY may carry the new SOA; a QUERY carries none
    let mut at = qend;
    // a QUERY carries no answer section, and an authority section only for
    // IXFR (the client's SOA, RFC 1995)
    if opcode == OPCODE_QUERY && (an != 0 || (ns != 0 && qtype != T_IXFR)) {
        return formerr;
    }
    for _ in 0..(an as usize + ns as usize) {
        match skip_rr(p, at) {
            Some((next, _, _)) => at = next,
            None => return formerr,
        }
    }
    let mut edns = None;
    let mut tsig_at = None;
    for i in 0..ar {
        let start = at;
        let Some((next, rtype, owner_root)) = skip_rr(p, at) else {
            return formerr;
        };
        match rtype {
            T_OPT => {
                if edns.is_some() || !owner_root {
                    return formerr;
                }
                match parse_opt(p, start) {
                    Some(e) => edns = Some(e),
                    None => return formerr,
                }
            }
            T_TSIG => {
                if i + 1 != ar {
                    return formerr; // TSIG must be the last record
                }
                tsig_at = Some(start);
            }
            _ => {}
        }
        at = next;
    }
    if at != p.len() {
        return formerr; // trailing garbage
    }
    Ok(Query {
        packet: p,
        id,
        opcode,
        rd: f1 & 0x01 != 0,
        cd: p[3] & 0x10 != 0,
        qname,
        qtype,
        qclass,
        question_end: qend,
        edns,
        tsig_at,
    })
}

/// Skips one RR (owner may be compressed). Returns (next, type, owner is root).
fn skip_rr(p: &[u8], mut at: usize) -> Option<(usize, u16, bool)> {
    let owner_root = *p.get(at)? == 0;
    // owner: labels then 0 or a pointer
    let mut hops = 0;
    loop {
        let l = *p.get(at)?;
        match l {
            0 => {
                at += 1;
                break;
            }
            1..=63 => at += 1 + l as usize,
            0xc0..=0xff => {
                at += 2;
                break;
            }
            _ => return None,
        }
        hops += 1;
        if hops > 128 {
            return None;
        }
    }
    let rtype = be16(p, at)?;
    let rdlen = be16(p, at + 8)? as usize;
    let next = at + 10 + rdlen;
    (next <= p.len()).then_some((next, rtype, owner_root))
}

fn parse_opt(p: &[u8], at: usize) -> Option<Edns<'_>> {
    // owner is root (1 byte)
    let udp_size = be16(p, at + 3)?;
    let version = *p.get(at + 6)?;
    let flags = be16(p, at + 7)?;
    let rdlen = be16(p, at + 9)? as usize;
    let rd = p.get(at + 11..at + 11 + rdlen)?;
    let mut e = Edns {
        udp_size,
        version,
        dnssec_ok: flags & 0x8000 != 0,
        nsid: false,
        cookie: None,
    };
    let mut i = 0;
    while i < rd.len() {
        let code = be16(rd, i)?;
        let len = be16(rd, i + 2)? as usize;
        let data = rd.get(i + 4..i + 4 + len)?;
        match code {
            OPT_NSID => e.nsid = true,
            OPT_COOKIE => {
                // RFC 7873 5.2.2: 8 bytes, or 16..=40 -> otherwise FORMERR
                if !(len == 8 || (16..=40).contains(&len)) || e.cookie.is_some() {
                    return None;
                }
                e.cookie = Some(data);
            }
            _ => {}
        }
        i += 4 + len;
    }
    Some(e)
}

/// What the answer was, for rate limiting, metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Positive,
    Wildcard,
    NxDomain,
    NoData,
    Referral,
    /// REFUSED, FORMERR, NOTIMP, BADVERS, SERVFAIL.
    Error,
}

/// The outcome of [`answer`].
#[derive(Clone, Copy, Debug)]
pub struct Answered<'z> {
    pub kind: Kind,
    pub rcode: u16,
    /// A name to key response rate limiting on: the zone apex for negative
    /// answers (so a random-subdomain flood is one bucket), the owner for
    /// positive ones. Lowercase wire.
    pub rrl_name: &'z [u8],
    pub truncated: bool,
    pub cookie: CookieState,
    /// The query is a zone transfer or NOTIFY: the caller handles it (the
    /// response buffer is left empty).
    pub special: Option<Special>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Axfr,
    Ixfr,
    Notify,
}

/// Answers `packet` into `out` (cleared first). An empty `out` means: send
/// nothing (or, with `special`, let the caller handle it).
pub fn answer<'z>(zones: &'z ZoneSet, st: &Settings, packet: &[u8], cx: &Context, out: &mut Vec<u8>) -> Answered<'z> {
    out.clear();
    let q = match parse(packet) {
        Ok(q) => q,
        Err(e) => {
            let (rcode, qend) = match e {
                ParseError::Ignore => return done(Kind::Error, 0, b"", CookieState::None),
                ParseError::FormErr { question_end } => (RCODE_FORMERR, question_end),
                ParseError::NotImp { question_end } => (RCODE_NOTIMP, question_end),
            };
            error_response(packet, qend, rcode, out);
            return done(Kind::Error, u16::from(rcode), b"", CookieState::None);
        }
    };
    answer_query(zones, st, &q, cx, out)
}

fn done(kind: Kind, rcode: u16, rrl_name: &[u8], cookie: CookieState) -> Answered<'_> {
    Answered {
        kind,
        rcode,
        rrl_name,
        truncated: false,
        cookie,
        special: None,
    }
}

/// Turns a response into its truncated form (header and question, TC set,
/// no records): what response rate limiting "slips" so that a real
/// resolver retries over TCP.
pub fn slip(out: &mut Vec<u8>) {
    if out.len() < 12 {
        return;
    }
    let qd = u16::from_be_bytes([out[4], out[5]]);
    let qend = if qd == 1 {
        name::wire_len(&out[12..]).map_or(12, |l| (12 + l + 4).min(out.len()))
    } else {
        12
    };
    out.truncate(qend);
    out[2] |= 0x02;
    out[6..12].fill(0);
}

/// A REFUSED reply to `packet` (header and question), e.g. for a transfer
/// that is not allowed.
pub fn refuse(packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if packet.len() < 12 {
        return;
    }
    match parse(packet) {
        Ok(q) => {
            // header, question and (if the query had one) OPT, RFC 6891 7
            let mut w = Writer::new(out, &q, 65535);
            let cx = Context {
                src: std::net::Ipv4Addr::UNSPECIFIED.into(),
                tcp: true,
                now: 0,
            };
            w.finish(
                u16::from(RCODE_REFUSED),
                false,
                &Settings::default(),
                &q,
                &cx,
                CookieState::None,
            );
        }
        Err(_) => error_response(packet, None, RCODE_REFUSED, out),
    }
}

/// Header (+ question when parseable) with `rcode`, nothing else.
fn error_response(p: &[u8], qend: Option<usize>, rcode: u8, out: &mut Vec<u8>) {
    let qend = qend.unwrap_or(12);
    out.extend_from_slice(&p[..qend.min(p.len())]);
    out[2] = (p[2] & 0x79) | 0x80; // QR, opcode, RD kept; AA TC cleared
    out[3] = (p[3] & 0x10) | rcode; // CD kept
    let qd = u16::from(qend > 12);
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..12].fill(0);
}

/// Answers an already parsed query.
pub fn answer_query<'z>(
    zones: &'z ZoneSet,
    st: &Settings,
    q: &Query<'_>,
    cx: &Context,
    out: &mut Vec<u8>,
) -> Answered<'z> {
    out.clear();
    let cookie = match (&q.edns, &st.cookies) {
        (Some(Edns { cookie: Some(c), .. }), Some(s)) => cookie::check(s, c, cx.src, cx.now),
        (Some(Edns { cookie: Some(_), .. }), None) => CookieState::ClientOnly,
        _ => CookieState::None,
    };
    if q.opcode == OPCODE_NOTIFY {
        return Answered {
            special: Some(Special::Notify),
            ..done(Kind::Error, 0, b"", cookie)
        };
    }
    let limit = if cx.tcp {
        65535
    } else {
        match &q.edns {
            Some(e) => usize::from(e.udp_size.clamp(512, st.udp_max.max(512))),
            None => 512,
        }
    };
    let mut w = Writer::new(out, q, limit);
    // the OPT record as it will be written (RFC 6891 7: its size counts),
    // so that an answer that fits is not truncated for options not sent
    if let Some(e) = &q.edns {
        let nsid = match (&st.nsid, e.nsid) {
            (Some(n), true) => 4 + n.len().min(32),
            _ => 0,
        };
        let cookie = if e.cookie.is_some() && st.cookies.is_some() {
            28
        } else {
            0
        };
        w.reserve = 11 + nsid + cookie;
    }
    // EDNS version we do not speak: BADVERS, nothing else (RFC 6891 6.1.3)
    if let Some(e) = &q.edns {
        if e.version != 0 {
            w.finish(RCODE_BADVERS, false, st, q, cx, cookie);
            return done(Kind::Error, RCODE_BADVERS, b"", cookie);
        }
    }
    if q.tsig_at.is_some() && !matches!(q.qtype, T_AXFR | T_IXFR) {
        // Signed ordinary queries are not served (keys are for transfers):
        // RFC 8945 5.2.1 wants NOTAUTH/BADKEY; the transfer path verifies.
        w.finish(u16::from(RCODE_NOTAUTH), false, st, q, cx, cookie);
        return done(Kind::Error, u16::from(RCODE_NOTAUTH), b"", cookie);
    }
    let mut qlc = [0u8; MAX_NAME];
    let qlc = &mut qlc[..q.qname.len()];
    name::lower_into(q.qname, qlc);
    let labels = Labels::of(qlc);
    // class ANY (255) is answered from IN data, as Knot does
    let zone = if q.qclass == C_IN || q.qclass == C_ANY {
        zones.find(qlc, &labels)
    } else {
        None
    };
    // RFC 4035 3.1.4.1: the DS of a child apex is the parent's data, when
    // the parent is served here too
    let zone = match zone {
        Some(z) if q.qtype == T_DS && z.apex[..] == qlc[..] && !labels.is_empty() => {
            let parent = &qlc[labels.suffix_at(labels.len() - 1, qlc.len())..];
            zones.find(parent, &Labels::of(parent)).or(Some(z))
        }
        z => z,
    };
    let Some(zone) = zone else {
        // a name outside our zones (not another class: Knot sends no EDE there)
        if q.qclass == C_IN || q.qclass == C_ANY {
            w.ede = Some(EDE_NOT_AUTHORITATIVE);
        }
        w.finish(u16::from(RCODE_REFUSED), false, st, q, cx, cookie);
        return done(Kind::Error, u16::from(RCODE_REFUSED), b"", cookie);
    };
    match q.qtype {
        T_AXFR | T_IXFR if cx.tcp => {
            w.out.clear();
            let s = if q.qtype == T_AXFR {
                Special::Axfr
            } else {
                Special::Ixfr
            };
            return Answered {
                special: Some(s),
                ..done(Kind::Error, 0, &zone.apex, cookie)
            };
        }
        0 | T_AXFR | T_IXFR | T_OPT | T_TSIG => {
            // transfers over UDP, type 0 and meta types as questions
            let rc = match q.qtype {
                T_OPT | T_TSIG => RCODE_FORMERR,
                // IXFR over UDP is not served (RFC 1995 allows refusing it)
                T_IXFR => RCODE_NOTAUTH,
                _ => RCODE_NOTIMP,
            };
            w.finish(u16::from(rc), false, st, q, cx, cookie);
            return done(Kind::Error, u16::from(rc), &zone.apex, cookie);
        }
        _ => {}
    }
    let dnssec_ok = q.edns.as_ref().is_some_and(|e| e.dnssec_ok);
    // RFC 4035 3.1: signatures and proofs for DO clients of signed zones
    w.dnssec = dnssec_ok && zone.dnssec.is_some();
    w.now = cx.now;
    let r = resolve(zone, &mut w, qlc, q.qtype, dnssec_ok);
    let truncated = w.truncated;
    w.finish(u16::from(r.rcode), r.aa, st, q, cx, cookie);
    Answered {
        kind: r.kind,
        rcode: u16::from(r.rcode),
        rrl_name: r.rrl_name,
        truncated,
        cookie,
        special: None,
    }
}

struct Resolved<'z> {
    kind: Kind,
    rcode: u8,
    aa: bool,
    rrl_name: &'z [u8],
}

enum Found<'z> {
    Node(&'z Node, &'z [u8], bool),
    Delegation(&'z Node, &'z [u8]),
    Dname(&'z Node, &'z [u8]),
    /// No such name; the closest encloser's label count.
    NxDomain(usize),
}

/// RFC 1034 4.3.2 step 3 inside one zone, for a lowercase wire name.
fn lookup<'z>(zone: &'z Zone, qlc: &[u8], qtype: u16, first: bool) -> Found<'z> {
    let labels = Labels::of(qlc);
    let n = labels.len();
    let apex_n = Labels::of(&zone.apex).len();
    let mut ce = apex_n;
    let Some((apex_key, apex)) = zone.nodes.get_key_value(&zone.apex[..]) else {
        return Found::NxDomain(apex_n);
    };
    if n > apex_n && apex.flags & F_DNAME != 0 {
        return Found::Dname(apex, apex_key);
    }
    let mut ce_node = apex;
    let mut ce_key: &[u8] = apex_key;
    for keep in apex_n + 1..=n {
        let off = labels.suffix_at(keep, qlc.len());
        let Some((k, node)) = zone.nodes.get_key_value(&qlc[off..]) else {
            break;
        };
        ce = keep;
        ce_node = node;
        ce_key = k;
        // a DS query for the delegation point itself is answered here
        if node.is_delegation() && !(keep == n && qtype == T_DS && first) {
            return Found::Delegation(node, k);
        }
        if keep < n && node.flags & F_DNAME != 0 {
            return Found::Dname(node, k);
        }
    }
    if ce == n {
        return Found::Node(ce_node, ce_key, false);
    }
    // RFC 4592: the source of synthesis is "*." + closest encloser
    let cel = &qlc[labels.suffix_at(ce, qlc.len())..];
    let mut wc = [0u8; MAX_NAME + 2];
    if cel.len() + 2 > MAX_NAME {
        return Found::NxDomain(ce);
    }
    wc[0] = 1;
    wc[1] = b'*';
    wc[2..2 + cel.len()].copy_from_slice(cel);
    match zone.nodes.get_key_value(&wc[..2 + cel.len()]) {
        Some((k, node)) => Found::Node(node, k, true),
        None => Found::NxDomain(ce),
    }
}

/// Answers inside one zone: the answer section and the authority data of
/// the last step, then the DNSSEC proofs (authority), then the additional
/// data (sections are written in order).
fn resolve<'z>(zone: &'z Zone, w: &mut Writer<'_>, qlc: &[u8], qtype: u16, dnssec_ok: bool) -> Resolved<'z> {
    let mut post = Post::default();
    let r = resolve_answer(zone, w, qlc, qtype, dnssec_ok, &mut post);
    if w.dnssec {
        denial::write_proofs(w, zone, &post.proofs[..post.n_proofs]);
    }
    if let Some(set) = post.additional {
        w.additional_for(zone, set, &post.owner[..post.owner_len]);
    }
    r
}

/// What is written after the answer section.
struct Post<'z> {
    proofs: [denial::Pending; denial::MAX_PENDING],
    n_proofs: usize,
    additional: Option<&'z RRset>,
    /// Owner of `additional` (lowercase wire), for SVCB "." targets.
    owner: [u8; MAX_NAME],
    owner_len: usize,
}

impl Default for Post<'_> {
    fn default() -> Self {
        Post {
            proofs: [denial::Pending::EMPTY; denial::MAX_PENDING],
            n_proofs: 0,
            additional: None,
            owner: [0; MAX_NAME],
            owner_len: 0,
        }
    }
}

impl Post<'_> {
    fn proof(&mut self, kind: denial::ProofKind, name: &[u8], ce: usize) {
        if self.n_proofs < self.proofs.len() {
            self.proofs[self.n_proofs] = denial::Pending::new(kind, name, ce);
            self.n_proofs += 1;
        }
    }
}

fn resolve_answer<'z>(
    zone: &'z Zone,
    w: &mut Writer<'_>,
    qlc: &[u8],
    qtype: u16,
    dnssec_ok: bool,
    post: &mut Post<'z>,
) -> Resolved<'z> {
    // names already visited in a CNAME/DNAME chain (loop detection)
    let mut seen = [0u64; MAX_CHAIN];
    let mut n_seen = 0usize;
    looped(&mut seen, &mut n_seen, qlc);
    // current name (lowercase) and where its owner can be pointed at
    let mut cur = [0u8; MAX_NAME];
    let mut cur_len = qlc.len();
    cur[..cur_len].copy_from_slice(qlc);
    let mut owner: Owner<'z> = Owner::Ptr(12);
    let mut first = true;
    let mut kind = Kind::Positive;
    let mut rrl: &'z [u8] = &zone.apex;
    for _ in 0..MAX_CHAIN {
        let name = &cur[..cur_len];
        match lookup(zone, name, qtype, first) {
            Found::Node(node, key, wild) => {
                if first {
                    rrl = if wild { &zone.apex } else { key };
                    if wild {
                        kind = Kind::Wildcard;
                    }
                }
                // labels of the closest encloser of a wildcard match
                let ce = Labels::of(key).len().saturating_sub(1);
                // a CNAME answers every type but CNAME and ANY by restarting
                // at its target (RFC 1034 4.3.2 3a); ANY matches the CNAME
                // (the CNAME's own NSEC and RRSIG are asked for too: RFC 4035 2.5)
                if node.flags & F_CNAME != 0 && !matches!(qtype, T_CNAME | T_ANY | T_NSEC | T_RRSIG) {
                    let Some(set) = node.get(T_CNAME) else { break };
                    let online = zone.online.as_deref().filter(|_| wild && w.dnssec);
                    if wild && online.is_none() {
                        post.proof(denial::ProofKind::Wildcard, name, ce);
                    }
                    let written = match online {
                        Some(on) => w.signed_online(Section::Answer, owner, name, set, on),
                        None => w.signed(Section::Answer, owner, set, node),
                    };
                    let Some(tpos) = written else {
                        return resolved(kind, RCODE_NOERROR, true, rrl);
                    };
                    let Some(target) = set.rdata[0].target_name() else {
                        break;
                    };
                    let tpos = tpos.map_or(Owner::Name(target), Owner::Ptr);
                    // follow inside this zone only (as Knot does)
                    let tl = target.len();
                    let mut next = [0u8; MAX_NAME];
                    name::lower_into(target, &mut next[..tl]);
                    if !name::is_at_or_below(&next[..tl], &zone.apex) || looped(&mut seen, &mut n_seen, &next[..tl]) {
                        return resolved(kind, RCODE_NOERROR, true, rrl);
                    }
                    cur[..tl].copy_from_slice(&next[..tl]);
                    cur_len = tl;
                    owner = tpos;
                    first = false;
                    continue;
                }
                // RFC 8482: for ANY, one RRset is a sufficient answer
                let set = match qtype {
                    T_ANY => node.rrsets.first(),
                    // the signatures of one type, as Knot answers
                    T_RRSIG => node.sigs.first(),
                    _ => node.get(qtype),
                };
                match set {
                    Some(set) if wild && w.dnssec && zone.online.is_some() => {
                        // compact denial: the synthesized RRset signed at
                        // the query name (no wildcard proof needed)
                        if let Some(on) = zone.online.as_deref() {
                            w.signed_online(Section::Answer, owner, name, set, on);
                        }
                        post.additional = Some(set);
                        post.owner[..name.len()].copy_from_slice(name);
                        post.owner_len = name.len();
                        return resolved(kind, RCODE_NOERROR, true, rrl);
                    }
                    Some(set) => {
                        w.signed(Section::Answer, owner, set, node);
                        // (the wildcard's NSEC answered: Knot adds no proof
                        // then, since the answer holds that NSEC already)
                        if wild && qtype != T_NSEC {
                            post.proof(denial::ProofKind::Wildcard, name, ce);
                        }
                        post.additional = Some(set);
                        post.owner[..name.len()].copy_from_slice(name);
                        post.owner_len = name.len();
                        return resolved(kind, RCODE_NOERROR, true, rrl);
                    }
                    None => {
                        w.negative(zone);
                        let k = if wild {
                            denial::ProofKind::WildcardNoData
                        } else {
                            denial::ProofKind::NoData
                        };
                        post.proof(k, name, ce);
                        return resolved(if first { Kind::NoData } else { kind }, RCODE_NOERROR, true, rrl);
                    }
                }
            }
            Found::Delegation(node, key) => {
                if first {
                    rrl = key;
                }
                if let Some(ns) = node.get(T_NS) {
                    let o = Owner::Name(node.owner(key));
                    w.rrset(Section::Authority, o, ns);
                    // the DS proves a secure delegation: only for DNSSEC-aware
                    // clients of a signed zone (as Knot does)
                    if dnssec_ok && zone.signed {
                        match node.get(T_DS) {
                            Some(ds) => {
                                w.signed(Section::Authority, o, ds, node);
                            }
                            // RFC 4035 3.1.4: else the proof there is none
                            None => post.proof(denial::ProofKind::NoDs, key, 0),
                        }
                    }
                    post.additional = Some(ns);
                }
                return resolved(if first { Kind::Referral } else { kind }, RCODE_NOERROR, !first, rrl);
            }
            Found::Dname(node, key) => {
                if first {
                    rrl = key;
                }
                let Some(set) = node.get(T_DNAME) else { break };
                // signed; the synthesized CNAME is not (RFC 6672 5.3.1)
                w.signed(Section::Answer, Owner::Name(node.owner(key)), set, node);
                let Some(target) = set.rdata[0].target_name() else {
                    break;
                };
                // qname = prefix + owner  ->  prefix + target
                let prefix_len = cur_len - key.len();
                let new_len = prefix_len + target.len();
                if new_len > MAX_NAME {
                    return resolved(kind, RCODE_YXDOMAIN, true, rrl);
                }
                let mut next = [0u8; MAX_NAME];
                next[..prefix_len].copy_from_slice(&cur[..prefix_len]);
                name::lower_into(target, &mut next[prefix_len..new_len]);
                // the synthesized CNAME (RFC 6672 3.1), TTL of the DNAME
                let Some(tpos) = w.synth_cname(owner, set.ttl, &next[..new_len]) else {
                    return resolved(kind, RCODE_NOERROR, true, rrl);
                };
                // the synthesized CNAME answers a CNAME question; a name
                // outside the zone or seen before ends the chain
                if qtype == T_CNAME
                    || !name::is_at_or_below(&next[..new_len], &zone.apex)
                    || looped(&mut seen, &mut n_seen, &next[..new_len])
                {
                    return resolved(kind, RCODE_NOERROR, true, rrl);
                }
                // a synthesized target is not in the zone's memory: point at it
                let Some(tpos) = tpos else {
                    return resolved(kind, RCODE_NOERROR, true, rrl);
                };
                let tpos = Owner::Ptr(tpos);
                cur[..new_len].copy_from_slice(&next[..new_len]);
                cur_len = new_len;
                owner = tpos;
                first = false;
            }
            Found::NxDomain(ce) => {
                w.negative(zone);
                post.proof(denial::ProofKind::NxDomain, name, ce);
                // RFC 9824: compact denial answers DO queries NOERROR, the
                // name "existing" without data (NXNAME in its NSEC)
                let rc = if w.dnssec && zone.online.is_some() {
                    RCODE_NOERROR
                } else {
                    RCODE_NXDOMAIN
                };
                return resolved(if first { Kind::NxDomain } else { kind }, rc, true, rrl);
            }
        }
    }
    // chain too long or inconsistent: what we have so far
    resolved(kind, RCODE_NOERROR, true, rrl)
}

/// Records `name` as visited; true if it was already (a CNAME/DNAME loop).
fn looped(seen: &mut [u64; MAX_CHAIN], n: &mut usize, name: &[u8]) -> bool {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(name);
    let h = h.finish();
    if seen[..*n].contains(&h) {
        return true;
    }
    if *n < MAX_CHAIN {
        seen[*n] = h;
        *n += 1;
    }
    false
}

fn resolved(kind: Kind, rcode: u8, aa: bool, rrl_name: &[u8]) -> Resolved<'_> {
    Resolved {
        kind,
        rcode,
        aa,
        rrl_name,
    }
}

#[derive(Clone, Copy)]
enum Owner<'a> {
    /// A name already in the message at this offset.
    Ptr(u16),
    /// An uncompressed wire name.
    Name(&'a [u8]),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// The response writer: header, echoed question, sections with name
/// compression, OPT last. Overflow of answer/authority truncates the whole
/// response to the header and question with TC; overflow of additional
/// just stops adding (RFC 2181 9).
struct Writer<'o> {
    out: &'o mut Vec<u8>,
    limit: usize,
    counts: [u16; 3],
    truncated: bool,
    /// Offsets of names written uncompressed (their suffixes are
    /// compression targets).
    names: [u16; 64],
    n_names: usize,
    /// Space kept for the OPT record.
    reserve: usize,
    /// An RFC 8914 INFO-CODE to add to the OPT record (EDNS queries only).
    ede: Option<u16>,
    /// RRSIGs go with each RRset (a DO query of a signed zone).
    dnssec: bool,
    /// UNIX seconds (online signatures of compact-denial zones).
    now: u32,
    /// NSEC/NSEC3 owners already written as proofs (their addresses in
    /// the zone), so that one proving two things is written once.
    proved: [usize; 8],
    n_proved: usize,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut Vec<u8>, q: &Query<'_>, limit: usize) -> Writer<'o> {
        out.extend_from_slice(&q.packet[..q.question_end]);
        out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        // OPT: NSID (<= 36), cookie (28), EDE (6)
        let reserve = if q.edns.is_some() { 11 + 70 } else { 0 };
        let mut w = Writer {
            out,
            limit,
            counts: [0; 3],
            truncated: false,
            names: [0; 64],
            n_names: 0,
            reserve,
            ede: None,
            dnssec: false,
            now: 0,
            proved: [0; 8],
            n_proved: 0,
        };
        w.names[0] = 12;
        w.n_names = 1;
        w
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.reserve)
    }

    /// Writes a name with compression against names already written.
    fn name(&mut self, wire: &[u8]) {
        let labels = Labels::of(wire);
        let n = labels.len();
        for keep in (1..=n).rev() {
            let off = labels.suffix_at(keep, wire.len());
            if let Some(ptr) = self.find(&wire[off..]) {
                let start = self.out.len();
                self.out.extend_from_slice(&wire[..off]);
                self.out.extend_from_slice(&(0xc000 | ptr).to_be_bytes());
                self.remember(start, off);
                return;
            }
        }
        let start = self.out.len();
        self.out.extend_from_slice(wire);
        self.remember(start, wire.len().saturating_sub(1));
    }

    fn remember(&mut self, start: usize, prefix_len: usize) {
        // only the uncompressed part's label starts are new targets
        if start > 0x3fff || prefix_len == 0 {
            return;
        }
        if self.n_names < self.names.len() {
            self.names[self.n_names] = start as u16;
            self.n_names += 1;
        }
    }

    /// An offset in `out` where a name equal (case-insensitively) to `suffix`
    /// starts, considering every label boundary of every remembered name.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        for &start in &self.names[..self.n_names] {
            let mut at = start as usize;
            // walk the labels of this remembered name
            let mut guard = 0;
            loop {
                if self.eq_at(at, suffix) {
                    return Some(at as u16);
                }
                let l = *self.out.get(at)? as usize;
                if l == 0 || l >= 0xc0 {
                    break;
                }
                at += 1 + l;
                guard += 1;
                if guard > 128 {
                    break;
                }
            }
        }
        None
    }

    /// Does the (possibly compressed) name at `at` equal `want`?
    fn eq_at(&self, mut at: usize, want: &[u8]) -> bool {
        let mut i = 0usize;
        let mut hops = 0;
        loop {
            let Some(&l) = self.out.get(at) else { return false };
            if l >= 0xc0 {
                let Some(&lo) = self.out.get(at + 1) else { return false };
                at = (usize::from(l & 0x3f) << 8) | usize::from(lo);
                hops += 1;
                if hops > 16 {
                    return false;
                }
                continue;
            }
            let l = l as usize;
            if want.get(i) != Some(&(l as u8)) {
                return false;
            }
            if l == 0 {
                return i + 1 == want.len();
            }
            let (Some(a), Some(b)) = (self.out.get(at + 1..at + 1 + l), want.get(i + 1..i + 1 + l)) else {
                return false;
            };
            if !a.eq_ignore_ascii_case(b) {
                return false;
            }
            at += 1 + l;
            i += 1 + l;
        }
    }

    fn owner(&mut self, o: Owner<'_>) {
        match o {
            Owner::Ptr(p) => self.out.extend_from_slice(&(0xc000 | p).to_be_bytes()),
            Owner::Name(n) => self.name(n),
        }
    }

    /// Writes an RRset. `None`: it did not fit. `Some(ptr)`: written, with
    /// the offset of the first record's target name when it can be pointed
    /// at (for chasing a CNAME).
    fn rrset(&mut self, sec: Section, owner: Owner<'_>, set: &RRset) -> Option<Option<u16>> {
        self.rrset_ttl(sec, owner, set, set.ttl)
    }

    /// An RRset and, for DNSSEC, its RRSIGs from `node` (RFC 4035 3.1.1:
    /// in answer and authority they must fit or the answer is truncated;
    /// in additional the RRset may stay without them).
    fn signed(&mut self, sec: Section, owner: Owner<'_>, set: &RRset, node: &Node) -> Option<Option<u16>> {
        self.signed_ttl(sec, owner, set, node, None)
    }

    /// [`signed`](Self::signed) with both TTLs replaced (negative answers).
    fn signed_ttl(
        &mut self,
        sec: Section,
        owner: Owner<'_>,
        set: &RRset,
        node: &Node,
        ttl: Option<u32>,
    ) -> Option<Option<u16>> {
        let r = self.rrset_ttl(sec, owner, set, ttl.unwrap_or(set.ttl))?;
        if self.dnssec {
            if let Some(sigs) = node.sigs_for(set.rtype) {
                let t = ttl.unwrap_or(sigs.ttl);
                if self.rrset_ttl(sec, owner, sigs, t).is_none() && sec != Section::Additional {
                    return None;
                }
            }
        }
        Some(r)
    }

    fn rrset_ttl(&mut self, sec: Section, owner: Owner<'_>, set: &RRset, ttl: u32) -> Option<Option<u16>> {
        if self.truncated {
            return None;
        }
        let mark = (self.out.len(), self.n_names);
        let mut target = None;
        for rd in &set.rdata {
            self.owner(owner);
            self.out.extend_from_slice(&set.rtype.to_be_bytes());
            self.out.extend_from_slice(&C_IN.to_be_bytes());
            self.out.extend_from_slice(&ttl.to_be_bytes());
            let len_at = self.out.len();
            self.out.extend_from_slice(&[0, 0]);
            let mut from = 0usize;
            for &c in &rd.compress[..rd.n_compress as usize] {
                let c = c as usize;
                self.out.extend_from_slice(&rd.wire[from..c]);
                let l = name::wire_len(&rd.wire[c..]).unwrap_or(rd.wire.len() - c);
                if rd.target as usize == c && target.is_none() && self.out.len() <= 0x3fff {
                    target = Some(self.out.len() as u16);
                }
                self.name(&rd.wire[c..c + l]);
                from = c + l;
            }
            if rd.n_compress == 0 && rd.target != u16::MAX {
                // uncompressible target (SRV, DNAME): later names may point at it
                let start = self.out.len() + rd.target as usize;
                self.out.extend_from_slice(&rd.wire[from..]);
                self.remember(start, 1);
            } else {
                self.out.extend_from_slice(&rd.wire[from..]);
            }
            let rdlen = (self.out.len() - len_at - 2) as u16;
            self.out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        }
        if self.out.len() > self.room() {
            self.out.truncate(mark.0);
            self.n_names = mark.1;
            if sec != Section::Additional {
                self.truncate_all();
            }
            return None;
        }
        self.counts[sec as usize] += set.rdata.len() as u16;
        Some(target)
    }

    /// A CNAME synthesized from a DNAME: owner -> `target` (lowercase wire).
    fn synth_cname(&mut self, owner: Owner<'_>, ttl: u32, target: &[u8]) -> Option<Option<u16>> {
        if self.truncated {
            return None;
        }
        let mark = (self.out.len(), self.n_names);
        self.owner(owner);
        self.out.extend_from_slice(&T_CNAME.to_be_bytes());
        self.out.extend_from_slice(&C_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        let tpos = self.out.len();
        self.name(target);
        let rdlen = (self.out.len() - len_at - 2) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        if self.out.len() > self.room() {
            self.out.truncate(mark.0);
            self.n_names = mark.1;
            self.truncate_all();
            return None;
        }
        self.counts[0] += 1;
        Some((tpos <= 0x3fff).then_some(tpos as u16))
    }

    fn truncate_all(&mut self) {
        self.truncated = true;
        // keep header and question only
        let qend = self.question_end();
        self.out.truncate(qend);
        self.counts = [0; 3];
        self.n_names = 1;
    }

    fn question_end(&self) -> usize {
        12 + name::wire_len(&self.out[12..]).unwrap_or(0) + 4
    }

    /// SOA in authority for NXDOMAIN/NODATA, TTL per RFC 2308.
    fn negative(&mut self, zone: &Zone) {
        if let (Some(apex), Some(soa)) = (zone.apex_node(), zone.soa()) {
            self.signed_ttl(
                Section::Authority,
                Owner::Name(apex.owner(&zone.apex)),
                soa,
                apex,
                Some(zone.negative_ttl),
            );
        }
    }

    /// A/AAAA for the targets of NS, MX, SRV, SVCB and HTTPS records in
    /// this zone (an SVCB/HTTPS ServiceMode target "." means the owner,
    /// `owner_lc`).
    fn additional_for(&mut self, zone: &Zone, set: &RRset, owner_lc: &[u8]) {
        if !matches!(set.rtype, T_NS | T_MX | T_SRV | T_SVCB | T_HTTPS) || self.truncated {
            return;
        }
        // the addresses first, then (DNSSEC) their signatures, as Knot:
        // when space runs out, the signatures are what is left out
        // (RFC 4035 3.1.1 allows it in the additional section)
        for pass in 0..1 + usize::from(self.dnssec) {
            self.additional_pass(zone, set, owner_lc, pass == 1);
        }
    }

    fn additional_pass(&mut self, zone: &Zone, set: &RRset, owner_lc: &[u8], sigs: bool) {
        for rd in &set.rdata {
            let Some(mut t) = rd.target_name() else { continue };
            if t == b"\0" && matches!(set.rtype, T_SVCB | T_HTTPS) {
                if rd.wire.starts_with(&[0, 0]) || owner_lc.is_empty() {
                    continue; // AliasMode "." : no service
                }
                t = owner_lc;
            }
            let mut lc = [0u8; MAX_NAME];
            let lc = &mut lc[..t.len()];
            name::lower_into(t, lc);
            if !name::is_at_or_below(lc, &zone.apex) {
                continue;
            }
            if let Some((key, node)) = zone.nodes.get_key_value(&lc[..]) {
                for ty in [T_A, T_AAAA] {
                    let s = if sigs {
                        node.get(ty).and_then(|_| node.sigs_for(ty))
                    } else {
                        node.get(ty)
                    };
                    if let Some(s) = s {
                        self.rrset(Section::Additional, Owner::Name(node.owner(key)), s);
                    }
                }
                // SVCB/HTTPS targets: also their own NSEC or NSEC3 (what
                // proves which address types they lack), as Knot 3.2 adds
                if self.dnssec && matches!(set.rtype, T_SVCB | T_HTTPS) {
                    if let Some((k, n, s)) = denial::own_denial(zone, lc) {
                        let s = if sigs { n.sigs_for(s.rtype) } else { Some(s) };
                        if let Some(s) = s {
                            self.rrset(Section::Additional, Owner::Name(n.owner(k)), s);
                        }
                    }
                }
            }
        }
    }

    /// Header flags, counts and OPT; `rcode` may be extended (BADVERS).
    fn finish(&mut self, rcode: u16, aa: bool, st: &Settings, q: &Query<'_>, cx: &Context, cookie: CookieState) {
        let out = &mut *self.out;
        out[2] =
            0x80 | (q.opcode << 3) | u8::from(q.rd) | if aa { 0x04 } else { 0 } | if self.truncated { 0x02 } else { 0 };
        out[3] = if q.cd { 0x10 } else { 0 } | (rcode & 0x0f) as u8;
        out[6..8].copy_from_slice(&self.counts[0].to_be_bytes());
        out[8..10].copy_from_slice(&self.counts[1].to_be_bytes());
        let mut ar = self.counts[2];
        if let Some(e) = &q.edns {
            ar += 1;
            out.push(0); // root owner
            out.extend_from_slice(&T_OPT.to_be_bytes());
            out.extend_from_slice(&st.udp_max.max(512).to_be_bytes());
            out.push((rcode >> 4) as u8);
            out.push(0); // version
            out.extend_from_slice(&(if e.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
            let len_at = out.len();
            out.extend_from_slice(&[0, 0]);
            if e.nsid {
                if let Some(n) = &st.nsid {
                    let n = &n[..n.len().min(32)];
                    out.extend_from_slice(&OPT_NSID.to_be_bytes());
                    out.extend_from_slice(&(n.len() as u16).to_be_bytes());
                    out.extend_from_slice(n);
                }
            }
            if let (Some(c), Some(s)) = (e.cookie, &st.cookies) {
                if c.len() >= 8 {
                    let sc = cookie::make(s, &c[..8], cx.src, cx.now);
                    out.extend_from_slice(&OPT_COOKIE.to_be_bytes());
                    out.extend_from_slice(&24u16.to_be_bytes());
                    out.extend_from_slice(&c[..8]);
                    out.extend_from_slice(&sc);
                }
            }
            if let Some(code) = self.ede {
                out.extend_from_slice(&OPT_EDE.to_be_bytes());
                out.extend_from_slice(&2u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
            }
            let _ = cookie;
            let l = (out.len() - len_at - 2) as u16;
            out[len_at..len_at + 2].copy_from_slice(&l.to_be_bytes());
        }
        out[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}

mod denial;
#[cfg(test)]
mod dnssec_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod slip_tests {
    #[test]
    fn slip_keeps_header_and_question_with_tc() {
        let mut out = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
        out.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        super::slip(&mut out);
        assert_eq!(out.len(), 12 + 7);
        assert_eq!(out[2] & 0x02, 0x02);
        assert_eq!(&out[6..12], &[0; 6]);
    }
}
