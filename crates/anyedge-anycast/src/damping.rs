//! Flap damping for our own announcements.

use std::time::{Duration, Instant};

/// Flap damping (in the spirit of RFC 2439, for our own announcements): each
/// health-caused withdrawal adds a penalty of 1000 that decays with
/// `half_life`. Past 2500 (the third flap in quick succession) the prefix is
/// held down, even when healthy, until the penalty decays below 750; so a
/// flapping service cannot make the prefix flap on the internet.
#[derive(Debug, Clone)]
pub struct Damping {
    half_life: Duration,
    penalty: f64,
    at: Instant,
    suppressed: bool,
    /// Withdrawals counted since the penalty last decayed to nothing.
    pub flaps: u32,
}

const PENALTY: f64 = 1000.0;
const SUPPRESS: f64 = 2500.0;
const REUSE: f64 = 750.0;

impl Damping {
    pub fn new(half_life: Duration, now: Instant) -> Damping {
        Damping {
            half_life,
            penalty: 0.0,
            at: now,
            suppressed: false,
            flaps: 0,
        }
    }

    /// A reload changed the half-life: the penalty so far is kept.
    pub fn set_half_life(&mut self, half_life: Duration) {
        self.half_life = half_life;
    }

    fn decay(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let hl = self.half_life.as_secs_f64().max(0.001);
        self.penalty *= 0.5f64.powf(dt / hl);
        self.at = now;
        if self.penalty < 1.0 {
            self.penalty = 0.0;
            self.flaps = 0;
        }
    }

    /// A withdrawal caused by health (not by an operator).
    pub fn on_health_withdraw(&mut self, now: Instant) {
        self.decay(now);
        self.penalty += PENALTY;
        self.flaps += 1;
        if self.penalty >= SUPPRESS {
            self.suppressed = true;
        }
    }

    /// Ok if the prefix may be announced now, else how long until it may.
    pub fn may_announce(&mut self, now: Instant) -> Result<(), Duration> {
        self.decay(now);
        if self.suppressed && self.penalty > REUSE {
            let hl = self.half_life.as_secs_f64();
            let wait = hl * (self.penalty / REUSE).log2();
            return Err(Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or(Duration::MAX));
        }
        self.suppressed = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Damping;
    use std::time::{Duration, Instant};

    #[test]
    fn damping_holds_down_a_flapping_prefix_and_releases_it() {
        let t0 = Instant::now();
        let hl = Duration::from_secs(60);
        let mut d = Damping::new(hl, t0);
        // two flaps: still allowed
        d.on_health_withdraw(t0);
        assert!(d.may_announce(t0 + Duration::from_secs(1)).is_ok());
        d.on_health_withdraw(t0 + Duration::from_secs(2));
        assert!(d.may_announce(t0 + Duration::from_secs(3)).is_ok());
        // the third in quick succession suppresses
        d.on_health_withdraw(t0 + Duration::from_secs(4));
        let wait = d.may_announce(t0 + Duration::from_secs(5)).unwrap_err();
        // ~2965 / 750 = 2 half-lives: about 2 minutes
        assert!(
            wait > Duration::from_secs(100) && wait < Duration::from_secs(125),
            "{wait:?}"
        );
        assert!(d.may_announce(t0 + Duration::from_secs(60)).is_err());
        assert!(d
            .may_announce(t0 + Duration::from_secs(5) + wait + Duration::from_secs(1))
            .is_ok());
        // once released it stays released until it flaps again
        assert!(d.may_announce(t0 + Duration::from_secs(200)).is_ok());
    }

    #[test]
    fn slow_flaps_never_suppress() {
        let t0 = Instant::now();
        let mut d = Damping::new(Duration::from_secs(60), t0);
        for i in 0..20u64 {
            let t = t0 + Duration::from_secs(120 * i);
            d.on_health_withdraw(t);
            assert!(d.may_announce(t + Duration::from_secs(1)).is_ok(), "flap {i}");
        }
    }
}
