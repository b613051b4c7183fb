//! Queries for a [`Question`], AXFR queries, and reading an AXFR into a
//! [`ZoneIndex`].

use bytes::Bytes;
use domain::base::iana::{OptionCode, Rtype};
use domain::base::message_builder::PushError;
use domain::base::name::ToName;
use domain::base::{Message, MessageBuilder};
use domain::dep::octseq::OctetsBuilder;

use crate::{Question, ZoneError, ZoneIndex};

/// EDNS(0) in a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdnsQuery {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    /// EDNS version (anything but 0 must get BADVERS).
    pub version: u8,
    /// Ask for the server's NSID.
    pub nsid: bool,
    /// A client cookie (RFC 7873).
    pub cookie: Option<[u8; 8]>,
}

impl Default for EdnsQuery {
    fn default() -> Self {
        EdnsQuery {
            udp_size: 1232,
            dnssec_ok: false,
            version: 0,
            nsid: false,
            cookie: None,
        }
    }
}

/// How to ask: header flags and EDNS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Recursion desired (an authoritative server copies it back).
    pub rd: bool,
    /// Checking disabled (copied back too).
    pub cd: bool,
    /// `None`: no OPT record (plain RFC 1035, 512-octet UDP answers).
    pub edns: Option<EdnsQuery>,
}

/// A query message for `q`.
pub fn build_query(id: u16, q: &Question, opts: &QueryOptions) -> Result<Vec<u8>, PushError> {
    let mut b = MessageBuilder::new_vec();
    let h = b.header_mut();
    h.set_id(id);
    h.set_rd(opts.rd);
    h.set_cd(opts.cd);
    let mut b = b.question();
    b.push((&q.qname, q.qtype, q.qclass))?;
    let mut b = b.additional();
    if let Some(e) = opts.edns {
        b.opt(|o| {
            o.set_udp_payload_size(e.udp_size);
            o.set_dnssec_ok(e.dnssec_ok);
            o.set_version(e.version);
            if e.nsid {
                o.push_raw_option(OptionCode::NSID, 0, |_| Ok(()))?;
            }
            if let Some(c) = e.cookie {
                o.push_raw_option(OptionCode::COOKIE, 8, |t| t.append_slice(&c))?;
            }
            Ok(())
        })?;
    }
    Ok(b.finish())
}

/// The AXFR query for `zone` (to send over TCP).
pub fn axfr_query(id: u16, zone: &impl ToName) -> Result<Vec<u8>, PushError> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    let mut b = b.question();
    b.push((zone, Rtype::AXFR))?;
    Ok(b.finish())
}

/// Adds the records of one AXFR response message to `idx`; returns how many
/// SOA records it held (the transfer ends at the second), or why the message
/// is not a good AXFR answer.
pub fn add_axfr_message(idx: &mut ZoneIndex, msg: &[u8]) -> Result<usize, ZoneError> {
    let bad = |e: String| ZoneError::Axfr(e);
    let msg = Message::from_octets(Bytes::copy_from_slice(msg)).map_err(|_| bad("short message".into()))?;
    let rcode = msg.header().rcode();
    if rcode != domain::base::iana::Rcode::NOERROR {
        return Err(bad(format!("refused: {rcode}")));
    }
    let mut soas = 0;
    for rr in msg.answer().map_err(|e| bad(e.to_string()))? {
        let rr = rr.map_err(|e| bad(e.to_string()))?;
        if rr.rtype() == Rtype::SOA {
            soas += 1;
        }
        idx.add(&rr.owner(), rr.rtype());
    }
    Ok(soas)
}
