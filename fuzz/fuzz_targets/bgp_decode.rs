//! BGP message decoder: never panics; every decoded message re-encodes, and
//! the re-encoding decodes to the same message.
#![no_main]

use anyedge_bgp::{decode, encode_to_vec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Some((msg, used))) => {
            assert!(used <= data.len());
            if let Ok(bytes) = encode_to_vec(&msg) {
                match decode(&bytes) {
                    Ok(Some((again, n))) => {
                        assert_eq!(n, bytes.len());
                        assert_eq!(again, msg);
                    }
                    other => panic!("re-encoded message does not decode: {other:?}"),
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.notification();
        }
    }
});
