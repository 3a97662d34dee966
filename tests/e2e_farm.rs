//! The Asterisk farm end to end: the real binary in front of two stand-ins (nodes A and B,
//! both on 127.0.0.2), pinged every 100 ms (down after 2 unanswered pings, up after 2
//! answered ones).
//!
//! - A node that stops answering (`silent on`) is taken down within a few pings; a call that
//!   went to it meanwhile fails over to the other at once, no call waits a second, and the
//!   next calls all go to the other node, as do the REGISTERs. When it answers again it gets
//!   calls again and the registrations it missed are replayed to it.
//! - A drained node gets no new calls (but still its REGISTERs) until undrained.
//! - A node added by a reload gets the current registrations replayed.
//! - SUBSCRIBE for `dialog` and `message-summary` (and PUBLISH) from a registered phone
//!   reach a node, whose 200 and NOTIFY come back to the phone; an unsolicited MWI NOTIFY
//!   from a node reaches the phone.
//!
//! Phones are raw sockets on 127.0.0.1, calls go to the busy extension (a quick 486 from
//! whichever node gets them), so each node's `busy` counter says where the calls went.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::admin::{ctl_ok, free_admin_addr, http_get, metric};
use support::flows::{phone_invite, phone_register, phone_request};
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::standin::{StandIn, BUSY_EXT};
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);
/// The longest a call may wait, even when its node died under it.
const CALL_LIMIT: Duration = Duration::from_secs(1);

fn farm_scene() -> (Scene, std::net::SocketAddr) {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        extra_standins: 1,
        tune: Tune {
            admin: Some(admin),
            guard_allow: vec!["127.0.0.0/8"],
            log_level: Some("info"),
            asterisk_lines: [
                "probe_interval_ms = 100",
                "probe_failures = 2",
                "probe_successes = 2",
                "replay_rate_per_sec = 500",
            ]
            .map(str::to_owned)
            .to_vec(),
            ..Tune::default()
        },
        ..Setup::default()
    });
    // The admin API starts after the workers answer SIP.
    scene.wait_file("sipfront.err", "admin API listening", WAIT);
    (scene, admin)
}

/// One call from a fresh phone of `user` to the busy extension: 486 within [`CALL_LIMIT`].
fn busy_call(scene: &Scene, user: &str) -> Duration {
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let uri = format!("sip:{BUSY_EXT}@{DOMAIN}");
    let t0 = Instant::now();
    let out = phone_invite(&phone, scene.proxy.addr, user, password(user), &uri, WAIT);
    let took = t0.elapsed();
    assert_eq!(out.code(), 486, "{out:?}");
    assert!(took < CALL_LIMIT, "a call waited {took:?}");
    took
}

/// The INVITEs a silent node dropped (its `ignored` events).
fn ignored(node: &StandIn, method: &str) -> usize {
    node.events()
        .iter()
        .filter(|e| {
            e.get("event").and_then(Value::as_str) == Some("ignored")
                && e.get("method").and_then(Value::as_str) == Some(method)
        })
        .count()
}

/// `GET /v1/asterisk`: the state of node `addr` ("up"/"down") and whether it is drained.
fn node_state(admin: std::net::SocketAddr, addr: std::net::SocketAddr) -> (String, bool) {
    let (status, body) = http_get(admin, "/v1/asterisk");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let node = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not in {body}"));
    (
        node["state"].as_str().unwrap_or("").to_owned(),
        node["drained"] == true,
    )
}

fn register(scene: &Scene, user: &str) -> Phone {
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&phone, scene.proxy.addr, user, password(user), 600, "");
    assert_eq!(out.code(), 200, "{out:?}");
    phone
}

#[test]
fn a_dead_node_fails_over_at_once_and_gets_calls_and_registrations_back() {
    let (scene, admin) = farm_scene();
    let (a, b) = (scene.standin_n(1), scene.standin_n(2));
    // Pings reach both nodes.
    a.wait_stat("options", 2, WAIT);
    b.wait_stat("options", 2, WAIT);
    let _p1 = register(&scene, "1001");
    a.wait_registered("1001");
    b.wait_registered("1001");

    // A dies. Calls placed at once: those that A takes while it is not yet known down
    // fail over to B when it is, none waits a second.
    a.silent(true);
    let (mut calls, mut longest) = (0, Duration::ZERO);
    while ignored(a, "INVITE") == 0 {
        assert!(calls < 40, "no call went to A in {calls} calls");
        longest = longest.max(busy_call(&scene, "1001"));
        calls += 1;
    }
    eprintln!("{calls} call(s) until one hit the dead node; the longest took {longest:?}");
    scene.wait_file("sipfront.err", "Asterisk node is down", WAIT);
    assert_eq!(node_state(admin, a.sip), ("down".to_owned(), false));
    assert_eq!(b.stat("busy"), calls, "every call was answered by B");
    let a_invites = ignored(a, "INVITE");

    // Down: the next calls all go to B, and so do the REGISTERs.
    for _ in 0..10 {
        busy_call(&scene, "1001");
    }
    assert_eq!(b.stat("busy"), calls + 10);
    assert_eq!(ignored(a, "INVITE"), a_invites, "a down node gets no call");
    let _p2 = register(&scene, "2001");
    b.wait_registered("2001");
    assert_eq!(ignored(a, "REGISTER"), 0, "a down node gets no REGISTER");
    let list = ctl_ok(admin, &["asterisk"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&a.sip.to_string()))
        .unwrap_or_else(|| panic!("no line for {} in {list}", a.sip));
    assert!(line.contains(" down"), "{list}");
    assert_eq!(
        metric(
            admin,
            &format!("sipfront_asterisk_node_up{{node=\"{}\"}}", a.sip)
        ),
        0.0
    );

    // A answers again: up after two pings, the registrations it missed are replayed to it,
    // and it gets calls again.
    a.silent(false);
    a.wait_event("register", WAIT, |e| {
        e.get("user").and_then(Value::as_str) == Some("2001")
    });
    assert_eq!(a.reg("2001")["contact"], b.reg("2001")["contact"]);
    assert_eq!(node_state(admin, a.sip).0, "up");
    let before = a.stat("busy");
    let mut more = 0;
    while a.stat("busy") == before {
        assert!(more < 40, "no call reached A again in {more} calls");
        busy_call(&scene, "1001");
        more += 1;
    }
    let transitions = |to: &str| {
        metric(
            admin,
            &format!(
                "sipfront_asterisk_node_transitions_total{{node=\"{}\",to=\"{to}\"}}",
                a.sip
            ),
        )
    };
    assert_eq!((transitions("down"), transitions("up")), (1.0, 1.0));
    assert!(
        metric(
            admin,
            &format!(
                "sipfront_asterisk_replayed_registrations_total{{node=\"{}\"}}",
                a.sip
            )
        ) >= 2.0
    );
}

#[test]
fn a_drained_node_gets_no_new_calls_until_undrained() {
    let (scene, admin) = farm_scene();
    let (a, b) = (scene.standin_n(1), scene.standin_n(2));
    let node = a.sip.to_string();
    let out = ctl_ok(admin, &["asterisk", "drain", &node]);
    assert!(out.contains("drained"), "{out}");
    assert_eq!(node_state(admin, a.sip), ("up".to_owned(), true));
    for _ in 0..20 {
        busy_call(&scene, "1001");
    }
    assert_eq!((a.stat("invite"), b.stat("busy")), (0, 20));
    // It still holds registrations (it keeps serving its dialogs and comes back).
    let _p = register(&scene, "2002");
    a.wait_registered("2002");
    let out = ctl_ok(admin, &["asterisk", "undrain", &node]);
    assert!(out.contains("undrained"), "{out}");
    let mut calls = 0;
    while a.stat("busy") == 0 {
        assert!(
            calls < 40,
            "no call reached A after undrain in {calls} calls"
        );
        busy_call(&scene, "1001");
        calls += 1;
    }
}

/// Milliseconds since the UNIX epoch (the stand-ins' event times).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn a_node_added_by_reload_gets_the_current_registrations() {
    let (scene, admin) = farm_scene();
    let (a, b) = (scene.standin_n(1), scene.standin_n(2));
    let _p1 = register(&scene, "1001");
    let _p2 = register(&scene, "2001");
    b.wait_registered("2001");
    let config = scene.dir().join("sipfront.toml");
    let text = std::fs::read_to_string(&config).expect("read the config");
    let both = format!("nodes = [\"{}\", \"{}\"]", a.sip, b.sip);
    assert!(text.contains(&both), "{text}");
    // B leaves the farm, then comes back by another reload.
    let only_a = format!("nodes = [\"{}\"]", a.sip);
    std::fs::write(&config, text.replace(&both, &only_a)).expect("write the config");
    let out = ctl_ok(admin, &["reload"]);
    assert!(out.contains("asterisk.nodes"), "{out}");
    let since = wall_ms();
    std::fs::write(&config, &text).expect("write the config");
    ctl_ok(admin, &["reload"]);
    for user in ["1001", "2001"] {
        b.wait_event("register", WAIT, |e| {
            e.get("user").and_then(Value::as_str) == Some(user)
                && e.get("ts_ms").and_then(Value::as_u64) >= Some(since)
        });
    }
    scene.wait_file(
        "sipfront.err",
        "replay of registrations to Asterisk node done",
        WAIT,
    );
}

/// Receives (skipping anything else) the next NOTIFY, answers it 200 through the proxy
/// (its Via), and returns it.
fn expect_notify(phone: &Phone, proxy: std::net::SocketAddr) -> SipMsg {
    let notify = phone.expect_request("NOTIFY", WAIT);
    phone.send(proxy, &notify.reply(200, "OK", "", ""));
    notify
}

/// Phone 1001 SUBSCRIBEs to `event` of `target`, answering the proxy's 407. Returns the
/// final response and the NOTIFY (answered 200), in whichever order they came (the 200
/// comes back by the upstream socket, the NOTIFY by the listen socket).
fn subscribe(
    phone: &Phone,
    proxy: std::net::SocketAddr,
    event: &str,
    target: &str,
) -> (SipMsg, SipMsg) {
    let uri = format!("sip:{target}@{DOMAIN}");
    let call_id = format!("sub-{event}-{}", phone.addr.port());
    let me = phone.addr;
    let text = |cseq: u32, auth: &str| {
        format!(
            "SUBSCRIBE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=s{call_id}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:1001@{me}>\r\n\
             Event: {event}\r\nAccept: */*\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    phone.send(proxy, &text(1, ""));
    let challenge = phone.expect_response(407, "1 SUBSCRIBE", WAIT, &mut Vec::new());
    let creds = answer_challenge(
        &challenge,
        "Proxy-Authenticate",
        "1001",
        password("1001"),
        "SUBSCRIBE",
        &uri,
    );
    phone.send(
        proxy,
        &text(2, &format!("Proxy-Authorization: {creds}\r\n")),
    );
    let (mut ok, mut notify) = (None, None);
    let deadline = Instant::now() + WAIT;
    while ok.is_none() || notify.is_none() {
        let m = phone
            .recv_until(deadline)
            .unwrap_or_else(|| panic!("{event}: no 200 and NOTIFY, got {ok:?} {notify:?}"));
        if m.method() == Some("NOTIFY") {
            phone.send(proxy, &m.reply(200, "OK", "", ""));
            notify = Some(m);
        } else if m.code().is_some_and(|c| c >= 200) && m.header("CSeq") == Some("2 SUBSCRIBE") {
            ok = Some(m);
        }
    }
    (
        ok.unwrap_or_else(|| unreachable!()),
        notify.unwrap_or_else(|| unreachable!()),
    )
}

#[test]
fn subscriptions_and_mwi_go_through_asterisk() {
    let (scene, _admin) = farm_scene();
    let proxy = scene.proxy.addr;
    let nodes = [scene.standin_n(1), scene.standin_n(2)];
    let phone = register(&scene, "1001");
    for n in nodes {
        n.wait_registered("1001");
    }
    // BLF for 2001, MWI for the phone's own mailbox: both reach a node (the same one: the
    // subscriber's), and its 200 and NOTIFY come back in the dialog.
    let (ok, blf) = subscribe(&phone, proxy, "dialog", "2001");
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    assert_eq!(blf.header("Event"), Some("dialog"));
    assert!(blf
        .header("Subscription-State")
        .is_some_and(|s| s.starts_with("active")));
    assert_eq!(
        blf.header("Content-Type"),
        Some("application/dialog-info+xml")
    );
    let (ok, mwi) = subscribe(&phone, proxy, "message-summary", "1001");
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    assert_eq!(mwi.header("Event"), Some("message-summary"));
    assert!(mwi.text.contains("Messages-Waiting: no"), "{}", mwi.text);
    let got: Vec<u64> = nodes.iter().map(|n| n.stat("subscribe")).collect();
    assert!(
        got == [2, 0] || got == [0, 2],
        "subscriptions per node: {got:?}"
    );
    let node = nodes[usize::from(got[0] == 0)];
    node.wait_stat("notify_answered", 2, WAIT);
    let extens: Vec<String> = node
        .events()
        .iter()
        .filter(|e| e.get("event").and_then(Value::as_str) == Some("subscribe"))
        .filter_map(|e| e.get("exten").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(extens, ["2001", "1001"]);

    // PUBLISH of presence goes to the node too.
    let out = phone_request(
        &phone,
        proxy,
        "PUBLISH",
        ("1001", password("1001")),
        &format!("sip:1001@{DOMAIN}"),
        "Event: presence\r\nExpires: 600\r\n",
        WAIT,
    );
    assert_eq!(out.code(), 200, "{out:?}");
    assert!(out.last.header("SIP-ETag").is_some());
    assert_eq!(node.stat("publish"), 1);

    // Voicemail arrives: the node's unsolicited NOTIFY reaches the phone.
    let answered = nodes[0].stat("notify_answered");
    let sent = nodes[0].mwi("1001", 2);
    assert_eq!(sent["ok"], true, "{sent}");
    let notify = expect_notify(&phone, proxy);
    assert_eq!(notify.header("Event"), Some("message-summary"));
    assert!(
        notify.text.contains("Messages-Waiting: yes"),
        "{}",
        notify.text
    );
    nodes[0].wait_stat("notify_answered", answered + 1, WAIT);
}
