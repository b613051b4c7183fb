//! GCRA (Generic Cell Rate Algorithm, ITU-T I.371): a token bucket whose
//! whole state is one timestamp, the theoretical arrival time (TAT).
//!
//! A cell arriving at `now` conforms if `now >= TAT - tolerance`; then
//! `TAT = max(TAT, now) + T`, where `T = 1/rate` and
//! `tolerance = T * (burst - 1)`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T in nanoseconds.
    t: u64,
    /// Burst tolerance in nanoseconds.
    tau: u64,
}

impl Gcra {
    /// `per_second` sustained (0 means nothing passes), bursts of `burst`
    /// (at least 1).
    pub fn new(per_second: u32, burst: u32) -> Gcra {
        let t = if per_second == 0 {
            u64::MAX
        } else {
            1_000_000_000 / u64::from(per_second)
        };
        Gcra {
            t,
            tau: t.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Checks one arrival at `now` (ns) against `tat` and updates it.
    pub fn check(&self, tat: &mut u64, now: u64) -> bool {
        let t0 = (*tat).max(now);
        if t0 - now > self.tau {
            return false;
        }
        *tat = t0.saturating_add(self.t);
        true
    }

    /// A state that carries no debt at `now` can be forgotten.
    pub fn is_idle(&self, tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_rate_and_burst() {
        let g = Gcra::new(100, 3); // T = 10 ms
        let mut tat = 0;
        let ms = 1_000_000u64;
        assert!(g.check(&mut tat, 1000 * ms));
        assert!(g.check(&mut tat, 1000 * ms));
        assert!(g.check(&mut tat, 1000 * ms));
        assert!(!g.check(&mut tat, 1000 * ms), "burst of 3");
        assert!(!g.check(&mut tat, 1005 * ms));
        assert!(g.check(&mut tat, 1010 * ms), "one more after T");
        // over one second at 1 kHz offered, about 100 pass
        let passed = (0..1000).filter(|i| g.check(&mut tat, 2000 * ms + i * ms)).count();
        assert!((100..=103).contains(&passed), "{passed}");
    }

    #[test]
    fn zero_rate_blocks_everything() {
        let g = Gcra::new(0, 1);
        let mut tat = 0;
        assert!(g.check(&mut tat, 5)); // the very first cell of an empty state
        assert!(!g.check(&mut tat, 1_000_000_000_000));
    }
}
