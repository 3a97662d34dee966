//! Messages the core writes itself: local responses (stateless or for a server transaction),
//! and the hop-by-hop ACK and CANCEL of a branch (RFC 3261 §17.1.1.3, §9.1), all into reused
//! buffers.

use crate::sip::{write_response_to, HeaderName, Message, ResponseSpec, EMPTY_HEADER, MAX_HEADERS};
use crate::util::fnv::hash_parts;

use super::{Core, Flow, Transmit};

/// A To-tag for a local response: derived from the request so that a retransmitted request
/// gets the same tag.
pub(super) struct Tag([u8; Tag::LEN]);

impl Tag {
    /// Length of a tag (16 hex digits).
    pub const LEN: usize = 16;

    pub fn for_request(msg: &Message<'_, '_>) -> Tag {
        // The raw first Via and From lines identify the request well enough (the tag only
        // has to be stable across retransmissions) and cost no parsing.
        let via = msg.header(HeaderName::Via).map_or(&b""[..], |h| h.value);
        let from = msg.header(HeaderName::From).map_or(&b""[..], |h| h.value);
        let h = hash_parts(&[msg.call_id().unwrap_or("").as_bytes(), from, via]);
        Tag(crate::util::hex::u64_fixed(h))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0")
    }
}

const ALLOW: &[u8] =
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, PUBLISH, INFO, REFER, UPDATE, PRACK\r\n";

impl Core {
    /// Answer `msg` statelessly back over the flow it came by.
    pub(super) fn reply(
        &mut self,
        msg: &Message<'_, '_>,
        to: Flow,
        code: u16,
        reason: &str,
        tx: &mut dyn Transmit,
    ) {
        self.reply_lines(msg, to, code, reason, b"", tx);
    }

    /// [`Core::reply`] with the header lines prepared in `self.extra`.
    pub(super) fn reply_with_extra(
        &mut self,
        msg: &Message<'_, '_>,
        to: Flow,
        code: u16,
        reason: &str,
        tx: &mut dyn Transmit,
    ) {
        let extra = std::mem::take(&mut self.extra);
        self.reply_lines(msg, to, code, reason, &extra, tx);
        self.extra = extra;
    }

    /// [`Core::reply`] with the header lines `extra` (each ending in CRLF).
    pub(super) fn reply_lines(
        &mut self,
        msg: &Message<'_, '_>,
        to: Flow,
        code: u16,
        reason: &str,
        extra: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let tag = Tag::for_request(msg);
        let spec = ResponseSpec {
            code,
            reason,
            to_tag: (code > 100).then(|| tag.as_str()),
            extra_headers: extra,
            body: b"",
        };
        self.out.clear();
        let received = Some((to.remote.ip(), to.remote.port()));
        let written = write_response_to(msg, &spec, received, &mut self.out).is_ok()
            || (code >= 400 && raw_error_response(msg, code, reason, &mut self.out));
        if written {
            self.count_response(code);
            tx.send(to, &self.out);
        }
    }

    /// A request the parser rejected still gets 400 (505 for another SIP version) when it
    /// looks like a SIP request with a Via to answer to (RFC 4475 §3.1.2); anything else is
    /// dropped. The answer copies the raw Via, From, To, Call-ID and CSeq lines.
    pub(super) fn reply_unparsed(
        &mut self,
        err: crate::sip::ParseError,
        to: Flow,
        data: &[u8],
        tx: &mut dyn Transmit,
    ) {
        use crate::sip::ParseError;
        let (code, reason) = match err {
            ParseError::BadVersion => (505, "Version Not Supported"),
            ParseError::TooLarge => (513, "Message Too Large"),
            ParseError::Empty | ParseError::Truncated => return,
            _ => (400, "Bad Request"),
        };
        self.out.clear();
        if raw_reply(data, code, reason, &mut self.out) {
            self.count_response(code);
            tx.send(to, &self.out);
        }
    }

    /// 503 with `Retry-After: secs`: a limit reached, shutting down, or no usable Asterisk
    /// node.
    pub(super) fn reply_503(
        &mut self,
        msg: &Message<'_, '_>,
        to: Flow,
        secs: u32,
        reason: &str,
        tx: &mut dyn Transmit,
    ) {
        self.extra.clear();
        self.extra.extend_from_slice(b"Retry-After: ");
        self.extra.extend_from_slice(itoa_buf(secs).as_bytes());
        self.extra.extend_from_slice(b"\r\n");
        self.reply_with_extra(msg, to, 503, reason, tx);
    }

    /// 200 to an OPTIONS addressed to the proxy (keep-alive pings).
    pub(super) fn reply_options(&mut self, msg: &Message<'_, '_>, to: Flow, tx: &mut dyn Transmit) {
        self.extra.clear();
        self.extra.extend_from_slice(ALLOW);
        self.extra.extend_from_slice(b"Accept: application/sdp\r\n");
        self.reply_with_extra(msg, to, 200, "OK", tx);
    }

    pub(super) fn count_response(&mut self, code: u16) {
        let class = usize::from(code / 100).min(6);
        self.stats.tx_responses[class] += 1;
    }

    /// Send a local response for server transaction `idx` and remember it for
    /// retransmissions (a final one starts the transaction's final-response timers).
    pub(super) fn respond_txn(
        &mut self,
        now_ms: u64,
        idx: u32,
        code: u16,
        reason: &str,
        tx: &mut dyn Transmit,
    ) {
        let Some(t) = self.txns.servers.get_mut(idx) else {
            return;
        };
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(req) = Message::parse_datagram(&t.request, &mut hdrs) else {
            return;
        };
        let tag = Tag::for_request(&req);
        let extra: &[u8] = if code == 503 {
            b"Retry-After: 5\r\n"
        } else {
            b""
        };
        let spec = ResponseSpec {
            code,
            reason,
            to_tag: (code > 100).then(|| tag.as_str()),
            extra_headers: extra,
            body: b"",
        };
        t.response.clear();
        let received = Some((t.from.remote.ip(), t.from.remote.port()));
        if write_response_to(&req, &spec, received, &mut t.response).is_err() {
            return;
        }
        t.response_code = code;
        tx.send(t.from, &t.response);
        if code >= 200 {
            self.txns.server_final_sent(idx, code, now_ms);
        }
        self.count_response(code);
    }

    /// Build the ACK (for a non-2xx final response, `to` = the response's To line) or the
    /// CANCEL (`to` = None) of the INVITE we sent on a branch, into `out`.
    pub(super) fn build_ack_or_cancel(
        invite: &[u8],
        response_to: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(req) = Message::parse_datagram(invite, &mut hdrs) else {
            return false;
        };
        let (Some(ruri), Ok(cseq)) = (req.request_uri(), req.cseq()) else {
            return false;
        };
        let method: &[u8] = if response_to.is_some() {
            b"ACK"
        } else {
            b"CANCEL"
        };
        out.clear();
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(ruri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        // Our Via is the first line of the first Via header we wrote.
        let Some(via) = req.header(HeaderName::Via) else {
            return false;
        };
        out.extend_from_slice(b"Via: ");
        let first_via = via.value.split(|&c| c == b',').next().unwrap_or(via.value);
        out.extend_from_slice(first_via.trim_ascii());
        out.extend_from_slice(b"\r\n");
        for h in req.headers {
            let copy = matches!(
                h.name,
                HeaderName::Route | HeaderName::From | HeaderName::CallId
            ) || (h.name == HeaderName::To && response_to.is_none());
            if copy {
                out.extend_from_slice(&invite[h.line.range()]);
            }
        }
        if let Some(to) = response_to {
            out.extend_from_slice(b"To: ");
            out.extend_from_slice(to);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"CSeq: ");
        out.extend_from_slice(itoa_buf(cseq.seq).as_bytes());
        out.push(b' ');
        out.extend_from_slice(method);
        out.extend_from_slice(b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
        true
    }
}

/// An error response to a request whose From, To or CSeq does not parse (RFC 4475's
/// malformed messages that still deserve a 400): the request's Via, From, To, Call-ID and
/// CSeq lines are copied as they came. Needs a Via line to go anywhere.
fn raw_error_response(msg: &Message<'_, '_>, code: u16, reason: &str, out: &mut Vec<u8>) -> bool {
    if msg.header(HeaderName::Via).is_none() || reason.bytes().any(|b| b < b' ') {
        return false;
    }
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(itoa_buf(u32::from(code)).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in msg.headers {
        if matches!(
            h.name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            out.extend_from_slice(msg.buf.get(h.line.range()).unwrap_or(b""));
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    true
}

/// The raw-line form of [`raw_error_response`] for a datagram that did not parse: only when
/// its first line is a request line of a method other than ACK ending in `SIP/…`, and a Via
/// line is found among the following lines.
fn raw_reply(data: &[u8], code: u16, reason: &str, out: &mut Vec<u8>) -> bool {
    let head_end = memchr::memmem::find(data, b"\r\n\r\n").unwrap_or(data.len());
    let head = &data[..head_end];
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(first) = lines.next() else {
        return false;
    };
    let first = first.trim_ascii();
    let is_request = first.first().is_some_and(u8::is_ascii_alphabetic)
        && first.windows(4).any(|w| w == b"SIP/")
        && !first.starts_with(b"SIP/")
        && !first.starts_with(b"ACK ");
    if !is_request {
        return false;
    }
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(itoa_buf(u32::from(code)).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut via = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let is = |long: &[u8], short: &[u8]| {
            name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)
        };
        let keep = is(b"via", b"v")
            || is(b"from", b"f")
            || is(b"to", b"t")
            || is(b"call-id", b"i")
            || is(b"cseq", b"cseq");
        if keep && line.len() < 4096 && !line.contains(&b'\r') {
            via |= is(b"via", b"v");
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    via
}

/// A u32 in decimal without allocating.
pub(super) struct ItoaBuf {
    buf: [u8; 10],
    start: usize,
}

impl ItoaBuf {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

pub(super) fn itoa_buf(mut v: u32) -> ItoaBuf {
    let mut b = ItoaBuf {
        buf: [0; 10],
        start: 10,
    };
    loop {
        b.start -= 1;
        b.buf[b.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || b.start == 0 {
            break;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa() {
        assert_eq!(itoa_buf(0).as_bytes(), b"0");
        assert_eq!(itoa_buf(4_294_967_295).as_bytes(), b"4294967295");
    }
}
