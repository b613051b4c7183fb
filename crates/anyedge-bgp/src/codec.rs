//! BGP-4 message codec (RFC 4271 section 4, RFC 4760, RFC 6793, RFC 1997,
//! RFC 8092, RFC 9003, RFC 2918, RFC 4724, RFC 5492).
//!
//! AS numbers in AS_PATH are always encoded and decoded as 4 octets: the
//! session only comes up with peers that advertise the 4-octet AS capability.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the BGP header (marker + length + type).
pub const HEADER_LEN: usize = 19;
/// Maximum BGP message length (RFC 4271 section 4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// `AS_TRANS` (RFC 6793): placed in the OPEN "My AS" field for ASNs > 65535.
pub const AS_TRANS: u16 = 23456;
/// BGP version implemented.
pub const BGP_VERSION: u8 = 4;

/// Address family identifiers (IANA).
pub const AFI_IPV4: u16 = 1;
/// IPv6 AFI.
pub const AFI_IPV6: u16 = 2;
/// Unicast SAFI.
pub const SAFI_UNICAST: u8 = 1;

/// Message type codes.
pub mod msg_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Path attribute type codes.
pub mod attr_type {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// Path attribute flag bits.
pub mod attr_flags {
    /// Optional.
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial.
    pub const PARTIAL: u8 = 0x20;
    /// Extended length (2-octet attribute length).
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Capability codes (RFC 5492 registry).
pub mod cap_code {
    /// Multiprotocol extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Graceful restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// 4-octet AS number (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// NOTIFICATION error codes and the subcodes used here.
pub mod notif {
    /// Message Header Error.
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM_ERROR: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// Cease subcode: Administrative Shutdown (RFC 4486, RFC 9003).
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Cease subcode: Administrative Reset (RFC 4486, RFC 9003).
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// Cease subcode: Connection Collision Resolution (RFC 4486).
    pub const CEASE_COLLISION: u8 = 7;
}

/// An IPv4 or IPv6 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Error returned by [`Prefix::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {0} too long for the address family")]
pub struct InvalidPrefix(pub u8);

impl Prefix {
    /// Builds a prefix, clearing host bits. Fails if `len` exceeds 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, InvalidPrefix> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(InvalidPrefix(len));
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                Ok(Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                })
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(InvalidPrefix(len));
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                Ok(Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                })
            }
        }
    }
    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    /// Prefix length in bits.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }
    /// True for IPv4 prefixes.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
    /// Encoded size in NLRI form (length octet + significant address octets).
    pub fn encoded_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN (RFC 4271 4.2).
    Open(Open),
    /// UPDATE (RFC 4271 4.3).
    Update(Update),
    /// NOTIFICATION (RFC 4271 4.5).
    Notification(Notification),
    /// KEEPALIVE (RFC 4271 4.4).
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918).
    RouteRefresh(RouteRefresh),
}

/// OPEN message. The version is always 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// "My Autonomous System" (AS_TRANS when the real ASN does not fit).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, each encoded in its own optional parameter (type 2).
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds an OPEN for `asn`, setting `my_as` to AS_TRANS when needed and
    /// adding the 4-octet AS capability first.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, mut capabilities: Vec<Capability>) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        capabilities.retain(|c| !matches!(c, Capability::FourOctetAs(_)));
        capabilities.insert(0, Capability::FourOctetAs(asn));
        Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }
    /// The speaker's ASN: the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }
    /// Value of the 4-octet AS capability, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }
}

/// An OPEN capability (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (code 1).
    Multiprotocol {
        /// AFI.
        afi: u16,
        /// SAFI.
        safi: u8,
    },
    /// Route refresh (code 2).
    RouteRefresh,
    /// Graceful restart (code 64).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS number (code 65).
    FourOctetAs(u32),
    /// Anything else, kept raw.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// Graceful restart capability value (RFC 4724 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The 4 restart flag bits (0x8 = Restart State, 0x4 = Notification, RFC 8538).
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Per-AFI/SAFI entries.
    pub families: Vec<GracefulRestartFamily>,
}

/// One AFI/SAFI entry of the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
    /// Flags (0x80 = forwarding state preserved).
    pub flags: u8,
}

/// UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 withdrawn routes.
    pub withdrawn: Vec<Prefix>,
    /// Path attributes, in wire order.
    pub attributes: Vec<PathAttribute>,
    /// IPv4 NLRI.
    pub nlri: Vec<Prefix>,
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// IGP (0).
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

/// An AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsSegment {
    /// AS_SET (type 1).
    Set(Vec<u32>),
    /// AS_SEQUENCE (type 2).
    Sequence(Vec<u32>),
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    /// ORIGIN (type 1).
    Origin(Origin),
    /// AS_PATH (type 2) with 4-octet ASNs.
    AsPath(Vec<AsSegment>),
    /// NEXT_HOP (type 3).
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC (type 4).
    MultiExitDisc(u32),
    /// LOCAL_PREF (type 5).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE (type 6).
    AtomicAggregate,
    /// COMMUNITIES (type 8, RFC 1997).
    Communities(Vec<u32>),
    /// LARGE_COMMUNITY (type 32, RFC 8092): (global admin, local 1, local 2).
    LargeCommunities(Vec<(u32, u32, u32)>),
    /// MP_REACH_NLRI (type 14) for IPv6 unicast.
    MpReach(MpReach),
    /// MP_UNREACH_NLRI (type 15) for IPv6 unicast (empty = IPv6 End-of-RIB).
    MpUnreach(Vec<Prefix>),
    /// Any other attribute (or MP_(UN)REACH for other AFI/SAFIs), kept raw.
    Unknown {
        /// Flags (optional/transitive/partial; the extended-length bit is
        /// recomputed on encode).
        flags: u8,
        /// Type code.
        type_code: u8,
        /// Value.
        value: Vec<u8>,
    },
}

/// MP_REACH_NLRI for AFI 2 / SAFI 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Global next hop.
    pub next_hop: Ipv6Addr,
    /// Optional link-local next hop (32-byte next hop form).
    pub link_local: Option<Ipv6Addr>,
    /// IPv6 NLRI.
    pub nlri: Vec<Prefix>,
}

impl PathAttribute {
    /// Type code.
    pub fn type_code(&self) -> u8 {
        use attr_type::*;
        match self {
            PathAttribute::Origin(_) => ORIGIN,
            PathAttribute::AsPath(_) => AS_PATH,
            PathAttribute::NextHop(_) => NEXT_HOP,
            PathAttribute::MultiExitDisc(_) => MULTI_EXIT_DISC,
            PathAttribute::LocalPref(_) => LOCAL_PREF,
            PathAttribute::AtomicAggregate => ATOMIC_AGGREGATE,
            PathAttribute::Communities(_) => COMMUNITIES,
            PathAttribute::LargeCommunities(_) => LARGE_COMMUNITIES,
            PathAttribute::MpReach(_) => MP_REACH_NLRI,
            PathAttribute::MpUnreach(_) => MP_UNREACH_NLRI,
            PathAttribute::Unknown { type_code, .. } => *type_code,
        }
    }

    /// Flags (without the extended-length bit).
    pub fn flags(&self) -> u8 {
        match self {
            PathAttribute::Unknown { flags, .. } => *flags & 0xE0,
            other => expected_flags(other.type_code()).unwrap_or(0),
        }
    }
}

/// Flags (optional|transitive) required for recognized attributes.
fn expected_flags(type_code: u8) -> Option<u8> {
    use attr_flags::*;
    use attr_type::*;
    match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(TRANSITIVE),
        MULTI_EXIT_DISC | MP_REACH_NLRI | MP_UNREACH_NLRI => Some(OPTIONAL),
        COMMUNITIES | LARGE_COMMUNITIES => Some(OPTIONAL | TRANSITIVE),
        _ => None,
    }
}

/// NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl Notification {
    /// Cease / Administrative Shutdown with an RFC 9003 shutdown
    /// communication (truncated to 255 bytes on a character boundary).
    pub fn admin_shutdown(message: Option<&str>) -> Self {
        Self::cease_with_communication(notif::CEASE_ADMIN_SHUTDOWN, message)
    }

    /// Cease / Administrative Reset with an RFC 9003 shutdown communication.
    pub fn admin_reset(message: Option<&str>) -> Self {
        Self::cease_with_communication(notif::CEASE_ADMIN_RESET, message)
    }

    fn cease_with_communication(subcode: u8, message: Option<&str>) -> Self {
        let mut data = Vec::new();
        if let Some(m) = message {
            let mut end = m.len().min(255);
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            data.push(end as u8);
            data.extend_from_slice(&m.as_bytes()[..end]);
        }
        Notification {
            code: notif::CEASE,
            subcode,
            data,
        }
    }

    /// The RFC 9003 shutdown communication carried by a Cease / Administrative
    /// Shutdown or Reset, if present and well formed (length fits, valid UTF-8).
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != notif::CEASE
            || !(self.subcode == notif::CEASE_ADMIN_SHUTDOWN || self.subcode == notif::CEASE_ADMIN_RESET)
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let msg = rest.get(..usize::from(len))?;
        std::str::from_utf8(msg).ok()
    }
}

/// ROUTE-REFRESH message (RFC 2918; `subtype` is the RFC 7313 reserved octet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// AFI.
    pub afi: u16,
    /// Reserved / message subtype.
    pub subtype: u8,
    /// SAFI.
    pub safi: u8,
}

/// Errors found while decoding; each maps to the NOTIFICATION the RFCs prescribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// 1/1: marker not all ones.
    #[error("connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    /// 1/2: bad length field (data: the length field).
    #[error("bad message length {0}")]
    BadMessageLength(u16),
    /// 1/3: unknown message type (data: the type).
    #[error("bad message type {0}")]
    BadMessageType(u8),
    /// 2/0: OPEN malformed in a way without a dedicated subcode.
    #[error("malformed OPEN message")]
    MalformedOpen,
    /// 2/1: unsupported version (data: largest supported version, 2 octets).
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// 2/2: peer AS does not match the configuration.
    #[error("bad peer AS: expected {expected}, got {got}")]
    BadPeerAs {
        /// Configured peer AS.
        expected: u32,
        /// AS in the OPEN.
        got: u32,
    },
    /// 2/3: unacceptable BGP identifier.
    #[error("bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    /// 2/4: unsupported optional parameter type.
    #[error("unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// 2/6: hold time 1 or 2 seconds.
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// 2/7: a required capability is missing (data: the capability).
    #[error("unsupported capability")]
    UnsupportedCapability(Vec<u8>),
    /// 3/1: malformed attribute list.
    #[error("malformed attribute list")]
    MalformedAttributeList,
    /// 3/2: unrecognized well-known attribute (data: the attribute).
    #[error("unrecognized well-known attribute")]
    UnrecognizedWellKnownAttribute(Vec<u8>),
    /// 3/3: missing well-known attribute (data: its type code).
    #[error("missing well-known attribute {0}")]
    MissingWellKnownAttribute(u8),
    /// 3/4: attribute flags error (data: the attribute).
    #[error("attribute flags error")]
    AttributeFlags(Vec<u8>),
    /// 3/5: attribute length error (data: the attribute).
    #[error("attribute length error")]
    AttributeLength(Vec<u8>),
    /// 3/6: invalid ORIGIN (data: the attribute).
    #[error("invalid ORIGIN attribute")]
    InvalidOrigin(Vec<u8>),
    /// 3/8: invalid NEXT_HOP (data: the attribute).
    #[error("invalid NEXT_HOP attribute")]
    InvalidNextHop(Vec<u8>),
    /// 3/9: optional attribute error (data: the attribute).
    #[error("optional attribute error")]
    OptionalAttribute(Vec<u8>),
    /// 3/10: invalid network field (NLRI or withdrawn routes).
    #[error("invalid network field")]
    InvalidNetworkField,
    /// 3/11: malformed AS_PATH.
    #[error("malformed AS_PATH")]
    MalformedAsPath,
}

impl DecodeError {
    /// The NOTIFICATION (code, subcode, data) to send for this error.
    pub fn notification(&self) -> (u8, u8, Vec<u8>) {
        use notif::*;
        use DecodeError::*;
        match self {
            ConnectionNotSynchronized => (MESSAGE_HEADER_ERROR, 1, vec![]),
            BadMessageLength(l) => (MESSAGE_HEADER_ERROR, 2, l.to_be_bytes().to_vec()),
            BadMessageType(t) => (MESSAGE_HEADER_ERROR, 3, vec![*t]),
            MalformedOpen => (OPEN_MESSAGE_ERROR, 0, vec![]),
            UnsupportedVersion(_) => (OPEN_MESSAGE_ERROR, 1, u16::from(BGP_VERSION).to_be_bytes().to_vec()),
            BadPeerAs { .. } => (OPEN_MESSAGE_ERROR, 2, vec![]),
            BadBgpIdentifier(_) => (OPEN_MESSAGE_ERROR, 3, vec![]),
            UnsupportedOptionalParameter(_) => (OPEN_MESSAGE_ERROR, 4, vec![]),
            UnacceptableHoldTime(_) => (OPEN_MESSAGE_ERROR, 6, vec![]),
            UnsupportedCapability(d) => (OPEN_MESSAGE_ERROR, 7, d.clone()),
            MalformedAttributeList => (UPDATE_MESSAGE_ERROR, 1, vec![]),
            UnrecognizedWellKnownAttribute(d) => (UPDATE_MESSAGE_ERROR, 2, d.clone()),
            MissingWellKnownAttribute(t) => (UPDATE_MESSAGE_ERROR, 3, vec![*t]),
            AttributeFlags(d) => (UPDATE_MESSAGE_ERROR, 4, d.clone()),
            AttributeLength(d) => (UPDATE_MESSAGE_ERROR, 5, d.clone()),
            InvalidOrigin(d) => (UPDATE_MESSAGE_ERROR, 6, d.clone()),
            InvalidNextHop(d) => (UPDATE_MESSAGE_ERROR, 8, d.clone()),
            OptionalAttribute(d) => (UPDATE_MESSAGE_ERROR, 9, d.clone()),
            InvalidNetworkField => (UPDATE_MESSAGE_ERROR, 10, vec![]),
            MalformedAsPath => (UPDATE_MESSAGE_ERROR, 11, vec![]),
        }
    }

    /// The NOTIFICATION message for this error.
    pub fn to_notification(&self) -> Notification {
        let (code, subcode, data) = self.notification();
        Notification { code, subcode, data }
    }
}

/// Errors from [`encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed 4096 bytes.
    #[error("message too long ({0} bytes)")]
    MessageTooLong(usize),
    /// OPEN optional parameters exceed 255 bytes (or a capability value does).
    #[error("OPEN optional parameters too long")]
    OptionalParametersTooLong,
    /// An AS_PATH segment holds more than 255 ASNs.
    #[error("AS_PATH segment too long")]
    AsPathSegmentTooLong,
    /// An attribute value exceeds 65535 bytes.
    #[error("attribute too long")]
    AttributeTooLong,
    /// A NOTIFICATION/UPDATE field exceeds its length field.
    #[error("field too long")]
    FieldTooLong,
}

// ---------------------------------------------------------------- encoding

/// Appends the wire form of `msg` to `out`. On error `out` is left unchanged.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let res = encode_inner(msg, out);
    match res {
        Ok(()) => {
            let len = out.len() - start;
            if len > MAX_MESSAGE_LEN {
                out.truncate(start);
                return Err(EncodeError::MessageTooLong(len));
            }
            out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Convenience: encodes `msg` into a new vector.
pub fn encode_to_vec(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::new();
    encode(msg, &mut v)?;
    Ok(v)
}

fn encode_inner(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0]);
    match msg {
        Message::Open(o) => {
            out.push(msg_type::OPEN);
            out.push(BGP_VERSION);
            out.extend_from_slice(&o.my_as.to_be_bytes());
            out.extend_from_slice(&o.hold_time.to_be_bytes());
            out.extend_from_slice(&o.bgp_id.octets());
            let mut params = Vec::new();
            for cap in &o.capabilities {
                let mut v = Vec::new();
                let code = encode_capability(cap, &mut v);
                let cap_len = u8::try_from(v.len()).map_err(|_| EncodeError::OptionalParametersTooLong)?;
                let param_len = u8::try_from(v.len() + 2).map_err(|_| EncodeError::OptionalParametersTooLong)?;
                params.extend_from_slice(&[2, param_len, code, cap_len]);
                params.extend_from_slice(&v);
            }
            out.push(u8::try_from(params.len()).map_err(|_| EncodeError::OptionalParametersTooLong)?);
            out.extend_from_slice(&params);
        }
        Message::Update(u) => {
            out.push(msg_type::UPDATE);
            let mut w = Vec::new();
            for p in &u.withdrawn {
                p.encode(&mut w);
            }
            out.extend_from_slice(
                &u16::try_from(w.len())
                    .map_err(|_| EncodeError::FieldTooLong)?
                    .to_be_bytes(),
            );
            out.extend_from_slice(&w);
            let mut a = Vec::new();
            for attr in &u.attributes {
                encode_attribute(attr, &mut a)?;
            }
            out.extend_from_slice(
                &u16::try_from(a.len())
                    .map_err(|_| EncodeError::FieldTooLong)?
                    .to_be_bytes(),
            );
            out.extend_from_slice(&a);
            for p in &u.nlri {
                p.encode(out);
            }
        }
        Message::Notification(n) => {
            out.push(msg_type::NOTIFICATION);
            out.push(n.code);
            out.push(n.subcode);
            out.extend_from_slice(&n.data);
        }
        Message::Keepalive => out.push(msg_type::KEEPALIVE),
        Message::RouteRefresh(r) => {
            out.push(msg_type::ROUTE_REFRESH);
            out.extend_from_slice(&r.afi.to_be_bytes());
            out.push(r.subtype);
            out.push(r.safi);
        }
    }
    Ok(())
}

fn encode_capability(cap: &Capability, v: &mut Vec<u8>) -> u8 {
    match cap {
        Capability::Multiprotocol { afi, safi } => {
            v.extend_from_slice(&afi.to_be_bytes());
            v.push(0);
            v.push(*safi);
            cap_code::MULTIPROTOCOL
        }
        Capability::RouteRefresh => cap_code::ROUTE_REFRESH,
        Capability::GracefulRestart(gr) => {
            let word = (u16::from(gr.flags & 0x0f) << 12) | (gr.restart_time & 0x0fff);
            v.extend_from_slice(&word.to_be_bytes());
            for f in &gr.families {
                v.extend_from_slice(&f.afi.to_be_bytes());
                v.push(f.safi);
                v.push(f.flags);
            }
            cap_code::GRACEFUL_RESTART
        }
        Capability::FourOctetAs(asn) => {
            v.extend_from_slice(&asn.to_be_bytes());
            cap_code::FOUR_OCTET_AS
        }
        Capability::Unknown { code, value } => {
            v.extend_from_slice(value);
            *code
        }
    }
}

fn encode_attribute(attr: &PathAttribute, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut v = Vec::new();
    match attr {
        PathAttribute::Origin(o) => v.push(match o {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }),
        PathAttribute::AsPath(segs) => {
            for s in segs {
                let (t, asns) = match s {
                    AsSegment::Set(a) => (1u8, a),
                    AsSegment::Sequence(a) => (2u8, a),
                };
                v.push(t);
                v.push(u8::try_from(asns.len()).map_err(|_| EncodeError::AsPathSegmentTooLong)?);
                for a in asns {
                    v.extend_from_slice(&a.to_be_bytes());
                }
            }
        }
        PathAttribute::NextHop(a) => v.extend_from_slice(&a.octets()),
        PathAttribute::MultiExitDisc(x) | PathAttribute::LocalPref(x) => v.extend_from_slice(&x.to_be_bytes()),
        PathAttribute::AtomicAggregate => {}
        PathAttribute::Communities(cs) => {
            for c in cs {
                v.extend_from_slice(&c.to_be_bytes());
            }
        }
        PathAttribute::LargeCommunities(cs) => {
            for (g, l1, l2) in cs {
                v.extend_from_slice(&g.to_be_bytes());
                v.extend_from_slice(&l1.to_be_bytes());
                v.extend_from_slice(&l2.to_be_bytes());
            }
        }
        PathAttribute::MpReach(r) => {
            v.extend_from_slice(&AFI_IPV6.to_be_bytes());
            v.push(SAFI_UNICAST);
            match r.link_local {
                Some(ll) => {
                    v.push(32);
                    v.extend_from_slice(&r.next_hop.octets());
                    v.extend_from_slice(&ll.octets());
                }
                None => {
                    v.push(16);
                    v.extend_from_slice(&r.next_hop.octets());
                }
            }
            v.push(0); // reserved
            for p in &r.nlri {
                p.encode(&mut v);
            }
        }
        PathAttribute::MpUnreach(ps) => {
            v.extend_from_slice(&AFI_IPV6.to_be_bytes());
            v.push(SAFI_UNICAST);
            for p in ps {
                p.encode(&mut v);
            }
        }
        PathAttribute::Unknown { value, .. } => v.extend_from_slice(value),
    }
    let flags = attr.flags();
    if v.len() > 255 {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError::AttributeTooLong)?;
        out.push(flags | attr_flags::EXTENDED_LENGTH);
        out.push(attr.type_code());
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(flags);
        out.push(attr.type_code());
        out.push(v.len() as u8);
    }
    out.extend_from_slice(&v);
    Ok(())
}

// ---------------------------------------------------------------- decoding

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Decodes one message from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the message and the
/// number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let marker_seen = buf.len().min(16);
    if buf[..marker_seen].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    let ty = buf[18];
    let ulen = usize::from(len);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&ulen) {
        return Err(DecodeError::BadMessageLength(len));
    }
    let len_ok = match ty {
        msg_type::OPEN => ulen >= 29,
        msg_type::UPDATE => ulen >= 23,
        msg_type::NOTIFICATION => ulen >= 21,
        msg_type::KEEPALIVE => ulen == 19,
        msg_type::ROUTE_REFRESH => ulen == 23,
        other => return Err(DecodeError::BadMessageType(other)),
    };
    if !len_ok {
        return Err(DecodeError::BadMessageLength(len));
    }
    if buf.len() < ulen {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..ulen];
    let msg = match ty {
        msg_type::OPEN => Message::Open(decode_open(body)?),
        msg_type::UPDATE => Message::Update(decode_update(body)?),
        msg_type::NOTIFICATION => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        msg_type::KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh(RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]),
            subtype: body[2],
            safi: body[3],
        }),
    };
    Ok(Some((msg, ulen)))
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(DecodeError::MalformedOpen)?;
    if version != BGP_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let my_as = r.u16().ok_or(DecodeError::MalformedOpen)?;
    let hold_time = r.u16().ok_or(DecodeError::MalformedOpen)?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or(DecodeError::MalformedOpen)?);
    let opt_len = r.u8().ok_or(DecodeError::MalformedOpen)?;
    let params = r.take(usize::from(opt_len)).ok_or(DecodeError::MalformedOpen)?;
    if !r.is_empty() {
        return Err(DecodeError::MalformedOpen);
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime(hold_time));
    }
    if bgp_id.is_unspecified() {
        return Err(DecodeError::BadBgpIdentifier(bgp_id));
    }
    let mut capabilities = Vec::new();
    let mut pr = Reader::new(params);
    while !pr.is_empty() {
        let ptype = pr.u8().ok_or(DecodeError::MalformedOpen)?;
        let plen = pr.u8().ok_or(DecodeError::MalformedOpen)?;
        let pval = pr.take(usize::from(plen)).ok_or(DecodeError::MalformedOpen)?;
        if ptype != 2 {
            return Err(DecodeError::UnsupportedOptionalParameter(ptype));
        }
        let mut cr = Reader::new(pval);
        while !cr.is_empty() {
            let code = cr.u8().ok_or(DecodeError::MalformedOpen)?;
            let clen = cr.u8().ok_or(DecodeError::MalformedOpen)?;
            let cval = cr.take(usize::from(clen)).ok_or(DecodeError::MalformedOpen)?;
            capabilities.push(decode_capability(code, cval)?);
        }
    }
    Ok(Open {
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn decode_capability(code: u8, v: &[u8]) -> Result<Capability, DecodeError> {
    let mut r = Reader::new(v);
    let cap = match code {
        cap_code::MULTIPROTOCOL => {
            if v.len() != 4 {
                return Err(DecodeError::MalformedOpen);
            }
            Capability::Multiprotocol {
                afi: u16::from_be_bytes([v[0], v[1]]),
                safi: v[3],
            }
        }
        cap_code::ROUTE_REFRESH => {
            if !v.is_empty() {
                return Err(DecodeError::MalformedOpen);
            }
            Capability::RouteRefresh
        }
        cap_code::FOUR_OCTET_AS => {
            if v.len() != 4 {
                return Err(DecodeError::MalformedOpen);
            }
            Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        }
        cap_code::GRACEFUL_RESTART => {
            let word = r.u16().ok_or(DecodeError::MalformedOpen)?;
            if r.buf.len() % 4 != 0 {
                return Err(DecodeError::MalformedOpen);
            }
            let mut families = Vec::new();
            while !r.is_empty() {
                let afi = r.u16().ok_or(DecodeError::MalformedOpen)?;
                let safi = r.u8().ok_or(DecodeError::MalformedOpen)?;
                let flags = r.u8().ok_or(DecodeError::MalformedOpen)?;
                families.push(GracefulRestartFamily { afi, safi, flags });
            }
            Capability::GracefulRestart(GracefulRestart {
                flags: (word >> 12) as u8,
                restart_time: word & 0x0fff,
                families,
            })
        }
        _ => Capability::Unknown {
            code,
            value: v.to_vec(),
        },
    };
    Ok(cap)
}

fn decode_prefixes(buf: &[u8], v6: bool) -> Option<Vec<Prefix>> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8()?;
        let max = if v6 { 128 } else { 32 };
        if len > max {
            return None;
        }
        let bytes = r.take(usize::from(len).div_ceil(8))?;
        let addr = if v6 {
            let mut o = [0u8; 16];
            o[..bytes.len()].copy_from_slice(bytes);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let mut o = [0u8; 4];
            o[..bytes.len()].copy_from_slice(bytes);
            IpAddr::V4(Ipv4Addr::from(o))
        };
        out.push(Prefix::new(addr, len).ok()?);
    }
    Some(out)
}

fn decode_update(body: &[u8]) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body);
    let wlen = r.u16().ok_or(DecodeError::MalformedAttributeList)?;
    let wbuf = r.take(usize::from(wlen)).ok_or(DecodeError::MalformedAttributeList)?;
    let alen = r.u16().ok_or(DecodeError::MalformedAttributeList)?;
    let abuf = r.take(usize::from(alen)).ok_or(DecodeError::MalformedAttributeList)?;
    let nbuf = r.rest();
    let withdrawn = decode_prefixes(wbuf, false).ok_or(DecodeError::InvalidNetworkField)?;
    let attributes = decode_attributes(abuf)?;
    let nlri = decode_prefixes(nbuf, false).ok_or(DecodeError::InvalidNetworkField)?;

    let has = |t: u8| attributes.iter().any(|a| a.type_code() == t);
    let has_mp_reach = attributes.iter().any(|a| matches!(a, PathAttribute::MpReach(_)));
    if !nlri.is_empty() || has_mp_reach {
        for t in [attr_type::ORIGIN, attr_type::AS_PATH] {
            if !has(t) {
                return Err(DecodeError::MissingWellKnownAttribute(t));
            }
        }
    }
    if !nlri.is_empty() && !has(attr_type::NEXT_HOP) {
        return Err(DecodeError::MissingWellKnownAttribute(attr_type::NEXT_HOP));
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn decode_attributes(buf: &[u8]) -> Result<Vec<PathAttribute>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    while !r.is_empty() {
        let whole_start = r.buf;
        let flags = r.u8().ok_or(DecodeError::MalformedAttributeList)?;
        let type_code = r.u8().ok_or(DecodeError::MalformedAttributeList)?;
        let len = if flags & attr_flags::EXTENDED_LENGTH != 0 {
            r.u16().map(usize::from)
        } else {
            r.u8().map(usize::from)
        }
        .ok_or(DecodeError::MalformedAttributeList)?;
        let hdr_len = whole_start.len() - r.buf.len();
        let value = match r.take(len) {
            Some(v) => v,
            None => return Err(DecodeError::AttributeLength(whole_start.to_vec())),
        };
        let raw = whole_start[..hdr_len + len].to_vec();
        if !seen.insert(type_code) {
            return Err(DecodeError::MalformedAttributeList);
        }
        out.push(decode_attribute(flags, type_code, value, raw)?);
    }
    Ok(out)
}

fn decode_attribute(flags: u8, type_code: u8, v: &[u8], raw: Vec<u8>) -> Result<PathAttribute, DecodeError> {
    use attr_flags::*;
    use attr_type::*;
    let Some(expected) = expected_flags(type_code) else {
        if flags & OPTIONAL == 0 {
            return Err(DecodeError::UnrecognizedWellKnownAttribute(raw));
        }
        return Ok(PathAttribute::Unknown {
            flags: flags & 0xE0,
            type_code,
            value: v.to_vec(),
        });
    };
    let category_ok = flags & (OPTIONAL | TRANSITIVE) == expected;
    // The Partial bit must be 0 for well-known and optional non-transitive attributes.
    let partial_ok = expected == (OPTIONAL | TRANSITIVE) || flags & PARTIAL == 0;
    if !category_ok || !partial_ok {
        return Err(DecodeError::AttributeFlags(raw));
    }
    let u32_of = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let attr = match type_code {
        ORIGIN => {
            if v.len() != 1 {
                return Err(DecodeError::AttributeLength(raw));
            }
            PathAttribute::Origin(match v[0] {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => return Err(DecodeError::InvalidOrigin(raw)),
            })
        }
        AS_PATH => {
            let mut r = Reader::new(v);
            let mut segs = Vec::new();
            while !r.is_empty() {
                let t = r.u8().ok_or(DecodeError::MalformedAsPath)?;
                let n = r.u8().ok_or(DecodeError::MalformedAsPath)?;
                if n == 0 {
                    return Err(DecodeError::MalformedAsPath);
                }
                let b = r.take(usize::from(n) * 4).ok_or(DecodeError::MalformedAsPath)?;
                let asns: Vec<u32> = b.chunks_exact(4).map(u32_of).collect();
                segs.push(match t {
                    1 => AsSegment::Set(asns),
                    2 => AsSegment::Sequence(asns),
                    _ => return Err(DecodeError::MalformedAsPath),
                });
            }
            PathAttribute::AsPath(segs)
        }
        NEXT_HOP => {
            if v.len() != 4 {
                return Err(DecodeError::AttributeLength(raw));
            }
            let a = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                return Err(DecodeError::InvalidNextHop(raw));
            }
            PathAttribute::NextHop(a)
        }
        MULTI_EXIT_DISC | LOCAL_PREF => {
            if v.len() != 4 {
                return Err(DecodeError::AttributeLength(raw));
            }
            if type_code == MULTI_EXIT_DISC {
                PathAttribute::MultiExitDisc(u32_of(v))
            } else {
                PathAttribute::LocalPref(u32_of(v))
            }
        }
        ATOMIC_AGGREGATE => {
            if !v.is_empty() {
                return Err(DecodeError::AttributeLength(raw));
            }
            PathAttribute::AtomicAggregate
        }
        COMMUNITIES => {
            if v.len() % 4 != 0 {
                return Err(DecodeError::AttributeLength(raw));
            }
            PathAttribute::Communities(v.chunks_exact(4).map(u32_of).collect())
        }
        LARGE_COMMUNITIES => {
            if v.len() % 12 != 0 {
                return Err(DecodeError::AttributeLength(raw));
            }
            PathAttribute::LargeCommunities(
                v.chunks_exact(12)
                    .map(|c| (u32_of(&c[0..4]), u32_of(&c[4..8]), u32_of(&c[8..12])))
                    .collect(),
            )
        }
        MP_REACH_NLRI | MP_UNREACH_NLRI => {
            let mut r = Reader::new(v);
            let afi = r.u16().ok_or_else(|| DecodeError::OptionalAttribute(raw.clone()))?;
            let safi = r.u8().ok_or_else(|| DecodeError::OptionalAttribute(raw.clone()))?;
            if (afi, safi) != (AFI_IPV6, SAFI_UNICAST) {
                return Ok(PathAttribute::Unknown {
                    flags: flags & 0xE0,
                    type_code,
                    value: v.to_vec(),
                });
            }
            if type_code == MP_UNREACH_NLRI {
                let ps = decode_prefixes(r.rest(), true).ok_or(DecodeError::OptionalAttribute(raw))?;
                return Ok(PathAttribute::MpUnreach(ps));
            }
            let parsed = (|| {
                let nh_len = r.u8()?;
                let nh = r.take(usize::from(nh_len))?;
                let _reserved = r.u8()?;
                let to6 = |b: &[u8]| -> Option<Ipv6Addr> { <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from) };
                let (next_hop, link_local) = match nh_len {
                    16 => (to6(nh)?, None),
                    32 => (to6(&nh[..16])?, Some(to6(&nh[16..])?)),
                    _ => return None,
                };
                let nlri = decode_prefixes(r.rest(), true)?;
                Some(MpReach {
                    next_hop,
                    link_local,
                    nlri,
                })
            })();
            PathAttribute::MpReach(parsed.ok_or(DecodeError::OptionalAttribute(raw))?)
        }
        _ => return Err(DecodeError::UnrecognizedWellKnownAttribute(raw)),
    };
    Ok(attr)
}
