//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4, Pseudocode 1).
//!
//! Every backend gets a permutation of the `M` table slots from two hashes of
//! its *name*: `offset = h1(name) mod M`, `skip = h2(name) mod (M-1) + 1`,
//! `permutation[j] = (offset + j * skip) mod M`. Backends take turns claiming
//! their next preferred free slot until the table is full. With `M` prime,
//! every permutation visits every slot. Weighted variant: a backend of weight
//! `w` takes `w / w_max` turns per round (credit-based, so it takes `w` turns
//! for every `w_max` rounds), so its share of slots is proportional to its
//! weight, with no limit on the weights' sum or scale.
//!
//! Lookup is one modulo and one array read: `table[key_hash mod M]`.
//!
//! The hashes are fixed-key SipHash-1-3 (hand-written below: the std
//! `DefaultHasher` is not guaranteed stable across Rust releases), so every
//! PoP, whatever its binary or config order, builds the same table for the
//! same backend names and weights, and picks the same backend for a client.

use std::net::IpAddr;

/// Default table size: prime, and >= 100 x the backends a service will have.
pub const DEFAULT_TABLE_SIZE: usize = 65537;
/// Upper bound on the table size (memory: 4 bytes a slot).
pub const MAX_TABLE_SIZE: usize = 1 << 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("Maglev table size {0} is not prime")]
    NotPrime(usize),
    #[error("Maglev table size {size} is too small: it needs at least {min} slots (one per backend)")]
    TooSmall { size: usize, min: usize },
    #[error("Maglev table size {size} is too large (at most {max})")]
    TooLarge { size: usize, max: usize },
    #[error("permutation skip {skip} is a multiple of the table size {size}")]
    BadSkip { skip: u64, size: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u32]>,
}

const EMPTY: u32 = u32::MAX;

impl Maglev {
    /// Builds the table for `backends` (name, weight); entries are indices
    /// into `backends`. Backends with weight 0 get no slot. An empty (or
    /// all-zero) list gives an empty table, whose `lookup` is `None`.
    ///
    /// Names should be unique; the result depends only on the multiset of
    /// (name, weight) pairs, not on their order.
    pub fn new(backends: &[(&str, u32)], table_size: usize) -> Result<Maglev, MaglevError> {
        // The fill order decides contended slots, so fill in name order (not
        // config order) and map back to the caller's indices afterwards.
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].cmp(&backends[b]));
        let m = table_size as u64;
        let params: Vec<(u64, u64, u32)> = order
            .iter()
            .map(|&i| {
                let (name, w) = backends[i];
                let offset = sip13(K_OFFSET, name.as_bytes()) % m.max(1);
                let skip = sip13(K_SKIP, name.as_bytes()) % m.saturating_sub(1).max(1) + 1;
                (offset, skip, w)
            })
            .collect();
        let mut t = Self::from_params(&params, table_size)?;
        for slot in t.table.iter_mut() {
            *slot = order.get(*slot as usize).map_or(EMPTY, |&i| i as u32);
        }
        Ok(t)
    }

    /// Builds the table from explicit `(offset, skip, weight)` per backend,
    /// as in the paper's worked example (entries are indices into `params`).
    /// Meant for tests; [`Maglev::new`] derives the parameters from names.
    pub fn from_permutation_params(params: &[(u64, u64, u32)], table_size: usize) -> Result<Maglev, MaglevError> {
        Self::from_params(params, table_size)
    }

    /// Pseudocode 1 of the paper, weighted: backends take turns in input
    /// order, each claiming its next preferred free slot. A backend of the
    /// largest weight `w_max` takes one turn every round; one of weight `w`
    /// takes its `t`-th turn in the first round `k` with `t * w_max <= k * w`,
    /// i.e. `w / w_max` turns per round on average. With equal weights this
    /// is exactly the paper's loop; in general each backend's share of the
    /// table is proportional to its weight, whatever the weights' scale
    /// (scaling all weights by a constant gives the same table).
    fn from_params(params: &[(u64, u64, u32)], m: usize) -> Result<Maglev, MaglevError> {
        let active = params.iter().filter(|p| p.2 > 0).count();
        if m > MAX_TABLE_SIZE {
            return Err(MaglevError::TooLarge {
                size: m,
                max: MAX_TABLE_SIZE,
            });
        }
        if m < active.max(2) {
            return Err(MaglevError::TooSmall {
                size: m,
                min: active.max(2),
            });
        }
        if !is_prime(m) {
            return Err(MaglevError::NotPrime(m));
        }
        let mu = m as u64;
        if let Some(&(_, skip, _)) = params.iter().find(|p| p.2 > 0 && p.1 % mu == 0) {
            // The permutation would not visit every slot (and the fill
            // would never end).
            return Err(MaglevError::BadSkip { skip, size: m });
        }
        let w_max = u64::from(params.iter().map(|p| p.2).max().unwrap_or(0));
        if w_max == 0 {
            return Ok(Maglev { table: Box::new([]) });
        }
        let mut table = vec![EMPTY; m];
        // Per backend: the next index into its permutation, and turns taken.
        let mut next = vec![0u64; params.len()];
        let mut taken = vec![0u64; params.len()];
        let mut filled = 0usize;
        // The max-weight backend takes a turn every round, so `m` rounds
        // always suffice; the bound only makes termination obvious.
        'fill: for round in 1..=mu {
            for (i, &(offset, skip, weight)) in params.iter().enumerate() {
                if taken[i] * w_max >= round * u64::from(weight) {
                    continue; // no turn this round (or weight 0)
                }
                let (offset, skip) = (offset % mu, skip % mu);
                // The next preferred slot that is free: at most `m` probes,
                // since the permutation visits every slot and one is free.
                let mut c = (offset + next[i] * skip) % mu;
                while table[c as usize] != EMPTY {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % mu;
                }
                table[c as usize] = i as u32;
                next[i] += 1;
                taken[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Ok(Maglev {
            table: table.into_boxed_slice(),
        })
    }

    /// The backend index (into the slice given to `new`) for a key hash.
    pub fn lookup(&self, key_hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let slot = (key_hash % self.table.len() as u64) as usize;
        self.table.get(slot).map(|&i| i as usize)
    }

    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

/// Stable hash of a client address (IP only, not the port: one client
/// sticks to one backend across its connections), the same on every machine.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => sip13(K_CLIENT, &a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => sip13(K_CLIENT, &v4.octets()),
            None => sip13(K_CLIENT, &a.octets()),
        },
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

// Fixed keys: changing any of them changes every PoP's mapping.
const K_OFFSET: (u64, u64) = (0x616e_7965_6467_6501, 0x6d61_676c_6576_6f66);
const K_SKIP: (u64, u64) = (0x616e_7965_6467_6502, 0x6d61_676c_6576_736b);
const K_CLIENT: (u64, u64) = (0x616e_7965_6467_6503, 0x636c_6965_6e74_6970);

/// SipHash-1-3 with a fixed key (the algorithm of Aumasson & Bernstein, one
/// compression and three finalization rounds).
fn sip13(key: (u64, u64), data: &[u8]) -> u64 {
    let (k0, k1) = key;
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    #[inline]
    fn round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let m = u64::from_le_bytes(b);
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    let m = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    v3 ^= m;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= m;
    v2 ^= 0xff;
    for _ in 0..3 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The worked example of the paper (Table 1): M = 7,
    /// B0 offset 3 skip 4, B1 offset 0 skip 2, B2 offset 3 skip 1.
    #[test]
    fn paper_example_table_1() {
        let full = Maglev::from_permutation_params(&[(3, 4, 1), (0, 2, 1), (3, 1, 1)], 7).unwrap();
        // Permutations: B0 3,0,4,1,5,2,6  B1 0,2,4,6,1,3,5  B2 3,4,5,6,0,1,2
        // Before: B1 B0 B1 B0 B2 B2 B0
        assert_eq!(full.table(), &[1, 0, 1, 0, 2, 2, 0]);
        // After B1 is removed: B0 B0 B0 B0 B2 B2 B2 (rounds: B0 3, B2 4;
        // B0 0, B2 5; B0 1, B2 6; B0 2). Slots 0 and 2 move from B1 to B0;
        // slot 6 moves from B0 to B2: the small extra disruption the paper
        // accepts for balance.
        let without_b1 = Maglev::from_permutation_params(&[(3, 4, 1), (3, 1, 1)], 7).unwrap();
        let named: Vec<u32> = without_b1.table().iter().map(|&i| [0, 2][i as usize]).collect();
        assert_eq!(named, vec![0, 0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn sizes_checked() {
        assert_eq!(Maglev::new(&[("a", 1)], 65536), Err(MaglevError::NotPrime(65536)));
        assert_eq!(Maglev::new(&[("a", 1)], 9), Err(MaglevError::NotPrime(9)));
        assert_eq!(
            Maglev::new(&[("a", 1), ("b", 1), ("c", 1)], 2),
            Err(MaglevError::TooSmall { size: 2, min: 3 })
        );
        assert_eq!(Maglev::new(&[], 1), Err(MaglevError::TooSmall { size: 1, min: 2 }));
        assert_eq!(
            Maglev::new(&[("a", 1)], MAX_TABLE_SIZE + 1),
            Err(MaglevError::TooLarge {
                size: MAX_TABLE_SIZE + 1,
                max: MAX_TABLE_SIZE
            })
        );
        // A skip that is a multiple of M would loop forever: rejected.
        assert_eq!(
            Maglev::from_permutation_params(&[(1, 7, 1), (0, 1, 1)], 7),
            Err(MaglevError::BadSkip { skip: 7, size: 7 })
        );
        assert_eq!(
            Maglev::from_permutation_params(&[(1, 0, 1)], 7),
            Err(MaglevError::BadSkip { skip: 0, size: 7 })
        );
        // Exactly as many slots as backends: each gets one.
        let tight = Maglev::new(&[("a", 1), ("b", 1), ("c", 1)], 3).unwrap();
        let mut t = tight.table().to_vec();
        t.sort_unstable();
        assert_eq!(t, vec![0, 1, 2]);
        // Weights larger than the table are fine.
        let big = Maglev::new(&[("a", u32::MAX), ("b", 1)], 7).unwrap();
        assert!(big.table().contains(&0));
        let empty = Maglev::new(&[], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(empty.lookup(42), None);
        let zero = Maglev::new(&[("a", 0)], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(zero.lookup(42), None);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("backend-{i}")).collect()
    }

    fn build(names: &[String]) -> Maglev {
        let b: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        Maglev::new(&b, DEFAULT_TABLE_SIZE).unwrap()
    }

    #[test]
    fn balanced_within_one_percent() {
        let m = build(&names(10));
        let mut count = [0usize; 10];
        for &i in m.table() {
            count[i as usize] += 1;
        }
        let ideal = DEFAULT_TABLE_SIZE as f64 / 10.0;
        for c in count {
            assert!((c as f64 - ideal).abs() / ideal < 0.01, "{count:?}");
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [5usize, 10, 20] {
            let all = names(n);
            let full = build(&all);
            let mut fewer = all.clone();
            let removed = fewer.remove(n / 2);
            let less = build(&fewer);
            let keys = 100_000u64;
            let (mut moved, mut moved_from_others) = (0u64, 0u64);
            for k in 0..keys {
                let h = hash_ip(IpAddr::V4(Ipv4Addr::from((k as u32).wrapping_mul(2654435761))));
                let before = &all[full.lookup(h).unwrap()];
                let after = &fewer[less.lookup(h).unwrap()];
                if before != after {
                    moved += 1;
                    if *before != removed {
                        moved_from_others += 1;
                    }
                }
            }
            let frac = moved as f64 / keys as f64;
            assert!(frac <= 1.3 / n as f64, "n={n}: moved {frac}");
            assert!(
                frac >= 0.7 / n as f64,
                "n={n}: the removed backend's keys must move: {frac}"
            );
            // keys of the remaining backends mostly stay (paper: a few %)
            assert!(
                (moved_from_others as f64 / keys as f64) < 0.3 / n as f64,
                "n={n}: {moved_from_others}"
            );
        }
    }

    #[test]
    fn weights_respected() {
        let m = Maglev::new(&[("a", 1), ("b", 2), ("c", 3)], DEFAULT_TABLE_SIZE).unwrap();
        let mut count = [0f64; 3];
        for &i in m.table() {
            count[i as usize] += 1.0;
        }
        for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let got = count[i] / DEFAULT_TABLE_SIZE as f64;
            assert!((got - want).abs() < 0.02, "backend {i}: {got} vs {want}");
        }
    }

    #[test]
    fn weight_scale_does_not_matter() {
        // Large weights (config allows up to 10000) must not skew the table:
        // scaling every weight gives the very same table.
        let ns = names(7);
        let ones: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 1)).collect();
        let big: Vec<(&str, u32)> = ns.iter().map(|n| (n.as_str(), 10_000)).collect();
        let a = Maglev::new(&ones, DEFAULT_TABLE_SIZE).unwrap();
        let b = Maglev::new(&big, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(a.table(), b.table());
        let w = Maglev::new(&[("a", 1000), ("b", 2000), ("c", 3000)], DEFAULT_TABLE_SIZE).unwrap();
        let u = Maglev::new(&[("a", 1), ("b", 2), ("c", 3)], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(w.table(), u.table());
        // Nearly equal big weights give nearly equal shares.
        let m = Maglev::new(&[("a", 9_999), ("b", 10_000), ("c", 9_998)], DEFAULT_TABLE_SIZE).unwrap();
        let mut count = [0f64; 3];
        for &i in m.table() {
            count[i as usize] += 1.0;
        }
        for c in count {
            let share = c / DEFAULT_TABLE_SIZE as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.005, "{count:?}");
        }
    }

    #[test]
    fn paper_example_weighted() {
        // B0 with weight 2 takes a turn every round, B1 (weight 1) every
        // other round. Rounds: B0 3, B1 0; B0 4 (0 taken); B0 1, B1 2;
        // B0 5; B0 6 (2 taken) -> B1 B0 B1 B0 B0 B0 B0.
        let m = Maglev::from_permutation_params(&[(3, 4, 2), (0, 2, 1)], 7).unwrap();
        assert_eq!(m.table(), &[1, 0, 1, 0, 0, 0, 0]);
        // A weight-0 backend takes no slot but keeps its index.
        let z = Maglev::from_permutation_params(&[(3, 4, 1), (0, 2, 0), (3, 1, 1)], 7).unwrap();
        assert_eq!(z.table(), &[0, 0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn config_order_does_not_matter() {
        let a = Maglev::new(&[("x", 1), ("y", 2), ("z", 1)], 251).unwrap();
        let b = Maglev::new(&[("z", 1), ("x", 1), ("y", 2)], 251).unwrap();
        let na: Vec<&str> = a.table().iter().map(|&i| ["x", "y", "z"][i as usize]).collect();
        let nb: Vec<&str> = b.table().iter().map(|&i| ["z", "x", "y"][i as usize]).collect();
        assert_eq!(na, nb);
    }

    /// Pinned values: if these change, PoPs running different versions would
    /// send the same client to different backends.
    #[test]
    fn hashes_are_stable_across_machines() {
        assert_eq!(sip13((0, 0), b""), sip13((0, 0), b""));
        let v4 = hash_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let mapped = hash_ip(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
        assert_eq!(v4, mapped, "v4-mapped v6 hashes like v4");
        let v6 = hash_ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        assert_ne!(v4, v6);
        let m = Maglev::new(&[("a", 1), ("b", 1), ("c", 1)], 13).unwrap();
        assert_eq!(v4, PINNED_V4);
        assert_eq!(v6, PINNED_V6);
        assert_eq!(m.table(), PINNED_TABLE_13);
    }

    const PINNED_V4: u64 = 11270524434746009511;
    const PINNED_V6: u64 = 5539966719915551401;
    const PINNED_TABLE_13: &[u32] = &[1, 0, 0, 2, 0, 2, 2, 1, 1, 1, 0, 2, 0];

    /// Our SipHash-1-3 equals the `siphasher` crate's for every length
    /// around the 8-byte block boundary.
    #[test]
    fn sip13_matches_reference_implementation() {
        use std::hash::Hasher;
        let data: Vec<u8> = (0u8..40).collect();
        for len in 0..data.len() {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(K_OFFSET.0, K_OFFSET.1);
            h.write(&data[..len]);
            assert_eq!(sip13(K_OFFSET, &data[..len]), h.finish(), "len {len}");
        }
    }

    #[test]
    fn sip_keys_separate_domains() {
        assert_ne!(sip13(K_OFFSET, b"a"), sip13(K_SKIP, b"a"));
        assert_ne!(sip13(K_OFFSET, b"a"), sip13(K_OFFSET, b"b"));
        assert_ne!(sip13(K_OFFSET, b"12345678"), sip13(K_OFFSET, b"12345678\0"));
    }

    proptest! {
        #[test]
        fn lookup_in_bounds(ws in proptest::collection::vec(0u32..5, 0..12), key: u64) {
            let ns = names(ws.len());
            let b: Vec<(&str, u32)> = ns.iter().zip(&ws).map(|(n, w)| (n.as_str(), *w)).collect();
            let m = Maglev::new(&b, 251).unwrap();
            match m.lookup(key) {
                None => prop_assert!(ws.iter().all(|&w| w == 0)),
                Some(i) => { prop_assert!(i < ws.len()); prop_assert!(ws[i] > 0); }
            }
        }
    }
}
