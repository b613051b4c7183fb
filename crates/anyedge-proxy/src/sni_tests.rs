//! Unit tests for the SNI peeker.

use super::*;
use crate::tests::hx;
use proptest::prelude::*;

/// RFC 8448 section 3 ("Simple 1-RTT Handshake"), ClientHello handshake
/// message (196 octets), server_name "server".
const RFC8448_CH: &str = "
    01 00 00 c0 03 03 cb 34 ec b1 e7 81 63 ba 1c 38 c6 da cb 19 6a 6d ff a2 1a 8d 99 12 ec 18 a2 ef 62 83
    02 4d ec e7 00 00 06 13 01 13 03 13 02 01 00 00 91 00 00 00 0b 00 09 00 00 06 73 65 72 76 65 72 ff 01
    00 01 00 00 0a 00 14 00 12 00 1d 00 17 00 18 00 19 01 00 01 01 01 02 01 03 01 04 00 23 00 00 00 33 00
    26 00 24 00 1d 00 20 99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69
    1e 52 9a af 2c 00 2b 00 03 02 03 04 00 0d 00 20 00 1e 04 03 05 03 06 03 02 03 08 04 08 05 08 06 04 01
    05 01 06 01 02 01 04 02 05 02 06 02 02 02 00 2d 00 02 01 01 00 1c 00 02 40 01";

fn rfc_handshake() -> Vec<u8> {
    let h = hx(RFC8448_CH);
    assert_eq!(h.len(), 196);
    h
}

/// The RFC's "complete record (201 octets)": `16 03 01 00 c4` + handshake.
fn rfc_record() -> Vec<u8> {
    records(&rfc_handshake(), &[])
}

/// Wraps `hs` into handshake records, splitting at the given offsets.
fn records(hs: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0;
    for &s in splits.iter().chain(std::iter::once(&hs.len())) {
        let frag = &hs[prev..s];
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
        out.extend_from_slice(frag);
        prev = s;
    }
    out
}

/// A minimal TLS 1.2-style ClientHello handshake message with `exts`
/// (`None`: no extensions block at all).
fn hello(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5A; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    if let Some(exts) = exts {
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend_from_slice(&ty.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
    }
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    hs
}

/// server_name extension data with one entry per (name_type, name).
fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (t, n) in names {
        list.push(*t);
        list.extend_from_slice(&(n.len() as u16).to_be_bytes());
        list.extend_from_slice(n);
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    (0, d)
}

fn with_host(name: &[u8]) -> Vec<u8> {
    records(
        &hello(Some(&[(0x000a, vec![0, 2, 0, 0x1d]), sni_ext(&[(0, name)])])),
        &[],
    )
}

#[test]
fn rfc8448_client_hello() {
    let rec = rfc_record();
    assert_eq!(rec.len(), 201);
    assert_eq!(&rec[..5], &[0x16, 0x03, 0x01, 0x00, 0xc4]);
    assert_eq!(peek(&rec), Peek::Sni("server"));
    // Trailing application bytes after the hello are ignored.
    let mut more = rec.clone();
    more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x10]);
    assert_eq!(peek(&more), Peek::Sni("server"));
}

#[test]
fn rfc8448_every_prefix_incomplete() {
    let rec = rfc_record();
    for n in 0..rec.len() {
        match peek(&rec[..n]) {
            Peek::Incomplete { at_least } => {
                assert!(at_least > n && at_least <= rec.len(), "prefix {n}: at_least {at_least}");
            }
            other => panic!("prefix {n}: {other:?}"),
        }
    }
}

#[test]
fn rfc8448_split_across_records() {
    let hs = rfc_handshake();
    let host_at = hs.windows(6).position(|w| w == b"server").unwrap();
    for k in 1..hs.len() {
        let buf = records(&hs, &[k]);
        let inside_host = k > host_at && k < host_at + 6;
        let mut scratch = [0u8; 255];
        assert_eq!(
            peek_with_scratch(&buf, &mut scratch),
            Peek::Sni("server"),
            "split at {k}"
        );
        let expect = if inside_host {
            Peek::Malformed
        } else {
            Peek::Sni("server")
        };
        assert_eq!(peek(&buf), expect, "split at {k}");
        for n in 0..buf.len() {
            assert!(matches!(peek(&buf[..n]), Peek::Incomplete { at_least } if at_least > n && at_least <= buf.len()));
        }
    }
    // Three records, one split in the middle of the handshake header.
    let buf = records(&hs, &[2, 100]);
    assert_eq!(peek(&buf), Peek::Sni("server"));
    // One byte per record up to MAX_RECORDS is too many for 196 bytes.
    let splits: Vec<usize> = (1..hs.len()).collect();
    assert_eq!(peek(&records(&hs, &splits)), Peek::Malformed);
    let splits: Vec<usize> = (1..MAX_RECORDS).map(|i| i * 10).collect();
    assert_eq!(peek(&records(&hs, &splits)), Peek::Sni("server"));
}

#[test]
fn no_sni() {
    assert_eq!(peek(&records(&hello(None), &[])), Peek::NoSni);
    assert_eq!(peek(&records(&hello(Some(&[])), &[])), Peek::NoSni);
    assert_eq!(
        peek(&records(&hello(Some(&[(0x000a, vec![0, 2, 0, 0x1d])])), &[])),
        Peek::NoSni
    );
    // A server_name extension with only a non-host_name entry.
    assert_eq!(peek(&records(&hello(Some(&[sni_ext(&[(7, b"x")])])), &[])), Peek::NoSni);
}

#[test]
fn host_name_validation() {
    assert_eq!(peek(&with_host(b"a")), Peek::Sni("a"));
    let long = vec![b'a'; 255];
    assert_eq!(peek(&with_host(&long)), Peek::Sni(std::str::from_utf8(&long).unwrap()));
    assert_eq!(peek(&with_host(&[b'a'; 256])), Peek::Malformed);
    assert_eq!(peek(&with_host(b"")), Peek::Malformed);
    assert_eq!(peek(&with_host(b"a\0b")), Peek::Malformed);
    assert_eq!(peek(&with_host(b"a\nb")), Peek::Malformed);
    assert_eq!(peek(&with_host(b"a b")), Peek::Malformed);
    assert_eq!(peek(&with_host(b"a\x7fb")), Peek::Malformed);
    assert_eq!(peek(&with_host("é.example".as_bytes())), Peek::Malformed);
}

#[test]
fn not_tls() {
    assert_eq!(peek(b"GET / HTTP/1.1\r\n\r\n"), Peek::NotTls);
    assert_eq!(peek(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Peek::NotTls);
    assert_eq!(peek(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Peek::NotTls); // SSLv2 hello
    assert_eq!(peek(&[0x16, 0x02]), Peek::NotTls);
    assert_eq!(peek(&[0x16, 0x03, 0x09]), Peek::NotTls);
    assert_eq!(peek(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]), Peek::NotTls); // app data
    assert_eq!(peek(b""), Peek::Incomplete { at_least: 5 });
    assert_eq!(peek(&[0x16]), Peek::Incomplete { at_least: 5 });
}

#[test]
fn malformed() {
    let ok = rfc_record();
    // Not a ClientHello (ServerHello type).
    let mut b = ok.clone();
    b[5] = 0x02;
    assert_eq!(peek(&b), Peek::Malformed);
    // Zero-length and oversized records.
    assert_eq!(peek(&[0x16, 0x03, 0x01, 0x00, 0x00]), Peek::Malformed);
    assert_eq!(peek(&[0x16, 0x03, 0x01, 0x40, 0x01]), Peek::Malformed);
    // ClientHello body longer than MAX_HELLO_LEN.
    assert_eq!(
        peek(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x40, 0x01]),
        Peek::Malformed
    );
    // Extensions length off by one (both ways).
    for delta in [1u8, 0xFF] {
        let mut b = ok.clone();
        b[5 + 4 + 2 + 32 + 1 + 2 + 6 + 2 + 1] = 0x91u8.wrapping_add(delta);
        assert_eq!(peek(&b), Peek::Malformed, "delta {delta}");
    }
    // Handshake length shorter than the content.
    assert_eq!(
        peek(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03]),
        Peek::Malformed
    );
    // Continuation record of another content type.
    let hs = rfc_handshake();
    let mut b = records(&hs, &[50]);
    b[5 + 50] = 0x17;
    assert_eq!(peek(&b), Peek::Malformed);
    // Duplicate server_name extension, two host_names in one extension.
    let dup = records(&hello(Some(&[sni_ext(&[(0, b"a")]), sni_ext(&[(0, b"b")])])), &[]);
    assert_eq!(peek(&dup), Peek::Malformed);
    let two = records(&hello(Some(&[sni_ext(&[(0, b"a"), (0, b"b")])])), &[]);
    assert_eq!(peek(&two), Peek::Malformed);
    // Empty server_name list; list length disagreeing with extension length.
    assert_eq!(peek(&records(&hello(Some(&[(0, vec![0, 0])])), &[])), Peek::Malformed);
    assert_eq!(
        peek(&records(&hello(Some(&[(0, vec![0, 9, 0, 0, 1, b'a'])])), &[])),
        Peek::Malformed
    );
    // Odd cipher-suite length.
    let mut h = hello(None);
    h[4 + 2 + 32 + 1 + 1] = 3;
    assert_eq!(peek(&records(&h, &[])), Peek::Malformed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn peek_never_panics(buf in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&buf);
    }

    #[test]
    fn peek_tls_like_never_panics(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut buf = vec![0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xFC];
        buf.extend_from_slice(&tail);
        check(&buf);
    }

    #[test]
    fn peek_mutated_never_panics(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                 split in 1usize..196) {
        let mut buf = records(&rfc_handshake(), &[split]);
        for (i, v) in flips {
            let i = i.index(buf.len());
            buf[i] = v;
        }
        check(&buf);
    }
}

fn check(buf: &[u8]) {
    match peek(buf) {
        Peek::Incomplete { at_least } => assert!(at_least > buf.len()),
        Peek::Sni(h) => assert!(!h.is_empty() && h.len() <= 255 && h.bytes().all(|b| (0x21..=0x7e).contains(&b))),
        _ => {}
    }
    let mut scratch = [0u8; 255];
    let _ = peek_with_scratch(buf, &mut scratch);
}
