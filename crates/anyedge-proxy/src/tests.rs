//! Unit tests for the PROXY protocol codec.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Hex string (whitespace ignored) to bytes.
pub(crate) fn hx(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Bitwise CRC32C (Castagnoli, reflected polynomial 0x82F63B78): an
/// implementation independent of the `crc32c` crate the codec uses.
fn crc32c_ref(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str) -> Addresses {
    Addresses::Tcp {
        src: sa(src),
        dst: sa(dst),
    }
}

fn complete(buf: &[u8]) -> (Header<'_>, usize) {
    match decode(buf, 4096) {
        Ok(Decoded::Complete { header, len }) => (header, len),
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn err(buf: &[u8]) -> DecodeError {
    match decode(buf, 4096) {
        Err(e) => e,
        other => panic!("expected error for {buf:?}, got {other:?}"),
    }
}

fn enc_v1(a: &Addresses) -> Vec<u8> {
    let mut v = Vec::new();
    encode_v1(&mut v, a);
    v
}

fn enc_v2(a: &Addresses, tlvs: &[Tlv<'_>], crc: bool) -> Vec<u8> {
    let mut v = Vec::new();
    encode_v2(&mut v, a, tlvs, crc).unwrap();
    v
}

const SIG: &str = "0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A";

// ------------------------------------------------------------ CRC sanity

#[test]
fn crc32c_check_value() {
    // The standard CRC-32C check value (RFC 3720 / "123456789").
    assert_eq!(crc32c_ref(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

// ------------------------------------------------------------ v1 spec examples

const V1_TCP4_MAX: &str = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
const V1_TCP6_MAX: &str =
    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
const V1_UNKNOWN_SHORT: &str = "PROXY UNKNOWN\r\n";
const V1_UNKNOWN_MAX: &str =
    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
const V1_TCP4_EXAMPLE: &str = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";

#[test]
fn v1_spec_lengths() {
    // The spec's worst cases: 56, 104 and 107 bytes, and 15 for the short UNKNOWN.
    assert_eq!(V1_TCP4_MAX.len(), 56);
    assert_eq!(V1_TCP6_MAX.len(), 104);
    assert_eq!(V1_UNKNOWN_MAX.len(), 107);
    assert_eq!(V1_UNKNOWN_SHORT.len(), 15);
}

#[test]
fn v1_tcp4_max_encode_decode() {
    let a = tcp("255.255.255.255:65535", "255.255.255.255:65535");
    assert_eq!(enc_v1(&a), V1_TCP4_MAX.as_bytes());
    let (h, len) = complete(V1_TCP4_MAX.as_bytes());
    assert_eq!(len, 56);
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.addrs, a);
    assert!(h.tlv_bytes.is_empty());
    assert_eq!(h.tlvs().count(), 0);
}

#[test]
fn v1_tcp6_max_encode_decode() {
    let ip = Ipv6Addr::from([0xffff; 8]);
    let a = Addresses::Tcp {
        src: SocketAddr::new(ip.into(), 65535),
        dst: SocketAddr::new(ip.into(), 65535),
    };
    assert_eq!(enc_v1(&a), V1_TCP6_MAX.as_bytes());
    let (h, len) = complete(V1_TCP6_MAX.as_bytes());
    assert_eq!(len, 104);
    assert_eq!(h.addrs, a);
}

#[test]
fn v1_unknown_encode_decode() {
    assert_eq!(enc_v1(&Addresses::Unspecified), V1_UNKNOWN_SHORT.as_bytes());
    let (h, len) = complete(V1_UNKNOWN_SHORT.as_bytes());
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 15));
    // The receiver must ignore everything after UNKNOWN; 107 bytes is the max.
    let (h, len) = complete(V1_UNKNOWN_MAX.as_bytes());
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 107));
}

#[test]
fn v1_tcp4_example_with_payload() {
    let a = tcp("192.168.0.1:56324", "192.168.0.11:443");
    assert_eq!(enc_v1(&a), V1_TCP4_EXAMPLE.as_bytes());
    let mut buf = V1_TCP4_EXAMPLE.as_bytes().to_vec();
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let (h, len) = complete(&buf);
    assert_eq!(len, V1_TCP4_EXAMPLE.len());
    assert_eq!(h.addrs, a);
}

#[test]
fn v1_mixed_families_map_to_tcp6() {
    let a = tcp("192.0.2.1:1234", "[2001:db8::1]:443");
    let line = enc_v1(&a);
    assert_eq!(line, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1234 443\r\n");
    let (h, _) = complete(&line);
    assert_eq!(h.addrs, tcp("[::ffff:192.0.2.1]:1234", "[2001:db8::1]:443"));
}

#[test]
fn v1_encode_appends() {
    let mut out = b"xyz".to_vec();
    encode_v1(&mut out, &Addresses::Unspecified);
    assert_eq!(out, b"xyzPROXY UNKNOWN\r\n");
}

#[test]
fn v1_port_zero_and_uppercase_hex() {
    let (h, _) = complete(b"PROXY TCP6 2001:DB8::A ::1 0 0\r\n");
    assert_eq!(h.addrs, tcp("[2001:db8::a]:0", "[::1]:0"));
}

// ------------------------------------------------------------ v2 by hand

fn v2_ipv4_hand() -> Vec<u8> {
    // sig, ver/cmd 0x21 (v2 PROXY), fam 0x11 (INET STREAM), len 12,
    // 192.168.0.1 -> 192.168.0.11, 56324 -> 443
    hx(&format!("{SIG} 21 11 00 0C  C0 A8 00 01  C0 A8 00 0B  DC 04  01 BB"))
}

fn v2_ipv6_hand() -> Vec<u8> {
    // fam 0x21 (INET6 STREAM), len 36, 2001:db8::1 -> 2001:db8::2, 1234 -> 443
    hx(&format!(
        "{SIG} 21 21 00 24
         20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 01
         20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 02
         04 D2 01 BB"
    ))
}

#[test]
fn v2_ipv4_encode_decode() {
    let a = tcp("192.168.0.1:56324", "192.168.0.11:443");
    let hand = v2_ipv4_hand();
    assert_eq!(enc_v2(&a, &[], false), hand);
    let (h, len) = complete(&hand);
    assert_eq!(len, 28);
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.addrs, a);
    assert!(h.tlv_bytes.is_empty());
}

#[test]
fn v2_ipv6_encode_decode() {
    let a = tcp("[2001:db8::1]:1234", "[2001:db8::2]:443");
    let hand = v2_ipv6_hand();
    assert_eq!(enc_v2(&a, &[], false), hand);
    let (h, len) = complete(&hand);
    assert_eq!(len, 52);
    assert_eq!(h.addrs, a);
}

#[test]
fn v2_local_encode_decode() {
    let hand = hx(&format!("{SIG} 20 00 00 00"));
    assert_eq!(enc_v2(&Addresses::Unspecified, &[], false), hand);
    let (h, len) = complete(&hand);
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 16));
}

#[test]
fn v2_local_ignores_address_block() {
    // LOCAL with an INET block (e.g. a health check): addresses are ignored.
    let mut b = v2_ipv4_hand();
    b[12] = 0x20;
    let (h, len) = complete(&b);
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 28));
}

#[test]
fn v2_mixed_families_map_to_inet6() {
    let a = tcp("192.0.2.1:1234", "[2001:db8::2]:443");
    let hand = hx(&format!(
        "{SIG} 21 21 00 24
         00 00 00 00 00 00 00 00 00 00 FF FF C0 00 02 01
         20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 02
         04 D2 01 BB"
    ));
    assert_eq!(enc_v2(&a, &[], false), hand);
    let (h, _) = complete(&hand);
    assert_eq!(h.addrs, tcp("[::ffff:192.0.2.1]:1234", "[2001:db8::2]:443"));
}

#[test]
fn v2_unspec_and_unix_families_are_unspecified() {
    // PROXY command, UNSPEC family, one NOOP TLV.
    let b = hx(&format!("{SIG} 21 00 00 03 04 00 00"));
    let (h, len) = complete(&b);
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 19));
    assert_eq!(
        h.tlvs().collect::<Vec<_>>(),
        vec![Ok(Tlv {
            kind: tlv::NOOP,
            value: &[]
        })]
    );
    // UNIX STREAM: 216 bytes of addresses, skipped.
    let mut b = hx(&format!("{SIG} 21 31 00 D8"));
    b.extend_from_slice(&[0u8; 216]);
    let (h, len) = complete(&b);
    assert_eq!((h.addrs, len), (Addresses::Unspecified, 232));
}

/// AUTHORITY "example.com", UNIQUE_ID "abc", 0xE0 "fra1", CRC32C: all
/// TLVs written out by hand; the CRC computed on a hand-zeroed buffer.
const TLV_HEADER_CRC: u32 = 575_435_111; // 0x224C_7167

fn v2_tlv_hand_zeroed() -> Vec<u8> {
    // len = 12 (addrs) + 14 + 6 + 7 + 7 = 46 = 0x2E
    hx(&format!(
        "{SIG} 21 11 00 2E
         C0 A8 00 01  C0 A8 00 0B  DC 04  01 BB
         02 00 0B  65 78 61 6D 70 6C 65 2E 63 6F 6D
         05 00 03  61 62 63
         E0 00 04  66 72 61 31
         03 00 04  00 00 00 00"
    ))
}

fn v2_tlvs() -> [Tlv<'static>; 3] {
    [
        Tlv {
            kind: tlv::AUTHORITY,
            value: b"example.com",
        },
        Tlv {
            kind: tlv::UNIQUE_ID,
            value: b"abc",
        },
        Tlv {
            kind: tlv::ANYEDGE_POP,
            value: b"fra1",
        },
    ]
}

#[test]
fn v2_tlvs_crc_encode_decode() {
    let a = tcp("192.168.0.1:56324", "192.168.0.11:443");
    let mut hand = v2_tlv_hand_zeroed();
    assert_eq!(hand.len(), 62);
    let crc = crc32c::crc32c(&hand);
    assert_eq!(crc, crc32c_ref(&hand), "independent CRC implementations disagree");
    assert_eq!(crc, TLV_HEADER_CRC, "hard-coded CRC");
    hand[58..62].copy_from_slice(&crc.to_be_bytes());

    let got = enc_v2(&a, &v2_tlvs(), true);
    assert_eq!(got, hand);

    let (h, len) = complete(&hand);
    assert_eq!(len, 62);
    assert_eq!(h.addrs, a);
    assert_eq!(h.authority(), Some(&b"example.com"[..]));
    assert_eq!(h.unique_id(), Some(&b"abc"[..]));
    assert_eq!(h.pop(), Some(&b"fra1"[..]));
    assert_eq!(h.find(tlv::ALPN), None);
    let tlvs: Vec<_> = h.tlvs().collect::<Result<_, _>>().unwrap();
    assert_eq!(&tlvs[..3], &v2_tlvs()[..]);
    assert_eq!(tlvs[3].kind, tlv::CRC32C);
    assert_eq!(tlvs[3].value, &crc.to_be_bytes()[..]);
}

#[test]
fn v2_tlvs_without_crc() {
    let a = tcp("192.168.0.1:56324", "192.168.0.11:443");
    let mut hand = v2_tlv_hand_zeroed();
    hand.truncate(55);
    hand[15] = 0x27; // 46 - 7
    assert_eq!(enc_v2(&a, &v2_tlvs(), false), hand);
    let (h, len) = complete(&hand);
    assert_eq!(len, 55);
    assert_eq!(h.authority(), Some(&b"example.com"[..]));
}

#[test]
fn v2_local_with_crc() {
    let b = enc_v2(&Addresses::Unspecified, &[], true);
    assert_eq!(b.len(), 23);
    assert_eq!(&b[12..16], &[0x20, 0x00, 0x00, 0x07]);
    assert_eq!(crc32c_ref(&[&b[..19], &[0u8; 4][..]].concat()).to_be_bytes(), b[19..23]);
    let (h, _) = complete(&b);
    assert_eq!(h.addrs, Addresses::Unspecified);
}

#[test]
fn v2_encode_appends_and_too_long() {
    let mut out = b"keep".to_vec();
    let big = vec![0u8; 65535];
    let t = [Tlv {
        kind: tlv::NOOP,
        value: &big,
    }];
    assert_eq!(
        encode_v2(&mut out, &Addresses::Unspecified, &t, false),
        Err(EncodeError::TooLong)
    );
    assert_eq!(out, b"keep", "nothing appended on error");
    // Exactly at the limit: 3 + 65532 = 65535.
    let t = [Tlv {
        kind: tlv::NOOP,
        value: &big[..65532],
    }];
    encode_v2(&mut out, &Addresses::Unspecified, &t, false).unwrap();
    assert_eq!(out.len(), 4 + 16 + 65535);
    assert_eq!(&out[..4], b"keep");
    let (h, len) = match decode(&out[4..], usize::MAX) {
        Ok(Decoded::Complete { header, len }) => (header, len),
        other => panic!("{other:?}"),
    };
    assert_eq!(len, 16 + 65535);
    assert_eq!(h.tlvs().count(), 1);
    // With crc it no longer fits.
    assert_eq!(
        encode_v2(&mut out, &Addresses::Unspecified, &t, true),
        Err(EncodeError::TooLong)
    );
}

#[test]
fn v2_max_len() {
    let b = enc_v2(&tcp("1.2.3.4:1", "5.6.7.8:2"), &v2_tlvs(), true);
    assert_eq!(b.len(), 62);
    assert!(matches!(decode(&b, 62), Ok(Decoded::Complete { len: 62, .. })));
    assert_eq!(decode(&b, 61), Err(DecodeError::TooLong { len: 62, max: 61 }));
    // Reported as soon as the length field is seen.
    assert_eq!(decode(&b[..16], 61), Err(DecodeError::TooLong { len: 62, max: 61 }));
    // 0xFFFF declared vs 4096 allowed.
    let b = hx(&format!("{SIG} 21 11 FF FF"));
    assert_eq!(decode(&b, 4096), Err(DecodeError::TooLong { len: 65551, max: 4096 }));
}

// ------------------------------------------------------------ negatives

#[test]
fn not_proxy_detected_at_first_differing_byte() {
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for n in 1..=http.len() {
        assert_eq!(decode(&http[..n], 4096), Err(DecodeError::NotProxy));
    }
    // Shares a prefix with "PROXY ": NotProxy exactly at the 5th byte.
    assert!(matches!(decode(b"PROX", 4096), Ok(Decoded::Incomplete { .. })));
    assert_eq!(decode(b"PROXI", 4096), Err(DecodeError::NotProxy));
    assert_eq!(decode(b"PROXY\r\n", 4096), Err(DecodeError::NotProxy));
    // Shares a prefix with the v2 signature.
    assert!(matches!(decode(b"\r\n\r\n", 4096), Ok(Decoded::Incomplete { .. })));
    assert_eq!(decode(b"\r\n\r\nX", 4096), Err(DecodeError::NotProxy));
    // TLS ClientHello.
    assert_eq!(decode(&[0x16, 0x03, 0x01], 4096), Err(DecodeError::NotProxy));
    assert_eq!(decode(&[0u8], 4096), Err(DecodeError::NotProxy));
}

#[test]
fn empty_is_incomplete() {
    assert_eq!(decode(b"", 4096), Ok(Decoded::Incomplete { at_least: 15 }));
}

#[test]
fn too_long_v1() {
    // 107 bytes without CRLF.
    let mut b = b"PROXY UNKNOWN ".to_vec();
    b.resize(107, b'x');
    assert_eq!(decode(&b, 4096), Err(DecodeError::TooLong { len: 107, max: 107 }));
    assert!(matches!(
        decode(&b[..106], 4096),
        Ok(Decoded::Incomplete { at_least: 107 })
    ));
    // CRLF at 107..109: line of 108 bytes.
    let mut c = b.clone();
    c.extend_from_slice(b"\r\n");
    assert_eq!(decode(&c, 4096), Err(DecodeError::TooLong { len: 109, max: 107 }));
    // CR as the 107th byte: line would be 108.
    let mut c = b[..106].to_vec();
    c.push(b'\r');
    assert_eq!(decode(&c, 4096), Err(DecodeError::TooLong { len: 108, max: 107 }));
    // A smaller max_len also caps v1.
    assert_eq!(
        decode(V1_TCP4_MAX.as_bytes(), 40),
        Err(DecodeError::TooLong { len: 56, max: 40 })
    );
}

#[test]
fn bad_version() {
    for vc in [0x01u8, 0x11, 0x31, 0xF1] {
        let mut b = v2_ipv4_hand();
        b[12] = vc;
        assert_eq!(err(&b), DecodeError::BadVersion, "{vc:#x}");
        assert_eq!(err(&b[..13]), DecodeError::BadVersion, "detected early");
    }
}

#[test]
fn bad_command() {
    for vc in [0x22u8, 0x2F] {
        let mut b = v2_ipv4_hand();
        b[12] = vc;
        assert_eq!(err(&b), DecodeError::BadCommand, "{vc:#x}");
        assert_eq!(err(&b[..13]), DecodeError::BadCommand);
    }
}

#[test]
fn bad_family() {
    // family 4, transport 3, INET DGRAM and INET UNSPEC with PROXY.
    for fam in [0x41u8, 0x13, 0x12, 0x10, 0x22] {
        let mut b = v2_ipv6_hand();
        b[13] = fam;
        assert_eq!(err(&b), DecodeError::BadFamily, "{fam:#x}");
    }
    let mut b = v2_ipv4_hand();
    b[13] = 0x51;
    assert_eq!(err(&b[..14]), DecodeError::BadFamily, "detected early");
}

#[test]
fn bad_address_length() {
    // INET with 8 bytes, INET6 with 12, UNIX with 36.
    for (fam, len) in [(0x11u8, 8u8), (0x21, 12), (0x31, 36)] {
        let mut b = hx(&format!("{SIG} 21 00 00 00"));
        b[13] = fam;
        b[15] = len;
        b.resize(16 + usize::from(len), 0);
        assert_eq!(err(&b), DecodeError::BadAddressLength, "{fam:#x}");
        assert_eq!(err(&b[..16]), DecodeError::BadAddressLength, "detected early");
    }
}

#[test]
fn bad_v1_lines() {
    let cases: &[&str] = &[
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",     // double space
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",     // trailing space
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",    // extra field
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",        // missing field
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",     // leading zero port
        "PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",     // leading zero port
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  // port overflow
        "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", // port overflow
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",     // sign
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",     // sign
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",     // leading zero octet
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",    // bad octet
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",        // short address
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",          // v6 in TCP4
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",          // v4 in TCP6
        "PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n",     // zone id
        "PROXY TCP6 [::1] ::1 1 2\r\n",            // brackets
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",        // LF without CR
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",       // CR without LF
        "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",     // tab
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",      // unknown proto
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",      // lowercase proto
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",     // double space
        "PROXY UNKNOWNX\r\n",                      // not UNKNOWN
        "PROXY TCP4\r\n",                          // nothing after proto
        "PROXY TCP4 \r\n",                         // nothing after proto
        "PROXY \r\n",                              // no proto
    ];
    for c in cases {
        match decode(c.as_bytes(), 4096) {
            Err(DecodeError::BadV1Line(why)) => assert!(!why.is_empty()),
            other => panic!("{c:?}: expected BadV1Line, got {other:?}"),
        }
    }
    // Early rejection, before any CRLF.
    assert!(matches!(decode(b"PROXY X", 4096), Err(DecodeError::BadV1Line(_))));
    assert!(matches!(
        decode(b"PROXY TCP4 1.2.3.4 z", 4096),
        Err(DecodeError::BadV1Line(_))
    ));
    assert!(matches!(
        decode(b"PROXY TCP4 1\n", 4096),
        Err(DecodeError::BadV1Line(_))
    ));
}

#[test]
fn bad_tlv() {
    // TLV claims 5 bytes, only 3 present.
    let b = hx(&format!("{SIG} 21 00 00 06 E0 00 05 61 62 63"));
    assert_eq!(err(&b), DecodeError::BadTlv);
    // Truncated TLV header.
    let b = hx(&format!("{SIG} 21 00 00 02 E0 00"));
    assert_eq!(err(&b), DecodeError::BadTlv);
    // CRC32C TLV of the wrong length.
    let b = hx(&format!("{SIG} 20 00 00 05 03 00 02 00 00"));
    assert_eq!(err(&b), DecodeError::BadTlv);
    // Two CRC32C TLVs.
    let mut b = enc_v2(&Addresses::Unspecified, &[], true);
    b.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
    b[15] = 14;
    assert_eq!(err(&b), DecodeError::BadTlv);
    // The iterator reports the error once, then stops.
    let h = Header {
        version: Version::V2,
        addrs: Addresses::Unspecified,
        tlv_bytes: &[0x04, 0x00, 0x00, 0xE0, 0x00, 0x09, 0x01],
    };
    let v: Vec<_> = h.tlvs().collect();
    assert_eq!(
        v,
        vec![
            Ok(Tlv {
                kind: tlv::NOOP,
                value: &[]
            }),
            Err(DecodeError::BadTlv)
        ]
    );
    assert_eq!(h.pop(), None);
}

#[test]
fn bad_crc() {
    let a = tcp("192.168.0.1:56324", "192.168.0.11:443");
    let good = enc_v2(&a, &v2_tlvs(), true);
    // Flip every byte after the fixed part except... all of them must fail.
    // The CRC TLV is last: 7 bytes, type first. Changing its type byte turns
    // it into another TLV, and a header without a CRC TLV is not checked
    // (the spec makes the TLV optional), so that one byte is skipped.
    let crc_type_at = good.len() - 7;
    assert_eq!(good[crc_type_at], 0x03);
    for i in (16..good.len()).filter(|&i| i != crc_type_at) {
        let mut b = good.clone();
        b[i] ^= 0x01;
        match decode(&b, 4096) {
            Err(DecodeError::BadCrc) | Err(DecodeError::BadTlv) => {}
            other => panic!("flip at {i}: {other:?}"),
        }
    }
    let mut b = good.clone();
    b[20] ^= 0xFF; // address byte
    assert_eq!(err(&b), DecodeError::BadCrc);
    let mut b = good;
    b[61] ^= 0x80; // the CRC itself
    assert_eq!(err(&b), DecodeError::BadCrc);
}

fn valid_headers() -> Vec<Vec<u8>> {
    vec![
        V1_TCP4_MAX.as_bytes().to_vec(),
        V1_TCP6_MAX.as_bytes().to_vec(),
        V1_UNKNOWN_SHORT.as_bytes().to_vec(),
        V1_UNKNOWN_MAX.as_bytes().to_vec(),
        V1_TCP4_EXAMPLE.as_bytes().to_vec(),
        b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 0 65535\r\n".to_vec(),
        v2_ipv4_hand(),
        v2_ipv6_hand(),
        hx(&format!("{SIG} 20 00 00 00")),
        enc_v2(&tcp("192.168.0.1:56324", "192.168.0.11:443"), &v2_tlvs(), true),
        enc_v2(&Addresses::Unspecified, &v2_tlvs(), true),
    ]
}

#[test]
fn every_prefix_is_incomplete() {
    for full in valid_headers() {
        assert!(matches!(decode(&full, 4096), Ok(Decoded::Complete { len, .. }) if len == full.len()));
        for n in 0..full.len() {
            match decode(&full[..n], 4096) {
                Ok(Decoded::Incomplete { at_least }) => {
                    assert!(at_least > n, "at_least {at_least} <= {n}");
                    assert!(at_least <= full.len(), "at_least {at_least} > {}", full.len());
                }
                other => panic!("prefix {n} of {full:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn errors_display() {
    assert_eq!(
        DecodeError::TooLong { len: 5, max: 4 }.to_string(),
        "PROXY header too long (5 bytes, limit 4)"
    );
    assert!(DecodeError::BadV1Line("bad port").to_string().contains("bad port"));
    assert!(!EncodeError::TooLong.to_string().is_empty());
}

#[test]
fn signature_prefix() {
    assert!(is_v2_signature_prefix(b""));
    assert!(is_v2_signature_prefix(b"\r\n\r"));
    assert!(is_v2_signature_prefix(&v2_ipv4_hand()));
    assert!(!is_v2_signature_prefix(b"PROXY"));
}

#[test]
fn whole_signature_only() {
    for partial in [&b""[..], b"P", b"PROXY", b"\r\n", b"\r\n\r\n\x00\r\nQUI"] {
        assert!(!has_signature(partial), "{partial:?}");
    }
    assert!(has_signature(b"PROXY "));
    assert!(has_signature(b"PROXY TCP4 1.2.3.4"));
    assert!(has_signature(&v2_ipv4_hand()));
    assert!(!has_signature(b"POST / HTTP/1.1\r\n"));
}

// ------------------------------------------------------------ proptest

fn arb_sockaddr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            p,
            0,
            0
        ))),
    ]
}

fn arb_addrs() -> impl Strategy<Value = Addresses> {
    prop_oneof![
        1 => Just(Addresses::Unspecified),
        6 => (arb_sockaddr(), arb_sockaddr()).prop_map(|(src, dst)| Addresses::Tcp { src, dst }),
    ]
}

/// What the decoder returns for `a`: mixed families come back v4-mapped.
fn normalized(a: Addresses) -> Addresses {
    match a {
        Addresses::Tcp {
            src: SocketAddr::V4(_),
            dst: SocketAddr::V4(_),
        }
        | Addresses::Unspecified => a,
        Addresses::Tcp { src, dst } => Addresses::Tcp {
            src: SocketAddr::V6(mapped(src)),
            dst: SocketAddr::V6(mapped(dst)),
        },
    }
}

fn arb_tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<u8>().prop_filter("CRC32C is added by the encoder", |k| *k != tlv::CRC32C),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_v1(a in arb_addrs(), trailer in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut buf = vec![0xAA];
        encode_v1(&mut buf, &a);
        let n = buf.len() - 1;
        prop_assert!(n <= V1_MAX_LEN);
        buf.extend_from_slice(&trailer);
        match decode(&buf[1..], 4096) {
            Ok(Decoded::Complete { header, len }) => {
                prop_assert_eq!(len, n);
                prop_assert_eq!(header.version, Version::V1);
                prop_assert_eq!(header.addrs, normalized(a));
                prop_assert!(header.tlv_bytes.is_empty());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn roundtrip_v2(a in arb_addrs(), tl in arb_tlvs(), crc in any::<bool>(),
                    trailer in prop::collection::vec(any::<u8>(), 0..16)) {
        let tlvs: Vec<Tlv<'_>> = tl.iter().map(|(k, v)| Tlv { kind: *k, value: v }).collect();
        let mut buf = vec![0xAA];
        encode_v2(&mut buf, &a, &tlvs, crc).unwrap();
        let n = buf.len() - 1;
        buf.extend_from_slice(&trailer);
        match decode(&buf[1..], 65551) {
            Ok(Decoded::Complete { header, len }) => {
                prop_assert_eq!(len, n);
                prop_assert_eq!(header.version, Version::V2);
                prop_assert_eq!(header.addrs, normalized(a));
                let got: Vec<Tlv<'_>> = header.tlvs().collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(&got[..tlvs.len()], &tlvs[..]);
                if crc {
                    prop_assert_eq!(got.len(), tlvs.len() + 1);
                    prop_assert_eq!(got[tlvs.len()].kind, tlv::CRC32C);
                } else {
                    prop_assert_eq!(got.len(), tlvs.len());
                }
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // Every strict prefix is Incomplete.
        for k in [0, 1, 12, 15, 16, n / 2, n - 1] {
            let k = k.min(n - 1);
            let is_incomplete = matches!(decode(&buf[1..1 + k], 65551), Ok(Decoded::Incomplete { .. }));
            prop_assert!(is_incomplete);
        }
    }

    #[test]
    fn decode_never_panics(buf in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..5000) {
        check_decode_invariants(&buf, max);
    }

    #[test]
    fn decode_v2_like_never_panics(tail in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..5000) {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&tail);
        check_decode_invariants(&buf, max);
    }

    #[test]
    fn decode_v1_like_never_panics(tail in "[ -~\r\n]{0,120}", max in 0usize..200) {
        let mut buf = b"PROXY ".to_vec();
        buf.extend_from_slice(tail.as_bytes());
        check_decode_invariants(&buf, max);
    }

    #[test]
    fn decode_mutated_never_panics(idx in any::<prop::sample::Index>(), bit in 0u8..8, which in 0usize..11) {
        let mut b = valid_headers().swap_remove(which);
        let i = idx.index(b.len());
        b[i] ^= 1 << bit;
        check_decode_invariants(&b, 4096);
    }
}

fn check_decode_invariants(buf: &[u8], max: usize) {
    match decode(buf, max) {
        Ok(Decoded::Complete { header, len }) => {
            assert!(len <= buf.len());
            assert!(len <= max);
            // decode validated TLVs, so iterating cannot fail.
            assert!(header.tlvs().all(|t| t.is_ok()));
        }
        Ok(Decoded::Incomplete { at_least }) => assert!(at_least > buf.len()),
        Err(_) => {}
    }
}
