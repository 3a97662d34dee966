//! SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966), parsed into borrowed parts.
//!
//! `sip:user:password@host:port;params?headers`. The user part may hold `;`, `?` and
//! escapes (`%XX`), so the first `@` splits userinfo from hostport (neither host, params
//! nor headers may contain a literal `@`). Escapes are validated but kept raw;
//! [`percent_decode_into`] decodes into a caller buffer when a comparison needs it.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::params::Params;
use super::scan::{find_byte, parse_port};
use super::{ParseError, MAX_URI_LEN};

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// sip:
    Sip,
    /// sips:
    Sips,
    /// tel:
    Tel,
}

impl Scheme {
    /// The scheme name without colon.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
        }
    }
}

/// The host part of a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'b> {
    /// A domain name, as written. Empty for `tel:` URIs.
    Name(&'b str),
    /// A dotted IPv4 address.
    V4(Ipv4Addr),
    /// A bracketed IPv6 reference.
    V6(Ipv6Addr),
}

/// A parsed SIP/SIPS/tel URI borrowing from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'b> {
    /// Scheme.
    pub scheme: Scheme,
    /// User part, escapes kept (for tel: the telephone number).
    pub user: Option<&'b str>,
    /// Password, escapes kept.
    pub password: Option<&'b str>,
    /// Host (for tel: `Host::Name("")`).
    pub host: Host<'b>,
    /// The host exactly as written (IPv6 with brackets).
    pub host_raw: &'b str,
    /// Port, if given.
    pub port: Option<u16>,
    /// URI parameters.
    pub params: Params<'b>,
    /// Raw headers after `?`, if any.
    pub headers: Option<&'b str>,
}

impl<'b> Uri<'b> {
    /// Parses a URI. Schemes other than sip, sips and tel give
    /// [`ParseError::UnsupportedScheme`].
    pub fn parse(s: &'b str) -> Result<Uri<'b>, ParseError> {
        if s.len() > MAX_URI_LEN {
            return Err(ParseError::UriTooLong);
        }
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ParseError::BadUri);
        }
        let colon = find_byte(s, b':').ok_or(ParseError::BadUri)?;
        let (scheme, rest) = (
            s.get(..colon).unwrap_or(""),
            s.get(colon + 1..).unwrap_or(""),
        );
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(ParseError::UnsupportedScheme);
        } else {
            return Err(ParseError::BadUri);
        };
        check_escapes(rest)?;
        if scheme == Scheme::Tel {
            return parse_tel(rest);
        }
        let (userinfo, hostpart) = match find_byte(rest, b'@') {
            Some(at) => (
                Some(rest.get(..at).unwrap_or("")),
                rest.get(at + 1..).unwrap_or(""),
            ),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match find_byte(ui, b':') {
                    Some(c) => (
                        ui.get(..c).unwrap_or(""),
                        Some(ui.get(c + 1..).unwrap_or("")),
                    ),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(ParseError::BadUri);
                }
                (Some(u), p)
            }
        };
        let (hostpart, headers) = match find_byte(hostpart, b'?') {
            Some(q) => (
                hostpart.get(..q).unwrap_or(""),
                Some(hostpart.get(q + 1..).unwrap_or("")),
            ),
            None => (hostpart, None),
        };
        let (hostport, params) = match find_byte(hostpart, b';') {
            Some(sc) => (
                hostpart.get(..sc).unwrap_or(""),
                hostpart.get(sc..).unwrap_or(""),
            ),
            None => (hostpart, ""),
        };
        let (host, host_raw, port) = parse_hostport(hostport)?;
        let params = Params::parse(params).map_err(|_| ParseError::BadUri)?;
        if headers.is_some_and(str::is_empty) {
            return Err(ParseError::BadUri);
        }
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            host_raw,
            port,
            params,
            headers,
        })
    }

    /// True when the `lr` (loose routing) parameter is present.
    pub fn lr(&self) -> bool {
        self.params.get("lr").is_some()
    }

    /// The `transport` parameter value.
    pub fn transport(&self) -> Option<&'b str> {
        self.params.get("transport").flatten()
    }

    /// The `maddr` parameter value.
    pub fn maddr(&self) -> Option<&'b str> {
        self.params.get("maddr").flatten()
    }
}

fn parse_tel(rest: &str) -> Result<Uri<'_>, ParseError> {
    let (number, params) = match find_byte(rest, b';') {
        Some(sc) => (rest.get(..sc).unwrap_or(""), rest.get(sc..).unwrap_or("")),
        None => (rest, ""),
    };
    let ok = |b: u8| b.is_ascii_hexdigit() || b"+-.()*#pwPW".contains(&b);
    if number.is_empty() || !number.bytes().all(ok) {
        return Err(ParseError::BadUri);
    }
    Ok(Uri {
        scheme: Scheme::Tel,
        user: Some(number),
        password: None,
        host: Host::Name(""),
        host_raw: "",
        port: None,
        params: Params::parse(params).map_err(|_| ParseError::BadUri)?,
        headers: None,
    })
}

/// Parses `host[:port]` where host is a name, an IPv4 address or `[IPv6]`.
pub(crate) fn parse_hostport(hp: &str) -> Result<(Host<'_>, &str, Option<u16>), ParseError> {
    let (host_raw, port) = if hp.starts_with('[') {
        let close = find_byte(hp, b']').ok_or(ParseError::BadUri)?;
        (
            hp.get(..=close).unwrap_or(""),
            hp.get(close + 1..).unwrap_or(""),
        )
    } else {
        match find_byte(hp, b':') {
            Some(c) => (hp.get(..c).unwrap_or(""), hp.get(c..).unwrap_or("")),
            None => (hp, ""),
        }
    };
    let port = match port {
        "" => None,
        p => Some(
            p.strip_prefix(':')
                .and_then(|d| parse_port(d.as_bytes()))
                .ok_or(ParseError::BadUri)?,
        ),
    };
    Ok((parse_host(host_raw)?, host_raw, port))
}

fn parse_host(h: &str) -> Result<Host<'_>, ParseError> {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(Host::V6)
            .map_err(|_| ParseError::BadUri);
    }
    let b = h.as_bytes();
    if b.is_empty()
        || !b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return Err(ParseError::BadUri);
    }
    if b.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
        return h
            .parse::<Ipv4Addr>()
            .map(Host::V4)
            .map_err(|_| ParseError::BadUri);
    }
    Ok(Host::Name(h))
}

/// Every `%` must start a `%XX` escape.
fn check_escapes(s: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(p) = b.get(i..).and_then(|r| memchr::memchr(b'%', r)) {
        let at = i + p;
        let ok = b.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(at + 2).is_some_and(u8::is_ascii_hexdigit);
        if !ok {
            return Err(ParseError::BadUri);
        }
        i = at + 3;
    }
    Ok(())
}

/// Decodes `%XX` escapes of `s` into `out`, returning the decoded bytes (which may contain
/// NUL or non-UTF-8 bytes, as RFC 4475's escnull shows).
/// [`ParseError::BadUri`] on a broken escape, [`ParseError::BufferTooSmall`] when `out` is short.
pub fn percent_decode_into<'o>(s: &str, out: &'o mut [u8]) -> Result<&'o [u8], ParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while let Some(&c) = b.get(i) {
        let byte = if c == b'%' {
            let hi = b.get(i + 1).and_then(|&h| (h as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|&l| (l as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(ParseError::BadUri);
            };
            i += 3;
            (hi * 16 + lo) as u8
        } else {
            i += 1;
            c
        };
        *out.get_mut(n).ok_or(ParseError::BufferTooSmall)? = byte;
        n += 1;
    }
    Ok(out.get(..n).unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        struct Case {
            s: &'static str,
            user: Option<&'static str>,
            password: Option<&'static str>,
            host: Host<'static>,
            port: Option<u16>,
        }
        let cases = [
            Case {
                s: "sip:alice@example.com",
                user: Some("alice"),
                password: None,
                host: Host::Name("example.com"),
                port: None,
            },
            Case {
                s: "SIPS:bob:secret@192.0.2.4:5061;transport=tcp",
                user: Some("bob"),
                password: Some("secret"),
                host: Host::V4(Ipv4Addr::new(192, 0, 2, 4)),
                port: Some(5061),
            },
            Case {
                s: "sip:[2001:db8::10]:5070;lr",
                user: None,
                password: None,
                host: Host::V6("2001:db8::10".parse().unwrap()),
                port: Some(5070),
            },
            Case {
                s: "sip:user;par=u%40example.net@example.com",
                user: Some("user;par=u%40example.net"),
                password: None,
                host: Host::Name("example.com"),
                port: None,
            },
            Case {
                s: "sip:sips%3Auser%40example.com@example.net",
                user: Some("sips%3Auser%40example.com"),
                password: None,
                host: Host::Name("example.net"),
                port: None,
            },
            Case {
                s: "sip:example.com?Subject=x",
                user: None,
                password: None,
                host: Host::Name("example.com"),
                port: None,
            },
        ];
        for c in cases {
            let u = Uri::parse(c.s).unwrap_or_else(|e| panic!("{}: {e}", c.s));
            assert_eq!(
                (u.user, u.password, u.host, u.port),
                (c.user, c.password, c.host, c.port),
                "{}",
                c.s
            );
        }
        let u = Uri::parse("sip:p.example.com;lr;transport=TCP").unwrap();
        assert!(u.lr());
        assert_eq!(u.transport(), Some("TCP"));
        assert_eq!(
            Uri::parse("sip:a@b?Route=%3Csip:c%3E").unwrap().headers,
            Some("Route=%3Csip:c%3E")
        );
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!((t.scheme, t.user), (Scheme::Tel, Some("+1-201-555-0123")));
    }

    #[test]
    fn errors() {
        let cases: &[(&str, ParseError)] = &[
            ("http://example.com", ParseError::UnsupportedScheme),
            (
                "nobodyknowsthisscheme:totallyopaquecontent",
                ParseError::UnsupportedScheme,
            ),
            ("sip:", ParseError::BadUri),
            ("sip:@example.com", ParseError::BadUri),
            ("sip:a@example.com:99999", ParseError::BadUri),
            ("sip:a@256.1.1.1", ParseError::BadUri),
            ("sip:a@[::1", ParseError::BadUri),
            ("sip:a%4@example.com", ParseError::BadUri),
            ("sip:a b@example.com", ParseError::BadUri),
            ("sip:a@example.com;;", ParseError::BadUri),
            ("<sip:a@example.com>", ParseError::BadUri),
        ];
        for (s, e) in cases {
            assert_eq!(Uri::parse(s), Err(*e), "{s}");
        }
        let long = format!("sip:{}@example.com", "a".repeat(MAX_URI_LEN));
        assert_eq!(Uri::parse(&long), Err(ParseError::UriTooLong));
    }

    #[test]
    fn decode() {
        let mut buf = [0u8; 32];
        assert_eq!(
            percent_decode_into("null-%00-null", &mut buf).unwrap(),
            b"null-\0-null"
        );
        assert_eq!(
            percent_decode_into("%zz", &mut buf),
            Err(ParseError::BadUri)
        );
        assert_eq!(
            percent_decode_into("abc", &mut [0u8; 2]),
            Err(ParseError::BufferTooSmall)
        );
    }
}
