//! RFC 9824 compact denial of existence: a signed zone without an NSEC
//! chain answers every negative question with one NSEC at the query name,
//! made and signed when asked:
//!
//! - a name that does not exist: NOERROR (for DO queries), NSEC at the
//!   name whose next name is `\000.<name>` and whose types are RRSIG,
//!   NSEC and NXNAME (the RFC 9824 meta type 128);
//! - a name without the type: the same NSEC listing the types it has;
//! - a wildcard answer: the synthesized RRset signed at the query name (as
//!   if the name existed), so no proof of the next closer name is needed.
//!
//! Signatures are cached per (owner, type, data) in a bounded map: a hot
//! negative answer costs one signing per validity period; a random-name
//! flood costs one signing per query (the guard and RRL bound the rate
//! per source) and evicts only the oldest quarter of the cache when full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::sign::{sign_rrset, SigningKey, INCEPTION_BACKDATE};

/// Entries kept (each an owner name and a signature: ~200-400 bytes).
pub const CACHE_ENTRIES: usize = 16_384;

/// Process-wide counts of online signing, for the status and metrics: one
/// set for every zone (a zone's [`Online`] is replaced on each reload, so
/// counts kept in it would be lost). Relaxed atomics, bumped where the
/// cache lock is already held or a signature was just made (both far
/// costlier than the increment).
pub struct OnlineCounters {
    /// Signatures computed on line (cache misses that signed).
    pub signatures: AtomicU64,
    /// Signatures served from the cache.
    pub cache_hits: AtomicU64,
    /// Lookups that found no fresh signature (absent, or past two thirds
    /// of its validity).
    pub cache_misses: AtomicU64,
    /// Entries dropped to make room in a full cache.
    pub cache_evictions: AtomicU64,
}

pub static COUNTERS: OnlineCounters = OnlineCounters {
    signatures: AtomicU64::new(0),
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
    cache_evictions: AtomicU64::new(0),
};

impl OnlineCounters {
    /// (signatures, cache hits, cache misses, cache evictions).
    pub fn read(&self) -> (u64, u64, u64, u64) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            r(&self.signatures),
            r(&self.cache_hits),
            r(&self.cache_misses),
            r(&self.cache_evictions),
        )
    }
}

/// Online signing state of a compact-denial zone.
pub struct Online {
    key: Arc<SigningKey>,
    apex: Box<[u8]>,
    validity: u32,
    cache: Mutex<Cache>,
    cap: usize,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Online({:?})", self.key)
    }
}

#[derive(Default)]
struct Cache {
    map: FxHashMap<(Box<[u8]>, u16, u64), Entry>,
    tick: u64,
    hits: u64,
    signed: u64,
}

struct Entry {
    rrsig: Arc<[u8]>,
    expiration: u32,
    used: u64,
}

impl Online {
    /// `key` signs; signatures last `validity` seconds and are renewed when
    /// a third is left.
    pub fn new(key: Arc<SigningKey>, apex: &[u8], validity: u32, cap: usize) -> Online {
        Online {
            key,
            apex: apex.into(),
            validity,
            cache: Mutex::new(Cache::default()),
            cap: cap.max(4),
        }
    }

    /// (cache hits, signatures made).
    pub fn stats(&self) -> (u64, u64) {
        self.cache.lock().map_or((0, 0), |c| (c.hits, c.signed))
    }

    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.map.len())
    }

    /// RRSIG rdata over the RRset (`owner_lc` lowercase wire) at `now`.
    pub fn rrsig(&self, owner_lc: &[u8], rtype: u16, ttl: u32, rdatas: &[&[u8]], now: u32) -> Option<Arc<[u8]>> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write_u32(ttl);
        for r in rdatas {
            h.write(r);
        }
        let key = (Box::<[u8]>::from(owner_lc), rtype, h.finish());
        if let Ok(mut c) = self.cache.lock() {
            c.tick += 1;
            let tick = c.tick;
            if let Some(e) = c.map.get_mut(&key) {
                if (e.expiration.wrapping_sub(now) as i32) > (self.validity / 3) as i32 {
                    e.used = tick;
                    let r = e.rrsig.clone();
                    c.hits += 1;
                    COUNTERS.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Some(r);
                }
            }
        }
        COUNTERS.cache_misses.fetch_add(1, Ordering::Relaxed);
        let expiration = now.wrapping_add(self.validity);
        let sig = sign_rrset(
            &self.key,
            &self.apex,
            owner_lc,
            rtype,
            ttl,
            rdatas,
            now.wrapping_sub(INCEPTION_BACKDATE),
            expiration,
        )
        .ok()?;
        let sig: Arc<[u8]> = sig.into();
        COUNTERS.signatures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.cache.lock() {
            c.signed += 1;
            if c.map.len() >= self.cap {
                // evict the least recently used quarter
                let mut used: Vec<u64> = c.map.values().map(|e| e.used).collect();
                let cut = used.len() / 4;
                let (_, &mut limit, _) = used.select_nth_unstable(cut);
                let before = c.map.len();
                c.map.retain(|_, e| e.used > limit);
                COUNTERS
                    .cache_evictions
                    .fetch_add((before - c.map.len()) as u64, Ordering::Relaxed);
            }
            let used = c.tick;
            c.map.insert(
                key,
                Entry {
                    rrsig: sig.clone(),
                    expiration,
                    used,
                },
            );
        }
        Some(sig)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sign::Algorithm;

    #[test]
    fn the_cache_reuses_fresh_signatures_and_stays_bounded() {
        let (k, _) = SigningKey::generate(Algorithm::Ed25519, true).unwrap();
        let o = Online::new(Arc::new(k), b"\x07example\x00", 86400, 64);
        let a = o.rrsig(b"\x01a\x07example\x00", 47, 60, &[b"x"], 1000).unwrap();
        let b = o.rrsig(b"\x01a\x07example\x00", 47, 60, &[b"x"], 2000).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(o.stats(), (1, 1));
        // other data: another signature
        let c = o.rrsig(b"\x01a\x07example\x00", 47, 60, &[b"y"], 2000).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // late in the validity: renewed
        let d = o
            .rrsig(b"\x01a\x07example\x00", 47, 60, &[b"x"], 1000 + 86400 * 7 / 10)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        for i in 0..1000u32 {
            let n = format!("n{i}");
            let mut w = vec![n.len() as u8];
            w.extend_from_slice(n.as_bytes());
            w.extend_from_slice(b"\x07example\x00");
            o.rrsig(&w, 47, 60, &[b"x"], 3000).unwrap();
            assert!(o.cached() <= 64);
        }
    }
}
