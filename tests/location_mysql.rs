//! Location persistence in MySQL/MariaDB, Kamailio `location` layout.
//!
//! Uses `SIPFRONT_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`), creates and
//! drops its own database. Fails when the server is unreachable unless
//! `SIPFRONT_SKIP_MYSQL=1`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mysql::prelude::Queryable;
use sipfront::registrar::{ContactInput, Persister, RegisterRequest, Registrar, RegistrarConfig};
use sipfront::sip::Transport;

const T0: u64 = 1_764_159_377_000;

fn base_url() -> Option<String> {
    if std::env::var("SIPFRONT_SKIP_MYSQL").as_deref() == Ok("1") {
        return None;
    }
    Some(
        std::env::var("SIPFRONT_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into()),
    )
}

struct TempDb {
    base: String,
    name: String,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Ok(mut c) = mysql::Conn::new(mysql::Opts::from_url(&self.base).unwrap()) {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

#[test]
fn kamailio_layout_round_trip() {
    let Some(base) = base_url() else { return };
    let opts = mysql::Opts::from_url(&base).expect("SIPFRONT_TEST_MYSQL_URL is a mysql:// url");
    let mut admin =
        mysql::Conn::new(opts).expect("MariaDB reachable (set SIPFRONT_SKIP_MYSQL=1 to skip)");
    let name = format!("sipfront_loc_{}_{}", std::process::id(), T0 % 100_000);
    admin
        .query_drop(format!("CREATE DATABASE `{name}`"))
        .unwrap();
    let db = TempDb {
        base: base.clone(),
        name: name.clone(),
    };
    let url = format!("{}/{}", base.trim_end_matches('/'), db.name);

    let cfg = RegistrarConfig {
        persist: url,
        use_domain: true,
        ..RegistrarConfig::default()
    };
    let r = Arc::new(Registrar::new(cfg.clone()).unwrap());
    let p = Persister::start(&r, T0).unwrap();
    let contacts = [
        ContactInput {
            uri: "sip:1001@192.168.1.2:5060;transport=udp",
            expires: Some(3600),
            q: Some(500),
        },
        ContactInput {
            uri: "sip:1001@192.168.1.3:5060",
            expires: Some(60),
            q: None,
        },
    ];
    let req = RegisterRequest {
        aor: "1001@pbx.example.com",
        call_id: "abc@phone",
        cseq: 4,
        expires_header: None,
        star: false,
        contacts: &contacts,
        source: "198.51.100.7:40123".parse().unwrap(),
        transport: Transport::Udp,
        socket: "127.0.0.1:5060".parse().unwrap(),
        conn: 0,
        path: &["<sip:edge.example.net;lr>"],
        user_agent: Some("Phone/3"),
    };
    r.register(&req, T0, &mut Vec::new()).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    p.stop().unwrap();

    // Kamailio columns hold what Kamailio would show.
    let rows: Vec<(String, String, String, String, f64, String, i64)> = admin
        .query(format!(
            "SELECT username, domain, contact, received, q, callid, cseq FROM `{name}`.location ORDER BY contact"
        ))
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        (
            "1001".into(),
            "pbx.example.com".into(),
            "sip:1001@192.168.1.2:5060;transport=udp".into(),
            "sip:198.51.100.7:40123;transport=udp".into(),
            0.5,
            "abc@phone".into(),
            4
        )
    );
    assert_eq!(rows[1].4, -1.0);

    // Reload 2 minutes later: the 60 s binding is gone.
    let r2 = Arc::new(Registrar::new(cfg).unwrap());
    let p2 = Persister::start(&r2, T0 + 120_000).unwrap();
    assert_eq!(p2.stats().loaded.load(Ordering::Relaxed), 1);
    assert_eq!(p2.stats().expired_on_load.load(Ordering::Relaxed), 1);
    let mut got = Vec::new();
    r2.lookup("1001@pbx.example.com", T0 + 120_000, |b| {
        got.push((
            b.uri.to_owned(),
            b.dest,
            b.q,
            b.remaining_secs(T0 + 120_000),
            b.path.map(str::to_owned).collect::<Vec<_>>(),
        ))
    });
    assert_eq!(
        got,
        [(
            "sip:1001@192.168.1.2:5060;transport=udp".to_owned(),
            "198.51.100.7:40123".parse().unwrap(),
            Some(500),
            3480,
            vec!["<sip:edge.example.net;lr>".to_owned()]
        )]
    );
    p2.stop().unwrap();
    drop(db);
}
