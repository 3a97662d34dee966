//! The database behind the cache: one blocking connection that can stream every credential
//! row or fetch one user's rows. Implemented for MySQL/MariaDB ([`super::mysql_source`]) and
//! SQLite ([`super::sqlite_source`]); each owner thread (refresher, pool workers) holds its own.

use super::config::{backend_of, Backend, CredentialsConfig, Layout};
use super::schema::RawRow;
use super::DbError;

/// A connected credential source.
pub trait Source: Send {
    /// Streams every row to `sink`, one at a time; returns the number of rows.
    fn load_all(&mut self, sink: &mut dyn FnMut(RawRow)) -> Result<u64, DbError>;
    /// The rows whose user column equals `user` exactly (case-sensitive, whatever the
    /// database collation says).
    fn load_user(&mut self, user: &str, sink: &mut dyn FnMut(RawRow)) -> Result<(), DbError>;
}

/// Opens a connection for `cfg` and prepares the statements for `layout`.
pub fn connect(cfg: &CredentialsConfig, layout: &Layout) -> Result<Box<dyn Source>, DbError> {
    match backend_of(&cfg.url)? {
        Backend::Mysql => Ok(Box::new(super::mysql_source::MysqlSource::connect(
            cfg, layout,
        )?)),
        Backend::Sqlite(path) => Ok(Box::new(super::sqlite_source::SqliteSource::open(
            &path, cfg, layout,
        )?)),
    }
}
