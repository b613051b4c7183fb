//! Stateless selection among eligible backends: weighted round robin driven
//! by a caller-owned counter (an `AtomicU64` in the daemon, so no lock), and
//! weighted least-connections.

/// Maps `counter` to a backend index so that over any `sum(weights)`
/// consecutive counters each backend appears `weight` times, interleaved
/// (nginx's smooth weighted round robin, replayed deterministically for
/// the position `counter mod sum`). Weight-0 backends are never chosen.
pub fn weighted_rr(weights: &[u32], counter: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    // Equal weights (the common case): plain modulo, O(1).
    if let Some(&w0) = weights.iter().find(|&&w| w > 0) {
        if weights.iter().all(|&w| w == w0) {
            return Some((counter % weights.len() as u64) as usize);
        }
    }
    // Smooth WRR: replay `pos + 1` rounds. Bounded by the total weight,
    // which config caps (10000 per backend).
    let pos = counter % total;
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut chosen = 0usize;
    for _ in 0..=pos {
        let mut best: Option<usize> = None;
        for (i, &w) in weights.iter().enumerate() {
            if w == 0 {
                continue;
            }
            current[i] += i64::from(w);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total as i64;
        chosen = b;
    }
    Some(chosen)
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

    #[test]
    fn rr_equal_weights_cycles() {
        let seq: Vec<usize> = (0..6).map(|c| weighted_rr(&[1, 1, 1], c).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn rr_weighted_is_smooth_and_proportional() {
        // nginx's example: weights 5,1,1 -> a a b a c a a
        let seq: Vec<usize> = (0..7).map(|c| weighted_rr(&[5, 1, 1], c).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let mut count = [0; 3];
        for c in 0..600 {
            count[weighted_rr(&[1, 2, 3], c).unwrap()] += 1;
        }
        assert_eq!(count, [100, 200, 300]);
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
