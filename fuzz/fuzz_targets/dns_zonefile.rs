//! Zone-file loading on arbitrary text: errors, never panics.
//!
//! The loader runs `domain`'s scanner under `catch_unwind` (domain 0.12.3
//! can index out of bounds on malformed character strings). libfuzzer-sys
//! installs a panic hook that aborts on any panic, which would stop every
//! run at that known upstream bug; this target puts back a printing hook,
//! so a caught panic is not a crash while a panic anywhere else still
//! unwinds into libFuzzer's C frame and aborts (found, as it should be).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    anyedge_dns::fuzz_check::check_zonefile(data);
});
