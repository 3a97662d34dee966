//! Digest hash primitives (RFC 2617 §3.2.2, RFC 7616 §3.4): HA1, HA2 and the response value
//! for MD5, SHA-256 and SHA-512-256, computed on the stack.
//!
//! Every function returns a [`Hex`]: a fixed-size lowercase hex string held inline (at most 64
//! characters), so verifying a request allocates nothing. Inputs are fed to the hasher piece by
//! piece (`user`, `":"`, `realm`, ...) rather than concatenated into a temporary string.

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

use super::Algorithm;

/// A lowercase hex digest held inline: 32 characters (MD5) or 64 (SHA-256, SHA-512-256).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex {
    buf: [u8; 64],
    len: u8,
}

impl Hex {
    /// Hex-encodes raw digest bytes (at most 32 bytes; longer input is truncated to 32).
    pub fn from_bytes(raw: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        let raw = raw.get(..32).unwrap_or(raw);
        for (i, b) in raw.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
        }
        Hex {
            buf,
            len: (raw.len() * 2) as u8,
        }
    }

    /// The hex characters.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The hex characters as text (always ASCII).
    pub fn as_str(&self) -> &str {
        // The buffer only ever holds ASCII hex digits.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Debug for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex values are HA1s and responses: secret-equivalent, never printed.
        f.write_str("Hex(..)")
    }
}

/// Decodes a hex string (either case) into `out`; returns the decoded length, or `None` when
/// the text is not hex or does not fit.
pub fn decode_hex(text: &str, out: &mut [u8]) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() / 2 > out.len() {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes.len() / 2)
}

/// An incremental hasher for one of the digest algorithms.
pub enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512_256(Sha512_256),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512_256 => Hasher::Sha512_256(Sha512_256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512_256(h) => h.update(data),
        }
        self
    }

    /// Feeds the content of a quoted-string with its backslash escapes removed
    /// (RFC 3261 §25.1 quoted-pair), without a temporary buffer.
    pub fn update_unescaped(&mut self, raw: &[u8]) -> &mut Self {
        let mut start = 0;
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' {
                self.update(&raw[start..i]);
                // The escaped character itself is kept.
                start = i + 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        if start < raw.len() {
            self.update(&raw[start..]);
        }
        self
    }

    /// Finishes into raw digest bytes: 16 (MD5) or 32 bytes, left-aligned in the array.
    pub fn finish_raw(self) -> ([u8; 32], usize) {
        let mut out = [0u8; 32];
        match self {
            Hasher::Md5(h) => {
                out[..16].copy_from_slice(&h.finalize());
                (out, 16)
            }
            Hasher::Sha256(h) => {
                out.copy_from_slice(&h.finalize());
                (out, 32)
            }
            Hasher::Sha512_256(h) => {
                out.copy_from_slice(&h.finalize());
                (out, 32)
            }
        }
    }

    pub fn finish_hex(self) -> Hex {
        let (raw, len) = self.finish_raw();
        Hex::from_bytes(&raw[..len])
    }
}

/// HA1 = H(username ":" realm ":" password), as raw bytes (16 or 32 of the array).
pub fn ha1_raw(alg: Algorithm, user: &str, realm: &str, password: &str) -> ([u8; 32], usize) {
    let mut h = Hasher::new(alg);
    h.update(user.as_bytes())
        .update(b":")
        .update(realm.as_bytes())
        .update(b":")
        .update(password.as_bytes());
    h.finish_raw()
}

/// HA1 = H(username ":" realm ":" password), hex.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> Hex {
    let (raw, len) = ha1_raw(alg, user, realm, password);
    Hex::from_bytes(&raw[..len])
}

/// HA2 = H(method ":" digest-uri) for qop absent or `auth`.
pub fn ha2(alg: Algorithm, method: &str, uri: &str) -> Hex {
    let mut h = Hasher::new(alg);
    h.update(method.as_bytes())
        .update(b":")
        .update(uri.as_bytes());
    h.finish_hex()
}

/// The `qop=auth` fields of a response computation.
#[derive(Debug, Clone, Copy)]
pub struct QopAuth<'a> {
    pub nc: &'a str,
    pub cnonce: &'a str,
}

/// response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2) with `qop=auth`, or
/// H(HA1 ":" nonce ":" HA2) without qop (RFC 2069 compatibility).
pub fn response(alg: Algorithm, ha1: &Hex, nonce: &str, qop: Option<QopAuth>, ha2: &Hex) -> Hex {
    let mut h = Hasher::new(alg);
    h.update(ha1.as_bytes())
        .update(b":")
        .update(nonce.as_bytes())
        .update(b":");
    if let Some(q) = qop {
        h.update(q.nc.as_bytes())
            .update(b":")
            .update(q.cnonce.as_bytes())
            .update(b":auth:");
    }
    h.update(ha2.as_bytes());
    h.finish_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_section_3_5() {
        let a1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let a2 = ha2(Algorithm::Md5, "GET", "/dir/index.html");
        let q = QopAuth {
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        let r = response(
            Algorithm::Md5,
            &a1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(q),
            &a2,
        );
        assert_eq!(r.as_str(), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_section_3_9_1() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let q = QopAuth {
            nc: "00000001",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        };
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let a1 = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
            let a2 = ha2(alg, "GET", "/dir/index.html");
            assert_eq!(response(alg, &a1, nonce, Some(q), &a2).as_str(), want);
        }
    }

    #[test]
    fn rfc2069_compatible_no_qop() {
        // RFC 2069 example as corrected by its erratum.
        let a1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let a2 = ha2(Algorithm::Md5, "GET", "/dir/index.html");
        let r = response(
            Algorithm::Md5,
            &a1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            None,
            &a2,
        );
        assert_eq!(r.as_str(), "670fd8c2df070c60b045671b8b24ff02");
    }

    #[test]
    fn unescaped_feed_matches_plain() {
        let mut a = Hasher::new(Algorithm::Md5);
        a.update_unescaped(br#"a\"b\\c"#);
        let mut b = Hasher::new(Algorithm::Md5);
        b.update(br#"a"b\c"#);
        assert_eq!(a.finish_hex(), b.finish_hex());
    }

    #[test]
    fn hex_roundtrip() {
        let mut out = [0u8; 32];
        assert_eq!(decode_hex("0aFf", &mut out), Some(2));
        assert_eq!(&out[..2], &[0x0a, 0xff]);
        assert_eq!(decode_hex("0g", &mut out), None);
        assert_eq!(decode_hex("abc", &mut out), None);
        assert_eq!(Hex::from_bytes(&[0x0a, 0xff]).as_str(), "0aff");
    }
}
