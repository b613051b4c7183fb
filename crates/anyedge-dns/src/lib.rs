//! Sans-IO authoritative DNS for anyedge.
//!
//! - [`zone`]: zones loaded from RFC 1035 files (parsed by NLnet Labs'
//!   `domain`) into immutable snapshots with O(labels) hash lookups.
//! - [`answer`]: query bytes in, response bytes out (RFC 1034 4.3.2,
//!   RFC 2308, RFC 4592, RFC 6672, EDNS, NSID, cookies, RFC 8482).
//! - [`xfr`]: zone transfers (AXFR/IXFR both ways, a journal of
//!   differences), NOTIFY, TSIG, and a secondary's refresh timing.
#![forbid(unsafe_code)]

pub mod answer;
pub mod compact;
pub mod cookie;
pub mod dnssec;
pub mod fuzz_check;
pub mod incremental;
pub mod name;
pub mod sign;
pub mod xfr;
pub mod zone;
pub mod zonetext;
