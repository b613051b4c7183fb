//! Receiving a transfer: the [`Receiver`] consumes an AXFR or IXFR
//! response stream and ends with a new version of the zone.

use std::sync::Arc;

use bytes::Bytes;
use domain::base::Message;

use super::records::add_rr;
use super::{apply, lower_qname, malformed, parse_rr, rcode_ok, serial_gt, Diff, Rr, XfrError};
use crate::name;
use crate::zone::{Zone, ZoneBuilder};

/// What an incoming transfer produced.
#[derive(Debug)]
pub enum Received {
    /// The whole zone.
    Axfr(Zone),
    /// Our version with the differences applied (kept for our journal).
    Ixfr { zone: Zone, diffs: Vec<Diff> },
    /// We already have this serial (or newer).
    UpToDate(u32),
}

impl Received {
    pub fn kind(&self) -> &'static str {
        match self {
            Received::Axfr(_) => "AXFR",
            Received::Ixfr { .. } => "IXFR",
            Received::UpToDate(_) => "up-to-date",
        }
    }
}

enum Rx {
    /// Waiting for the first SOA.
    Start,
    /// IXFR asked: the second record decides incremental or whole.
    Second,
    Axfr(Box<ZoneBuilder>),
    /// Incremental: in a difference's deletions (`true`) or additions.
    Ixfr(Diff, bool),
    Done(Option<Box<ZoneBuilder>>),
}

impl Rx {
    /// A difference from the version with `old_soa` starts: its deletions
    /// follow.
    fn diff_from(old_soa: Rr) -> Rx {
        let new_soa = Rr {
            owner: Box::new([]),
            rtype: 0,
            ttl: 0,
            rdata: Box::new([]),
        };
        let diff = Diff {
            old_soa,
            new_soa,
            removed: Vec::new(),
            added: Vec::new(),
        };
        Rx::Ixfr(diff, true)
    }
}

/// Consumes the messages of an AXFR/IXFR response stream (RFC 5936 2.2,
/// RFC 1995 4).
pub struct Receiver {
    apex: Box<[u8]>,
    base: Option<Arc<Zone>>,
    asked_ixfr: bool,
    max_records: usize,
    state: Rx,
    /// The first (and final) SOA.
    final_soa: Option<Rr>,
    diffs: Vec<Diff>,
    pub records: usize,
    pub messages: usize,
}

impl Receiver {
    /// `apex`: wire (any case). `base`: our current version (needed to
    /// apply an IXFR; `asked_ixfr` with no base is treated as AXFR).
    pub fn new(apex: &[u8], base: Option<Arc<Zone>>, asked_ixfr: bool, max_records: usize) -> Receiver {
        Receiver {
            apex: name::lower(apex),
            asked_ixfr: asked_ixfr && base.is_some(),
            base,
            max_records,
            state: Rx::Start,
            final_soa: None,
            diffs: Vec::new(),
            records: 0,
            messages: 0,
        }
    }

    /// Feeds the next (TSIG-checked) message. `Ok(true)`: the transfer is
    /// complete, call [`Receiver::finish`].
    pub fn feed(&mut self, msg: &Message<Bytes>) -> Result<bool, XfrError> {
        let h = msg.header();
        rcode_ok(h)?;
        if h.tc() {
            return Err(XfrError::Protocol("truncated transfer message".into()));
        }
        if matches!(self.state, Rx::Done(_)) {
            return Err(XfrError::Protocol("records after the end of the transfer".into()));
        }
        if self.messages == 0 {
            if let Some(q) = msg.first_question() {
                if lower_qname(q.qname()) != self.apex {
                    return Err(XfrError::Protocol("response is about another zone".into()));
                }
            }
        }
        self.messages += 1;
        let answer = msg.answer().map_err(malformed)?;
        let total = usize::from(h_ancount(msg));
        let mut i = 0usize;
        for rr in answer {
            let rr = rr.map_err(malformed)?;
            i += 1;
            if matches!(self.state, Rx::Done(_)) {
                return Err(XfrError::Protocol("records after the closing SOA".into()));
            }
            let r = parse_rr(&rr)?;
            self.records += 1;
            if self.records > self.max_records {
                return Err(XfrError::TooLarge(self.max_records));
            }
            self.record(r)?;
        }
        // an IXFR answered by a lone SOA in its first message: nothing newer
        if self.messages == 1 && total == 1 && i == 1 && matches!(self.state, Rx::Second) {
            self.state = Rx::Done(None);
        }
        Ok(matches!(self.state, Rx::Done(_)))
    }

    fn record(&mut self, r: Rr) -> Result<(), XfrError> {
        let serial = r.soa_serial().filter(|_| name::lower(&r.owner) == self.apex);
        let state = std::mem::replace(&mut self.state, Rx::Start);
        self.state = match state {
            Rx::Start => {
                if serial.is_none() {
                    return Err(XfrError::Protocol("transfer does not start with the zone's SOA".into()));
                }
                self.final_soa = Some(r.clone());
                if self.asked_ixfr {
                    Rx::Second
                } else {
                    let mut b = Box::new(ZoneBuilder::new(&self.apex));
                    add_rr(&mut b, &r)?;
                    Rx::Axfr(b)
                }
            }
            Rx::Second => {
                let fin = self.final_serial();
                match serial {
                    Some(s) if s != fin => {
                        let have = self.base.as_ref().map_or(0, |b| b.serial);
                        if s != have {
                            return Err(XfrError::Ixfr(format!(
                                "the differences start at serial {s}, we have {have}"
                            )));
                        }
                        Rx::diff_from(r)
                    }
                    _ => {
                        // AXFR-style answer to our IXFR
                        let mut b = Box::new(ZoneBuilder::new(&self.apex));
                        if let Some(f) = &self.final_soa {
                            add_rr(&mut b, f)?;
                        }
                        if serial == Some(fin) {
                            Rx::Done(Some(b))
                        } else {
                            add_rr(&mut b, &r)?;
                            Rx::Axfr(b)
                        }
                    }
                }
            }
            Rx::Axfr(mut b) => {
                if serial.is_some() && serial == Some(self.final_serial()) {
                    Rx::Done(Some(b))
                } else {
                    add_rr(&mut b, &r)?;
                    Rx::Axfr(b)
                }
            }
            Rx::Ixfr(mut d, true) => {
                if serial.is_some() {
                    d.new_soa = r;
                    Rx::Ixfr(d, false)
                } else {
                    d.removed.push(r);
                    Rx::Ixfr(d, true)
                }
            }
            Rx::Ixfr(mut d, false) => match serial {
                Some(s) => {
                    let to = d.to_serial();
                    let fin = self.final_serial();
                    if s == fin && to == fin {
                        self.diffs.push(d);
                        Rx::Done(None)
                    } else if s == to {
                        self.diffs.push(d);
                        Rx::diff_from(r)
                    } else {
                        return Err(XfrError::Protocol(format!(
                            "IXFR difference starts at serial {s}, the previous one ended at {to}"
                        )));
                    }
                }
                None => {
                    d.added.push(r);
                    Rx::Ixfr(d, false)
                }
            },
            Rx::Done(b) => {
                self.state = Rx::Done(b);
                return Err(XfrError::Protocol("records after the closing SOA".into()));
            }
        };
        Ok(())
    }

    fn final_serial(&self) -> u32 {
        self.final_soa.as_ref().and_then(Rr::soa_serial).unwrap_or(0)
    }

    /// The transferred version (the costly part: indexing the new zone or
    /// applying the differences).
    pub fn finish(self) -> Result<Received, XfrError> {
        let fin = self.final_serial();
        match self.state {
            Rx::Done(Some(b)) => Ok(Received::Axfr(b.finish().map_err(XfrError::Zone)?)),
            Rx::Done(None) if self.diffs.is_empty() => {
                let have = self.base.as_ref().map_or(0, |b| b.serial);
                if serial_gt(fin, have) {
                    // a lone newer SOA: the server cannot send differences
                    return Err(XfrError::Ixfr(format!(
                        "server has serial {fin} but sent no differences"
                    )));
                }
                Ok(Received::UpToDate(fin))
            }
            Rx::Done(None) => {
                let base = self
                    .base
                    .ok_or_else(|| XfrError::Ixfr("no version to apply it to".into()))?;
                let zone = apply(&base, &self.diffs)?;
                Ok(Received::Ixfr {
                    zone,
                    diffs: self.diffs,
                })
            }
            _ => Err(XfrError::Protocol("transfer ended before its closing SOA".into())),
        }
    }
}

fn h_ancount(msg: &Message<Bytes>) -> u16 {
    msg.header_counts().ancount()
}
