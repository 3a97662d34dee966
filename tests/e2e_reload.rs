//! Live configuration reload against the real binary: `sipfront ctl reload` and SIGHUP
//! re-read the config file, apply what can change live (here: the Asterisk nodes, the log
//! level, the scanner list) and name what needs a restart; an invalid file changes nothing.
//!
//! Setup: a [`Scene`] without the stand-in; two UDP sockets on 127.0.0.2 play Asterisk
//! nodes A and B (the test answers their INVITEs itself), a raw phone on 127.0.0.3 calls
//! through the proxy with digest auth, and the admin API is on. The config file is
//! `DIR/sipfront.toml`, rewritten by the test between reloads.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use support::admin::{ctl, ctl_ok, free_admin_addr, metric};
use support::flows::phone_invite;
use support::phone::Phone;
use support::proxy::{Tune, DOMAIN};
use support::{password, Scene, Setup};

const WAIT: Duration = Duration::from_secs(10);

/// A phone call that Asterisk node `node` answers with 486: returns the node that got it.
fn call_reaches(scene: &Scene, nodes: &[&Phone], call: u16) -> SocketAddr {
    let proxy = scene.proxy.addr;
    let caller = thread::spawn(move || {
        let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
        let uri = format!("sip:600@{DOMAIN}");
        let out = phone_invite(&phone, proxy, "1001", password("1001"), &uri, WAIT);
        (out.code(), call)
    });
    let deadline = Instant::now() + WAIT;
    let mut got = None;
    'wait: while Instant::now() < deadline {
        for node in nodes {
            if let Some(m) = node.recv_until(Instant::now() + Duration::from_millis(50)) {
                if m.method() == Some("INVITE") {
                    node.send(m.from, &m.reply(486, "Busy Here", "ast", ""));
                    got = Some(node.addr);
                    break 'wait;
                }
            }
        }
    }
    let (code, _) = caller.join().expect("caller thread");
    let node = got.unwrap_or_else(|| panic!("no Asterisk node got call {call}"));
    assert_eq!(
        code, 486,
        "call {call}: Asterisk's answer reaches the phone"
    );
    node
}

/// The proxy with the admin API on, log level `level`, and `asterisk` as its only node.
fn start(asterisk: &Phone, level: &'static str) -> (Scene, SocketAddr) {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec![asterisk.addr],
        tune: Tune {
            admin: Some(admin),
            log_level: Some(level),
            ..Tune::default()
        },
        ..Setup::default()
    });
    (scene, admin)
}

fn edit_config(scene: &Scene, edit: impl FnOnce(String) -> String) {
    let path = scene.dir().join("sipfront.toml");
    let text = std::fs::read_to_string(&path).expect("read the config");
    std::fs::write(&path, edit(text)).expect("write the config");
}

#[test]
fn reload_applies_live_settings_and_names_what_needs_a_restart() {
    let a = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let b = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let (scene, admin) = start(&a, "warn");
    assert_eq!(call_reaches(&scene, &[&a, &b], 1), a.addr);

    // Node A is replaced by B, the log level raised, and the worker count changed (which
    // only a restart can do).
    edit_config(&scene, |t| {
        t.replace(&a.addr.to_string(), &b.addr.to_string())
            .replace("level = \"warn\"", "level = \"info\"")
            .replace("workers = 2", "workers = 3")
    });
    let out = ctl_ok(admin, &["reload"]);
    let applied = out
        .lines()
        .find(|l| l.starts_with("applied:"))
        .unwrap_or_else(|| panic!("no applied line in {out}"));
    assert!(applied.contains("asterisk.nodes"), "{out}");
    assert!(applied.contains("log.level"), "{out}");
    let restart = out
        .lines()
        .find(|l| l.starts_with("need a restart"))
        .unwrap_or_else(|| panic!("no restart line in {out}"));
    assert!(restart.contains("listen.workers"), "{out}");
    assert!(out.contains("credentials reloaded: 3 users"), "{out}");
    // The new level is in force: the reload's own info line is logged.
    scene.wait_file("sipfront.err", "configuration reloaded", WAIT);

    for call in 2..4 {
        assert_eq!(
            call_reaches(&scene, &[&a, &b], call),
            b.addr,
            "after reload"
        );
    }

    // An invalid file is refused with the key named, and nothing changes.
    edit_config(&scene, |t| t.replace(&format!("\"{}\"", b.addr), ""));
    let out = ctl(admin, &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("asterisk.nodes"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(
        call_reaches(&scene, &[&a, &b], 4),
        b.addr,
        "after a refused reload"
    );
    assert_eq!(
        metric(admin, "sipfront_config_reloads_total{result=\"failed\"}"),
        1.0
    );
}

#[test]
fn sighup_reloads_the_scanner_list() {
    let a = Phone::bind(Ipv4Addr::new(127, 0, 0, 2));
    let (mut scene, admin) = start(&a, "info");
    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let proxy = scene.proxy.addr;
    let options = |i: u32| {
        format!(
            "OPTIONS sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKhup{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:x@{me}>;tag=h{i}\r\nTo: <sip:{p}>\r\n\
             Call-ID: hup{i}@{me}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: evil-dialer 2.0\r\n\
             Content-Length: 0\r\n\r\n",
            p = proxy,
            me = phone.addr
        )
    };
    phone.send(scene.proxy.addr, &options(1));
    let ok = phone.expect_final("1 OPTIONS", WAIT, &mut Vec::new());
    assert_eq!(ok.code(), Some(200), "not a known scanner yet");

    edit_config(&scene, |t| {
        format!("{t}\n[guard]\nscanner_user_agents = [\"evil-dialer\"]\n")
    });
    scene.proxy.signal(libc::SIGHUP);
    scene.wait_file("sipfront.err", "guard.scanner_user_agents", WAIT);

    phone.send(scene.proxy.addr, &options(2));
    assert!(
        phone
            .recv_until(Instant::now() + Duration::from_secs(1))
            .is_none(),
        "a scanner gets no answer after the reload"
    );
    assert_eq!(
        metric(admin, "sipfront_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert!(metric(admin, "sipfront_dropped_total{reason=\"scanner\"}") >= 1.0);
}
