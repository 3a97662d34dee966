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

/// `[log] format = "json"`: every line the proxy writes to stderr is one JSON object with
/// a level and a message; and `check-config` refuses a level that is not one (`verbose`
/// used to pass and then silence every log line), naming `log.level`.
#[test]
fn json_log_lines_and_level_validation() {
    let scene = Scene::start(Setup {
        tune: Tune {
            log_level: Some("info"),
            log_format: Some("json"),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let log = std::fs::read_to_string(scene.dir().join("sipfront.err")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged at info");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("credentials loaded"), "{log}");

    let config = scene.dir().join("bad-level.toml");
    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n").unwrap();
    let out = std::process::Command::new(support::procs::sipfront_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log.level") && err.contains("verbose"),
        "{err}"
    );
}
