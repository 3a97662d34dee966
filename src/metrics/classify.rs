//! Cheap message classification for the latency histograms: request or response, and the
//! method class (INVITE, REGISTER, other) from the request line or the response's CSeq.
//! A byte peek, no parse and no allocation; anything unrecognised is "other".

/// The message classes latency is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgClass {
    RequestInvite = 0,
    RequestRegister = 1,
    RequestOther = 2,
    ResponseInvite = 3,
    ResponseRegister = 4,
    ResponseOther = 5,
}

impl MsgClass {
    /// Number of classes (histogram array length).
    pub const COUNT: usize = 6;

    /// Every class, in index order.
    pub const ALL: [MsgClass; MsgClass::COUNT] = [
        MsgClass::RequestInvite,
        MsgClass::RequestRegister,
        MsgClass::RequestOther,
        MsgClass::ResponseInvite,
        MsgClass::ResponseRegister,
        MsgClass::ResponseOther,
    ];

    /// `request` or `response`.
    pub fn kind(self) -> &'static str {
        if (self as u8) < 3 {
            "request"
        } else {
            "response"
        }
    }

    /// `INVITE`, `REGISTER` or `other`.
    pub fn method(self) -> &'static str {
        match self {
            MsgClass::RequestInvite | MsgClass::ResponseInvite => "INVITE",
            MsgClass::RequestRegister | MsgClass::ResponseRegister => "REGISTER",
            MsgClass::RequestOther | MsgClass::ResponseOther => "other",
        }
    }

    /// A stable label, e.g. `request_invite`.
    pub fn label(self) -> &'static str {
        match self {
            MsgClass::RequestInvite => "request_invite",
            MsgClass::RequestRegister => "request_register",
            MsgClass::RequestOther => "request_other",
            MsgClass::ResponseInvite => "response_invite",
            MsgClass::ResponseRegister => "response_register",
            MsgClass::ResponseOther => "response_other",
        }
    }

    fn response(method: Method3) -> MsgClass {
        match method {
            Method3::Invite => MsgClass::ResponseInvite,
            Method3::Register => MsgClass::ResponseRegister,
            Method3::Other => MsgClass::ResponseOther,
        }
    }

    fn request(method: Method3) -> MsgClass {
        match method {
            Method3::Invite => MsgClass::RequestInvite,
            Method3::Register => MsgClass::RequestRegister,
            Method3::Other => MsgClass::RequestOther,
        }
    }
}

#[derive(Clone, Copy)]
enum Method3 {
    Invite,
    Register,
    Other,
}

fn method3(token: &[u8]) -> Method3 {
    if token.starts_with(b"INVITE") && !token.get(6).is_some_and(u8::is_ascii_alphanumeric) {
        Method3::Invite
    } else if token.starts_with(b"REGISTER") && !token.get(8).is_some_and(u8::is_ascii_alphanumeric)
    {
        Method3::Register
    } else {
        Method3::Other
    }
}

/// Longest head scanned for the CSeq of a response.
const MAX_SCAN: usize = 4096;

/// The CSeq method token of a response, if found in its first [`MAX_SCAN`] bytes.
fn cseq_method(data: &[u8]) -> Option<&[u8]> {
    let head = data.get(..data.len().min(MAX_SCAN))?;
    for nl in memchr::memchr_iter(b'\n', head) {
        let line = head.get(nl + 1..)?;
        if line.first().is_some_and(|&b| b == b'\r' || b == b'\n') {
            return None; // end of headers
        }
        if line.len() < 5 || !line[..4].eq_ignore_ascii_case(b"cseq") {
            continue;
        }
        let rest = line.get(4..)?;
        let rest = trim_start(rest);
        let rest = rest.strip_prefix(b":")?;
        let rest = trim_start(rest);
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        return Some(trim_start(rest.get(digits..)?));
    }
    None
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    s.get(n..).unwrap_or(&[])
}

/// The class of one datagram (by its first bytes; the response's method from CSeq).
pub fn classify(data: &[u8]) -> MsgClass {
    if data.starts_with(b"SIP/") {
        MsgClass::response(cseq_method(data).map_or(Method3::Other, method3))
    } else {
        MsgClass::request(method3(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_by_method() {
        assert_eq!(
            classify(b"INVITE sip:x SIP/2.0\r\n"),
            MsgClass::RequestInvite
        );
        assert_eq!(
            classify(b"REGISTER sip:x SIP/2.0\r\n"),
            MsgClass::RequestRegister
        );
        assert_eq!(
            classify(b"INVITEX sip:x SIP/2.0\r\n"),
            MsgClass::RequestOther
        );
        assert_eq!(classify(b"BYE sip:x SIP/2.0\r\n"), MsgClass::RequestOther);
        assert_eq!(classify(b""), MsgClass::RequestOther);
    }

    #[test]
    fn responses_by_cseq() {
        let r = b"SIP/2.0 200 OK\r\nVia: x\r\ncseq:  12 REGISTER\r\n\r\n";
        assert_eq!(classify(r), MsgClass::ResponseRegister);
        let r = b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(classify(r), MsgClass::ResponseInvite);
        let r = b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n";
        assert_eq!(classify(r), MsgClass::ResponseOther);
        // CSeq-like text in the body does not count.
        let r = b"SIP/2.0 200 OK\r\nVia: x\r\n\r\nCSeq: 1 INVITE\r\n";
        assert_eq!(classify(r), MsgClass::ResponseOther);
        assert_eq!(classify(b"SIP/2.0 200"), MsgClass::ResponseOther);
        assert_eq!(classify(b"SIP/2.0 200\nCSeq"), MsgClass::ResponseOther);
    }

    #[test]
    fn labels_are_distinct() {
        let mut l: Vec<_> = MsgClass::ALL.iter().map(|c| c.label()).collect();
        l.dedup();
        assert_eq!(l.len(), MsgClass::COUNT);
        assert!(MsgClass::ALL
            .iter()
            .enumerate()
            .all(|(i, c)| *c as usize == i));
    }
}
