//! Control packet byte vectors (RFC 5880 4.1) and reception checks (6.8.6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyedge_bfd::packet::*;
use proptest::prelude::*;

fn base() -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 0x1122_3344,
        your_discriminator: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

fn check(p: ControlPacket, bytes: &[u8]) {
    assert_eq!(p.to_bytes(), bytes);
    assert_eq!(ControlPacket::decode(bytes), Ok(p));
}

#[test]
fn down_packet_bytes() {
    check(
        base(),
        &[
            0x20, // Vers 1 (001), Diag 0
            0x40, // Sta 1 (Down), P F C A D M all 0
            3,    // Detect Mult
            24,   // Length
            0x11, 0x22, 0x33, 0x44, // My Discriminator
            0, 0, 0, 0, // Your Discriminator
            0x00, 0x0f, 0x42, 0x40, // Desired Min TX 1 000 000 us
            0x00, 0x04, 0x93, 0xe0, // Required Min RX 300 000 us
            0, 0, 0, 0, // Required Min Echo RX
        ],
    );
}

#[test]
fn up_packet_with_flags_bytes() {
    let p = ControlPacket {
        diag: Diag::NeighborSignaledSessionDown,
        state: State::Up,
        poll: true,
        control_plane_independent: true,
        demand: true,
        detect_mult: 5,
        your_discriminator: 7,
        required_min_echo_rx: 50_000,
        ..base()
    };
    check(
        p,
        &[
            0x23, // Vers 1, Diag 3
            0xea, // Sta 3 (0xc0) | P (0x20) | C (0x08) | D (0x02)
            5, 24, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 7, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00,
            0xc3, 0x50,
        ],
    );
    let f = ControlPacket {
        state: State::Init,
        final_: true,
        your_discriminator: 7,
        diag: Diag::Other(31),
        ..base()
    };
    // Diag 31, Sta 2 (0x80) | F (0x10)
    let mut b = f.to_bytes();
    assert_eq!(&b[..2], &[0x3f, 0x90]);
    check(f, &b);
    let admin = ControlPacket {
        state: State::AdminDown,
        diag: Diag::AdministrativelyDown,
        ..base()
    };
    b = admin.to_bytes();
    assert_eq!(&b[..2], &[0x27, 0x00]);
    check(admin, &b);
}

#[test]
fn diag_codes_roundtrip() {
    for c in 0..32u8 {
        assert_eq!(Diag::from_code(c).code(), c);
    }
    assert_eq!(Diag::from_code(1), Diag::ControlDetectionTimeExpired);
}

#[test]
fn reception_checks() {
    let good = base().to_bytes();
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        ControlPacket::decode(&b)
    };
    assert_eq!(ControlPacket::decode(&good[..23]), Err(DecodeError::TooShort(23)));
    assert_eq!(with(0, 0x40), Err(DecodeError::BadVersion(2)));
    assert_eq!(with(3, 23), Err(DecodeError::BadLength(23)));
    assert_eq!(with(3, 30), Err(DecodeError::BadLength(30))); // longer than the payload
                                                              // A bit: length below 26 is a length error, otherwise authentication is unsupported.
    assert_eq!(with(1, 0x44), Err(DecodeError::BadLength(24)));
    let mut auth = good.clone();
    auth[1] = 0x44;
    auth[3] = 26;
    auth.extend_from_slice(&[1, 2]);
    assert_eq!(ControlPacket::decode(&auth), Err(DecodeError::AuthNotSupported));
    assert_eq!(with(2, 0), Err(DecodeError::ZeroDetectMult));
    assert_eq!(with(1, 0x41), Err(DecodeError::Multipoint));
    let mut b = good.clone();
    b[4..8].copy_from_slice(&[0; 4]);
    assert_eq!(ControlPacket::decode(&b), Err(DecodeError::ZeroMyDiscriminator));
    assert_eq!(with(1, 0x80), Err(DecodeError::ZeroYourDiscriminator(State::Init)));
    assert_eq!(with(1, 0xc0), Err(DecodeError::ZeroYourDiscriminator(State::Up)));
    assert_eq!(with(1, 0x00).map(|p| p.state), Ok(State::AdminDown)); // zero Your Discr allowed
    assert_eq!(with(1, 0x70), Err(DecodeError::PollAndFinal));
    // Longer length field within the payload is accepted (trailing bytes ignored).
    let mut long = good.clone();
    long[3] = 28;
    long.extend_from_slice(&[0; 4]);
    assert_eq!(ControlPacket::decode(&long), Ok(base()));
}

proptest! {
    #[test]
    fn no_panic_on_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = ControlPacket::decode(&b);
    }

    #[test]
    fn roundtrip(diag in 0u8..32, st in 0u8..4, flags in 0u8..16, mult in 1u8.., my in 1u32..,
                 tx in any::<u32>(), rx in any::<u32>(), echo in any::<u32>(), your in 1u32..) {
        let state = [State::AdminDown, State::Down, State::Init, State::Up][usize::from(st)];
        let poll = flags & 1 != 0;
        let p = ControlPacket {
            diag: Diag::from_code(diag),
            state,
            poll,
            final_: !poll && flags & 2 != 0,
            control_plane_independent: flags & 4 != 0,
            demand: flags & 8 != 0,
            detect_mult: mult,
            my_discriminator: my,
            your_discriminator: your,
            desired_min_tx: tx,
            required_min_rx: rx,
            required_min_echo_rx: echo,
        };
        prop_assert_eq!(ControlPacket::decode(&p.to_bytes()), Ok(p));
    }
}
