//! The admin API and `sipfront ctl` against the real binary: a phone registers with MD5
//! digest over UDP, then `/metrics`, `/v1/stats` and every ctl command are checked, and an
//! unreachable admin address must fail with a clear message.
//!
//! Setup: a SQLite credential file with table `sippeers(name, secret)`, free loopback ports
//! for SIP and the admin API, a UDP socket playing Asterisk (answers 200 to the forwarded
//! REGISTER), `[registrar] persist = "none"`. The child is killed by PID when the guard drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

const REALM: &str = "admin.test";
const USER: &str = "alice";
const SECRET: &str = "wonderland";

fn binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_sipfront") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/admin_api-xxxx -> target/<profile>/sipfront
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("sipfront")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the proxy by PID when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of `name="..."` (or `name=token`) in a challenge line.
fn param(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_owned())
    } else {
        Some(rest.split([',', ' ', '\r']).next()?.to_owned())
    }
}

/// The Authorization value answering `challenge` (a 401) with `secret`: MD5, qop=auth.
fn authorization(challenge: &str, secret: &str) -> String {
    let www = header(challenge, "WWW-Authenticate").expect("challenge");
    let nonce = param(www, "nonce").unwrap();
    let uri = format!("sip:{REALM}");
    let ha1 = md5_hex(&format!("{USER}:{REALM}:{secret}"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let (nc, cnonce) = ("00000001", "0a4f113b");
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let mut auth = format!(
        "Digest username=\"{USER}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
    );
    if let Some(o) = param(www, "opaque") {
        auth.push_str(&format!(", opaque=\"{o}\""));
    }
    auth
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

struct Phone {
    sock: UdpSocket,
    proxy: SocketAddr,
}

impl Phone {
    fn send_recv(&self, msg: &str) -> String {
        self.sock.send_to(msg.as_bytes(), self.proxy).unwrap();
        let mut buf = [0u8; 65535];
        loop {
            let (n, _) = self
                .sock
                .recv_from(&mut buf)
                .expect("proxy answers in time");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            // Skip 100 Trying; REGISTER and OPTIONS are answered with a final response.
            if !text.starts_with("SIP/2.0 100") {
                return text;
            }
        }
    }

    fn register(&self, cseq: u32, auth: Option<&str>) -> String {
        self.send_recv(&self.register_msg(cseq, auth))
    }

    /// Send without waiting for an answer.
    fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), self.proxy).unwrap();
    }

    fn register_msg(&self, cseq: u32, auth: Option<&str>) -> String {
        let me = self.sock.local_addr().unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{USER}@{REALM}>;tag=ph1\r\nTo: <sip:{USER}@{REALM}>\r\n\
             Call-ID: reg-admin-test@{me}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{USER}@{me}>;expires=300\r\n{auth}User-Agent: admin-test-phone\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// An OPTIONS to the proxy itself: gives the worker an event (and a chance to publish).
    fn ping(&self, n: u32) -> String {
        let me = self.sock.local_addr().unwrap();
        let proxy = self.proxy;
        self.send_recv(&format!(
            "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKping{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:ping@{REALM}>;tag=p{n}\r\nTo: <sip:{proxy}>\r\n\
             Call-ID: ping-{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ))
    }
}

/// A UDP socket playing Asterisk: answers every REGISTER with 200 OK until "stop".
fn fake_asterisk(sock: UdpSocket) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 65535];
        let mut answered = 0;
        while let Ok((n, src)) = sock.recv_from(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg == "stop" {
                break;
            }
            if !msg.starts_with("REGISTER ") {
                continue;
            }
            let mut resp = String::from("SIP/2.0 200 OK\r\n");
            for l in msg.lines() {
                let name = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                }
            }
            resp.push_str("Content-Length: 0\r\n\r\n");
            let _ = sock.send_to(resp.as_bytes(), src);
            answered += 1;
        }
        answered
    })
}

/// One raw request on its own connection; the server keeps HTTP/1.1 connections open, so
/// a complete request head is sent with `Connection: close` (garbage is sent as it is).
fn http(admin: SocketAddr, raw: &str) -> (u16, String) {
    let raw = match raw.strip_suffix("\r\n\r\n") {
        Some(head) if head.contains(" HTTP/1.") => format!("{head}\r\nConnection: close\r\n\r\n"),
        _ => raw.to_owned(),
    };
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn metrics_now(admin: SocketAddr) -> String {
    get(admin, "/metrics").1
}

fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    http(admin, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

fn ctl(admin: SocketAddr, args: &[&str]) -> Output {
    Command::new(binary())
        .args(["ctl", "--admin", &admin.to_string()])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn admin_api_and_ctl_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE sippeers (name TEXT PRIMARY KEY, secret TEXT)")
        .unwrap();
    conn.execute("INSERT INTO sippeers VALUES (?1, ?2)", (USER, SECRET))
        .unwrap();
    drop(conn);

    let asterisk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let asterisk_addr = asterisk.local_addr().unwrap();
    let asterisk_thread = fake_asterisk(asterisk.try_clone().unwrap());
    let sip = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = dir.path().join("sipfront.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nudp = [\"{sip}\"]\nworkers = 2\n\n[domain]\nrealm = \"{REALM}\"\n\
             local = [\"{REALM}\"]\n\n[asterisk]\nnodes = [\"{asterisk_addr}\"]\n\n\
             [credentials]\nurl = \"sqlite://{}\"\nschema = \"sippeers\"\n\n\
             [registrar]\npersist = \"none\"\n\n[admin]\nenabled = true\nlisten = \"{admin}\"\n\n[guard]\nban_ip_failures = 2\n\n\
             [log]\nlevel = \"info\"\n",
            db.display()
        ),
    )
    .unwrap();

    let child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    // Wait for the log line saying the admin API listens (it starts after the workers).
    let (tx, rx) = mpsc::channel();
    for pipe in [
        guard
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        guard
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("admin API listening") => break,
            Ok(line) => log.push(line),
            Err(_) => panic!("sipfront did not start; output:\n{}", log.join("\n")),
        }
    }

    // A phone registers: 401, then 200 with MD5 digest (qop=auth).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let phone = Phone { sock, proxy: sip };
    let challenge = phone.register(1, None);
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let auth = authorization(&challenge, SECRET);
    let ok = phone.register(2, Some(&auth));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // Counters are published by the workers at most every 100 ms, histograms every second:
    // give them events (OPTIONS pings, each answered) until the scrape shows the
    // registration, the forwarded REGISTER's 200 and its response time.
    let mut metrics = String::new();
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0..100_000u32 {
        let (status, body) = get(admin, "/metrics");
        assert_eq!(status, 200);
        metrics = body;
        if metrics
            .lines()
            .any(|l| l == "sipfront_auth_total{result=\"ok\"} 1")
            && metrics
                .lines()
                .any(|l| l == "sipfront_regfwd_total{result=\"ok\"} 1")
            && metrics.contains(&format!(
                "sipfront_upstream_response_seconds_count{{upstream=\"{asterisk_addr}\",response=\"final\"}} 1"
            ))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the registration:\n{metrics}"
        );
        assert!(phone.ping(n + 10).starts_with("SIP/2.0 200"));
        pings += 1;
    }
    println!("metrics complete after {pings} pings");
    for line in [
        "sipfront_auth_total{result=\"challenge\"} 1",
        "sipfront_registrar_aors 1",
        "sipfront_registrar_contacts 1",
        "sipfront_registrar_registrations_total 1",
        "sipfront_credential_cache_users 1",
        "sipfront_sip_responses_sent_total{class=\"4xx\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    for prefix in [
        "sipfront_worker_rx_datagrams_total{worker=\"1\"}",
        "sipfront_processing_seconds_bucket{le=\"0.001\",kind=\"request\",method=\"REGISTER\"}",
        "sipfront_processing_seconds_bucket{le=\"+Inf\",kind=\"request\",method=\"REGISTER\"}",
        &format!("sipfront_upstream_response_seconds_count{{upstream=\"{asterisk_addr}\",response=\"final\"}} 1"),
        "sipfront_transactions_in_flight{kind=\"server\"}",
        "sipfront_dropped_total{reason=\"malformed\"} 0",
    ] {
        assert!(metrics.contains(prefix), "missing {prefix:?} in\n{metrics}");
    }

    // JSON stats and the ctl view of them.
    let (status, body) = get(admin, "/v1/stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["registrar"]["aors"], 1);
    assert_eq!(v["auth"]["ok"], 1);
    assert!(v["latency"][1]["count"].as_u64().unwrap() >= 2, "{body}");
    let out = stdout(&ctl(admin, &["stats"]));
    println!("sipfront ctl stats:\n{out}");
    assert!(
        out.contains("AORs 1, contacts 1") && out.contains("request REGISTER"),
        "{out}"
    );

    // Registrations: list, remove, gone.
    let me = phone.sock.local_addr().unwrap();
    let out = stdout(&ctl(admin, &["regs", USER]));
    assert!(out.contains(&format!("sip:{USER}@{me}")), "{out}");
    assert!(
        out.contains("admin-test-phone") && out.contains(&format!("dest {me}")),
        "{out}"
    );
    let out = stdout(&ctl(admin, &["regs"]));
    assert!(out.contains("1 registered AORs, 1 contacts"), "{out}");
    let out = stdout(&ctl(
        admin,
        &["unregister", USER, &format!("sip:{USER}@{me}")],
    ));
    assert!(out.contains("removed 1 binding(s)"), "{out}");
    let out = stdout(&ctl(admin, &["regs", USER]));
    assert!(out.contains("no bindings"), "{out}");
    let o = ctl(admin, &["unregister", USER]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no matching binding"));

    // Credentials: flush and reload.
    let out = stdout(&ctl(admin, &["flush", USER]));
    assert!(
        out.contains("alice flushed from the credential cache"),
        "{out}"
    );
    assert!(!out.contains("not cached"), "{out}");
    let out = stdout(&ctl(admin, &["reload"]));
    assert!(out.contains("credentials reloaded: 1 users"), "{out}");

    // Bans: two wrong passwords from 127.0.0.5 ban it ([guard] ban_ip_failures = 2); the ban
    // is listed and lifted with ctl, after which that address registers again.
    let out = stdout(&ctl(admin, &["bans"]));
    assert!(out.contains("no active bans"), "{out}");
    let sock = UdpSocket::bind("127.0.0.5:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let attacker = Phone { sock, proxy: sip };
    let challenge = attacker.register(1, None);
    let wrong = authorization(&challenge, "guess");
    assert!(attacker
        .register(2, Some(&wrong))
        .starts_with("SIP/2.0 401"));
    // The second failure bans: no answer any more, so only send it.
    attacker.send(&attacker.register_msg(3, Some(&wrong)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = stdout(&ctl(admin, &["bans"]));
        if out.contains("127.0.0.5") {
            break out;
        }
        assert!(Instant::now() < deadline, "never banned: {out}");
    };
    assert!(out.contains("failed authentications"), "{out}");
    assert!(metrics_now(admin).contains("sipfront_bans 1"));
    let out = stdout(&ctl(admin, &["unban", "127.0.0.5"]));
    assert!(out.contains("127.0.0.5 unbanned"), "{out}");
    assert_eq!(ctl(admin, &["unban", "127.0.0.5"]).status.code(), Some(1));
    assert_eq!(ctl(admin, &["unban", "not-an-ip"]).status.code(), Some(1));
    let challenge = attacker.register(4, None);
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let good = authorization(&challenge, SECRET);
    assert!(attacker.register(5, Some(&good)).starts_with("SIP/2.0 200"));

    // Raw HTTP: bad requests and unknown paths.
    assert_eq!(http(admin, "GARBAGE\r\n\r\n").0, 400);
    assert_eq!(http(admin, "GET /?x=%zz HTTP/1.1\r\n\r\n").0, 400);
    assert_eq!(get(admin, "/nope").0, 404);
    assert_eq!(http(admin, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(
        http(admin, "DELETE /v1/credentials HTTP/1.1\r\n\r\n").0,
        400
    );
    let big = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(admin, &big).0, 413);
    // Still serving after all that.
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));

    // An unreachable admin address: non-zero exit and a clear message.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let o = ctl(closed, &["stats"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the sipfront admin API"), "{err}");

    drop(guard);
    asterisk.send_to(b"stop", asterisk_addr).unwrap();
    assert!(asterisk_thread.join().unwrap() >= 1);
}
