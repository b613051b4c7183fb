//! Bounded per-key state tables, sharded by key hash so that concurrent
//! connections rarely contend (one short mutex per shard, never a global
//! lock). When a shard is full, idle entries go first; otherwise the entry
//! with the least debt among a few sampled ones is evicted, which forgets
//! the least dangerous source. Memory is fixed by the capacity whatever the
//! number of (spoofed) sources.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::gcra::Gcra;

type Key = (u128, u8);

const SHARDS: usize = 64;
/// Entries examined to pick an eviction victim.
const SAMPLE: usize = 8;

/// The sharding all tables share: `SHARDS` mutex-guarded maps of at most
/// `per_shard` entries each, a key's shard chosen by a hasher with a
/// per-process random key (so an attacker cannot aim all sources at one
/// shard).
struct Shards<V> {
    shards: Box<[Mutex<HashMap<Key, V>>]>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl<V> Shards<V> {
    fn new(capacity: usize) -> Shards<V> {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Shards {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_capacity(per_shard)))
                .collect(),
            per_shard,
            hasher: Default::default(),
        }
    }

    /// The locked shard of `key` (None only if a holder panicked).
    fn lock(&self, key: &Key) -> Option<std::sync::MutexGuard<'_, HashMap<Key, V>>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards.get(i)?.lock().ok()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }
}

/// GCRA state (theoretical arrival time) per key.
pub struct RateTable {
    shards: Shards<u64>,
}

impl RateTable {
    pub fn new(capacity: usize) -> RateTable {
        RateTable {
            shards: Shards::new(capacity),
        }
    }

    /// Applies `g` to `key` at `now`; true if the arrival conforms.
    pub fn check(&self, key: Key, now: u64, g: &Gcra) -> bool {
        let Some(mut m) = self.shards.lock(&key) else {
            return true;
        };
        if let Some(tat) = m.get_mut(&key) {
            return g.check(tat, now);
        }
        let mut tat = 0u64;
        let ok = g.check(&mut tat, now);
        if m.len() >= self.shards.per_shard {
            // Evict: an idle entry, else the smallest TAT among a sample.
            let victim = m
                .iter()
                .take(SAMPLE)
                .min_by_key(|(_, &t)| if g.is_idle(t, now) { 0 } else { t })
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                m.remove(&v);
            }
        }
        m.insert(key, tat);
        ok
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
    shards: Shards<u32>,
}

impl ConcurrencyTable {
    pub fn new(capacity: usize) -> ConcurrencyTable {
        ConcurrencyTable {
            shards: Shards::new(capacity),
        }
    }

    /// Takes one slot for `key` if it has fewer than `max`.
    pub fn acquire(&self, key: Key, max: u32) -> bool {
        let Some(mut m) = self.shards.lock(&key) else {
            return true;
        };
        let full = m.len() >= self.shards.per_shard;
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
        let Some(mut m) = self.shards.lock(&key) else { return };
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
    shards: Shards<u32>,
}

impl CountTable {
    pub fn new(capacity: usize) -> CountTable {
        CountTable {
            shards: Shards::new(capacity),
        }
    }

    pub fn add(&self, key: Key) {
        let Some(mut m) = self.shards.lock(&key) else { return };
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_add(1);
            return;
        }
        let mut start = 1u32;
        if m.len() >= self.shards.per_shard {
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
