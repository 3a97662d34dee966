//! SIP over TCP and TLS with the real binary: phones on a TCP and on a TLS connection
//! register with digest auth, receive Asterisk's INVITE over their own connection and
//! answer it, and call 600 through the 407 challenge; a closed connection makes the next
//! call fail at once; sipp over TCP registers 1,000 users; a certificate replaced on disk
//! is served after SIGHUP while an open connection keeps working; a connection flood and a
//! slowloris from one address are contained while another phone keeps working.
//!
//! Asterisk is the stand-in (registrations, calls to 600) plus a raw socket on 127.0.0.2
//! for Asterisk's own INVITEs (trusted with `match = "ip"`).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::admin::{free_admin_addr, metric};
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{seed_credentials, Tune, DOMAIN};
use support::sipp::{register_csv, SippCmd};
use support::stream::StreamPhone;
use support::tls::TestPki;
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);

fn scene(pki: &TestPki, tune: Tune) -> Scene {
    Scene::start(Setup {
        tune: Tune {
            tcp: true,
            tls: Some((pki.cert.clone(), pki.key.clone())),
            ..tune
        },
        ..Setup::default()
    })
}

/// The Via transport token of a stream phone.
fn token(tls: bool) -> &'static str {
    if tls {
        "TLS"
    } else {
        "TCP"
    }
}

/// A request from the stream phone `p` (as `user`), with `extra` header lines.
fn request(
    p: &StreamPhone,
    tls: bool,
    method: &str,
    uri: &str,
    user: &str,
    cseq: u32,
    extra: &str,
) -> String {
    let t = token(tls);
    let me = p.addr;
    let to = if method == "REGISTER" {
        format!("<sip:{user}@{DOMAIN}>")
    } else {
        format!("<{uri}>")
    };
    let param = t.to_ascii_lowercase();
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{t} {me};branch=z9hG4bK{method}{cseq}{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=ph{}\r\nTo: {to}\r\n\
         Call-ID: {method}-{}@phone\r\nCSeq: {cseq} {method}\r\n\
         Contact: <sip:{user}@{me};transport={param}>\r\n{extra}Content-Length: 0\r\n\r\n",
        me.port(),
        me.port(),
        me.port()
    )
}

/// REGISTER through the 401 challenge; returns the 200.
fn register(p: &mut StreamPhone, tls: bool, user: &str) -> SipMsg {
    let uri = format!("sip:{DOMAIN}");
    p.send(&request(
        p,
        tls,
        "REGISTER",
        &uri,
        user,
        1,
        "Expires: 600\r\n",
    ));
    let challenge = p.expect_response(401, "1 REGISTER", WAIT);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        password(user),
        "REGISTER",
        &uri,
    );
    let extra = format!("Expires: 600\r\nAuthorization: {creds}\r\n");
    p.send(&request(p, tls, "REGISTER", &uri, user, 2, &extra));
    p.expect_response(200, "2 REGISTER", WAIT)
}

/// INVITE 600 through the 407 challenge; returns the final response.
fn call_600(p: &mut StreamPhone, tls: bool, user: &str) -> SipMsg {
    let uri = format!("sip:600@{DOMAIN}");
    p.send(&request(p, tls, "INVITE", &uri, user, 1, ""));
    let challenge = p.expect_response(407, "1 INVITE", WAIT);
    // ACK the 407 (same branch as the INVITE, hop by hop).
    let ack = request(p, tls, "ACK", &uri, user, 1, "")
        .replace("branch=z9hG4bKACK1", "branch=z9hG4bKINVITE1")
        .replace(
            &format!("To: <{uri}>"),
            &format!("To: <{uri}>;tag={}", challenge.to_tag()),
        );
    p.send(&ack);
    let creds = answer_challenge(
        &challenge,
        "Proxy-Authenticate",
        user,
        password(user),
        "INVITE",
        &uri,
    );
    let extra = format!("Proxy-Authorization: {creds}\r\n");
    p.send(&request(p, tls, "INVITE", &uri, user, 2, &extra));
    let deadline = Instant::now() + WAIT;
    loop {
        let m = p
            .recv_until(deadline)
            .expect("a final response to the INVITE");
        if m.code().is_some_and(|c| c >= 200) && m.header("CSeq") == Some("2 INVITE") {
            return m;
        }
    }
}

/// Asterisk's INVITE for `user`, sent to the proxy's UDP address from `ast`.
fn asterisk_invite(ast: &Phone, proxy: SocketAddr, user: &str, call_id: &str) {
    asterisk_invite_scheme(ast, proxy, "sip", user, call_id);
}

/// [`asterisk_invite`] with the Request-URI scheme `scheme` (`sip` or `sips`).
fn asterisk_invite_scheme(ast: &Phone, proxy: SocketAddr, scheme: &str, user: &str, call_id: &str) {
    let me = ast.addr;
    ast.send(
        proxy,
        &format!(
            "INVITE {scheme}:{user}@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:600@{me}>;tag=ast\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 10 INVITE\r\nContact: <sip:600@{me}>\r\nContent-Length: 0\r\n\r\n"
        ),
    );
}

#[test]
fn phones_on_tcp_and_tls_register_receive_calls_and_call() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(&pki, Tune::default());
    let (udp, tcp, tls) = (s.proxy.addr, s.proxy.tcp.unwrap(), s.proxy.tls.unwrap());
    let ast = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    for (tls_phone, user, addr) in [(false, "1001", tcp), (true, "2001", tls)] {
        let mut p = if tls_phone {
            StreamPhone::tls(addr, &pki)
        } else {
            StreamPhone::tcp(addr)
        };
        let ok = register(&mut p, tls_phone, user);
        assert!(ok.header("Contact").is_some(), "{}", ok.text);
        s.standin().wait_registered(user);

        // Asterisk's INVITE reaches the phone over its own connection, Via naming the
        // transport, Record-Route naming the stream side and the UDP side.
        let call_id = format!("ast-{user}");
        asterisk_invite(&ast, udp, user, &call_id);
        let inv = p.expect_request("INVITE", WAIT);
        let via = inv.header("Via").unwrap_or("");
        assert!(
            via.starts_with(&format!("SIP/2.0/{} ", token(tls_phone))),
            "{via}"
        );
        let rr = inv.headers("Record-Route");
        assert_eq!(rr.len(), 2, "{}", inv.text);
        let t = token(tls_phone).to_ascii_lowercase();
        assert!(rr[0].contains(&format!(";transport={t};")), "{rr:?}");
        assert!(!rr[1].contains("transport="), "{rr:?}");
        let rr_lines: String = rr
            .iter()
            .map(|r| format!("Record-Route: {r}\r\n"))
            .collect();
        let contact = format!(
            "{rr_lines}Contact: <sip:{user}@{};transport={t}>\r\n",
            p.addr
        );
        p.send(&inv.reply(200, "OK", "ph", &contact));
        let mut seen = Vec::new();
        let answer = ast.expect_response(200, "10 INVITE", WAIT, &mut seen);
        assert_eq!(answer.headers("Record-Route").len(), 2);

        // The phone calls 600: challenged, then Asterisk's 200 comes back on the connection.
        let fin = call_600(&mut p, tls_phone, user);
        assert_eq!(fin.code(), Some(200), "{}", fin.text);
    }
    let c = s.standin().stat("invite");
    assert!(c >= 2, "{c}");
}

#[test]
fn a_sips_request_reaches_a_phone_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(&pki, Tune::default());
    let ast = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let mut on_tcp = StreamPhone::tcp(s.proxy.tcp.unwrap());
    register(&mut on_tcp, false, "1001");
    let mut on_tls = StreamPhone::tls(s.proxy.tls.unwrap(), &pki);
    register(&mut on_tls, true, "2001");
    s.standin().wait_registered("2001");

    // RFC 5630: sips: means TLS on every hop. The TCP phone is there, but not over TLS.
    asterisk_invite_scheme(&ast, s.proxy.addr, "sips", "1001", "sips-tcp");
    let mut seen = Vec::new();
    let m = ast.expect_final("10 INVITE", WAIT, &mut seen);
    assert_eq!(m.code(), Some(480), "{}", m.text);
    let warning = m.header("Warning").unwrap_or("");
    assert!(warning.starts_with("380 "), "{}", m.text);
    assert!(warning.ends_with("\"SIPS Not Allowed\""), "{}", m.text);
    assert!(on_tcp
        .recv_until(Instant::now() + Duration::from_millis(300))
        .is_none());

    // The TLS phone gets it over its connection.
    asterisk_invite_scheme(&ast, s.proxy.addr, "sips", "2001", "sips-tls");
    let inv = on_tls.expect_request("INVITE", WAIT);
    assert_eq!(inv.header("Call-ID"), Some("sips-tls"), "{}", inv.text);
    assert!(inv.header("Via").unwrap_or("").starts_with("SIP/2.0/TLS "));
}

#[test]
fn a_closed_connection_fails_the_next_call_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(&pki, Tune::default());
    let ast = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let mut p = StreamPhone::tcp(s.proxy.tcp.unwrap());
    register(&mut p, false, "1001");
    s.standin().wait_registered("1001");
    drop(p);
    // The binding lives on (until it expires), but its connection is gone: the call fails
    // at once (480 when the close was seen first, 408 when the INVITE raced it), not after
    // Timer B.
    let t0 = Instant::now();
    asterisk_invite(&ast, s.proxy.addr, "1001", "after-close");
    let mut seen = Vec::new();
    let m = ast.expect_final("10 INVITE", Duration::from_secs(3), &mut seen);
    let code = m.code().unwrap_or(0);
    assert!(code == 480 || code == 408, "{}", m.text);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn sipp_over_tcp_registers_a_thousand_users() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let users: Vec<(String, String)> = (0..N)
        .map(|i| (format!("{}", 30_000 + i), format!("pw-{i}")))
        .collect();
    let db = dir.path().join("bulk.db");
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    seed_credentials(&db, &refs);
    let s = scene(
        &pki,
        Tune {
            credentials_url: Some(format!("sqlite://{}", db.display())),
            guard_allow: vec!["127.0.0.0/8"],
            ..Tune::default()
        },
    );
    let csv = register_csv(s.dir(), "tcp-bulk", &refs);
    let bulk = SippCmd::new("tcp-bulk", s.proxy.tcp.unwrap(), "uac_register_auth.xml")
        .csv(csv)
        .quiet()
        .args(&[
            "-t",
            "t1",
            "-auth_uri",
            DOMAIN,
            "-r",
            "500",
            "-m",
            &N.to_string(),
        ]);
    s.sipp_ok(bulk);
    s.standin()
        .wait_stat("registrations", N as u64, Duration::from_secs(30));
}

#[test]
fn a_new_certificate_is_served_after_sighup_while_open_connections_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let first = std::fs::read(&pki.cert).unwrap();
    let mut s = scene(&pki, Tune::default());
    let tls = s.proxy.tls.unwrap();
    let mut old = StreamPhone::tls(tls, &pki);
    register(&mut old, true, "2001");
    let before = pki.connect(tls).peer_cert().expect("a certificate");

    let renewed = pki.issue("sipfront two");
    assert_ne!(std::fs::read(&pki.cert).unwrap(), first);
    s.proxy.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    let mut now_served = before.clone();
    while now_served != renewed && Instant::now() < deadline {
        now_served = pki.connect(tls).peer_cert().expect("a certificate");
    }
    assert_eq!(
        now_served, renewed,
        "new handshakes get the new certificate"
    );
    // The connection opened before the reload still works.
    let fin = call_600(&mut old, true, "2001");
    assert_eq!(fin.code(), Some(200));

    // A broken certificate file is refused: the new one stays.
    std::fs::write(&pki.cert, "not a certificate").unwrap();
    s.proxy.signal(libc::SIGHUP);
    s.wait_file("sipfront.err", "reload refused", WAIT);
    assert_eq!(pki.connect(tls).peer_cert(), Some(renewed));
}

#[test]
fn a_flood_and_a_slowloris_from_one_address_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = scene(
        &pki,
        Tune {
            tcp_limits: vec![
                ("max_connections_per_ip", "20".to_owned()),
                ("message_timeout_ms", "500".to_owned()),
            ],
            admin: Some(free_admin_addr()),
            ..Tune::default()
        },
    );
    let tcp = s.proxy.tcp.unwrap();
    // The attacker (127.0.0.1) opens far more connections than allowed; the extra ones are
    // closed at once; the ones kept dribble half a message and are closed in time.
    let mut flood: Vec<StreamPhone> = (0..60).map(|_| StreamPhone::tcp(tcp)).collect();
    for f in flood.iter_mut() {
        let _ = f
            .wire
            .write_all(b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a\r\n");
    }
    // A phone from another address works meanwhile.
    let good_tcp = bind_connect(Ipv4Addr::new(127, 0, 0, 7), tcp);
    let mut good = good_tcp;
    register(&mut good, false, "1001");
    let mut closed = 0;
    for f in flood.iter_mut() {
        closed += usize::from(f.closed_within(Duration::from_secs(3)));
    }
    assert_eq!(
        closed, 60,
        "every attacker connection is closed (limit or slowloris)"
    );
    let fin = call_600(&mut good, false, "1001");
    assert_eq!(fin.code(), Some(200));
    // /metrics counts it per transport: 61 connections, those over the per-IP limit
    // refused at accept (40, unless slowloris closes freed room first), the others closed
    // by the slowloris deadline, the good phone's connection still open.
    let admin = s.proxy.admin.unwrap();
    let tcp_metric = |name: &str| metric(admin, &format!("{name}{{transport=\"tcp\"}}"));
    let refused = tcp_metric("sipfront_connections_refused_total");
    let accepted = tcp_metric("sipfront_connections_accepted_total");
    assert_eq!(
        refused + accepted,
        61.0,
        "{refused} refused, {accepted} accepted"
    );
    assert!(refused >= 20.0, "{refused} refused");
    assert!(tcp_metric("sipfront_connections_errors_total") >= accepted - 1.0);
    assert_eq!(tcp_metric("sipfront_connections_open"), 1.0);
    assert!(tcp_metric("sipfront_connection_received_bytes_total") > 0.0);
    assert_eq!(
        metric(admin, "sipfront_connections_open{transport=\"tls\"}"),
        0.0
    );
}

/// A TCP connection to `proxy` from a chosen local IP.
fn bind_connect(ip: Ipv4Addr, proxy: SocketAddr) -> StreamPhone {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    sock.connect(&proxy.into()).unwrap();
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut p = StreamPhone::tcp_from(tcp, proxy);
    p.addr = addr;
    p
}

use std::io::Write as _;
