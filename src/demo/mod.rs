//! `sipfront demo`: a working proxy on the embedded SQLite default with sample users, for a
//! first look without a database server, a config file or an Asterisk.
//!
//! [`prepare`] creates (once) a SQLite file in the demo's directory (a fresh temporary one
//! unless `--dir` is given: nothing lands in the working directory) with Asterisk's chan_sip
//! realtime table `sippeers` holding users 1001, 1002 and 1003 (passwords `secret1001`,
//! ...), and returns the configuration that uses it: listen on 127.0.0.1:5060, Asterisk on
//! 127.0.0.2:5080, bindings persisted next to the users, the admin API (`sipfront ctl`,
//! `/metrics`) on 127.0.0.1:8080. The Asterisk address is served by [`node`], a built-in
//! answering node (extension 600 answers), so a demo call completes. [`banner`] is what the
//! demo prints first.

pub mod node;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The sample users: (name, plain password).
pub const DEMO_USERS: [(&str, &str); 3] = [
    ("1001", "secret1001"),
    ("1002", "secret1002"),
    ("1003", "secret1003"),
];

/// Why the demo database could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("demo database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("demo directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the demo listens and where its Asterisk (the answering node) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoAddrs {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub asterisk: SocketAddr,
}

impl Default for DemoAddrs {
    fn default() -> Self {
        DemoAddrs {
            sip: SocketAddr::from(([127, 0, 0, 1], 5060)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8080)),
            asterisk: SocketAddr::from(([127, 0, 0, 2], 5080)),
        }
    }
}

/// The demo's directory: `given` (created if missing, kept), or a new temporary directory
/// (the caller removes it at exit). Returns the absolute path and whether it is temporary.
pub fn directory(given: Option<&Path>) -> Result<(PathBuf, bool), DemoError> {
    let (dir, temporary) = match given {
        Some(d) => (d.to_owned(), false),
        None => (
            std::env::temp_dir().join(format!("sipfront-demo-{}", std::process::id())),
            true,
        ),
    };
    let err = |source| DemoError::Dir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let dir = std::fs::canonicalize(&dir).map_err(err)?;
    Ok((dir, temporary))
}

/// Create the demo database in `dir` (absolute) if needed and return the demo
/// configuration for `addrs`.
pub fn prepare(dir: &Path, addrs: DemoAddrs) -> Result<Config, DemoError> {
    let db = dir.join("sipfront-demo.db");
    let path = db.display().to_string();
    let err = |source| DemoError::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = rusqlite::Connection::open(&db).map_err(err)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS sippeers (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL UNIQUE,
             secret TEXT,
             md5secret TEXT,
             host TEXT DEFAULT 'dynamic',
             type TEXT DEFAULT 'friend',
             context TEXT DEFAULT 'from-sipfront');",
    )
    .map_err(err)?;
    for (name, secret) in DEMO_USERS {
        conn.execute(
            "INSERT OR IGNORE INTO sippeers (name, secret) VALUES (?1, ?2)",
            (name, secret),
        )
        .map_err(err)?;
    }
    let mut cfg = Config::default();
    cfg.listen.udp = vec![addrs.sip];
    cfg.asterisk.nodes = vec![addrs.asterisk];
    cfg.admin.listen = addrs.admin;
    cfg.domain.realm = "sipfront.demo".to_owned();
    cfg.domain.local = vec!["sipfront.demo".to_owned(), "localhost".to_owned()];
    cfg.credentials.url = format!("sqlite://{path}");
    cfg.admin.enabled = true;
    cfg.registrar.persist = format!(
        "sqlite://{}",
        dir.join("sipfront-demo-location.db").display()
    );
    Ok(cfg)
}

/// What the demo prints before it starts: where everything is, how to stop, what to try.
pub fn banner(addrs: &DemoAddrs, dir: &Path, temporary: bool, node: bool) -> String {
    let DemoAddrs {
        sip,
        admin,
        asterisk,
    } = addrs;
    let users: Vec<String> = DEMO_USERS.iter().map(|(u, p)| format!("{u}/{p}")).collect();
    let ctl = if admin.to_string() == crate::admin::DEFAULT_LISTEN {
        "sipfront ctl".to_owned()
    } else {
        format!("sipfront ctl --admin {admin}")
    };
    let asterisk_line = if node {
        format!("a built-in answering node on {asterisk} (extension 600 answers; it stands in for Asterisk)")
    } else {
        format!("expected on {asterisk} (the built-in answering node could not start there)")
    };
    let kept = if temporary {
        "removed when the demo stops"
    } else {
        "kept"
    };
    format!(
        "sipfront demo: a SIP proxy with sample users, running until you press Ctrl-C (or send SIGTERM)\n\
         \n  SIP        udp {sip}, realm sipfront.demo\
         \n  users      {users}\
         \n  Asterisk   {asterisk_line}\
         \n  admin API  http://{admin}/  (metrics: http://{admin}/metrics)\
         \n  files      {dir} ({kept})\
         \n\nTry next, in another terminal:\
         \n  - register a softphone as 1001, password secret1001, server {sip}, and call 600\
         \n    (answered by the node; other numbers get 404: no real Asterisk is behind it);\
         \n  - `{ctl} stats` (counters and latencies), `{ctl} regs --all` (who is registered);\
         \n  - your own setup: copy docs/examples/sipfront.toml, check it with\
         \n    `sipfront check-config --config FILE`, run `sipfront run --config FILE`\
         \n    (every key: docs/configuration.md; Asterisk side: docs/asterisk-pjsip.md).\n",
        users = users.join(", "),
        dir = dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_goes_into_the_demo_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, temporary) = directory(Some(&tmp.path().join("d"))).unwrap();
        assert!(!temporary && dir.is_absolute());
        let addrs = DemoAddrs {
            sip: "127.0.0.1:15060".parse().unwrap(),
            ..DemoAddrs::default()
        };
        let cfg = prepare(&dir, addrs).unwrap();
        cfg.validate().unwrap();
        assert!(dir.join("sipfront-demo.db").exists());
        assert!(cfg.credentials.url.contains(&dir.display().to_string()));
        assert!(cfg.registrar.persist.contains(&dir.display().to_string()));
        assert_eq!(cfg.listen.udp, [addrs.sip]);
        // Twice is fine (the users are inserted once).
        prepare(&dir, addrs).unwrap();
    }

    #[test]
    fn banner_says_how_to_stop_and_what_next() {
        let b = banner(&DemoAddrs::default(), Path::new("/tmp/x"), true, true);
        for s in [
            "Ctrl-C",
            "http://127.0.0.1:8080/",
            "`sipfront ctl stats`",
            "call 600",
            "removed when the demo stops",
        ] {
            assert!(b.contains(s), "missing {s:?} in\n{b}");
        }
        let other = DemoAddrs {
            admin: "127.0.0.1:9999".parse().unwrap(),
            ..DemoAddrs::default()
        };
        let b = banner(&other, Path::new("/tmp/x"), false, false);
        assert!(
            b.contains("sipfront ctl --admin 127.0.0.1:9999 stats"),
            "{b}"
        );
        assert!(b.contains("could not start"), "{b}");
    }
}
