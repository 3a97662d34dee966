//! NAT keepalives and SIP Outbound (RFC 5626) with the real binary (`[nat]
//! keepalive_interval_secs = 1`, `keepalive_failures = 3`):
//!
//! - two phones register private Contacts (192.168.x) from their own loopback sockets: both
//!   get an OPTIONS at their source address every interval; the one that answers keeps its
//!   binding (Asterisk's call still reaches it after several rounds), the silent one is
//!   removed within interval × failures + 1 interval of its first unanswered keepalive,
//!   Asterisk receives its `Expires: 0`, and Asterisk's next call for it gets 480; the
//!   admin metrics count pings sent, answered and bindings removed;
//! - a REGISTER with `+sip.instance` and `reg-id` gets them back in the 200 with
//!   `Require: outbound`; the same instance and reg-id over a new flow replaces the first
//!   binding, and Asterisk's call goes to the new flow;
//! - a phone on TCP gets CRLFCRLF keepalives on its connection; when it closes the
//!   connection its binding is removed and Asterisk receives `Expires: 0`.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::admin::{free_admin_addr, metric};
use support::flows::asterisk_invite;
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::stream::StreamPhone;
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_secs(1);
const FAILURES: u32 = 3;
const ASTERISK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const INSTANCE: &str = "\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"";

fn scene(tcp: bool, admin: Option<SocketAddr>) -> Scene {
    Scene::start(Setup {
        tune: Tune {
            tcp,
            admin,
            nat: Some(format!(
                "keepalive_interval_secs = {}\nkeepalive_failures = {FAILURES}\n",
                INTERVAL.as_secs()
            )),
            ..Tune::default()
        },
        ..Setup::default()
    })
}

/// A REGISTER from `phone` as `user` with the Contact header value `contact` (header
/// parameters allowed) and `extra` header lines.
fn register_text(phone: &Phone, user: &str, cseq: u32, contact: &str, extra: &str) -> String {
    let me = phone.addr;
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{}x{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r{}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: nat-reg-{}-{}@phone\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n\
         Expires: 600\r\n{extra}Content-Length: 0\r\n\r\n",
        me.port(),
        me.port(),
        me.port(),
        std::process::id()
    )
}

/// REGISTER through the 401 challenge; returns the final response.
fn register(phone: &Phone, proxy: SocketAddr, user: &str, contact: &str, extra: &str) -> SipMsg {
    let mut seen = Vec::new();
    phone.send(proxy, &register_text(phone, user, 1, contact, extra));
    let challenge = phone.expect_response(401, "1 REGISTER", WAIT, &mut seen);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        password(user),
        "REGISTER",
        &format!("sip:{DOMAIN}"),
    );
    let extra = format!("{extra}Authorization: {creds}\r\n");
    phone.send(proxy, &register_text(phone, user, 2, contact, &extra));
    phone.expect_final("2 REGISTER", WAIT, &mut seen)
}

fn user_is(e: &Value, user: &str) -> bool {
    e.get("user").and_then(Value::as_str) == Some(user)
}

fn expires_is(e: &Value, n: u64) -> bool {
    e.get("expires").and_then(Value::as_u64) == Some(n)
}

/// Answers every OPTIONS `phone` receives with 200 (telling `pinged` when) and every INVITE
/// with 486 until `stop`; returns when each OPTIONS arrived (and from where).
fn answer_everything(
    phone: &Phone,
    stop: &AtomicBool,
    limit: Duration,
    pinged: &std::sync::mpsc::Sender<Instant>,
) -> Vec<(Instant, SipMsg)> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Some(m) = phone.recv_until((Instant::now() + Duration::from_millis(100)).min(deadline))
        else {
            continue;
        };
        match m.method() {
            Some("OPTIONS") => {
                phone.send(m.from, &m.reply(200, "OK", "ka", ""));
                let now = Instant::now();
                let _ = pinged.send(now);
                seen.push((now, m));
            }
            Some("INVITE") => phone.send(m.from, &m.reply(486, "Busy Here", "busy", "")),
            _ => {}
        }
    }
    seen
}

#[test]
fn nated_phones_get_keepalives_and_a_silent_one_is_removed() {
    let admin = free_admin_addr();
    let s = scene(false, Some(admin));
    let proxy = s.proxy.addr;
    let alive = Phone::bind(Ipv4Addr::LOCALHOST);
    let silent = Phone::bind(Ipv4Addr::LOCALHOST);
    let r = register(&alive, proxy, "1001", "<sip:1001@192.168.1.20:5060>", "");
    assert_eq!(r.code(), Some(200), "{}", r.text);
    let r = register(&silent, proxy, "2001", "<sip:2001@192.168.1.21:5060>", "");
    assert_eq!(r.code(), Some(200), "{}", r.text);
    s.standin().wait_registered("1001");
    s.standin().wait_registered("2001");

    let stop = AtomicBool::new(false);
    let (pinged, pings_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let answering =
            scope.spawn(|| answer_everything(&alive, &stop, Duration::from_secs(30), &pinged));

        // The silent phone: keepalives at its source address (not at its 192.168 Contact),
        // from the proxy's listen address, addressed to its Contact.
        let first = silent.expect_request("OPTIONS", WAIT);
        let t0 = Instant::now();
        assert_eq!(first.from, proxy, "{}", first.text);
        assert!(
            first
                .start_line()
                .starts_with("OPTIONS sip:2001@192.168.1.21:5060 SIP/2.0"),
            "{}",
            first.text
        );
        let gone = s
            .standin()
            .wait_event("register", WAIT, |e| user_is(e, "2001") && expires_is(e, 0));
        let elapsed = t0.elapsed();
        let bound = INTERVAL * FAILURES + INTERVAL;
        eprintln!("2001 unregistered {elapsed:?} after its first unanswered keepalive");
        assert!(
            elapsed <= bound,
            "unregistered after {elapsed:?}, more than {bound:?}: {gone}"
        );
        // Exactly `failures` keepalives went unanswered before the removal.
        let mut more = 0;
        while let Some(m) = silent.recv_until(Instant::now() + Duration::from_millis(300)) {
            more += usize::from(m.method() == Some("OPTIONS"));
        }
        assert_eq!(
            1 + more,
            FAILURES as usize,
            "keepalives to the silent phone"
        );
        // Asterisk's next call for it: 480 (a known user without a binding).
        let ast = Phone::bind(ASTERISK_IP);
        let out = asterisk_invite(&ast, proxy, "2001", WAIT);
        assert_eq!(out.last.code(), Some(480), "{}", out.last.text);

        // The answering phone has kept its binding through more than failures + 1
        // rounds (it answered that many keepalives since the silent one's first):
        // Asterisk's call still reaches it (it answers 486).
        let mut answered_since = 0;
        while answered_since < FAILURES + 2 {
            let at = pings_rx
                .recv_timeout(WAIT)
                .expect("keepalives to the answering phone");
            answered_since += u32::from(at > t0);
        }
        let ast = Phone::bind(ASTERISK_IP);
        let out = asterisk_invite(&ast, proxy, "1001", WAIT);
        assert_eq!(out.last.code(), Some(486), "{}", out.last.text);
        stop.store(true, Ordering::Relaxed);
        let pings = answering.join().expect("the answering phone");
        assert!(
            pings.len() >= (FAILURES + 2) as usize,
            "{} keepalives to the answering phone",
            pings.len()
        );
        for w in pings.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= INTERVAL / 2 && gap <= INTERVAL * 3 / 2,
                "keepalives {gap:?} apart"
            );
            assert_eq!(w[1].1.from, proxy);
        }
    });
    // Nothing was removed but the silent phone's binding.
    assert!(
        !s.standin()
            .events()
            .iter()
            .any(|e| user_is(e, "1001") && expires_is(e, 0)),
        "the answering phone was unregistered"
    );
    // Counters are published by the workers every 100 ms: poll.
    let at_least = |series: &str, want: u32| {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = metric(admin, series);
            if v >= f64::from(want) || Instant::now() >= deadline {
                return v;
            }
            // Paced by a read timeout on the removed phone's socket (nobody writes to it).
            let _ = silent.recv_until(Instant::now() + Duration::from_millis(100));
        }
    };
    let answered = at_least("sipfront_nat_keepalives_answered_total", FAILURES + 2);
    let sent = at_least("sipfront_nat_keepalives_sent_total", FAILURES + 5);
    assert!(
        answered >= f64::from(FAILURES + 2),
        "{answered} keepalives answered"
    );
    assert!(sent >= f64::from(FAILURES + 5), "{sent} keepalives sent");
    assert_eq!(metric(admin, "sipfront_nat_keepalive_removed_total"), 1.0);
}

#[test]
fn outbound_instance_and_reg_id_are_echoed_and_a_new_flow_replaces_the_old() {
    let s = scene(false, None);
    let proxy = s.proxy.addr;
    let first = Phone::bind(Ipv4Addr::LOCALHOST);
    let contact = format!("<sip:2002@192.168.1.30:5060;ob>;+sip.instance={INSTANCE};reg-id=1");
    let r = register(
        &first,
        proxy,
        "2002",
        &contact,
        "Supported: outbound, path\r\n",
    );
    assert_eq!(r.code(), Some(200), "{}", r.text);
    let echoed = r.headers("Contact");
    assert_eq!(echoed.len(), 1, "{}", r.text);
    assert!(
        echoed[0].contains(&format!("+sip.instance={INSTANCE}")) && echoed[0].contains("reg-id=1"),
        "{}",
        r.text
    );
    assert_eq!(r.header("Require"), Some("outbound"), "{}", r.text);
    s.standin().wait_registered("2002");

    // The same instance and reg-id over a new flow (another socket, another Contact):
    // replaces the first binding.
    let second = Phone::bind(Ipv4Addr::LOCALHOST);
    let contact2 = format!("<sip:2002@192.168.1.31:5062;ob>;+sip.instance={INSTANCE};reg-id=1");
    let r = register(&second, proxy, "2002", &contact2, "Supported: outbound\r\n");
    assert_eq!(r.code(), Some(200), "{}", r.text);
    let echoed = r.headers("Contact");
    assert_eq!(echoed.len(), 1, "one binding left: {}", r.text);
    assert!(
        echoed[0].contains("192.168.1.31:5062") && echoed[0].contains("reg-id=1"),
        "{}",
        r.text
    );
    // Asterisk's call goes over the new flow only.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let h = scope.spawn(|| {
            let deadline = Instant::now() + WAIT;
            let mut invites = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(m) = second.recv_until(Instant::now() + Duration::from_millis(100)) {
                    if m.method() == Some("INVITE") {
                        invites += 1;
                        assert!(m.start_line().contains("192.168.1.31:5062"), "{}", m.text);
                        second.send(m.from, &m.reply(486, "Busy Here", "b2", ""));
                    }
                }
            }
            invites
        });
        let ast = Phone::bind(ASTERISK_IP);
        let out = asterisk_invite(&ast, proxy, "2002", WAIT);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(out.last.code(), Some(486), "{}", out.last.text);
        assert_eq!(h.join().expect("second phone"), 1);
    });
    let mut stray = Vec::new();
    while let Some(m) = first.recv_until(Instant::now() + Duration::from_millis(200)) {
        if m.method() == Some("INVITE") {
            stray.push(m.text);
        }
    }
    assert!(stray.is_empty(), "the replaced flow got {stray:?}");
}

/// A TCP REGISTER from `p` as `user` (Contact at its own address) through the challenge.
fn register_tcp(p: &mut StreamPhone, user: &str) -> SipMsg {
    let uri = format!("sip:{DOMAIN}");
    let text = |p: &StreamPhone, cseq: u32, extra: &str| {
        let me = p.addr;
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKtcp{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: nat-tcp-{}@phone\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{me};transport=tcp>\r\nExpires: 600\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            me.port(),
            me.port()
        )
    };
    let first = text(p, 1, "");
    p.send(&first);
    let challenge = p.expect_response(401, "1 REGISTER", WAIT);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        password(user),
        "REGISTER",
        &uri,
    );
    let second = text(p, 2, &format!("Authorization: {creds}\r\n"));
    p.send(&second);
    p.expect_response(200, "2 REGISTER", WAIT)
}

#[test]
fn tcp_phones_get_crlf_keepalives_and_a_closed_connection_loses_its_binding() {
    let s = scene(true, None);
    let tcp = s.proxy.tcp.expect("a TCP listen address");
    let mut p = StreamPhone::tcp(tcp);
    let r = register_tcp(&mut p, "1001");
    assert_eq!(r.code(), Some(200), "{}", r.text);
    s.standin().wait_registered("1001");
    // CRLFCRLF keepalives arrive on the connection, one per interval.
    let deadline = Instant::now() + INTERVAL * 3 + INTERVAL / 2;
    while Instant::now() < deadline {
        if let Some(m) = p.recv_until(deadline) {
            panic!("unexpected message on the connection: {}", m.text);
        }
    }
    assert!(
        (2..=4).contains(&p.pings),
        "{} CRLF keepalives in 3.5 intervals",
        p.pings
    );
    // The phone goes away: its connection closes, and its binding goes with it.
    drop(p);
    let t0 = Instant::now();
    s.standin()
        .wait_event("register", WAIT, |e| user_is(e, "1001") && expires_is(e, 0));
    let elapsed = t0.elapsed();
    eprintln!("1001 unregistered {elapsed:?} after its connection closed");
    assert!(elapsed <= INTERVAL * 2, "{elapsed:?}");
    let ast = Phone::bind(ASTERISK_IP);
    let out = asterisk_invite(&ast, s.proxy.addr, "1001", WAIT);
    assert_eq!(out.last.code(), Some(480), "{}", out.last.text);
}
