//! Query counters: one block per thread, what they count (QTYPE, RCODE,
//! kind of answer), and their sum for the status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyedge_dns::answer::{self, Kind};

use super::Dns;

/// A per-thread counter and its sum over threads: an `AtomicU64` sums
/// into a `u64`, an array of them into a `Vec<u64>` of the same length.
pub trait Tally {
    type Total;
    fn zero() -> Self::Total;
    fn add_to(&self, total: &mut Self::Total);
}

impl Tally for AtomicU64 {
    type Total = u64;
    fn zero() -> u64 {
        0
    }
    fn add_to(&self, total: &mut u64) {
        *total += self.load(Ordering::Relaxed);
    }
}

impl<const N: usize> Tally for [AtomicU64; N] {
    type Total = Vec<u64>;
    fn zero() -> Vec<u64> {
        vec![0; N]
    }
    fn add_to(&self, total: &mut Vec<u64>) {
        for (t, x) in total.iter_mut().zip(self) {
            *t += x.load(Ordering::Relaxed);
        }
    }
}

/// Declares [`Counters`] and [`StatsSnapshot`] from one list of counters
/// (a counter is one line), and the sum of one into the other. Both end
/// with fields of their own: the QTYPE array, and the gauges, transfer
/// counts and QTYPE map of the snapshot.
macro_rules! dns_counters {
    ($( $(#[doc = $doc:literal])* $name:ident: $ty:ty, )*) => {
        /// Counters, one block per thread (no shared cache line on the hot
        /// path), summed when read.
        #[derive(Default)]
        #[repr(align(128))]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            /// Queries by QTYPE, indexed like [`QTYPES`].
            pub qtype: [AtomicU64; QTYPES.len()],
        }

        /// Summed view of all threads' counters.
        #[derive(Debug, Default, Clone, serde::Serialize)]
        pub struct StatsSnapshot {
            $( $(#[doc = $doc])* pub $name: <$ty as Tally>::Total, )*
            /// Answer bytes waiting to be written, all TCP connections (a gauge).
            pub tcp_pending_bytes: u64,
            pub axfr_in: u64,
            pub ixfr_in: u64,
            pub transfers_served: u64,
            pub transfers_refused: u64,
            /// Signatures computed on line (compact denial), all zones.
            pub signatures: u64,
            /// Online signature cache lookups: fresh signature found.
            pub signature_cache_hits: u64,
            /// Online signature cache lookups: none fresh (then signed).
            pub signature_cache_misses: u64,
            /// Online signature cache entries dropped to make room.
            pub signature_cache_evictions: u64,
            /// Queries by QTYPE name (see [`QTYPES`]).
            pub query_types: std::collections::BTreeMap<&'static str, u64>,
        }

        impl StatsSnapshot {
            /// Every listed counter at zero (arrays at their full length).
            fn zero() -> StatsSnapshot {
                StatsSnapshot {
                    $( $name: <$ty as Tally>::zero(), )*
                    ..Default::default()
                }
            }
        }

        impl Counters {
            /// Adds the listed counters to `s` (not the QTYPE array).
            fn add_to(&self, s: &mut StatsSnapshot) {
                $( self.$name.add_to(&mut s.$name); )*
            }
        }
    };
}

dns_counters! {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    /// by RCODE 0..=15 (16 = BADVERS and other extended)
    rcode: [AtomicU64; 17],
    kind: [AtomicU64; 6],
    /// Queries not answered (not a query, or RRL drop).
    dropped: AtomicU64,
    truncated: AtomicU64,
    rrl_dropped: AtomicU64,
    rrl_slipped: AtomicU64,
    rrl_would_limit: AtomicU64,
    cookies_valid: AtomicU64,
    tcp_refused_cap: AtomicU64,
    /// TCP connections refused by the per-address or per-prefix cap.
    tcp_refused_source: AtomicU64,
    /// TCP connections closed to make room in a full table.
    tcp_evicted: AtomicU64,
    /// TCP connections closed: a query not received whole in time.
    tcp_query_timeout: AtomicU64,
    /// TCP connections closed: a write of answers made no progress in time.
    tcp_write_stalled: AtomicU64,
}

/// Query types counted by name; everything else is `OTHER` (the last).
pub const QTYPES: [(&str, u16); 19] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("DNSKEY", 48),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("CAA", 257),
    ("ANY", 255),
    ("AXFR", 252),
    ("IXFR", 251),
    ("OTHER", 0),
];

/// Index into [`QTYPES`] (a match: no search, no allocation).
fn qtype_index(t: u16) -> usize {
    match t {
        1 => 0,
        2 => 1,
        5 => 2,
        6 => 3,
        12 => 4,
        15 => 5,
        16 => 6,
        28 => 7,
        33 => 8,
        35 => 9,
        43 => 10,
        48 => 11,
        64 => 12,
        65 => 13,
        257 => 14,
        255 => 15,
        252 => 16,
        251 => 17,
        _ => 18,
    }
}

/// The QTYPE of a query's (first) question: None for responses, messages
/// without a question and truncated names. Reads the packet in place.
fn question_type(p: &[u8]) -> Option<u16> {
    if p.len() < 12 || p[2] & 0x80 != 0 || u16::from_be_bytes([p[4], p[5]]) == 0 {
        return None;
    }
    let mut i = 12usize;
    loop {
        let len = *p.get(i)?;
        match len {
            0 => {
                i += 1;
                break;
            }
            // a compression pointer ends the name (not valid here, but the
            // type still follows it)
            l if l & 0xc0 == 0xc0 => {
                i += 2;
                break;
            }
            l if l & 0xc0 != 0 => return None,
            l => i += 1 + usize::from(l),
        }
        if i > 12 + 255 {
            return None;
        }
    }
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

pub const KINDS: [&str; 6] = ["positive", "wildcard", "nxdomain", "nodata", "referral", "error"];

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Positive => 0,
        Kind::Wildcard => 1,
        Kind::NxDomain => 2,
        Kind::NoData => 3,
        Kind::Referral => 4,
        Kind::Error => 5,
    }
}

pub(super) fn count_qtype(c: &Counters, q: &[u8]) {
    if let Some(t) = question_type(q) {
        c.qtype[qtype_index(t)].fetch_add(1, Ordering::Relaxed);
    }
}

impl Dns {
    pub(super) fn new_counters(&self) -> Arc<Counters> {
        let c = Arc::new(Counters::default());
        if let Ok(mut v) = self.counters.lock() {
            v.push(c.clone());
        }
        c
    }

    pub(super) fn count(&self, c: &Counters, a: &answer::Answered<'_>, sent: bool) {
        c.rcode[(a.rcode as usize).min(16)].fetch_add(1, Ordering::Relaxed);
        c.kind[kind_index(a.kind)].fetch_add(1, Ordering::Relaxed);
        if a.truncated {
            c.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if a.cookie == anyedge_dns::cookie::CookieState::Valid {
            c.cookies_valid.fetch_add(1, Ordering::Relaxed);
        }
        if !sent {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::zero();
        let mut qtype = [0u64; QTYPES.len()];
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if let Ok(v) = self.counters.lock() {
            for c in v.iter() {
                c.add_to(&mut s);
                for (i, x) in c.qtype.iter().enumerate() {
                    qtype[i] += r(x);
                }
            }
        }
        s.query_types = QTYPES.iter().map(|(n, _)| *n).zip(qtype).collect();
        s.tcp_pending_bytes = self.tcp.pending() as u64;
        s.axfr_in = r(&self.xfr.axfr_in);
        s.ixfr_in = r(&self.xfr.ixfr_in);
        s.transfers_served = r(&self.xfr.served_out);
        s.transfers_refused = r(&self.xfr.refused_out);
        (
            s.signatures,
            s.signature_cache_hits,
            s.signature_cache_misses,
            s.signature_cache_evictions,
        ) = anyedge_dns::compact::COUNTERS.read();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    #[test]
    fn snapshot_starts_at_zero_in_the_status_order() {
        let s = StatsSnapshot::zero();
        assert_eq!((s.rcode.len(), s.kind.len()), (17, KINDS.len()));
        let c = Counters::default();
        c.rcode[3].fetch_add(2, Ordering::Relaxed);
        c.tcp_write_stalled.fetch_add(1, Ordering::Relaxed);
        let mut s = StatsSnapshot::zero();
        c.add_to(&mut s);
        c.add_to(&mut s);
        assert_eq!((s.rcode[3], s.tcp_write_stalled), (4, 2));
        let json = serde_json::to_string(&s).unwrap();
        let keys: Vec<&str> = json
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert_eq!(
            keys,
            [
                "udp_queries",
                "tcp_queries",
                "rcode",
                "kind",
                "dropped",
                "truncated",
                "rrl_dropped",
                "rrl_slipped",
                "rrl_would_limit",
                "cookies_valid",
                "tcp_refused_cap",
                "tcp_refused_source",
                "tcp_evicted",
                "tcp_query_timeout",
                "tcp_write_stalled",
                "tcp_pending_bytes",
                "axfr_in",
                "ixfr_in",
                "transfers_served",
                "transfers_refused",
                "signatures",
                "signature_cache_hits",
                "signature_cache_misses",
                "signature_cache_evictions",
                "query_types"
            ]
        );
    }

    #[test]
    fn qtype_table_and_index_agree() {
        for (i, (name, t)) in QTYPES.iter().enumerate().take(QTYPES.len() - 1) {
            assert_eq!(qtype_index(*t), i, "{name}");
        }
        assert_eq!(QTYPES[qtype_index(99)].0, "OTHER");
        assert_eq!(QTYPES[qtype_index(0)].0, "OTHER");
    }

    #[test]
    fn question_type_reads_the_first_question() {
        assert_eq!(question_type(&query(b"\x03www\x07example\x03com\x00", 28)), Some(28));
        assert_eq!(question_type(&query(b"\x00", 2)), Some(2));
        // a response, no question, a cut name, a cut type: not counted
        let mut r = query(b"\x03www\x00", 1);
        r[2] |= 0x80;
        assert_eq!(question_type(&r), None);
        let mut r = query(b"\x03www\x00", 1);
        r[5] = 0;
        assert_eq!(question_type(&r), None);
        assert_eq!(question_type(&query(b"\x3fwww", 1)[..16]), None);
        assert_eq!(question_type(&query(b"\x03www\x00", 1)[..18]), None);
        // reserved label types
        assert_eq!(question_type(&query(b"\x43www\x00", 1)), None);
        assert_eq!(question_type(&[0u8; 5]), None);
    }
}
