//! End-to-end tests: the real `sipfront` binary (2 workers) between sipp phones, plain-socket
//! phones and the real Asterisk stand-in, all on loopback with ephemeral ports.
//!
//! Flows: a phone calls an Asterisk extension (407, INVITE/180/200/ACK/BYE); a phone calls
//! another registered phone through the stand-in's Dial(); Asterisk calls a registered phone,
//! and an unregistered user (404); MESSAGE phone to phone; CANCEL before the answer; a silent
//! Asterisk (408 after Timer B); and the format of the REGISTER forwarded to Asterisk.
//! Success is sipp's exit code 0 plus the stand-in's counters, bindings and event log.
//!
//! Needs sipp and `cargo build --workspace --bins` (for `asterisk-standin`). The harness is in
//! `tests/support/`; a failing test prints the proxy's stderr, the stand-in's counters and
//! every sipp log (set `SIPFRONT_E2E_KEEP=1` to keep the directory).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use support::phone::{answer_challenge, Phone};
use support::proxy::DOMAIN;
use support::sipp::{write_csv, CsvPhone, SippCmd};
use support::standin::{ANSWER_EXT, NOANSWER_EXT};
use support::{password, Scene, Setup};

const ASTERISK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(5);

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
    assert_eq!(s.stat("ack"), 1);
    assert_eq!(s.stat("bye"), 1);
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

/// Asterisk (a plain socket on 127.0.0.2) sends an INVITE for `user` through the proxy;
/// returns the final response code after ACKing it. Only 100 may come before it.
fn asterisk_invite(scene: &Scene, user: &str) -> u16 {
    let proxy = scene.proxy.addr;
    let ast = Phone::bind(ASTERISK_IP);
    let me = ast.addr;
    let uri = format!("sip:{user}@{proxy}");
    let request = |method: &str, to_tag: &str| {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKast{user};rport\r\n\
             Max-Forwards: 70\r\nFrom: \"asterisk\" <sip:asterisk@{me}>;tag=ast{user}\r\n\
             To: <{uri}>{to_tag}\r\nCall-ID: ast{user}@{me}\r\nCSeq: 102 {method}\r\n\
             Contact: <sip:asterisk@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    ast.send(proxy, &request("INVITE", ""));
    let mut seen = Vec::new();
    let resp = ast.expect_final("102 INVITE", WAIT, &mut seen);
    assert!(
        seen.iter().all(|s| s.starts_with("SIP/2.0 100")),
        "only 100 may precede the final response: {seen:?}"
    );
    ast.send(proxy, &request("ACK", &format!(";tag={}", resp.to_tag())));
    resp.code().unwrap_or(0)
}

#[test]
fn asterisk_call_to_unregistered_user_gets_404() {
    let scene = Scene::start(Setup::default());
    // 9999 is not in the credentials table: 404. 2002 is a user without a binding: the proxy
    // answers 480 Temporarily Unavailable (the seed's tutorial says 404 for both).
    assert_eq!(asterisk_invite(&scene, "9999"), 404, "unknown user");
    assert_eq!(
        asterisk_invite(&scene, "2002"),
        480,
        "known user, not registered"
    );
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
    assert_eq!(s.stat("cancel"), 1, "the CANCEL reached Asterisk");
    assert_eq!(s.stat("answered"), 0);
}

#[test]
fn silent_asterisk_gives_408() {
    // Asterisk is a socket nobody answers on; T1 = 50 ms makes Timer B 3.2 s.
    let silent = Phone::bind(ASTERISK_IP);
    let scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec![silent.addr],
        t1_ms: Some(50),
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let me = phone.addr;
    let uri = format!("sip:{ANSWER_EXT}@{DOMAIN}");
    let request = |method: &str, cseq: u32, branch: &str, to_tag: &str, auth: &str| {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=ph408\r\nTo: <{uri}>{to_tag}\r\n\
             Call-ID: ph408@{me}\r\nCSeq: {cseq} {method}\r\nContact: <sip:1001@{me}>\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut seen = Vec::new();
    phone.send(proxy, &request("INVITE", 1, "i1", "", ""));
    let challenge = phone.expect_response(407, "1 INVITE", WAIT, &mut seen);
    let tag = format!(";tag={}", challenge.to_tag());
    phone.send(proxy, &request("ACK", 1, "i1", &tag, ""));
    let creds = answer_challenge(
        &challenge,
        "Proxy-Authenticate",
        "1001",
        password("1001"),
        "INVITE",
        &uri,
    );
    let auth = format!("Proxy-Authorization: {creds}\r\n");
    phone.send(proxy, &request("INVITE", 2, "i2", "", &auth));
    seen.clear();
    phone.expect_response(100, "2 INVITE", WAIT, &mut seen);
    // The forwarded INVITE reaches the silent node (and is retransmitted there).
    let fwd = silent.expect_request("INVITE", WAIT);
    assert!(
        fwd.start_line().starts_with(&format!("INVITE {uri} ")),
        "request URI unchanged: {}",
        fwd.start_line()
    );
    let timeout = phone.expect_response(408, "2 INVITE", Duration::from_secs(15), &mut seen);
    assert!(
        seen.iter()
            .all(|s| s.starts_with("SIP/2.0 100") || s.starts_with("SIP/2.0 407")),
        "nothing but 100s (or a 407 retransmission) before the 408: {seen:?}"
    );
    let tag = format!(";tag={}", timeout.to_tag());
    phone.send(proxy, &request("ACK", 2, "i2", &tag, ""));
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
    let me = phone.addr;
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=reg1001\r\nTo: <sip:1001@{DOMAIN}>\r\n\
             Call-ID: reg1001@{me}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:1001@{me}>\r\n\
             Expires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut seen = Vec::new();
    phone.send(proxy, &register(1, ""));
    let challenge = phone.expect_response(401, "1 REGISTER", WAIT, &mut seen);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        "1001",
        password("1001"),
        "REGISTER",
        &format!("sip:{DOMAIN}"),
    );
    phone.send(proxy, &register(2, &format!("Authorization: {creds}\r\n")));
    let ok = phone.expect_response(200, "2 REGISTER", WAIT, &mut seen);
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
