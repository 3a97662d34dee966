//! Writes the generator's SIP messages into caller-owned buffers (cleared first; no
//! allocation once a buffer has grown to message size): requests of the phones and of the
//! Asterisk side, the phone's responses to INVITE/BYE, and the Route set of a dialog.

use super::sip::{split_list, Msg};
use std::io::Write as _;

/// The SDP offer/answer every INVITE and 200 carries (one PCMU stream; never used for media).
pub const SDP: &[u8] = b"v=0\r\no=loadgen 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// One request. Values are written verbatim; `branch` gets the `z9hG4bK` magic cookie.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub request_uri: &'a [u8],
    /// `ip:port` of the sending socket (Via sent-by, with `;rport`).
    pub local: &'a [u8],
    /// The Via transport (`UDP`, `TCP`, `TLS`).
    pub transport: &'a [u8],
    pub branch: &'a [u8],
    /// Whole From / To values (URI in `<>`, parameters such as tag).
    pub from: &'a [u8],
    pub to: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    /// Contact URI, if any.
    pub contact: Option<&'a [u8]>,
    pub expires: Option<u32>,
    /// Raw header lines (`Route: ..\r\n`, `Authorization: ..\r\n`), written as they are.
    pub extra: &'a [u8],
    pub sdp: bool,
}

/// Writes `r` into `out`.
pub fn write_request(out: &mut Vec<u8>, r: &Request<'_>) {
    out.clear();
    for p in [
        r.method,
        b" ",
        r.request_uri,
        b" SIP/2.0\r\nVia: SIP/2.0/",
        r.transport,
        b" ",
        r.local,
    ] {
        out.extend_from_slice(p);
    }
    for p in [
        &b";branch=z9hG4bK"[..],
        r.branch,
        b";rport\r\nMax-Forwards: 70\r\nFrom: ",
        r.from,
    ] {
        out.extend_from_slice(p);
    }
    for p in [
        &b"\r\nTo: "[..],
        r.to,
        b"\r\nCall-ID: ",
        r.call_id,
        b"\r\nCSeq: ",
    ] {
        out.extend_from_slice(p);
    }
    let _ = write!(out, "{} ", r.cseq);
    out.extend_from_slice(r.method);
    out.extend_from_slice(b"\r\n");
    if let Some(c) = r.contact {
        out.extend_from_slice(b"Contact: <");
        out.extend_from_slice(c);
        out.extend_from_slice(b">\r\n");
    }
    if let Some(e) = r.expires {
        let _ = write!(out, "Expires: {e}\r\n");
    }
    out.extend_from_slice(r.extra);
    out.extend_from_slice(b"User-Agent: sipfront-loadgen\r\n");
    write_body(out, r.sdp);
}

fn write_body(out: &mut Vec<u8>, sdp: bool) {
    if sdp {
        let _ = write!(
            out,
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            SDP.len()
        );
        out.extend_from_slice(SDP);
    } else {
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
}

/// A response to `req` (the phone's side): Via, Record-Route (for INVITE), From, Call-ID and
/// CSeq copied; To copied with `;tag=to_tag` added when it has none; optional Contact and SDP.
pub fn write_response(
    out: &mut Vec<u8>,
    req: &Msg<'_>,
    status: &[u8],
    to_tag: &[u8],
    contact: Option<&[u8]>,
    sdp: bool,
) {
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    let invite = req.method == b"INVITE";
    for h in req.headers() {
        let name: &[u8] = if h.name.eq_ignore_ascii_case(b"via") {
            b"Via"
        } else if h.name.eq_ignore_ascii_case(b"record-route") && invite {
            b"Record-Route"
        } else if h.name.eq_ignore_ascii_case(b"from") {
            b"From"
        } else if h.name.eq_ignore_ascii_case(b"call-id") {
            b"Call-ID"
        } else if h.name.eq_ignore_ascii_case(b"cseq") {
            b"CSeq"
        } else if h.name.eq_ignore_ascii_case(b"to") {
            b"To"
        } else {
            continue;
        };
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        if name == b"To" && req.to_tag().is_none() {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag);
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(c) = contact {
        out.extend_from_slice(b"Contact: <");
        out.extend_from_slice(c);
        out.extend_from_slice(b">\r\n");
    }
    write_body(out, sdp);
}

/// Appends the UAC's Route set for a dialog: the 2xx's Record-Route entries, reversed, as
/// `Route:` lines (RFC 3261 §12.1.2).
pub fn write_route_set(out: &mut Vec<u8>, resp: &Msg<'_>) {
    let mut entries: [&[u8]; 16] = [b""; 16];
    let mut n = 0;
    for v in resp.all(b"record-route") {
        split_list(v, |e| {
            if let Some(slot) = entries.get_mut(n) {
                *slot = e;
                n += 1;
            }
        });
    }
    for e in entries.iter().take(n).rev() {
        out.extend_from_slice(b"Route: ");
        out.extend_from_slice(e);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_reader() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Request {
                method: b"REGISTER",
                request_uri: b"sip:sipfront.test",
                local: b"127.0.0.1:40000",
                transport: b"UDP",
                branch: b"lg1-2",
                from: b"<sip:1001@sipfront.test>;tag=f1",
                to: b"<sip:1001@sipfront.test>",
                call_id: b"lg1-2-3@lg",
                cseq: 2,
                contact: Some(b"sip:1001@127.0.0.1:40000"),
                expires: Some(3600),
                extra: b"Authorization: Digest x\r\n",
                sdp: false,
            },
        );
        let m = Msg::parse(&out).expect("parses");
        assert_eq!(
            (m.method, m.cseq, m.cseq_method),
            (&b"REGISTER"[..], 2, &b"REGISTER"[..])
        );
        assert_eq!(m.call_id, b"lg1-2-3@lg");
        assert_eq!(
            m.first(b"via"),
            Some(&b"SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKlg1-2;rport"[..])
        );
        assert_eq!(m.first(b"authorization"), Some(&b"Digest x"[..]));
        assert_eq!(m.contact_uri(), Some(&b"sip:1001@127.0.0.1:40000"[..]));
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_a_tag() {
        let req = b"INVITE sip:1001@127.0.0.1:40000 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKa\r\n\
            Record-Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:asterisk@127.0.0.2>;tag=a\r\n\
            To: <sip:1001@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 102 INVITE\r\nMax-Forwards: 69\r\n\r\n";
        let m = Msg::parse(req).expect("parses");
        let mut out = Vec::new();
        write_response(
            &mut out,
            &m,
            b"200 OK",
            b"ph7",
            Some(b"sip:1001@127.0.0.1:40000"),
            true,
        );
        let r = Msg::parse(&out).expect("parses");
        assert_eq!(r.code, 200);
        assert_eq!(r.all(b"via").count(), 2);
        assert_eq!(r.to_tag(), Some(&b"ph7"[..]));
        assert_eq!(
            r.first(b"record-route"),
            Some(&b"<sip:127.0.0.1:5060;lr>"[..])
        );
        assert!(r.first(b"max-forwards").is_none());
        assert_eq!(r.body, SDP);
    }

    #[test]
    fn route_set_is_reversed() {
        let resp = b"SIP/2.0 200 OK\r\nRecord-Route: <sip:a;lr>, <sip:b;lr>\r\nRecord-Route: <sip:c;lr>\r\n\
            Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        let m = Msg::parse(resp).expect("parses");
        let mut out = Vec::new();
        write_route_set(&mut out, &m);
        assert_eq!(
            out,
            b"Route: <sip:c;lr>\r\nRoute: <sip:b;lr>\r\nRoute: <sip:a;lr>\r\n"
        );
    }
}
