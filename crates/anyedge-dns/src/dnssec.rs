//! DNSSEC data of a pre-signed zone, indexed at load so that answering a
//! DO query costs lookups, never a scan of the zone:
//!
//! - RRSIGs are kept per node grouped by the type they cover
//!   ([`Node::sigs`](crate::zone::Node)), each group with its own TTL;
//! - an NSEC zone keeps its NSEC owners in canonical order (RFC 4034 6.1):
//!   the NSEC covering a name is a binary search for its predecessor;
//! - an NSEC3 zone keeps its parameters (RFC 5155 from NSEC3PARAM) and the
//!   hashed owners sorted by hash: the NSEC3 matching or covering a name
//!   is one SHA-1 hash chain plus a binary search.
//!
//! The index is built from the records alone, so a zone signed elsewhere
//! (a file, or a transfer from a signing primary) and, later, a zone
//! signed here (online signing) can share it: the signer only has to
//! produce the records.
//!
//! NSEC3 iterations: RFC 9276 3.1 says iterations SHOULD be 0 and 3.2 lets
//! validators treat zones above their limit as insecure (or bogus). Each
//! proof costs up to four hashes of (iterations + 1) SHA-1 rounds per
//! query, so a zone with more than [`MAX_NSEC3_ITERATIONS`] (100) is
//! refused at load (the previous version keeps serving); 1..=100 loads
//! with a warning.
//!
//! Load checks (structural; signatures are not verified, which would cost
//! one public-key operation per RRset): every authoritative RRset of a
//! signed zone has an RRSIG, no RRSIG has expired or is not yet valid, every
//! RRSIG names a DNSKEY of the apex (key tag and algorithm), algorithms are
//! ones validators implement, the NSEC/NSEC3 chain is closed without gaps.

use crate::name;
use crate::zone::{canonical_cmp, Node, RRset, T_DNSKEY, T_DS, T_NSEC};

pub const T_NSEC3: u16 = 50;
pub const T_NSEC3PARAM: u16 = 51;

/// NSEC3 iterations above this are refused at load (RFC 9276, see above).
pub const MAX_NSEC3_ITERATIONS: u16 = 100;

/// Algorithms a zone may be signed with (RFC 8624 "MUST"/"RECOMMENDED"
/// for validation): RSASHA1 (5), RSASHA1-NSEC3-SHA1 (7), RSASHA256 (8),
/// RSASHA512 (10), ECDSAP256SHA256 (13), ECDSAP384SHA384 (14), ED25519
/// (15), ED448 (16).
pub const SUPPORTED_ALGORITHMS: &[u8] = &[5, 7, 8, 10, 13, 14, 15, 16];

/// How absence is proven in this zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Lowercase owners of NSEC records, canonical order.
    Nsec(Vec<Box<[u8]>>),
    Nsec3(Nsec3Index),
    /// A signed zone without a chain (proofs cannot be given).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nsec3Index {
    pub iterations: u16,
    pub salt: Box<[u8]>,
    /// (raw hash of the owner, lowercase owner) sorted by hash.
    pub chain: Vec<([u8; 20], Box<[u8]>)>,
}

impl Nsec3Index {
    /// RFC 5155 5: IH(salt, x, k) with SHA-1 (algorithm 1, the only one
    /// defined), `owner` a lowercase wire name.
    pub fn hash(&self, owner: &[u8]) -> [u8; 20] {
        nsec3_hash(owner, &self.salt, self.iterations)
    }

    /// The NSEC3 owner whose hash equals that of `owner_lc`.
    pub fn matching(&self, owner_lc: &[u8]) -> Option<&[u8]> {
        let h = self.hash(owner_lc);
        self.chain
            .binary_search_by(|(k, _)| k[..].cmp(&h[..]))
            .ok()
            .map(|i| &self.chain[i].1[..])
    }

    /// The NSEC3 owner whose span covers the hash of `owner_lc` (the
    /// greatest hash below it, wrapping around), unless one matches it.
    pub fn covering(&self, owner_lc: &[u8]) -> Option<&[u8]> {
        let h = self.hash(owner_lc);
        let i = match self.chain.binary_search_by(|(k, _)| k[..].cmp(&h[..])) {
            Ok(_) => return None,
            Err(i) => i,
        };
        let i = if i == 0 {
            self.chain.len().checked_sub(1)?
        } else {
            i - 1
        };
        Some(&self.chain[i].1[..])
    }
}

/// The NSEC owner covering or matching `qname_lc`: the greatest owner that
/// is not after it in canonical order (the last one wraps around).
pub fn nsec_predecessor<'a>(chain: &'a [Box<[u8]>], qname_lc: &[u8]) -> Option<&'a [u8]> {
    let i = chain.partition_point(|o| canonical_cmp(o, qname_lc) != std::cmp::Ordering::Greater);
    let i = if i == 0 { chain.len().checked_sub(1)? } else { i - 1 };
    Some(&chain[i][..])
}

/// RFC 5155 5 hash (SHA-1 from `ring`).
pub fn nsec3_hash(owner_lc: &[u8], salt: &[u8], iterations: u16) -> [u8; 20] {
    let alg = &ring::digest::SHA1_FOR_LEGACY_USE_ONLY;
    let mut ctx = ring::digest::Context::new(alg);
    ctx.update(owner_lc);
    ctx.update(salt);
    let mut h = [0u8; 20];
    h.copy_from_slice(ctx.finish().as_ref());
    for _ in 0..iterations {
        let mut ctx = ring::digest::Context::new(alg);
        ctx.update(&h);
        ctx.update(salt);
        h.copy_from_slice(ctx.finish().as_ref());
    }
    h
}

/// Base32hex (RFC 4648 7) without padding, case-insensitive, as NSEC3
/// owner labels are written. Hand-written: 15 lines, no crate of the
/// workspace offers it.
pub fn base32hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c.to_ascii_lowercase() {
            b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'v' => c - b'a' + 10,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// RFC 4034 appendix B key tag of DNSKEY rdata (a checksum, not crypto).
pub fn key_tag(rdata: &[u8]) -> u16 {
    let mut ac: u32 = 0;
    for (i, &b) in rdata.iter().enumerate() {
        ac += if i & 1 == 1 { u32::from(b) } else { u32::from(b) << 8 };
    }
    ac += (ac >> 16) & 0xffff;
    (ac & 0xffff) as u16
}

/// Fields of RRSIG rdata the checks need.
pub struct Rrsig {
    pub covered: u16,
    pub algorithm: u8,
    pub expiration: u32,
    pub inception: u32,
    pub key_tag: u16,
}

pub fn parse_rrsig(rd: &[u8]) -> Option<Rrsig> {
    let f = rd.get(..18)?;
    Some(Rrsig {
        covered: u16::from_be_bytes([f[0], f[1]]),
        algorithm: f[2],
        expiration: u32::from_be_bytes([f[8], f[9], f[10], f[11]]),
        inception: u32::from_be_bytes([f[12], f[13], f[14], f[15]]),
        key_tag: u16::from_be_bytes([f[16], f[17]]),
    })
}

/// Does an NSEC/NSEC3 type bitmap (RFC 4034 4.1.2) list `rtype`?
pub fn bitmap_has(bitmap: &[u8], rtype: u16) -> bool {
    let (win, bit) = ((rtype >> 8) as u8, (rtype & 0xff) as usize);
    let mut i = 0;
    while i + 2 <= bitmap.len() {
        let (w, l) = (bitmap[i], bitmap[i + 1] as usize);
        if w == win {
            return bitmap
                .get(i + 2 + bit / 8)
                .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0);
        }
        i += 2 + l;
    }
    false
}

/// RFC 1982 serial comparison of 32-bit signature times: a < b.
fn time_before(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Everything the answering needs to know about a signed zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub denial: Denial,
    /// RRSIG expirations (UNIX seconds, unwrapped around the load time) and
    /// how many signatures expire then: the earliest is the zone's
    /// signature deadline; an IXFR updates it by the signatures it
    /// touches (no scan of the zone).
    pub expirations: std::collections::BTreeMap<u64, u32>,
}

impl Index {
    /// UNIX time of the earliest RRSIG expiration, if any RRSIG.
    pub fn earliest_expiration(&self) -> Option<u64> {
        self.expirations.keys().next().copied()
    }
}

/// A 32-bit RRSIG time as UNIX seconds, the one nearest to `now` (RFC 4034
/// 3.1.5 serial arithmetic).
pub fn unwrap_time(t: u32, now: u64) -> u64 {
    let d = t.wrapping_sub(now as u32) as i32;
    now.saturating_add_signed(i64::from(d))
}

/// Adds (`+1`) or removes (`-1`) the expirations of a node's RRSIGs.
pub(crate) fn count_expirations(exp: &mut std::collections::BTreeMap<u64, u32>, n: &Node, now: u64, add: bool) {
    for g in &n.sigs {
        for rd in &g.rdata {
            let Some(s) = parse_rrsig(&rd.wire) else { continue };
            let t = unwrap_time(s.expiration, now);
            if add {
                *exp.entry(t).or_insert(0) += 1;
            } else if let Some(c) = exp.get_mut(&t) {
                *c -= 1;
                if *c == 0 {
                    exp.remove(&t);
                }
            }
        }
    }
}

type NodeMap = rustc_hash::FxHashMap<Box<[u8]>, std::sync::Arc<Node>>;

/// (key tag, algorithm) of the apex DNSKEYs; an unsupported algorithm is an
/// error.
pub(crate) fn apex_keys(apex: &[u8], apex_node: &Node) -> Result<Vec<(u16, u8)>, String> {
    let keys: Vec<(u16, u8)> = apex_node
        .get(T_DNSKEY)
        .map(|s| {
            s.rdata
                .iter()
                .filter(|r| r.wire.len() > 4)
                .map(|r| (key_tag(&r.wire), r.wire[3]))
                .collect()
        })
        .unwrap_or_default();
    for (_, alg) in &keys {
        if !SUPPORTED_ALGORITHMS.contains(alg) {
            return Err(format!(
                "{}: DNSKEY algorithm {alg} is not supported (supported: {SUPPORTED_ALGORITHMS:?})",
                name::display(apex)
            ));
        }
    }
    Ok(keys)
}

/// Signatures of one node: well-formed, current, from a DNSKEY of the apex.
pub(crate) fn check_sigs(key: &[u8], n: &Node, keys: &[(u16, u8)], now32: u32) -> Result<(), String> {
    let owner = || name::display(n.owner(key));
    for g in &n.sigs {
        for rd in &g.rdata {
            let s = parse_rrsig(&rd.wire).ok_or_else(|| format!("{}: malformed RRSIG", owner()))?;
            let ty = domain::base::iana::Rtype::from_int(s.covered);
            if !SUPPORTED_ALGORITHMS.contains(&s.algorithm) {
                return Err(format!(
                    "{}: RRSIG {ty} algorithm {} is not supported (supported: {SUPPORTED_ALGORITHMS:?})",
                    owner(),
                    s.algorithm
                ));
            }
            if !keys.contains(&(s.key_tag, s.algorithm)) {
                return Err(format!(
                    "{}: RRSIG {ty} is made with key tag {} algorithm {}, which no DNSKEY at the apex has",
                    owner(),
                    s.key_tag,
                    s.algorithm
                ));
            }
            if time_before(s.expiration, now32) {
                return Err(format!(
                    "{}: RRSIG {ty} (key tag {}) expired {} s ago",
                    owner(),
                    s.key_tag,
                    now32.wrapping_sub(s.expiration)
                ));
            }
            if time_before(now32, s.inception) {
                return Err(format!(
                    "{}: RRSIG {ty} (key tag {}) is not valid before {} s from now",
                    owner(),
                    s.key_tag,
                    s.inception.wrapping_sub(now32)
                ));
            }
        }
    }
    Ok(())
}

/// An owner strictly below a delegation (glue, occluded data) or below a
/// DNAME (occluded, RFC 6672 2.4): not signed.
pub(crate) fn below_cut(apex: &[u8], nodes: &NodeMap, key: &[u8]) -> bool {
    let l = name::Labels::of(key);
    let apex_n = name::Labels::of(apex).len();
    (apex_n..l.len()).any(|keep| {
        nodes
            .get(&key[l.suffix_at(keep, key.len())..])
            .is_some_and(|n| n.is_delegation() || n.flags & crate::zone::F_DNAME != 0)
    })
}

/// Every authoritative RRset of a node (not below a cut) has an RRSIG.
pub(crate) fn check_coverage(key: &[u8], n: &Node) -> Result<(), String> {
    let cut = n.is_delegation();
    for set in &n.rrsets {
        // at a cut only DS and NSEC are the parent's (RFC 4035 2.2)
        if cut && !matches!(set.rtype, T_DS | T_NSEC) {
            continue;
        }
        if n.sigs_for(set.rtype).is_none() {
            return Err(format!(
                "{}: {} has no RRSIG (the zone is signed: DNSKEY at the apex)",
                name::display(n.owner(key)),
                domain::base::iana::Rtype::from_int(set.rtype)
            ));
        }
    }
    Ok(())
}

/// The NSEC at `o` names `next` as the next owner.
pub(crate) fn check_nsec_link(nodes: &NodeMap, o: &[u8], next: &[u8]) -> Result<(), String> {
    let Some(set) = nodes.get(o).and_then(|n| n.get(T_NSEC)) else {
        return Ok(());
    };
    let rd = &set.rdata[0].wire;
    let l = name::wire_len(rd).ok_or_else(|| format!("{}: malformed NSEC", name::display(o)))?;
    if name::lower(&rd[..l])[..] != next[..] {
        return Err(format!(
            "{}: NSEC names {} as the next owner, but the next owner with an NSEC is {} (a gap in the chain)",
            name::display(o),
            name::display(&rd[..l]),
            name::display(next)
        ));
    }
    Ok(())
}

/// The NSEC3 at `owner` names hash `next` as the next hashed owner.
pub(crate) fn check_nsec3_link(nsec3: &NodeMap, owner: &[u8], next: &[u8; 20]) -> Result<(), String> {
    let Some(rd) = nsec3.get(owner).and_then(|n| n.get(T_NSEC3)).map(|s| &s.rdata[0].wire) else {
        return Ok(());
    };
    let at = 5 + rd[4] as usize;
    let hl = *rd.get(at).unwrap_or(&0) as usize;
    let nh = rd.get(at + 1..at + 1 + hl).unwrap_or_default();
    if nh != &next[..] {
        return Err(format!(
            "{}: NSEC3 next hashed owner is not the next hash of the chain (a gap in the NSEC3 chain)",
            name::display(owner)
        ));
    }
    Ok(())
}

/// The hash of an NSEC3 node of the chain with these parameters (None: not
/// of this chain).
pub(crate) fn nsec3_chain_hash(key: &[u8], n: &Node, iterations: u16, salt: &[u8]) -> Result<Option<[u8; 20]>, String> {
    let Some(set) = n.get(T_NSEC3) else { return Ok(None) };
    let rd = &set.rdata[0].wire;
    if rd.len() < 5
        || rd[0] != 1
        || u16::from_be_bytes([rd[2], rd[3]]) != iterations
        || rd.get(5..5 + rd[4] as usize) != Some(salt)
    {
        return Ok(None);
    }
    let l = key[0] as usize;
    base32hex_decode(&key[1..1 + l])
        .and_then(|h| h.try_into().ok())
        .map(Some)
        .ok_or_else(|| format!("{}: NSEC3 owner is not a base32hex SHA-1 hash", name::display(key)))
}

/// Builds the index of a zone with a DNSKEY at its apex and checks it.
/// `nodes` (owner names) and `nsec3` (hashed owners, kept apart from the
/// name tree as Knot keeps them) are the zone's; `now` in UNIX seconds.
/// Errors name the owner and what is wrong.
pub fn index(
    apex: &[u8],
    nodes: &NodeMap,
    nsec3: &NodeMap,
    now: u64,
    warnings: &mut Vec<String>,
) -> Result<Index, String> {
    let apex_node = nodes.get(apex).ok_or("no apex")?;
    let keys = apex_keys(apex, apex_node)?;
    let now32 = now as u32;
    let mut expirations = std::collections::BTreeMap::new();
    let mut nsec_owners: Vec<Box<[u8]>> = Vec::new();
    for (key, n) in nodes {
        check_sigs(key, n, &keys, now32)?;
        count_expirations(&mut expirations, n, now, true);
        if below_cut(apex, nodes, key) {
            continue;
        }
        check_coverage(key, n)?;
        if n.get(T_NSEC).is_some() {
            nsec_owners.push(key.clone());
        }
    }
    for (key, n) in nsec3 {
        check_sigs(key, n, &keys, now32)?;
        count_expirations(&mut expirations, n, now, true);
    }
    let denial = if let Some(param) = apex_node.get(T_NSEC3PARAM) {
        nsec3_index(apex, param, nsec3, warnings)?
    } else if !nsec_owners.is_empty() {
        nsec_owners.sort_by(|a, b| canonical_cmp(a, b));
        // the chain is closed: each NSEC names the next owner
        for (i, o) in nsec_owners.iter().enumerate() {
            check_nsec_link(nodes, o, &nsec_owners[(i + 1) % nsec_owners.len()])?;
        }
        Denial::Nsec(nsec_owners)
    } else {
        warnings.push(format!(
            "{}: signed (DNSKEY) but neither NSEC nor NSEC3: no denial proofs can be given",
            name::display(apex)
        ));
        Denial::None
    };
    Ok(Index { denial, expirations })
}

fn nsec3_index(apex: &[u8], param: &RRset, nsec3: &NodeMap, warnings: &mut Vec<String>) -> Result<Denial, String> {
    let zn = name::display(apex);
    let p = &param.rdata[0].wire;
    if p.len() < 5 || p.len() < 5 + p[4] as usize {
        return Err(format!("{zn}: malformed NSEC3PARAM"));
    }
    if p[0] != 1 {
        return Err(format!(
            "{zn}: NSEC3PARAM hash algorithm {} is not supported (only 1, SHA-1)",
            p[0]
        ));
    }
    let iterations = u16::from_be_bytes([p[2], p[3]]);
    if iterations > MAX_NSEC3_ITERATIONS {
        return Err(format!(
            "{zn}: NSEC3PARAM iterations {iterations} above {MAX_NSEC3_ITERATIONS} (RFC 9276: use 0); refused"
        ));
    }
    if iterations > 0 {
        warnings.push(format!(
            "{zn}: NSEC3 iterations {iterations}; RFC 9276 says 0 (validators may treat the zone as insecure)"
        ));
    }
    let salt: Box<[u8]> = p[5..5 + p[4] as usize].into();
    let mut chain: Vec<([u8; 20], Box<[u8]>)> = Vec::with_capacity(nsec3.len());
    for (key, n) in nsec3 {
        // only the chain NSEC3PARAM names
        if let Some(h) = nsec3_chain_hash(key, n, iterations, &salt)? {
            chain.push((h, key.clone()));
        }
    }
    if chain.is_empty() {
        return Err(format!("{zn}: NSEC3PARAM but no NSEC3 record with its parameters"));
    }
    chain.sort();
    for (i, (_, owner)) in chain.iter().enumerate() {
        check_nsec3_link(nsec3, owner, &chain[(i + 1) % chain.len()].0)?;
    }
    Ok(Denial::Nsec3(Nsec3Index {
        iterations,
        salt,
        chain,
    }))
}

/// Is this node made only of an NSEC3 (and its RRSIGs)? Such owners are
/// kept apart from the name tree (RFC 5155 7.1: they are not names of the
/// zone's namespace; Knot answers NXDOMAIN for them).
pub fn is_nsec3_only(n: &Node) -> bool {
    !n.rrsets.is_empty() && n.rrsets.iter().all(|s| s.rtype == T_NSEC3)
}

/// The type an RRSIG rdata covers.
pub fn covered(rdata: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*rdata.first()?, *rdata.get(1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsec3_hash_matches_rfc5155_appendix_a() {
        // RFC 5155 appendix A: example, salt aabbccdd, 12 iterations
        let h = nsec3_hash(b"\x07example\x00", &[0xaa, 0xbb, 0xcc, 0xdd], 12);
        assert_eq!(
            base32hex_decode(b"0p9mhaveqvm6t7vbl5lop2u3t2rp3tom").unwrap(),
            h.to_vec()
        );
        let h = nsec3_hash(b"\x01a\x07example\x00", &[0xaa, 0xbb, 0xcc, 0xdd], 12);
        assert_eq!(
            base32hex_decode(b"35mthgpgcu1qg68fab165klnsnk3dpvl").unwrap(),
            h.to_vec()
        );
    }

    #[test]
    fn key_tag_and_bitmap() {
        // bitmap: window 0, 6 octets: A(1) NS(2) SOA(6) MX(15) RRSIG(46) NSEC(47)
        let bm = [0u8, 6, 0x62, 0x01, 0x00, 0x00, 0x00, 0x03];
        assert!(bitmap_has(&bm, 1) && bitmap_has(&bm, 2) && bitmap_has(&bm, 6) && bitmap_has(&bm, 15));
        assert!(bitmap_has(&bm, 46) && bitmap_has(&bm, 47));
        assert!(!bitmap_has(&bm, 28) && !bitmap_has(&bm, 43) && !bitmap_has(&bm, 257));
        assert_eq!(key_tag(&[1, 1, 3, 13, 0xab]), (0x0101u32 + 0x030d + 0xab00) as u16);
    }

    #[test]
    fn predecessor_wraps() {
        let chain: Vec<Box<[u8]>> = vec![
            (*b"\x07example\x00").into(),
            (*b"\x01a\x07example\x00").into(),
            (*b"\x01z\x07example\x00").into(),
        ];
        assert_eq!(
            nsec_predecessor(&chain, b"\x01b\x07example\x00").unwrap(),
            b"\x01a\x07example\x00"
        );
        assert_eq!(
            nsec_predecessor(&chain, b"\x01a\x07example\x00").unwrap(),
            b"\x01a\x07example\x00"
        );
        assert_eq!(
            nsec_predecessor(&chain, b"\x02zz\x07example\x00").unwrap(),
            b"\x01z\x07example\x00"
        );
        assert_eq!(
            nsec_predecessor(&chain, b"\x01b\x01a\x07example\x00").unwrap(),
            b"\x01a\x07example\x00"
        );
    }
}
