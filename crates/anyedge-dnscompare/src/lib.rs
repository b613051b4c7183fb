//! The difference between two servers' answers to the same question, and the
//! questions worth asking about a zone.
//!
//! Used by `anyedge dns compare` (before moving a zone: the old server
//! against anyedge) and by the conformance test against Knot DNS. Pure code:
//! bytes in, differences out; the caller does the I/O.
//!
//! - [`compare`] / [`compare_with`]: two response messages in, a list of
//!   [`Difference`]s out. Records are normalised first (owner lowercased,
//!   RDATA in RFC 4034 canonical form, so case and name compression do not
//!   matter) and each section is compared as a multiset of RRsets; the OPT
//!   record is compared on its own (NSID and the server half of a COOKIE
//!   differ per server by design and are only checked for presence).
//! - [`ZoneIndex`]: the owner names and types of a zone (from a zone file or
//!   any record source such as an AXFR) and [`ZoneIndex::questions`], the
//!   probes: every name with the types it has and some it lacks, random names
//!   under the apex, existing names, wildcards, delegations and DNAMEs,
//!   out-of-zone names, and a mixed-case copy of each.
//! - [`build_query`]: a query for one [`Question`] with [`QueryOptions`].
//!
//! Modules: `differences` (comparing two responses), `questions` (the zone
//! index and its probes), `query` (building queries, reading an AXFR).
#![forbid(unsafe_code)]

mod differences;
mod query;
mod questions;
#[cfg(test)]
mod tests;

pub use differences::{compare, compare_with, Difference, Options, Part};
pub use query::{add_axfr_message, axfr_query, build_query, EdnsQuery, QueryOptions};
pub use questions::{Question, ZoneError, ZoneIndex, PROBE_TYPES};
