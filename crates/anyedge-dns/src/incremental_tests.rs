#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The incrementally applied IXFR gives exactly the snapshot a load from
//! scratch gives: same nodes (records, flags, child counts), same NSEC3
//! owners, same DNSSEC index (chains, signature expirations).

use std::sync::Arc;

use proptest::prelude::*;

use crate::sign::{sign_zone, Algorithm, DenialMode, Policy, SigningKey};
use crate::xfr::{apply_at, diff, rebuild};
use crate::zone::{Node, Zone};

const NOW: u64 = 1_800_000_000;

/// Names of the generated zones: deep ones make empty non-terminals
/// appear and disappear; `sub` is a delegation with glue.
const NAMES: &[&str] = &[
    "@", "www", "a", "b.a", "c.b.a", "d.c.b.a", "x.y", "z.x.y", "sub", "ns.sub", "mail", "*.wild", "q.r.s",
];
/// (type, rdata) choices; NS only for `sub`.
const DATA: &[&str] = &[
    "A 192.0.2.1",
    "A 192.0.2.2",
    "AAAA 2001:db8::1",
    "TXT \"one\"",
    "TXT \"two\"",
    "MX 10 mail",
];

fn policy(denial: DenialMode) -> Policy {
    let (ksk, _) = SigningKey::generate(Algorithm::EcdsaP256Sha256, true).unwrap();
    let (zsk, _) = SigningKey::generate(Algorithm::Ed25519, false).unwrap();
    Policy {
        keys: vec![Arc::new(ksk), Arc::new(zsk)],
        denial,
        validity: 14 * 86400,
    }
}

/// Zone text of a set of (name, data) indexes.
fn text(recs: &std::collections::BTreeSet<(usize, usize)>, delegated: bool) -> String {
    let mut t =
        String::from("$ORIGIN example.\n$TTL 300\n@ SOA ns hm 1 7200 3600 1209600 300\n@ NS ns\nns A 192.0.2.53\n");
    if delegated {
        t.push_str("sub NS ns.sub\n");
    }
    for &(n, d) in recs {
        t.push_str(&format!("{} {}\n", NAMES[n], DATA[d]));
    }
    t
}

fn sign(
    recs: &std::collections::BTreeSet<(usize, usize)>,
    delegated: bool,
    p: &Policy,
    prev: Option<&Zone>,
    now: u64,
) -> Zone {
    let b = crate::zone::load_str_records(&text(recs, delegated), "example.").unwrap();
    sign_zone(b, p, prev, now).unwrap()
}

/// A node with each RRset's records in one order (the order records came
/// in is not part of the zone's meaning).
fn norm(n: &Node) -> Node {
    let mut n = n.clone();
    for s in n.rrsets.iter_mut().chain(n.sigs.iter_mut()) {
        s.rdata.sort_by(|a, b| a.wire.cmp(&b.wire));
    }
    n
}

fn same(a: &Zone, b: &Zone, what: &str) {
    assert_eq!(a.serial, b.serial, "{what}: serial");
    assert_eq!(a.records, b.records, "{what}: records");
    assert_eq!(a.signed, b.signed, "{what}: signed");
    assert_eq!(a.negative_ttl, b.negative_ttl, "{what}: negative TTL");
    for (m, n, kind) in [(&a.nodes, &b.nodes, "name"), (&a.nsec3_nodes, &b.nsec3_nodes, "NSEC3")] {
        let mut ka: Vec<_> = m.keys().map(|k| crate::name::display(k)).collect();
        let mut kb: Vec<_> = n.keys().map(|k| crate::name::display(k)).collect();
        ka.sort();
        kb.sort();
        assert_eq!(ka, kb, "{what}: {kind} owners");
        for (k, x) in m {
            assert_eq!(norm(x), norm(&n[k]), "{what}: node {}", crate::name::display(k));
        }
    }
    assert_eq!(a.dnssec, b.dnssec, "{what}: DNSSEC index");
    assert_eq!(a.dump().len(), b.dump().len(), "{what}: dump");
    answers_agree(a, b, what);
}

/// A DO query for `name` (lowercase wire) and `qtype`.
fn query(name: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    q
}

/// Both versions answer every name of either (NSEC3 owners included),
/// names below them and beside them, for the types DNSSEC answers differ
/// by, byte for byte.
fn answers_agree(a: &Zone, b: &Zone, what: &str) {
    let set = |z: &Zone| {
        let mut s = crate::zone::ZoneSet::new();
        s.insert(Arc::new(Zone {
            apex: z.apex.clone(),
            serial: z.serial,
            negative_ttl: z.negative_ttl,
            nodes: z.nodes.iter().map(|(k, n)| (k.clone(), Arc::new(norm(n)))).collect(),
            records: z.records,
            warnings: Vec::new(),
            signed: z.signed,
            nsec3_nodes: z
                .nsec3_nodes
                .iter()
                .map(|(k, n)| (k.clone(), Arc::new(norm(n))))
                .collect(),
            dnssec: z.dnssec.clone(),
            online: None,
        }));
        s
    };
    let (sa, sb) = (set(a), set(b));
    let mut names: Vec<Vec<u8>> = Vec::new();
    for k in a.all_nodes().chain(b.all_nodes()).map(|(k, _)| k) {
        names.push(k.to_vec());
        for l in [&b"\x02nx"[..], b"\x01*", b"\x03www"] {
            let mut n = l.to_vec();
            n.extend_from_slice(k);
            names.push(n);
        }
    }
    let cx = crate::answer::Context {
        src: "198.51.100.7".parse().unwrap(),
        tcp: true,
        now: 1_700_000_000,
    };
    let st = crate::answer::Settings::default();
    for n in &names {
        for t in [1u16, 16, 43, 47, 48, 50, 255] {
            let q = query(n, t);
            let (mut oa, mut ob) = (Vec::new(), Vec::new());
            crate::answer::answer(&sa, &st, &q, &cx, &mut oa);
            crate::answer::answer(&sb, &st, &q, &cx, &mut ob);
            assert_eq!(oa, ob, "{what}: answer to {} type {t}", crate::name::display(n));
        }
    }
}

type Version = (std::collections::BTreeSet<(usize, usize)>, bool, u64);

fn versions() -> impl Strategy<Value = Vec<Version>> {
    let recs = proptest::collection::btree_set((0..NAMES.len(), 0..DATA.len()), 0..14);
    // time steps of up to 6 days: some versions re-sign every signature
    proptest::collection::vec((recs, any::<bool>(), 0u64..6 * 86400), 2..6)
}

fn run(denial: DenialMode, vs: &[Version]) {
    let p = policy(denial);
    let mut now = NOW;
    let mut signed = vec![sign(&vs[0].0, vs[0].1, &p, None, now)];
    let mut nows = vec![now];
    for (recs, deleg, step) in &vs[1..] {
        now += step;
        let prev = signed.last().unwrap();
        signed.push(sign(recs, *deleg, &p, Some(prev), now));
        nows.push(now);
    }
    // each difference alone, and the whole chain at once
    let diffs: Vec<_> = signed.windows(2).map(|w| diff(&w[0], &w[1]).unwrap()).collect();
    assert!(apply_at(&signed[0], &[], NOW).is_err());
    let mut z = apply_at(&signed[0], &diffs[..1], nows[1]).unwrap();
    same(&z, &signed[1], "first difference");
    for i in 1..diffs.len() {
        z = apply_at(&z, &diffs[i..=i], nows[i + 1]).unwrap();
        same(&z, &signed[i + 1], &format!("difference {}", i + 1));
        let scratch = rebuild(&signed[i], &diffs[i..=i], nows[i + 1]).unwrap();
        same(&z, &scratch, &format!("difference {} against a rebuild", i + 1));
    }
    let all = apply_at(&signed[0], &diffs, *nows.last().unwrap()).unwrap();
    same(&all, signed.last().unwrap(), "the chain at once");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn incremental_nsec_matches_scratch(vs in versions()) {
        run(DenialMode::Nsec, &vs);
    }
    #[test]
    fn incremental_nsec3_matches_scratch(vs in versions()) {
        run(DenialMode::Nsec3, &vs);
    }
}

/// Named cases: a name removed entirely (and its ENT ancestors), an ENT
/// appearing under new data and turning into a name, a delegation going.
#[test]
fn named_sequences() {
    use std::collections::BTreeSet;
    let v = |r: &[(usize, usize)], d: bool, s: u64| -> Version { (r.iter().copied().collect::<BTreeSet<_>>(), d, s) };
    for denial in [DenialMode::Nsec, DenialMode::Nsec3] {
        run(
            denial,
            &[
                v(&[(5, 0), (1, 0)], true, 0),
                v(&[(1, 0)], true, 3600),          // d.c.b.a and its ENTs c.b.a, b.a, a gone
                v(&[(4, 3), (1, 1)], false, 3600), // c.b.a back: ENTs b.a, a; delegation gone
                v(&[(4, 3), (3, 0), (1, 1)], false, 5 * 86400), // ENT b.a becomes a name; re-sign
                v(&[(4, 3), (1, 1)], true, 5 * 86400), // b.a an ENT again
            ],
        );
    }
}
