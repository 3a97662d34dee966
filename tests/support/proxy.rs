//! The real `sipfront` binary under test: a seeded SQLite credentials database (Asterisk's
//! chan_sip `sippeers` table), a generated TOML config on a free loopback port with 2 workers,
//! and a readiness wait that sends OPTIONS until the proxy answers 200.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::procs::{sipfront_bin, Proc};

/// The digest realm and the local domain phones use.
pub const DOMAIN: &str = "sipfront.test";

/// How long one OPTIONS probe waits for its answer, and how many probes are sent.
const PROBE_WAIT: Duration = Duration::from_millis(100);
const PROBES: u32 = 150;

/// What a test may change in the proxy's configuration.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// `[asterisk] nodes`.
    pub nodes: Vec<SocketAddr>,
    /// `[timers] t1_ms` (default 500).
    pub t1_ms: Option<u64>,
    /// `[registrar] min_expires` (default 60).
    pub min_expires: Option<u32>,
    /// `[registrar] max_expires` (default 3600; also sets default_expires).
    pub max_expires: Option<u32>,
    /// `[credentials] keep_plain` (to answer an Asterisk challenge in another realm).
    pub keep_plain: bool,
    /// Settings of the registrar, auth and credential tests (`tests/e2e_registrar.rs`,
    /// `tests/e2e_auth.rs`).
    pub tune: Tune,
    /// The TLS listen address (set by [`Proxy::start`] when [`Tune::tls`]).
    pub tls_addr: Option<SocketAddr>,
    /// The WS and WSS listen addresses (set by [`Proxy::start`] when [`Tune::ws`]).
    pub ws_addrs: Option<(SocketAddr, Option<SocketAddr>)>,
}

/// Further settings, all off by default (NAT keepalives included: `[nat]` with an interval of 0).
#[derive(Debug, Clone, Default)]
pub struct Tune {
    /// `[credentials] url` instead of the seeded SQLite file (e.g. a MariaDB database);
    /// nothing is seeded then.
    pub credentials_url: Option<String>,
    /// `[credentials] refresh_secs`.
    pub refresh_secs: Option<u32>,
    /// `[credentials] reconnect_max_ms`.
    pub reconnect_max_ms: Option<u32>,
    /// `[credentials] negative_ttl_secs`.
    pub negative_ttl_secs: Option<u32>,
    /// `[auth] algorithms`, strongest first (e.g. `["SHA-256", "MD5"]`).
    pub algorithms: Vec<&'static str>,
    /// `[auth] uri_check` (`"strict"`, `"host"`, `"off"`).
    pub uri_check: Option<&'static str>,
    /// `[auth] failure_delay_ms`.
    pub failure_delay_ms: Option<u64>,
    /// `[registrar] unregistered_answer` (404 or 480).
    pub unregistered_answer: Option<u16>,
    /// `[registrar] persist` (default `"none"`), e.g. `sqlite:///DIR/location.db`.
    pub persist: Option<String>,
    /// `[registrar] persist_interval_ms`.
    pub persist_interval_ms: Option<u64>,
    /// `[asterisk] refresh_min_interval_secs` (`Some(0)`: every refresh is forwarded).
    pub refresh_min_interval_secs: Option<u32>,
    /// `[guard] allow`: sources never rate limited or banned (a sipp load from one address).
    pub guard_allow: Vec<&'static str>,
    /// `[log] level` (default `"warn"`).
    pub log_level: Option<&'static str>,
    /// `[log] format` (default `"text"`).
    pub log_format: Option<&'static str>,
    /// `[guard] rate_pps`: sustained datagrams per second per source.
    pub rate_pps: Option<u32>,
    /// `[guard] rate_burst`: datagrams at once after idling.
    pub rate_burst: Option<u32>,
    /// `[guard] ban_ip_failures`: failed authentications from one source before its ban.
    pub ban_ip_failures: Option<u32>,
    /// `[guard] ban_secs`: how long a ban lasts.
    pub ban_secs: Option<u32>,
    /// `[guard] persist = "DIR/bans.json"` (the test's directory): bans across restarts.
    pub ban_persist: bool,
    /// `[limits] max_transactions_per_worker`.
    pub max_transactions_per_worker: Option<usize>,
    /// `[limits] max_parked_per_worker`.
    pub max_parked_per_worker: Option<usize>,
    /// `[admin] enabled = true` with `listen` on this address (see [`super::admin`]).
    pub admin: Option<SocketAddr>,
    /// `[limits] shed_backlog_bytes`.
    pub shed_backlog_bytes: Option<usize>,
    /// `[transport] recv_buffer_bytes` (`SO_RCVBUF` of every proxy socket).
    pub recv_buffer_bytes: Option<usize>,
    /// Further `[listen] udp` addresses: these IPs with the proxy's port.
    pub listen_also: Vec<Ipv4Addr>,
    /// `[listen.advertise]`: the listen address on this IP (the proxy's port) is announced
    /// as this `host:port`.
    pub advertise: Vec<(Ipv4Addr, &'static str)>,
    /// `[listen] tcp` on the proxy's address and port (TCP and UDP share it).
    pub tcp: bool,
    /// `[listen] tls` on a free port of 127.0.0.1, with `[tls] cert` and `key`.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// With [`Tune::tls`]: listen for TLS on this IP instead of 127.0.0.1 (e.g. the host end
    /// of a test's veth pair, which a client in another network namespace can reach).
    pub tls_ip: Option<Ipv4Addr>,
    /// `[listen] ws` on a free port of 127.0.0.1, and `wss` on another when [`Tune::tls`]
    /// is set too (RFC 7118).
    pub ws: bool,
    /// `[tcp]` keys, e.g. `("max_connections_per_ip", "4")`.
    pub tcp_limits: Vec<(&'static str, String)>,
    /// `[admin] token_file` (with [`Tune::admin`]).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Further sections appended verbatim (e.g. `[hep]`); they must not repeat one above.
    pub extra_toml: Option<String>,
    /// The body of the `[nat]` section. `None`: NAT keepalives off — every test phone on
    /// loopback counts as NATed, and most test phones do not answer OPTIONS (tests/e2e_nat.rs
    /// turns them on).
    pub nat: Option<String>,
    /// Further `[asterisk]` lines, e.g. `probe_interval_ms = 100` (the farm tests).
    pub asterisk_lines: Vec<String>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// `[listen] tcp` (the same address as `addr`) when [`Tune::tcp`].
    pub tcp: Option<SocketAddr>,
    /// `[listen] tls` when [`Tune::tls`].
    pub tls: Option<SocketAddr>,
    /// `[listen] ws` and `wss` when [`Tune::ws`] (`wss` with [`Tune::tls`]).
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    /// The admin API's address when [`Tune::admin`] is set.
    pub admin: Option<SocketAddr>,
    pub proc: Proc,
}

/// A free UDP port on `ip`: bound to port 0, then released; the same TCP port must be free
/// too (TCP and TLS listeners use these ports, and an outgoing connection of another test
/// may hold one as its local port). Ports handed out in this process are never handed out
/// twice, so tests running in parallel cannot pick the same one.
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let sock = UdpSocket::bind((ip, 0)).expect("bind a probe socket");
        let port = sock.local_addr().expect("probe address").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() && taken.insert(port) {
            return port;
        }
    }
    panic!("no free UDP port on {ip}");
}

/// Creates `sippeers(name, secret, ...)` in a new SQLite file and inserts `users`.
pub fn seed_credentials(db: &Path, users: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(db).expect("open the credentials database");
    conn.execute_batch(
        "CREATE TABLE sippeers (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL UNIQUE,
             secret TEXT,
             md5secret TEXT,
             host TEXT DEFAULT 'dynamic',
             type TEXT DEFAULT 'friend',
             context TEXT DEFAULT 'phones');",
    )
    .expect("create sippeers");
    for (name, secret) in users {
        conn.execute(
            "INSERT INTO sippeers (name, secret) VALUES (?1, ?2)",
            (name, secret),
        )
        .expect("insert a user");
    }
}

/// The sipfront configuration for `addr`, credentials in `db`.
pub fn config_toml(addr: SocketAddr, db: &Path, opts: &ProxyOptions) -> String {
    let nodes: Vec<String> = opts.nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let tune = &opts.tune;
    let url = tune
        .credentials_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let listen: Vec<String> = std::iter::once(addr)
        .chain(
            tune.listen_also
                .iter()
                .map(|ip| SocketAddr::from((*ip, addr.port()))),
        )
        .map(|a| format!("\"{a}\""))
        .collect();
    let mut toml = format!("[listen]\nudp = [{}]\nworkers = 2\n", listen.join(", "));
    if tune.tcp {
        let _ = writeln!(toml, "tcp = [\"{addr}\"]");
    }
    if let Some(tls) = opts.tls_addr {
        let _ = writeln!(toml, "tls = [\"{tls}\"]");
    }
    if let Some((ws, wss)) = opts.ws_addrs {
        let _ = writeln!(toml, "ws = [\"{ws}\"]");
        if let Some(wss) = wss {
            let _ = writeln!(toml, "wss = [\"{wss}\"]");
        }
    }
    if !tune.advertise.is_empty() {
        toml.push_str("\n[listen.advertise]\n");
        for (ip, public) in &tune.advertise {
            let _ = writeln!(toml, "\"{ip}:{}\" = \"{public}\"", addr.port());
        }
    }
    let _ = write!(
        toml,
        "\n[domain]\nrealm = \"{DOMAIN}\"\nlocal = [\"{DOMAIN}\"]\n\n\
         [asterisk]\nnodes = [{}]\nmatch = \"ip\"\n",
        nodes.join(", "),
    );
    if let Some(secs) = tune.refresh_min_interval_secs {
        let _ = writeln!(toml, "refresh_min_interval_secs = {secs}");
    }
    for line in &tune.asterisk_lines {
        let _ = writeln!(toml, "{line}");
    }
    let _ = write!(
        toml,
        "\n[credentials]\nurl = \"{url}\"\nkeep_plain = {}\n",
        opts.keep_plain
    );
    for (key, value) in [
        ("refresh_secs", tune.refresh_secs),
        ("reconnect_max_ms", tune.reconnect_max_ms),
        ("negative_ttl_secs", tune.negative_ttl_secs),
    ] {
        if let Some(v) = value {
            let _ = writeln!(toml, "{key} = {v}");
        }
    }
    let persist = tune.persist.as_deref().unwrap_or("none");
    let _ = write!(toml, "\n[registrar]\npersist = \"{persist}\"\n");
    if let Some(ms) = tune.persist_interval_ms {
        let _ = writeln!(toml, "persist_interval_ms = {ms}");
    }
    if let Some(code) = tune.unregistered_answer {
        let _ = writeln!(toml, "unregistered_answer = {code}");
    }
    if let Some(min) = opts.min_expires {
        let _ = writeln!(toml, "min_expires = {min}");
    }
    if let Some(max) = opts.max_expires {
        let _ = writeln!(toml, "max_expires = {max}\ndefault_expires = {max}");
    }
    if let Some(t1) = opts.t1_ms {
        let _ = write!(toml, "\n[timers]\nt1_ms = {t1}\n");
    }
    let quoted = |list: &[&str]| -> String {
        let items: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
        items.join(", ")
    };
    if !tune.algorithms.is_empty() || tune.uri_check.is_some() || tune.failure_delay_ms.is_some() {
        toml.push_str("\n[auth]\n");
    }
    if let Some(ms) = tune.failure_delay_ms {
        let _ = writeln!(toml, "failure_delay_ms = {ms}");
    }
    if !tune.algorithms.is_empty() {
        let _ = writeln!(toml, "algorithms = [{}]", quoted(&tune.algorithms));
    }
    if let Some(mode) = tune.uri_check {
        let _ = writeln!(toml, "uri_check = \"{mode}\"");
    }
    let mut guard = String::new();
    if tune.ban_persist {
        let file = db.with_file_name("bans.json");
        let _ = writeln!(guard, "persist = \"{}\"", file.display());
    }
    if !tune.guard_allow.is_empty() {
        let _ = writeln!(guard, "allow = [{}]", quoted(&tune.guard_allow));
    }
    for (key, value) in [
        ("rate_pps", tune.rate_pps),
        ("rate_burst", tune.rate_burst),
        ("ban_ip_failures", tune.ban_ip_failures),
        ("ban_secs", tune.ban_secs),
    ] {
        if let Some(v) = value {
            let _ = writeln!(guard, "{key} = {v}");
        }
    }
    if !guard.is_empty() {
        let _ = write!(toml, "\n[guard]\n{guard}");
    }
    let mut limits = String::new();
    for (key, value) in [
        (
            "max_transactions_per_worker",
            tune.max_transactions_per_worker,
        ),
        ("max_parked_per_worker", tune.max_parked_per_worker),
        ("shed_backlog_bytes", tune.shed_backlog_bytes),
    ] {
        if let Some(v) = value {
            let _ = writeln!(limits, "{key} = {v}");
        }
    }
    if !limits.is_empty() {
        let _ = write!(toml, "\n[limits]\n{limits}");
    }
    if let Some((cert, key)) = &tune.tls {
        let _ = write!(
            toml,
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
    }
    if !tune.tcp_limits.is_empty() {
        toml.push_str("\n[tcp]\n");
        for (k, v) in &tune.tcp_limits {
            let _ = writeln!(toml, "{k} = {v}");
        }
    }
    if let Some(bytes) = tune.recv_buffer_bytes {
        let _ = write!(toml, "\n[transport]\nrecv_buffer_bytes = {bytes}\n");
    }
    if let Some(admin) = tune.admin {
        let _ = write!(toml, "\n[admin]\nenabled = true\nlisten = \"{admin}\"\n");
        if let Some(file) = &tune.admin_token_file {
            let _ = writeln!(toml, "token_file = \"{}\"", file.display());
        }
    }
    let level = tune.log_level.unwrap_or("warn");
    let _ = write!(toml, "\n[log]\nlevel = \"{level}\"\n");
    if let Some(format) = tune.log_format {
        let _ = writeln!(toml, "format = \"{format}\"");
    }
    let nat = tune
        .nat
        .as_deref()
        .unwrap_or("keepalive_interval_secs = 0\n");
    let _ = write!(toml, "\n[nat]\n{nat}\n");
    if let Some(extra) = &tune.extra_toml {
        let _ = write!(toml, "\n{extra}\n");
    }
    toml
}

impl Proxy {
    /// Writes the database and config into `dir`, starts sipfront and waits until it answers.
    pub fn start(dir: &Path, users: &[(&str, &str)], opts: &ProxyOptions) -> Proxy {
        let db = dir.join("credentials.db");
        if opts.tune.credentials_url.is_none() {
            seed_credentials(&db, users);
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port(Ipv4Addr::LOCALHOST)));
        let tls_ip = opts.tune.tls_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let tls = opts
            .tune
            .tls
            .as_ref()
            .map(|_| SocketAddr::from((tls_ip, free_udp_port(tls_ip))));
        let local = |_| SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port(Ipv4Addr::LOCALHOST)));
        let ws_addrs = opts
            .tune
            .ws
            .then(|| (local(()), opts.tune.tls.as_ref().map(|_| local(()))));
        let opts = ProxyOptions {
            tls_addr: tls,
            ws_addrs,
            ..opts.clone()
        };
        let config = dir.join("sipfront.toml");
        std::fs::write(&config, config_toml(addr, &db, &opts)).expect("write the config");
        let mut p = Proxy::spawn(dir, addr, opts.tune.admin, "sipfront");
        p.tcp = opts.tune.tcp.then_some(addr);
        p.tls = tls;
        p.ws = ws_addrs.map(|(ws, _)| ws);
        p.wss = ws_addrs.and_then(|(_, wss)| wss);
        p
    }

    /// `kill -9` (SIGKILL to its PID, then reaped), and a new sipfront on the same address
    /// with the same config file; its output goes to `sipfront-restarted.out/.err`.
    pub fn kill9_and_restart(&mut self, dir: &Path) {
        self.proc.kill_and_reap();
        let (tcp, tls, ws, wss) = (self.tcp, self.tls, self.ws, self.wss);
        *self = Proxy::spawn(dir, self.addr, self.admin, "sipfront-restarted");
        self.tcp = tcp;
        self.tls = tls;
        self.ws = ws;
        self.wss = wss;
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`: reload the credentials) to the proxy's PID.
    pub fn signal(&mut self, signal: i32) {
        self.proc.signal(signal);
    }

    /// Starts `sipfront run --config DIR/sipfront.toml` (output in `DIR/LOG.out/.err`) and
    /// waits until it answers on `addr`.
    pub fn spawn(dir: &Path, addr: SocketAddr, admin: Option<SocketAddr>, log: &str) -> Proxy {
        let config = dir.join("sipfront.toml");
        let stdout = File::create(dir.join(format!("{log}.out"))).expect("sipfront stdout file");
        let stderr = File::create(dir.join(format!("{log}.err"))).expect("sipfront stderr file");
        let mut cmd = Command::new(sipfront_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let mut proxy = Proxy {
            addr,
            tcp: None,
            tls: None,
            ws: None,
            wss: None,
            admin,
            proc: Proc::spawn("sipfront", &mut cmd),
        };
        if let Err(why) = proxy.wait_ready().and_then(|()| proxy.wait_admin()) {
            let err = std::fs::read_to_string(dir.join(format!("{log}.err"))).unwrap_or_default();
            panic!("{why}\nsipfront stderr:\n{err}");
        }
        proxy
    }

    /// With the admin API on: until it accepts a connection (it is bound just after the
    /// workers start answering SIP, so on a busy machine it can lag the OPTIONS answer).
    fn wait_admin(&mut self) -> Result<(), String> {
        let Some(admin) = self.admin else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match std::net::TcpStream::connect_timeout(&admin, PROBE_WAIT) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(format!("the admin API on {admin} never accepted: {e}"));
                }
                Err(_) => {
                    if let Some(status) = self.proc.exited() {
                        return Err(format!("sipfront exited during startup: {status}"));
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Sends OPTIONS (a new one every [`PROBE_WAIT`]) until a 200 comes back.
    fn wait_ready(&mut self) -> Result<(), String> {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        sock.set_read_timeout(Some(PROBE_WAIT))
            .expect("read timeout");
        let me = sock.local_addr().expect("probe address");
        let mut buf = vec![0u8; 65_536];
        for i in 0..PROBES {
            if let Some(status) = self.proc.exited() {
                return Err(format!("sipfront exited during startup: {status}"));
            }
            let options = format!(
                "OPTIONS sip:{a} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=probe\r\nTo: <sip:{a}>\r\n\
                 Call-ID: ready-{i}@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                a = self.addr
            );
            let _ = sock.send_to(options.as_bytes(), self.addr);
            if let Ok(n) = sock.recv(&mut buf) {
                if buf.get(..n).is_some_and(|b| b.starts_with(b"SIP/2.0 200")) {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "sipfront did not answer OPTIONS on {} after {PROBES} probes",
            self.addr
        ))
    }
}
