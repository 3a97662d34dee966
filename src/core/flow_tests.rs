//! Flows across two interfaces, on a virtual clock: each hop leaves from the right local
//! socket, a request changing interface is Record-Routed on both (RFC 5658), and in-dialog
//! requests from either side come back through the right one. Advertised addresses (1:1
//! NAT) name the interface in Via and Record-Route.
//!
//! Topology: interface 0 = 127.0.0.1:5060 (faces Asterisk; upstream socket 127.0.0.1:6000),
//! interface 1 = 127.0.0.10:5060 (phones), Asterisk 127.0.0.2:5080, phone 127.0.0.3:5062.

use std::net::SocketAddr;
use std::sync::Arc;

use super::testing::{test_config, Fakes, Recorder, Sent};
use super::{Core, CoreConfig, Flow, Interface, Local, Now};
use crate::sip::Transport;

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";
const T0: u64 = 1_700_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn two_interfaces() -> CoreConfig {
    let mut cfg = test_config(&[AST]);
    cfg.interfaces = vec![
        Interface::new(addr("127.0.0.1:5060")),
        Interface::new(addr("127.0.0.10:5060")),
    ];
    cfg.derive_local_domains(&["example.com".to_owned()]);
    cfg
}

struct Rig {
    core: Core,
    fakes: Fakes,
    rec: Recorder,
}

impl Rig {
    fn new(cfg: CoreConfig) -> Rig {
        let fakes = Fakes::new(&["alice", "bob"]);
        let core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
        Rig {
            core,
            fakes,
            rec: Recorder::default(),
        }
    }

    fn recv(&mut self, local: Local, src: &str, msg: &str) -> Vec<Sent> {
        let from = Flow::new(local, addr(src));
        self.core
            .handle_datagram(Now::same(T0), from, msg.as_bytes(), &mut self.rec);
        self.rec.take()
    }
}

fn first<'a>(sent: &'a [Sent], method: &str) -> &'a Sent {
    sent.iter()
        .find(|s| s.method() == method)
        .unwrap_or_else(|| panic!("no {method} among {sent:#?}"))
}

/// Asterisk's INVITE to alice (registered through interface 1).
fn asterisk_invite() -> String {
    format!(
        "INVITE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {AST};branch=z9hG4bKa1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:600@127.0.0.2>;tag=ast1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: flow-1\r\nCSeq: 1 INVITE\r\nContact: <sip:600@{AST}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An in-dialog BYE along `routes` to `ruri`.
fn bye(from: &str, ruri: &str, routes: &[&str], branch: &str, cseq: u32) -> String {
    let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={branch};rport\r\n{route}Max-Forwards: 70\r\nFrom: <sip:x@example.com>;tag=a\r\nTo: <sip:y@example.com>;tag=b\r\nCall-ID: flow-1\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn asterisk_calls_a_phone_on_its_own_interface_with_a_double_record_route() {
    let mut r = Rig::new(two_interfaces());
    r.fakes.location.add_on(
        "alice",
        "sip:alice@127.0.0.3:5062",
        Flow::new(Local::Listen(1), addr(PHONE)),
        T0 + 60_000,
    );
    let out = r.recv(Local::Listen(0), AST, &asterisk_invite());
    let inv = first(&out, "INVITE");
    assert_eq!((inv.sock, inv.dst), (Local::Listen(1), addr(PHONE)));
    assert!(inv
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/UDP 127.0.0.10:5060;branch=")));
    let rr = inv.headers("Record-Route");
    assert_eq!(rr.len(), 2, "{}", inv.text());
    assert!(
        rr[0].starts_with("<sip:127.0.0.10:5060;lr;r2=on;sft="),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:127.0.0.1:5060;lr;r2=on;sft="),
        "{rr:?}"
    );
    // The 100 Trying goes back the way Asterisk came.
    let trying = out.iter().find(|s| s.code() == 100).unwrap();
    assert_eq!((trying.sock, trying.dst), (Local::Listen(0), addr(AST)));

    // The phone's BYE follows its route set (the Record-Routes in order): both entries
    // are ours; it leaves towards Asterisk from the upstream socket.
    let routes: Vec<&str> = rr.clone();
    let out = r.recv(
        Local::Listen(1),
        PHONE,
        &bye(PHONE, &format!("sip:600@{AST}"), &routes, "z9hG4bKpb", 2),
    );
    let fwd = first(&out, "BYE");
    assert_eq!((fwd.sock, fwd.dst), (Local::Upstream, addr(AST)));
    assert!(fwd.headers("Route").is_empty(), "{}", fwd.text());
    assert!(fwd
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/UDP 127.0.0.1:6000;branch=")));

    // Asterisk's BYE follows the reversed set: it reaches the phone from 127.0.0.10.
    let reversed: Vec<&str> = rr.iter().rev().copied().collect();
    let out = r.recv(
        Local::Listen(0),
        AST,
        &bye(AST, "sip:alice@127.0.0.3:5062", &reversed, "z9hG4bKab", 3),
    );
    let fwd = first(&out, "BYE");
    assert_eq!((fwd.sock, fwd.dst), (Local::Listen(1), addr(PHONE)));
    assert!(fwd.headers("Route").is_empty(), "{}", fwd.text());
}

#[test]
fn a_phone_on_the_other_interface_calls_asterisk_with_a_double_record_route() {
    let mut r = Rig::new(two_interfaces());
    let invite = format!(
        "INVITE sip:600@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKp1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=p\r\nTo: <sip:600@example.com>\r\nCall-ID: flow-2\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{PHONE}>\r\nProxy-Authorization: Digest username=\"alice\", realm=\"test\", nonce=\"n1\", uri=\"sip:600@example.com\", response=\"good\", qop=auth, nc=00000001, cnonce=\"c\"\r\nContent-Length: 0\r\n\r\n"
    );
    let out = r.recv(Local::Listen(1), PHONE, &invite);
    let fwd = first(&out, "INVITE");
    assert_eq!((fwd.sock, fwd.dst), (Local::Upstream, addr(AST)));
    let rr = fwd.headers("Record-Route");
    // Top: the interface facing Asterisk (its in-dialog requests come there).
    assert!(
        rr[0].starts_with("<sip:127.0.0.1:5060;lr;r2=on;sft="),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:127.0.0.10:5060;lr;r2=on;sft="),
        "{rr:?}"
    );
    let trying = out.iter().find(|s| s.code() == 100).unwrap();
    assert_eq!((trying.sock, trying.dst), (Local::Listen(1), addr(PHONE)));
}

#[test]
fn on_one_interface_a_single_record_route() {
    let mut r = Rig::new(two_interfaces());
    r.fakes.location.add_on(
        "alice",
        "sip:alice@127.0.0.3:5062",
        Flow::new(Local::Listen(0), addr(PHONE)),
        T0 + 60_000,
    );
    let out = r.recv(Local::Listen(0), AST, &asterisk_invite());
    let inv = first(&out, "INVITE");
    assert_eq!(inv.sock, Local::Listen(0));
    let rr = inv.headers("Record-Route");
    assert_eq!(rr.len(), 1);
    assert!(rr[0].starts_with("<sip:127.0.0.1:5060;lr;sft="), "{rr:?}");
}

#[test]
fn registrations_remember_the_interface_they_came_through() {
    let mut r = Rig::new(two_interfaces());
    let register = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKr1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r\r\nTo: <sip:alice@example.com>\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{PHONE}>\r\nExpires: 600\r\nAuthorization: Digest username=\"alice\", realm=\"test\", nonce=\"n1\", uri=\"sip:example.com\", response=\"good\", qop=auth, nc=00000001, cnonce=\"c\"\r\nContent-Length: 0\r\n\r\n"
    );
    let out = r.recv(Local::Listen(1), PHONE, &register);
    let ok = out.iter().find(|s| s.code() == 200).unwrap();
    assert_eq!((ok.sock, ok.dst), (Local::Listen(1), addr(PHONE)));
    let stored = r.fakes.location.bindings.lock().unwrap()["alice"][0].1;
    assert_eq!(stored, Flow::new(Local::Listen(1), addr(PHONE)));
    // The forwarded REGISTER leaves from the upstream socket, Via on the Asterisk side.
    let fwd = first(&out, "REGISTER");
    assert_eq!(fwd.sock, Local::Upstream);
    assert!(fwd
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/UDP 127.0.0.1:6000;branch=")));
    let out = r.recv(Local::Listen(0), AST, &asterisk_invite());
    assert_eq!(first(&out, "INVITE").sock, Local::Listen(1));
}

#[test]
fn advertised_addresses_name_the_interface() {
    let mut cfg = two_interfaces();
    cfg.interfaces[1] =
        Interface::advertised(addr("127.0.0.10:5060"), Transport::Udp, "203.0.113.7", 5070);
    cfg.interfaces[0] = Interface::advertised(
        addr("127.0.0.1:5060"),
        Transport::Udp,
        "sip.example.net",
        5060,
    );
    cfg.derive_local_domains(&["example.com".to_owned()]);
    let mut r = Rig::new(cfg);
    r.fakes.location.add_on(
        "alice",
        "sip:alice@127.0.0.3:5062",
        Flow::new(Local::Listen(1), addr(PHONE)),
        T0 + 60_000,
    );
    let out = r.recv(Local::Listen(0), AST, &asterisk_invite());
    let inv = first(&out, "INVITE");
    assert!(inv
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/UDP 203.0.113.7:5070;branch=")));
    let rr = inv.headers("Record-Route");
    assert!(
        rr[0].starts_with("<sip:203.0.113.7:5070;lr;r2=on;sft="),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:sip.example.net:5060;lr;r2=on;sft="),
        "{rr:?}"
    );

    // In-dialog requests name the advertised addresses in their Routes: still ours.
    let routes: Vec<&str> = rr.clone();
    let out = r.recv(
        Local::Listen(1),
        PHONE,
        &bye(PHONE, &format!("sip:600@{AST}"), &routes, "z9hG4bKpb", 2),
    );
    let fwd = first(&out, "BYE");
    assert_eq!((fwd.sock, fwd.dst), (Local::Upstream, addr(AST)));
    assert!(fwd
        .header("Via")
        .is_some_and(|v| v.starts_with("SIP/2.0/UDP sip.example.net:6000;branch=")));
    // A request-URI naming the advertised address is local.
    let opt = "OPTIONS sip:203.0.113.7:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5062;branch=z9hG4bKo\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=o\r\nTo: <sip:203.0.113.7:5070>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(r.recv(Local::Listen(1), PHONE, opt)[0].code(), 200);
}

#[test]
fn a_2xx_relayed_without_its_transaction_leaves_from_the_interface_its_request_came_in() {
    let mut r = Rig::new(two_interfaces());
    r.fakes.location.add_on(
        "alice",
        "sip:alice@127.0.0.3:5062",
        Flow::new(Local::Listen(1), addr(PHONE)),
        T0 + 60_000,
    );
    let out = r.recv(Local::Listen(0), AST, &asterisk_invite());
    let inv = first(&out, "INVITE").clone();
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in inv
        .text()
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
    {
        let n = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "call-id", "cseq", "record-route"].contains(&n.as_str()) {
            ok.push_str(l);
            ok.push_str("\r\n");
        } else if n == "to" {
            ok.push_str(l);
            ok.push_str(";tag=ph\r\n");
        }
    }
    ok.push_str(&format!(
        "Contact: <sip:alice@{PHONE}>\r\nContent-Length: 0\r\n\r\n"
    ));
    let out = r.recv(Local::Listen(1), PHONE, &ok);
    let relayed = out.iter().find(|s| s.code() == 200).unwrap();
    assert_eq!((relayed.sock, relayed.dst), (Local::Listen(0), addr(AST)));
    // A retransmission once the INVITE transaction is gone: relayed statelessly, from the
    // interface Asterisk's INVITE came in on (named in our branch).
    let out = r.recv(Local::Listen(1), PHONE, &ok);
    let relayed = out.iter().find(|s| s.code() == 200).unwrap();
    assert_eq!((relayed.sock, relayed.dst), (Local::Listen(0), addr(AST)));
}
