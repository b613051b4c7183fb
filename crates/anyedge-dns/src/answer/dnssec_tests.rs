//! DNSSEC answers of pre-signed zones (RFC 4035 3.1, RFC 5155 7.2). The
//! zones are Knot DNS 3.2's own signing of one source zone with NSEC and
//! with NSEC3 (opt-out), taken by AXFR (`tests/data/*.signed`); every
//! expectation below is what that Knot answered to the same question.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::tests::{decode, query, Q, R};
use super::*;
use crate::dnssec::T_NSEC3;
use crate::zone::{load_str_at, T_DNSKEY, T_SOA};

pub const NSEC_ZONE: &str = include_str!("../../tests/data/nsec.test.signed");
pub const NSEC3_ZONE: &str = include_str!("../../tests/data/nsec3.test.signed");
/// A day after the fixtures' signature inception (2026-12-03 10:26:21).
pub const FIXTURE_NOW: u64 = 1_796_293_581 + 86_400;

fn set() -> ZoneSet {
    let mut s = ZoneSet::new();
    s.insert(Arc::new(load_str_at(NSEC_ZONE, "nsec.test.", FIXTURE_NOW).unwrap()));
    s.insert(Arc::new(load_str_at(NSEC3_ZONE, "nsec3.test.", FIXTURE_NOW).unwrap()));
    s
}

fn do_query(name: &str, qtype: u16) -> Q {
    let mut q = query(name, qtype).edns(1232);
    q.dnssec_ok = true;
    q
}

fn ask_in(z: &ZoneSet, q: &Q) -> R {
    let mut out = Vec::new();
    let cx = Context {
        src: "198.51.100.7".parse().unwrap(),
        tcp: false,
        now: 1_700_000_000,
    };
    answer(z, &Settings::default(), &q.bytes(), &cx, &mut out);
    decode(out)
}

fn ask(q: &Q) -> R {
    ask_in(&set(), q)
}

/// "owner ttl type" of each record, plus the covered type of an RRSIG.
fn brief(v: &[String]) -> Vec<String> {
    let mut b: Vec<String> = v
        .iter()
        .filter(|r| !r.starts_with(". "))
        .map(|r| {
            let f: Vec<&str> = r.split_whitespace().collect();
            if f[2] == "rrsig" {
                format!("{} {} rrsig {}", f[0], f[1], f[3])
            } else {
                format!("{} {} {}", f[0], f[1], f[2])
            }
        })
        .collect();
    b.sort();
    b
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn positive_answers_carry_their_rrsigs_only_with_do() {
    let r = ask(&do_query("www.nsec.test", T_A));
    assert_eq!(
        brief(&r.answer),
        sorted(&["www.nsec.test. 3600 a", "www.nsec.test. 3600 rrsig a"])
    );
    assert!(r.authority.is_empty());
    let r = ask(&query("www.nsec.test", T_A).edns(1232));
    assert_eq!(brief(&r.answer), sorted(&["www.nsec.test. 3600 a"]), "no DO, no RRSIG");
    // additional data is signed too; RRSIG TTLs are per covered type
    let r = ask(&do_query("nsec.test", T_MX));
    assert_eq!(
        brief(&r.answer),
        sorted(&["nsec.test. 3600 mx", "nsec.test. 3600 rrsig mx"])
    );
    assert_eq!(
        brief(&r.additional),
        sorted(&["mail.nsec.test. 3600 a", "mail.nsec.test. 3600 rrsig a"])
    );
    // DNSKEY at the apex, signed
    let r = ask(&do_query("nsec3.test", T_DNSKEY));
    assert_eq!(r.answer.len(), 3, "{:?}", r.answer);
    // an explicit RRSIG query: the signatures of one type, as Knot
    let r = ask(&do_query("www.nsec.test", T_RRSIG));
    assert_eq!(brief(&r.answer), sorted(&["www.nsec.test. 3600 rrsig a"]));
    // no AD from an authority (Knot sets none either)
    assert_eq!(r.raw[3] & 0x20, 0);
}

#[test]
fn nsec_nxdomain_covers_the_name_and_the_wildcard() {
    let r = ask(&do_query("nope.nsec.test", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec.test. 300 soa",
            "nsec.test. 300 rrsig soa",
            "mail.nsec.test. 300 nsec",
            "mail.nsec.test. 300 rrsig nsec",
            "nsec.test. 300 nsec",
            "nsec.test. 300 rrsig nsec",
        ])
    );
}

#[test]
fn nsec_nodata_and_empty_non_terminal() {
    let r = ask(&do_query("www.nsec.test", T_MX));
    assert_eq!(r.rcode, 0);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec.test. 300 soa",
            "nsec.test. 300 rrsig soa",
            "www.nsec.test. 300 nsec",
            "www.nsec.test. 300 rrsig nsec",
        ])
    );
    let r = ask(&do_query("c.nsec.test", T_A));
    assert_eq!(r.rcode, 0);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec.test. 300 soa",
            "nsec.test. 300 rrsig soa",
            "alias.nsec.test. 300 nsec",
            "alias.nsec.test. 300 rrsig nsec",
        ])
    );
}

#[test]
fn nsec_wildcard_answer_and_wildcard_nodata() {
    let r = ask(&do_query("x.wild.nsec.test", T_A));
    assert_eq!(
        brief(&r.answer),
        sorted(&["x.wild.nsec.test. 3600 a", "x.wild.nsec.test. 3600 rrsig a"])
    );
    // the signature is the wildcard's: 3 labels for a 4-label name
    assert!(
        r.answer.iter().any(|a| a.contains(" rrsig a 13 3 3600 ")),
        "{:?}",
        r.answer
    );
    assert_eq!(
        brief(&r.authority),
        sorted(&["*.wild.nsec.test. 300 nsec", "*.wild.nsec.test. 300 rrsig nsec"])
    );
    let r = ask(&do_query("x.wild.nsec.test", T_MX));
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec.test. 300 soa",
            "nsec.test. 300 rrsig soa",
            "*.wild.nsec.test. 300 nsec",
            "*.wild.nsec.test. 300 rrsig nsec",
        ])
    );
}

#[test]
fn nsec_referrals_carry_the_ds_or_the_proof_there_is_none() {
    let r = ask(&do_query("foo.secure.nsec.test", T_A));
    assert!(!r.aa);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "secure.nsec.test. 3600 ns",
            "secure.nsec.test. 3600 ds",
            "secure.nsec.test. 3600 rrsig ds",
        ])
    );
    assert_eq!(
        brief(&r.additional),
        sorted(&["ns.secure.nsec.test. 3600 a"]),
        "glue unsigned"
    );
    let r = ask(&do_query("foo.insecure.nsec.test", T_A));
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "insecure.nsec.test. 3600 ns",
            "insecure.nsec.test. 300 nsec",
            "insecure.nsec.test. 300 rrsig nsec",
        ])
    );
    let r = ask(&do_query("insecure.nsec.test", T_DS));
    assert!(r.aa);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec.test. 300 soa",
            "nsec.test. 300 rrsig soa",
            "insecure.nsec.test. 300 nsec",
            "insecure.nsec.test. 300 rrsig nsec",
        ])
    );
}

#[test]
fn dname_is_signed_and_the_synthesized_cname_is_not() {
    let r = ask(&do_query("a.dn.nsec.test", T_A));
    assert_eq!(
        brief(&r.answer),
        sorted(&[
            "dn.nsec.test. 3600 dname",
            "dn.nsec.test. 3600 rrsig dname",
            "a.dn.nsec.test. 3600 cname",
        ])
    );
}

#[test]
fn nsec3_nxdomain_is_the_closest_encloser_proof_and_the_wildcard() {
    let r = ask(&do_query("nope.nsec3.test", T_A));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
    assert_eq!(
        brief(&r.authority),
        sorted(&[
            "nsec3.test. 300 soa",
            "nsec3.test. 300 rrsig soa",
            "35145lcvtnijgd46vd4931n1262tpj24.nsec3.test. 300 nsec3",
            "35145lcvtnijgd46vd4931n1262tpj24.nsec3.test. 300 rrsig nsec3",
            "abq4ji2v1852p1kgktedpma5pi7soj2t.nsec3.test. 300 nsec3",
            "abq4ji2v1852p1kgktedpma5pi7soj2t.nsec3.test. 300 rrsig nsec3",
            "fufdnhlroqpmq889md44e8t2hbnrhdtn.nsec3.test. 300 nsec3",
            "fufdnhlroqpmq889md44e8t2hbnrhdtn.nsec3.test. 300 rrsig nsec3",
        ])
    );
    // hashed owners are not names of the zone
    let r = ask(&do_query("35145lcvtnijgd46vd4931n1262tpj24.nsec3.test", T_NSEC3));
    assert_eq!(r.rcode, RCODE_NXDOMAIN);
}

#[test]
fn nsec3_nodata_wildcards_and_empty_non_terminals() {
    let n3 = |h: &str| {
        [
            format!("{h}.nsec3.test. 300 nsec3"),
            format!("{h}.nsec3.test. 300 rrsig nsec3"),
        ]
    };
    let neg = [
        "nsec3.test. 300 soa".to_string(),
        "nsec3.test. 300 rrsig soa".to_string(),
    ];
    let expect = |hs: &[&str], negative: bool| {
        let mut v: Vec<String> = hs.iter().flat_map(|h| n3(h)).collect();
        if negative {
            v.extend(neg.iter().cloned());
        }
        v.sort();
        v
    };
    let r = ask(&do_query("www.nsec3.test", T_MX));
    assert_eq!(brief(&r.authority), expect(&["8qbdq2hhiljdus9dhsqsr71kf5m98t5m"], true));
    let r = ask(&do_query("c.nsec3.test", T_A));
    assert_eq!(brief(&r.authority), expect(&["4ngg8vpu80f61loar6ohfpiinpsu7v1s"], true));
    let r = ask(&do_query("x.wild.nsec3.test", T_A));
    assert_eq!(
        brief(&r.authority),
        expect(&["8qbdq2hhiljdus9dhsqsr71kf5m98t5m"], false)
    );
    let r = ask(&do_query("a.nope.wild.nsec3.test", T_A));
    assert_eq!(
        brief(&r.authority),
        expect(&["fufdnhlroqpmq889md44e8t2hbnrhdtn"], false)
    );
    let r = ask(&do_query("x.wild.nsec3.test", T_MX));
    assert_eq!(
        brief(&r.authority),
        expect(
            &[
                "26vjuandslmv98uhl6ncne1hanodkb7r",
                "s9uic3ng26lpved2qbs3l367mf0otssa",
                "8qbdq2hhiljdus9dhsqsr71kf5m98t5m"
            ],
            true
        )
    );
}

#[test]
fn nsec3_opt_out_referral_and_ds_query() {
    let cpe = ["35145lcvtnijgd46vd4931n1262tpj24", "4ngg8vpu80f61loar6ohfpiinpsu7v1s"];
    let mut want: Vec<String> = cpe
        .iter()
        .flat_map(|h| {
            [
                format!("{h}.nsec3.test. 300 nsec3"),
                format!("{h}.nsec3.test. 300 rrsig nsec3"),
            ]
        })
        .collect();
    let r = ask(&do_query("foo.insecure.nsec3.test", T_A));
    let mut w = want.clone();
    w.push("insecure.nsec3.test. 3600 ns".into());
    w.sort();
    assert_eq!(brief(&r.authority), w);
    let r = ask(&do_query("insecure.nsec3.test", T_DS));
    want.push("nsec3.test. 300 soa".into());
    want.push("nsec3.test. 300 rrsig soa".into());
    want.sort();
    assert_eq!(brief(&r.authority), want);
}

#[test]
fn a_signed_answer_that_does_not_fit_is_truncated() {
    let mut q = do_query("nope.nsec3.test", T_A);
    q.edns = Some(512);
    let r = ask(&q);
    assert!(r.tc, "8 authority records with signatures exceed 512 bytes");
    assert!(r.authority.is_empty());
    let mut q = query("nope.nsec3.test", T_A).edns(512);
    q.dnssec_ok = false;
    assert!(!ask(&q).tc, "unsigned it fits");
}

#[test]
fn ds_of_a_child_apex_is_answered_by_the_parent() {
    let mut s = set();
    let child = "$ORIGIN secure.nsec.test.\n@ 3600 IN SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.53\n";
    s.insert(Arc::new(crate::zone::load_str(child, "secure.nsec.test.").unwrap()));
    let r = ask_in(&s, &do_query("secure.nsec.test", T_DS));
    assert!(r.aa);
    assert_eq!(
        brief(&r.answer),
        sorted(&["secure.nsec.test. 3600 ds", "secure.nsec.test. 3600 rrsig ds"])
    );
    // other types at the child apex are the child's
    let r = ask_in(&s, &do_query("secure.nsec.test", T_SOA));
    assert_eq!(brief(&r.answer), sorted(&["secure.nsec.test. 3600 soa"]));
}

fn load_err(text: &str, apex: &str, now: u64) -> String {
    load_str_at(text, apex, now).unwrap_err().to_string()
}

#[test]
fn bad_signed_zones_are_refused_naming_the_owner_and_the_problem() {
    // expired signatures (the fixtures expire 2026-12-17 11:56:21)
    let e = load_err(NSEC_ZONE, "nsec.test.", 1_797_508_581 + 10);
    assert!(e.contains("nsec.test") && e.contains("expired"), "{e}");
    // not yet valid
    let e = load_err(NSEC_ZONE, "nsec.test.", 1_796_293_581 - 10);
    assert!(e.contains("not valid before"), "{e}");
    // a missing signature
    let t: String = NSEC_ZONE
        .lines()
        .filter(|l| !(l.starts_with("www.nsec.test.") && l.contains("RRSIG\tAAAA")))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = load_err(&t, "nsec.test.", FIXTURE_NOW);
    assert!(e.contains("www.nsec.test.: AAAA has no RRSIG"), "{e}");
    // a signature by a key the apex does not have
    let t: String = NSEC_ZONE
        .lines()
        .filter(|l| !l.contains("DNSKEY\t256"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = load_err(&t, "nsec.test.", FIXTURE_NOW);
    assert!(e.contains("which no DNSKEY at the apex has"), "{e}");
    // a gap in the NSEC3 chain
    let t: String = NSEC3_ZONE
        .lines()
        .filter(|l| !l.starts_with("fbsv4q7kns3uot8g1m1oijtpkatsneo3"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = load_err(&t, "nsec3.test.", FIXTURE_NOW);
    assert!(
        e.contains("gap in the NSEC3 chain") && e.contains("d9bu7eqbt8020gffbqgqmbou38r1q6t7"),
        "{e}"
    );
    // a gap in the NSEC chain
    let t: String = NSEC_ZONE
        .lines()
        .filter(|l| !(l.starts_with("mail.nsec.test.") && l.contains("NSEC\t")))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = load_err(&t, "nsec.test.", FIXTURE_NOW);
    assert!(
        e.contains("insecure.nsec.test.: NSEC names mail.nsec.test.") && e.contains("gap in the chain"),
        "{e}"
    );
    // an algorithm validators do not implement (3 = DSA)
    let t = NSEC_ZONE.replace("DNSKEY\t256 3 13 ", "DNSKEY\t256 3 3 ");
    let e = load_err(&t, "nsec.test.", FIXTURE_NOW);
    assert!(e.contains("algorithm 3 is not supported"), "{e}");
    // NSEC3 iterations above the RFC 9276 bound
    let t = NSEC3_ZONE.replace("NSEC3PARAM\t1 0 0 ", "NSEC3PARAM\t1 0 101 ");
    let e = load_err(&t, "nsec3.test.", FIXTURE_NOW);
    assert!(e.contains("iterations 101"), "{e}");
}

#[test]
fn unsigned_behaviour_is_unchanged_for_signed_zones_without_do() {
    let r = ask(&query("nope.nsec.test", T_A).edns(1232));
    assert_eq!(brief(&r.authority), sorted(&["nsec.test. 300 soa"]));
    let r = ask(&query("foo.secure.nsec.test", T_A).edns(1232));
    assert_eq!(brief(&r.authority), sorted(&["secure.nsec.test. 3600 ns"]));
}

/// A re-signing difference (a record and its RRSIG replaced) computed and
/// applied gives the new version exactly, signatures grouped by the type
/// they cover on both sides.
#[test]
fn differences_of_signed_zones_round_trip() {
    let old = load_str_at(NSEC_ZONE, "nsec.test.", FIXTURE_NOW).unwrap();
    let line = NSEC_ZONE
        .lines()
        .find(|l| l.starts_with("www.nsec.test.") && l.contains("RRSIG\tTXT"))
        .unwrap();
    let resigned = line.replace("vx9aPv", "vx9aPw");
    let text = NSEC_ZONE
        .replace("2026010102 7200", "2026010103 7200")
        .replace("\"www\"", "\"www2\"")
        .replace(line, &resigned);
    let new = load_str_at(&text, "nsec.test.", FIXTURE_NOW).unwrap();
    let d = crate::xfr::diff(&old, &new).unwrap();
    assert_eq!((d.removed.len(), d.added.len()), (2, 2), "a TXT and its RRSIG");
    assert!(d.added.iter().any(|r| r.rtype == T_RRSIG));
    let applied = crate::xfr::apply(&old, &[d]).unwrap();
    assert_eq!(applied.dump(), new.dump());
    assert!(applied.dnssec.is_some());
    let www = applied.node(b"\x03www\x04nsec\x04test\x00").unwrap();
    assert_eq!(www.sigs.len(), 4, "A, TXT, AAAA, NSEC");
}

/// SVCB in ServiceMode: the target's addresses as additional data (its
/// name is followed by the SvcParams in the rdata), with and without DO;
/// with DO also their signatures and the target's NSEC, as Knot adds them.
#[test]
fn svcb_service_mode_gets_the_targets_addresses() {
    let r = ask(&query("svc.nsec.test", crate::zone::T_SVCB).edns(1232));
    assert_eq!(
        brief(&r.additional),
        sorted(&["svc-target.nsec.test. 3600 a", "svc-target.nsec.test. 3600 aaaa"])
    );
    let r = ask(&do_query("svc.nsec.test", crate::zone::T_SVCB));
    assert_eq!(
        brief(&r.additional),
        sorted(&[
            "svc-target.nsec.test. 3600 a",
            "svc-target.nsec.test. 3600 aaaa",
            "svc-target.nsec.test. 300 nsec",
            "svc-target.nsec.test. 3600 rrsig a",
            "svc-target.nsec.test. 3600 rrsig aaaa",
            "svc-target.nsec.test. 300 rrsig nsec",
        ])
    );
}
