//! DNSSEC of pre-signed zones against real peers:
//!
//! 1. Knot DNS signs the reference zone (`tests/data/dns/dnssec/signed.zone.in`:
//!    a delegation with DS and one without, a wildcard, DNAMEs, an empty
//!    non-terminal, CNAME, MX, SRV, SVCB) twice: `nsec.test.` with NSEC,
//!    `nsec3.test.` with NSEC3 and opt-out. anyedge loads `nsec.test.` from
//!    a file (Knot's signed zone taken by AXFR) and pulls `nsec3.test.` from
//!    Knot by AXFR, then by IXFR after a change Knot re-signs. Every
//!    question the signed zones imply, asked with DO over UDP and TCP, gets
//!    the same answer from both, signatures and proofs included.
//! 2. Unbound (Debian `unbound`), started here on loopback with the zones'
//!    KSKs as trust anchors and a stub zone per zone, validates anyedge's
//!    answers: what Knot's own answers make secure is secure from anyedge
//!    too (every positive and negative answer of the NSEC zone; the NSEC3
//!    opt-out zone's NXDOMAIN and wildcard answers are insecure from both,
//!    see the notes); the same answers judged a month later (signatures
//!    expired, Unbound's `val-override-date`) are bogus, and so is a record
//!    changed without re-signing.
//! 3. A signed zone with a missing signature or a gap in its NSEC3 chain is
//!    refused on reload (zone, owner and problem logged) and the previous
//!    version keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyedge_dnscompare::{build_query, compare, Difference, EdnsQuery, Part, QueryOptions, Question, ZoneIndex};
use anyedge_testkit::dns::{self, axfr_text, exchange, fqdn};
use anyedge_testkit::knot::{Knot, KnotConf};
use anyedge_testkit::unbound::{self, Unbound};
use anyedge_testkit::wait_until;
use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::{Message, Name};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dns/dnssec");
const SEED: u64 = 0x0d05_5ec0;
/// The two signed zones (the first: NSEC, the second: NSEC3 with opt-out).
const APEXES: &[&str] = &["nsec.test.", "nsec3.test."];

/// Knot's signing policies (see /work notes: Knot 3.2 signs within a second
/// of start; `zonefile-sync: -1` keeps the source file unsigned).
const POLICIES: &str = "policy:\n  - id: p-nsec\n    algorithm: ecdsap256sha256\n    nsec3: off\n  \
                        - id: p-nsec3\n    algorithm: ecdsap256sha256\n    nsec3: on\n    \
                        nsec3-iterations: 0\n    nsec3-opt-out: on\n\
                        acl:\n  - id: xfr\n    address: 127.0.0.0/8\n    action: transfer\n";

fn source(apex: &str, serial: u32, extra: &str) -> String {
    let text = std::fs::read_to_string(Path::new(DATA).join("signed.zone.in")).unwrap();
    format!(
        "$ORIGIN {apex}\n{}{extra}",
        text.replace("2026010101", &serial.to_string())
    )
}

struct Signer {
    knot: Knot,
    dir: tempfile::TempDir,
}

/// Knot signing both zones; `notify`: an anyedge to NOTIFY of changes.
fn start_signer(notify: Option<SocketAddr>) -> Signer {
    let dir = tempfile::tempdir().unwrap();
    for apex in ["nsec.test.", "nsec3.test."] {
        std::fs::write(dir.path().join(format!("{apex}zone")), source(apex, 2026010101, "")).unwrap();
    }
    let mut sections = POLICIES.to_string();
    let mut extra = vec!["acl: xfr", "dnssec-signing: on"];
    if let Some(a) = notify {
        sections.push_str(&format!(
            "remote:\n  - id: anyedge\n    address: {}@{}\n",
            a.ip(),
            a.port()
        ));
        extra.push("notify: anyedge");
    }
    let mut conf = KnotConf::new().journal(true).sections(&sections);
    for (apex, policy) in [("nsec.test.", "p-nsec"), ("nsec3.test.", "p-nsec3")] {
        let mut e = extra.clone();
        let p = format!("dnssec-policy: {policy}");
        e.push(&p);
        conf = conf.primary(apex, &dir.path().join(format!("{apex}zone")), &e);
    }
    let knot = Knot::start(&conf);
    for apex in ["nsec.test.", "nsec3.test."] {
        wait_until(&format!("Knot signed {apex}"), Duration::from_secs(10), || {
            let t = axfr_text(knot.addr, apex);
            if t.contains("RRSIG") && t.contains("DNSKEY") {
                Ok(())
            } else {
                Err(t.len())
            }
        });
    }
    Signer { knot, dir }
}

/// Every question `zone_text` implies, asked of both with DO (UDP 1232,
/// UDP 512 with TC and the TCP retry, TCP); the differences found.
fn differences(knot: SocketAddr, ours: SocketAddr, apex: &str, zone_text: &str) -> (usize, Vec<String>) {
    let idx = ZoneIndex::from_zonefile(zone_text.as_bytes(), &Name::<Bytes>::from_str(apex).unwrap()).unwrap();
    let questions: Vec<Question> = idx.questions(SEED);
    let variants: Vec<(&str, bool, u16)> = vec![
        ("udp-do-1232", false, 1232),
        ("udp-do-512", false, 512),
        ("tcp-do", true, 1232),
    ];
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new((0usize, Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(q) = questions.get(j / variants.len()) else {
                    break;
                };
                let (vname, tcp, size) = variants[j % variants.len()];
                let opts = QueryOptions {
                    edns: Some(EdnsQuery {
                        udp_size: size,
                        dnssec_ok: true,
                        ..EdnsQuery::default()
                    }),
                    ..QueryOptions::default()
                };
                let query = build_query(j as u16, q, &opts).unwrap();
                let mut asks = vec![(vname.to_string(), tcp)];
                let mut out = Vec::new();
                let mut n = 0;
                while let Some((name, tcp)) = asks.pop() {
                    match (exchange(knot, &query, tcp), exchange(ours, &query, tcp)) {
                        (Ok(a), Ok(b)) => {
                            n += 1;
                            for d in compare(&a, &b).into_iter().filter(|d| deliberate(q, d, &a).is_none()) {
                                out.push(format!("{q} ({name}):\n{}", d.labelled("knot", "anyedge")));
                            }
                            if !tcp && (a[2] & 2 != 0 || b[2] & 2 != 0) {
                                asks.push((format!("{name}+tcp-retry"), true));
                            }
                        }
                        (a, b) => out.push(format!("{q} ({name}): {:?} {:?}", a.err(), b.err())),
                    }
                }
                let mut f = found.lock().unwrap();
                f.0 += n;
                f.1.extend(out);
            });
        }
    });
    found.into_inner().unwrap()
}

/// Differences from Knot accepted, and why (`knot`: Knot's answer).
fn deliberate(q: &Question, d: &Difference, knot: &[u8]) -> Option<&'static str> {
    let knot_rcode = knot.get(3).map(|b| b & 0x0f);
    if q.qtype == Rtype::ANY && matches!(d.part, Part::Answer | Part::Additional) {
        // RFC 8482 lets a server answer ANY with any one RRset; Knot's
        // choice at a signed node changes from one signing to the next
        return Some("ANY: another RRset (RFC 8482)");
    }
    if d.part == Part::Flag && d.item == "TC" && q.qname.to_string().to_ascii_lowercase().contains(".dnin.") {
        // Knot compresses a DNAME-synthesized answer a few octets less:
        // near 512 octets it truncates where anyedge still fits; the
        // retry over TCP is compared (and equal)
        return Some("TC: compression of a DNAME-synthesized answer");
    }
    if knot_rcode == Some(6) && d.part == Part::Authority {
        // YXDOMAIN (RFC 6672 2.2: the substituted name is too long) is
        // not a negative answer (RFC 4035 3.1.3 asks for no proof); Knot
        // adds its SOA and an NSEC anyway
        return Some("YXDOMAIN without SOA and NSEC");
    }
    None
}

fn assert_same(knot: SocketAddr, ours: SocketAddr, apex: &str, zone_text: &str) {
    let (n, diffs) = differences(knot, ours, apex, zone_text);
    eprintln!("{apex}: {n} DO queries compared, {} differences", diffs.len());
    assert!(n > 300, "{n} queries");
    assert!(
        diffs.is_empty(),
        "{apex}: anyedge differs from Knot on {} answers:\n{}",
        diffs.len(),
        diffs.iter().take(400).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn soa_serial(server: SocketAddr, apex: &str) -> Option<u32> {
    let q = dns::query(7, apex, Rtype::SOA, &QueryOptions::default());
    let a = exchange(server, &q, false).ok()?;
    let m = Message::from_octets(a).ok()?;
    let rr = m.answer().ok()?.limit_to::<domain::rdata::Soa<_>>().next()?.ok()?;
    Some(rr.data().serial().into_int())
}

fn anyedge_config(port: u16, knot: SocketAddr, nsec_file: &Path, state: &Path) -> String {
    format!(
        "[pop]\nname = \"pop1\"\n\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\nstate_dir = \"{}\"\n\n\
         [[dns.zone]]\nname = \"nsec.test.\"\nfile = \"{}\"\n\n\
         [[dns.zone]]\nname = \"nsec3.test.\"\nprimary = [\"{knot}\"]\n",
        state.display(),
        nsec_file.display()
    )
}

/// Knot signs, anyedge serves the signed zones (file and AXFR, then IXFR),
/// every DO answer equal.
#[test]
fn signed_zones_answer_like_knot_from_a_file_and_by_axfr_and_ixfr() {
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let signer = start_signer(Some(addr));
    let knot = signer.knot.addr;
    let work = tempfile::tempdir().unwrap();
    let nsec_text = axfr_text(knot, "nsec.test.");
    let nsec_file = work.path().join("nsec.test.signed");
    std::fs::write(&nsec_file, &nsec_text).unwrap();
    let ours = common::Anyedge::start(&anyedge_config(port, knot, &nsec_file, work.path()), addr);
    let want = soa_serial(knot, "nsec3.test.");
    wait_until("anyedge transferred nsec3.test.", Duration::from_secs(15), || {
        let s = soa_serial(addr, "nsec3.test.");
        if s.is_some() && s == want {
            Ok(())
        } else {
            Err(s)
        }
    });
    assert_same(knot, addr, "nsec.test.", &nsec_text);
    let nsec3_text = axfr_text(knot, "nsec3.test.");
    assert_same(knot, addr, "nsec3.test.", &nsec3_text);

    // A change: Knot re-signs what it touches, NOTIFYs, anyedge pulls the
    // difference by IXFR.
    std::fs::write(
        signer.dir.path().join("nsec3.test.zone"),
        source(
            "nsec3.test.",
            2026010201,
            "new IN A 192.0.2.111\nzz.new-ent IN TXT \"new\"\n",
        ),
    )
    .unwrap();
    signer.knot.knotc(&["zone-reload", "nsec3.test."]);
    let t0 = Instant::now();
    wait_until("Knot re-signed nsec3.test.", Duration::from_secs(15), || {
        let t = axfr_text(knot, "nsec3.test.");
        if t.contains("192.0.2.111") {
            Ok(())
        } else {
            Err(t.len())
        }
    });
    let want = soa_serial(knot, "nsec3.test.");
    wait_until("anyedge follows by IXFR", Duration::from_secs(20), || {
        let s = soa_serial(addr, "nsec3.test.");
        if s == want {
            Ok(())
        } else {
            Err((s, want))
        }
    });
    eprintln!("anyedge at Knot's new serial {want:?} after {:?}", t0.elapsed());
    let log = ours.log();
    assert!(
        log.lines()
            .any(|l| l.contains("zone transferred") && l.contains("nsec3.test") && l.contains("IXFR")),
        "the change came by IXFR:\n{log}"
    );
    let nsec3_text = axfr_text(knot, "nsec3.test.");
    assert_same(knot, addr, "nsec3.test.", &nsec3_text);
    drop(ours);
}

// ---------------------------------------------------------------------------
// Unbound

/// The KSKs (DNSKEY 257) of the zones, as Unbound trust anchors.
fn anchors(knot: SocketAddr) -> Vec<String> {
    let mut v = Vec::new();
    for apex in ["nsec.test.", "nsec3.test."] {
        for l in axfr_text(knot, apex).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 7 && f[3] == "DNSKEY" && f[4] == "257" {
                v.push(format!("{} {} IN DNSKEY {}", f[0], f[1], f[4..].join(" ")));
            }
        }
    }
    assert_eq!(v.len(), 2, "{v:?}");
    v
}

/// Questions of every kind of answer, positive and negative.
const PROBES: &[(&str, Rtype)] = &[
    ("www", Rtype::A),
    ("www", Rtype::MX),
    ("nope", Rtype::A),
    ("c", Rtype::TXT),
    ("a.b.c", Rtype::TXT),
    ("x.wild", Rtype::A),
    ("x.wild", Rtype::MX),
    ("alias", Rtype::A),
    ("x.dnin", Rtype::A),
    ("secure", Rtype::DS),
    ("insecure", Rtype::DS),
    ("svc", Rtype::SVCB),
    ("", Rtype::DNSKEY),
    ("", Rtype::MX),
    ("_sip._udp", Rtype::SRV),
];

/// Knot's signed zones (AXFR copies) written to files in `work`, and an
/// anyedge config serving them on `port`: (config, [(file, zone text)]).
fn signed_files(knot: SocketAddr, work: &Path, port: u16) -> (String, Vec<(PathBuf, String)>) {
    let mut cfg = format!("[pop]\nname = \"pop1\"\n\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n");
    let mut texts = Vec::new();
    for apex in APEXES {
        let f = work.join(format!("{apex}signed"));
        let t = axfr_text(knot, apex);
        std::fs::write(&f, &t).unwrap();
        cfg.push_str(&format!(
            "\n[[dns.zone]]\nname = \"{apex}\"\nfile = \"{}\"\n",
            f.display()
        ));
        texts.push((f, t));
    }
    (cfg, texts)
}

#[test]
fn unbound_validates_anyedge_answers_like_knots_and_notices_tampering() {
    unbound::bin();
    let signer = start_signer(None);
    let knot = signer.knot.addr;
    let keys = anchors(knot);
    let work = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (cfg, _) = signed_files(knot, work.path(), port);
    let ours = common::Anyedge::start(&cfg, addr);
    let via_knot = Unbound::start(knot, &keys, APEXES, None);
    let via_ours = Unbound::start(addr, &keys, APEXES, None);
    let mut secure = 0;
    for apex in ["nsec.test.", "nsec3.test."] {
        for (label, t) in PROBES {
            let n = fqdn(label, apex);
            let k = via_knot
                .validate(&n, *t)
                .unwrap_or_else(|| panic!("{n} {t}: no answer via Knot"));
            let o = via_ours
                .validate(&n, *t)
                .unwrap_or_else(|| panic!("{n} {t}: no answer via anyedge"));
            assert_eq!(o, k, "{n} {t}: Unbound's (rcode, AD) through anyedge vs through Knot");
            assert_ne!(k.0, 2, "{n} {t}: SERVFAIL through Knot too: the setup is wrong");
            if apex == "nsec.test." {
                assert!(o.1, "{n} {t}: not secure through anyedge ({o:?})");
            }
            secure += usize::from(o.1);
        }
    }
    eprintln!("{secure} of {} answers validated as secure", 2 * PROBES.len());
    drop(via_ours);
    // The validator notices expired signatures: the same answers judged a
    // month later (Knot signs for 14 days) are bogus.
    let date = dns::utc_stamp(dns::unix_now() + 30 * 86_400);
    let expired = Unbound::start(addr, &keys, APEXES, Some(&date));
    assert_eq!(
        expired.validate("www.nsec.test.", Rtype::A),
        Some((2, false)),
        "expired signatures are bogus"
    );
    drop(expired);

    // Tampered: an address changed without re-signing makes that answer
    // bogus (SERVFAIL), the rest of the zone stays secure.
    let f = work.path().join("nsec.test.signed");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("192.0.2.10\n"));
    std::fs::write(&f, text.replace("192.0.2.10\n", "192.0.2.11\n")).unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("anyedge serves the tampered zone", Duration::from_secs(10), || {
        let q = dns::query(3, "www.nsec.test.", Rtype::A, &QueryOptions::default());
        let a = exchange(addr, &q, false).map_err(|_| ())?;
        if a.windows(4).any(|w| w == [192, 0, 2, 11]) {
            Ok(())
        } else {
            Err(())
        }
    });
    let via_ours = Unbound::start(addr, &keys, APEXES, None);
    assert_eq!(
        via_ours.validate("www.nsec.test.", Rtype::A),
        Some((2, false)),
        "a tampered answer is bogus"
    );
    assert_eq!(via_ours.validate("mail.nsec.test.", Rtype::A).map(|r| r.1), Some(true));
    drop(ours);
}

/// A signed zone with a missing signature or a gap in its NSEC3 chain is
/// refused at load: the log names the zone, the owner and what is wrong,
/// and the previous version keeps serving (signatures included).
#[test]
fn a_bad_signed_zone_is_refused_and_the_previous_version_keeps_serving() {
    let signer = start_signer(None);
    let knot = signer.knot.addr;
    let work = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (cfg, texts) = signed_files(knot, work.path(), port);
    let ours = common::Anyedge::start(&cfg, addr);
    let signed_aaaa = || {
        let q = dns::query(5, "www.nsec.test.", Rtype::AAAA, &dns::dnssec_ok(false));
        let a = exchange(addr, &q, false).unwrap();
        let m = Message::from_octets(a).unwrap();
        m.answer().unwrap().flatten().map(|r| r.rtype()).collect::<Vec<_>>()
    };
    assert_eq!(signed_aaaa(), vec![Rtype::AAAA, Rtype::RRSIG]);
    // www's AAAA signature removed
    let (f, t) = &texts[0];
    let bad: String = t
        .lines()
        .filter(|l| !(l.starts_with("www.nsec.test.") && l.contains("RRSIG\tAAAA")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(bad.len() < t.len());
    std::fs::write(f, bad).unwrap();
    // one NSEC3 record (and its signature) removed: a gap in the chain
    let (f3, t3) = &texts[1];
    let victim = t3
        .lines()
        .find(|l| l.contains("\tNSEC3\t") && !l.starts_with("nsec3.test."))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let bad3: String = t3
        .lines()
        .filter(|l| !l.starts_with(&victim))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(f3, bad3).unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    ours.wait_log("keeping the previous version of the zone", 2, Duration::from_secs(10));
    let log = ours.log();
    assert!(
        log.lines()
            .any(|l| l.contains("nsec.test.") && l.contains("www.nsec.test.: AAAA has no RRSIG")),
        "zone, owner and problem:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("nsec3.test.") && l.contains("gap in the NSEC3 chain")),
        "zone and problem:\n{log}"
    );
    assert_eq!(
        signed_aaaa(),
        vec![Rtype::AAAA, Rtype::RRSIG],
        "the previous version serves"
    );
    drop(ours);
}
