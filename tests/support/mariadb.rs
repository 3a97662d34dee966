//! A throw-away MariaDB/MySQL database holding Asterisk's chan_sip `sippeers` table, for the
//! end-to-end tests whose proxy reads its credentials from a real server.
//!
//! The server's URL comes from `SIPFRONT_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`). [`SippeersDb::create`] returns `None` only when
//! `SIPFRONT_SKIP_MYSQL=1`; an unreachable server fails the test. The database gets a unique
//! name and is dropped, with every MariaDB user the test created, when the guard drops (also
//! while a failed test unwinds). The outage helpers revoke a dedicated user's privileges and
//! kill its connections: the shared server itself is never stopped.

use std::sync::atomic::{AtomicU64, Ordering};

use mysql::prelude::Queryable;
use mysql::{Conn, Opts};

/// The `sippeers` layout of Asterisk's realtime docs (the columns a chan_sip setup has).
const SIPPEERS: &str = "CREATE TABLE sippeers (id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(40) NOT NULL UNIQUE, host VARCHAR(40) DEFAULT 'dynamic',
    type ENUM('friend','user','peer') DEFAULT 'friend', context VARCHAR(40) DEFAULT 'phones',
    secret VARCHAR(40), md5secret VARCHAR(40), ipaddr VARCHAR(45), port INT,
    regseconds INT, useragent VARCHAR(255))";

/// Rows per multi-row INSERT when seeding many users.
const INSERT_CHUNK: usize = 1000;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The server to test against, or `None` when `SIPFRONT_SKIP_MYSQL=1`.
pub fn server_opts() -> Option<Opts> {
    if std::env::var("SIPFRONT_SKIP_MYSQL").as_deref() == Ok("1") {
        eprintln!("SIPFRONT_SKIP_MYSQL=1: skipping a MariaDB test");
        return None;
    }
    let url = std::env::var("SIPFRONT_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    Some(Opts::from_url(&url).expect("SIPFRONT_TEST_MYSQL_URL is not a mysql:// URL"))
}

/// A uniquely named database (see [`TestDb::with_ddl`]); [`SippeersDb::create`] makes one
/// with an empty `sippeers` table.
pub struct TestDb {
    admin: Conn,
    /// How the test reaches the server (its admin login).
    pub opts: Opts,
    pub name: String,
    /// MariaDB users created by the test (dropped at the end).
    users: Vec<String>,
}

/// The database of the end-to-end tests: an empty `sippeers` table.
pub type SippeersDb = TestDb;

impl TestDb {
    /// A database with the `sippeers` table.
    pub fn create() -> Option<TestDb> {
        TestDb::with_ddl(SIPPEERS)
    }

    /// A database holding the tables `ddl` creates (statements separated by `;`).
    pub fn with_ddl(ddl: &str) -> Option<TestDb> {
        let opts = server_opts()?;
        let mut admin = Conn::new(opts.clone()).unwrap_or_else(|e| {
            panic!("MariaDB unreachable ({e}); set SIPFRONT_SKIP_MYSQL=1 to skip")
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "sipfront_e2e_{}_{nanos}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .query_drop(format!("CREATE DATABASE `{name}`"))
            .expect("create the test database");
        admin
            .query_drop(format!("USE `{name}`"))
            .expect("use the test database");
        for stmt in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            admin
                .query_drop(stmt)
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
        Some(TestDb {
            admin,
            opts,
            name,
            users: Vec::new(),
        })
    }

    /// Runs one statement as the admin user.
    pub fn exec(&mut self, sql: &str) {
        self.admin
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Inserts `(name, secret)` rows, many per statement.
    pub fn insert_users<'a>(&mut self, users: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let users: Vec<(&str, &str)> = users.into_iter().collect();
        for chunk in users.chunks(INSERT_CHUNK) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|(n, s)| format!("('{n}', '{s}')"))
                .collect();
            self.exec(&format!(
                "INSERT INTO sippeers (name, secret) VALUES {}",
                rows.join(", ")
            ));
        }
    }

    pub fn set_secret(&mut self, user: &str, secret: &str) {
        self.exec(&format!(
            "UPDATE sippeers SET secret = '{secret}' WHERE name = '{user}'"
        ));
    }

    pub fn delete_user(&mut self, user: &str) {
        self.exec(&format!("DELETE FROM sippeers WHERE name = '{user}'"));
    }

    /// The proxy's `[credentials] url` for this database: as `login` = (user, password), or
    /// with the admin URL's credentials.
    pub fn url(&self, login: Option<(&str, &str)>) -> String {
        let host = self.opts.get_ip_or_hostname();
        let port = self.opts.get_tcp_port();
        let auth = match login {
            Some((u, p)) => format!("{u}:{p}"),
            None => match (self.opts.get_user(), self.opts.get_pass()) {
                (Some(u), Some(p)) => format!("{u}:{p}"),
                (Some(u), None) => u.to_owned(),
                _ => "root".to_owned(),
            },
        };
        format!("mysql://{auth}@{host}:{port}/{}", self.name)
    }

    /// A dedicated MariaDB user with SELECT on this database only; returns its name.
    pub fn create_login(&mut self, password: &str) -> String {
        let user = format!(
            "sfe2e{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        for host in ["%", "localhost"] {
            self.exec(&format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"
            ));
        }
        self.users.push(user.clone());
        self.grant(&user);
        user
    }

    pub fn grant(&mut self, user: &str) {
        for host in ["%", "localhost"] {
            self.exec(&format!(
                "GRANT SELECT ON `{}`.* TO '{user}'@'{host}'",
                self.name
            ));
        }
    }

    /// The database "goes away" for `user`: privileges revoked, open connections killed.
    pub fn revoke_and_kill(&mut self, user: &str) {
        for host in ["%", "localhost"] {
            self.exec(&format!(
                "REVOKE ALL PRIVILEGES ON `{}`.* FROM '{user}'@'{host}'",
                self.name
            ));
        }
        let ids: Vec<u64> = self
            .admin
            .exec(
                "SELECT id FROM information_schema.processlist WHERE user = ?",
                (user,),
            )
            .expect("read the process list");
        for id in ids {
            // The connection may be gone already.
            let _ = self.admin.query_drop(format!("KILL {id}"));
        }
    }
}

/// `LOCK TABLES sippeers WRITE` held by a connection of its own: every reader of the table
/// (the proxy's lookups and reloads) waits until the guard drops (`UNLOCK TABLES`, then the
/// connection closes). Drop it before the [`SippeersDb`] (declare it after).
pub struct TableLock {
    conn: Conn,
}

impl SippeersDb {
    /// Locks the `sippeers` table for writing from a new admin connection.
    pub fn lock_sippeers(&self) -> TableLock {
        let mut conn = Conn::new(self.opts.clone()).expect("a second MariaDB connection");
        conn.query_drop(format!("USE `{}`", self.name))
            .expect("use the test database");
        conn.query_drop("LOCK TABLES sippeers WRITE")
            .expect("LOCK TABLES sippeers WRITE");
        TableLock { conn }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.conn.query_drop("UNLOCK TABLES");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self
            .admin
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        for u in std::mem::take(&mut self.users) {
            for host in ["%", "localhost"] {
                let _ = self
                    .admin
                    .query_drop(format!("DROP USER IF EXISTS '{u}'@'{host}'"));
            }
        }
    }
}
