//! Two response messages in, the [`Difference`]s between them out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use domain::base::iana::{Class, OptRcode, OptionCode, Rtype};
use domain::base::name::{Name, ParsedName, ToName};
use domain::base::rdata::ComposeRecordData;
use domain::base::{Header, Message, ParsedRecord};
use domain::rdata::AllRecordData;

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
    pub(crate) fn new(part: Part, item: impl Into<String>, left: impl Into<String>, right: impl Into<String>) -> Self {
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

pub(crate) fn lower_wire(name: impl ToName) -> Vec<u8> {
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
