//! Log rate limiting: a flood of bad clients must not become a flood of log
//! lines. Each call site owns a [`LogLimiter`]; it lets `per_second` events
//! through per one-second window and reports how many it suppressed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct LogLimiter {
    per_second: u64,
    /// (window second << 20) | count in window
    state: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub const fn new(per_second: u64) -> Self {
        Self {
            per_second,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event may be logged, where `n` is the number of
    /// events suppressed since the last one logged; `None` to stay silent.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.allow_at(now)
    }

    fn allow_at(&self, now_sec: u64) -> Option<u64> {
        let window = now_sec & ((1 << 44) - 1);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (w, c) = (cur >> 20, cur & ((1 << 20) - 1));
            let next = if w == window {
                if c >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                (w << 20) | (c + 1)
            } else {
                (window << 20) | 1
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window_and_counts_suppressed() {
        let l = LogLimiter::new(2);
        assert_eq!(l.allow_at(10), Some(0));
        assert_eq!(l.allow_at(10), Some(0));
        assert_eq!(l.allow_at(10), None);
        assert_eq!(l.allow_at(10), None);
        assert_eq!(l.allow_at(11), Some(2));
        assert_eq!(l.allow_at(11), Some(0));
        assert_eq!(l.allow_at(11), None);
    }
}
