#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};

fn wire(n: &str) -> Vec<u8> {
    let n: domain::base::Name<Vec<u8>> = n.parse().unwrap();
    n.as_slice().to_vec()
}

#[test]
fn ds_of_rfc4509_example_and_its_key_tag() {
    // RFC 4509 section 2.3
    let (flags, alg, public) = parse_key_file(
        "dskey.example.com. 86400 IN DNSKEY 256 3 5 AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
    )
    .unwrap();
    let mut rd = flags.to_be_bytes().to_vec();
    rd.extend([3, alg]);
    rd.extend(public);
    assert_eq!(key_tag(&rd), 60485);
    assert_eq!(
        ds_presentation("dskey.example.com.", &wire("dskey.example.com."), &rd),
        "dskey.example.com. IN DS 60485 5 2 D4B7D520E7BB5F0F67674A0CCEB1E3E0614B93C4F9E99B8383F6A1E4469DA50A"
    );
}

#[test]
fn rfc6605_ecdsa_key_ds_and_signature_verify() {
    let key = SigningKey::from_files(
        "example.net. 3600 IN DNSKEY 257 3 13 ( GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTm eexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA== )",
        "Private-key-format: v1.2\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: GU6SnQ/Ou+xC5RumuIUIuJZteXT2z0O/ok1s38Et6mQ=\n",
    )
    .unwrap();
    assert_eq!(key.tag, 55648);
    assert!(key.is_sep());
    assert_eq!(
        ds_presentation("example.net.", &wire("example.net."), &key.dnskey),
        "example.net. IN DS 55648 13 2 B4C8C1FE2E7477127B27115656AD6256F424625BF5C1E2770CE6D6E37DF61D17"
    );
    // the RFC's RRSIG over www.example.net. A 192.0.2.1 verifies over our
    // signed data
    let mut prefix = vec![0, 1, 13, 3, 0, 0, 0x0e, 0x10];
    prefix.extend(1284026679u32.to_be_bytes()); // 20100909100439
    prefix.extend(1281607479u32.to_be_bytes()); // 20100812100439
    prefix.extend(55648u16.to_be_bytes());
    prefix.extend(wire("example.net."));
    let data = signed_data(&prefix, &wire("www.example.net."), 1, 3600, &[&[192, 0, 2, 1]]);
    let sig = b64()
        .decode("qx6wLYqmh+l9oCKTN6qIc+bw6ya+KJ8oMz0YP107epXAyGmt+3SNruPFKG7tZoLBLlUzGGus7ZwmwWep666VCw==")
        .unwrap();
    let mut pt = vec![4u8];
    pt.extend_from_slice(&key.dnskey[4..]);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &pt)
        .verify(&data, &sig)
        .expect("RFC 6605 signature");
    // and ours verifies too
    let ours = sign_rrset(
        &key,
        &wire("example.net."),
        &wire("WWW.example.net."),
        1,
        3600,
        &[&[192, 0, 2, 1]],
        1281607479,
        1284026679,
    )
    .unwrap();
    assert_eq!(ours[..prefix.len()], prefix[..]);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &pt)
        .verify(&data, &ours[prefix.len()..])
        .expect("our signature");
}

#[test]
fn rfc8080_ed25519_signature_is_reproduced_exactly() {
    let key = SigningKey::from_files(
        "example.com. 3600 IN DNSKEY 257 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=",
        "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: ODIyNjAzODQ2MjgwODAxMjI2NDUxOTAyMDQxNDIyNjI=\n",
    )
    .unwrap();
    assert_eq!(key.tag, 3613);
    assert_eq!(
        ds_presentation("example.com.", &wire("example.com."), &key.dnskey),
        "example.com. IN DS 3613 15 2 3AA5AB37EFCE57F737FC1627013FEE07BDF241BD10F3B1964AB55C78E79A304B"
    );
    let mut mx = vec![0, 10];
    mx.extend(wire("mail.example.com."));
    let sig = sign_rrset(
        &key,
        &wire("example.com."),
        &wire("example.com."),
        T_MX,
        3600,
        &[&mx],
        1438207200,
        1440021600,
    )
    .unwrap();
    let expect = b64()
        .decode("oL9krJun7xfBOIWcGHi7mag5/hdZrKWw15jPGrHpjQeRAvTdszaPD+QLs3fx8A4M3e23mRZ9VrbpMngwcrqNAg==")
        .unwrap();
    assert_eq!(sig[sig.len() - 64..], expect[..]);
    // case of embedded names does not change the signature (RFC 4034 6.2)
    let mut mx_upper = vec![0, 10];
    mx_upper.extend(wire("MAIL.Example.com."));
    let sig2 = sign_rrset(
        &key,
        &wire("example.com."),
        &wire("Example.COM."),
        T_MX,
        3600,
        &[&mx_upper],
        1438207200,
        1440021600,
    )
    .unwrap();
    assert_eq!(sig, sig2);
}

#[test]
fn generated_keys_round_trip_through_their_files() {
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        for sep in [true, false] {
            let (k, private) = SigningKey::generate(alg, sep).unwrap();
            let back = SigningKey::from_files(&k.key_file_text("example."), &private_file_text(alg, &private)).unwrap();
            assert_eq!(back.dnskey, k.dnskey);
            assert_eq!(back.tag, k.tag);
            assert_eq!(back.is_sep(), sep);
            assert!(k
                .file_stem("example.")
                .starts_with(&format!("Kexample.+{:03}+", alg.number())));
        }
    }
    // a key of another algorithm is refused with what is wrong
    let e = SigningKey::from_files(
        "example. IN DNSKEY 257 3 8 AwEAAQ==",
        "Private-key-format: v1.3\nAlgorithm: 8 (RSASHA256)\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("algorithm 8 is not supported"), "{e}");
    // a private key of another key
    let (a, _) = SigningKey::generate(Algorithm::Ed25519, true).unwrap();
    let (_, pb) = SigningKey::generate(Algorithm::Ed25519, true).unwrap();
    let e = SigningKey::from_files(
        &a.key_file_text("example."),
        &private_file_text(Algorithm::Ed25519, &pb),
    )
    .unwrap_err();
    assert!(matches!(e, KeyError::Mismatch), "{e}");
}

const ZONE: &str = "$TTL 300
@ IN SOA ns1 host 1 3600 900 604800 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.2
www AAAA 2001:db8::2
Mixed.Case CNAME WWW
*.wild TXT \"w\"
a.b.ent A 192.0.2.3
sub NS ns.sub
ns.sub A 192.0.2.53
secure NS ns.secure
secure DS 12345 13 2 0000000000000000000000000000000000000000000000000000000000000000
mx MX 10 Mail.Example.
";

fn policy(denial: DenialMode) -> Policy {
    let (ksk, _) = SigningKey::generate(Algorithm::EcdsaP256Sha256, true).unwrap();
    let (zsk, _) = SigningKey::generate(Algorithm::Ed25519, false).unwrap();
    Policy {
        keys: vec![Arc::new(ksk), Arc::new(zsk)],
        denial,
        validity: 14 * 86400,
    }
}

/// Verifies every RRSIG of `z` against its RRset with ring; returns how many.
fn verify_all(z: &Zone, p: &Policy) -> usize {
    let mut n = 0;
    for (k, node) in z.all_nodes() {
        for g in &node.sigs {
            for rd in &g.rdata {
                let s = crate::dnssec::parse_rrsig(&rd.wire).unwrap();
                let set = node.get(s.covered).unwrap();
                let key = p.keys.iter().find(|x| x.tag == s.key_tag).unwrap();
                let sl = name::wire_len(&rd.wire[18..]).unwrap();
                let prefix = &rd.wire[..18 + sl];
                let rds: Vec<&[u8]> = set.rdata.iter().map(|r| &r.wire[..]).collect();
                let data = signed_data(prefix, k, s.covered, set.ttl, &rds);
                let sig = &rd.wire[18 + sl..];
                let r = match key.algorithm {
                    Algorithm::EcdsaP256Sha256 => {
                        let mut pt = vec![4u8];
                        pt.extend_from_slice(&key.dnskey[4..]);
                        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pt).verify(&data, sig)
                    }
                    Algorithm::Ed25519 => UnparsedPublicKey::new(&ED25519, &key.dnskey[4..]).verify(&data, sig),
                };
                assert!(r.is_ok(), "{} RRSIG {} does not verify", name::display(k), s.covered);
                n += 1;
            }
        }
    }
    n
}

const NOW: u64 = 1_800_000_000;

#[test]
fn signed_zones_verify_and_carry_their_denial_chain() {
    for denial in [DenialMode::Nsec, DenialMode::Nsec3, DenialMode::Compact] {
        let p = policy(denial);
        let b = crate::zone::load_str_records(ZONE, "example.").unwrap();
        let z = sign_zone(b, &p, None, NOW).unwrap();
        assert!(z.signed);
        let n = verify_all(&z, &p);
        assert!(n > 10, "{denial:?}: {n} signatures");
        let apex = z.apex_node().unwrap();
        // DNSKEY signed by the KSK only, the rest by the ZSK
        let ksk = p.keys[0].tag;
        let dk = apex.sigs_for(T_DNSKEY).unwrap();
        assert_eq!(dk.rdata.len(), 1);
        assert_eq!(crate::dnssec::parse_rrsig(&dk.rdata[0].wire).unwrap().key_tag, ksk);
        let soa = apex.sigs_for(T_SOA).unwrap();
        assert_eq!(
            crate::dnssec::parse_rrsig(&soa.rdata[0].wire).unwrap().key_tag,
            p.keys[1].tag
        );
        // CDS/CDNSKEY of the KSK only
        assert_eq!(apex.get(T_CDS).unwrap().rdata.len(), 1);
        assert_eq!(apex.get(T_CDNSKEY).unwrap().rdata[0].wire, p.keys[0].dnskey);
        // glue and delegation NS unsigned, DS signed
        let sub = z.node(&wire("sub.example.")).unwrap();
        assert!(sub.sigs_for(T_NS).is_none());
        assert!(z.node(&wire("ns.sub.example.")).unwrap().sigs.is_empty());
        let sec = z.node(&wire("secure.example.")).unwrap();
        assert!(sec.sigs_for(T_DS).is_some() && sec.sigs_for(T_NS).is_none());
        // wildcard RRSIG labels exclude the `*`
        let w = z.node(&wire("*.wild.example.")).unwrap().sigs_for(16).unwrap();
        assert_eq!(w.rdata[0].wire[3], 2);
        match (denial, &z.dnssec.as_ref().unwrap().denial) {
            (DenialMode::Nsec, crate::dnssec::Denial::Nsec(c)) => {
                // owners with data, not glue, not the empty non-terminal
                assert!(c.iter().any(|o| o[..] == wire("sub.example.")[..]));
                assert!(!c.iter().any(|o| o[..] == wire("ns.sub.example.")[..]));
                assert!(!c.iter().any(|o| o[..] == wire("b.ent.example.")[..]));
            }
            (DenialMode::Nsec3, crate::dnssec::Denial::Nsec3(i)) => {
                assert_eq!(i.iterations, 0);
                assert!(i.salt.is_empty());
                // empty non-terminals have an NSEC3, glue has none
                assert!(i.matching(&wire("b.ent.example.")).is_some());
                assert!(i.matching(&wire("ent.example.")).is_some());
                assert!(i.matching(&wire("ns.sub.example.")).is_none());
                assert!(i.covering(&wire("nope.example.")).is_some());
            }
            (DenialMode::Compact, crate::dnssec::Denial::None) => {}
            (d, x) => panic!("{d:?} gave {x:?}"),
        }
    }
}

#[test]
fn resigning_reuses_fresh_signatures_and_renews_old_ones() {
    let p = policy(DenialMode::Nsec3);
    let b = crate::zone::load_str_records(ZONE, "example.").unwrap();
    let z1 = sign_zone(b, &p, None, NOW).unwrap();
    assert!(!needs_resign(&z1, p.validity, NOW + 86400));
    assert!(needs_resign(&z1, p.validity, NOW + u64::from(p.validity) * 7 / 10));
    let www = |z: &Zone| {
        z.node(&wire("www.example.")).unwrap().sigs_for(1).unwrap().rdata[0]
            .wire
            .clone()
    };
    // a day later, one RRset changed: only it (and the chain it touches) is re-signed
    let changed = ZONE.replace("www A 192.0.2.2", "www A 192.0.2.9");
    let z2 = sign_zone(
        crate::zone::load_str_records(&changed, "example.").unwrap(),
        &p,
        Some(&z1),
        NOW + 86400,
    )
    .unwrap();
    assert_ne!(www(&z1), www(&z2));
    // new signatures: the serial moves on from the previous version's
    assert_eq!((z1.serial, z2.serial), (1, 2));
    let mx = |z: &Zone| {
        z.node(&wire("mx.example.")).unwrap().sigs_for(T_MX).unwrap().rdata[0]
            .wire
            .clone()
    };
    assert_eq!(mx(&z1), mx(&z2));
    verify_all(&z2, &p);
    // late in the validity: everything is renewed
    let later = NOW + u64::from(p.validity) * 7 / 10;
    let z3 = sign_zone(
        crate::zone::load_str_records(&changed, "example.").unwrap(),
        &p,
        Some(&z2),
        later,
    )
    .unwrap();
    assert_ne!(mx(&z2), mx(&z3));
    assert!(!needs_resign(&z3, p.validity, later + 3600));
    assert_eq!(z3.serial, 3);
    verify_all(&z3, &p);
    // nothing new to sign: the same serial, every signature reused
    let z4 = sign_zone(
        crate::zone::load_str_records(&changed, "example.").unwrap(),
        &p,
        Some(&z3),
        later + 60,
    )
    .unwrap();
    assert_eq!(z4.serial, 3);
    assert_eq!(mx(&z3), mx(&z4));
    // the operator's newer serial wins
    let bumped = changed.replace("host 1 3600", "host 100 3600");
    let z5 = sign_zone(
        crate::zone::load_str_records(&bumped, "example.").unwrap(),
        &p,
        Some(&z4),
        later + 120,
    )
    .unwrap();
    assert_eq!(z5.serial, 100);
    verify_all(&z5, &p);
}

#[test]
fn a_dnskey_without_its_key_file_is_refused() {
    let p = policy(DenialMode::Nsec);
    let (other, _) = SigningKey::generate(Algorithm::Ed25519, false).unwrap();
    let text = format!("{ZONE}@ DNSKEY {}\n", dnskey_presentation(&other.dnskey));
    let e = sign_zone(crate::zone::load_str_records(&text, "example.").unwrap(), &p, None, NOW).unwrap_err();
    assert!(e.contains("example.") && e.contains("no key file"), "{e}");
    // the DNSKEYs of the policy's own keys in the file are fine
    let text = format!("{ZONE}@ DNSKEY {}\n", dnskey_presentation(&p.keys[0].dnskey));
    sign_zone(crate::zone::load_str_records(&text, "example.").unwrap(), &p, None, NOW).unwrap();
}

#[test]
fn base32hex_and_bitmap() {
    assert_eq!(base32hex_encode(b"foobar"), "cpnmuoj1e8");
    assert_eq!(
        crate::dnssec::base32hex_decode(base32hex_encode(&[0xff; 20]).as_bytes()).unwrap(),
        vec![0xff; 20]
    );
    let bm = type_bitmap(&[T_RRSIG, 1, 2, 6, 15, T_NSEC, T_NXNAME]);
    let mut expect = vec![0u8, 17, 0x62, 0x01, 0, 0, 0, 0x03];
    expect.extend([0u8; 10]);
    expect.push(0x80);
    assert_eq!(bm, expect);
}
