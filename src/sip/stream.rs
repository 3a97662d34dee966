//! Framing SIP over a byte stream (RFC 3261 §18.3, TCP and TLS): where the next message of a
//! connection's receive buffer ends, without parsing it. The message is then handed to the
//! same parser and core as a datagram.
//!
//! A message is the head up to the blank line, then exactly Content-Length bytes of body;
//! Content-Length is mandatory on streams. Between messages a client may send keepalives
//! (RFC 5626 §3.5.1): a double CRLF "ping", which the server answers with a single CRLF
//! "pong"; a single CRLF is a pong (the answer to a ping of ours). Like `httparse`, a valid
//! prefix is [`Status::Partial`], not an error; anything that cannot become a message is a
//! [`FrameError`], after which the connection cannot be resynchronised and must be closed.

use memchr::memmem;

use super::scan::{parse_u64, trim};
use super::{Status, MAX_MESSAGE_SIZE};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A keepalive ping (`\r\n\r\n`): answer with a single CRLF. `len` bytes are consumed.
    Ping { len: usize },
    /// A keepalive pong (a lone `\r\n`). `len` bytes are consumed.
    Pong { len: usize },
    /// A whole message in `buf[..len]`.
    Message { len: usize },
}

impl Frame {
    /// Bytes of the buffer this frame uses.
    pub fn consumed(&self) -> usize {
        match *self {
            Frame::Ping { len } | Frame::Pong { len } | Frame::Message { len } => len,
        }
    }
}

/// Why the bytes of a stream cannot be a SIP message: the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The head (or head + body) is larger than the limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// A stream message without Content-Length (RFC 3261 §18.3 makes it mandatory).
    #[error("message without Content-Length on a stream")]
    MissingContentLength,
    /// Content-Length is not a number, or appears twice with different values.
    #[error("bad Content-Length")]
    BadContentLength,
    /// The bytes do not start like a SIP message (binary garbage, another protocol).
    #[error("not a SIP message")]
    NotSip,
}

/// Frames the front of `buf`, for messages of at most `max` bytes (capped at
/// [`MAX_MESSAGE_SIZE`]).
pub fn frame(buf: &[u8], max: usize) -> Result<Status<Frame>, FrameError> {
    let max = max.min(MAX_MESSAGE_SIZE);
    match buf {
        [] => return Ok(Status::Partial),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Status::Complete(Frame::Ping { len: 4 })),
        [b'\r', b'\n', rest @ ..] if !rest.starts_with(b"\r") => {
            return Ok(Status::Complete(Frame::Pong { len: 2 }))
        }
        [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(Status::Partial),
        [b'\r', ..] | [b'\n', ..] => return Err(FrameError::NotSip),
        [first, ..] if !first.is_ascii_alphabetic() => return Err(FrameError::NotSip),
        _ => {}
    }
    let window = buf.get(..max.min(buf.len())).unwrap_or(buf);
    let Some(blank) = memmem::find(window, b"\r\n\r\n") else {
        return if buf.len() >= max {
            Err(FrameError::TooLarge(max))
        } else {
            Ok(Status::Partial)
        };
    };
    let head_len = blank + 4;
    let body = content_length(&buf[..blank])?;
    let len = head_len
        .checked_add(body)
        .filter(|n| *n <= max)
        .ok_or(FrameError::TooLarge(max))?;
    if buf.len() < len {
        return Ok(Status::Partial);
    }
    Ok(Status::Complete(Frame::Message { len }))
}

/// The Content-Length of a head (`Content-Length` or compact `l`), required once.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut found: Option<u64> = None;
    // Header lines after the start line; folded continuation lines start with a space.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = parse_u64(trim(&line[colon + 1..])).ok_or(FrameError::BadContentLength)?;
            if found.is_some_and(|f| f != v) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(v);
        }
    }
    let n = found.ok_or(FrameError::MissingContentLength)?;
    usize::try_from(n).map_err(|_| FrameError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    fn msg(body: &str) -> String {
        format!(
            "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn messages_keepalives_and_prefixes() {
        let m = msg("hello");
        let len = m.len();
        let mut two = m.clone();
        two.push_str(&msg("x"));
        type Case<'a> = (&'a [u8], Result<Status<Frame>, FrameError>);
        let cases: Vec<Case> = vec![
            (b"", Ok(Status::Partial)),
            (b"\r\n\r\n", Ok(Status::Complete(Frame::Ping { len: 4 }))),
            (b"\r\n\r\nINV", Ok(Status::Complete(Frame::Ping { len: 4 }))),
            (b"\r\n", Ok(Status::Complete(Frame::Pong { len: 2 }))),
            (b"\r\nINVITE", Ok(Status::Complete(Frame::Pong { len: 2 }))),
            (b"\r", Ok(Status::Partial)),
            (b"\r\n\r", Ok(Status::Partial)),
            (m.as_bytes(), Ok(Status::Complete(Frame::Message { len }))),
            (two.as_bytes(), Ok(Status::Complete(Frame::Message { len }))),
            (&m.as_bytes()[..len - 1], Ok(Status::Partial)),
            (&m.as_bytes()[..20], Ok(Status::Partial)),
            (b"\x16\x03\x01\x02\x00", Err(FrameError::NotSip)),
            (b"\n\n", Err(FrameError::NotSip)),
            (
                b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n",
                Err(FrameError::MissingContentLength),
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nl: 0\r\n\r\n",
                Ok(Status::Complete(Frame::Message { len: 31 })),
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n",
                Err(FrameError::BadContentLength),
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
                Err(FrameError::BadContentLength),
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999\r\n\r\n",
                Err(FrameError::TooLarge(MAX)),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                frame(input, MAX),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(Frame::Message { len }.consumed(), len);
    }

    #[test]
    fn a_head_without_end_is_refused_at_the_limit() {
        let mut big = b"INVITE sip:a SIP/2.0\r\n".to_vec();
        big.resize(MAX, b'a');
        assert_eq!(frame(&big, MAX), Err(FrameError::TooLarge(MAX)));
        assert_eq!(frame(&big[..MAX - 1], MAX), Ok(Status::Partial));
    }
}
