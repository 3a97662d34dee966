//! SQLite source (rusqlite, bundled): the same tables as Asterisk's SQLite realtime, opened
//! read-only. Rows are stepped one at a time.

use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::config::{CredentialsConfig, Layout};
use super::schema::{plan, probe_sql, Plan, Quote, RawRow};
use super::source::Source;
use super::DbError;

pub struct SqliteSource {
    conn: Connection,
    plan: Plan,
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => std::str::from_utf8(b).ok().map(str::to_string),
    }
}

impl SqliteSource {
    pub fn open(path: &str, cfg: &CredentialsConfig, layout: &Layout) -> Result<Self, DbError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))?;
        let present: Vec<String> = {
            let stmt = conn.prepare(&probe_sql(layout, Quote::Double))?;
            stmt.column_names()
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        let plan = plan(layout, &present, Quote::Double)?;
        Ok(SqliteSource { conn, plan })
    }

    fn each(
        &self,
        sql: &str,
        param: Option<&str>,
        sink: &mut dyn FnMut(RawRow),
    ) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = match param {
            Some(p) => stmt.query([p])?,
            None => stmt.query([])?,
        };
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let mut r = RawRow::default();
            for (i, slot) in self.plan.slots.iter().enumerate() {
                r.set(*slot, text(row.get_ref(i)?));
            }
            if param.is_none_or(|u| u == r.user) {
                n += 1;
                sink(r);
            }
        }
        Ok(n)
    }
}

impl Source for SqliteSource {
    fn load_all(&mut self, sink: &mut dyn FnMut(RawRow)) -> Result<u64, DbError> {
        let sql = self.plan.select_all.clone();
        self.each(&sql, None, sink)
    }

    fn load_user(&mut self, user: &str, sink: &mut dyn FnMut(RawRow)) -> Result<(), DbError> {
        let sql = self.plan.select_one.clone();
        self.each(&sql, Some(user), sink).map(|_| ())
    }
}
