//! Replays the `bgp_decode` fuzz corpus and any crash artifacts on stable
//! Rust, with the same checks as `fuzz/fuzz_targets/bgp_decode.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn inputs() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join("bgp_decode")) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    out.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn bgp_decode_corpus_replays() {
    let inputs = inputs();
    assert!(inputs.len() >= 8, "seed corpus missing");
    let mut decoded = 0;
    for data in inputs {
        match anyedge_bgp::decode(&data) {
            Ok(Some((msg, used))) => {
                decoded += 1;
                assert!(used <= data.len());
                if let Ok(bytes) = anyedge_bgp::encode_to_vec(&msg) {
                    let (again, n) = anyedge_bgp::decode(&bytes).unwrap().unwrap();
                    assert_eq!(n, bytes.len());
                    assert_eq!(again, msg);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let (code, _, _) = e.notification();
                assert!((1..=6).contains(&code));
            }
        }
    }
    assert!(decoded >= 6, "valid seeds decode");
}
