//! NOTIFY (RFC 1996): requests and responses.

use domain::base::iana::{Class, Opcode, Rtype};
use domain::base::Message;
use domain::rdata::tsig::Time48;
use domain::tsig::{ClientSequence, Key};

use super::client::build_request;
use super::{check_response, malformed, parse_rr, rcode_ok, request_question, Rr, XfrError};
use crate::name;

/// A NOTIFY for zone `apex` (wire), with the new SOA in the answer section
/// when given (RFC 1996 3.7), signed with `key` if given.
pub fn build_notify<K: AsRef<Key>>(
    id: u16,
    apex: &[u8],
    soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    build_request(id, Opcode::NOTIFY, apex, Rtype::SOA, soa, None, key, now)
}

/// A NOTIFY request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRequest {
    pub id: u16,
    /// Zone, lowercase wire.
    pub apex: Box<[u8]>,
    /// The serial the primary announced, if it sent its SOA.
    pub serial: Option<u32>,
}

/// Parses a NOTIFY request (RFC 1996 3.7: question is the zone's SOA).
pub fn parse_notify<Octs>(msg: &Message<Octs>) -> Result<NotifyRequest, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let q = request_question(msg, Opcode::NOTIFY, "not a NOTIFY request")?;
    if q.qtype != Rtype::SOA || q.qclass != Class::IN {
        return Err(malformed(format!("NOTIFY for type {} class {}", q.qtype, q.qclass)));
    }
    let apex = q.apex;
    let mut serial = None;
    if let Ok(answer) = msg.answer() {
        for rr in answer.flatten() {
            if rr.rtype() == Rtype::SOA {
                if let Ok(r) = parse_rr(&rr) {
                    if name::lower(&r.owner) == apex {
                        serial = r.soa_serial();
                    }
                }
            }
        }
    }
    Ok(NotifyRequest { id: q.id, apex, serial })
}

/// Checks a NOTIFY response: it must answer `id` with NOERROR (and verify
/// when we signed).
pub fn check_notify_response<K: AsRef<Key>>(
    raw: Vec<u8>,
    id: u16,
    tsig: Option<ClientSequence<K>>,
    now: Time48,
) -> Result<(), XfrError> {
    let mut tsig = tsig;
    let m = check_response(raw, id, tsig.as_mut(), now)?;
    if let Some(t) = tsig {
        t.done().map_err(|e| XfrError::Tsig(e.to_string()))?;
    }
    if m.header().opcode() != Opcode::NOTIFY {
        return Err(XfrError::Protocol("response is not a NOTIFY response".into()));
    }
    rcode_ok(m.header())?;
    Ok(())
}
