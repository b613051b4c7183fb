//! Transfers end to end without I/O: serving, receiving, journal, TSIG,
//! NOTIFY and refresh timing.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{ClientSequence, Key};

use super::*;
use crate::name;
use crate::zone::{load_str, Zone, T_SOA};

const V1: &str = r#"
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster 1 7200 3600 1209600 300
    IN NS  ns1
    IN NS  ns2.example.net.
ns1 IN A   192.0.2.1
www IN A   192.0.2.10
    IN AAAA 2001:db8::10
alias IN CNAME www
mail IN MX 10 mx1
mx1 IN A 192.0.2.25
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
odd IN TYPE65534 \# 3 010203
"#;

fn v2() -> String {
    V1.replace("@   IN SOA ns1 hostmaster 1 ", "@   IN SOA ns1 hostmaster 2 ")
        .replace("www IN A   192.0.2.10", "www IN A   192.0.2.11")
        .replace("mx1 IN A 192.0.2.25", "mx1 600 IN A 192.0.2.25")
        + "new IN TXT \"added in 2\"\n"
}

fn v3() -> String {
    v2().replace("@   IN SOA ns1 hostmaster 2 ", "@   IN SOA ns1 hostmaster 3 ")
        .replace("alias IN CNAME www\n", "")
        + "new IN TXT \"another\"\n"
}

/// V1 with `n` more hosts (several 512-octet messages' worth).
fn big(n: usize) -> String {
    let mut t = V1.to_string();
    for i in 0..n {
        t.push_str(&format!("host{i} IN A 192.0.2.{}\n", i % 250));
    }
    t
}

fn with_serial(r: &Rr, serial: u32) -> Rr {
    let mut r = r.clone();
    let n = r.rdata.len();
    r.rdata[n - 20..n - 16].copy_from_slice(&serial.to_be_bytes());
    r
}

/// A journal of the differences between consecutive `versions`.
fn journal(versions: &[&Arc<Zone>]) -> Journal {
    let mut j = Journal::new(8, 10_000);
    for w in versions.windows(2) {
        j.push(Arc::new(diff(w[0], w[1]).unwrap()));
    }
    j
}

/// An unsigned IXFR query from the version `have`.
fn ixfr_query(id: u16, have: &Zone) -> Vec<u8> {
    let soa = zone_soa(have).unwrap();
    build_query::<Arc<Key>>(id, APEX, T_IXFR, Some(&soa), None, now())
        .unwrap()
        .0
}

fn zone(text: &str) -> Arc<Zone> {
    Arc::new(load_str(text, "example.com.").unwrap())
}

const APEX: &[u8] = b"\x07example\x03com\x00";

/// Every record as comparable tuples.
fn content(z: &Zone) -> BTreeSet<(Vec<u8>, u16, u32, Vec<u8>)> {
    z.iter_records()
        .into_iter()
        .flat_map(|(o, s)| {
            s.rdata
                .iter()
                .map(move |r| (name::lower(o).to_vec(), s.rtype, s.ttl, r.wire.to_vec()))
        })
        .collect()
}

fn now() -> Time48 {
    Time48::from_u64(1_700_000_000)
}

fn key(secret: &[u8]) -> Arc<Key> {
    let name: domain::tsig::KeyName = "xfr-key.".parse().unwrap();
    Arc::new(Key::new(domain::tsig::Algorithm::Sha256, secret, name, None, None).unwrap())
}

/// Serves `query` (raw, maybe signed) from `zone`/`journal` and feeds
/// every message to a receiver on `base`. Returns what was received and
/// the number of messages.
fn transfer(
    query: Vec<u8>,
    client: Option<ClientSequence<Arc<Key>>>,
    server_key: Option<Arc<Key>>,
    zone: Arc<Zone>,
    journal: Option<&Journal>,
    base: Option<Arc<Zone>>,
    max_len: usize,
) -> (Result<Received, XfrError>, usize) {
    let mut msg = Message::from_octets(query).unwrap();
    let mut seq = match &server_key {
        Some(k) => match verify_request(&mut msg, k, now()) {
            Signed::Valid(s) => Some(s),
            _ => panic!("request did not verify"),
        },
        None => None,
    };
    let req = parse_request(&msg).unwrap();
    let p = plan(&req, zone, journal);
    let mut r = Responder::new(&msg, &p, max_len).unwrap();
    let mut rx = Receiver::new(APEX, base, req.qtype == T_IXFR, 1_000_000);
    let mut client = client;
    let mut n = 0;
    while let Some(m) = r.next_message(seq.as_deref_mut(), now()).unwrap() {
        let ancount = u16::from_be_bytes([m[6], m[7]]);
        assert!(
            m.len() <= max_len.max(512) || ancount == 1,
            "message of {} octets",
            m.len()
        );
        n += 1;
        let m = check_response(m, req.id, client.as_mut(), now()).unwrap();
        if rx.feed(&m).unwrap() {
            assert!(r.next_message(seq.as_deref_mut(), now()).unwrap().is_none());
            break;
        }
    }
    if let Some(c) = client {
        c.done().unwrap();
    }
    (rx.finish(), n)
}

#[test]
fn serial_arithmetic_follows_rfc1982() {
    assert_eq!(serial_cmp(1, 1), Some(Ordering::Equal));
    assert_eq!(serial_cmp(1, 2), Some(Ordering::Less));
    assert_eq!(serial_cmp(2, 1), Some(Ordering::Greater));
    // wrap-around: 0 is newer than 4294967295
    assert!(serial_gt(0, u32::MAX));
    assert!(serial_gt(5, u32::MAX - 5));
    assert!(!serial_gt(u32::MAX - 5, 5));
    assert_eq!(serial_cmp(0, 1 << 31), None);
    assert_eq!(serial_cmp(1, (1 << 31) + 2), Some(Ordering::Greater));
    assert_eq!(serial_cmp(1, 1 << 31), Some(Ordering::Less));
}

#[test]
fn diff_then_apply_gives_the_new_version() {
    let (a, b) = (zone(V1), zone(&v2()));
    let d = diff(&a, &b).unwrap();
    assert_eq!((d.from_serial(), d.to_serial()), (1, 2));
    // www A changed, mx1 TTL changed: 2 removed; those 2 back + TXT added
    assert_eq!(d.removed.len(), 2, "{:?}", d.removed);
    assert_eq!(d.added.len(), 3, "{:?}", d.added);
    let c = apply(&a, std::slice::from_ref(&d)).unwrap();
    assert_eq!(content(&c), content(&b));
    assert_eq!(c.serial, 2);
    // nothing changed but the serial: an empty difference
    let e = diff(&b, &b).unwrap();
    assert!(e.is_empty());
    // the same difference does not apply twice
    let err = apply(&c, &[d]).unwrap_err();
    assert!(matches!(err, XfrError::Ixfr(_)), "{err}");
}

#[test]
fn apply_refuses_deleting_what_is_not_there() {
    let (a, b) = (zone(V1), zone(&v2()));
    let mut d = diff(&a, &b).unwrap();
    d.removed.push(Rr {
        owner: b"\x05ghost\x07example\x03com\x00"[..].into(),
        rtype: 1,
        ttl: 60,
        rdata: vec![192, 0, 2, 7].into(),
    });
    let e = apply(&a, &[d]).unwrap_err();
    assert!(e.to_string().contains("ghost.example.com."), "{e}");
}

#[test]
fn journal_keeps_a_bounded_contiguous_chain() {
    let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
    let d1 = Arc::new(diff(&a, &b).unwrap());
    let d2 = Arc::new(diff(&b, &c).unwrap());
    let mut j = Journal::new(8, 1000);
    assert!(j.push(d1.clone()));
    assert!(j.push(d2.clone()));
    assert_eq!(j.chain(1, 3).unwrap().len(), 2);
    assert_eq!(j.chain(2, 3).unwrap().len(), 1);
    assert!(j.chain(2, 4).is_none());
    assert!(j.chain(0, 3).is_none());
    assert_eq!(j.oldest_serial(), Some(1));
    // a gap restarts the chain
    let mut gap = (*d2).clone();
    gap.old_soa = with_serial(&gap.old_soa, 7);
    gap.new_soa = with_serial(&gap.new_soa, 8);
    let mut j2 = j.clone();
    j2.push(Arc::new(gap));
    assert_eq!(j2.len(), 1);
    // count bound: the oldest goes
    let mut j3 = Journal::new(1, 1000);
    j3.push(d1.clone());
    j3.push(d2.clone());
    assert_eq!(j3.oldest_serial(), Some(2));
    // record bound: a difference larger than the budget empties it
    let mut j4 = Journal::new(8, d1.records() + 1);
    assert!(j4.push(d1.clone()));
    j4.push(d2.clone());
    assert_eq!(j4.len(), 1);
    assert!(!j4.push(Arc::new(Diff {
        added: vec![d1.added[0].clone(); 100],
        ..(*d1).clone()
    })));
    assert!(j4.is_empty());
}

#[test]
fn axfr_round_trip_in_several_messages() {
    let a = zone(&big(40));
    let (q, _) = build_query::<Arc<Key>>(7, APEX, T_AXFR, None, None, now()).unwrap();
    assert!(is_transfer_request(&q));
    let (got, messages) = transfer(q, None, None, a.clone(), None, None, 512);
    assert!(messages > 1, "{messages}");
    match got.unwrap() {
        Received::Axfr(z) => {
            assert_eq!(content(&z), content(&a));
            assert_eq!(z.serial, 1);
        }
        other => panic!("{other:?}"),
    }
    let (q, _) = build_query::<Arc<Key>>(7, APEX, T_AXFR, None, None, now()).unwrap();
    let (got, messages) = transfer(q, None, None, a.clone(), None, None, MAX_MESSAGE);
    assert_eq!(messages, 1);
    assert!(matches!(got.unwrap(), Received::Axfr(_)));
}

#[test]
fn a_record_larger_than_the_limit_goes_alone() {
    let big = format!("{V1}big IN TXT \"{}\" \"{}\"\n", "x".repeat(250), "y".repeat(250));
    let a = zone(&big);
    let (q, _) = build_query::<Arc<Key>>(9, APEX, T_AXFR, None, None, now()).unwrap();
    let (got, _) = transfer(q, None, None, a.clone(), None, None, 512);
    match got.unwrap() {
        Received::Axfr(z) => assert_eq!(content(&z), content(&a)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ixfr_from_the_journal_applies_on_the_secondary() {
    let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
    let j = journal(&[&a, &b, &c]);
    let q = ixfr_query(11, &a);
    let m = Message::from_octets(q.clone()).unwrap();
    let req = parse_request(&m).unwrap();
    assert_eq!((req.qtype, req.client_serial), (T_IXFR, Some(1)));
    let (got, _) = transfer(q, None, None, c.clone(), Some(&j), Some(a.clone()), 512);
    match got.unwrap() {
        Received::Ixfr { zone, diffs } => {
            assert_eq!(diffs.len(), 2);
            assert_eq!(content(&zone), content(&c));
            assert_eq!(zone.serial, 3);
        }
        other => panic!("{other:?}"),
    }
    // from serial 2: one difference
    let q = ixfr_query(12, &b);
    let (got, _) = transfer(q, None, None, c.clone(), Some(&j), Some(b.clone()), MAX_MESSAGE);
    match got.unwrap() {
        Received::Ixfr { zone, diffs } => {
            assert_eq!(diffs.len(), 1);
            assert_eq!(content(&zone), content(&c));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ixfr_when_current_is_one_soa_and_without_journal_is_axfr() {
    let (a, c) = (zone(V1), zone(&v3()));
    let q = ixfr_query(13, &c);
    let (got, n) = transfer(q, None, None, c.clone(), None, Some(c.clone()), MAX_MESSAGE);
    assert_eq!(n, 1);
    assert!(matches!(got.unwrap(), Received::UpToDate(3)));
    // the journal cannot serve serial 1: the whole zone, AXFR-style
    let q = ixfr_query(14, &a);
    let (got, _) = transfer(q, None, None, c.clone(), Some(&Journal::new(4, 100)), Some(a), 512);
    match got.unwrap() {
        Received::Axfr(z) => assert_eq!(content(&z), content(&c)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ixfr_for_another_base_is_refused_by_the_receiver() {
    let (a, b, c) = (zone(V1), zone(&v2()), zone(&v3()));
    let j = journal(&[&a, &b, &c]);
    let q = ixfr_query(15, &a);
    // the secondary actually has version 2 (it asked with the wrong SOA)
    let msg = Message::from_octets(q).unwrap();
    let req = parse_request(&msg).unwrap();
    let p = plan(&req, c, Some(&j));
    let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
    let mut rx = Receiver::new(APEX, Some(b), true, 1000);
    let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
    let m = check_response::<Arc<Key>>(m, 15, None, now()).unwrap();
    let e = rx.feed(&m).unwrap_err();
    assert!(matches!(e, XfrError::Ixfr(_)), "{e}");
}

#[test]
fn tsig_signs_every_message_and_the_client_verifies_them() {
    let k = key(b"0123456789abcdef0123456789abcdef");
    let a = zone(V1);
    let (q, client) = build_query(21, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
    let (got, n) = transfer(q, client, Some(k.clone()), a.clone(), None, None, 512);
    assert!(n > 1);
    assert!(matches!(got.unwrap(), Received::Axfr(_)));

    // a wrong secret: NOTAUTH, TSIG error BADSIG
    let other = key(b"fedcba9876543210fedcba9876543210");
    let (q, _) = build_query(22, APEX, T_AXFR, None, Some(other), now()).unwrap();
    let mut msg = Message::from_octets(q).unwrap();
    match verify_request(&mut msg, &k, now()) {
        Signed::Invalid(out, why) => {
            assert_eq!(out[3] & 0x0f, 9, "{why}");
            assert_eq!(&out[out.len() - 4..out.len() - 2], &[0, 16]);
        }
        _ => panic!("a bad signature verified"),
    }
    // unsigned
    let (q, _) = build_query::<Arc<Key>>(23, APEX, T_AXFR, None, None, now()).unwrap();
    let mut msg = Message::from_octets(q).unwrap();
    assert!(matches!(verify_request(&mut msg, &k, now()), Signed::Unsigned));
    // an unsigned response to a signed request does not verify
    let (q, mut client) = build_query(24, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
    let msg = Message::from_octets(q).unwrap();
    let refused = reply::<_, Arc<Key>>(&msg, 5, false, None, None, now()).unwrap();
    let e = check_response(refused, 24, client.as_mut(), now()).unwrap_err();
    assert!(matches!(e, XfrError::Tsig(_)), "{e}");
}

#[test]
fn notify_round_trip_signed() {
    let k = key(b"0123456789abcdef0123456789abcdef");
    let a = zone(V1);
    let soa = zone_soa(&a).unwrap();
    let (n, client) = build_notify(31, APEX, Some(&soa), Some(k.clone()), now()).unwrap();
    let mut msg = Message::from_octets(n).unwrap();
    let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
        panic!("NOTIFY did not verify");
    };
    let req = parse_notify(&msg).unwrap();
    assert_eq!(req.apex[..], *APEX);
    assert_eq!(req.serial, Some(1));
    let resp = reply(&msg, 0, true, None, Some(&mut *seq), now()).unwrap();
    check_notify_response(resp, 31, client, now()).unwrap();
    // a query is not a NOTIFY
    let (q, _) = build_query::<Arc<Key>>(32, APEX, 6, None, None, now()).unwrap();
    assert!(parse_notify(&Message::from_octets(q).unwrap()).is_err());
}

#[test]
fn soa_query_answer_is_parsed() {
    let a = zone(V1);
    let soa = zone_soa(&a).unwrap();
    // an AXFR's first message carries the SOA like an SOA answer does
    let (q, _) = build_query::<Arc<Key>>(41, APEX, T_IXFR, Some(&soa), None, now()).unwrap();
    let msg = Message::from_octets(q).unwrap();
    let p = Plan::UpToDate(a.clone());
    let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
    let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
    let m = check_response::<Arc<Key>>(m, 41, None, now()).unwrap();
    assert_eq!(soa_answer(&m, APEX).unwrap().soa_serial(), Some(1));
    assert!(!is_transfer_request(m.as_slice()));
}

#[test]
fn signed_soa_query_gets_a_signed_answer() {
    let k = key(b"0123456789abcdef0123456789abcdef");
    let a = zone(V1);
    let (q, mut client) = build_query(61, APEX, T_SOA, None, Some(k.clone()), now()).unwrap();
    let mut msg = Message::from_octets(q).unwrap();
    let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
        panic!("SOA query did not verify");
    };
    let r = soa_response(&msg, &a, None, Some(&mut *seq), now()).unwrap();
    let m = check_response(r, 61, client.as_mut(), now()).unwrap();
    client.unwrap().done().unwrap();
    assert!(m.header().aa());
    assert_eq!(soa_answer(&m, APEX).unwrap().soa_serial(), Some(1));
}

#[test]
fn opt_goes_in_every_message_before_the_tsig() {
    let k = key(b"0123456789abcdef0123456789abcdef");
    let a = zone(&big(40));
    let (q, mut client) = build_query(71, APEX, T_AXFR, None, Some(k.clone()), now()).unwrap();
    let mut msg = Message::from_octets(q).unwrap();
    assert!(request_edns(&msg).is_none());
    let Signed::Valid(mut seq) = verify_request(&mut msg, &k, now()) else {
        panic!("did not verify");
    };
    let opt = OptReply {
        udp_size: 1232,
        dnssec_ok: true,
        options: vec![(3, b"pop1".to_vec())],
    };
    let p = Plan::Axfr(a);
    let mut r = Responder::new(&msg, &p, 512).unwrap().with_opt(Some(opt.clone()));
    let mut n = 0;
    while let Some(m) = r.next_message(Some(&mut *seq), now()).unwrap() {
        assert!(m.len() <= 512, "{}", m.len());
        let m = check_response(m, 71, client.as_mut(), now()).unwrap();
        let e = request_edns(&m).expect("OPT");
        assert_eq!(
            (e.udp_size, e.dnssec_ok, e.options.clone()),
            (1232, true, opt.options.clone())
        );
        n += 1;
    }
    assert!(n > 1);
    client.unwrap().done().unwrap();
    // and in a refusal
    let refused = reply::<_, Arc<Key>>(&msg, 5, false, Some(&opt), None, now()).unwrap();
    let m = Message::from_octets(refused).unwrap();
    assert_eq!(request_edns(&m).unwrap().udp_size, 1232);
}

#[test]
fn timers_are_clamped() {
    let a = zone(V1);
    let t = Timers::from_soa(&a.soa().unwrap().rdata[0].wire).unwrap();
    assert_eq!(t.refresh, Duration::from_secs(7200));
    assert_eq!(t.retry, Duration::from_secs(3600));
    assert_eq!(t.expire, Duration::from_secs(1209600));
    let tiny = zone(&V1.replace("1 7200 3600 1209600 300", "1 0 0 1 300"));
    let t = Timers::from_soa(&tiny.soa().unwrap().rdata[0].wire).unwrap();
    assert_eq!(t.refresh, MIN_REFRESH);
    assert_eq!(t.retry, MIN_RETRY);
    assert_eq!(t.expire, MIN_REFRESH + MIN_RETRY);
}

#[test]
fn refresh_retry_expire_in_simulated_time() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = Refresh::new(t0);
    assert_eq!(r.poll(t0), Some(Due::Check));
    // bootstrap: 1, 2, 4 ... seconds
    r.on_failure(t0);
    assert_eq!(r.next_check(t0), s(1));
    assert_eq!(r.poll(t0), None);
    r.on_failure(t0 + s(1));
    assert_eq!(r.next_check(t0 + s(1)), s(2));
    r.on_failure(t0 + s(3));
    assert_eq!(r.next_check(t0 + s(3)), s(4));
    // loaded: refresh 60, retry 10, expire 100
    let timers = Timers {
        refresh: s(60),
        retry: s(10),
        expire: s(100),
    };
    let t1 = t0 + s(10);
    r.on_success(t1, timers);
    assert_eq!(r.failures(), 0);
    assert_eq!(r.next_check(t1), s(60));
    assert_eq!(r.poll(t1 + s(59)), None);
    assert_eq!(r.poll(t1 + s(60)), Some(Due::Check));
    // the primaries are down: retry every 10 s
    let mut t = t1 + s(60);
    r.on_failure(t);
    assert_eq!(r.next_check(t), s(10));
    t += s(10);
    assert_eq!(r.poll(t), Some(Due::Check));
    r.on_failure(t);
    t += s(10);
    r.on_failure(t); // t1 + 80
                     // the expiry (t1 + 100) comes before the retry would
    r.timers = Some(Timers { retry: s(50), ..timers });
    r.on_failure(t + s(5));
    assert_eq!(r.next_check(t + s(5)), s(15));
    assert_eq!(r.poll(t1 + s(100)), Some(Due::Expire));
    assert!(r.is_expired());
    // reported once; checks continue at the retry interval
    assert_eq!(r.poll(t1 + s(100)), None);
    assert_eq!(r.poll(t1 + s(135)), Some(Due::Check));
    // a NOTIFY makes a check due at once
    r.on_failure(t1 + s(135));
    r.on_notify(t1 + s(140));
    assert_eq!(r.next_check(t1 + s(140)), Duration::ZERO);
    assert_eq!(r.poll(t1 + s(140)), Some(Due::Check));
    // a success revives the zone
    r.on_success(t1 + s(141), timers);
    assert!(!r.is_expired());
    assert_eq!(r.next_check(t1 + s(141)), s(60));
}

#[test]
fn transfer_stream_errors() {
    let a = zone(&big(40));
    // REFUSED
    let (q, _) = build_query::<Arc<Key>>(51, APEX, T_AXFR, None, None, now()).unwrap();
    let msg = Message::from_octets(q).unwrap();
    let refused = reply::<_, Arc<Key>>(&msg, 5, false, None, None, now()).unwrap();
    let m = check_response::<Arc<Key>>(refused, 51, None, now()).unwrap();
    let mut rx = Receiver::new(APEX, None, false, 1000);
    assert_eq!(rx.feed(&m).unwrap_err(), XfrError::Rcode(5));
    assert_eq!(XfrError::Rcode(5).to_string(), "answered REFUSED");
    // wrong ID
    let p = Plan::Axfr(a.clone());
    let mut r = Responder::new(&msg, &p, MAX_MESSAGE).unwrap();
    let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
    assert!(check_response::<Arc<Key>>(m.clone(), 52, None, now()).is_err());
    // the record limit
    let m = check_response::<Arc<Key>>(m, 51, None, now()).unwrap();
    let mut rx = Receiver::new(APEX, None, false, 3);
    assert_eq!(rx.feed(&m).unwrap_err(), XfrError::TooLarge(3));
    // a stream cut short
    let mut r = Responder::new(&msg, &p, 512).unwrap();
    let m = r.next_message::<Arc<Key>>(None, now()).unwrap().unwrap();
    let m = check_response::<Arc<Key>>(m, 51, None, now()).unwrap();
    let mut rx = Receiver::new(APEX, None, false, 1000);
    assert!(!rx.feed(&m).unwrap());
    assert!(matches!(rx.finish(), Err(XfrError::Protocol(_))));
}
