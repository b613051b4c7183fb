//! Zone transfers and NOTIFY, without I/O.
//!
//! - Serving: [`plan`] decides what a transfer request gets (AXFR, the
//!   IXFR difference sequence from a [`Journal`], or "up to date"), and a
//!   [`Responder`] turns that into DNS messages of at most a given size, one
//!   at a time, each signed when the request was (RFC 5936, RFC 1995,
//!   RFC 8945 4.4 for multi-message TSIG).
//! - Receiving: a [`Receiver`] is fed the messages of an AXFR or IXFR
//!   response stream and ends with a new [`Zone`](crate::zone::Zone)
//!   (built with [`ZoneBuilder`](crate::zone::ZoneBuilder), or the current
//!   zone with the IXFR differences applied).
//! - [`diff`] computes the RFC 1995 (condensed) difference of two snapshots;
//!   the [`Journal`] keeps a bounded chain of them.
//! - NOTIFY (RFC 1996) requests and responses, SOA serial arithmetic
//!   (RFC 1982), and [`Refresh`], the refresh/retry/expire timing of a
//!   secondary zone as a state machine driven by the caller's clock.
//!
//! TSIG is NLnet Labs' `domain::tsig`; the caller passes the time in.
//!
//! Modules: `serial` (RFC 1982), `records` and `difference` (records,
//! RFC 1995 differences), `journal`, `request` (parsing a transfer request,
//! its EDNS and TSIG), `serve` (plans and response messages), `client`
//! (queries and response checks), `receive` (consuming a transfer),
//! `notify`, `refresh` (SOA timers); everything is re-exported here.

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::message_builder::PushError;
use domain::base::name::{Name, ToName};
use domain::base::rdata::UnknownRecordData;
use domain::base::{Header, Message, Ttl};

pub use crate::zone::soa_fields;

pub const T_IXFR: u16 = 251;
pub const T_AXFR: u16 = 252;

/// Default largest transfer message (RFC 5936 leaves it to us; 16 KiB keeps
/// TCP writes and the receiver's buffers small).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Why a transfer, a NOTIFY or a message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfrError {
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer answered with this RCODE.
    #[error("answered {}", rcode_name(*.0))]
    Rcode(u8),
    #[error("TSIG: {0}")]
    Tsig(String),
    /// The response stream does not follow RFC 5936 / RFC 1995.
    #[error("{0}")]
    Protocol(String),
    /// The IXFR does not apply to our version: fall back to AXFR.
    #[error("IXFR does not apply: {0}")]
    Ixfr(String),
    /// The transferred records do not make a valid zone.
    #[error("transferred zone is invalid: {0}")]
    Zone(String),
    #[error("transfer exceeds {0} records")]
    TooLarge(usize),
    #[error("a record does not fit in a message")]
    RecordTooLong,
}

/// The mnemonic of an RCODE (for logs and errors).
pub fn rcode_name(rcode: u8) -> String {
    let r = Rcode::masked_from_int(rcode);
    match r.to_mnemonic_str() {
        Some(s) => s.to_string(),
        None => format!("RCODE{rcode}"),
    }
}

fn malformed(e: impl std::fmt::Display) -> XfrError {
    XfrError::Malformed(e.to_string())
}

/// A record (class IN) in the form a message builder pushes.
type WireRecord<'a> = (&'a Name<[u8]>, Class, Ttl, UnknownRecordData<&'a [u8]>);

fn wire_record<'a>(owner: &'a [u8], rtype: Rtype, ttl: u32, rdata: &'a [u8]) -> Result<WireRecord<'a>, XfrError> {
    let owner = Name::from_slice(owner).map_err(malformed)?;
    let data = UnknownRecordData::from_octets(rtype, rdata).map_err(malformed)?;
    Ok((owner, Class::IN, Ttl::from_secs(ttl), data))
}

/// `s` as an SOA record to push.
fn soa_record(s: &Rr) -> Result<WireRecord<'_>, XfrError> {
    wire_record(&s.owner, Rtype::SOA, s.ttl, &s.rdata)
}

/// `Ok` for a NOERROR response, else the RCODE as the error.
fn rcode_ok(h: Header) -> Result<(), XfrError> {
    match h.rcode().to_int() {
        0 => Ok(()),
        rcode => Err(XfrError::Rcode(rcode)),
    }
}

/// A question name, lowercase wire.
fn lower_qname(n: &impl ToName) -> Box<[u8]> {
    crate::name::lower(n.to_vec().as_slice())
}

/// The sole question of a request, with its ID; the name lowercased.
struct RequestQuestion {
    id: u16,
    qtype: Rtype,
    qclass: Class,
    apex: Box<[u8]>,
}

/// The question of a request with `opcode` (`not` is the error for a
/// response or another opcode).
fn request_question<Octs>(msg: &Message<Octs>, opcode: Opcode, not: &str) -> Result<RequestQuestion, XfrError>
where
    Octs: AsRef<[u8]> + domain::dep::octseq::Octets + ?Sized,
{
    let h = msg.header();
    if h.qr() || h.opcode() != opcode {
        return Err(malformed(not));
    }
    let q = msg.sole_question().map_err(malformed)?;
    Ok(RequestQuestion {
        id: h.id(),
        qtype: q.qtype(),
        qclass: q.qclass(),
        apex: lower_qname(q.qname()),
    })
}

fn push_err(e: PushError) -> XfrError {
    match e {
        PushError::CountOverflow => XfrError::Malformed("too many records in one message".into()),
        PushError::ShortBuf | PushError::LimitExceeded => XfrError::RecordTooLong,
    }
}

mod client;
mod difference;
mod journal;
mod notify;
mod receive;
mod records;
mod refresh;
mod request;
mod serial;
mod serve;
#[cfg(test)]
mod tests;

pub use client::{build_query, check_response, soa_answer};
pub use difference::{apply, apply_at, diff, rebuild, Diff};
pub use journal::Journal;
pub use notify::{build_notify, check_notify_response, parse_notify, NotifyRequest};
pub use receive::{Received, Receiver};
pub use records::{parse_rr, zone_soa, RecRef, Rr};
pub use refresh::{
    Due, Refresh, Timers, BOOTSTRAP_RETRY, MAX_BOOTSTRAP_RETRY, MAX_REFRESH, MAX_RETRY, MIN_REFRESH, MIN_RETRY,
};
pub use request::{
    is_transfer_request, parse_request, request_edns, verify_request, OptReply, RequestEdns, Signed, XfrRequest,
};
pub use serial::{serial_cmp, serial_gt};
pub use serve::{plan, reply, soa_response, Plan, Responder};
