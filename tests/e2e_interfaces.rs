//! Two listen addresses (the public/private split) with the real binary: a phone registered
//! through the second address is reached from it, calls crossing interfaces carry a double
//! Record-Route (RFC 5658), and each side's in-dialog requests, sent to its first route,
//! reach the other side from the right address. With `[listen.advertise]`, Via,
//! Record-Route and the forwarded REGISTER's Contact name the public addresses.
//!
//! Asterisk is a raw socket on 127.0.0.2 (trusted with `match = "ip"`), the phone one on
//! 127.0.0.3; the proxy listens on 127.0.0.1:P (facing Asterisk) and 127.0.0.10:P.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::flows::phone_register;
use support::phone::{Phone, SipMsg};
use support::proxy::Tune;
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(5);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

fn scene(asterisk: &Phone, advertise: Vec<(Ipv4Addr, &'static str)>) -> Scene {
    Scene::start(Setup {
        standin: false,
        extra_nodes: vec![asterisk.addr],
        tune: Tune {
            listen_also: vec![PUBLIC],
            advertise,
            ..Tune::default()
        },
        ..Setup::default()
    })
}

/// The phone registers through the public address; Asterisk receives (and accepts) the
/// forwarded REGISTER. Returns it.
fn register_through_public(s: &Scene, phone: &Phone, asterisk: &Phone) -> SipMsg {
    let public = SocketAddr::from((PUBLIC, s.proxy.addr.port()));
    let reg = phone_register(phone, public, "1001", password("1001"), 600, "");
    assert_eq!(reg.code(), 200, "{}", reg.last.text);
    assert_eq!(
        reg.last.from, public,
        "the 200 comes back from where the REGISTER went"
    );
    let fwd = asterisk.expect_request("REGISTER", WAIT);
    asterisk.send(fwd.from, &fwd.reply(200, "OK", "ast", ""));
    fwd
}

/// Asterisk's INVITE for 1001 to `ruri` (sent to `to`).
fn asterisk_invite(asterisk: &Phone, to: SocketAddr, ruri: &str) -> String {
    let me = asterisk.addr;
    let invite = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKast1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:600@{me}>;tag=ast\r\nTo: <sip:1001@{me}>\r\n\
         Call-ID: cross-1\r\nCSeq: 1 INVITE\r\nContact: <sip:600@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    asterisk.send(to, &invite);
    invite
}

/// An in-dialog BYE from `ua` along `routes` (in order) to `target`, sent to the address of
/// its first route (`to`).
fn send_bye(
    ua: &Phone,
    to: SocketAddr,
    target: &str,
    routes: &[&str],
    branch: &str,
    tags: (&str, &str),
) {
    let me = ua.addr;
    let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n{route}\
         Max-Forwards: 70\r\nFrom: <sip:x@{me}>;tag={}\r\nTo: <sip:y@{me}>;tag={}\r\n\
         Call-ID: cross-1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
        tags.0, tags.1
    );
    ua.send(to, &bye);
}

#[test]
fn calls_cross_interfaces_through_the_phones_own_address() {
    let asterisk = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let s = scene(&asterisk, Vec::new());
    let private = s.proxy.addr;
    let public = SocketAddr::from((PUBLIC, private.port()));
    let fwd = register_through_public(&s, &phone, &asterisk);
    // Asterisk is told the phone is at the proxy's Asterisk-side address.
    assert_eq!(
        fwd.header("Contact"),
        Some(format!("<sip:1001@{private}>").as_str())
    );
    assert_eq!(
        fwd.from.ip(),
        private.ip(),
        "upstream socket on the Asterisk side"
    );

    // Asterisk calls 1001 at that address: the INVITE reaches the phone from 127.0.0.10.
    asterisk_invite(&asterisk, private, &format!("sip:1001@{private}"));
    let inv = phone.expect_request("INVITE", WAIT);
    assert_eq!(inv.from, public, "{}", inv.text);
    assert!(inv
        .header("Via")
        .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {public};branch="))));
    let rr = inv.headers("Record-Route");
    assert_eq!(rr.len(), 2, "{}", inv.text);
    assert!(
        rr[0].starts_with(&format!("<sip:{public};lr;r2=on;sft=")),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with(&format!("<sip:{private};lr;r2=on;sft=")),
        "{rr:?}"
    );

    // The phone answers; the 200 reaches Asterisk with both Record-Routes.
    let rr_lines: String = rr
        .iter()
        .map(|r| format!("Record-Route: {r}\r\n"))
        .collect();
    let contact = format!("{rr_lines}Contact: <sip:1001@{}>\r\n", phone.addr);
    phone.send(inv.from, &inv.reply(200, "OK", "ph", &contact));
    let mut seen = Vec::new();
    let ok = asterisk.expect_response(200, "1 INVITE", WAIT, &mut seen);
    assert_eq!(ok.from, private);
    assert_eq!(ok.headers("Record-Route").len(), 2);

    // The phone's BYE to its first route (the public address) reaches Asterisk.
    let routes: Vec<&str> = rr.clone();
    send_bye(
        &phone,
        public,
        &format!("sip:600@{}", asterisk.addr),
        &routes,
        "z9hG4bKpbye",
        ("ph", "ast"),
    );
    let bye = asterisk.expect_request("BYE", WAIT);
    assert_eq!(bye.from.ip(), private.ip());
    assert!(bye.headers("Route").is_empty(), "{}", bye.text);
    asterisk.send(bye.from, &bye.reply(200, "OK", "", ""));
    let mut seen = Vec::new();
    phone.expect_response(200, "7 BYE", WAIT, &mut seen);

    // Asterisk's BYE to its first route (the reversed set: the private address) reaches
    // the phone from the public address.
    let reversed: Vec<&str> = rr.iter().rev().copied().collect();
    send_bye(
        &asterisk,
        private,
        &format!("sip:1001@{}", phone.addr),
        &reversed,
        "z9hG4bKabye",
        ("ast", "ph"),
    );
    let bye = phone.expect_request("BYE", WAIT);
    assert_eq!(bye.from, public, "{}", bye.text);
    assert!(bye.headers("Route").is_empty(), "{}", bye.text);
}

#[test]
fn advertised_addresses_go_into_via_record_route_and_the_forwarded_contact() {
    let asterisk = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let s = scene(
        &asterisk,
        vec![
            (Ipv4Addr::LOCALHOST, "sip-internal.example.test:5999"),
            (PUBLIC, "203.0.113.7:5070"),
        ],
    );
    let private = s.proxy.addr;
    let public = SocketAddr::from((PUBLIC, private.port()));
    let fwd = register_through_public(&s, &phone, &asterisk);
    assert_eq!(
        fwd.header("Contact"),
        Some("<sip:1001@sip-internal.example.test:5999>")
    );
    assert!(
        fwd.header("Via")
            .is_some_and(|v| v.starts_with("SIP/2.0/UDP sip-internal.example.test:")),
        "{}",
        fwd.text
    );
    // Asterisk calls the Contact it was given (a name the proxy answers to).
    asterisk_invite(
        &asterisk,
        private,
        "sip:1001@sip-internal.example.test:5999",
    );
    let inv = phone.expect_request("INVITE", WAIT);
    assert_eq!(inv.from, public);
    assert!(
        inv.header("Via")
            .is_some_and(|v| v.starts_with("SIP/2.0/UDP 203.0.113.7:5070;branch=")),
        "{}",
        inv.text
    );
    let rr = inv.headers("Record-Route");
    assert!(
        rr[0].starts_with("<sip:203.0.113.7:5070;lr;r2=on;sft="),
        "{rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:sip-internal.example.test:5999;lr;r2=on;sft="),
        "{rr:?}"
    );
    // In-dialog requests naming the advertised addresses are routed (the NAT delivers them
    // to the bound address).
    let rr_lines: String = rr
        .iter()
        .map(|r| format!("Record-Route: {r}\r\n"))
        .collect();
    let contact = format!("{rr_lines}Contact: <sip:1001@{}>\r\n", phone.addr);
    phone.send(inv.from, &inv.reply(200, "OK", "ph", &contact));
    let mut seen = Vec::new();
    asterisk.expect_response(200, "1 INVITE", WAIT, &mut seen);
    let routes: Vec<&str> = rr.clone();
    send_bye(
        &phone,
        public,
        &format!("sip:600@{}", asterisk.addr),
        &routes,
        "z9hG4bKpb2",
        ("ph", "ast"),
    );
    let bye = asterisk.expect_request("BYE", WAIT);
    assert!(bye.headers("Route").is_empty(), "{}", bye.text);
}
