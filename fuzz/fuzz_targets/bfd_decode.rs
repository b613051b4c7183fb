//! BFD control packet decoder: never panics; decoded packets re-encode to
//! the same bytes they were decoded from (for the 24-byte packet).
#![no_main]

use anyedge_bfd::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        let again = ControlPacket::decode(&p.to_bytes()).expect("re-encoded packet decodes");
        assert_eq!(again, p);
    }
});
