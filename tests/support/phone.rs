//! A minimal SIP user agent on a plain `UdpSocket`, for the flows sipp cannot express easily:
//! it writes requests as text, reads responses with a bounded wait, and answers digest
//! challenges (MD5, qop=auth when offered) the way a phone does.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// A received SIP message, kept as text.
#[derive(Debug, Clone)]
pub struct SipMsg {
    pub text: String,
    pub from: SocketAddr,
}

impl SipMsg {
    /// The first line.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        let rest = self.start_line().strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The request method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.code().is_some() {
            return None;
        }
        self.start_line().split(' ').next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }

    /// The To tag (empty if none).
    pub fn to_tag(&self) -> &str {
        self.header("To")
            .and_then(|to| to.split(";tag=").nth(1))
            .map(|t| t.split(';').next().unwrap_or(t))
            .unwrap_or("")
    }

    /// A response to this request (RFC 3261 §8.2.6): every Via, From, To (with `to_tag`
    /// added when it has none), Call-ID and CSeq copied in order, then `extra` header lines.
    pub fn reply(&self, code: u16, reason: &str, to_tag: &str, extra: &str) -> String {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for line in self
            .text
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
        {
            let Some((name, _)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                "to" | "t" => {
                    out.push_str(line);
                    if !line.contains(";tag=") && !to_tag.is_empty() {
                        out.push_str(";tag=");
                        out.push_str(to_tag);
                    }
                    out.push_str("\r\n");
                }
                _ => {}
            }
        }
        out.push_str(extra);
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }
}

/// A UDP endpoint playing a phone (or Asterisk) on loopback.
pub struct Phone {
    sock: UdpSocket,
    pub addr: SocketAddr,
}

impl Phone {
    pub fn bind(ip: Ipv4Addr) -> Phone {
        let sock = UdpSocket::bind((ip, 0)).expect("bind the phone socket");
        let addr = sock.local_addr().expect("phone address");
        Phone { sock, addr }
    }

    pub fn send(&self, to: SocketAddr, text: &str) {
        self.sock
            .send_to(text.as_bytes(), to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }

    /// Sends raw bytes (torture messages need not be UTF-8).
    pub fn send_bytes(&self, to: SocketAddr, data: &[u8]) {
        self.sock
            .send_to(data, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }

    /// The next datagram, or `None` once `deadline` has passed.
    pub fn recv_until(&self, deadline: Instant) -> Option<SipMsg> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                return Some(SipMsg { text, from });
            }
        }
    }

    /// Receives until a response with `code` and CSeq `cseq` (e.g. `"2 INVITE"`) arrives
    /// within `limit`; other messages are recorded in `seen` (start line, CSeq) and skipped.
    pub fn expect_response(
        &self,
        code: u16,
        cseq: &str,
        limit: Duration,
        seen: &mut Vec<String>,
    ) -> SipMsg {
        self.expect(|m| m.code() == Some(code), cseq, limit, seen)
            .unwrap_or_else(|| panic!("no {code} to {cseq} within {limit:?}; got {seen:?}"))
    }

    /// Receives until a final response (≥ 200) with CSeq `cseq` arrives within `limit`;
    /// provisional responses and other messages are recorded in `seen` and skipped.
    pub fn expect_final(&self, cseq: &str, limit: Duration, seen: &mut Vec<String>) -> SipMsg {
        self.expect(|m| m.code().is_some_and(|c| c >= 200), cseq, limit, seen)
            .unwrap_or_else(|| panic!("no final response to {cseq} within {limit:?}; got {seen:?}"))
    }

    fn expect(
        &self,
        want: impl Fn(&SipMsg) -> bool,
        cseq: &str,
        limit: Duration,
        seen: &mut Vec<String>,
    ) -> Option<SipMsg> {
        let deadline = Instant::now() + limit;
        while let Some(m) = self.recv_until(deadline) {
            let m_cseq = m.header("CSeq").unwrap_or("");
            if want(&m) && m_cseq.split_whitespace().eq(cseq.split_whitespace()) {
                return Some(m);
            }
            seen.push(format!("{} ({m_cseq})", m.start_line()));
        }
        None
    }

    /// Receives until a request `method` arrives within `limit` (others are skipped).
    pub fn expect_request(&self, method: &str, limit: Duration) -> SipMsg {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(m) = self.recv_until(deadline) {
            if m.method() == Some(method) {
                return m;
            }
            seen.push(m.start_line().to_owned());
        }
        panic!("no {method} request within {limit:?}; received instead: {seen:?}");
    }
}

/// The parameters of one `Digest` challenge.
#[derive(Debug, Default)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub qop_auth: bool,
    pub algorithm: Option<String>,
}

/// Parses `Digest k=v, k="v", ...` (quoted values may contain commas).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let rest = value.trim().strip_prefix("Digest")?.trim_start();
    let mut ch = Challenge::default();
    let mut chars = rest.char_indices().peekable();
    let mut params = Vec::new();
    let (mut key, mut val, mut in_key, mut quoted) = (String::new(), String::new(), true, false);
    while let Some((_, c)) = chars.next() {
        match (in_key, quoted, c) {
            (true, _, '=') => in_key = false,
            (true, _, ',') => key.clear(),
            (true, _, c) if !c.is_whitespace() => key.push(c),
            (false, false, '"') if val.is_empty() => quoted = true,
            (false, true, '"') => quoted = false,
            (false, true, '\\') => {
                if let Some((_, e)) = chars.next() {
                    val.push(e);
                }
            }
            (false, false, ',') => {
                params.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                in_key = true;
            }
            (false, false, c) if c.is_whitespace() => {}
            (false, _, c) => val.push(c),
            _ => {}
        }
    }
    if !key.is_empty() {
        params.push((key, val));
    }
    for (k, v) in params {
        match k.to_ascii_lowercase().as_str() {
            "realm" => ch.realm = v,
            "nonce" => ch.nonce = v,
            "opaque" => ch.opaque = Some(v),
            "qop" => ch.qop_auth = v.split(',').any(|q| q.trim() == "auth"),
            "algorithm" => ch.algorithm = Some(v),
            _ => {}
        }
    }
    (!ch.nonce.is_empty()).then_some(ch)
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The credentials value answering `ch` (RFC 2617/7616 MD5; qop=auth when offered).
pub fn digest_credentials(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{}:{password}", ch.realm));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let (nc, cnonce) = ("00000001", "0a4f113b");
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm=MD5",
        ch.realm, ch.nonce
    );
    let response = if ch.qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    out.push_str(&format!(", response=\"{response}\""));
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(", opaque=\"{o}\""));
    }
    out
}

/// Answers the MD5 challenge in `resp` (header `header`, e.g. `Proxy-Authenticate`).
pub fn answer_challenge(
    resp: &SipMsg,
    header: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let ch = resp
        .headers(header)
        .into_iter()
        .filter_map(parse_challenge)
        .find(|c| !matches!(c.algorithm.as_deref(), Some(a) if !a.eq_ignore_ascii_case("MD5")))
        .unwrap_or_else(|| panic!("no MD5 {header} in {}", resp.text));
    digest_credentials(&ch, user, password, method, uri)
}
