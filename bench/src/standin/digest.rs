//! Digest authentication (RFC 2617, MD5) as Asterisk's chan_sip does it for REGISTER when
//! `--challenge` is on: a 401 with `WWW-Authenticate: Digest realm, nonce, algorithm=MD5` (no
//! qop, like chan_sip), then the Authorization of the next REGISTER is checked against the
//! user's password. Responses with `qop=auth` are accepted too.

use md5::{Digest as _, Md5};

/// The fields of a `Digest` Authorization header the check needs, borrowed from the message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub uri: &'a str,
    pub response: &'a str,
    pub qop: Option<&'a str>,
    pub nc: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub algorithm: Option<&'a str>,
}

/// Splits `Digest k=v, k="v", ...`; `None` when the scheme is not Digest or a mandatory field
/// is missing. Quoted values must not contain commas (true of what phones and sipp send).
pub fn parse_authorization(value: &str) -> Option<Credentials<'_>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut c = Credentials::default();
    for part in rest.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "username" => c.username = v,
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "uri" => c.uri = v,
            "response" => c.response = v,
            "qop" => c.qop = Some(v),
            "nc" => c.nc = Some(v),
            "cnonce" => c.cnonce = Some(v),
            "algorithm" => c.algorithm = Some(v),
            _ => {}
        }
    }
    (!c.username.is_empty() && !c.nonce.is_empty() && !c.response.is_empty()).then_some(c)
}

fn md5_hex(parts: &[&str]) -> [u8; 32] {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// The expected `response` for these credentials, `method` and `password`.
pub fn expected_response(c: &Credentials, method: &str, password: &str) -> [u8; 32] {
    let ha1 = md5_hex(&[c.username, c.realm, password]);
    let ha2 = md5_hex(&[method, c.uri]);
    let ha1 = std::str::from_utf8(&ha1).unwrap_or_default();
    let ha2 = std::str::from_utf8(&ha2).unwrap_or_default();
    match (c.qop, c.nc, c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => md5_hex(&[ha1, c.nonce, nc, cnonce, qop, ha2]),
        _ => md5_hex(&[ha1, c.nonce, ha2]),
    }
}

/// Whether the credentials prove knowledge of `password` (MD5 only).
pub fn verify(c: &Credentials, method: &str, password: &str) -> bool {
    let md5 = c.algorithm.is_none_or(|a| a.eq_ignore_ascii_case("MD5"));
    md5 && c.response.eq_ignore_ascii_case(
        std::str::from_utf8(&expected_response(c, method, password)).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 section 3.5.
        let v = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = parse_authorization(v).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert!(verify(&c, "GET", "Circle Of Life"));
        assert!(!verify(&c, "GET", "wrong"));
    }

    #[test]
    fn no_qop_and_bad_headers() {
        let mut c = Credentials {
            username: "alice",
            realm: "asterisk",
            nonce: "n",
            uri: "sip:x",
            ..Default::default()
        };
        let r = expected_response(&c, "REGISTER", "pw");
        c.response = std::str::from_utf8(&r).unwrap();
        assert!(verify(&c, "REGISTER", "pw"));
        c.algorithm = Some("SHA-256");
        assert!(!verify(&c, "REGISTER", "pw"));
        assert_eq!(parse_authorization("Basic abc"), None);
        assert_eq!(parse_authorization("Digest realm=\"x\""), None);
    }
}
