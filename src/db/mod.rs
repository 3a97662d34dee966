//! Credential sources and the credential cache: the passwords of Asterisk's realtime tables
//! (MySQL/MariaDB or SQLite), held in memory so a worker never waits for the database.
//!
//! Data flow:
//! - start ([`CredentialService::start`]): the [`config`] is resolved into a table layout,
//!   a connection is opened ([`source`]), every row is streamed ([`schema`] turns each row into
//!   a [`Credential`]: HA1s for the proxy realm) into the [`CredentialCache`].
//! - lookup (worker threads, never blocking): [`CredentialCache::lookup`] answers `Found`,
//!   `Unknown` (negatively cached) or `Miss`.
//! - miss: the worker calls [`LookupPool::request`] with a token and parks the request; a small
//!   pool of blocking DB threads ([`pool`]) queries the one user (concurrent misses for the
//!   same user share one query), fills the cache (or the negative cache) and sends a
//!   [`LookupDone`] back on the worker's channel, then calls the worker's waker.
//! - refresh ([`refresh`]): a background thread reloads every row every `refresh_secs`,
//!   replacing changed credentials and removing users that disappeared; readers keep reading
//!   the current entries meanwhile.
//! - DB down: cached users keep working; misses get [`DbError`] (the core answers 503/500,
//!   never 401/403); threads reconnect with exponential backoff.

pub mod cache;
pub mod config;
pub mod mysql_source;
pub mod pool;
pub mod refresh;
pub mod schema;
pub mod service;
pub mod source;
pub mod sqlite_source;

use std::sync::Arc;

pub use cache::{CredentialCache, Lookup};
pub use config::{ConfigError, CredentialsConfig, PasswordKind, Schema};
pub use pool::{LookupDone, LookupPool, PoolFull, WakeFn};
pub use refresh::{RefreshError, RefreshHandle, RefreshStats};
pub use service::CredentialService;

/// Errors of the credential layer. Cloneable: one failed query answers every coalesced waiter.
/// Never contains the database password.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("credentials config: {0}")]
    Config(#[from] ConfigError),
    #[error("credentials.url: malformed database URL")]
    BadUrl,
    #[error("mysql: {0}")]
    Mysql(#[source] Arc<mysql::Error>),
    #[error("sqlite: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("table {table} has no column {column}")]
    MissingColumn { table: Box<str>, column: Box<str> },
    #[error("database unavailable (reconnecting, next attempt in {retry_in_ms} ms)")]
    Unavailable { retry_in_ms: u64 },
    #[error("cannot start database thread: {0}")]
    Thread(#[source] Arc<std::io::Error>),
    #[error("credential service is shutting down")]
    Shutdown,
    /// The first load failed (the database is down or unreachable).
    #[error("cannot read the credential database {url} at start: {source}\n  (check [credentials] url and that the database is up; to start anyway with an empty cache that fills once the database answers, set [credentials] start_without_db = true)")]
    AtStart {
        url: Box<str>,
        #[source]
        source: Box<DbError>,
    },
}

impl From<mysql::Error> for DbError {
    fn from(e: mysql::Error) -> Self {
        match e {
            // A URL error may quote the URL (and its password): never pass it on.
            mysql::Error::UrlError(_) => DbError::BadUrl,
            other => DbError::Mysql(Arc::new(other)),
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(Arc::new(e))
    }
}

/// Milliseconds since the UNIX epoch from the system clock (the I/O threads of this module
/// are not sans-IO; the cache itself takes `now_ms` from its caller).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
