//! Query counters: one block per thread, what they count (QTYPE, RCODE,
//! kind of answer), and their sum for the status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyedge_dns::answer::{self, Kind};

use super::Dns;

/// Counters, one block per thread (no shared cache line on the hot path),
/// summed when read.
#[derive(Default)]
#[repr(align(128))]
pub struct Counters {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    /// by RCODE 0..=15 (16 = BADVERS and other extended)
    pub rcode: [AtomicU64; 17],
    pub kind: [AtomicU64; 6],
    /// Queries not answered (not a query, or RRL drop).
    pub dropped: AtomicU64,
    pub truncated: AtomicU64,
    pub rrl_dropped: AtomicU64,
    pub rrl_slipped: AtomicU64,
    pub rrl_would_limit: AtomicU64,
    pub cookies_valid: AtomicU64,
    pub tcp_refused_cap: AtomicU64,
    /// TCP connections refused by the per-address or per-prefix cap.
    pub tcp_refused_source: AtomicU64,
    /// TCP connections closed to make room in a full table.
    pub tcp_evicted: AtomicU64,
    /// TCP connections closed: a query not received whole in time.
    pub tcp_query_timeout: AtomicU64,
    /// TCP connections closed: a write of answers made no progress in time.
    pub tcp_write_stalled: AtomicU64,
    /// Queries by QTYPE, indexed like [`QTYPES`].
    pub qtype: [AtomicU64; QTYPES.len()],
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

/// Summed view of all threads' counters.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StatsSnapshot {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    pub rcode: Vec<u64>,
    pub kind: Vec<u64>,
    pub dropped: u64,
    pub truncated: u64,
    pub rrl_dropped: u64,
    pub rrl_slipped: u64,
    pub rrl_would_limit: u64,
    pub cookies_valid: u64,
    pub tcp_refused_cap: u64,
    pub tcp_refused_source: u64,
    pub tcp_evicted: u64,
    pub tcp_query_timeout: u64,
    pub tcp_write_stalled: u64,
    /// Answer bytes waiting to be written, all TCP connections (a gauge).
    pub tcp_pending_bytes: u64,
    pub axfr_in: u64,
    pub ixfr_in: u64,
    pub transfers_served: u64,
    pub transfers_refused: u64,
    /// Queries by QTYPE name (see [`QTYPES`]).
    pub query_types: std::collections::BTreeMap<&'static str, u64>,
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
        let mut s = StatsSnapshot {
            rcode: vec![0; 17],
            kind: vec![0; 6],
            ..Default::default()
        };
        let mut qtype = [0u64; QTYPES.len()];
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if let Ok(v) = self.counters.lock() {
            for c in v.iter() {
                s.udp_queries += r(&c.udp_queries);
                s.tcp_queries += r(&c.tcp_queries);
                for (i, x) in c.rcode.iter().enumerate() {
                    s.rcode[i] += r(x);
                }
                for (i, x) in c.kind.iter().enumerate() {
                    s.kind[i] += r(x);
                }
                s.dropped += r(&c.dropped);
                s.truncated += r(&c.truncated);
                s.rrl_dropped += r(&c.rrl_dropped);
                s.rrl_slipped += r(&c.rrl_slipped);
                s.rrl_would_limit += r(&c.rrl_would_limit);
                s.cookies_valid += r(&c.cookies_valid);
                s.tcp_refused_cap += r(&c.tcp_refused_cap);
                s.tcp_refused_source += r(&c.tcp_refused_source);
                s.tcp_evicted += r(&c.tcp_evicted);
                s.tcp_query_timeout += r(&c.tcp_query_timeout);
                s.tcp_write_stalled += r(&c.tcp_write_stalled);
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
