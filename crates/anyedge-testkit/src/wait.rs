//! Bounded waits: poll a condition until it holds, or panic naming what was
//! awaited and the last value observed.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// What a polled closure returns: done (with a value), or not yet (with a
/// description of what it observed).
pub trait Awaited {
    type Output;
    fn check(self) -> Result<Self::Output, String>;
}

impl Awaited for bool {
    type Output = ();
    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Awaited for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

/// `Err(observed)`: not yet, and `observed` is what the panic message shows.
impl<T, E: Debug> Awaited for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` every [`POLL`] until it says done and returns what it returned
/// (`()` for `bool`, `T` for `Option<T>` and `Result<T, _>`); after `max`
/// panics with `what` and the last observation (return `Err(observed)` to
/// have it shown).
#[track_caller]
pub fn wait_until<A: Awaited>(what: &str, max: Duration, mut f: impl FnMut() -> A) -> A::Output {
    poll(what, max, || f().check())
}

#[track_caller]
fn poll<T>(what: &str, max: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= max => {
                panic!("timed out after {max:?} waiting until {what}; last observed: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Polls `observe` until it returns `want`; panics after `max` with `what`,
/// `want` and the last value seen.
#[track_caller]
pub fn wait_eq<T: PartialEq + Debug>(what: &str, max: Duration, want: T, mut observe: impl FnMut() -> T) {
    poll(what, max, || {
        let v = observe();
        if v == want {
            Ok(())
        } else {
            Err(format!("{v:?} (want {want:?})"))
        }
    })
}

/// Checks `f` every [`POLL`] for `period` and panics at the first time it
/// does not hold: for "nothing happens in this time" assertions.
#[track_caller]
pub fn holds_for<A: Awaited>(what: &str, period: Duration, mut f: impl FnMut() -> A) {
    let start = Instant::now();
    loop {
        if let Err(seen) = f().check() {
            panic!(
                "{what} stopped holding after {:?} (of {period:?}); observed: {seen}",
                start.elapsed()
            );
        }
        if start.elapsed() >= period {
            return;
        }
        std::thread::sleep(POLL.min(period));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_done() {
        let mut n = 0;
        let v = wait_until("n reaches 3", Duration::from_secs(1), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(n)
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting until the answer; last observed: 41 (want 42)")]
    fn names_what_and_the_last_value() {
        wait_eq("the answer", Duration::from_millis(50), 42, || 41);
    }

    #[test]
    #[should_panic(expected = "calm stopped holding")]
    fn holds_for_fails_at_the_first_violation() {
        let mut n = 0;
        holds_for("calm", Duration::from_secs(5), || {
            n += 1;
            n < 3
        });
    }
}
