//! End-to-end tests: the real `sipfront` binary (2 workers) between sipp phones, plain-socket
//! phones and the real Asterisk stand-in, all on loopback with ephemeral ports.
//!
//! Calls: a phone calls an Asterisk extension (407, INVITE/180/200/ACK/BYE), a busy one (486
//! relayed, ACKed hop by hop), a ringing one and CANCELs, one the stand-in drops and one on a
//! dead Asterisk node (408 after Timer B). A phone calls another registered phone through the
//! stand-in's Dial(): answered, cancelled while ringing, busy (486 back to the caller).
//! Asterisk calls a registered phone (also one behind NAT; one with two contacts: forked, the
//! loser CANCELled; one that never answers: 408) and unknown/unregistered users (404/480).
//! MESSAGE phone to phone. Registration: the format of the REGISTER forwarded to Asterisk,
//! Asterisk's challenge answered, refresh and unregister, expiry unregistered at Asterisk, a
//! retransmitted REGISTER answered alike. Refusals: foreign domain (403), wrong password
//! (challenged again).
//! Success is sipp's exit code 0 plus the stand-in's counters, bindings and event log.
//!
//! Needs sipp and `cargo build --workspace --bins` (for `asterisk-standin`). The harness is in
//! `tests/support/`; a failing test prints the proxy's stderr, the stand-in's counters and
//! every sipp log (set `SIPFRONT_E2E_KEEP=1` to keep the directory).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use support::flows::{ack_2xx, asterisk_invite, phone_invite, phone_register};
use support::phone::Phone;
use support::proxy::DOMAIN;
use support::sipp::{write_csv, CsvPhone, SippCmd};
use support::standin::{ANSWER_EXT, BUSY_EXT, DROP_EXT, NOANSWER_EXT};
use support::{password, Scene, Setup};

const ASTERISK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(10);

/// A one-line CSV for `caller` calling `target`.
fn caller_csv(scene: &Scene, caller: &str, target: &str) -> std::path::PathBuf {
    write_csv(
        scene.dir(),
        &format!("{caller}-to-{target}"),
        &[CsvPhone {
            user: caller,
            password: password(caller),
            target,
        }],
    )
}

/// sipp as phone `caller` running `scenario` against `target` (digest uri = target@domain).
fn phone_sipp(scene: &Scene, name: &str, scenario: &'static str, caller: &str, target: &str) {
    let cmd = SippCmd::new(name, scene.proxy.addr, scenario)
        .csv(caller_csv(scene, caller, target))
        .args(&["-auth_uri", &format!("{target}@{DOMAIN}"), "-m", "1"]);
    scene.sipp_ok(cmd);
}

#[test]
fn phone_calls_asterisk_extension_with_407_auth() {
    let scene = Scene::start(Setup::default());
    phone_sipp(&scene, "call", "uac_call_auth.xml", "1001", ANSWER_EXT);
    let s = scene.standin();
    assert_eq!(
        s.stat("invite"),
        1,
        "one authenticated INVITE reached Asterisk"
    );
    assert_eq!(s.stat("answered"), 1);
    // (Counts of ACK and BYE include retransmissions when a loaded machine is slow.)
    assert!(s.stat("ack") >= 1, "the ACK reached Asterisk");
    assert!(s.stat("bye") >= 1, "the BYE reached Asterisk");
    assert_eq!(
        s.stat("call_challenged"),
        0,
        "the proxy, not Asterisk, challenges"
    );
}

#[test]
fn phone_calls_registered_phone_through_asterisk_dial() {
    let mut scene = Scene::start(Setup::default());
    scene.register_phone("2001", "uas_phone_answer.xml");
    let reg = scene.standin().reg("2001");
    assert_eq!(
        reg.get("contact").and_then(Value::as_str),
        Some(format!("sip:2001@{}", scene.proxy.addr).as_str()),
        "Asterisk knows 2001 at the proxy: {reg}"
    );
    phone_sipp(&scene, "dial", "uac_call_auth.xml", "1001", "2001");
    let s = scene.standin();
    assert_eq!(s.stat("b_legs"), 1, "Dial() placed one call to the proxy");
    assert_eq!(s.stat("b_answered"), 1, "the callee phone answered it");
    assert_eq!(
        s.stat("bye_sent"),
        1,
        "the caller's BYE went on to the callee"
    );
    assert_eq!(s.stat("not_found"), 0);
    // The callee phone (sipp, out-of-call scenario) got that BYE through the proxy.
    scene.wait_sipp_log("phone-2001", "BYE sip:", WAIT);
}

#[test]
fn asterisk_calls_registered_phone() {
    let mut scene = Scene::start(Setup::default());
    scene.register_phone("2001", "uas_phone_answer.xml");
    let cmd = SippCmd::new("asterisk-call", scene.proxy.addr, "asterisk_uac_call.xml")
        .csv(caller_csv(&scene, "1001", "2001"))
        .local_ip(ASTERISK_IP)
        .args(&["-m", "1"]);
    scene.sipp_ok(cmd);
    assert_eq!(
        scene.standin().stat("invite"),
        0,
        "the stand-in saw no INVITE"
    );
}

#[test]
fn asterisk_call_to_unregistered_user_gets_404() {
    let scene = Scene::start(Setup::default());
    let ast = Phone::bind(ASTERISK_IP);
    // 9999 is not in the credentials table: 404. 2002 is a user without a binding: the proxy
    // answers 480 Temporarily Unavailable (the seed's tutorial says 404 for both).
    for (user, code) in [("9999", 404), ("2002", 480)] {
        let out = asterisk_invite(&ast, scene.proxy.addr, user, WAIT);
        assert_eq!(out.code(), code, "INVITE from Asterisk for {user}: {out:?}");
        assert!(
            out.before.iter().all(|s| s.starts_with("SIP/2.0 100")),
            "only 100 may come first: {out:?}"
        );
    }
    assert_eq!(scene.standin().stat("invite"), 0);
}

#[test]
fn message_phone_to_phone_with_407_auth() {
    let mut scene = Scene::start(Setup::default());
    scene.register_phone("2002", "uas_phone_message.xml");
    phone_sipp(&scene, "message", "uac_message_auth.xml", "1001", "2002");
    assert_eq!(
        scene.standin().stat("message"),
        0,
        "MESSAGE goes phone to phone, not through Asterisk"
    );
}

#[test]
fn cancel_before_answer() {
    let scene = Scene::start(Setup::default());
    phone_sipp(
        &scene,
        "cancel",
        "uac_cancel_auth.xml",
        "1001",
        NOANSWER_EXT,
    );
    let s = scene.standin();
    assert_eq!(s.stat("invite"), 1);
    assert!(s.stat("cancel") >= 1, "the CANCEL reached Asterisk");
    assert_eq!(s.stat("answered"), 0);
}

#[test]
fn silent_asterisk_gives_408() {
    // The stand-in drops INVITEs for this extension (not even a 100); T1 = 50 ms makes the
    // proxy's Timer B 3.2 s. A plain-socket phone: INVITE, 407, ACK, INVITE + auth, 100, 408, ACK.
    let scene = Scene::start(Setup {
        t1_ms: Some(50),
        ..Setup::default()
    });
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_invite(
        &phone,
        scene.proxy.addr,
        "1001",
        password("1001"),
        &format!("sip:{DROP_EXT}@{DOMAIN}"),
        Duration::from_secs(15),
    );
    assert_eq!(out.code(), 408, "{out:?}");
    // (A late retransmission of the 407 may be among them: only the second INVITE counts.)
    let second: Vec<&String> = out
        .before
        .iter()
        .filter(|s| s.ends_with("(2 INVITE)"))
        .collect();
    assert!(
        !second.is_empty() && second.iter().all(|s| s.starts_with("SIP/2.0 100")),
        "100 Trying and nothing else before the 408: {out:?}"
    );
    // The INVITE did reach Asterisk (and was retransmitted there until Timer B).
    let s = scene.standin();
    s.wait_event("invite_dropped", WAIT, |e| {
        e.get("exten").and_then(Value::as_str) == Some(DROP_EXT)
    });
    assert!(s.stat("invite_dropped") >= 1);
    assert_eq!(s.stat("invite"), 0);
}

#[test]
fn silent_asterisk_gives_408_sipp() {
    let scene = Scene::start(Setup {
        t1_ms: Some(50),
        ..Setup::default()
    });
    phone_sipp(&scene, "timeout", "uac_call_timeout.xml", "1001", DROP_EXT);
    assert!(scene.standin().stat("invite_dropped") >= 1);
}

#[test]
fn asterisk_node_down_gives_408() {
    // The only Asterisk node is a socket nobody answers on (a crashed Asterisk).
    let silent = Phone::bind(ASTERISK_IP);
    let scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec![silent.addr],
        t1_ms: Some(50),
        ..Setup::default()
    });
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let uri = format!("sip:{ANSWER_EXT}@{DOMAIN}");
    let out = phone_invite(
        &phone,
        scene.proxy.addr,
        "1001",
        password("1001"),
        &uri,
        Duration::from_secs(15),
    );
    assert_eq!(out.code(), 408, "{out:?}");
    // The forwarded INVITE did reach the silent node, request URI unchanged.
    let fwd = silent.expect_request("INVITE", WAIT);
    assert!(
        fwd.start_line().starts_with(&format!("INVITE {uri} ")),
        "{}",
        fwd.start_line()
    );
}

#[test]
fn busy_extension_486_is_relayed_and_acked() {
    let scene = Scene::start(Setup::default());
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let uri = format!("sip:{BUSY_EXT}@{DOMAIN}");
    let out = phone_invite(
        &phone,
        scene.proxy.addr,
        "1001",
        password("1001"),
        &uri,
        WAIT,
    );
    assert_eq!(out.code(), 486, "{out:?}");
    let s = scene.standin();
    assert_eq!(s.stat("busy"), 1);
    // The proxy ACKs the 486 hop by hop (RFC 3261 §16.7 / §17.1.1.3).
    s.wait_stat("ack", 1, WAIT);
}

#[test]
fn foreign_domain_is_not_relayed() {
    let scene = Scene::start(Setup::default());
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_invite(
        &phone,
        scene.proxy.addr,
        "1001",
        password("1001"),
        "sip:600@example.org",
        WAIT,
    );
    assert_eq!(out.code(), 403, "{out:?}");
    assert_eq!(scene.standin().stat("invite"), 0);
}

#[test]
fn wrong_password_is_challenged_again_and_not_forwarded() {
    // Like Kamailio's tutorial config, a wrong password gets a fresh challenge (the phone
    // asks its user again), and nothing reaches Asterisk.
    let scene = Scene::start(Setup::default());
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(
        &phone,
        scene.proxy.addr,
        "1001",
        "not-the-password",
        3600,
        "",
    );
    assert_eq!(out.code(), 401, "{out:?}");
    let out = phone_invite(
        &phone,
        scene.proxy.addr,
        "1001",
        "not-the-password",
        &format!("sip:{ANSWER_EXT}@{DOMAIN}"),
        WAIT,
    );
    assert_eq!(out.code(), 407, "{out:?}");
    let s = scene.standin();
    assert_eq!(s.stat("register"), 0, "no REGISTER forwarded");
    assert_eq!(s.stat("invite"), 0, "no INVITE forwarded");
}

#[test]
fn register_refresh_and_unregister_reach_asterisk() {
    let scene = Scene::start(Setup::default());
    let csv = write_csv(
        scene.dir(),
        "refresh",
        &[CsvPhone {
            user: "2002",
            password: password("2002"),
            target: "-",
        }],
    );
    let cmd = SippCmd::new("refresh", scene.proxy.addr, "uac_register_refresh.xml")
        .csv(csv)
        .args(&["-auth_uri", DOMAIN, "-m", "1"]);
    scene.sipp_ok(cmd);
    let s = scene.standin();
    s.wait_registered("2002");
    s.wait_event("unregister", WAIT, |e| {
        e.get("user").and_then(Value::as_str) == Some("2002")
    });
    assert_eq!(s.reg("2002"), Value::Null, "Asterisk forgot 2002");
}

#[test]
fn forwarded_register_has_seed_format() {
    // Two Asterisk nodes: the stand-in (which logs every header) and a socket of ours (which
    // shows the request line); register_mode "all" sends the REGISTER to both.
    let node = Phone::bind(ASTERISK_IP);
    let scene = Scene::start(Setup {
        extra_nodes: vec![node.addr],
        max_expires: Some(1800),
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&phone, proxy, "1001", password("1001"), 3600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    let ok = out.last;
    let contact = ok.header("Contact").unwrap_or_default();
    let granted: u32 = contact
        .split(";expires=")
        .nth(1)
        .and_then(|e| e.split(';').next())
        .and_then(|e| e.trim().parse().ok())
        .unwrap_or_else(|| panic!("no expires in the 200's Contact: {contact:?}"));
    assert_eq!(granted, 1800, "3600 lowered to max_expires");

    let ast_ip = ASTERISK_IP;
    let want_contact = format!("<sip:1001@{proxy}>");
    // Our node: the request line, then the same headers.
    let fwd = node.expect_request("REGISTER", WAIT);
    assert_eq!(
        fwd.start_line(),
        format!("REGISTER sip:{} SIP/2.0", node.addr),
        "{}",
        fwd.text
    );
    check_regfwd_headers(
        |name| fwd.header(name).map(str::to_owned),
        ast_ip,
        &want_contact,
        granted,
    );
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=node\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Contact: {want_contact};expires={granted}\r\nContent-Length: 0\r\n\r\n",
        fwd.header("Via").unwrap_or_default(),
        fwd.header("From").unwrap_or_default(),
        fwd.header("To").unwrap_or_default(),
        fwd.header("Call-ID").unwrap_or_default(),
        fwd.header("CSeq").unwrap_or_default(),
    );
    node.send(fwd.from, &reply);

    // The stand-in's event log: every header of the REGISTER it received.
    let event = scene.standin().wait_registered("1001");
    let header = |name: &str| -> Option<String> {
        event
            .get("headers")?
            .as_array()?
            .iter()
            .find(|h| h.get(0).and_then(Value::as_str) == Some(name))?
            .get(1)?
            .as_str()
            .map(str::to_owned)
    };
    check_regfwd_headers(header, ast_ip, &want_contact, granted);
    assert_eq!(
        event.get("expires").and_then(Value::as_u64),
        Some(granted.into())
    );
    let src: Option<SocketAddr> = event
        .get("src")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    assert_eq!(
        src.map(|s| s.ip()),
        Some(proxy.ip()),
        "sent from the proxy's IP: {event}"
    );
    let reg = scene.standin().reg("1001");
    assert_eq!(
        reg.get("contact").and_then(Value::as_str),
        Some(format!("sip:1001@{proxy}").as_str()),
        "{reg}"
    );
}

/// From/To `sip:USER@ASTERISK_IP`, Contact `<sip:USER@PROXY>`, Expires = the granted expiry.
fn check_regfwd_headers(
    header: impl Fn(&str) -> Option<String>,
    ast_ip: Ipv4Addr,
    want_contact: &str,
    granted: u32,
) {
    let aor = format!("<sip:1001@{ast_ip}>");
    let from = header("From").unwrap_or_default();
    assert!(
        from.starts_with(&aor) && from.contains(";tag="),
        "From {from:?}"
    );
    assert_eq!(header("To").as_deref(), Some(aor.as_str()), "To");
    let contact = header("Contact").unwrap_or_default();
    assert!(contact.starts_with(want_contact), "Contact {contact:?}");
    assert_eq!(header("Expires"), Some(granted.to_string()), "Expires");
}

#[test]
fn asterisk_challenge_on_forwarded_register_is_answered() {
    // The stand-in challenges REGISTERs like chan_sip (401, realm "asterisk", no qop); the
    // proxy answers with the user's password (kept in memory for a foreign realm).
    let mut scene = Scene::start(Setup {
        standin_args: vec!["--challenge", "--realm", "asterisk"],
        keep_plain: true,
        ..Setup::default()
    });
    scene.register_phone("2001", "uas_phone_answer.xml");
    let s = scene.standin();
    s.wait_stat("register_ok", 1, WAIT);
    assert!(s.stat("register_challenged") >= 1, "{}", s.control("stats"));
    assert_eq!(s.stat("register_forbidden"), 0);
    assert_eq!(
        s.reg("2001").get("contact").and_then(Value::as_str),
        Some(format!("sip:2001@{}", scene.proxy.addr).as_str())
    );
}

#[test]
fn nat_phone_is_reached_at_its_registration_source() {
    // The phone registers a private Contact it cannot be reached at; with nat = "auto" the
    // proxy sends Asterisk's call to the REGISTER's source address, Request-URI = Contact.
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let private = "sip:2001@192.168.77.10:5060";
    let out = phone_register(&phone, proxy, "2001", password("2001"), 3600, private);
    assert_eq!(out.code(), 200, "{out:?}");
    scene.standin().wait_registered("2001");
    let ast = Phone::bind(ASTERISK_IP);
    let result = std::thread::scope(|s| {
        let callee = s.spawn(|| {
            let invite = phone.expect_request("INVITE", WAIT);
            phone.send(invite.from, &invite.reply(486, "Busy Here", "nat1", ""));
            phone.expect_request("ACK", WAIT);
            invite
        });
        let out = asterisk_invite(&ast, proxy, "2001", WAIT);
        (out, callee.join())
    });
    let (out, invite) = result;
    let invite = invite.expect("the phone side failed");
    assert!(
        invite
            .start_line()
            .starts_with(&format!("INVITE {private} ")),
        "Request-URI is the registered Contact: {}",
        invite.start_line()
    );
    assert_eq!(out.code(), 486, "the phone's 486 reaches Asterisk: {out:?}");
}

#[test]
fn cancel_through_asterisk_dial_reaches_ringing_phone() {
    // Caller (sipp) → proxy → stand-in Dial() → proxy → callee (a socket that rings and
    // never answers). The caller's CANCEL goes to the stand-in, which CANCELs its B-leg.
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let callee = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&callee, proxy, "2001", password("2001"), 3600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    scene.standin().wait_registered("2001");
    let cancel = std::thread::scope(|s| {
        let ringing = s.spawn(|| {
            let invite = callee.expect_request("INVITE", WAIT);
            callee.send(invite.from, &invite.reply(180, "Ringing", "ring1", ""));
            let cancel = callee.expect_request("CANCEL", WAIT);
            callee.send(cancel.from, &cancel.reply(200, "OK", "ring1", ""));
            callee.send(
                invite.from,
                &invite.reply(487, "Request Terminated", "ring1", ""),
            );
            callee.expect_request("ACK", WAIT);
            cancel
        });
        phone_sipp(&scene, "dial-cancel", "uac_cancel_auth.xml", "1001", "2001");
        ringing.join()
    });
    cancel.expect("the callee side failed");
    let s = scene.standin();
    assert!(
        s.stat("cancel") >= 1,
        "the caller's CANCEL reached Asterisk"
    );
    assert_eq!(s.stat("cancel_sent"), 1, "Asterisk cancelled its B-leg");
    assert_eq!(s.stat("b_answered"), 0);
}

#[test]
fn own_responses_fill_rport_and_received() {
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let me = phone.addr;
    // A NATed phone: its Via names a private address, the datagram comes from `me`.
    phone.send(
        proxy,
        &format!(
            "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.77.10:5060;branch=z9hG4bKnat;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=nat\r\nTo: <sip:{proxy}>\r\n\
             Call-ID: nat@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    let mut seen = Vec::new();
    let ok = phone.expect_response(200, "1 OPTIONS", WAIT, &mut seen);
    let via = ok.header("Via").unwrap_or_default();
    assert!(
        via.contains(&format!("received={}", me.ip()))
            && via.contains(&format!("rport={}", me.port())),
        "Via of the proxy's own response: {via}"
    );
}

#[test]
fn expired_binding_is_unregistered_at_asterisk() {
    let scene = Scene::start(Setup {
        min_expires: Some(1),
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    // The binding is made after this instant (the stand-in stamps events with the same clock).
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let out = phone_register(&phone, proxy, "2001", password("2001"), 2, "");
    assert_eq!(out.code(), 200, "{out:?}");
    let s = scene.standin();
    let user_is = |e: &Value| e.get("user").and_then(Value::as_str) == Some("2001");
    let expires = |e: &Value| e.get("expires").and_then(Value::as_u64);
    s.wait_event("register", WAIT, |e| user_is(e) && expires(e) == Some(2));
    // The binding expires after 2 s (swept once a second): Expires 0 goes to Asterisk.
    let unreg = s.wait_event("register", Duration::from_secs(20), |e| {
        user_is(e) && expires(e) == Some(0)
    });
    let at = |e: &Value| e.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
    let after = at(&unreg).saturating_sub(before_ms);
    eprintln!("unregistered at Asterisk {after} ms after the registration began");
    assert!(
        (1_800..20_000).contains(&after),
        "unregistered {after} ms after the 2 s registration began"
    );
    let ast = Phone::bind(ASTERISK_IP);
    let out = asterisk_invite(&ast, proxy, "2001", WAIT);
    assert_eq!(out.code(), 480, "no binding left: {out:?}");
}

/// A retransmitted authenticated REGISTER (its nonce count already used) gets the 200 again,
/// not a new challenge (RFC 3261 §17.2.2); found by this suite, fixed in the core.
#[test]
fn retransmitted_register_gets_the_same_answer() {
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&phone, proxy, "1001", password("1001"), 3600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    // The phone did not see the 200 in time and retransmits (same branch, same credentials).
    phone.send(proxy, &out.sent);
    let mut seen = Vec::new();
    let again = phone.expect_final("2 REGISTER", WAIT, &mut seen);
    assert_eq!(again.code(), Some(200), "{}", again.text);
}

#[test]
fn asterisk_call_forks_to_two_contacts_and_cancels_the_loser() {
    // 2001 is registered from two phones. Asterisk's INVITE goes to both; A answers, B rings:
    // the proxy relays A's 200 and CANCELs B (RFC 3261 §16.7 step 10).
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let (a, b) = (
        Phone::bind(Ipv4Addr::LOCALHOST),
        Phone::bind(Ipv4Addr::LOCALHOST),
    );
    for p in [&a, &b] {
        let out = phone_register(p, proxy, "2001", password("2001"), 3600, "");
        assert_eq!(out.code(), 200, "{out:?}");
    }
    scene.standin().wait_registered("2001");
    let ast = Phone::bind(ASTERISK_IP);
    let (ok, b_cancel) = std::thread::scope(|s| {
        let answering = s.spawn(|| {
            let invite = a.expect_request("INVITE", WAIT);
            let contact = format!("Contact: <sip:2001@{}>\r\n", a.addr);
            let rr: String = invite
                .headers("Record-Route")
                .iter()
                .map(|r| format!("Record-Route: {r}\r\n"))
                .collect();
            let extra = format!("{rr}{contact}");
            a.send(invite.from, &invite.reply(200, "OK", "forkA", &extra));
            a.expect_request("ACK", WAIT)
        });
        let ringing = s.spawn(|| {
            let invite = b.expect_request("INVITE", WAIT);
            b.send(invite.from, &invite.reply(180, "Ringing", "forkB", ""));
            let cancel = b.expect_request("CANCEL", WAIT);
            b.send(cancel.from, &cancel.reply(200, "OK", "forkB", ""));
            b.send(
                invite.from,
                &invite.reply(487, "Request Terminated", "forkB", ""),
            );
            b.expect_request("ACK", WAIT);
            cancel
        });
        let out = asterisk_invite(&ast, proxy, "2001", WAIT);
        assert_eq!(out.code(), 200, "A's answer reaches Asterisk: {out:?}");
        // ACK the 2xx end to end: to A's Contact, through the proxy's Record-Route.
        ack_2xx(&ast, proxy, &out);
        let acked = answering.join().expect("phone A");
        let cancel = ringing.join().expect("phone B");
        assert!(acked.start_line().starts_with("ACK "), "{}", acked.text);
        (out, cancel)
    });
    assert_eq!(ok.last.to_tag(), "forkA", "the 200 is A's");
    assert!(
        b_cancel.start_line().starts_with("CANCEL "),
        "{}",
        b_cancel.text
    );
}

#[test]
fn silent_phone_gives_asterisk_408() {
    // The phone registered, then never answers: Timer B (64·T1 = 3.2 s) on the proxy's branch
    // to it ends Asterisk's call with 408.
    let scene = Scene::start(Setup {
        t1_ms: Some(50),
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&phone, proxy, "2001", password("2001"), 3600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    scene.standin().wait_registered("2001");
    let ast = Phone::bind(ASTERISK_IP);
    let out = asterisk_invite(&ast, proxy, "2001", Duration::from_secs(15));
    assert_eq!(out.code(), 408, "{out:?}");
    assert!(
        out.before.iter().all(|s| s.starts_with("SIP/2.0 100")),
        "nothing but 100 before the 408: {out:?}"
    );
    // The phone was tried (the INVITE waits in its socket, retransmitted).
    let invite = phone.expect_request("INVITE", WAIT);
    assert!(invite
        .start_line()
        .starts_with("INVITE sip:2001@127.0.0.1:"));
}

#[test]
fn busy_phone_through_asterisk_dial_gives_caller_486() {
    // Caller → proxy → stand-in Dial() → proxy → callee answering 486: every hop ACKs the
    // 486 (the proxy to the callee, the stand-in to the proxy) and the caller gets it.
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let callee = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&callee, proxy, "2001", password("2001"), 3600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    scene.standin().wait_registered("2001");
    let caller = Phone::bind(Ipv4Addr::LOCALHOST);
    let uri = format!("sip:2001@{DOMAIN}");
    let out = std::thread::scope(|s| {
        let busy = s.spawn(|| {
            let invite = callee.expect_request("INVITE", WAIT);
            callee.send(invite.from, &invite.reply(486, "Busy Here", "busy1", ""));
            callee.expect_request("ACK", WAIT)
        });
        let out = phone_invite(&caller, proxy, "1001", password("1001"), &uri, WAIT);
        busy.join().expect("the callee side failed");
        out
    });
    assert_eq!(out.code(), 486, "{out:?}");
    let s = scene.standin();
    assert_eq!(s.stat("b_legs"), 1);
    assert_eq!(s.stat("b_failed"), 1, "the stand-in saw its B-leg fail");
}
