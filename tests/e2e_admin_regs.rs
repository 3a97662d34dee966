//! Registrations through the admin API against the REAL `sipfront` (2 workers) and the
//! Asterisk stand-in: `sipfront ctl regs --all` lists every registered user (and
//! `GET /v1/registrations?all=1` pages through them), `sipfront ctl unregister USER` makes
//! Asterisk get the Expires: 0 REGISTER a binding expiry would send, removing one of two
//! bindings does not, and a phone registering again afterwards is forwarded as new.
//!
//! Phones are plain UDP sockets on loopback doing MD5 digest ([`Registrant`]); the stand-in
//! records every REGISTER it receives in its event log, which the test waits on (inotify,
//! bounded deadlines). Needs `cargo build --workspace --bins` (the stand-in binary).

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::admin::{ctl_ok, free_admin_addr, http_get};
use support::digest::Registrant;
use support::phone::Phone;
use support::proxy::Tune;
use support::{password, Scene, Setup};

/// Longest wait for a forwarded REGISTER (Expires: 0 is sent by the next once-a-second
/// expiry sweep of a worker, so it normally lands within about a second).
const FORWARD_WAIT: Duration = Duration::from_secs(5);

fn str_field<'e>(e: &'e Value, key: &str) -> &'e str {
    e.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The value of header `name` in a stand-in `register` event.
fn event_header<'e>(e: &'e Value, name: &str) -> Option<&'e str> {
    e.get("headers")?
        .as_array()?
        .iter()
        .find(|h| h.get(0).and_then(Value::as_str) == Some(name))?
        .get(1)?
        .as_str()
}

/// A stand-in `register` event for `user` with Expires `n`.
fn is_register(e: &Value, user: &str, n: u64) -> bool {
    str_field(e, "event") == "register"
        && str_field(e, "user") == user
        && e.get("expires").and_then(Value::as_u64) == Some(n)
}

#[test]
fn ctl_unregister_tells_asterisk_and_regs_all_lists_everyone() {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let s = scene.standin();

    // 1001 with one binding, 2001 with two (two sockets), 2002 with one.
    let (p1001, p2001a, p2001b, p2002) = (
        Phone::bind(Ipv4Addr::LOCALHOST),
        Phone::bind(Ipv4Addr::LOCALHOST),
        Phone::bind(Ipv4Addr::LOCALHOST),
        Phone::bind(Ipv4Addr::LOCALHOST),
    );
    let mut r1001 = Registrant::new(&p1001, proxy, "1001", password("1001"));
    let mut r2001a = Registrant::new(&p2001a, proxy, "2001", password("2001"));
    let mut r2001b = Registrant::new(&p2001b, proxy, "2001", password("2001"));
    let mut r2002 = Registrant::new(&p2002, proxy, "2002", password("2002"));
    for r in [&mut r1001, &mut r2001a, &mut r2001b, &mut r2002] {
        let reg = r.register(600);
        assert_eq!(reg.code(), 200, "{}: {}", r.user, reg.last.text);
    }
    let first_1001 = s.wait_event("register", FORWARD_WAIT, |e| is_register(e, "1001", 600));
    for user in ["2001", "2002"] {
        s.wait_event("register", FORWARD_WAIT, |e| is_register(e, user, 600));
    }
    let contact = |p: &Phone, user: &str| format!("sip:{user}@{}", p.addr);

    // `ctl regs --all`: one row per binding, every user.
    let table = ctl_ok(admin, &["regs", "--all"]);
    println!("sipfront ctl regs --all:\n{table}");
    for (p, user) in [
        (&p1001, "1001"),
        (&p2001a, "2001"),
        (&p2001b, "2001"),
        (&p2002, "2002"),
    ] {
        let uri = contact(p, user);
        let row = table
            .lines()
            .find(|l| l.contains(&format!("{uri} ")))
            .unwrap_or_else(|| panic!("no row for {uri} in\n{table}"));
        assert!(row.starts_with(&format!("{user} ")), "{row}");
        assert!(
            row.contains(&p.addr.to_string()) && row.contains(" s "),
            "{row}"
        );
    }
    assert!(table.contains("3 user(s), 4 binding(s)"), "{table}");

    // The API pages: one user per page, each exactly once, then `next` is null.
    let mut users = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let path = format!("/v1/registrations?all=1&limit=1&after={after}");
        let (status, body) = http_get(admin, &path);
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON page");
        for r in v["registrations"].as_array().expect("registrations") {
            users.push(str_field(r, "user").to_owned());
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    users.sort();
    assert_eq!(users, ["1001", "2001", "2002"]);

    // One of 2001's two bindings: 2001 stays registered, Asterisk is not told.
    let out = ctl_ok(admin, &["unregister", "2001", &contact(&p2001a, "2001")]);
    assert!(
        out.contains("removed 1 binding(s)") && out.contains("1 left"),
        "{out}"
    );
    assert!(!out.contains("Expires: 0"), "{out}");
    // Then all of 2002: its Expires: 0 comes from the same queue and sweep, so had the
    // first removal queued 2001, 2001's Expires: 0 would have been sent first.
    let t0 = Instant::now();
    let out = ctl_ok(admin, &["unregister", "2002"]);
    assert!(out.contains("(Asterisk is told: Expires: 0)"), "{out}");
    let gone = s.wait_event("register", FORWARD_WAIT, |e| is_register(e, "2002", 0));
    eprintln!("2002 unregistered at Asterisk {:?} after ctl", t0.elapsed());
    assert_eq!(event_header(&gone, "Expires"), Some("0"), "{gone}");
    assert_eq!(s.reg("2002"), Value::Null, "Asterisk forgot 2002");
    let wrong: Vec<Value> = s
        .events()
        .into_iter()
        .filter(|e| is_register(e, "2001", 0))
        .collect();
    assert!(wrong.is_empty(), "2001 still has a binding: {wrong:?}");
    assert_ne!(s.reg("2001"), Value::Null, "Asterisk still holds 2001");

    // All of 1001: Expires: 0 with the Call-ID Asterisk knows 1001 by.
    let t0 = Instant::now();
    ctl_ok(admin, &["unregister", "1001"]);
    let gone = s.wait_event("register", FORWARD_WAIT, |e| is_register(e, "1001", 0));
    eprintln!("1001 unregistered at Asterisk {:?} after ctl", t0.elapsed());
    let call_id = event_header(&first_1001, "Call-ID")
        .expect("Call-ID")
        .to_owned();
    assert_eq!(event_header(&gone, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(s.reg("1001"), Value::Null, "Asterisk forgot 1001");

    // The phone registers again: forwarded as a new registration (new Call-ID).
    let reg = r1001.register(600);
    assert_eq!(reg.code(), 200, "{}", reg.last.text);
    s.wait_event("register", FORWARD_WAIT, |e| {
        is_register(e, "1001", 600) && event_header(e, "Call-ID") != Some(call_id.as_str())
    });
    assert_ne!(s.reg("1001"), Value::Null, "Asterisk holds 1001 again");

    let table = ctl_ok(admin, &["regs", "--all"]);
    assert!(table.contains("2 user(s), 2 binding(s)"), "{table}");
    assert!(
        table.contains(&contact(&p1001, "1001")) && !table.contains("2002"),
        "{table}"
    );
}
