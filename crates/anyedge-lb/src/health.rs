//! Backend health: a rise/fall state machine fed by active check results and
//! by passive signals from real traffic (failed connects), like HAProxy's
//! `rise`/`fall` and `observe layer4`. Pure: `now` is passed in.

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive passing checks that bring a backend up.
    pub rise: u32,
    /// Consecutive failing checks that take it down.
    pub fall: u32,
    /// Consecutive failed connects from real traffic that eject it at once;
    /// 0 disables passive ejection.
    pub passive_fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Ok { latency: Duration },
    Failed { reason: FailReason },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    ConnectRefused,
    ConnectTimeout,
    Timeout,
    BadStatus(u16),
    BadResponse,
    Io(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::ConnectRefused => f.write_str("connection refused"),
            FailReason::ConnectTimeout => f.write_str("connect timed out"),
            FailReason::Timeout => f.write_str("check timed out"),
            FailReason::BadStatus(s) => write!(f, "unexpected HTTP status {s}"),
            FailReason::BadResponse => f.write_str("malformed response"),
            FailReason::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// Human readable, e.g. "3 consecutive failed checks: connection refused".
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Health {
    th: Thresholds,
    state: State,
    since: Instant,
    ok_streak: u32,
    fail_streak: u32,
    passive_streak: u32,
    last: Option<CheckResult>,
    reason: String,
    /// Start of the current run of failed checks, if the last one failed.
    failing_since: Option<Instant>,
    /// Has never been up (started down and no rise yet).
    never_up: bool,
    /// Transitions to down so far (HAProxy's "Dwn").
    downs: u64,
    /// Time spent down in periods that ended (the current one, if down,
    /// is `now - since`).
    down_before: Duration,
}

impl Health {
    pub fn new(th: Thresholds, initial: State, now: Instant) -> Health {
        Health {
            th,
            state: initial,
            since: now,
            ok_streak: 0,
            fail_streak: 0,
            passive_streak: 0,
            last: None,
            reason: match initial {
                State::Up => "assumed up at start".into(),
                State::Down => "new: waiting for checks".into(),
            },
            failing_since: None,
            never_up: initial == State::Down,
            downs: 0,
            down_before: Duration::ZERO,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Time of the last transition (or creation).
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn last_result(&self) -> Option<&CheckResult> {
        self.last.as_ref()
    }

    /// Why the backend is in its current state; while down, kept up to
    /// date with the checks since (a backend that never came up says so,
    /// with the last failure).
    pub fn last_reason(&self) -> &str {
        &self.reason
    }

    /// When the current run of failed checks began (`None` if the last
    /// check passed or there was none).
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// Total time spent down up to `now`, from the transitions: a backend
    /// that started down (and maybe never came up) counts from its start
    /// (HAProxy's "Dwntme").
    pub fn downtime(&self, now: Instant) -> Duration {
        match self.state {
            State::Down => self.down_before + now.saturating_duration_since(self.since),
            State::Up => self.down_before,
        }
    }

    /// How often the backend went from up to down (HAProxy's "Dwn"); a
    /// start in the down state is not counted.
    pub fn down_transitions(&self) -> u64 {
        self.downs
    }

    pub fn thresholds(&self) -> Thresholds {
        self.th
    }

    /// Config reload: new thresholds, same state; streaks restart.
    pub fn set_thresholds(&mut self, th: Thresholds) {
        if th != self.th {
            self.th = th;
            self.ok_streak = 0;
            self.fail_streak = 0;
            self.passive_streak = 0;
        }
    }

    /// An active check finished.
    pub fn on_check(&mut self, r: CheckResult, now: Instant) -> Option<Transition> {
        let out = match &r {
            CheckResult::Ok { .. } => {
                self.fail_streak = 0;
                self.failing_since = None;
                self.ok_streak = self.ok_streak.saturating_add(1);
                if self.state == State::Down && self.ok_streak >= self.th.rise.max(1) {
                    self.passive_streak = 0;
                    self.never_up = false;
                    let reason = format!("{} consecutive passing checks", self.ok_streak);
                    Some(self.transition(State::Up, reason, now))
                } else {
                    if self.state == State::Down {
                        self.reason = format!(
                            "{} of {} passing checks needed to come up",
                            self.ok_streak,
                            self.th.rise.max(1)
                        );
                    }
                    None
                }
            }
            CheckResult::Failed { reason } => {
                self.ok_streak = 0;
                self.fail_streak = self.fail_streak.saturating_add(1);
                self.failing_since.get_or_insert(now);
                if self.state == State::Up && self.fail_streak >= self.th.fall.max(1) {
                    let reason = format!("{} consecutive failed checks: {reason}", self.fail_streak);
                    Some(self.transition(State::Down, reason, now))
                } else {
                    if self.state == State::Down {
                        self.reason = format!(
                            "{}{} consecutive failed checks: {reason}",
                            if self.never_up { "never up: " } else { "" },
                            self.fail_streak
                        );
                    }
                    None
                }
            }
        };
        self.last = Some(r);
        out
    }

    /// A connection from real traffic could not reach the backend.
    pub fn on_connect_failure(&mut self, now: Instant) -> Option<Transition> {
        if self.th.passive_fall == 0 || self.state == State::Down {
            return None;
        }
        self.passive_streak = self.passive_streak.saturating_add(1);
        if self.passive_streak >= self.th.passive_fall {
            self.ok_streak = 0;
            let reason = format!(
                "{} consecutive failed connects from client traffic",
                self.passive_streak
            );
            Some(self.transition(State::Down, reason, now))
        } else {
            None
        }
    }

    /// A connection from real traffic reached the backend.
    pub fn on_connect_success(&mut self) {
        self.passive_streak = 0;
    }

    fn transition(&mut self, to: State, reason: String, now: Instant) -> Transition {
        let from = self.state;
        if from == State::Down {
            self.down_before += now.saturating_duration_since(self.since);
        }
        if to == State::Down {
            self.downs += 1;
        }
        self.state = to;
        self.since = now;
        self.passive_streak = 0;
        self.reason = reason.clone();
        Transition { from, to, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        rise: 2,
        fall: 3,
        passive_fall: 2,
    };

    fn ok() -> CheckResult {
        CheckResult::Ok {
            latency: Duration::from_millis(1),
        }
    }
    fn fail() -> CheckResult {
        CheckResult::Failed {
            reason: FailReason::ConnectRefused,
        }
    }

    #[test]
    fn rise_and_fall() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Down, t0);
        assert_eq!(h.on_check(ok(), t0), None);
        let tr = h.on_check(ok(), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((tr.from, tr.to), (State::Down, State::Up));
        assert_eq!(h.since(), t0 + Duration::from_secs(1));
        assert_eq!(h.on_check(fail(), t0), None);
        assert_eq!(h.on_check(fail(), t0), None);
        let tr = h.on_check(fail(), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(tr.to, State::Down);
        assert_eq!(tr.reason, "3 consecutive failed checks: connection refused");
        assert_eq!(h.last_reason(), tr.reason);
        assert_eq!(h.last_result(), Some(&fail()));
    }

    #[test]
    fn alternating_results_never_flap() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Up, t0);
        for i in 0..100 {
            let r = if i % 2 == 0 { fail() } else { ok() };
            assert_eq!(h.on_check(r, t0), None);
        }
        assert_eq!(h.state(), State::Up);
        assert_eq!(h.since(), t0);
    }

    #[test]
    fn passive_ejection_and_active_recovery() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Up, t0);
        assert_eq!(h.on_connect_failure(t0), None);
        h.on_connect_success(); // resets the streak
        assert_eq!(h.on_connect_failure(t0), None);
        let tr = h.on_connect_failure(t0).unwrap();
        assert_eq!(tr.to, State::Down);
        // more passive failures while down change nothing
        assert_eq!(h.on_connect_failure(t0), None);
        // recovery only by `rise` active checks
        h.on_connect_success();
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.on_check(ok(), t0), None);
        assert_eq!(h.on_check(ok(), t0).map(|t| t.to), Some(State::Up));
    }

    #[test]
    fn passive_disabled_with_zero() {
        let t0 = Instant::now();
        let mut h = Health::new(Thresholds { passive_fall: 0, ..TH }, State::Up, t0);
        for _ in 0..10 {
            assert_eq!(h.on_connect_failure(t0), None);
        }
        assert_eq!(h.state(), State::Up);
    }

    #[test]
    fn threshold_change_keeps_state() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Up, t0);
        h.on_check(fail(), t0);
        h.set_thresholds(Thresholds { fall: 1, ..TH });
        assert_eq!(h.state(), State::Up);
        assert_eq!(h.on_check(fail(), t0).map(|t| t.to), Some(State::Down));
    }

    #[test]
    fn starts_down_until_rise_passes() {
        let t0 = Instant::now();
        let th = Thresholds {
            rise: 3,
            fall: 2,
            passive_fall: 0,
        };
        let mut h = Health::new(th, State::Down, t0);
        assert_eq!(h.last_result(), None);
        assert_eq!(h.on_check(ok(), t0), None);
        assert_eq!(h.on_check(ok(), t0), None);
        // a failure restarts the count
        assert_eq!(h.on_check(fail(), t0), None);
        assert_eq!(h.on_check(ok(), t0), None);
        assert_eq!(h.on_check(ok(), t0), None);
        let tr = h.on_check(ok(), t0).unwrap();
        assert_eq!(
            tr,
            Transition {
                from: State::Down,
                to: State::Up,
                reason: "3 consecutive passing checks".into()
            }
        );
    }

    #[test]
    fn alternating_from_down_never_rises() {
        let t0 = Instant::now();
        let th = Thresholds {
            rise: 2,
            fall: 2,
            passive_fall: 3,
        };
        let mut h = Health::new(th, State::Down, t0);
        for i in 0..100 {
            let r = if i % 2 == 0 { ok() } else { fail() };
            assert_eq!(h.on_check(r, t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.since(), t0);
    }

    #[test]
    fn since_moves_only_on_transitions() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut h = Health::new(TH, State::Up, t0);
        h.on_check(ok(), at(1));
        h.on_check(fail(), at(2));
        h.on_connect_failure(at(3));
        h.on_connect_success();
        h.set_thresholds(Thresholds { rise: 5, ..TH });
        assert_eq!(h.since(), t0);
        assert_eq!(h.last_reason(), "assumed up at start");
        h.on_check(fail(), at(4));
        h.on_check(fail(), at(5));
        assert_eq!(h.since(), t0);
        assert!(h.on_check(fail(), at(6)).is_some());
        assert_eq!(h.since(), at(6));
        h.on_check(fail(), at(7));
        h.on_check(ok(), at(8));
        assert_eq!(h.since(), at(6));
        assert_eq!(h.state(), State::Down);
    }

    #[test]
    fn passive_ejection_discards_earlier_passes() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Up, t0);
        // healthy by active checks, yet ejected by real traffic
        for _ in 0..5 {
            assert_eq!(h.on_check(ok(), t0), None);
        }
        assert_eq!(h.on_connect_failure(t0), None);
        let tr = h.on_connect_failure(t0).unwrap();
        assert_eq!(tr.from, State::Up);
        assert_eq!(tr.reason, "2 consecutive failed connects from client traffic");
        // the 5 passes before the ejection do not count toward `rise`
        assert_eq!(h.on_check(ok(), t0), None);
        assert!(h.on_check(ok(), t0).is_some());
        // after recovery the passive count starts from zero again
        assert_eq!(h.on_connect_failure(t0), None);
        assert_eq!(h.state(), State::Up);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t0 = Instant::now();
        let th = Thresholds {
            rise: 0,
            fall: 0,
            passive_fall: 1,
        };
        let mut h = Health::new(th, State::Down, t0);
        assert!(h.on_check(ok(), t0).is_some());
        assert!(h.on_check(fail(), t0).is_some());
        assert!(h.on_check(ok(), t0).is_some());
        assert!(h.on_connect_failure(t0).is_some());
        assert_eq!(h.state(), State::Down);
    }

    #[test]
    fn threshold_change_keeps_down_state() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Down, t0);
        h.set_thresholds(Thresholds { rise: 1, ..TH });
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.since(), t0);
        assert_eq!(h.thresholds().rise, 1);
        assert!(h.on_check(ok(), t0).is_some());
    }

    #[test]
    fn downtime_is_counted_from_the_transitions() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        // never up: down since its start, however many checks fail
        let mut h = Health::new(TH, State::Down, t0);
        for i in 1..=5 {
            h.on_check(fail(), at(i));
        }
        assert_eq!(h.downtime(at(7)), Duration::from_secs(7));
        assert_eq!(h.down_transitions(), 0);
        // up at 9: 9 s down, no more while up
        h.on_check(ok(), at(8));
        assert!(h.on_check(ok(), at(9)).is_some());
        assert_eq!(h.downtime(at(9)), Duration::from_secs(9));
        assert_eq!(h.downtime(at(30)), Duration::from_secs(9));
        // down at 32 (3 failures), up at 41: 9 s more
        for i in 30..=32 {
            h.on_check(fail(), at(i));
        }
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.down_transitions(), 1);
        assert_eq!(h.downtime(at(35)), Duration::from_secs(9 + 3));
        h.on_check(ok(), at(40));
        h.on_check(ok(), at(41));
        assert_eq!(h.downtime(at(100)), Duration::from_secs(18));
        // passive ejection counts the same way
        h.on_connect_failure(at(100));
        assert!(h.on_connect_failure(at(100)).is_some());
        assert_eq!(h.down_transitions(), 2);
        assert_eq!(h.downtime(at(110)), Duration::from_secs(28));
        // a threshold change (reload) keeps the account
        h.set_thresholds(Thresholds { rise: 1, ..TH });
        assert_eq!(h.downtime(at(110)), Duration::from_secs(28));
        // a backend that starts up has no downtime
        let h = Health::new(TH, State::Up, t0);
        assert_eq!(h.downtime(at(50)), Duration::ZERO);
    }

    #[test]
    fn fail_reasons_display() {
        assert_eq!(FailReason::BadStatus(503).to_string(), "unexpected HTTP status 503");
        assert_eq!(FailReason::Timeout.to_string(), "check timed out");
        assert_eq!(FailReason::ConnectTimeout.to_string(), "connect timed out");
        assert_eq!(FailReason::BadResponse.to_string(), "malformed response");
        assert_eq!(FailReason::Io("reset".into()).to_string(), "I/O error: reset");
    }

    #[test]
    fn a_backend_that_never_comes_up_says_why_and_since_when() {
        let t0 = Instant::now();
        let mut h = Health::new(TH, State::Down, t0);
        assert_eq!(h.last_reason(), "new: waiting for checks");
        assert_eq!(h.failing_since(), None);
        for i in 1..=4u64 {
            assert_eq!(h.on_check(fail(), t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(
            h.last_reason(),
            "never up: 4 consecutive failed checks: connection refused"
        );
        assert_eq!(h.failing_since(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(h.on_check(ok(), t0 + Duration::from_secs(5)), None);
        assert_eq!(h.last_reason(), "1 of 2 passing checks needed to come up");
        assert_eq!(h.failing_since(), None);
        assert!(h.on_check(ok(), t0 + Duration::from_secs(6)).is_some());
        // down again later: no longer "never up"
        for i in 7..=12u64 {
            h.on_check(fail(), t0 + Duration::from_secs(i));
        }
        assert_eq!(h.last_reason(), "6 consecutive failed checks: connection refused");
        assert_eq!(h.failing_since(), Some(t0 + Duration::from_secs(7)));
    }
}
