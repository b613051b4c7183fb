//! Records as transfers carry them: owned ([`Rr`]) or borrowed from a
//! zone ([`RecRef`]), the zone's SOA, and parsing one from a message.

use domain::base::iana::Class;
use domain::base::name::{ParsedName, ToName};
use domain::base::rdata::ComposeRecordData;
use domain::base::ParsedRecord;
use domain::rdata::AllRecordData;

use super::{malformed, XfrError};
use crate::name;
use crate::zone::{soa_fields, Zone, ZoneBuilder, T_SOA};

/// One record, owned: owner (uncompressed wire, case as received), type,
/// TTL and uncompressed wire rdata. Class IN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rr {
    pub owner: Box<[u8]>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Box<[u8]>,
}

/// A record borrowed from a zone or a difference.
#[derive(Clone, Copy, Debug)]
pub struct RecRef<'a> {
    pub owner: &'a [u8],
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

impl Rr {
    pub fn as_ref(&self) -> RecRef<'_> {
        RecRef {
            owner: &self.owner,
            rtype: self.rtype,
            ttl: self.ttl,
            rdata: &self.rdata,
        }
    }

    /// The serial, if this is an SOA record.
    pub fn soa_serial(&self) -> Option<u32> {
        if self.rtype != T_SOA {
            return None;
        }
        soa_fields(&self.rdata).map(|f| f[0])
    }

    /// Identity for IXFR deletions: owner (case-insensitive), type, rdata;
    /// not the TTL.
    pub(super) fn key(&self) -> RrKey {
        (name::lower(&self.owner), self.rtype, self.rdata.clone())
    }
}

pub(super) type RrKey = (Box<[u8]>, u16, Box<[u8]>);

impl RecRef<'_> {
    pub fn to_rr(&self) -> Rr {
        Rr {
            owner: self.owner.into(),
            rtype: self.rtype,
            ttl: self.ttl,
            rdata: self.rdata.into(),
        }
    }
}

/// The zone's SOA record.
pub fn zone_soa(z: &Zone) -> Option<Rr> {
    zone_soa_ref(z).map(|r| r.to_rr())
}

/// The zone's SOA record, borrowed from the zone.
pub(super) fn zone_soa_ref(z: &Zone) -> Option<RecRef<'_>> {
    let apex = z.apex_node()?;
    let soa = apex.get(T_SOA)?;
    let rd = soa.rdata.first()?;
    Some(RecRef {
        owner: apex.owner(&z.apex),
        rtype: T_SOA,
        ttl: soa.ttl,
        rdata: &rd.wire,
    })
}

/// Adds `r` to the zone being built.
pub(super) fn add_rr(b: &mut ZoneBuilder, r: &Rr) -> Result<(), XfrError> {
    b.add(&r.owner, r.rtype, r.ttl, &r.rdata).map_err(XfrError::Zone)
}

/// Parses one record of a message into an [`Rr`] (names in rdata
/// decompressed), checking class IN.
pub fn parse_rr(rr: &ParsedRecord<'_, impl domain::dep::octseq::Octets + ?Sized>) -> Result<Rr, XfrError> {
    if rr.class() != Class::IN {
        return Err(malformed(format!("class {} record", rr.class())));
    }
    let owner = rr.owner().to_vec().into_octets().into_boxed_slice();
    let rec = rr
        .to_any_record::<AllRecordData<_, ParsedName<_>>>()
        .map_err(malformed)?;
    let mut rdata: Vec<u8> = Vec::new();
    rec.data().compose_rdata(&mut rdata).map_err(malformed)?;
    Ok(Rr {
        owner,
        rtype: rr.rtype().to_int(),
        ttl: rr.ttl().as_secs(),
        rdata: rdata.into_boxed_slice(),
    })
}
