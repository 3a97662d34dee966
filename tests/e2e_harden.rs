//! End-to-end hardening tests (issues #14 and #16) against the real `sipfront` binary on
//! loopback: sipp's default digest uri (`[auth] uri_check`), the log line naming why an
//! authentication failed, and the other items of those issues (see each test).
//!
//! Needs sipp and `cargo build --workspace --bins`. Harness: `tests/support/`.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Proxy, ProxyOptions, Tune, DOMAIN};
use support::sipp::{write_csv, CsvPhone, SippCmd};
use support::standin::StandIn;
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);

/// A REGISTER of `user` from `phone` (CSeq `cseq`, Call-ID `call_id`), with `extra` lines.
fn register(phone: &Phone, user: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    let me = phone.addr;
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{call_id}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\n\
         Expires: 300\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// REGISTERs `user` answering the 401 with `pw` over digest uri `digest_uri`; returns the
/// final response and the Authorization line sent.
fn register_with_uri(
    proxy: SocketAddr,
    user: &str,
    pw: &str,
    digest_uri: &str,
    call_id: &str,
) -> (SipMsg, String) {
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let mut seen = Vec::new();
    phone.send(proxy, &register(&phone, user, call_id, 1, ""));
    let challenge = phone.expect_response(401, "1 REGISTER", WAIT, &mut seen);
    let creds = answer_challenge(
        &challenge,
        "WWW-Authenticate",
        user,
        pw,
        "REGISTER",
        digest_uri,
    );
    let auth = format!("Authorization: {creds}\r\n");
    phone.send(proxy, &register(&phone, user, call_id, 2, &auth));
    (phone.expect_final("2 REGISTER", WAIT, &mut seen), auth)
}

/// #16 item 4: sipp without `-auth_uri` answers the challenge over `uri="sip:HOST:PORT"` (the
/// address it sends to), not the Request-URI `sip:DOMAIN`. With the default `uri_check =
/// "host"` all 400 phones register at once, nothing fails and no source is banned (the guard
/// stays on, with a rate that lets 400 registrations a second through).
#[test]
fn sipp_default_digest_uri_registers_400_users() {
    let dir = tempfile::Builder::new()
        .prefix("sipfront-e2e-")
        .tempdir()
        .expect("temporary directory");
    let names: Vec<(String, String)> = (0..400)
        .map(|i| (format!("{}", 3000 + i), format!("pw{}", 3000 + i)))
        .collect();
    let users: Vec<(&str, &str)> = names
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let standin = StandIn::start(&dir.path().join("standin"), &users, &[]);
    let opts = ProxyOptions {
        nodes: vec![standin.sip],
        tune: Tune {
            rate_pps: Some(5000),
            rate_burst: Some(5000),
            log_level: Some("info"),
            ..Tune::default()
        },
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(dir.path(), &users, &opts);
    let phones: Vec<CsvPhone> = users
        .iter()
        .map(|(u, p)| CsvPhone {
            user: u,
            password: p,
            target: "-",
        })
        .collect();
    let csv = write_csv(dir.path(), "phones", &phones);
    let status = SippCmd::new("reg400", proxy.addr, "uac_register_auth.xml")
        .csv(csv)
        .quiet()
        .args(&["-m", "400", "-r", "200", "-l", "400"])
        .run(dir.path());
    let log = std::fs::read_to_string(dir.path().join("sipfront.err")).unwrap_or_default();
    let sipp_out = std::fs::read_to_string(dir.path().join("sipp-reg400.out")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp with its default digest uri: {status:?}\n{}\nsipfront log:\n{log}",
        sipp_out
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !log.contains("authentication failed"),
        "no refused credential:\n{log}"
    );
    standin.wait_stat("register", 400, WAIT);
}

/// #16 item 4: every refused credential is logged at info with its reason, and the line holds
/// no secret. `uri_check = "strict"` refuses a digest uri other than the Request-URI.
#[test]
fn refusals_are_logged_with_their_reason_and_no_secret() {
    let scene = Scene::start(Setup {
        tune: Tune {
            log_level: Some("info"),
            uri_check: Some("strict"),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let mut sent = Vec::new();
    let sipp_like = format!("sip:{proxy}");
    let (bad_uri, auth) = register_with_uri(proxy, "1001", password("1001"), &sipp_like, "r1");
    sent.push(auth);
    let (wrong_pw, auth) = register_with_uri(
        proxy,
        "2001",
        "not-the-pw-4417",
        &format!("sip:{DOMAIN}"),
        "r2",
    );
    sent.push(auth);
    let (unknown, auth) =
        register_with_uri(proxy, "7777", "guess-9921", &format!("sip:{DOMAIN}"), "r3");
    sent.push(auth);
    for (what, m) in [
        ("uri", &bad_uri),
        ("password", &wrong_pw),
        ("user", &unknown),
    ] {
        assert_eq!(m.code(), Some(401), "{what}: challenged again\n{}", m.text);
    }
    scene.wait_file("sipfront.err", "reason=\"unknown user\"", WAIT);
    let log = std::fs::read_to_string(scene.dir().join("sipfront.err")).expect("the log");
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    for (user, reason) in [
        ("1001", "uri mismatch"),
        ("2001", "wrong password"),
        ("7777", "unknown user"),
    ] {
        assert!(
            refusals.iter().any(|l| l.contains(" INFO ")
                && l.contains(&format!("user=\"{user}\""))
                && l.contains(&format!("reason=\"{reason}\""))),
            "an info line names {user}'s refusal as {reason:?}:\n{log}"
        );
    }
    let mut secrets = vec![
        password("1001").to_owned(),
        "not-the-pw-4417".to_owned(),
        "guess-9921".to_owned(),
    ];
    for a in &sent {
        for key in ["response=\"", "nonce=\"", "cnonce=\""] {
            if let Some((_, v)) = a.split_once(key) {
                secrets.push(v.split('"').next().unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(secrets.len(), 12, "{secrets:?}");
    for line in &refusals {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "{s:?} in {line}");
        }
        assert!(!line.contains("Digest"), "{line}");
    }
}
