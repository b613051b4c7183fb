//! Comparisons, zone indexes and probes, queries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use bytes::Bytes;
use domain::base::iana::{OptRcode, OptionCode, Rcode, Rtype};
use domain::base::message_builder::{AdditionalBuilder, StaticCompressor};
use domain::base::name::Name;
use domain::base::{Message, MessageBuilder, Ttl};
use domain::rdata::{AllRecordData, Mx, Rrsig, Txt, A};

use super::*;

fn name(s: &str) -> Name<Bytes> {
    Name::from_str(s).unwrap()
}

type Rec = (Name<Bytes>, u32, AllRecordData<Bytes, Name<Bytes>>);

fn a(owner: &str, ttl: u32, ip: &str) -> Rec {
    (name(owner), ttl, AllRecordData::A(A::from_str(ip).unwrap()))
}

fn mx(owner: &str, ttl: u32, pref: u16, exch: &str) -> Rec {
    (name(owner), ttl, AllRecordData::Mx(Mx::new(pref, name(exch))))
}

/// (udp size, ext rcode, DO, options)
type OptSpec = (u16, u8, bool, Vec<(u16, Vec<u8>)>);

/// What a response is made of.
struct Resp {
    qname: &'static str,
    qtype: Rtype,
    rcode: Rcode,
    aa: bool,
    tc: bool,
    answer: Vec<Rec>,
    authority: Vec<Rec>,
    additional: Vec<Rec>,
    opt: Option<OptSpec>,
    compress: bool,
}

impl Default for Resp {
    fn default() -> Self {
        Resp {
            qname: "www.example.com.",
            qtype: Rtype::A,
            rcode: Rcode::NOERROR,
            aa: true,
            tc: false,
            answer: vec![a("www.example.com.", 300, "192.0.2.1")],
            authority: vec![],
            additional: vec![],
            opt: None,
            compress: false,
        }
    }
}

fn finish<T: domain::base::wire::Composer>(mut b: AdditionalBuilder<T>, r: &Resp) -> T {
    for rec in &r.additional {
        b.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
    }
    if let Some((udp, ext, dnssec_ok, ref opts)) = r.opt {
        b.opt(|o| {
            o.set_udp_payload_size(udp);
            o.set_dnssec_ok(dnssec_ok);
            o.set_rcode(OptRcode::from_parts(r.rcode, ext));
            for (code, data) in opts {
                o.push_raw_option(OptionCode::from_int(*code), data.len() as u16, |t| t.append_slice(data))?;
            }
            Ok(())
        })
        .unwrap();
    }
    b.finish()
}

fn build_with<T: domain::base::wire::Composer>(mut b: MessageBuilder<T>, r: &Resp) -> T {
    let h = b.header_mut();
    h.set_id(0x1234);
    h.set_qr(true);
    h.set_aa(r.aa);
    h.set_tc(r.tc);
    h.set_rcode(r.rcode);
    let mut q = b.question();
    q.push((name(r.qname), r.qtype)).unwrap();
    let mut an = q.answer();
    for rec in &r.answer {
        an.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
    }
    let mut ns = an.authority();
    for rec in &r.authority {
        ns.push((&rec.0, Ttl::from_secs(rec.1), &rec.2)).unwrap();
    }
    finish(ns.additional(), r)
}

fn build(r: &Resp) -> Vec<u8> {
    if r.compress {
        build_with(
            MessageBuilder::from_target(StaticCompressor::new(Vec::new())).unwrap(),
            r,
        )
        .into_target()
    } else {
        build_with(MessageBuilder::new_vec(), r)
    }
}

fn diff(a: &Resp, b: &Resp) -> Vec<Difference> {
    compare(&build(a), &build(b))
}

#[test]
fn identical_messages_have_no_difference() {
    let r = Resp::default();
    assert_eq!(diff(&r, &r), vec![]);
}

#[test]
fn order_case_compression_and_id_do_not_matter() {
    let left = Resp {
        qtype: Rtype::MX,
        answer: vec![
            mx("www.example.com.", 300, 10, "mail.example.com."),
            mx("www.example.com.", 300, 20, "backup.example.com."),
        ],
        additional: vec![
            a("mail.example.com.", 300, "192.0.2.25"),
            a("backup.example.com.", 300, "192.0.2.26"),
        ],
        ..Default::default()
    };
    let right = Resp {
        qtype: Rtype::MX,
        answer: vec![
            mx("WWW.Example.COM.", 300, 20, "BACKUP.example.com."),
            mx("www.example.com.", 300, 10, "mail.EXAMPLE.com."),
        ],
        additional: vec![
            a("backup.example.com.", 300, "192.0.2.26"),
            a("Mail.Example.Com.", 300, "192.0.2.25"),
        ],
        compress: true,
        ..Default::default()
    };
    let (l, mut r) = (build(&left), build(&right));
    assert_ne!(l.len(), r.len(), "one side compressed");
    r[0] = 0x99; // another ID
    assert_eq!(compare(&l, &r), vec![]);
}

#[test]
fn rrset_differences_are_reported_per_rrset() {
    let left = Resp {
        answer: vec![
            a("www.example.com.", 300, "192.0.2.1"),
            a("www.example.com.", 300, "192.0.2.2"),
        ],
        ..Default::default()
    };
    let right = Resp {
        answer: vec![a("www.example.com.", 300, "192.0.2.1")],
        authority: vec![(
            name("example.com."),
            300,
            AllRecordData::Txt(Txt::build_from_slice(b"hi").unwrap()),
        )],
        ..Default::default()
    };
    let d = diff(&left, &right);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(d[0].part, Part::Answer);
    assert_eq!(d[0].item, "www.example.com. IN A");
    assert_eq!(d[0].left, "300 192.0.2.1 ; 300 192.0.2.2");
    assert_eq!(d[0].right, "300 192.0.2.1");
    assert_eq!(d[1].part, Part::Authority);
    assert_eq!(d[1].item, "example.com. IN TXT");
    assert_eq!(d[1].left, "-");
    assert_eq!(d[1].right, "300 \"hi\"");
    // Same data, other section: still a difference.
    let moved = Resp {
        answer: vec![],
        additional: vec![a("www.example.com.", 300, "192.0.2.1")],
        ..Default::default()
    };
    let d = diff(&Resp::default(), &moved);
    assert_eq!(
        d.iter().map(|x| x.part).collect::<Vec<_>>(),
        vec![Part::Answer, Part::Additional]
    );
}

#[test]
fn duplicates_count() {
    let left = Resp {
        answer: vec![
            a("www.example.com.", 300, "192.0.2.1"),
            a("www.example.com.", 300, "192.0.2.1"),
        ],
        ..Default::default()
    };
    let d = diff(&left, &Resp::default());
    assert_eq!(d.len(), 1, "{d:#?}");
}

#[test]
fn ttl_differences_are_separate() {
    let right = Resp {
        answer: vec![a("www.example.com.", 3600, "192.0.2.1")],
        ..Default::default()
    };
    let d = diff(&Resp::default(), &right);
    assert_eq!(
        d,
        vec![Difference::new(
            Part::Answer,
            "www.example.com. IN A TTL",
            "300",
            "3600"
        )]
    );
    let opts = Options {
        ttl: false,
        ..Default::default()
    };
    assert_eq!(compare_with(&build(&Resp::default()), &build(&right), &opts), vec![]);
}

#[test]
fn rrsigs_group_by_covered_type() {
    let sig = |covered: Rtype| -> Rec {
        (
            name("www.example.com."),
            300,
            AllRecordData::Rrsig(
                Rrsig::new(
                    covered,
                    domain::base::iana::SecurityAlgorithm::ECDSAP256SHA256,
                    3,
                    Ttl::from_secs(300),
                    1.into(),
                    0.into(),
                    1234,
                    name("Example.COM."),
                    Bytes::from_static(b"sig"),
                )
                .unwrap(),
            ),
        )
    };
    let left = Resp {
        answer: vec![a("www.example.com.", 300, "192.0.2.1"), sig(Rtype::A)],
        ..Default::default()
    };
    let right = Resp {
        answer: vec![a("www.example.com.", 300, "192.0.2.1"), sig(Rtype::AAAA)],
        ..Default::default()
    };
    let d = diff(&left, &right);
    let items: Vec<_> = d.iter().map(|x| x.item.as_str()).collect();
    assert_eq!(
        items,
        vec![
            "www.example.com. IN RRSIG covering A",
            "www.example.com. IN RRSIG covering AAAA"
        ]
    );
    // The signer name's case does not matter (canonical form).
    assert_eq!(diff(&left, &left), vec![]);
}

#[test]
fn header_rcode_and_flags() {
    let right = Resp {
        aa: false,
        rcode: Rcode::NXDOMAIN,
        answer: vec![],
        ..Default::default()
    };
    let d = diff(&Resp::default(), &right);
    assert_eq!(d[0], Difference::new(Part::Rcode, "", "NOERROR", "NXDOMAIN"));
    assert_eq!(d[1], Difference::new(Part::Flag, "AA", "1", "0"));
    assert_eq!(d[2].part, Part::Answer);
    assert_eq!(d.len(), 3);
    assert!(d[1].to_string().contains("flag AA: 1 <> 0"));
    assert!(d[1].labelled("knot", "ours").contains("  ours  0"));
}

#[test]
fn extended_rcode_is_part_of_the_rcode() {
    let left = Resp {
        answer: vec![],
        opt: Some((1232, 1, false, vec![])), // BADVERS = 16
        ..Default::default()
    };
    let right = Resp {
        answer: vec![],
        opt: Some((1232, 0, false, vec![])),
        ..Default::default()
    };
    let d = diff(&left, &right);
    assert_eq!(d, vec![Difference::new(Part::Rcode, "", "BADVERS", "NOERROR")]);
}

#[test]
fn question_is_compared_with_case() {
    let right = Resp {
        qname: "WWW.example.com.",
        ..Default::default()
    };
    let d = diff(&Resp::default(), &right);
    assert_eq!(
        d,
        vec![Difference::new(
            Part::Question,
            "",
            "www.example.com. IN A",
            "WWW.example.com. IN A"
        )]
    );
}

#[test]
fn edns_fields_and_options() {
    let base = |opts: Vec<(u16, Vec<u8>)>| Resp {
        opt: Some((1232, 0, true, opts)),
        ..Default::default()
    };
    // Absent vs present.
    let d = diff(&Resp::default(), &base(vec![]));
    assert_eq!(d, vec![Difference::new(Part::Edns, "OPT count", "0", "1")]);
    // UDP size and DO.
    let other = Resp {
        opt: Some((4096, 0, false, vec![])),
        ..Default::default()
    };
    let d = diff(&base(vec![]), &other);
    assert_eq!(
        d,
        vec![
            Difference::new(Part::Edns, "udp-size", "1232", "4096"),
            Difference::new(Part::Edns, "DO", "1", "0"),
        ]
    );
    // NSID: presence only.
    let d = diff(&base(vec![(3, b"pop1".to_vec())]), &base(vec![(3, b"knot-a".to_vec())]));
    assert_eq!(d, vec![]);
    let d = diff(&base(vec![(3, b"pop1".to_vec())]), &base(vec![]));
    assert_eq!(d, vec![Difference::new(Part::Edns, "NSID", "present", "-")]);
    // COOKIE: the client half must match, the server half is free.
    let c1 = [vec![1u8; 8], vec![2u8; 16]].concat();
    let c2 = [vec![1u8; 8], vec![3u8; 16]].concat();
    let c3 = [vec![4u8; 8], vec![3u8; 16]].concat();
    assert_eq!(diff(&base(vec![(10, c1.clone())]), &base(vec![(10, c2)])), vec![]);
    let d = diff(&base(vec![(10, c1)]), &base(vec![(10, c3)]));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].item, "COOKIE");
    assert_eq!(d[0].left, "client 0101010101010101");
    // EDE: the info code counts, the text does not.
    let e = |code: u16, text: &str| [code.to_be_bytes().to_vec(), text.as_bytes().to_vec()].concat();
    assert_eq!(
        diff(&base(vec![(15, e(22, "a"))]), &base(vec![(15, e(22, "b"))])),
        vec![]
    );
    let d = diff(&base(vec![(15, e(22, ""))]), &base(vec![(15, e(20, ""))]));
    assert_eq!(
        d,
        vec![Difference::new(Part::Edns, "EDE", "info-code 22", "info-code 20")]
    );
    // Anything else: exact content.
    let d = diff(&base(vec![(65001, vec![1, 2])]), &base(vec![(65001, vec![1, 3])]));
    assert_eq!(d, vec![Difference::new(Part::Edns, "option 65001", "0102", "0103")]);
}

#[test]
fn truncated_sections_are_skipped_by_default() {
    let left = Resp {
        tc: true,
        answer: vec![],
        ..Default::default()
    };
    let right = Resp {
        tc: true,
        ..Default::default()
    };
    assert_eq!(diff(&left, &right), vec![]);
    let opts = Options {
        truncated_sections: true,
        ..Default::default()
    };
    assert_eq!(compare_with(&build(&left), &build(&right), &opts).len(), 1);
    // One side truncated: the flag says it.
    let d = diff(&left, &Resp::default());
    assert_eq!(d, vec![Difference::new(Part::Flag, "TC", "1", "0")]);
}

#[test]
fn malformed_messages() {
    let good = build(&Resp::default());
    let d = compare(&good[..5], &good);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].part, Part::Message);
    assert!(d[0].left.starts_with("malformed"), "{d:?}");
    // Counts promise more than there is.
    let mut bad = good.clone();
    bad[7] = 2;
    let d = compare(&good, &bad);
    assert_eq!(d[0].part, Part::Message, "{d:?}");
    assert_eq!(compare(&bad, &bad), vec![]);
}

#[test]
fn rdata_that_does_not_parse_is_compared_raw() {
    // An A record with 3 octets of RDATA.
    let mut m = build(&Resp::default());
    let n = m.len();
    m[n - 6] = 0;
    m[n - 5] = 3;
    m.pop();
    let d = compare(&m, &m);
    assert_eq!(d, vec![]);
    let d = compare(&m, &build(&Resp::default()));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].left.contains("malformed as A"), "{d:?}");
}

const ZONE: &str = r#"
$TTL 300
@        IN SOA ns1 hostmaster 1 7200 3600 1209600 300
         NS    ns1
ns1      A     192.0.2.53
www      A     192.0.2.1
         AAAA  2001:db8::1
*.wild   TXT   "wild"
a.b.c    A     192.0.2.2
sub      NS    ns.sub
ns.sub   A     192.0.2.54
old      DNAME new.example.net.
Mixed.Case A   192.0.2.3
other.example.net. A 192.0.2.9
"#;

fn zone() -> ZoneIndex {
    ZoneIndex::from_zonefile(ZONE.as_bytes(), &name("example.com.")).unwrap()
}

#[test]
fn zone_index_names_types_and_empty_non_terminals() {
    let z = zone();
    let names: BTreeMap<String, Vec<String>> = z
        .names()
        .map(|(n, t)| (n.to_string(), t.iter().map(|t| t.to_string()).collect()))
        .collect();
    assert_eq!(names["example.com"], vec!["NS", "SOA"]);
    assert_eq!(names["www.example.com"], vec!["A", "AAAA"]);
    assert_eq!(names["b.c.example.com"], Vec::<String>::new(), "empty non-terminal");
    assert_eq!(names["c.example.com"], Vec::<String>::new(), "empty non-terminal");
    assert_eq!(names["wild.example.com"], Vec::<String>::new());
    assert_eq!(names["mixed.case.example.com"], vec!["A"], "lowercased");
    assert!(!names.contains_key("other.example.net"), "out of zone");
    assert_eq!(z.apex().to_string(), "example.com");
}

#[test]
fn zone_errors() {
    let e = ZoneIndex::from_zonefile(b"www A 192.0.2.1\n", &name("example.com.")).unwrap_err();
    assert!(matches!(e, ZoneError::NoSoa(_)), "{e}");
    let e = ZoneIndex::from_zonefile(b"www A 192.0.2.300\n", &name("example.com.")).unwrap_err();
    assert!(matches!(e, ZoneError::Parse(_)), "{e}");
    let e = ZoneIndex::from_zonefile(b"$INCLUDE other.zone\n", &name("example.com.")).unwrap_err();
    assert!(matches!(e, ZoneError::Include(_)), "{e}");
}

#[test]
fn questions_cover_names_types_and_negative_probes() {
    let z = zone();
    let qs = z.questions(7);
    assert_eq!(qs, z.questions(7), "deterministic");
    assert_ne!(qs, z.questions(8), "seeded");
    let text: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
    let has = |s: &str| text.iter().any(|t| t == s);
    for t in PROBE_TYPES {
        assert!(has(&format!("www.example.com. IN {t}")), "{t}");
        assert!(has(&format!("b.c.example.com. IN {t}")), "{t}");
    }
    assert!(has("sub.example.com. IN DS"));
    assert!(has("www.old.example.com. IN A"));
    assert!(has("com. IN SOA"), "out of zone");
    let lower: Vec<String> = text.iter().map(|t| t.to_ascii_lowercase()).collect();
    let count = |pred: &dyn Fn(&str) -> bool| lower.iter().filter(|t| pred(t)).count();
    // Wildcard matches at one and two labels, with the wildcard's type.
    assert!(count(&|t| t.ends_with(".wild.example.com. in txt") && !t.starts_with("*")) >= 2);
    // Names below the delegation.
    assert!(count(&|t| t.ends_with(".sub.example.com. in ds") && !t.starts_with("ns.")) >= 1);
    // The 255-octet name under the DNAME.
    assert!(qs
        .iter()
        .any(|q| q.qname.as_slice().len() == 255 && q.qname.ends_with(&name("old.example.com."))));
    // Mixed case: every question has a copy differing only in case
    // (names without letters excepted).
    let exact: HashSet<&String> = text.iter().collect();
    let mixed = qs
        .iter()
        .filter(|q| q.qname.as_slice().to_ascii_lowercase() != q.qname.as_slice())
        .count();
    assert_eq!(mixed * 2, text.len());
    assert!(exact.len() == text.len(), "no exact duplicates");
}

#[test]
fn questions_for_names_near_the_length_limit() {
    let l63 = "a".repeat(63);
    let long = format!("{l63}.{l63}.{l63}.{}", "b".repeat(40)); // 246 octets with example.com
    let zone = format!("@ SOA ns h 1 2 3 4 5\n@ NS ns\n{long} A 192.0.2.1\n{long} DNAME x.\n");
    let z = ZoneIndex::from_zonefile(zone.as_bytes(), &name("example.com.")).unwrap();
    let qs = z.questions(1);
    assert!(qs.iter().all(|q| q.qname.as_slice().len() <= 255));
    assert!(qs.iter().any(|q| q.qname.as_slice().len() > 246));
}

#[test]
fn queries_round_trip() {
    let q = Question::new(name("wWw.example.com."), Rtype::AAAA);
    let opts = QueryOptions {
        rd: true,
        cd: false,
        edns: Some(EdnsQuery {
            udp_size: 4096,
            dnssec_ok: true,
            version: 0,
            nsid: true,
            cookie: Some([9; 8]),
        }),
    };
    let wire = build_query(77, &q, &opts).unwrap();
    let msg = Message::from_octets(wire.as_slice()).unwrap();
    assert_eq!(msg.header().id(), 77);
    assert!(msg.header().rd());
    let qq = msg.first_question().unwrap();
    assert_eq!(qq.qname().to_string(), "wWw.example.com");
    assert_eq!(qq.qtype(), Rtype::AAAA);
    let opt = msg.opt().unwrap();
    assert_eq!(opt.udp_payload_size(), 4096);
    assert!(opt.dnssec_ok());
    let codes: Vec<u16> = opt
        .opt()
        .iter::<domain::base::opt::AllOptData<_, _>>()
        .map(|o| domain::base::opt::OptData::code(&o.unwrap()).to_int())
        .collect();
    assert_eq!(codes, vec![3, 10]);
    let plain = build_query(1, &q, &QueryOptions::default()).unwrap();
    assert!(Message::from_octets(plain.as_slice()).unwrap().opt().is_none());
    // A query compared with itself: fine.
    assert_eq!(compare(&wire, &wire), vec![]);
}

#[test]
fn axfr_messages_fill_an_index() {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_qr(true);
    let mut q = b.question();
    q.push((name("example.com."), Rtype::AXFR)).unwrap();
    let mut an = q.answer();
    let soa = domain::rdata::Soa::new(
        name("ns1.example.com."),
        name("h.example.com."),
        1.into(),
        Ttl::from_secs(1),
        Ttl::from_secs(1),
        Ttl::from_secs(1),
        Ttl::from_secs(1),
    );
    an.push((name("example.com."), 300, soa.clone())).unwrap();
    an.push((name("x.y.example.com."), 300, A::from_str("192.0.2.1").unwrap()))
        .unwrap();
    an.push((name("example.com."), 300, soa)).unwrap();
    let m = an.finish();
    let mut idx = ZoneIndex::new(&name("example.com."));
    assert_eq!(add_axfr_message(&mut idx, &m).unwrap(), 2);
    assert!(idx.check().is_ok());
    assert_eq!(idx.names().count(), 3);
    assert!(axfr_query(1, &name("example.com.")).is_ok());
}
