//! IP prefixes and prefix sets with optional expiry.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

/// A network: address (host bits zero) and length. IPv4 is stored as its
/// IPv4-mapped IPv6 form with length + 96, so one key type serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    bits: u128,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR prefix")]
pub struct PrefixError(pub String);

impl Prefix {
    /// The prefix of length `len` (in the address family's own terms, e.g.
    /// 24 for IPv4) containing `ip`.
    pub fn of(ip: IpAddr, len: u8) -> Prefix {
        let (bits, len) = match ip {
            IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), len.min(32) + 96),
            IpAddr::V6(a) => (u128::from(a), len.min(128)),
        };
        Prefix {
            bits: bits & mask(len),
            len,
        }
    }

    /// The single address.
    pub fn host(ip: IpAddr) -> Prefix {
        Prefix::of(ip, 128)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let p = Prefix::host(ip);
        p.bits & mask(self.len) == self.bits
    }

    /// A compact key for hash tables.
    pub fn key(&self) -> (u128, u8) {
        (self.bits, self.len)
    }

    /// The prefix a [`Prefix::key`] came from (host bits cleared).
    pub fn from_key(k: (u128, u8)) -> Prefix {
        let len = k.1.min(128);
        Prefix {
            bits: k.0 & mask(len),
            len,
        }
    }

    fn is_v4(&self) -> bool {
        self.len >= 96 && (self.bits >> 32) == 0xffff
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let err = || PrefixError(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| err())?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(err());
        }
        Ok(Prefix::of(ip, len))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() {
            let a = Ipv4Addr::from((self.bits & 0xffff_ffff) as u32);
            write!(f, "{a}/{}", self.len - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.bits), self.len)
        }
    }
}

/// A set of prefixes, each with an optional expiry. Lookup costs one hash
/// probe per distinct prefix length in the set (a handful in practice).
/// Reads take a shared lock; writes (config, dynamic blocks) are rare.
#[derive(Default)]
pub struct PrefixSet {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// prefix -> expiry (None: permanent)
    entries: HashMap<(u128, u8), Option<Duration>>,
    /// distinct lengths present, longest first
    lengths: Vec<u8>,
}

impl PrefixSet {
    pub fn from_prefixes(p: impl IntoIterator<Item = Prefix>) -> PrefixSet {
        let s = PrefixSet::default();
        for x in p {
            s.insert(x, None);
        }
        s
    }

    /// Adds (or refreshes) `p`, until `expires` if given.
    pub fn insert(&self, p: Prefix, expires: Option<Duration>) {
        if let Ok(mut g) = self.inner.write() {
            g.entries.insert(p.key(), expires);
            if !g.lengths.contains(&p.len) {
                g.lengths.push(p.len);
                g.lengths.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
    }

    /// Drops expired entries; returns how many were removed.
    pub fn expire(&self, now: Duration) -> usize {
        let Ok(mut g) = self.inner.write() else { return 0 };
        let before = g.entries.len();
        g.entries.retain(|_, e| e.is_none_or(|t| t > now));
        let mut lens: Vec<u8> = g.entries.keys().map(|k| k.1).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        g.lengths = lens;
        before - g.entries.len()
    }

    pub fn contains(&self, ip: IpAddr, now: Duration) -> bool {
        let Ok(g) = self.inner.read() else { return false };
        if g.entries.is_empty() {
            return false;
        }
        let host = Prefix::host(ip);
        g.lengths.iter().any(|&len| {
            let k = (host.bits & mask(len), len);
            matches!(g.entries.get(&k), Some(e) if e.is_none_or(|t| t > now))
        })
    }

    pub fn len(&self) -> usize {
        self.inner.read().map_or(0, |g| g.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_contains() {
        let p: Prefix = "192.0.2.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert!(p.contains("192.0.2.1".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let q: Prefix = "2001:db8:1::/48".parse().unwrap();
        assert_eq!(q.to_string(), "2001:db8:1::/48");
        assert!(q.contains("2001:db8:1:ffff::1".parse().unwrap()));
        assert_eq!("198.18.0.1".parse::<Prefix>().unwrap().to_string(), "198.18.0.1/32");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nope".parse::<Prefix>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Prefix>()
            .unwrap()
            .contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn set_with_expiry() {
        let s = PrefixSet::from_prefixes(["198.18.0.0/15".parse().unwrap()]);
        let ip: IpAddr = "198.19.1.1".parse().unwrap();
        assert!(s.contains(ip, Duration::ZERO));
        let t = "203.0.113.9".parse().unwrap();
        s.insert(Prefix::host(t), Some(Duration::from_secs(10)));
        assert!(s.contains(t, Duration::from_secs(9)));
        assert!(!s.contains(t, Duration::from_secs(10)));
        assert_eq!(s.expire(Duration::from_secs(11)), 1);
        assert_eq!(s.len(), 1);
    }
}
