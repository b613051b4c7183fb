//! Bounded per-key state tables, sharded by key hash so that concurrent
//! connections rarely contend (one short mutex per shard, never a global
//! lock). When a shard is full, idle entries go first; otherwise the entry
//! with the least debt among a few sampled ones is evicted, which forgets
//! the least dangerous source. Memory is fixed by the capacity whatever the
//! number of (spoofed) sources. (In bytes: the eviction churn leaves
//! tombstones that make a full map grow once or twice, to at most about 4.6
//! slots an entry, and never again.)

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

use crate::gcra::Gcra;

type Key = (u128, u8);

const SHARDS: usize = 64;
/// Entries examined to pick an eviction victim.
const SAMPLE: usize = 8;

/// The sharding all tables share: `SHARDS` mutex-guarded maps whose entry
/// limits add up to the capacity exactly (at least one entry a shard), a
/// key's shard chosen by a hasher with a per-process random key (so an
/// attacker cannot aim all sources at one shard).
pub(crate) struct Shards<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    /// Shard `i` holds at most `base + 1` entries if `i < extra`, else `base`.
    base: usize,
    extra: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Copy, V> Shards<K, V> {
    /// Room for `capacity` entries in all (at least `SHARDS`).
    pub(crate) fn new(capacity: usize) -> Shards<K, V> {
        let capacity = capacity.max(SHARDS);
        let (base, extra) = (capacity / SHARDS, capacity % SHARDS);
        Shards {
            shards: (0..SHARDS)
                .map(|i| Mutex::new(HashMap::with_capacity(base + usize::from(i < extra))))
                .collect(),
            base,
            extra,
            hasher: RandomState::new(),
        }
    }

    /// The locked shard of `key` and its entry limit (None only if a
    /// holder panicked).
    fn lock(&self, key: &K) -> Option<(MutexGuard<'_, HashMap<K, V>>, usize)> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let m = self.shards.get(i)?.lock().ok()?;
        Some((m, self.base + usize::from(i < self.extra)))
    }

    /// Runs `f` on the entry of `key`, creating it with `new` if missing.
    /// A new entry in a full shard first evicts, among `SAMPLE` entries,
    /// the one of lowest `rank` (rank forgettable entries 0). None only if
    /// the shard's lock is poisoned.
    pub(crate) fn upsert<R>(
        &self,
        key: K,
        new: impl FnOnce() -> V,
        rank: impl Fn(&V) -> u64,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let (mut m, limit) = self.lock(&key)?;
        if let Some(v) = m.get_mut(&key) {
            return Some(f(v));
        }
        if m.len() >= limit {
            let victim = m.iter().take(SAMPLE).min_by_key(|(_, v)| rank(v)).map(|(k, _)| *k);
            if let Some(k) = victim {
                m.remove(&k);
            }
        }
        Some(f(m.entry(key).or_insert_with(new)))
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }

    /// The most entries held at once.
    pub(crate) fn capacity(&self) -> usize {
        self.base * SHARDS + self.extra
    }
}

/// GCRA state (theoretical arrival time) per key.
pub struct RateTable {
    shards: Shards<Key, u64>,
}

impl RateTable {
    pub fn new(capacity: usize) -> RateTable {
        RateTable {
            shards: Shards::new(capacity),
        }
    }

    /// Applies `g` to `key` at `now`; true if the arrival conforms. A new
    /// key in a full shard evicts an idle entry, else the smallest TAT
    /// among a sample.
    pub fn check(&self, key: Key, now: u64, g: &Gcra) -> bool {
        self.shards
            .upsert(
                key,
                || 0,
                |&tat| if g.is_idle(tat, now) { 0 } else { tat },
                |tat| g.check(tat, now),
            )
            .unwrap_or(true)
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Open-connection counts per key. A full table refuses new keys rather
/// than forgetting counts (forgetting would let a source exceed its cap).
pub struct ConcurrencyTable {
    shards: Shards<Key, u32>,
}

impl ConcurrencyTable {
    pub fn new(capacity: usize) -> ConcurrencyTable {
        ConcurrencyTable {
            shards: Shards::new(capacity),
        }
    }

    /// Takes one slot for `key` if it has fewer than `max`.
    pub fn acquire(&self, key: Key, max: u32) -> bool {
        let Some((mut m, limit)) = self.shards.lock(&key) else {
            return true;
        };
        let full = m.len() >= limit;
        match m.get_mut(&key) {
            Some(n) if *n >= max => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if full || max == 0 => false,
            None => {
                m.insert(key, 1);
                true
            }
        }
    }

    pub fn release(&self, key: Key) {
        let Some((mut m, _)) = self.shards.lock(&key) else {
            return;
        };
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-key event counts for one window, bounded: when full, a new key
/// replaces the smallest of a few sampled entries and inherits its count
/// (the Space-Saving rule), so a heavy hitter is never under-counted and
/// memory stays fixed.
pub struct CountTable {
    shards: Shards<Key, u32>,
}

impl CountTable {
    pub fn new(capacity: usize) -> CountTable {
        CountTable {
            shards: Shards::new(capacity),
        }
    }

    pub fn add(&self, key: Key) {
        let Some((mut m, limit)) = self.shards.lock(&key) else {
            return;
        };
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_add(1);
            return;
        }
        let mut start = 1u32;
        if m.len() >= limit {
            if let Some((k, n)) = m.iter().take(SAMPLE).min_by_key(|(_, &n)| n).map(|(k, n)| (*k, *n)) {
                m.remove(&k);
                start = n.saturating_add(1);
            }
        }
        m.insert(key, start);
    }

    /// Returns the keys counted at least `threshold` times and clears the
    /// table for the next window.
    pub fn take_over(&self, threshold: u32) -> Vec<(Key, u32)> {
        let mut out = Vec::new();
        for s in self.shards.shards.iter() {
            if let Ok(mut m) = s.lock() {
                out.extend(m.drain().filter(|(_, n)| *n >= threshold));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_capacity() {
        let t = RateTable::new(640);
        let g = Gcra::new(1, 1);
        for i in 0..100_000u128 {
            t.check((i, 128), 0, &g);
        }
        assert!(t.len() <= 640, "{}", t.len());
    }

    #[test]
    fn capacity_is_exact() {
        let t = RateTable::new(1000); // not a multiple of 64
        let g = Gcra::new(1, 1);
        for i in 0..200_000u128 {
            t.check((i, 128), 0, &g);
        }
        assert_eq!((t.len(), t.shards.capacity()), (1000, 1000));
        assert_eq!(RateTable::new(10).shards.capacity(), 64, "one entry a shard at least");
    }

    #[test]
    fn concurrency_full_table_refuses_new_keys() {
        let t = ConcurrencyTable::new(64); // 1 per shard
        let mut admitted = 0;
        for i in 0..10_000u128 {
            if t.acquire((i, 128), 5) {
                admitted += 1;
            }
        }
        assert!(admitted <= 64);
        assert!(t.len() <= 64);
    }
}
