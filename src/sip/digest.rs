//! Digest credentials from Authorization / Proxy-Authorization (RFC 3261 22.4, RFC 7616).
//!
//! `Digest username="bob", realm="example.com", nonce="...", uri="sip:...",
//! response="...", algorithm=MD5, cnonce="...", qop=auth, nc=00000001, opaque="..."`.
//! Quoted values are kept raw as [`QStr`] (quotes stripped, `\` escapes kept) so parsing
//! never allocates; the auth layer compares them with [`QStr::eq_str`] or unescapes them
//! into its own buffer with [`QStr::unescape_into`].

use super::scan::{is_token, quoted_end, trim, Split};
use super::ParseError;

/// The content of a quoted string (or of a bare token) with `\` escapes kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QStr<'b> {
    raw: &'b str,
}

impl<'b> QStr<'b> {
    /// Wraps raw quoted-string content (without the quotes).
    pub fn from_raw(raw: &'b str) -> QStr<'b> {
        QStr { raw }
    }

    /// The raw content, escapes kept.
    pub fn raw(&self) -> &'b str {
        self.raw
    }

    /// The value itself when it contains no escapes (the common case).
    pub fn as_str(&self) -> Option<&'b str> {
        (!self.raw.contains('\\')).then_some(self.raw)
    }

    /// Unescaped bytes, one at a time.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + 'b {
        let mut it = self.raw.bytes();
        std::iter::from_fn(move || match it.next()? {
            b'\\' => it.next(),
            b => Some(b),
        })
    }

    /// Compares the unescaped value with `s`, without allocating.
    pub fn eq_str(&self, s: &str) -> bool {
        self.bytes().eq(s.bytes())
    }

    /// Writes the unescaped value into `out`; [`ParseError::BufferTooSmall`] when it does
    /// not fit.
    pub fn unescape_into<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, ParseError> {
        let mut n = 0;
        for b in self.bytes() {
            *out.get_mut(n).ok_or(ParseError::BufferTooSmall)? = b;
            n += 1;
        }
        // Removing ASCII backslashes from valid UTF-8 keeps it valid UTF-8.
        std::str::from_utf8(out.get(..n).unwrap_or(&[])).map_err(|_| ParseError::BadDigest)
    }
}

/// Parsed Digest credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestCredentials<'b> {
    /// `username`
    pub username: QStr<'b>,
    /// `realm`
    pub realm: QStr<'b>,
    /// `nonce`
    pub nonce: QStr<'b>,
    /// `uri` (digest-uri)
    pub uri: QStr<'b>,
    /// `response`
    pub response: QStr<'b>,
    /// `algorithm` (quotes stripped if a client quoted it)
    pub algorithm: Option<&'b str>,
    /// `cnonce`
    pub cnonce: Option<QStr<'b>>,
    /// `opaque`
    pub opaque: Option<QStr<'b>>,
    /// `qop` (quotes stripped if a client quoted it)
    pub qop: Option<&'b str>,
    /// `nc`
    pub nc: Option<&'b str>,
    /// `userhash` (RFC 7616), true when `userhash=true`.
    pub userhash: bool,
}

/// Parses an Authorization / Proxy-Authorization value. Schemes other than Digest give
/// [`ParseError::UnsupportedAuthScheme`]; malformed, duplicate or missing required
/// parameters give [`ParseError::BadDigest`]. Unknown parameters are ignored.
pub fn parse_digest(value: &[u8]) -> Result<DigestCredentials<'_>, ParseError> {
    let v = trim(value);
    let sp = v
        .iter()
        .position(|&b| super::scan::is_lws(b))
        .unwrap_or(v.len());
    let scheme = v.get(..sp).unwrap_or(&[]);
    if !scheme.eq_ignore_ascii_case(b"Digest") {
        return Err(if super::scan::is_token_str(scheme) {
            ParseError::UnsupportedAuthScheme
        } else {
            ParseError::BadDigest
        });
    }
    let mut f = Fields::default();
    for item in Split::new(v.get(sp..).unwrap_or(&[]), b',') {
        let (name, val) = split_param(item)?;
        let slot = match key(name) {
            Some(Key::Username) => &mut f.username,
            Some(Key::Realm) => &mut f.realm,
            Some(Key::Nonce) => &mut f.nonce,
            Some(Key::Uri) => &mut f.uri,
            Some(Key::Response) => &mut f.response,
            Some(Key::Algorithm) => &mut f.algorithm,
            Some(Key::Cnonce) => &mut f.cnonce,
            Some(Key::Opaque) => &mut f.opaque,
            Some(Key::Qop) => &mut f.qop,
            Some(Key::Nc) => &mut f.nc,
            Some(Key::Userhash) => &mut f.userhash,
            None => continue,
        };
        if slot.replace(val).is_some() {
            return Err(ParseError::BadDigest);
        }
    }
    Ok(DigestCredentials {
        username: f.username.ok_or(ParseError::BadDigest)?,
        realm: f.realm.ok_or(ParseError::BadDigest)?,
        nonce: f.nonce.ok_or(ParseError::BadDigest)?,
        uri: f.uri.ok_or(ParseError::BadDigest)?,
        response: f.response.ok_or(ParseError::BadDigest)?,
        algorithm: f.algorithm.map(|q| q.raw),
        cnonce: f.cnonce,
        opaque: f.opaque,
        qop: f.qop.map(|q| q.raw),
        nc: f.nc.map(|q| q.raw),
        userhash: f
            .userhash
            .is_some_and(|q| q.raw.eq_ignore_ascii_case("true")),
    })
}

#[derive(Default)]
struct Fields<'b> {
    username: Option<QStr<'b>>,
    realm: Option<QStr<'b>>,
    nonce: Option<QStr<'b>>,
    uri: Option<QStr<'b>>,
    response: Option<QStr<'b>>,
    algorithm: Option<QStr<'b>>,
    cnonce: Option<QStr<'b>>,
    opaque: Option<QStr<'b>>,
    qop: Option<QStr<'b>>,
    nc: Option<QStr<'b>>,
    userhash: Option<QStr<'b>>,
}

#[derive(Clone, Copy)]
enum Key {
    Username,
    Realm,
    Nonce,
    Uri,
    Response,
    Algorithm,
    Cnonce,
    Opaque,
    Qop,
    Nc,
    Userhash,
}

fn key(name: &str) -> Option<Key> {
    let first = name.as_bytes().first()?.to_ascii_lowercase();
    let (canon, k) = match (name.len(), first) {
        (8, b'u')
            if name
                .as_bytes()
                .get(4)
                .is_some_and(|b| b.eq_ignore_ascii_case(&b'h')) =>
        {
            ("userhash", Key::Userhash)
        }
        (8, b'u') => ("username", Key::Username),
        (5, b'r') => ("realm", Key::Realm),
        (5, b'n') => ("nonce", Key::Nonce),
        (3, b'u') => ("uri", Key::Uri),
        (8, b'r') => ("response", Key::Response),
        (9, b'a') => ("algorithm", Key::Algorithm),
        (6, b'c') => ("cnonce", Key::Cnonce),
        (6, b'o') => ("opaque", Key::Opaque),
        (3, b'q') => ("qop", Key::Qop),
        (2, b'n') => ("nc", Key::Nc),
        _ => return None,
    };
    canon.eq_ignore_ascii_case(name).then_some(k)
}

/// `name = value` where value is a token or a quoted string.
fn split_param(item: &[u8]) -> Result<(&str, QStr<'_>), ParseError> {
    let eq = item
        .iter()
        .position(|&b| b == b'=')
        .ok_or(ParseError::BadDigest)?;
    let name = trim(item.get(..eq).unwrap_or(&[]));
    let val = trim(item.get(eq + 1..).unwrap_or(&[]));
    if !super::scan::is_token_str(name) {
        return Err(ParseError::BadDigest);
    }
    let raw = if val.first() == Some(&b'"') {
        let end = quoted_end(val, 0).ok_or(ParseError::BadDigest)?;
        if end + 1 != val.len() {
            return Err(ParseError::BadDigest);
        }
        val.get(1..end).unwrap_or(&[])
    } else if !val.is_empty() && val.iter().all(|&b| is_token(b) || b == b'/' || b == b':') {
        val
    } else {
        return Err(ParseError::BadDigest);
    };
    let name = std::str::from_utf8(name).map_err(|_| ParseError::BadDigest)?;
    let raw = std::str::from_utf8(raw).map_err(|_| ParseError::BadDigest)?;
    Ok((name, QStr { raw }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &[u8] = b"Digest username=\"bob\", realm=\"biloxi.com\",\r\n nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", algorithm=MD5";

    #[test]
    fn full() {
        let d = parse_digest(FULL).unwrap();
        assert!(d.username.eq_str("bob"));
        assert_eq!(d.realm.as_str(), Some("biloxi.com"));
        assert_eq!(d.nonce.raw(), "dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(d.uri.raw(), "sip:bob@biloxi.com");
        assert_eq!(d.response.raw(), "6629fae49393a05397450978507c4ef1");
        assert_eq!(
            (d.qop, d.nc, d.algorithm),
            (Some("auth"), Some("00000001"), Some("MD5"))
        );
        assert_eq!(d.cnonce.map(|c| c.raw()), Some("0a4f113b"));
        assert_eq!(
            d.opaque.map(|c| c.raw()),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
    }

    #[test]
    fn escapes_and_commas() {
        let v = b"digest USERNAME=\"a\\\"b,c\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"00\", qop=\"auth\", UserHash=true";
        let d = parse_digest(v).unwrap();
        assert_eq!(d.username.raw(), "a\\\"b,c");
        assert_eq!(d.username.as_str(), None);
        assert!(d.username.eq_str("a\"b,c"));
        let mut buf = [0u8; 16];
        assert_eq!(d.username.unescape_into(&mut buf).unwrap(), "a\"b,c");
        assert_eq!(
            d.username.unescape_into(&mut [0u8; 2]),
            Err(ParseError::BufferTooSmall)
        );
        assert_eq!(d.qop, Some("auth"));
        assert!(d.userhash);
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"NoOneKnowsThisScheme opaque-data=here", ParseError::UnsupportedAuthScheme),
            (b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ParseError::UnsupportedAuthScheme),
            (b"Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"", ParseError::BadDigest),
            (b"Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"", ParseError::BadDigest),
            (b"Digest username=\"a, realm=\"r\"", ParseError::BadDigest),
            (b"Digest username", ParseError::BadDigest),
            (b"Digest username=\"a\" x, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"", ParseError::BadDigest),
            (b"", ParseError::BadDigest),
        ];
        for (v, e) in cases {
            assert_eq!(parse_digest(v), Err(*e), "{:?}", String::from_utf8_lossy(v));
        }
    }
}
