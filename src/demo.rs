//! `sipfront demo`: a working proxy on the embedded SQLite default with sample users, for a
//! first look without a database server or a config file.
//!
//! It creates (once) a SQLite file in the current directory with Asterisk's chan_sip
//! realtime table `sippeers` holding users 1001, 1002 and 1003 (passwords `secret1001`, ...),
//! and returns the configuration that uses it: listen on 127.0.0.1:5060, Asterisk expected on
//! 127.0.0.2:5080, bindings persisted next to it, the admin API (`sipfront ctl`, `/metrics`)
//! on 127.0.0.1:8080.

use std::path::Path;

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
    #[error("current directory: {0}")]
    Cwd(#[from] std::io::Error),
}

/// Create the demo database in `dir` if needed and return the demo configuration.
pub fn prepare(dir: &Path) -> Result<Config, DemoError> {
    let dir = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()?.join(dir)
    };
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
