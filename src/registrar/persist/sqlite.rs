//! Embedded SQLite store (default): one file, WAL mode, table `location`.
//!
//! Columns follow Kamailio's `location` names where one exists (`contact`, `received`,
//! `path`, `q`, `callid`, `cseq`, `user_agent`), with exact integer times in ms.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::row::{join_path, split_path, Row, UNKNOWN_SOCKET};
use super::{PersistError, Store};
use crate::sip::Transport;

pub(crate) struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS location (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    received TEXT NOT NULL,
    transport TEXT NOT NULL DEFAULT 'udp',
    socket TEXT NOT NULL DEFAULT '',
    nated INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL DEFAULT '',
    expires_ms INTEGER NOT NULL,
    q INTEGER NOT NULL DEFAULT -1,
    callid TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    registered_s INTEGER NOT NULL DEFAULT 0,
    instance TEXT NOT NULL DEFAULT '',
    reg_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS location_expires ON location (expires_ms);
";

impl SqliteStore {
    pub(crate) fn open(path: &str) -> Result<SqliteStore, PersistError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 64 MiB page cache: large batches insert into a warm B-tree.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.execute_batch(SCHEMA)?;
        // Files written before bindings kept their local socket have `worker` instead.
        let has_socket = conn
            .prepare("SELECT 1 FROM pragma_table_info('location') WHERE name = 'socket'")?
            .exists([])?;
        if !has_socket {
            conn.execute_batch("ALTER TABLE location ADD COLUMN socket TEXT NOT NULL DEFAULT ''")?;
        }
        // Files written before RFC 5626 outbound lack its two columns.
        let has_instance = conn
            .prepare("SELECT 1 FROM pragma_table_info('location') WHERE name = 'instance'")?
            .exists([])?;
        if !has_instance {
            conn.execute_batch(
                "ALTER TABLE location ADD COLUMN instance TEXT NOT NULL DEFAULT '';
                 ALTER TABLE location ADD COLUMN reg_id INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        Ok(SqliteStore { conn })
    }
}

/// One `location` row as a [`Row`].
fn to_row(r: &rusqlite::Row<'_>) -> Result<Row, PersistError> {
    let bad = PersistError::BadRow;
    let received: String = r.get(2)?;
    let transport: String = r.get(3)?;
    let path: String = r.get(6)?;
    Ok(Row {
        aor: r.get(0)?,
        contact: r.get(1)?,
        dest: received.parse().map_err(|_| bad("received"))?,
        transport: Transport::parse(&transport).unwrap_or_default(),
        socket: r.get::<_, String>(4)?.parse().unwrap_or(UNKNOWN_SOCKET),
        nated: r.get::<_, i64>(5)? != 0,
        path: split_path(&path),
        expires_at_ms: u64::try_from(r.get::<_, i64>(7)?).map_err(|_| bad("expires_ms"))?,
        q: u16::try_from(r.get::<_, i64>(8)?)
            .ok()
            .filter(|q| *q <= 1000),
        call_id: r.get(9)?,
        cseq: u32::try_from(r.get::<_, i64>(10)?).map_err(|_| bad("cseq"))?,
        user_agent: r.get(11)?,
        since_s: u32::try_from(r.get::<_, i64>(12)?).unwrap_or(0),
        instance: r.get(13)?,
        reg_id: u32::try_from(r.get::<_, i64>(14)?).unwrap_or(0),
    })
}

impl Store for SqliteStore {
    fn load(
        &mut self,
        sink: &mut dyn FnMut(Result<Row, PersistError>),
    ) -> Result<(), PersistError> {
        let mut st = self.conn.prepare(
            "SELECT aor, contact, received, transport, socket, nated, path, expires_ms, q,
                    callid, cseq, user_agent, registered_s, instance, reg_id FROM location",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            sink(to_row(r));
        }
        Ok(())
    }

    fn write(&mut self, aors: &[(Arc<str>, Vec<Row>)], all: bool) -> Result<(), PersistError> {
        let tx = self.conn.transaction()?;
        {
            if all {
                tx.execute("DELETE FROM location", [])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM location WHERE aor = ?1")?;
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO location (aor, contact, received, transport, socket, nated,
                     path, expires_ms, q, callid, cseq, user_agent, registered_s, instance, reg_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
                        r.socket.to_string(),
                        r.nated,
                        join_path(&r.path),
                        i64::try_from(r.expires_at_ms).unwrap_or(i64::MAX),
                        r.q.map_or(-1, i64::from),
                        r.call_id,
                        r.cseq,
                        r.user_agent,
                        r.since_s,
                        r.instance,
                        r.reg_id,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}
