//! Online signing of zones this PoP is primary for.
//!
//! Keys are BIND-style file pairs, as `dnssec-keygen`, `ldns-keygen` and
//! `anyedge dns keygen` write them: `K<zone>+<alg>+<tag>.key` holds the
//! DNSKEY record in presentation form, `K<zone>+<alg>+<tag>.private` the
//! private key (`Private-key-format: v1.3`, `Algorithm: 13 (ECDSAP256SHA256)`
//! or `15 (ED25519)`, `PrivateKey: <base64>`: the P-256 scalar or the
//! Ed25519 seed, 32 bytes). The operator generates them once and copies
//! them to every PoP, so every PoP serves the same DNSKEY set.
//!
//! Signing happens when a zone version is built (load, reload, re-signing
//! before expiry): the signer only produces records (DNSKEY, CDS/CDNSKEY,
//! NSEC or NSEC3 chain, RRSIGs) that go through the same [`ZoneBuilder`]
//! and index as a pre-signed zone (see [`crate::dnssec`]), so answering
//! stays lookups. Signatures of unchanged RRsets are reused from the
//! previous version while at least a third of their validity is left.
//!
//! Crypto is `ring` (ECDSA P-256 with the fixed r||s encoding DNSSEC uses,
//! RFC 6605; Ed25519, RFC 8080); only the record layout is written here
//! (RFC 4034 3.1.8.1 signed data, 6.2 canonical form, 6.3 RRset order).

use std::sync::Arc;

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::dnssec::{key_tag, T_NSEC3, T_NSEC3PARAM};
use crate::name;
use crate::zone::{
    canonical_cmp, Node, RRset, Zone, ZoneBuilder, T_CNAME, T_DNAME, T_DNSKEY, T_DS, T_MX, T_NS, T_NSEC, T_PTR,
    T_RRSIG, T_SOA, T_SRV,
};

pub const T_CDS: u16 = 59;
pub const T_CDNSKEY: u16 = 60;
/// RFC 9824 NXNAME meta type.
pub const T_NXNAME: u16 = 128;

/// Signing algorithms (DNSKEY algorithm numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256Sha256,
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }
    pub fn from_number(n: u8) -> Option<Algorithm> {
        match n {
            13 => Some(Algorithm::EcdsaP256Sha256),
            15 => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }
}

/// How this zone proves that names and types do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialMode {
    /// An NSEC chain (RFC 4034), signed with the zone.
    Nsec,
    /// An NSEC3 chain (RFC 5155), SHA-1, no opt-out, 0 iterations, no salt
    /// (RFC 9276).
    Nsec3,
    /// RFC 9824 compact denial: NSEC records made and signed per answer.
    Compact,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Format(String),
    #[error("DNSKEY algorithm {0} is not supported for signing (supported: 13 ECDSAP256SHA256, 15 ED25519)")]
    Algorithm(u8),
    #[error("the private key does not match the DNSKEY")]
    Mismatch,
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One signing key: the DNSKEY it publishes and its private half.
pub struct SigningKey {
    /// DNSKEY rdata (flags, protocol 3, algorithm, public key).
    pub dnskey: Box<[u8]>,
    pub tag: u16,
    pub algorithm: Algorithm,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(tag {}, {})", self.tag, self.algorithm.mnemonic())
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl SigningKey {
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.dnskey[0], self.dnskey[1]])
    }
    /// Secure entry point (KSK or CSK): flags 257.
    pub fn is_sep(&self) -> bool {
        self.flags() & 1 != 0
    }

    fn from_parts(flags: u16, algorithm: Algorithm, private: &[u8], public: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let mut pubpt = vec![4u8];
                pubpt.extend_from_slice(public);
                Pair::Ecdsa(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        private,
                        &pubpt,
                        &ring::rand::SystemRandom::new(),
                    )
                    .map_err(|_| KeyError::Mismatch)?,
                )
            }
            Algorithm::Ed25519 => Pair::Ed25519(
                Ed25519KeyPair::from_seed_and_public_key(private, public).map_err(|_| KeyError::Mismatch)?,
            ),
        };
        let mut dnskey = Vec::with_capacity(4 + public.len());
        dnskey.extend_from_slice(&flags.to_be_bytes());
        dnskey.push(3);
        dnskey.push(algorithm.number());
        dnskey.extend_from_slice(public);
        Ok(SigningKey {
            tag: key_tag(&dnskey),
            dnskey: dnskey.into(),
            algorithm,
            pair,
        })
    }

    /// A new key; `sep`: KSK or CSK (flags 257), else ZSK (256). Returns
    /// the key and the raw private key (scalar or seed) for the file.
    pub fn generate(algorithm: Algorithm, sep: bool) -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let flags = if sep { 257 } else { 256 };
        let (private, public) = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Format("key generation failed".into()))?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                    .map_err(|_| KeyError::Format("key generation failed".into()))?;
                // ring has no accessor for the private scalar: it is the
                // 32-byte OCTET STRING of the ECPrivateKey in ring's fixed
                // PKCS#8 template (`04 20 <d> a1 44 03 42 00 04 <x y>`);
                // checked below by rebuilding the pair from it.
                let d = doc.as_ref();
                let at = (0..d.len().saturating_sub(40))
                    .find(|&i| d[i..i + 2] == [4, 32] && d[i + 34..i + 40] == [0xa1, 0x44, 3, 0x42, 0, 4])
                    .ok_or_else(|| KeyError::Format("unexpected PKCS#8 layout from ring".into()))?;
                (d[at + 2..at + 34].to_vec(), pair.public_key().as_ref()[1..].to_vec())
            }
            Algorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed)
                    .map_err(|_| KeyError::Format("no randomness".into()))?;
                let pair =
                    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::Format("bad seed".into()))?;
                (seed.to_vec(), pair.public_key().as_ref().to_vec())
            }
        };
        let key = SigningKey::from_parts(flags, algorithm, &private, &public)?;
        Ok((key, private))
    }

    /// The key from the texts of its `.key` and `.private` files.
    pub fn from_files(key_text: &str, private_text: &str) -> Result<SigningKey, KeyError> {
        let (flags, alg, public) = parse_key_file(key_text)?;
        let algorithm = Algorithm::from_number(alg).ok_or(KeyError::Algorithm(alg))?;
        let mut private = None;
        let mut palg = None;
        for line in private_text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                match k.trim() {
                    "Algorithm" => palg = v.split_whitespace().next().and_then(|a| a.parse::<u8>().ok()),
                    "PrivateKey" => {
                        private = Some(
                            b64()
                                .decode(v.trim())
                                .map_err(|e| KeyError::Format(format!("PrivateKey is not base64: {e}")))?,
                        )
                    }
                    _ => {}
                }
            }
        }
        let palg = palg.ok_or_else(|| KeyError::Format("private key file has no Algorithm line".into()))?;
        if palg != alg {
            return Err(KeyError::Format(format!(
                "private key file is for algorithm {palg}, the DNSKEY for {alg}"
            )));
        }
        let private = private.ok_or_else(|| {
            KeyError::Format("private key file has no PrivateKey line (only ECDSAP256SHA256 and ED25519 keys)".into())
        })?;
        SigningKey::from_parts(flags, algorithm, &private, &public)
    }

    /// Signs `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&ring::rand::SystemRandom::new(), data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
            Pair::Ed25519(p) => Ok(p.sign(data).as_ref().to_vec()),
        }
    }

    /// The `.key` file text for zone `zone` (presentation, trailing dot).
    pub fn key_file_text(&self, zone: &str) -> String {
        format!(
            "; This is a {} key, keyid {}, for {zone}\n{zone} IN DNSKEY {}\n",
            if self.is_sep() { "key-signing" } else { "zone-signing" },
            self.tag,
            dnskey_presentation(&self.dnskey)
        )
    }

    /// File names' stem, `K<zone>+<alg>+<tag>`.
    pub fn file_stem(&self, zone: &str) -> String {
        format!("K{zone}+{:03}+{:05}", self.algorithm.number(), self.tag)
    }
}

/// The `.private` file text for a raw private key.
pub fn private_file_text(algorithm: Algorithm, private: &[u8]) -> String {
    format!(
        "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
        algorithm.number(),
        algorithm.mnemonic(),
        b64().encode(private)
    )
}

/// `FLAGS 3 ALG BASE64` of DNSKEY rdata.
pub fn dnskey_presentation(rdata: &[u8]) -> String {
    format!(
        "{} {} {} {}",
        u16::from_be_bytes([rdata[0], rdata[1]]),
        rdata[2],
        rdata[3],
        b64().encode(&rdata[4..])
    )
}

/// (flags, algorithm, public key) of a `.key` file: the first line that is
/// not a comment, `OWNER [TTL] [IN] DNSKEY FLAGS 3 ALG BASE64...`.
pub fn parse_key_file(text: &str) -> Result<(u16, u8, Vec<u8>), KeyError> {
    let line = text
        .lines()
        .map(|l| l.split(';').next().unwrap_or_default().trim())
        .find(|l| !l.is_empty())
        .ok_or_else(|| KeyError::Format("no DNSKEY record in the key file".into()))?;
    let toks: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .collect();
    let i = toks
        .iter()
        .position(|t| t.eq_ignore_ascii_case("DNSKEY"))
        .ok_or_else(|| KeyError::Format("no DNSKEY record in the key file".into()))?;
    let bad = || KeyError::Format(format!("malformed DNSKEY record: {line}"));
    let flags: u16 = toks.get(i + 1).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let proto: u8 = toks.get(i + 2).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let alg: u8 = toks.get(i + 3).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    if proto != 3 || toks.len() <= i + 4 {
        return Err(bad());
    }
    let public = b64()
        .decode(toks[i + 4..].concat())
        .map_err(|e| KeyError::Format(format!("DNSKEY public key is not base64: {e}")))?;
    Ok((flags, alg, public))
}

/// DS rdata (digest type 2, SHA-256; RFC 4509) of DNSKEY rdata at `owner`.
pub fn ds_rdata(owner: &[u8], dnskey: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&name::lower(owner));
    ctx.update(dnskey);
    let mut out = key_tag(dnskey).to_be_bytes().to_vec();
    out.push(dnskey[3]);
    out.push(2);
    out.extend_from_slice(ctx.finish().as_ref());
    out
}

/// `ZONE IN DS TAG ALG 2 HEX` for the parent.
pub fn ds_presentation(zone: &str, owner: &[u8], dnskey: &[u8]) -> String {
    let ds = ds_rdata(owner, dnskey);
    let hex: String = ds[4..].iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{zone} IN DS {} {} {} {hex}",
        u16::from_be_bytes([ds[0], ds[1]]),
        ds[2],
        ds[3]
    )
}

/// Base32hex (RFC 4648 7) lowercase without padding, as NSEC3 owners are
/// written. Hand-written: a dozen lines, no crate of the workspace has it.
pub fn base32hex_encode(b: &[u8]) -> String {
    const A: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::with_capacity(b.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &x in b {
        acc = (acc << 8) | u32::from(x);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// RFC 4034 4.1.2 type bitmap of `types` (any order, duplicates allowed).
pub fn type_bitmap(types: &[u16]) -> Vec<u8> {
    let mut t = types.to_vec();
    t.sort_unstable();
    t.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let win = (t[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < t.len() && (t[i] >> 8) as u8 == win {
            let b = (t[i] & 0xff) as usize;
            bits[b / 8] |= 0x80 >> (b % 8);
            len = len.max(b / 8 + 1);
            i += 1;
        }
        out.push(win);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
    out
}

/// RFC 4034 6.2 canonical rdata: embedded names of the types listed there
/// lowercased (those a zone of ours can hold with names: NS, CNAME, PTR,
/// DNAME, SOA, MX, SRV, AFSDB, RT, KX). NSEC's next name is kept as is
/// (RFC 6840 5.1).
pub fn canonical_rdata(rtype: u16, rd: &[u8]) -> Vec<u8> {
    let mut out = rd.to_vec();
    let lower_at = |out: &mut Vec<u8>, at: usize| -> Option<usize> {
        let l = name::wire_len(out.get(at..)?)?;
        let lc = name::lower(&out[at..at + l]);
        out[at..at + l].copy_from_slice(&lc);
        Some(at + l)
    };
    match rtype {
        T_NS | T_CNAME | T_PTR | T_DNAME => {
            lower_at(&mut out, 0);
        }
        T_MX | 18 | 21 | 36 => {
            lower_at(&mut out, 2);
        }
        T_SRV => {
            lower_at(&mut out, 6);
        }
        T_SOA => {
            if let Some(e) = lower_at(&mut out, 0) {
                lower_at(&mut out, e);
            }
        }
        _ => {}
    }
    out
}

/// Labels field of an RRSIG at `owner_lc` (a leading `*` not counted).
fn rrsig_labels(owner_lc: &[u8]) -> u8 {
    let n = name::Labels::of(owner_lc).len();
    if owner_lc.starts_with(b"\x01*") {
        (n - 1) as u8
    } else {
        n as u8
    }
}

/// RRSIG rdata over one RRset: `rdatas` uncompressed, any order.
#[allow(clippy::too_many_arguments)]
pub fn sign_rrset(
    key: &SigningKey,
    signer_lc: &[u8],
    owner: &[u8],
    rtype: u16,
    ttl: u32,
    rdatas: &[&[u8]],
    inception: u32,
    expiration: u32,
) -> Result<Vec<u8>, String> {
    let owner_lc = name::lower(owner);
    let mut rrsig = Vec::with_capacity(18 + signer_lc.len() + 64);
    rrsig.extend_from_slice(&rtype.to_be_bytes());
    rrsig.push(key.algorithm.number());
    rrsig.push(rrsig_labels(&owner_lc));
    rrsig.extend_from_slice(&ttl.to_be_bytes());
    rrsig.extend_from_slice(&expiration.to_be_bytes());
    rrsig.extend_from_slice(&inception.to_be_bytes());
    rrsig.extend_from_slice(&key.tag.to_be_bytes());
    rrsig.extend_from_slice(signer_lc);
    let data = signed_data(&rrsig, &owner_lc, rtype, ttl, rdatas);
    rrsig.extend_from_slice(&key.sign(&data)?);
    Ok(rrsig)
}

/// RFC 4034 3.1.8.1: the RRSIG rdata without its signature, then the
/// RRset in canonical form and order (owner lowercase, original TTL).
pub fn signed_data(rrsig_prefix: &[u8], owner_lc: &[u8], rtype: u16, ttl: u32, rdatas: &[&[u8]]) -> Vec<u8> {
    let mut canon: Vec<Vec<u8>> = rdatas.iter().map(|r| canonical_rdata(rtype, r)).collect();
    canon.sort();
    canon.dedup();
    let mut data = rrsig_prefix.to_vec();
    for rd in &canon {
        data.extend_from_slice(owner_lc);
        data.extend_from_slice(&rtype.to_be_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&ttl.to_be_bytes());
        data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        data.extend_from_slice(rd);
    }
    data
}

/// What the signer needs for one zone.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keys: Vec<Arc<SigningKey>>,
    pub denial: DenialMode,
    /// Signature lifetime (expiration - now); inception is backdated by
    /// [`INCEPTION_BACKDATE`]. Re-signed when less than a third is left.
    pub validity: u32,
}

/// Inception this many seconds before signing (clocks of validators).
pub const INCEPTION_BACKDATE: u32 = 3600;
/// TTL of DNSKEY, CDS and CDNSKEY.
pub const DNSKEY_TTL: u32 = 3600;

impl Policy {
    /// Keys that sign the DNSKEY/CDS/CDNSKEY RRsets (KSK/CSK; all if none
    /// has the SEP flag).
    fn key_keys(&self) -> Vec<&SigningKey> {
        let sep: Vec<&SigningKey> = self.keys.iter().filter(|k| k.is_sep()).map(|k| &**k).collect();
        if sep.is_empty() {
            self.keys.iter().map(|k| &**k).collect()
        } else {
            sep
        }
    }
    /// Keys that sign every other RRset (ZSKs; the CSK/KSKs if none).
    fn zone_keys(&self) -> Vec<&SigningKey> {
        let z: Vec<&SigningKey> = self.keys.iter().filter(|k| !k.is_sep()).map(|k| &**k).collect();
        if z.is_empty() {
            self.key_keys()
        } else {
            z
        }
    }
    /// The zone-signing keys (shared), for compact denial at answer time.
    fn zone_keys_arc(&self) -> Vec<Arc<SigningKey>> {
        let z: Vec<Arc<SigningKey>> = self.keys.iter().filter(|k| !k.is_sep()).cloned().collect();
        if z.is_empty() {
            self.keys.iter().filter(|k| k.is_sep()).cloned().collect()
        } else {
            z
        }
    }
}

/// Earliest expiration among the zone's RRSIGs (None: none).
pub fn earliest_expiration(z: &Zone) -> Option<u32> {
    z.all_nodes()
        .flat_map(|(_, n)| n.sigs.iter())
        .flat_map(|s| s.rdata.iter())
        .filter_map(|r| crate::dnssec::parse_rrsig(&r.wire).map(|s| s.expiration))
        .min_by_key(|&e| e.wrapping_sub(0x8000_0000))
}

/// Does zone `z` need re-signing at `now` (less than a third of `validity`
/// left on some signature)?
pub fn needs_resign(z: &Zone, validity: u32, now: u64) -> bool {
    earliest_expiration(z).is_some_and(|e| (e.wrapping_sub(now as u32) as i32) < (validity / 3) as i32)
}

/// A small deterministic spread of expirations (up to a tenth of the
/// validity) so that not every signature of a zone is due at once.
fn jitter(owner_lc: &[u8], rtype: u16, validity: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in owner_lc.iter().chain(rtype.to_be_bytes().iter()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % (validity / 10).max(1)
}

struct Name {
    owner: Box<[u8]>,
    sets: Vec<RRset>,
}

/// Types the signer makes: dropped from the source zone.
fn signer_made(t: u16) -> bool {
    matches!(
        t,
        T_RRSIG | T_NSEC | T_NSEC3 | T_NSEC3PARAM | T_CDS | T_CDNSKEY | T_DNSKEY
    )
}

/// Signs the records of `b` (an unsigned or re-signed zone loaded from its
/// file) with `policy` at UNIX time `now`, reusing still-fresh signatures
/// of unchanged RRsets from `prev`. DNSKEYs in the source must be keys of
/// the policy. The result is indexed and checked like any signed zone.
pub fn sign_zone(b: ZoneBuilder, policy: &Policy, prev: Option<&Zone>, now: u64) -> Result<Zone, String> {
    let apex = b.apex().to_vec();
    let zn = name::display(&apex);
    if policy.keys.is_empty() {
        return Err(format!("{zn}: dnssec.keys is empty"));
    }
    let (nodes, warnings) = b.into_parts();
    let mut names: rustc_hash::FxHashMap<Box<[u8]>, Name> = rustc_hash::FxHashMap::default();
    for (key, n) in &nodes {
        let mut sets = Vec::new();
        for s in &n.rrsets {
            if s.rtype == T_DNSKEY && key[..] == apex[..] {
                for rd in &s.rdata {
                    if !policy.keys.iter().any(|k| k.dnskey[..] == rd.wire[..]) {
                        return Err(format!(
                            "{zn}: DNSKEY {} (key tag {}) in the zone file has no key file among dnssec.keys",
                            dnskey_presentation(&rd.wire),
                            key_tag(&rd.wire)
                        ));
                    }
                }
            }
            if !signer_made(s.rtype) {
                sets.push(s.clone());
            }
        }
        if !sets.is_empty() {
            names.insert(
                key.clone(),
                Name {
                    owner: n.owner(key).into(),
                    sets,
                },
            );
        }
    }
    let soa = names
        .get(&apex[..])
        .and_then(|n| n.sets.iter().find(|s| s.rtype == T_SOA))
        .cloned()
        .ok_or_else(|| format!("zone {zn} has no SOA record"))?;
    let negative_ttl = crate::zone::soa_fields(&soa.rdata[0].wire).map_or(soa.ttl, |f| soa.ttl.min(f[4]));
    // apex: keys, CDS/CDNSKEY of the SEP keys (RFC 8078), NSEC3PARAM
    let mut apex_sets = vec![mk_set(
        T_DNSKEY,
        DNSKEY_TTL,
        policy.keys.iter().map(|k| k.dnskey.to_vec()),
    )];
    let sep: Vec<&Arc<SigningKey>> = policy.keys.iter().filter(|k| k.is_sep()).collect();
    if !sep.is_empty() {
        apex_sets.push(mk_set(
            T_CDS,
            DNSKEY_TTL,
            sep.iter().map(|k| ds_rdata(&apex, &k.dnskey)),
        ));
        apex_sets.push(mk_set(T_CDNSKEY, DNSKEY_TTL, sep.iter().map(|k| k.dnskey.to_vec())));
    }
    if policy.denial == DenialMode::Nsec3 {
        apex_sets.push(mk_set(T_NSEC3PARAM, 0, [vec![1, 0, 0, 0, 0]]));
    }
    if let Some(a) = names.get_mut(&apex[..]) {
        a.sets.extend(apex_sets);
    }
    // every name of the tree: owners and empty non-terminals
    let apex_labels = name::Labels::of(&apex).len();
    let mut all: Vec<Box<[u8]>> = Vec::new();
    {
        let mut seen = rustc_hash::FxHashSet::default();
        for k in names.keys() {
            let l = name::Labels::of(k);
            for keep in apex_labels..=l.len() {
                let s: Box<[u8]> = k[l.suffix_at(keep, k.len())..].into();
                if seen.insert(s.clone()) {
                    all.push(s);
                }
            }
        }
    }
    let is_cut = |k: &[u8]| k != &apex[..] && names.get(k).is_some_and(|n| n.sets.iter().any(|s| s.rtype == T_NS));
    let has_dname = |k: &[u8]| names.get(k).is_some_and(|n| n.sets.iter().any(|s| s.rtype == T_DNAME));
    let below_cut = |k: &[u8]| {
        let l = name::Labels::of(k);
        (apex_labels..l.len()).any(|keep| {
            let a = &k[l.suffix_at(keep, k.len())..];
            is_cut(a) || has_dname(a)
        })
    };
    all.retain(|k| !below_cut(k));
    all.sort_by(|a, b| canonical_cmp(a, b));
    // types each authoritative name has signed (for bitmaps and signing)
    let signed_types = |k: &[u8]| -> Vec<u16> {
        let Some(n) = names.get(k) else { return Vec::new() };
        let cut = is_cut(k);
        n.sets.iter().map(|s| s.rtype).filter(|&t| !cut || t == T_DS).collect()
    };
    let present_types = |k: &[u8]| -> Vec<u16> {
        let Some(n) = names.get(k) else { return Vec::new() };
        let cut = is_cut(k);
        n.sets
            .iter()
            .map(|s| s.rtype)
            .filter(|&t| !cut || t == T_DS || t == T_NS)
            .collect()
    };
    // the denial chain
    let mut extra: Vec<(Box<[u8]>, RRset)> = Vec::new();
    match policy.denial {
        DenialMode::Nsec => {
            let owners: Vec<&Box<[u8]>> = all.iter().filter(|k| names.contains_key(&k[..])).collect();
            for (i, o) in owners.iter().enumerate() {
                let next = owners[(i + 1) % owners.len()];
                let mut types = present_types(o);
                types.extend([T_RRSIG, T_NSEC]);
                let mut rd = next.to_vec();
                rd.extend(type_bitmap(&types));
                extra.push(((*o).clone(), mk_set(T_NSEC, negative_ttl, [rd])));
            }
        }
        DenialMode::Nsec3 => {
            let mut chain: Vec<([u8; 20], Vec<u16>)> = all
                .iter()
                .map(|k| {
                    let mut types = present_types(k);
                    if !signed_types(k).is_empty() {
                        types.push(T_RRSIG);
                    }
                    (crate::dnssec::nsec3_hash(k, &[], 0), types)
                })
                .collect();
            chain.sort_by_key(|a| a.0);
            for i in 0..chain.len() {
                let next = chain[(i + 1) % chain.len()].0;
                let (h, types) = &chain[i];
                let mut rd = vec![1, 0, 0, 0, 0, 20];
                rd.extend_from_slice(&next);
                rd.extend(type_bitmap(types));
                let label = base32hex_encode(h);
                let mut owner = vec![label.len() as u8];
                owner.extend_from_slice(label.as_bytes());
                owner.extend_from_slice(&apex);
                extra.push((owner.into(), mk_set(T_NSEC3, negative_ttl, [rd])));
            }
        }
        DenialMode::Compact => {}
    }
    // sign
    let mut out = ZoneBuilder::new(&apex);
    let inception = (now as u32).wrapping_sub(INCEPTION_BACKDATE);
    // signatures made anew (not reused from `prev`)
    let made = std::cell::Cell::new(0usize);
    let add_signed = |out: &mut ZoneBuilder, owner: &[u8], set: &RRset, sign: bool| -> Result<(), String> {
        for rd in &set.rdata {
            out.add(owner, set.rtype, set.ttl, &rd.wire)?;
        }
        if !sign {
            return Ok(());
        }
        let keys = if matches!(set.rtype, T_DNSKEY | T_CDS | T_CDNSKEY) {
            policy.key_keys()
        } else {
            policy.zone_keys()
        };
        let lc = name::lower(owner);
        if let Some(sigs) = prev.and_then(|p| reusable(p, &lc, set, &keys, now, policy.validity)) {
            for s in sigs {
                out.add(owner, T_RRSIG, set.ttl, &s)?;
            }
            return Ok(());
        }
        let expiration =
            (now as u32)
                .wrapping_add(policy.validity)
                .wrapping_sub(jitter(&lc, set.rtype, policy.validity));
        let rds: Vec<&[u8]> = set.rdata.iter().map(|r| &r.wire[..]).collect();
        for k in keys {
            let sig = sign_rrset(k, &apex, owner, set.rtype, set.ttl, &rds, inception, expiration)?;
            out.add(owner, T_RRSIG, set.ttl, &sig)?;
            made.set(made.get() + 1);
        }
        Ok(())
    };
    let mut keys_sorted: Vec<&Box<[u8]>> = names.keys().collect();
    keys_sorted.sort_by(|a, b| canonical_cmp(a, b));
    for k in keys_sorted {
        let n = &names[k];
        let auth = !below_cut(k);
        let cut = is_cut(k);
        for s in &n.sets {
            if s.rtype == T_SOA && k[..] == apex[..] {
                continue;
            }
            let sign = auth && (!cut || s.rtype == T_DS);
            add_signed(&mut out, &n.owner, s, sign)?;
        }
    }
    for (o, s) in &extra {
        add_signed(&mut out, o, s, true)?;
    }
    // the SOA last: its serial follows the file's, or moves on from the
    // previous version's when re-signing changed anything (so that
    // secondaries transferring from this PoP see the new signatures)
    let apex_owner = names
        .get(&apex[..])
        .map(|n| n.owner.clone())
        .unwrap_or_else(|| apex.clone().into());
    let mut soa = soa;
    if let Some(p) = prev {
        let file_serial = crate::zone::soa_fields(&soa.rdata[0].wire).map_or(0, |f| f[0]);
        let newer = file_serial.wrapping_sub(p.serial) as i32 > 0;
        if !newer {
            let serial = if made.get() > 0 {
                p.serial.wrapping_add(1)
            } else {
                p.serial
            };
            set_serial(&mut soa.rdata[0].wire, serial);
        }
    }
    add_signed(&mut out, &apex_owner, &soa, true)?;
    let mut z = out.finish_at(now)?;
    let mut w = warnings;
    w.append(&mut z.warnings);
    z.warnings = w;
    if policy.denial == DenialMode::Compact {
        z.warnings.retain(|w| !w.contains("neither NSEC nor NSEC3"));
        let key = policy
            .zone_keys_arc()
            .into_iter()
            .next()
            .ok_or_else(|| format!("{zn}: no key to sign with"))?;
        z.online = Some(Arc::new(crate::compact::Online::new(
            key,
            &apex,
            policy.validity,
            crate::compact::CACHE_ENTRIES,
        )));
    }
    Ok(z)
}

/// Replaces the SERIAL of uncompressed SOA rdata.
fn set_serial(rd: &mut [u8], serial: u32) {
    let Some(l1) = name::wire_len(rd) else { return };
    let Some(l2) = rd.get(l1..).and_then(name::wire_len) else {
        return;
    };
    if let Some(f) = rd.get_mut(l1 + l2..l1 + l2 + 4) {
        f.copy_from_slice(&serial.to_be_bytes());
    }
}

fn mk_set(rtype: u16, ttl: u32, rdatas: impl IntoIterator<Item = Vec<u8>>) -> RRset {
    RRset {
        rtype,
        ttl,
        rdata: rdatas
            .into_iter()
            .map(|r| crate::zone::Rdata {
                wire: r.into(),
                compress: [0; 2],
                n_compress: 0,
                target: u16::MAX,
            })
            .collect(),
    }
}

/// The previous version's signatures of this RRset, if the RRset is
/// unchanged, they are exactly from `keys` and at least a third of
/// `validity` is left on each.
fn reusable(
    prev: &Zone,
    lc: &[u8],
    set: &RRset,
    keys: &[&SigningKey],
    now: u64,
    validity: u32,
) -> Option<Vec<Box<[u8]>>> {
    let n: &Node = prev.any_node(lc)?;
    let old = n.get(set.rtype)?;
    if old.ttl != set.ttl || old.rdata.len() != set.rdata.len() {
        return None;
    }
    let mut a: Vec<&[u8]> = old.rdata.iter().map(|r| &r.wire[..]).collect();
    let mut b: Vec<&[u8]> = set.rdata.iter().map(|r| &r.wire[..]).collect();
    a.sort();
    b.sort();
    if a != b {
        return None;
    }
    let sigs = n.sigs_for(set.rtype)?;
    if sigs.rdata.len() != keys.len() {
        return None;
    }
    let now32 = now as u32;
    let mut out = Vec::new();
    for rd in &sigs.rdata {
        let s = crate::dnssec::parse_rrsig(&rd.wire)?;
        if !keys
            .iter()
            .any(|k| k.tag == s.key_tag && k.algorithm.number() == s.algorithm)
        {
            return None;
        }
        // original TTL must match (the RRset's TTL may have changed)
        if rd.wire.get(4..8)? != set.ttl.to_be_bytes() {
            return None;
        }
        let left = s.expiration.wrapping_sub(now32) as i32;
        if left < (validity / 3) as i32 {
            return None;
        }
        out.push(rd.wire.clone());
    }
    Some(out)
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
