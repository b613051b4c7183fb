//! PROXY v1/v2 decoder: never panics; whatever decodes re-encodes to bytes
//! that decode to the same addresses.
#![no_main]

use anyedge_proxy::{decode, encode_v1, encode_v2, Decoded, Tlv, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Complete { header, len }) = decode(data, 4096) {
        assert!(len <= data.len());
        let tlvs: Vec<Tlv<'_>> = header.tlvs().filter_map(Result::ok).filter(|t| t.kind != anyedge_proxy::tlv::CRC32C).collect();
        let mut out = Vec::new();
        match header.version {
            Version::V1 => encode_v1(&mut out, &header.addrs),
            Version::V2 => {
                if encode_v2(&mut out, &header.addrs, &tlvs, false).is_err() {
                    return;
                }
            }
        }
        match decode(&out, 1 << 17) {
            Ok(Decoded::Complete { header: again, .. }) => assert_eq!(again.addrs, header.addrs),
            other => panic!("re-encoded header does not decode: {other:?}"),
        }
    }
});
