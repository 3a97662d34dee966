//! Raw header lines and header-name classification.
//!
//! The parser stores every header as a [`Header`]: the raw name, the LWS-trimmed raw value
//! and the byte span of the whole line (so the rewriter can copy or drop lines verbatim).
//! [`HeaderName`] classifies the name once, case-insensitively, with compact forms
//! (RFC 3261 section 7.3.3 and later RFCs) mapped to the same variant as the long name.

use super::Span;

/// A header's name, classified. Compact forms map to their long name; names the proxy
/// does not use are [`HeaderName::Other`], compared case-insensitively.
#[derive(Debug, Clone, Copy)]
pub enum HeaderName<'b> {
    /// Via / v
    Via,
    /// From / f
    From,
    /// To / t
    To,
    /// Call-ID / i
    CallId,
    /// CSeq
    CSeq,
    /// Max-Forwards
    MaxForwards,
    /// Contact / m
    Contact,
    /// Expires
    Expires,
    /// Route
    Route,
    /// Record-Route
    RecordRoute,
    /// Path
    Path,
    /// Authorization
    Authorization,
    /// Proxy-Authorization
    ProxyAuthorization,
    /// WWW-Authenticate
    WwwAuthenticate,
    /// Proxy-Authenticate
    ProxyAuthenticate,
    /// Content-Length / l
    ContentLength,
    /// Content-Type / c
    ContentType,
    /// Supported / k
    Supported,
    /// Require
    Require,
    /// Proxy-Require
    ProxyRequire,
    /// Unsupported
    Unsupported,
    /// User-Agent
    UserAgent,
    /// Allow
    Allow,
    /// Min-Expires
    MinExpires,
    /// Date
    Date,
    /// Any other name. Compact forms of names without a variant (s, e, o, u, r, b, x, y)
    /// carry the canonical long name, e.g. `s` is `Other("Subject")`.
    Other(&'b str),
}

impl PartialEq for HeaderName<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for HeaderName<'_> {}

impl<'b> HeaderName<'b> {
    /// Classifies a raw header name (case-insensitive, compact forms included).
    pub fn from_name(name: &'b str) -> HeaderName<'b> {
        let b = name.as_bytes();
        let (Some(&first), len) = (b.first(), b.len()) else {
            return HeaderName::Other(name);
        };
        if len == 1 {
            return compact(first).unwrap_or(HeaderName::Other(name));
        }
        let second = b.get(1).map_or(0, u8::to_ascii_lowercase);
        // One candidate per (length, first letter[, second letter]); then one compare.
        let candidate: Option<(&[u8], HeaderName<'static>)> =
            match (len, first.to_ascii_lowercase()) {
                (2, b't') => Some((b"to", HeaderName::To)),
                (3, b'v') => Some((b"via", HeaderName::Via)),
                (4, b'f') => Some((b"from", HeaderName::From)),
                (4, b'c') => Some((b"cseq", HeaderName::CSeq)),
                (4, b'p') => Some((b"path", HeaderName::Path)),
                (4, b'd') => Some((b"date", HeaderName::Date)),
                (5, b'r') => Some((b"route", HeaderName::Route)),
                (5, b'a') => Some((b"allow", HeaderName::Allow)),
                (7, b'c') if second == b'a' => Some((b"call-id", HeaderName::CallId)),
                (7, b'c') => Some((b"contact", HeaderName::Contact)),
                (7, b'e') => Some((b"expires", HeaderName::Expires)),
                (7, b'r') => Some((b"require", HeaderName::Require)),
                (7, b's') => Some((b"subject", HeaderName::Other("Subject"))),
                (9, b's') => Some((b"supported", HeaderName::Supported)),
                (10, b'u') => Some((b"user-agent", HeaderName::UserAgent)),
                (11, b'u') => Some((b"unsupported", HeaderName::Unsupported)),
                (11, b'm') => Some((b"min-expires", HeaderName::MinExpires)),
                (12, b'm') => Some((b"max-forwards", HeaderName::MaxForwards)),
                (12, b'r') => Some((b"record-route", HeaderName::RecordRoute)),
                (12, b'c') => Some((b"content-type", HeaderName::ContentType)),
                (13, b'a') => Some((b"authorization", HeaderName::Authorization)),
                (13, b'p') => Some((b"proxy-require", HeaderName::ProxyRequire)),
                (14, b'c') => Some((b"content-length", HeaderName::ContentLength)),
                (16, b'w') => Some((b"www-authenticate", HeaderName::WwwAuthenticate)),
                (18, b'p') => Some((b"proxy-authenticate", HeaderName::ProxyAuthenticate)),
                (19, b'p') => Some((b"proxy-authorization", HeaderName::ProxyAuthorization)),
                _ => None,
            };
        match candidate {
            Some((canon, known)) if eq_lower(b, canon) => known,
            _ => HeaderName::Other(name),
        }
    }

    /// The canonical long name.
    pub fn as_str(&self) -> &'b str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Contact => "Contact",
            HeaderName::Expires => "Expires",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Path => "Path",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Allow => "Allow",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Date => "Date",
            HeaderName::Other(s) => s,
        }
    }
}

/// `name` equals the lowercase `canon` ignoring ASCII case. Header names are all token
/// characters, and among those `c | 0x20` maps only `A-Z` onto `a-z` and leaves `-` alone,
/// so the single OR is an exact case fold for comparing against lowercase letters and '-'.
#[inline]
fn eq_lower(name: &[u8], canon: &[u8]) -> bool {
    name.len() == canon.len() && name.iter().zip(canon).all(|(&a, &b)| a | 0x20 == b)
}

/// Compact header forms (RFC 3261 7.3.3, RFC 3265, 3515, 3892, 3903, 4028, 4474).
fn compact(c: u8) -> Option<HeaderName<'static>> {
    Some(match c.to_ascii_lowercase() {
        b'i' => HeaderName::CallId,
        b'm' => HeaderName::Contact,
        b'f' => HeaderName::From,
        b't' => HeaderName::To,
        b'v' => HeaderName::Via,
        b'l' => HeaderName::ContentLength,
        b'c' => HeaderName::ContentType,
        b'k' => HeaderName::Supported,
        b's' => HeaderName::Other("Subject"),
        b'e' => HeaderName::Other("Content-Encoding"),
        b'o' => HeaderName::Other("Event"),
        b'u' => HeaderName::Other("Allow-Events"),
        b'r' => HeaderName::Other("Refer-To"),
        b'b' => HeaderName::Other("Referred-By"),
        b'x' => HeaderName::Other("Session-Expires"),
        b'y' => HeaderName::Other("Identity"),
        _ => return None,
    })
}

/// One header line as it appeared on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Header<'b> {
    /// Classified name.
    pub name: HeaderName<'b>,
    /// The name exactly as received.
    pub raw_name: &'b str,
    /// The value with surrounding LWS removed; folded lines keep their inner CRLF + WS.
    pub value: &'b [u8],
    /// The whole line in the message buffer, including its CRLF (and any folded lines).
    pub line: Span,
}

/// An unused header slot, to initialise the caller's header array.
pub const EMPTY_HEADER: Header<'static> = Header {
    name: HeaderName::Other(""),
    raw_name: "",
    value: b"",
    line: Span { start: 0, end: 0 },
};

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn names_and_compact_forms() {
        let cases: &[(&str, HeaderName)] = &[
            ("via", HeaderName::Via),
            ("V", HeaderName::Via),
            ("i", HeaderName::CallId),
            ("CALL-id", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("f", HeaderName::From),
            ("t", HeaderName::To),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("k", HeaderName::Supported),
            ("s", HeaderName::Other("subject")),
            ("e", HeaderName::Other("Content-Encoding")),
            ("o", HeaderName::Other("event")),
            ("u", HeaderName::Other("Allow-Events")),
            ("r", HeaderName::Other("Refer-To")),
            ("b", HeaderName::Other("Referred-By")),
            ("x", HeaderName::Other("Session-Expires")),
            ("y", HeaderName::Other("Identity")),
            ("MaX-fOrWaRdS", HeaderName::MaxForwards),
            ("record-route", HeaderName::RecordRoute),
            ("proxy-authorization", HeaderName::ProxyAuthorization),
            ("WWW-Authenticate", HeaderName::WwwAuthenticate),
            ("Proxy-Authenticate", HeaderName::ProxyAuthenticate),
            ("Proxy-Require", HeaderName::ProxyRequire),
            ("min-expires", HeaderName::MinExpires),
            ("X-Foo", HeaderName::Other("x-foo")),
        ];
        for (raw, want) in cases {
            assert_eq!(HeaderName::from_name(raw), *want, "{raw}");
        }
        assert_ne!(HeaderName::Other("a"), HeaderName::Other("b"));
        assert_eq!(HeaderName::from_name("Subject").as_str(), "Subject");
    }
}
