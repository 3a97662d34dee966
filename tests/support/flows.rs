//! Raw-socket SIP transactions used by several tests, written out message by message on a
//! [`Phone`]: a phone's INVITE or any other request (answering the proxy's 407), a phone's
//! REGISTER (answering the 401) and Asterisk's INVITE (trusted, never challenged). Each
//! returns the final response and the start lines received before it, and ACKs a non-2xx
//! final response to an INVITE as RFC 3261 §17.1.1.3 says (same branch, the response's To
//! tag).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::phone::{answer_challenge, Phone, SipMsg};
use super::proxy::DOMAIN;

/// How long a challenge may take to come back.
const CHALLENGE_WAIT: Duration = Duration::from_secs(10);

/// A Call-ID for a new dialog from `port`. The port alone is not enough: the kernel may
/// give a later phone the port of one that just closed, and the proxy would then rightly
/// take the new INVITE (same Call-ID, CSeq and branch) for a retransmission of the old one.
fn new_call_id(prefix: &str, port: u16) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{port}.{n}.{}", std::process::id())
}

/// The final response of a transaction and what arrived before it.
#[derive(Debug)]
pub struct Outcome {
    pub last: SipMsg,
    /// Start lines (with CSeq) of the messages received before `last`.
    pub before: Vec<String>,
    /// The request `last` answers, as sent (to retransmit it).
    pub sent: String,
}

impl Outcome {
    pub fn code(&self) -> u16 {
        self.last.code().unwrap_or(0)
    }
}

/// One request of a phone's transaction, as text.
struct Req<'a> {
    method: &'a str,
    uri: &'a str,
    user: &'a str,
    me: SocketAddr,
    call_id: &'a str,
    cseq: u32,
    to_tag: &'a str,
    /// Contact URI; empty = `sip:USER@ME`.
    contact: &'a str,
    extra: &'a str,
}

impl Req<'_> {
    fn text(&self) -> String {
        let Req {
            method,
            uri,
            user,
            me,
            call_id,
            cseq,
            to_tag,
            contact,
            extra,
        } = self;
        let contact = if contact.is_empty() {
            format!("sip:{user}@{me}")
        } else {
            (*contact).to_owned()
        };
        let to = if *method == "REGISTER" {
            format!("<sip:{user}@{DOMAIN}>")
        } else {
            format!("<{uri}>")
        };
        let tag = if to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={to_tag}")
        };
        // ACK of a non-2xx response reuses the INVITE's branch (its CSeq number).
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{call_id}\r\nTo: {to}{tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <{contact}>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    }
}

/// Phone `user` INVITEs `uri` through `proxy`. A 407 is ACKed and answered with
/// Proxy-Authorization (password `password`); the final response to the last INVITE is
/// awaited for at most `limit`, ACKed if non-2xx, and returned.
pub fn phone_invite(
    phone: &Phone,
    proxy: SocketAddr,
    user: &str,
    password: &str,
    uri: &str,
    limit: Duration,
) -> Outcome {
    phone_request(phone, proxy, "INVITE", (user, password), uri, "", limit)
}

/// Phone `user` (with `password`) sends `method` for `uri` through `proxy`, with the header
/// lines `extra` (e.g. `Event: dialog\r\n`); a 407 is answered with Proxy-Authorization (and
/// ACKed for an INVITE). The final response to the last request, awaited for at most
/// `limit` (an INVITE's non-2xx ACKed), is returned.
pub fn phone_request(
    phone: &Phone,
    proxy: SocketAddr,
    method: &str,
    (user, password): (&str, &str),
    uri: &str,
    extra: &str,
    limit: Duration,
) -> Outcome {
    let prefix = if method == "INVITE" { "inv" } else { method };
    let call_id = new_call_id(prefix, phone.addr.port());
    let with_auth; // the extra lines with Proxy-Authorization, once challenged
    let mut req = Req {
        method,
        uri,
        user,
        me: phone.addr,
        call_id: &call_id,
        cseq: 1,
        to_tag: "",
        contact: "",
        extra,
    };
    let mut before = Vec::new();
    phone.send(proxy, &req.text());
    let mut last = phone.expect_final(&format!("1 {method}"), CHALLENGE_WAIT, &mut before);
    ack_non_2xx(phone, proxy, &req, &last);
    if last.code() == Some(407) {
        let creds = answer_challenge(&last, "Proxy-Authenticate", user, password, method, uri);
        with_auth = format!("{extra}Proxy-Authorization: {creds}\r\n");
        req.cseq = 2;
        req.extra = &with_auth;
        before.clear();
        phone.send(proxy, &req.text());
        last = phone.expect_final(&format!("2 {method}"), limit, &mut before);
        ack_non_2xx(phone, proxy, &req, &last);
    }
    Outcome {
        last,
        before,
        sent: req.text(),
    }
}

fn ack_non_2xx(phone: &Phone, proxy: SocketAddr, invite: &Req, resp: &SipMsg) {
    if invite.method == "INVITE" && resp.code().is_some_and(|c| c >= 300) {
        let ack = Req {
            method: "ACK",
            to_tag: resp.to_tag(),
            extra: "",
            ..*invite
        };
        phone.send(proxy, &ack.text());
    }
}

/// Phone `user` REGISTERs `contact` (empty = its own address) with `Expires: expires`,
/// answering the 401 with `password`; returns the final response to the authenticated
/// REGISTER.
pub fn phone_register(
    phone: &Phone,
    proxy: SocketAddr,
    user: &str,
    password: &str,
    expires: u32,
    contact: &str,
) -> Outcome {
    let call_id = new_call_id("reg", phone.addr.port());
    let uri = format!("sip:{DOMAIN}");
    let expires = format!("Expires: {expires}\r\n");
    let mut req = Req {
        method: "REGISTER",
        uri: &uri,
        user,
        me: phone.addr,
        call_id: &call_id,
        cseq: 1,
        to_tag: "",
        contact,
        extra: &expires,
    };
    let mut before = Vec::new();
    phone.send(proxy, &req.text());
    let challenge = phone.expect_response(401, "1 REGISTER", CHALLENGE_WAIT, &mut before);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        password,
        "REGISTER",
        &uri,
    );
    let extra = format!("{expires}Authorization: {creds}\r\n");
    req.cseq = 2;
    req.extra = &extra;
    before.clear();
    phone.send(proxy, &req.text());
    let last = phone.expect_final("2 REGISTER", CHALLENGE_WAIT, &mut before);
    Outcome {
        last,
        before,
        sent: req.text(),
    }
}

/// Asterisk (a socket on its IP, so trusted with `match = "ip"`) INVITEs `user` at the
/// proxy; the final response is ACKed if non-2xx and returned.
pub fn asterisk_invite(ast: &Phone, proxy: SocketAddr, user: &str, limit: Duration) -> Outcome {
    let uri = format!("sip:{user}@{proxy}");
    let call_id = new_call_id("ast", ast.addr.port());
    let req = Req {
        method: "INVITE",
        uri: &uri,
        user: "asterisk",
        me: ast.addr,
        call_id: &call_id,
        cseq: 102,
        to_tag: "",
        contact: "",
        extra: "",
    };
    let mut before = Vec::new();
    ast.send(proxy, &req.text());
    let last = ast.expect_final("102 INVITE", limit, &mut before);
    ack_non_2xx(ast, proxy, &req, &last);
    Outcome {
        last,
        before,
        sent: req.text(),
    }
}

/// ACKs the 2xx in `out` end to end (RFC 3261 §13.2.2.4): to the 2xx's Contact, through the
/// route set its Record-Route gives (reversed, as the UAC), sent to `proxy`.
pub fn ack_2xx(ua: &Phone, proxy: SocketAddr, out: &Outcome) {
    let ok = &out.last;
    let contact = ok.header("Contact").unwrap_or_default();
    let target = contact
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(contact, |(uri, _)| uri);
    let mut ack = format!("ACK {target} SIP/2.0\r\n");
    for line in out.sent.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" => ack.push_str(&line.replacen(";branch=z9hG4bK", ";branch=z9hG4bKack", 1)),
            "to" => ack.push_str(&format!("{line};tag={}", ok.to_tag())),
            "cseq" => {
                let n = line.split_whitespace().nth(1).unwrap_or("1");
                ack.push_str(&format!("CSeq: {n} ACK"));
            }
            "from" | "call-id" | "max-forwards" => ack.push_str(line),
            _ => continue,
        }
        ack.push_str("\r\n");
    }
    for rr in ok.headers("Record-Route").iter().rev() {
        ack.push_str(&format!("Route: {rr}\r\n"));
    }
    ack.push_str("Content-Length: 0\r\n\r\n");
    ua.send(proxy, &ack);
}
