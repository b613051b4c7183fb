//! BFD session state machine, asynchronous mode (RFC 5880 sections 6.2,
//! 6.5, 6.8.1–6.8.4, 6.8.6, 6.8.7), sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::packet::{ControlPacket, DecodeError, Diag, State};

/// Transmit interval floor while the session is not Up (RFC 5880 6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// Session configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr (non-zero; zero is replaced by 1).
    pub local_discriminator: u32,
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult (non-zero; zero is replaced by 1).
    pub detect_mult: u8,
    /// Seed for the transmit jitter (any random u32 from the caller; 0 is replaced).
    pub jitter_seed: u32,
}

/// State changes reported by [`Session::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BfdEvent {
    /// The session reached Up.
    Up,
    /// The session left Up.
    Down {
        /// Local diagnostic explaining why.
        diag: Diag,
    },
}

/// Why [`Session::handle_packet`] discarded a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// Failed decoding or a state-independent reception check.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Your Discriminator does not match ours.
    #[error("your discriminator {0} does not match this session")]
    WrongDiscriminator(u32),
    /// Session is AdminDown: packets are discarded after the variable updates.
    #[error("session is administratively down")]
    AdminDown,
}

/// One BFD session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    diag: Diag,
    remote_disc: u32,
    remote_state: State,
    remote_demand: bool,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    /// Values sent in packets.
    adv_desired_tx: Duration,
    adv_required_rx: Duration,
    /// Values used for timing (differ from advertised during a poll sequence).
    timing_desired_tx: Duration,
    timing_required_rx: Duration,
    polling: bool,
    final_due: Option<Instant>,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    events: VecDeque<BfdEvent>,
    rng: u32,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// New session in state Down; the first packet is due at `now`.
    pub fn new(mut cfg: SessionConfig, now: Instant) -> Self {
        if cfg.local_discriminator == 0 {
            cfg.local_discriminator = 1;
        }
        if cfg.detect_mult == 0 {
            cfg.detect_mult = 1;
        }
        let slow = cfg.desired_min_tx.max(SLOW_TX);
        Session {
            cfg,
            state: State::Down,
            diag: Diag::None,
            remote_disc: 0,
            remote_state: State::Down,
            remote_demand: false,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            adv_desired_tx: slow,
            adv_required_rx: cfg.required_min_rx,
            timing_desired_tx: slow,
            timing_required_rx: cfg.required_min_rx,
            polling: false,
            final_due: None,
            next_tx: Some(now),
            detect_at: None,
            events: VecDeque::new(),
            rng: if cfg.jitter_seed == 0 {
                0x9E37_79B9
            } else {
                cfg.jitter_seed
            },
        }
    }

    /// bfd.SessionState.
    pub fn state(&self) -> State {
        self.state
    }
    /// bfd.LocalDiag.
    pub fn local_diag(&self) -> Diag {
        self.diag
    }
    /// bfd.RemoteDiscr (0 until a packet is received).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_disc
    }
    /// bfd.RemoteSessionState.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    /// bfd.RemoteDemandMode (demand mode itself is not implemented).
    pub fn remote_demand(&self) -> bool {
        self.remote_demand
    }
    /// True while a poll sequence is in progress.
    pub fn polling(&self) -> bool {
        self.polling
    }
    /// Current detection time (RFC 5880 6.8.4):
    /// remote Detect Mult x max(local RequiredMinRx, remote DesiredMinTx).
    pub fn detection_time(&self) -> Duration {
        self.timing_required_rx.max(self.remote_desired_tx) * u32::from(self.remote_detect_mult)
    }
    /// Current transmit interval before jitter, or None when the peer asked for no packets.
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx.is_zero() {
            None
        } else {
            Some(self.timing_desired_tx.max(self.remote_min_rx))
        }
    }

    /// Next state change, if any.
    pub fn poll_event(&mut self) -> Option<BfdEvent> {
        self.events.pop_front()
    }

    /// The earliest instant at which `poll_transmit` or `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.final_due, self.next_tx, self.detect_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Processes the detection timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detect_at.is_some_and(|t| t <= now) {
            self.detect_at = None;
            if matches!(self.state, State::Init | State::Up) {
                self.remote_disc = 0;
                self.set_state(State::Down, Diag::ControlDetectionTimeExpired, now);
            }
        }
    }

    /// Returns a control packet to send now, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let final_ = self.final_due.is_some_and(|t| t <= now);
        let periodic = self.next_tx.is_some_and(|t| t <= now);
        if !final_ && !periodic {
            return None;
        }
        if periodic {
            self.next_tx = self.tx_interval().map(|i| now + self.jitter(i));
        }
        self.final_due = None;
        let pkt = ControlPacket {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discriminator: self.cfg.local_discriminator,
            your_discriminator: self.remote_disc,
            desired_min_tx: micros(self.adv_desired_tx),
            required_min_rx: micros(self.adv_required_rx),
            required_min_echo_rx: 0,
        };
        Some(pkt.to_bytes())
    }

    /// Processes a received control packet (RFC 5880 6.8.6).
    pub fn handle_packet(&mut self, bytes: &[u8], now: Instant) -> Result<(), RxError> {
        let pkt = ControlPacket::decode(bytes)?;
        if pkt.your_discriminator != 0 && pkt.your_discriminator != self.cfg.local_discriminator {
            return Err(RxError::WrongDiscriminator(pkt.your_discriminator));
        }
        self.remote_disc = pkt.my_discriminator;
        self.remote_state = pkt.state;
        self.remote_demand = pkt.demand;
        self.remote_min_rx = Duration::from_micros(u64::from(pkt.required_min_rx));
        self.remote_desired_tx = Duration::from_micros(u64::from(pkt.desired_min_tx));
        self.remote_detect_mult = pkt.detect_mult;
        if pkt.final_ && self.polling {
            self.polling = false;
            self.timing_desired_tx = self.adv_desired_tx;
            self.timing_required_rx = self.adv_required_rx;
        }
        // Transmit interval may have changed (6.8.7): never wait longer than one new interval.
        match self.tx_interval() {
            None => self.next_tx = None,
            Some(i) => {
                let limit = now + i;
                if self.next_tx.is_none_or(|t| t > limit) {
                    self.next_tx = Some(now + self.jitter(i));
                }
            }
        }
        self.detect_at = Some(now + self.detection_time());
        if pkt.poll {
            self.final_due = Some(now);
        }
        if self.state == State::AdminDown {
            self.detect_at = None;
            return Err(RxError::AdminDown);
        }
        if pkt.state == State::AdminDown {
            if self.state != State::Down {
                self.set_state(State::Down, Diag::NeighborSignaledSessionDown, now);
            }
        } else {
            match (self.state, pkt.state) {
                (State::Down, State::Down) => self.set_state(State::Init, self.diag, now),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.set_state(State::Up, Diag::None, now)
                }
                (State::Up, State::Down) => self.set_state(State::Down, Diag::NeighborSignaledSessionDown, now),
                _ => {}
            }
        }
        Ok(())
    }

    /// Changes the intervals; when Up this starts a poll sequence (RFC 5880 6.8.3).
    pub fn set_intervals(&mut self, desired_min_tx: Duration, required_min_rx: Duration, now: Instant) {
        self.cfg.desired_min_tx = desired_min_tx;
        self.cfg.required_min_rx = required_min_rx;
        self.apply_intervals(now);
    }

    /// Puts the session in AdminDown (diag 7).
    pub fn set_admin_down(&mut self, now: Instant) {
        self.detect_at = None;
        self.set_state(State::AdminDown, Diag::AdministrativelyDown, now);
    }

    /// Leaves AdminDown (to Down).
    pub fn set_admin_up(&mut self, now: Instant) {
        if self.state == State::AdminDown {
            self.set_state(State::Down, Diag::None, now);
        }
    }

    fn jitter(&mut self, interval: Duration) -> Duration {
        // xorshift32
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        // 75..=100 % (75..=90 % when Detect Mult is 1), RFC 5880 6.8.7.
        let span = if self.cfg.detect_mult == 1 { 151 } else { 251 };
        let per_mille = 750 + x % span;
        (interval * per_mille / 1000).max(Duration::from_micros(1))
    }

    fn apply_intervals(&mut self, now: Instant) {
        let desired = if self.state == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        };
        let required = self.cfg.required_min_rx;
        if self.state == State::Up {
            if desired != self.adv_desired_tx || required != self.adv_required_rx {
                self.polling = true;
                // A faster TX or a slower RX applies at once; the other direction waits for the Final.
                self.timing_desired_tx = self.timing_desired_tx.min(desired);
                self.timing_required_rx = self.timing_required_rx.max(required);
                self.next_tx = Some(now);
            }
        } else {
            self.polling = false;
            self.timing_desired_tx = desired;
            self.timing_required_rx = required;
        }
        self.adv_desired_tx = desired;
        self.adv_required_rx = required;
    }

    fn set_state(&mut self, new: State, diag: Diag, now: Instant) {
        if new == self.state {
            return;
        }
        let old = self.state;
        self.state = new;
        self.diag = diag;
        if new == State::Up {
            self.events.push_back(BfdEvent::Up);
        } else if old == State::Up {
            self.events.push_back(BfdEvent::Down { diag });
        }
        self.apply_intervals(now);
        // Tell the peer about the change right away.
        if self.tx_interval().is_some() {
            self.next_tx = Some(now);
        }
    }
}
