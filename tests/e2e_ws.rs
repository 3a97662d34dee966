//! SIP over WebSocket and secure WebSocket (RFC 7118) with the real binary and a raw
//! tungstenite client that speaks like a browser (JsSIP): `.invalid` hosts in Via and
//! Contact, `transport=ws`, `+sip.instance`/`reg-id` and `Supported: path, gruu, outbound`.
//! On `ws` and on `wss`: the handshake, REGISTER through the 401 challenge to 200, Asterisk's
//! INVITE arriving as a frame on the browser's own connection with a double Record-Route
//! (the WS side and the UDP side), the browser's 200 reaching Asterisk, and Asterisk's BYE
//! finding the browser again over its connection. A handshake without the `sip`
//! subprotocol gets a clear HTTP refusal; a malformed frame and an oversized message close
//! only their own connection while another browser keeps working. The `[nat]` keepalive of a
//! browser's binding is a WebSocket ping, not a CRLFCRLF text message.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::tls::TestPki;
use support::ws::{upgrade, WsPhone};
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);

fn scene(pki: &TestPki, extra: Option<&str>) -> Scene {
    scene_with(pki, extra, None)
}

/// With `nat` as the body of `[nat]` (keepalives are off otherwise).
fn scene_with(pki: &TestPki, extra: Option<&str>, nat: Option<&str>) -> Scene {
    Scene::start(Setup {
        tune: Tune {
            ws: true,
            tls: Some((pki.cert.clone(), pki.key.clone())),
            extra_toml: extra.map(str::to_owned),
            nat: nat.map(str::to_owned),
            ..Tune::default()
        },
        ..Setup::default()
    })
}

/// The Via token of a WebSocket phone.
fn token(secure: bool) -> &'static str {
    if secure {
        "WSS"
    } else {
        "WS"
    }
}

/// A REGISTER from a browser `user` whose Contact user is `contact`, as JsSIP writes it.
fn register_req(secure: bool, user: &str, contact: &str, cseq: u32, extra: &str) -> String {
    let t = token(secure);
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{t} h7kjh112kjbf.invalid;branch=z9hG4bKreg{contact}{cseq}\r\n\
         Max-Forwards: 69\r\nTo: <sip:{user}@{DOMAIN}>\r\nFrom: <sip:{user}@{DOMAIN}>;tag=js{contact}\r\n\
         Call-ID: reg-{contact}\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{contact}@h7kjh112kjbf.invalid;transport=ws>;+sip.ice;reg-id=1;\
         +sip.instance=\"<urn:uuid:9c5f5b0e-{contact}-4c2a-9b9e-3f1d2a6b7c8d>\";expires=600\r\n\
         Expires: 600\r\nAllow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
         Supported: path,gruu,outbound\r\nUser-Agent: JsSIP 3.13.8\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// REGISTER through the 401 challenge; returns the 200.
fn register(p: &mut WsPhone, secure: bool, user: &str, contact: &str) -> SipMsg {
    p.send(&register_req(secure, user, contact, 1, ""));
    let challenge = p.expect_response(401, "1 REGISTER", WAIT);
    let uri = format!("sip:{DOMAIN}");
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        password(user),
        "REGISTER",
        &uri,
    );
    let extra = format!("Authorization: {creds}\r\n");
    p.send(&register_req(secure, user, contact, 2, &extra));
    p.expect_response(200, "2 REGISTER", WAIT)
}

/// Asterisk's INVITE for `user`, sent to the proxy's UDP address from `ast`.
fn asterisk_invite(ast: &Phone, proxy: SocketAddr, user: &str, call_id: &str) {
    let me = ast.addr;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
               m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    ast.send(
        proxy,
        &format!(
            "INVITE sip:{user}@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:600@{me}>;tag=ast\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 10 INVITE\r\nContact: <sip:600@{me}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    );
}

#[test]
fn browsers_on_ws_and_wss_register_receive_calls_and_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(&pki, None);
    let udp = s.proxy.addr;
    let ast = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    for (secure, user, contact) in [(false, "1001", "ws1001x"), (true, "2001", "wss2001x")] {
        let mut p = if secure {
            WsPhone::wss(s.proxy.wss.unwrap(), &pki)
        } else {
            WsPhone::ws(s.proxy.ws.unwrap())
        };
        let ok = register(&mut p, secure, user, contact);
        // JsSIP looks for its own Contact (by user) in the 200.
        let c = ok.header("Contact").unwrap_or("");
        assert!(
            c.contains(&format!("sip:{contact}@h7kjh112kjbf.invalid")),
            "{}",
            ok.text
        );
        // RFC 5626 outbound applies at the first hop: the 200 says so.
        assert!(
            ok.header("Require").is_some_and(|r| r.contains("outbound")),
            "{}",
            ok.text
        );
        s.standin().wait_registered(user);

        // Asterisk's INVITE: a frame on the browser's connection, Via naming WS/WSS, a
        // double Record-Route (the WS side, then the UDP side), the SDP untouched.
        let call_id = format!("ast-{user}");
        asterisk_invite(&ast, udp, user, &call_id);
        let inv = p.expect_request("INVITE", WAIT);
        assert!(
            inv.start_line()
                .starts_with(&format!("INVITE sip:{contact}@h7kjh112kjbf.invalid")),
            "{}",
            inv.text
        );
        let via = inv.header("Via").unwrap_or("");
        assert!(
            via.starts_with(&format!("SIP/2.0/{} ", token(secure))),
            "{via}"
        );
        let rr = inv.headers("Record-Route");
        assert_eq!(rr.len(), 2, "{}", inv.text);
        let t = token(secure).to_ascii_lowercase();
        assert!(rr[0].contains(&format!(";transport={t};")), "{rr:?}");
        assert!(!rr[1].contains("transport="), "{rr:?}");
        assert!(
            inv.text.ends_with("a=rtpmap:111 opus/48000/2\r\n"),
            "{}",
            inv.text
        );

        // The browser answers; the 200 reaches Asterisk with both Record-Routes.
        let rr_lines: String = rr
            .iter()
            .map(|r| format!("Record-Route: {r}\r\n"))
            .collect();
        let contact_hdr =
            format!("{rr_lines}Contact: <sip:{contact}@h7kjh112kjbf.invalid;transport=ws>\r\n");
        p.send(&inv.reply(200, "OK", "br", &contact_hdr));
        let mut seen = Vec::new();
        let answer = ast.expect_response(200, "10 INVITE", WAIT, &mut seen);
        let arr = answer.headers("Record-Route");
        assert_eq!(arr.len(), 2, "{}", answer.text);

        // Asterisk hangs up inside the dialog: its BYE follows the route set and the
        // browser's Contact (a .invalid host) back to the same connection.
        let target = answer
            .header("Contact")
            .and_then(|c| c.split('<').nth(1))
            .and_then(|c| c.split('>').next())
            .unwrap_or("")
            .to_owned();
        let me = ast.addr;
        let routes = format!("Route: <{}>, <{}>\r\n", strip(arr[1]), strip(arr[0]));
        ast.send(
            udp,
            &format!(
                "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbye{user};rport\r\n\
                 {routes}Max-Forwards: 70\r\nFrom: <sip:600@{me}>;tag=ast\r\n\
                 To: <sip:{user}@{DOMAIN}>;tag=br\r\nCall-ID: {call_id}\r\nCSeq: 11 BYE\r\n\
                 Content-Length: 0\r\n\r\n"
            ),
        );
        let bye = p.expect_request("BYE", WAIT);
        assert!(
            bye.start_line()
                .starts_with(&format!("BYE sip:{contact}@h7kjh112kjbf.invalid")),
            "{}",
            bye.text
        );
        p.send(&bye.reply(200, "OK", "br", ""));
        ast.expect_response(200, "11 BYE", WAIT, &mut seen);
    }
}

/// The URI of a Record-Route value `<uri>`.
fn strip(rr: &str) -> &str {
    rr.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
}

#[test]
fn bad_upgrades_malformed_frames_and_big_messages_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(
        &pki,
        Some("[ws]\nmax_message_bytes = 4096\nmax_frame_bytes = 4096"),
    );
    for pki in [None, Some(&pki)] {
        let (addr, scheme) = match pki {
            None => (s.proxy.ws.unwrap(), "ws"),
            Some(_) => (s.proxy.wss.unwrap(), "wss"),
        };
        let secure = pki.is_some();
        // An upgrade that does not offer `sip` is refused with a clear HTTP answer.
        let wire: Box<dyn support::stream::Wire> = match pki {
            None => Box::new(std::net::TcpStream::connect(addr).unwrap()),
            Some(pki) => Box::new(pki.connect(addr)),
        };
        let refused = upgrade(wire, scheme, addr, "chat")
            .err()
            .unwrap_or_default();
        assert!(refused.starts_with("400 Bad Request"), "{refused}");
        assert!(
            refused.contains("Sec-WebSocket-Protocol must offer sip"),
            "{refused}"
        );

        let mut good = WsPhone::connect(addr, pki);
        register(&mut good, secure, "1001", "keeper");
        let mut unmasked = WsPhone::connect(addr, pki);
        let mut big = WsPhone::connect(addr, pki);
        let mut fragmented_big = WsPhone::connect(addr, pki);

        // A frame a client did not mask: protocol error 1002.
        unmasked.send_raw(b"\x81\x05hello");
        assert_eq!(unmasked.closed_within(WAIT), Some(Some(1002)));
        // A message over [ws] max_message_bytes, whole or in fragments: 1009.
        big.send(&"x".repeat(5000));
        assert_eq!(big.closed_within(WAIT), Some(Some(1009)));
        let mut frag = Vec::new();
        for i in 0..3u8 {
            frag.extend(masked(i == 2, if i == 0 { 1 } else { 0 }, &[b'y'; 2000]));
        }
        fragmented_big.send_raw(&frag);
        assert_eq!(fragmented_big.closed_within(WAIT), Some(Some(1009)));

        // The registered browser goes on: a refresh on its connection, fragmented by
        // the client this time, is answered.
        let refresh = register_req(secure, "1001", "keeper", 3, "");
        let (a, b) = refresh.as_bytes().split_at(100);
        let mut both = masked(false, 1, a);
        both.extend(masked(true, 9, b"ping"));
        both.extend(masked(true, 0, b));
        good.send_raw(&both);
        let m = good.expect_response(401, "3 REGISTER", WAIT);
        assert!(m.header("WWW-Authenticate").is_some(), "{}", m.text);
    }
    let err = std::fs::read_to_string(s.dir().join("sipfront.err")).unwrap_or_default();
    assert!(!err.contains("panicked"), "{err}");
}

/// A masked client frame.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xa1, 0x02, 0x3c, 0x44];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

#[test]
fn keepalives_to_a_browser_are_websocket_pings() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene_with(&pki, None, Some("keepalive_interval_secs = 1\n"));
    let mut p = WsPhone::wss(s.proxy.wss.unwrap(), &pki);
    // reg-id and +sip.instance (RFC 5626): a binding that gets keepalives.
    register(&mut p, true, "1001", "kaphone");
    s.standin().wait_registered("1001");
    // Within two intervals a ping frame, never a CRLFCRLF text message; it is answered
    // (tungstenite's pong) and the browser stays reachable.
    p.expect_ping(Duration::from_secs(5));
    p.expect_ping(Duration::from_secs(5));
    let ast = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    asterisk_invite(&ast, s.proxy.addr, "1001", "after-pings");
    let inv = p.expect_request("INVITE", WAIT);
    assert!(inv.start_line().contains("kaphone@"), "{}", inv.text);
}
