//! RFC 1982 serial number arithmetic.

use std::cmp::Ordering;

/// Compares two SOA serials (RFC 1982 3.2). `None` when they are exactly
/// 2^31 apart, where the order is undefined.
pub fn serial_cmp(a: u32, b: u32) -> Option<Ordering> {
    if a == b {
        return Some(Ordering::Equal);
    }
    let d = b.wrapping_sub(a);
    match d.cmp(&(1u32 << 31)) {
        Ordering::Less => Some(Ordering::Less),
        Ordering::Greater => Some(Ordering::Greater),
        Ordering::Equal => None,
    }
}

/// Is serial `a` newer than `b`?
pub fn serial_gt(a: u32, b: u32) -> bool {
    serial_cmp(a, b) == Some(Ordering::Greater)
}
