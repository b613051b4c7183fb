//! DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018.
//!
//! Every PoP is configured with the same secret, so a resolver whose queries
//! land on another PoP after a routing change still presents a valid cookie.
//! Rollover: configure the new secret as `current` on every PoP while the
//! old one stays as `previous`; after an hour, drop `previous`.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// Server cookie length (RFC 9018 4: version, reserved, timestamp, hash).
pub const SERVER_COOKIE_LEN: usize = 16;
pub const CLIENT_COOKIE_LEN: usize = 8;

/// Shared cookie secrets (16 bytes each, SipHash-2-4 keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secrets {
    pub current: [u8; 16],
    pub previous: Option<[u8; 16]>,
}

/// What the client's COOKIE option showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieState {
    /// No COOKIE option.
    None,
    /// Client cookie only, or a server cookie we did not issue / expired.
    ClientOnly,
    /// A server cookie we (or another PoP with the same secret) issued.
    Valid,
}

fn hash(secret: &[u8; 16], client: &[u8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(head);
    match ip {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

/// The 16-byte server cookie for `client` at `now` (UNIX seconds, mod 2^32).
pub fn make(secrets: &Secrets, client: &[u8], ip: IpAddr, now: u32) -> [u8; SERVER_COOKIE_LEN] {
    let mut head = [0u8; 8];
    head[0] = 1; // version
    head[4..8].copy_from_slice(&now.to_be_bytes());
    let mut out = [0u8; SERVER_COOKIE_LEN];
    out[..8].copy_from_slice(&head);
    out[8..].copy_from_slice(&hash(&secrets.current, client, &head, ip));
    out
}

/// Checks a full COOKIE option payload (client cookie + server cookie).
pub fn check(secrets: &Secrets, option: &[u8], ip: IpAddr, now: u32) -> CookieState {
    if option.len() < CLIENT_COOKIE_LEN {
        return CookieState::None;
    }
    if option.len() != CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN {
        return CookieState::ClientOnly;
    }
    let (client, server) = option.split_at(CLIENT_COOKIE_LEN);
    if server[0] != 1 {
        return CookieState::ClientOnly;
    }
    let ts = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // RFC 9018 4.3: valid from 1 hour in the past to 5 minutes ahead
    // (serial-number arithmetic, so it survives the 2106 wrap).
    let age = now.wrapping_sub(ts) as i32;
    if !(-300..=3600).contains(&age) {
        return CookieState::ClientOnly;
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&server[..8]);
    for secret in std::iter::once(&secrets.current).chain(secrets.previous.iter()) {
        if constant_eq(&hash(secret, client, &head, ip), &server[8..]) {
            return CookieState::Valid;
        }
    }
    CookieState::ClientOnly
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 100));

    fn opt(client: &[u8], server: &[u8]) -> Vec<u8> {
        [client, server].concat()
    }

    #[test]
    fn rfc9018_appendix_a1_vector() {
        // RFC 9018 A.1: client 2464c4abcf10c957, secret e5e973e5a6b2a43f48e7dc849e37bfcf,
        // timestamp 1559731985 -> server cookie 010000005cf79f111f8130c3eee29480
        let secret: [u8; 16] = [
            0xe5, 0xe9, 0x73, 0xe5, 0xa6, 0xb2, 0xa4, 0x3f, 0x48, 0xe7, 0xdc, 0x84, 0x9e, 0x37, 0xbf, 0xcf,
        ];
        let s = Secrets {
            current: secret,
            previous: None,
        };
        let client = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];
        let ip: IpAddr = "198.51.100.100".parse().unwrap();
        let c = make(&s, &client, ip, 1559731985);
        assert_eq!(
            c,
            [0x01, 0x00, 0x00, 0x00, 0x5c, 0xf7, 0x9f, 0x11, 0x1f, 0x81, 0x30, 0xc3, 0xee, 0xe2, 0x94, 0x80]
        );
        assert_eq!(check(&s, &opt(&client, &c), ip, 1559731985 + 10), CookieState::Valid);
    }

    #[test]
    fn another_pop_with_the_same_secret_accepts_it_and_rollover_works() {
        let old = Secrets {
            current: [7; 16],
            previous: None,
        };
        let client = [1u8; 8];
        let c = make(&old, &client, IP, 1000);
        // another PoP, same secret
        assert_eq!(check(&old.clone(), &opt(&client, &c), IP, 1001), CookieState::Valid);
        // rollover: new current, old as previous -> still valid
        let rolled = Secrets {
            current: [9; 16],
            previous: Some([7; 16]),
        };
        assert_eq!(check(&rolled, &opt(&client, &c), IP, 1002), CookieState::Valid);
        // old secret dropped -> not valid any more
        let done = Secrets {
            current: [9; 16],
            previous: None,
        };
        assert_eq!(check(&done, &opt(&client, &c), IP, 1003), CookieState::ClientOnly);
    }

    #[test]
    fn expiry_address_and_tampering() {
        let s = Secrets {
            current: [3; 16],
            previous: None,
        };
        let client = [2u8; 8];
        let c = make(&s, &client, IP, 10_000);
        assert_eq!(check(&s, &opt(&client, &c), IP, 10_000 + 3601), CookieState::ClientOnly);
        assert_eq!(check(&s, &opt(&client, &c), IP, 10_000 - 301), CookieState::ClientOnly);
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(check(&s, &opt(&client, &c), other, 10_000), CookieState::ClientOnly);
        let mut bad = c;
        bad[15] ^= 1;
        assert_eq!(check(&s, &opt(&client, &bad), IP, 10_000), CookieState::ClientOnly);
        assert_eq!(check(&s, &client, IP, 10_000), CookieState::ClientOnly);
    }
}
