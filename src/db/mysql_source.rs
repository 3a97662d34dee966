//! MySQL/MariaDB source (the `mysql` crate, blocking). Rows are streamed from the text
//! protocol result one at a time, so a full load never holds the whole table in memory.
//! The URL is handed to the driver (which understands `?socket=/path` for unix sockets) and is
//! never echoed in errors.

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Row, Value};

use super::config::{CredentialsConfig, Layout};
use super::schema::{plan, probe_sql, Plan, Quote, RawRow};
use super::source::Source;
use super::DbError;

pub struct MysqlSource {
    conn: Conn,
    plan: Plan,
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => String::from_utf8(b).ok(),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

impl MysqlSource {
    pub fn connect(cfg: &CredentialsConfig, layout: &Layout) -> Result<Self, DbError> {
        let opts = Opts::from_url(&cfg.url).map_err(|_| DbError::BadUrl)?;
        let t = Duration::from_secs(cfg.connect_timeout_secs.max(1));
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(t))
            .read_timeout(Some(t * 6))
            .write_timeout(Some(t * 6));
        let mut conn = Conn::new(opts)?;
        let probe = probe_sql(layout, Quote::Backtick);
        let present: Vec<String> = {
            let result = conn.query_iter(probe)?;
            result
                .columns()
                .as_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect()
        };
        let plan = plan(layout, &present, Quote::Backtick)?;
        Ok(MysqlSource { conn, plan })
    }
}

impl Source for MysqlSource {
    fn load_all(&mut self, sink: &mut dyn FnMut(RawRow)) -> Result<u64, DbError> {
        let plan = &self.plan;
        let mut n = 0u64;
        for row in self.conn.query_iter(plan.select_all.as_str())? {
            n += 1;
            sink(raw_of(plan, row?));
        }
        Ok(n)
    }

    fn load_user(&mut self, user: &str, sink: &mut dyn FnMut(RawRow)) -> Result<(), DbError> {
        let rows: Vec<Row> = self.conn.exec(&self.plan.select_one, (user,))?;
        for row in rows {
            let r = raw_of(&self.plan, row);
            if r.user == user {
                sink(r);
            }
        }
        Ok(())
    }
}

fn raw_of(plan: &Plan, row: Row) -> RawRow {
    let mut r = RawRow::default();
    for (slot, v) in plan.slots.iter().zip(row.unwrap()) {
        r.set(*slot, text(v));
    }
    r
}
