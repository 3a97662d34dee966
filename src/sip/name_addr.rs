//! name-addr / addr-spec values (From, To, Contact, Route, Record-Route, Path) and CSeq.
//!
//! `"Display" <sip:uri>;params`, `Display Tokens <uri>;params` or a bare `sip:uri;params`
//! (where the parameters belong to the header, not the URI). The URI is only checked for
//! shape here; [`NameAddr::uri`] parses it fully on demand.

use super::method::Method;
use super::params::Params;
use super::scan::{find_byte, is_lws, is_token, parse_u32, quoted_end, trim_start_str, trim_str};
use super::uri::Uri;
use super::{ParseError, Span, MAX_URI_LEN};

/// A name-addr or addr-spec with header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'b> {
    /// Display name: the content of a quoted string (escapes kept), or the token words.
    pub display: Option<&'b str>,
    /// The URI text (without angle brackets).
    pub uri: &'b str,
    /// Header parameters (`;tag=`, `;expires=`, `;q=`, ...).
    pub params: Params<'b>,
    /// This value's bytes: relative to the parsed string for [`NameAddr::parse`], absolute
    /// in the message buffer when obtained from a `Message`.
    pub span: Span,
}

impl<'b> NameAddr<'b> {
    /// Parses one name-addr or addr-spec (no list commas).
    pub fn parse(s: &'b str) -> Result<NameAddr<'b>, ParseError> {
        let lead = s.len() - trim_start_str(s).len();
        let t = trim_str(s);
        let span = Span::new(lead, lead + t.len());
        let (display, uri, params) = if t.starts_with('"') {
            let end = quoted_end(t.as_bytes(), 0).ok_or(ParseError::BadNameAddr)?;
            let display = t.get(1..end).unwrap_or("");
            let (uri, params) = angle(trim_start_str(t.get(end + 1..).unwrap_or("")))?;
            (Some(display), uri, params)
        } else if let Some(lt) = find_byte(t, b'<') {
            let d = trim_str(t.get(..lt).unwrap_or(""));
            if !d.bytes().all(|b| is_token(b) || is_lws(b)) {
                return Err(ParseError::BadNameAddr);
            }
            let (uri, params) = angle(t.get(lt..).unwrap_or(""))?;
            ((!d.is_empty()).then_some(d), uri, params)
        } else {
            let sc = find_byte(t, b';').unwrap_or(t.len());
            let uri = trim_str(t.get(..sc).unwrap_or(""));
            if uri
                .bytes()
                .any(|b| is_lws(b) || b == b'?' || b == b',' || b == b'>')
            {
                return Err(ParseError::BadNameAddr);
            }
            (None, uri, t.get(sc..).unwrap_or(""))
        };
        check_uri_shape(uri)?;
        Ok(NameAddr {
            display,
            uri,
            params: Params::parse(params)?,
            span,
        })
    }

    /// Parses the URI.
    pub fn uri(&self) -> Result<Uri<'b>, ParseError> {
        Uri::parse(self.uri)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'b str> {
        self.params.get("tag").flatten()
    }

    /// The `expires` parameter (Contact), when it is a 32-bit number.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_u32(v.as_bytes()))
    }

    /// The `q` parameter (Contact) in thousandths: `q=0.5` is 500, `q=1` is 1000.
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.params.get("q").flatten()?)
    }
}

/// `<uri>` followed by optional `;params`.
fn angle(r: &str) -> Result<(&str, &str), ParseError> {
    let inner = r.strip_prefix('<').ok_or(ParseError::BadNameAddr)?;
    let gt = find_byte(inner, b'>').ok_or(ParseError::BadNameAddr)?;
    let uri = inner.get(..gt).unwrap_or("");
    if uri.bytes().any(is_lws) {
        return Err(ParseError::BadNameAddr);
    }
    let params = trim_start_str(inner.get(gt + 1..).unwrap_or(""));
    Ok((uri, params))
}

fn check_uri_shape(uri: &str) -> Result<(), ParseError> {
    if uri.len() > MAX_URI_LEN {
        return Err(ParseError::UriTooLong);
    }
    let colon = find_byte(uri, b':').ok_or(ParseError::BadNameAddr)?;
    let scheme = uri.get(..colon).unwrap_or("");
    let ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && colon + 1 < uri.len()
        && !uri.bytes().any(|b| b < b' ' || b == b'<' || b == b'"');
    if ok {
        Ok(())
    } else {
        Err(ParseError::BadNameAddr)
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One Contact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'b> {
    /// `Contact: *` (remove all bindings).
    Star,
    /// A contact address.
    Addr(NameAddr<'b>),
}

impl<'b> Contact<'b> {
    /// Parses one Contact list element.
    pub fn parse(s: &'b str) -> Result<Contact<'b>, ParseError> {
        if trim_str(s) == "*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(s).map(Contact::Addr)
        }
    }
}

/// The CSeq header: sequence number (below 2^31) and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'b> {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method<'b>,
}

impl<'b> CSeq<'b> {
    /// Parses a CSeq value such as `4711 INVITE`.
    pub fn parse(value: &'b [u8]) -> Result<CSeq<'b>, ParseError> {
        let s = std::str::from_utf8(value).map_err(|_| ParseError::BadCSeq)?;
        let s = trim_str(s);
        let sp = s.bytes().position(is_lws).ok_or(ParseError::BadCSeq)?;
        let seq = parse_u32(s.get(..sp).unwrap_or("").as_bytes()).ok_or(ParseError::BadCSeq)?;
        let method = trim_str(s.get(sp..).unwrap_or(""));
        if seq >= 1 << 31 || method.is_empty() || !method.bytes().all(is_token) {
            return Err(ParseError::BadCSeq);
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>, &str, Option<&str>)] = &[
            ("\"Alice A.\" <sip:alice@example.com>;tag=abc", Some("Alice A."), "sip:alice@example.com", Some("abc")),
            ("Bob <sips:bob@example.com>", Some("Bob"), "sips:bob@example.com", None),
            ("<sip:c@example.com;transport=tcp>;tag=x", None, "sip:c@example.com;transport=tcp", Some("x")),
            ("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n", None, "sip:vivekg@chair-dnrc.example.com", Some("1918181833n")),
            ("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8", Some("J Rosenberg \\\\\\\""), "sip:jdrosen@example.com", Some("98asjd8")),
            ("\"caller\"<sip:caller@example.com>;tag=323", Some("caller"), "sip:caller@example.com", Some("323")),
            ("tel:+12125551212;tag=1", None, "tel:+12125551212", Some("1")),
        ];
        for &(s, display, uri, tag) in cases {
            let n = NameAddr::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!((n.display, n.uri, n.tag()), (display, uri, tag), "{s:?}");
        }
    }

    #[test]
    fn errors() {
        let cases: &[(&str, ParseError)] = &[
            (
                "\"Mr. J. User <sip:j.user@example.com>",
                ParseError::BadNameAddr,
            ),
            (
                "Bell, Alexander <sip:a.g.bell@bell-tel.com>;tag=43",
                ParseError::BadNameAddr,
            ),
            (
                "\"Watson, Thomas\" < sip:t.watson@example.org >",
                ParseError::BadNameAddr,
            ),
            (
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                ParseError::BadNameAddr,
            ),
            ("<sip:a@b", ParseError::BadNameAddr),
            ("nocolon", ParseError::BadNameAddr),
            ("sip:caller@example.net;;tag=1", ParseError::BadParams),
            ("\"Joe\" <sip:joe@example.org>;;;;", ParseError::BadParams),
        ];
        for (s, e) in cases {
            assert_eq!(NameAddr::parse(s), Err(*e), "{s:?}");
        }
    }

    #[test]
    fn contact_params() {
        let c = NameAddr::parse("<sip:a@192.0.2.1:5060>;expires=3600;q=0.7").unwrap();
        assert_eq!((c.expires(), c.q()), (Some(3600), Some(700)));
        for (q, want) in [
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.05", Some(50)),
            ("1.1", None),
            ("2", None),
            ("0.1234", None),
        ] {
            assert_eq!(parse_qvalue(q), want, "{q}");
        }
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Star);
    }

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse(b"0009\r\n  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse(b"1 FOO").unwrap().method, Method::Other("FOO"));
        for bad in [
            &b"INVITE"[..],
            b"2147483648 INVITE",
            b"36893488147419103232 INVITE",
            b"1",
            b"-1 BYE",
            b"1 B@D",
        ] {
            assert_eq!(
                CSeq::parse(bad),
                Err(ParseError::BadCSeq),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
    }
}
