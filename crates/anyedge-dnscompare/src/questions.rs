//! The questions worth asking about a zone: [`ZoneIndex`] and its probes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use bytes::Bytes;
use domain::base::iana::{Class, Rtype};
use domain::base::name::{Name, ToName};
use domain::zonefile::inplace::{Entry, Zonefile};

use crate::differences::lower_wire;

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
