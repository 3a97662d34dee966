//! Building a response to a received request (RFC 3261 section 8.2.6).
//!
//! [`write_response`] writes the status line, then copies the request's Via lines, From,
//! To, Call-ID and CSeq verbatim in their received order (adding `;tag=` to To when the
//! request had none and the caller supplies one), then the caller's extra headers,
//! Content-Length and body. Nothing else of the request is copied.

use super::header::HeaderName;
use super::message::Message;
use std::net::IpAddr;

use super::rewrite::{check_extra, finish, write_via_received, RewriteError};
use super::scan::{is_token_str, offset_of, push_u64};

/// The response to build.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseSpec<'a> {
    /// Status code, 100..=699.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'a str,
    /// To-tag to add when the request's To has none (use `None` for 100 Trying).
    pub to_tag: Option<&'a str>,
    /// Raw `Name: value\r\n` lines (e.g. WWW-Authenticate, Contact, Expires).
    pub extra_headers: &'a [u8],
    /// Body (Content-Length is written to match).
    pub body: &'a [u8],
}

/// Writes a response to `req` into `out` (cleared first).
pub fn write_response(
    req: &Message,
    spec: &ResponseSpec,
    out: &mut Vec<u8>,
) -> Result<(), RewriteError> {
    write_response_to(req, spec, None, out)
}

/// Like [`write_response`], and with `received = Some((ip, port))` (the address the request
/// came from) the top Via gets `received=` and `rport=` as RFC 3261 §18.2.1 and RFC 3581 §4
/// ask of the server that answers.
pub fn write_response_to(
    req: &Message,
    spec: &ResponseSpec,
    received: Option<(IpAddr, u16)>,
    out: &mut Vec<u8>,
) -> Result<(), RewriteError> {
    out.clear();
    if !req.is_request() {
        return Err(RewriteError::NotARequest);
    }
    if !(100..=699).contains(&spec.code) {
        return Err(RewriteError::BadInput("code"));
    }
    if spec.reason.bytes().any(|b| b < b' ' && b != b'\t') {
        return Err(RewriteError::BadInput("reason"));
    }
    if spec.to_tag.is_some_and(|t| !is_token_str(t.as_bytes())) {
        return Err(RewriteError::BadInput("to_tag"));
    }
    check_extra(spec.extra_headers)?;
    req.top_via()?;
    req.from()?;
    req.call_id()?;
    req.cseq()?;
    let to = req.to()?;
    let add_tag = if to.tag().is_none() {
        spec.to_tag
    } else {
        None
    };

    out.extend_from_slice(b"SIP/2.0 ");
    push_u64(out, u64::from(spec.code));
    out.push(b' ');
    out.extend_from_slice(spec.reason.as_bytes());
    out.extend_from_slice(b"\r\n");

    let buf = req.buf;
    let (mut from, mut to_done, mut call_id, mut cseq) = (false, false, false, false);
    let mut top_via = received.map(|r| (req.top_via(), r));
    for h in req.headers {
        let line = buf.get(h.line.range()).unwrap_or(&[]);
        let once = |seen: &mut bool| !std::mem::replace(seen, true);
        match h.name {
            HeaderName::Via => match top_via.take() {
                Some((Ok(via), (ip, port))) => write_via_received(
                    out,
                    buf,
                    &via,
                    ip,
                    port,
                    h.line.start as usize,
                    h.line.end as usize,
                ),
                _ => out.extend_from_slice(line),
            },
            HeaderName::From if once(&mut from) => out.extend_from_slice(line),
            HeaderName::CallId if once(&mut call_id) => out.extend_from_slice(line),
            HeaderName::CSeq if once(&mut cseq) => out.extend_from_slice(line),
            HeaderName::To if once(&mut to_done) => match add_tag {
                None => out.extend_from_slice(line),
                Some(tag) => {
                    let value_end = offset_of(buf, h.value) + h.value.len();
                    out.extend_from_slice(buf.get(h.line.start as usize..value_end).unwrap_or(&[]));
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(tag.as_bytes());
                    out.extend_from_slice(buf.get(value_end..h.line.end as usize).unwrap_or(&[]));
                }
            },
            _ => {}
        }
    }
    finish(out, spec.extra_headers, false, spec.body)
}
