//! The client side of a transfer: SOA, AXFR and IXFR queries (and the
//! request behind a NOTIFY), and checking each response message.

use bytes::Bytes;
use domain::base::iana::{Class, Opcode, Rtype};
use domain::base::name::Name;
use domain::base::{Message, MessageBuilder};
use domain::rdata::tsig::Time48;
use domain::tsig::{ClientSequence, Key};

use super::{malformed, parse_rr, push_err, rcode_ok, soa_record, Rr, XfrError};
use crate::name;

/// A query for `qtype` (SOA, AXFR, IXFR with `ixfr_soa` in authority) about
/// zone `apex` (wire), signed with `key` if given. Returns the message and
/// the TSIG state to verify the response(s) with.
pub fn build_query<K: AsRef<Key>>(
    id: u16,
    apex: &[u8],
    qtype: u16,
    ixfr_soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    build_request(
        id,
        Opcode::QUERY,
        apex,
        Rtype::from_int(qtype),
        None,
        ixfr_soa,
        key,
        now,
    )
}

/// A request about zone `apex` (wire): `opcode` (AA set for a NOTIFY), the
/// question `qtype` IN, an SOA record in the answer section (NOTIFY) or in
/// the authority section (IXFR) when given, signed with `key` if given.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_request<K: AsRef<Key>>(
    id: u16,
    opcode: Opcode,
    apex: &[u8],
    qtype: Rtype,
    answer_soa: Option<&Rr>,
    authority_soa: Option<&Rr>,
    key: Option<K>,
    now: Time48,
) -> Result<(Vec<u8>, Option<ClientSequence<K>>), XfrError> {
    let mut mb = MessageBuilder::new_vec();
    {
        let h = mb.header_mut();
        h.set_id(id);
        h.set_opcode(opcode);
        h.set_aa(opcode == Opcode::NOTIFY);
    }
    let mut qb = mb.question();
    qb.push((Name::from_slice(apex).map_err(malformed)?, qtype, Class::IN))
        .map_err(push_err)?;
    let mut ab = qb.answer();
    if let Some(s) = answer_soa {
        ab.push(soa_record(s)?).map_err(push_err)?;
    }
    let mut auth = ab.authority();
    if let Some(s) = authority_soa {
        auth.push(soa_record(s)?).map_err(push_err)?;
    }
    let mut add = auth.additional();
    let seq = match key {
        Some(k) => Some(ClientSequence::request(k, &mut add, now).map_err(push_err)?),
        None => None,
    };
    Ok((add.finish(), seq))
}

/// Checks one response message: it answers query `id`, and, when the query
/// was signed, its TSIG verifies in the sequence. Returns the message with
/// the TSIG record removed.
pub fn check_response<K: AsRef<Key>>(
    raw: Vec<u8>,
    id: u16,
    tsig: Option<&mut ClientSequence<K>>,
    now: Time48,
) -> Result<Message<Bytes>, XfrError> {
    let mut m = Message::from_octets(raw).map_err(malformed)?;
    let h = m.header();
    if !h.qr() || h.id() != id {
        return Err(malformed(format!(
            "not the response to query {id} (id {}, qr {})",
            h.id(),
            h.qr()
        )));
    }
    if let Some(t) = tsig {
        t.answer(&mut m, now).map_err(|e| XfrError::Tsig(e.to_string()))?;
    }
    Message::from_octets(Bytes::from(m.into_octets())).map_err(malformed)
}

/// The SOA serial in an SOA query's response.
pub fn soa_answer(msg: &Message<Bytes>, apex: &[u8]) -> Result<Rr, XfrError> {
    rcode_ok(msg.header())?;
    for rr in msg.answer().map_err(malformed)? {
        let rr = rr.map_err(malformed)?;
        if rr.rtype() == Rtype::SOA {
            let r = parse_rr(&rr)?;
            if name::lower(&r.owner)[..] == *apex && r.soa_serial().is_some() {
                return Ok(r);
            }
        }
    }
    Err(XfrError::Protocol("no SOA for the zone in the answer".into()))
}
