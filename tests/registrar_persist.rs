//! Location persistence: round trip through SQLite, queue overflow, and a child process
//! killed with SIGKILL after a flush whose bindings the parent reloads.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sipfront::registrar::{ContactInput, Persister, RegisterRequest, Registrar, RegistrarConfig};
use sipfront::sip::Transport;

const T0: u64 = 1_764_159_377_000;
const CHILD_ENV: &str = "SIPFRONT_TEST_PERSIST_CHILD_DB";
const FLUSHED: usize = 50;

fn cfg(db: &std::path::Path) -> RegistrarConfig {
    RegistrarConfig {
        persist: format!("sqlite://{}", db.display()),
        ..RegistrarConfig::default()
    }
}

fn register(r: &Registrar, user: &str, uri: &str, expires: u32, cseq: u32, now: u64) {
    let aor = format!("{user}@example.com");
    let contacts = [ContactInput {
        uri,
        expires: Some(expires),
        q: Some(700),
    }];
    let path = ["<sip:edge.example.net;lr>"];
    let req = RegisterRequest {
        aor: &aor,
        call_id: "call-1@phone",
        cseq,
        expires_header: None,
        star: false,
        contacts: &contacts,
        source: "198.51.100.7:40123".parse().unwrap(),
        transport: Transport::Udp,
        socket: "127.0.0.1:5062".parse().unwrap(),
        conn: 0,
        path: &path,
        user_agent: Some("Phone/2.0"),
    };
    r.register(&req, now, &mut Vec::new()).expect("registered");
}

fn start(db: &std::path::Path, now: u64) -> (Arc<Registrar>, Persister) {
    let r = Arc::new(Registrar::new(cfg(db)).unwrap());
    let p = Persister::start(&r, now).expect("persistence starts");
    (r, p)
}

fn lookup(r: &Registrar, user: &str, now: u64) -> Vec<String> {
    let mut v = Vec::new();
    r.lookup(&format!("{user}@example.com"), now, |b| {
        v.push(format!(
            "{} dest={} q={:?} sock={} path={:?} ua={} cid={} cseq={} exp={}",
            b.uri,
            b.dest,
            b.q,
            b.socket,
            b.path.collect::<Vec<_>>(),
            b.user_agent(),
            b.call_id,
            b.cseq,
            b.remaining_secs(now)
        ))
    });
    v
}

#[test]
fn round_trip_drops_expired_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loc.db");
    let (r, p) = start(&db, T0);
    register(&r, "alice", "sip:alice@192.168.1.2:5060", 3600, 1, T0);
    register(&r, "bob", "sip:bob@192.168.1.3:5060", 60, 1, T0);
    register(&r, "carol", "sip:carol@192.168.1.4:5060", 3600, 1, T0);
    register(&r, "carol", "sip:carol@192.168.1.4:5060", 0, 2, T0 + 1000);
    let before = lookup(&r, "alice", T0 + 120_000);
    p.flush(Duration::from_secs(10)).unwrap();
    assert!(p.stats().flushes.load(Ordering::Relaxed) >= 1);
    p.stop().unwrap();
    drop(r);

    // Restart two minutes later: bob expired meanwhile, carol was removed.
    let (r, p) = start(&db, T0 + 120_000);
    assert_eq!(p.stats().loaded.load(Ordering::Relaxed), 1);
    assert_eq!(p.stats().expired_on_load.load(Ordering::Relaxed), 1);
    assert_eq!(lookup(&r, "alice", T0 + 120_000), before);
    assert!(before[0].contains("dest=198.51.100.7:40123 q=Some(700) sock=127.0.0.1:5062 path=[\"<sip:edge.example.net;lr>\"] ua=Phone/2.0 cid=call-1@phone cseq=1 exp=3480"), "{before:?}");
    assert!(lookup(&r, "bob", T0 + 120_000).is_empty());
    assert!(lookup(&r, "carol", T0 + 120_000).is_empty());
    // Reloaded bindings keep CSeq ordering: an old CSeq for the same Call-ID still fails.
    let contacts = [ContactInput {
        uri: "sip:alice@192.168.1.2:5060",
        expires: Some(600),
        q: None,
    }];
    let req = RegisterRequest {
        aor: "alice@example.com",
        call_id: "call-1@phone",
        cseq: 1,
        expires_header: None,
        star: false,
        contacts: &contacts,
        source: "198.51.100.7:40123".parse().unwrap(),
        transport: Transport::Udp,
        socket: "127.0.0.1:5060".parse().unwrap(),
        conn: 0,
        path: &[],
        user_agent: None,
    };
    assert!(r.register(&req, T0 + 121_000, &mut Vec::new()).is_err());
    p.stop().unwrap();
}

/// An administrative removal (`sipfront ctl unregister`) is written behind like any other
/// change: after a flush and a restart the removed bindings stay gone, the other stays.
#[test]
fn admin_removal_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loc.db");
    let (r, p) = start(&db, T0);
    register(&r, "alice", "sip:alice@192.168.1.2:5060", 3600, 1, T0);
    register(&r, "bob", "sip:bob@192.168.1.3:5060", 3600, 1, T0);
    register(&r, "bob", "sip:bob@192.168.1.9:5060", 3600, 2, T0);
    p.flush(Duration::from_secs(10)).unwrap();
    assert!(r.remove("alice@example.com", None, T0 + 1000).emptied);
    let one = r.remove(
        "bob@example.com",
        Some("sip:bob@192.168.1.3:5060"),
        T0 + 1000,
    );
    assert_eq!((one.removed, one.remaining), (1, 1));
    p.flush(Duration::from_secs(10)).unwrap();
    p.stop().unwrap();
    drop(r);

    let (r, p) = start(&db, T0 + 2000);
    assert!(lookup(&r, "alice", T0 + 2000).is_empty(), "alice came back");
    let bob = lookup(&r, "bob", T0 + 2000);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(bob[0].starts_with("sip:bob@192.168.1.9:5060 "), "{bob:?}");
    p.stop().unwrap();
}

#[test]
fn full_queue_falls_back_to_full_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loc.db");
    let r = Arc::new(
        Registrar::new(RegistrarConfig {
            persist_queue: 16,
            persist_interval_ms: 60_000,
            ..cfg(&db)
        })
        .unwrap(),
    );
    let p = Persister::start(&r, T0).unwrap();
    for i in 0..500 {
        register(&r, &format!("u{i}"), "sip:x@192.168.1.2:5060", 600, 1, T0);
    }
    assert!(
        p.stats().dropped.load(Ordering::Relaxed) > 0,
        "the queue overflowed"
    );
    p.flush(Duration::from_secs(30)).unwrap();
    assert!(p.stats().full_rewrites.load(Ordering::Relaxed) >= 1);
    p.stop().unwrap();
    let (r2, p2) = start(&db, T0 + 1000);
    assert_eq!(p2.stats().loaded.load(Ordering::Relaxed), 500);
    assert_eq!(r2.counts(), (500, 500));
    p2.stop().unwrap();
}

/// Child half of `kill9_after_flush_keeps_bindings`: a no-op unless run by it.
#[test]
fn kill9_child_helper() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (r, p) = start(std::path::Path::new(&db), T0);
    for i in 0..FLUSHED {
        register(&r, &format!("k{i}"), "sip:k@10.9.8.7:5060", 3600, 1, T0);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    println!("FLUSHED");
    // More changes after the flush: these may be lost by the kill (documented window).
    for i in 0..10 {
        register(&r, &format!("late{i}"), "sip:k@10.9.8.7:5060", 3600, 1, T0);
    }
    println!("WAITING");
    // Wait to be killed (bounded: the parent kills within seconds).
    let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
    let _ = rx.recv_timeout(Duration::from_secs(120));
    std::process::exit(3);
}

#[test]
fn kill9_after_flush_keeps_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loc.db");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "kill9_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut waiting = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.contains("WAITING") {
            waiting = true;
            break;
        }
    }
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(waiting, "child never reported its flush");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let (r, p) = start(&db, T0 + 5000);
    for i in 0..FLUSHED {
        let b = lookup(&r, &format!("k{i}"), T0 + 5000);
        assert_eq!(b.len(), 1, "k{i} lost");
        assert!(
            b[0].starts_with("sip:k@10.9.8.7:5060 dest=198.51.100.7:40123"),
            "{b:?}"
        );
    }
    let loaded = p.stats().loaded.load(Ordering::Relaxed) as usize;
    assert!((FLUSHED..=FLUSHED + 10).contains(&loaded), "{loaded}");
    p.stop().unwrap();
}

#[test]
fn unusable_rows_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loc.db");
    let (r, p) = start(&db, T0);
    register(&r, "alice", "sip:alice@192.168.1.2:5060", 3600, 1, T0);
    p.stop().unwrap();
    drop(r);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO location (aor, contact, received, expires_ms, callid, cseq)
         VALUES ('bob', 'sip:bob@1.2.3.4', 'not an address', ?1, 'c', 1)",
        [(T0 + 3_600_000) as i64],
    )
    .unwrap();
    drop(conn);
    let (r, p) = start(&db, T0 + 1000);
    assert_eq!(p.stats().loaded.load(Ordering::Relaxed), 1);
    assert_eq!(p.stats().errors.load(Ordering::Relaxed), 1);
    assert_eq!(lookup(&r, "alice", T0 + 1000).len(), 1);
    p.stop().unwrap();
}

/// RFC 5626: a binding's `+sip.instance` and `reg-id` survive a restart, and a file written
/// before they existed (no such columns) gets them added and still loads.
#[test]
fn outbound_instance_and_reg_id_survive_a_restart_and_old_files_load() {
    use sipfront::registrar::OutboundContact;
    const INST: &str = "\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"";
    let dir = tempfile::tempdir().unwrap();
    // An old file: the location table as it was before the outbound columns.
    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(
        "CREATE TABLE location (aor TEXT NOT NULL, contact TEXT NOT NULL, received TEXT NOT NULL,
             transport TEXT NOT NULL DEFAULT 'udp', socket TEXT NOT NULL DEFAULT '',
             nated INTEGER NOT NULL DEFAULT 0, path TEXT NOT NULL DEFAULT '',
             expires_ms INTEGER NOT NULL, q INTEGER NOT NULL DEFAULT -1, callid TEXT NOT NULL,
             cseq INTEGER NOT NULL, user_agent TEXT NOT NULL DEFAULT '',
             registered_s INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (aor, contact)) WITHOUT ROWID;",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO location (aor, contact, received, expires_ms, callid, cseq)
         VALUES ('bob@example.com', 'sip:bob@1.2.3.4', '1.2.3.4:5060', ?1, 'c', 1)",
        [(T0 + 3_600_000) as i64],
    )
    .unwrap();
    drop(conn);
    let (r, p) = start(&old, T0);
    assert_eq!(p.stats().loaded.load(Ordering::Relaxed), 1);
    assert_eq!(lookup(&r, "bob", T0).len(), 1);
    // Outbound bindings written to it come back with their pair.
    let contacts = [ContactInput {
        uri: "sip:alice@192.168.1.2:5060;ob",
        expires: Some(3600),
        q: None,
    }];
    for reg_id in [1, 2] {
        let req = RegisterRequest {
            aor: "alice@example.com",
            call_id: "ob@phone",
            cseq: reg_id,
            expires_header: None,
            star: false,
            contacts: &contacts,
            source: format!("198.51.100.7:{}", 40_000 + reg_id).parse().unwrap(),
            transport: Transport::Udp,
            socket: "127.0.0.1:5062".parse().unwrap(),
            conn: 0,
            path: &[],
            user_agent: Some("Phone/2.0"),
        };
        let ob = [OutboundContact {
            instance: Some(INST),
            reg_id: Some(reg_id),
        }];
        r.register_outbound(&req, &ob, T0, &mut Vec::new())
            .expect("registered");
    }
    p.stop().unwrap();
    drop(r);
    let (r, p) = start(&old, T0 + 1000);
    let mut pairs = Vec::new();
    r.lookup("alice@example.com", T0 + 1000, |b| {
        pairs.push((b.instance().to_owned(), b.reg_id()))
    });
    // SQLite keys rows by AOR and Contact: of two flows with one Contact URI, the last
    // written is kept (flows do not survive a restart; the phone registers them again).
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(pairs[0].0, INST);
    assert!(matches!(pairs[0].1, Some(1 | 2)), "{pairs:?}");
    assert_eq!(lookup(&r, "bob", T0 + 1000).len(), 1);
    p.stop().unwrap();
}
