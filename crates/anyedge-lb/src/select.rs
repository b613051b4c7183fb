//! Stateless selection among eligible backends: smooth weighted round robin
//! driven by a caller-owned counter (an `AtomicU64` in the daemon, so no
//! lock and no shared mutable schedule), and weighted least-connections.

/// Fixed-point precision of the virtual-time search in [`weighted_rr`]:
/// distinct turn times differ by more than `2^-SHIFT` for any `u32` weights.
const SHIFT: u32 = 66;

/// Smooth weighted round robin, as a pure function of a counter.
///
/// Over every `sum(weights)` consecutive counter values each backend appears
/// exactly `weight` times, spread out rather than in bursts: backend `i`'s
/// `k`-th turn of a cycle sits at virtual time `(k + 1/2) / w_i` in `[0, 1)`,
/// and the cycle lists all turns by time (ties by index). This is the
/// lock-free-friendly counterpart of nginx's smooth WRR (same idea, not the
/// same sequence: each backend's turns are evenly spaced, so at any prefix
/// every backend is within about one turn of its proportional share; the
/// worst case, with many ties, is `1/2 + n/2` turns). Weights `5,1,1` give
/// `a a a b c a a` (nginx: `a a b a c a a`); equal weights give plain
/// `0, 1, .., n-1`.
///
/// Cost: O(n) for equal weights, O(66 n) otherwise, whatever the weights
/// (no replay of the cycle). Weight-0 backends are never chosen; `None` if
/// there is no backend with a positive weight.
pub fn weighted_rr(weights: &[u32], counter: u64) -> Option<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return None;
    }
    // Equal weights (the common case): plain modulo, O(1) after the scan.
    if let Some(&w0) = weights.first() {
        if weights.iter().all(|&w| w == w0) {
            return Some((counter % weights.len() as u64) as usize);
        }
    }
    let pos = u128::from(counter) % total;
    // Turns of backend i at times <= x = n / 2^SHIFT: #{k : k + 1/2 <= w_i x}
    // = floor(w_i x + 1/2), and never more than w_i since x <= 1.
    let half = 1u128 << (SHIFT - 1);
    let turns = |w: u32, n: u128| (u128::from(w) * n + half) >> SHIFT;
    let upto = |n: u128| -> u128 { weights.iter().map(|&w| turns(w, n)).sum() };
    // The smallest grid point n with more than `pos` turns at or before it:
    // upto(0) = 0 <= pos and upto(2^SHIFT) = total > pos.
    let (mut lo, mut hi) = (0u128, 1u128 << SHIFT);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if upto(mid) > pos {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The turns in (lo, hi] all share one time (distinct times are further
    // apart than the grid step); take the right one of the tied backends.
    let mut rank = pos - upto(lo);
    for (i, &w) in weights.iter().enumerate() {
        if turns(w, hi) > turns(w, lo) {
            if rank == 0 {
                return Some(i);
            }
            rank -= 1;
        }
    }
    None // unreachable: upto(hi) > pos
}

/// Weighted least connections: the index minimizing `active / weight`
/// (compared exactly as `active_i * w_j < active_j * w_i`). Ties rotate with
/// `tiebreak`. Weight-0 candidates are never chosen.
pub fn least_conn(candidates: &[(u64, u32)], tiebreak: u64) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let start = (tiebreak % n as u64) as usize;
    let mut best: Option<usize> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let (a, w) = candidates[i];
        if w == 0 {
            continue;
        }
        match best {
            None => best = Some(i),
            Some(b) => {
                let (ab, wb) = candidates[b];
                if u128::from(a) * u128::from(wb) < u128::from(ab) * u128::from(w) {
                    best = Some(i);
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rr_equal_weights_cycles() {
        let seq: Vec<usize> = (0..6).map(|c| weighted_rr(&[1, 1, 1], c).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn rr_weighted_is_smooth_and_proportional() {
        // Turn times: a .1 .3 .5 .7 .9, b .5, c .5 -> a a a b c a a
        let seq: Vec<usize> = (0..7).map(|c| weighted_rr(&[5, 1, 1], c).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 0, 1, 2, 0, 0]);
        // Two equal-ish backends alternate instead of 10 x a then 10 x b.
        let seq: Vec<usize> = (0..6).map(|c| weighted_rr(&[3, 3, 0], c).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 0, 1, 0, 1]);
        let seq: Vec<usize> = (0..6).map(|c| weighted_rr(&[1, 2, 3], c).unwrap()).collect();
        assert_eq!(seq, vec![2, 1, 0, 2, 1, 2]);
        let mut count = [0; 3];
        for c in 0..600 {
            count[weighted_rr(&[1, 2, 3], c).unwrap()] += 1;
        }
        assert_eq!(count, [100, 200, 300]);
    }

    /// At every prefix of the cycle, every backend is within one turn of
    /// its proportional share (no AAAB-style bursts).
    #[test]
    fn rr_prefixes_stay_proportional() {
        for ws in [
            vec![5u32, 1, 1],
            vec![1, 2, 3],
            vec![10, 1],
            vec![7, 5, 3, 2],
            vec![100, 99, 1],
            vec![10_000, 1, 5_000],
        ] {
            let total: u64 = ws.iter().map(|&w| u64::from(w)).sum();
            let mut count = vec![0u64; ws.len()];
            for c in 0..total {
                count[weighted_rr(&ws, c).unwrap()] += 1;
                for (i, &w) in ws.iter().enumerate() {
                    let ideal = (c + 1) as f64 * f64::from(w) / total as f64;
                    let dev = (count[i] as f64 - ideal).abs();
                    assert!(dev <= 1.0 + 1e-9, "{ws:?} at {c}: backend {i} {count:?}");
                }
            }
            assert_eq!(count, ws.iter().map(|&w| u64::from(w)).collect::<Vec<_>>(), "{ws:?}");
        }
    }

    #[test]
    fn rr_counter_wraps_cleanly() {
        // u64::MAX + 1 wraps to 0: both ends stay in bounds and the result
        // is periodic in sum(weights).
        let ws = [3u32, 0, 4];
        for c in [u64::MAX, u64::MAX - 1, 0, 1] {
            let i = weighted_rr(&ws, c).unwrap();
            assert_ne!(i, 1);
        }
        for c in 0..50u64 {
            assert_eq!(weighted_rr(&ws, c), weighted_rr(&ws, c + 7));
        }
        assert!(weighted_rr(&[u32::MAX, u32::MAX - 1, 1], u64::MAX).is_some());
    }

    /// Reference: list every turn of a cycle as (time, index), sorted.
    fn rr_reference(ws: &[u32]) -> Vec<usize> {
        let mut turns: Vec<(u64, u64, usize)> = Vec::new();
        for (i, &w) in ws.iter().enumerate() {
            for k in 0..u64::from(w) {
                // time (2k+1) / (2w), kept as a fraction
                turns.push((2 * k + 1, 2 * u64::from(w), i));
            }
        }
        turns.sort_by(|a, b| {
            (u128::from(a.0) * u128::from(b.1))
                .cmp(&(u128::from(b.0) * u128::from(a.1)))
                .then(a.2.cmp(&b.2))
        });
        turns.into_iter().map(|t| t.2).collect()
    }

    proptest! {
        #[test]
        fn rr_matches_reference(ws in proptest::collection::vec(0u32..40, 0..8)) {
            let reference = rr_reference(&ws);
            if reference.is_empty() {
                prop_assert_eq!(weighted_rr(&ws, 0), None);
            } else {
                for (c, &want) in reference.iter().enumerate() {
                    prop_assert_eq!(weighted_rr(&ws, c as u64), Some(want));
                }
            }
        }

        #[test]
        fn least_conn_is_a_weighted_minimum(
            cands in proptest::collection::vec((0u64..20, 0u32..5), 0..8),
            tiebreak: u64,
        ) {
            match least_conn(&cands, tiebreak) {
                None => prop_assert!(cands.iter().all(|c| c.1 == 0)),
                Some(i) => {
                    let (a, w) = cands[i];
                    prop_assert!(w > 0);
                    for &(a2, w2) in cands.iter().filter(|c| c.1 > 0) {
                        // a / w <= a2 / w2
                        prop_assert!(u128::from(a) * u128::from(w2) <= u128::from(a2) * u128::from(w));
                    }
                }
            }
        }
    }

    #[test]
    fn rr_zero_and_empty() {
        assert_eq!(weighted_rr(&[], 3), None);
        assert_eq!(weighted_rr(&[0, 0], 3), None);
        for c in 0..10 {
            assert_eq!(weighted_rr(&[0, 2, 0], c), Some(1));
        }
    }

    #[test]
    fn least_conn_weighted_and_ties() {
        assert_eq!(least_conn(&[(5, 1), (2, 1), (3, 1)], 0), Some(1));
        // 4/2 = 2 < 3/1
        assert_eq!(least_conn(&[(3, 1), (4, 2)], 0), Some(1));
        // ties rotate
        let picks: Vec<usize> = (0..3)
            .map(|t| least_conn(&[(1, 1), (1, 1), (1, 1)], t).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2]);
        assert_eq!(least_conn(&[(0, 0), (9, 1)], 0), Some(1));
        assert_eq!(least_conn(&[(0, 0)], 0), None);
        assert_eq!(least_conn(&[], 0), None);
    }
}
