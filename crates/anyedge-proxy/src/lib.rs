//! Sans-IO codec for the HAProxy PROXY protocol (versions 1 and 2, as
//! specified in HAProxy's `proxy-protocol.txt`), plus a TLS ClientHello SNI
//! peeker in [`sni`].
//!
//! Nothing here touches sockets or an async runtime: the caller owns the
//! buffers.
//!
//! * Encoding ([`encode_v1`], [`encode_v2`]) only appends to a caller-provided
//!   `Vec<u8>`, so a reused buffer means no allocation on the hot path.
//! * Decoding ([`decode`]) borrows from the input: the [`Header`] and its
//!   [`Tlv`]s point into the caller's buffer. It is incremental: feed it the
//!   bytes received so far and it answers [`Decoded::Incomplete`],
//!   [`Decoded::Complete`], or an error; [`DecodeError::NotProxy`] is reported
//!   as soon as the bytes seen cannot start a PROXY header, so a caller can
//!   treat the connection as a plain one after a single byte.
//!
//! No input can make this crate panic (it is fuzzed and property-tested).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub mod sni;

#[cfg(test)]
mod tests;

/// TLV type codes (`PP2_TYPE_*`) from the spec, plus the custom ones we use.
pub mod tlv {
    /// Application-Layer Protocol Negotiation (`PP2_TYPE_ALPN`).
    pub const ALPN: u8 = 0x01;
    /// Host name the client asked for, e.g. the TLS SNI (`PP2_TYPE_AUTHORITY`).
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32C of the whole header (`PP2_TYPE_CRC32C`), 4 bytes, big-endian.
    pub const CRC32C: u8 = 0x03;
    /// Padding, ignored by receivers (`PP2_TYPE_NOOP`).
    pub const NOOP: u8 = 0x04;
    /// Opaque connection identifier, up to 128 bytes (`PP2_TYPE_UNIQUE_ID`).
    pub const UNIQUE_ID: u8 = 0x05;
    /// SSL/TLS information, itself a TLV container (`PP2_TYPE_SSL`).
    pub const SSL: u8 = 0x20;
    /// Network namespace name (`PP2_TYPE_NETNS`).
    pub const NETNS: u8 = 0x30;
    /// first custom type, we use it for the PoP name
    pub const ANYEDGE_POP: u8 = 0xE0;
}

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// Length of the fixed part of a v2 header (signature, ver/cmd, fam, len).
pub const V2_FIXED_LEN: usize = 16;

/// Maximum length of a v1 line, CRLF included (spec section 2.1).
pub const V1_MAX_LEN: usize = 107;

const V1_PREFIX: &[u8] = b"PROXY ";
/// Shortest possible v1 line: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;

/// One v2 Type-Length-Value entry, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Type code, see [`tlv`].
    pub kind: u8,
    /// Value bytes (at most 65535).
    pub value: &'a [u8],
}

/// The addresses carried by a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// LOCAL command / UNKNOWN family
    Unspecified,
    /// A proxied TCP connection: the original client (`src`) and the address
    /// it connected to (`dst`).
    Tcp {
        /// Original source (the client).
        src: SocketAddr,
        /// Original destination.
        dst: SocketAddr,
    },
}

/// Protocol version of a decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Human-readable text line.
    V1,
    /// Binary header.
    V2,
}

/// Errors from [`encode_v2`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum EncodeError {
    /// The header would be longer than the 16-bit length field allows.
    #[error("PROXY v2 header would exceed 65535 bytes after the fixed part")]
    TooLong,
}

/// Errors from [`decode`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The bytes seen so far cannot be the start of a PROXY header.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// The header is (or would be) longer than allowed. `len` is the length
    /// declared by a v2 header, or the number of bytes scanned without
    /// finding the end of a v1 line; `max` the limit in force.
    #[error("PROXY header too long ({len} bytes, limit {max})")]
    TooLong {
        /// Declared or scanned length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// v2 version nibble is not 2.
    #[error("unsupported PROXY v2 version")]
    BadVersion,
    /// v2 command is neither LOCAL nor PROXY.
    #[error("unsupported PROXY v2 command")]
    BadCommand,
    /// v2 address family or transport protocol is invalid or unsupported.
    #[error("invalid or unsupported PROXY v2 family/transport")]
    BadFamily,
    /// v2 length is too short for the declared address family.
    #[error("PROXY v2 length too short for address family")]
    BadAddressLength,
    /// A v1 line does not follow the grammar; the string says which part.
    #[error("malformed PROXY v1 line: {0}")]
    BadV1Line(&'static str),
    /// A v2 TLV is malformed (runs past the end, bad CRC32C TLV length, ...).
    #[error("malformed PROXY v2 TLV")]
    BadTlv,
    /// The CRC32C TLV does not match the header.
    #[error("PROXY v2 CRC32C mismatch")]
    BadCrc,
}

/// A decoded header, borrowing from the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Which protocol version the header used.
    pub version: Version,
    /// The addresses (or [`Addresses::Unspecified`]).
    pub addrs: Addresses,
    /// raw TLV area (v2 only; empty for v1)
    pub tlv_bytes: &'a [u8],
}

impl<'a> Header<'a> {
    /// Iterates over the TLVs. Headers returned by [`decode`] have already
    /// been checked, so the iterator never yields an error for them.
    pub fn tlvs(&self) -> TlvIter<'a> {
        TlvIter::new(self.tlv_bytes)
    }

    /// Value of the first TLV of type `kind`, if any (stops at a malformed TLV).
    pub fn find(&self, kind: u8) -> Option<&'a [u8]> {
        self.tlvs()
            .map_while(Result::ok)
            .find(|t| t.kind == kind)
            .map(|t| t.value)
    }

    /// Value of the `PP2_TYPE_AUTHORITY` TLV.
    pub fn authority(&self) -> Option<&'a [u8]> {
        self.find(tlv::AUTHORITY)
    }

    /// Value of the `PP2_TYPE_UNIQUE_ID` TLV.
    pub fn unique_id(&self) -> Option<&'a [u8]> {
        self.find(tlv::UNIQUE_ID)
    }

    /// Value of our custom PoP-name TLV ([`tlv::ANYEDGE_POP`]).
    pub fn pop(&self) -> Option<&'a [u8]> {
        self.find(tlv::ANYEDGE_POP)
    }
}

/// Iterator over a raw TLV area, yielding `Err(DecodeError::BadTlv)` once
/// (then ending) if a TLV runs past the end.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    /// Iterates the TLVs in `bytes` (a v2 TLV area).
    pub fn new(bytes: &'a [u8]) -> Self {
        TlvIter { rest: bytes }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = match self.rest {
            [kind, hi, lo, body @ ..] => {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                body.get(..len)
                    .zip(body.get(len..))
                    .map(|(value, rest)| (Tlv { kind: *kind, value }, rest))
            }
            _ => None,
        };
        match parsed {
            Some((t, rest)) => {
                self.rest = rest;
                Some(Ok(t))
            }
            None => {
                self.rest = &[];
                Some(Err(DecodeError::BadTlv))
            }
        }
    }
}

/// Result of a successful [`decode`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// need more bytes; `at_least` is the minimum total buffer length worth retrying with
    ///
    /// `at_least` never exceeds the length of any valid header that starts
    /// with the bytes seen, so waiting for it cannot deadlock a
    /// server-speaks-first protocol. Retrying earlier is harmless and may
    /// detect [`DecodeError::NotProxy`] sooner.
    Incomplete {
        /// Minimum total buffer length worth retrying with.
        at_least: usize,
    },
    /// header parsed, occupying the first `len` bytes of the input
    Complete {
        /// The header.
        header: Header<'a>,
        /// Number of bytes of the input the header occupies.
        len: usize,
    },
}

/// Whether `buf` is a (possibly partial) prefix of the v2 signature, or
/// starts with the full signature.
pub fn is_v2_signature_prefix(buf: &[u8]) -> bool {
    let n = buf.len().min(V2_SIGNATURE.len());
    buf[..n] == V2_SIGNATURE[..n]
}

/// Whether `buf` starts with a whole PROXY signature, v1 (`"PROXY "`) or
/// v2 (12 bytes). A receiver that refuses PROXY headers from a source must
/// wait for this before refusing: `"P"` or `"\r\n"` alone may still be the
/// start of an ordinary request.
pub fn has_signature(buf: &[u8]) -> bool {
    buf.starts_with(V1_PREFIX) || buf.starts_with(&V2_SIGNATURE)
}

// ---------------------------------------------------------------- encoding

fn mapped(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        SocketAddr::V6(v6) => v6,
    }
}

enum Pair {
    V4(SocketAddrV4, SocketAddrV4),
    V6(SocketAddrV6, SocketAddrV6),
}

fn pair(src: SocketAddr, dst: SocketAddr) -> Pair {
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => Pair::V4(s, d),
        (s, d) => Pair::V6(mapped(s), mapped(d)),
    }
}

/// Appends a v1 line ("PROXY TCP4 a b p q\r\n" / TCP6 / "PROXY UNKNOWN\r\n"). Mixed families (v4 src, v6 dst): map v4 to v4-mapped v6 and emit TCP6.
pub fn encode_v1(out: &mut Vec<u8>, addrs: &Addresses) {
    // Writing into a Vec cannot fail, so the io::Result is ignored.
    let _ = match *addrs {
        Addresses::Unspecified => out.write_all(b"PROXY UNKNOWN\r\n"),
        Addresses::Tcp { src, dst } => match pair(src, dst) {
            Pair::V4(s, d) => write!(out, "PROXY TCP4 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()),
            Pair::V6(s, d) => write!(out, "PROXY TCP6 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()),
        },
    };
}

/// Appends a v2 header, command PROXY (or LOCAL for Unspecified), STREAM transport, the TLVs in order; when `crc32c` is true appends a CRC32C TLV and fills it per spec (checksum over the whole header with the crc field zeroed). Mixed families -> v4-mapped into INET6. Errors if total length exceeds u16.
///
/// On error nothing is appended. A [`tlv::CRC32C`] entry passed in `tlvs`
/// is emitted verbatim (pass `crc32c = true` instead to have it computed).
pub fn encode_v2(out: &mut Vec<u8>, addrs: &Addresses, tlvs: &[Tlv<'_>], crc32c: bool) -> Result<(), EncodeError> {
    let pair = match *addrs {
        Addresses::Unspecified => None,
        Addresses::Tcp { src, dst } => Some(pair(src, dst)),
    };
    let addr_len: usize = match pair {
        None => 0,
        Some(Pair::V4(..)) => 12,
        Some(Pair::V6(..)) => 36,
    };
    let mut body_len = addr_len;
    for t in tlvs {
        body_len = body_len.saturating_add(3).saturating_add(t.value.len());
    }
    if crc32c {
        body_len = body_len.saturating_add(7);
    }
    let Ok(body_len16) = u16::try_from(body_len) else {
        return Err(EncodeError::TooLong);
    };

    let start = out.len();
    out.reserve(V2_FIXED_LEN + body_len);
    out.extend_from_slice(&V2_SIGNATURE);
    let (ver_cmd, fam) = match pair {
        None => (0x20, 0x00),
        Some(Pair::V4(..)) => (0x21, 0x11),
        Some(Pair::V6(..)) => (0x21, 0x21),
    };
    out.push(ver_cmd);
    out.push(fam);
    out.extend_from_slice(&body_len16.to_be_bytes());
    match pair {
        None => {}
        Some(Pair::V4(s, d)) => {
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        Some(Pair::V6(s, d)) => {
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    for t in tlvs {
        out.push(t.kind);
        // Cannot truncate: the total (which includes this) fits in u16.
        out.extend_from_slice(&(t.value.len() as u16).to_be_bytes());
        out.extend_from_slice(t.value);
    }
    if crc32c {
        out.extend_from_slice(&[tlv::CRC32C, 0, 4, 0, 0, 0, 0]);
        let end = out.len();
        let crc = crc32c::crc32c(&out[start..end]);
        out[end - 4..end].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

// ---------------------------------------------------------------- decoding

/// Auto-detects v1 ("PROXY ") or v2 (12-byte signature). `max_len` caps the total header size accepted (v1 is always capped at 107 per spec). Returns Err(DecodeError::NotProxy) as soon as the prefix seen cannot be a PROXY header (so a caller can reject a client after only a few bytes). Validates: version nibble 2, command LOCAL/PROXY, family/transport, address length vs family, v1 grammar strictly (ports 0-65535 without leading zeros beyond "0", valid IPs of the declared family, single spaces, CRLF), and a CRC32C TLV if present (mismatch -> error). TLVs must be well-formed (a TLV running past the end -> error).
///
/// The v1 limit is `min(max_len, 107)`.
///
/// Semantics of v2 corner cases: the LOCAL command always yields
/// [`Addresses::Unspecified`] (the spec says to ignore the address block);
/// the UNSPEC and UNIX families yield [`Addresses::Unspecified`] too (their
/// address block, if any, is skipped); INET/INET6 with the PROXY command
/// must use the STREAM transport (DGRAM is rejected with
/// [`DecodeError::BadFamily`]). At most one CRC32C TLV is accepted and it
/// must be 4 bytes long.
pub fn decode(buf: &[u8], max_len: usize) -> Result<Decoded<'_>, DecodeError> {
    match buf.first() {
        None => Ok(Decoded::Incomplete { at_least: V1_MIN_LEN }),
        Some(b'P') => decode_v1(buf, max_len.min(V1_MAX_LEN)),
        Some(0x0D) => decode_v2(buf, max_len),
        Some(_) => Err(DecodeError::NotProxy),
    }
}

fn decode_v2(buf: &[u8], max_len: usize) -> Result<Decoded<'_>, DecodeError> {
    if !is_v2_signature_prefix(buf) {
        return Err(DecodeError::NotProxy);
    }
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != 2 {
            return Err(DecodeError::BadVersion);
        }
        if ver_cmd & 0x0F > 1 {
            return Err(DecodeError::BadCommand);
        }
    }
    if let Some(&fam) = buf.get(13) {
        if fam >> 4 > 3 || fam & 0x0F > 2 {
            return Err(DecodeError::BadFamily);
        }
    }
    let (ver_cmd, fam, len_hi, len_lo) = match buf {
        [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d, ..] => (*a, *b, *c, *d),
        _ => return Ok(Decoded::Incomplete { at_least: V2_FIXED_LEN }),
    };
    let body_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let total = V2_FIXED_LEN + body_len;
    if total > max_len {
        return Err(DecodeError::TooLong {
            len: total,
            max: max_len,
        });
    }
    let is_proxy = ver_cmd & 0x0F == 1;
    let (family, transport) = (fam >> 4, fam & 0x0F);
    let addr_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        _ => 216,
    };
    if body_len < addr_len {
        return Err(DecodeError::BadAddressLength);
    }
    if is_proxy && family != 0 && transport != 1 {
        return Err(DecodeError::BadFamily);
    }
    let Some(header) = buf.get(..total) else {
        return Ok(Decoded::Incomplete { at_least: total });
    };
    let addr = &header[V2_FIXED_LEN..V2_FIXED_LEN + addr_len];
    let tlv_off = V2_FIXED_LEN + addr_len;
    let tlv_bytes = &header[tlv_off..];

    let addrs = if !is_proxy {
        Addresses::Unspecified
    } else {
        match *addr {
            [a0, a1, a2, a3, b0, b1, b2, b3, p0, p1, q0, q1] => Addresses::Tcp {
                src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a0, a1, a2, a3)), u16::from_be_bytes([p0, p1])),
                dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b0, b1, b2, b3)), u16::from_be_bytes([q0, q1])),
            },
            _ if family == 2 => {
                let (s, rest) = addr.split_at(16);
                let (d, ports) = rest.split_at(16);
                let s = <[u8; 16]>::try_from(s).map_err(|_| DecodeError::BadAddressLength)?;
                let d = <[u8; 16]>::try_from(d).map_err(|_| DecodeError::BadAddressLength)?;
                let (sp, dp) = match *ports {
                    [p0, p1, q0, q1] => (u16::from_be_bytes([p0, p1]), u16::from_be_bytes([q0, q1])),
                    _ => return Err(DecodeError::BadAddressLength),
                };
                Addresses::Tcp {
                    src: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sp),
                    dst: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dp),
                }
            }
            _ => Addresses::Unspecified,
        }
    };

    // Validate TLVs and the optional CRC32C.
    let mut crc_at: Option<usize> = None;
    let mut off = tlv_off;
    for t in TlvIter::new(tlv_bytes) {
        let t = t?;
        if t.kind == tlv::CRC32C {
            if t.value.len() != 4 || crc_at.is_some() {
                return Err(DecodeError::BadTlv);
            }
            crc_at = Some(off + 3);
        }
        off += 3 + t.value.len();
    }
    if let Some(at) = crc_at {
        let want = header
            .get(at..at + 4)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
            .ok_or(DecodeError::BadTlv)?;
        let mut crc = crc32c::crc32c(&header[..at]);
        crc = crc32c::crc32c_append(crc, &[0; 4]);
        crc = crc32c::crc32c_append(crc, &header[at + 4..]);
        if crc != want {
            return Err(DecodeError::BadCrc);
        }
    }

    Ok(Decoded::Complete {
        header: Header {
            version: Version::V2,
            addrs,
            tlv_bytes,
        },
        len: total,
    })
}

/// The protocol tokens a v1 line can continue with after "PROXY ".
const V1_PROTOS: [&[u8]; 4] = [b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r"];

fn decode_v1(buf: &[u8], cap: usize) -> Result<Decoded<'_>, DecodeError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(DecodeError::NotProxy);
    }
    let rest = &buf[n..];
    // Early check of the protocol token, so garbage is rejected before CRLF.
    let proto_ok = V1_PROTOS.iter().any(|p| {
        let m = rest.len().min(p.len());
        rest[..m] == p[..m]
    });
    if !proto_ok {
        return Err(DecodeError::BadV1Line("unknown protocol"));
    }
    let is_tcp = rest.starts_with(b"TCP");
    let window = &buf[..buf.len().min(cap)];
    // Find the end of the line, rejecting bad characters early for TCP lines.
    let mut end = None;
    for (i, &b) in window.iter().enumerate().skip(V1_PREFIX.len()) {
        match b {
            b'\r' => {
                end = Some(i);
                break;
            }
            b'\n' => return Err(DecodeError::BadV1Line("LF without CR")),
            // After "PROXY TCPx " only address/port characters may follow.
            b' ' | b'.' | b':' | b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {}
            _ if is_tcp && i >= V1_PREFIX.len() + 5 => return Err(DecodeError::BadV1Line("invalid character")),
            _ => {}
        }
    }
    let Some(cr) = end else {
        if buf.len() >= cap {
            return Err(DecodeError::TooLong {
                len: buf.len(),
                max: cap,
            });
        }
        return Ok(Decoded::Incomplete {
            at_least: (buf.len() + 1).max(V1_MIN_LEN),
        });
    };
    let len = cr + 2;
    if len > cap {
        return Err(DecodeError::TooLong { len, max: cap });
    }
    match buf.get(cr + 1) {
        None => return Ok(Decoded::Incomplete { at_least: len }),
        Some(b'\n') => {}
        Some(_) => return Err(DecodeError::BadV1Line("CR without LF")),
    }
    let line = &buf[V1_PREFIX.len()..cr];
    let header = |addrs| Decoded::Complete {
        header: Header {
            version: Version::V1,
            addrs,
            tlv_bytes: &[],
        },
        len,
    };
    if line.starts_with(b"UNKNOWN") {
        // Spec: the receiver must ignore anything after UNKNOWN.
        return Ok(header(Addresses::Unspecified));
    }
    // "TCP4 src dst sport dport" with single spaces.
    let line = std::str::from_utf8(line).map_err(|_| DecodeError::BadV1Line("not ASCII"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let src = fields.next().ok_or(DecodeError::BadV1Line("missing field"))?;
    let dst = fields.next().ok_or(DecodeError::BadV1Line("missing field"))?;
    let sport = fields.next().ok_or(DecodeError::BadV1Line("missing field"))?;
    let dport = fields.next().ok_or(DecodeError::BadV1Line("missing field"))?;
    if fields.next().is_some() {
        return Err(DecodeError::BadV1Line("trailing data"));
    }
    let (src, dst) = match proto {
        "TCP4" => (IpAddr::V4(parse_ip(src)?), IpAddr::V4(parse_ip(dst)?)),
        "TCP6" => (IpAddr::V6(parse_ip(src)?), IpAddr::V6(parse_ip(dst)?)),
        _ => return Err(DecodeError::BadV1Line("unknown protocol")),
    };
    let sport = parse_port(sport)?;
    let dport = parse_port(dport)?;
    Ok(header(Addresses::Tcp {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    }))
}

fn parse_ip<T: std::str::FromStr>(s: &str) -> Result<T, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::BadV1Line("empty field"));
    }
    s.parse().map_err(|_| DecodeError::BadV1Line("bad address"))
}

fn parse_port(s: &str) -> Result<u16, DecodeError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(DecodeError::BadV1Line("empty field"));
    }
    if b.len() > 5 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return Err(DecodeError::BadV1Line("bad port"));
    }
    let v = b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(v).map_err(|_| DecodeError::BadV1Line("bad port"))
}
