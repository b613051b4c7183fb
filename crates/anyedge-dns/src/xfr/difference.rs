//! RFC 1995 differences between two versions of a zone: computing one
//! ([`diff`]) and applying a chain of them ([`apply`]).

use std::collections::{HashMap, HashSet};

use domain::base::iana::Rtype;

use super::records::{add_rr, RrKey};
use super::{zone_soa, Rr, XfrError};
use crate::name;
use crate::zone::{Zone, ZoneBuilder, T_SOA};

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
        for (key, n) in a.all_nodes() {
            let other = b.any_node(key);
            for set in n.all_sets() {
                if set.rtype == T_SOA {
                    continue;
                }
                let os = other
                    .and_then(|o| o.set_of(set.rtype, &set.rdata[0].wire))
                    .filter(|os| os.ttl == set.ttl);
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
/// error (the versions diverged: transfer the whole zone instead). The
/// new version shares every node the differences do not touch with `base`
/// and patches its indexes ([`crate::incremental`]): the cost follows the
/// differences, not the zone.
pub fn apply(base: &Zone, diffs: &[Diff]) -> Result<Zone, XfrError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    apply_at(base, diffs, now)
}

/// [`apply`] with signatures checked at UNIX time `now`.
pub fn apply_at(base: &Zone, diffs: &[Diff], now: u64) -> Result<Zone, XfrError> {
    let (removed, adds) = net_changes(base, diffs)?;
    let last = diffs.last().ok_or_else(|| XfrError::Ixfr("no differences".into()))?;
    let s = &last.new_soa;
    let out = crate::incremental::apply_changes(
        base,
        removed.iter().map(|k| (&k.0[..], k.1, &k.2[..])),
        adds.iter().map(|r| (&r.owner[..], r.rtype, r.ttl, &r.rdata[..])),
        (&s.owner, s.ttl, &s.rdata),
        now,
    )
    .map_err(XfrError::Zone)?;
    match out {
        crate::incremental::Outcome::Zone(z) => Ok(*z),
        crate::incremental::Outcome::Rebuild => rebuild(base, diffs, now),
    }
}

/// The net removals (sorted canonically for determinism) and additions
/// (canonical order) of a chain of differences, checked against `base`.
#[allow(clippy::type_complexity)]
fn net_changes(base: &Zone, diffs: &[Diff]) -> Result<(Vec<RrKey>, Vec<Rr>), XfrError> {
    if diffs.is_empty() {
        return Err(XfrError::Ixfr("no differences".into()));
    }
    let has_base = |k: &RrKey| -> bool {
        base.any_node(&k.0)
            .and_then(|n| n.set_of(k.1, &k.2))
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
    let mut removed: Vec<RrKey> = removed.into_iter().collect();
    removed.sort();
    let mut adds: Vec<Rr> = added.into_values().collect();
    sort_canonical(&mut adds);
    Ok((removed, adds))
}

/// The new version built from all its records (the zone became signed or
/// unsigned; also the reference the incremental path is tested against).
pub fn rebuild(base: &Zone, diffs: &[Diff], now: u64) -> Result<Zone, XfrError> {
    let (removed, adds) = net_changes(base, diffs)?;
    let removed: HashSet<RrKey> = removed.into_iter().collect();
    let last = diffs.last().ok_or_else(|| XfrError::Ixfr("no differences".into()))?;
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
    for r in &adds {
        add_rr(&mut b, r)?;
    }
    let s = &last.new_soa;
    b.add(&s.owner, T_SOA, s.ttl, &s.rdata).map_err(XfrError::Zone)?;
    b.finish_at(now).map_err(XfrError::Zone)
}
