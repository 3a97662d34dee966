//! MySQL/MariaDB store in Kamailio's `location` table layout (usrloc schema version 9).
//!
//! Mapping: `username`/`domain` from the AOR, `contact`, `received` = `sip:<source>;
//! transport=<t>`, `path` (entries separated by line feeds), `expires` and `last_modified`
//! as UTC DATETIME (second precision: expiry rounded up), `q` (-1 when unset, like
//! Kamailio), `callid`, `cseq`, `user_agent`, `flags` bit 0 = NATed (use `received`),
//! `socket` = the proxy's local socket as `proto:ip:port` (Kamailio's form), `ruid` = stable id of the binding. The session runs in
//! UTC so `FROM_UNIXTIME`/`UNIX_TIMESTAMP` convert exactly.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mysql::prelude::Queryable;
use mysql::{Opts, Pool, PooledConn, TxOpts};

use super::row::{join_path, split_path, Row, UNKNOWN_SOCKET};
use super::{PersistError, Store};
use crate::sip::Transport;

pub(crate) struct MysqlStore {
    conn: PooledConn,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS location (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INT(11) DEFAULT 1 NOT NULL,
    last_modified DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INT(11) DEFAULT 0 NOT NULL,
    cflags INT(11) DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INT(11) DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INT(11) DEFAULT 0 NOT NULL,
    server_id INT(11) DEFAULT 0 NOT NULL,
    connection_id INT(11) DEFAULT 0 NOT NULL,
    keepalive INT(11) DEFAULT 0 NOT NULL,
    `partition` INT(11) DEFAULT 0 NOT NULL,
    CONSTRAINT ruid_idx UNIQUE (ruid),
    KEY account_contact_idx (username, domain, contact),
    KEY expires_idx (expires)
)";

fn ruid(aor: &str, contact: &str, reg_id: u32) -> String {
    // Stable across runs: FNV-1a over both strings (and the RFC 5626 reg-id: two flows of
    // one phone may register the same Contact).
    let mut h = crate::util::fnv::Fnv::default();
    aor.hash(&mut h);
    contact.hash(&mut h);
    if reg_id != 0 {
        reg_id.hash(&mut h);
    }
    format!("sf-{:016x}", h.finish())
}

/// Kamailio's `socket` column: `proto:ip:port` (IPv6 in brackets).
fn parse_socket(s: &str) -> Option<std::net::SocketAddr> {
    let (_proto, addr) = s.split_once(':')?;
    addr.parse().ok()
}

fn split_aor(aor: &str) -> (&str, &str) {
    aor.rsplit_once('@').unwrap_or((aor, ""))
}

fn parse_received(s: &str) -> Option<(std::net::SocketAddr, Transport)> {
    let rest = s.strip_prefix("sip:")?;
    let (addr, params) = rest.split_once(';').unwrap_or((rest, ""));
    let t = params
        .split(';')
        .find_map(|p| p.strip_prefix("transport="))
        .and_then(Transport::parse)
        .unwrap_or_default();
    Some((addr.parse().ok()?, t))
}

fn get<T: mysql::prelude::FromValue>(r: &mysql::Row, i: usize) -> Result<T, PersistError> {
    r.get_opt::<T, usize>(i)
        .and_then(Result::ok)
        .ok_or(PersistError::BadRow("location column type"))
}

/// One `location` row as a [`Row`].
fn to_row(r: &mysql::Row) -> Result<Row, PersistError> {
    let user: String = get(r, 0)?;
    let domain: Option<String> = get(r, 1)?;
    let contact: String = get(r, 2)?;
    let received: Option<String> = get(r, 3)?;
    let path: Option<String> = get(r, 4)?;
    let exp: i64 = get(r, 5)?;
    let q: f64 = get(r, 6)?;
    let callid: String = get(r, 7)?;
    let cseq: i64 = get(r, 8)?;
    let ua: String = get(r, 9)?;
    let flags: i64 = get(r, 10)?;
    let socket: Option<String> = get(r, 11)?;
    let since: i64 = get(r, 12)?;
    let instance: Option<String> = get(r, 13)?;
    let reg_id: i64 = get(r, 14)?;
    let aor = match domain {
        Some(d) if !d.is_empty() => format!("{user}@{d}"),
        _ => user,
    };
    let (dest, transport) = received
        .as_deref()
        .and_then(parse_received)
        .ok_or(PersistError::BadRow("received"))?;
    Ok(Row {
        aor,
        contact,
        dest,
        transport,
        socket: socket
            .as_deref()
            .and_then(parse_socket)
            .unwrap_or(UNKNOWN_SOCKET),
        nated: flags & 1 != 0,
        path: path.as_deref().map(split_path).unwrap_or_default(),
        expires_at_ms: u64::try_from(exp).unwrap_or(0).saturating_mul(1000),
        q: (q >= 0.0).then(|| (q * 1000.0).round().clamp(0.0, 1000.0) as u16),
        call_id: callid,
        cseq: u32::try_from(cseq).unwrap_or(0),
        user_agent: ua,
        since_s: u32::try_from(since).unwrap_or(0),
        instance: instance.unwrap_or_default(),
        reg_id: u32::try_from(reg_id).unwrap_or(0),
    })
}

impl MysqlStore {
    pub(crate) fn open(url: &str) -> Result<MysqlStore, PersistError> {
        let pool = Pool::new(Opts::from_url(url)?)?;
        let mut conn = pool.get_conn()?;
        conn.query_drop("SET time_zone = '+00:00'")?;
        conn.query_drop(SCHEMA)?;
        Ok(MysqlStore { conn })
    }
}

impl Store for MysqlStore {
    fn load(
        &mut self,
        sink: &mut dyn FnMut(Result<Row, PersistError>),
    ) -> Result<(), PersistError> {
        let rows = self.conn.query_iter(
            "SELECT username, domain, contact, received, path, UNIX_TIMESTAMP(expires), q, callid,
                    cseq, user_agent, flags, socket, UNIX_TIMESTAMP(last_modified),
                    instance, reg_id
             FROM location",
        )?;
        for r in rows {
            sink(r.map_err(PersistError::from).and_then(|r| to_row(&r)));
        }
        Ok(())
    }

    fn write(&mut self, aors: &[(Arc<str>, Vec<Row>)], all: bool) -> Result<(), PersistError> {
        let mut tx = self.conn.start_transaction(TxOpts::default())?;
        if all {
            tx.query_drop("DELETE FROM location")?;
        }
        for (aor, rows) in aors {
            let (user, domain) = split_aor(aor);
            if !all {
                tx.exec_drop(
                    "DELETE FROM location WHERE username = ? AND domain = ?",
                    (user, domain),
                )?;
            }
            for r in rows {
                let received = format!("sip:{};transport={}", r.dest, r.transport.as_str());
                let q = r.q.map_or(-1.0, |q| f64::from(q) / 1000.0);
                tx.exec_drop(
                    "INSERT INTO location (ruid, username, domain, contact, received, path, expires,
                         q, callid, cseq, last_modified, flags, user_agent, socket, instance, reg_id)
                     VALUES (?, ?, ?, ?, ?, ?, FROM_UNIXTIME(?), ?, ?, ?, FROM_UNIXTIME(?), ?, ?, ?, ?, ?)",
                    mysql::Params::Positional(vec![
                        ruid(aor, &r.contact, r.reg_id).into(),
                        user.into(),
                        domain.into(),
                        r.contact.as_str().into(),
                        received.into(),
                        join_path(&r.path).into(),
                        r.expires_at_ms.div_ceil(1000).into(),
                        q.into(),
                        r.call_id.as_str().into(),
                        r.cseq.into(),
                        r.since_s.max(1).into(),
                        i32::from(r.nated).into(),
                        r.user_agent.as_str().into(),
                        format!("{}:{}", r.transport.as_str(), r.socket).into(),
                        (!r.instance.is_empty()).then_some(r.instance.as_str()).into(),
                        r.reg_id.into(),
                    ]),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
