//! The admin API's bearer token against the REAL `sipfront`: with `[admin] token_file`, a
//! request without the token or with a wrong one gets 401, the right one 200 (`/healthz`
//! needs none); `sipfront ctl` sends the token from `--token-file` or from the config's
//! `[admin] token_file` (`--config`), and fails clearly without it; the token never shows
//! in the proxy's log; and `check-config` refuses a non-loopback `[admin] listen` without a
//! token file, naming `admin.token_file`.
//!
//! Setup: a [`Scene`] without the stand-in (no SIP traffic is needed), the admin API on a
//! free loopback port, the token in a file of the scene's directory.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::admin::{ctl, free_admin_addr};
use support::procs::sipfront_bin;
use support::proxy::Tune;
use support::{Scene, Setup};

const TOKEN: &str = "e2e-token-5f1c0a9b27d84e36";

/// `GET path` with an optional `Authorization` value: the status. Retries a refused
/// connection until the admin API listens (it binds right after the workers answer SIP).
fn status(admin: SocketAddr, path: &str, auth: Option<&str>) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match TcpStream::connect_timeout(&admin, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::yield_now();
            }
            Err(e) => panic!("admin API on {admin}: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"))
}

#[test]
fn bearer_token_is_required_and_ctl_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec!["127.0.0.2:5080".parse().unwrap()],
        tune: Tune {
            admin: Some(admin),
            admin_token_file: Some(token_file.clone()),
            log_level: Some("debug"),
            ..Tune::default()
        },
        ..Setup::default()
    });

    assert_eq!(status(admin, "/v1/stats", None), 401);
    assert_eq!(
        status(admin, "/v1/stats", Some("Bearer wrong-token-5f1c0a9b27d8")),
        401
    );
    assert_eq!(status(admin, "/metrics", Some(TOKEN)), 401, "no scheme");
    assert_eq!(
        status(admin, "/v1/stats", Some(&format!("Bearer {TOKEN}"))),
        200
    );
    assert_eq!(
        status(admin, "/metrics", Some(&format!("bearer {TOKEN}"))),
        200
    );
    assert_eq!(status(admin, "/healthz", None), 200);

    // ctl without a token: refused, with a hint; with --token-file or --config: served.
    let out = ctl(admin, &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("--token-file"),
        "{err}"
    );
    let file = token_file.display().to_string();
    let out = ctl(admin, &["--token-file", &file, "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sipfront"));
    let config = scene.dir().join("sipfront.toml").display().to_string();
    let out = Command::new(sipfront_bin())
        .args(["ctl", "--config", &config, "regs"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl --config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("registered AORs"));

    // The token is in no log line (the proxy logs at debug level here).
    let log = std::fs::read_to_string(scene.dir().join("sipfront.err")).unwrap();
    assert!(log.contains("admin API listening"), "{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}

/// `sipfront check-config --config FILE`.
fn check_config(file: &std::path::Path) -> std::process::Output {
    Command::new(sipfront_bin())
        .args(["check-config", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn check_config_refuses_a_public_listen_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipfront.toml");
    std::fs::write(
        &config,
        "[admin]\nenabled = true\nlisten = \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.token_file"), "{err}");
    // With a token file it passes.
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[admin]\nenabled = true\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let out = check_config(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
