//! Two sessions wired back to back in simulated time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyedge_bfd::packet::{ControlPacket, Diag, State};
use anyedge_bfd::session::*;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(disc: u32, seed: u32) -> SessionConfig {
    SessionConfig {
        local_discriminator: disc,
        desired_min_tx: ms(300),
        required_min_rx: ms(300),
        detect_mult: 3,
        jitter_seed: seed,
    }
}

/// Zero-latency link between `a` and `b`; each direction can be cut.
struct Link {
    a: Session,
    b: Session,
    now: Instant,
    ab: bool,
    ba: bool,
    /// (time, sender is a, packet) for every packet put on the wire.
    log: Vec<(Instant, bool, ControlPacket)>,
    /// Last time `a` accepted a packet from `b`.
    a_last_rx: Option<Instant>,
    events_a: Vec<(Instant, BfdEvent)>,
    events_b: Vec<(Instant, BfdEvent)>,
}

impl Link {
    fn new(t: Instant) -> Self {
        Link {
            a: Session::new(cfg(1, 11), t),
            b: Session::new(cfg(2, 22), t),
            now: t,
            ab: true,
            ba: true,
            log: vec![],
            a_last_rx: None,
            events_a: vec![],
            events_b: vec![],
        }
    }

    fn run_until(&mut self, until: Instant) {
        let mut iterations = 0;
        loop {
            iterations += 1;
            assert!(iterations < 100_000, "simulation does not progress");
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            while let Some(p) = self.a.poll_transmit(now) {
                self.log.push((now, true, ControlPacket::decode(&p).unwrap()));
                if self.ab {
                    let _ = self.b.handle_packet(&p, now);
                }
            }
            while let Some(p) = self.b.poll_transmit(now) {
                self.log.push((now, false, ControlPacket::decode(&p).unwrap()));
                if self.ba && self.a.handle_packet(&p, now).is_ok() {
                    self.a_last_rx = Some(now);
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.events_a.push((now, e));
            }
            while let Some(e) = self.b.poll_event() {
                self.events_b.push((now, e));
            }
        }
        self.now = until;
    }
}

#[test]
fn back_to_back_sessions_come_up() {
    let t = Instant::now();
    let mut l = Link::new(t);
    // First packets: state Down, slow TX (desired min tx advertised as 1 s).
    l.run_until(t);
    let (_, _, first) = l.log[0];
    assert_eq!(first.state, State::Down);
    assert_eq!(first.desired_min_tx, 1_000_000);
    assert_eq!(first.your_discriminator, 0);
    l.run_until(t + ms(10));
    assert_eq!(l.a.state(), State::Up);
    assert_eq!(l.b.state(), State::Up);
    assert_eq!(l.events_a.iter().map(|e| e.1).collect::<Vec<_>>(), vec![BfdEvent::Up]);
    assert_eq!(l.events_b.iter().map(|e| e.1).collect::<Vec<_>>(), vec![BfdEvent::Up]);
    assert_eq!(l.a.remote_discriminator(), 2);
    assert_eq!(l.b.remote_discriminator(), 1);
    // Three-way handshake on the wire: a says Down, b answers Init, a goes Up and says so.
    let states = |from_a: bool| -> Vec<State> {
        let mut v: Vec<State> = l.log.iter().filter(|x| x.1 == from_a).map(|x| x.2.state).collect();
        v.dedup();
        v
    };
    assert_eq!(states(true), vec![State::Down, State::Up]);
    assert_eq!(states(false), vec![State::Init, State::Up]);

    // Going Up switched to the fast rate via a poll sequence (P answered by F).
    l.run_until(t + Duration::from_secs(5));
    assert!(l.log.iter().any(|x| x.2.poll));
    assert!(l.log.iter().any(|x| x.2.final_));
    assert!(!l.a.polling() && !l.b.polling());
    assert_eq!(l.a.tx_interval(), Some(ms(300)));
    assert_eq!(l.a.detection_time(), ms(900));
    // Steady state: a sends every 225..=300 ms (75-100 % jitter).
    let a_times: Vec<Instant> = l
        .log
        .iter()
        .filter(|x| x.1 && x.0 > t + Duration::from_secs(2))
        .map(|x| x.0)
        .collect();
    assert!(a_times.len() > 10);
    for w in a_times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= ms(225) && gap <= ms(300), "gap {gap:?}");
    }
    assert_eq!(l.a.state(), State::Up);
    assert_eq!(l.b.state(), State::Up);
}

#[test]
fn slow_tx_until_up() {
    let t = Instant::now();
    // Lone session (nothing answers): 1 s floor with jitter.
    let mut s = Session::new(cfg(1, 5), t);
    let mut now = t;
    let mut sent = vec![];
    while now < t + Duration::from_secs(10) {
        if let Some(p) = s.poll_transmit(now) {
            sent.push((now, ControlPacket::decode(&p).unwrap()));
        }
        now = s.poll_timeout().unwrap();
    }
    for w in sent.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= ms(750) && gap <= ms(1000), "{gap:?}");
        assert_eq!(w[1].1.state, State::Down);
        assert_eq!(w[1].1.desired_min_tx, 1_000_000);
        assert_eq!(w[1].1.required_min_rx, 300_000);
    }
    assert!(sent.len() >= 10);
}

#[test]
fn detection_timeout_goes_down_with_diag_1() {
    let t = Instant::now();
    let mut l = Link::new(t);
    l.run_until(t + Duration::from_secs(3));
    assert_eq!(l.a.state(), State::Up);
    l.ba = false; // b's packets stop reaching a
    let cut = l.now;
    l.run_until(t + Duration::from_secs(6));
    let last_rx = l.a_last_rx.unwrap();
    assert!(last_rx <= cut);
    let (down_at, ev) = *l.events_a.last().unwrap();
    assert_eq!(
        ev,
        BfdEvent::Down {
            diag: Diag::ControlDetectionTimeExpired
        }
    );
    // Detection time = remote detect mult (3) x max(300 ms, 300 ms).
    assert!(down_at - last_rx <= ms(900), "{:?}", down_at - last_rx);
    assert_eq!(down_at - last_rx, l.a.detection_time());
    assert_eq!(l.a.local_diag(), Diag::ControlDetectionTimeExpired);
    assert_eq!(l.a.remote_discriminator(), 0);
    // a tells b it is Down: b goes Down with diag 3 (Neighbor Signaled Session Down).
    assert_eq!(
        l.events_b.last().map(|e| e.1),
        Some(BfdEvent::Down {
            diag: Diag::NeighborSignaledSessionDown
        })
    );
    // Once the link heals, both come back up.
    l.ba = true;
    l.run_until(t + Duration::from_secs(10));
    assert_eq!((l.a.state(), l.b.state()), (State::Up, State::Up));
}

#[test]
fn remote_admin_down_gives_diag_3() {
    let t = Instant::now();
    let mut l = Link::new(t);
    l.run_until(t + Duration::from_secs(3));
    assert_eq!(l.a.state(), State::Up);
    l.b.set_admin_down(l.now);
    assert_eq!(
        l.b.poll_event(),
        Some(BfdEvent::Down {
            diag: Diag::AdministrativelyDown
        })
    );
    l.run_until(t + Duration::from_secs(4));
    assert_eq!(l.a.state(), State::Down);
    assert_eq!(l.a.local_diag(), Diag::NeighborSignaledSessionDown);
    assert_eq!(
        l.events_a.last().map(|e| e.1),
        Some(BfdEvent::Down {
            diag: Diag::NeighborSignaledSessionDown
        })
    );
    // a stays Down (no detection timer in Down) while b is AdminDown.
    l.run_until(t + Duration::from_secs(10));
    assert_eq!(l.a.state(), State::Down);
    assert_eq!(l.b.state(), State::AdminDown);
    l.b.set_admin_up(l.now);
    l.run_until(t + Duration::from_secs(13));
    assert_eq!((l.a.state(), l.b.state()), (State::Up, State::Up));
}

#[test]
fn interval_change_runs_poll_sequence() {
    let t = Instant::now();
    let mut l = Link::new(t);
    l.run_until(t + Duration::from_secs(3));
    let n = l.log.len();
    l.a.set_intervals(ms(500), ms(500), l.now);
    assert!(l.a.polling());
    // Until the Final arrives, a keeps the old (faster) TX and the old (shorter) RX for detection.
    assert_eq!(l.a.tx_interval(), Some(ms(300)));
    l.run_until(t + Duration::from_secs(5));
    assert!(!l.a.polling());
    assert!(l.log[n..]
        .iter()
        .any(|x| x.1 && x.2.poll && x.2.desired_min_tx == 500_000));
    assert!(l.log[n..].iter().any(|x| !x.1 && x.2.final_));
    assert_eq!(l.a.tx_interval(), Some(ms(500)));
    assert_eq!(l.b.tx_interval(), Some(ms(500))); // b honours a's new Required Min RX
    assert_eq!(l.a.detection_time(), ms(1500));
    assert_eq!((l.a.state(), l.b.state()), (State::Up, State::Up));
}

#[test]
fn handshake_steps_and_rejections() {
    let t = Instant::now();
    let mut a = Session::new(cfg(1, 1), t);
    let peer = |state, your| {
        ControlPacket {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 9,
            your_discriminator: your,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
        .to_bytes()
    };
    assert_eq!(a.handle_packet(&peer(State::Down, 0), t), Ok(()));
    assert_eq!(a.state(), State::Init);
    assert_eq!(
        a.handle_packet(&peer(State::Up, 5), t),
        Err(RxError::WrongDiscriminator(5))
    );
    assert_eq!(a.state(), State::Init);
    assert!(matches!(
        a.handle_packet(&peer(State::Up, 0), t),
        Err(RxError::Decode(_))
    ));
    assert_eq!(a.handle_packet(&peer(State::Up, 1), t), Ok(()));
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.poll_event(), Some(BfdEvent::Up));
    // A poll from the peer is answered with F right away, without P.
    let mut p = ControlPacket::decode(&peer(State::Up, 1)).unwrap();
    p.poll = true;
    a.handle_packet(&p.to_bytes(), t).unwrap();
    let reply = ControlPacket::decode(&a.poll_transmit(t).unwrap()).unwrap();
    assert!(reply.final_ && !reply.poll);
    // Peer Down while Up -> Down, diag 3.
    a.handle_packet(&peer(State::Down, 1), t).unwrap();
    assert_eq!(
        a.poll_event(),
        Some(BfdEvent::Down {
            diag: Diag::NeighborSignaledSessionDown
        })
    );
    // AdminDown discards packets.
    a.set_admin_down(t);
    assert_eq!(a.handle_packet(&peer(State::Down, 1), t), Err(RxError::AdminDown));
    assert_eq!(a.state(), State::AdminDown);
    let out = ControlPacket::decode(&a.poll_transmit(t).unwrap()).unwrap();
    assert_eq!((out.state, out.diag), (State::AdminDown, Diag::AdministrativelyDown));
}

#[test]
fn remote_min_rx_zero_stops_periodic_tx() {
    let t = Instant::now();
    let mut a = Session::new(cfg(1, 1), t);
    let mut p = ControlPacket::decode(&Session::new(cfg(2, 2), t).poll_transmit(t).unwrap()).unwrap();
    p.required_min_rx = 0;
    a.handle_packet(&p.to_bytes(), t).unwrap();
    assert_eq!(a.tx_interval(), None);
    // The state change is not announced periodically; nothing is due.
    assert_eq!(a.poll_transmit(t + Duration::from_secs(5)), None);
}

#[test]
fn jitter_with_detect_mult_1_is_75_to_90_percent() {
    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            detect_mult: 1,
            ..cfg(1, 3)
        },
        t,
    );
    let mut last = None;
    let mut now = t;
    for _ in 0..200 {
        if s.poll_transmit(now).is_some() {
            if let Some(l) = last {
                let gap: Duration = now - l;
                assert!(gap >= ms(750) && gap <= ms(900), "{gap:?}");
            }
            last = Some(now);
        }
        now = s.poll_timeout().unwrap();
    }
}

proptest! {
    #[test]
    fn no_panic_on_arbitrary_packets(pkts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20),
                                     seed in any::<u32>()) {
        let t = Instant::now();
        let mut s = Session::new(cfg(1, seed), t);
        let mut now = t;
        for (i, p) in pkts.iter().enumerate() {
            now += ms(50 * i as u64);
            let _ = s.handle_packet(p, now);
            s.handle_timeout(now);
            while s.poll_transmit(now).is_some() {}
            while s.poll_event().is_some() {}
        }
    }
}
