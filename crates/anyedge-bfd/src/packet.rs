//! BFD control packet codec (RFC 5880 section 4.1) with the reception checks
//! of section 6.8.6 that do not depend on session state.

/// Length of a control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// BFD protocol version.
pub const VERSION: u8 = 1;

/// Session state as carried on the wire (RFC 5880 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 0.
    AdminDown,
    /// 1.
    Down,
    /// 2.
    Init,
    /// 3.
    Up,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

/// Diagnostic code (RFC 5880 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    /// 0: No Diagnostic.
    None,
    /// 1: Control Detection Time Expired.
    ControlDetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFunctionFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborSignaledSessionDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdministrativelyDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9..=31: reserved values, kept as is.
    Other(u8),
}

impl Diag {
    /// Builds from the 5-bit wire value.
    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            c => Diag::Other(c),
        }
    }
    /// The 5-bit wire value.
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(c) => c & 0x1f,
        }
    }
}

/// A BFD control packet (no authentication section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    /// Diagnostic.
    pub diag: Diag,
    /// Sender's state.
    pub state: State,
    /// P: Poll.
    pub poll: bool,
    /// F: Final.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub control_plane_independent: bool,
    /// D: Demand.
    pub demand: bool,
    /// Detect Mult (non-zero).
    pub detect_mult: u8,
    /// My Discriminator (non-zero).
    pub my_discriminator: u32,
    /// Your Discriminator.
    pub your_discriminator: u32,
    /// Desired Min TX Interval, microseconds.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, microseconds.
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, microseconds.
    pub required_min_echo_rx: u32,
}

/// Why a received packet was discarded (RFC 5880 6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 24 bytes.
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    /// Version is not 1.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// Length field below the minimum or beyond the received payload.
    #[error("bad length field {0}")]
    BadLength(u8),
    /// A bit set: authentication is not supported.
    #[error("authentication not supported")]
    AuthNotSupported,
    /// Detect Mult is zero.
    #[error("detect mult is zero")]
    ZeroDetectMult,
    /// M bit set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    /// Your Discriminator is zero while the state is Init or Up.
    #[error("your discriminator is zero in state {0:?}")]
    ZeroYourDiscriminator(State),
    /// P and F both set (RFC 5880 6.5 forbids it).
    #[error("poll and final both set")]
    PollAndFinal,
}

const P: u8 = 0x20;
const F: u8 = 0x10;
const C: u8 = 0x08;
const A: u8 = 0x04;
const D: u8 = 0x02;
const M: u8 = 0x01;

impl ControlPacket {
    /// Appends the 24-byte wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((VERSION << 5) | self.diag.code());
        let mut b = self.state.bits() << 6;
        for (set, bit) in [
            (self.poll, P),
            (self.final_, F),
            (self.control_plane_independent, C),
            (self.demand, D),
        ] {
            if set {
                b |= bit;
            }
        }
        out.push(b);
        out.push(self.detect_mult);
        out.push(PACKET_LEN as u8);
        for v in [
            self.my_discriminator,
            self.your_discriminator,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Encodes into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(PACKET_LEN);
        self.encode(&mut v);
        v
    }

    /// Decodes and applies the state-independent checks of RFC 5880 6.8.6.
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, DecodeError> {
        if buf.len() < PACKET_LEN {
            return Err(DecodeError::TooShort(buf.len()));
        }
        let version = buf[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let flags = buf[1];
        let len = buf[3];
        let min = if flags & A != 0 { 26 } else { PACKET_LEN };
        if usize::from(len) < min || usize::from(len) > buf.len() {
            return Err(DecodeError::BadLength(len));
        }
        if flags & A != 0 {
            return Err(DecodeError::AuthNotSupported);
        }
        let detect_mult = buf[2];
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & M != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let state = State::from_bits(flags >> 6);
        let pkt = ControlPacket {
            diag: Diag::from_code(buf[0]),
            state,
            poll: flags & P != 0,
            final_: flags & F != 0,
            control_plane_independent: flags & C != 0,
            demand: flags & D != 0,
            detect_mult,
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if pkt.my_discriminator == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        if pkt.your_discriminator == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator(state));
        }
        if pkt.poll && pkt.final_ {
            return Err(DecodeError::PollAndFinal);
        }
        Ok(pkt)
    }
}
