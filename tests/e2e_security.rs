//! End-to-end security tests (issue #16, items 1–3) against the real `sipfront` binary on
//! loopback:
//! - response injection: while a phone's INVITE waits at the Asterisk node, a 200 OK with
//!   the live branch from another address (spoofed) and 200 OKs from the node with a
//!   guessed generation or a wrong MAC (forged) reach nobody and are counted in /metrics
//!   (`sipfront_dropped_total{reason="spoofed"|"forged"}`); a forged 2xx for a transaction
//!   that is gone is not relayed statelessly; the node's own answer still goes through;
//! - enumeration by timing: a wrong password for an unknown user (a database lookup) and
//!   for a known user are answered after the same `[auth] failure_delay_ms` (medians
//!   within 1.5×);
//! - enumeration by answer: MESSAGE/OPTIONS/SUBSCRIBE from an authenticated phone to an
//!   unknown user and to a known unregistered one both get 404 by default, 404 and 480
//!   with `[registrar] unregistered_answer = 480`.
//!
//! Needs `cargo build --workspace --bins`. Harness: `tests/support/`.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::admin::{free_admin_addr, metric};
use support::flows::{phone_invite, phone_request};
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);

/// The node playing Asterisk: a raw socket the test answers from (no pings).
fn scene_with_raw_node(node: SocketAddr, admin: SocketAddr) -> Scene {
    Scene::start(Setup {
        standin: false,
        extra_nodes: vec![node],
        tune: Tune {
            admin: Some(admin),
            asterisk_lines: vec!["probe_interval_ms = 0".to_owned()],
            ..Tune::default()
        },
        ..Setup::default()
    })
}

/// The branch of the top Via of `msg`.
fn top_branch(msg: &SipMsg) -> String {
    let via = msg.header("Via").expect("a Via");
    let b = via.split(";branch=").nth(1).expect("a branch");
    b.split([';', ',', ' ']).next().unwrap_or(b).to_owned()
}

/// Waits until the counter `series` reaches `want` (the workers publish their counters
/// every 100 ms). Between scrapes it paces itself on an OPTIONS round trip from `pacer`.
fn wait_metric(admin: SocketAddr, pacer: &Phone, proxy: SocketAddr, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    for n in 1.. {
        let v = metric(admin, series);
        if v >= want {
            assert_eq!(v, want, "{series}");
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {v}, want {want}");
        let me = pacer.addr;
        pacer.send(
            proxy,
            &format!(
                "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpace{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:pacer@{DOMAIN}>;tag=p\r\nTo: <sip:{proxy}>\r\n\
                 Call-ID: pace{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ),
        );
        let _ = pacer.recv_until(Instant::now() + Duration::from_millis(200));
    }
}

/// Receives for `window` and fails on any datagram (the proxy had its chance: the
/// datagrams that should have been dropped were sent before).
fn expect_nothing(p: &Phone, window: Duration) {
    if let Some(m) = p.recv_until(Instant::now() + window) {
        panic!("unexpected datagram at {}: {}", p.addr, m.text);
    }
}

#[test]
fn forged_and_spoofed_responses_are_dropped_and_counted() {
    let node = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let admin = free_admin_addr();
    let scene = scene_with_raw_node(node.addr, admin);
    let proxy = scene.proxy.addr;
    let forged = r#"sipfront_dropped_total{reason="forged"}"#;
    let spoofed = r#"sipfront_dropped_total{reason="spoofed"}"#;
    assert_eq!(metric(admin, forged), 0.0);
    assert_eq!(metric(admin, spoofed), 0.0);

    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let pacer = Phone::bind(Ipv4Addr::LOCALHOST);
    let caller = std::thread::scope(|s| {
        let call = s.spawn(|| {
            phone_invite(
                &phone,
                proxy,
                "1001",
                password("1001"),
                &format!("sip:600@{DOMAIN}"),
                WAIT,
            )
        });
        let invite = node.expect_request("INVITE", WAIT);
        let live = top_branch(&invite);
        let from_proxy = invite.from;
        let hijack = "Contact: <sip:evil@192.0.2.66:5060>\r\n";

        // Spoofed: the live branch, from an address the INVITE did not go to.
        let attacker = Phone::bind(Ipv4Addr::new(127, 0, 0, 66));
        attacker.send(from_proxy, &invite.reply(200, "OK", "evil", hijack));
        // Forged: from the node, with a guessed generation (the MAC kept) ...
        let fields: Vec<&str> = live.split('.').collect();
        assert_eq!(fields.len(), 7, "{live}");
        let gen = u64::from_str_radix(fields[3], 16).expect("hex generation");
        let mut guessed = fields.clone();
        let next_gen = format!("{:x}", gen + 1);
        guessed[3] = &next_gen;
        let guessed = guessed.join(".");
        node.send(
            from_proxy,
            &invite
                .reply(200, "OK", "evil", hijack)
                .replacen(&live, &guessed, 1),
        );
        // ... and with the live fields but another MAC.
        let cut = live.rfind('.').expect("a MAC field");
        let wrong_mac = format!("{}.0123456789abcdef", &live[..cut]);
        node.send(
            from_proxy,
            &invite
                .reply(200, "OK", "evil", hijack)
                .replacen(&live, &wrong_mac, 1),
        );
        wait_metric(admin, &pacer, proxy, spoofed, 1.0);
        wait_metric(admin, &pacer, proxy, forged, 2.0);

        // The node's own answer still goes through.
        node.send(from_proxy, &invite.reply(486, "Busy Here", "node", ""));
        let ack = node.expect_request("ACK", WAIT);
        assert_eq!(top_branch(&ack), live, "the ACK of the 486 is hop by hop");
        call.join().expect("the call")
    });
    assert_eq!(caller.code(), 486, "{caller:?}");
    assert!(
        caller.before.iter().all(|l| !l.starts_with("SIP/2.0 200")),
        "a 200 reached the phone: {:?}",
        caller.before
    );

    // A forged 2xx for a transaction that is gone is not relayed statelessly to the address
    // its second Via names (a victim of a reflection).
    let victim = Phone::bind(Ipv4Addr::new(127, 0, 0, 67));
    let stateless = format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP {proxy};branch=z9hG4bKsf.0.7.1.0.0.0000000000000000\r\n\
         Via: SIP/2.0/UDP {};branch=z9hG4bKvictim;rport\r\n\
         From: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:b@{DOMAIN}>;tag=2\r\n\
         Call-ID: gone@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        victim.addr
    );
    let attacker = Phone::bind(Ipv4Addr::new(127, 0, 0, 66));
    attacker.send(proxy, &stateless);
    wait_metric(admin, &pacer, proxy, forged, 3.0);
    expect_nothing(&victim, Duration::from_millis(300));
}

/// A REGISTER of `user` from `phone` (`auth`: an Authorization line or nothing).
fn register_text(phone: &Phone, user: &str, call_id: &str, cseq: u32, auth: &str) -> String {
    let me = phone.addr;
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{call_id}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\nExpires: 60\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// Milliseconds from a REGISTER of `user` with a wrong password to its 401.
fn wrong_password_ms(phone: &Phone, proxy: SocketAddr, user: &str, call_id: &str) -> f64 {
    let mut seen = Vec::new();
    phone.send(proxy, &register_text(phone, user, call_id, 1, ""));
    let ch = phone.expect_response(401, "1 REGISTER", WAIT, &mut seen);
    let uri = format!("sip:{DOMAIN}");
    let creds = answer_challenge(
        &ch,
        "WWW-Authenticate",
        user,
        "not-the-password",
        "REGISTER",
        &uri,
    );
    let text = register_text(
        phone,
        user,
        call_id,
        2,
        &format!("Authorization: {creds}\r\n"),
    );
    let t0 = Instant::now();
    phone.send(proxy, &text);
    let again = phone.expect_final("2 REGISTER", WAIT, &mut seen);
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(again.code(), Some(401), "{}", again.text);
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn wrong_password_takes_as_long_for_unknown_as_for_known_users() {
    const DELAY_MS: u64 = 200;
    let scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec![SocketAddr::from(([127, 0, 0, 2], 9))],
        tune: Tune {
            failure_delay_ms: Some(DELAY_MS),
            // Ten failures from one address would ban it.
            guard_allow: vec!["127.0.0.1"],
            asterisk_lines: vec!["probe_interval_ms = 0".to_owned()],
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..5 {
        // Alternating, and a new unknown name each time (each one a database lookup).
        known.push(wrong_password_ms(&phone, proxy, "1001", &format!("k{i}")));
        unknown.push(wrong_password_ms(
            &phone,
            proxy,
            &format!("9{i}77"),
            &format!("u{i}"),
        ));
    }
    let (k, u) = (median(known.clone()), median(unknown.clone()));
    eprintln!("wrong password: known {known:?} (median {k:.1} ms), unknown {unknown:?} (median {u:.1} ms)");
    let floor = DELAY_MS as f64 * 0.95;
    assert!(
        k >= floor && u >= floor,
        "answered before the delay: {k:.1} / {u:.1} ms"
    );
    let ratio = k.max(u) / k.min(u);
    assert!(
        ratio <= 1.5,
        "known {k:.1} ms vs unknown {u:.1} ms: ratio {ratio:.2}"
    );
}

/// What an authenticated phone gets for MESSAGE, OPTIONS and SUBSCRIBE to `user`.
fn answers_for(phone: &Phone, proxy: SocketAddr, user: &str) -> Vec<u16> {
    let uri = format!("sip:{user}@{DOMAIN}");
    [
        ("MESSAGE", "Content-Type: text/plain\r\n"),
        ("OPTIONS", ""),
        // An event package Asterisk does not serve: it goes to the user's phones.
        ("SUBSCRIBE", "Event: ua-profile\r\nExpires: 60\r\n"),
    ]
    .into_iter()
    .map(|(method, extra)| {
        phone_request(
            phone,
            proxy,
            method,
            ("1001", password("1001")),
            &uri,
            extra,
            WAIT,
        )
        .code()
    })
    .collect()
}

#[test]
fn unknown_and_unregistered_users_get_the_same_answer_unless_configured() {
    for (setting, unregistered) in [(None, 404), (Some(480), 480)] {
        let scene = Scene::start(Setup {
            standin: false,
            extra_nodes: vec![SocketAddr::from(([127, 0, 0, 2], 9))],
            tune: Tune {
                unregistered_answer: setting,
                asterisk_lines: vec!["probe_interval_ms = 0".to_owned()],
                ..Tune::default()
            },
            ..Setup::default()
        });
        let proxy = scene.proxy.addr;
        let phone = Phone::bind(Ipv4Addr::LOCALHOST);
        // 2001 is in the credentials table but not registered; 9999 is nobody.
        assert_eq!(
            answers_for(&phone, proxy, "9999"),
            [404; 3],
            "unknown ({setting:?})"
        );
        assert_eq!(
            answers_for(&phone, proxy, "2001"),
            [unregistered; 3],
            "known, unregistered ({setting:?})"
        );
    }
}
