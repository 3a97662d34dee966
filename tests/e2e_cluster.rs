//! Two sipfront nodes sharing the location through a real Redis (`[cluster]`), end to end:
//! node A on 127.0.0.1:P, node B on 127.0.0.11:P (the same free port on both), a
//! `redis-server` this test starts itself on a free loopback port (`--save "" --appendonly
//! no`: nothing on disk, so a restart starts empty; killed by PID), never the machine's
//! Redis. Asterisk is a raw socket on 127.0.0.5 (trusted by IP).
//!
//! - A phone registered through A gets Asterisk's INVITE sent to B, from A's address, and
//!   the dialog goes on through both nodes (ACK, BYE from Asterisk, BYE's 200 back).
//! - A MESSAGE from a phone on A reaches a phone on B (from B's address).
//! - A killed with SIGKILL: B stops offering A's phone (480) once A's heartbeat expired;
//!   the phone registers again through B and B reaches it.
//! - Redis killed and started again (empty) while phones keep registering through both
//!   nodes: every registration made before the stop is back in Redis, the ones accepted
//!   during the outage too, and B still reaches a phone registered through A before it.
//! - `ctl unregister` on the node holding a phone removes it from Redis and the other node.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::admin::{ctl_ok, free_admin_addr, http_get, metric};
use support::flows::{phone_register, phone_request};
use support::phone::{Phone, SipMsg};
use support::procs::Proc;
use support::proxy::DOMAIN;
use support::proxy::{config_toml, free_udp_port, seed_credentials, Proxy, ProxyOptions, Tune};

const WAIT: Duration = Duration::from_secs(10);
const NODE_B_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const ASTERISK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Phones registering in rounds while Redis goes away and comes back.
const LOAD_USERS: u32 = 60;

fn users() -> Vec<(String, String)> {
    let mut u: Vec<(String, String)> = ["1001", "2001"]
        .iter()
        .map(|n| (n.to_string(), format!("pw{n}")))
        .collect();
    u.extend((0..LOAD_USERS).map(|i| (format!("{}", 3000 + i), format!("pw{}", 3000 + i))));
    u
}

fn pw(user: &str) -> String {
    format!("pw{user}")
}

/// A `redis-server` of this test's own.
struct Redis {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let mut r = Redis {
            proc: None,
            port: free_udp_port(Ipv4Addr::LOCALHOST),
            dir: dir.to_owned(),
        };
        r.run();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null());
        self.proc = Some(Proc::spawn("redis-server", &mut cmd));
        let deadline = Instant::now() + WAIT;
        while self.con().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn con(&self) -> Option<redis::Connection> {
        let c = redis::Client::open(self.url()).ok()?;
        let mut con = c
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }

    /// SIGKILL to its PID.
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_and_reap();
        }
    }

    /// The Contacts Redis holds for `user`.
    fn contacts(&self, user: &str) -> Vec<String> {
        let Some(mut con) = self.con() else {
            return Vec::new();
        };
        redis::cmd("HKEYS")
            .arg(format!("sipfront:loc:{user}"))
            .query(&mut con)
            .unwrap_or_default()
    }
}

/// One node: its directory, address and admin API.
struct Node {
    proxy: Proxy,
    dir: PathBuf,
}

fn node_config(
    dir: &Path,
    addr: SocketAddr,
    admin: SocketAddr,
    name: &str,
    redis: &Redis,
    ast: SocketAddr,
) {
    let db = dir.join("credentials.db");
    if !db.exists() {
        let u = users();
        let refs: Vec<(&str, &str)> = u.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        seed_credentials(&db, &refs);
    }
    let opts = ProxyOptions {
        nodes: vec![ast],
        tune: Tune {
            admin: Some(admin),
            guard_allow: vec!["127.0.0.0/8"],
            log_level: Some("info"),
            extra_toml: Some(format!(
                "[cluster]\nredis_url = \"{}\"\nnode_name = \"{name}\"\n\
                 heartbeat_ms = 200\ndead_after_ms = 1000\n",
                redis.url()
            )),
            ..Tune::default()
        },
        ..ProxyOptions::default()
    };
    std::fs::write(dir.join("sipfront.toml"), config_toml(addr, &db, &opts)).expect("config");
}

fn start_node(root: &Path, name: &str, addr: SocketAddr, redis: &Redis, ast: SocketAddr) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let admin = free_admin_addr();
    node_config(&dir, addr, admin, name, redis, ast);
    let proxy = Proxy::spawn(&dir, addr, Some(admin), "sipfront");
    Node { proxy, dir }
}

/// The same free UDP (and TCP) port on 127.0.0.1 and on B's IP.
fn common_port() -> u16 {
    for _ in 0..50 {
        let p = free_udp_port(Ipv4Addr::LOCALHOST);
        let free_b = std::net::UdpSocket::bind((NODE_B_IP, p)).is_ok()
            && std::net::TcpListener::bind((NODE_B_IP, p)).is_ok();
        if free_b {
            return p;
        }
    }
    panic!("no port free on both 127.0.0.1 and {NODE_B_IP}");
}

/// Poll `f` until true, at most `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `node` lists a binding of `user` with `contact_host` (an `ip:port`).
fn node_has(node: &Node, user: &str, contact_host: SocketAddr) -> bool {
    let admin = node.proxy.admin.expect("admin");
    let (code, body) = http_get(admin, &format!("/v1/registrations?user={user}"));
    code == 200 && body.contains(&contact_host.to_string())
}

/// How many live nodes `node` sees (`GET /v1/cluster`).
fn live_nodes(node: &Node) -> usize {
    let (code, body) = http_get(node.proxy.admin.expect("admin"), "/v1/cluster");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("cluster JSON");
    v["live"].as_array().map_or(0, Vec::len)
}

/// Asterisk's INVITE for `user` sent to `node`: returns the Call-ID and the request text.
fn asterisk_invite(ast: &Phone, node: SocketAddr, user: &str, call_id: &str) -> String {
    let text = format!(
        "INVITE sip:{user}@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:asterisk@{a}>;tag=ast{call_id}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:asterisk@{a}>\r\nContent-Length: 0\r\n\r\n",
        a = ast.addr
    );
    ast.send(node, &text);
    text
}

/// The route set a UAC builds from a 2xx (its Record-Route, reversed) and the first hop.
fn route_set(ok: &SipMsg) -> (Vec<String>, SocketAddr) {
    let mut routes: Vec<String> = ok
        .headers("Record-Route")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|r| r.trim().to_owned())
        .collect();
    routes.reverse();
    let first = routes.first().expect("a Record-Route");
    let host = first
        .trim_start_matches("<sip:")
        .split([';', '>'])
        .next()
        .expect("route host");
    (routes.clone(), host.parse().expect("route ip:port"))
}

/// An in-dialog request from Asterisk along `routes`.
fn asterisk_in_dialog(ast: &Phone, method: &str, cseq: u32, ok: &SipMsg, call_id: &str) {
    let (routes, hop) = route_set(ok);
    let target = ok
        .header("Contact")
        .and_then(|c| c.split_once('<'))
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(u, _)| u.to_owned())
        .expect("Contact of the 200");
    let to = ok.header("To").expect("To");
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let text = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{call_id}{method}\r\n\
         Max-Forwards: 70\r\n{route_lines}From: <sip:asterisk@{a}>;tag=ast{call_id}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        a = ast.addr
    );
    ast.send(hop, &text);
}

/// A request `method` arriving at `phone`, or `None` within `limit`.
fn next_request(phone: &Phone, method: &str, limit: Duration) -> Option<SipMsg> {
    let deadline = Instant::now() + limit;
    while let Some(m) = phone.recv_until(deadline) {
        if m.method() == Some(method) {
            return Some(m);
        }
    }
    None
}

/// The final response (CSeq `cseq`) at Asterisk's socket.
fn final_at(ast: &Phone, cseq: &str) -> SipMsg {
    ast.expect_final(cseq, WAIT, &mut Vec::new())
}

#[test]
fn two_nodes_share_location_forward_calls_survive_a_dead_node_and_a_redis_restart() {
    let root = tempfile::Builder::new()
        .prefix("sipfront-cluster")
        .tempdir()
        .expect("tempdir");
    let mut redis = Redis::start(root.path());
    let port = common_port();
    let a_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let b_addr = SocketAddr::from((NODE_B_IP, port));
    let ast = Phone::bind(ASTERISK_IP);
    let mut a = start_node(root.path(), "a", a_addr, &redis, ast.addr);
    let b = start_node(root.path(), "b", b_addr, &redis, ast.addr);
    wait_for("both nodes to see each other", WAIT, || {
        live_nodes(&a) == 2 && live_nodes(&b) == 2
    });
    // The operator's view: `sipfront ctl cluster` and the metrics.
    let b_admin = b.proxy.admin.expect("admin");
    let shown = ctl_ok(b_admin, &["cluster"]);
    assert!(
        shown.contains("node b at 127.0.0.11:") && shown.contains("redis up"),
        "{shown}"
    );
    assert!(shown.contains(&format!("a ({a_addr})")), "{shown}");
    assert_eq!(metric(b_admin, "sipfront_cluster_nodes_live"), 2.0);
    assert_eq!(metric(b_admin, "sipfront_cluster_redis_up"), 1.0);

    // --- Asterisk's INVITE to B reaches the phone registered through A, from A. ---
    let pa = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&pa, a_addr, "1001", &pw("1001"), 300, "");
    assert_eq!(out.code(), 200, "{out:?}");
    wait_for("B to learn 1001's binding", WAIT, || {
        node_has(&b, "1001", pa.addr)
    });
    let call_id = "c1-through-a";
    asterisk_invite(&ast, b_addr, "1001", call_id);
    let inv =
        next_request(&pa, "INVITE", WAIT).expect("the INVITE sent to B reaches the phone on A");
    assert_eq!(
        inv.from, a_addr,
        "the phone's INVITE must come from A's address"
    );
    let rr = inv.headers("Record-Route").join(",");
    assert!(
        rr.contains(&a_addr.to_string()) && rr.contains(&b_addr.to_string()),
        "{rr}"
    );
    // 200 OK with a Contact; Asterisk gets it through B, then ACK and BYE along the routes.
    // (A UAS copies the Record-Route into its 2xx, RFC 3261 §12.1.1.)
    let rr_lines: String = inv
        .headers("Record-Route")
        .iter()
        .map(|r| format!("Record-Route: {r}\r\n"))
        .collect();
    let extra = format!("{rr_lines}Contact: <sip:1001@{}>\r\n", pa.addr);
    let ok_text = inv.reply(200, "OK", "pa1", &extra);
    pa.send(inv.from, &ok_text);
    let ok = final_at(&ast, "1 INVITE");
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    assert_eq!(ok.from, b_addr);
    asterisk_in_dialog(&ast, "ACK", 1, &ok, call_id);
    let ack = next_request(&pa, "ACK", WAIT).expect("the ACK reaches the phone");
    assert_eq!(ack.from, a_addr);
    asterisk_in_dialog(&ast, "BYE", 2, &ok, call_id);
    let bye = next_request(&pa, "BYE", WAIT).expect("the BYE reaches the phone");
    pa.send(bye.from, &bye.reply(200, "OK", "", ""));
    assert_eq!(final_at(&ast, "2 BYE").code(), Some(200));
    let forwarded = r#"sipfront_cluster_requests_total{result="forwarded"}"#;
    assert!(metric(b_admin, forwarded) >= 1.0);

    // --- A MESSAGE from the phone on A reaches a phone on B. ---
    let pb = Phone::bind(Ipv4Addr::LOCALHOST);
    let out = phone_register(&pb, b_addr, "2001", &pw("2001"), 300, "");
    assert_eq!(out.code(), 200, "{out:?}");
    wait_for("A to learn 2001's binding", WAIT, || {
        node_has(&a, "2001", pb.addr)
    });
    let sent = std::thread::scope(|s| {
        let answer = s.spawn(|| {
            let m = next_request(&pb, "MESSAGE", WAIT).expect("the MESSAGE reaches the phone on B");
            pb.send(m.from, &m.reply(200, "OK", "pb1", ""));
            m
        });
        let uri = format!("sip:2001@{DOMAIN}");
        let extra = "Content-Type: text/plain\r\n";
        let out = phone_request(
            &pa,
            a_addr,
            "MESSAGE",
            ("1001", &pw("1001")),
            &uri,
            extra,
            WAIT,
        );
        assert_eq!(out.code(), 200, "{out:?}");
        answer.join().expect("answering thread")
    });
    assert_eq!(sent.from, b_addr, "the MESSAGE must reach the phone from B");

    // --- A dies: its phone is unreachable through B until it registers there. ---
    a.proxy.proc.kill_and_reap();
    wait_for("B to see A dead", WAIT, || live_nodes(&b) == 1);
    asterisk_invite(&ast, b_addr, "1001", "c2-dead-owner");
    let r = final_at(&ast, "1 INVITE");
    assert_eq!(r.code(), Some(480), "{}", r.text);
    let out = phone_register(&pa, b_addr, "1001", &pw("1001"), 300, "");
    assert_eq!(out.code(), 200, "{out:?}");
    asterisk_invite(&ast, b_addr, "1001", "c3-after-move");
    let inv = next_request(&pa, "INVITE", WAIT).expect("B reaches the phone now");
    assert_eq!(inv.from, b_addr);
    pa.send(inv.from, &inv.reply(486, "Busy Here", "pa3", ""));
    assert_eq!(final_at(&ast, "1 INVITE").code(), Some(486));

    // --- A again; Redis killed and restarted (empty) while phones keep registering. ---
    a = Node {
        proxy: Proxy::spawn(&a.dir, a_addr, a.proxy.admin, "sipfront-restarted"),
        dir: a.dir.clone(),
    };
    wait_for("A back in the cluster", WAIT, || {
        live_nodes(&a) == 2 && live_nodes(&b) == 2
    });
    let phones: Vec<Phone> = (0..LOAD_USERS)
        .map(|_| Phone::bind(Ipv4Addr::LOCALHOST))
        .collect();
    let node_of = |i: usize| if i.is_multiple_of(2) { a_addr } else { b_addr };
    for (i, p) in phones.iter().enumerate() {
        let user = format!("{}", 3000 + i);
        assert_eq!(
            phone_register(p, node_of(i), &user, &pw(&user), 300, "").code(),
            200
        );
    }
    // Every registration made so far: the load's phones, 1001 (now through B), 2001.
    let all_in_redis = |redis: &Redis| {
        phones.iter().enumerate().all(|(i, p)| {
            let contact = format!("sip:{}@{}", 3000 + i, p.addr);
            redis.contacts(&format!("{}", 3000 + i)).contains(&contact)
        }) && redis.contacts("1001") == [format!("sip:1001@{}", pa.addr)]
            && redis.contacts("2001") == [format!("sip:2001@{}", pb.addr)]
    };
    wait_for("every registration to reach Redis", WAIT, || {
        all_in_redis(&redis)
    });
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    // The load is bounded by a deadline too: if a check below panics, nobody sets `stop`.
    let load_deadline = Instant::now() + WAIT * 6;
    std::thread::scope(|s| {
        // The load: every phone registers again, round after round, through its node.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) && Instant::now() < load_deadline {
                for (i, p) in phones.iter().enumerate() {
                    let user = format!("{}", 3000 + i);
                    let out = phone_register(p, node_of(i), &user, &pw(&user), 300, "");
                    assert_eq!(out.code(), 200, "registration refused during the outage");
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        let r0 = rounds.load(Ordering::Relaxed);
        redis.kill();
        wait_for(
            "a round of registrations while Redis is down",
            WAIT * 3,
            || rounds.load(Ordering::Relaxed) >= r0 + 2,
        );
        redis.run();
        wait_for(
            "every registration back in the restarted Redis",
            WAIT * 2,
            || all_in_redis(&redis),
        );
        stop.store(true, Ordering::Relaxed);
    });
    // B reaches a phone registered through A before the outage, from A's address.
    asterisk_invite(&ast, b_addr, "3000", "c4-after-redis");
    let inv = next_request(&phones[0], "INVITE", WAIT).expect("B reaches 3000 through A");
    assert_eq!(inv.from, a_addr);
    phones[0].send(inv.from, &inv.reply(486, "Busy Here", "p3000", ""));
    assert_eq!(final_at(&ast, "1 INVITE").code(), Some(486));
    // An administrative removal on the node holding the phone reaches Redis and the others.
    assert!(node_has(&a, "3001", phones[1].addr));
    ctl_ok(b_admin, &["unregister", "3001"]);
    wait_for("A to drop 3001 after its removal on B", WAIT, || {
        !node_has(&a, "3001", phones[1].addr)
    });
    assert!(redis.contacts("3001").is_empty());
    drop(b);
    drop(a);
    redis.kill();
}
