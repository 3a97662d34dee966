//! Scripted-peer tests of the core on a virtual clock: no sockets, no sleeps.
//!
//! Topology: proxy listens on 127.0.0.1:5060 (upstream socket 127.0.0.1:6000), Asterisk at
//! 127.0.0.2:5080 (and 127.0.0.2:5081 for failover), phones at 127.0.0.3:5062 and
//! 127.0.0.4:5064.

use std::net::SocketAddr;
use std::sync::Arc;

use super::testing::{test_config, Fakes, Recorder, Sent};
use super::{Core, Flow, Local, LookupResult, Now, Shed};

pub(super) const PHONE: &str = "127.0.0.3:5062";
pub(super) const PHONE2: &str = "127.0.0.4:5064";
pub(super) const AST: &str = "127.0.0.2:5080";
pub(super) const AST2: &str = "127.0.0.2:5081";
pub(super) const T0: u64 = 1_700_000_000_000;

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) struct Harness {
    pub core: Core,
    pub fakes: Fakes,
    pub rec: Recorder,
    pub now: u64,
}

impl Harness {
    pub fn new(nodes: &[&str]) -> Self {
        let fakes = Fakes::new(&["alice", "bob"]);
        fakes.farm.set_nodes(nodes);
        let cfg = Arc::new(test_config(nodes));
        let core = Core::new(cfg, fakes.ports(), 0, addr("127.0.0.1:6000"));
        Harness {
            core,
            fakes,
            rec: Recorder::default(),
            now: T0,
        }
    }

    /// Deliver `msg` from `src` on the listen socket (or the upstream socket when it comes
    /// from Asterisk and `upstream`), and return what the core sent.
    pub fn recv(&mut self, src: &str, msg: &str) -> Vec<Sent> {
        self.recv_on(Local::Listen(0), src, msg)
    }

    pub fn recv_on(&mut self, sock: Local, src: &str, msg: &str) -> Vec<Sent> {
        let from = Flow::new(sock, addr(src));
        self.core
            .handle_datagram(Now::same(self.now), from, msg.as_bytes(), &mut self.rec);
        self.rec.take()
    }

    /// Advance the virtual clock to `t` (ms after T0), firing due timers.
    pub fn advance_to(&mut self, t: u64) -> Vec<Sent> {
        let target = T0 + t;
        let mut out = Vec::new();
        while let Some(d) = self.core.poll_timeout() {
            if d > target {
                break;
            }
            self.now = self.now.max(d);
            self.core.handle_timeout(Now::same(self.now), &mut self.rec);
            out.extend(self.rec.take());
        }
        self.now = target;
        self.core.handle_timeout(Now::same(self.now), &mut self.rec);
        out.extend(self.rec.take());
        out
    }
}

pub(super) fn req(
    method: &str,
    ruri: &str,
    from_addr: &str,
    branch: &str,
    call_id: &str,
    extra: &str,
) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from_addr};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=ft1\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

pub(super) fn auth_hdr(proxy: bool, user: &str, response: &str) -> String {
    format!(
        "{}: Digest username=\"{user}\", realm=\"test\", nonce=\"n1\", uri=\"sip:x\", response=\"{response}\", qop=auth, nc=00000001, cnonce=\"c\"\r\n",
        if proxy { "Proxy-Authorization" } else { "Authorization" }
    )
}

/// Make a response to `request` (as the downstream saw it) with `code`.
pub(super) fn respond(request: &Sent, code: u16, to_tag: Option<&str>, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for l in request.text().split("\r\n").skip(1) {
        if l.is_empty() {
            break;
        }
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(l);
                out.push_str("\r\n");
            }
            "to" => {
                out.push_str(l);
                if let Some(t) = to_tag {
                    out.push_str(";tag=");
                    out.push_str(t);
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

pub(super) fn find(sent: &[Sent], pred: impl Fn(&Sent) -> bool) -> &Sent {
    sent.iter().find(|s| pred(s)).unwrap_or_else(|| {
        panic!(
            "no matching datagram among:\n{}",
            sent.iter()
                .map(|s| format!("-> {} {}\n", s.dst, s.text()))
                .collect::<String>()
        )
    })
}

pub(super) fn authed_invite(branch: &str, call_id: &str) -> String {
    req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        branch,
        call_id,
        &auth_hdr(true, "alice", "good"),
    )
}

/// Phone INVITE authenticated and forwarded to Asterisk: returns the forwarded INVITE.
pub(super) fn call_to_asterisk(h: &mut Harness, branch: &str, call_id: &str) -> Sent {
    let out = h.recv(PHONE, &authed_invite(branch, call_id));
    let trying = find(&out, |s| s.code() == 100);
    assert_eq!(trying.dst, addr(PHONE));
    find(&out, |s| s.method() == "INVITE").clone()
}

#[test]
fn options_to_proxy_answers_200() {
    let mut h = Harness::new(&[AST]);
    let out = h.recv(
        PHONE,
        &req(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            PHONE,
            "z9hG4bKo1",
            "o1",
            "",
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 200);
    assert_eq!(out[0].dst, addr(PHONE));
    assert!(out[0].header("Allow").is_some());
    // RFC 3581: the answer tells the phone where it was seen from.
    assert_eq!(
        out[0].header("Via"),
        Some("SIP/2.0/UDP 127.0.0.3:5062;branch=z9hG4bKo1;received=127.0.0.3;rport=5062")
    );
}

#[test]
fn sanity_checks() {
    let mut h = Harness::new(&[AST]);
    let mf0 = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKm0",
        "m0",
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(h.recv(PHONE, &mf0)[0].code(), 483);
    let no_cid = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKm1",
        "m1",
        "",
    )
    .replace("Call-ID: m1\r\n", "");
    // Without a Call-ID the answer copies the raw lines it has (RFC 4475 insuf: 400).
    let out = h.recv(PHONE, &no_cid);
    assert_eq!(out[0].code(), 400);
    assert!(out[0].header("Call-ID").is_none());
    let bad_mf = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKm6",
        "m6",
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: lots");
    assert_eq!(h.recv(PHONE, &bad_mf)[0].code(), 400);
    let bad_cseq = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKm2",
        "m2",
        "",
    )
    .replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE");
    assert_eq!(h.recv(PHONE, &bad_cseq)[0].code(), 400);
    let big = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKm3",
        "m3",
        &format!("X-Pad: {}\r\n", "a".repeat(20_000)),
    );
    assert_eq!(h.recv(PHONE, &big)[0].code(), 513);
    assert!(h.recv(PHONE, "garbage\r\n\r\n").is_empty());
    assert_eq!(h.core.stats().dropped_malformed, 2);
    // A request the parser rejects still gets 400 when it has a Via (505 for SIP/7.0).
    let v7 = req(
        "OPTIONS",
        "sip:127.0.0.1:5060",
        PHONE,
        "z9hG4bKv7",
        "v7",
        "",
    )
    .replace("SIP/2.0\r\n", "SIP/7.0\r\n");
    assert_eq!(h.recv(PHONE, &v7)[0].code(), 505);
    let pr = req(
        "OPTIONS",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKpr",
        "pr",
        "Proxy-Require: foo, bar\r\n",
    );
    let out = h.recv(PHONE, &pr);
    assert_eq!(out[0].code(), 420);
    assert_eq!(out[0].header("Unsupported"), Some("foo, bar"));
    let other_domain = req(
        "MESSAGE",
        "sip:bob@elsewhere.org",
        PHONE,
        "z9hG4bKm4",
        "m4",
        "",
    );
    let out = h.recv(PHONE, &other_domain);
    assert_eq!(out[0].code(), 403);
    assert!(out[0].text().contains("Not relaying"));
    let tel = req(
        "INVITE",
        "mailto:bob@example.com",
        PHONE,
        "z9hG4bKm5",
        "m5",
        "",
    );
    assert_eq!(h.recv(PHONE, &tel)[0].code(), 416);
}

#[test]
fn phone_invite_is_challenged_then_forwarded_to_asterisk() {
    let mut h = Harness::new(&[AST]);
    let out = h.recv(
        PHONE,
        &req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            "z9hG4bKi1",
            "c1",
            "",
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 407);
    assert!(out[0].header("Proxy-Authenticate").is_some());
    assert!(out[0].header("To").unwrap().contains("tag="));

    let fwd = call_to_asterisk(&mut h, "z9hG4bKi2", "c2");
    assert_eq!(fwd.dst, addr(AST));
    assert_eq!(fwd.sock, Local::Upstream);
    assert!(fwd
        .text()
        .starts_with("INVITE sip:600@example.com SIP/2.0\r\n"));
    let vias = fwd.headers("Via");
    assert!(
        vias[0].starts_with("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKsf."),
        "{vias:?}"
    );
    assert!(
        vias[1].contains("received=127.0.0.3") || vias[1].contains("rport=5062"),
        "{vias:?}"
    );
    let rr = fwd.header("Record-Route").unwrap();
    assert!(rr.starts_with("<sip:127.0.0.1:5060;lr;sft="), "{rr}");
    assert_eq!(fwd.header("Max-Forwards"), Some("69"));
    assert!(
        fwd.header("Proxy-Authorization").is_none(),
        "our own credentials are consumed, not passed to Asterisk"
    );
    // Credentials for another realm (Asterisk's own challenge) do pass through.
    let both = format!(
        "{}{}",
        auth_hdr(true, "alice", "good"),
        auth_hdr(true, "alice", "x").replace("realm=\"test\"", "realm=\"asterisk\"")
    );
    let out = h.recv(
        PHONE,
        &req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            "z9hG4bKi5",
            "c5",
            &both,
        ),
    );
    let fwd = find(&out, |s| s.method() == "INVITE");
    let creds = fwd.headers("Proxy-Authorization");
    assert_eq!(creds.len(), 1);
    assert!(creds[0].contains("realm=\"asterisk\""));

    // A wrong password is challenged again and counted.
    let bad = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKi3",
        "c3",
        &auth_hdr(true, "alice", "bad"),
    );
    assert_eq!(h.recv(PHONE, &bad)[0].code(), 407);
    assert_eq!(h.core.stats().auth_failed, 1);
    // A stale nonce gets stale=true.
    let stale = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKi4",
        "c4",
        &auth_hdr(true, "alice", "good").replace("\"n1\"", "\"stale\""),
    );
    let out = h.recv(PHONE, &stale);
    assert!(out[0]
        .header("Proxy-Authenticate")
        .unwrap()
        .contains("stale=true"));
}

#[test]
fn full_call_through_asterisk_and_back() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKc1", "call1");

    // INVITE retransmission from the phone: absorbed, 100 re-sent, nothing forwarded.
    let again = h.recv(PHONE, &authed_invite("z9hG4bKc1", "call1"));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].code(), 100);

    // 100 from Asterisk is hop-by-hop; 180 and 200 go to the phone without our Via.
    assert!(h
        .recv_on(Local::Upstream, AST, &respond(&fwd, 100, None, ""))
        .is_empty());
    let ringing = h.recv_on(Local::Upstream, AST, &respond(&fwd, 180, Some("ast1"), ""));
    assert_eq!(ringing.len(), 1);
    assert_eq!(ringing[0].code(), 180);
    assert_eq!(ringing[0].dst, addr(PHONE));
    assert_eq!(ringing[0].headers("Via").len(), 1);
    let ok = h.recv_on(
        Local::Upstream,
        AST,
        &respond(
            &fwd,
            200,
            Some("ast1"),
            "Contact: <sip:600@127.0.0.2:5080>\r\n",
        ),
    );
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].code(), 200);
    assert_eq!(
        ok[0].header("Record-Route"),
        Some(format!("<{}>", h.core.cfg.dialog_route(0, "call1")).as_str())
    );
    // A retransmitted 2xx (transaction gone) is forwarded statelessly.
    let ok2 = h.recv_on(
        Local::Upstream,
        AST,
        &respond(
            &fwd,
            200,
            Some("ast1"),
            "Contact: <sip:600@127.0.0.2:5080>\r\n",
        ),
    );
    assert_eq!(ok2.len(), 1);
    assert_eq!(ok2[0].dst, addr(PHONE));

    // ACK for the 2xx, in dialog through our Route: stateless to Asterisk's Contact.
    let route = h.core.cfg.dialog_route(0, "call1");
    let ack = format!(
        "ACK sip:600@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKack1\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ft1\r\nTo: <sip:600@example.com>;tag=ast1\r\nCall-ID: call1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(PHONE, &ack);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method(), "ACK");
    assert_eq!(out[0].dst, addr(AST));
    assert!(out[0].header("Route").is_none(), "our Route is consumed");

    // BYE from Asterisk in dialog to the phone's contact, through our Route.
    let bye = format!(
        "BYE sip:alice@127.0.0.3:5062 SIP/2.0\r\nVia: SIP/2.0/UDP {AST};branch=z9hG4bKbye1\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:600@example.com>;tag=ast1\r\nTo: <sip:alice@example.com>;tag=ft1\r\nCall-ID: call1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(AST, &bye);
    let fbye = find(&out, |s| s.method() == "BYE");
    assert_eq!(fbye.dst, addr(PHONE));
    assert_eq!(fbye.sock, Local::Listen(0));
    let out = h.recv(PHONE, &respond(fbye, 200, None, ""));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 200);
    assert_eq!(out[0].dst, addr(AST));
    let (servers, _) = h.core.transactions_in_flight();
    assert!(
        servers >= 1,
        "BYE server transaction lingers for retransmissions"
    );
    h.advance_to(64 * 500 + 40_000);
    assert_eq!(
        h.core.transactions_in_flight(),
        (0, 0),
        "everything terminates"
    );
}

#[test]
fn asterisk_not_answering_gives_408_after_retransmissions() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKn1", "n1");
    let out = h.advance_to(500);
    assert_eq!(out.len(), 1, "Timer A at T1");
    assert_eq!(out[0].bytes, fwd.bytes);
    let out = h.advance_to(1500);
    assert_eq!(out.len(), 1, "Timer A doubles");
    let out = h.advance_to(64 * 500);
    let to_phone = find(&out, |s| s.code() == 408);
    assert_eq!(to_phone.dst, addr(PHONE));
    assert_eq!(h.core.stats().timeouts, 1);
    // The phone ACKs the 408: absorbed.
    let ack = req("ACK", "sip:600@example.com", PHONE, "z9hG4bKn1", "n1", "");
    assert!(h.recv(PHONE, &ack).is_empty());
}

#[test]
fn failover_to_next_asterisk_on_503_and_timeout() {
    let mut h = Harness::new(&[AST, AST2]);
    // Call-ID chosen so both nodes get tried whichever is first.
    let fwd = call_to_asterisk(&mut h, "z9hG4bKf1", "fo1");
    let first = fwd.dst;
    let out = h.recv_on(
        Local::Upstream,
        &first.to_string(),
        &respond(&fwd, 503, Some("x"), ""),
    );
    let ack = find(&out, |s| s.method() == "ACK");
    assert_eq!(ack.dst, first);
    let second = find(&out, |s| s.method() == "INVITE");
    assert_ne!(second.dst, first);
    assert!(
        out.iter().all(|s| s.code() == 0),
        "nothing to the phone yet"
    );
    // The second node fails too: 503 becomes 500 for the phone.
    let out = h.recv_on(
        Local::Upstream,
        &second.dst.to_string(),
        &respond(second, 503, Some("y"), ""),
    );
    let fin = find(&out, |s| s.code() != 0);
    assert_eq!(fin.code(), 500);
    assert_eq!(fin.dst, addr(PHONE));
}

#[test]
fn cancel_after_ringing() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKx1", "x1");
    h.recv_on(Local::Upstream, AST, &respond(&fwd, 180, Some("a"), ""));
    let cancel = req(
        "CANCEL",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKx1",
        "x1",
        "",
    );
    let out = h.recv(PHONE, &cancel);
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(ok.header("CSeq"), Some("1 CANCEL"));
    let fc = find(&out, |s| s.method() == "CANCEL");
    assert_eq!(fc.dst, addr(AST));
    assert_eq!(
        fc.header("Via"),
        fwd.header("Via"),
        "CANCEL reuses the INVITE branch"
    );
    // Asterisk: 200 to CANCEL, 487 to INVITE.
    assert!(h
        .recv_on(Local::Upstream, AST, &respond(fc, 200, Some("a"), ""))
        .is_empty());
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 487, Some("a"), ""));
    let ack = find(&out, |s| s.method() == "ACK");
    assert_eq!(ack.dst, addr(AST));
    assert!(ack.header("To").unwrap().contains("tag=a"));
    let t487 = find(&out, |s| s.code() == 487);
    assert_eq!(t487.dst, addr(PHONE));
    // Timer G retransmits the 487 until the phone ACKs.
    let out = h.advance_to(600);
    assert!(out.iter().any(|s| s.code() == 487));
    let ack = req("ACK", "sip:600@example.com", PHONE, "z9hG4bKx1", "x1", "");
    assert!(h.recv(PHONE, &ack).is_empty());
    let out = h.advance_to(5000);
    assert!(
        out.iter().all(|s| s.code() != 487),
        "no retransmission after ACK"
    );
}

#[test]
fn cancel_before_any_response_answers_487_and_cancels_on_provisional() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKy1", "y1");
    let cancel = req(
        "CANCEL",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKy1",
        "y1",
        "",
    );
    let out = h.recv(PHONE, &cancel);
    assert!(out.iter().any(|s| s.code() == 200));
    assert!(out.iter().any(|s| s.code() == 487 && s.dst == addr(PHONE)));
    assert!(
        out.iter().all(|s| s.method() != "CANCEL"),
        "no CANCEL before a provisional"
    );
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 180, Some("a"), ""));
    let c = find(&out, |s| s.method() == "CANCEL");
    assert_eq!(c.dst, addr(AST));
    // Unknown CANCEL → 481.
    let stray = req(
        "CANCEL",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKnone",
        "zz",
        "",
    );
    assert_eq!(h.recv(PHONE, &stray)[0].code(), 481);
}

#[test]
fn asterisk_call_to_registered_phone_forks_and_best_response_wins() {
    let mut h = Harness::new(&[AST]);
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        T0 + 3_600_000,
    );
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    let inv = req(
        "INVITE",
        "sip:alice@127.0.0.1:5060",
        AST,
        "z9hG4bKa1",
        "ac1",
        "",
    )
    .replace("From: <sip:alice@example.com>", "From: <sip:600@127.0.0.2>");
    let out = h.recv(AST, &inv);
    assert!(
        out.iter().any(|s| s.code() == 100 && s.dst == addr(AST)),
        "Asterisk is not challenged"
    );
    let b1 = find(&out, |s| s.method() == "INVITE" && s.dst == addr(PHONE)).clone();
    let b2 = find(&out, |s| s.method() == "INVITE" && s.dst == addr(PHONE2)).clone();
    assert!(b1
        .text()
        .starts_with("INVITE sip:alice@127.0.0.3:5062 SIP/2.0"));
    assert_eq!(
        b1.header("Record-Route"),
        Some(format!("<{}>", h.core.cfg.dialog_route(0, "ac1")).as_str())
    );
    assert_ne!(b1.header("Via"), b2.header("Via"));
    // Busy on one branch; the other answers.
    let out = h.recv(PHONE2, &respond(&b2, 486, Some("p2"), ""));
    assert!(out
        .iter()
        .any(|s| s.method() == "ACK" && s.dst == addr(PHONE2)));
    assert!(
        out.iter().all(|s| s.code() == 0),
        "486 held back while a branch is pending"
    );
    let out = h.recv(PHONE, &respond(&b1, 200, Some("p1"), ""));
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(ok.dst, addr(AST));
}

/// Asterisk calls alice, who has two bindings (PHONE and PHONE2): the INVITE forked to both.
fn fork_to_two_phones(h: &mut Harness, branch: &str, call_id: &str) -> (Sent, Sent) {
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        T0 + 3_600_000,
    );
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    let inv = req(
        "INVITE",
        "sip:alice@127.0.0.1:5060",
        AST,
        branch,
        call_id,
        "",
    );
    let out = h.recv(AST, &inv);
    let b1 = find(&out, |s| s.method() == "INVITE" && s.dst == addr(PHONE)).clone();
    let b2 = find(&out, |s| s.method() == "INVITE" && s.dst == addr(PHONE2)).clone();
    (b1, b2)
}

#[test]
fn fork_cancels_other_branches_on_2xx() {
    let mut h = Harness::new(&[AST]);
    let (b1, b2) = fork_to_two_phones(&mut h, "z9hG4bKa2", "ac2");
    h.recv(PHONE2, &respond(&b2, 180, Some("p2"), ""));
    let out = h.recv(PHONE, &respond(&b1, 200, Some("p1"), ""));
    assert!(out.iter().any(|s| s.code() == 200 && s.dst == addr(AST)));
    assert!(out
        .iter()
        .any(|s| s.method() == "CANCEL" && s.dst == addr(PHONE2)));
}

#[test]
fn a_silent_branch_stops_retransmitting_once_another_answers() {
    // A stale binding (the phone moved to another port) never answers: after the live
    // binding's 200 its INVITE is not retransmitted any more (Kamailio's cancel_b_method 0),
    // but a late provisional from it still gets its CANCEL (§9.1).
    let mut h = Harness::new(&[AST]);
    let (b1, b2) = fork_to_two_phones(&mut h, "z9hG4bKs2", "sb2");
    // Unanswered, the silent branch is retransmitted at T1 like any other.
    let out = h.advance_to(500);
    assert!(out
        .iter()
        .any(|s| s.method() == "INVITE" && s.dst == addr(PHONE2)));
    h.recv(PHONE, &respond(&b1, 180, Some("p1"), ""));
    let out = h.recv(PHONE, &respond(&b1, 200, Some("p1"), ""));
    assert!(out.iter().any(|s| s.code() == 200 && s.dst == addr(AST)));
    assert!(
        !out.iter().any(|s| s.method() == "CANCEL"),
        "no CANCEL before a provisional"
    );
    let out = h.advance_to(30_000);
    assert!(
        !out.iter().any(|s| s.method() == "INVITE"),
        "the silent branch is no longer retransmitted: {out:?}"
    );
    let out = h.recv(PHONE2, &respond(&b2, 180, Some("p2"), ""));
    assert!(out
        .iter()
        .any(|s| s.method() == "CANCEL" && s.dst == addr(PHONE2)));
    assert!(
        !out.iter().any(|s| s.dst == addr(AST)),
        "its provisional goes nowhere"
    );
}

#[test]
fn unknown_and_unregistered_users() {
    let mut h = Harness::new(&[AST]);
    let inv = req(
        "INVITE",
        "sip:nobody@127.0.0.1:5060",
        AST,
        "z9hG4bKu1",
        "u1",
        "",
    );
    assert_eq!(h.recv(AST, &inv)[0].code(), 404);
    let inv = req(
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        AST,
        "z9hG4bKu2",
        "u2",
        "",
    );
    assert_eq!(h.recv(AST, &inv)[0].code(), 480);
    // From another port of the Asterisk host: not trusted (match = ip_port), so challenged.
    let inv = req(
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        "127.0.0.2:5999",
        "z9hG4bKu3",
        "u3",
        "",
    );
    assert_eq!(h.recv("127.0.0.2:5999", &inv)[0].code(), 407);
}

#[test]
fn message_between_phones() {
    let mut h = Harness::new(&[AST]);
    h.fakes.location.add(
        "bob",
        "sip:bob@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    let m = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKmsg",
        "msg1",
        &auth_hdr(true, "alice", "good"),
    );
    let out = h.recv(PHONE, &m);
    let f = find(&out, |s| s.method() == "MESSAGE");
    assert_eq!(f.dst, addr(PHONE2));
    assert!(
        f.header("Record-Route").is_none(),
        "MESSAGE does not create a dialog"
    );
    assert!(
        out.iter().all(|s| s.code() != 100),
        "no 100 Trying for non-INVITE"
    );
    let out = h.recv(PHONE2, &respond(f, 200, Some("b"), ""));
    assert_eq!(out[0].code(), 200);
    assert_eq!(out[0].dst, addr(PHONE));
    // Retransmission of the MESSAGE after the final response: the 200 is re-sent.
    let out = h.recv(PHONE, &m);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 200);
    // The transactions go after [timers] server_linger_ms (5 s) and T4, not 64*T1.
    h.advance_to(5_001);
    assert_eq!(h.core.transactions_in_flight(), (0, 0));
}

#[test]
fn non_invite_timeout_gives_408() {
    let mut h = Harness::new(&[AST]);
    h.fakes.location.add(
        "bob",
        "sip:bob@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    let m = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKmt",
        "mt1",
        &auth_hdr(true, "alice", "good"),
    );
    h.recv(PHONE, &m);
    let out = h.advance_to(64 * 500);
    assert!(
        out.iter().filter(|s| s.method() == "MESSAGE").count() >= 5,
        "Timer E retransmits"
    );
    assert!(out.iter().any(|s| s.code() == 408 && s.dst == addr(PHONE)));
}

#[test]
fn loops_and_strays() {
    let mut h = Harness::new(&[AST]);
    h.fakes.location.add(
        "bob",
        "sip:bob@example.com",
        addr("127.0.0.1:5060"),
        T0 + 3_600_000,
    );
    let m = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKl1",
        "l1",
        &auth_hdr(true, "alice", "good"),
    );
    let out = h.recv(PHONE, &m);
    let looped = find(&out, |s| s.method() == "MESSAGE").clone();
    let out = h.recv(PHONE, looped.text());
    assert_eq!(out[0].code(), 482);

    let stray = req("BYE", "sip:bob@example.com", PHONE, "z9hG4bKs1", "s1", "").replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=zz",
    );
    assert_eq!(h.recv(PHONE, &stray)[0].code(), 404);
}

#[test]
fn register_is_authenticated_saved_and_forwarded() {
    let mut h = Harness::new(&[AST]);
    let reg = |auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r1\r\nTo: <sip:alice@example.com>\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.3:5062>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n",
            auth.len()
        )
    };
    let out = h.recv(PHONE, &reg(""));
    assert_eq!(out[0].code(), 401);
    assert!(out[0].header("WWW-Authenticate").is_some());
    let out = h.recv(PHONE, &reg(&auth_hdr(false, "alice", "good")));
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(
        ok.header("Contact"),
        Some("<sip:alice@127.0.0.3:5062>;expires=600")
    );
    assert!(ok.header("Date").is_some_and(|d| d.ends_with("GMT")));
    let fwd = find(&out, |s| s.method() == "REGISTER");
    assert_eq!(fwd.dst, addr(AST));
    assert_eq!(fwd.sock, Local::Upstream);
    assert!(fwd
        .header("Via")
        .unwrap()
        .starts_with("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKsf."));
    assert_eq!(fwd.header("Expires"), Some("600"));
    // Asterisk challenges: answered with the user's credentials, new CSeq.
    let out = h.recv_on(
        Local::Upstream,
        AST,
        &respond(
            fwd,
            401,
            Some("as"),
            "WWW-Authenticate: Digest realm=\"asterisk\", nonce=\"x\"\r\n",
        ),
    );
    let again = find(&out, |s| s.method() == "REGISTER");
    assert!(again
        .header("Authorization")
        .unwrap()
        .contains("username=\"alice\""));
    assert_ne!(again.header("CSeq"), fwd.header("CSeq"));
    assert!(h
        .recv_on(Local::Upstream, AST, &respond(again, 200, Some("as"), ""))
        .is_empty());
    assert_eq!(h.core.stats().regfwd_ok, 1);
    assert_eq!(
        h.fakes.regfwd.results.lock().unwrap().as_slice(),
        &[("alice".to_owned(), AST.parse().unwrap(), 200)]
    );

    // Registering someone else's AOR is refused.
    let other = reg(&auth_hdr(false, "alice", "good"))
        .replace("To: <sip:alice@", "To: <sip:bob@")
        .replace("CSeq: 1 ", "CSeq: 5 ");
    assert_eq!(h.recv(PHONE, &other)[0].code(), 403);
    // Too brief → 423 with Min-Expires.
    let brief = reg(&auth_hdr(false, "alice", "good"))
        .replace("Expires: 600", "Expires: 5")
        .replace("CSeq: 1 ", "CSeq: 6 ");
    let out = h.recv(PHONE, &brief);
    assert_eq!(out[0].code(), 423);
    assert_eq!(out[0].header("Min-Expires"), Some("60"));
}

#[test]
fn binding_expiry_tells_asterisk() {
    let mut h = Harness::new(&[AST]);
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        T0 + 10_000,
    );
    let out = h.advance_to(11_000);
    let unreg = find(&out, |s| s.method() == "REGISTER");
    assert_eq!(unreg.header("Expires"), Some("0"));
    assert_eq!(unreg.dst, addr(AST));
    // Asterisk never answers: retransmitted, then counted as failed.
    let out = h.advance_to(11_000 + 64 * 500);
    assert!(out.iter().filter(|s| s.method() == "REGISTER").count() >= 5);
    assert_eq!(h.core.stats().regfwd_failed, 1);
}

#[test]
fn credential_miss_parks_and_resumes() {
    let mut h = Harness::new(&[AST]);
    h.fakes
        .auth
        .uncached
        .lock()
        .unwrap()
        .insert("alice".to_owned());
    let out = h.recv(PHONE, &authed_invite("z9hG4bKp1", "p1"));
    assert!(out.is_empty(), "parked, nothing sent yet");
    let lookup = h.core.poll_lookup().expect("a lookup is requested");
    assert_eq!(lookup.user(), "alice");
    assert!(h.core.poll_lookup().is_none());
    h.fakes.auth.uncached.lock().unwrap().clear();
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Ready,
        &mut h.rec,
    );
    let out = h.rec.take();
    assert!(out
        .iter()
        .any(|s| s.method() == "INVITE" && s.dst == addr(AST)));

    // Database failure on a miss: 503 with Retry-After, never a 401/407.
    h.fakes
        .auth
        .uncached
        .lock()
        .unwrap()
        .insert("alice".to_owned());
    h.recv(PHONE, &authed_invite("z9hG4bKp2", "p2"));
    let lookup = h.core.poll_lookup().unwrap();
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Failed,
        &mut h.rec,
    );
    let out = h.rec.take();
    assert_eq!(out[0].code(), 503);
    assert_eq!(out[0].header("Retry-After"), Some("5"));

    // A user still unknown after the lookup: challenged again.
    h.recv(PHONE, &authed_invite("z9hG4bKp3", "p3"));
    let lookup = h.core.poll_lookup().unwrap();
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Ready,
        &mut h.rec,
    );
    assert_eq!(h.rec.take()[0].code(), 407);

    // A lookup that never returns: the parked request is dropped after the timeout.
    h.recv(PHONE, &authed_invite("z9hG4bKp4", "p4"));
    let lookup = h.core.poll_lookup().unwrap();
    h.advance_to(10_000);
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Ready,
        &mut h.rec,
    );
    assert!(h.rec.take().is_empty());
}

#[test]
fn transaction_limit_answers_503() {
    let fakes = Fakes::new(&["alice"]);
    let mut cfg = test_config(&[AST]);
    cfg.max_transactions = 2;
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let mut rec = Recorder::default();
    for i in 0..3 {
        let m = authed_invite(&format!("z9hG4bKlim{i}"), &format!("lim{i}"));
        core.handle_datagram(
            Now::same(T0),
            Flow::new(Local::Listen(0), addr(PHONE)),
            m.as_bytes(),
            &mut rec,
        );
    }
    let out = rec.take();
    assert!(out
        .iter()
        .any(|s| s.code() == 503 && s.header("Retry-After").is_some()));
    assert_eq!(core.stats().dropped_overload, 1);
}

#[test]
fn timer_c_cancels_a_ringing_branch() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKtc", "tc1");
    h.recv_on(Local::Upstream, AST, &respond(&fwd, 180, Some("a"), ""));
    let out = h.advance_to(180_000);
    assert!(out
        .iter()
        .any(|s| s.method() == "CANCEL" && s.dst == addr(AST)));
}

#[test]
fn replayed_credentials_only_answer_register_retransmissions() {
    let mut h = Harness::new(&[AST]);
    let reg = |branch: &str, response: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r1\r\nTo: <sip:alice@example.com>\r\nCall-ID: rr1\r\nCSeq: 2 REGISTER\r\nContact: <sip:alice@127.0.0.3:5062>\r\nExpires: 600\r\n{}Content-Length: 0\r\n\r\n",
            auth_hdr(false, "alice", response)
        )
    };
    // Nothing stored yet: a replayed nonce count is challenged, not counted as a failure.
    let out = h.recv(PHONE, &reg("z9hG4bKrr0", "replayed"));
    assert_eq!(out[0].code(), 401);
    assert_eq!(h.core.stats().auth_failed, 0);
    let out = h.recv(PHONE, &reg("z9hG4bKrr1", "good"));
    assert!(out.iter().any(|s| s.code() == 200));
    assert!(
        out.iter().any(|s| s.method() == "REGISTER"),
        "first save is forwarded"
    );
    // The phone retransmits (its 200 was lost): same 200 again, nothing forwarded.
    let out = h.recv(PHONE, &reg("z9hG4bKrr1", "replayed"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 200);
    assert!(out[0].header("Contact").is_some());
    // A replayed INVITE is challenged and not counted.
    let inv = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKri",
        "ri1",
        &auth_hdr(true, "alice", "replayed"),
    );
    assert_eq!(h.recv(PHONE, &inv)[0].code(), 407);
    assert_eq!(h.core.stats().auth_failed, 0);
}

#[test]
fn phones_may_only_send_as_themselves() {
    let mut h = Harness::new(&[AST]);
    // bob's valid credentials on a request From alice.
    let inv = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKfu",
        "fu1",
        &auth_hdr(true, "bob", "good"),
    );
    let out = h.recv(PHONE, &inv);
    assert_eq!(out[0].code(), 403);
    assert!(out.iter().all(|s| s.method() != "INVITE"));
    // From Asterisk nothing is checked.
    h.fakes.location.add(
        "bob",
        "sip:bob@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    let inv = req(
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        AST,
        "z9hG4bKfa",
        "fa1",
        "",
    );
    assert!(h.recv(AST, &inv).iter().any(|s| s.method() == "INVITE"));
}

#[test]
fn phones_behind_nat_are_reached_through_the_contact_alias() {
    let mut h = Harness::new(&[AST]);
    // The phone (seen as 127.0.0.3:5062) announces a private Contact.
    let inv = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKnat",
        "nat1",
        &format!(
            "Contact: <sip:alice@192.168.1.10:5060>\r\n{}",
            auth_hdr(true, "alice", "good")
        ),
    );
    let out = h.recv(PHONE, &inv);
    let fwd = find(&out, |s| s.method() == "INVITE");
    assert_eq!(
        fwd.header("Contact"),
        Some("<sip:alice@192.168.1.10:5060;alias=127.0.0.3~5062~1>")
    );
    // Asterisk hangs up: its BYE goes to that Contact; the proxy follows the alias.
    let bye = format!(
        "BYE sip:alice@192.168.1.10:5060;alias=127.0.0.3~5062~1 SIP/2.0\r\nVia: SIP/2.0/UDP {AST};branch=z9hG4bKnbye\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:600@example.com>;tag=ast1\r\nTo: <sip:alice@example.com>;tag=ft1\r\nCall-ID: nat1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(AST, &bye);
    let fbye = find(&out, |s| s.method() == "BYE");
    assert_eq!(fbye.dst, addr(PHONE));
    assert!(
        fbye.text()
            .starts_with("BYE sip:alice@192.168.1.10:5060 SIP/2.0\r\n"),
        "{}",
        fbye.text()
    );

    // A call from Asterisk to a NATed phone: the phone's 200 gets the alias too.
    h.fakes
        .location
        .add("bob", "sip:bob@10.0.0.7:5060", addr(PHONE2), T0 + 3_600_000);
    let inv = req(
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        AST,
        "z9hG4bKnat2",
        "nat2",
        "",
    );
    let out = h.recv(AST, &inv);
    let b = find(&out, |s| s.method() == "INVITE" && s.dst == addr(PHONE2)).clone();
    let out = h.recv(
        PHONE2,
        &respond(&b, 200, Some("p2"), "Contact: <sip:bob@10.0.0.7:5060>\r\n"),
    );
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(
        ok.header("Contact"),
        Some("<sip:bob@10.0.0.7:5060;alias=127.0.0.4~5064~1>")
    );
    // A phone whose Contact is its real address gets nothing added.
    let out = h.recv(
        PHONE,
        &req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            "z9hG4bKnat3",
            "nat3",
            &format!(
                "Contact: <sip:alice@127.0.0.3:5062>\r\n{}",
                auth_hdr(true, "alice", "good")
            ),
        ),
    );
    let fwd = find(&out, |s| s.method() == "INVITE");
    assert_eq!(fwd.header("Contact"), Some("<sip:alice@127.0.0.3:5062>"));
}

#[test]
fn scanners_get_no_answer() {
    let mut h = Harness::new(&[AST]);
    let probe = req(
        "OPTIONS",
        "sip:100@127.0.0.1",
        PHONE,
        "z9hG4bKsv",
        "sv1",
        "User-Agent: friendly-scanner\r\n",
    );
    assert!(h.recv(PHONE, &probe).is_empty());
    assert_eq!(h.core.stats().dropped_scanner, 1);
    let phone = req(
        "OPTIONS",
        "sip:127.0.0.1:5060",
        PHONE,
        "z9hG4bKok",
        "ok1",
        "User-Agent: Yealink T46\r\n",
    );
    assert_eq!(h.recv(PHONE, &phone)[0].code(), 200);
}

#[test]
fn brute_force_bans_the_source() {
    let mut h = Harness::new(&[AST]);
    let mut answered = 0;
    for i in 0..12 {
        let bad = req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            &format!("z9hG4bKbf{i}"),
            &format!("bf{i}"),
            &auth_hdr(true, "alice", "bad"),
        );
        answered += h.recv(PHONE, &bad).len();
    }
    // 10 failures ban the address (default [guard] ban_ip_failures); the 10th gets no answer.
    assert_eq!(answered, 9);
    assert_eq!(h.core.stats().auth_failed, 10);
    // Even the right password from that address is ignored now.
    assert!(h
        .recv(PHONE, &authed_invite("z9hG4bKbfok", "bfok"))
        .is_empty());
    assert!(h.core.stats().dropped_banned >= 2);
    // Other phones, and Asterisk, are unaffected.
    let out = h.recv(
        PHONE2,
        &req(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            PHONE2,
            "z9hG4bKo2",
            "o2",
            "",
        ),
    );
    assert_eq!(out[0].code(), 200);
    assert_eq!(
        h.recv(
            AST,
            &req(
                "INVITE",
                "sip:bob@127.0.0.1:5060",
                AST,
                "z9hG4bKa9",
                "a9",
                ""
            )
        )[0]
        .code(),
        480
    );
}

#[test]
fn floods_from_one_address_are_rate_limited() {
    let mut fakes = Fakes::new(&["alice"]);
    fakes.guard = Arc::new(super::testing::FakeGuard::with_rate(10, 20));
    let mut core = Core::new(
        Arc::new(test_config(&[AST])),
        fakes.ports(),
        0,
        addr("127.0.0.1:6000"),
    );
    let mut rec = Recorder::default();
    for i in 0..100 {
        let m = req(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            PHONE,
            &format!("z9hG4bKfl{i}"),
            &format!("fl{i}"),
            "",
        );
        core.handle_datagram(
            Now::same(T0),
            Flow::new(Local::Listen(0), addr(PHONE)),
            m.as_bytes(),
            &mut rec,
        );
        // Asterisk is exempt.
        let a = req(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            AST,
            &format!("z9hG4bKfa{i}"),
            &format!("fa{i}"),
            "",
        );
        core.handle_datagram(
            Now::same(T0),
            Flow::new(Local::Listen(0), addr(AST)),
            a.as_bytes(),
            &mut rec,
        );
    }
    let out = rec.take();
    assert_eq!(
        out.iter().filter(|s| s.dst == addr(PHONE)).count(),
        20,
        "the burst"
    );
    assert_eq!(out.iter().filter(|s| s.dst == addr(AST)).count(), 100);
    assert_eq!(core.stats().dropped_rate_limited, 80);
    // A second later the bucket has refilled by rate_pps.
    for i in 0..20 {
        let m = req(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            PHONE,
            &format!("z9hG4bKfm{i}"),
            &format!("fm{i}"),
            "",
        );
        core.handle_datagram(
            Now::same(T0 + 1000),
            Flow::new(Local::Listen(0), addr(PHONE)),
            m.as_bytes(),
            &mut rec,
        );
    }
    assert_eq!(rec.take().len(), 10);
}

#[test]
fn in_dialog_requests_need_a_dialog_of_this_proxy() {
    let mut h = Harness::new(&[AST]);
    let forged = |route: &str| {
        format!(
            "BYE sip:victim@198.51.100.9:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKrel\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=x\r\nTo: <sip:victim@198.51.100.9>;tag=y\r\nCall-ID: relay1\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // The proxy's address without a token, or with another dialog's token: refused.
    let out = h.recv(PHONE, &forged("sip:127.0.0.1:5060;lr"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 403);
    let other = h.core.cfg.dialog_route(0, "another-call");
    let out = h.recv(PHONE, &forged(&other));
    assert_eq!(out[0].code(), 403);
    assert!(out.iter().all(|s| s.method().is_empty()), "nothing relayed");
    // The right token for this Call-ID: relayed.
    let mine = h.core.cfg.dialog_route(0, "relay1");
    let out = h.recv(PHONE, &forged(&mine).replace("z9hG4bKrel", "z9hG4bKrel2"));
    assert!(out
        .iter()
        .any(|s| s.method() == "BYE" && s.dst == addr("198.51.100.9:5060")));
}

#[test]
fn register_retransmissions_get_the_same_final_response() {
    let mut h = Harness::new(&[AST]);
    let reg = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKrt1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r1\r\nTo: <sip:alice@example.com>\r\nCall-ID: rt1\r\nCSeq: 2 REGISTER\r\nContact: <sip:alice@127.0.0.3:5062>\r\nExpires: 600\r\n{}Content-Length: 0\r\n\r\n",
        auth_hdr(false, "alice", "good")
    );
    let first = h.recv(PHONE, &reg);
    let ok = find(&first, |s| s.code() == 200).clone();
    // The binding changes meanwhile (another REGISTER, another Call-ID)...
    let other = reg
        .replace("Call-ID: rt1", "Call-ID: rt2")
        .replace("z9hG4bKrt1", "z9hG4bKrt2");
    assert!(h.recv(PHONE, &other).iter().any(|s| s.code() == 200));
    // ...and the first one's retransmission still gets its own 200, nothing else.
    let again = h.recv(PHONE, &reg);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, ok.bytes);
    // After 64*T1 the entry is gone: the request is processed again.
    h.advance_to(64 * 500 + 1000);
    let late = h.recv(PHONE, &reg);
    assert!(late.iter().all(|s| s.bytes != ok.bytes));
}

#[test]
fn draining_refuses_new_requests_but_finishes_calls() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKdr1", "dr1");
    h.fakes
        .draining_flag()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A new call: 503 with Retry-After.
    let out = h.recv(PHONE, &authed_invite("z9hG4bKdr2", "dr2"));
    assert_eq!(out[0].code(), 503);
    assert!(out[0].header("Retry-After").is_some());
    // The call in progress completes.
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 200, Some("a"), ""));
    assert!(out.iter().any(|s| s.code() == 200 && s.dst == addr(PHONE)));
}

#[test]
fn reconfigure_moves_new_calls_to_new_nodes_and_applies_new_limits() {
    let mut h = Harness::new(&[AST]);
    // A call in progress on the old node.
    let old = call_to_asterisk(&mut h, "z9hG4bKr1", "r1");
    assert_eq!(old.dst, addr(AST));

    // Reload: Asterisk is now AST2 only, and a worker may hold 2 transactions.
    let mut cfg = test_config(&[AST2]);
    cfg.max_transactions = 2;
    h.core.reconfigure(Arc::new(cfg));
    // (The server reconfigures the farm from the same file.)
    h.fakes.farm.set_nodes(&[AST2]);

    // The call in progress still completes through the old node.
    let out = h.recv_on(Local::Upstream, AST, &respond(&old, 200, Some("a"), ""));
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(ok.dst, addr(PHONE));

    // A new call goes to the new node.
    let new = call_to_asterisk(&mut h, "z9hG4bKr2", "r2");
    assert_eq!(new.dst, addr(AST2));
    // The old node is no longer Asterisk: a request from it is a phone's (challenged).
    let from_old = req("INVITE", "sip:alice@127.0.0.1", AST, "z9hG4bKr3", "r3", "");
    let out = h.recv(AST, &from_old);
    assert!(out.iter().any(|s| s.code() == 407 || s.code() == 401));

    // The lowered limit applies to new work: one more transaction, then 503.
    let _third = h.recv(PHONE, &authed_invite("z9hG4bKr4", "r4"));
    let out = h.recv(PHONE, &authed_invite("z9hG4bKr5", "r5"));
    assert!(
        out.iter()
            .any(|s| s.code() == 503 && s.header("Retry-After").is_some()),
        "past the reloaded limit: {out:?}"
    );
}

#[test]
fn reconfigure_keeps_the_listen_addresses() {
    let mut h = Harness::new(&[AST]);
    let mut cfg = test_config(&[AST]);
    cfg.interfaces = vec![super::Interface::new(addr("127.0.0.9:5070"))];
    h.core.reconfigure(Arc::new(cfg));
    let ifaces = &h.core.config().interfaces;
    assert_eq!(ifaces.len(), 1);
    assert_eq!(ifaces[0].addr, addr("127.0.0.1:5060"));
    assert_eq!(ifaces[0].record_route, "sip:127.0.0.1:5060;lr");
}

/// A REGISTER from the phone as alice (digest answer `good`) with branch and Call-ID.
fn authed_register(branch: &str, call_id: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r1\r\nTo: <sip:alice@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 2 REGISTER\r\nContact: <sip:alice@127.0.0.3:5062>\r\nExpires: 600\r\n{}Content-Length: 0\r\n\r\n",
        auth_hdr(false, "alice", "good")
    )
}

fn digest_checks(h: &Harness) -> u64 {
    h.fakes
        .auth
        .checks
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn backlog_over_the_threshold_sheds_new_requests_before_digest_work() {
    let mut h = Harness::new(&[AST]);
    let limit = h.core.cfg.shed_backlog_bytes;
    assert_eq!(limit, 1 << 20, "the default");
    // Work in progress before the overload: a ringing call, an answered call, a
    // registration, and a request parked for its credentials.
    let ringing = call_to_asterisk(&mut h, "z9hG4bKs1", "s1");
    h.recv_on(
        Local::Upstream,
        AST,
        &respond(&ringing, 180, Some("a1"), ""),
    );
    let answered = call_to_asterisk(&mut h, "z9hG4bKs2", "s2");
    let ok = h.recv_on(
        Local::Upstream,
        AST,
        &respond(&answered, 200, Some("a2"), ""),
    );
    assert!(ok.iter().any(|s| s.code() == 200));
    let reg = authed_register("z9hG4bKsr1", "sr1");
    let reg_ok = find(&h.recv(PHONE, &reg), |s| s.code() == 200).clone();
    h.fakes
        .auth
        .uncached
        .lock()
        .unwrap()
        .insert("bob".to_owned());
    let parked = authed_invite("z9hG4bKs3", "s3")
        .replace("username=\"alice\"", "username=\"bob\"")
        .replace("<sip:alice@", "<sip:bob@");
    assert!(h.recv(PHONE, &parked).is_empty());
    let lookup = h.core.poll_lookup().expect("parked");

    // First level: requests that would start a flow (no credentials) get 503 + Retry-After
    // and no challenge; requests answering a challenge complete their flow.
    h.core.set_backlog(limit + 1, 0);
    assert_eq!(h.core.shed_level(), Shed::NewFlows);
    assert_eq!(h.core.stats().shedding, 1);
    let checks = digest_checks(&h);
    let out = h.recv(
        PHONE,
        &req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            "z9hG4bKs5",
            "s5",
            "",
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 503);
    assert_eq!(out[0].header("Retry-After"), Some("5"));
    let unauth_reg =
        authed_register("z9hG4bKsr3", "sr3").replace(&auth_hdr(false, "alice", "good"), "");
    let out = h.recv(PHONE, &unauth_reg);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 503);
    assert_eq!(digest_checks(&h), checks, "no digest work for them");
    let out = h.recv(PHONE, &authed_invite("z9hG4bKs6", "s6"));
    assert!(out
        .iter()
        .any(|s| s.method() == "INVITE" && s.dst == addr(AST)));
    assert_eq!(digest_checks(&h), checks + 1);
    assert_eq!(h.core.stats().shed_overload, 2);

    // Second level: every new request from a phone gets 503, before any digest work.
    h.core.set_backlog(2 * limit + 1, 0);
    assert_eq!(h.core.shed_level(), Shed::All);
    let checks = digest_checks(&h);
    let out = h.recv(PHONE, &authed_invite("z9hG4bKs4", "s4"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 503);
    assert_eq!(out[0].header("Retry-After"), Some("5"));
    let out = h.recv(PHONE, &authed_register("z9hG4bKsr2", "sr2"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 503);
    assert!(out[0].header("Retry-After").is_some());
    assert_eq!(digest_checks(&h), checks, "no digest work while shedding");
    assert_eq!(h.core.stats().shed_overload, 4);
    assert_eq!(
        h.core.transactions_in_flight().0,
        3,
        "no transaction for the refused"
    );

    // What keeps existing work going still passes:
    // the retransmitted INVITE of the ringing call gets its last response again,
    let out = h.recv(PHONE, &authed_invite("z9hG4bKs1", "s1"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 180);
    // the retransmitted REGISTER its cached 200,
    let out = h.recv(PHONE, &reg);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes, reg_ok.bytes);
    // the ACK of the answered call and its BYE (in dialog) reach Asterisk,
    let route = h.core.cfg.dialog_route(0, "s2");
    let in_dialog = |method: &str, branch: &str, seq: u32| {
        format!(
            "{method} sip:600@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch}\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ft1\r\nTo: <sip:600@example.com>;tag=a2\r\nCall-ID: s2\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = h.recv(PHONE, &in_dialog("ACK", "z9hG4bKsack", 1));
    assert!(out
        .iter()
        .any(|s| s.method() == "ACK" && s.dst == addr(AST)));
    let out = h.recv(PHONE, &in_dialog("BYE", "z9hG4bKsbye", 2));
    assert!(out
        .iter()
        .any(|s| s.method() == "BYE" && s.dst == addr(AST)));
    // the CANCEL of the ringing call is answered and relayed,
    let cancel = req(
        "CANCEL",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKs1",
        "s1",
        "",
    );
    let out = h.recv(PHONE, &cancel);
    assert!(out.iter().any(|s| s.code() == 200));
    assert!(out
        .iter()
        .any(|s| s.method() == "CANCEL" && s.dst == addr(AST)));
    // keep-alive OPTIONS to the proxy are answered,
    let ping = req(
        "OPTIONS",
        "sip:127.0.0.1:5060",
        PHONE,
        "z9hG4bKsping",
        "sping",
        "",
    );
    assert_eq!(h.recv(PHONE, &ping)[0].code(), 200);
    // Asterisk's new requests are not refused,
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        T0 + 3_600_000,
    );
    let inv = req(
        "INVITE",
        "sip:alice@127.0.0.1:5060",
        AST,
        "z9hG4bKsa",
        "sa",
        "",
    )
    .replace("From: <sip:alice@example.com>", "From: <sip:600@127.0.0.2>");
    let out = h.recv(AST, &inv);
    assert!(out
        .iter()
        .any(|s| s.method() == "INVITE" && s.dst == addr(PHONE)));
    // and the parked request goes on once its credentials are known.
    h.fakes.auth.uncached.lock().unwrap().clear();
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Ready,
        &mut h.rec,
    );
    assert!(h
        .rec
        .take()
        .iter()
        .any(|s| s.method() == "INVITE" && s.dst == addr(AST)));
    assert_eq!(h.core.stats().shed_overload, 4);
}

#[test]
fn shedding_has_hysteresis_at_both_levels() {
    let mut h = Harness::new(&[AST]);
    let l = h.core.cfg.shed_backlog_bytes;
    let mut n = 0;
    // The first response to a new INVITE without credentials (407, or 503 when shed).
    let mut new_flow = |h: &mut Harness| {
        n += 1;
        let m = req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            &format!("z9hG4bKh{n}"),
            &format!("h{n}"),
            "",
        );
        h.recv(PHONE, &m).first().map_or(0, |s| s.code())
    };
    let level = |h: &mut Harness, bytes: u64| {
        h.core.set_backlog(bytes, 0);
        h.core.shed_level()
    };
    // At the threshold (not above it): nothing is shed.
    assert_eq!(level(&mut h, l), Shed::Off);
    assert_eq!(new_flow(&mut h), 407);
    assert_eq!(level(&mut h, l + 1), Shed::NewFlows);
    assert_eq!(new_flow(&mut h), 503);
    // Between half and the threshold: still shedding; below half: back to normal, and it
    // stays so until the threshold is passed again.
    assert_eq!(level(&mut h, l / 2), Shed::NewFlows);
    assert_eq!(level(&mut h, l / 2 - 1), Shed::Off);
    assert_eq!(h.core.stats().shedding, 0);
    assert_eq!(new_flow(&mut h), 407);
    assert_eq!(level(&mut h, l), Shed::Off);
    // Twice the threshold: everything; it stays so down to the threshold, then first
    // level, then off below half.
    assert_eq!(level(&mut h, 2 * l + 1), Shed::All);
    assert_eq!(level(&mut h, l + 1), Shed::All);
    assert_eq!(level(&mut h, l), Shed::All);
    assert_eq!(level(&mut h, l - 1), Shed::NewFlows);
    assert_eq!(level(&mut h, l + 1), Shed::NewFlows);
    assert_eq!(level(&mut h, 2 * l), Shed::NewFlows);
    assert_eq!(level(&mut h, l / 2 - 1), Shed::Off);
    assert_eq!(level(&mut h, 3 * l), Shed::All, "straight from off");
    assert_eq!(level(&mut h, 0), Shed::Off, "straight to off");
    assert_eq!(h.core.stats().shed_overload, 1);

    // A receive buffer smaller than four times the threshold lowers it to a quarter of it.
    let buf = 416 * 1024;
    h.core.set_backlog(150_000, buf);
    assert_eq!(
        h.core.shed_level(),
        Shed::NewFlows,
        "over a quarter of 416 KiB"
    );
    h.core.set_backlog(250_000, buf);
    assert_eq!(h.core.shed_level(), Shed::All, "over half of it");
    h.core.set_backlog(50_000, buf);
    assert_eq!(h.core.shed_level(), Shed::Off);
}

#[test]
fn a_zero_threshold_never_sheds() {
    let fakes = Fakes::new(&["alice"]);
    let mut cfg = test_config(&[AST]);
    cfg.shed_backlog_bytes = 0;
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    core.set_backlog(u64::MAX, 0);
    core.set_backlog(u64::MAX, 4096);
    assert!(!core.is_shedding());
    let mut rec = Recorder::default();
    let m = authed_invite("z9hG4bKz1", "z1");
    core.handle_datagram(
        Now::same(T0),
        Flow::new(Local::Listen(0), addr(PHONE)),
        m.as_bytes(),
        &mut rec,
    );
    assert!(rec.take().iter().any(|s| s.method() == "INVITE"));
}

// ---- Hardening (issue #16 item 6): bad input gets an answer ----

#[test]
fn content_length_past_the_datagram_gets_400_and_a_response_is_dropped() {
    let mut h = Harness::new(&[AST]);
    let short = req(
        "OPTIONS",
        "sip:127.0.0.1:5060",
        PHONE,
        "z9hG4bKcl",
        "cl1",
        "",
    )
    .replace("Content-Length: 0", "Content-Length: 500");
    let out = h.recv(PHONE, &format!("{short}v=0\r\n"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].code(), 400);
    assert_eq!(out[0].dst, addr(PHONE));
    assert_eq!(out[0].header("Call-ID"), Some("cl1"));
    // A response cut short the same way is discarded (RFC 3261 §18.3).
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKx\r\n\
                From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: cl2\r\nCSeq: 1 OPTIONS\r\n\
                Content-Length: 99\r\n\r\nshort";
    assert!(h.recv(AST, resp).is_empty());
}

// ---- Hardening (issue #16 item 4): every refusal is logged with its reason ----

/// A `MakeWriter` target collecting the log lines of one test.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn refusals_are_logged_at_info_with_their_reason() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let invite = |branch: &str, user: &str, response: &str| {
        req(
            "INVITE",
            "sip:600@example.com",
            PHONE,
            branch,
            branch,
            &auth_hdr(true, user, response),
        )
    };
    tracing::subscriber::with_default(subscriber, || {
        let mut h = Harness::new(&[AST]);
        for (m, want) in [
            (invite("z9hG4bKl1", "alice", "bad-9f3e"), 407),
            (invite("z9hG4bKl2", "mallory", "bad-7c1d"), 407),
            (invite("z9hG4bKl3", "alice", "replayed"), 407),
            (
                invite("z9hG4bKl4", "alice", "good").replace("\"n1\"", "\"stale\""),
                407,
            ),
        ] {
            assert_eq!(h.recv(PHONE, &m)[0].code(), want, "{m}");
        }
        assert_eq!(
            h.core.stats().auth_failed,
            2,
            "stale and replay are not failures"
        );
    });
    let log = String::from_utf8_lossy(&capture.0.lock().expect("log")).into_owned();
    for (user, reason) in [
        ("alice", "wrong password"),
        ("mallory", "unknown user"),
        ("alice", "replay"),
        ("alice", "stale nonce"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(" INFO ")
                && l.contains("authentication failed")
                && l.contains(&format!("user=\"{user}\""))
                && l.contains(&format!("reason=\"{reason}\""))),
            "{user}: {reason}\n{log}"
        );
    }
    for secret in [
        "bad-9f3e",
        "bad-7c1d",
        "response=",
        "nonce=",
        "cnonce",
        "Digest",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}
