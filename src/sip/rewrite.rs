//! Forwarding rewriter: builds the outgoing copy of a received message.
//!
//! [`write_forward`] walks the received header lines once and copies runs of untouched
//! lines with a single `extend_from_slice` each. Only the lines an operation touches are
//! rewritten: new lines (our Via, Record-Route, pushed Routes, a missing Max-Forwards) go
//! right after the start line, so they end up topmost; the top Via / first Route element is
//! cut out of its line (keeping any other comma-separated values); Max-Forwards and
//! Content-Length are replaced. The output `Vec` is cleared first and never allocates when
//! the caller reserved enough (reserve [`MAX_MESSAGE_SIZE`] once per worker).

use std::io::Write as _;
use std::net::IpAddr;

use super::header::HeaderName;
use super::message::Message;
use super::scan::{is_lws, is_token_str, offset_of, push_u64};
use super::via::Via;
use super::{ParseError, Span, MAX_MESSAGE_SIZE};

/// Why an outgoing message could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The received message lacks (or has a malformed) header the operation needs.
    #[error("cannot rewrite: {0}")]
    Parse(#[from] ParseError),
    /// The operation only applies to requests.
    #[error("operation needs a request")]
    NotARequest,
    /// Max-Forwards is already 0: the proxy must answer 483 instead.
    #[error("Max-Forwards exhausted")]
    MaxForwardsExhausted,
    /// `extra_headers` is not a sequence of complete CRLF-terminated lines.
    #[error("extra headers must be CRLF-terminated lines")]
    BadExtraHeaders,
    /// A caller-supplied value would break the message (whitespace, CR/LF, brackets).
    #[error("invalid value for {0}")]
    BadInput(&'static str),
    /// Two operations that cannot be combined.
    #[error("conflicting operations: {0}")]
    Conflict(&'static str),
    /// The result would exceed [`MAX_MESSAGE_SIZE`].
    #[error("output larger than {MAX_MESSAGE_SIZE} bytes")]
    TooLarge,
}

/// The Via a proxy adds on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaSpec<'a> {
    /// Transport token, e.g. `UDP`.
    pub transport: &'a str,
    /// Host or IP; an IPv6 address is bracketed automatically.
    pub host: &'a str,
    /// Port (always written).
    pub port: u16,
    /// Branch, including the `z9hG4bK` magic cookie.
    pub branch: &'a str,
}

/// What to change when forwarding. `ForwardOps::default()` copies the message unchanged
/// (apart from fixing Content-Length).
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOps<'a> {
    /// Replace the Request-URI.
    pub request_uri: Option<&'a str>,
    /// Remove the top via-parm (the whole line if it is the only value in it).
    pub remove_top_via: bool,
    /// Add this Via on top.
    pub add_via: Option<ViaSpec<'a>>,
    /// RFC 3581: on the received top Via, set `received=IP` and `rport=PORT` (replacing
    /// any existing values). Cannot be combined with `remove_top_via`.
    pub top_via_received: Option<(IpAddr, u16)>,
    /// Remove this many Route values from the top (loose-routing past ourselves: 1, or 2
    /// after a double Record-Route, RFC 5658). At most [`MAX_REMOVED_ROUTES`].
    pub remove_routes: u8,
    /// Route URIs to put on top, in order (each written as `Route: <uri>`).
    pub push_routes: &'a [&'a str],
    /// Record-Route URIs to add on top, in order (each written as `Record-Route: <uri>`;
    /// include `;lr`): one, or two when the request changes interface (RFC 5658).
    pub record_routes: &'a [&'a str],
    /// Decrement Max-Forwards; an absent header is written as `Max-Forwards: 69`.
    pub decrement_max_forwards: bool,
    /// Header lines of `msg` to leave out (their `Header::line` spans), e.g. the proxy's own
    /// credentials once used (Kamailio's `consume_credentials`).
    pub drop_lines: &'a [Span],
    /// Raw `Name: value\r\n` lines appended after the received headers.
    pub extra_headers: &'a [u8],
    /// Replace the body.
    pub body: Option<&'a [u8]>,
}

/// Most Route values [`ForwardOps::remove_routes`] removes.
pub const MAX_REMOVED_ROUTES: usize = 2;

enum Edit<'b> {
    CutElement(Span),
    /// Remove the element `.1` and every element of the line before it (top Routes).
    CutThrough(Span),
    Received(Via<'b>, IpAddr, u16),
    MaxForwards(u32),
    Drop,
}

/// Writes the forwarded copy of `msg` into `out` (cleared first).
pub fn write_forward(
    msg: &Message,
    ops: &ForwardOps,
    out: &mut Vec<u8>,
) -> Result<(), RewriteError> {
    out.clear();
    if ops.remove_top_via && ops.top_via_received.is_some() {
        return Err(RewriteError::Conflict(
            "remove_top_via with top_via_received",
        ));
    }
    let request_only = ops.request_uri.is_some()
        || ops.decrement_max_forwards
        || ops.remove_routes > 0
        || !ops.push_routes.is_empty();
    if request_only && !msg.is_request() {
        return Err(RewriteError::NotARequest);
    }
    check_extra(ops.extra_headers)?;
    let via_edit = if ops.remove_top_via {
        Some(Edit::CutElement(msg.top_via()?.span))
    } else if let Some((ip, port)) = ops.top_via_received {
        Some(Edit::Received(msg.top_via()?, ip, port))
    } else {
        None
    };
    if usize::from(ops.remove_routes) > MAX_REMOVED_ROUTES {
        return Err(RewriteError::BadInput("remove_routes"));
    }
    // The top Route values to remove (a prefix of the Route list).
    let mut route_cuts = [Span::default(); MAX_REMOVED_ROUTES];
    let mut n_route_cuts = 0;
    for r in msg.routes().take(usize::from(ops.remove_routes)) {
        route_cuts[n_route_cuts] = r?.span;
        n_route_cuts += 1;
    }
    let mut route_cuts = &route_cuts[..n_route_cuts];
    let max_forwards = match ops.decrement_max_forwards {
        true => match msg.max_forwards()? {
            Some(0) => return Err(RewriteError::MaxForwardsExhausted),
            other => Some(other.map(|n| n - 1)),
        },
        false => None,
    };
    let buf = msg.buf;
    let copy =
        |out: &mut Vec<u8>, s: usize, e: usize| out.extend_from_slice(buf.get(s..e).unwrap_or(&[]));

    // Start line.
    let sl = msg.start_line;
    match ops.request_uri {
        Some(uri) => {
            check_uri(uri, "request_uri")?;
            copy(out, sl.start as usize, msg.uri_span.start as usize);
            out.extend_from_slice(uri.as_bytes());
            copy(out, msg.uri_span.end as usize, sl.end as usize);
        }
        None => copy(out, sl.start as usize, sl.end as usize),
    }

    // New topmost lines.
    if let Some(v) = &ops.add_via {
        write_via(out, v)?;
    }
    for rr in ops.record_routes {
        check_uri(rr, "record_route")?;
        write_addr_line(out, b"Record-Route: <", rr);
    }
    for r in ops.push_routes {
        check_uri(r, "push_routes")?;
        write_addr_line(out, b"Route: <", r);
    }
    if max_forwards == Some(None) {
        out.extend_from_slice(b"Max-Forwards: 69\r\n");
    }

    // Received lines, copied in runs.
    let body = ops.body.unwrap_or(msg.body);
    let keep_cl = ops.body.is_none() && msg.content_length == Some(body.len());
    let mut via_edit = via_edit;
    let mut mf_done = false;
    let mut run = sl.end as usize;
    for h in msg.headers {
        let edit = match h.name {
            HeaderName::Via => take_if_in_line(&mut via_edit, h.line),
            HeaderName::Route => take_routes_in_line(&mut route_cuts, h.line),
            HeaderName::MaxForwards if !mf_done => {
                mf_done = true;
                max_forwards.flatten().map(Edit::MaxForwards)
            }
            HeaderName::ContentLength if !keep_cl => Some(Edit::Drop),
            _ if ops.drop_lines.contains(&h.line) => Some(Edit::Drop),
            _ => None,
        };
        let Some(edit) = edit else { continue };
        copy(out, run, h.line.start as usize);
        run = h.line.end as usize;
        let (ls, le) = (h.line.start as usize, h.line.end as usize);
        match edit {
            Edit::Drop => {}
            Edit::MaxForwards(n) => {
                out.extend_from_slice(b"Max-Forwards: ");
                push_u64(out, u64::from(n));
                out.extend_from_slice(b"\r\n");
            }
            Edit::CutElement(span) => {
                let (cut_start, cut_end) = element_cut(buf, span, le);
                if let Some(cut_end) = cut_end {
                    copy(out, ls, cut_start);
                    copy(out, cut_end, le);
                }
            }
            Edit::CutThrough(last) => {
                // The line's elements up to `last` go; the line goes if none is left.
                let (_, cut_end) = element_cut(buf, last, le);
                if let Some(cut_end) = cut_end {
                    let value_start = ls + header_value_offset(buf, ls, le);
                    copy(out, ls, value_start);
                    copy(out, cut_end, le);
                }
            }
            Edit::Received(via, ip, port) => write_via_received(out, buf, &via, ip, port, ls, le),
        }
    }
    let head_end = msg
        .headers
        .last()
        .map_or(sl.end as usize, |h| h.line.end as usize);
    copy(out, run, head_end);
    finish(out, ops.extra_headers, keep_cl, body)
}

/// Copies the Via header line `buf[ls..le]` whose element `via` gets `received=ip` and
/// `rport=port` (replacing any values it had), keeping its other parameters and elements.
pub(crate) fn write_via_received(
    out: &mut Vec<u8>,
    buf: &[u8],
    via: &Via<'_>,
    ip: IpAddr,
    port: u16,
    ls: usize,
    le: usize,
) {
    let copy =
        |out: &mut Vec<u8>, s: usize, e: usize| out.extend_from_slice(buf.get(s..e).unwrap_or(&[]));
    let span = via.span;
    let params_start = match via.params.is_empty() {
        true => span.end as usize,
        false => offset_of(buf, via.params.raw()),
    };
    copy(out, ls, params_start);
    for p in via.params.items() {
        if !p.name.eq_ignore_ascii_case("received") && !p.name.eq_ignore_ascii_case("rport") {
            out.push(b';');
            out.extend_from_slice(p.raw.as_bytes());
        }
    }
    out.extend_from_slice(b";received=");
    push_ip(out, ip);
    out.extend_from_slice(b";rport=");
    push_u64(out, u64::from(port));
    copy(out, span.end as usize, le);
}

/// Appends extra headers, Content-Length (unless the received one is kept), the blank
/// line and the body; checks the size limit.
pub(crate) fn finish(
    out: &mut Vec<u8>,
    extra: &[u8],
    keep_cl: bool,
    body: &[u8],
) -> Result<(), RewriteError> {
    out.extend_from_slice(extra);
    if !keep_cl {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    if out.len() > MAX_MESSAGE_SIZE {
        return Err(RewriteError::TooLarge);
    }
    Ok(())
}

fn take_if_in_line<'b>(edit: &mut Option<Edit<'b>>, line: Span) -> Option<Edit<'b>> {
    let span = match edit {
        Some(Edit::CutElement(s)) => *s,
        Some(Edit::Received(v, _, _)) => v.span,
        _ => return None,
    };
    if span.start >= line.start && span.start < line.end {
        edit.take()
    } else {
        None
    }
}

/// The Route values of `cuts` that lie in `line` (always a prefix of `cuts`, since the top
/// Routes are removed) become one cut through the last of them.
fn take_routes_in_line<'b>(cuts: &mut &[Span], line: Span) -> Option<Edit<'b>> {
    let in_line = cuts
        .iter()
        .take_while(|s| s.start >= line.start && s.start < line.end)
        .count();
    if in_line == 0 {
        return None;
    }
    let last = cuts[in_line - 1];
    *cuts = &cuts[in_line..];
    Some(Edit::CutThrough(last))
}

/// Offset, from the line start `ls`, of the first byte of the header value (after the
/// colon and any LWS).
fn header_value_offset(buf: &[u8], ls: usize, le: usize) -> usize {
    let line = buf.get(ls..le).unwrap_or(&[]);
    let colon = line.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    let ws = line[colon..]
        .iter()
        .position(|&b| !is_lws(b))
        .unwrap_or(line.len() - colon);
    colon + ws
}

/// Bytes to cut for removing the list element at `span` from its line ending at
/// `line_end`: the element plus the following comma and LWS. `None` as the end means the
/// element is the line's only remaining value, so the whole line goes.
fn element_cut(buf: &[u8], span: Span, line_end: usize) -> (usize, Option<usize>) {
    let after = buf.get(span.end as usize..line_end).unwrap_or(&[]);
    let ws = after
        .iter()
        .position(|&b| !is_lws(b))
        .unwrap_or(after.len());
    if after.get(ws) != Some(&b',') {
        return (span.start as usize, None);
    }
    let rest = after.get(ws + 1..).unwrap_or(&[]);
    let ws2 = rest.iter().position(|&b| !is_lws(b)).unwrap_or(rest.len());
    (span.start as usize, Some(span.end as usize + ws + 1 + ws2))
}

fn write_via(out: &mut Vec<u8>, v: &ViaSpec) -> Result<(), RewriteError> {
    if !is_token_str(v.transport.as_bytes()) {
        return Err(RewriteError::BadInput("add_via.transport"));
    }
    if !is_token_str(v.branch.as_bytes()) {
        return Err(RewriteError::BadInput("add_via.branch"));
    }
    let host_ok = !v.host.is_empty()
        && v.host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if !host_ok {
        return Err(RewriteError::BadInput("add_via.host"));
    }
    out.extend_from_slice(b"Via: SIP/2.0/");
    out.extend_from_slice(v.transport.as_bytes());
    out.push(b' ');
    let bracket = v.host.contains(':') && !v.host.starts_with('[');
    if bracket {
        out.push(b'[');
    }
    out.extend_from_slice(v.host.as_bytes());
    if bracket {
        out.push(b']');
    }
    out.push(b':');
    push_u64(out, u64::from(v.port));
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(v.branch.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes an IP address: IPv4 digit by digit; IPv6 through `Display`, which formats on
/// the stack (writing into a `Vec` with spare capacity does not allocate).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn write_addr_line(out: &mut Vec<u8>, prefix: &[u8], uri: &str) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(uri.as_bytes());
    out.extend_from_slice(b">\r\n");
}

/// A URI we write must not contain whitespace, controls, quotes or angle brackets.
pub(crate) fn check_uri(uri: &str, what: &'static str) -> Result<(), RewriteError> {
    let ok = uri.contains(':')
        && uri
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && b != b'<' && b != b'>' && b != b'"');
    if ok {
        Ok(())
    } else {
        Err(RewriteError::BadInput(what))
    }
}

/// Extra headers must be complete lines, each `token ":" ...` and CRLF-terminated, with
/// no bare CR/LF inside (no header injection).
pub(crate) fn check_extra(extra: &[u8]) -> Result<(), RewriteError> {
    let mut rest = extra;
    while !rest.is_empty() {
        let lf = memchr::memchr(b'\n', rest).ok_or(RewriteError::BadExtraHeaders)?;
        let line = rest.get(..lf).unwrap_or(&[]);
        let Some(content) = line.strip_suffix(b"\r") else {
            return Err(RewriteError::BadExtraHeaders);
        };
        let name_len = content
            .iter()
            .position(|&b| b == b':')
            .ok_or(RewriteError::BadExtraHeaders)?;
        if !is_token_str(content.get(..name_len).unwrap_or(&[])) || content.contains(&b'\r') {
            return Err(RewriteError::BadExtraHeaders);
        }
        rest = rest.get(lf + 1..).unwrap_or(&[]);
    }
    Ok(())
}
