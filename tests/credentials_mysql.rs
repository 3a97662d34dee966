//! Credential sources against a real MariaDB/MySQL (URL from `SIPFRONT_TEST_MYSQL_URL`,
//! default `mysql://root@127.0.0.1:3306`). Each test creates and drops its own uniquely named
//! database; the outage test uses its own MariaDB user whose privileges it revokes (and whose
//! connections it kills) — the shared server is never stopped. Fails when the server is
//! unreachable unless `SIPFRONT_SKIP_MYSQL=1`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use sipfront::auth::hash::ha1;
use sipfront::auth::Credential;
use sipfront::auth::{Algorithm, AuthConfig, Authenticator, DigestInput, Verdict};
use sipfront::db::{
    CredentialService, CredentialsConfig, DbError, Lookup, LookupDone, Schema, WakeFn,
};

mod support;

use support::mariadb::TestDb;

const REALM: &str = "example.com";
const WAIT: Duration = Duration::from_secs(15);

/// The credentials configuration for `db` with `schema` (no periodic refresh).
fn cfg(db: &TestDb, schema: Schema) -> CredentialsConfig {
    CredentialsConfig {
        url: db.url(None),
        schema,
        refresh_secs: 0,
        ..CredentialsConfig::default()
    }
}

const SIPPEERS: &str = "CREATE TABLE sippeers (id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(40) NOT NULL UNIQUE, host VARCHAR(40) DEFAULT 'dynamic', type ENUM('friend','user','peer'),
    context VARCHAR(40), secret VARCHAR(40), md5secret VARCHAR(40), sippasswd VARCHAR(80),
    ipaddr VARCHAR(45), port INT, regseconds INT, useragent VARCHAR(255))";
const PS_AUTHS: &str = "CREATE TABLE ps_auths (id VARCHAR(40) NOT NULL PRIMARY KEY,
    auth_type ENUM('md5','userpass','google_oauth','digest'), nonce_lifetime INT,
    md5_cred VARCHAR(40), password VARCHAR(80), realm VARCHAR(40), username VARCHAR(40),
    refresh_token VARCHAR(255), oauth_clientid VARCHAR(255), oauth_secret VARCHAR(255),
    password_digest VARCHAR(1024))";

fn plain(user: &str, pw: &str) -> Credential {
    Credential::from_plain(user, REALM, pw, false)
}

fn found(l: Lookup) -> Arc<Credential> {
    match l {
        Lookup::Found(c) => c,
        other => panic!("expected Found, got {other:?}"),
    }
}

fn waker() -> WakeFn {
    Arc::new(|| {})
}

fn recv(rx: &Receiver<LookupDone>) -> LookupDone {
    rx.recv_timeout(WAIT).expect("LookupDone in time")
}

#[test]
fn mysql_sippeers_and_sipusers_presets() {
    let Some(mut db) = TestDb::with_ddl(&format!(
        "{SIPPEERS}; {}",
        SIPPEERS.replace("sippeers", "sipusers")
    )) else {
        return;
    };
    let md5 = ha1(Algorithm::Md5, "bob", REALM, "bobpw");
    db.exec(&format!(
        "INSERT INTO sippeers (name, type, secret, md5secret) VALUES ('alice', 'friend', 'alicepw', NULL),
         ('bob', 'friend', '', '{}'), ('carol', 'peer', NULL, NULL)",
        md5.as_str()
    ));
    db.exec("INSERT INTO sipusers (name, secret, sippasswd) VALUES ('tut', '', 'tutpw')");
    let (cache, _p, _r) =
        CredentialService::start(&cfg(&db, Schema::Sippeers), REALM).expect("start");
    assert_eq!(*found(cache.lookup("alice", 0)), plain("alice", "alicepw"));
    assert_eq!(
        found(cache.lookup("bob", 0)).ha1_hex(Algorithm::Md5),
        Some(md5)
    );
    assert!(matches!(cache.lookup("carol", 0), Lookup::Miss));
    let cfg = CredentialsConfig {
        password_column: Some("sippasswd".into()),
        ..cfg(&db, Schema::Sipusers)
    };
    let (cache, _p, _r) = CredentialService::start(&cfg, REALM).expect("start sipusers");
    assert_eq!(*found(cache.lookup("tut", 0)), plain("tut", "tutpw"));
}

#[test]
fn mysql_ps_auths_preset() {
    let Some(mut db) = TestDb::with_ddl(PS_AUTHS) else {
        return;
    };
    let md5 = ha1(Algorithm::Md5, "m", REALM, "mpw");
    let sha = ha1(Algorithm::Sha512_256, "d", REALM, "dpw");
    db.exec(&format!(
        "INSERT INTO ps_auths (id, auth_type, username, password, md5_cred, realm, password_digest) VALUES
         ('u', 'userpass', 'u', 'upw', NULL, NULL, NULL),
         ('m', 'md5', 'm', NULL, '{}', '{REALM}', NULL),
         ('d', 'digest', 'd', NULL, NULL, '{REALM}', 'SHA-512-256:{}'),
         ('o', 'google_oauth', 'o', 'x', NULL, NULL, NULL)",
        md5.as_str(),
        sha.as_str()
    ));
    let (cache, _p, _r) =
        CredentialService::start(&cfg(&db, Schema::PsAuths), REALM).expect("start");
    assert_eq!(*found(cache.lookup("u", 0)), plain("u", "upw"));
    assert_eq!(
        found(cache.lookup("m", 0)).ha1_hex(Algorithm::Md5),
        Some(md5)
    );
    assert_eq!(
        found(cache.lookup("d", 0)).ha1_hex(Algorithm::Sha512_256),
        Some(sha)
    );
    assert!(matches!(cache.lookup("o", 0), Lookup::Miss));
    assert_eq!(cache.len(), 3);
}

#[test]
fn mysql_unix_socket_url() {
    let Some(mut db) = TestDb::with_ddl(SIPPEERS) else {
        return;
    };
    let sock = "/run/mysqld/mysqld.sock";
    if std::env::var("SIPFRONT_TEST_MYSQL_URL").is_ok() && !std::path::Path::new(sock).exists() {
        return; // a remote test server: no local socket to try
    }
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('s', 'spw')");
    let user = db.opts.get_user().unwrap_or("root").to_string();
    let cfg = CredentialsConfig {
        url: format!("mysql://{user}@localhost/{}?socket={sock}", db.name),
        ..cfg(&db, Schema::Sippeers)
    };
    let (cache, _p, _r) = CredentialService::start(&cfg, REALM).expect("start over the socket");
    assert_eq!(*found(cache.lookup("s", 0)), plain("s", "spw"));
}

#[test]
fn mysql_refresh_and_miss_lookups() {
    let Some(mut db) = TestDb::with_ddl(SIPPEERS) else {
        return;
    };
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('a', 'one'), ('b', 'bpw')");
    let (cache, pool, refresh) =
        CredentialService::start(&cfg(&db, Schema::Sippeers), REALM).expect("start");
    db.exec("UPDATE sippeers SET secret = 'two' WHERE name = 'a'");
    db.exec("DELETE FROM sippeers WHERE name = 'b'");
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('late', 'lpw'), ('Case', 'cpw')");
    // found by a miss lookup before any refresh
    let (tx, rx) = unbounded();
    pool.request("late", 1, &tx, &waker()).expect("queued");
    let d = recv(&rx);
    assert_eq!(*d.result.expect("ok").expect("found"), plain("late", "lpw"));
    assert_eq!(*found(cache.lookup("late", 0)), plain("late", "lpw"));
    // case-insensitive collation does not make 'case' match 'Case'
    pool.request("case", 2, &tx, &waker()).expect("queued");
    assert!(recv(&rx).result.expect("ok").is_none());
    let stats = refresh.refresh_now(WAIT).expect("refresh");
    assert_eq!(stats.removed, 1);
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "two"));
    assert!(matches!(cache.lookup("b", 0), Lookup::Miss));
    pool.request("b", 3, &tx, &waker()).expect("queued");
    assert!(
        recv(&rx).result.expect("ok").is_none(),
        "deleted user refused"
    );
    assert!(matches!(
        cache.lookup("b", sipfront::db::system_now_ms()),
        Lookup::Unknown
    ));
}

#[test]
fn mysql_ten_thousand_users_preloaded() {
    let Some(mut db) = TestDb::with_ddl(SIPPEERS) else {
        return;
    };
    for chunk in 0..10 {
        let values: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| format!("('u{i}', 'pw{i}')"))
            .collect();
        db.exec(&format!(
            "INSERT INTO sippeers (name, secret) VALUES {}",
            values.join(",")
        ));
    }
    let (cache, _p, _r) =
        CredentialService::start(&cfg(&db, Schema::Sippeers), REALM).expect("start");
    assert_eq!(cache.len(), 10_000);
    assert_eq!(*found(cache.lookup("u9999", 0)), plain("u9999", "pw9999"));
}

/// Builds a valid digest response for a cached user (to keep "load" running during the outage).
fn verify_once(a: &Authenticator, cred: &Credential, now: u64, nc: u32) -> Verdict {
    let src = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut ch = Vec::new();
    a.write_challenge(&mut ch, false, false, now, src);
    let text = String::from_utf8(ch).expect("utf8");
    let value = text.split_once(": ").expect("header").1.trim_end();
    let parsed = sipfront::auth::parse_challenge(value).expect("parse");
    let nonce = parsed.nonce.raw;
    let ha1 = ha1(Algorithm::Md5, "a", REALM, "apw");
    let ha2 = sipfront::auth::hash::ha2(Algorithm::Md5, "REGISTER", "sip:example.com");
    let nc_text = format!("{nc:08x}");
    let q = sipfront::auth::hash::QopAuth {
        nc: &nc_text,
        cnonce: "c",
    };
    let resp = sipfront::auth::hash::response(Algorithm::Md5, &ha1, nonce, Some(q), &ha2);
    let input = DigestInput {
        username: "a",
        realm: REALM,
        nonce,
        uri: "sip:example.com",
        response: resp.as_str(),
        cnonce: Some("c"),
        nc: Some(&nc_text),
        qop: Some("auth"),
        ..DigestInput::default()
    };
    a.verify(&input, "REGISTER", "sip:example.com", cred, now, src)
}

#[test]
fn mysql_outage_cached_users_keep_working_misses_error_then_recovery() {
    let Some(mut db) = TestDb::with_ddl(SIPPEERS) else {
        return;
    };
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('a', 'apw')");
    let user = db.create_login("Sft-pw-1");
    let cfg = CredentialsConfig {
        url: db.url(Some((&user, "Sft-pw-1"))),
        pool_size: 2,
        reconnect_max_ms: 1,
        ..cfg(&db, Schema::Sippeers)
    };
    let (cache, pool, refresh) = CredentialService::start(&cfg, REALM).expect("start");
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('c', 'cpw'), ('d', 'dpw')");

    // Load: a thread authenticating the cached user for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (cache, stop, ok, bad) = (cache.clone(), stop.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || {
            let a = Authenticator::new(&AuthConfig::default(), REALM).expect("auth");
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut now = 1_700_000_000_000u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                now += 1;
                let v = match cache.lookup("a", now) {
                    Lookup::Found(c) => verify_once(&a, &c, now, 1),
                    _ => Verdict::BadNonce,
                };
                if v == Verdict::Ok { &ok } else { &bad }.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    db.revoke_and_kill(&user);
    let (tx, rx) = unbounded();
    pool.request("c", 1, &tx, &waker()).expect("queued");
    let d = recv(&rx);
    assert!(
        matches!(
            d.result,
            Err(DbError::Mysql(_) | DbError::Unavailable { .. })
        ),
        "a miss during the outage is a DB error, not an unknown user: {:?}",
        d.result
    );
    assert!(!matches!(
        cache.lookup("c", sipfront::db::system_now_ms()),
        Lookup::Unknown
    ));
    assert!(
        refresh.refresh_now(WAIT).is_err(),
        "refresh fails during the outage"
    );
    assert!(
        matches!(cache.lookup("a", 0), Lookup::Found(_)),
        "cached user kept"
    );

    db.grant(&user);
    // Recovery: the pool reconnects (backoff capped at 1 ms here); bounded retries.
    let deadline = Instant::now() + WAIT;
    let mut attempts = 0;
    let recovered = loop {
        attempts += 1;
        pool.request("d", 100 + attempts, &tx, &waker())
            .expect("queued");
        match recv(&rx).result {
            Ok(Some(c)) => break c,
            Ok(None) => panic!("user d exists"),
            Err(e) => assert!(
                Instant::now() < deadline && attempts < 10_000,
                "no recovery: {e}"
            ),
        }
    };
    assert_eq!(*recovered, plain("d", "dpw"));
    refresh.refresh_now(WAIT).expect("refresh after recovery");
    assert!(
        matches!(cache.lookup("c", 0), Lookup::Found(_)),
        "refresh caught up"
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "cached user never failed during the outage"
    );
}

#[test]
fn mysql_errors_never_leak_the_password() {
    let Some(db) = TestDb::with_ddl(SIPPEERS) else {
        return;
    };
    let cfg = CredentialsConfig {
        url: db.url(Some(("nobody_here", "Leak-Me-42"))),
        ..cfg(&db, Schema::Sippeers)
    };
    let Err(e) = CredentialService::start(&cfg, REALM) else {
        panic!("a wrong user must not connect");
    };
    let text = format!("{e} {e:?} {cfg:?}");
    assert!(!text.contains("Leak-Me-42"), "{text}");
    let bad = CredentialsConfig {
        url: "mysql://u:Leak-Me-42@[zz/db".into(),
        ..cfg
    };
    let Err(e) = CredentialService::start(&bad, REALM) else {
        panic!("bad url")
    };
    assert!(!format!("{e} {e:?}").contains("Leak-Me-42"));
}
