//! A secondary's refresh/retry/expire timing from its SOA, as a state
//! machine driven by the caller's clock.

use std::time::{Duration, Instant};

use crate::zone::soa_fields;

/// A secondary's SOA timers, clamped to sane bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub refresh: Duration,
    pub retry: Duration,
    pub expire: Duration,
}

pub const MIN_REFRESH: Duration = Duration::from_secs(2);
pub const MAX_REFRESH: Duration = Duration::from_secs(7 * 86400);
pub const MIN_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(86400);
/// First retry while we have no version of the zone (doubles up to
/// [`MAX_BOOTSTRAP_RETRY`]).
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(1);
pub const MAX_BOOTSTRAP_RETRY: Duration = Duration::from_secs(300);

impl Timers {
    /// From uncompressed SOA rdata. The expiry is at least refresh + retry,
    /// so that a zone gets a retry before it expires.
    pub fn from_soa(rdata: &[u8]) -> Option<Timers> {
        let f = soa_fields(rdata)?;
        let secs = |v: u32| Duration::from_secs(u64::from(v));
        let refresh = secs(f[1]).clamp(MIN_REFRESH, MAX_REFRESH);
        let retry = secs(f[2]).clamp(MIN_RETRY, MAX_RETRY);
        let expire = secs(f[3]).max(refresh + retry);
        Some(Timers { refresh, retry, expire })
    }
}

/// What [`Refresh::poll`] says to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Query the primaries (SOA, then IXFR/AXFR).
    Check,
    /// The expire time passed without a successful refresh: stop serving.
    Expire,
}

/// Refresh/retry/expire of one secondary zone (RFC 1034 4.3.5, RFC 1996).
/// Sans I/O: the caller passes `now` and performs the checks.
#[derive(Clone, Debug)]
pub struct Refresh {
    next: Instant,
    /// When the zone expires unless refreshed (none before the first load).
    expires_at: Option<Instant>,
    pub(super) timers: Option<Timers>,
    failures: u32,
    expired: bool,
}

fn add(t: Instant, d: Duration) -> Instant {
    // far-future timers saturate instead of overflowing
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(86400 * 365)))
        .unwrap_or(t)
}

impl Refresh {
    /// A zone we do not have yet: check at once.
    pub fn new(now: Instant) -> Refresh {
        Refresh {
            next: now,
            expires_at: None,
            timers: None,
            failures: 0,
            expired: false,
        }
    }

    /// How long until something is due (zero: now).
    pub fn next_check(&self, now: Instant) -> Duration {
        let mut at = self.next;
        if let (Some(e), false) = (self.expires_at, self.expired) {
            at = at.min(e);
        }
        at.saturating_duration_since(now)
    }

    /// What is due at `now`, if anything. Expiry comes first and is
    /// reported once.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if let (Some(e), false) = (self.expires_at, self.expired) {
            if now >= e {
                self.expired = true;
                return Some(Due::Expire);
            }
        }
        (now >= self.next).then_some(Due::Check)
    }

    /// The zone is current (transferred, or the primary's serial is not
    /// newer): next check after REFRESH, expiry after EXPIRE.
    pub fn on_success(&mut self, now: Instant, timers: Timers) {
        self.timers = Some(timers);
        self.failures = 0;
        self.expired = false;
        self.next = add(now, timers.refresh);
        self.expires_at = Some(add(now, timers.expire));
    }

    /// No primary answered usefully: retry after RETRY (or, before the
    /// first load, after a doubling bootstrap delay).
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let wait = match self.timers {
            Some(t) => t.retry,
            None => {
                let exp = self.failures.saturating_sub(1).min(16);
                (BOOTSTRAP_RETRY * (1u32 << exp)).min(MAX_BOOTSTRAP_RETRY)
            }
        };
        self.next = add(now, wait);
    }

    /// A NOTIFY from a primary: check now.
    pub fn on_notify(&mut self, now: Instant) {
        self.next = self.next.min(now);
    }

    pub fn is_expired(&self) -> bool {
        self.expired
    }
    /// When the zone expires unless refreshed (none before the first load).
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
