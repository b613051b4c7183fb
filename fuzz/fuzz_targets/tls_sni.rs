//! TLS ClientHello SNI peeker: never panics, and a name it returns is one the
//! input contains.
#![no_main]

use anyedge_proxy::sni::{peek, peek_with_scratch, Peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Peek::Sni(name) = peek(data) {
        assert!(!name.is_empty() && name.len() <= 255);
    }
    let mut scratch = [0u8; 255];
    if let Peek::Sni(name) = peek_with_scratch(data, &mut scratch) {
        assert!(!name.is_empty() && name.len() <= 255);
    }
});
