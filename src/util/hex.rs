//! Lowercase hexadecimal, written into fixed buffers (no allocation).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `v` as exactly 16 hex digits (tags, tokens, ids of fixed width).
pub fn u64_fixed(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// `v` in hex without leading zeros (at least one digit), written at the end of `buf`.
pub fn u64_short(mut v: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Hex-encode `raw` into `out`; returns the digits written (`out` holds at most
/// `out.len() / 2` bytes of input; the rest is left out).
pub fn encode_into(raw: &[u8], out: &mut [u8]) -> usize {
    let n = raw.len().min(out.len() / 2);
    for (i, b) in raw[..n].iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    2 * n
}

/// Decode hex digits (either case) into `out`; the byte count, or `None` when `hex` has an
/// odd length, a non-hex character or does not fit.
pub fn decode_into(hex: &str, out: &mut [u8]) -> Option<usize> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) || hex.len() / 2 > out.len() {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (val(pair[0])? << 4) | val(pair[1])?;
    }
    Some(hex.len() / 2)
}

/// Parse up to 16 hex digits into a `u64`.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(&u64_fixed(0xabc), b"0000000000000abc");
        let mut b = [0u8; 16];
        assert_eq!(u64_short(0, &mut b), b"0");
        assert_eq!(u64_short(0xabcdef, &mut b), b"abcdef");
        assert_eq!(u64_short(u64::MAX, &mut b), b"ffffffffffffffff");
        let mut out = [0u8; 8];
        assert_eq!(encode_into(&[0x01, 0xfe, 0x7a], &mut out), 6);
        assert_eq!(&out[..6], b"01fe7a");
        assert_eq!(encode_into(&[1, 2, 3, 4, 5], &mut out), 8);
        let mut raw = [0u8; 3];
        assert_eq!(decode_into("01FE7a", &mut raw), Some(3));
        assert_eq!(raw, [0x01, 0xfe, 0x7a]);
        assert_eq!(decode_into("0", &mut raw), None);
        assert_eq!(decode_into("zz", &mut raw), None);
        assert_eq!(decode_into("0102030405", &mut raw), None);
        assert_eq!(parse_u64("ff"), Some(255));
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("10000000000000000"), None);
    }
}
