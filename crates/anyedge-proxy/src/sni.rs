//! TLS ClientHello peeker: extracts the `server_name` (SNI, RFC 6066) from
//! the first bytes a client sends, without decrypting or allocating.
//!
//! The ClientHello may be split across several TLS records (at most
//! [`MAX_RECORDS`], with a handshake body of at most [`MAX_HELLO_LEN`]
//! bytes); [`peek`] walks the record layer, reassembles the handshake
//! message virtually (no copy) and validates the ClientHello structure
//! (vector lengths, extension framing) before answering.
//!
//! The host name is returned borrowed from the input. If a record boundary
//! falls *inside* the host name bytes (rare, but some DPI-evasion tools do
//! it on purpose) it cannot be borrowed contiguously: [`peek`] then reports
//! [`Peek::Malformed`], while [`peek_with_scratch`] copies the name into a
//! caller-provided 255-byte buffer and returns it.

/// Largest ClientHello handshake body accepted (bytes, excluding the 4-byte
/// handshake header). Larger ones are reported as [`Peek::Malformed`].
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// Largest number of TLS records the ClientHello may be split across.
pub const MAX_RECORDS: usize = 16;

/// Largest TLS plaintext record payload (2^14, RFC 8446 section 5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST_NAME: u8 = 0x00;

/// Result of [`peek`].
#[derive(Debug, PartialEq, Eq)]
pub enum Peek<'a> {
    /// first bytes are not a TLS handshake record
    NotTls,
    /// looks like TLS but the ClientHello isn't complete yet; need at least this many bytes total
    Incomplete {
        /// Minimum total buffer length worth retrying with.
        at_least: usize,
    },
    /// complete ClientHello without server_name
    NoSni,
    /// host_name from the server_name extension (validated: ASCII, len 1..=255, no control chars)
    ///
    /// Spaces and DEL are rejected as well: every byte is in `0x21..=0x7E`.
    Sni(&'a str),
    /// malformed ClientHello
    Malformed,
}

/// Parses the first TLS record(s) only as far as needed. Handles a ClientHello split across up to a few TLS records up to `max` bytes (e.g. 16 KiB); never decrypts anything.
///
/// Limits: [`MAX_RECORDS`] records and a [`MAX_HELLO_LEN`]-byte ClientHello.
/// See the module docs for the (rare) case of a host name split by a record
/// boundary, which needs [`peek_with_scratch`].
pub fn peek(buf: &[u8]) -> Peek<'_> {
    peek_inner(buf, None)
}

/// Like [`peek`], but a host name split across TLS records is copied into
/// `scratch` and returned from there instead of being reported as
/// [`Peek::Malformed`].
pub fn peek_with_scratch<'a>(buf: &'a [u8], scratch: &'a mut [u8; 255]) -> Peek<'a> {
    peek_inner(buf, Some(scratch))
}

/// The handshake byte stream, made of record payload fragments of `buf`.
struct Stream<'a> {
    buf: &'a [u8],
    frags: [(usize, usize); MAX_RECORDS],
    nfrags: usize,
}

impl<'a> Stream<'a> {
    fn frags(&self) -> &[(usize, usize)] {
        self.frags.get(..self.nfrags).unwrap_or(&[])
    }

    /// Maps a logical stream position to (fragment index, offset in it).
    fn locate(&self, mut pos: usize) -> Option<(usize, usize)> {
        for (i, &(_, len)) in self.frags().iter().enumerate() {
            if pos < len {
                return Some((i, pos));
            }
            pos -= len;
        }
        None
    }

    fn byte(&self, pos: usize) -> Option<u8> {
        let (i, off) = self.locate(pos)?;
        let &(start, _) = self.frags().get(i)?;
        self.buf.get(start + off).copied()
    }

    /// `len` bytes at `pos` if they lie within a single fragment.
    fn contiguous(&self, pos: usize, len: usize) -> Option<&'a [u8]> {
        let (i, off) = self.locate(pos)?;
        let &(start, flen) = self.frags().get(i)?;
        if off + len > flen {
            return None;
        }
        self.buf.get(start + off..start + off + len)
    }
}

/// A bounded cursor over the stream.
struct Cur<'s, 'a> {
    s: &'s Stream<'a>,
    pos: usize,
    end: usize,
}

impl<'s, 'a> Cur<'s, 'a> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn u8(&mut self) -> Option<u8> {
        if self.pos >= self.end {
            return None;
        }
        let b = self.s.byte(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.remaining() {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Splits off the next `n` bytes as a sub-cursor.
    fn take(&mut self, n: usize) -> Option<Cur<'s, 'a>> {
        let start = self.pos;
        self.skip(n)?;
        Some(Cur {
            s: self.s,
            pos: start,
            end: start + n,
        })
    }
}

fn peek_inner<'a>(buf: &'a [u8], scratch: Option<&'a mut [u8; 255]>) -> Peek<'a> {
    let mut stream = Stream {
        buf,
        frags: [(0, 0); MAX_RECORDS],
        nfrags: 0,
    };
    let mut pos = 0usize; // start of the current record
    let mut have = 0usize; // handshake bytes available so far
    let mut need: Option<usize> = None; // handshake bytes needed (4 + body)
    loop {
        let hdr = buf.get(pos..).unwrap_or(&[]);
        let first = pos == 0;
        // Record header: type 22, version 3.x.
        if let Some(&t) = hdr.first() {
            if t != CONTENT_HANDSHAKE {
                return if first { Peek::NotTls } else { Peek::Malformed };
            }
        }
        if let Some(&major) = hdr.get(1) {
            if major != 3 {
                return if first { Peek::NotTls } else { Peek::Malformed };
            }
        }
        if let Some(&minor) = hdr.get(2) {
            if minor > 4 {
                return if first { Peek::NotTls } else { Peek::Malformed };
            }
        }
        let rec_len = match hdr {
            [_, _, _, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => {
                return Peek::Incomplete {
                    at_least: pos + RECORD_HEADER_LEN,
                }
            }
        };
        if rec_len == 0 || rec_len > MAX_RECORD_LEN || stream.nfrags >= MAX_RECORDS {
            return Peek::Malformed;
        }
        let payload = pos + RECORD_HEADER_LEN;
        let avail = rec_len.min(buf.len().saturating_sub(payload));
        if let Some(slot) = stream.frags.get_mut(stream.nfrags) {
            *slot = (payload, avail);
            stream.nfrags += 1;
        }
        have += avail;
        if need.is_none() && have >= 4 {
            // Handshake header: msg_type(1) length(3).
            let (Some(t), Some(a), Some(b), Some(c)) = (stream.byte(0), stream.byte(1), stream.byte(2), stream.byte(3))
            else {
                return Peek::Malformed;
            };
            if t != HANDSHAKE_CLIENT_HELLO {
                return Peek::Malformed;
            }
            let body = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
            if body > MAX_HELLO_LEN {
                return Peek::Malformed;
            }
            need = Some(4 + body);
        }
        if let Some(n) = need {
            if have >= n {
                return parse_hello(&stream, n, scratch);
            }
        }
        if avail < rec_len {
            let missing = need.unwrap_or(4) - have;
            return Peek::Incomplete {
                at_least: payload + avail + missing.min(rec_len - avail),
            };
        }
        pos = payload + rec_len;
    }
}

fn parse_hello<'a>(s: &Stream<'a>, end: usize, scratch: Option<&'a mut [u8; 255]>) -> Peek<'a> {
    match find_host(s, end) {
        None => Peek::Malformed,
        Some(None) => Peek::NoSni,
        Some(Some((pos, len))) => {
            if let Some(name) = s.contiguous(pos, len) {
                return match valid_host(name) {
                    Some(h) => Peek::Sni(h),
                    None => Peek::Malformed,
                };
            }
            let Some(scratch) = scratch else {
                return Peek::Malformed;
            };
            let Some(dst) = scratch.get_mut(..len) else {
                return Peek::Malformed;
            };
            for (i, d) in dst.iter_mut().enumerate() {
                match s.byte(pos + i) {
                    Some(b) => *d = b,
                    None => return Peek::Malformed,
                }
            }
            match valid_host(dst) {
                Some(h) => Peek::Sni(h),
                None => Peek::Malformed,
            }
        }
    }
}

fn valid_host(name: &[u8]) -> Option<&str> {
    if name.is_empty() || name.len() > 255 || !name.iter().all(|b| (0x21..=0x7E).contains(b)) {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// Walks the ClientHello body; returns the (stream position, length) of the
/// host_name, if any. The outer `None` means malformed.
fn find_host(s: &Stream<'_>, end: usize) -> Option<Option<(usize, usize)>> {
    let mut c = Cur { s, pos: 4, end };
    let _legacy_version = c.u16()?;
    c.skip(32)?; // random
    let sid = usize::from(c.u8()?);
    if sid > 32 {
        return None;
    }
    c.skip(sid)?;
    let suites = usize::from(c.u16()?);
    if suites < 2 || suites % 2 != 0 {
        return None;
    }
    c.skip(suites)?;
    let comp = usize::from(c.u8()?);
    if comp < 1 {
        return None;
    }
    c.skip(comp)?;
    if c.remaining() == 0 {
        // No extensions at all (pre-TLS 1.2 style): valid, no SNI.
        return Some(None);
    }
    let ext_total = usize::from(c.u16()?);
    if ext_total != c.remaining() {
        return None;
    }
    let mut host = None;
    let mut seen_sni = false;
    while c.remaining() > 0 {
        let ty = c.u16()?;
        let len = usize::from(c.u16()?);
        let mut data = c.take(len)?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        if seen_sni {
            return None; // duplicate extension
        }
        seen_sni = true;
        let list = usize::from(data.u16()?);
        if list == 0 || list != data.remaining() {
            return None;
        }
        while data.remaining() > 0 {
            let name_type = data.u8()?;
            let nlen = usize::from(data.u16()?);
            let at = data.pos;
            data.skip(nlen)?;
            if name_type == NAME_TYPE_HOST_NAME {
                if host.is_some() {
                    return None; // RFC 6066: one name per type
                }
                host = Some((at, nlen));
            }
        }
    }
    Some(host)
}

#[cfg(test)]
#[path = "sni_tests.rs"]
mod tests;
