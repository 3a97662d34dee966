//! The core with the Asterisk farm, on a virtual clock: pings, immediate failover when a
//! node goes down, 503 at the edge when no node can take a call, back-pressure reports,
//! subscriptions to Asterisk, replayed REGISTERs.

use super::testing::Sent;
use super::tests::{
    addr, auth_hdr, call_to_asterisk, find, req, respond, Harness, AST, AST2, PHONE, PHONE2, T0,
};
use super::Local;

/// The other of the two test nodes.
fn other(node: std::net::SocketAddr) -> std::net::SocketAddr {
    if node == addr(AST) {
        addr(AST2)
    } else {
        addr(AST)
    }
}

#[test]
fn pings_leave_from_the_upstream_socket_and_their_answers_reach_the_farm() {
    let mut h = Harness::new(&[AST]);
    h.fakes
        .farm
        .pings_due
        .lock()
        .unwrap()
        .push((addr(AST), 0x2a));
    let out = h.advance_to(1);
    let ping = find(&out, |s| s.method() == "OPTIONS");
    assert_eq!((ping.sock, ping.dst), (Local::Upstream, addr(AST)));
    assert!(ping
        .text()
        .starts_with("OPTIONS sip:127.0.0.2:5080 SIP/2.0\r\n"));
    let via = ping.header("Via").unwrap();
    assert!(
        via.starts_with("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKsf.0.fffffffe.2a.ffff."),
        "{via}"
    );
    // Asterisk's 200 goes to the farm, nothing else happens; a stray 100 is ignored.
    let trying = respond(ping, 100, None, "");
    assert!(h.recv_on(Local::Upstream, AST, &trying).is_empty());
    let ok = respond(ping, 200, Some("x"), "");
    assert!(h.recv_on(Local::Upstream, AST, &ok).is_empty());
    assert_eq!(
        *h.fakes.farm.ping_answers.lock().unwrap(),
        [(addr(AST), 0x2a, 200)]
    );
    assert_eq!(
        h.core.transactions_in_flight(),
        (0, 0),
        "pings are stateless"
    );
}

/// A Call-ID whose first node (in the fake farm) is `node`.
fn call_id_on(h: &Harness, node: &str, prefix: &str) -> String {
    use super::ports::{FarmPort, NodePick};
    (0..100)
        .map(|i| format!("{prefix}{i}"))
        .find(|cid| {
            let key = h.fakes.farm.affinity("alice", cid, false);
            matches!(h.fakes.farm.pick(key, 0, 0), NodePick::Node { addr: a, .. } if a == addr(node))
        })
        .expect("a Call-ID for each node")
}

#[test]
fn a_node_going_down_fails_its_calls_over_at_once() {
    let mut h = Harness::new(&[AST, AST2]);
    // Call 1 gets nothing from its node (AST); call 2's node (AST2) already rings.
    let d1 = call_id_on(&h, AST, "d");
    let d2 = call_id_on(&h, AST2, "d");
    let silent = call_to_asterisk(&mut h, "z9hG4bKd1", &d1);
    let ringing = call_to_asterisk(&mut h, "z9hG4bKd2", &d2);
    assert_eq!((silent.dst, ringing.dst), (addr(AST), addr(AST2)));
    let r180 = respond(&ringing, 180, Some("r"), "");
    let out = h.recv_on(Local::Upstream, &ringing.dst.to_string(), &r180);
    assert_eq!(find(&out, |s| s.code() == 180).dst, addr(PHONE));

    // The node of call 1 goes down: 100 ms later (long before Timer B) it is on the other.
    h.fakes.farm.set_down(silent.dst, true);
    let out = h.advance_to(100);
    let again = find(&out, |s| {
        s.method() == "INVITE" && s.header("Call-ID") == Some(d1.as_str())
    });
    assert_eq!(again.dst, addr(AST2));
    assert!(
        out.iter().all(|s| s.code() == 0),
        "nothing to the phone yet"
    );
    // The first node answering late gets a CANCEL, and its answer goes nowhere.
    let late = h.recv_on(
        Local::Upstream,
        &silent.dst.to_string(),
        &respond(&silent, 180, Some("late"), ""),
    );
    let cancel = find(&late, |s| s.method() == "CANCEL");
    assert_eq!(cancel.dst, silent.dst);
    assert!(late.iter().all(|s| s.code() == 0));
    // The second node answers: the phone gets its 200.
    let out = h.recv_on(
        Local::Upstream,
        &again.dst.to_string(),
        &respond(again, 200, Some("ok"), ""),
    );
    assert_eq!(find(&out, |s| s.code() == 200).dst, addr(PHONE));

    // The ringing node of call 2 goes down too: CANCEL to it, and with the other node
    // down there is no node left: 500 (a 503 is never passed on) to the phone.
    h.fakes.farm.set_down(ringing.dst, true);
    let out = h.advance_to(200);
    assert_eq!(find(&out, |s| s.method() == "CANCEL").dst, ringing.dst);
    let fin = find(&out, |s| s.code() >= 300);
    assert_eq!((fin.code(), fin.dst), (500, addr(PHONE)));
    assert_eq!(fin.header("Call-ID"), Some(d2.as_str()));

    // Nothing is left behind: the branches to the dead nodes end at Timer B (call 1's, which
    // got nothing) and 64·T1 after their unanswered CANCEL (call 2's), then linger.
    h.fakes.farm.set_down(silent.dst, false);
    let ack = super::tests::req("ACK", "sip:600@example.com", PHONE, "z9hG4bKd2", &d2, "");
    h.recv(PHONE, &ack);
    h.advance_to(45_000);
    assert_eq!(h.core.transactions_in_flight(), (0, 0));
}

#[test]
fn a_branch_to_a_node_that_died_silently_ends_at_timer_b() {
    let mut h = Harness::new(&[AST, AST2]);
    let cid = call_id_on(&h, AST, "t");
    let fwd = call_to_asterisk(&mut h, "z9hG4bKt1", &cid);
    h.fakes.farm.set_down(fwd.dst, true);
    let out = h.advance_to(10);
    let again = find(&out, |s| s.method() == "INVITE");
    let busy = respond(again, 486, Some("b"), "");
    let out = h.recv_on(Local::Upstream, AST2, &busy);
    assert_eq!(find(&out, |s| s.code() == 486).dst, addr(PHONE));
    let ack = req("ACK", "sip:600@example.com", PHONE, "z9hG4bKt1", &cid, "");
    h.recv(PHONE, &ack);
    // The first branch never got anything: Timer B (32 s) ends it, then it lingers T4.
    h.advance_to(40_000);
    assert_eq!(h.core.transactions_in_flight(), (0, 0));
}

#[test]
fn no_usable_node_is_503_with_retry_after_at_the_edge() {
    let mut h = Harness::new(&[AST]);
    h.fakes.farm.set_busy(Some(7));
    let out = h.recv(PHONE, &super::tests::authed_invite("z9hG4bKb1", "b1"));
    assert_eq!(out.len(), 1, "{out:?}", out = texts(&out));
    assert_eq!(out[0].code(), 503);
    assert_eq!(out[0].header("Retry-After"), Some("7"));
    assert_eq!(out[0].dst, addr(PHONE));
    h.fakes.farm.set_busy(None);
    h.fakes.farm.set_down(addr(AST), true);
    let out = h.recv(PHONE, &super::tests::authed_invite("z9hG4bKb2", "b2"));
    assert_eq!((out.len(), out[0].code()), (1, 503));
    assert_eq!(out[0].header("Retry-After"), Some("5"));
    assert_eq!(h.core.transactions_in_flight(), (0, 0));
}

fn texts(out: &[Sent]) -> Vec<&str> {
    out.iter().map(Sent::text).collect()
}

#[test]
fn first_answers_and_503s_are_reported_for_back_pressure() {
    let mut h = Harness::new(&[AST, AST2]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKp1", "p1");
    h.now += 40;
    let node = fwd.dst.to_string();
    h.recv_on(Local::Upstream, &node, &respond(&fwd, 100, None, ""));
    let farm = h.fakes.farm.clone();
    let a = farm.last_answer.lock().unwrap().unwrap();
    assert_eq!(
        (a.node, a.code, a.first_answer_ms),
        (fwd.dst, 100, Some(40))
    );
    // Only the first response counts for latency ...
    h.recv_on(Local::Upstream, &node, &respond(&fwd, 180, Some("a"), ""));
    assert_eq!(farm.answers.load(std::sync::atomic::Ordering::Relaxed), 1);
    // ... and every 503, with its Retry-After.
    let busy = respond(&fwd, 503, Some("a"), "Retry-After: 30\r\n");
    let out = h.recv_on(Local::Upstream, &node, &busy);
    let a = h.fakes.farm.last_answer.lock().unwrap().unwrap();
    assert_eq!(
        (a.code, a.retry_after_secs, a.first_answer_ms),
        (503, Some(30), None)
    );
    // The 503 still fails over.
    assert_eq!(find(&out, |s| s.method() == "INVITE").dst, other(fwd.dst));
}

fn subscribe(branch: &str, call_id: &str, event: &str) -> String {
    req(
        "SUBSCRIBE",
        "sip:bob@example.com",
        PHONE,
        branch,
        call_id,
        &format!(
            "Event: {event}\r\nExpires: 600\r\nContact: <sip:alice@{PHONE}>\r\n{}",
            auth_hdr(true, "alice", "good")
        ),
    )
}

#[test]
fn subscriptions_asterisk_serves_go_to_a_node_others_to_the_phone() {
    let mut h = Harness::new(&[AST, AST2]);
    h.fakes.location.add(
        "bob",
        "sip:bob@127.0.0.4:5064",
        addr(PHONE2),
        T0 + 3_600_000,
    );
    // BLF: to the farm node of the subscriber, Record-Routed, no 100 Trying.
    let out = h.recv(PHONE, &subscribe("z9hG4bKs1", "s1", "dialog"));
    let fwd = find(&out, |s| s.method() == "SUBSCRIBE").clone();
    assert_eq!(fwd.sock, Local::Upstream);
    assert!([addr(AST), addr(AST2)].contains(&fwd.dst));
    assert!(fwd.header("Record-Route").is_some());
    assert!(fwd.header("Proxy-Authorization").is_none());
    assert!(out.iter().all(|s| s.code() == 0));
    let out = h.recv_on(
        Local::Upstream,
        &fwd.dst.to_string(),
        &respond(&fwd, 200, Some("ast"), "Expires: 600\r\n"),
    );
    assert_eq!(find(&out, |s| s.code() == 200).dst, addr(PHONE));
    // MWI of the same subscriber: the same node (subscriber affinity), parameters aside;
    // the compact form of Event counts too.
    let mwi = subscribe("z9hG4bKs2", "s2", "Message-Summary;id=1").replace("Event:", "o:");
    let out = h.recv(PHONE, &mwi);
    assert_eq!(find(&out, |s| s.method() == "SUBSCRIBE").dst, fwd.dst);
    // PUBLISH of presence: to the node too, not Record-Routed.
    let publish = subscribe("z9hG4bKs3", "s3", "presence").replace("SUBSCRIBE", "PUBLISH");
    let out = h.recv(PHONE, &publish);
    let p = find(&out, |s| s.method() == "PUBLISH");
    assert_eq!(p.dst, fwd.dst);
    assert!(p.header("Record-Route").is_none());
    // Any other package goes phone to phone, as before.
    let out = h.recv(PHONE, &subscribe("z9hG4bKs4", "s4", "conference"));
    assert_eq!(find(&out, |s| s.method() == "SUBSCRIBE").dst, addr(PHONE2));
    // Asterisk's NOTIFY inside the subscription reaches the phone through the Route.
    let rr = fwd.header("Record-Route").unwrap();
    let notify = format!(
        "NOTIFY sip:alice@{PHONE} SIP/2.0\r\nVia: SIP/2.0/UDP {AST};branch=z9hG4bKn1\r\nRoute: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=ast\r\nTo: <sip:alice@example.com>;tag=ft1\r\nCall-ID: s1\r\nCSeq: 1 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active;expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.recv(AST, &notify);
    let n = find(&out, |s| s.method() == "NOTIFY");
    assert_eq!(n.dst, addr(PHONE));
}

#[test]
fn replayed_registers_are_regfwd_transactions() {
    let mut h = Harness::new(&[AST]);
    h.fakes
        .farm
        .replays_due
        .lock()
        .unwrap()
        .push((addr(AST), "alice".to_owned()));
    let out = h.advance_to(1);
    let reg = find(&out, |s| s.method() == "REGISTER");
    assert_eq!((reg.sock, reg.dst), (Local::Upstream, addr(AST)));
    assert_eq!(reg.header("Call-ID"), Some("replay-alice"));
    assert_eq!(reg.header("CSeq"), Some("7 REGISTER"));
    h.recv_on(Local::Upstream, AST, &respond(reg, 200, Some("a"), ""));
    assert_eq!(
        *h.fakes.regfwd.results.lock().unwrap(),
        [("alice".to_owned(), addr(AST), 200)]
    );
}
