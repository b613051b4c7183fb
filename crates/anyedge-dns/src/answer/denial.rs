//! Authenticated denial for DO queries of signed zones: which NSEC or
//! NSEC3 records prove an NXDOMAIN, a NODATA, a wildcard answer, a
//! wildcard NODATA or an unsigned delegation (RFC 4035 3.1.3, 3.1.4;
//! RFC 5155 7.2). Each proof is a few index lookups (see
//! [`crate::dnssec`]); nothing allocates.

use super::{Owner, Section, Writer};
use crate::compact::Online;
use crate::dnssec::{nsec_predecessor, Denial, Nsec3Index};
use crate::name::{Labels, MAX_NAME};
use crate::sign::{type_bitmap, T_NXNAME};
use crate::zone::{Node, RRset, Rdata, Zone, T_DS, T_NS, T_NSEC, T_RRSIG};

use crate::dnssec::T_NSEC3;

/// Proofs kept for one answer (one per step of a CNAME chain that needs
/// one; a longer chain of wildcards goes without the later proofs).
pub(super) const MAX_PENDING: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ProofKind {
    None,
    /// The name does not exist; `ce` labels is its closest encloser.
    NxDomain,
    /// The name exists without the type.
    NoData,
    /// Answered from the wildcard `*.ce`: no closer match exists.
    Wildcard,
    /// The wildcard `*.ce` exists without the type.
    WildcardNoData,
    /// A delegation without DS.
    NoDs,
}

#[derive(Clone, Copy)]
pub(super) struct Pending {
    kind: ProofKind,
    name: [u8; MAX_NAME],
    len: u8,
    ce: u8,
}

impl Pending {
    pub(super) const EMPTY: Pending = Pending {
        kind: ProofKind::None,
        name: [0; MAX_NAME],
        len: 0,
        ce: 0,
    };

    /// `name`: lowercase wire.
    pub(super) fn new(kind: ProofKind, name: &[u8], ce: usize) -> Pending {
        let mut p = Pending::EMPTY;
        let l = name.len().min(MAX_NAME);
        p.name[..l].copy_from_slice(&name[..l]);
        p.len = l as u8;
        p.ce = ce.min(255) as u8;
        p.kind = kind;
        p
    }
}

pub(super) fn write_proofs(w: &mut Writer<'_>, zone: &Zone, proofs: &[Pending]) {
    let Some(ix) = &zone.dnssec else { return };
    for p in proofs {
        let name = &p.name[..p.len as usize];
        let ce = p.ce as usize;
        match &ix.denial {
            Denial::Nsec(chain) => nsec_proof(w, zone, chain, p.kind, name, ce),
            Denial::Nsec3(n3) => nsec3_proof(w, zone, n3, p.kind, name, ce),
            Denial::None => {
                if let Some(on) = zone.online.as_deref() {
                    compact_proof(w, zone, on, p.kind, name, ce);
                }
            }
        }
    }
}

/// `*.` + the suffix of `name` with `ce` labels, into `buf`.
fn wildcard_of<'b>(name: &[u8], ce: usize, buf: &'b mut [u8; MAX_NAME + 2]) -> Option<&'b [u8]> {
    let enc = suffix(name, ce);
    if enc.len() + 2 > MAX_NAME {
        return None;
    }
    buf[0] = 1;
    buf[1] = b'*';
    buf[2..2 + enc.len()].copy_from_slice(enc);
    Some(&buf[..2 + enc.len()])
}

fn suffix(name: &[u8], keep: usize) -> &[u8] {
    let l = Labels::of(name);
    &name[l.suffix_at(keep.min(l.len()), name.len())..]
}

fn nsec_proof(w: &mut Writer<'_>, zone: &Zone, chain: &[Box<[u8]>], kind: ProofKind, name: &[u8], ce: usize) {
    let mut buf = [0u8; MAX_NAME + 2];
    match kind {
        ProofKind::None => {}
        ProofKind::NxDomain => {
            // the name and the wildcard that could have matched are covered
            put_nsec(w, zone, nsec_predecessor(chain, name));
            if let Some(wc) = wildcard_of(name, ce, &mut buf) {
                put_nsec(w, zone, nsec_predecessor(chain, wc));
            }
        }
        ProofKind::NoData | ProofKind::NoDs => {
            // the name's own NSEC; an empty non-terminal has none: the
            // NSEC before it proves it has no data (RFC 4035 3.1.3.1)
            if zone.node(name).is_some_and(|n| n.get(T_NSEC).is_some()) {
                put_nsec(w, zone, Some(name));
            } else if kind == ProofKind::NoData {
                put_nsec(w, zone, nsec_predecessor(chain, name));
            }
        }
        ProofKind::Wildcard => put_nsec(w, zone, nsec_predecessor(chain, name)),
        ProofKind::WildcardNoData => {
            put_nsec(w, zone, nsec_predecessor(chain, name));
            if let Some(wc) = wildcard_of(name, ce, &mut buf) {
                put_nsec(w, zone, Some(wc));
            }
        }
    }
}

fn nsec3_proof(w: &mut Writer<'_>, zone: &Zone, n3: &Nsec3Index, kind: ProofKind, name: &[u8], ce: usize) {
    let mut buf = [0u8; MAX_NAME + 2];
    match kind {
        ProofKind::None => {}
        ProofKind::NxDomain => {
            // RFC 5155 7.2.2: closest encloser proof, and the wildcard at
            // the closest encloser covered
            closest_encloser(w, zone, n3, name, ce);
            if let Some(wc) = wildcard_of(name, ce, &mut buf) {
                put_nsec3(w, zone, n3.covering(wc));
            }
        }
        ProofKind::NoData | ProofKind::NoDs => {
            // RFC 5155 7.2.3; without a matching NSEC3 (an opt-out span:
            // 7.2.4 for DS, 7.2.7 for referrals) the closest provable
            // encloser proof
            match n3.matching(name) {
                Some(o) => put_nsec3(w, zone, Some(o)),
                None => closest_provable(w, zone, n3, name),
            }
        }
        // RFC 5155 7.2.6: the next closer name is covered
        ProofKind::Wildcard => {
            let nl = Labels::of(name).len();
            if ce < nl {
                put_nsec3(w, zone, n3.covering(suffix(name, ce + 1)));
            }
        }
        // RFC 5155 7.2.5
        ProofKind::WildcardNoData => {
            closest_encloser(w, zone, n3, name, ce);
            if let Some(wc) = wildcard_of(name, ce, &mut buf) {
                put_nsec3(w, zone, n3.matching(wc));
            }
        }
    }
}

/// RFC 5155 7.2.1: the closest encloser (`ce` labels of `name`) matched
/// and the next closer name covered.
fn closest_encloser(w: &mut Writer<'_>, zone: &Zone, n3: &Nsec3Index, name: &[u8], ce: usize) {
    put_nsec3(w, zone, n3.matching(suffix(name, ce)));
    if ce < Labels::of(name).len() {
        put_nsec3(w, zone, n3.covering(suffix(name, ce + 1)));
    }
}

/// The closest ancestor of `name` with a matching NSEC3, and the next
/// closer name covered (by an opt-out span).
fn closest_provable(w: &mut Writer<'_>, zone: &Zone, n3: &Nsec3Index, name: &[u8]) {
    let nl = Labels::of(name).len();
    let apex_n = Labels::of(&zone.apex).len();
    for keep in (apex_n..nl).rev() {
        if let Some(o) = n3.matching(suffix(name, keep)) {
            put_nsec3(w, zone, Some(o));
            put_nsec3(w, zone, n3.covering(suffix(name, keep + 1)));
            return;
        }
    }
}

/// The NSEC of `name_lc`, or the NSEC3 matching it: (owner key, node,
/// RRset).
pub(super) fn own_denial<'z>(zone: &'z Zone, name_lc: &[u8]) -> Option<(&'z [u8], &'z Node, &'z RRset)> {
    match &zone.dnssec.as_ref()?.denial {
        Denial::Nsec(_) => {
            let (k, n) = zone.nodes.get_key_value(name_lc)?;
            Some((k, n, n.get(T_NSEC)?))
        }
        Denial::Nsec3(n3) => {
            let (k, n) = zone.nsec3_nodes.get_key_value(n3.matching(name_lc)?)?;
            Some((k, n, n.get(T_NSEC3)?))
        }
        Denial::None => None,
    }
}

/// RFC 9824: one NSEC at `name`, made and signed now: next name
/// `\000.<name>`, the types the name has (none but RRSIG and NSEC for an
/// empty non-terminal; NS and DS at a delegation), or NXNAME if it does not
/// exist. Allocates (compact zones' negative answers only).
fn compact_proof(w: &mut Writer<'_>, zone: &Zone, on: &Online, kind: ProofKind, name: &[u8], ce: usize) {
    let mut buf = [0u8; MAX_NAME + 2];
    let node = match kind {
        ProofKind::None | ProofKind::Wildcard => return,
        ProofKind::NxDomain => None,
        ProofKind::NoData | ProofKind::NoDs => zone.node(name),
        ProofKind::WildcardNoData => wildcard_of(name, ce, &mut buf).and_then(|wc| zone.node(wc)),
    };
    if name.len() + 2 > MAX_NAME {
        return;
    }
    let mut types: Vec<u16> = vec![T_RRSIG, T_NSEC];
    match node {
        None => types.push(T_NXNAME),
        Some(n) => {
            let cut = n.is_delegation();
            types.extend(
                n.rrsets
                    .iter()
                    .map(|s| s.rtype)
                    .filter(|&t| !cut || t == T_NS || t == T_DS),
            );
        }
    }
    let mut rd = Vec::with_capacity(name.len() + 2 + 40);
    rd.extend_from_slice(&[1, 0]);
    rd.extend_from_slice(name);
    rd.extend(type_bitmap(&types));
    let Some(sig) = on.rrsig(name, T_NSEC, zone.negative_ttl, &[&rd], w.now) else {
        return;
    };
    let one = |rtype: u16, wire: Box<[u8]>| RRset {
        rtype,
        ttl: zone.negative_ttl,
        rdata: vec![Rdata {
            wire,
            compress: [0; 2],
            n_compress: 0,
            target: u16::MAX,
        }],
    };
    let owner = Owner::Name(name);
    if w.rrset(Section::Authority, owner, &one(T_NSEC, rd.into())).is_some() {
        w.rrset(Section::Authority, owner, &one(T_RRSIG, sig.as_ref().into()));
    }
}

impl Writer<'_> {
    /// An RRset with an RRSIG made now at `owner_lc` (compact-denial
    /// zones' wildcard answers: signed as if the query name existed).
    pub(super) fn signed_online(
        &mut self,
        sec: Section,
        owner: Owner<'_>,
        owner_lc: &[u8],
        set: &RRset,
        on: &Online,
    ) -> Option<Option<u16>> {
        let r = self.rrset(sec, owner, set)?;
        let rds: Vec<&[u8]> = set.rdata.iter().map(|r| &r.wire[..]).collect();
        if let Some(sig) = on.rrsig(owner_lc, set.rtype, set.ttl, &rds, self.now) {
            let s = RRset {
                rtype: T_RRSIG,
                ttl: set.ttl,
                rdata: vec![Rdata {
                    wire: sig.as_ref().into(),
                    compress: [0; 2],
                    n_compress: 0,
                    target: u16::MAX,
                }],
            };
            self.rrset(sec, owner, &s)?;
        }
        Some(r)
    }
}

fn put_nsec(w: &mut Writer<'_>, zone: &Zone, owner: Option<&[u8]>) {
    let Some(owner) = owner else { return };
    if let Some((k, n)) = zone.nodes.get_key_value(owner) {
        if let Some(set) = n.get(T_NSEC) {
            if w.first_proof(k.as_ptr() as usize) {
                w.signed(Section::Authority, Owner::Name(n.owner(k)), set, n);
            }
        }
    }
}

fn put_nsec3(w: &mut Writer<'_>, zone: &Zone, owner: Option<&[u8]>) {
    let Some(owner) = owner else { return };
    if let Some((k, n)) = zone.nsec3_nodes.get_key_value(owner) {
        if let Some(set) = n.get(T_NSEC3) {
            if w.first_proof(k.as_ptr() as usize) {
                w.signed(Section::Authority, Owner::Name(n.owner(k)), set, n);
            }
        }
    }
}

impl Writer<'_> {
    /// True the first time this proof record is asked for.
    fn first_proof(&mut self, id: usize) -> bool {
        if self.proved[..self.n_proved].contains(&id) {
            return false;
        }
        if self.n_proved < self.proved.len() {
            self.proved[self.n_proved] = id;
            self.n_proved += 1;
        }
        true
    }
}
