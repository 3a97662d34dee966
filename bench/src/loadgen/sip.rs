//! A minimal, allocation-free SIP reader for the load generator: splits one datagram into its
//! start line and up to [`MAX_HEADERS`] header lines (borrowed slices), and answers the few
//! questions the generator asks (status code, method, Call-ID, CSeq, To, Contact URI,
//! Record-Route entries, challenge headers). It is deliberately independent of sipfront's own
//! parser so a parser bug cannot hide itself.

use thiserror::Error;

/// Header lines kept per message; the rest are ignored (the generator needs only a few).
pub const MAX_HEADERS: usize = 48;

/// Why a datagram could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("no blank line ending the header")]
    Truncated,
    #[error("bad start line")]
    BadStartLine,
    #[error("missing or bad {0} header")]
    BadHeader(&'static str),
}

/// One header line: name and value (trimmed), borrowed from the datagram.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hdr<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// A parsed datagram. `code` is 0 for requests; `method` is empty for responses.
#[derive(Debug)]
pub struct Msg<'a> {
    pub code: u16,
    pub method: &'a [u8],
    pub request_uri: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub cseq_method: &'a [u8],
    pub body: &'a [u8],
    headers: [Hdr<'a>; MAX_HEADERS],
    n_headers: usize,
}

/// The canonical long name of compact header forms (RFC 3261 §7.3.3).
fn long_name(name: &[u8]) -> &[u8] {
    match name {
        [c] => match c.to_ascii_lowercase() {
            b'i' => b"call-id",
            b'v' => b"via",
            b'f' => b"from",
            b't' => b"to",
            b'm' => b"contact",
            b'l' => b"content-length",
            b'c' => b"content-type",
            _ => name,
        },
        _ => name,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Parses an unsigned decimal, `None` on anything else or overflow.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    u32::try_from(v).ok()
}

impl<'a> Msg<'a> {
    /// Reads one datagram. Header folding is not supported (nobody on loopback folds).
    pub fn parse(buf: &'a [u8]) -> Result<Msg<'a>, ParseError> {
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(ParseError::Truncated)?;
        let head = buf.get(..end).ok_or(ParseError::Truncated)?;
        let body = buf.get(end + 4..).unwrap_or_default();
        let mut lines = head.split(|&c| c == b'\n').map(trim);
        let start = lines.next().ok_or(ParseError::BadStartLine)?;
        let mut parts = start.splitn(3, |&c| c == b' ');
        let (a, b) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let (code, method, request_uri) = if a == b"SIP/2.0" {
            let code = parse_u32(b).filter(|c| (100..700).contains(c));
            (
                code.ok_or(ParseError::BadStartLine)? as u16,
                &b""[..],
                &b""[..],
            )
        } else if parts.next() == Some(b"SIP/2.0") && !a.is_empty() && !b.is_empty() {
            (0, a, b)
        } else {
            return Err(ParseError::BadStartLine);
        };
        let mut m = Msg {
            code,
            method,
            request_uri,
            call_id: b"",
            cseq: 0,
            cseq_method: b"",
            body,
            headers: [Hdr::default(); MAX_HEADERS],
            n_headers: 0,
        };
        for line in lines {
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                continue;
            };
            let name = long_name(trim(line.get(..colon).unwrap_or_default()));
            let value = trim(line.get(colon + 1..).unwrap_or_default());
            if name.eq_ignore_ascii_case(b"call-id") {
                m.call_id = value;
            } else if name.eq_ignore_ascii_case(b"cseq") {
                let mut it = value.split(|&c| c == b' ').filter(|p| !p.is_empty());
                m.cseq = it
                    .next()
                    .and_then(parse_u32)
                    .ok_or(ParseError::BadHeader("CSeq"))?;
                m.cseq_method = it.next().ok_or(ParseError::BadHeader("CSeq"))?;
            }
            if let Some(slot) = m.headers.get_mut(m.n_headers) {
                *slot = Hdr { name, value };
                m.n_headers += 1;
            }
        }
        if m.call_id.is_empty() {
            return Err(ParseError::BadHeader("Call-ID"));
        }
        if m.cseq_method.is_empty() {
            return Err(ParseError::BadHeader("CSeq"));
        }
        Ok(m)
    }

    /// The header lines kept, in order.
    pub fn headers(&self) -> &[Hdr<'a>] {
        self.headers.get(..self.n_headers).unwrap_or_default()
    }

    /// Values of the headers named `name` (case-insensitive, long form), in order.
    pub fn all(&self, name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first header named `name`.
    pub fn first(&self, name: &'static [u8]) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// The URI of the first Contact (inside `<>` or up to `;`).
    pub fn contact_uri(&self) -> Option<&'a [u8]> {
        self.first(b"contact").map(addr_uri)
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<&'a [u8]> {
        self.first(b"to").and_then(tag_param)
    }
}

/// The URI of a name-addr (`"x" <uri>;p`) or addr-spec (`uri;p`).
pub fn addr_uri(v: &[u8]) -> &[u8] {
    if let Some(lt) = v.iter().position(|&c| c == b'<') {
        let rest = v.get(lt + 1..).unwrap_or_default();
        let gt = rest.iter().position(|&c| c == b'>').unwrap_or(rest.len());
        return rest.get(..gt).unwrap_or_default();
    }
    let semi = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    trim(v.get(..semi).unwrap_or_default())
}

/// The `tag=` parameter after the URI of a From/To value.
pub fn tag_param(v: &[u8]) -> Option<&[u8]> {
    let after = match v.iter().position(|&c| c == b'>') {
        Some(gt) => v.get(gt + 1..)?,
        None => v,
    };
    after.split(|&c| c == b';').skip(1).find_map(|p| {
        let p = trim(p);
        let (k, val) = p.split_at(p.iter().position(|&c| c == b'=')?);
        k.eq_ignore_ascii_case(b"tag")
            .then(|| val.get(1..).unwrap_or_default())
    })
}

/// Splits a header value on commas outside `<>` and quotes (Record-Route, Via lists).
pub fn split_list<'a>(v: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, &c) in v.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth -= 1,
            b',' if !quoted && depth <= 0 => {
                f(trim(v.get(start..i).unwrap_or_default()));
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = trim(v.get(start..).unwrap_or_default());
    if !last.is_empty() {
        f(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESP: &[u8] = b"SIP/2.0 200 OK\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport=5070\r\n\
        Record-Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1;lr>\r\n\
        Record-Route: <sip:127.0.0.2:5080;lr>\r\n\
        From: <sip:1001@d>;tag=a\r\nTo: \"x\" <sip:600@d>;tag=b7\r\n\
        i: lg1-2-3-4@lg\r\nCSeq: 2 INVITE\r\nm: <sip:600@127.0.0.2:5080>;expires=60\r\n\
        Content-Length: 3\r\n\r\nabc";

    #[test]
    fn reads_a_response() {
        let m = Msg::parse(RESP).expect("parses");
        assert_eq!(m.code, 200);
        assert_eq!(m.call_id, b"lg1-2-3-4@lg");
        assert_eq!((m.cseq, m.cseq_method), (2, &b"INVITE"[..]));
        assert_eq!(m.to_tag(), Some(&b"b7"[..]));
        assert_eq!(m.contact_uri(), Some(&b"sip:600@127.0.0.2:5080"[..]));
        assert_eq!(m.body, b"abc");
        let mut rr = Vec::new();
        for v in m.all(b"record-route") {
            split_list(v, |e| rr.push(e.to_vec()));
        }
        assert_eq!(rr.len(), 3);
        assert_eq!(rr[1], b"<sip:10.0.0.1;lr>");
    }

    #[test]
    fn reads_a_request() {
        let m = Msg::parse(
            b"INVITE sip:1001@127.0.0.1:5070 SIP/2.0\r\nCall-ID: x\r\nCSeq: 102 INVITE\r\n\r\n",
        )
        .expect("parses");
        assert_eq!((m.code, m.method), (0, &b"INVITE"[..]));
        assert_eq!(m.request_uri, b"sip:1001@127.0.0.1:5070");
        assert_eq!(m.to_tag(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Msg::parse(b"hello").unwrap_err(), ParseError::Truncated);
        assert_eq!(
            Msg::parse(b"SIP/2.0 99 X\r\n\r\n").unwrap_err(),
            ParseError::BadStartLine
        );
        assert_eq!(
            Msg::parse(b"SIP/2.0 200 OK\r\nCSeq: 1 X\r\n\r\n").unwrap_err(),
            ParseError::BadHeader("Call-ID")
        );
        assert_eq!(
            Msg::parse(b"SIP/2.0 200 OK\r\nCall-ID: a\r\nCSeq: z X\r\n\r\n").unwrap_err(),
            ParseError::BadHeader("CSeq")
        );
        assert_eq!(tag_param(b"<sip:a;tag=no>"), None);
        assert_eq!(addr_uri(b"sip:a@b;expires=3"), b"sip:a@b");
    }
}
