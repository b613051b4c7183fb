//! Zone-file text rewrites for what NLnet Labs' `domain` 0.12.3 scanner
//! does not read but BIND and Knot do, applied before scanning. Each keeps
//! every line where it was (no newline is added or removed), so error
//! messages name the operator's own line numbers.
//!
//! - TTLs with units (`1h`, `2d`, `1w2d3h4m5s`, any case) in `$TTL`, in a
//!   record's TTL field and in the SOA timers become seconds.
//! - Text-form SPF records become RFC 3597 generic records.

/// The text to hand to `domain`'s scanner, or `None` when no rewrite is
/// needed (also used by `anyedge-dnscompare` to read zone files alike).
pub fn for_domain(text: &[u8]) -> Option<Vec<u8>> {
    let ttl = ttl_units_as_seconds(text);
    let t = ttl.as_deref().unwrap_or(text);
    spf_as_generic(t).or(ttl)
}

/// A BIND-style TTL: plain seconds, or one or more `<number><unit>` with
/// unit s, m, h, d or w (any case). `None` when `t` is not one, or overflows
/// 32 bits.
pub(crate) fn parse_ttl(t: &[u8]) -> Option<u32> {
    if t.is_empty() {
        return None;
    }
    if t.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(t).ok()?.parse().ok();
    }
    let mut total: u32 = 0;
    let mut n: Option<u32> = None;
    for &c in t {
        if c.is_ascii_digit() {
            n = Some(n.unwrap_or(0).checked_mul(10)?.checked_add(u32::from(c - b'0'))?);
            continue;
        }
        let unit: u32 = match c.to_ascii_lowercase() {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.take()?.checked_mul(unit)?)?;
    }
    // a bare number after units ("1h30") is not BIND syntax
    if n.is_some() {
        return None;
    }
    Some(total)
}

/// True for the tokens of a record that may stand between owner and type.
fn is_class(t: &[u8]) -> bool {
    [&b"IN"[..], b"CH", b"CS", b"HS", b"ANY", b"NONE"]
        .iter()
        .any(|c| t.eq_ignore_ascii_case(c))
        || (t.len() > 5 && t[..5].eq_ignore_ascii_case(b"CLASS") && t[5..].iter().all(u8::is_ascii_digit))
}

fn is_unit(c: u8) -> bool {
    matches!(c | 0x20, b's' | b'm' | b'h' | b'd' | b'w')
}

/// Cheap test before tokenizing: is there a whitespace-delimited token of
/// digits and unit letters only, starting with a digit, anywhere? (Most
/// zones have none; `2001:db8::1d` or `host1m.example.` are not.)
fn has_unit_token(text: &[u8]) -> bool {
    let part = |c: &u8| c.is_ascii_digit() || is_unit(*c);
    let mut i = 1;
    while i < text.len() {
        // the second byte of a digit-unit pair
        if is_unit(text[i]) && text[i - 1].is_ascii_digit() {
            let start = text[..i].iter().rposition(|c| !part(c)).map_or(0, |p| p + 1);
            let end = text[i..].iter().position(|c| !part(c)).map_or(text.len(), |p| i + p);
            let before = start == 0 || matches!(text[start - 1], b' ' | b'\t' | b'\n' | b'\r' | b'(');
            let after = end == text.len() || matches!(text[end], b' ' | b'\t' | b'\n' | b'\r' | b';' | b')');
            if before && after && text[start].is_ascii_digit() {
                return true;
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    false
}

/// Rewrites TTLs with units to seconds where a TTL stands: after `$TTL`,
/// between a record's owner and its type, and in the SOA's refresh, retry,
/// expire and minimum. Names and other rdata are never touched, so a host
/// called `1h` stays one. `None` when nothing has units.
pub(crate) fn ttl_units_as_seconds(text: &[u8]) -> Option<Vec<u8>> {
    if !has_unit_token(text) {
        return None;
    }
    let mut edits: Vec<(usize, usize, u32)> = Vec::new();
    let mut entry: Vec<(usize, usize)> = Vec::new();
    let mut has_owner = false;
    let mut directive = false;
    let mut depth = 0usize;
    let mut i = 0usize;
    let mut line_start = true;
    let flush =
        |entry: &mut Vec<(usize, usize)>, has_owner: bool, directive: bool, edits: &mut Vec<(usize, usize, u32)>| {
            ttl_edits(text, entry, has_owner, directive, edits);
            entry.clear();
        };
    while i < text.len() {
        let c = text[i];
        if line_start && depth == 0 {
            flush(&mut entry, has_owner, directive, &mut edits);
            has_owner = !c.is_ascii_whitespace() && c != b';';
            directive = c == b'$';
        }
        line_start = false;
        match c {
            b'\n' => {
                line_start = true;
                i += 1;
            }
            b';' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    // a newline inside quotes still ends the line for us
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(text.len());
                entry.push((start, i));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < text.len() {
                    let d = text[i];
                    if d.is_ascii_whitespace() || matches!(d, b';' | b'(' | b')' | b'"') {
                        break;
                    }
                    i += if d == b'\\' { 2 } else { 1 };
                }
                i = i.min(text.len());
                entry.push((start, i));
            }
        }
    }
    flush(&mut entry, has_owner, directive, &mut edits);
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0usize;
    for (s, e, v) in edits {
        out.extend_from_slice(&text[at..s]);
        out.extend_from_slice(v.to_string().as_bytes());
        at = e;
    }
    out.extend_from_slice(&text[at..]);
    Some(out)
}

/// The TTL edits of one entry (its tokens as byte ranges).
fn ttl_edits(
    text: &[u8],
    tokens: &[(usize, usize)],
    has_owner: bool,
    directive: bool,
    edits: &mut Vec<(usize, usize, u32)>,
) {
    let tok = |k: usize| tokens.get(k).map(|&(s, e)| &text[s..e]);
    // Rewrites token `k` if it is a TTL with units; whether it is a TTL.
    let mut edit = |k: usize| {
        let Some(&(s, e)) = tokens.get(k) else { return false };
        let Some(v) = parse_ttl(&text[s..e]) else { return false };
        if !text[s..e].iter().all(u8::is_ascii_digit) {
            edits.push((s, e, v));
        }
        true
    };
    if directive {
        if tok(0).is_some_and(|t| t.eq_ignore_ascii_case(b"$TTL")) {
            edit(1);
        }
        return;
    }
    let mut k = usize::from(has_owner);
    while let Some(t) = tok(k) {
        if !edit(k) && !is_class(t) {
            break;
        }
        k += 1;
    }
    // k: the type
    if tok(k).is_some_and(|t| t.eq_ignore_ascii_case(b"SOA")) {
        // mname rname serial refresh retry expire minimum
        for f in 4..=7 {
            edit(k + f);
        }
    }
}

/// The `$TTL` directive lines of `text`, each with the offset just past
/// it (plus `base`), newline-terminated.
pub(crate) fn ttl_directives(text: &[u8], base: usize) -> Vec<(usize, Vec<u8>)> {
    let mut v = Vec::new();
    let mut off = base;
    for line in text.split_inclusive(|&c| c == b'\n') {
        off += line.len();
        if line.len() > 5 && line[..4].eq_ignore_ascii_case(b"$TTL") && line[4].is_ascii_whitespace() {
            let mut l = line.to_vec();
            if l.last() != Some(&b'\n') {
                l.push(b'\n');
            }
            v.push((off, l));
        }
    }
    v
}

/// `domain` 0.12.3 has no SPF (type 99, RFC 7208 4.1 / RFC 4408) text
/// parser, but BIND-era exports still carry `SPF "v=spf1 ..."` lines. Such
/// a record's text is rewritten to the generic RFC 3597 form (`TYPE99 \#
/// len hex`; SPF rdata is TXT's), keeping every line where it was so error
/// lines stay right. Only single-line SPF records are rewritten; `None`
/// when nothing needed it.
pub(crate) fn spf_as_generic(text: &[u8]) -> Option<Vec<u8>> {
    if !text.windows(3).any(|w| w.eq_ignore_ascii_case(b"spf")) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut changed = false;
    for line in text.split_inclusive(|&c| c == b'\n') {
        match spf_line(line) {
            Some(l) => {
                out.extend_from_slice(&l);
                changed = true;
            }
            None => out.extend_from_slice(line),
        }
    }
    changed.then_some(out)
}

fn spf_line(line: &[u8]) -> Option<Vec<u8>> {
    // tokens outside quotes up to a comment: [owner] [ttl] [class] type rdata
    let starts_with_owner = line.first().is_some_and(|c| !c.is_ascii_whitespace() && *c != b';');
    let mut i = 0usize;
    let mut tok = 0usize;
    loop {
        while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
            i += 1;
        }
        if i >= line.len() || matches!(line[i], b';' | b'\n' | b'\r' | b'(' | b'"') {
            return None;
        }
        let start = i;
        while i < line.len() && !line[i].is_ascii_whitespace() {
            i += 1;
        }
        let t = &line[start..i];
        tok += 1;
        if tok == 1 && starts_with_owner {
            continue;
        }
        if t[0].is_ascii_digit()
            || t.eq_ignore_ascii_case(b"IN")
            || t.eq_ignore_ascii_case(b"CH")
            || t.eq_ignore_ascii_case(b"HS")
        {
            continue;
        }
        if !t.eq_ignore_ascii_case(b"SPF") {
            return None;
        }
        let rdata = char_strings(&line[i..])?;
        let mut l = line[..start].to_vec();
        l.extend_from_slice(format!("TYPE99 \\# {}", rdata.len()).as_bytes());
        if !rdata.is_empty() {
            l.push(b' ');
            for b in &rdata {
                l.extend_from_slice(format!("{b:02x}").as_bytes());
            }
        }
        l.push(b'\n');
        return Some(l);
    }
}

/// Character-strings (quoted or bare, with `\X` and `\DDD` escapes) up to
/// the end of the line or a comment, as wire data.
fn char_strings(rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    loop {
        while i < rest.len() && rest[i].is_ascii_whitespace() && rest[i] != b'\n' && rest[i] != b'\r' {
            i += 1;
        }
        if i >= rest.len() || matches!(rest[i], b';' | b'\n' | b'\r') {
            return (!out.is_empty()).then_some(out);
        }
        let token_start = i;
        if rest[i] == b'(' || rest[i] == b')' {
            return None;
        }
        let quoted = rest[i] == b'"';
        if quoted {
            i += 1;
        }
        let mut s = Vec::new();
        while i < rest.len() {
            let c = rest[i];
            if quoted && c == b'"' {
                i += 1;
                break;
            }
            if !quoted && (c.is_ascii_whitespace() || c == b';') {
                break;
            }
            if c == b'\n' {
                return None; // unterminated quote
            }
            if c == b'\\' {
                let d = rest.get(i + 1..i + 4).filter(|d| d.iter().all(u8::is_ascii_digit));
                match d {
                    Some(d) => {
                        let v: u16 = std::str::from_utf8(d).ok()?.parse().ok()?;
                        s.push(u8::try_from(v).ok()?);
                        i += 4;
                    }
                    None => {
                        s.push(*rest.get(i + 1)?);
                        i += 2;
                    }
                }
                continue;
            }
            s.push(c);
            i += 1;
        }
        if s.len() > 255 || i == token_start {
            // too long, or nothing consumed (never loop on the same byte)
            return None;
        }
        out.push(s.len() as u8);
        out.extend_from_slice(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(t: &str) -> String {
        ttl_units_as_seconds(t.as_bytes()).map_or_else(|| t.to_string(), |v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn bind_ttls() {
        assert_eq!(parse_ttl(b"3600"), Some(3600));
        assert_eq!(parse_ttl(b"1h"), Some(3600));
        assert_eq!(parse_ttl(b"1H30M"), Some(5400));
        assert_eq!(
            parse_ttl(b"1w2d3h4m5s"),
            Some(604_800 + 2 * 86_400 + 3 * 3600 + 4 * 60 + 5)
        );
        assert_eq!(parse_ttl(b"1h30"), None);
        assert_eq!(parse_ttl(b"h"), None);
        assert_eq!(parse_ttl(b"1x"), None);
        assert_eq!(parse_ttl(b""), None);
        assert_eq!(parse_ttl(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_ttl(b"4294967296"), None);
        assert_eq!(parse_ttl(b"10000w"), None, "overflow");
    }

    #[test]
    fn only_ttl_positions_are_rewritten() {
        assert_eq!(rw("$TTL 1d ; day\n"), "$TTL 86400 ; day\n");
        assert_eq!(rw("www 5m IN A 192.0.2.1\n"), "www 300 IN A 192.0.2.1\n");
        assert_eq!(rw("www IN 1h30m A 192.0.2.1\n"), "www IN 5400 A 192.0.2.1\n");
        assert_eq!(rw("    1h A 192.0.2.1\n"), "    3600 A 192.0.2.1\n");
        // names, rdata, quoted text and comments that look like TTLs stay
        assert_eq!(rw("1h IN CNAME 2d\n"), "1h IN CNAME 2d\n");
        assert_eq!(rw("1h 1h IN CNAME 2d\n"), "1h 3600 IN CNAME 2d\n");
        assert_eq!(rw("t TXT \"1h\" 2d ; 3h\n"), "t TXT \"1h\" 2d ; 3h\n");
        assert_eq!(rw("www A 192.0.2.1 ; 1h\n"), "www A 192.0.2.1 ; 1h\n");
        assert!(ttl_units_as_seconds(b"www A 192.0.2.1\n").is_none());
        assert!(!has_unit_token(
            b"h AAAA 2001:db8::1d\nhost1m.example. A 192.0.2.1\nx TXT a1h\n"
        ));
        assert!(has_unit_token(b"$TTL 1h"));
        assert!(has_unit_token(b"(\n 4h ; r\n"));
    }

    #[test]
    fn soa_timers_across_lines_keep_their_lines() {
        let t = "@ 1h IN SOA ns1 host.example. (\n  2024042100 ; serial 1h\n  4h ; refresh\n  1h\n  14d\n  10M )\nwww 1D A 192.0.2.1\n";
        let out = rw(t);
        assert_eq!(
            out,
            "@ 3600 IN SOA ns1 host.example. (\n  2024042100 ; serial 1h\n  14400 ; refresh\n  3600\n  1209600\n  600 )\nwww 86400 A 192.0.2.1\n"
        );
        assert_eq!(out.lines().count(), t.lines().count());
    }

    #[test]
    fn does_not_loop_or_panic_on_odd_text() {
        for t in [
            &b"\\"[..],
            b"\"",
            b"(((",
            b")))1h",
            b"$TTL",
            b"$TTL 1h",
            b"a 1h \\",
            b"\"1h\\",
        ] {
            let _ = ttl_units_as_seconds(t);
        }
    }
}
