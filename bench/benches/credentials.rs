//! Credential cache benchmark, 100,000 users (results: docs/benchmarks/credentials.md).
//!
//! Measured:
//! - preload time of `CredentialService::start` from SQLite and from MariaDB (streamed load);
//! - heap bytes per cached user (a counting global allocator, before/after the load) and RSS;
//! - cache-hit lookup cost;
//! - one authenticated REGISTER's verify+lookup with a warm cache vs. with a MySQL query per
//!   request (what Kamailio's auth_db does without a cache).
//!
//! Run: `cargo bench -p sipfront-bench --bench credentials` (MariaDB from
//! `SIPFRONT_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`; `SIPFRONT_SKIP_MYSQL=1`
//! skips the MySQL parts; `SIPFRONT_BENCH_USERS` overrides 100000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion, Throughput};
use mysql::prelude::Queryable;
use sipfront::auth::hash::{self, QopAuth};
use sipfront::auth::{parse_challenge, Algorithm, AuthConfig, Authenticator, DigestInput, Verdict};
use sipfront::db::schema::to_credential;
use sipfront::db::source::{connect, Source};
use sipfront::db::{CredentialService, CredentialsConfig, Lookup, Schema};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REALM: &str = "example.com";
const SRC: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const URI: &str = "sip:example.com";

fn users() -> usize {
    std::env::var("SIPFRONT_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn sqlite_db(n: usize) -> String {
    let path = std::env::temp_dir().join(format!("sipfront-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    c.execute_batch("CREATE TABLE sippeers (id INTEGER PRIMARY KEY, name TEXT UNIQUE, secret TEXT, md5secret TEXT, host TEXT, context TEXT);")
        .expect("ddl");
    c.execute_batch("BEGIN").expect("begin");
    {
        let mut st = c
            .prepare("INSERT INTO sippeers (name, secret, host, context) VALUES (?1, ?2, 'dynamic', 'phones')")
            .expect("prepare");
        for i in 0..n {
            st.execute((format!("user{i:06}"), format!("pw-{i}-secret")))
                .expect("insert");
        }
    }
    c.execute_batch("COMMIT").expect("commit");
    path.to_string_lossy().into_owned()
}

struct MysqlDb {
    admin: mysql::Conn,
    url: String,
    name: String,
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        let _ = self
            .admin
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

fn mysql_db(n: usize) -> Option<MysqlDb> {
    if std::env::var("SIPFRONT_SKIP_MYSQL").as_deref() == Ok("1") {
        return None;
    }
    let base = std::env::var("SIPFRONT_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let mut admin =
        mysql::Conn::new(mysql::Opts::from_url(&base).expect("url")).expect("MariaDB unreachable");
    let name = format!("sipfront_bench_{}", std::process::id());
    admin
        .query_drop(format!("CREATE DATABASE `{name}`"))
        .expect("create");
    admin
        .query_drop(format!(
            "CREATE TABLE `{name}`.sippeers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) UNIQUE,
             secret VARCHAR(40), md5secret VARCHAR(40), host VARCHAR(40), context VARCHAR(40))"
        ))
        .expect("ddl");
    for chunk in (0..n).step_by(2000) {
        let values: Vec<String> = (chunk..(chunk + 2000).min(n))
            .map(|i| format!("('user{i:06}','pw-{i}-secret','dynamic','phones')"))
            .collect();
        admin
            .query_drop(format!(
                "INSERT INTO `{name}`.sippeers (name, secret, host, context) VALUES {}",
                values.join(",")
            ))
            .expect("insert");
    }
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    Some(MysqlDb { admin, url, name })
}

fn cfg(url: String) -> CredentialsConfig {
    CredentialsConfig {
        url,
        schema: Schema::Sippeers,
        refresh_secs: 0,
        ..CredentialsConfig::default()
    }
}

/// One REGISTER's Authorization, precomputed outside the timed loop.
struct Req {
    user: String,
    nonce: String,
    nc: String,
    response: String,
}

fn make_reqs(a: &Authenticator, n_users: usize, count: u64, seq: &mut u64) -> Vec<Req> {
    let mut ch = Vec::with_capacity(256);
    (0..count)
        .map(|_| {
            *seq += 1;
            let i = (*seq as usize * 7919) % n_users;
            let user = format!("user{i:06}");
            ch.clear();
            a.write_challenge(&mut ch, false, false, 1_000, SRC);
            let text = std::str::from_utf8(&ch).expect("utf8");
            let value = text.split_once(": ").expect("hdr").1.trim_end();
            let nonce = parse_challenge(value).expect("parse").nonce.raw.to_string();
            let ha1 = hash::ha1(Algorithm::Md5, &user, REALM, &format!("pw-{i}-secret"));
            let ha2 = hash::ha2(Algorithm::Md5, "REGISTER", URI);
            let q = QopAuth {
                nc: "00000001",
                cnonce: "abcdef",
            };
            let response = hash::response(Algorithm::Md5, &ha1, &nonce, Some(q), &ha2)
                .as_str()
                .to_string();
            Req {
                user,
                nonce,
                nc: "00000001".into(),
                response,
            }
        })
        .collect()
}

fn input(r: &Req) -> DigestInput<'_> {
    DigestInput {
        username: &r.user,
        realm: REALM,
        nonce: &r.nonce,
        uri: URI,
        response: &r.response,
        cnonce: Some("abcdef"),
        nc: Some(&r.nc),
        qop: Some("auth"),
        ..DigestInput::default()
    }
}

fn main() {
    let n = users();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    // Preload + memory, SQLite.
    let path = sqlite_db(n);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_kib());
    let t = Instant::now();
    let (cache, pool, refresh) =
        CredentialService::start(&cfg(format!("sqlite://{path}")), REALM).expect("start");
    let load = t.elapsed();
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss_kib());
    assert_eq!(cache.len(), n);
    println!(
        "RESULT preload_sqlite users={n} time_ms={} heap_bytes_per_user={:.1} rss_kib_per_1k_users={:.1}",
        load.as_millis(),
        (heap1 - heap0) as f64 / n as f64,
        (rss1.saturating_sub(rss0)) as f64 * 1000.0 / n as f64
    );

    let mut g = c.benchmark_group("credentials");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    g.bench_function("cache_hit_lookup", |b| {
        b.iter(|| {
            k = (k + 7919) % n;
            let name = format!("user{k:06}");
            black_box(matches!(
                cache.lookup(black_box(&name), 0),
                Lookup::Found(_)
            ))
        })
    });
    g.bench_function("format_user_name_only(baseline)", |b| {
        b.iter(|| {
            k = (k + 7919) % n;
            black_box(format!("user{k:06}"))
        })
    });

    let auth_cfg = AuthConfig {
        replay_capacity: 1 << 22,
        ..AuthConfig::default()
    };
    let a = Authenticator::new(&auth_cfg, REALM).expect("auth");
    let mut seq = 0u64;
    g.bench_function("register_verify_warm_cache", |b| {
        b.iter_custom(|iters| {
            let reqs = make_reqs(&a, n, iters, &mut seq);
            let t = Instant::now();
            for r in &reqs {
                let Lookup::Found(cred) = cache.lookup(&r.user, 1_000) else {
                    panic!("miss")
                };
                let v = a.verify(&input(r), "REGISTER", URI, &cred, 1_000, SRC);
                assert_eq!(v, Verdict::Ok);
            }
            t.elapsed()
        })
    });
    drop((pool, refresh, cache));
    let _ = std::fs::remove_file(&path);

    // MySQL: preload, and the Kamailio way (a query per request).
    if let Some(db) = mysql_db(n) {
        let t = Instant::now();
        let (cache, pool, refresh) =
            CredentialService::start(&cfg(db.url.clone()), REALM).expect("start mysql");
        println!(
            "RESULT preload_mysql users={n} time_ms={}",
            t.elapsed().as_millis()
        );
        assert_eq!(cache.len(), n);
        drop((pool, refresh, cache));
        let cfg = cfg(db.url.clone());
        let layout = cfg.resolve().expect("layout");
        let mut src: Box<dyn Source> = connect(&cfg, &layout).expect("connect");
        g.bench_function("register_verify_mysql_query_per_request", |b| {
            b.iter_custom(|iters| {
                let reqs = make_reqs(&a, n, iters, &mut seq);
                let t = Instant::now();
                for r in &reqs {
                    let mut cred = None;
                    src.load_user(&r.user, &mut |row| {
                        cred = to_credential(&layout.kind, &row, REALM, false)
                    })
                    .expect("query");
                    let cred = cred.expect("user");
                    assert_eq!(
                        a.verify(&input(r), "REGISTER", URI, &cred, 1_000, SRC),
                        Verdict::Ok
                    );
                }
                t.elapsed()
            })
        });
        drop(db);
    }
    g.finish();
    c.final_summary();
}
