//! Sans-IO BFD core: RFC 5880 asynchronous mode for single-hop sessions
//! (RFC 5881).
//!
//! * [`packet`]: control packet format (RFC 5880 section 4.1, no
//!   authentication section) and the state-independent reception checks of
//!   section 6.8.6.
//! * [`session`]: state variables (6.8.1), the AdminDown/Down/Init/Up state
//!   machine with its three-way handshake (6.2, 6.8.6), detection time
//!   (6.8.4), timer negotiation with poll sequences (6.5, 6.8.3), jittered
//!   periodic transmission and the 1 s floor while not Up (6.8.3, 6.8.7), and
//!   administrative control (6.8.16).
//!
//! Not implemented: authentication (packets with the A bit are rejected),
//! demand mode, the echo function. Sockets, TTL 255 checks (RFC 5881
//! section 5) and demultiplexing by address are the caller's job.
//!
//! Time is passed in as `std::time::Instant`; jitter comes from a
//! caller-supplied seed; no input can make it panic.

#![forbid(unsafe_code)]

pub mod packet;
pub mod session;

pub use packet::{ControlPacket, DecodeError, Diag, State};
pub use session::{BfdEvent, RxError, Session, SessionConfig};
