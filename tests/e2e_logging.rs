//! The proxy's log at its most verbose level never holds a phone's password, a digest
//! response or a whole Authorization header: a phone registers with a wrong password and then
//! the right one, and calls, against the real binary with `[log] level = "trace"`; then the
//! log (`DIR/sipfront.err`) is searched for every secret the phone sent.
//!
//! Setup: a [`Scene`] with the Asterisk stand-in (it answers the REGISTER forwarded to it and
//! the call); the phone is a raw UDP socket on 127.0.0.3.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::flows::{phone_invite, phone_register};
use support::phone::Phone;
use support::proxy::{Tune, DOMAIN};
use support::{password, Scene, Setup};

#[test]
fn trace_log_holds_no_password_nor_authorization() {
    let scene = Scene::start(Setup {
        tune: Tune {
            log_level: Some("trace"),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let wrong = "not-the-pw-7731";
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let bad = phone_register(&phone, proxy, "1001", wrong, 300, "");
    assert!(
        matches!(bad.code(), 401 | 403),
        "a wrong password is refused: {}",
        bad.code()
    );
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let ok = phone_register(&phone, proxy, "1001", password("1001"), 300, "");
    assert_eq!(ok.code(), 200);
    let caller = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let uri = format!("sip:600@{DOMAIN}");
    let call = phone_invite(
        &caller,
        proxy,
        "1001",
        password("1001"),
        &uri,
        Duration::from_secs(10),
    );
    assert!(call.code() >= 200, "the call got a final answer");

    // What the phones sent that must stay secret: passwords and digest responses.
    let mut secrets = vec![wrong.to_owned(), password("1001").to_owned()];
    for sent in [&bad.sent, &ok.sent, &call.sent] {
        for line in sent.lines() {
            if let Some((_, v)) = line.split_once("response=\"") {
                secrets.push(v.split('"').next().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(
        secrets.len() >= 5,
        "found the digest responses: {secrets:?}"
    );
    let log = std::fs::read_to_string(scene.dir().join("sipfront.err")).expect("the log");
    assert!(
        log.contains("authentication failed") && log.contains("user=\"1001\""),
        "the failed attempt is logged (user and source, nothing secret):\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no terminal colour codes in a log file"
    );
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "{s:?} leaked into the log");
    }
    for header in [
        "Authorization: Digest",
        "Proxy-Authorization",
        "username=\"1001\"",
    ] {
        assert!(!log.contains(header), "{header:?} leaked into the log");
    }
}
