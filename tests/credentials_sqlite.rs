//! Credential sources against real SQLite files (Asterisk's realtime schemas): presets, refresh,
//! miss lookups through the pool, negative caching, coalescing, a full queue, 10,000 users.
//! No sleeps: refreshes are triggered explicitly, pool answers are awaited on channels.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use rusqlite::Connection;
use sipfront::auth::hash::ha1;
use sipfront::auth::Algorithm;
use sipfront::auth::Credential;
use sipfront::db::{
    CredentialService, CredentialsConfig, Lookup, LookupDone, PasswordKind, Schema, WakeFn,
};

const REALM: &str = "example.com";
const WAIT: Duration = Duration::from_secs(10);

struct Db {
    _dir: tempfile::TempDir,
    path: String,
}

impl Db {
    fn new(ddl: &str) -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ast.db").to_string_lossy().into_owned();
        Connection::open(&path)
            .expect("open")
            .execute_batch(ddl)
            .expect("ddl");
        Db { _dir: dir, path }
    }
    fn exec(&self, sql: &str) {
        Connection::open(&self.path)
            .expect("open")
            .execute_batch(sql)
            .expect("sql");
    }
    fn cfg(&self, schema: Schema) -> CredentialsConfig {
        CredentialsConfig {
            url: format!("sqlite://{}", self.path),
            schema,
            refresh_secs: 0,
            ..CredentialsConfig::default()
        }
    }
}

const SIPPEERS: &str = "CREATE TABLE sippeers (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
    host TEXT DEFAULT 'dynamic', type TEXT DEFAULT 'friend', context TEXT, secret TEXT,
    md5secret TEXT, sippasswd TEXT, regseconds INTEGER);";
const PS_AUTHS: &str =
    "CREATE TABLE ps_auths (id TEXT PRIMARY KEY, auth_type TEXT, nonce_lifetime INTEGER,
    md5_cred TEXT, password TEXT, realm TEXT, username TEXT, password_digest TEXT);";

fn plain(user: &str, pw: &str) -> Credential {
    Credential::from_plain(user, REALM, pw, false)
}

fn found(l: Lookup) -> Arc<Credential> {
    match l {
        Lookup::Found(c) => c,
        other => panic!("expected Found, got {other:?}"),
    }
}

/// A waker that reports each wake on a channel (the pool wakes right after it sends the
/// answer, so a test waits for the wake rather than reading a counter at once).
fn waker() -> (WakeFn, Receiver<()>) {
    let (tx, rx) = unbounded();
    (
        Arc::new(move || {
            let _ = tx.send(());
        }),
        rx,
    )
}

fn recv(rx: &Receiver<LookupDone>) -> LookupDone {
    rx.recv_timeout(WAIT).expect("LookupDone in time")
}

fn channel() -> (Sender<LookupDone>, Receiver<LookupDone>) {
    unbounded()
}

#[test]
fn sippeers_preset_plain_md5secret_and_unusable() {
    let db = Db::new(SIPPEERS);
    let md5 = ha1(Algorithm::Md5, "bob", REALM, "bobpw");
    db.exec(&format!(
        "INSERT INTO sippeers (name, secret, md5secret) VALUES ('alice', 'alicepw', NULL),
         ('bob', '', '{}'), ('carol', '', ''), ('dave', NULL, NULL);",
        md5.as_str()
    ));
    let (cache, _pool, _refresh) =
        CredentialService::start(&db.cfg(Schema::Sippeers), REALM).expect("start");
    assert_eq!(*found(cache.lookup("alice", 0)), plain("alice", "alicepw"));
    let bob = found(cache.lookup("bob", 0));
    assert_eq!(bob.ha1_hex(Algorithm::Md5), Some(md5));
    assert!(bob.ha1_hex(Algorithm::Sha256).is_none());
    assert!(matches!(cache.lookup("carol", 0), Lookup::Miss));
    assert_eq!(cache.len(), 2);
}

#[test]
fn sipusers_with_tutorial_sippasswd_column() {
    let db = Db::new(&SIPPEERS.replace("sippeers", "sipusers"));
    db.exec("INSERT INTO sipusers (name, secret, sippasswd) VALUES ('alice', '', 'proxypw');");
    let cfg = CredentialsConfig {
        password_column: Some("sippasswd".into()),
        ..db.cfg(Schema::Sipusers)
    };
    let (cache, _p, _r) = CredentialService::start(&cfg, REALM).expect("start");
    assert_eq!(*found(cache.lookup("alice", 0)), plain("alice", "proxypw"));
}

#[test]
fn ps_auths_preset_by_auth_type() {
    let db = Db::new(PS_AUTHS);
    let md5 = ha1(Algorithm::Md5, "m", REALM, "mpw");
    let sha = ha1(Algorithm::Sha256, "d", REALM, "dpw");
    let foreign = ha1(Algorithm::Md5, "f", "asterisk", "fpw");
    db.exec(&format!(
        "INSERT INTO ps_auths (id, auth_type, username, password, md5_cred, realm, password_digest) VALUES
         ('u', 'userpass', 'u', 'upw', NULL, NULL, NULL),
         ('g', 'digest', 'g', 'gpw', NULL, '', NULL),
         ('m', 'md5', 'm', NULL, '{}', '{REALM}', NULL),
         ('d', 'digest', 'd', '', NULL, '{REALM}', 'SHA-256:{}'),
         ('f', 'md5', 'f', NULL, '{}', 'asterisk', NULL),
         ('o', 'google_oauth', 'o', 'x', NULL, NULL, NULL);",
        md5.as_str(),
        sha.as_str(),
        foreign.as_str()
    ));
    let (cache, _p, _r) = CredentialService::start(&db.cfg(Schema::PsAuths), REALM).expect("start");
    assert_eq!(*found(cache.lookup("u", 0)), plain("u", "upw"));
    assert_eq!(*found(cache.lookup("g", 0)), plain("g", "gpw"));
    assert_eq!(
        found(cache.lookup("m", 0)).ha1_hex(Algorithm::Md5),
        Some(md5)
    );
    let d = found(cache.lookup("d", 0));
    assert_eq!(d.ha1_hex(Algorithm::Sha256), Some(sha));
    assert!(d.ha1_hex(Algorithm::Md5).is_none());
    assert!(
        matches!(cache.lookup("f", 0), Lookup::Miss),
        "HA1 of another realm is unusable"
    );
    assert!(matches!(cache.lookup("o", 0), Lookup::Miss));
}

#[test]
fn old_ps_auths_without_optional_columns_works() {
    let db =
        Db::new("CREATE TABLE ps_auths (id TEXT, auth_type TEXT, username TEXT, password TEXT);");
    db.exec("INSERT INTO ps_auths VALUES ('a', 'userpass', 'a', 'apw');");
    let (cache, _p, _r) = CredentialService::start(&db.cfg(Schema::PsAuths), REALM).expect("start");
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "apw"));
}

#[test]
fn custom_ha1_sha256_with_realm_column() {
    let db = Db::new("CREATE TABLE subscriber (login TEXT, ha1b TEXT, dom TEXT);");
    let h = ha1(Algorithm::Sha256, "x", REALM, "xpw");
    db.exec(&format!(
        "INSERT INTO subscriber VALUES ('x', '{0}', '{REALM}'), ('y', '{0}', 'other.org');",
        h.as_str()
    ));
    let cfg = CredentialsConfig {
        table: Some("subscriber".into()),
        user_column: Some("login".into()),
        password_column: Some("ha1b".into()),
        realm_column: Some("dom".into()),
        password_kind: PasswordKind::Ha1Sha256,
        ..db.cfg(Schema::Custom)
    };
    let (cache, _p, _r) = CredentialService::start(&cfg, REALM).expect("start");
    assert_eq!(
        found(cache.lookup("x", 0)).ha1_hex(Algorithm::Sha256),
        Some(h)
    );
    assert!(matches!(cache.lookup("y", 0), Lookup::Miss));
    let missing = CredentialsConfig {
        realm_column: Some("nosuch".into()),
        ..cfg
    };
    assert!(CredentialService::start(&missing, REALM).is_err());
}

#[test]
fn refresh_picks_up_changes_and_deletions() {
    let db = Db::new(SIPPEERS);
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('a', 'one'), ('b', 'bpw'), ('c', 'cpw');");
    let (cache, _pool, refresh) =
        CredentialService::start(&db.cfg(Schema::Sippeers), REALM).expect("start");
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "one"));
    db.exec("UPDATE sippeers SET secret = 'two' WHERE name = 'a'; DELETE FROM sippeers WHERE name = 'b';
             UPDATE sippeers SET secret = '' WHERE name = 'c'; INSERT INTO sippeers (name, secret) VALUES ('d', 'dpw');");
    let stats = refresh.refresh_now(WAIT).expect("refresh");
    assert_eq!(
        (stats.rows, stats.users, stats.changed, stats.removed),
        (3, 2, 2, 2)
    );
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "two"));
    assert!(matches!(cache.lookup("b", 0), Lookup::Miss));
    assert!(matches!(cache.lookup("c", 0), Lookup::Miss));
    assert_eq!(*found(cache.lookup("d", 0)), plain("d", "dpw"));
    assert_eq!(refresh.status().successes.load(Ordering::Relaxed), 1);
}

#[test]
fn miss_lookup_finds_new_user_and_negatively_caches_unknown() {
    let db = Db::new(SIPPEERS);
    let (cache, pool, _r) =
        CredentialService::start(&db.cfg(Schema::Sippeers), REALM).expect("start");
    assert!(cache.is_empty());
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('new', 'npw'), ('Case', 'cpw');");
    let (tx, rx) = channel();
    let (wake, woken) = waker();
    assert!(matches!(cache.lookup("new", 0), Lookup::Miss));
    pool.request("new", 7, &tx, &wake).expect("queued");
    let done = recv(&rx);
    assert_eq!((done.token, &*done.user), (7, "new"));
    assert_eq!(
        *done.result.expect("ok").expect("found"),
        plain("new", "npw")
    );
    woken.recv_timeout(WAIT).expect("the worker is woken");
    assert!(woken.try_recv().is_err(), "woken once");
    assert_eq!(*found(cache.lookup("new", 0)), plain("new", "npw"));

    let now = sipfront::db::system_now_ms();
    pool.request("ghost", 8, &tx, &wake).expect("queued");
    assert!(recv(&rx).result.expect("ok").is_none());
    assert!(matches!(cache.lookup("ghost", now), Lookup::Unknown));
    // the negative entry expires
    assert!(matches!(
        cache.lookup("ghost", now + 3_600_000),
        Lookup::Miss
    ));
    // user names are case-sensitive whatever the collation
    pool.request("case", 9, &tx, &wake).expect("queued");
    assert!(recv(&rx).result.expect("ok").is_none());
}

#[test]
fn concurrent_misses_coalesce_and_full_queue_is_refused() {
    let db = Db::new(SIPPEERS);
    // Rollback-journal mode: an exclusive transaction blocks readers, holding the DB thread.
    db.exec(
        "PRAGMA journal_mode = DELETE; INSERT INTO sippeers (name, secret) VALUES ('u', 'upw');",
    );
    let cfg = CredentialsConfig {
        pool_size: 1,
        queue_size: 1,
        ..db.cfg(Schema::Sippeers)
    };
    let (cache, pool, _r) = CredentialService::start(&cfg, REALM).expect("start");
    cache.remove("u");
    let lock = Connection::open(&db.path).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE;").expect("lock");
    let (tx, rx) = channel();
    let (wake, _) = waker();
    for token in 0..5 {
        pool.request("u", token, &tx, &wake).expect("coalesced");
    }
    let refused = ["v", "w", "x"]
        .iter()
        .filter(|u| pool.request(u, 99, &tx, &wake).is_err())
        .count();
    assert!(refused >= 1, "a full queue refuses");
    lock.execute_batch("COMMIT;").expect("unlock");
    let mut tokens: Vec<u64> = (0..5)
        .map(|_| recv(&rx))
        .filter(|d| &*d.user == "u")
        .map(|d| d.token)
        .collect();
    while tokens.len() < 5 {
        let d = recv(&rx);
        if &*d.user == "u" {
            tokens.push(d.token);
        }
    }
    tokens.sort_unstable();
    assert_eq!(tokens, vec![0, 1, 2, 3, 4]);
    assert!(pool.stats().coalesced.load(Ordering::Relaxed) >= 4);
}

#[test]
fn ten_thousand_users_preloaded() {
    let db = Db::new(SIPPEERS);
    let mut sql = String::from("BEGIN;");
    for i in 0..10_000 {
        sql.push_str(&format!(
            "INSERT INTO sippeers (name, secret) VALUES ('u{i}', 'pw{i}');"
        ));
    }
    sql.push_str("COMMIT;");
    db.exec(&sql);
    let (cache, _p, _r) =
        CredentialService::start(&db.cfg(Schema::Sippeers), REALM).expect("start");
    assert_eq!(cache.len(), 10_000);
    for i in [0, 4_999, 9_999] {
        assert_eq!(
            *found(cache.lookup(&format!("u{i}"), 0)),
            plain(&format!("u{i}"), &format!("pw{i}"))
        );
    }
}

#[test]
fn start_fails_cleanly_without_a_database() {
    let cfg = CredentialsConfig {
        url: "sqlite:///nonexistent/dir/x.db".into(),
        ..CredentialsConfig::default()
    };
    let e = CredentialService::start(&cfg, REALM)
        .err()
        .expect("no database");
    // The error says which database and how to start anyway.
    let text = e.to_string();
    assert!(
        text.contains("/nonexistent/dir/x.db") && text.contains("start_without_db = true"),
        "{text}"
    );
}

#[test]
fn periodic_refresh_applies_changes() {
    let db = Db::new(SIPPEERS);
    db.exec("INSERT INTO sippeers (name, secret) VALUES ('a', 'one');");
    let cfg = CredentialsConfig {
        refresh_secs: 1,
        ..db.cfg(Schema::Sippeers)
    };
    let (cache, _pool, refresh) = CredentialService::start(&cfg, REALM).expect("start");
    db.exec("UPDATE sippeers SET secret = 'two' WHERE name = 'a';");
    // A refresh already running may have read the old row: wait for the one after it.
    let n = refresh.status().finished();
    assert!(refresh.wait_finished(n + 2, WAIT), "periodic refreshes ran");
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "two"));
}

#[test]
fn start_without_db_then_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("later.db").to_string_lossy().into_owned();
    let cfg = CredentialsConfig {
        url: format!("sqlite://{path}"),
        refresh_secs: 0,
        start_without_db: true,
        reconnect_max_ms: 1,
        ..CredentialsConfig::default()
    };
    let (cache, pool, refresh) = CredentialService::start(&cfg, REALM).expect("lenient start");
    assert!(cache.is_empty());
    let (tx, rx) = channel();
    let (wake, _) = waker();
    pool.request("a", 1, &tx, &wake).expect("queued");
    assert!(
        recv(&rx).result.is_err(),
        "no database: a DB error, not unknown"
    );
    let c = Connection::open(&path).expect("create");
    c.execute_batch(SIPPEERS).expect("ddl");
    c.execute_batch("INSERT INTO sippeers (name, secret) VALUES ('a', 'apw');")
        .expect("insert");
    // The refresher's connection backoff is at most 1 ms: retry a bounded number of times.
    let stats = (0..1000)
        .find_map(|_| refresh.refresh_now(WAIT).ok())
        .expect("refresh after the database appeared");
    assert_eq!(stats.users, 1);
    assert_eq!(*found(cache.lookup("a", 0)), plain("a", "apw"));
}

#[test]
fn readers_never_miss_during_refreshes() {
    let db = Db::new(SIPPEERS);
    let mut sql = String::from("BEGIN;");
    for i in 0..5_000 {
        sql.push_str(&format!(
            "INSERT INTO sippeers (name, secret) VALUES ('u{i}', 'pw{i}');"
        ));
    }
    sql.push_str("COMMIT;");
    db.exec(&sql);
    let (cache, _p, refresh) =
        CredentialService::start(&db.cfg(Schema::Sippeers), REALM).expect("start");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (cache, stop) = (cache.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut hits, mut misses) = (0u64, 0u64);
                let mut i = t;
                // Bounded: stops when told, or after 50M lookups at most.
                while !stop.load(Ordering::Relaxed) && hits + misses < 50_000_000 {
                    i = (i + 7) % 5_000;
                    match cache.lookup(&format!("u{i}"), 0) {
                        Lookup::Found(_) => hits += 1,
                        _ => misses += 1,
                    }
                }
                (hits, misses)
            })
        })
        .collect();
    for round in 0..5 {
        // change some passwords each round; every user stays present
        db.exec(&format!(
            "UPDATE sippeers SET secret = 'r{round}' WHERE id % 10 = 0;"
        ));
        let s = refresh.refresh_now(WAIT).expect("refresh");
        assert_eq!((s.users, s.removed), (5_000, 0));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (hits, misses) = r.join().expect("reader");
        assert!(hits > 0);
        assert_eq!(misses, 0, "a reader saw a user disappear during a refresh");
    }
    // rowid 10 is u9
    assert_eq!(*found(cache.lookup("u9", 0)), plain("u9", "r4"));
}
