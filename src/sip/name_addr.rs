//! name-addr / addr-spec values (From, To, Contact, Route, Record-Route, Path) and CSeq.
//!
//! `"Display" <sip:uri>;params`, `Display Tokens <uri>;params` or a bare `sip:uri;params`
//! (where the parameters belong to the header, not the URI). The URI is only checked for
//! shape here; [`NameAddr::uri`] parses it fully on demand.
//!
//! Parsed from bytes: the display name (and quoted parameter values, see [`Params`]) may hold
//! bytes that are not UTF-8 — old phones and PBXs send Latin-1 names, and Kamailio accepts
//! them — while the URI must be UTF-8 text, or the value is [`ParseError::BadNameAddr`].

use super::method::Method;
use super::params::Params;
use super::scan::{ascii_or_utf8, is_lws, is_token, parse_u32, quoted_end, trim, trim_str};
use super::uri::Uri;
use super::{ParseError, Span, MAX_URI_LEN};

/// A name-addr or addr-spec with header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'b> {
    /// Display name as received: the content of a quoted string (escapes kept), or the
    /// words before `<`. Not necessarily UTF-8 (Latin-1 from old phones); never interpreted.
    pub display: Option<&'b [u8]>,
    /// The URI text (without angle brackets).
    pub uri: &'b str,
    /// Header parameters (`;tag=`, `;expires=`, `;q=`, ...).
    pub params: Params<'b>,
    /// This value's bytes: relative to the parsed string for [`NameAddr::parse`], absolute
    /// in the message buffer when obtained from a `Message`.
    pub span: Span,
}

impl<'b> NameAddr<'b> {
    /// Parses one name-addr or addr-spec (no list commas), from text or raw bytes.
    pub fn parse<S: AsRef<[u8]> + ?Sized>(s: &'b S) -> Result<NameAddr<'b>, ParseError> {
        let s = s.as_ref();
        let lead = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
        let t = trim(s);
        let span = Span::new(lead, lead + t.len());
        let (display, uri, params) = if t.first() == Some(&b'"') {
            let end = quoted_end(t, 0).ok_or(ParseError::BadNameAddr)?;
            let display = t.get(1..end).unwrap_or(&[]);
            let (uri, params) = angle(trim_start(t.get(end + 1..).unwrap_or(&[])))?;
            (Some(display), uri, params)
        } else if let Some(lt) = memchr::memchr(b'<', t) {
            let d = trim(t.get(..lt).unwrap_or(&[]));
            // Token words; bytes past ASCII are let through (Latin-1 or UTF-8 names).
            if !d.iter().all(|&b| is_token(b) || is_lws(b) || b >= 0x80) {
                return Err(ParseError::BadNameAddr);
            }
            let (uri, params) = angle(t.get(lt..).unwrap_or(&[]))?;
            ((!d.is_empty()).then_some(d), uri, params)
        } else {
            let sc = memchr::memchr(b';', t).unwrap_or(t.len());
            let uri = trim(t.get(..sc).unwrap_or(&[]));
            if uri
                .iter()
                .any(|&b| is_lws(b) || b == b'?' || b == b',' || b == b'>')
            {
                return Err(ParseError::BadNameAddr);
            }
            (None, uri, t.get(sc..).unwrap_or(&[]))
        };
        let uri = ascii_or_utf8(uri).ok_or(ParseError::BadNameAddr)?;
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

    /// The `expires` parameter (Contact): `Ok(None)` when absent; delta-seconds past 2^32-1
    /// read as 2^32-1 (the registrar caps them); anything but digits (`-5`, `1h`, no value)
    /// is [`ParseError::BadExpires`], as for the Expires header.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.params.get("expires") {
            None => Ok(None),
            Some(Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Some(parse_u32(v.as_bytes()).unwrap_or(u32::MAX)))
            }
            Some(_) => Err(ParseError::BadExpires),
        }
    }

    /// The `q` parameter (Contact) in thousandths: `q=0.5` is 500, `q=1` is 1000.
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.params.get("q").flatten()?)
    }
}

/// `<uri>` followed by optional `;params`.
fn angle(r: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let inner = r.strip_prefix(b"<").ok_or(ParseError::BadNameAddr)?;
    let gt = memchr::memchr(b'>', inner).ok_or(ParseError::BadNameAddr)?;
    let uri = inner.get(..gt).unwrap_or(&[]);
    if uri.iter().any(|&b| is_lws(b)) {
        return Err(ParseError::BadNameAddr);
    }
    let params = trim_start(inner.get(gt + 1..).unwrap_or(&[]));
    Ok((uri, params))
}

/// Strips leading LWS.
fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    s.get(start..).unwrap_or(&[])
}

fn check_uri_shape(uri: &str) -> Result<(), ParseError> {
    if uri.len() > MAX_URI_LEN {
        return Err(ParseError::UriTooLong);
    }
    let colon = super::scan::find_byte(uri, b':').ok_or(ParseError::BadNameAddr)?;
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
    /// Parses one Contact list element, from text or raw bytes.
    pub fn parse<S: AsRef<[u8]> + ?Sized>(s: &'b S) -> Result<Contact<'b>, ParseError> {
        let s = s.as_ref();
        if trim(s) == b"*" {
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
            let display = display.map(str::as_bytes);
            assert_eq!((n.display, n.uri, n.tag()), (display, uri, tag), "{s:?}");
        }
    }

    #[test]
    fn latin1_display_names() {
        let quoted = NameAddr::parse(&b"\"M\xfcller\" <sip:100@example.com>;tag=1"[..]).unwrap();
        assert_eq!(quoted.display, Some(&b"M\xfcller"[..]));
        assert_eq!(
            (quoted.uri, quoted.tag()),
            ("sip:100@example.com", Some("1"))
        );
        let tokens = NameAddr::parse(&b"J\xf6rg M\xfcller <sip:100@example.com>"[..]).unwrap();
        assert_eq!(tokens.display, Some(&b"J\xf6rg M\xfcller"[..]));
        // The URI stays strict.
        for bad in [
            &b"\"x\" <sip:m\xfcller@example.com>"[..],
            b"sip:m\xfcller@example.com;tag=1",
        ] {
            assert_eq!(
                NameAddr::parse(bad),
                Err(ParseError::BadNameAddr),
                "{bad:?}"
            );
        }
        assert_eq!(
            Contact::parse(&b"\"\xc9mile\" <sip:a@192.0.2.1>;expires=60"[..])
                .map(|c| matches!(c, Contact::Addr(n) if n.expires() == Ok(Some(60)))),
            Ok(true)
        );
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
        assert_eq!((c.expires(), c.q()), (Ok(Some(3600)), Some(700)));
        let expires = |p: &str| NameAddr::parse(&format!("<sip:a@b>{p}")).unwrap().expires();
        assert_eq!(expires(""), Ok(None));
        assert_eq!(expires(";expires=0"), Ok(Some(0)));
        assert_eq!(expires(";expires=99999999999"), Ok(Some(u32::MAX)));
        for bad in [";expires=-5", ";expires", ";expires=1h", ";expires=\"60\""] {
            assert_eq!(expires(bad), Err(ParseError::BadExpires), "{bad}");
        }
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
