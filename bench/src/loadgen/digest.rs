//! Client side of SIP digest authentication (RFC 2617 / RFC 3261 §22, MD5 only): reads a
//! `WWW-Authenticate` / `Proxy-Authenticate` challenge and writes the matching
//! `Authorization` / `Proxy-Authorization` header line, with `qop=auth` when offered.

use md5::{Digest as _, Md5};
use std::io::Write as _;

/// The parameters of one `Digest` challenge, borrowed from the message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a [u8],
    pub nonce: &'a [u8],
    pub opaque: Option<&'a [u8]>,
    /// The server offered `qop="auth"` (possibly among others).
    pub qop_auth: bool,
}

/// Parses `Digest realm="..", nonce="..", ...`. `None` when the scheme is not Digest, the
/// algorithm is not MD5, or realm/nonce are missing. Quoted values may contain commas.
pub fn parse_challenge(v: &[u8]) -> Option<Challenge<'_>> {
    let v = v
        .strip_prefix(b"Digest")
        .or_else(|| v.strip_prefix(b"digest"))?;
    let mut c = Challenge::default();
    let mut rest = v;
    loop {
        while let [b' ' | b'\t' | b',', r @ ..] = rest {
            rest = r;
        }
        if rest.is_empty() {
            break;
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let key = rest.get(..eq)?;
        rest = rest.get(eq + 1..)?;
        let value;
        if let [b'"', r @ ..] = rest {
            let close = r.iter().position(|&b| b == b'"')?;
            value = r.get(..close)?;
            rest = r.get(close + 1..)?;
        } else {
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            value = rest.get(..end)?;
            rest = rest.get(end..)?;
        }
        let key = key.trim_ascii();
        let value = value.trim_ascii();
        if key.eq_ignore_ascii_case(b"realm") {
            c.realm = value;
        } else if key.eq_ignore_ascii_case(b"nonce") {
            c.nonce = value;
        } else if key.eq_ignore_ascii_case(b"opaque") {
            c.opaque = Some(value);
        } else if key.eq_ignore_ascii_case(b"qop") {
            c.qop_auth = value
                .split(|&b| b == b',')
                .any(|q| q.trim_ascii().eq_ignore_ascii_case(b"auth"));
        } else if key.eq_ignore_ascii_case(b"algorithm") && !value.eq_ignore_ascii_case(b"MD5") {
            return None;
        }
    }
    (!c.realm.is_empty() && !c.nonce.is_empty()).then_some(c)
}

fn hex(digest: &[u8]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in digest.iter().take(16).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

/// The `response` value: MD5(HA1:nonce[:nc:cnonce:qop]:HA2), HA1 = MD5(user:realm:password),
/// HA2 = MD5(method:uri). `qop` = `Some((nc, cnonce))` for `qop=auth`.
pub fn response(
    user: &[u8],
    realm: &[u8],
    password: &[u8],
    method: &[u8],
    uri: &[u8],
    nonce: &[u8],
    qop: Option<(&[u8], &[u8])>,
) -> [u8; 32] {
    let ha1 = md5_hex(&[user, realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    match qop {
        Some((nc, cnonce)) => md5_hex(&[&ha1, nonce, nc, cnonce, b"auth", &ha2]),
        None => md5_hex(&[&ha1, nonce, &ha2]),
    }
}

/// Appends `Name: Digest username=.., realm, nonce, uri, response, algorithm=MD5[, qop=auth,
/// nc=00000001, cnonce][, opaque]\r\n` answering `ch` (`proxy` picks Proxy-Authorization).
#[allow(clippy::too_many_arguments)]
pub fn write_authorization(
    out: &mut Vec<u8>,
    proxy: bool,
    ch: &Challenge<'_>,
    user: &[u8],
    password: &[u8],
    method: &[u8],
    uri: &[u8],
    cnonce: u64,
) {
    let mut cn = [0u8; 16];
    let cn_len = {
        let mut w = &mut cn[..];
        let _ = write!(w, "{cnonce:x}");
        16 - w.len()
    };
    let cn = cn.get(..cn_len).unwrap_or_default();
    let qop = ch.qop_auth.then_some((&b"00000001"[..], cn));
    let resp = response(user, ch.realm, password, method, uri, ch.nonce, qop);
    out.extend_from_slice(if proxy {
        b"Proxy-Authorization: Digest username=\""
    } else {
        b"Authorization: Digest username=\""
    });
    for part in [user, b"\", realm=\"", ch.realm, b"\", nonce=\"", ch.nonce] {
        out.extend_from_slice(part);
    }
    for part in [
        &b"\", uri=\""[..],
        uri,
        b"\", response=\"",
        &resp,
        b"\", algorithm=MD5",
    ] {
        out.extend_from_slice(part);
    }
    if qop.is_some() {
        out.extend_from_slice(b", qop=auth, nc=00000001, cnonce=\"");
        out.extend_from_slice(cn);
        out.push(b'"');
    }
    if let Some(o) = ch.opaque {
        out.extend_from_slice(b", opaque=\"");
        out.extend_from_slice(o);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5: Mufasa / "Circle Of Life", GET /dir/index.html, qop=auth.
        let r = response(
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
            b"GET",
            b"/dir/index.html",
            b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some((b"00000001", b"0a4f113b")),
        );
        assert_eq!(&r, b"6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc2069_without_qop() {
        // HA1/HA2 by hand: md5("a:r:p") etc. Checked against the stand-in's verifier formula.
        let r = response(b"a", b"r", b"p", b"REGISTER", b"sip:d", b"n", None);
        let ha1 = md5_hex(&[b"a", b"r", b"p"]);
        let ha2 = md5_hex(&[b"REGISTER", b"sip:d"]);
        assert_eq!(r, md5_hex(&[&ha1, b"n", &ha2]));
    }

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            b"Digest realm=\"sipfront.test\", nonce=\"ab,c\", qop=\"auth,auth-int\", algorithm=MD5, opaque=\"o\"",
        )
        .expect("md5 challenge");
        assert_eq!(c.realm, b"sipfront.test");
        assert_eq!(c.nonce, b"ab,c");
        assert!(c.qop_auth);
        assert_eq!(c.opaque, Some(&b"o"[..]));
        assert_eq!(
            parse_challenge(b"Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256"),
            None
        );
        assert_eq!(parse_challenge(b"Basic realm=\"r\""), None);
        assert_eq!(parse_challenge(b"Digest realm=\"r\""), None);
    }

    #[test]
    fn writes_the_header() {
        let c = parse_challenge(b"Digest realm=\"r\", nonce=\"n\", qop=\"auth\"").expect("ok");
        let mut out = Vec::new();
        write_authorization(
            &mut out,
            true,
            &c,
            b"1001",
            b"pw",
            b"INVITE",
            b"sip:600@d",
            0xab,
        );
        let s = String::from_utf8(out).expect("ascii");
        assert!(s.starts_with("Proxy-Authorization: Digest username=\"1001\", realm=\"r\""));
        let want = response(
            b"1001",
            b"r",
            b"pw",
            b"INVITE",
            b"sip:600@d",
            b"n",
            Some((b"00000001", b"ab")),
        );
        assert!(s.contains(&format!(
            "response=\"{}\"",
            std::str::from_utf8(&want).expect("hex")
        )));
        assert!(s.ends_with("qop=auth, nc=00000001, cnonce=\"ab\"\r\n"));
    }
}
