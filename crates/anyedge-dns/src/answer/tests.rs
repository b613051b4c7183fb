//! Answering scenarios; responses are parsed back with `domain` (so what we
//! write is a well-formed message) and compared as presentation text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

use super::*;
use crate::zone::load_str;

pub const ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@       SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
        NS  ns1
        NS  ns2.example.net.
        MX  10 mail
ns1     A   192.0.2.1
mail    A   192.0.2.25
        AAAA 2001:db8::25
www     A   192.0.2.10
        AAAA 2001:db8::10
        TXT "hello world" "second"
alias   CNAME www
chain1  CNAME chain2
chain2  CNAME alias
out     CNAME www.example.net.
dangling CNAME nothere
loop1   CNAME loop2
loop2   CNAME loop1
*.wild  A   192.0.2.99
*.wild  TXT "wild"
*.cw    CNAME www
x.y.ent A 192.0.2.7
sub     NS  ns.sub
sub     NS  ns.elsewhere.net.
sub     DS  12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub  A   192.0.2.53
_sip._tcp SRV 0 5 5060 mail
dn      DNAME example.org.
indn    DNAME www.example.com.
"#;

fn zones() -> ZoneSet {
    let mut s = ZoneSet::new();
    s.insert(Arc::new(load_str(ZONE, "example.com.").unwrap()));
    s
}

fn name_wire(n: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in n.trim_end_matches('.').split('.') {
        if l.is_empty() {
            continue;
        }
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

pub struct Q {
    pub name: String,
    pub qtype: u16,
    pub edns: Option<u16>,
    pub dnssec_ok: bool,
    pub options: Vec<(u16, Vec<u8>)>,
}

pub fn query(name: &str, qtype: u16) -> Q {
    Q {
        name: name.into(),
        qtype,
        edns: None,
        dnssec_ok: false,
        options: vec![],
    }
}

impl Q {
    pub fn edns(mut self, size: u16) -> Q {
        self.edns = Some(size);
        self
    }
    pub fn opt(mut self, code: u16, data: &[u8]) -> Q {
        self.options.push((code, data.to_vec()));
        if self.edns.is_none() {
            self.edns = Some(1232);
        }
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(self.edns.is_some()),
        ];
        p.extend_from_slice(&name_wire(&self.name));
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        if let Some(size) = self.edns {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&(if self.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
            let opts: Vec<u8> = self
                .options
                .iter()
                .flat_map(|(c, d)| [&c.to_be_bytes()[..], &(d.len() as u16).to_be_bytes()[..], d].concat())
                .collect();
            p.extend_from_slice(&(opts.len() as u16).to_be_bytes());
            p.extend_from_slice(&opts);
        }
        p
    }
}

fn cx(tcp: bool) -> Context {
    Context {
        src: "198.51.100.7".parse().unwrap(),
        tcp,
        now: 1_700_000_000,
    }
}

pub struct R {
    pub rcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub raw: Vec<u8>,
}

pub fn section(msg: &Message<&[u8]>, which: usize) -> Vec<String> {
    let sec = match which {
        0 => msg.answer().unwrap(),
        1 => msg.authority().unwrap(),
        _ => msg.additional().unwrap(),
    };
    let mut v: Vec<String> = sec
        .limit_to::<AllRecordData<_, ParsedName<_>>>()
        .map(|r| {
            let r = r.expect("record parses");
            format!("{}. {} {} {}", r.owner(), r.ttl().as_secs(), r.rtype(), r.data()).to_lowercase()
        })
        .collect();
    v.sort();
    v
}

fn ask_with(z: &ZoneSet, st: &Settings, q: &Q, tcp: bool) -> R {
    let mut out = Vec::new();
    answer(z, st, &q.bytes(), &cx(tcp), &mut out);
    decode(out)
}

pub fn decode(out: Vec<u8>) -> R {
    let msg = Message::from_octets(&out[..]).expect("response parses");
    let h = msg.header();
    R {
        rcode: h.rcode().to_int(),
        aa: h.aa(),
        tc: h.tc(),
        answer: section(&msg, 0),
        authority: section(&msg, 1),
        additional: section(&msg, 2),
        raw: out.clone(),
    }
}

fn ask(q: &Q) -> R {
    ask_with(&zones(), &Settings::default(), q, false)
}

const SOA_NEG: &str = "example.com. 300 soa ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300";

#[test]
fn exact_match_positive() {
    let r = ask(&query("www.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert!(r.aa);
    assert_eq!(r.answer, vec!["www.example.com. 3600 a 192.0.2.10"]);
    assert!(r.authority.is_empty());
    // the owner points at the question (compression)
    assert_eq!(&r.raw[12 + 17 + 4..12 + 17 + 6], &[0xc0, 0x0c]);
}

#[test]
fn case_of_the_question_is_preserved() {
    let r = ask(&query("WwW.ExAmPlE.cOm", T_A));
    assert_eq!(&r.raw[12..29], b"\x03WwW\x07ExAmPlE\x03cOm\x00");
    assert_eq!(r.answer.len(), 1);
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let r = ask(&query("nope.example.com", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
    assert!(r.aa);
    assert_eq!(r.authority, vec![SOA_NEG]);
    let r = ask(&query("www.example.com", T_MX));
    assert_eq!(r.rcode, 0);
    assert!(r.answer.is_empty());
    assert_eq!(r.authority, vec![SOA_NEG]);
}

#[test]
fn empty_non_terminal_is_nodata_not_nxdomain() {
    let r = ask(&query("y.ent.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert_eq!(r.authority, vec![SOA_NEG]);
    let r = ask(&query("ent.example.com", T_A));
    assert_eq!(r.rcode, 0);
}

#[test]
fn cname_chain_is_followed_in_zone() {
    let r = ask(&query("chain1.example.com", T_A));
    assert_eq!(
        r.answer,
        vec![
            "alias.example.com. 3600 cname www.example.com.",
            "chain1.example.com. 3600 cname chain2.example.com.",
            "chain2.example.com. 3600 cname alias.example.com.",
            "www.example.com. 3600 a 192.0.2.10",
        ]
    );
    // leaving the zone: stop, NOERROR
    let r = ask(&query("out.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert_eq!(r.answer, vec!["out.example.com. 3600 cname www.example.net."]);
    // to a name that does not exist: NXDOMAIN (RFC 6604)
    let r = ask(&query("dangling.example.com", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.authority, vec![SOA_NEG]);
    // CNAME asked for itself
    let r = ask(&query("alias.example.com", T_CNAME));
    assert_eq!(r.answer, vec!["alias.example.com. 3600 cname www.example.com."]);
}

#[test]
fn cname_loop_terminates_listing_each_cname_once() {
    let r = ask(&query("loop1.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert_eq!(
        r.answer,
        vec![
            "loop1.example.com. 3600 cname loop2.example.com.",
            "loop2.example.com. 3600 cname loop1.example.com."
        ]
    );
}

#[test]
fn any_at_a_cname_is_the_cname_and_cname_below_dname_stops() {
    let r = ask(&query("alias.example.com", T_ANY));
    assert_eq!(r.answer, vec!["alias.example.com. 3600 cname www.example.com."]);
    let r = ask(&query("x.indn.example.com", T_CNAME));
    assert_eq!(r.rcode, 0);
    assert_eq!(r.answer.len(), 2, "DNAME + synthesized CNAME: {:?}", r.answer);
    assert!(r.authority.is_empty());
}

#[test]
fn wildcards_synthesize_with_the_query_name() {
    let r = ask(&query("anything.wild.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert!(r.aa);
    assert_eq!(r.answer, vec!["anything.wild.example.com. 3600 a 192.0.2.99"]);
    let r = ask(&query("a.b.wild.example.com", T_TXT));
    assert_eq!(r.answer, vec!["a.b.wild.example.com. 3600 txt \"wild\""]);
    // wildcard node exists, type missing: NODATA
    let r = ask(&query("z.wild.example.com", T_MX));
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
    assert_eq!(r.authority, vec![SOA_NEG]);
    // wildcard CNAME
    let r = ask(&query("q.cw.example.com", T_A));
    assert_eq!(
        r.answer,
        vec![
            "q.cw.example.com. 3600 cname www.example.com.",
            "www.example.com. 3600 a 192.0.2.10"
        ]
    );
    // the wildcard does not cover names that exist (the ENT "ent" blocks *.example.com anyway)
    let r = ask(&query("nope.y.ent.example.com", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
}

const T_TXT: u16 = 16;

#[test]
fn delegation_gives_a_referral_with_glue() {
    let r = ask(&query("host.sub.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert!(!r.aa);
    assert!(r.answer.is_empty());
    assert_eq!(r.authority.len(), 2, "{:?}", r.authority); // 2 NS (DS only for DO in signed zones)
    assert!(r
        .authority
        .iter()
        .any(|a| a == "sub.example.com. 3600 ns ns.sub.example.com."));
    assert_eq!(r.additional, vec!["ns.sub.example.com. 3600 a 192.0.2.53"]);
    // DS at the delegation point is answered by the parent, authoritatively
    let r = ask(&query("sub.example.com", T_DS));
    assert!(r.aa);
    assert_eq!(r.answer.len(), 1);
}

#[test]
fn dname_substitutes_and_synthesizes_a_cname() {
    let r = ask(&query("a.b.dn.example.com", T_A));
    assert_eq!(r.rcode, 0);
    assert_eq!(
        r.answer,
        vec![
            "a.b.dn.example.com. 3600 cname a.b.example.org.",
            "dn.example.com. 3600 dname example.org.",
        ]
    );
    // DNAME into the zone is followed
    let r = ask(&query("x.indn.example.com", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
    // the DNAME owner itself is ordinary data
    let r = ask(&query("dn.example.com", T_A));
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
}

#[test]
fn additional_section_for_mx_srv_ns() {
    let r = ask(&query("example.com", T_MX));
    assert_eq!(
        r.additional,
        vec![
            "mail.example.com. 3600 a 192.0.2.25",
            "mail.example.com. 3600 aaaa 2001:db8::25"
        ]
    );
    let r = ask(&query("_sip._tcp.example.com", 33));
    assert_eq!(r.additional.len(), 2);
    let r = ask(&query("example.com", T_NS));
    assert_eq!(r.additional, vec!["ns1.example.com. 3600 a 192.0.2.1"]);
}

#[test]
fn outside_our_zones_is_refused() {
    let r = ask(&query("www.example.org", T_A));
    assert_eq!(r.rcode, RCODE_REFUSED);
    assert!(!r.aa);
    assert!(r.answer.is_empty() && r.authority.is_empty());
}

/// RFC 8914: an EDNS query for a name outside our zones gets EDE 20 (Not
/// Authoritative), as from Knot; without EDNS there is nowhere to put it,
/// and answers inside our zones carry none.
#[test]
fn refused_outside_our_zones_says_not_authoritative() {
    let ede = |q: &Q| {
        let mut out = Vec::new();
        answer(&zones(), &Settings::default(), &q.bytes(), &cx(false), &mut out);
        let msg = Message::from_octets(out).unwrap();
        let codes: Vec<u16> = msg.opt().map_or_else(Vec::new, |o| {
            o.opt()
                .iter::<domain::base::opt::ExtendedError<_>>()
                .filter_map(Result::ok)
                .map(|e| e.code().to_int())
                .collect()
        });
        (msg.header().rcode().to_int(), msg.opt().is_some(), codes)
    };
    assert_eq!(
        ede(&query("www.example.org", T_A).edns(1232)),
        (RCODE_REFUSED, true, vec![20])
    );
    assert_eq!(ede(&query("www.example.org", T_A)), (RCODE_REFUSED, false, vec![]));
    assert_eq!(ede(&query("www.example.com", T_A).edns(1232)), (0, true, vec![]));
    assert_eq!(
        ede(&query("nope.example.com", T_A).edns(1232)).2,
        Vec::<u16>::new(),
        "NXDOMAIN has none"
    );
}

#[test]
fn any_gets_one_rrset() {
    let r = ask(&query("www.example.com", T_ANY));
    assert_eq!(r.answer, vec!["www.example.com. 3600 a 192.0.2.10"]);
}

#[test]
fn edns_echo_nsid_badvers() {
    let st = Settings {
        nsid: Some(b"pop1".to_vec().into()),
        ..Settings::default()
    };
    let q = query("www.example.com", T_A).opt(OPT_NSID, b"");
    let mut out = Vec::new();
    answer(&zones(), &st, &q.bytes(), &cx(false), &mut out);
    let msg = Message::from_octets(&out[..]).unwrap();
    let opt = msg.opt().expect("OPT echoed");
    assert_eq!(opt.udp_payload_size(), 1232);
    let nsid: Vec<_> = opt.opt().iter::<domain::base::opt::Nsid<_>>().collect();
    assert_eq!(nsid.len(), 1);
    assert!(out.windows(4).any(|w| w == b"pop1"));
    // EDNS version 1 -> BADVERS
    let mut b = query("www.example.com", T_A).edns(1232).bytes();
    let n = b.len();
    b[n - 5] = 1; // version byte of the OPT
    out.clear();
    answer(&zones(), &st, &b, &cx(false), &mut out);
    let msg = Message::from_octets(&out[..]).unwrap();
    assert_eq!(msg.opt_rcode().to_int(), RCODE_BADVERS);
    assert_eq!(msg.header_counts().ancount(), 0);
}

#[test]
fn truncation_sets_tc_and_tcp_gets_everything() {
    let mut z = String::from(ZONE);
    for i in 0..60 {
        z.push_str(&format!(
            "big TXT \"record number {i} with some padding to make it long\"\n"
        ));
    }
    let mut s = ZoneSet::new();
    s.insert(Arc::new(load_str(&z, "example.com.").unwrap()));
    let q = query("big.example.com", T_TXT);
    let r = ask_with(&s, &Settings::default(), &q, false);
    assert!(r.tc);
    assert!(r.answer.is_empty());
    assert!(r.raw.len() <= 512);
    let r = ask_with(&s, &Settings::default(), &q.edns(4096), false);
    assert!(r.tc, "{} bytes still too big for 1232", r.raw.len());
    assert!(r.raw.len() <= 1232);
    let r = ask_with(&s, &Settings::default(), &query("big.example.com", T_TXT), true);
    assert!(!r.tc);
    assert_eq!(r.answer.len(), 60);
}

#[test]
fn cookies_are_issued_and_recognised() {
    let st = Settings {
        cookies: Some(Secrets {
            current: [5; 16],
            previous: None,
        }),
        ..Settings::default()
    };
    let z = zones();
    let q = query("www.example.com", T_A).opt(OPT_COOKIE, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut out = Vec::new();
    let a = answer(&z, &st, &q.bytes(), &cx(false), &mut out);
    assert_eq!(a.cookie, CookieState::ClientOnly);
    // the response carries client + server cookie (24 bytes)
    let pos = out.windows(4).position(|w| w == [0, 10, 0, 24]).expect("COOKIE option");
    let full = out[pos + 4..pos + 28].to_vec();
    let q2 = query("www.example.com", T_A).opt(OPT_COOKIE, &full);
    let a = answer(&z, &st, &q2.bytes(), &cx(false), &mut out);
    assert_eq!(a.cookie, CookieState::Valid);
    // malformed cookie length: FORMERR
    let q3 = query("www.example.com", T_A).opt(OPT_COOKIE, &[1, 2, 3]);
    let r = ask_with(&z, &st, &q3, false);
    assert_eq!(r.rcode, RCODE_FORMERR);
}

#[test]
fn garbage_is_ignored_or_formerr_never_amplified() {
    let z = zones();
    let st = Settings::default();
    let mut out = Vec::new();
    // too short
    let a = answer(&z, &st, &[1, 2, 3], &cx(false), &mut out);
    assert!(out.is_empty());
    assert_eq!(a.kind, Kind::Error);
    // a response (QR set) is never answered
    let mut b = query("www.example.com", T_A).bytes();
    b[2] |= 0x80;
    answer(&z, &st, &b, &cx(false), &mut out);
    assert!(out.is_empty());
    // compression pointer in the question: FORMERR, header only
    let b = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
    answer(&z, &st, &b, &cx(false), &mut out);
    assert_eq!(out.len(), 12);
    assert_eq!(out[3] & 0x0f, RCODE_FORMERR);
    // two questions
    let mut b = query("www.example.com", T_A).bytes();
    b[5] = 2;
    answer(&z, &st, &b, &cx(false), &mut out);
    assert_eq!(out[3] & 0x0f, RCODE_FORMERR);
    assert!(out.len() <= b.len());
    // trailing garbage
    let mut b = query("www.example.com", T_A).bytes();
    b.extend_from_slice(&[0; 7]);
    answer(&z, &st, &b, &cx(false), &mut out);
    assert_eq!(out[3] & 0x0f, RCODE_FORMERR);
    // unknown opcode: NOTIMP
    let mut b = query("www.example.com", T_A).bytes();
    b[2] = 2 << 3;
    answer(&z, &st, &b, &cx(false), &mut out);
    assert_eq!(out[3] & 0x0f, RCODE_NOTIMP);
}

#[test]
fn transfers_are_handed_to_the_caller() {
    let z = zones();
    let mut out = Vec::new();
    let a = answer(
        &z,
        &Settings::default(),
        &query("example.com", 252).bytes(),
        &cx(true),
        &mut out,
    );
    assert_eq!(a.special, Some(Special::Axfr));
    assert!(out.is_empty());
    let a = answer(
        &z,
        &Settings::default(),
        &query("example.com", 252).bytes(),
        &cx(false),
        &mut out,
    );
    assert_eq!(a.special, None);
    assert_eq!(out[3] & 0x0f, RCODE_NOTIMP);
}

#[test]
fn rrl_keys_negative_answers_on_the_zone() {
    let z = zones();
    let mut out = Vec::new();
    let a = answer(
        &z,
        &Settings::default(),
        &query("rnd1.example.com", T_A).bytes(),
        &cx(false),
        &mut out,
    );
    assert_eq!(a.kind, Kind::NxDomain);
    assert_eq!(a.rrl_name, b"\x07example\x03com\x00");
    let a = answer(
        &z,
        &Settings::default(),
        &query("www.example.com", T_A).bytes(),
        &cx(false),
        &mut out,
    );
    assert_eq!(a.kind, Kind::Positive);
    assert_eq!(a.rrl_name, b"\x03www\x07example\x03com\x00");
}
