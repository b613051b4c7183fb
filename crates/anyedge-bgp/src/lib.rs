//! Sans-IO core of an announce-only BGP-4 speaker.
//!
//! * [`codec`]: message encoding/decoding — RFC 4271 section 4 (header, OPEN,
//!   UPDATE, NOTIFICATION, KEEPALIVE) with the section 6.1–6.3 error checks,
//!   RFC 5492 capabilities, RFC 4760 multiprotocol (capability, MP_REACH_NLRI /
//!   MP_UNREACH_NLRI for IPv6 unicast), RFC 6793 4-octet ASNs (AS_TRANS, 4-octet
//!   AS_PATH), RFC 1997 communities, RFC 8092 large communities, RFC 2918
//!   ROUTE-REFRESH, RFC 4724 graceful restart capability (section 3), RFC 4486 /
//!   RFC 9003 Cease with shutdown communication. Every [`DecodeError`] maps to
//!   the NOTIFICATION the RFCs prescribe via [`DecodeError::notification`].
//! * [`session`]: the RFC 4271 section 8 FSM for a speaker that only announces
//!   (inbound UPDATEs are validated and ignored), with RFC 4271 section 6.8
//!   collision resolution as a helper, RFC 4724 End-of-RIB markers, and
//!   RFC 6608 FSM error subcodes.
//!
//! No sockets, no clocks, no async runtime: time is passed in as
//! `std::time::Instant`, bytes in and out are plain buffers, and no input can
//! make it panic.

#![forbid(unsafe_code)]

pub mod codec;
pub mod session;

pub use codec::{decode, encode, encode_to_vec, DecodeError, EncodeError, Message, Notification, Prefix};
pub use session::{resolve_collision, Action, DownReason, Event, Family, Keep, Route, Session, SessionConfig, State};
