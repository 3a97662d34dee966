//! The client side of `sipfront ctl`: one HTTP request per command to the admin API with
//! `ureq`, and the answer turned into readable text.
//!
//! Flow: [`run`] maps a [`Command`] to a method, path and query; [`Client::request`] sends
//! it (with `Authorization: Bearer` when a token is known) and reads the whole answer; a
//! non-2xx status becomes [`CtlError::Status`] with the server's `error` message (a 401 with
//! a hint about the token file), and the JSON body is formatted by the command's printer. An
//! unreachable proxy is [`CtlError::Unreachable`], with a hint.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

/// What `sipfront ctl` can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Stats,
    Regs {
        user: Option<String>,
    },
    /// Every registration, fetched page by page (`GET /v1/registrations?all=1`).
    RegsAll,
    Unregister {
        user: String,
        uri: Option<String>,
    },
    Reload,
    Flush {
        user: String,
    },
    Bans,
    Unban {
        ip: String,
    },
    /// The Asterisk nodes and their state (`GET /v1/asterisk`).
    Asterisk,
    /// Drain (`drained`) or undrain one node (`POST /v1/asterisk/drain|undrain`).
    Drain {
        node: String,
        drained: bool,
    },
    /// The cluster as this node sees it (`GET /v1/cluster`).
    Cluster,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    #[error("bad admin address {0:?} (expected IP:PORT, e.g. 127.0.0.1:8080)")]
    BadAddress(String),
    #[error("cannot reach the sipfront admin API at {addr}: {source} (is sipfront running, with [admin] enabled = true and listen = \"{addr}\"?)")]
    Unreachable { addr: String, source: ureq::Error },
    #[error("admin API at {addr}: {source}")]
    Http { addr: String, source: ureq::Error },
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("malformed answer from the admin API: {0}")]
    BadAnswer(&'static str),
}

/// Longest wait for the TCP connection itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read (a full registration page is far below).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// A connection to one admin API.
pub struct Client {
    addr: String,
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for the admin API at `addr` (`IP:PORT` or `host:port`); every answer must
    /// come within `timeout`; `token` is sent as a bearer token.
    pub fn new(addr: &str, timeout: Duration, token: Option<String>) -> Result<Client, CtlError> {
        let sock: SocketAddr = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| CtlError::BadAddress(addr.to_owned()))?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Connecting is quick or hopeless; answering may take long (a reload).
            .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT)))
            .timeout_global(Some(timeout))
            .build();
        Ok(Client {
            addr: addr.to_owned(),
            base: format!("http://{sock}"),
            agent: ureq::Agent::new_with_config(config),
            token,
        })
    }

    /// Send one request; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, String), CtlError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! build {
            ($b:expr) => {{
                let mut b = $b;
                for (k, v) in query {
                    b = b.query(*k, *v);
                }
                if let Some(a) = &auth {
                    b = b.header("Authorization", a.as_str());
                }
                b
            }};
        }
        let sent = match method {
            "POST" => build!(self.agent.post(&url)).send_empty(),
            "DELETE" => build!(self.agent.delete(&url)).call(),
            _ => build!(self.agent.get(&url)).call(),
        };
        let mut resp = sent.map_err(|source| self.error(source))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|source| self.error(source))?;
        Ok((status, body))
    }

    fn error(&self, source: ureq::Error) -> CtlError {
        let addr = self.addr.clone();
        let unreachable = match &source {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect),
            ureq::Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::AddrNotAvailable
            ),
            _ => false,
        };
        if unreachable {
            CtlError::Unreachable { addr, source }
        } else {
            CtlError::Http { addr, source }
        }
    }

    /// One request; a non-2xx status or a body that is not JSON is an error.
    fn request_json(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, CtlError> {
        let (status, body) = self.request(method, path, query)?;
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let mut message = json
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| body.trim().to_owned(), str::to_owned);
            if status == 401 && self.token.is_none() {
                message.push_str(
                    " — this admin API needs a token: give --token-file FILE (or --config with [admin] token_file)",
                );
            }
            return Err(CtlError::Status { status, message });
        }
        if json.is_null() {
            return Err(CtlError::BadAnswer("body is not JSON"));
        }
        Ok(json)
    }
}

/// The answer of `POST /v1/reload` for people.
fn format_reload(json: &Value) -> String {
    let keys = |name: &str| -> String {
        let list: Vec<&str> = json
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    let mut out = format!("configuration reloaded\napplied: {}\n", keys("applied"));
    out.push_str(&format!(
        "need a restart (still running with the old values): {}\n",
        keys("restart_needed")
    ));
    if let Some(note) = json.get("log_level_note").and_then(Value::as_str) {
        out.push_str(&format!("log level: {note}\n"));
    }
    match (
        json.get("credential_users").and_then(Value::as_u64),
        json.get("credential_error").and_then(Value::as_str),
    ) {
        (Some(users), _) => out.push_str(&format!("credentials reloaded: {users} users\n")),
        (None, Some(e)) => out.push_str(&format!("credential reload failed (cache kept): {e}\n")),
        (None, None) => {}
    }
    out
}

/// Page size `ctl regs --all` asks for (the server's maximum).
const LIST_PAGE: usize = crate::registrar::MAX_PAGE;

/// `regs --all`: follow `next` until the listing ends; one table for all pages.
fn list_all(client: &Client) -> Result<String, CtlError> {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut users = 0usize;
    let mut after: Option<String> = None;
    loop {
        let limit = LIST_PAGE.to_string();
        let mut query = vec![("all", "1"), ("limit", limit.as_str())];
        if let Some(a) = &after {
            query.push(("after", a.as_str()));
        }
        let page = client.request_json("GET", "/v1/registrations", &query)?;
        let regs = page
            .get("registrations")
            .and_then(Value::as_array)
            .ok_or(CtlError::BadAnswer("no `registrations` list"))?;
        for r in regs {
            users += 1;
            for b in r
                .get("bindings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let nat = if b.get("nated").and_then(Value::as_bool) == Some(true) {
                    " (nat)"
                } else {
                    ""
                };
                rows.push([
                    s(r, "user").to_owned(),
                    s(b, "uri").to_owned(),
                    format!("{}{nat}", s(b, "dest")),
                    format!("{} s", n(b, &["expires_in"])),
                    s(b, "user_agent").to_owned(),
                ]);
            }
        }
        match page.get("next").and_then(Value::as_str) {
            // The cursor only moves forward; the same one twice would loop forever.
            Some(next) if after.as_deref() == Some(next) => {
                return Err(CtlError::BadAnswer("listing cursor did not advance"))
            }
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(format_table(&rows, users))
}

/// The `regs --all` table: columns as wide as their longest cell.
fn format_table(rows: &[[String; 5]], users: usize) -> String {
    let head = ["USER", "CONTACT", "ADDRESS", "EXPIRES", "USER-AGENT"];
    let mut w = head.map(str::len);
    for r in rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |cells: [&str; 5]| {
        let _ = writeln!(
            o,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    };
    line(head);
    for r in rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    let _ = writeln!(o, "{users} user(s), {} binding(s)", rows.len());
    o
}

/// Run `cmd` against the admin API; returns the text to print.
pub fn run(client: &Client, cmd: &Command) -> Result<String, CtlError> {
    let (method, path, query): (&str, &str, Vec<(&str, &str)>) = match cmd {
        Command::RegsAll => return list_all(client),
        Command::Stats => ("GET", "/v1/stats", vec![]),
        Command::Regs { user: None } => ("GET", "/v1/registrations", vec![]),
        Command::Regs { user: Some(u) } => ("GET", "/v1/registrations", vec![("user", u)]),
        Command::Unregister { user, uri } => {
            let mut q = vec![("user", user.as_str())];
            if let Some(uri) = uri {
                q.push(("uri", uri));
            }
            ("DELETE", "/v1/registrations", q)
        }
        Command::Reload => ("POST", "/v1/reload", vec![]),
        Command::Flush { user } => ("DELETE", "/v1/credentials", vec![("user", user)]),
        Command::Bans => ("GET", "/v1/bans", vec![]),
        Command::Unban { ip } => ("DELETE", "/v1/bans", vec![("ip", ip)]),
        Command::Asterisk => ("GET", "/v1/asterisk", vec![]),
        Command::Cluster => ("GET", "/v1/cluster", vec![]),
        Command::Drain { node, drained } => {
            let path = if *drained {
                "/v1/asterisk/drain"
            } else {
                "/v1/asterisk/undrain"
            };
            ("POST", path, vec![("node", node)])
        }
    };
    let json = client.request_json(method, path, &query)?;
    Ok(match cmd {
        Command::Stats => format_stats(&json),
        Command::RegsAll => String::new(),
        Command::Regs { user: None } => format!(
            "{} registered AORs, {} contacts (give a user to list its bindings)\n",
            n(&json, &["aors"]),
            n(&json, &["contacts"])
        ),
        Command::Regs { user: Some(_) } => format_bindings(&json),
        Command::Unregister { .. } => format!(
            "removed {} binding(s) of {}; {} left{}\n",
            n(&json, &["removed"]),
            s(&json, "aor"),
            n(&json, &["remaining"]),
            if json.get("unregistered").and_then(Value::as_bool) == Some(true) {
                " (Asterisk is told: Expires: 0)"
            } else {
                ""
            }
        ),
        Command::Reload => format_reload(&json),
        Command::Flush { user } => format!(
            "{user} flushed from the credential cache{}\n",
            if json.get("was_cached").and_then(Value::as_bool) == Some(true) {
                ""
            } else {
                " (it was not cached)"
            }
        ),
        Command::Bans => format_bans(&json),
        Command::Unban { ip } => format!("{ip} unbanned\n"),
        Command::Asterisk => format_nodes(&json),
        Command::Cluster => format_cluster(&json),
        Command::Drain { node, drained } => {
            let changed = json.get("changed").and_then(Value::as_bool) == Some(true);
            match (drained, changed) {
                (true, true) => format!("{node} drained: no new calls; its dialogs go on\n"),
                (true, false) => format!("{node} was already drained\n"),
                (false, true) => format!("{node} undrained: it gets new calls again\n"),
                (false, false) => format!("{node} was not drained\n"),
            }
        }
    })
}

/// `ctl asterisk`: one line per node.
fn format_nodes(v: &Value) -> String {
    let head = [
        "NODE", "STATE", "WEIGHT", "PING", "LATENCY", "PINGS", "DOWN/UP", "REPLAYED",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for node in v
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut state = s(node, "state").to_owned();
        if node.get("drained").and_then(Value::as_bool) == Some(true) {
            state.push_str(",drained");
        }
        if n(node, &["busy_ms"]) > 0 {
            state.push_str(&format!(",busy {} ms", n(node, &["busy_ms"])));
        }
        let ping = match node.get("last_ping_ms").and_then(Value::as_u64) {
            Some(ms) => format!("{ms} ms"),
            None => "-".to_owned(),
        };
        let replay = match node.get("replaying").and_then(Value::as_u64) {
            Some(sent) => format!("{} (replaying: {sent})", n(node, &["replayed"])),
            None => n(node, &["replayed"]).to_string(),
        };
        rows.push([
            s(node, "node").to_owned(),
            state,
            n(node, &["weight"]).to_string(),
            ping,
            format!("{} ms", n(node, &["latency_ms"])),
            format!(
                "{}/{}/{}",
                n(node, &["pings", "sent"]),
                n(node, &["pings", "answered"]),
                n(node, &["pings", "failed"])
            ),
            format!("{}/{}", n(node, &["went_down"]), n(node, &["came_up"])),
            replay,
        ]);
    }
    let mut w = head.map(str::len);
    for r in &rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |cells: [&str; 8]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<width$}  ", width = w[i]);
        }
        o.push_str(l.trim_end());
        o.push('\n');
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6], &r[7]]);
    }
    o.push_str("PINGS = sent/answered/failed; DOWN/UP = times the node went down / came back\n");
    o
}

/// The number at `path` (0 when absent).
fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn format_bindings(v: &Value) -> String {
    let mut o = String::new();
    let list = v.get("bindings").and_then(Value::as_array);
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return format!("{}: no bindings\n", s(v, "aor"));
    };
    let _ = writeln!(o, "{}: {} binding(s)", s(v, "aor"), list.len());
    for b in list {
        let _ = writeln!(
            o,
            "  {}\n    dest {}  expires in {} s  user-agent {:?}",
            s(b, "uri"),
            s(b, "dest"),
            n(b, &["expires_in"]),
            s(b, "user_agent")
        );
    }
    o
}

/// `ctl cluster`: this node, Redis, the live nodes, the sync counters.
fn format_cluster(v: &Value) -> String {
    let mut out = format!(
        "node {} at {}; redis {}\n",
        s(v, "node"),
        s(v, "address"),
        if v.get("redis_up").and_then(Value::as_bool) == Some(true) {
            "up"
        } else {
            "DOWN (serving from the local table)"
        }
    );
    let live: Vec<String> = v
        .get("live")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| format!("{} ({})", s(n, "name"), s(n, "address")))
        .collect();
    out.push_str(&format!("live nodes: {}\n", live.join(", ")));
    out.push_str(&format!(
        "written {} AORs ({} pending, {} full rewrites, {} queue overflows), {} redis errors\n",
        n(v, &["aors_written"]),
        n(v, &["pending"]),
        n(v, &["resyncs"]),
        n(v, &["queue_full"]),
        n(v, &["redis_errors"])
    ));
    out.push_str(&format!(
        "received {} updates, loaded {} AORs; requests forwarded {}, unreachable {}, delivered {}\n",
        n(v, &["updates_received"]),
        n(v, &["aors_loaded"]),
        n(v, &["forwarded"]),
        n(v, &["unreachable"]),
        n(v, &["delivered"])
    ));
    out
}

fn format_bans(v: &Value) -> String {
    if v.get("enabled").and_then(Value::as_bool) == Some(false) {
        return "no ban list in this sipfront (failed-auth bans not enabled)\n".to_owned();
    }
    let list = v
        .get("bans")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "no active bans\n".to_owned();
    }
    let mut o = String::new();
    for b in &list {
        let _ = writeln!(
            o,
            "{:<40} {:>7} s left  {}",
            s(b, "ip"),
            n(b, &["remaining_secs"]),
            s(b, "reason")
        );
    }
    o
}

fn latency_rows(
    o: &mut String,
    title: &str,
    rows: Option<&Vec<Value>>,
    name: impl Fn(&Value) -> String,
) {
    let Some(rows) = rows else { return };
    let _ = writeln!(
        o,
        "{title:<28} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "  {:<26} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name(r),
            n(r, &["count"]),
            f(r, "p50_us"),
            f(r, "p90_us"),
            f(r, "p99_us"),
            f(r, "p999_us"),
            f(r, "max_us")
        );
    }
}

fn format_stats(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sipfront {}, up {} s",
        s(v, "version"),
        n(v, &["uptime_secs"])
    );
    let sent = v
        .pointer("/sip/responses_sent")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, c)| c.as_u64().unwrap_or(0) > 0)
                .map(|(k, c)| format!("{k} {}", c.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let sip = |k: &str| n(v, &["sip", k]);
    let _ = writeln!(
        o,
        "sip          in: {} requests, {} responses; out: [{sent}]\n             forwarded {} requests, {} responses; retransmissions absorbed {}, sent {}; timeouts {}",
        sip("requests_received"), sip("responses_received"), sip("forwarded_requests"),
        sip("forwarded_responses"), sip("retransmissions_absorbed"), sip("retransmissions_sent"),
        sip("timeouts")
    );
    let _ = writeln!(
        o,
        "auth         ok {}, failed {}, challenges {}",
        n(v, &["auth", "ok"]),
        n(v, &["auth", "failed"]),
        n(v, &["auth", "challenges"])
    );
    let c = |k: &str| n(v, &["credentials", k]);
    let _ = writeln!(
        o,
        "credentials  cached {} (unknown {}), misses {}, db queries {} errors {}, pool queue {}, reloads ok {} failed {}",
        c("cached_users"), c("negative_cached"), c("cache_misses"), c("db_queries"),
        c("db_errors"), c("pool_queue"), c("refresh_ok"), c("refresh_failed")
    );
    let _ = writeln!(
        o,
        "registrar    AORs {}, contacts {}, REGISTERs accepted {}",
        n(v, &["registrar", "aors"]),
        n(v, &["registrar", "contacts"]),
        n(v, &["registrar", "registrations"])
    );
    let r = |k: &str| n(v, &["regfwd", k]);
    let _ = writeln!(
        o,
        "regfwd       sent {}, ok {}, failed {}, throttled {}, unregistered {}",
        r("sent"),
        r("ok"),
        r("failed"),
        r("throttled"),
        r("unregistered")
    );
    let _ = writeln!(
        o,
        "in flight    server {}, client {}",
        n(v, &["transactions", "server"]),
        n(v, &["transactions", "client"])
    );
    let d = |k: &str| n(v, &["drops", k]);
    let _ = writeln!(
        o,
        "drops        malformed {}, unmatched {}, overload {}, banned {}, rate-limited {}, scanner {}, outbox {}, transport {}, kernel {}",
        d("malformed"),
        d("unmatched"),
        d("overload"),
        d("banned"),
        d("rate_limited"),
        d("scanner"),
        d("outbox"),
        d("transport"),
        d("kernel")
    );
    let ov = |k: &str| n(v, &["overload", k]);
    let _ = writeln!(
        o,
        "overload     shed (503) {}, workers shedding {}, receive backlog {} bytes",
        ov("shed"),
        ov("shedding_workers"),
        ov("rx_backlog_bytes")
    );
    if let Some(b) = v.get("bans").and_then(Value::as_u64) {
        let _ = writeln!(o, "bans         {b}");
    }
    if v.get("hep").is_some_and(Value::is_object) {
        let h = |k: &str| n(v, &["hep", k]);
        let _ = writeln!(
            o,
            "hep capture  sent {}, dropped {}, failed {}",
            h("sent"),
            h("dropped"),
            h("failed")
        );
    }
    for w in v
        .get("workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ =
            writeln!(
            o,
            "worker {:<5} rx {}, tx {}, handed off {}, from others {}, dropped {}, send errors {}, kernel drops {}, backlog {} bytes{}",
            n(w, &["worker"]), n(w, &["rx"]), n(w, &["tx"]), n(w, &["handed_off"]),
            n(w, &["handoff_in"]), n(w, &["dropped"]), n(w, &["send_errors"]),
            n(w, &["kernel_drops"]), n(w, &["rx_backlog_bytes"]),
            if w.get("shedding").and_then(Value::as_bool) == Some(true) { ", shedding" } else { "" }
        );
    }
    // Only the stream transports that have seen a connection.
    for c in v
        .get("connections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| n(c, &["accepted"]) + n(c, &["refused"]) > 0)
    {
        let _ = writeln!(
            o,
            "{:<12} open {}, accepted {}, refused {}, closed {} ({} errors), handshake failures {}, bytes in {}, out {}",
            s(c, "transport"),
            n(c, &["open"]),
            n(c, &["accepted"]),
            n(c, &["refused"]),
            n(c, &["closed"]),
            n(c, &["errors"]),
            n(c, &["handshake_failures"]),
            n(c, &["bytes_in"]),
            n(c, &["bytes_out"]),
        );
    }
    latency_rows(
        &mut o,
        "processing (us)",
        v.get("latency").and_then(Value::as_array),
        |r| format!("{} {}", s(r, "kind"), s(r, "method")),
    );
    latency_rows(
        &mut o,
        "upstream (us)",
        v.get("upstream").and_then(Value::as_array),
        |r| format!("{} {}", s(r, "name"), s(r, "kind")),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_a_clear_error() {
        // A port nobody listens on: bind, learn the port, close.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let client = Client::new(&addr, Duration::from_secs(2), None).unwrap();
        let e = run(&client, &Command::Stats).unwrap_err();
        assert!(matches!(e, CtlError::Unreachable { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("cannot reach the sipfront admin API"));
        let e = Client::new("nonsense", Duration::from_secs(1), None).unwrap_err();
        assert!(matches!(e, CtlError::BadAddress(_)));
        assert!(e.to_string().contains("IP:PORT"), "{e}");
    }

    #[test]
    fn formats_the_registration_table() {
        let rows = [
            [
                "alice".into(),
                "sip:alice@192.0.2.1:5060".into(),
                "192.0.2.1:5060".into(),
                "30 s".into(),
                "Phone/1".into(),
            ],
            [
                "bob".into(),
                "sip:b@h".into(),
                "203.0.113.9:4000 (nat)".into(),
                "3600 s".into(),
                String::new(),
            ],
        ];
        let t = format_table(&rows, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("USER   CONTACT"), "{t}");
        // Columns line up: every row's contact starts where the header's does.
        let col = lines[0].find("CONTACT").unwrap();
        assert_eq!(lines[1].find("sip:alice").unwrap(), col, "{t}");
        assert_eq!(lines[2].find("sip:b@h").unwrap(), col, "{t}");
        assert!(
            lines[2].contains("(nat)") && lines[2].contains("3600 s"),
            "{t}"
        );
        assert_eq!(lines[3], "2 user(s), 2 binding(s)");
    }

    #[test]
    fn formats_the_node_table() {
        let v = serde_json::json!({"nodes": [
            {"node": "10.0.0.5:5060", "state": "up", "drained": true, "busy_ms": 0,
             "weight": 2, "last_ping_ms": 3, "latency_ms": 4,
             "pings": {"sent": 10, "answered": 9, "failed": 1}, "went_down": 1,
             "came_up": 1, "replaying": 12, "replayed": 40},
            {"node": "10.0.0.6:5060", "state": "down", "drained": false, "busy_ms": 1500,
             "weight": 1, "last_ping_ms": null, "latency_ms": 0,
             "pings": {"sent": 3, "answered": 0, "failed": 3}, "went_down": 1,
             "came_up": 0, "replaying": null, "replayed": 0}]});
        let t = format_nodes(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE           STATE"), "{t}");
        assert!(
            lines[1].contains("up,drained") && lines[1].contains("3 ms"),
            "{t}"
        );
        assert!(
            lines[1].contains("10/9/1") && lines[1].contains("40 (replaying: 12)"),
            "{t}"
        );
        assert!(
            lines[2].contains("down,busy 1500 ms") && lines[2].contains(" - "),
            "{t}"
        );
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[2].find("down").unwrap(), col, "{t}");
    }

    #[test]
    fn formats_bindings_and_stats() {
        let v = serde_json::json!({"aor": "a@r", "bindings": [
            {"uri": "sip:a@1.2.3.4", "dest": "1.2.3.4:5060", "expires_in": 30, "user_agent": "X"}]});
        let t = format_bindings(&v);
        assert!(
            t.contains("a@r: 1 binding(s)") && t.contains("expires in 30 s"),
            "{t}"
        );
        let v = serde_json::json!({"version": "0", "sip": {"requests_received": 5,
            "responses_sent": {"2xx": 2, "4xx": 0}}, "latency": [{"kind": "request",
            "method": "INVITE", "count": 3, "p50_us": 4.5}],
            "drops": {"kernel": 9}, "overload": {"shed": 8, "shedding_workers": 1},
            "hep": {"sent": 3, "dropped": 2, "failed": 1},
            "workers": [{"worker": 0, "kernel_drops": 9, "rx_backlog_bytes": 700, "shedding": true}]});
        let t = format_stats(&v);
        assert!(t.contains("in: 5 requests") && t.contains("[2xx 2]"), "{t}");
        assert!(t.contains("kernel 9") && t.contains("shed (503) 8"), "{t}");
        assert!(
            t.contains("hep capture  sent 3, dropped 2, failed 1"),
            "{t}"
        );
        assert!(
            t.contains("kernel drops 9, backlog 700 bytes, shedding"),
            "{t}"
        );
        assert!(t.contains("request INVITE") && t.contains("4.5"), "{t}");
    }
}
