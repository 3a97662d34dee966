//! End-to-end digest authentication tests (issue 4) with the REAL sipfront binary, the
//! Asterisk stand-in, plain-socket phones and a real MariaDB:
//!
//! - `sha256_registration` / `sha512_256_registration`: the 401 carries one challenge per
//!   configured algorithm, strongest first; a phone answering with SHA-256 (or SHA-512-256,
//!   computed here with the `sha2` crate) gets 200 and is forwarded to Asterisk; MD5 still
//!   works; a wrong password is challenged again.
//! - `mariadb_added_changed_deleted_users`: a user inserted after the proxy started
//!   authenticates on the first try (cache miss → DB pool → the parked request resumes); a
//!   password changed in the table takes effect after SIGHUP (credential reload); a deleted
//!   user is refused after the next reload.
//! - `mariadb_outage_keeps_cached_users_working`: the proxy's own MariaDB user loses its
//!   privileges and connections while a cached phone keeps registering: the cached user keeps
//!   getting 200, an uncached one 503 (never 401/403); after GRANT the uncached one works.
//!
//! MariaDB: `SIPFRONT_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`); the tests fail
//! when it is unreachable unless `SIPFRONT_SKIP_MYSQL=1`. Needs
//! `cargo build --workspace --bins`; the harness is in `tests/support/`.

mod support;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::digest::{offered, Alg, Registrant, Registration};
use support::mariadb::SippeersDb;
use support::phone::Phone;
use support::proxy::Tune;
use support::{password, Scene, Setup};

/// Attempts while waiting for a reload or a reconnection to take effect.
const RETRIES: u32 = 100;

fn scene_with_algorithms(algorithms: Vec<&'static str>) -> Scene {
    Scene::start(Setup {
        tune: Tune {
            algorithms,
            guard_allow: vec!["127.0.0.0/8"],
            ..Tune::default()
        },
        ..Setup::default()
    })
}

/// Registers `user` once per algorithm of `algs` (each from its own socket) and checks the
/// challenges offered `want_offer` in order.
fn register_with_each(scene: &Scene, user: &str, algs: &[Alg], want_offer: &[&str]) {
    let proxy = scene.proxy.addr;
    for &alg in algs {
        let phone = Phone::bind(Ipv4Addr::LOCALHOST);
        let r = Registrant::new(&phone, proxy, user, password(user)).register_as(3600, alg, None);
        assert_eq!(r.challenge.code(), Some(401), "{}", r.challenge.text);
        assert_eq!(
            offered(&r.challenge, "WWW-Authenticate"),
            want_offer,
            "challenges, strongest first:\n{}",
            r.challenge.text
        );
        assert_eq!(
            r.code(),
            200,
            "{} registration: {}",
            alg.name(),
            r.last.text
        );
    }
    scene.standin().wait_registered(user);
}

#[test]
fn sha256_registration() {
    let scene = scene_with_algorithms(vec!["SHA-256", "MD5"]);
    register_with_each(
        &scene,
        "1001",
        &[Alg::Sha256, Alg::Md5],
        &["SHA-256", "MD5"],
    );
    // A wrong password under SHA-256 is challenged again, never accepted.
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let r = Registrant::new(&phone, scene.proxy.addr, "2001", password("2001")).register_as(
        3600,
        Alg::Sha256,
        Some("not-the-password"),
    );
    assert_eq!(r.code(), 401, "{}", r.last.text);
    assert_eq!(
        scene.standin().reg("2001"),
        Value::Null,
        "nothing forwarded"
    );
}

#[test]
fn sha512_256_registration() {
    let scene = scene_with_algorithms(vec!["SHA-512-256", "SHA-256", "MD5"]);
    register_with_each(
        &scene,
        "2002",
        &[Alg::Sha512_256, Alg::Sha256, Alg::Md5],
        &["SHA-512-256", "SHA-256", "MD5"],
    );
}

/// Waits on `idle` (a socket nobody writes to) for `ms`: the pause between two retries.
fn pause(idle: &Phone, ms: u64) {
    let _ = idle.recv_until(Instant::now() + Duration::from_millis(ms));
}

/// Registers until `done(registration)` holds, at most [`RETRIES`] times, pausing 100 ms
/// between attempts; returns the attempts used and the last registration.
fn register_until(
    reg: &mut Registrant,
    password: Option<&str>,
    done: impl Fn(&Registration) -> bool,
) -> (u32, Registration) {
    let idle = Phone::bind(Ipv4Addr::LOCALHOST);
    let mut attempt = 1;
    loop {
        let r = reg.register_as(3600, Alg::Md5, password);
        if done(&r) || attempt >= RETRIES {
            return (attempt, r);
        }
        attempt += 1;
        pause(&idle, 100);
    }
}

fn mariadb_scene(url: String, refresh_secs: u32) -> Scene {
    Scene::start(Setup {
        tune: Tune {
            credentials_url: Some(url),
            refresh_secs: Some(refresh_secs),
            reconnect_max_ms: Some(300),
            // Refused attempts must not get the test's own address banned.
            guard_allow: vec!["127.0.0.0/8"],
            ..Tune::default()
        },
        ..Setup::default()
    })
}

#[test]
fn mariadb_added_changed_deleted_users() {
    let Some(mut db) = SippeersDb::create() else {
        return;
    };
    db.insert_users([("5001", "old-5001")]);
    // No periodic refresh: only SIGHUP reloads.
    let mut scene = mariadb_scene(db.url(None), 0);
    let proxy = scene.proxy.addr;
    let (p1, p2) = (
        Phone::bind(Ipv4Addr::LOCALHOST),
        Phone::bind(Ipv4Addr::LOCALHOST),
    );
    let mut alice = Registrant::new(&p1, proxy, "5001", "old-5001");
    assert_eq!(alice.register(3600).code(), 200, "a preloaded user");

    // Added after the start: found by a miss lookup, on the first try.
    db.insert_users([("5002", "pw-5002")]);
    let mut bob = Registrant::new(&p2, proxy, "5002", "pw-5002");
    let r = bob.register(3600);
    assert_eq!(r.code(), 200, "a user added after start: {}", r.last.text);
    scene.standin().wait_registered("5002");

    // A changed password: the cached one holds until the reload.
    db.set_secret("5001", "new-5001");
    assert_eq!(alice.register(3600).code(), 200, "cached until the reload");
    scene.proxy.signal(libc::SIGHUP);
    let t0 = Instant::now();
    let (tries, r) = register_until(&mut alice, Some("new-5001"), |r| r.code() == 200);
    assert_eq!(r.code(), 200, "new password after SIGHUP: {}", r.last.text);
    eprintln!(
        "new password accepted after {tries} attempt(s), {:?}",
        t0.elapsed()
    );
    let r = alice.register_as(3600, Alg::Md5, Some("old-5001"));
    assert_eq!(r.code(), 401, "old password refused: {}", r.last.text);

    // A deleted user: refused (challenged again) after the reload.
    db.delete_user("5002");
    scene.proxy.signal(libc::SIGHUP);
    let (tries, r) = register_until(&mut bob, None, |r| r.code() != 200);
    assert_eq!(r.code(), 401, "deleted user after SIGHUP: {}", r.last.text);
    eprintln!("deleted user refused after {tries} attempt(s)");
    let r = bob.register(3600);
    assert_eq!(r.code(), 401, "still refused: {}", r.last.text);
}

/// The proxy's log (tracing writes to stdout) and stderr.
fn proxy_log(scene: &Scene) -> String {
    ["sipfront.out", "sipfront.err"]
        .iter()
        .map(|f| std::fs::read_to_string(scene.dir().join(f)).unwrap_or_default())
        .collect()
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn mariadb_outage_keeps_cached_users_working() {
    let Some(mut db) = SippeersDb::create() else {
        return;
    };
    db.insert_users([("6001", "pw-6001")]);
    let login_pw = "sf-e2e-pw";
    let login = db.create_login(login_pw);
    // Refreshed every second: refreshes fail during the outage and must keep the cache.
    let scene = mariadb_scene(db.url(Some((&login, login_pw))), 1);
    let proxy = scene.proxy.addr;
    let cached_phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let mut cached = Registrant::new(&cached_phone, proxy, "6001", "pw-6001");
    assert_eq!(cached.register(3600).code(), 200, "before the outage");

    let stop = AtomicBool::new(false);
    let load = std::thread::scope(|scope| {
        // The load: the cached phone registers in a loop, before, during and after.
        let worker = scope.spawn(|| {
            let idle = Phone::bind(Ipv4Addr::LOCALHOST);
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) && codes.len() < 10_000 {
                codes.push(cached.register(3600).code());
                // About 100 registrations per second: a load, not a CPU hog.
                pause(&idle, 10);
            }
            codes
        });
        let _stop = StopOnDrop(&stop);

        db.revoke_and_kill(&login);
        // Added while the database is away for the proxy: not in its cache.
        db.insert_users([("6002", "pw-6002")]);
        let t_outage = Instant::now();
        let new_phone = Phone::bind(Ipv4Addr::LOCALHOST);
        let mut uncached = Registrant::new(&new_phone, proxy, "6002", "pw-6002");
        // Until a periodic refresh has failed too (the proxy logs it), at most 300 attempts
        // 25 ms apart.
        let refresh_failed = || proxy_log(&scene).contains("credential refresh failed");
        let idle = Phone::bind(Ipv4Addr::LOCALHOST);
        let mut attempts = 0;
        while attempts < 300 && (attempts < 3 || !refresh_failed()) {
            if attempts > 0 {
                pause(&idle, 25);
            }
            attempts += 1;
            let r = uncached.register(3600);
            assert_eq!(
                r.code(),
                503,
                "uncached user while the DB is away: {}",
                r.last.text
            );
            assert!(
                r.last.header("Retry-After").is_some(),
                "503 with Retry-After: {}",
                r.last.text
            );
        }
        eprintln!(
            "outage: {attempts} uncached attempts, all 503, over {:?}",
            t_outage.elapsed()
        );
        assert!(refresh_failed(), "a refresh failed during the outage");

        db.grant(&login);
        let t_back = Instant::now();
        let (tries, r) = register_until(&mut uncached, None, |r| {
            assert!(
                matches!(r.code(), 200 | 503),
                "only 503 until the DB is back, then 200: {}",
                r.last.text
            );
            r.code() == 200
        });
        assert_eq!(r.code(), 200, "uncached user after GRANT: {}", r.last.text);
        eprintln!(
            "DB back: the uncached user registered after {tries} attempt(s), {:?}",
            t_back.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("the load thread")
    });
    let ok = load.iter().filter(|&&c| c == 200).count();
    eprintln!(
        "cached user: {} registrations during the run, {ok} × 200",
        load.len()
    );
    assert!(load.len() >= 5, "the load ran: {load:?}");
    assert!(
        load.iter().all(|&c| c == 200),
        "the cached user always got 200: {load:?}"
    );
    scene.standin().wait_registered("6002");
    assert!(
        !proxy_log(&scene).contains(login_pw),
        "the DB password leaked into the log"
    );
}
