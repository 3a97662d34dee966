//! A deliberately tiny HTTP/1.1 subset for the admin API: one request per connection
//! (`Connection: close`), bounded head and body, percent-decoded query parameters. Used by the
//! server side ([`read_request`], [`Response::write_to`]) and by `sipfront ctl`
//! ([`encode_component`]). Malformed input is an [`HttpError`], answered with 400; nothing
//! here panics on what a client sends.

use std::io::{Read, Write};

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("request larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed request line")]
    BadRequestLine,
    #[error("unsupported HTTP version")]
    BadVersion,
    #[error("malformed header line")]
    BadHeader,
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("malformed percent-encoding in the query")]
    BadEncoding,
    #[error("connection closed before the request was complete")]
    Incomplete,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The request methods the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    /// Anything else (answered 405).
    Other,
}

/// A parsed request head (the body is read and ignored: no endpoint takes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where the head ends (`\r\n\r\n` or a bare `\n\n`), and the length of the terminator.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Parse a complete head (request line and headers, without the blank line). Returns the
/// request and its Content-Length.
pub fn parse_head(head: &[u8]) -> Result<(Request, usize), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::BadRequestLine)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().ok_or(HttpError::BadRequestLine)?;
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine);
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadVersion);
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::BadRequestLine);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::BadRequestLine);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = decode_component(path)?;
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((decode_component(k)?, decode_component(v)?));
    }
    let mut content_length = 0usize;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(HttpError::BadHeader);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| HttpError::BadContentLength)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // No chunked bodies here.
            return Err(HttpError::BadHeader);
        }
    }
    Ok((
        Request {
            method,
            path,
            query: params,
        },
        content_length,
    ))
}

/// Read one request from `stream` (head and body at most `limit` bytes in total).
pub fn read_request(stream: &mut impl Read, limit: usize) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024.min(limit));
    let mut chunk = [0u8; 1024];
    let (head_len, term) = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() >= limit {
            return Err(HttpError::TooLarge { limit });
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Incomplete);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    };
    let head = buf.get(..head_len).ok_or(HttpError::Incomplete)?;
    let (req, content_length) = parse_head(head)?;
    let total = head_len + term + content_length;
    if total > limit {
        return Err(HttpError::TooLarge { limit });
    }
    let mut have = buf.len();
    while have < total {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Incomplete);
        }
        have += n;
    }
    Ok(req)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode `%XX` escapes and `+` (as a space) into a UTF-8 string.
pub fn decode_component(s: &str) -> Result<String, HttpError> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hi = it.next().and_then(hex).ok_or(HttpError::BadEncoding)?;
                let lo = it.next().and_then(hex).ok_or(HttpError::BadEncoding)?;
                out.push(hi << 4 | lo);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::BadEncoding)
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response: status, content type, body (always closed after writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// For 405: the methods the path allows.
    pub allow: Option<&'static str>,
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body,
            allow: None,
        }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status, JSON, format!("{value}\n"))
    }

    /// `{"error": msg}` with `status`.
    pub fn error(status: u16, msg: &str) -> Self {
        Response::json(status, &serde_json::json!({ "error": msg }))
    }

    /// Serialize (the body is left out for HEAD).
    pub fn write_to(&self, w: &mut impl Write, head_only: bool) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str("Allow: ");
            head.push_str(allow);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if !head_only {
            w.write_all(self.body.as_bytes())?;
        }
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut &s[..], 4096)
    }

    #[test]
    fn parses_get_with_query() {
        let r =
            read(b"GET /v1/registrations?user=al%40ice&uri=sip%3Ax+y HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/v1/registrations");
        assert_eq!(r.param("user"), Some("al@ice"));
        assert_eq!(r.param("uri"), Some("sip:x y"));
        assert_eq!(r.param("nope"), None);
        let r = read(b"DELETE /v1/bans?ip=::1 HTTP/1.0\n\n").unwrap();
        assert_eq!(r.method, Method::Delete);
        assert_eq!(r.param("ip"), Some("::1"));
    }

    #[test]
    fn reads_and_bounds_the_body() {
        let r =
            read(b"POST /v1/credentials/reload HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert_eq!(r.method, Method::Post);
        let e = read(b"POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n").unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }));
        let e = read(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").unwrap_err();
        assert!(matches!(e, HttpError::Incomplete));
    }

    #[test]
    fn bad_input_is_an_error() {
        let bad: &[&[u8]] = &[
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET /a%zz HTTP/1.1\r\n\r\n",
            b"GET /?u=%ff%fe HTTP/1.1\r\n\r\n",
            b"GET /?u=% HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n",
        ];
        for b in bad {
            assert!(read(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let big = vec![b'a'; 10_000];
        assert!(matches!(
            read(&big).unwrap_err(),
            HttpError::TooLarge { .. }
        ));
    }

    #[test]
    fn encode_decode_roundtrip() {
        for s in ["alice", "sip:a@b;transport=udp", "ü ?&=+%", ""] {
            assert_eq!(decode_component(&encode_component(s)).unwrap(), s);
        }
    }

    #[test]
    fn response_format() {
        let mut out = Vec::new();
        let mut r = Response::error(405, "no");
        r.allow = Some("GET");
        r.write_to(&mut out, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.contains("Allow: GET\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"no\"}\n"));
    }
}
