//! Issue #16 in the core, on the virtual clock: forged and spoofed responses are dropped and
//! counted (and a forged 2xx is not relayed statelessly), failed authentications are
//! answered a fixed delay after their request arrived whatever they cost, and a known user
//! without a binding is answered like an unknown one.

use std::sync::Arc;

use super::testing::test_config;
use super::tests::{
    addr, auth_hdr, call_to_asterisk, find, req, respond, Harness, AST, PHONE, PHONE2, T0,
};
use super::{CoreConfig, Local, LookupResult, Now};

fn reconfigure(h: &mut Harness, change: impl FnOnce(&mut CoreConfig)) {
    let mut cfg = test_config(&[AST]);
    change(&mut cfg);
    h.core.reconfigure(Arc::new(cfg));
}

/// The top Via branch of a request the proxy sent.
fn branch_of(s: &super::testing::Sent) -> String {
    let via = s.header("Via").expect("a Via");
    let b = via.split(";branch=").nth(1).expect("a branch");
    b.split(';').next().unwrap_or(b).to_owned()
}

#[test]
fn forged_and_spoofed_responses_touch_no_transaction() {
    let mut h = Harness::new(&[AST]);
    let inv = call_to_asterisk(&mut h, "z9hG4bKf1", "f1");
    let live = branch_of(&inv);
    assert_eq!(live.split('.').count(), 7, "{live}");
    let ok = respond(
        &inv,
        200,
        Some("evil"),
        "Contact: <sip:evil@192.0.2.66>\r\n",
    );

    // From anyone but the node: spoofed.
    for src in ["192.0.2.66:5080", "127.0.0.2:5081", PHONE] {
        let out = h.recv_on(Local::Upstream, src, &ok);
        assert!(out.is_empty(), "{src}: {out:?}");
    }
    assert_eq!(h.core.stats().dropped_spoofed, 3);

    // From the node, but the branch guessed or its MAC wrong: forged.
    let mut fields: Vec<String> = live.split('.').map(str::to_owned).collect();
    fields[3] = format!("{:x}", u64::from_str_radix(&fields[3], 16).unwrap() + 1);
    let guessed = fields.join(".");
    let cut = live.rfind('.').unwrap();
    let wrong_mac = format!("{}.{}", &live[..cut], "f".repeat(16));
    let no_mac = live[..cut].to_owned();
    for b in [&guessed, &wrong_mac, &no_mac] {
        let out = h.recv_on(Local::Upstream, AST, &ok.replacen(&live, b, 1));
        assert!(out.is_empty(), "{b}: {out:?}");
    }
    assert_eq!(h.core.stats().dropped_forged, 3);
    assert_eq!(h.core.stats().forwarded_responses, 0);

    // The node's own 200 goes to the phone.
    let ok = respond(
        &inv,
        200,
        Some("ast"),
        "Contact: <sip:600@127.0.0.2:5080>\r\n",
    );
    let out = h.recv_on(Local::Upstream, AST, &ok);
    let relayed = find(&out, |s| s.code() == 200);
    assert_eq!(relayed.dst, addr(PHONE));
    assert!(relayed.text().contains("sip:600@127.0.0.2:5080"));
}

#[test]
fn stateless_2xx_needs_a_branch_of_ours() {
    let mut h = Harness::new(&[AST]);
    let inv = call_to_asterisk(&mut h, "z9hG4bKs1", "s1");
    let ok = respond(&inv, 200, Some("ast"), "");
    let out = h.recv_on(Local::Upstream, AST, &ok);
    find(&out, |s| s.code() == 200 && s.dst == addr(PHONE));
    // Long after: the transactions are gone; a retransmitted 2xx is still relayed.
    h.advance_to(120_000);
    let out = h.recv_on(Local::Upstream, AST, &ok);
    let again = find(&out, |s| s.code() == 200);
    assert_eq!(again.dst, addr(PHONE));
    let before = h.core.stats().dropped_forged;
    // The same with the MAC changed, its next Via a victim: nothing sent.
    let live = branch_of(&inv);
    let cut = live.rfind('.').unwrap();
    let forged = ok
        .replacen(&live, &format!("{}.{}", &live[..cut], "0".repeat(16)), 1)
        .replacen(PHONE, PHONE2, 1);
    let out = h.recv_on(Local::Upstream, "192.0.2.66:5060", &forged);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.core.stats().dropped_forged, before + 1);
}

#[test]
fn multihomed_asterisk_answers_from_a_listed_address() {
    let mut h = Harness::new(&[AST]);
    reconfigure(&mut h, |c| {
        c.response_addresses = vec!["127.0.0.9".parse().unwrap()]
    });
    let inv = call_to_asterisk(&mut h, "z9hG4bKm1", "m1");
    let ringing = respond(&inv, 180, Some("ast"), "");
    let out = h.recv_on(Local::Upstream, "127.0.0.9:5060", &ringing);
    find(&out, |s| s.code() == 180 && s.dst == addr(PHONE));
    let out = h.recv_on(Local::Upstream, "127.0.0.10:5060", &ringing);
    assert!(out.is_empty());
    // With "any", from anywhere.
    reconfigure(&mut h, |c| c.response_source = super::ResponseSource::Any);
    let out = h.recv_on(Local::Upstream, "127.0.0.10:5060", &ringing);
    find(&out, |s| s.code() == 180);
}

/// A REGISTER for `user` whose digest response is `bad` (`FakeAuth` wants `good`).
fn wrong_register(user: &str, branch: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r1\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: {branch}@phone\r\nCSeq: 2 REGISTER\r\nContact: <sip:{user}@{PHONE}>\r\n\
         Expires: 600\r\n{}Content-Length: 0\r\n\r\n",
        auth_hdr(false, user, "bad")
    )
}

#[test]
fn failed_authentications_are_answered_after_the_same_delay() {
    let mut h = Harness::new(&[AST]);
    reconfigure(&mut h, |c| c.auth_failure_delay_ms = 200);

    // A known user, wrong password: nothing at once, the 401 at +200 ms.
    let out = h.recv(PHONE, &wrong_register("alice", "z9hG4bKw1"));
    assert!(out.is_empty(), "{out:?}");
    // Its retransmission meanwhile is absorbed (not a second failure).
    h.advance_to(100);
    let failed = h.core.stats().auth_failed;
    assert!(h
        .recv(PHONE, &wrong_register("alice", "z9hG4bKw1"))
        .is_empty());
    assert_eq!(h.core.stats().auth_failed, failed);
    assert!(h.advance_to(199).is_empty());
    let out = h.advance_to(200);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].code(), 401);
    assert_eq!(out[0].dst, addr(PHONE));
    assert!(out[0].header("WWW-Authenticate").is_some());
    assert!(h.advance_to(2_000).is_empty(), "sent once");

    // An unknown user: parked for a lookup that takes 30 ms, still answered at +200 ms
    // after it arrived.
    h.fakes
        .auth
        .uncached
        .lock()
        .unwrap()
        .insert("mallory".to_owned());
    let t = h.now - T0;
    assert!(h
        .recv(PHONE, &wrong_register("mallory", "z9hG4bKw2"))
        .is_empty());
    let lookup = h.core.poll_lookup().expect("a lookup");
    h.advance_to(t + 30);
    h.core.handle_lookup(
        Now::same(h.now),
        lookup.token,
        LookupResult::Ready,
        &mut h.rec,
    );
    assert!(h.rec.take().is_empty(), "not before the delay");
    assert!(h.advance_to(t + 199).is_empty());
    let out = h.advance_to(t + 200);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].code(), 401);

    // The right password is answered at once.
    let good = wrong_register("alice", "z9hG4bKw3").replace("\"bad\"", "\"good\"");
    let out = h.recv(PHONE, &good);
    find(&out, |s| s.code() == 200);

    // 0 = at once (as before).
    reconfigure(&mut h, |c| c.auth_failure_delay_ms = 0);
    let out = h.recv(PHONE, &wrong_register("alice", "z9hG4bKw4"));
    assert_eq!(out[0].code(), 401);
}

#[test]
fn held_answers_are_bounded() {
    let mut h = Harness::new(&[AST]);
    reconfigure(&mut h, |c| {
        c.auth_failure_delay_ms = 100;
        c.max_parked = 2;
    });
    for i in 0..3 {
        assert!(h
            .recv(PHONE, &wrong_register("alice", &format!("z9hG4bKb{i}")))
            .is_empty());
    }
    assert_eq!(
        h.core.stats().dropped_overload,
        1,
        "the third has no slot: dropped"
    );
    let out = h.advance_to(100);
    assert_eq!(out.iter().filter(|s| s.code() == 401).count(), 2);
    // The slots are free again.
    assert!(h
        .recv(PHONE, &wrong_register("alice", "z9hG4bKb9"))
        .is_empty());
    assert_eq!(h.advance_to(300).len(), 1);
}

#[test]
fn unregistered_users_look_unknown_to_phones() {
    let mut h = Harness::new(&[AST]);
    let ask = |h: &mut Harness, user: &str, n: u32| {
        let msg = req(
            "MESSAGE",
            &format!("sip:{user}@example.com"),
            PHONE,
            &format!("z9hG4bKe{n}"),
            &format!("e{n}"),
            &auth_hdr(true, "alice", "good"),
        );
        h.recv(PHONE, &msg)[0].code()
    };
    // bob is known, not registered; nobody is unknown.
    assert_eq!(ask(&mut h, "nobody", 1), 404);
    assert_eq!(ask(&mut h, "bob", 2), 404);
    reconfigure(&mut h, |c| c.unregistered_code = 480);
    assert_eq!(ask(&mut h, "nobody", 3), 404);
    assert_eq!(ask(&mut h, "bob", 4), 480);
    // Asterisk always hears 480 for a known user (its dialplan tells them apart).
    reconfigure(&mut h, |c| c.unregistered_code = 404);
    let inv = req(
        "INVITE",
        "sip:bob@127.0.0.1:5060",
        AST,
        "z9hG4bKe5",
        "e5",
        "",
    );
    assert_eq!(h.recv(AST, &inv)[0].code(), 480);
}
