//! A deliberately small SIP datagram reader, private to the stand-in.
//!
//! It splits one UDP datagram into a start line, up to [`MAX_HEADERS`] `(name, value)` pairs
//! borrowed from the datagram (no allocation) and the body, and offers the few accessors the
//! stand-in needs: header by name (compact forms folded), tag/branch parameters, the URI inside
//! a name-addr, a URI's user and `host:port`, CSeq and Expires. It is not sipfront's parser and
//! does not try to be a complete one: header folding and multi-line values are not supported,
//! and a datagram it cannot read is simply dropped (and counted) by the engine.

use std::net::{IpAddr, SocketAddr};

/// Most header lines one message may carry; more is a parse error.
pub const MAX_HEADERS: usize = 64;

/// Why a datagram could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("datagram is not UTF-8")]
    NotUtf8,
    #[error("no blank line ends the header")]
    Truncated,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header line")]
    BadHeader,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
}

/// Request or response line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'b> {
    Request { method: &'b str, uri: &'b str },
    Response { code: u16, reason: &'b str },
}

/// One parsed datagram; every string borrows from it.
#[derive(Debug)]
pub struct Msg<'b> {
    pub start: Start<'b>,
    headers: [(&'b str, &'b str); MAX_HEADERS],
    len: usize,
    pub body: &'b [u8],
}

/// Full header name for a compact form, or the name itself.
fn canonical(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        _ => name,
    }
}

impl<'b> Msg<'b> {
    /// Reads one datagram.
    pub fn parse(data: &'b [u8]) -> Result<Self, ParseError> {
        let end = find(data, b"\r\n\r\n").ok_or(ParseError::Truncated)?;
        let head = std::str::from_utf8(data.get(..end).unwrap_or_default())
            .map_err(|_| ParseError::NotUtf8)?;
        let body = data.get(end + 4..).unwrap_or_default();
        let mut lines = head.split("\r\n");
        let first = lines.next().ok_or(ParseError::BadStartLine)?;
        let start = parse_start(first)?;
        let mut msg = Msg {
            start,
            headers: [("", ""); MAX_HEADERS],
            len: 0,
            body,
        };
        for line in lines {
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
            let slot = msg
                .headers
                .get_mut(msg.len)
                .ok_or(ParseError::TooManyHeaders)?;
            *slot = (canonical(name.trim()), value.trim());
            msg.len += 1;
        }
        if let Some(cl) = msg
            .header("Content-Length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            msg.body = body.get(..cl).unwrap_or(body);
        }
        Ok(msg)
    }

    /// All headers in order.
    pub fn headers(&self) -> &[(&'b str, &'b str)] {
        self.headers.get(..self.len).unwrap_or_default()
    }

    /// Value of the first header called `name` (case-insensitive, compact forms folded).
    pub fn header(&self, name: &str) -> Option<&'b str> {
        self.headers_named(name).next()
    }

    /// Values of every header called `name`, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b str> + 's {
        self.headers()
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn method(&self) -> Option<&'b str> {
        match self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&'b str> {
        self.header("Call-ID")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &'b str)> {
        let (n, m) = self.header("CSeq")?.split_once(' ')?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// `branch` of the top Via.
    pub fn branch(&self) -> Option<&'b str> {
        let top = self.header("Via")?;
        param(top.split(',').next()?, "branch")
    }

    /// `tag` of the To header.
    pub fn to_tag(&self) -> Option<&'b str> {
        self.header("To").and_then(|v| param(v, "tag"))
    }

    /// `tag` of the From header.
    pub fn from_tag(&self) -> Option<&'b str> {
        self.header("From").and_then(|v| param(v, "tag"))
    }

    /// Expires of a REGISTER: the Contact's `expires` parameter, else the Expires header.
    pub fn expires(&self) -> Option<u32> {
        let from_contact = self
            .header("Contact")
            .and_then(|c| param(after_uri(c), "expires"));
        from_contact
            .or_else(|| self.header("Expires"))
            .and_then(|v| v.trim().parse().ok())
    }
}

fn parse_start(line: &str) -> Result<Start<'_>, ParseError> {
    let mut parts = line.splitn(3, ' ');
    let (a, b, c) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(ParseError::BadStartLine),
    };
    if a == "SIP/2.0" {
        let code = b.parse().map_err(|_| ParseError::BadStartLine)?;
        Ok(Start::Response { code, reason: c })
    } else if c == "SIP/2.0" && !a.is_empty() {
        Ok(Start::Request { method: a, uri: b })
    } else {
        Err(ParseError::BadStartLine)
    }
}

/// Byte position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The part of a name-addr after its URI (where header parameters live).
fn after_uri(value: &str) -> &str {
    match value.find('>') {
        Some(i) => value.get(i + 1..).unwrap_or_default(),
        None => value
            .find(';')
            .and_then(|i| value.get(i..))
            .unwrap_or_default(),
    }
}

/// Parameter `name` of a header value (`;name=value`), searched after the URI of a name-addr.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let tail = if value.contains('<') {
        after_uri(value)
    } else {
        value
    };
    tail.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI of a name-addr or addr-spec header value, without header parameters.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value.get(a + 1..b).unwrap_or_default(),
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

/// User part of a SIP URI (`sip:user@host`), if any.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

/// `host[:port]` part of a SIP URI.
pub fn uri_hostport(uri: &str) -> &str {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([';', '?', '>']).next().unwrap_or_default()
}

/// Socket address of a URI whose host is an IPv4/IPv6 literal (default port 5060).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let hp = uri_hostport(uri);
    if let Ok(sa) = hp.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip: IpAddr = hp
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, 5060))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:600@127.0.0.2:5080 SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa\r\n\
f: \"Alice\" <sip:alice@example.com>;tag=aa\r\n\
To: <sip:600@example.com>\r\n\
i: c1@x\r\nCSeq: 7 INVITE\r\n\
Contact: <sip:alice@10.0.0.1:5062;ob>;expires=30\r\n\
l: 3\r\n\r\nabcdef";

    #[test]
    fn reads_request_and_headers() {
        let m = Msg::parse(INVITE).unwrap();
        assert_eq!(
            m.start,
            Start::Request {
                method: "INVITE",
                uri: "sip:600@127.0.0.2:5080"
            }
        );
        assert_eq!(m.headers_named("Via").count(), 2);
        assert_eq!(m.branch(), Some("z9hG4bKp1"));
        assert_eq!(m.from_tag(), Some("aa"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.call_id(), Some("c1@x"));
        assert_eq!(m.cseq(), Some((7, "INVITE")));
        assert_eq!(m.expires(), Some(30));
        assert_eq!(m.body, b"abc");
    }

    #[test]
    fn uri_helpers() {
        let c = "<sip:alice@10.0.0.1:5062;ob>;expires=30";
        assert_eq!(uri_of(c), "sip:alice@10.0.0.1:5062;ob");
        assert_eq!(uri_user(uri_of(c)), Some("alice"));
        assert_eq!(uri_hostport(uri_of(c)), "10.0.0.1:5062");
        assert_eq!(
            uri_addr("sip:127.0.0.1"),
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(uri_addr("sip:bob@host.example"), None);
        assert_eq!(param("<sip:a@b;tag=x>;tag=y", "tag"), Some("y"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Msg::parse(b"hello").unwrap_err(), ParseError::Truncated);
        assert_eq!(
            Msg::parse(b"hello\r\n\r\n").unwrap_err(),
            ParseError::BadStartLine
        );
        assert_eq!(
            Msg::parse(b"SIP/2.0 abc OK\r\n\r\n").unwrap_err(),
            ParseError::BadStartLine
        );
        let resp = Msg::parse(b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(
            resp.start,
            Start::Response {
                code: 180,
                reason: "Ringing"
            }
        );
    }
}
