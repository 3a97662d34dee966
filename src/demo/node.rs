//! The demo's answering node: a tiny stand-in for Asterisk on the demo's `[asterisk]`
//! address, so that `sipfront demo` completes a call without an Asterisk: it accepts the
//! REGISTERs the proxy forwards (200, echoing the Contact), answers INVITEs to extension
//! `600` with 200 OK and an SDP (other extensions: 404), answers BYE, CANCEL, OPTIONS and
//! MESSAGE with 200, and ignores ACK.
//!
//! Stateless, one thread, one UDP socket: every response copies the request's Via, From,
//! Call-ID and CSeq (and Record-Route for the INVITE's 200), adds a To tag derived from the
//! Call-ID (so a retransmitted INVITE gets the same answer) and is sent back to the source.
//! Messages it cannot read are ignored. It is not a test double for the proxy (that is
//! `bench`'s `asterisk-standin`); it only gives a newcomer a call that completes.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The extension the node answers.
pub const ANSWERED: &str = "600";

/// How often the thread looks at the stop flag while idle.
const POLL: Duration = Duration::from_millis(200);

/// The running node; dropping it stops the thread.
pub struct AnsweringNode {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AnsweringNode {
    /// Bind `addr` and answer on a new thread.
    pub fn start(addr: SocketAddr) -> std::io::Result<AnsweringNode> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(POLL))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sipfront-demo-node".into())
            .spawn(move || serve(&sock, addr, &flag))?;
        Ok(AnsweringNode {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AnsweringNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: &UdpSocket, me: SocketAddr, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_535];
    while !stop.load(Ordering::Acquire) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "demo node: receive failed");
                continue;
            }
        };
        let Some(text) = buf.get(..n).and_then(|b| std::str::from_utf8(b).ok()) else {
            continue;
        };
        if let Some(resp) = answer(text, me) {
            let _ = sock.send_to(resp.as_bytes(), src);
        }
    }
}

/// The header lines of `msg` (up to the blank line), unfolded lines as they are.
fn headers(msg: &str) -> impl Iterator<Item = (&str, &str)> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// Whether header name `n` is `long` or its compact form `short`.
fn is(n: &str, long: &str, short: &str) -> bool {
    n.eq_ignore_ascii_case(long) || (!short.is_empty() && n.eq_ignore_ascii_case(short))
}

/// A stable To tag for every response of one call (a hash of its Call-ID).
fn tag(call_id: &str) -> String {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same Call-ID gives the same tag.
    let mut h = std::hash::DefaultHasher::new();
    call_id.hash(&mut h);
    format!("node{:016x}", h.finish())
}

/// The response to request `msg`, or `None` (a response, an ACK, or unreadable).
fn answer(msg: &str, me: SocketAddr) -> Option<String> {
    let start = msg.split("\r\n").next()?;
    let mut parts = start.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "SIP/2.0" || method == "ACK" {
        return None;
    }
    let user = uri
        .strip_prefix("sip:")
        .and_then(|u| u.split_once('@'))
        .map_or("", |(u, _)| u);
    let (code, reason) = match method {
        "INVITE" if user == ANSWERED => (200, "OK"),
        "INVITE" => (404, "Not Found"),
        "REGISTER" | "BYE" | "CANCEL" | "OPTIONS" | "MESSAGE" => (200, "OK"),
        _ => (405, "Method Not Allowed"),
    };
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    let mut call_id = "";
    for (name, value) in headers(msg) {
        if is(name, "Call-ID", "i") {
            call_id = value;
        }
    }
    for (name, value) in headers(msg) {
        let copy = is(name, "Via", "v")
            || is(name, "From", "f")
            || is(name, "Call-ID", "i")
            || is(name, "CSeq", "")
            || (method == "REGISTER" && is(name, "Contact", "m"))
            || (method == "INVITE" && code == 200 && is(name, "Record-Route", ""));
        if copy {
            out.push_str(&format!("{name}: {value}\r\n"));
        } else if is(name, "To", "t") {
            if value.contains(";tag=") {
                out.push_str(&format!("To: {value}\r\n"));
            } else {
                out.push_str(&format!("To: {value};tag={}\r\n", tag(call_id)));
            }
        }
    }
    if method == "REGISTER" {
        let expires = headers(msg)
            .find(|(n, _)| is(n, "Expires", ""))
            .map_or("3600", |(_, v)| v);
        out.push_str(&format!("Expires: {expires}\r\n"));
    }
    if method == "INVITE" && code == 200 {
        let ip = me.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let sdp = format!(
            "v=0\r\no=demo 1 1 IN {family} {ip}\r\ns=sipfront demo\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        out.push_str(&format!(
            "Contact: <sip:{ANSWERED}@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
    } else {
        out.push_str("Content-Length: 0\r\n\r\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "127.0.0.2:5080";

    fn invite(user: &str) -> String {
        format!(
            "INVITE sip:{user}@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKa\r\n\
             Record-Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:1001@d>;tag=f\r\nTo: <sip:{user}@d>\r\n\
             Call-ID: c1\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn answers_600_and_refuses_others() {
        let me: SocketAddr = ME.parse().unwrap();
        let r = answer(&invite("600"), me).unwrap();
        assert!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r}");
        for line in [
            "Via: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKa",
            "Record-Route: <sip:127.0.0.1:5060;lr>",
            "CSeq: 2 INVITE",
            "Contact: <sip:600@127.0.0.2:5080>",
        ] {
            assert!(r.contains(line), "missing {line} in {r}");
        }
        let tag_line = r.lines().find(|l| l.starts_with("To:")).unwrap();
        assert!(tag_line.contains(";tag=node"), "{r}");
        // The same call gets the same tag (a retransmission, then the BYE's dialog).
        assert_eq!(answer(&invite("600"), me).unwrap(), r);
        let (_, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(r.contains(&format!("Content-Length: {}\r\n", body.len())));
        let r = answer(&invite("601"), me).unwrap();
        assert!(r.starts_with("SIP/2.0 404"), "{r}");
        assert!(!r.contains("Record-Route"), "{r}");
    }

    #[test]
    fn registers_echo_contact_and_expires_ack_is_silent() {
        let me: SocketAddr = ME.parse().unwrap();
        let reg =
            "REGISTER sip:127.0.0.2 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKr\r\n\
                   f: <sip:1001@d>;tag=x\r\nt: <sip:1001@d>\r\ni: r1\r\nCSeq: 1 REGISTER\r\n\
                   m: <sip:1001@127.0.0.1:5060>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n";
        let r = answer(reg, me).unwrap();
        assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
        assert!(
            r.contains("m: <sip:1001@127.0.0.1:5060>") && r.contains("Expires: 300"),
            "{r}"
        );
        assert!(answer("ACK sip:600@x SIP/2.0\r\n\r\n", me).is_none());
        assert!(answer("SIP/2.0 200 OK\r\n\r\n", me).is_none());
        assert!(answer("garbage", me).is_none());
        assert!(answer("FOO sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n", me)
            .unwrap()
            .starts_with("SIP/2.0 405"));
    }
}
