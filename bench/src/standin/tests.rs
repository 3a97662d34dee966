//! Sans-IO tests of the engine: scripted peers, a virtual clock, no sockets.

use std::net::SocketAddr;

use super::config::{Config, Mode};
use super::digest::{expected_response, parse_authorization};
use super::engine::{Engine, Outbox};
use super::parse::{param, Msg, Start};

const PROXY: &str = "127.0.0.1:5060";
const T0: u64 = 1_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn engine(cfg: Config) -> Engine {
    let mut e = Engine::new(cfg, addr("127.0.0.2:5080"), 7);
    e.enable_events();
    e
}

/// Feeds `msg` from the proxy and returns what the engine sent, as `(dst, text)`.
fn feed(e: &mut Engine, now: u64, msg: &str) -> Vec<(SocketAddr, String)> {
    let mut out = Outbox::new();
    e.handle_datagram(now, addr(PROXY), msg.as_bytes(), &mut out);
    collect(&out)
}

fn tick(e: &mut Engine, now: u64) -> Vec<(SocketAddr, String)> {
    let mut out = Outbox::new();
    e.handle_timeout(now, &mut out);
    collect(&out)
}

fn collect(out: &Outbox) -> Vec<(SocketAddr, String)> {
    out.iter()
        .map(|(d, b)| (d, String::from_utf8(b.to_vec()).unwrap()))
        .collect()
}

fn code(text: &str) -> u16 {
    match Msg::parse(text.as_bytes()).unwrap().start {
        Start::Response { code, .. } => code,
        Start::Request { .. } => 0,
    }
}

fn codes(sent: &[(SocketAddr, String)]) -> Vec<u16> {
    sent.iter().map(|(_, t)| code(t)).collect()
}

fn hdr<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or("")
}

fn register(user: &str, contact: &str, expires: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY};branch=z9hG4bKr{user}{expires}\r\n\
From: <sip:{user}@127.0.0.2>;tag=r1\r\nTo: <sip:{user}@127.0.0.2>\r\nCall-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\n\
Contact: <{contact}>\r\nExpires: {expires}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn invite(exten: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:{exten}@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY};branch=z9hG4bKi{call_id}\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:alice@example.com>;tag=fa\r\nTo: <sip:{exten}@example.com>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An in-dialog request on the A-leg (ACK, BYE, CANCEL use the INVITE's CSeq number).
fn a_request(method: &str, call_id: &str, to_tag: Option<&str>) -> String {
    let to = to_tag.map_or(String::new(), |t| format!(";tag={t}"));
    let (seq, branch) = if method == "BYE" {
        (2, "z9hG4bKbye")
    } else {
        (1, "")
    };
    let branch = if branch.is_empty() {
        format!("z9hG4bKi{call_id}")
    } else {
        branch.to_owned()
    };
    format!(
        "{method} sip:600@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY};branch={branch}\r\n\
From: <sip:alice@example.com>;tag=fa\r\nTo: <sip:600@example.com>{to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// A response from the callee to one of our requests, copying its Via/From/To/Call-ID/CSeq.
fn answer_to(req: &str, code: u16, to_tag: &str, rr: bool) -> String {
    let m = Msg::parse(req.as_bytes()).unwrap();
    let rr = if rr {
        "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n{rr}\
Contact: <sip:bob@10.0.0.2:5064>\r\nContent-Length: 0\r\n\r\n",
        m.header("Via").unwrap(),
        m.header("From").unwrap(),
        m.header("To").unwrap(),
        m.call_id().unwrap(),
        m.header("CSeq").unwrap()
    )
}

#[test]
fn register_records_and_unregisters() {
    let mut e = engine(Config::default());
    let sent = feed(
        &mut e,
        T0,
        &register("bob", "sip:bob@127.0.0.1:5060", 60, ""),
    );
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        hdr(&sent[0].1, "Contact"),
        "<sip:bob@127.0.0.1:5060>;expires=60"
    );
    assert_eq!(hdr(&sent[0].1, "Expires"), "60");
    let b = e.registry().get("bob", T0).unwrap();
    assert_eq!(
        (b.contact.as_str(), b.target),
        ("sip:bob@127.0.0.1:5060", addr(PROXY))
    );
    assert!(e.registry().get("bob", T0 + 60_000).is_none());
    assert_eq!(
        codes(&feed(
            &mut e,
            T0,
            &register("bob", "sip:bob@127.0.0.1:5060", 0, "")
        )),
        [200]
    );
    assert!(e.registry().get("bob", T0).is_none());
    assert_eq!((e.stats().register, e.stats().unregister), (2, 1));
    let mut log = String::new();
    e.drain_events(|b| log.push_str(std::str::from_utf8(b).unwrap()));
    assert!(log.starts_with("{\"ts_ms\":1000000,\"event\":\"register\""));
    assert!(log.contains("[\"Expires\",\"60\"]"));
    assert!(log.contains("\"event\":\"unregister\""));
}

#[test]
fn challenge_then_digest() {
    let cfg = Config {
        challenge: true,
        default_password: Some("pw".into()),
        ..Config::default()
    };
    let mut e = engine(cfg);
    let sent = feed(
        &mut e,
        T0,
        &register("bob", "sip:bob@127.0.0.1:5060", 60, ""),
    );
    assert_eq!(codes(&sent), [401]);
    let chal = hdr(&sent[0].1, "WWW-Authenticate");
    let nonce = param(&chal.replace(", ", ";"), "nonce").unwrap().to_owned();
    let auth_for = |pw: &str| {
        let line = format!(
            "Digest username=\"bob\", realm=\"asterisk\", nonce=\"{nonce}\", uri=\"sip:127.0.0.2:5080\", response=\"x\""
        );
        let c = parse_authorization(&line).unwrap();
        let r = expected_response(&c, "REGISTER", pw);
        format!(
            "Authorization: {}\r\n",
            line.replace(
                "response=\"x\"",
                &format!("response=\"{}\"", std::str::from_utf8(&r).unwrap())
            )
        )
    };
    let bad = feed(
        &mut e,
        T0,
        &register("bob", "sip:bob@127.0.0.1:5060", 60, &auth_for("nope")),
    );
    assert_eq!(codes(&bad), [403]);
    let ok = feed(
        &mut e,
        T0,
        &register("bob", "sip:bob@127.0.0.1:5060", 60, &auth_for("pw")),
    );
    assert_eq!(codes(&ok), [200]);
    assert_eq!(
        (
            e.stats().register_challenged,
            e.stats().register_forbidden,
            e.stats().register_ok
        ),
        (1, 1, 1)
    );
}

#[test]
fn answer_mode_retransmits_200_until_ack_then_bye() {
    let mut cfg = Config::default();
    cfg.routes.insert("600".into(), Mode::Answer);
    let mut e = engine(cfg);
    let sent = feed(&mut e, T0, &invite("600", "c1"));
    assert_eq!(codes(&sent), [100, 180, 200]);
    let tag = Msg::parse(sent[2].1.as_bytes())
        .unwrap()
        .to_tag()
        .unwrap()
        .to_owned();
    assert_eq!(
        Msg::parse(sent[1].1.as_bytes()).unwrap().to_tag(),
        Some(tag.as_str())
    );
    assert!(sent[2].1.contains("m=audio"));
    assert_eq!(
        hdr(&sent[2].1, "Record-Route"),
        "<sip:127.0.0.1:5060;lr>",
        "2xx echoes Record-Route"
    );
    assert_eq!(
        hdr(&sent[1].1, "Record-Route"),
        "<sip:127.0.0.1:5060;lr>",
        "so does the 180"
    );
    assert_eq!(
        codes(&feed(&mut e, T0 + 10, &invite("600", "c1"))),
        [200],
        "INVITE retransmission"
    );
    assert_eq!(codes(&tick(&mut e, T0 + 500)), [200], "Timer G");
    assert!(feed(&mut e, T0 + 600, &a_request("ACK", "c1", Some(&tag))).is_empty());
    assert!(
        tick(&mut e, T0 + 2000).is_empty(),
        "no retransmission after ACK"
    );
    assert_eq!(
        codes(&feed(
            &mut e,
            T0 + 3000,
            &a_request("BYE", "c1", Some(&tag))
        )),
        [200]
    );
    assert_eq!(e.stats().calls_active, 0);
    tick(&mut e, T0 + 10_000);
    assert_eq!(
        codes(&feed(
            &mut e,
            T0 + 10_001,
            &a_request("BYE", "c1", Some(&tag))
        )),
        [481]
    );
}

#[test]
fn answer_delay_and_busy_and_unknown_extension() {
    let mut cfg = Config {
        answer_delay_ms: 300,
        ..Config::default()
    };
    cfg.routes.insert("600".into(), Mode::Answer);
    cfg.routes.insert("486".into(), Mode::Busy);
    cfg.routes.insert("408".into(), Mode::Drop);
    let mut e = engine(cfg);
    assert_eq!(codes(&feed(&mut e, T0, &invite("600", "c1"))), [100, 180]);
    assert_eq!(e.next_deadline_ms(), Some(T0 + 300));
    assert_eq!(codes(&tick(&mut e, T0 + 300)), [200]);
    assert_eq!(codes(&feed(&mut e, T0, &invite("486", "c2"))), [100, 486]);
    assert!(
        feed(&mut e, T0, &invite("408", "c4")).is_empty(),
        "drop mode: silence"
    );
    assert_eq!(e.stats().invite_dropped, 1);
    assert_eq!(
        codes(&feed(&mut e, T0, &invite("777", "c3"))),
        [100, 404],
        "dial mode, nobody registered"
    );
}

/// Registers bob, calls him in dial mode and returns the B-leg INVITE and the A-leg To tag.
fn dial_setup(e: &mut Engine) -> String {
    feed(e, T0, &register("bob", "sip:bob@127.0.0.1:5060", 3600, ""));
    let sent = feed(e, T0, &invite("bob", "a1"));
    assert_eq!(codes(&sent), [100, 0]);
    let (dst, b_inv) = sent[1].clone();
    assert_eq!(dst, addr(PROXY));
    assert!(b_inv.starts_with("INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"));
    let m = Msg::parse(b_inv.as_bytes()).unwrap();
    assert_ne!(m.call_id(), Some("a1"));
    assert!(m.branch().unwrap().starts_with("z9hG4bK"));
    assert_eq!(m.header("To"), Some("<sip:bob@127.0.0.1:5060>"));
    b_inv
}

#[test]
fn dial_mode_bridges_responses_ack_and_bye() {
    let mut e = engine(Config::default());
    let b_inv = dial_setup(&mut e);
    assert_eq!(
        codes(&tick(&mut e, T0 + 500)),
        [0],
        "Timer A retransmits the B INVITE"
    );
    let ringing = feed(&mut e, T0 + 600, &answer_to(&b_inv, 180, "tb", true));
    assert_eq!(codes(&ringing), [180]);
    assert!(
        tick(&mut e, T0 + 5000).is_empty(),
        "no INVITE retransmission after a provisional"
    );
    let a_tag = Msg::parse(ringing[0].1.as_bytes())
        .unwrap()
        .to_tag()
        .unwrap()
        .to_owned();
    assert_ne!(a_tag, "tb", "the A-leg has its own To tag");
    let ok = feed(&mut e, T0 + 700, &answer_to(&b_inv, 200, "tb", true));
    assert_eq!(codes(&ok), [0, 200]);
    assert!(
        ok[0].1.starts_with("ACK sip:bob@10.0.0.2:5064 SIP/2.0"),
        "ACK to the remote target"
    );
    assert_eq!(hdr(&ok[0].1, "Route"), "<sip:127.0.0.1:5060;lr>");
    assert_eq!(ok[0].0, addr(PROXY));
    let again = feed(&mut e, T0 + 800, &answer_to(&b_inv, 200, "tb", true));
    assert_eq!(
        again.len(),
        1,
        "2xx retransmission is re-ACKed, not relayed"
    );
    feed(&mut e, T0 + 900, &a_request("ACK", "a1", Some(&a_tag)));
    let bye = feed(&mut e, T0 + 1000, &a_request("BYE", "a1", Some(&a_tag)));
    assert_eq!(codes(&bye), [200, 0]);
    assert!(bye[1].1.starts_with("BYE sip:bob@10.0.0.2:5064 SIP/2.0"));
    assert_eq!(hdr(&bye[1].1, "CSeq"), "103 BYE");
    assert_eq!(e.stats().calls_active, 1);
    feed(&mut e, T0 + 1100, &answer_to(&bye[1].1, 200, "tb", false));
    assert_eq!(e.stats().calls_active, 0);
}

#[test]
fn callee_bye_goes_to_caller_through_its_record_route() {
    let mut e = engine(Config::default());
    let b_inv = dial_setup(&mut e);
    let ok = feed(&mut e, T0, &answer_to(&b_inv, 200, "tb", true));
    let m = Msg::parse(ok[0].1.as_bytes()).unwrap();
    let bye = format!(
        "BYE sip:alice@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY};branch=z9hG4bKbb\r\nFrom: {};tag=tb\r\n\
To: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        m.header("To").unwrap().split(";tag").next().unwrap(),
        m.header("From").unwrap(),
        m.call_id().unwrap()
    );
    let sent = feed(&mut e, T0 + 10, &bye);
    assert_eq!(codes(&sent), [200, 0]);
    assert!(sent[1].1.starts_with("BYE sip:alice@10.0.0.1:5062 SIP/2.0"));
    assert_eq!(hdr(&sent[1].1, "Route"), "<sip:127.0.0.1:5060;lr>");
    assert_eq!(hdr(&sent[1].1, "To"), "<sip:alice@example.com>;tag=fa");
    assert_eq!(hdr(&sent[1].1, "Call-ID"), "a1");
}

#[test]
fn cancel_before_answer_cancels_the_b_leg() {
    let mut e = engine(Config::default());
    let b_inv = dial_setup(&mut e);
    let early = feed(&mut e, T0 + 10, &a_request("CANCEL", "a1", None));
    assert_eq!(
        codes(&early),
        [200, 487],
        "no provisional from B yet: CANCEL deferred"
    );
    let sent = feed(&mut e, T0 + 20, &answer_to(&b_inv, 180, "tb", false));
    assert_eq!(sent.len(), 1);
    assert!(sent[0]
        .1
        .starts_with("CANCEL sip:bob@127.0.0.1:5060 SIP/2.0"));
    assert_eq!(
        Msg::parse(sent[0].1.as_bytes()).unwrap().branch(),
        Msg::parse(b_inv.as_bytes()).unwrap().branch()
    );
    feed(&mut e, T0 + 30, &answer_to(&sent[0].1, 200, "tb", false));
    let ack = feed(&mut e, T0 + 40, &answer_to(&b_inv, 487, "tb", false));
    assert!(ack[0].1.starts_with("ACK sip:bob@127.0.0.1:5060 SIP/2.0"));
    feed(&mut e, T0 + 50, &a_request("ACK", "a1", Some("x")));
    assert_eq!(
        (
            e.stats().cancel,
            e.stats().cancel_sent,
            e.stats().calls_active
        ),
        (1, 1, 0)
    );
}

#[test]
fn b_leg_timeout_gives_408() {
    let mut e = engine(Config::default());
    dial_setup(&mut e);
    let mut last = Vec::new();
    for now in (T0..=T0 + 64 * 500).step_by(250) {
        last.extend(codes(&tick(&mut e, now)));
    }
    assert_eq!(
        last.iter().filter(|c| **c == 0).count(),
        6,
        "Timer A: 0.5, 1, 2, 4, 8, 16 s"
    );
    assert_eq!(last.last(), Some(&408));
    assert_eq!(e.stats().timeouts, 1);
}

#[test]
fn options_message_and_garbage() {
    let mut e = engine(Config::default());
    let opt = a_request("OPTIONS", "o1", None);
    let sent = feed(&mut e, T0, &opt);
    assert_eq!(codes(&sent), [200]);
    assert_eq!(
        sent,
        feed(&mut e, T0, &opt),
        "retransmission gets the same response"
    );
    assert_eq!(
        codes(&feed(&mut e, T0, &a_request("MESSAGE", "m1", None))),
        [200]
    );
    assert!(feed(&mut e, T0, "garbage").is_empty());
    assert_eq!(
        (e.stats().options, e.stats().message, e.stats().dropped),
        (2, 1, 1)
    );
}

#[test]
fn challenge_calls_asks_invite_and_message_for_proxy_auth() {
    let mut cfg = Config {
        challenge_calls: true,
        default_password: Some("pw".into()),
        ..Config::default()
    };
    cfg.routes.insert("600".into(), Mode::Answer);
    let mut e = engine(cfg);
    let sent = feed(&mut e, T0, &invite("600", "c1"));
    assert_eq!(codes(&sent), [407]);
    let chal = hdr(&sent[0].1, "Proxy-Authenticate");
    let nonce = param(&chal.replace(", ", ";"), "nonce").unwrap().to_owned();
    let line = format!(
        "Digest username=\"alice\", realm=\"asterisk\", nonce=\"{nonce}\", uri=\"sip:600@127.0.0.2:5080\", response=\"x\""
    );
    let r = expected_response(&parse_authorization(&line).unwrap(), "INVITE", "pw");
    let auth = line.replace(
        "response=\"x\"",
        &format!("response=\"{}\"", std::str::from_utf8(&r).unwrap()),
    );
    let authed = invite("600", "c1").replace(
        "Content-Length",
        &format!("Proxy-Authorization: {auth}\r\nContent-Length"),
    );
    assert_eq!(codes(&feed(&mut e, T0, &authed)), [100, 180, 200]);
    assert_eq!(
        codes(&feed(&mut e, T0, &a_request("MESSAGE", "m1", None))),
        [407]
    );
    assert_eq!(e.stats().call_challenged, 2);
}

#[test]
fn forgotten_calls_expire() {
    let mut cfg = Config {
        max_call_ms: 60_000,
        ..Config::default()
    };
    cfg.routes.insert("699".into(), Mode::NoAnswer);
    let mut e = engine(cfg);
    assert_eq!(codes(&feed(&mut e, T0, &invite("699", "n1"))), [100, 180]);
    assert_eq!(e.stats().calls_active, 1);
    assert_eq!(codes(&tick(&mut e, T0 + 60_000)), [480]);
    assert_eq!(e.stats().calls_active, 0);
    tick(&mut e, T0 + 70_000);
    assert_eq!(
        e.next_deadline_ms(),
        None,
        "the call and its timers are gone"
    );
}

#[test]
fn second_fork_answering_is_acked_and_hung_up() {
    let mut e = engine(Config::default());
    let b_inv = dial_setup(&mut e);
    assert_eq!(
        codes(&feed(&mut e, T0, &answer_to(&b_inv, 200, "tb", true))),
        [0, 200]
    );
    let fork = answer_to(&b_inv, 200, "tc", true).replace("bob@10.0.0.2:5064", "bob@10.0.0.3:5066");
    let sent = feed(&mut e, T0 + 10, &fork);
    assert_eq!(
        sent.len(),
        2,
        "ACK and BYE for the extra dialog, nothing to the caller"
    );
    assert!(sent[0].1.starts_with("ACK sip:bob@10.0.0.3:5066 SIP/2.0"));
    assert!(sent[1].1.starts_with("BYE sip:bob@10.0.0.3:5066 SIP/2.0"));
    assert!(hdr(&sent[1].1, "To").ends_with(";tag=tc"));
    feed(&mut e, T0 + 20, &answer_to(&sent[1].1, 200, "tc", false));
    assert_eq!(
        e.stats().calls_active,
        1,
        "the 200 to that BYE does not end the bridged call"
    );
    let again = feed(&mut e, T0 + 30, &answer_to(&b_inv, 200, "tb", true));
    assert!(
        again.len() == 1 && again[0].1.starts_with("ACK sip:bob@10.0.0.2:5064"),
        "re-ACK of the kept dialog"
    );
}

fn subscribe(exten: &str, event: &str, expires: u32) -> String {
    format!(
        "SUBSCRIBE sip:{exten}@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY};branch=z9hG4bKs{exten}{expires}\r\n\
Record-Route: <sip:127.0.0.1:5060;lr;sft=x>\r\nFrom: <sip:alice@example.com>;tag=fs\r\nTo: <sip:{exten}@example.com>\r\n\
Call-ID: sub-{exten}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:alice@10.0.0.1:5062>\r\nEvent: {event}\r\n\
Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn subscribe_gets_200_and_a_notify_through_the_route_set() {
    let mut e = engine(Config::default());
    let sent = feed(&mut e, T0, &subscribe("1002", "dialog;id=7", 600));
    assert_eq!(codes(&sent), [200, 0], "{sent:?}");
    let (dst, ok) = &sent[0];
    assert_eq!(*dst, addr(PROXY));
    assert!(hdr(ok, "To").contains(";tag="));
    assert_eq!(hdr(ok, "Record-Route"), "<sip:127.0.0.1:5060;lr;sft=x>");
    assert_eq!(hdr(ok, "Expires"), "600");
    // The NOTIFY: to the proxy (the Route), for the subscriber's Contact, in the dialog.
    let (dst, notify) = &sent[1];
    assert_eq!(*dst, addr(PROXY));
    assert!(
        notify.starts_with("NOTIFY sip:alice@10.0.0.1:5062 SIP/2.0\r\n"),
        "{notify}"
    );
    assert_eq!(hdr(notify, "Route"), "<sip:127.0.0.1:5060;lr;sft=x>");
    assert_eq!(hdr(notify, "To"), "<sip:alice@example.com>;tag=fs");
    let to_tag = param(hdr(ok, "To"), "tag").unwrap();
    assert_eq!(param(hdr(notify, "From"), "tag"), Some(to_tag));
    assert_eq!(hdr(notify, "Event"), "dialog;id=7");
    assert_eq!(hdr(notify, "Subscription-State"), "active;expires=600");
    assert_eq!(hdr(notify, "Content-Type"), "application/dialog-info+xml");
    // The phone's 200 to the NOTIFY is counted.
    let answered = answer_to(notify, 200, "fs", false);
    assert!(feed(&mut e, T0 + 1, &answered).is_empty());
    assert_eq!((e.stats().subscribe, e.stats().notify_sent), (1, 1));
    assert_eq!(e.stats().notify_answered, 1);
    // Unsubscribe: the NOTIFY says terminated; MWI carries the mailbox state.
    let sent = feed(&mut e, T0 + 2, &subscribe("1002", "dialog", 0));
    assert!(hdr(&sent[1].1, "Subscription-State").starts_with("terminated"));
    let sent = feed(&mut e, T0 + 3, &subscribe("1001", "message-summary", 600));
    assert!(
        sent[1].1.contains("Messages-Waiting: no\r\n"),
        "{}",
        sent[1].1
    );
    // A SUBSCRIBE without Event is refused.
    let no_event = subscribe("1003", "x", 60).replace("Event: x\r\n", "");
    assert_eq!(codes(&feed(&mut e, T0 + 4, &no_event)), [489]);
}

#[test]
fn publish_gets_an_entity_tag() {
    let mut e = engine(Config::default());
    let publish = subscribe("1001", "presence", 60).replace("SUBSCRIBE", "PUBLISH");
    let sent = feed(&mut e, T0, &publish);
    assert_eq!(codes(&sent), [200]);
    assert!(!hdr(&sent[0].1, "SIP-ETag").is_empty());
    assert_eq!(e.stats().publish, 1);
}

#[test]
fn silent_drops_everything_and_mwi_reaches_the_registered_contact() {
    let mut e = engine(Config::default());
    feed(
        &mut e,
        T0,
        &register("bob", "sip:bob@127.0.0.1:5060", 600, ""),
    );
    let mut sip = Outbox::new();
    let mut reply = String::new();
    e.control(T0, "silent on", &mut reply, &mut sip);
    let options = a_request("OPTIONS", "o1", None);
    assert!(feed(&mut e, T0 + 1, &options).is_empty());
    assert!(feed(&mut e, T0 + 1, &invite("600", "c1")).is_empty());
    assert_eq!((e.stats().ignored, e.stats().invite), (2, 0));
    e.control(T0, "silent off", &mut reply, &mut sip);
    assert_eq!(codes(&feed(&mut e, T0 + 2, &options)), [200]);
    // mwi: an unsolicited NOTIFY to bob's registered Contact (the proxy).
    e.control(T0 + 3, "mwi bob 2 1", &mut reply, &mut sip);
    assert_eq!(reply, "{\"ok\":true,\"sent_to\":\"127.0.0.1:5060\"}");
    let sent = collect(&sip);
    assert_eq!(sent.len(), 1);
    let (dst, notify) = &sent[0];
    assert_eq!(*dst, addr(PROXY));
    assert!(
        notify.starts_with("NOTIFY sip:bob@127.0.0.1:5060 SIP/2.0\r\n"),
        "{notify}"
    );
    assert_eq!(hdr(notify, "Event"), "message-summary");
    assert!(notify.contains("Messages-Waiting: yes\r\n") && notify.contains("Voice-Message: 2/1"));
    // Its SUBSCRIBEd state follows the mailbox.
    let sent = feed(&mut e, T0 + 4, &subscribe("bob", "message-summary", 600));
    assert!(sent[1].1.contains("Voice-Message: 2/1"), "{}", sent[1].1);
}
