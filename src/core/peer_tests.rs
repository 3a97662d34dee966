//! Requests another cluster node forwarded here for a phone of this node (`peer.rs`), on a
//! virtual clock: delivered down the phone's flow without authentication, the hop Route
//! removed and this node Record-Routed; the same request from anyone else is no hop; a
//! Contact this node does not hold gets 480.

use super::tests::{addr, find, respond, Harness, AST, PHONE, T0};

/// The other node of the cluster.
const PEER: &str = "127.0.0.11:5060";

fn hop_invite(from: &str, contact: &str, call_id: &str) -> String {
    format!(
        "INVITE {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKsf.0.1.1.0.0.42\r\n\
         Via: SIP/2.0/UDP {AST};branch=z9hG4bKast1;received=127.0.0.2\r\n\
         Max-Forwards: 69\r\n\
         Route: <sip:alice@127.0.0.1:5060;lr;sfn>\r\n\
         Record-Route: <sip:{from};lr>\r\n\
         From: <sip:600@127.0.0.2>;tag=a1\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn harness() -> Harness {
    let h = Harness::new(&[AST]);
    h.fakes.location.peers.set(vec![addr(PEER)]).unwrap();
    h.fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        T0 + 3_600_000,
    );
    h
}

#[test]
fn a_peers_hop_goes_down_the_phones_flow_record_routed() {
    let mut h = harness();
    let out = h.recv(PEER, &hop_invite(PEER, "sip:alice@127.0.0.3:5062", "pc1"));
    assert!(
        out.iter().all(|s| s.code() != 407),
        "a peer is not challenged"
    );
    assert!(out.iter().any(|s| s.code() == 100 && s.dst == addr(PEER)));
    let inv = find(&out, |s| s.method() == "INVITE").clone();
    assert_eq!(inv.dst, addr(PHONE));
    assert!(inv
        .text()
        .starts_with("INVITE sip:alice@127.0.0.3:5062 SIP/2.0\r\n"));
    assert_eq!(inv.header("Route"), None, "the hop Route is removed");
    let rr = inv.headers("Record-Route");
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(rr[0], format!("<{}>", h.core.cfg.dialog_route(0, "pc1")));
    // The phone's answer goes back to the peer.
    let out = h.recv(PHONE, &respond(&inv, 200, Some("p1"), ""));
    let ok = find(&out, |s| s.code() == 200);
    assert_eq!(ok.dst, addr(PEER));
    assert!(
        !ok.header("Contact").unwrap_or("").contains("alias"),
        "no NAT alias towards a peer"
    );
}

#[test]
fn a_hop_from_anyone_else_or_for_an_unknown_contact_is_refused() {
    let mut h = harness();
    // A phone (not a peer) pre-loading our hop Route: an ordinary request to another domain.
    let out = h.recv(
        "127.0.0.9:5060",
        &hop_invite("127.0.0.9:5060", "sip:alice@127.0.0.3:5062", "pc2"),
    );
    assert!(out.iter().all(|s| s.dst != addr(PHONE)), "{out:?}");
    assert!(out.iter().any(|s| s.code() == 403 || s.code() == 407));
    // A Contact this node does not hold (the phone moved): 480 to the peer.
    let out = h.recv(PEER, &hop_invite(PEER, "sip:alice@192.0.2.1:5060", "pc3"));
    assert_eq!(find(&out, |s| s.code() >= 200).code(), 480);
    assert!(out.iter().all(|s| s.dst != addr(PHONE)));
    // A binding reached through the peer itself is never sent back to it.
    h.fakes.location.add(
        "alice",
        "sip:alice@192.0.2.9:5060",
        addr(PEER),
        T0 + 3_600_000,
    );
    let out = h.recv(PEER, &hop_invite(PEER, "sip:alice@192.0.2.9:5060", "pc4"));
    assert_eq!(find(&out, |s| s.code() >= 200).code(), 480);
}
