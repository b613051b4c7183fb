//! Zone-file loading on arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    anyedge_dns::fuzz_check::check_zonefile(data);
});
