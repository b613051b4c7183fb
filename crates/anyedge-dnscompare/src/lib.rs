//! The difference between two servers' answers to the same question, and the
//! questions worth asking about a zone.
//!
//! Used by `anyedge dns compare` (before moving a zone: the old server
//! against anyedge) and by the conformance test against Knot DNS. Pure code:
//! bytes in, differences out; the caller does the I/O.
//!
//! - [`compare`] / [`compare_with`]: two response messages in, a list of
//!   [`Difference`]s out. Records are normalised first (owner lowercased,
//!   RDATA in RFC 4034 canonical form, so case and name compression do not
//!   matter) and each section is compared as a multiset of RRsets; the OPT
//!   record is compared on its own (NSID and the server half of a COOKIE
//!   differ per server by design and are only checked for presence).
//! - [`ZoneIndex`]: the owner names and types of a zone (from a zone file or
//!   any record source such as an AXFR) and [`ZoneIndex::questions`], the
//!   probes: every name with the types it has and some it lacks, random names
//!   under the apex, existing names, wildcards, delegations and DNAMEs,
//!   out-of-zone names, and a mixed-case copy of each.
//! - [`build_query`]: a query for one [`Question`] with [`QueryOptions`].
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use bytes::Bytes;
use domain::base::iana::{Class, OptRcode, OptionCode, Rtype};
use domain::base::message_builder::PushError;
use domain::base::name::{Name, ParsedName, ToName};
use domain::base::rdata::ComposeRecordData;
use domain::base::{Header, Message, MessageBuilder, ParsedRecord};
use domain::dep::octseq::OctetsBuilder;
use domain::rdata::AllRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};

// ---------------------------------------------------------------------------
// Differences

/// Which part of the message a [`Difference`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// The message as a whole (one side does not parse).
    Message,
    Opcode,
    /// The full rcode: header RCODE plus the OPT record's upper 8 bits.
    Rcode,
    /// One header flag; [`Difference::item`] names it (QR AA TC RD RA Z AD CD).
    Flag,
    Question,
    Answer,
    Authority,
    /// The additional section without the OPT record.
    Additional,
    /// The OPT record (EDNS): presence, UDP size, version, DO, options.
    Edns,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Message => "message",
            Part::Opcode => "opcode",
            Part::Rcode => "rcode",
            Part::Flag => "flag",
            Part::Question => "question",
            Part::Answer => "answer",
            Part::Authority => "authority",
            Part::Additional => "additional",
            Part::Edns => "edns",
        })
    }
}

/// One way in which the two messages differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub part: Part,
    /// What inside the part: an RRset (`www.example.com. IN A`), an RRset's
    /// TTLs (`www.example.com. IN A TTL`), a flag (`AA`), an EDNS field
    /// (`udp-size`, `DO`, `version`, `Z`, `OPT count`) or option (`NSID`,
    /// `option 65001`); empty for opcode, rcode, question and message.
    pub item: String,
    /// The first message's value (`-` when absent).
    pub left: String,
    /// The second message's value (`-` when absent).
    pub right: String,
}

impl Difference {
    fn new(part: Part, item: impl Into<String>, left: impl Into<String>, right: impl Into<String>) -> Self {
        Difference {
            part,
            item: item.into(),
            left: left.into(),
            right: right.into(),
        }
    }

    /// Multi-line text naming the two sides, e.g. `knot` and `anyedge`.
    pub fn labelled(&self, left: &str, right: &str) -> String {
        let w = left.len().max(right.len());
        let head = if self.item.is_empty() {
            self.part.to_string()
        } else {
            format!("{} {}", self.part, self.item)
        };
        format!("{head}\n  {left:<w$}  {}\n  {right:<w$}  {}", self.left, self.right)
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.part.to_string())?;
        if !self.item.is_empty() {
            write!(f, " {}", self.item)?;
        }
        write!(f, ": {} <> {}", self.left, self.right)
    }
}

/// What [`compare_with`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Compare TTLs (default: yes).
    pub ttl: bool,
    /// Compare the record sections when a message has TC set (default: no:
    /// what a truncated answer still carries is up to the server; a client
    /// retries over TCP, so compare those answers instead). The TC flag
    /// itself is always compared.
    pub truncated_sections: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: true,
            truncated_sections: false,
        }
    }
}

/// The differences between two DNS response messages, with default
/// [`Options`]. Empty when they are equivalent.
pub fn compare(left: &[u8], right: &[u8]) -> Vec<Difference> {
    compare_with(left, right, &Options::default())
}

/// The differences between two DNS response messages. Not compared: the
/// message ID (a per-query value), the order of records and RRsets inside
/// each section, owner-name case and name compression. The question is
/// compared exactly, case included (resolvers using 0x20 rely on the echo).
pub fn compare_with(left: &[u8], right: &[u8], opts: &Options) -> Vec<Difference> {
    let mut out = Vec::new();
    let (a, b) = match (Parsed::parse(left), Parsed::parse(right)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(ea), Err(eb)) => {
            if left != right {
                out.push(Difference::new(
                    Part::Message,
                    "",
                    format!("malformed: {ea}"),
                    format!("malformed: {eb}"),
                ));
            }
            return out;
        }
        (Err(e), Ok(_)) => {
            out.push(Difference::new(
                Part::Message,
                "",
                format!("malformed: {e}"),
                "well-formed",
            ));
            return out;
        }
        (Ok(_), Err(e)) => {
            out.push(Difference::new(
                Part::Message,
                "",
                "well-formed",
                format!("malformed: {e}"),
            ));
            return out;
        }
    };

    let (ha, hb) = (a.header, b.header);
    if ha.opcode() != hb.opcode() {
        out.push(Difference::new(
            Part::Opcode,
            "",
            ha.opcode().to_string(),
            hb.opcode().to_string(),
        ));
    }
    if a.rcode != b.rcode {
        out.push(Difference::new(
            Part::Rcode,
            "",
            a.rcode.to_string(),
            b.rcode.to_string(),
        ));
    }
    for (name, fa, fb) in [
        ("QR", ha.qr(), hb.qr()),
        ("AA", ha.aa(), hb.aa()),
        ("TC", ha.tc(), hb.tc()),
        ("RD", ha.rd(), hb.rd()),
        ("RA", ha.ra(), hb.ra()),
        ("Z", ha.z(), hb.z()),
        ("AD", ha.ad(), hb.ad()),
        ("CD", ha.cd(), hb.cd()),
    ] {
        if fa != fb {
            out.push(Difference::new(Part::Flag, name, bit(fa), bit(fb)));
        }
    }
    if a.questions != b.questions {
        out.push(Difference::new(
            Part::Question,
            "",
            list_or_dash(&a.questions),
            list_or_dash(&b.questions),
        ));
    }
    if opts.truncated_sections || !(ha.tc() || hb.tc()) {
        let parts = [Part::Answer, Part::Authority, Part::Additional];
        for ((part, ra), rb) in parts.into_iter().zip(&a.sections).zip(&b.sections) {
            compare_section(part, ra, rb, opts, &mut out);
        }
    }
    compare_edns(&a.opts, &b.opts, &mut out);
    out
}

fn bit(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn list_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(" ; ")
    }
}

/// An RRset's identity: lowercase owner (wire), class, type, and for RRSIG
/// the covered type (each covered type is its own set of signatures).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RrsetKey {
    owner: Vec<u8>,
    class: u16,
    rtype: u16,
    covered: u16,
}

struct Rr {
    key: RrsetKey,
    /// Lowercase owner, presentation format with the final dot.
    owner_text: String,
    ttl: u32,
    /// RDATA in RFC 4034 section 6.2 canonical form (uncompressed,
    /// lowercase names where the RFC says so).
    canon: Vec<u8>,
    /// RDATA in presentation format.
    text: String,
}

struct EdnsRecord {
    udp: u16,
    /// Upper 8 bits of the 12-bit extended RCODE.
    ext_rcode: u8,
    version: u8,
    flags: u16,
    options: Vec<(u16, Bytes)>,
}

struct Parsed {
    header: Header,
    rcode: OptRcode,
    questions: Vec<String>,
    sections: [Vec<Rr>; 3],
    opts: Vec<EdnsRecord>,
}

impl Parsed {
    fn parse(bytes: &[u8]) -> Result<Parsed, String> {
        let msg = Message::from_octets(Bytes::copy_from_slice(bytes))
            .map_err(|_| format!("{} octets, shorter than a header", bytes.len()))?;
        let header = msg.header();
        let mut questions = Vec::new();
        for q in msg.question() {
            let q = q.map_err(|e| format!("question: {e}"))?;
            questions.push(format!("{} {} {}", q.qname().fmt_with_dot(), q.qclass(), q.qtype()));
        }
        let mut sections: [Vec<Rr>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut opts = Vec::new();
        let mut section = msg.answer().map_err(|e| format!("answer: {e}"))?;
        for (i, name) in ["answer", "authority", "additional"].into_iter().enumerate() {
            for rr in &mut section {
                let rr = rr.map_err(|e| format!("{name}: {e}"))?;
                if rr.rtype() == Rtype::OPT && i == 2 {
                    opts.push(parse_opt(&rr).map_err(|e| format!("OPT: {e}"))?);
                    continue;
                }
                sections[i].push(parse_rr(&rr).map_err(|e| format!("{name}: {e}"))?);
            }
            if i < 2 {
                section = match section.next_section() {
                    Ok(Some(s)) => s,
                    Ok(None) => break,
                    Err(e) => return Err(format!("{name}: {e}")),
                };
            }
        }
        if sections[0].len() + sections[1].len() + sections[2].len() + opts.len()
            != usize::from(msg.header_counts().ancount())
                + usize::from(msg.header_counts().nscount())
                + usize::from(msg.header_counts().arcount())
        {
            return Err("record counts do not match the header".to_string());
        }
        let rcode = match opts.first() {
            Some(o) => OptRcode::from_parts(header.rcode(), o.ext_rcode),
            None => OptRcode::from_parts(header.rcode(), 0),
        };
        Ok(Parsed {
            header,
            rcode,
            questions,
            sections,
            opts,
        })
    }
}

fn parse_rr(rr: &ParsedRecord<'_, Bytes>) -> Result<Rr, String> {
    let owner = lower_wire(rr.owner());
    let owner_text = name_text(&owner);
    let class = rr.class().to_int();
    let rtype = rr.rtype();
    let ttl = rr.ttl().as_secs();
    let (canon, text, covered) = match rr.to_record::<AllRecordData<Bytes, ParsedName<Bytes>>>() {
        Ok(Some(rec)) => {
            let data = rec.data();
            let mut canon = Vec::new();
            data.compose_canonical_rdata(&mut canon)
                .map_err(|_| "RDATA too long".to_string())?;
            let covered = match data {
                AllRecordData::Rrsig(s) => s.type_covered().to_int(),
                _ => 0,
            };
            (canon, data.to_string(), covered)
        }
        // RDATA that does not parse as its type: compare the raw octets.
        Ok(None) | Err(_) => {
            let rec = rr
                .to_record::<domain::base::rdata::UnknownRecordData<Bytes>>()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "unparseable record".to_string())?;
            let raw = rec.data().data().to_vec();
            let text = format!("{} (malformed as {rtype})", rec.data());
            (raw, text, 0)
        }
    };
    Ok(Rr {
        key: RrsetKey {
            owner,
            class,
            rtype: rtype.to_int(),
            covered,
        },
        owner_text,
        ttl,
        canon,
        text,
    })
}

fn parse_opt(rr: &ParsedRecord<'_, Bytes>) -> Result<EdnsRecord, String> {
    let rec = rr
        .to_record::<domain::base::rdata::UnknownRecordData<Bytes>>()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "unparseable".to_string())?;
    let ttl = rr.ttl().as_secs();
    let data = rec.data().data();
    let mut options = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        if i + 4 > data.len() {
            return Err("option header runs past the end".to_string());
        }
        let code = u16::from_be_bytes([data[i], data[i + 1]]);
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if i + 4 + len > data.len() {
            return Err(format!("option {code} runs past the end"));
        }
        options.push((code, data.slice(i + 4..i + 4 + len)));
        i += 4 + len;
    }
    // The TTL field of OPT: extended RCODE (8), version (8), flags (16).
    Ok(EdnsRecord {
        udp: rr.class().to_int(),
        ext_rcode: (ttl >> 24) as u8,
        version: (ttl >> 16) as u8,
        flags: ttl as u16,
        options,
    })
}

fn lower_wire(name: impl ToName) -> Vec<u8> {
    // Label lengths are at most 63, below b'A', so lowercasing the whole
    // uncompressed wire form only touches label octets.
    name.to_vec().as_slice().to_ascii_lowercase()
}

/// Presentation format, final dot included, of an uncompressed wire name.
fn name_text(wire: &[u8]) -> String {
    match Name::from_slice(wire) {
        Ok(n) => n.fmt_with_dot().to_string(),
        Err(_) => format!("{wire:?}"),
    }
}

fn compare_section(part: Part, a: &[Rr], b: &[Rr], opts: &Options, out: &mut Vec<Difference>) {
    fn group(rrs: &[Rr]) -> BTreeMap<&RrsetKey, Vec<&Rr>> {
        let mut m: BTreeMap<&RrsetKey, Vec<&Rr>> = BTreeMap::new();
        for rr in rrs {
            m.entry(&rr.key).or_default().push(rr);
        }
        for v in m.values_mut() {
            v.sort_by(|x, y| x.canon.cmp(&y.canon).then(x.ttl.cmp(&y.ttl)));
        }
        m
    }
    fn key_text(rr: &Rr) -> String {
        let mut s = format!(
            "{} {} {}",
            rr.owner_text,
            Class::from_int(rr.key.class),
            Rtype::from_int(rr.key.rtype)
        );
        if rr.key.rtype == Rtype::RRSIG.to_int() {
            s.push_str(&format!(" covering {}", Rtype::from_int(rr.key.covered)));
        }
        s
    }
    fn set_text(v: Option<&Vec<&Rr>>) -> String {
        match v {
            None => "-".to_string(),
            Some(v) => v
                .iter()
                .map(|r| format!("{} {}", r.ttl, r.text))
                .collect::<Vec<_>>()
                .join(" ; "),
        }
    }
    let (ga, gb) = (group(a), group(b));
    let keys: BTreeSet<&&RrsetKey> = ga.keys().chain(gb.keys()).collect();
    for key in keys {
        let (sa, sb) = (ga.get(*key), gb.get(*key));
        let Some(first) = sa.or(sb).and_then(|v| v.first()) else {
            continue;
        };
        let item = key_text(first);
        match (sa, sb) {
            (Some(x), Some(y)) => {
                let same_data = x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| p.canon == q.canon);
                if !same_data {
                    out.push(Difference::new(part, item, set_text(sa), set_text(sb)));
                } else if opts.ttl && x.iter().zip(y.iter()).any(|(p, q)| p.ttl != q.ttl) {
                    let ttls = |v: &Vec<&Rr>| v.iter().map(|r| r.ttl.to_string()).collect::<Vec<_>>().join(" ");
                    out.push(Difference::new(part, format!("{item} TTL"), ttls(x), ttls(y)));
                }
            }
            _ => out.push(Difference::new(part, item, set_text(sa), set_text(sb))),
        }
    }
}

/// Option codes whose content is compared only in part.
const NSID: u16 = 3;
const COOKIE: u16 = 10;
const PADDING: u16 = 12;
const EDE: u16 = 15;

/// The comparable part of an option's data: NSID and padding by presence
/// only, COOKIE by its client half (the server half is per server by
/// design), Extended DNS Error by its INFO-CODE (the text is free-form).
fn option_key(code: u16, data: &Bytes) -> Bytes {
    match code {
        NSID | PADDING => Bytes::new(),
        COOKIE => data.slice(..data.len().min(8)),
        EDE => data.slice(..data.len().min(2)),
        _ => data.clone(),
    }
}

fn option_text(code: u16, key: &Bytes) -> String {
    match code {
        NSID | PADDING => "present".to_string(),
        COOKIE => format!("client {}", hex(key)),
        EDE if key.len() == 2 => format!("info-code {}", u16::from_be_bytes([key[0], key[1]])),
        _ if key.is_empty() => "(empty)".to_string(),
        _ => hex(key),
    }
}

fn option_name(code: u16) -> String {
    match code {
        NSID => "NSID".to_string(),
        COOKIE => "COOKIE".to_string(),
        PADDING => "Padding".to_string(),
        EDE => "EDE".to_string(),
        _ => match OptionCode::from_int(code).to_mnemonic() {
            Some(m) => String::from_utf8_lossy(m).into_owned(),
            None => format!("option {code}"),
        },
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn compare_edns(a: &[EdnsRecord], b: &[EdnsRecord], out: &mut Vec<Difference>) {
    if a.len() != b.len() {
        out.push(Difference::new(
            Part::Edns,
            "OPT count",
            a.len().to_string(),
            b.len().to_string(),
        ));
    }
    let (Some(x), Some(y)) = (a.first(), b.first()) else {
        return;
    };
    if x.udp != y.udp {
        out.push(Difference::new(
            Part::Edns,
            "udp-size",
            x.udp.to_string(),
            y.udp.to_string(),
        ));
    }
    if x.version != y.version {
        out.push(Difference::new(
            Part::Edns,
            "version",
            x.version.to_string(),
            y.version.to_string(),
        ));
    }
    let (dx, dy) = (x.flags & 0x8000 != 0, y.flags & 0x8000 != 0);
    if dx != dy {
        out.push(Difference::new(Part::Edns, "DO", bit(dx), bit(dy)));
    }
    if x.flags & 0x7fff != y.flags & 0x7fff {
        out.push(Difference::new(
            Part::Edns,
            "Z",
            format!("{:#06x}", x.flags & 0x7fff),
            format!("{:#06x}", y.flags & 0x7fff),
        ));
    }
    let group = |o: &EdnsRecord| {
        let mut m: BTreeMap<u16, Vec<Bytes>> = BTreeMap::new();
        for (code, data) in &o.options {
            m.entry(*code).or_default().push(option_key(*code, data));
        }
        for v in m.values_mut() {
            v.sort();
        }
        m
    };
    let (ga, gb) = (group(x), group(y));
    let codes: BTreeSet<u16> = ga.keys().chain(gb.keys()).copied().collect();
    for code in codes {
        let (va, vb) = (ga.get(&code), gb.get(&code));
        if va != vb {
            let text = |v: Option<&Vec<Bytes>>| match v {
                None => "-".to_string(),
                Some(v) => v.iter().map(|k| option_text(code, k)).collect::<Vec<_>>().join(" ; "),
            };
            out.push(Difference::new(Part::Edns, option_name(code), text(va), text(vb)));
        }
    }
}

// ---------------------------------------------------------------------------
// Questions

/// One question (class IN unless said otherwise). The name keeps its case:
/// mixed-case probes are part of the set.
#[derive(Clone, Debug)]
pub struct Question {
    pub qname: Name<Bytes>,
    pub qtype: Rtype,
    pub qclass: Class,
}

impl Question {
    pub fn new(qname: Name<Bytes>, qtype: Rtype) -> Self {
        Question {
            qname,
            qtype,
            qclass: Class::IN,
        }
    }

    /// Exact identity, case included (`Name`'s own equality ignores case).
    fn key(&self) -> (Vec<u8>, u16, u16) {
        (
            self.qname.as_slice().to_vec(),
            self.qtype.to_int(),
            self.qclass.to_int(),
        )
    }
}

impl PartialEq for Question {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Question {}

impl std::hash::Hash for Question {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.qname.fmt_with_dot(), self.qclass, self.qtype)
    }
}

/// Reading a zone for [`ZoneIndex`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A syntax error, `line:column: what`.
    #[error("zone file {0}")]
    Parse(String),
    #[error("$INCLUDE {0}: not supported here")]
    Include(String),
    #[error("no SOA record at the apex {0}")]
    NoSoa(String),
    /// A zone transfer answer that is not usable.
    #[error("AXFR: {0}")]
    Axfr(String),
}

/// The owner names of a zone (lowercase) with the record types at each;
/// empty non-terminals are present with no types.
#[derive(Clone, Debug)]
pub struct ZoneIndex {
    apex: Name<Bytes>,
    names: BTreeMap<Name<Bytes>, BTreeSet<Rtype>>,
}

/// Types asked at every name whether present or not.
pub const PROBE_TYPES: [Rtype; 8] = [
    Rtype::A,
    Rtype::AAAA,
    Rtype::MX,
    Rtype::TXT,
    Rtype::NS,
    Rtype::SOA,
    Rtype::CNAME,
    Rtype::ANY,
];

impl ZoneIndex {
    /// An empty index for the zone at `apex`.
    pub fn new(apex: &impl ToName) -> Self {
        let apex = lower_name(apex);
        let mut names = BTreeMap::new();
        names.insert(apex.clone(), BTreeSet::new());
        ZoneIndex { apex, names }
    }

    /// Reads zone file text (`$ORIGIN`, `$TTL`, relative names, `@`,
    /// parentheses, comments, RFC 3597 `\# len hex`; no `$INCLUDE`). Names
    /// are relative to `apex` until an `$ORIGIN` says otherwise.
    pub fn from_zonefile(text: &[u8], apex: &impl ToName) -> Result<Self, ZoneError> {
        let mut idx = ZoneIndex::new(apex);
        // the same rewrites as the zone loader (TTL units, SPF)
        let mut zf = match anyedge_dns::zonetext::for_domain(text) {
            Some(t) => Zonefile::from(&t[..]),
            None => Zonefile::from(text),
        };
        zf.set_origin(idx.apex.clone());
        zf.set_default_class(Class::IN);
        loop {
            match zf.next_entry() {
                Ok(Some(Entry::Record(r))) => idx.add(r.owner(), r.rtype()),
                Ok(Some(Entry::Include { path, .. })) => return Err(ZoneError::Include(path.to_string())),
                Ok(None) => break,
                Err(e) => return Err(ZoneError::Parse(e.to_string())),
            }
        }
        idx.check()?;
        Ok(idx)
    }

    /// Checks the zone has an SOA at its apex.
    pub fn check(&self) -> Result<(), ZoneError> {
        match self.names.get(&self.apex) {
            Some(t) if t.contains(&Rtype::SOA) => Ok(()),
            _ => Err(ZoneError::NoSoa(self.apex.fmt_with_dot().to_string())),
        }
    }

    /// Records that `owner` has a record of type `rtype`. Names outside the
    /// zone are ignored; the ancestors up to the apex become (empty
    /// non-terminal) names.
    pub fn add(&mut self, owner: &impl ToName, rtype: Rtype) {
        let owner = lower_name(owner);
        if !owner.ends_with(&self.apex) {
            return;
        }
        let mut n = Some(owner.clone());
        while let Some(name) = n {
            if name.label_count() <= self.apex.label_count() {
                break;
            }
            n = name.parent();
            self.names.entry(name).or_default();
        }
        self.names.entry(owner).or_default().insert(rtype);
    }

    /// The zone's apex (lowercase).
    pub fn apex(&self) -> &Name<Bytes> {
        &self.apex
    }

    /// Every name (lowercase, canonical order) with the types it has; empty
    /// non-terminals have none.
    pub fn names(&self) -> impl Iterator<Item = (&Name<Bytes>, &BTreeSet<Rtype>)> {
        self.names.iter()
    }

    /// The probe questions, deterministic for a given `seed` (random labels
    /// come from it):
    ///
    /// - every name (empty non-terminals included) with each type present
    ///   there plus [`PROBE_TYPES`], and DS at delegations;
    /// - negative probes: random labels under the apex (one and two deep),
    ///   under every name, under wildcards (which match, one and two deep,
    ///   with the wildcard's types), under delegations (referrals), below
    ///   DNAME owners (including a 255-octet name whose substitution may not
    ///   fit: YXDOMAIN), and out of the zone (the apex's parent and a
    ///   sibling);
    /// - a mixed-case copy of each of the above.
    pub fn questions(&self, seed: u64) -> Vec<Question> {
        let mut rng = SplitMix64(seed);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |out: &mut Vec<Question>, q: Question| {
            if seen.insert(q.key()) {
                out.push(q);
            }
        };
        let is_deleg = |n: &Name<Bytes>, t: &BTreeSet<Rtype>| *n != self.apex && t.contains(&Rtype::NS);

        for (name, types) in &self.names {
            for t in types.iter().chain(PROBE_TYPES.iter()) {
                push(&mut out, Question::new(name.clone(), *t));
            }
            if is_deleg(name, types) {
                push(&mut out, Question::new(name.clone(), Rtype::DS));
            }
        }

        // Negative and synthesised answers.
        let apex = self.apex.clone();
        for depth in 1..=2 {
            let n = self.random_child(&mut rng, &apex, depth);
            push(&mut out, Question::new(n.clone(), Rtype::A));
            push(&mut out, Question::new(n, Rtype::TXT));
        }
        for (name, types) in &self.names {
            if *name == apex {
                continue;
            }
            let n = self.random_child(&mut rng, name, 1);
            push(&mut out, Question::new(n, Rtype::A));
            if is_wildcard(name) {
                // Names the wildcard stands for, one and two labels deep.
                if let Some(parent) = name.parent() {
                    for depth in 1..=2 {
                        let n = self.random_child(&mut rng, &parent, depth);
                        for t in types
                            .iter()
                            .chain(&[Rtype::A, Rtype::AAAA, Rtype::MX, Rtype::TXT, Rtype::ANY])
                        {
                            push(&mut out, Question::new(n.clone(), *t));
                        }
                    }
                }
            }
            if is_deleg(name, types) {
                let n = self.random_child(&mut rng, name, 1);
                for t in [Rtype::A, Rtype::NS, Rtype::DS] {
                    push(&mut out, Question::new(n.clone(), t));
                }
                let n = self.random_child(&mut rng, name, 2);
                push(&mut out, Question::new(n, Rtype::AAAA));
            }
            if types.contains(&Rtype::DNAME) {
                let www = prepend(name, b"www");
                push(&mut out, Question::new(www.clone(), Rtype::A));
                push(&mut out, Question::new(www, Rtype::AAAA));
                let n = self.random_child(&mut rng, name, 1);
                push(&mut out, Question::new(n.clone(), Rtype::A));
                push(&mut out, Question::new(n, Rtype::CNAME));
                let n = self.random_child(&mut rng, name, 2);
                push(&mut out, Question::new(n, Rtype::TXT));
                if let Some(n) = longest_child(&mut rng, name) {
                    push(&mut out, Question::new(n, Rtype::A));
                }
            }
        }
        // Out of the zone: the parent, and a sibling of the apex.
        if let Some(parent) = apex.parent() {
            push(&mut out, Question::new(parent.clone(), Rtype::SOA));
            push(&mut out, Question::new(parent.clone(), Rtype::A));
            let mut label = apex.first().as_slice().to_vec();
            label.extend_from_slice(b"-");
            label.extend_from_slice(&random_label(&mut rng, 6));
            label.truncate(63);
            push(&mut out, Question::new(prepend(&parent, &label), Rtype::A));
        }

        // Mixed-case copies.
        let n = out.len();
        for i in 0..n {
            if let Some(name) = mixed_case(&mut rng, &out[i].qname) {
                let q = Question {
                    qname: name,
                    qtype: out[i].qtype,
                    qclass: out[i].qclass,
                };
                push(&mut out, q);
            }
        }
        out
    }

    /// `depth` random labels on top of `parent` (fewer when the name would
    /// grow past 255 octets), not an existing name; `parent` itself when no
    /// label fits.
    fn random_child(&self, rng: &mut SplitMix64, parent: &Name<Bytes>, depth: usize) -> Name<Bytes> {
        for _ in 0..100 {
            let mut n = parent.clone();
            for _ in 0..depth {
                n = prepend(&n, &random_label(rng, 10));
            }
            if n.as_slice().len() == parent.as_slice().len() {
                break;
            }
            if !self.names.contains_key(&n) {
                return n;
            }
        }
        parent.clone()
    }
}

fn is_wildcard(name: &Name<Bytes>) -> bool {
    name.first().as_slice() == b"*"
}

fn lower_name(n: &impl ToName) -> Name<Bytes> {
    let wire = Bytes::from(lower_wire(n));
    // A lowercased valid name is a valid name.
    Name::from_octets(wire).unwrap_or_else(|_| Name::root())
}

/// `label` + `parent`; `parent` itself when the result would not be a name.
fn prepend(parent: &Name<Bytes>, label: &[u8]) -> Name<Bytes> {
    if label.is_empty() || label.len() > 63 || parent.as_slice().len() + label.len() + 1 > 255 {
        return parent.clone();
    }
    let mut v = Vec::with_capacity(parent.as_slice().len() + label.len() + 1);
    v.push(label.len() as u8);
    v.extend_from_slice(label);
    v.extend_from_slice(parent.as_slice());
    Name::from_octets(Bytes::from(v)).unwrap_or_else(|_| parent.clone())
}

/// A name below `parent` that is exactly 255 octets long.
fn longest_child(rng: &mut SplitMix64, parent: &Name<Bytes>) -> Option<Name<Bytes>> {
    let mut n = parent.clone();
    let mut room = 255usize.checked_sub(parent.as_slice().len())?;
    if room < 2 {
        return None;
    }
    while room >= 2 {
        let len = (room - 1).min(63);
        n = prepend(&n, &random_label(rng, len));
        room -= len + 1;
    }
    Some(n)
}

/// Lowercase letters and digits, starting with a letter.
fn random_label(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| {
            let m = if i == 0 { 26 } else { ALNUM.len() as u64 };
            ALNUM[(rng.next() % m) as usize]
        })
        .collect()
}

/// The name with a random half of its letters uppercased (at least one);
/// `None` when it has no letters.
fn mixed_case(rng: &mut SplitMix64, name: &Name<Bytes>) -> Option<Name<Bytes>> {
    let mut wire = name.as_slice().to_vec();
    let mut letters = Vec::new();
    let mut i = 0usize;
    while i < wire.len() && wire[i] != 0 {
        let len = usize::from(wire[i]);
        for j in i + 1..=i + len {
            if j < wire.len() && wire[j].is_ascii_alphabetic() {
                letters.push(j);
            }
        }
        i += 1 + len;
    }
    if letters.is_empty() {
        return None;
    }
    let forced = letters[(rng.next() % letters.len() as u64) as usize];
    for &j in &letters {
        let upper = j == forced || rng.next() & 1 == 1;
        wire[j] = if upper {
            wire[j].to_ascii_uppercase()
        } else {
            wire[j].to_ascii_lowercase()
        };
    }
    Name::from_octets(Bytes::from(wire)).ok()
}

/// SplitMix64: small, seeded, good enough for probe labels.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------
// Queries

/// EDNS(0) in a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdnsQuery {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    /// EDNS version (anything but 0 must get BADVERS).
    pub version: u8,
    /// Ask for the server's NSID.
    pub nsid: bool,
    /// A client cookie (RFC 7873).
    pub cookie: Option<[u8; 8]>,
}

impl Default for EdnsQuery {
    fn default() -> Self {
        EdnsQuery {
            udp_size: 1232,
            dnssec_ok: false,
            version: 0,
            nsid: false,
            cookie: None,
        }
    }
}

/// How to ask: header flags and EDNS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Recursion desired (an authoritative server copies it back).
    pub rd: bool,
    /// Checking disabled (copied back too).
    pub cd: bool,
    /// `None`: no OPT record (plain RFC 1035, 512-octet UDP answers).
    pub edns: Option<EdnsQuery>,
}

/// A query message for `q`.
pub fn build_query(id: u16, q: &Question, opts: &QueryOptions) -> Result<Vec<u8>, PushError> {
    let mut b = MessageBuilder::new_vec();
    let h = b.header_mut();
    h.set_id(id);
    h.set_rd(opts.rd);
    h.set_cd(opts.cd);
    let mut b = b.question();
    b.push((&q.qname, q.qtype, q.qclass))?;
    let mut b = b.additional();
    if let Some(e) = opts.edns {
        b.opt(|o| {
            o.set_udp_payload_size(e.udp_size);
            o.set_dnssec_ok(e.dnssec_ok);
            o.set_version(e.version);
            if e.nsid {
                o.push_raw_option(OptionCode::NSID, 0, |_| Ok(()))?;
            }
            if let Some(c) = e.cookie {
                o.push_raw_option(OptionCode::COOKIE, 8, |t| t.append_slice(&c))?;
            }
            Ok(())
        })?;
    }
    Ok(b.finish())
}

/// The AXFR query for `zone` (to send over TCP).
pub fn axfr_query(id: u16, zone: &impl ToName) -> Result<Vec<u8>, PushError> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    let mut b = b.question();
    b.push((zone, Rtype::AXFR))?;
    Ok(b.finish())
}

/// Adds the records of one AXFR response message to `idx`; returns how many
/// SOA records it held (the transfer ends at the second), or why the message
/// is not a good AXFR answer.
pub fn add_axfr_message(idx: &mut ZoneIndex, msg: &[u8]) -> Result<usize, ZoneError> {
    let bad = |e: String| ZoneError::Axfr(e);
    let msg = Message::from_octets(Bytes::copy_from_slice(msg)).map_err(|_| bad("short message".into()))?;
    let rcode = msg.header().rcode();
    if rcode != domain::base::iana::Rcode::NOERROR {
        return Err(bad(format!("refused: {rcode}")));
    }
    let mut soas = 0;
    for rr in msg.answer().map_err(|e| bad(e.to_string()))? {
        let rr = rr.map_err(|e| bad(e.to_string()))?;
        if rr.rtype() == Rtype::SOA {
            soas += 1;
        }
        idx.add(&rr.owner(), rr.rtype());
    }
    Ok(soas)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use domain::base::iana::Rcode;
    use domain::base::message_builder::{AdditionalBuilder, StaticCompressor};
    use domain::base::Ttl;
    use domain::rdata::{Mx, Rrsig, Txt, A};
    use std::str::FromStr;

    fn name(s: &str) -> Name<Bytes> {
        Name::from_str(s).unwrap()
    }

    type Rec = (Name<Bytes>, u32, AllRecordData<Bytes, Name<Bytes>>);

    fn a(owner: &str, ttl: u32, ip: &str) -> Rec {
        (name(owner), ttl, AllRecordData::A(A::from_str(ip).unwrap()))
    }

    fn mx(owner: &str, ttl: u32, pref: u16, exch: &str) -> Rec {
        (name(owner), ttl, AllRecordData::Mx(Mx::new(pref, name(exch))))
    }

    /// (udp size, ext rcode, DO, options)
    type OptSpec = (u16, u8, bool, Vec<(u16, Vec<u8>)>);

    /// What a response is made of.
    struct Resp {
        qname: &'static str,
        qtype: Rtype,
        rcode: Rcode,
        aa: bool,
        tc: bool,
        answer: Vec<Rec>,
        authority: Vec<Rec>,
        additional: Vec<Rec>,
        opt: Option<OptSpec>,
        compress: bool,
    }

    impl Default for Resp {
        fn default() -> Self {
            Resp {
                qname: "www.example.com.",
                qtype: Rtype::A,
                rcode: Rcode::NOERROR,
                aa: true,
                tc: false,
                answer: vec![a("www.example.com.", 300, "192.0.2.1")],
                authority: vec![],
                additional: vec![],
                opt: None,
                compress: false,
            }
        }
    }

    fn finish<T: domain::base::wire::Composer>(mut b: AdditionalBuilder<T>, r: &Resp) -> T {
        for rec in &r.additional {
            b.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
        }
        if let Some((udp, ext, dnssec_ok, ref opts)) = r.opt {
            b.opt(|o| {
                o.set_udp_payload_size(udp);
                o.set_dnssec_ok(dnssec_ok);
                o.set_rcode(OptRcode::from_parts(r.rcode, ext));
                for (code, data) in opts {
                    o.push_raw_option(OptionCode::from_int(*code), data.len() as u16, |t| t.append_slice(data))?;
                }
                Ok(())
            })
            .unwrap();
        }
        b.finish()
    }

    fn build_with<T: domain::base::wire::Composer>(mut b: MessageBuilder<T>, r: &Resp) -> T {
        let h = b.header_mut();
        h.set_id(0x1234);
        h.set_qr(true);
        h.set_aa(r.aa);
        h.set_tc(r.tc);
        h.set_rcode(r.rcode);
        let mut q = b.question();
        q.push((name(r.qname), r.qtype)).unwrap();
        let mut an = q.answer();
        for rec in &r.answer {
            an.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
        }
        let mut ns = an.authority();
        for rec in &r.authority {
            ns.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
        }
        finish(ns.additional(), r)
    }

    fn build(r: &Resp) -> Vec<u8> {
        if r.compress {
            build_with(
                MessageBuilder::from_target(StaticCompressor::new(Vec::new())).unwrap(),
                r,
            )
            .into_target()
        } else {
            build_with(MessageBuilder::new_vec(), r)
        }
    }

    fn diff(a: &Resp, b: &Resp) -> Vec<Difference> {
        compare(&build(a), &build(b))
    }

    #[test]
    fn identical_messages_have_no_difference() {
        let r = Resp::default();
        assert_eq!(diff(&r, &r), vec![]);
    }

    #[test]
    fn order_case_compression_and_id_do_not_matter() {
        let left = Resp {
            qtype: Rtype::MX,
            answer: vec![
                mx("www.example.com.", 300, 10, "mail.example.com."),
                mx("www.example.com.", 300, 20, "backup.example.com."),
            ],
            additional: vec![
                a("mail.example.com.", 300, "192.0.2.25"),
                a("backup.example.com.", 300, "192.0.2.26"),
            ],
            ..Default::default()
        };
        let right = Resp {
            qtype: Rtype::MX,
            answer: vec![
                mx("WWW.Example.COM.", 300, 20, "BACKUP.example.com."),
                mx("www.example.com.", 300, 10, "mail.EXAMPLE.com."),
            ],
            additional: vec![
                a("backup.example.com.", 300, "192.0.2.26"),
                a("Mail.Example.Com.", 300, "192.0.2.25"),
            ],
            compress: true,
            ..Default::default()
        };
        let (l, mut r) = (build(&left), build(&right));
        assert_ne!(l.len(), r.len(), "one side compressed");
        r[0] = 0x99; // another ID
        assert_eq!(compare(&l, &r), vec![]);
    }

    #[test]
    fn rrset_differences_are_reported_per_rrset() {
        let left = Resp {
            answer: vec![
                a("www.example.com.", 300, "192.0.2.1"),
                a("www.example.com.", 300, "192.0.2.2"),
            ],
            ..Default::default()
        };
        let right = Resp {
            answer: vec![a("www.example.com.", 300, "192.0.2.1")],
            authority: vec![(
                name("example.com."),
                300,
                AllRecordData::Txt(Txt::build_from_slice(b"hi").unwrap()),
            )],
            ..Default::default()
        };
        let d = diff(&left, &right);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert_eq!(d[0].part, Part::Answer);
        assert_eq!(d[0].item, "www.example.com. IN A");
        assert_eq!(d[0].left, "300 192.0.2.1 ; 300 192.0.2.2");
        assert_eq!(d[0].right, "300 192.0.2.1");
        assert_eq!(d[1].part, Part::Authority);
        assert_eq!(d[1].item, "example.com. IN TXT");
        assert_eq!(d[1].left, "-");
        assert_eq!(d[1].right, "300 \"hi\"");
        // Same data, other section: still a difference.
        let moved = Resp {
            answer: vec![],
            additional: vec![a("www.example.com.", 300, "192.0.2.1")],
            ..Default::default()
        };
        let d = diff(&Resp::default(), &moved);
        assert_eq!(
            d.iter().map(|x| x.part).collect::<Vec<_>>(),
            vec![Part::Answer, Part::Additional]
        );
    }

    #[test]
    fn duplicates_count() {
        let left = Resp {
            answer: vec![
                a("www.example.com.", 300, "192.0.2.1"),
                a("www.example.com.", 300, "192.0.2.1"),
            ],
            ..Default::default()
        };
        let d = diff(&left, &Resp::default());
        assert_eq!(d.len(), 1, "{d:#?}");
    }

    #[test]
    fn ttl_differences_are_separate() {
        let right = Resp {
            answer: vec![a("www.example.com.", 3600, "192.0.2.1")],
            ..Default::default()
        };
        let d = diff(&Resp::default(), &right);
        assert_eq!(
            d,
            vec![Difference::new(
                Part::Answer,
                "www.example.com. IN A TTL",
                "300",
                "3600"
            )]
        );
        let opts = Options {
            ttl: false,
            ..Default::default()
        };
        assert_eq!(compare_with(&build(&Resp::default()), &build(&right), &opts), vec![]);
    }

    #[test]
    fn rrsigs_group_by_covered_type() {
        let sig = |covered: Rtype| -> Rec {
            (
                name("www.example.com."),
                300,
                AllRecordData::Rrsig(
                    Rrsig::new(
                        covered,
                        domain::base::iana::SecurityAlgorithm::ECDSAP256SHA256,
                        3,
                        Ttl::from_secs(300),
                        1.into(),
                        0.into(),
                        1234,
                        name("Example.COM."),
                        Bytes::from_static(b"sig"),
                    )
                    .unwrap(),
                ),
            )
        };
        let left = Resp {
            answer: vec![a("www.example.com.", 300, "192.0.2.1"), sig(Rtype::A)],
            ..Default::default()
        };
        let right = Resp {
            answer: vec![a("www.example.com.", 300, "192.0.2.1"), sig(Rtype::AAAA)],
            ..Default::default()
        };
        let d = diff(&left, &right);
        let items: Vec<_> = d.iter().map(|x| x.item.as_str()).collect();
        assert_eq!(
            items,
            vec![
                "www.example.com. IN RRSIG covering A",
                "www.example.com. IN RRSIG covering AAAA"
            ]
        );
        // The signer name's case does not matter (canonical form).
        assert_eq!(diff(&left, &left), vec![]);
    }

    #[test]
    fn header_rcode_and_flags() {
        let right = Resp {
            aa: false,
            rcode: Rcode::NXDOMAIN,
            answer: vec![],
            ..Default::default()
        };
        let d = diff(&Resp::default(), &right);
        assert_eq!(d[0], Difference::new(Part::Rcode, "", "NOERROR", "NXDOMAIN"));
        assert_eq!(d[1], Difference::new(Part::Flag, "AA", "1", "0"));
        assert_eq!(d[2].part, Part::Answer);
        assert_eq!(d.len(), 3);
        assert!(d[1].to_string().contains("flag AA: 1 <> 0"));
        assert!(d[1].labelled("knot", "ours").contains("  ours  0"));
    }

    #[test]
    fn extended_rcode_is_part_of_the_rcode() {
        let left = Resp {
            answer: vec![],
            opt: Some((1232, 1, false, vec![])), // BADVERS = 16
            ..Default::default()
        };
        let right = Resp {
            answer: vec![],
            opt: Some((1232, 0, false, vec![])),
            ..Default::default()
        };
        let d = diff(&left, &right);
        assert_eq!(d, vec![Difference::new(Part::Rcode, "", "BADVERS", "NOERROR")]);
    }

    #[test]
    fn question_is_compared_with_case() {
        let right = Resp {
            qname: "WWW.example.com.",
            ..Default::default()
        };
        let d = diff(&Resp::default(), &right);
        assert_eq!(
            d,
            vec![Difference::new(
                Part::Question,
                "",
                "www.example.com. IN A",
                "WWW.example.com. IN A"
            )]
        );
    }

    #[test]
    fn edns_fields_and_options() {
        let base = |opts: Vec<(u16, Vec<u8>)>| Resp {
            opt: Some((1232, 0, true, opts)),
            ..Default::default()
        };
        // Absent vs present.
        let d = diff(&Resp::default(), &base(vec![]));
        assert_eq!(d, vec![Difference::new(Part::Edns, "OPT count", "0", "1")]);
        // UDP size and DO.
        let other = Resp {
            opt: Some((4096, 0, false, vec![])),
            ..Default::default()
        };
        let d = diff(&base(vec![]), &other);
        assert_eq!(
            d,
            vec![
                Difference::new(Part::Edns, "udp-size", "1232", "4096"),
                Difference::new(Part::Edns, "DO", "1", "0"),
            ]
        );
        // NSID: presence only.
        let d = diff(&base(vec![(3, b"pop1".to_vec())]), &base(vec![(3, b"knot-a".to_vec())]));
        assert_eq!(d, vec![]);
        let d = diff(&base(vec![(3, b"pop1".to_vec())]), &base(vec![]));
        assert_eq!(d, vec![Difference::new(Part::Edns, "NSID", "present", "-")]);
        // COOKIE: the client half must match, the server half is free.
        let c1 = [vec![1u8; 8], vec![2u8; 16]].concat();
        let c2 = [vec![1u8; 8], vec![3u8; 16]].concat();
        let c3 = [vec![4u8; 8], vec![3u8; 16]].concat();
        assert_eq!(diff(&base(vec![(10, c1.clone())]), &base(vec![(10, c2)])), vec![]);
        let d = diff(&base(vec![(10, c1)]), &base(vec![(10, c3)]));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].item, "COOKIE");
        assert_eq!(d[0].left, "client 0101010101010101");
        // EDE: the info code counts, the text does not.
        let e = |code: u16, text: &str| [code.to_be_bytes().to_vec(), text.as_bytes().to_vec()].concat();
        assert_eq!(
            diff(&base(vec![(15, e(22, "a"))]), &base(vec![(15, e(22, "b"))])),
            vec![]
        );
        let d = diff(&base(vec![(15, e(22, ""))]), &base(vec![(15, e(20, ""))]));
        assert_eq!(
            d,
            vec![Difference::new(Part::Edns, "EDE", "info-code 22", "info-code 20")]
        );
        // Anything else: exact content.
        let d = diff(&base(vec![(65001, vec![1, 2])]), &base(vec![(65001, vec![1, 3])]));
        assert_eq!(d, vec![Difference::new(Part::Edns, "option 65001", "0102", "0103")]);
    }

    #[test]
    fn truncated_sections_are_skipped_by_default() {
        let left = Resp {
            tc: true,
            answer: vec![],
            ..Default::default()
        };
        let right = Resp {
            tc: true,
            ..Default::default()
        };
        assert_eq!(diff(&left, &right), vec![]);
        let opts = Options {
            truncated_sections: true,
            ..Default::default()
        };
        assert_eq!(compare_with(&build(&left), &build(&right), &opts).len(), 1);
        // One side truncated: the flag says it.
        let d = diff(&left, &Resp::default());
        assert_eq!(d, vec![Difference::new(Part::Flag, "TC", "1", "0")]);
    }

    #[test]
    fn malformed_messages() {
        let good = build(&Resp::default());
        let d = compare(&good[..5], &good);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].part, Part::Message);
        assert!(d[0].left.starts_with("malformed"), "{d:?}");
        // Counts promise more than there is.
        let mut bad = good.clone();
        bad[7] = 2;
        let d = compare(&good, &bad);
        assert_eq!(d[0].part, Part::Message, "{d:?}");
        assert_eq!(compare(&bad, &bad), vec![]);
    }

    #[test]
    fn rdata_that_does_not_parse_is_compared_raw() {
        // An A record with 3 octets of RDATA.
        let mut m = build(&Resp::default());
        let n = m.len();
        m[n - 6] = 0;
        m[n - 5] = 3;
        m.pop();
        let d = compare(&m, &m);
        assert_eq!(d, vec![]);
        let d = compare(&m, &build(&Resp::default()));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].left.contains("malformed as A"), "{d:?}");
    }

    const ZONE: &str = r#"
$TTL 300
@        IN SOA ns1 hostmaster 1 7200 3600 1209600 300
         NS    ns1
ns1      A     192.0.2.53
www      A     192.0.2.1
         AAAA  2001:db8::1
*.wild   TXT   "wild"
a.b.c    A     192.0.2.2
sub      NS    ns.sub
ns.sub   A     192.0.2.54
old      DNAME new.example.net.
Mixed.Case A   192.0.2.3
other.example.net. A 192.0.2.9
"#;

    fn zone() -> ZoneIndex {
        ZoneIndex::from_zonefile(ZONE.as_bytes(), &name("example.com.")).unwrap()
    }

    #[test]
    fn zone_index_names_types_and_empty_non_terminals() {
        let z = zone();
        let names: BTreeMap<String, Vec<String>> = z
            .names()
            .map(|(n, t)| (n.to_string(), t.iter().map(|t| t.to_string()).collect()))
            .collect();
        assert_eq!(names["example.com"], vec!["NS", "SOA"]);
        assert_eq!(names["www.example.com"], vec!["A", "AAAA"]);
        assert_eq!(names["b.c.example.com"], Vec::<String>::new(), "empty non-terminal");
        assert_eq!(names["c.example.com"], Vec::<String>::new(), "empty non-terminal");
        assert_eq!(names["wild.example.com"], Vec::<String>::new());
        assert_eq!(names["mixed.case.example.com"], vec!["A"], "lowercased");
        assert!(!names.contains_key("other.example.net"), "out of zone");
        assert_eq!(z.apex().to_string(), "example.com");
    }

    #[test]
    fn zone_errors() {
        let e = ZoneIndex::from_zonefile(b"www A 192.0.2.1\n", &name("example.com.")).unwrap_err();
        assert!(matches!(e, ZoneError::NoSoa(_)), "{e}");
        let e = ZoneIndex::from_zonefile(b"www A 192.0.2.300\n", &name("example.com.")).unwrap_err();
        assert!(matches!(e, ZoneError::Parse(_)), "{e}");
        let e = ZoneIndex::from_zonefile(b"$INCLUDE other.zone\n", &name("example.com.")).unwrap_err();
        assert!(matches!(e, ZoneError::Include(_)), "{e}");
    }

    #[test]
    fn questions_cover_names_types_and_negative_probes() {
        let z = zone();
        let qs = z.questions(7);
        assert_eq!(qs, z.questions(7), "deterministic");
        assert_ne!(qs, z.questions(8), "seeded");
        let text: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
        let has = |s: &str| text.iter().any(|t| t == s);
        for t in PROBE_TYPES {
            assert!(has(&format!("www.example.com. IN {t}")), "{t}");
            assert!(has(&format!("b.c.example.com. IN {t}")), "{t}");
        }
        assert!(has("sub.example.com. IN DS"));
        assert!(has("www.old.example.com. IN A"));
        assert!(has("com. IN SOA"), "out of zone");
        let lower: Vec<String> = text.iter().map(|t| t.to_ascii_lowercase()).collect();
        let count = |pred: &dyn Fn(&str) -> bool| lower.iter().filter(|t| pred(t)).count();
        // Wildcard matches at one and two labels, with the wildcard's type.
        assert!(count(&|t| t.ends_with(".wild.example.com. in txt") && !t.starts_with("*")) >= 2);
        // Names below the delegation.
        assert!(count(&|t| t.ends_with(".sub.example.com. in ds") && !t.starts_with("ns.")) >= 1);
        // The 255-octet name under the DNAME.
        assert!(qs
            .iter()
            .any(|q| q.qname.as_slice().len() == 255 && q.qname.ends_with(&name("old.example.com."))));
        // Mixed case: every question has a copy differing only in case
        // (names without letters excepted).
        let exact: HashSet<&String> = text.iter().collect();
        let mixed = qs
            .iter()
            .filter(|q| q.qname.as_slice().to_ascii_lowercase() != q.qname.as_slice())
            .count();
        assert_eq!(mixed * 2, text.len());
        assert!(exact.len() == text.len(), "no exact duplicates");
    }

    #[test]
    fn questions_for_names_near_the_length_limit() {
        let l63 = "a".repeat(63);
        let long = format!("{l63}.{l63}.{l63}.{}", "b".repeat(40)); // 246 octets with example.com
        let zone = format!("@ SOA ns h 1 2 3 4 5\n@ NS ns\n{long} A 192.0.2.1\n{long} DNAME x.\n");
        let z = ZoneIndex::from_zonefile(zone.as_bytes(), &name("example.com.")).unwrap();
        let qs = z.questions(1);
        assert!(qs.iter().all(|q| q.qname.as_slice().len() <= 255));
        assert!(qs.iter().any(|q| q.qname.as_slice().len() > 246));
    }

    #[test]
    fn queries_round_trip() {
        let q = Question::new(name("wWw.example.com."), Rtype::AAAA);
        let opts = QueryOptions {
            rd: true,
            cd: false,
            edns: Some(EdnsQuery {
                udp_size: 4096,
                dnssec_ok: true,
                version: 0,
                nsid: true,
                cookie: Some([9; 8]),
            }),
        };
        let wire = build_query(77, &q, &opts).unwrap();
        let msg = Message::from_octets(wire.as_slice()).unwrap();
        assert_eq!(msg.header().id(), 77);
        assert!(msg.header().rd());
        let qq = msg.first_question().unwrap();
        assert_eq!(qq.qname().to_string(), "wWw.example.com");
        assert_eq!(qq.qtype(), Rtype::AAAA);
        let opt = msg.opt().unwrap();
        assert_eq!(opt.udp_payload_size(), 4096);
        assert!(opt.dnssec_ok());
        let codes: Vec<u16> = opt
            .opt()
            .iter::<domain::base::opt::AllOptData<_, _>>()
            .map(|o| domain::base::opt::OptData::code(&o.unwrap()).to_int())
            .collect();
        assert_eq!(codes, vec![3, 10]);
        let plain = build_query(1, &q, &QueryOptions::default()).unwrap();
        assert!(Message::from_octets(plain.as_slice()).unwrap().opt().is_none());
        // A query compared with itself: fine.
        assert_eq!(compare(&wire, &wire), vec![]);
    }

    #[test]
    fn axfr_messages_fill_an_index() {
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_qr(true);
        let mut q = b.question();
        q.push((name("example.com."), Rtype::AXFR)).unwrap();
        let mut an = q.answer();
        let soa = domain::rdata::Soa::new(
            name("ns1.example.com."),
            name("h.example.com."),
            1.into(),
            Ttl::from_secs(1),
            Ttl::from_secs(1),
            Ttl::from_secs(1),
            Ttl::from_secs(1),
        );
        an.push((name("example.com."), 300, soa.clone())).unwrap();
        an.push((name("x.y.example.com."), 300, A::from_str("192.0.2.1").unwrap()))
            .unwrap();
        an.push((name("example.com."), 300, soa)).unwrap();
        let m = an.finish();
        let mut idx = ZoneIndex::new(&name("example.com."));
        assert_eq!(add_axfr_message(&mut idx, &m).unwrap(), 2);
        assert!(idx.check().is_ok());
        assert_eq!(idx.names().count(), 3);
        assert!(axfr_query(1, &name("example.com.")).is_ok());
    }
}
