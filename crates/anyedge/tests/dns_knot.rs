//! Conformance: anyedge's authoritative DNS answers like Knot DNS.
//!
//! A real `knotd` (Debian package `knot`; CI installs it) and anyedge serve
//! the same zones (`tests/data/dns/`); every question generated from the
//! zones (`anyedge_dnscompare::ZoneIndex::questions`: each name with its
//! types and absent ones, NXDOMAIN/NODATA probes, wildcard matches,
//! referrals, DNAME substitutions, out-of-zone names, mixed case) is sent to
//! both in several ways (UDP and TCP, with and without EDNS, UDP sizes 1232
//! and 4096, DO on part of them, NSID and a client cookie, RD/CD set) and the
//! answers must be the same (`anyedge_dnscompare`) except for the
//! deliberate differences in [`DELIBERATE`], each with its reason.
//!
//! `knot_against_itself` checks the harness and the comparison first: two
//! Knot instances must never differ. `compare_cli_exit_codes` runs
//! `anyedge dns compare` against Knot instances.
//!
//! Run: `cargo test -p anyedge --test dns_knot -- --nocapture` (prints the
//! number of queries compared, what kinds of answers they reached and the
//! deliberate differences seen).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyedge_dnscompare::{build_query, compare, Difference, EdnsQuery, Part, QueryOptions, Question, ZoneIndex};
use anyedge_testkit::dns::exchange;
use anyedge_testkit::knot::{Knot, KnotConf};
use bytes::Bytes;
use domain::base::iana::{Class, Rtype};
use domain::base::Name;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dns");

/// (apex, file in DATA) of every zone both servers serve.
const ZONES: &[(&str, &str)] = &[
    ("example.com.", "example.com.zone"),
    ("example.net.", "example.net.zone"),
    ("2.0.192.in-addr.arpa.", "2.0.192.in-addr.arpa.zone"),
];

/// Seed of the random labels in the probes (fixed: failures reproduce).
const SEED: u64 = 0x00a7_ed9e;

/// The client cookie sent in the `udp-edns4096-do-nsid-cookie` variant.
const CLIENT_COOKIE: [u8; 8] = [0xc0, 0x0c, 0x1e, 0x5a, 0x11, 0x22, 0x33, 0x44];

/// A difference between Knot (left) and anyedge (right) that is accepted,
/// and why.
struct Deliberate {
    what: &'static str,
    reason: &'static str,
    matches: fn(&Finding) -> bool,
}

/// Differences from Knot DNS that anyedge makes on purpose. Everything else
/// must match.
const DELIBERATE: &[Deliberate] = &[
    Deliberate {
        what: "CD copied",
        reason: "RFC 4035 3.1.6: a name server MUST copy the CD bit from the query into the \
                 response; anyedge does, Knot 3.2 clears it",
        matches: |f| f.diff.part == Part::Flag && f.diff.item == "CD" && f.diff.left == "0" && f.diff.right == "1",
    },
    Deliberate {
        what: "COOKIE answered",
        reason: "Knot runs without mod-cookies, which answers BADCOOKIE to a client-only cookie, \
                 so it ignores the option; anyedge (cookie_secret set) answers a client-only \
                 cookie normally with a server cookie (RFC 7873 5.2.3), echoing the client half",
        matches: |f| {
            f.diff.part == Part::Edns
                && f.diff.item == "COOKIE"
                && f.diff.left == "-"
                && f.diff.right == format!("client {}", hex(&CLIENT_COOKIE))
        },
    },
    Deliberate {
        what: "transfer refused with REFUSED",
        reason: "AXFR/IXFR over TCP from a client not in allow_transfer: anyedge answers REFUSED \
                 (RFC 5936 leaves the choice; BIND and NSD answer REFUSED), Knot NOTAUTH",
        matches: |f| {
            f.variant.starts_with("tcp")
                && matches!(f.question.qtype, Rtype::AXFR | Rtype::IXFR)
                && f.diff.part == Part::Rcode
                && f.diff.left == "NOTAUTH"
                && f.diff.right == "REFUSED"
        },
    },
    Deliberate {
        what: "QTYPE OPT is FORMERR",
        reason: "OPT is a pseudo-RR (RFC 6891 6.1.1), never zone data: anyedge answers a \
                 question for it with FORMERR, Knot as for any absent type (NOERROR, no data)",
        matches: |f| {
            f.question.qtype == Rtype::OPT
                && match f.diff.part {
                    Part::Rcode => f.diff.left == "NOERROR" && f.diff.right == "FORMERR",
                    Part::Flag => f.diff.item == "AA",
                    Part::Authority => f.diff.right == "-",
                    _ => false,
                }
        },
    },
];

/// One way of asking.
struct Variant {
    name: &'static str,
    tcp: bool,
    opts: QueryOptions,
}

fn variants() -> Vec<Variant> {
    let edns = |udp_size, dnssec_ok| EdnsQuery {
        udp_size,
        dnssec_ok,
        ..EdnsQuery::default()
    };
    vec![
        // RFC 1035: 512-octet UDP answers, truncation on the big ones.
        Variant {
            name: "udp",
            tcp: false,
            opts: QueryOptions::default(),
        },
        Variant {
            name: "udp-edns1232-rd",
            tcp: false,
            opts: QueryOptions {
                rd: true,
                edns: Some(edns(1232, false)),
                ..QueryOptions::default()
            },
        },
        Variant {
            name: "udp-edns4096-do-nsid-cookie",
            tcp: false,
            opts: QueryOptions {
                edns: Some(EdnsQuery {
                    nsid: true,
                    cookie: Some(CLIENT_COOKIE),
                    ..edns(4096, true)
                }),
                ..QueryOptions::default()
            },
        },
        Variant {
            name: "tcp-edns1232-do-cd",
            tcp: true,
            opts: QueryOptions {
                cd: true,
                edns: Some(edns(1232, true)),
                ..QueryOptions::default()
            },
        },
        Variant {
            name: "tcp",
            tcp: true,
            opts: QueryOptions::default(),
        },
    ]
}

/// One difference in the answers to one query.
struct Finding {
    question: Question,
    variant: String,
    diff: Difference,
}

// ---------------------------------------------------------------------------
// Knot (the harness: anyedge_testkit::knot)

/// A `knotd` serving ZONES from the test data, NSID "pop1" like anyedge.
fn start_knot() -> Knot {
    let zones: Vec<(String, PathBuf)> = ZONES
        .iter()
        .map(|(apex, file)| (apex.to_string(), Path::new(DATA).join(file)))
        .collect();
    start_knot_with(&zones, false)
}

/// Serves `zones` (apex, file); `transfers`: AXFR allowed from loopback.
fn start_knot_with(zones: &[(String, PathBuf)], transfers: bool) -> Knot {
    let mut conf = KnotConf::new().nsid("pop1");
    let mut zone_extra: &[&str] = &[];
    if transfers {
        conf = conf.sections("acl:\n  - id: xfr\n    address: 127.0.0.0/8\n    action: transfer\n");
        zone_extra = &["acl: xfr"];
    }
    for (apex, file) in zones {
        conf = conf.primary(apex, file, zone_extra);
    }
    Knot::start(&conf)
}

fn tc(msg: &[u8]) -> bool {
    msg.len() > 2 && msg[2] & 0x02 != 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The comparison

/// Every generated question of every zone, plus a few hand-made ones.
fn questions() -> Vec<Question> {
    let mut qs = Vec::new();
    for (apex, file) in ZONES {
        let text = std::fs::read(format!("{DATA}/{file}")).unwrap();
        let apex = Name::<Bytes>::from_str(apex).unwrap();
        let idx = ZoneIndex::from_zonefile(&text, &apex).unwrap_or_else(|e| panic!("{file}: {e}"));
        qs.extend(idx.questions(SEED));
    }
    let name = |s: &str| Name::<Bytes>::from_str(s).unwrap();
    // Transfers and meta/reserved types (asked in every variant, UDP too), a
    // name outside every zone, and the root.
    for (n, t) in [
        ("example.com.", Rtype::AXFR),
        ("example.com.", Rtype::IXFR),
        ("example.com.", Rtype::OPT),
        ("www.example.com.", Rtype::from_int(0)),
        ("www.example.com.", Rtype::from_int(65535)),
        ("example.org.", Rtype::A),
        (".", Rtype::NS),
    ] {
        qs.push(Question::new(name(n), t));
    }
    // Other classes.
    for c in [Class::CH, Class::HS, Class::ANY, Class::NONE] {
        qs.push(Question {
            qname: name("www.example.com."),
            qtype: Rtype::A,
            qclass: c,
        });
    }
    qs
}

/// What one comparison run saw.
struct Run {
    /// Queries sent to each server.
    queries: usize,
    findings: Vec<Finding>,
    errors: Vec<String>,
    /// Knot's answers by rcode, plus `TC` (truncated) and `referral` (no AA,
    /// NS in authority): the branches the questions reached.
    reached: BTreeMap<String, usize>,
}

/// The kinds of answer `msg` counts as for [`Run::reached`].
fn answer_kinds(msg: &[u8]) -> Vec<String> {
    let Ok(m) = domain::base::Message::from_octets(msg) else {
        return vec!["malformed".to_string()];
    };
    let mut kinds = vec![m.opt_rcode().to_string()];
    let h = m.header();
    if h.tc() {
        kinds.push("TC".to_string());
    }
    let ns_in_authority = m
        .authority()
        .map(|sec| sec.flatten().any(|rr| rr.rtype() == Rtype::NS))
        .unwrap_or(false);
    if !h.aa() && m.header_counts().ancount() == 0 && ns_in_authority {
        kinds.push("referral".to_string());
    }
    kinds
}

/// Sends `questions` x `variants` to both servers (bounded concurrency).
fn run_comparison(knot: SocketAddr, other: SocketAddr, questions: &[Question], variants: &[Variant]) -> Run {
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for qi in 0..questions.len() {
        for vi in 0..variants.len() {
            jobs.push((qi, vi));
        }
    }
    // EDNS version 1 on every 20th question: BADVERS (RFC 6891 6.1.3).
    let badvers = QueryOptions {
        edns: Some(EdnsQuery {
            version: 1,
            ..EdnsQuery::default()
        }),
        ..QueryOptions::default()
    };
    let next = AtomicUsize::new(0);
    let queries = AtomicUsize::new(0);
    let findings = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let reached = Mutex::new(BTreeMap::new());
    let count = |msg: &[u8]| {
        let mut r = reached.lock().unwrap();
        for k in answer_kinds(msg) {
            *r.entry(k).or_insert(0usize) += 1;
        }
    };
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(qi, vi)) = jobs.get(j) else { break };
                let q = &questions[qi];
                let v = &variants[vi];
                let mut asks: Vec<(String, bool, QueryOptions)> = vec![(v.name.to_string(), v.tcp, v.opts)];
                if vi == 0 && qi % 20 == 0 {
                    asks.push(("udp-edns-version1".to_string(), false, badvers));
                }
                for (name, tcp, opts) in asks {
                    let query = build_query(j as u16, q, &opts).unwrap();
                    let (a, b) = match (exchange(knot, &query, tcp), exchange(other, &query, tcp)) {
                        (Ok(a), Ok(b)) => (a, b),
                        (ea, eb) => {
                            let e = [ea.err(), eb.err()]
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join("; ");
                            errors.lock().unwrap().push(format!("{q} ({name}): {e}"));
                            continue;
                        }
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    count(&a);
                    let mut found: Vec<(String, Difference)> =
                        compare(&a, &b).into_iter().map(|d| (name.clone(), d)).collect();
                    // Truncated over UDP: a client retries over TCP; compare those too.
                    if !tcp && (tc(&a) || tc(&b)) {
                        let retry = format!("{name}+tcp-retry");
                        match (exchange(knot, &query, true), exchange(other, &query, true)) {
                            (Ok(a), Ok(b)) => {
                                queries.fetch_add(1, Ordering::Relaxed);
                                count(&a);
                                found.extend(compare(&a, &b).into_iter().map(|d| (retry.clone(), d)));
                            }
                            (ea, eb) => {
                                let e = [ea.err(), eb.err()]
                                    .into_iter()
                                    .flatten()
                                    .collect::<Vec<_>>()
                                    .join("; ");
                                errors.lock().unwrap().push(format!("{q} ({retry}): {e}"));
                            }
                        }
                    }
                    let mut f = findings.lock().unwrap();
                    for (variant, diff) in found {
                        f.push(Finding {
                            question: q.clone(),
                            variant,
                            diff,
                        });
                    }
                }
            });
        }
    });
    Run {
        queries: queries.into_inner(),
        findings: findings.into_inner().unwrap(),
        errors: errors.into_inner().unwrap(),
        reached: reached.into_inner().unwrap(),
    }
}

/// Fails listing every unexpected difference and every error; prints the
/// deliberate ones by kind. Differences are grouped by question (case
/// folded: the mixed-case copy of a question shows as `variant/0x20`), and a
/// difference seen in every variant is listed once. Also fails when the
/// questions no longer reach every kind of answer (a fixture that lost its
/// wildcard, DNAME or delegation would otherwise pass quietly).
fn judge(label: &str, run: Run, deliberate: &[Deliberate]) {
    let Run {
        queries,
        findings,
        errors,
        reached,
    } = run;
    eprintln!(
        "Knot's answers: {}",
        reached
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for kind in [
        "NOERROR", "NXDOMAIN", "REFUSED", "YXDOMAIN", "BADVERS", "NOTIMP", "TC", "referral",
    ] {
        assert!(
            reached.contains_key(kind),
            "no question got a {kind} answer from Knot: the fixtures lost a case ({reached:?})"
        );
    }
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    // question -> difference (lowercase) -> (difference, variants it was seen in)
    let mut unexpected: BTreeMap<String, BTreeMap<String, (String, Vec<String>)>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let total = findings.len();
    for f in findings {
        if let Some(d) = deliberate.iter().find(|d| (d.matches)(&f)) {
            *accepted.entry(d.what).or_default() += 1;
            continue;
        }
        let kind = match f.diff.part {
            Part::Edns | Part::Flag => format!("{} {}", f.diff.part, f.diff.item),
            p => p.to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
        let qname = f.question.qname.as_slice();
        let mixed = qname != qname.to_ascii_lowercase().as_slice();
        let variant = if mixed {
            format!("{}/0x20", f.variant)
        } else {
            f.variant
        };
        let lower = Name::<Bytes>::from_octets(Bytes::from(qname.to_ascii_lowercase())).unwrap();
        let text = f.diff.labelled("knot", label);
        // Names in RDATA may take the question's case (compression); the
        // comparison ignores that, so does the grouping (first text shown).
        let entry = unexpected
            .entry(format!(
                "{} {} {}",
                lower.fmt_with_dot(),
                f.question.qclass,
                f.question.qtype
            ))
            .or_default()
            .entry(text.to_ascii_lowercase())
            .or_insert_with(|| (text, Vec::new()));
        entry.1.push(variant);
    }
    eprintln!(
        "{queries} queries compared (Knot vs {label}): {total} differences, {} deliberate, {} unexpected, {} errors",
        accepted.values().sum::<usize>(),
        kinds.values().sum::<usize>(),
        errors.len()
    );
    for d in deliberate {
        match accepted.get(d.what) {
            Some(n) => eprintln!("  deliberate: {} x{n}: {}", d.what, d.reason),
            None => eprintln!("  deliberate (not seen this run): {}", d.what),
        }
    }
    if unexpected.is_empty() && errors.is_empty() {
        return;
    }
    let mut report = String::new();
    const SHOW: usize = 200;
    for (i, (q, diffs)) in unexpected.iter().enumerate() {
        if i == SHOW {
            report.push_str(&format!("... and {} more questions\n", unexpected.len() - SHOW));
            break;
        }
        report.push_str(&format!("{q}\n"));
        for (d, variants) in diffs.values() {
            let mut variants = variants.clone();
            variants.sort();
            variants.dedup();
            report.push_str(&format!("  [{}]\n", variants.join(" ")));
            for line in d.lines() {
                report.push_str(&format!("    {line}\n"));
            }
        }
    }
    report.push_str("unexpected differences by kind:\n");
    for (k, n) in &kinds {
        report.push_str(&format!("  {k}: {n}\n"));
    }
    for e in errors.iter().take(50) {
        report.push_str(&format!("error: {e}\n"));
    }
    panic!(
        "{label} differs from Knot DNS ({} questions with unexpected differences, {} errors):\n{report}",
        unexpected.len(),
        errors.len()
    );
}

#[test]
fn knot_against_itself() {
    let a = start_knot();
    let b = start_knot();
    let qs = questions();
    let vs = variants();
    let run = run_comparison(a.addr, b.addr, &qs, &vs);
    assert!(run.queries >= qs.len() * vs.len());
    judge("knot-2", run, &[]);
}

fn anyedge_config(port: u16) -> String {
    let mut cfg = format!(
        r#"[pop]
name = "pop1"

[dns]
listen = ["127.0.0.1:{port}"]
nsid = "pop1"
cookie_secret = "000102030405060708090a0b0c0d0e0f"
"#
    );
    for (apex, file) in ZONES {
        cfg.push_str(&format!(
            "\n[[dns.zone]]\nname = \"{apex}\"\nfile = \"{DATA}/{file}\"\n"
        ));
    }
    cfg
}

#[test]
fn anyedge_answers_like_knot() {
    let knot = start_knot();
    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ours = common::Anyedge::start(&anyedge_config(port), addr);
    let qs = questions();
    let vs = variants();
    let run = run_comparison(knot.addr, addr, &qs, &vs);
    assert!(run.queries >= qs.len() * vs.len());
    judge("anyedge", run, DELIBERATE);
    drop(ours);
}

/// `anyedge dns compare` (the CLI around the same comparison): exit 0 for
/// the same answers, 1 with the differences printed, 2 when a server does
/// not answer; questions from a zone file or from an AXFR.
#[test]
fn compare_cli_exit_codes() {
    let zone = Path::new(DATA).join("example.com.zone");
    let reference = start_knot_with(&[("example.com.".to_string(), zone.clone())], false);
    // The same zone with one address changed, transfers allowed.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("example.com.zone");
    let text = std::fs::read_to_string(&zone).unwrap();
    assert!(text.contains("mail    A       192.0.2.25"));
    std::fs::write(
        &changed,
        text.replace("mail    A       192.0.2.25", "mail    A       192.0.2.26"),
    )
    .unwrap();
    let other = start_knot_with(&[("example.com.".to_string(), changed)], true);
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();

    let run = |ours: SocketAddr, file: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anyedge"));
        cmd.args(["dns", "compare", "--zone", "example.com.", "--timeout", "300ms"])
            .arg("--server")
            .arg(reference.addr.to_string())
            .arg("--ours")
            .arg(ours.to_string());
        if file {
            cmd.arg("--file").arg(&zone);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    let (code, stdout, stderr) = run(reference.addr, true);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(" 0 different, 0 unanswered"), "{stdout}");

    // Questions from an AXFR of the changed zone.
    let (code, stdout, stderr) = run(other.addr, false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("mail.example.com. IN A\n"), "{stdout}");
    assert!(stdout.contains("server  3600 192.0.2.25"), "{stdout}");
    assert!(stdout.contains("ours    3600 192.0.2.26"), "{stdout}");
    // MX additional data differs too; unrelated names do not.
    assert!(stdout.contains("example.com. IN MX\n"), "{stdout}");
    assert!(!stdout.contains("www.example.com. IN A\n"), "{stdout}");

    let (code, stdout, stderr) = run(silent.local_addr().unwrap(), true);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("error: udp: ours:"), "{stdout}");

    // No zone to take questions from: a setup error, also 2.
    let (code, _, stderr) = run(silent.local_addr().unwrap(), false);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("AXFR"), "{stderr}");
}
