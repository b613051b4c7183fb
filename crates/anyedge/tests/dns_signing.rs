//! Online signing against real peers:
//!
//! 1. `anyedge dns keygen` makes the keys (KSK ECDSA P-256 + ZSK Ed25519
//!    for the NSEC zone, one ECDSA CSK for the NSEC3 zone); `anyedge dns
//!    ds` prints the DS that `ldns-key2ds` (Debian `ldnsutils`) computes.
//! 2. anyedge signs the unsigned reference zone at load (NSEC and NSEC3,
//!    no opt-out); Unbound, with the generated KSK/CSK as trust anchor and
//!    anyedge as the stub authority, finds every positive and negative
//!    answer secure (AD); judged a month later (signatures expired,
//!    `val-override-date`) an answer is bogus, and so is a record changed
//!    in an AXFR copy of the signed zone served without re-signing.
//! 3. `ldns-verify-zone` accepts an AXFR of each signed zone from anyedge.
//! 4. Bad input: a DNSKEY in the zone file without its key file, a key of
//!    an unsupported algorithm: the reload is refused naming the zone and
//!    the problem, and the previous version keeps serving.
//! 5. Online signatures computed and signature cache hits and misses are
//!    counted in /metrics and the status JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyedge_testkit::dns::{self, axfr_text, exchange, fqdn};
use anyedge_testkit::unbound::Unbound;
use anyedge_testkit::wait_until;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dns/dnssec");
const BIN: &str = env!("CARGO_BIN_EXE_anyedge");

/// (apex, denial, keygen flag sets)
const ZONES: &[(&str, &str, &[&[&str]])] = &[
    (
        "nsec.test.",
        "nsec",
        &[&["--ksk", "--algorithm", "ecdsap256"], &["--algorithm", "ed25519"]],
    ),
    ("nsec3.test.", "nsec3", &[&["--csk", "--algorithm", "ecdsap256"]]),
    ("compact.test.", "compact", &[&["--csk", "--algorithm", "ed25519"]]),
];

fn keygen(dir: &Path, zone: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(BIN)
        .args(["dns", "keygen", "--zone", zone, "--out"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Setup {
    work: tempfile::TempDir,
    addr: SocketAddr,
    /// Trust anchors: the DNSKEY lines of the SEP keys.
    anchors: Vec<String>,
    /// (apex, key stems)
    keys: Vec<(String, Vec<PathBuf>)>,
}

fn zone_file(work: &Path, apex: &str) -> PathBuf {
    work.join(format!("{apex}zone"))
}

fn config(s: &Setup) -> String {
    let port = s.addr.port();
    let mut cfg = format!("[pop]\nname = \"pop1\"\n\n[dns]\nlisten = [\"127.0.0.1:{port}\"]\n");
    for (apex, stems) in &s.keys {
        let denial = ZONES.iter().find(|z| z.0 == apex).map_or("compact", |z| z.1);
        let keys: Vec<String> = stems.iter().map(|k| format!("\"{}\"", k.display())).collect();
        cfg.push_str(&format!(
            "\n[[dns.zone]]\nname = \"{apex}\"\nfile = \"{}\"\nallow_transfer = [\"127.0.0.1/32\"]\n\
             dnssec = {{ keys = [{}], denial = \"{denial}\" }}\n",
            zone_file(s.work.path(), apex).display(),
            keys.join(", ")
        ));
    }
    cfg
}

fn setup(zones: &[(&str, &str, &[&[&str]])]) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(DATA).join("signed.zone.in")).unwrap();
    let mut anchors = Vec::new();
    let mut keys = Vec::new();
    for (apex, _, gens) in zones {
        std::fs::write(zone_file(work.path(), apex), format!("$ORIGIN {apex}\n{text}")).unwrap();
        let mut stems = Vec::new();
        for g in *gens {
            let stem = keygen(work.path(), apex, g);
            let key = std::fs::read_to_string(format!("{}.key", stem.display())).unwrap();
            let line = key.lines().find(|l| !l.starts_with(';')).unwrap().to_string();
            if line.contains(" DNSKEY 257 ") {
                anchors.push(line);
            }
            stems.push(stem);
        }
        keys.push((apex.to_string(), stems));
    }
    let port = common::free_port();
    Setup {
        work,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        anchors,
        keys,
    }
}

/// A query with DO (EDNS, 1232 octets), without RD.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    dns::query(id, name, qtype.into(), &dns::dnssec_ok(false))
}

/// Questions of every kind of answer: positive, NXDOMAIN, NODATA,
/// wildcard, empty non-terminal, CNAME, DNAME, DS at delegations, apex.
const PROBES: &[(&str, u16, u8)] = &[
    ("www", 1, 0),
    ("www", 15, 0),
    ("nope", 1, 3),
    ("deep.nope", 28, 3),
    ("c", 16, 0),
    ("a.b.c", 16, 0),
    ("x.wild", 1, 0),
    ("x.wild", 15, 0),
    ("alias", 1, 0),
    ("x.dnin", 1, 0),
    ("secure", 43, 0),
    ("insecure", 43, 0),
    ("svc", 64, 0),
    ("", 48, 0),
    ("", 59, 0),
    ("", 15, 0),
    ("_sip._udp", 33, 0),
];

#[test]
fn ds_printed_is_the_one_ldns_computes() {
    let s = setup(&ZONES[..1]);
    let stems = &s.keys[0].1;
    let ours = Command::new(BIN)
        .args(["dns", "ds", "nsec.test.", "--key"])
        .arg(&stems[0])
        .output()
        .unwrap();
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    let ours = String::from_utf8(ours.stdout).unwrap();
    // ldns-key2ds writes K<zone>+<alg>+<tag>.ds next to the working directory
    let out = Command::new("ldns-key2ds")
        .current_dir(s.work.path())
        .args(["-n", "-2"])
        .arg(format!("{}.key", stems[0].display()))
        .output()
        .expect("ldns-key2ds (Debian ldnsutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs = String::from_utf8(out.stdout).unwrap();
    let fields = |t: &str| -> Vec<String> {
        let f: Vec<String> = t.split_whitespace().map(|x| x.to_ascii_lowercase()).collect();
        let i = f.iter().position(|x| x == "ds").unwrap();
        f[i + 1..].to_vec()
    };
    assert_eq!(fields(&ours), fields(&theirs), "ours: {ours} ldns: {theirs}");
    // from the config too; a ZSK has no DS
    let cfg = s.work.path().join("anyedge.toml");
    std::fs::write(&cfg, config(&s)).unwrap();
    let out = Command::new(BIN)
        .args(["dns", "ds", "nsec.test.", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), ours);
}

#[test]
fn unbound_validates_online_signed_zones_and_ldns_verifies_their_axfr() {
    let s = setup(ZONES);
    let ours = common::Anyedge::start(&config(&s), s.addr);
    let apexes: Vec<&str> = ZONES.iter().map(|z| z.0).collect();
    let u = Unbound::start(s.addr, &s.anchors, &apexes, None);
    for apex in &apexes {
        for (label, t, rcode) in PROBES {
            let n = fqdn(label, apex);
            let r = u.validate(&n, *t).unwrap_or_else(|| panic!("{n} {t}: no answer"));
            // RFC 9824: a name that does not exist "exists" without data
            let rcode = if apex.starts_with("compact") { 0 } else { *rcode };
            assert_eq!(
                r,
                (rcode, true),
                "{n} type {t}: (rcode, AD) through Unbound\n{}",
                ours.log()
            );
        }
    }
    // ldns-verify-zone on an AXFR from anyedge (a compact zone has no
    // chain to verify)
    for apex in apexes.iter().filter(|a| !a.starts_with("compact")) {
        let f = s.work.path().join(format!("{apex}axfr"));
        let text = axfr_text(s.addr, apex);
        assert!(text.contains("RRSIG"), "{text}");
        std::fs::write(&f, &text).unwrap();
        let out = Command::new("ldns-verify-zone")
            .arg(&f)
            .output()
            .expect("ldns-verify-zone (Debian ldnsutils)");
        assert!(
            out.status.success(),
            "{apex}: ldns-verify-zone: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(u);
    // a month later the signatures (14 days) have expired: bogus
    let date = dns::utc_stamp(dns::unix_now() + 30 * 86_400);
    let expired = Unbound::start(s.addr, &s.anchors, &apexes, Some(&date));
    for apex in &apexes {
        assert_eq!(
            expired.validate(&fqdn("www", apex), 1),
            Some((2, false)),
            "{apex}: expired signatures are bogus"
        );
    }
    drop(expired);
    // tampered: the signed zone (AXFR) with an address changed, served as
    // a pre-signed zone by a second anyedge
    let port2 = common::free_port();
    let addr2 = SocketAddr::from(([127, 0, 0, 1], port2));
    let text = axfr_text(s.addr, "nsec.test.");
    assert!(text.contains("192.0.2.10\n"));
    let f = s.work.path().join("tampered.zone");
    std::fs::write(&f, text.replace("192.0.2.10\n", "192.0.2.11\n")).unwrap();
    let tampered = common::Anyedge::start(
        &format!(
            "[pop]\nname = \"pop2\"\n\n[dns]\nlisten = [\"127.0.0.1:{port2}\"]\n\n\
             [[dns.zone]]\nname = \"nsec.test.\"\nfile = \"{}\"\n",
            f.display()
        ),
        addr2,
    );
    let u = Unbound::start(addr2, &s.anchors[..1], &["nsec.test."], None);
    assert_eq!(u.validate("www.nsec.test.", 1), Some((2, false)), "tampered: bogus");
    assert_eq!(u.validate("mail.nsec.test.", 1), Some((0, true)), "the rest is secure");
    drop(tampered);
    drop(ours);
}

#[test]
fn bad_keys_are_refused_naming_the_zone_and_the_previous_version_serves() {
    let s = setup(&ZONES[1..]);
    let ours = common::Anyedge::start(&config(&s), s.addr);
    let signed_www = || {
        let a = exchange(s.addr, &query(5, "www.nsec3.test.", 1), false).unwrap();
        // an RRSIG (type 46) in the answer
        a.windows(4).any(|w| w == [0, 46, 0, 1])
    };
    assert!(signed_www());
    let zf = zone_file(s.work.path(), "nsec3.test.");
    let orig = std::fs::read_to_string(&zf).unwrap();
    // 1. a DNSKEY in the zone file that no key file backs
    let foreign = keygen(&s.work.path().join("other"), "nsec3.test.", &["--algorithm", "ed25519"]);
    let fk = std::fs::read_to_string(format!("{}.key", foreign.display())).unwrap();
    let line = fk.lines().find(|l| !l.starts_with(';')).unwrap();
    std::fs::write(&zf, format!("{orig}{line}\nnew IN A 192.0.2.200\n")).unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    ours.wait_log("keeping the previous version of the zone", 1, Duration::from_secs(10));
    let log = ours.log();
    assert!(
        log.lines()
            .any(|l| l.contains("nsec3.test.") && l.contains("has no key file among dnssec.keys")),
        "{log}"
    );
    assert!(signed_www(), "the previous version serves");
    // 2. a key of an algorithm we do not sign with (RSASHA256)
    std::fs::write(&zf, &orig).unwrap();
    let stem = &s.keys[0].1[0];
    std::fs::write(
        format!("{}.key", stem.display()),
        "nsec3.test. IN DNSKEY 257 3 8 AwEAAQ==\n",
    )
    .unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    ours.wait_log("keeping the previous version of the zone", 2, Duration::from_secs(10));
    let log = ours.log();
    assert!(
        log.lines()
            .any(|l| l.contains("nsec3.test.") && l.contains("DNSKEY algorithm 8 is not supported for signing")),
        "{log}"
    );
    assert!(signed_www(), "the previous version serves");
    drop(ours);
}

/// The RRSIG rdata of (`name`, `qtype`) answered with DO, and the SOA
/// serial, straight from anyedge.
fn rrsig_and_serial(server: SocketAddr, name: &str, qtype: u16, apex: &str) -> (Vec<u8>, u32) {
    let a = exchange(server, &query(7, name, qtype), false).unwrap();
    let m = domain::base::Message::from_octets(a).unwrap();
    let sig = m
        .answer()
        .unwrap()
        .limit_to::<domain::rdata::Rrsig<_, domain::base::ParsedName<_>>>()
        .next()
        .unwrap()
        .unwrap();
    let sig = sig.data().signature().to_vec();
    let s = exchange(server, &query(8, apex, 6), false).unwrap();
    let m = domain::base::Message::from_octets(s).unwrap();
    let soa = m
        .answer()
        .unwrap()
        .limit_to::<domain::rdata::Soa<_>>()
        .next()
        .unwrap()
        .unwrap();
    (sig, soa.data().serial().into_int())
}

/// A reload re-signs only what changed: the other RRsets keep their
/// signatures, the serial moves on, and Unbound still finds it all secure.
#[test]
fn a_reload_re_signs_only_the_changed_rrsets() {
    let s = setup(&ZONES[1..2]);
    let ours = common::Anyedge::start(&config(&s), s.addr);
    let apex = "nsec3.test.";
    let (mail1, serial1) = rrsig_and_serial(s.addr, "mail.nsec3.test.", 1, apex);
    let (www1, _) = rrsig_and_serial(s.addr, "www.nsec3.test.", 1, apex);
    let zf = zone_file(s.work.path(), apex);
    let text = std::fs::read_to_string(&zf).unwrap();
    std::fs::write(&zf, text.replace("192.0.2.10\n", "192.0.2.12\n")).unwrap();
    ours.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("the re-signed version serves", Duration::from_secs(10), || {
        let (_, serial) = rrsig_and_serial(s.addr, "mail.nsec3.test.", 1, apex);
        if serial == serial1 + 1 {
            Ok(())
        } else {
            Err(serial)
        }
    });
    let (mail2, _) = rrsig_and_serial(s.addr, "mail.nsec3.test.", 1, apex);
    let (www2, _) = rrsig_and_serial(s.addr, "www.nsec3.test.", 1, apex);
    assert_eq!(mail1, mail2, "an unchanged RRset keeps its signature");
    assert_ne!(www1, www2, "the changed RRset is signed anew");
    let u = Unbound::start(s.addr, &s.anchors, &[apex], None);
    assert_eq!(u.validate("www.nsec3.test.", 1), Some((0, true)));
    assert_eq!(u.validate("nope.nsec3.test.", 1), Some((3, true)));
    drop(ours);
}

/// The value of a metric sample line starting with `prefix` (0 if absent).
fn metric(m: &str, prefix: &str) -> u64 {
    m.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn online_signatures_and_cache_results_are_counted() {
    let s = setup(&ZONES[2..]);
    let admin = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let cfg = format!(
        "{}\n[admin]\nlisten = \"{admin}\"\ntoken = \"sig-counter-token-0123456789\"\n",
        config(&s)
    );
    let ours = common::Anyedge::start(&cfg, s.addr);
    common::wait_port(admin, Duration::from_secs(10));
    // 5 names that do not exist, each asked 3 times: 5 signatures (misses),
    // 10 cache hits
    for round in 0..3u16 {
        for i in 0..5u16 {
            let q = query(round * 10 + i, &format!("nx{i}.compact.test."), 1);
            assert!(exchange(s.addr, &q, false).is_ok(), "no answer\n{}", ours.log());
        }
    }
    let (_, m) = common::http(admin, "GET", "/metrics", None);
    let got = (
        metric(&m, "anyedge_dns_signatures_total "),
        metric(&m, "anyedge_dns_signature_cache_total{result=\"hit\"}"),
        metric(&m, "anyedge_dns_signature_cache_total{result=\"miss\"}"),
    );
    assert_eq!(got, (5, 10, 5), "{m}");
    let (_, body) = common::http(admin, "GET", "/api/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let st = &v["dns"]["stats"];
    assert_eq!(
        (
            &st["signatures"],
            &st["signature_cache_hits"],
            &st["signature_cache_misses"]
        ),
        (&5.into(), &10.into(), &5.into()),
        "{body}"
    );
}
