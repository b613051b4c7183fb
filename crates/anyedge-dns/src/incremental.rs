//! Applying an IXFR to a zone snapshot at the cost of the difference.
//!
//! Nodes are `Arc`s shared between versions: the new snapshot copies the
//! two node maps (pointers and keys, no record data), clones only the
//! nodes the difference touches, and patches the DNSSEC indexes (NSEC
//! canonical order, NSEC3 hashed order: binary search, insert/remove) and
//! checks only the touched nodes and their chain neighbours. Empty
//! non-terminals are kept right by child counts ([`Node::children`]): a
//! name left without records stays as an ENT while it has descendants, and
//! removing a name walks up its ancestors.
//!
//! Changes that alter what every other node's checks depend on (the apex
//! DNSKEY or NSEC3PARAM set, a delegation or DNAME appearing or going, the
//! zone becoming signed or unsigned, the NSEC chain emptying) re-index the
//! whole zone from the shared nodes; a change of "signed" falls back to a
//! rebuild ([`Outcome::Rebuild`]).
//!
//! A persistent map (HAMT, `imbl`) would also make the map copy O(log n),
//! at the price of slower lookups on every query; the copy here is
//! pointer-sized per node (about 10 ms for 200k names) and measured in
//! `bench/dns_ixfr_apply.sh`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::dnssec::{self, Denial, Index};
use crate::name;
use crate::zone::{add_to_node, canonical_cmp, encode_rdata, parent_of, prepare_node, soa_fields, Node, Zone};
use crate::zone::{F_DELEGATION, F_DNAME, T_DNSKEY, T_NS, T_NSEC, T_RRSIG, T_SOA};

/// What an incremental application gave.
pub enum Outcome {
    Zone(Box<Zone>),
    /// The change is one this module does not patch (the zone became
    /// signed or unsigned): build the new version from its records.
    Rebuild,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Tree,
    Nsec3,
    Gone,
}

/// Applies record removals (`(lowercase owner, type, rdata)`, each present
/// in `base`), then additions (`(owner, type, TTL, rdata)`), then the new
/// SOA, at UNIX time `now`.
pub fn apply_changes<'a>(
    base: &Zone,
    removed: impl IntoIterator<Item = (&'a [u8], u16, &'a [u8])>,
    added: impl IntoIterator<Item = (&'a [u8], u16, u32, &'a [u8])>,
    soa: (&[u8], u32, &[u8]),
    now: u64,
) -> Result<Outcome, String> {
    let apex: &[u8] = &base.apex;
    let mut dirty: FxHashMap<Box<[u8]>, Node> = FxHashMap::default();
    let mut records = base.records;
    let mut warnings = base.warnings.clone();
    let take = |dirty: &mut FxHashMap<Box<[u8]>, Node>, lc: &[u8], owner: &[u8]| {
        if !dirty.contains_key(lc) {
            let n = base.any_node(lc).cloned().unwrap_or_else(|| Node::new(owner, lc));
            dirty.insert(lc.into(), n);
        }
    };
    let same_set = |r: &crate::zone::RRset, rtype: u16, covered: Option<u16>| match covered {
        Some(c) => r.rdata.first().and_then(|x| dnssec::covered(&x.wire)) == Some(c),
        None => r.rtype == rtype,
    };
    for (lc, rtype, rd) in removed {
        take(&mut dirty, lc, lc);
        let Some(n) = dirty.get_mut(lc) else { continue };
        let covered = if rtype == T_RRSIG { dnssec::covered(rd) } else { None };
        let sets = if rtype == T_RRSIG { &mut n.sigs } else { &mut n.rrsets };
        if let Some(i) = sets.iter().position(|s| same_set(s, rtype, covered)) {
            let before = sets[i].rdata.len();
            sets[i].rdata.retain(|r| &r.wire[..] != rd);
            records -= before - sets[i].rdata.len();
            if sets[i].rdata.is_empty() {
                sets.remove(i);
            }
        }
    }
    let apex_labels = name::Labels::of(apex).len();
    let add = |dirty: &mut FxHashMap<Box<[u8]>, Node>,
               warnings: &mut Vec<String>,
               owner: &[u8],
               rtype: u16,
               ttl: u32,
               rd: &[u8]|
     -> Result<usize, String> {
        let lc = name::lower(owner);
        if !name::is_at_or_below(&lc, apex) {
            warnings.push(format!(
                "{}: out of zone {}, ignored",
                name::display(owner),
                name::display(apex)
            ));
            return Ok(0);
        }
        if matches!(rtype, 41 | 249 | 250 | 251 | 252 | 253 | 254 | 255) {
            return Err(format!("type {rtype} cannot appear in a zone"));
        }
        let rd = encode_rdata(rtype, rd)?;
        let labels = name::Labels::of(&lc);
        for keep in apex_labels..labels.len() {
            let off = labels.suffix_at(keep, lc.len());
            let anc = &lc[off..];
            if !dirty.contains_key(anc) && base.any_node(anc).is_none() {
                dirty.insert(anc.into(), Node::new(&owner[off..], anc));
            }
        }
        take(dirty, &lc, owner);
        match dirty.get_mut(&lc[..]) {
            Some(n) => Ok(usize::from(add_to_node(n, owner, rtype, ttl, rd, warnings)?)),
            None => Ok(0),
        }
    };
    for (owner, rtype, ttl, rd) in added {
        records += add(&mut dirty, &mut warnings, owner, rtype, ttl, rd)?;
    }
    // the new SOA replaces the old one
    take(&mut dirty, apex, apex);
    if let Some(n) = dirty.get_mut(apex) {
        let before = n.rrsets.len();
        n.rrsets.retain(|s| s.rtype != T_SOA);
        records -= before - n.rrsets.len();
    }
    records += add(&mut dirty, &mut warnings, soa.0, T_SOA, soa.1, soa.2)?;

    let zname = name::display(apex);
    let apex_node = dirty.get(apex).ok_or_else(|| format!("zone {zname} has no apex"))?;
    let soa_set = apex_node
        .get(T_SOA)
        .ok_or_else(|| format!("zone {zname} has no SOA record"))?;
    if apex_node.get(T_NS).is_none() {
        return Err(format!("zone {zname} has no NS records at its apex"));
    }
    let [serial, _, _, _, minimum] =
        soa_fields(&soa_set.rdata[0].wire).ok_or_else(|| format!("zone {zname}: malformed SOA"))?;
    let negative_ttl = soa_set.ttl.min(minimum);
    let signed = apex_node.get(T_DNSKEY).is_some();
    if signed != base.signed {
        return Ok(Outcome::Rebuild);
    }

    // where each touched node goes, deepest first: a node's child count is
    // final once every deeper touched node is placed
    let mut buckets: Vec<Vec<Box<[u8]>>> = Vec::new();
    for k in dirty.keys() {
        let d = name::Labels::of(k).len();
        if buckets.len() <= d {
            buckets.resize_with(d + 1, Vec::new);
        }
        buckets[d].push(k.clone());
    }
    let mut place: FxHashMap<Box<[u8]>, Place> = FxHashMap::default();
    for d in (0..buckets.len()).rev() {
        let keys = std::mem::take(&mut buckets[d]);
        for k in keys {
            let Some(n) = dirty.get(&k) else { continue };
            let p = if k[..] == *apex {
                Place::Tree
            } else if n.is_empty_non_terminal() {
                if n.children > 0 {
                    Place::Tree
                } else {
                    Place::Gone
                }
            } else if signed && dnssec::is_nsec3_only(n) {
                Place::Nsec3
            } else {
                Place::Tree
            };
            let was = i32::from(base.nodes.contains_key(&k));
            let delta = i32::from(p == Place::Tree) - was;
            if delta != 0 && k[..] != *apex {
                if let Some(par) = parent_of(&k) {
                    if !dirty.contains_key(par) {
                        let pn = base.any_node(par).cloned().unwrap_or_else(|| Node::new(par, par));
                        dirty.insert(par.into(), pn);
                        if d > 0 {
                            buckets[d - 1].push(par.into());
                        }
                    }
                    if let Some(pn) = dirty.get_mut(par) {
                        pn.children = pn.children.saturating_add_signed(delta);
                    }
                }
            }
            place.insert(k, p);
        }
    }

    let mut nodes = base.nodes.clone();
    let mut nsec3_nodes = base.nsec3_nodes.clone();
    // a delegation or DNAME appearing or going changes which names below it
    // are signed: then the whole index is checked again
    let mut cuts_changed = false;
    let mut touched: Vec<(Box<[u8]>, Place)> = Vec::with_capacity(dirty.len());
    for (k, mut n) in dirty {
        let p = place.get(&k).copied().unwrap_or(Place::Gone);
        let old_cut = base.any_node(&k).map_or(0, |o| o.flags & (F_DELEGATION | F_DNAME));
        match p {
            Place::Gone => {
                nodes.remove(&k);
                nsec3_nodes.remove(&k);
                cuts_changed |= old_cut != 0;
            }
            _ => {
                prepare_node(&k, &mut n, apex)?;
                cuts_changed |= old_cut != n.flags & (F_DELEGATION | F_DNAME);
                if p == Place::Tree {
                    nsec3_nodes.remove(&k);
                    nodes.insert(k.clone(), Arc::new(n));
                } else {
                    nodes.remove(&k);
                    nsec3_nodes.insert(k.clone(), Arc::new(n));
                }
            }
        }
        touched.push((k, p));
    }

    let dnssec = match (&base.dnssec, signed) {
        (_, false) => None,
        (Some(old), true) if !cuts_changed && !keys_changed(base, &nodes) => {
            match patch_index(base, old, &nodes, &nsec3_nodes, &touched, now)? {
                Some(ix) => Some(ix),
                None => Some(dnssec::index(apex, &nodes, &nsec3_nodes, now, &mut warnings)?),
            }
        }
        (_, true) => Some(dnssec::index(apex, &nodes, &nsec3_nodes, now, &mut warnings)?),
    };
    Ok(Outcome::Zone(Box::new(Zone {
        apex: base.apex.clone(),
        serial,
        negative_ttl,
        nodes,
        records,
        warnings,
        signed,
        nsec3_nodes,
        dnssec,
        online: None,
    })))
}

/// `v` (sorted by `cmp`) without `gone` and with `ins`: a copy when
/// nothing changes, else one merge pass (a chain of 100k owners is not
/// shifted once per changed owner).
fn patch_sorted<T: Clone>(
    v: &[T],
    mut gone: Vec<T>,
    mut ins: Vec<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    if gone.is_empty() && ins.is_empty() {
        return v.to_vec();
    }
    gone.sort_by(&cmp);
    ins.sort_by(&cmp);
    let mut out = Vec::with_capacity(v.len() + ins.len());
    let mut ins = ins.into_iter().peekable();
    for e in v {
        if gone.binary_search_by(|g| cmp(g, e)).is_ok() {
            continue;
        }
        while let Some(n) = ins.next_if(|n| cmp(n, e) == std::cmp::Ordering::Less) {
            out.push(n);
        }
        if ins.peek().is_some_and(|n| cmp(n, e) == std::cmp::Ordering::Equal) {
            ins.next();
        }
        out.push(e.clone());
    }
    out.extend(ins);
    out
}

/// Positions in `v` whose link to the next entry must be checked again:
/// each changed entry still there and the entry before where each was.
fn neighbours<T>(v: &[T], changed: &[T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<usize> {
    let mut out = Vec::with_capacity(2 * changed.len());
    if v.is_empty() {
        return out;
    }
    for c in changed {
        let i = match v.binary_search_by(|x| cmp(x, c)) {
            Ok(i) => {
                out.push(i);
                i
            }
            Err(i) => i,
        };
        out.push((i + v.len() - 1) % v.len());
    }
    out
}

/// Did the apex DNSKEY or NSEC3PARAM set change?
fn keys_changed(base: &Zone, nodes: &FxHashMap<Box<[u8]>, Arc<Node>>) -> bool {
    let (Some(old), Some(new)) = (base.apex_node(), nodes.get(&base.apex[..])) else {
        return true;
    };
    [T_DNSKEY, dnssec::T_NSEC3PARAM]
        .iter()
        .any(|&t| old.get(t) != new.get(t))
}

/// The index of the new version from the old one and the touched nodes;
/// `None` when the whole index must be rebuilt (no chain before, or the
/// NSEC chain emptied).
fn patch_index(
    base: &Zone,
    old: &Index,
    nodes: &FxHashMap<Box<[u8]>, Arc<Node>>,
    nsec3: &FxHashMap<Box<[u8]>, Arc<Node>>,
    touched: &[(Box<[u8]>, Place)],
    now: u64,
) -> Result<Option<Index>, String> {
    let apex: &[u8] = &base.apex;
    let apex_node = nodes.get(apex).ok_or("no apex")?;
    let keys = dnssec::apex_keys(apex, apex_node)?;
    let now32 = now as u32;
    let mut expirations: BTreeMap<u64, u32> = old.expirations.clone();
    for (k, p) in touched {
        if let Some(o) = base.any_node(k) {
            dnssec::count_expirations(&mut expirations, o, now, false);
        }
        let n = match p {
            Place::Tree => nodes.get(k),
            Place::Nsec3 => nsec3.get(k),
            Place::Gone => None,
        };
        if let Some(n) = n {
            dnssec::check_sigs(k, n, &keys, now32)?;
            dnssec::count_expirations(&mut expirations, n, now, true);
            if *p == Place::Tree && !dnssec::below_cut(apex, nodes, k) {
                dnssec::check_coverage(k, n)?;
            }
        }
    }
    // signatures nobody touched may have expired since the last version
    if let Some(&e) = expirations.keys().next() {
        if e < now {
            return Err(format!("{}: an RRSIG expired {} s ago", name::display(apex), now - e));
        }
    }
    let denial = match &old.denial {
        Denial::None => return Ok(None),
        Denial::Nsec(owners) => {
            let (mut gone, mut ins, mut changed) = (Vec::new(), Vec::new(), Vec::new());
            for (k, p) in touched {
                let in_chain = |m: &FxHashMap<Box<[u8]>, Arc<Node>>| m.get(k).is_some_and(|n| n.get(T_NSEC).is_some());
                // cuts did not change: below_cut is the same in both versions
                let below = dnssec::below_cut(apex, nodes, k);
                let had = !below && in_chain(&base.nodes);
                let has = !below && *p == Place::Tree && in_chain(nodes);
                if had && !has {
                    gone.push(k.clone());
                } else if has && !had {
                    ins.push(k.clone());
                }
                if had || has {
                    changed.push(k.clone());
                }
            }
            #[allow(clippy::borrowed_box)]
            let cmp = |a: &Box<[u8]>, b: &Box<[u8]>| canonical_cmp(a, b);
            let owners = patch_sorted(owners, gone, ins, cmp);
            if owners.is_empty() {
                return Ok(None);
            }
            for i in neighbours(&owners, &changed, cmp) {
                dnssec::check_nsec_link(nodes, &owners[i], &owners[(i + 1) % owners.len()])?;
            }
            Denial::Nsec(owners)
        }
        Denial::Nsec3(ix) => {
            let (mut gone, mut ins, mut changed) = (Vec::new(), Vec::new(), Vec::new());
            for (k, _) in touched {
                let old_h = match base.nsec3_nodes.get(k) {
                    Some(n) => dnssec::nsec3_chain_hash(k, n, ix.iterations, &ix.salt)?,
                    None => None,
                };
                let new_h = match nsec3.get(k) {
                    Some(n) => dnssec::nsec3_chain_hash(k, n, ix.iterations, &ix.salt)?,
                    None => None,
                };
                if old_h != new_h {
                    gone.extend(old_h.map(|h| (h, k.clone())));
                    ins.extend(new_h.map(|h| (h, k.clone())));
                }
                changed.extend(old_h.map(|h| (h, k.clone())));
                changed.extend(new_h.map(|h| (h, k.clone())));
            }
            let chain = patch_sorted(&ix.chain, gone, ins, Ord::cmp);
            if chain.is_empty() {
                return Err(format!(
                    "{}: NSEC3PARAM but no NSEC3 record with its parameters",
                    name::display(apex)
                ));
            }
            for i in neighbours(&chain, &changed, Ord::cmp) {
                let (_, owner) = &chain[i];
                dnssec::check_nsec3_link(nsec3, owner, &chain[(i + 1) % chain.len()].0)?;
            }
            Denial::Nsec3(dnssec::Nsec3Index {
                iterations: ix.iterations,
                salt: ix.salt.clone(),
                chain,
            })
        }
    };
    Ok(Some(Index { denial, expirations }))
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
