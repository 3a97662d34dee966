//! Embedded SQLite store (default): one file, WAL mode, table `location`.
//!
//! Columns follow Kamailio's `location` names where one exists (`contact`, `received`,
//! `path`, `q`, `callid`, `cseq`, `user_agent`), with exact integer times in ms.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::row::{join_path, split_path, Row};
use super::{PersistError, Store};
use crate::registrar::binding::Transport;

pub(crate) struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS location (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    received TEXT NOT NULL,
    transport TEXT NOT NULL DEFAULT 'udp',
    worker INTEGER NOT NULL DEFAULT 0,
    nated INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL DEFAULT '',
    expires_ms INTEGER NOT NULL,
    q INTEGER NOT NULL DEFAULT -1,
    callid TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    registered_s INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS location_expires ON location (expires_ms);
";

impl SqliteStore {
    pub(crate) fn open(path: &str) -> Result<SqliteStore, PersistError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<Row>, PersistError> {
        let mut st = self.conn.prepare(
            "SELECT aor, contact, received, transport, worker, nated, path, expires_ms, q,
                    callid, cseq, user_agent, registered_s FROM location",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, i64>(10)?,
                r.get::<_, String>(11)?,
                r.get::<_, i64>(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (
                aor,
                contact,
                received,
                transport,
                worker,
                nated,
                path,
                exp,
                q,
                callid,
                cseq,
                ua,
                since,
            ) = r?;
            out.push(Row {
                aor,
                contact,
                dest: received
                    .parse()
                    .map_err(|_| PersistError::BadRow("received"))?,
                transport: Transport::parse(&transport).unwrap_or_default(),
                worker: u16::try_from(worker).map_err(|_| PersistError::BadRow("worker"))?,
                nated: nated != 0,
                path: split_path(&path),
                expires_at_ms: u64::try_from(exp)
                    .map_err(|_| PersistError::BadRow("expires_ms"))?,
                q: u16::try_from(q).ok().filter(|q| *q <= 1000),
                call_id: callid,
                cseq: u32::try_from(cseq).map_err(|_| PersistError::BadRow("cseq"))?,
                user_agent: ua,
                since_s: u32::try_from(since).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn write(&mut self, aors: &[(Arc<str>, Vec<Row>)], all: bool) -> Result<(), PersistError> {
        let tx = self.conn.transaction()?;
        {
            if all {
                tx.execute("DELETE FROM location", [])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM location WHERE aor = ?1")?;
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO location (aor, contact, received, transport, worker, nated,
                     path, expires_ms, q, callid, cseq, user_agent, registered_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for (aor, rows) in aors {
                if !all {
                    del.execute([&**aor])?;
                }
                for r in rows {
                    ins.execute(params![
                        r.aor,
                        r.contact,
                        r.dest.to_string(),
                        r.transport.as_str(),
                        r.worker,
                        r.nated,
                        join_path(&r.path),
                        i64::try_from(r.expires_at_ms).unwrap_or(i64::MAX),
                        r.q.map_or(-1, i64::from),
                        r.call_id,
                        r.cseq,
                        r.user_agent,
                        r.since_s,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}
