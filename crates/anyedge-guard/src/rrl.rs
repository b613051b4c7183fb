//! DNS Response Rate Limiting (RRL), as in Knot DNS's `rrl` module and
//! BIND's `rate-limit` (after Vixie and Schryver's design): without I/O,
//! called on the UDP hot path once a response has been computed.
//!
//! Every response falls into a bucket keyed by
//! - the source netblock (IPv4 /24 and IPv6 /56 by default),
//! - the [`ResponseClass`], and
//! - a name: the qname for answers, the zone apex for NXDOMAIN, wildcard
//!   answers and errors, the delegation point for referrals (see each
//!   class), so a random-subdomain flood from one netblock is one bucket.
//!
//! A bucket sends `rate` responses a second with bursts of `burst`
//! ([`Gcra`], one `u64` of state). Over the limit, `slip` decides: every
//! `slip`-th limited response of the bucket is sent truncated (TC=1, so a
//! real resolver retries over TCP), the others are dropped; 0 never slips,
//! 1 always does. Limited responses cost the bucket nothing, so a bucket
//! recovers as soon as the flood stops. Whitelisted prefixes are never
//! limited; dry-run mode decides and counts but always says send.
//!
//! Names are hashed (SipHash-1-3) with a per-process random key, as are
//! the shard choice and the maps, so an attacker cannot make buckets
//! collide or aim at one shard. The table is the crate's fixed-size
//! sharded table ([`crate::table`]: 64 mutexes, each held for one hash-map
//! probe; when full, a new bucket evicts an idle one, else the least
//! indebted of a sample, so a bucket under attack is not forgotten by
//! churn). Nothing is allocated per call.
//!
//! TCP responses are never limited: call [`Rrl::check`] for UDP only.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::gcra::Gcra;
use crate::prefix::{Prefix, PrefixSet};
use crate::table::Shards;

/// Responses of at least this many bytes are [`ResponseClass::Large`]
/// (Knot's threshold).
pub const LARGE_RESPONSE: usize = 1024;

/// What kind of response is being sent; each class has its own buckets,
/// and each says which name keys its bucket (the `name` argument of
/// [`Rrl::check`]: lowercase wire format; case is folded anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseClass {
    /// NOERROR with answer records. Name: the qname.
    Positive,
    /// NXDOMAIN. Name: the zone apex (SOA owner), so random names under a
    /// zone share one bucket.
    NxDomain,
    /// NOERROR, authoritative, no answer (NODATA). Name: the qname.
    NoData,
    /// NOERROR, not authoritative, no answer, NS in authority (a
    /// delegation). Name: the delegation point (owner of the NS set), so
    /// random names under a child zone share one bucket.
    Referral,
    /// An answer synthesized from a wildcard. Name: the zone apex, so
    /// random names matching the wildcard share one bucket.
    Wildcard,
    /// Any other RCODE (SERVFAIL, REFUSED, FORMERR, NOTIMP...). Name: the
    /// zone apex if known, else the root (`b"\0"`).
    Error,
    /// Amplification-prone: qtype ANY or a response of at least
    /// [`LARGE_RESPONSE`] bytes. Name: the qname.
    Large,
}

impl ResponseClass {
    pub const ALL: [ResponseClass; 7] = [
        ResponseClass::Positive,
        ResponseClass::NxDomain,
        ResponseClass::NoData,
        ResponseClass::Referral,
        ResponseClass::Wildcard,
        ResponseClass::Error,
        ResponseClass::Large,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::Positive => "positive",
            ResponseClass::NxDomain => "nxdomain",
            ResponseClass::NoData => "nodata",
            ResponseClass::Referral => "referral",
            ResponseClass::Wildcard => "wildcard",
            ResponseClass::Error => "error",
            ResponseClass::Large => "large",
        }
    }

    /// Classifies a response from its wire form (Knot's order): RCODE
    /// NXDOMAIN, other non-zero RCODEs (and anything shorter than a
    /// header) are errors; then a wildcard answer (`wildcard`: the
    /// answer was synthesized, which only the answering code knows);
    /// then qtype ANY or [`LARGE_RESPONSE`] bytes; then no answer records
    /// is a referral if not authoritative with NS records in authority,
    /// else NODATA; the rest is positive.
    pub fn classify(response: &[u8], wildcard: bool) -> ResponseClass {
        let &[_, _, flags, rcode, _, _, an0, an1, ns0, ns1, _, _, ..] = response else {
            return ResponseClass::Error;
        };
        match rcode & 0x0f {
            0 => {}
            3 => return ResponseClass::NxDomain,
            _ => return ResponseClass::Error,
        }
        if wildcard {
            return ResponseClass::Wildcard;
        }
        if question_type(response) == Some(255) || response.len() >= LARGE_RESPONSE {
            return ResponseClass::Large;
        }
        if u16::from_be_bytes([an0, an1]) == 0 {
            let authoritative = flags & 0x04 != 0;
            if !authoritative && u16::from_be_bytes([ns0, ns1]) > 0 {
                return ResponseClass::Referral;
            }
            return ResponseClass::NoData;
        }
        ResponseClass::Positive
    }
}

/// The QTYPE of the first question, if the message has one.
fn question_type(msg: &[u8]) -> Option<u16> {
    if msg.get(4..6)? == [0, 0] {
        return None;
    }
    let mut i = 12usize;
    loop {
        let len = *msg.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => {
                i += 1;
                break;
            }
            0 => i += 1 + usize::from(len),
            0xc0 => {
                i += 2;
                break;
            }
            _ => return None,
        }
    }
    Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]))
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RrlVerdict {
    /// Send it as computed.
    Send,
    /// Send a truncated response instead: same ID, opcode, RCODE and
    /// question, TC=1, empty answer, authority and additional sections. An
    /// error response (SERVFAIL, REFUSED...) is small and is sent as it is
    /// (BIND and Knot do the same).
    Slip,
    /// Send nothing.
    Drop,
}

impl RrlVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RrlVerdict::Send => "send",
            RrlVerdict::Slip => "slip",
            RrlVerdict::Drop => "drop",
        }
    }
}

/// The outcome of [`Rrl::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlDecision {
    /// What to do with the response: always `Send` in dry-run mode.
    pub verdict: RrlVerdict,
    /// What rate limiting decided: `Send` within the rate (or
    /// whitelisted), `Slip` or `Drop` over it. Equals `verdict` unless in
    /// dry-run mode.
    pub decided: RrlVerdict,
    /// The bucket's first limited response since it was last idle (a whole
    /// burst available): the start of a limiting episode, worth one log
    /// line (source, class, name), in dry-run mode too. A sustained flood
    /// is one episode, however many responses pass at the rate.
    pub episode_start: bool,
}

impl RrlDecision {
    const SEND: RrlDecision = RrlDecision {
        verdict: RrlVerdict::Send,
        decided: RrlVerdict::Send,
        episode_start: false,
    };

    /// Over the limit (whether or not enforced).
    pub fn is_limited(&self) -> bool {
        self.decided != RrlVerdict::Send
    }

    /// Over the limit but sent anyway because of dry-run mode.
    pub fn is_dry_run_limited(&self) -> bool {
        self.verdict == RrlVerdict::Send && self.decided != RrlVerdict::Send
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per bucket, sustained.
    pub rate: NonZeroU32,
    /// Responses a quiet bucket may send at once (at least 1).
    pub burst: NonZeroU32,
    /// Every `slip`-th limited response of a bucket is sent truncated, the
    /// others are dropped; 0: drop all, 1: truncate all.
    pub slip: u8,
    /// IPv4 netblock length of a bucket (0..=32).
    pub ipv4_prefix: u8,
    /// IPv6 netblock length of a bucket (0..=128).
    pub ipv6_prefix: u8,
    /// Buckets held at most (at least 64 are). A bucket takes a 49-byte
    /// slot, and the maps hold 2 to 4.6 slots a bucket (power-of-two sizes,
    /// growth under eviction churn): the default 131072 is about 13 MB, up
    /// to 26 MB under a flood of new sources.
    pub table_size: NonZeroUsize,
    /// Sources never limited.
    pub whitelist: Vec<Prefix>,
    /// Decide and count, but always send.
    pub dry_run: bool,
}

impl Default for RrlConfig {
    /// Knot's defaults for rate (20/s), burst (its `instant-limit`, 50) and
    /// slip (1); /24 and /56 netblocks; 131072 buckets.
    fn default() -> Self {
        Self {
            rate: NonZeroU32::MIN.saturating_add(19),
            burst: NonZeroU32::MIN.saturating_add(49),
            slip: 1,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: NonZeroUsize::MIN.saturating_add((1 << 17) - 1),
            whitelist: Vec::new(),
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RrlConfigError {
    #[error("ipv4_prefix {0} is longer than 32")]
    Ipv4Prefix(u8),
    #[error("ipv6_prefix {0} is longer than 128")]
    Ipv6Prefix(u8),
}

impl RrlConfig {
    /// Checks what [`Rrl::new`] would otherwise clamp.
    pub fn validate(&self) -> Result<(), RrlConfigError> {
        if self.ipv4_prefix > 32 {
            return Err(RrlConfigError::Ipv4Prefix(self.ipv4_prefix));
        }
        if self.ipv6_prefix > 128 {
            return Err(RrlConfigError::Ipv6Prefix(self.ipv6_prefix));
        }
        Ok(())
    }
}

/// Counters since [`Rrl::new`]. Every checked response is counted once in
/// `sent`, `slipped` or `dropped` (the verdicts returned);
/// `would_limit` counts the dry-run responses that were over the limit
/// (also counted in `sent`), `whitelisted` the whitelisted ones (also in
/// `sent`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RrlStats {
    pub sent: u64,
    pub slipped: u64,
    pub dropped: u64,
    pub would_limit: u64,
    pub whitelisted: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    slipped: AtomicU64,
    dropped: AtomicU64,
    would_limit: AtomicU64,
    whitelisted: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BucketKey {
    /// [`Prefix::key`] of the source netblock.
    net: u128,
    /// Keyed hash of the case-folded name.
    name: u64,
    len: u8,
    class: ResponseClass,
}

#[derive(Debug, Default)]
struct Bucket {
    /// GCRA theoretical arrival time (ns).
    tat: u64,
    /// Limited responses since the last slip, below `slip`.
    slip_count: u8,
    /// In a limiting episode: limited since the bucket was last idle.
    limiting: bool,
}

impl Bucket {
    /// Accounts one response at `now`: the decision and whether it starts
    /// a limiting episode.
    fn account(&mut self, g: &Gcra, slip: u8, now: u64) -> (RrlVerdict, bool) {
        if g.is_idle(self.tat, now) {
            self.limiting = false;
        }
        if g.check(&mut self.tat, now) {
            return (RrlVerdict::Send, false);
        }
        let start = !self.limiting;
        self.limiting = true;
        if slip == 0 {
            return (RrlVerdict::Drop, start);
        }
        self.slip_count = self.slip_count.saturating_add(1);
        if self.slip_count >= slip {
            self.slip_count = 0;
            (RrlVerdict::Slip, start)
        } else {
            (RrlVerdict::Drop, start)
        }
    }
}

/// The response rate limiter. Shareable between threads (`&self`
/// everywhere).
pub struct Rrl {
    gcra: Gcra,
    slip: u8,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    dry_run: bool,
    /// None when empty: no lock taken on the hot path.
    whitelist: Option<PrefixSet>,
    /// Per-process secret for name hashes.
    names: RandomState,
    table: Shards<BucketKey, Bucket>,
    counters: Counters,
}

impl Rrl {
    /// Prefix lengths beyond the family's are clamped (see
    /// [`RrlConfig::validate`]).
    pub fn new(cfg: &RrlConfig) -> Rrl {
        Rrl {
            gcra: Gcra::new(cfg.rate.get(), cfg.burst.get()),
            slip: cfg.slip,
            ipv4_prefix: cfg.ipv4_prefix.min(32),
            ipv6_prefix: cfg.ipv6_prefix.min(128),
            dry_run: cfg.dry_run,
            whitelist: (!cfg.whitelist.is_empty()).then(|| PrefixSet::from_prefixes(cfg.whitelist.iter().copied())),
            names: RandomState::new(),
            table: Shards::new(cfg.table_size.get()),
            counters: Counters::default(),
        }
    }

    /// Decides on one UDP response to `src` of class `class` keyed by
    /// `name` (wire format; see [`ResponseClass`] for which name) at `now`
    /// (time since any fixed origin, e.g. process start).
    pub fn check(&self, src: IpAddr, class: ResponseClass, name: &[u8], now: Duration) -> RrlDecision {
        let ip = crate::canonical(src);
        if let Some(w) = &self.whitelist {
            if w.contains(ip, now) {
                bump(&self.counters.whitelisted);
                bump(&self.counters.sent);
                return RrlDecision::SEND;
            }
        }
        let net = match ip {
            IpAddr::V4(_) => Prefix::of(ip, self.ipv4_prefix),
            IpAddr::V6(_) => Prefix::of(ip, self.ipv6_prefix),
        };
        let (net, len) = net.key();
        let key = BucketKey {
            net,
            name: self.name_hash(name),
            len,
            class,
        };
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let g = &self.gcra;
        let (decided, episode_start) = self
            .table
            .upsert(
                key,
                Bucket::default,
                |b| if g.is_idle(b.tat, now) { 0 } else { b.tat },
                |b| b.account(g, self.slip, now),
            )
            .unwrap_or((RrlVerdict::Send, false));
        let verdict = if self.dry_run { RrlVerdict::Send } else { decided };
        match verdict {
            RrlVerdict::Send => {
                bump(&self.counters.sent);
                if decided != RrlVerdict::Send {
                    bump(&self.counters.would_limit);
                }
            }
            RrlVerdict::Slip => bump(&self.counters.slipped),
            RrlVerdict::Drop => bump(&self.counters.dropped),
        }
        RrlDecision {
            verdict,
            decided,
            episode_start,
        }
    }

    /// SipHash of the ASCII-lowercased name, keyed per process.
    fn name_hash(&self, name: &[u8]) -> u64 {
        let mut h = self.names.build_hasher();
        let mut buf = [0u8; 64];
        for chunk in name.chunks(buf.len()) {
            for (d, s) in buf.iter_mut().zip(chunk) {
                *d = s.to_ascii_lowercase();
            }
            h.write(buf.get(..chunk.len()).unwrap_or_default());
        }
        h.finish()
    }

    pub fn stats(&self) -> RrlStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RrlStats {
            sent: get(&c.sent),
            slipped: get(&c.slipped),
            dropped: get(&c.dropped),
            would_limit: get(&c.would_limit),
            whitelisted: get(&c.whitelisted),
        }
    }

    /// Buckets held now (locks each shard in turn: for metrics, not the
    /// hot path).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most buckets ever held: `table_size`, at least 64.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Wire format of a dotted name.
    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn config(rate: u32, burst: u32, slip: u8) -> RrlConfig {
        RrlConfig {
            rate: NonZeroU32::new(rate).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            slip,
            table_size: NonZeroUsize::new(1024).unwrap(),
            ..RrlConfig::default()
        }
    }

    fn sends(r: &Rrl, src: &str, class: ResponseClass, name: &[u8], now: Duration, n: usize) -> usize {
        (0..n)
            .filter(|_| r.check(ip(src), class, name, now).verdict == RrlVerdict::Send)
            .count()
    }

    #[test]
    fn shareable_between_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Rrl>();
    }

    #[test]
    fn rate_and_burst_per_bucket() {
        let r = Rrl::new(&config(10, 5, 0)); // T = 100 ms
        let www = wire("www.example.com");
        assert_eq!(
            sends(&r, "192.0.2.1", ResponseClass::Positive, &www, ms(1000), 20),
            5,
            "burst"
        );
        // 1000 queries a second for 10 s: exactly one every 100 ms passes
        let passed = (1..=10_000u64)
            .filter(|i| {
                r.check(ip("192.0.2.1"), ResponseClass::Positive, &www, ms(1000 + i))
                    .verdict
                    == RrlVerdict::Send
            })
            .count();
        assert_eq!(passed, 100);
        assert_eq!(r.len(), 1);
        let s = r.stats();
        assert_eq!((s.sent, s.slipped, s.dropped), (105, 0, 10_020 - 105));
    }

    #[test]
    fn classes_names_and_netblocks_are_independent() {
        let r = Rrl::new(&config(1, 3, 0));
        let www = wire("www.example.com");
        let mail = wire("mail.example.com");
        let zone = wire("example.com");
        let t = ms(5000);
        assert_eq!(sends(&r, "198.51.100.7", ResponseClass::Positive, &www, t, 10), 3);
        // same /24, same class and name: the same bucket
        assert_eq!(sends(&r, "198.51.100.200", ResponseClass::Positive, &www, t, 10), 0);
        // each other class, name and netblock has its own
        for class in ResponseClass::ALL.into_iter().filter(|&c| c != ResponseClass::Positive) {
            assert_eq!(sends(&r, "198.51.100.7", class, &zone, t, 10), 3, "{class:?}");
        }
        assert_eq!(sends(&r, "198.51.100.7", ResponseClass::Positive, &mail, t, 10), 3);
        assert_eq!(sends(&r, "198.51.101.7", ResponseClass::Positive, &www, t, 10), 3);
        // the name is case-insensitive (0x20 randomization cannot split a bucket)
        assert_eq!(
            sends(
                &r,
                "198.51.100.7",
                ResponseClass::Positive,
                &wire("WwW.ExAmPlE.CoM"),
                t,
                10
            ),
            0
        );
        // IPv6: one /56
        let a = "2001:db8:0:1200::1";
        assert_eq!(sends(&r, a, ResponseClass::Positive, &www, t, 10), 3);
        assert_eq!(
            sends(&r, "2001:db8:0:12ff:ffff::9", ResponseClass::Positive, &www, t, 10),
            0
        );
        assert_eq!(sends(&r, "2001:db8:0:1300::1", ResponseClass::Positive, &www, t, 10), 3);
        // IPv4-mapped IPv6 is the IPv4 source
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 101, 9).to_ipv6_mapped());
        assert_eq!(
            r.check(mapped, ResponseClass::Positive, &www, t).verdict,
            RrlVerdict::Drop
        );
    }

    #[test]
    fn configurable_netblocks() {
        let r = Rrl::new(&RrlConfig {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            ..config(1, 1, 0)
        });
        let n = wire("example.com");
        let t = ms(0);
        assert_eq!(sends(&r, "192.0.2.1", ResponseClass::Positive, &n, t, 5), 1);
        assert_eq!(sends(&r, "192.0.2.2", ResponseClass::Positive, &n, t, 5), 1);
        assert_eq!(sends(&r, "2001:db8:0:1:a::1", ResponseClass::Positive, &n, t, 5), 1);
        assert_eq!(sends(&r, "2001:db8:0:1:b::1", ResponseClass::Positive, &n, t, 5), 0);
        assert_eq!(sends(&r, "2001:db8:0:2::1", ResponseClass::Positive, &n, t, 5), 1);
    }

    #[test]
    fn random_subdomain_nxdomain_flood_is_one_bucket() {
        let r = Rrl::new(&config(20, 50, 0));
        let zone = wire("example.com");
        // 100 000 NXDOMAINs for random names over 10 s from all of one /24:
        // the caller keys NXDOMAIN on the zone apex
        let mut sent = 0;
        for i in 0..100_000u64 {
            let src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i * 7919 % 256) as u8));
            if r.check(src, ResponseClass::NxDomain, &zone, Duration::from_micros(i * 100))
                .verdict
                == RrlVerdict::Send
            {
                sent += 1;
            }
        }
        assert_eq!(r.len(), 1);
        assert!((50 + 199..=50 + 200).contains(&sent), "burst + 20/s for 10 s: {sent}");
        // keyed on the random qnames instead, every response is a new bucket
        let by_qname = Rrl::new(&RrlConfig {
            table_size: NonZeroUsize::new(1 << 16).unwrap(),
            ..config(20, 50, 0)
        });
        let passed = (0..1000u64)
            .filter(|i| {
                let q = wire(&format!("r{i}.example.com"));
                by_qname
                    .check(ip("203.0.113.1"), ResponseClass::NxDomain, &q, ms(0))
                    .verdict
                    == RrlVerdict::Send
            })
            .count();
        assert_eq!((passed, by_qname.len()), (1000, 1000));
    }

    fn limited_pattern(slip: u8) -> Vec<RrlVerdict> {
        let r = Rrl::new(&config(1, 1, slip));
        let n = wire("example.com");
        assert_eq!(
            r.check(ip("192.0.2.1"), ResponseClass::Positive, &n, ms(0)).verdict,
            RrlVerdict::Send
        );
        (0..12)
            .map(|_| r.check(ip("192.0.2.1"), ResponseClass::Positive, &n, ms(0)).verdict)
            .collect()
    }

    #[test]
    fn slip_ratio_is_exact() {
        use RrlVerdict::{Drop as D, Slip as S};
        assert_eq!(limited_pattern(0), vec![D; 12]);
        assert_eq!(limited_pattern(1), vec![S; 12]);
        assert_eq!(limited_pattern(2), [D, S].repeat(6));
        assert_eq!(limited_pattern(3), [D, D, S].repeat(4));
        assert_eq!(limited_pattern(255), vec![D; 12]);
        // counted
        let r = Rrl::new(&config(1, 1, 2));
        let n = wire("example.com");
        for _ in 0..101 {
            r.check(ip("192.0.2.1"), ResponseClass::Large, &n, ms(0));
        }
        let s = r.stats();
        assert_eq!((s.sent, s.slipped, s.dropped, s.would_limit), (1, 50, 50, 0));
    }

    #[test]
    fn whitelisted_sources_are_never_limited() {
        let r = Rrl::new(&RrlConfig {
            whitelist: vec!["192.0.2.128/25".parse().unwrap(), "2001:db8:5::/48".parse().unwrap()],
            ..config(1, 1, 0)
        });
        let n = wire("example.com");
        assert_eq!(sends(&r, "192.0.2.200", ResponseClass::Positive, &n, ms(0), 100), 100);
        assert_eq!(sends(&r, "2001:db8:5:1::1", ResponseClass::Error, &n, ms(0), 100), 100);
        // the rest of the /24 is limited, and the whitelisted ones made no bucket
        assert_eq!(r.len(), 0);
        assert_eq!(sends(&r, "192.0.2.1", ResponseClass::Positive, &n, ms(0), 100), 1);
        let s = r.stats();
        assert_eq!((s.sent, s.whitelisted, s.dropped), (201, 200, 99));
    }

    #[test]
    fn dry_run_always_sends_and_says_what_it_would_do() {
        let r = Rrl::new(&RrlConfig {
            dry_run: true,
            ..config(1, 2, 2)
        });
        let n = wire("example.com");
        let d: Vec<RrlDecision> = (0..6)
            .map(|_| r.check(ip("192.0.2.1"), ResponseClass::Positive, &n, ms(0)))
            .collect();
        assert!(d.iter().all(|d| d.verdict == RrlVerdict::Send));
        let decided: Vec<RrlVerdict> = d.iter().map(|d| d.decided).collect();
        use RrlVerdict::{Drop as D, Send as P, Slip as S};
        assert_eq!(decided, [P, P, D, S, D, S]);
        assert_eq!(d.iter().filter(|d| d.is_dry_run_limited()).count(), 4);
        assert_eq!(d.iter().filter(|d| d.episode_start).count(), 1);
        assert!(d[2].episode_start && d[2].is_limited());
        let s = r.stats();
        assert_eq!((s.sent, s.slipped, s.dropped, s.would_limit), (6, 0, 0, 4));
    }

    #[test]
    fn recovers_when_the_flood_stops() {
        let r = Rrl::new(&config(10, 5, 0)); // T = 100 ms
        let n = wire("example.com");
        let src = "192.0.2.1";
        // 5 s at 1000/s
        let flood: Vec<RrlDecision> = (0..5000u64)
            .map(|i| r.check(ip(src), ResponseClass::Positive, &n, ms(10_000 + i)))
            .collect();
        let passed = flood.iter().filter(|d| d.verdict == RrlVerdict::Send).count();
        assert_eq!(passed, 5 + 49, "the burst, then one every 100 ms");
        assert_eq!(
            flood.iter().filter(|d| d.episode_start).count(),
            1,
            "one episode, logged once"
        );
        assert!(flood.last().unwrap().is_limited());
        // 100 ms after the last pass the next one passes: the flood's
        // limited responses cost nothing
        let after = ms(15_000);
        assert_eq!(
            r.check(ip(src), ResponseClass::Positive, &n, after).verdict,
            RrlVerdict::Send
        );
        let d = r.check(ip(src), ResponseClass::Positive, &n, after);
        assert!(d.is_limited() && !d.episode_start, "still the same episode");
        // burst x T of quiet later: idle, the whole burst again, and the
        // next flood is a new episode
        assert_eq!(sends(&r, src, ResponseClass::Positive, &n, ms(15_600), 5), 5);
        let d = r.check(ip(src), ResponseClass::Positive, &n, ms(15_600));
        assert!(d.is_limited() && d.episode_start);
    }

    #[test]
    fn memory_bound_under_a_million_sources_and_hot_buckets_survive() {
        let cap = 10_000;
        let r = Rrl::new(&RrlConfig {
            table_size: NonZeroUsize::new(cap).unwrap(),
            ..config(20, 50, 0)
        });
        assert_eq!(r.capacity(), cap);
        let n = wire("example.com");
        let victim = ip("192.0.2.1");
        let mut victim_sent = 0;
        // 1 000 000 distinct spoofed sources (distinct /24s and /56s) over
        // 100 s, interleaved with a reflection flood aimed at one victim
        for i in 0..1_000_000u32 {
            let now = Duration::from_micros(u64::from(i) * 100);
            let src = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from((i << 8) | 1))
            } else {
                IpAddr::V6(Ipv6Addr::from((u128::from(i) << 72) | 1))
            };
            let _ = r.check(src, ResponseClass::Positive, &n, now);
            if i % 10 == 0 && r.check(victim, ResponseClass::Positive, &n, now).verdict == RrlVerdict::Send {
                victim_sent += 1;
            }
        }
        assert_eq!(r.len(), cap, "full, never over");
        // the churn never evicted the victim's indebted bucket
        assert!(victim_sent <= 50 + 20 * 100, "{victim_sent}");
        assert!(victim_sent >= 20 * 100, "{victim_sent}");
        let s = r.stats();
        assert_eq!(s.sent + s.slipped + s.dropped, 1_100_000);
    }

    #[test]
    fn small_tables_hold_64() {
        let r = Rrl::new(&RrlConfig {
            table_size: NonZeroUsize::new(1).unwrap(),
            ..config(1, 1, 0)
        });
        for i in 0..1000u32 {
            r.check(
                IpAddr::V4(Ipv4Addr::from(i << 8)),
                ResponseClass::Positive,
                b"\0",
                ms(0),
            );
        }
        assert_eq!((r.len(), r.capacity()), (64, 64));
    }

    #[test]
    fn threads_share_one_bucket_exactly() {
        let r = Rrl::new(&config(1, 100, 1));
        let n = wire("example.com");
        let sent: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| sends(&r, "192.0.2.1", ResponseClass::Positive, &n, ms(1000), 10_000)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(sent, 100, "the burst, whichever thread got it");
        let s = r.stats();
        assert_eq!((s.sent, s.slipped), (100, 39_900));
    }

    #[test]
    fn config_validation() {
        assert_eq!(RrlConfig::default().validate(), Ok(()));
        let bad4 = RrlConfig {
            ipv4_prefix: 33,
            ..RrlConfig::default()
        };
        assert_eq!(bad4.validate(), Err(RrlConfigError::Ipv4Prefix(33)));
        let bad6 = RrlConfig {
            ipv6_prefix: 129,
            ..RrlConfig::default()
        };
        assert_eq!(bad6.validate(), Err(RrlConfigError::Ipv6Prefix(129)));
        let d = RrlConfig::default();
        assert_eq!(
            (d.rate.get(), d.burst.get(), d.slip, d.table_size.get()),
            (20, 50, 1, 131_072)
        );
    }

    /// A response: header fields, question `name`/`qtype`, padded to `size`.
    fn response(flags: u8, rcode: u8, an: u16, ns: u16, name: &str, qtype: u16, size: usize) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x80 | flags, rcode, 0, 1];
        m.extend_from_slice(&an.to_be_bytes());
        m.extend_from_slice(&ns.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&wire(name));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.resize(size.max(m.len()), 0);
        m
    }

    #[test]
    fn classify_from_wire() {
        use ResponseClass::*;
        const AA: u8 = 0x04;
        let c = ResponseClass::classify;
        assert_eq!(c(&response(AA, 0, 1, 0, "www.example.com", 1, 0), false), Positive);
        assert_eq!(c(&response(AA, 0, 1, 0, "www.example.com", 1, 0), true), Wildcard);
        assert_eq!(c(&response(AA, 3, 0, 1, "nope.example.com", 1, 0), false), NxDomain);
        assert_eq!(c(&response(AA, 3, 0, 1, "nope.example.com", 1, 0), true), NxDomain);
        assert_eq!(c(&response(AA, 0, 0, 1, "www.example.com", 28, 0), false), NoData);
        assert_eq!(c(&response(0, 0, 0, 2, "a.child.example.com", 1, 0), false), Referral);
        assert_eq!(c(&response(AA, 2, 0, 0, "www.example.com", 1, 0), false), Error);
        assert_eq!(c(&response(0, 5, 0, 0, "other.org", 1, 0), false), Error);
        assert_eq!(c(&response(AA, 0, 5, 0, "example.com", 255, 0), false), Large);
        assert_eq!(
            c(&response(AA, 0, 9, 0, "example.com", 48, LARGE_RESPONSE), false),
            Large
        );
        assert_eq!(
            c(&response(AA, 0, 9, 0, "example.com", 48, LARGE_RESPONSE - 1), false),
            Positive
        );
        assert_eq!(c(&[0x12, 0x34, 0x80], false), Error, "truncated header");
        // a question cut short is no ANY
        let mut cut = response(AA, 0, 1, 0, "www.example.com", 255, 0);
        cut.truncate(20);
        assert_eq!(c(&cut, false), Positive);
        assert_eq!(question_type(&response(0, 0, 0, 0, "", 255, 0)), Some(255));
    }

    proptest! {
        /// Any arrival pattern into one bucket: sends never exceed
        /// burst + elapsed / T; the k-th limited response slips iff k is a
        /// multiple of slip; dry-run sends everything and decides the same.
        #[test]
        fn one_bucket_rate_slip_and_dry_run(
            gaps in proptest::collection::vec(0u64..30_000_000, 1..300),
            rate in 1u32..100,
            burst in 1u32..8,
            slip in 0u8..5,
        ) {
            let enforced = Rrl::new(&config(rate, burst, slip));
            let dry = Rrl::new(&RrlConfig { dry_run: true, ..config(rate, burst, slip) });
            let n = wire("example.com");
            let (mut now, mut sent, mut limited) = (1_000_000_000u64, 0u64, 0u64);
            for gap in &gaps {
                now += gap;
                let t = Duration::from_nanos(now);
                let e = enforced.check(ip("192.0.2.1"), ResponseClass::Positive, &n, t);
                let d = dry.check(ip("192.0.2.1"), ResponseClass::Positive, &n, t);
                prop_assert_eq!(d.verdict, RrlVerdict::Send);
                prop_assert_eq!(d.decided, e.decided);
                prop_assert_eq!(e.verdict, e.decided);
                match e.verdict {
                    RrlVerdict::Send => sent += 1,
                    v => {
                        limited += 1;
                        let slips = slip != 0 && limited % u64::from(slip) == 0;
                        prop_assert_eq!(v, if slips { RrlVerdict::Slip } else { RrlVerdict::Drop });
                    }
                }
            }
            let elapsed = now - 1_000_000_000 - gaps[0];
            let t = 1_000_000_000 / u64::from(rate);
            prop_assert!(sent <= u64::from(burst) + elapsed / t, "{} sent in {} ns", sent, elapsed);
            let (es, ds) = (enforced.stats(), dry.stats());
            prop_assert_eq!(es.sent + es.slipped + es.dropped, gaps.len() as u64);
            prop_assert_eq!((ds.sent, ds.would_limit), (gaps.len() as u64, es.slipped + es.dropped));
        }

        /// Two sources share a bucket exactly when they are in the same
        /// configured netblock.
        #[test]
        fn netblocks_aggregate_exactly(
            a: u32, flip4: u32, s4 in 0u32..=32, l4 in 0u8..=32,
            a6: u128, flip6: u128, s6 in 0u32..=128, l6 in 0u8..=128,
        ) {
            let r = Rrl::new(&RrlConfig { ipv4_prefix: l4, ipv6_prefix: l6, ..config(1, 1, 0) });
            let n = wire("example.com");
            // b differs from a in its low bits only, so that they often share a prefix
            let b = a ^ flip4.checked_shr(s4).unwrap_or(0);
            let a6 = a6 | (1 << 127); // never IPv4-mapped
            let b6 = (a6 ^ flip6.checked_shr(s6).unwrap_or(0)) | (1 << 127);
            let same = |x: u128, y: u128, l: u8, bits: u32| l == 0 || (x ^ y) >> (bits - u32::from(l)) == 0;
            for (x, y, same) in [
                (IpAddr::V4(a.into()), IpAddr::V4(b.into()), same(a.into(), b.into(), l4, 32)),
                (IpAddr::V6(a6.into()), IpAddr::V6(b6.into()), same(a6, b6, l6, 128)),
            ] {
                prop_assert_eq!(r.check(x, ResponseClass::Positive, &n, ms(0)).verdict, RrlVerdict::Send);
                let second = r.check(y, ResponseClass::Positive, &n, ms(0)).verdict;
                prop_assert_eq!(second == RrlVerdict::Drop, same);
            }
        }

        /// Names are compared case-insensitively, and only case is folded.
        #[test]
        fn names_fold_case_only(name in proptest::collection::vec(any::<u8>(), 0..300), extra: u8) {
            let r = Rrl::new(&config(1, 1, 0));
            let upper = name.to_ascii_uppercase();
            prop_assert_eq!(r.check(ip("192.0.2.1"), ResponseClass::Positive, &name, ms(0)).verdict, RrlVerdict::Send);
            prop_assert_eq!(r.check(ip("192.0.2.1"), ResponseClass::Positive, &upper, ms(0)).verdict, RrlVerdict::Drop);
            let mut other = name.clone();
            other.push(extra);
            prop_assert_eq!(r.check(ip("192.0.2.1"), ResponseClass::Positive, &other, ms(0)).verdict, RrlVerdict::Send);
        }
    }
}
