//! The REGISTER sent to Asterisk, byte for byte as the seed's tutorial builds it.
//!
//! ```text
//! REGISTER sip:<asterisk ip>:<port> SIP/2.0
//! Via: SIP/2.0/<transport> <proxy host>:<port>;branch=<branch>;rport
//! Max-Forwards: 70
//! From: <sip:<user>@<asterisk ip>>;tag=<tag>
//! To: <sip:<user>@<asterisk ip>>
//! Call-ID: <per-user call-id>
//! CSeq: <n> REGISTER
//! Contact: <sip:<user>@<advertise host>:<port>>
//! Expires: <granted expiry>
//! [Authorization: ... (answer to Asterisk's 401/407)]
//! User-Agent: <ua>
//! Content-Length: 0
//! ```
//! Written into a caller-owned buffer (cleared first); no allocation when it has room.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// Why a REGISTER could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The user name has characters not allowed in a SIP URI user part.
    #[error("user name not usable in a SIP URI")]
    BadUser,
    /// Branch, Call-ID, tag or User-Agent contains CR, LF or is empty where it must not be.
    #[error("header value not usable: {0}")]
    BadValue(&'static str),
    /// The Authorization bytes are not complete header lines ending in CRLF.
    #[error("authorization must be complete header lines ending in CRLF")]
    BadAuthorization,
}

/// Everything one forwarded REGISTER needs.
#[derive(Debug, Clone, Copy)]
pub struct RegisterMsg<'a> {
    /// The Asterisk node (request URI and host of From/To).
    pub node: SocketAddr,
    /// The authenticated user.
    pub user: &'a str,
    /// `host:port` Asterisk is told to reach the phone at (the proxy's).
    pub advertise: &'a str,
    /// Our Via: transport token (`UDP`), sent-by host (IPv6 in brackets) and port.
    pub via: Via<'a>,
    /// Complete branch value, `z9hG4bK...`.
    pub branch: &'a str,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub cseq: u32,
    pub expires: u32,
    pub user_agent: &'a str,
    /// Complete header line(s), e.g. `Authorization: Digest ...\r\n`, computed by the caller.
    pub authorization: Option<&'a [u8]>,
}

/// The Via the proxy puts on a REGISTER it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// RFC 3261 user part: unreserved / escaped / user-unreserved.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 256
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
}

fn token_ok(v: &str) -> bool {
    !v.is_empty() && !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == b' ')
}

/// `1.2.3.4` or `[::1]` for URIs.
struct UriHost(IpAddr);

impl std::fmt::Display for UriHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Write the REGISTER into `out` (cleared first).
pub fn write_register(m: &RegisterMsg<'_>, out: &mut Vec<u8>) -> Result<(), BuildError> {
    if !valid_user(m.user) {
        return Err(BuildError::BadUser);
    }
    for (name, v) in [
        ("branch", m.branch),
        ("call_id", m.call_id),
        ("from_tag", m.from_tag),
        ("advertise", m.advertise),
        ("via.transport", m.via.transport),
        ("via.host", m.via.host),
    ] {
        if !token_ok(v) {
            return Err(BuildError::BadValue(name));
        }
    }
    if m.user_agent.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(BuildError::BadValue("user_agent"));
    }
    if let Some(a) = m.authorization {
        let ok = a.ends_with(b"\r\n")
            && a.len() > 2
            && !a
                .windows(2)
                .enumerate()
                .any(|(i, w)| w == b"\r\n" && a.get(i + 2) == Some(&b'\r'));
        if !ok {
            return Err(BuildError::BadAuthorization);
        }
    }
    out.clear();
    let host = UriHost(m.node.ip());
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "REGISTER sip:{node} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {via_host}:{via_port};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{host}>;tag={tag}\r\n\
         To: <sip:{user}@{host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{adv}>\r\n\
         Expires: {expires}\r\n",
        node = m.node,
        transport = m.via.transport,
        via_host = m.via.host,
        via_port = m.via.port,
        branch = m.branch,
        user = m.user,
        tag = m.from_tag,
        call_id = m.call_id,
        cseq = m.cseq,
        adv = m.advertise,
        expires = m.expires,
    );
    if let Some(a) = m.authorization {
        out.extend_from_slice(a);
    }
    if !m.user_agent.is_empty() {
        let _ = write!(out, "User-Agent: {}\r\n", m.user_agent);
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>() -> RegisterMsg<'a> {
        RegisterMsg {
            node: "10.0.0.5:5060".parse().unwrap(),
            user: "alice",
            advertise: "10.0.0.1:5060",
            via: Via {
                transport: "UDP",
                host: "10.0.0.1",
                port: 5071,
            },
            branch: "z9hG4bKsf1234",
            call_id: "0123456789abcdef-1@sipfront",
            from_tag: "deadbeef00112233",
            cseq: 7,
            expires: 3600,
            user_agent: "sipfront",
            authorization: None,
        }
    }

    #[test]
    fn exact_bytes() {
        let mut out = Vec::with_capacity(512);
        write_register(&msg(), &mut out).unwrap();
        let want = "REGISTER sip:10.0.0.5:5060 SIP/2.0\r\n\
                    Via: SIP/2.0/UDP 10.0.0.1:5071;branch=z9hG4bKsf1234;rport\r\n\
                    Max-Forwards: 70\r\n\
                    From: <sip:alice@10.0.0.5>;tag=deadbeef00112233\r\n\
                    To: <sip:alice@10.0.0.5>\r\n\
                    Call-ID: 0123456789abcdef-1@sipfront\r\n\
                    CSeq: 7 REGISTER\r\n\
                    Contact: <sip:alice@10.0.0.1:5060>\r\n\
                    Expires: 3600\r\n\
                    User-Agent: sipfront\r\n\
                    Content-Length: 0\r\n\r\n";
        assert_eq!(std::str::from_utf8(&out).unwrap(), want);
    }

    #[test]
    fn unregister_with_authorization_and_ipv6() {
        let mut m = msg();
        m.node = "[2001:db8::5]:5080".parse().unwrap();
        m.advertise = "[2001:db8::1]:5060";
        m.expires = 0;
        m.cseq = 8;
        let auth = b"Authorization: Digest username=\"alice\", realm=\"ast\"\r\n";
        m.authorization = Some(auth);
        let mut out = Vec::new();
        write_register(&m, &mut out).unwrap();
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.starts_with("REGISTER sip:[2001:db8::5]:5080 SIP/2.0\r\n"),
            "{s}"
        );
        assert!(s.contains("\r\nFrom: <sip:alice@[2001:db8::5]>;tag="));
        assert!(s.contains("\r\nTo: <sip:alice@[2001:db8::5]>\r\n"));
        assert!(s.contains("\r\nContact: <sip:alice@[2001:db8::1]:5060>\r\n"));
        assert!(s.contains("\r\nExpires: 0\r\nAuthorization: Digest username=\"alice\", realm=\"ast\"\r\nUser-Agent"));
        assert!(s.contains("\r\nCSeq: 8 REGISTER\r\n"));
        assert!(s.ends_with("\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn refuses_injection() {
        let mut out = Vec::new();
        let mut m = msg();
        m.user = "al ice";
        assert_eq!(write_register(&m, &mut out), Err(BuildError::BadUser));
        m.user = "a@b";
        assert_eq!(write_register(&m, &mut out), Err(BuildError::BadUser));
        let mut m = msg();
        m.call_id = "x\r\nVia: evil";
        assert_eq!(
            write_register(&m, &mut out),
            Err(BuildError::BadValue("call_id"))
        );
        let mut m = msg();
        m.authorization = Some(b"Authorization: x");
        assert_eq!(
            write_register(&m, &mut out),
            Err(BuildError::BadAuthorization)
        );
        m.authorization = Some(b"Authorization: x\r\n\r\n");
        assert_eq!(
            write_register(&m, &mut out),
            Err(BuildError::BadAuthorization)
        );
        assert!(out.is_empty());
    }
}
