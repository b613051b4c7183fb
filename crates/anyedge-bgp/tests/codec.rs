//! Byte-vector, error-path and property tests for the BGP codec.
//! Expected bytes are assembled by hand from the RFC layouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyedge_bgp::codec::*;
use proptest::prelude::*;

/// 16-byte marker, 2-byte length, 1-byte type (RFC 4271 4.1), then body.
fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(ty);
    v.extend_from_slice(body);
    v
}

/// Checks encode(m) == bytes and decode(bytes) == m, consuming all bytes.
fn check(m: Message, bytes: &[u8]) {
    let mut out = Vec::new();
    encode(&m, &mut out).unwrap();
    assert_eq!(out, bytes, "encode of {m:?}");
    let (d, used) = decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(d, m);
    // Every strict prefix asks for more bytes.
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
}

fn p(s: &str, len: u8) -> Prefix {
    Prefix::new(s.parse().unwrap(), len).unwrap()
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    decode(bytes).unwrap_err()
}

/// UPDATE body: withdrawn routes, path attributes, NLRI (RFC 4271 4.3).
fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH_65001: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP_192_0_2_1: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];

// ------------------------------------------------------------ messages

#[test]
fn keepalive_bytes() {
    check(Message::Keepalive, &msg(4, &[]));
    let mut k = vec![0xff; 16];
    k.extend_from_slice(&[0x00, 0x13, 0x04]);
    assert_eq!(msg(4, &[]), k);
}

#[test]
fn open_with_all_capabilities() {
    let open = Open {
        my_as: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::FourOctetAs(65001),
            Capability::Multiprotocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::Multiprotocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                flags: 0x8,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: 1,
                    safi: 1,
                    flags: 0x80,
                }],
            }),
            Capability::Unknown {
                code: 73,
                value: vec![1, 2, 3],
            },
        ],
    };
    let params: Vec<u8> = [
        // param type 2 (capabilities), len 6: cap 65 len 4, ASN 65001
        &[2, 6, 65, 4, 0, 0, 0xfd, 0xe9][..],
        // cap 1 (MP) len 4: AFI 1, reserved, SAFI 1
        &[2, 6, 1, 4, 0, 1, 0, 1],
        // cap 1 (MP): AFI 2, reserved, SAFI 1
        &[2, 6, 1, 4, 0, 2, 0, 1],
        // cap 2 (route refresh) len 0
        &[2, 2, 2, 0],
        // cap 64 (GR) len 6: R flag (0x8 << 12) | 120 s = 0x8078; AFI 1 SAFI 1 flags 0x80 (F)
        &[2, 8, 64, 6, 0x80, 0x78, 0, 1, 1, 0x80],
        // unknown cap 73 len 3, kept raw
        &[2, 5, 73, 3, 1, 2, 3],
    ]
    .concat();
    let mut body = vec![4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, params.len() as u8];
    body.extend_from_slice(&params);
    check(Message::Open(open), &msg(1, &body));
}

#[test]
fn open_four_octet_asn_uses_as_trans() {
    let open = Open::new(4_200_000_000, 180, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
    // version 4, My AS 23456 = 0x5ba0, hold 180 = 0x00b4, id 10.0.0.1,
    // opt len 8: param 2 len 6: cap 65 len 4: 4200000000 = 0xfa56ea00
    let body = [
        4, 0x5b, 0xa0, 0, 0xb4, 10, 0, 0, 1, 8, 2, 6, 65, 4, 0xfa, 0x56, 0xea, 0x00,
    ];
    check(Message::Open(open), &msg(1, &body));
}

#[test]
fn open_multiple_caps_in_one_parameter_decodes() {
    // One optional parameter holding two capabilities (RFC 5492 allows both layouts).
    // opt len 10: param 2 len 8 = cap 2 (len 0) + cap 1 (len 4: AFI 2, SAFI 1)
    let body = [4, 0xfd, 0xe9, 0, 90, 1, 1, 1, 1, 10, 2, 8, 2, 0, 1, 4, 0, 2, 0, 1];
    let (m, _) = decode(&msg(1, &body)).unwrap().unwrap();
    let Message::Open(o) = m else { panic!() };
    assert_eq!(
        o.capabilities,
        vec![Capability::RouteRefresh, Capability::Multiprotocol { afi: 2, safi: 1 }]
    );
}

#[test]
fn update_ipv4_announce_all_attributes() {
    let u = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(vec![
                AsSegment::Sequence(vec![65001, 65001, 65001]),
                AsSegment::Set(vec![64512]),
            ]),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            PathAttribute::MultiExitDisc(100),
            PathAttribute::LocalPref(200),
            PathAttribute::AtomicAggregate,
            PathAttribute::Communities(vec![0xfde9_0001, 0xffff_ff01]),
            PathAttribute::LargeCommunities(vec![(65001, 1, 2)]),
        ],
        nlri: vec![
            p("198.51.100.0", 24),
            p("203.0.113.5", 32),
            p("10.0.0.0", 8),
            p("0.0.0.0", 0),
        ],
    };
    let attrs: Vec<u8> = [
        &ORIGIN_IGP[..], // well-known transitive 0x40, type 1, len 1, IGP
        // AS_PATH len 20: AS_SEQUENCE(2) x3 65001 (prepends), AS_SET(1) x1 64512
        &[
            0x40, 2, 20, 2, 3, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xe9, 1, 1, 0, 0, 0xfc, 0x00,
        ],
        &NEXT_HOP_192_0_2_1,
        &[0x80, 4, 4, 0, 0, 0, 100], // MED: optional non-transitive
        &[0x40, 5, 4, 0, 0, 0, 200], // LOCAL_PREF
        &[0x40, 6, 0],               // ATOMIC_AGGREGATE
        &[0xc0, 8, 8, 0xfd, 0xe9, 0, 1, 0xff, 0xff, 0xff, 0x01], // COMMUNITIES 65001:1 NO_EXPORT
        &[0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2], // LARGE_COMMUNITY 65001:1:2
    ]
    .concat();
    // NLRI: len + significant octets
    let nlri = [24, 198, 51, 100, 32, 203, 0, 113, 5, 8, 10, 0];
    check(Message::Update(u), &msg(2, &update_body(&[], &attrs, &nlri)));
}

#[test]
fn update_ipv4_withdraw_and_eor() {
    let u = Update {
        withdrawn: vec![p("198.51.100.0", 24), p("192.0.2.128", 25)],
        ..Update::default()
    };
    let w = [24, 198, 51, 100, 25, 192, 0, 2, 128];
    check(Message::Update(u), &msg(2, &update_body(&w, &[], &[])));
    // IPv4 End-of-RIB: empty UPDATE, 23 bytes.
    let eor = msg(2, &[0, 0, 0, 0]);
    assert_eq!(eor.len(), 23);
    check(Message::Update(Update::default()), &eor);
}

#[test]
fn update_mp_reach_ipv6_16_and_32_byte_next_hop() {
    let nh: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    for link_local in [None, Some(ll)] {
        let u = Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(vec![AsSegment::Sequence(vec![65001])]),
                PathAttribute::MpReach(MpReach {
                    next_hop: nh,
                    link_local,
                    nlri: vec![p("2001:db8:100::", 48), p("2001:db8::", 32)],
                }),
            ],
            ..Update::default()
        };
        let mut v = vec![0, 2, 1]; // AFI 2, SAFI 1
        match link_local {
            None => {
                v.push(16);
                v.extend_from_slice(&nh.octets());
            }
            Some(ll) => {
                v.push(32);
                v.extend_from_slice(&nh.octets());
                v.extend_from_slice(&ll.octets());
            }
        }
        v.push(0); // reserved
        v.extend_from_slice(&[48, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 32, 0x20, 0x01, 0x0d, 0xb8]);
        let mut attrs = [&ORIGIN_IGP[..], &AS_PATH_65001].concat();
        attrs.extend_from_slice(&[0x80, 14, v.len() as u8]);
        attrs.extend_from_slice(&v);
        check(Message::Update(u), &msg(2, &update_body(&[], &attrs, &[])));
    }
}

#[test]
fn update_mp_unreach_ipv6_and_eor() {
    let u = Update {
        attributes: vec![PathAttribute::MpUnreach(vec![p("2001:db8:100::", 48)])],
        ..Update::default()
    };
    let attrs = [0x80, 15, 10, 0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00];
    check(Message::Update(u), &msg(2, &update_body(&[], &attrs, &[])));
    // IPv6 End-of-RIB (RFC 4724 2): MP_UNREACH with AFI 2 SAFI 1 and nothing else.
    let eor = Update {
        attributes: vec![PathAttribute::MpUnreach(vec![])],
        ..Update::default()
    };
    check(
        Message::Update(eor),
        &msg(2, &update_body(&[], &[0x80, 15, 3, 0, 2, 1], &[])),
    );
}

#[test]
fn update_extended_length_and_unknown_attributes() {
    let comms: Vec<u32> = (0..70).collect();
    let u = Update {
        attributes: vec![
            PathAttribute::Communities(comms.clone()),
            // optional transitive partial, unknown type 99
            PathAttribute::Unknown {
                flags: 0xe0,
                type_code: 99,
                value: vec![1, 2, 3],
            },
            // MP_REACH for AFI 1 / SAFI 128 is not parsed: kept raw
            PathAttribute::Unknown {
                flags: 0x80,
                type_code: 14,
                value: vec![0, 1, 128, 0, 0],
            },
        ],
        ..Update::default()
    };
    // 70 communities = 280 bytes > 255: flags 0xc0 | 0x10 (extended length), 2-byte length 0x0118
    let mut attrs = vec![0xd0, 8, 0x01, 0x18];
    for c in &comms {
        attrs.extend_from_slice(&c.to_be_bytes());
    }
    attrs.extend_from_slice(&[0xe0, 99, 3, 1, 2, 3]);
    attrs.extend_from_slice(&[0x80, 14, 5, 0, 1, 128, 0, 0]);
    check(Message::Update(u), &msg(2, &update_body(&[], &attrs, &[])));

    // Extended length on a short attribute is accepted on decode.
    let attrs = [&[0x50, 1, 0, 1, 2][..], &AS_PATH_65001, &NEXT_HOP_192_0_2_1].concat();
    let (m, _) = decode(&msg(2, &update_body(&[], &attrs, &[8, 10]))).unwrap().unwrap();
    let Message::Update(u) = m else { panic!() };
    assert_eq!(u.attributes[0], PathAttribute::Origin(Origin::Incomplete));
}

#[test]
fn notification_and_shutdown_communication() {
    let n = Notification::admin_shutdown(Some("maintenance"));
    assert_eq!(n.shutdown_communication(), Some("maintenance"));
    // code 6 (Cease), subcode 2 (Administrative Shutdown), length 11, UTF-8 text (RFC 9003 2)
    let mut body = vec![6, 2, 11];
    body.extend_from_slice(b"maintenance");
    check(Message::Notification(n), &msg(3, &body));

    let n = Notification {
        code: 4,
        subcode: 0,
        data: vec![],
    };
    check(Message::Notification(n), &msg(3, &[4, 0]));

    // Truncation to 255 bytes on a character boundary.
    let long = "é".repeat(200);
    let n = Notification::admin_reset(Some(&long));
    assert_eq!(n.subcode, 4);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_communication().unwrap().len(), 254);
    // No message: empty data; bad length: None.
    assert_eq!(Notification::admin_shutdown(None).data, Vec::<u8>::new());
    let bad = Notification {
        code: 6,
        subcode: 2,
        data: vec![5, b'a'],
    };
    assert_eq!(bad.shutdown_communication(), None);
}

#[test]
fn route_refresh_bytes() {
    let rr = RouteRefresh {
        afi: 2,
        subtype: 0,
        safi: 1,
    };
    check(Message::RouteRefresh(rr), &msg(5, &[0, 2, 0, 1]));
}

// ------------------------------------------------------------ header errors

#[test]
fn header_errors() {
    let mut m = msg(4, &[]);
    m[3] = 0;
    let e = decode_err(&m);
    assert_eq!(e, DecodeError::ConnectionNotSynchronized);
    assert_eq!(e.notification(), (1, 1, vec![]));
    // Detected before a full header arrives.
    assert_eq!(decode_err(&[0xff, 0xfe]), DecodeError::ConnectionNotSynchronized);

    for (len, ty) in [(18u16, 4u8), (4097, 2), (20, 4), (28, 1), (22, 2), (20, 3), (24, 5)] {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&len.to_be_bytes());
        m.push(ty);
        let e = decode_err(&m);
        assert_eq!(e, DecodeError::BadMessageLength(len));
        assert_eq!(e.notification(), (1, 2, len.to_be_bytes().to_vec()));
    }
    let e = decode_err(&msg(6, &[]));
    assert_eq!(e.notification(), (1, 3, vec![6]));
}

// ------------------------------------------------------------ OPEN errors

fn open_body(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version, 0xfd, 0xe9];
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

#[test]
fn open_errors() {
    let e = decode_err(&msg(1, &open_body(3, 90, [1, 1, 1, 1], &[])));
    assert_eq!(e, DecodeError::UnsupportedVersion(3));
    assert_eq!(e.notification(), (2, 1, vec![0, 4])); // largest supported version

    let e = decode_err(&msg(1, &open_body(4, 90, [0, 0, 0, 0], &[])));
    assert_eq!(e.notification(), (2, 3, vec![]));

    let e = decode_err(&msg(1, &open_body(4, 90, [1, 1, 1, 1], &[1, 0])));
    assert_eq!(e, DecodeError::UnsupportedOptionalParameter(1));
    assert_eq!(e.notification(), (2, 4, vec![]));

    for hold in [1, 2] {
        let e = decode_err(&msg(1, &open_body(4, hold, [1, 1, 1, 1], &[])));
        assert_eq!(e.notification(), (2, 6, vec![]));
    }
    // Malformed capability (MP with length 3) and a parameter overrunning the list.
    let e = decode_err(&msg(1, &open_body(4, 90, [1, 1, 1, 1], &[2, 5, 1, 3, 0, 1, 0])));
    assert_eq!(e.notification(), (2, 0, vec![]));
    let e = decode_err(&msg(1, &open_body(4, 90, [1, 1, 1, 1], &[2, 9, 2, 0])));
    assert_eq!(e.notification(), (2, 0, vec![]));

    assert_eq!(
        DecodeError::BadPeerAs { expected: 1, got: 2 }.notification(),
        (2, 2, vec![])
    );
    assert_eq!(
        DecodeError::UnsupportedCapability(vec![65, 0]).notification(),
        (2, 7, vec![65, 0])
    );
}

// ------------------------------------------------------------ UPDATE errors

fn update_err(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> (u8, u8, Vec<u8>) {
    decode_err(&msg(2, &update_body(withdrawn, attrs, nlri))).notification()
}

#[test]
fn update_malformed_attribute_list() {
    // Withdrawn Routes Length overruns the message.
    let e = decode_err(&msg(2, &[0, 50, 0, 0]));
    assert_eq!(e.notification(), (3, 1, vec![]));
    // Total Path Attribute Length overruns the message.
    let e = decode_err(&msg(2, &[0, 0, 0, 9, 0x40, 1, 1, 0]));
    assert_eq!(e.notification(), (3, 1, vec![]));
    // Duplicate attribute.
    let attrs = [&ORIGIN_IGP[..], &ORIGIN_IGP].concat();
    assert_eq!(update_err(&[], &attrs, &[]), (3, 1, vec![]));
    // Truncated attribute header.
    assert_eq!(update_err(&[], &[0x40, 1], &[]), (3, 1, vec![]));
}

#[test]
fn update_attribute_errors() {
    // 3/2 unrecognized well-known (optional bit clear).
    assert_eq!(update_err(&[], &[0x40, 99, 1, 7], &[]), (3, 2, vec![0x40, 99, 1, 7]));
    // 3/3 missing well-known: NEXT_HOP with IPv4 NLRI; ORIGIN with MP_REACH.
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65001].concat();
    assert_eq!(update_err(&[], &attrs, &[8, 10]), (3, 3, vec![3]));
    let attrs = [&AS_PATH_65001[..], &NEXT_HOP_192_0_2_1].concat();
    assert_eq!(update_err(&[], &attrs, &[8, 10]), (3, 3, vec![1]));
    let mut mp = vec![0x80, 14, 21, 0, 2, 1, 16];
    mp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(update_err(&[], &mp, &[]), (3, 3, vec![1]));
    // 3/4 flags: ORIGIN marked optional; MED marked transitive; partial on well-known.
    for a in [[0xc0u8, 1, 1, 0], [0x60, 1, 1, 0]] {
        assert_eq!(update_err(&[], &a, &[]), (3, 4, a.to_vec()));
    }
    let med = [0xc0, 4, 4, 0, 0, 0, 1];
    assert_eq!(update_err(&[], &med, &[]), (3, 4, med.to_vec()));
    // 3/5 length: ORIGIN len 2, NEXT_HOP len 5, LOCAL_PREF len 3, COMMUNITIES len 5, LARGE len 8, overrun.
    let cases: Vec<Vec<u8>> = vec![
        vec![0x40, 1, 2, 0, 0],
        vec![0x40, 3, 5, 1, 2, 3, 4, 5],
        vec![0x40, 5, 3, 0, 0, 1],
        vec![0xc0, 8, 5, 0, 0, 0, 1, 2],
        vec![0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2],
        vec![0x40, 6, 1, 0],
    ];
    for a in cases {
        assert_eq!(update_err(&[], &a, &[]), (3, 5, a.clone()), "{a:?}");
    }
    assert_eq!(update_err(&[], &[0x40, 1, 4, 0], &[]), (3, 5, vec![0x40, 1, 4, 0]));
    // 3/6 invalid ORIGIN value.
    assert_eq!(update_err(&[], &[0x40, 1, 1, 3], &[]), (3, 6, vec![0x40, 1, 1, 3]));
    // 3/8 invalid NEXT_HOP: 0.0.0.0, multicast, broadcast.
    for nh in [[0u8, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
        let a = [0x40, 3, 4, nh[0], nh[1], nh[2], nh[3]];
        assert_eq!(update_err(&[], &a, &[]), (3, 8, a.to_vec()));
    }
    // 3/9 optional attribute error: MP_REACH with an 8-byte next hop; truncated; bad IPv6 prefix.
    let a = [0x80, 14, 13, 0, 2, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    assert_eq!(update_err(&[], &a, &[]), (3, 9, a.to_vec()));
    let a = [0x80, 14, 4, 0, 2, 1, 16];
    assert_eq!(update_err(&[], &a, &[]), (3, 9, a.to_vec()));
    let a = [0x80, 15, 5, 0, 2, 1, 129, 0];
    assert_eq!(update_err(&[], &a, &[]), (3, 9, a.to_vec()));
    // 3/10 invalid network field: /33, truncated prefix, in NLRI and withdrawn routes.
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65001, &NEXT_HOP_192_0_2_1].concat();
    assert_eq!(update_err(&[], &attrs, &[33, 1, 2, 3, 4, 5]), (3, 10, vec![]));
    assert_eq!(update_err(&[], &attrs, &[24, 10, 0]), (3, 10, vec![]));
    assert_eq!(update_err(&[40, 1, 2, 3, 4, 5], &[], &[]), (3, 10, vec![]));
    // 3/11 malformed AS_PATH: segment type 5, count overrun, zero count.
    for a in [
        [0x40u8, 2, 6, 5, 1, 0, 0, 0, 1],
        [0x40, 2, 6, 2, 2, 0, 0, 0, 1],
        [0x40, 2, 6, 2, 0, 0, 0, 0, 1],
    ] {
        assert_eq!(update_err(&[], &a, &[]), (3, 11, vec![]));
    }
}

#[test]
fn encode_errors() {
    let big = Update {
        attributes: vec![PathAttribute::Communities((0..1100).collect())],
        ..Update::default()
    };
    assert!(matches!(
        encode_to_vec(&Message::Update(big)),
        Err(EncodeError::MessageTooLong(_))
    ));
    let seg = Update {
        attributes: vec![PathAttribute::AsPath(vec![AsSegment::Sequence(vec![1; 256])])],
        ..Update::default()
    };
    assert_eq!(
        encode_to_vec(&Message::Update(seg)),
        Err(EncodeError::AsPathSegmentTooLong)
    );
    let mut out = vec![9];
    let open = Open {
        my_as: 1,
        hold_time: 0,
        bgp_id: Ipv4Addr::new(1, 1, 1, 1),
        capabilities: vec![Capability::Unknown {
            code: 99,
            value: vec![0; 254],
        }],
    };
    assert_eq!(
        encode(&Message::Open(open), &mut out),
        Err(EncodeError::OptionalParametersTooLong)
    );
    assert_eq!(out, vec![9], "output untouched on error");
}

#[test]
fn decode_consumes_one_message_at_a_time() {
    let mut buf = msg(4, &[]);
    buf.extend_from_slice(&msg(5, &[0, 1, 0, 1]));
    buf.extend_from_slice(&[0xff; 5]);
    let (m1, n1) = decode(&buf).unwrap().unwrap();
    assert_eq!((m1, n1), (Message::Keepalive, 19));
    let (m2, n2) = decode(&buf[n1..]).unwrap().unwrap();
    assert_eq!(
        m2,
        Message::RouteRefresh(RouteRefresh {
            afi: 1,
            subtype: 0,
            safi: 1
        })
    );
    assert_eq!(decode(&buf[n1 + n2..]), Ok(None));
}

#[test]
fn prefix_masks_host_bits() {
    let a = Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 8).unwrap();
    assert_eq!(a.addr(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)));
    assert!(Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 33).is_err());
    assert!(Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 129).is_err());
    // Host bits set on the wire are ignored on decode.
    let attrs = [&ORIGIN_IGP[..], &AS_PATH_65001, &NEXT_HOP_192_0_2_1].concat();
    let (m, _) = decode(&msg(2, &update_body(&[], &attrs, &[7, 0xff]))).unwrap().unwrap();
    let Message::Update(u) = m else { panic!() };
    assert_eq!(u.nlri, vec![p("254.0.0.0", 7)]);
}

// ------------------------------------------------------------ properties

fn prefix4() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), l).unwrap())
}

fn prefix6() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), l).unwrap())
}

fn capability() -> impl Strategy<Value = Capability> {
    let fam = (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, safi, flags)| GracefulRestartFamily {
        afi,
        safi,
        flags,
    });
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
        Just(Capability::RouteRefresh),
        (0u8..16, 0u16..4096, prop::collection::vec(fam, 0..3)).prop_map(|(flags, restart_time, families)| {
            Capability::GracefulRestart(GracefulRestart {
                flags,
                restart_time,
                families,
            })
        }),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<u8>().prop_filter("known", |c| ![1, 2, 64, 65].contains(c)),
            prop::collection::vec(any::<u8>(), 0..10)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("1/2", |h| *h != 1 && *h != 2),
        1u32..,
        prop::collection::vec(capability(), 0..6),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn segment() -> impl Strategy<Value = AsSegment> {
    (any::<bool>(), prop::collection::vec(any::<u32>(), 1..6)).prop_map(|(set, a)| {
        if set {
            AsSegment::Set(a)
        } else {
            AsSegment::Sequence(a)
        }
    })
}

fn update() -> impl Strategy<Value = Update> {
    let origin = prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)];
    let mp_reach = (
        any::<u128>(),
        proptest::option::of(any::<u128>()),
        prop::collection::vec(prefix6(), 0..4),
    )
        .prop_map(|(nh, ll, nlri)| MpReach {
            next_hop: Ipv6Addr::from(nh),
            link_local: ll.map(Ipv6Addr::from),
            nlri,
        });
    let unknown = (
        any::<u8>(),
        any::<u8>().prop_filter("known", |t| ![1, 2, 3, 4, 5, 6, 8, 14, 15, 32].contains(t)),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(f, type_code, value)| PathAttribute::Unknown {
            flags: 0x80 | (f & 0x60),
            type_code,
            value,
        });
    (
        (
            proptest::option::of(origin),
            proptest::option::of(prop::collection::vec(segment(), 0..3)),
            proptest::option::of(1u32..0xe000_0000),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
        ),
        (
            proptest::option::of(prop::collection::vec(any::<u32>(), 0..5)),
            proptest::option::of(prop::collection::vec(any::<(u32, u32, u32)>(), 0..3)),
            proptest::option::of(mp_reach),
            proptest::option::of(prop::collection::vec(prefix6(), 0..4)),
            proptest::option::of(unknown),
            prop::collection::vec(prefix4(), 0..5),
            prop::collection::vec(prefix4(), 0..5),
        ),
    )
        .prop_map(
            |((origin, as_path, nh, med, lp, atomic), (comms, large, mp, mpu, unk, withdrawn, nlri))| {
                let needs = !nlri.is_empty() || mp.is_some();
                let mut attributes = Vec::new();
                let origin = if needs {
                    Some(origin.unwrap_or(Origin::Igp))
                } else {
                    origin
                };
                let as_path = if needs {
                    Some(as_path.unwrap_or_default())
                } else {
                    as_path
                };
                let nh = if nlri.is_empty() { nh } else { Some(nh.unwrap_or(1)) };
                attributes.extend(origin.map(PathAttribute::Origin));
                attributes.extend(as_path.map(PathAttribute::AsPath));
                attributes.extend(nh.map(|n| PathAttribute::NextHop(Ipv4Addr::from(n))));
                attributes.extend(med.map(PathAttribute::MultiExitDisc));
                attributes.extend(lp.map(PathAttribute::LocalPref));
                if atomic {
                    attributes.push(PathAttribute::AtomicAggregate);
                }
                attributes.extend(comms.map(PathAttribute::Communities));
                attributes.extend(mp.map(PathAttribute::MpReach));
                attributes.extend(mpu.map(PathAttribute::MpUnreach));
                attributes.extend(large.map(PathAttribute::LargeCommunities));
                attributes.extend(unk);
                Update {
                    withdrawn,
                    attributes,
                    nlri,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update().prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(code, subcode, data)| Message::Notification(Notification { code, subcode, data })),
        Just(Message::Keepalive),
        any::<(u16, u8, u8)>().prop_map(|(afi, subtype, safi)| Message::RouteRefresh(RouteRefresh {
            afi,
            subtype,
            safi
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn roundtrip(m in message()) {
        let bytes = encode_to_vec(&m).unwrap();
        let (d, used) = decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(d, m);
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn no_panic_on_arbitrary_bodies(ty in 0u8..7, body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Err(e) = decode(&msg(ty, &body)) {
            let (code, _, _) = e.notification();
            prop_assert!((1..=3).contains(&code));
        }
    }

    #[test]
    fn no_panic_on_mutated_messages(m in message(), idx in any::<prop::sample::Index>(), val in any::<u8>()) {
        let mut bytes = encode_to_vec(&m).unwrap();
        let i = idx.index(bytes.len());
        bytes[i] = val;
        let _ = decode(&bytes);
    }
}
