//! The running proxy's admin API as the protection tests see it (`tests/e2e_protect.rs`):
//! a free loopback TCP port for `[admin] listen`, a plain HTTP/1.1 GET (`/metrics`), one
//! Prometheus sample read out of the text format, and `sipfront ctl` run as a child process
//! against the same address (the way an operator runs it).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::procs::sipfront_bin;

/// How long one admin request may take (connect, write, read).
const ADMIN_WAIT: Duration = Duration::from_secs(5);

/// A free TCP port on 127.0.0.1 for `[admin] listen`: bound to port 0, then released. Ports
/// handed out in this process are never handed out twice.
pub fn free_admin_addr() -> SocketAddr {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe listener");
        let addr = l.local_addr().expect("probe address");
        if taken.insert(addr.port()) {
            return addr;
        }
    }
    panic!("no free TCP port on 127.0.0.1");
}

/// `GET path` on the admin API: (status, body). Panics when the API cannot be reached.
pub fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect_timeout(&admin, ADMIN_WAIT)
        .unwrap_or_else(|e| panic!("connect to the admin API on {admin}: {e}"));
    conn.set_read_timeout(Some(ADMIN_WAIT))
        .expect("read timeout");
    conn.set_write_timeout(Some(ADMIN_WAIT))
        .expect("write timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("send GET {path} to {admin}: {e}"));
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to GET {path} from {admin}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer to GET {path}: {head:?}"));
    (status, body.to_owned())
}

/// The value of the sample `series` (metric name with its labels exactly as exposed, e.g.
/// `sipfront_dropped_total{reason="rate_limited"}`) in a Prometheus text exposition; 0 when
/// the series is absent (a counter that never moved may not be exposed).
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name.trim() == series).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// `GET /metrics` and one sample of it (see [`sample`]).
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
    sample(&body, series)
}

/// `sipfront ctl --admin ADMIN ARGS...`, run to completion (its own `--timeout` bounds it).
pub fn ctl(admin: SocketAddr, args: &[&str]) -> Output {
    Command::new(sipfront_bin())
        .arg("ctl")
        .arg("--admin")
        .arg(admin.to_string())
        .args(["--timeout", "5"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run sipfront ctl {args:?}: {e}"))
}

/// [`ctl`] that must succeed; returns its standard output.
pub fn ctl_ok(admin: SocketAddr, args: &[&str]) -> String {
    let out = ctl(admin, args);
    assert!(
        out.status.success(),
        "sipfront ctl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
