//! Framing: start line, header lines and body boundaries.
//!
//! [`Message::parse_datagram`] and [`Message::parse_stream`] walk the buffer once: skip
//! leading CRLF keep-alives, parse the start line, then find each header line end with
//! `memchr` (joining folded continuation lines), split `name: value` and classify the
//! name. The header array is supplied by the caller, so nothing is allocated. The body is
//! bounded by Content-Length; a datagram without one takes the rest of the datagram.

use memchr::memchr;

use super::header::{Header, HeaderName};
use super::message::{Message, StartLine};
use super::method::Method;
use super::scan::{ascii_str, is_token, is_token_str, parse_u64, trim};
use super::{ParseError, Span, Status, MAX_HEADERS, MAX_MESSAGE_SIZE, MAX_URI_LEN};

/// Result of parsing the head (start line + headers).
struct Head<'b> {
    start: StartLine<'b>,
    start_line: Span,
    uri_span: Span,
    n_headers: usize,
    head_len: usize,
    /// The Content-Length value seen while splitting headers, and whether there were more.
    cl_value: Option<&'b [u8]>,
    cl_dup: bool,
}

impl<'h, 'b> Message<'h, 'b> {
    /// Parses one UDP datagram. A datagram cut short is [`ParseError::Truncated`] (no blank
    /// line) or [`ParseError::BodyTruncated`] (fewer body bytes than Content-Length); bytes
    /// after the body are ignored.
    pub fn parse_datagram(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
    ) -> Result<Self, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        let head = match parse_head(buf, headers)? {
            Status::Complete(h) => h,
            Status::Partial => return Err(ParseError::Truncated),
        };
        let used: &'h [Header<'b>] = headers.get(..head.n_headers).unwrap_or(&[]);
        let content_length = content_length(&head)?;
        let avail = buf.len().saturating_sub(head.head_len);
        let body_len = match content_length {
            Some(n) if n > avail => return Err(ParseError::BodyTruncated),
            Some(n) => n,
            None => avail,
        };
        let body = buf
            .get(head.head_len..head.head_len + body_len)
            .ok_or(ParseError::BodyTruncated)?;
        Ok(Message::assemble(buf, head, used, body, content_length))
    }

    /// Parses a message from the front of a stream buffer. Returns the message and the
    /// number of bytes it occupies, or [`Status::Partial`] when more bytes are needed.
    /// Content-Length is mandatory on streams (RFC 3261 section 18.3).
    pub fn parse_stream(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
    ) -> Result<Status<(Self, usize)>, ParseError> {
        let head = match parse_head(buf, headers)? {
            Status::Complete(h) => h,
            Status::Partial if buf.len() >= MAX_MESSAGE_SIZE => return Err(ParseError::TooLarge),
            Status::Partial => return Ok(Status::Partial),
        };
        let used: &'h [Header<'b>] = headers.get(..head.n_headers).unwrap_or(&[]);
        let content_length = content_length(&head)?;
        let n = content_length.ok_or(ParseError::MissingHeader("Content-Length"))?;
        let total = head.head_len + n;
        if total > MAX_MESSAGE_SIZE {
            return Err(ParseError::TooLarge);
        }
        let Some(body) = buf.get(head.head_len..total) else {
            return Ok(Status::Partial);
        };
        Ok(Status::Complete((
            Message::assemble(buf, head, used, body, content_length),
            total,
        )))
    }

    fn assemble(
        buf: &'b [u8],
        head: Head<'b>,
        headers: &'h [Header<'b>],
        body: &'b [u8],
        content_length: Option<usize>,
    ) -> Self {
        Message {
            start: head.start,
            headers,
            body,
            buf,
            head_len: head.head_len,
            start_line: head.start_line,
            uri_span: head.uri_span,
            content_length,
            head_text: buf
                .get(..head.head_len)
                .and_then(|h| std::str::from_utf8(h).ok()),
            top_via: std::cell::OnceCell::new(),
        }
    }
}

/// The single Content-Length value, checked against [`MAX_MESSAGE_SIZE`].
fn content_length(head: &Head<'_>) -> Result<Option<usize>, ParseError> {
    if head.cl_dup {
        return Err(ParseError::DuplicateContentLength);
    }
    let Some(v) = head.cl_value else {
        return Ok(None);
    };
    let n = parse_u64(v).ok_or(ParseError::BadContentLength)?;
    if n > MAX_MESSAGE_SIZE as u64 {
        return Err(ParseError::TooLarge);
    }
    Ok(Some(n as usize))
}

fn parse_head<'b>(
    buf: &'b [u8],
    headers: &mut [Header<'b>],
) -> Result<Status<Head<'b>>, ParseError> {
    let skip = buf.iter().position(|&b| b != b'\r' && b != b'\n');
    let Some(pos) = skip else {
        return Err(ParseError::Empty);
    };
    let rest = buf.get(pos..).unwrap_or(&[]);
    let Some(lf) = memchr(b'\n', rest) else {
        return Ok(Status::Partial);
    };
    let line_end = pos + lf + 1;
    let content = strip_cr(rest.get(..lf).unwrap_or(&[]));
    let (start, uri_rel) = parse_start_line(content)?;
    let uri_span = uri_rel.map_or(Span::default(), |(s, e)| Span::new(pos + s, pos + e));

    let cap = headers.len().min(MAX_HEADERS);
    let mut n = 0;
    let mut i = line_end;
    let (mut cl_value, mut cl_dup) = (None, false);
    let head_len = loop {
        let rest = buf.get(i..).unwrap_or(&[]);
        match rest {
            [b'\r', b'\n', ..] => break i + 2,
            [b'\n', ..] => break i + 1,
            [] | [b'\r'] => return Ok(Status::Partial),
            [b' ' | b'\t', ..] => return Err(ParseError::BadHeader),
            _ => {}
        }
        let Some(end) = header_line_end(buf, i) else {
            return Ok(Status::Partial);
        };
        let line = buf.get(i..end).unwrap_or(&[]);
        let name_len = line
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(line.len());
        let raw_name = line.get(..name_len).unwrap_or(&[]);
        let after = line.get(name_len..).unwrap_or(&[]);
        let ws = after
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(after.len());
        // `raw_name` is all token bytes by construction; it only has to be non-empty.
        if raw_name.is_empty() || after.get(ws) != Some(&b':') {
            return Err(ParseError::BadHeader);
        }
        let value = trim(after.get(ws + 1..).unwrap_or(&[]));
        // Token characters are ASCII, so this cannot fail; map it anyway instead of panicking.
        let raw_name = ascii_str(raw_name).ok_or(ParseError::BadHeader)?;
        if n >= cap {
            return Err(ParseError::TooManyHeaders);
        }
        let name = HeaderName::from_name(raw_name);
        if matches!(name, HeaderName::ContentLength) {
            cl_dup |= cl_value.is_some();
            cl_value = Some(value);
        }
        let slot = headers.get_mut(n).ok_or(ParseError::TooManyHeaders)?;
        *slot = Header {
            name,
            raw_name,
            value,
            line: Span::new(i, end),
        };
        n += 1;
        i = end;
    };
    Ok(Status::Complete(Head {
        start,
        start_line: Span::new(pos, line_end),
        uri_span,
        n_headers: n,
        head_len,
        cl_value,
        cl_dup,
    }))
}

/// End (one past the LF) of the header line starting at `from`, following folded
/// continuation lines. `None` when the buffer ends before we can tell.
#[inline]
fn header_line_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let lf = memchr(b'\n', buf.get(i..)?)?;
        let next = i + lf + 1;
        match buf.get(next) {
            None => return None,
            Some(b' ' | b'\t') => i = next,
            Some(_) => return Some(next),
        }
    }
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line {
        [head @ .., b'\r'] => head,
        _ => line,
    }
}

type UriRange = Option<(usize, usize)>;

fn parse_start_line(line: &[u8]) -> Result<(StartLine<'_>, UriRange), ParseError> {
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return parse_status_line(line).map(|s| (s, None));
    }
    if matches!(line.last(), Some(b' ' | b'\t')) {
        return Err(ParseError::BadStartLine);
    }
    let sp1 = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    if sp1 == sp2 || sp1 == 0 {
        return Err(ParseError::BadStartLine);
    }
    let method = line.get(..sp1).unwrap_or(&[]);
    if !is_token_str(method) {
        return Err(ParseError::BadMethod);
    }
    check_version(line.get(sp2 + 1..).unwrap_or(&[]))?;
    let uri = line.get(sp1 + 1..sp2).unwrap_or(&[]);
    if matches!(uri.first(), Some(b' ' | b'\t')) || matches!(uri.last(), Some(b' ' | b'\t')) {
        return Err(ParseError::BadStartLine);
    }
    if uri.len() > MAX_URI_LEN {
        return Err(ParseError::UriTooLong);
    }
    let uri = check_request_uri(uri)?;
    let method = ascii_str(method).ok_or(ParseError::BadMethod)?;
    Ok((
        StartLine::Request {
            method: Method::from_token(method),
            uri,
        },
        Some((sp1 + 1, sp2)),
    ))
}

/// An absolute URI: `scheme ":" ...` with no whitespace, controls or angle brackets.
fn check_request_uri(uri: &[u8]) -> Result<&str, ParseError> {
    let colon = memchr(b':', uri).ok_or(ParseError::BadUri)?;
    let scheme = uri.get(..colon).unwrap_or(&[]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let chars_ok = uri
        .iter()
        .all(|&b| b > b' ' && b < 0x7f && b != b'<' && b != b'>' && b != b'"');
    if !scheme_ok || !chars_ok || colon + 1 == uri.len() {
        return Err(ParseError::BadUri);
    }
    ascii_str(uri).ok_or(ParseError::BadUri)
}

fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        Ok(())
    } else if v.len() > 4 && v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        Err(ParseError::BadVersion)
    } else {
        Err(ParseError::BadStartLine)
    }
}

fn parse_status_line(line: &[u8]) -> Result<StartLine<'_>, ParseError> {
    let sp = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    check_version(line.get(..sp).unwrap_or(&[]))?;
    let rest = line.get(sp + 1..).unwrap_or(&[]);
    let code_len = memchr(b' ', rest).unwrap_or(rest.len());
    let code_bytes = rest.get(..code_len).unwrap_or(&[]);
    if code_bytes.len() != 3 {
        return Err(ParseError::BadStatusCode);
    }
    let code = parse_u64(code_bytes).ok_or(ParseError::BadStatusCode)?;
    if !(100..=699).contains(&code) {
        return Err(ParseError::BadStatusCode);
    }
    let reason = rest.get(code_len + 1..).unwrap_or(&[]);
    if reason.iter().any(|&b| b < b' ' && b != b'\t') {
        return Err(ParseError::BadStartLine);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ParseError::BadStartLine)?;
    Ok(StartLine::Response {
        code: code as u16,
        reason,
    })
}
