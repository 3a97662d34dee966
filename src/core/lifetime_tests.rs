//! How long each transaction of a call stays in the table, on a virtual clock: what one call
//! of the load generator's `call` workload (INVITE → 407 → ACK, INVITE with credentials →
//! 100/180/200, ACK, BYE → 200) leaves behind and when it goes, retransmissions absorbed
//! within those lifetimes, and the zero lifetimes RFC 3261 gives reliable transports.
//!
//! The default table is sized from these numbers (docs/configuration.md,
//! `max_transactions_per_worker`): over UDP a call leaves two server transactions (the
//! INVITE, Accepted, and the BYE, Completed) for `[timers] server_linger_ms` and one client
//! transaction (the BYE, Timer K = T4); the challenge needs none.

use std::sync::Arc;

use super::testing::{test_config, Fakes, Recorder};
use super::tests::{
    addr, auth_hdr, authed_invite, call_to_asterisk, find, req, respond, Harness, AST, PHONE,
    PHONE2, T0,
};
use super::{ConnId, Core, Flow, Interface, Local, Now};
use crate::sip::Transport;

/// Linger of finished server transactions and Timer K with the default timers (ms).
const LINGER: u64 = 5_000;

/// A request of the phone's dialog `call_id` (From tag ft1, To tag ast1) through the
/// proxy's Record-Route to Asterisk's Contact.
fn in_dialog(h: &Harness, method: &str, branch: &str, call_id: &str, seq: u32) -> String {
    let route = h.core.cfg.dialog_route(0, call_id);
    format!(
        "{method} sip:600@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch};rport\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ft1\r\nTo: <sip:600@example.com>;tag=ast1\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The ACK of a non-2xx answer to `invite` whose To line was `to` (same Via, RFC 3261
/// §17.1.1.3).
fn ack_for(invite: &str, to: &str) -> String {
    invite
        .replacen("INVITE ", "ACK ", 1)
        .replace(" INVITE\r\n", " ACK\r\n")
        .replace("To: <sip:600@example.com>", &format!("To: {to}"))
}

fn live(h: &Harness) -> (usize, usize) {
    h.core.transactions_in_flight()
}

#[test]
fn one_call_leaves_two_server_and_one_client_transaction_for_five_seconds() {
    let mut h = Harness::new(&[AST]);
    // INVITE without credentials → 407, answered statelessly.
    let invite = req(
        "INVITE",
        "sip:600@example.com",
        PHONE,
        "z9hG4bKl1",
        "l1",
        "",
    );
    let out = h.recv(PHONE, &invite);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 407);
    assert_eq!(live(&h), (0, 0), "the challenge needs no transaction");
    let to = out[0].header("To").unwrap().to_owned();
    // Its ACK is absorbed by the To tag of the 407 (not relayed, not counted unmatched).
    let absorbed = h.core.stats().retransmissions_absorbed;
    let unmatched = h.core.stats().dropped_unmatched;
    assert!(h.recv(PHONE, &ack_for(&invite, &to)).is_empty());
    assert_eq!(h.core.stats().retransmissions_absorbed, absorbed + 1);
    assert_eq!(h.core.stats().dropped_unmatched, unmatched);
    // A retransmitted INVITE just gets a fresh 407 with the same tag.
    let again = h.recv(PHONE, &invite);
    assert_eq!(again[0].code(), 407);
    assert_eq!(again[0].header("To"), Some(to.as_str()));
    assert_eq!(live(&h), (0, 0));

    // INVITE with credentials → 100, forwarded; Asterisk rings and answers.
    let fwd = call_to_asterisk(&mut h, "z9hG4bKl2", "l1");
    assert_eq!(live(&h), (1, 1));
    h.recv_on(Local::Upstream, AST, &respond(&fwd, 180, Some("ast1"), ""));
    let contact = "Contact: <sip:600@127.0.0.2:5080>\r\n";
    let ok = h.recv_on(
        Local::Upstream,
        AST,
        &respond(&fwd, 200, Some("ast1"), contact),
    );
    assert_eq!(ok[0].code(), 200);
    assert_eq!(live(&h), (1, 0), "a 2xx ends the INVITE client transaction");
    let out = h.recv(PHONE, &in_dialog(&h, "ACK", "z9hG4bKl3", "l1", 2));
    assert_eq!(find(&out, |s| s.method() == "ACK").dst, addr(AST));
    assert_eq!(live(&h), (1, 0), "the ACK of a 2xx is stateless");

    // The phone hangs up at 1 s.
    h.advance_to(1_000);
    let bye = in_dialog(&h, "BYE", "z9hG4bKl4", "l1", 3);
    let out = h.recv(PHONE, &bye);
    let fbye = find(&out, |s| s.method() == "BYE").clone();
    assert_eq!(live(&h), (2, 1));
    let out = h.recv_on(fbye.sock, AST, &respond(&fbye, 200, None, ""));
    assert_eq!(out[0].code(), 200);
    assert_eq!(
        live(&h),
        (2, 1),
        "the BYE's server and client transactions linger"
    );

    // Within the linger, retransmissions are absorbed: the INVITE's (up to 5 s after its
    // 2xx) and the BYE's, which gets its 200 again (nothing goes to Asterisk).
    h.advance_to(LINGER - 1);
    let out = h.recv(PHONE, &authed_invite("z9hG4bKl2", "l1"));
    assert!(out.iter().all(|s| s.dst == addr(PHONE)), "{out:?}");
    assert_eq!(live(&h), (2, 1));
    h.advance_to(LINGER + 999);
    let out = h.recv(PHONE, &bye);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code(), 200);
    assert_eq!(out[0].dst, addr(PHONE));
    // The INVITE's goes 5 s after its 2xx, the BYE's two 5 s after its 200.
    h.advance_to(LINGER + 1);
    assert_eq!(live(&h), (1, 1));
    h.advance_to(1_000 + LINGER + 1);
    assert_eq!(live(&h), (0, 0));
}

#[test]
fn a_non_2xx_answer_lingers_timer_i_after_the_ack_not_timer_h() {
    let mut h = Harness::new(&[AST]);
    let fwd = call_to_asterisk(&mut h, "z9hG4bKb1", "b1");
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 486, Some("ast1"), ""));
    let busy = find(&out, |s| s.code() == 486).clone();
    assert_eq!(busy.dst, addr(PHONE));
    assert!(out
        .iter()
        .any(|s| s.method() == "ACK" && s.dst == addr(AST)));
    assert_eq!(live(&h), (1, 1));
    // Timer G: the 486 again at T1, until the phone's ACK.
    let out = h.advance_to(500);
    assert!(out.iter().any(|s| s.code() == 486 && s.dst == addr(PHONE)));
    let ack = ack_for(
        &authed_invite("z9hG4bKb1", "b1"),
        busy.header("To").unwrap(),
    );
    assert!(h.recv(PHONE, &ack).is_empty());
    // ACK retransmissions are absorbed for T4 (Timer I), then the transaction goes.
    h.advance_to(500 + LINGER - 1);
    assert!(h.recv(PHONE, &ack).is_empty());
    assert_eq!(live(&h).0, 1);
    h.advance_to(500 + LINGER + 1);
    assert_eq!(live(&h).0, 0, "Timer I (T4), not Timer H (64·T1)");
    // The INVITE client transaction keeps Timer D (32 s over UDP): a retransmitted 486
    // from Asterisk is ACKed again, not relayed.
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 486, Some("ast1"), ""));
    assert!(out
        .iter()
        .all(|s| s.dst == addr(AST) && s.method() == "ACK"));
    assert_eq!(live(&h), (0, 1));
    h.advance_to(32_001);
    assert_eq!(live(&h), (0, 0));
}

/// A phone on a TCP connection (interface 1) and bob registered on another one.
fn tcp_harness() -> (Harness, Flow, Flow) {
    let fakes = Fakes::new(&["alice", "bob"]);
    fakes.farm.set_nodes(&[AST]);
    let mut cfg = test_config(&[AST]);
    cfg.interfaces.push(Interface::with_transport(
        addr("127.0.0.1:5060"),
        Transport::Tcp,
    ));
    let conn = |slot| ConnId {
        worker: 0,
        slot,
        gen: 1,
    };
    fakes.links.open(Transport::Tcp, addr(PHONE), conn(1));
    fakes.links.open(Transport::Tcp, addr(PHONE2), conn(2));
    let alice = Flow::on_conn(Local::Listen(1), addr(PHONE), conn(1));
    let bob = Flow::on_conn(Local::Listen(1), addr(PHONE2), conn(2));
    fakes.location.add_on(
        "bob",
        "sip:bob@127.0.0.4:5064;transport=tcp",
        bob,
        T0 + 3_600_000,
    );
    let core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let h = Harness {
        core,
        fakes,
        rec: Recorder::default(),
        now: T0,
    };
    (h, alice, bob)
}

/// `msg` received on the connection of `from`.
fn recv_flow(h: &mut Harness, from: Flow, msg: &str) -> Vec<super::testing::Sent> {
    h.core
        .handle_datagram(Now::same(h.now), from, msg.as_bytes(), &mut h.rec);
    h.rec.take()
}

#[test]
fn over_a_connection_timers_i_j_and_k_are_zero() {
    let (mut h, alice, bob) = tcp_harness();
    let tcp = |m: &str| m.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Timer J = 0: a BYE from the TCP phone goes with its 200.
    let bye = in_dialog(&h, "BYE", "z9hG4bKt1", "t1", 3);
    let out = recv_flow(&mut h, alice, &tcp(&bye));
    let fbye = find(&out, |s| s.method() == "BYE").clone();
    let out = h.recv_on(fbye.sock, AST, &respond(&fbye, 200, None, ""));
    assert_eq!(out[0].code(), 200);
    h.advance_to(1);
    assert_eq!(
        live(&h),
        (0, 1),
        "server gone at once; the UDP client keeps Timer K"
    );
    h.advance_to(LINGER + 1);
    assert_eq!(live(&h), (0, 0));

    // Timer I = 0: a 486 to the TCP phone is not retransmitted, its ACK ends it.
    let invite = tcp(&authed_invite("z9hG4bKt2", "t2"));
    let out = recv_flow(&mut h, alice, &invite);
    let fwd = find(&out, |s| s.method() == "INVITE").clone();
    let out = h.recv_on(Local::Upstream, AST, &respond(&fwd, 486, Some("ast1"), ""));
    let busy = find(&out, |s| s.code() == 486).clone();
    let out = h.advance_to(LINGER + 2_000);
    assert!(out.iter().all(|s| s.code() != 486), "no Timer G over TCP");
    recv_flow(&mut h, alice, &ack_for(&invite, busy.header("To").unwrap()));
    h.advance_to(LINGER + 2_001);
    assert_eq!(live(&h).0, 0, "Timer I is zero over TCP");

    // Timer K = 0: a MESSAGE to bob's TCP connection goes with its 200; the phone's UDP
    // server transaction keeps its linger.
    let m = req(
        "MESSAGE",
        "sip:bob@example.com",
        PHONE,
        "z9hG4bKt3",
        "t3",
        &auth_hdr(true, "alice", "good"),
    );
    let (servers, clients) = live(&h);
    let out = h.recv(PHONE, &m);
    let f = find(&out, |s| s.method() == "MESSAGE").clone();
    assert_eq!(f.dst, addr(PHONE2));
    let out = recv_flow(&mut h, bob, &respond(&f, 200, Some("b"), ""));
    assert_eq!(out[0].code(), 200);
    h.advance_to(LINGER + 2_002);
    assert_eq!(live(&h), (servers + 1, clients), "Timer K is zero over TCP");
}
