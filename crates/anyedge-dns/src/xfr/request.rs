//! Transfer requests as a server receives them: recognising and parsing
//! AXFR/IXFR, the request's EDNS, and checking its TSIG.

use domain::base::iana::{Opcode, Rcode, Rtype};
use domain::base::rdata::ComposeRecordData;
use domain::base::{Message, MessageBuilder};
use domain::rdata::tsig::Time48;
use domain::tsig::{KeyStore, ServerSequence};

use super::{malformed, parse_rr, request_question, XfrError, T_AXFR, T_IXFR};
use crate::name;

/// Cheap test on the raw query: a QUERY for AXFR or IXFR.
pub fn is_transfer_request(p: &[u8]) -> bool {
    if p.len() < 12 || p[2] & 0x80 != 0 || (p[2] >> 3) & 0x0f != 0 || p[4..6] != [0, 1] {
        return false;
    }
    let Some(l) = name::wire_len(&p[12..]) else {
        return false;
    };
    match p.get(12 + l..12 + l + 2) {
        Some(t) => matches!(u16::from_be_bytes([t[0], t[1]]), T_AXFR | T_IXFR),
        None => false,
    }
}

/// A transfer request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrRequest {
    pub id: u16,
    /// Question name, lowercase wire.
    pub apex: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    /// IXFR: the serial of the client's version (its SOA in authority;
    /// RFC 1995 requires it, the caller answers FORMERR without).
    pub client_serial: Option<u32>,
}

impl XfrRequest {
    pub fn kind(&self) -> &'static str {
        if self.qtype == T_IXFR {
            "IXFR"
        } else {
            "AXFR"
        }
    }
}

/// Parses an AXFR/IXFR request (with or without its TSIG record).
pub fn parse_request<Octs>(msg: &Message<Octs>) -> Result<XfrRequest, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let q = request_question(msg, Opcode::QUERY, "not a query")?;
    let qtype = q.qtype.to_int();
    if qtype != T_AXFR && qtype != T_IXFR {
        return Err(malformed("not a transfer request"));
    }
    let mut client_serial = None;
    if qtype == T_IXFR {
        let auth = msg.authority().map_err(malformed)?;
        for rr in auth {
            let rr = rr.map_err(malformed)?;
            if rr.rtype() == Rtype::SOA {
                let r = parse_rr(&rr)?;
                client_serial = r.soa_serial();
                break;
            }
        }
    }
    Ok(XfrRequest {
        id: q.id,
        apex: q.apex,
        qtype,
        qclass: q.qclass.to_int(),
        client_serial,
    })
}

/// The OPT record of a response (RFC 6891 6.1.1: only to a request that
/// had one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptReply {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    /// (code, data), in this order.
    pub options: Vec<(u16, Vec<u8>)>,
}

impl OptReply {
    pub(super) fn wire_len(&self) -> usize {
        11 + self.options.iter().map(|(_, d)| 4 + d.len()).sum::<usize>()
    }
}

/// A request's EDNS, if it has an OPT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEdns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// (code, data) in the order received.
    pub options: Vec<(u16, Vec<u8>)>,
}

/// The request's OPT record, parsed.
pub fn request_edns<Octs>(msg: &Message<Octs>) -> Option<RequestEdns>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let opt = msg.opt()?;
    let mut raw: Vec<u8> = Vec::new();
    opt.opt().compose_rdata(&mut raw).ok()?;
    let mut options = Vec::new();
    let mut i = 0usize;
    while i + 4 <= raw.len() {
        let code = u16::from_be_bytes([raw[i], raw[i + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[i + 2], raw[i + 3]]));
        let data = raw.get(i + 4..i + 4 + len)?;
        options.push((code, data.to_vec()));
        i += 4 + len;
    }
    Some(RequestEdns {
        udp_size: opt.udp_payload_size(),
        version: opt.version(),
        dnssec_ok: opt.dnssec_ok(),
        options,
    })
}

/// The outcome of checking a request's TSIG.
pub enum Signed<K> {
    /// No TSIG record.
    Unsigned,
    /// Valid: sign the response(s) with this.
    Valid(Box<ServerSequence<K>>),
    /// Invalid: send this error response (NOTAUTH with the TSIG error, or
    /// FORMERR), and the reason for the log.
    Invalid(Vec<u8>, String),
}

/// Verifies the TSIG of a request against the keys in `store` (RFC 8945
/// 5.2). On success the TSIG record is removed from `msg`.
pub fn verify_request<S: KeyStore>(msg: &mut Message<Vec<u8>>, store: &S, now: Time48) -> Signed<S::Key> {
    match ServerSequence::request(store, msg, now) {
        Ok(None) => Signed::Unsigned,
        Ok(Some(seq)) => Signed::Valid(Box::new(seq)),
        Err(e) => {
            let why = format!("TSIG error {}", e.error());
            match e.build_message(msg, MessageBuilder::new_vec()) {
                Ok(b) => {
                    let mut out = b.finish();
                    if fix_badsig(&mut out) {
                        Signed::Invalid(out, "TSIG error BADSIG (wrong secret or altered message)".into())
                    } else {
                        Signed::Invalid(out, why)
                    }
                }
                Err(_) => Signed::Invalid(Vec::new(), why),
            }
        }
    }
}

/// `domain` 0.12 reports a MAC mismatch as TSIG error FORMERR in an
/// unsigned NOTAUTH; RFC 8945 5.2.2 says BADSIG (16). The TSIG record is
/// last and its rdata ends with error (2 octets) and other-len (2, zero).
fn fix_badsig(out: &mut [u8]) -> bool {
    let n = out.len();
    if n < 16 || out[3] & 0x0f != Rcode::NOTAUTH.to_int() || out[n - 2..] != [0, 0] || out[n - 4..n - 2] != [0, 1] {
        return false;
    }
    out[n - 4..n - 2].copy_from_slice(&16u16.to_be_bytes());
    true
}
