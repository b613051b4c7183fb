//! Replays the `bfd_decode` fuzz corpus and any crash artifacts on stable
//! Rust, with the same checks as `fuzz/fuzz_targets/bfd_decode.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn inputs() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "artifacts"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join("bfd_decode")) {
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
fn bfd_decode_corpus_replays() {
    let inputs = inputs();
    assert!(inputs.len() >= 3, "seed corpus missing");
    let mut decoded = 0;
    for data in inputs {
        if let Ok(p) = anyedge_bfd::ControlPacket::decode(&data) {
            decoded += 1;
            assert_eq!(anyedge_bfd::ControlPacket::decode(&p.to_bytes()).unwrap(), p);
        }
    }
    assert!(decoded >= 3);
}
