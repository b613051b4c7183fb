//! Session FSM tests in simulated time: an `Instant` base plus `Duration`s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyedge_bgp::codec::*;
use anyedge_bgp::session::*;

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65002;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cfg() -> SessionConfig {
    SessionConfig::new(LOCAL_AS, PEER_AS, Ipv4Addr::new(192, 0, 2, 1))
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn decode_all(bytes: &[u8]) -> Message {
    let (m, used) = decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "one message per Send");
    m
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(decode_all(b)),
            _ => None,
        })
        .collect()
}

fn bytes(m: &Message) -> Vec<u8> {
    encode_to_vec(m).unwrap()
}

fn peer_open(hold: u16) -> Message {
    Message::Open(Open::new(
        PEER_AS,
        hold,
        Ipv4Addr::new(192, 0, 2, 2),
        vec![
            Capability::Multiprotocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::Multiprotocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::RouteRefresh,
        ],
    ))
}

/// Drives a session to OpenSent, returns the actions seen.
fn to_open_sent(s: &mut Session, t: Instant) -> Vec<Action> {
    s.handle_event(Event::Start, t);
    assert_eq!(drain(s), vec![Action::Connect]);
    assert_eq!(s.state(), State::Connect);
    s.handle_event(Event::TcpConnected, t);
    assert_eq!(s.state(), State::OpenSent);
    drain(s)
}

/// Drives a session to Established with a peer hold time of `hold`.
fn established(s: &mut Session, t: Instant, hold: u16) -> Vec<Action> {
    to_open_sent(s, t);
    s.handle_event(Event::Bytes(&bytes(&peer_open(hold))), t);
    assert_eq!(sent(&drain(s)), vec![Message::Keepalive]);
    assert_eq!(s.state(), State::OpenConfirm);
    s.handle_event(Event::Bytes(&bytes(&Message::Keepalive)), t);
    assert_eq!(s.state(), State::Established);
    drain(s)
}

fn eor4() -> Message {
    Message::Update(Update::default())
}

fn eor6() -> Message {
    Message::Update(Update {
        attributes: vec![PathAttribute::MpUnreach(vec![])],
        ..Update::default()
    })
}

fn assert_torn_down(actions: &[Action], code: u8, subcode: u8) {
    let msgs = sent(actions);
    let Some(Message::Notification(n)) = msgs.last() else {
        panic!("no NOTIFICATION in {actions:?}")
    };
    assert_eq!((n.code, n.subcode), (code, subcode), "{n:?}");
    assert!(actions.contains(&Action::CloseTcp));
    assert!(matches!(actions.last(), Some(Action::Down { .. })), "{actions:?}");
}

#[test]
fn open_handshake_to_established() {
    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            graceful_restart: Some(120),
            ..cfg()
        },
        t,
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None);
    let a = to_open_sent(&mut s, t);
    let [Message::Open(open)] = &sent(&a)[..] else {
        panic!("{a:?}")
    };
    assert_eq!(open.my_as, 65001);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::FourOctetAs(65001),
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::Multiprotocol { afi: 2, safi: 1 },
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                flags: 0,
                restart_time: 120,
                families: vec![]
            }),
        ]
    );
    // Hold timer while waiting for the OPEN: 4 minutes.
    assert_eq!(s.poll_timeout(), Some(t + secs(240)));

    // Peer's OPEN arrives one byte at a time.
    let t1 = t + secs(1);
    for b in bytes(&peer_open(30)) {
        s.handle_event(Event::Bytes(&[b]), t1);
    }
    assert_eq!(sent(&drain(&mut s)), vec![Message::Keepalive]);
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(s.negotiated_hold_time(), 30);
    assert_eq!(s.negotiated_families(), &[Family::Ipv4Unicast, Family::Ipv6Unicast]);

    s.handle_event(Event::Message(Message::Keepalive), t1);
    let a = drain(&mut s);
    assert_eq!(a[0], Action::Established);
    assert_eq!(sent(&a), vec![eor4(), eor6()]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn keepalive_emission_timing() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 30);
    // hold 30 -> keepalive every 10 s.
    assert_eq!(s.poll_timeout(), Some(t + secs(10)));
    let mut keepalives = 0;
    for i in 1..=9u64 {
        let now = t + secs(10 * i);
        assert_eq!(s.poll_timeout(), Some(now));
        s.handle_timeout(now - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty(), "nothing before the deadline");
        s.handle_timeout(now);
        let a = drain(&mut s);
        assert_eq!(sent(&a), vec![Message::Keepalive]);
        keepalives += 1;
        // The peer keeps us alive too.
        s.handle_event(Event::Bytes(&bytes(&Message::Keepalive)), now);
    }
    assert_eq!(keepalives, 9);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn hold_expiry_sends_4_0_and_goes_down() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 30);
    let t2 = t + secs(5);
    s.handle_event(Event::Bytes(&bytes(&Message::Keepalive)), t2); // restarts hold timer
    let mut now = t;
    while now < t2 + secs(30) {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        let a = drain(&mut s);
        if now < t2 + secs(30) {
            assert_eq!(sent(&a), vec![Message::Keepalive]);
        } else {
            assert_eq!(now, t2 + secs(30));
            assert_torn_down(&a, 4, 0);
            assert_eq!(
                a.last(),
                Some(&Action::Down {
                    reason: DownReason::HoldTimerExpired
                })
            );
        }
    }
    assert_eq!(s.state(), State::Idle);
    // Automatic restart after the retry delay.
    assert_eq!(s.poll_timeout(), Some(now + secs(5)));
    s.handle_timeout(now + secs(5));
    assert_eq!(drain(&mut s), vec![Action::Connect]);
}

#[test]
fn hold_time_zero_disables_timers() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 0);
    assert_eq!(s.negotiated_hold_time(), 0);
    assert_eq!(s.poll_timeout(), None);
}

fn bad_open(open_bytes: Vec<u8>, code: u8, subcode: u8) {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    to_open_sent(&mut s, t);
    s.handle_event(Event::Bytes(&open_bytes), t);
    let a = drain(&mut s);
    assert_torn_down(&a, code, subcode);
    assert!(matches!(
        a.last(),
        Some(Action::Down {
            reason: DownReason::NotificationSent(_)
        })
    ));
    assert_eq!(s.state(), State::Idle);
}

/// Raw OPEN bytes (RFC 4271 4.2) with a 4-octet AS capability for `asn`.
fn raw_open(version: u8, my_as: u16, hold: u16, id: [u8; 4], asn: Option<u32>) -> Vec<u8> {
    let mut body = vec![version];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id);
    match asn {
        Some(a) => {
            body.extend_from_slice(&[8, 2, 6, 65, 4]);
            body.extend_from_slice(&a.to_be_bytes());
        }
        None => body.push(0),
    }
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(1);
    m.extend_from_slice(&body);
    m
}

#[test]
fn bad_open_variants() {
    let id = [192, 0, 2, 2];
    // Sanity: the good one is accepted.
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    to_open_sent(&mut s, t);
    s.handle_event(Event::Bytes(&raw_open(4, 65002, 90, id, Some(PEER_AS))), t);
    assert_eq!(s.state(), State::OpenConfirm);
    // Only IPv4 unicast is implied when the peer sends no MP capability.
    assert_eq!(s.negotiated_families(), &[Family::Ipv4Unicast]);

    bad_open(raw_open(3, 65002, 90, id, Some(PEER_AS)), 2, 1); // unsupported version
    bad_open(raw_open(4, 65002, 1, id, Some(PEER_AS)), 2, 6); // hold time 1
    bad_open(raw_open(4, 65002, 2, id, Some(PEER_AS)), 2, 6); // hold time 2
    bad_open(raw_open(4, 65002, 90, [0, 0, 0, 0], Some(PEER_AS)), 2, 3); // router id 0
    bad_open(raw_open(4, 65002, 90, [192, 0, 2, 1], Some(PEER_AS)), 2, 3); // our own id
    bad_open(raw_open(4, 65002, 90, id, None), 2, 7); // no 4-octet AS capability
}

#[test]
fn peer_as_mismatch() {
    let id = [192, 0, 2, 2];
    bad_open(raw_open(4, 65003, 90, id, Some(65003)), 2, 2);
    // My AS field disagreeing with the capability is also a bad peer AS.
    bad_open(raw_open(4, 65003, 90, id, Some(PEER_AS)), 2, 2);
    // A 4-octet peer AS behind AS_TRANS is fine.
    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            peer_as: 4_200_000_000,
            ..cfg()
        },
        t,
    );
    to_open_sent(&mut s, t);
    s.handle_event(Event::Bytes(&raw_open(4, AS_TRANS, 90, id, Some(4_200_000_000))), t);
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn connect_retry_backoff_grows_and_caps() {
    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            connect_retry: secs(5),
            connect_retry_max: secs(40),
            ..cfg()
        },
        t,
    );
    s.handle_event(Event::Start, t);
    assert_eq!(drain(&mut s), vec![Action::Connect]);
    let mut now = t;
    let mut gaps = Vec::new();
    for _ in 0..6 {
        s.handle_event(Event::TcpFailed, now);
        assert_eq!(s.state(), State::Active);
        let next = s.poll_timeout().unwrap();
        gaps.push((next - now).as_secs());
        now = next;
        s.handle_timeout(now);
        assert_eq!(drain(&mut s), vec![Action::Connect]);
        assert_eq!(s.state(), State::Connect);
    }
    assert_eq!(gaps, vec![5, 10, 20, 40, 40, 40]);

    // A connect attempt that hangs is aborted and retried when the timer fires.
    let hang = s.poll_timeout().unwrap();
    s.handle_timeout(hang);
    assert_eq!(drain(&mut s), vec![Action::CloseTcp, Action::Connect]);

    // Reaching Established resets the backoff.
    s.handle_event(Event::TcpConnected, hang);
    s.handle_event(Event::Message(peer_open(90)), hang);
    s.handle_event(Event::Message(Message::Keepalive), hang);
    drain(&mut s);
    s.handle_event(Event::TcpClosed, hang);
    assert_eq!(
        drain(&mut s),
        vec![
            Action::CloseTcp,
            Action::Down {
                reason: DownReason::TcpClosed
            }
        ]
    );
    assert_eq!(s.poll_timeout(), Some(hang + secs(5)));
}

#[test]
fn passive_waits_for_incoming_connection() {
    let t = Instant::now();
    let mut s = Session::new(SessionConfig { passive: true, ..cfg() }, t);
    s.handle_event(Event::Start, t);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.poll_timeout(), None);
    s.handle_event(Event::TcpConnected, t);
    assert!(matches!(sent(&drain(&mut s))[..], [Message::Open(_)]));
}

fn v4_route() -> Route {
    Route {
        prefix: (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24),
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        as_path_prepend: 2,
        med: Some(10),
        communities: vec![0xfde9_0064],
        large_communities: vec![(65001, 1, 1)],
    }
}

fn v6_route() -> Route {
    Route {
        prefix: (IpAddr::V6("2001:db8:100::".parse().unwrap()), 48),
        next_hop: IpAddr::V6("2001:db8::1".parse().unwrap()),
        as_path_prepend: 0,
        med: None,
        communities: vec![],
        large_communities: vec![],
    }
}

fn update_msg(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + b.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&b);
    m
}

fn sends(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// Attributes of `v4_route()` with the given MED (RFC 4271 4.3 layouts).
fn v4_attrs(med: u8) -> Vec<u8> {
    [
        &[0x40, 1, 1, 0][..], // ORIGIN IGP
        // AS_PATH: AS_SEQUENCE of 3 x 65001 (own AS + 2 prepends)
        &[0x40, 2, 14, 2, 3, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xe9],
        &[0x40, 3, 4, 192, 0, 2, 1],                               // NEXT_HOP
        &[0x80, 4, 4, 0, 0, 0, med],                               // MED
        &[0xc0, 8, 4, 0xfd, 0xe9, 0, 0x64],                        // COMMUNITIES 65001:100
        &[0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 1], // LARGE 65001:1:1
    ]
    .concat()
}

#[test]
fn routes_add_change_withdraw() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    s.set_routes(vec![v4_route(), v6_route()]).unwrap();
    let a = established(&mut s, t, 90);
    assert_eq!(a[0], Action::Established);
    let out = sends(&a);
    assert_eq!(out.len(), 4, "{a:?}");
    // IPv4: attributes + NLRI 198.51.100.0/24.
    assert_eq!(out[0], update_msg(&[], &v4_attrs(10), &[24, 198, 51, 100]));
    // IPv6: ORIGIN, AS_PATH (just 65001), MP_REACH_NLRI (AFI 2, SAFI 1, NH len 16, NH, reserved, NLRI).
    let mut mp = vec![0x80, 14, 28, 0, 2, 1, 16]; // 3 + 1 + 16 + 1 + 7
    mp.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    mp.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00]);
    let v6_attrs = [&[0x40, 1, 1, 0][..], &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9], &mp].concat();
    assert_eq!(out[1], update_msg(&[], &v6_attrs, &[]));
    // End-of-RIB markers.
    assert_eq!(out[2], update_msg(&[], &[], &[]));
    assert_eq!(out[3], update_msg(&[], &[0x80, 15, 3, 0, 2, 1], &[]));

    // No change: nothing sent.
    s.set_routes(vec![v4_route(), v6_route()]).unwrap();
    assert!(drain(&mut s).is_empty());

    // Change the MED of the IPv4 route and add a second IPv4 prefix with the same attributes.
    let mut changed = v4_route();
    changed.med = Some(20);
    let mut second = changed.clone();
    second.prefix = (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24);
    s.set_routes(vec![changed.clone(), second, v6_route()]).unwrap();
    let out = sends(&drain(&mut s));
    assert_eq!(
        out,
        vec![update_msg(&[], &v4_attrs(20), &[24, 198, 51, 100, 24, 203, 0, 113])]
    );

    // Remove everything but the second IPv4 prefix: IPv4 withdrawn routes, IPv6 via MP_UNREACH.
    let mut second = changed;
    second.prefix = (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24);
    s.set_routes(vec![second]).unwrap();
    let out = sends(&drain(&mut s));
    assert_eq!(
        out,
        vec![
            update_msg(&[24, 198, 51, 100], &[], &[]),
            update_msg(
                &[],
                &[0x80, 15, 10, 0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00],
                &[]
            ),
        ]
    );

    // ROUTE-REFRESH for IPv4 re-sends the IPv4 routes.
    let rr = Message::RouteRefresh(RouteRefresh {
        afi: 1,
        subtype: 0,
        safi: 1,
    });
    s.handle_event(Event::Bytes(&bytes(&rr)), t);
    let out = sends(&drain(&mut s));
    assert_eq!(out, vec![update_msg(&[], &v4_attrs(20), &[24, 203, 0, 113])]);
}

#[test]
fn ibgp_routes_carry_local_pref() {
    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            peer_as: LOCAL_AS,
            ..cfg()
        },
        t,
    );
    let mut r = v4_route();
    r.as_path_prepend = 0;
    r.med = None;
    r.communities.clear();
    r.large_communities.clear();
    s.set_routes(vec![r]).unwrap();
    to_open_sent(&mut s, t);
    let open = Open::new(LOCAL_AS, 90, Ipv4Addr::new(192, 0, 2, 2), vec![]);
    s.handle_event(Event::Message(Message::Open(open)), t);
    assert_eq!(sent(&drain(&mut s)), vec![Message::Keepalive]);
    s.handle_event(Event::Message(Message::Keepalive), t);
    let out = sends(&drain(&mut s));
    // ORIGIN, empty AS_PATH, NEXT_HOP, LOCAL_PREF 100.
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 192, 0, 2, 1, 0x40, 5, 4, 0, 0, 0, 100,
    ];
    assert_eq!(
        out,
        vec![update_msg(&[], &attrs, &[24, 198, 51, 100]), update_msg(&[], &[], &[])]
    );
}

#[test]
fn set_routes_rejects_bad_routes() {
    let mut s = Session::new(cfg(), Instant::now());
    let mut r = v4_route();
    r.prefix.1 = 33;
    assert!(matches!(s.set_routes(vec![r]), Err(RouteError::InvalidPrefix(..))));
    let mut r = v4_route();
    r.next_hop = v6_route().next_hop;
    assert!(matches!(s.set_routes(vec![r]), Err(RouteError::BadNextHop { .. })));
    let mut r = v4_route();
    r.communities = (0..1100).collect();
    assert!(matches!(s.set_routes(vec![r]), Err(RouteError::TooLarge(_))));
}

#[test]
fn many_routes_are_split_across_updates() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    let routes: Vec<Route> = (0..2000u32)
        .map(|i| Route {
            prefix: (IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24),
            ..v4_route()
        })
        .collect();
    s.set_routes(routes).unwrap();
    let a = established(&mut s, t, 90);
    let msgs = sends(&a);
    let mut n = 0;
    for m in &msgs {
        assert!(m.len() <= 4096);
        if let Message::Update(u) = decode_all(m) {
            n += u.nlri.len();
        }
    }
    assert_eq!(n, 2000);
    assert!(msgs.len() > 3);
}

#[test]
fn stop_sends_cease_with_shutdown_communication() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    s.handle_event(
        Event::Stop {
            reason: Some("maintenance".into()),
        },
        t + secs(1),
    );
    let a = drain(&mut s);
    let mut expected = vec![0xff; 16];
    expected.extend_from_slice(&[0, 33, 3, 6, 2, 11]);
    expected.extend_from_slice(b"maintenance");
    assert_eq!(
        a,
        vec![
            Action::Send(expected),
            Action::CloseTcp,
            Action::Down {
                reason: DownReason::Stopped
            }
        ]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None, "no automatic restart after Stop");
    // Stop while connecting aborts the connect.
    s.handle_event(Event::Start, t + secs(2));
    assert_eq!(drain(&mut s), vec![Action::Connect]);
    s.handle_event(Event::Stop { reason: None }, t + secs(2));
    assert_eq!(drain(&mut s), vec![Action::CloseTcp]);
}

#[test]
fn received_notification_and_errors() {
    let t = Instant::now();
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    let n = Notification::admin_shutdown(Some("bye"));
    s.handle_event(Event::Bytes(&bytes(&Message::Notification(n.clone()))), t);
    let a = drain(&mut s);
    assert_eq!(
        a,
        vec![
            Action::CloseTcp,
            Action::Down {
                reason: DownReason::NotificationReceived(n)
            }
        ]
    );

    // Decode error in Established -> mapped NOTIFICATION (bad marker -> 1/1).
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    s.handle_event(Event::Bytes(&[0u8; 19]), t);
    assert_torn_down(&drain(&mut s), 1, 1);

    // Malformed UPDATE -> 3/x.
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    s.handle_event(Event::Bytes(&update_msg(&[], &[0x40, 1, 1, 9], &[])), t);
    assert_torn_down(&drain(&mut s), 3, 6);

    // Valid inbound UPDATEs are ignored (and restart the hold timer).
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    s.handle_event(Event::Bytes(&update_msg(&[8, 10], &[], &[])), t + secs(50));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.state(), State::Established);

    // Unexpected message in OpenSent -> FSM error 5/1 (RFC 6608).
    let mut s = Session::new(cfg(), t);
    to_open_sent(&mut s, t);
    s.handle_event(Event::Bytes(&bytes(&Message::Keepalive)), t);
    assert_torn_down(&drain(&mut s), 5, 1);

    // OPEN in OpenConfirm -> 5/2; OPEN in Established -> 5/3.
    let mut s = Session::new(cfg(), t);
    to_open_sent(&mut s, t);
    s.handle_event(Event::Message(peer_open(90)), t);
    drain(&mut s);
    s.handle_event(Event::Message(peer_open(90)), t);
    assert_torn_down(&drain(&mut s), 5, 2);
    let mut s = Session::new(cfg(), t);
    established(&mut s, t, 90);
    s.handle_event(Event::Message(peer_open(90)), t);
    assert_torn_down(&drain(&mut s), 5, 3);
}

#[test]
fn collision_resolution() {
    let lo = Ipv4Addr::new(10, 0, 0, 1);
    let hi = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(resolve_collision(hi, lo), Keep::LocallyInitiated);
    assert_eq!(resolve_collision(lo, hi), Keep::RemotelyInitiated);
}

#[test]
fn two_sessions_back_to_back() {
    let t = Instant::now();
    let mut a = Session::new(cfg(), t);
    let mut b = Session::new(
        SessionConfig {
            passive: true,
            ..SessionConfig::new(PEER_AS, LOCAL_AS, Ipv4Addr::new(192, 0, 2, 2))
        },
        t,
    );
    a.set_routes(vec![v4_route(), v6_route()]).unwrap();
    a.handle_event(Event::Start, t);
    b.handle_event(Event::Start, t);
    let mut now = t;
    let mut established = (0, 0);
    for _ in 0..50 {
        let mut progressed = false;
        while let Some(act) = a.poll_action() {
            progressed = true;
            match act {
                Action::Connect => {
                    a.handle_event(Event::TcpConnected, now);
                    b.handle_event(Event::TcpConnected, now);
                }
                Action::Send(bytes) => b.handle_event(Event::Bytes(&bytes), now),
                Action::Established => established.0 += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(act) = b.poll_action() {
            progressed = true;
            match act {
                Action::Send(bytes) => a.handle_event(Event::Bytes(&bytes), now),
                Action::Established => established.1 += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        if !progressed {
            now = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    assert_eq!(established, (1, 1));
    assert_eq!((a.state(), b.state()), (State::Established, State::Established));
    assert!(now > t + secs(60), "kept alive by keepalives for a while");
}

proptest::proptest! {
    #[test]
    fn established_session_survives_arbitrary_bytes(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8),
        marker in proptest::prelude::any::<bool>(),
    ) {
        let t = Instant::now();
        let mut s = Session::new(cfg(), t);
        established(&mut s, t, 90);
        if marker {
            s.handle_event(Event::Bytes(&[0xff; 16]), t);
        }
        for c in &chunks {
            s.handle_event(Event::Bytes(c), t);
            s.handle_timeout(t + secs(1));
        }
        let actions = drain(&mut s);
        // Either still Established, or torn down with a NOTIFICATION + Down.
        if s.state() != State::Established {
            let down = matches!(actions.last(), Some(Action::Down { .. }));
            proptest::prop_assert!(down);
        }
    }
}
