//! The properties the fuzz targets check, shared with the stable replay
//! tests (`tests/fuzz_corpus.rs`) so both assert the same thing.
#![doc(hidden)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use crate::answer::{self, Context, Settings};
use crate::zone::{self, ZoneSet};

/// The zone the query fuzzer answers from: wildcards, CNAME chains,
/// a delegation with glue, DNAME, an empty non-terminal.
pub const FUZZ_ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@       SOA ns1 hostmaster 1 7200 3600 1209600 300
        NS  ns1
        MX  10 mail
ns1     A   192.0.2.1
mail    A   192.0.2.25
www     A   192.0.2.10
        AAAA 2001:db8::10
        TXT "hello"
alias   CNAME www
loop1   CNAME loop2
loop2   CNAME loop1
*.wild  A   192.0.2.99
x.y.ent A   192.0.2.7
sub     NS  ns.sub
ns.sub  A   192.0.2.53
dn      DNAME example.org.
self    DNAME self.example.com.
"#;

fn zones() -> &'static ZoneSet {
    static Z: OnceLock<ZoneSet> = OnceLock::new();
    Z.get_or_init(|| {
        let mut s = ZoneSet::new();
        s.insert(Arc::new(
            zone::load_str(FUZZ_ZONE, "example.com.").expect("fuzz zone loads"),
        ));
        s
    })
}

/// Any bytes as a query, over UDP and TCP: no panic; a response, when
/// there is one, is a well-formed message with the query's ID, within the
/// UDP size limit, and an error response is never larger than the query
/// plus an OPT record (no amplification of garbage).
pub fn check_query(data: &[u8]) {
    let st = Settings {
        nsid: Some(b"fuzz".to_vec().into()),
        cookies: Some(crate::cookie::Secrets {
            current: [1; 16],
            previous: None,
        }),
        ..Settings::default()
    };
    let mut out = Vec::new();
    for tcp in [false, true] {
        let cx = Context {
            src: "192.0.2.200".parse().unwrap(),
            tcp,
            now: 1_700_000_000,
        };
        let a = answer::answer(zones(), &st, data, &cx, &mut out);
        if out.is_empty() {
            continue;
        }
        assert!(out.len() >= 12);
        assert_eq!(out[..2], data[..2], "response ID");
        assert!(out[2] & 0x80 != 0, "QR set");
        let msg = domain::base::Message::from_octets(&out[..]).expect("response parses");
        for sec in [msg.answer(), msg.authority(), msg.additional()] {
            for rr in sec.expect("section parses") {
                rr.expect("record parses");
            }
        }
        if !tcp {
            assert!(out.len() <= 4096, "UDP response within our maximum");
            let edns = answer::parse(data).ok().and_then(|q| q.edns);
            if edns.is_none() {
                assert!(out.len() <= 512, "no EDNS: 512 bytes at most");
            }
        }
        if a.kind == answer::Kind::Error && a.rcode != u16::from(answer::RCODE_REFUSED) {
            assert!(out.len() <= data.len() + 11 + 64, "error responses are not amplified");
        }
    }
}

/// Any text as a zone file: loads or fails with an error, never panics;
/// a zone that loads answers its own SOA query.
pub fn check_zonefile(data: &[u8]) {
    // the pre-scan rewrites keep every line where it was
    if let Some(t) = crate::zonetext::for_domain(data) {
        let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
        assert_eq!(lines(&t), lines(data), "a rewrite moved lines");
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(z) = zone::load_str(text, "example.com.") {
        assert!(z.soa().is_some());
        let mut s = ZoneSet::new();
        s.insert(Arc::new(z));
        let mut q = vec![0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x06\x00\x01");
        let mut out = Vec::new();
        let cx = Context {
            src: "192.0.2.200".parse().unwrap(),
            tcp: true,
            now: 0,
        };
        answer::answer(&s, &Settings::default(), &q, &cx, &mut out);
        assert_eq!(out[3] & 0x0f, 0, "SOA query answered NOERROR");
    }
}
