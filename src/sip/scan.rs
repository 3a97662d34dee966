//! Byte-level lexical helpers shared by every SIP parser in this module.
//!
//! Everything here works on borrowed slices and never allocates: character classes
//! from RFC 3261 section 25 as lookup tables, LWS trimming (a folded line's CR/LF counts
//! as whitespace, so folded values need no copy), quote- and angle-aware splitting of
//! comma / semicolon separated lists, and checked integer parsing for values that size
//! or bound anything.

/// RFC 3261 `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// True for an RFC 3261 `token` character.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// True when every byte is a token character and the slice is not empty.
#[inline]
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Linear whitespace, including the CR/LF of a folded header line.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Strips leading and trailing LWS.
#[inline]
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    s.get(start..end).unwrap_or(&[])
}

/// [`trim`] for `&str` (LWS is ASCII, so the cut stays on char boundaries). Byte-wise:
/// `str::trim_matches` with a char predicate decodes UTF-8 and costs several times more.
#[inline]
pub(crate) fn trim_str(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_lws(c)).map_or(start, |p| p + 1);
    s.get(start..end).unwrap_or("")
}

/// Strips leading LWS only.
#[inline]
pub(crate) fn trim_start_str(s: &str) -> &str {
    let start = s
        .as_bytes()
        .iter()
        .position(|&c| !is_lws(c))
        .unwrap_or(s.len());
    s.get(start..).unwrap_or("")
}

/// Index of the first `b` (an ASCII byte) in `s`. For the short strings of header fields a
/// plain loop beats `str::find(char)`, whose searcher set-up dominates on a few bytes.
#[inline]
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&c| c == b)
}

/// `part` (a sub-slice of `parent`'s bytes, as [`Split`] yields) as a `&str` of `parent`,
/// without validating UTF-8 again; `None` if it is not a sub-slice on char boundaries.
#[inline]
pub(crate) fn sub_str<'a>(parent: &'a str, part: &[u8]) -> Option<&'a str> {
    let off = (part.as_ptr() as usize).checked_sub(parent.as_ptr() as usize)?;
    parent.get(off..off.checked_add(part.len())?)
}

/// Parses a non-empty all-digit string into a `u64`; `None` on any other byte or overflow.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Parses a non-empty all-digit string into a `u32`; `None` on any other byte or overflow.
#[inline]
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Parses a port number (`1*DIGIT` fitting in `u16`).
#[inline]
pub(crate) fn parse_port(s: &[u8]) -> Option<u16> {
    parse_u64(s).and_then(|n| u16::try_from(n).ok())
}

/// Byte offset of `sub` inside `base`. `sub` must be a sub-slice of `base`; the result is
/// clamped to `base.len()` so a misuse can never produce an out-of-range span.
#[inline]
pub(crate) fn offset_of(base: &[u8], sub: &[u8]) -> usize {
    let b = base.as_ptr() as usize;
    let s = sub.as_ptr() as usize;
    s.saturating_sub(b).min(base.len())
}

/// Given `s[open] == b'"'`, returns the index of the closing quote, honouring
/// `\` quoted-pairs. `None` when the string is unterminated.
pub(crate) fn quoted_end(s: &[u8], open: usize) -> Option<usize> {
    let mut i = open.checked_add(1)?;
    while i < s.len() {
        match s.get(i).copied()? {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Splits a list on `sep`, ignoring separators inside quoted strings and `<...>`.
/// Each yielded item is LWS-trimmed; empty items (`a,,b`) are yielded so callers can
/// reject them. An input that is empty after trimming yields nothing.
#[derive(Debug, Clone)]
pub(crate) struct Split<'b> {
    rest: Option<&'b [u8]>,
    sep: u8,
}

impl<'b> Split<'b> {
    pub(crate) fn new(s: &'b [u8], sep: u8) -> Self {
        let t = trim(s);
        Split {
            rest: if t.is_empty() { None } else { Some(t) },
            sep,
        }
    }
}

impl<'b> Iterator for Split<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        let s = self.rest?;
        // Jump between the only bytes that matter (separator, quote, '<') with memchr3.
        let mut i = 0;
        loop {
            let Some(p) = s
                .get(i..)
                .and_then(|r| memchr::memchr3(self.sep, b'"', b'<', r))
            else {
                self.rest = None;
                return Some(trim(s));
            };
            let at = i + p;
            match s.get(at).copied() {
                Some(b'"') => match quoted_end(s, at) {
                    Some(end) => i = end + 1,
                    None => {
                        // Unterminated quote: the rest is one item; the caller rejects it.
                        self.rest = None;
                        return Some(trim(s));
                    }
                },
                Some(b'<') => match s.get(at..).and_then(|r| memchr::memchr(b'>', r)) {
                    Some(gt) => i = at + gt + 1,
                    None => {
                        self.rest = None;
                        return Some(trim(s));
                    }
                },
                _ => {
                    self.rest = Some(s.get(at + 1..).unwrap_or(&[]));
                    return Some(trim(s.get(..at).unwrap_or(&[])));
                }
            }
        }
    }
}

/// `&[u8]` → `&str` for bytes the caller has already restricted to ASCII (tokens, URI
/// characters); `None` if any byte is not ASCII. Cheaper than a full UTF-8 validation on
/// the per-header hot path.
#[inline]
pub(crate) fn ascii_str(s: &[u8]) -> Option<&str> {
    if s.is_ascii() {
        // SAFETY: every byte is < 0x80, and a sequence of ASCII bytes is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(s) })
    } else {
        None
    }
}

/// `&[u8]` → `&str` with the ASCII fast path of [`ascii_str`], else a full UTF-8 check.
#[inline]
pub(crate) fn ascii_or_utf8(s: &[u8]) -> Option<&str> {
    match ascii_str(s) {
        Some(t) => Some(t),
        None => std::str::from_utf8(s).ok(),
    }
}

/// Writes `n` in decimal without allocating.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or(&[]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_helpers_on_text() {
        assert_eq!(trim_str(" \t a b \r\n"), "a b");
        assert_eq!(trim_str("  "), "");
        assert_eq!(trim_str(" Müller "), "Müller");
        assert_eq!(trim_start_str("\t x "), "x ");
        assert_eq!(find_byte("a;b=c", b'='), Some(3));
        assert_eq!(find_byte("Müller;x", b';'), Some(7));
        assert_eq!(find_byte("abc", b';'), None);
        let parent = "name=välue;x";
        let part = &parent.as_bytes()[5..11];
        assert_eq!(sub_str(parent, part), Some("välue"));
        // Not on a char boundary, or not a part of `parent`: None.
        assert_eq!(sub_str(parent, &parent.as_bytes()[5..7]), None);
        assert_eq!(sub_str(parent, b"x"), None);
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        let cases: &[(&str, &[&str])] = &[
            ("a, b ,c", &["a", "b", "c"]),
            (
                "\"x, y\" <sip:a,b>;p=1, c",
                &["\"x, y\" <sip:a,b>;p=1", "c"],
            ),
            ("\"q\\\",\" <u>, v", &["\"q\\\",\" <u>", "v"]),
            (",,", &["", "", ""]),
            ("   ", &[]),
        ];
        for (input, want) in cases {
            let got: Vec<&[u8]> = Split::new(input.as_bytes(), b',').collect();
            let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u32(b"0068"), Some(68));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_port(b"65536"), None);
        for n in [0u64, 7, 10, 69, 4_294_967_295, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn trimming() {
        assert_eq!(trim(b" \r\n\tx y \r\n"), b"x y");
        assert_eq!(trim(b"  "), b"");
        assert_eq!(quoted_end(b"\"a\\\"b\"c", 0), Some(5));
        assert_eq!(quoted_end(b"\"abc", 0), None);
    }
}
