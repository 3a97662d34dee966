//! Message writers for the stand-in: responses built from a request, new requests, the SDP
//! body, and fresh tags/branches/Call-IDs.
//!
//! Every writer appends to a caller-owned `Vec<u8>` (the engine reuses one buffer per turn), so
//! building a message does not allocate once the buffer has grown. A message is written in two
//! steps: `begin_*` writes the start line and the headers the stand-in always copies, the caller
//! appends its own header lines, and [`finish`] writes Content-Type/Content-Length and the body.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

use super::parse::Msg;

/// Writes the status line and the headers a response copies from its request (every Via in
/// order, From, To with `to_tag` added when the To has none, Call-ID, CSeq).
pub fn begin_response(out: &mut Vec<u8>, req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) {
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for v in req.headers_named("Via") {
        let _ = write!(out, "Via: {v}\r\n");
    }
    if let Some(f) = req.header("From") {
        let _ = write!(out, "From: {f}\r\n");
    }
    if let Some(t) = req.header("To") {
        match to_tag {
            Some(tag) if req.to_tag().is_none() => {
                let _ = write!(out, "To: {t};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(out, "To: {t}\r\n");
            }
        }
    }
    if let Some(c) = req.call_id() {
        let _ = write!(out, "Call-ID: {c}\r\n");
    }
    if let Some(c) = req.header("CSeq") {
        let _ = write!(out, "CSeq: {c}\r\n");
    }
}

/// Writes a request line and our own Via (with `rport`) and Max-Forwards.
pub fn begin_request(out: &mut Vec<u8>, method: &str, uri: &str, local: SocketAddr, branch: &str) {
    let _ = write!(
        out,
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n"
    );
}

/// Ends a message: User-Agent, Content-Type (when there is a body), Content-Length, the body.
pub fn finish(out: &mut Vec<u8>, content_type: Option<&str>, body: &[u8]) {
    out.extend_from_slice(b"User-Agent: asterisk-standin\r\n");
    if let (Some(ct), false) = (content_type, body.is_empty()) {
        let _ = write!(out, "Content-Type: {ct}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

/// The SDP offer/answer the stand-in uses when it answers a call itself.
pub fn sdp(local: SocketAddr) -> Vec<u8> {
    let ip = local.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=standin 1 1 IN {family} {ip}\r\ns=asterisk-standin\r\nc=IN {family} {ip}\r\n\
t=0 0\r\nm=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// The answer to a WebRTC offer (an `UDP/TLS/RTP/SAVPF` audio line in the body of
/// `invite`), shaped like Asterisk's with `webrtc=yes`: ICE credentials, a DTLS
/// fingerprint, `a=setup:active`, `rtcp-mux`, the offer's `mid` (and BUNDLE group) and its
/// first audio payload type. No candidates: no media is meant to flow, but a browser accepts
/// the description and the call is set up. `None` for any other offer.
pub fn webrtc_answer(invite: &[u8], local: SocketAddr) -> Option<Vec<u8>> {
    let start = invite.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let offer = std::str::from_utf8(&invite[start..]).ok()?;
    let mline = offer
        .lines()
        .find(|l| l.starts_with("m=audio ") && l.contains(" UDP/TLS/RTP/SAVPF "))?;
    let pt = mline.split_whitespace().nth(3)?;
    let attr = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let mid = attr("a=mid:").unwrap_or("0");
    let rtpmap = offer
        .lines()
        .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{pt} ")))
        .unwrap_or("opus/48000/2")
        .trim();
    let ip = local.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let bundle = if attr("a=group:BUNDLE").is_some() {
        format!("a=group:BUNDLE {mid}\r\n")
    } else {
        String::new()
    };
    let fingerprint = (0..32)
        .map(|i| format!("{:02X}", (i * 7 + 3) as u8))
        .collect::<Vec<_>>()
        .join(":");
    Some(
        format!(
            "v=0\r\no=standin 1 1 IN {family} {ip}\r\ns=asterisk-standin\r\nt=0 0\r\n{bundle}\
m=audio 10000 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN {family} {ip}\r\na=rtpmap:{pt} {rtpmap}\r\n\
a=mid:{mid}\r\na=ice-ufrag:stdn\r\na=ice-pwd:asteriskstandinicepwd000\r\n\
a=fingerprint:sha-256 {fingerprint}\r\na=setup:active\r\na=rtcp-mux\r\na=sendrecv\r\n"
        )
        .into_bytes(),
    )
}

/// Generator of tags, branches and Call-IDs unique to this process.
#[derive(Debug, Clone)]
pub struct Ids {
    prefix: u32,
    next: u64,
}

impl Ids {
    pub fn new(seed: u64) -> Self {
        // Fold the seed so two stand-ins started together rarely share a prefix.
        let prefix = (seed ^ (seed >> 32)).wrapping_mul(0x9E37_79B9) as u32;
        Ids { prefix, next: 1 }
    }

    fn bump(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }

    /// A To/From tag.
    pub fn tag(&mut self) -> String {
        let n = self.bump();
        let mut s = String::with_capacity(20);
        let _ = write!(s, "as{:08x}{n:x}", self.prefix);
        s
    }

    /// An RFC 3261 branch (magic cookie prefix).
    pub fn branch(&mut self) -> String {
        let n = self.bump();
        let mut s = String::with_capacity(28);
        let _ = write!(s, "z9hG4bKas{:08x}{n:x}", self.prefix);
        s
    }

    /// A Call-ID at our address.
    pub fn call_id(&mut self, local: SocketAddr) -> String {
        let n = self.bump();
        let mut s = String::with_capacity(40);
        let _ = write!(s, "{:08x}-{n:x}@{}", self.prefix, local.ip());
        s
    }

    /// A nonce for a digest challenge; [`Ids::is_our_nonce`] recognises it.
    pub fn nonce(&mut self) -> String {
        let n = self.bump();
        let mut s = String::with_capacity(24);
        let _ = write!(s, "{:08x}{n:016x}", self.prefix);
        s
    }

    pub fn is_our_nonce(&self, nonce: &str) -> bool {
        nonce.len() == 24
            && nonce.get(..8).and_then(|p| u32::from_str_radix(p, 16).ok()) == Some(self.prefix)
    }
}

/// A tag derived from a request's branch, so a retransmitted non-INVITE request gets the very
/// same response as the original without the stand-in keeping per-transaction state.
pub fn tag_for_branch(branch: &str) -> u64 {
    // FNV-1a: tiny and good enough to tell transactions apart.
    branch.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webrtc_offers_get_a_webrtc_answer_others_none() {
        let local: SocketAddr = "127.0.0.2:5080".parse().unwrap();
        let offer = "INVITE sip:600@x SIP/2.0\r\nContent-Length: 90\r\n\r\nv=0\r\n\
a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9\r\na=mid:0\r\n\
a=rtpmap:111 opus/48000/2\r\n";
        let a = String::from_utf8(webrtc_answer(offer.as_bytes(), local).unwrap()).unwrap();
        for line in [
            "m=audio 10000 UDP/TLS/RTP/SAVPF 111\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=group:BUNDLE 0\r\n",
            "a=mid:0\r\n",
            "a=setup:active\r\n",
            "a=rtcp-mux\r\n",
        ] {
            assert!(a.contains(line), "{line} in {a}");
        }
        let plain = "INVITE sip:600@x SIP/2.0\r\n\r\nv=0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(webrtc_answer(plain.as_bytes(), local), None);
        assert_eq!(
            webrtc_answer(b"INVITE sip:600@x SIP/2.0\r\n\r\n", local),
            None
        );
    }

    #[test]
    fn response_copies_vias_and_adds_tag() {
        let req = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\n\
From: <sip:a@b>;tag=f\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let m = Msg::parse(req).unwrap();
        let mut out = Vec::new();
        begin_response(&mut out, &m, 200, "OK", Some("t1"));
        finish(&mut out, None, b"");
        let r = Msg::parse(&out).unwrap();
        assert_eq!(
            r.headers_named("Via").collect::<Vec<_>>(),
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b"]
        );
        assert_eq!(r.to_tag(), Some("t1"));
        assert_eq!(r.cseq(), Some((1, "OPTIONS")));
        assert_eq!(r.header("Content-Length"), Some("0"));
    }

    #[test]
    fn ids_are_unique_and_nonces_recognised() {
        let mut ids = Ids::new(42);
        let a = ids.tag();
        assert_ne!(a, ids.tag());
        assert!(ids.branch().starts_with("z9hG4bK"));
        let n = ids.nonce();
        assert!(ids.is_our_nonce(&n));
        assert!(!Ids::new(7).is_our_nonce(&n));
        assert!(!ids.is_our_nonce("zz"));
    }
}
