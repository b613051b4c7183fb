//! DNS answering on arbitrary bytes: never panics, never answers garbage
//! with more than it got, responses are well-formed (see fuzz_check).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    anyedge_dns::fuzz_check::check_query(data);
});
