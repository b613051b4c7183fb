//! Replays the DNS fuzz corpora and any crash artifacts on stable Rust,
//! with the same checks as `fuzz/fuzz_targets/dns_*.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    named(target).into_iter().map(|(_, d)| d).collect()
}

fn named(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    out.push((e.path().display().to_string(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
    }
    out
}

#[test]
fn dns_query_corpus_replays() {
    let inputs = inputs("dns_query");
    assert!(inputs.len() >= 10, "seed corpus missing");
    for data in inputs {
        anyedge_dns::fuzz_check::check_query(&data);
    }
}

#[test]
fn dns_zonefile_corpus_replays() {
    let inputs = named("dns_zonefile");
    assert!(inputs.len() >= 5, "seed corpus missing");
    for (name, data) in inputs {
        // FUZZ_CORPUS_TRACE=1 ... -- --nocapture: which input hangs or panics
        if std::env::var_os("FUZZ_CORPUS_TRACE").is_some() {
            eprintln!("{name}");
        }
        anyedge_dns::fuzz_check::check_zonefile(&data);
    }
}
