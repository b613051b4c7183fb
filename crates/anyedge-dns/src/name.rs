//! Wire-format name helpers used by the store and the hot path.
//!
//! Names are kept as uncompressed wire bytes (`3www7example3com0`). A
//! lowercased copy is the lookup key; because a suffix of a wire name at a
//! label boundary is itself a wire name, every ancestor of a query name is a
//! sub-slice of it and can be looked up without allocating.

/// Longest wire-format name (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// At most 127 labels (plus the root) fit in 255 octets.
pub const MAX_LABELS: usize = 128;

/// Label start offsets of a valid uncompressed wire name (root excluded).
#[derive(Clone, Copy)]
pub struct Labels {
    offs: [u8; MAX_LABELS],
    n: usize,
}

impl Labels {
    /// Splits `wire` (assumed valid, uncompressed) into label offsets.
    pub fn of(wire: &[u8]) -> Labels {
        let mut l = Labels {
            offs: [0; MAX_LABELS],
            n: 0,
        };
        let mut i = 0usize;
        while i < wire.len() && wire[i] != 0 && l.n < MAX_LABELS {
            l.offs[l.n] = i as u8;
            l.n += 1;
            i += 1 + wire[i] as usize;
        }
        l
    }
    /// Number of labels (the root not counted).
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Offset of the suffix that has `keep` labels (0 = the root).
    pub fn suffix_at(&self, keep: usize, total_len: usize) -> usize {
        if keep == 0 {
            total_len - 1
        } else {
            self.offs[self.n - keep] as usize
        }
    }
}

/// Length of the uncompressed wire name at the start of `b`, or `None` if
/// it is malformed (compressed, too long, or runs past the end).
pub fn wire_len(b: &[u8]) -> Option<usize> {
    let mut i = 0usize;
    loop {
        let l = *b.get(i)? as usize;
        if l == 0 {
            return if i < MAX_NAME { Some(i + 1) } else { None };
        }
        if l > 63 {
            return None;
        }
        i += 1 + l;
        if i >= MAX_NAME {
            return None;
        }
    }
}

/// ASCII-lowercases a wire name into `out` (same length).
pub fn lower_into(wire: &[u8], out: &mut [u8]) {
    // Length octets are <= 63, so they are never in 'A'..='Z' (65..=90).
    for (o, b) in out.iter_mut().zip(wire) {
        *o = b.to_ascii_lowercase();
    }
}

/// A lowercased owned copy.
pub fn lower(wire: &[u8]) -> Box<[u8]> {
    wire.to_ascii_lowercase().into_boxed_slice()
}

/// Presentation form (`www.example.com.`) for logs and errors.
pub fn display(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut i = 0usize;
    while let Some(&l) = wire.get(i) {
        if l == 0 {
            break;
        }
        let end = (i + 1 + l as usize).min(wire.len());
        for &c in &wire[i + 1..end] {
            match c {
                b'.' | b'\\' => {
                    s.push('\\');
                    s.push(c as char);
                }
                0x21..=0x7e => s.push(c as char),
                _ => s.push_str(&format!("\\{c:03}")),
            }
        }
        s.push('.');
        i = end;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Is `name` equal to or below `apex` (both lowercase wire)?
pub fn is_at_or_below(name: &[u8], apex: &[u8]) -> bool {
    if name.len() < apex.len() || !name.ends_with(apex) {
        return false;
    }
    // the suffix must start on a label boundary
    let cut = name.len() - apex.len();
    let mut i = 0usize;
    while i < cut {
        i += 1 + name[i] as usize;
    }
    i == cut
}

#[cfg(test)]
mod tests {
    use super::*;

    const WWW: &[u8] = b"\x03www\x07Example\x03com\x00";

    #[test]
    fn labels_and_suffixes() {
        let l = Labels::of(WWW);
        assert_eq!(l.len(), 3);
        assert_eq!(&WWW[l.suffix_at(1, WWW.len())..], b"\x03com\x00");
        assert_eq!(&WWW[l.suffix_at(3, WWW.len())..], WWW);
        assert_eq!(&WWW[l.suffix_at(0, WWW.len())..], b"\x00");
    }

    #[test]
    fn wire_len_rejects_bad_names() {
        assert_eq!(wire_len(WWW), Some(WWW.len()));
        assert_eq!(wire_len(b"\x03ww"), None);
        assert_eq!(wire_len(b"\xc0\x0c"), None);
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(wire_len(&long), None);
    }

    #[test]
    fn below_is_label_aligned() {
        assert!(is_at_or_below(
            b"\x03www\x07example\x03com\x00",
            b"\x07example\x03com\x00"
        ));
        assert!(!is_at_or_below(b"\x0axxexample\x03com\x00", b"\x07example\x03com\x00"));
        assert!(is_at_or_below(b"\x03com\x00", b"\x00"));
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display(b"\x03a.b\x03com\x00"), "a\\.b.com.");
        assert_eq!(display(b"\x00"), ".");
    }
}
