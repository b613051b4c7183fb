//! Replays every fuzz corpus input and every crash artifact on stable Rust,
//! with the same checks as the fuzz targets in `fuzz/fuzz_targets/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use anyedge_proxy::sni::{peek, peek_with_scratch, Peek};
use anyedge_proxy::{decode, encode_v1, encode_v2, tlv, Decoded, Tlv, Version};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts", "regressions"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

#[test]
fn proxy_decode_corpus_replays() {
    let files = inputs("proxy_decode");
    assert!(files.len() >= 5, "seed corpus missing: {files:?}");
    let mut complete = 0;
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if let Ok(Decoded::Complete { header, len }) = decode(&data, 4096) {
            complete += 1;
            assert!(len <= data.len(), "{f:?}");
            let tlvs: Vec<Tlv<'_>> = header
                .tlvs()
                .filter_map(Result::ok)
                .filter(|t| t.kind != tlv::CRC32C)
                .collect();
            let mut out = Vec::new();
            match header.version {
                Version::V1 => encode_v1(&mut out, &header.addrs),
                Version::V2 => encode_v2(&mut out, &header.addrs, &tlvs, false).unwrap(),
            }
            match decode(&out, 1 << 17) {
                Ok(Decoded::Complete { header: again, .. }) => assert_eq!(again.addrs, header.addrs, "{f:?}"),
                other => panic!("{f:?}: re-encoded header does not decode: {other:?}"),
            }
        }
    }
    assert!(complete >= 5, "valid seeds decode");
}

#[test]
fn tls_sni_corpus_replays() {
    let files = inputs("tls_sni");
    assert!(!files.is_empty());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let r = peek(&data);
        if let Peek::Sni(name) = r {
            assert!(!name.is_empty() && name.len() <= 255, "{f:?}");
        }
        let mut scratch = [0u8; 255];
        let rs = peek_with_scratch(&data, &mut scratch);
        if let Peek::Sni(name) = rs {
            assert!(!name.is_empty() && name.len() <= 255, "{f:?}");
        }
        // a real ClientHello from `openssl s_client -servername`, whole and
        // split over two TLS records (inside the host name)
        if f.file_name().is_some_and(|n| n == "openssl_clienthello.bin") {
            assert_eq!(r, Peek::Sni("shop.example.test"), "{f:?}");
        }
        if f.file_name().is_some_and(|n| n == "two_records.bin") {
            assert_eq!(rs, Peek::Sni("shop.example.test"), "{f:?}");
        }
    }
}
