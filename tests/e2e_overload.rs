//! Overload protection of the REAL `sipfront` binary on loopback:
//!
//! - receive-backlog shedding (`[limits] shed_backlog_bytes`): the proxy is stopped
//!   (SIGSTOP), a burst of new REGISTERs and INVITEs piles up in its socket, and after
//!   SIGCONT the backlog makes it answer some of them 503 + Retry-After (counted in
//!   `/metrics`), then answer normally again once the backlog is gone;
//! - kernel drops in `/metrics`: the same burst against a tiny `[transport]
//!   recv_buffer_bytes`, so the kernel drops most of it, and `sipfront_socket_drops_total`
//!   accounts for every datagram that got no answer;
//! - the parked-request bound (`[limits] max_parked_per_worker`): credential lookups stall
//!   (the MariaDB table is locked by the test), so requests of uncached users beyond the
//!   bound get 503 + Retry-After at once, and the parked ones go on when the lock goes.
//!
//! Every wait is bounded: a socket read timeout, `waitpid` for the stop, and `/metrics`
//! polls paced by OPTIONS round trips to the proxy.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::admin::{free_admin_addr, http_get, sample};
use support::mariadb::SippeersDb;
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::{Scene, Setup};

/// Datagrams in the burst sent while the proxy is stopped.
const BURST: usize = 300;
/// Longest silence while collecting the answers to a burst.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for anything that must happen.
const LIMIT: Duration = Duration::from_secs(10);

/// A phone socket with a large receive buffer (the answers to a burst arrive at once).
fn burst_socket() -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    // Capped by net.core.rmem_max; only lowers the chance of losing answers here.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("bind the phone socket");
    s.into()
}

/// New request number `i` of the burst from `me`, without credentials: REGISTERs, and an
/// INVITE every third one. Each has its own Call-ID and branch.
fn burst_request(i: usize, me: SocketAddr) -> String {
    let (method, uri, to) = if i % 3 == 1 {
        (
            "INVITE",
            format!("sip:600@{DOMAIN}"),
            format!("sip:600@{DOMAIN}"),
        )
    } else {
        (
            "REGISTER",
            format!("sip:{DOMAIN}"),
            format!("sip:1001@{DOMAIN}"),
        )
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKburst{i};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=b{i}\r\nTo: <{to}>\r\n\
         Call-ID: burst-{i}@{me}\r\nCSeq: 1 {method}\r\nContact: <sip:1001@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// SIGSTOP to the proxy, and `waitpid(WUNTRACED)` until the kernel reports it stopped (the
/// child is not reaped: WUNTRACED only reports the stop).
fn stop_proxy(scene: &mut Scene) {
    scene.proxy.signal(libc::SIGSTOP);
    let pid = libc::pid_t::try_from(scene.proxy.proc.child_mut().id()).expect("pid in range");
    let mut status = 0;
    // SAFETY: waitpid on our own unreaped child, writing into a local int.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFSTOPPED(status), "not stopped: status {status:#x}");
}

/// Milliseconds of `CLOCK_REALTIME_COARSE`, the clock the proxy's loop reads once per turn.
fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}

/// The proxy reads its backlog at most once per tick of its coarse clock (1-4 ms): a stop,
/// burst and resume that all fall within the tick of its last reading would be processed
/// before the next one. Waits (spinning on the clock, at most a second) until it ticks.
fn wait_clock_tick() {
    let (t0, end) = (coarse_ms(), Instant::now() + Duration::from_secs(1));
    while coarse_ms() == t0 && Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Sends the burst to the stopped proxy, resumes it, and collects the answers until all
/// came or [`QUIET`] passed without one: (status code, Retry-After present) per answer.
fn burst_while_stopped(scene: &mut Scene, phone: &UdpSocket) -> Vec<(u16, bool)> {
    let proxy = scene.proxy.addr;
    let me = phone.local_addr().expect("phone address");
    stop_proxy(scene);
    wait_clock_tick();
    for i in 0..BURST {
        phone
            .send_to(burst_request(i, me).as_bytes(), proxy)
            .expect("send to the stopped proxy");
    }
    scene.proxy.signal(libc::SIGCONT);
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65_536];
    phone.set_read_timeout(Some(QUIET)).expect("read timeout");
    let end = Instant::now() + LIMIT;
    while answers.len() < BURST && Instant::now() < end {
        let Ok(n) = phone.recv(&mut buf) else {
            break;
        };
        let msg = SipMsg {
            text: String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned(),
            from: proxy,
        };
        let code = msg.code().unwrap_or(0);
        if code == 100 {
            continue;
        }
        answers.push((code, msg.header("Retry-After").is_some()));
    }
    answers
}

/// One OPTIONS keep-alive round trip to the proxy (answered even while it sheds): paces the
/// `/metrics` polls and makes the workers publish their counters.
fn ping(phone: &Phone, proxy: SocketAddr, n: u32) {
    let me = phone.addr;
    phone.send(
        proxy,
        &format!(
            "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKping{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:ping@{me}>;tag=p\r\nTo: <sip:{proxy}>\r\n\
             Call-ID: ping-{n}@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    let answer = phone.recv_until(Instant::now() + LIMIT);
    assert!(
        answer.as_ref().and_then(SipMsg::code) == Some(200),
        "OPTIONS {n} answered {answer:?}"
    );
}

/// Polls `/metrics` (one OPTIONS round trip between polls) until `done` holds for the
/// exposition, at most [`LIMIT`]; returns the last exposition.
fn metrics_until(admin: SocketAddr, proxy: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let pinger = Phone::bind(Ipv4Addr::LOCALHOST);
    let end = Instant::now() + LIMIT;
    let mut n = 0;
    // The admin API starts after the workers answer SIP: wait until it accepts.
    while std::net::TcpStream::connect(admin).is_err() && Instant::now() < end {
        n += 1;
        ping(&pinger, proxy, n);
    }
    loop {
        let (status, body) = http_get(admin, "/metrics");
        assert_eq!(status, 200, "{body}");
        if done(&body) || Instant::now() >= end {
            return body;
        }
        n += 1;
        ping(&pinger, proxy, n);
    }
}

/// The sum of a per-worker family (`NAME{worker="i"}` for every worker).
fn per_worker_sum(exposition: &str, name: &str) -> f64 {
    (0..2)
        .map(|w| sample(exposition, &format!("{name}{{worker=\"{w}\"}}")))
        .sum()
}

fn overload_scene(tune: Tune) -> (Scene, SocketAddr) {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            // The burst comes from one address: no rate limit.
            guard_allow: vec!["127.0.0.0/8"],
            admin: Some(admin),
            ..tune
        },
        ..Setup::default()
    });
    (scene, admin)
}

/// Sends a fresh REGISTER without credentials from a new phone: the code of its answer.
fn fresh_register(proxy: SocketAddr) -> u16 {
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    phone.send(proxy, &burst_request(2, phone.addr));
    let answer = phone.recv_until(Instant::now() + LIMIT);
    answer.and_then(|m| m.code()).unwrap_or(0)
}

#[test]
fn a_receive_backlog_sheds_new_requests_with_503() {
    let (mut scene, admin) = overload_scene(Tune {
        shed_backlog_bytes: Some(32_768),
        ..Tune::default()
    });
    let proxy = scene.proxy.addr;
    assert_eq!(fresh_register(proxy), 401, "before the burst");

    let phone = burst_socket();
    let answers = burst_while_stopped(&mut scene, &phone);
    let shed = answers.iter().filter(|(c, _)| *c == 503).count();
    let normal = answers
        .iter()
        .filter(|(c, _)| *c == 401 || *c == 407)
        .count();
    eprintln!(
        "burst of {BURST}: {} answers, {shed} 503, {normal} challenges",
        answers.len()
    );
    assert!(
        shed > 0,
        "no 503 for a backlog over the threshold: {answers:?}"
    );
    assert!(
        answers.iter().all(|&(c, retry)| c != 503 || retry),
        "a 503 without Retry-After"
    );
    assert_eq!(
        shed + normal,
        answers.len(),
        "only 503s and challenges: {answers:?}"
    );

    // /metrics counts them, and the workers stop shedding once the backlog is gone.
    let m = metrics_until(admin, proxy, |m| {
        sample(m, "sipfront_overload_shed_total") >= shed as f64
            && sample(m, "sipfront_overload_shedding_workers") == 0.0
    });
    assert!(
        sample(&m, "sipfront_overload_shed_total") >= shed as f64,
        "shed counter below the 503s seen ({shed}):\n{m}"
    );
    assert_eq!(
        sample(&m, "sipfront_overload_shedding_workers"),
        0.0,
        "still shedding after the burst:\n{m}"
    );
    assert_eq!(per_worker_sum(&m, "sipfront_worker_shedding"), 0.0, "{m}");
    assert!(
        m.contains("sipfront_socket_rx_backlog_bytes{worker=\"0\"}"),
        "{m}"
    );
    assert_eq!(
        sample(&m, "sipfront_dropped_total{reason=\"kernel\"}"),
        0.0,
        "an 8 MiB buffer holds the burst:\n{m}"
    );
    // A fresh request gets its normal answer (the challenge), not 503.
    assert_eq!(fresh_register(proxy), 401, "after the burst");
}

#[test]
fn kernel_drops_at_a_full_receive_buffer_appear_in_metrics() {
    let (mut scene, admin) = overload_scene(Tune {
        shed_backlog_bytes: Some(32_768),
        // The kernel doubles it: about 8 KiB, a handful of datagrams.
        recv_buffer_bytes: Some(4096),
        ..Tune::default()
    });
    let proxy = scene.proxy.addr;
    let before = metrics_until(admin, proxy, |_| true);
    assert_eq!(
        per_worker_sum(&before, "sipfront_socket_drops_total"),
        0.0,
        "{before}"
    );

    let phone = burst_socket();
    let answers = burst_while_stopped(&mut scene, &phone);
    let unanswered = (BURST - answers.len()) as f64;
    eprintln!(
        "burst of {BURST} into a tiny buffer: {} answered",
        answers.len()
    );
    assert!(unanswered > 0.0, "a tiny buffer held the whole burst?");
    // Every datagram of the burst was either answered or dropped by the kernel.
    let m = metrics_until(admin, proxy, |m| {
        per_worker_sum(m, "sipfront_socket_drops_total") >= unanswered
    });
    let drops = per_worker_sum(&m, "sipfront_socket_drops_total");
    assert_eq!(
        drops, unanswered,
        "kernel drops vs unanswered requests:\n{m}"
    );
    assert_eq!(
        sample(&m, "sipfront_dropped_total{reason=\"kernel\"}"),
        drops,
        "{m}"
    );
    assert!(
        // OpenMetrics: the counter family is named without `_total`.
        m.contains("# TYPE sipfront_socket_drops counter"),
        "{m}"
    );
}

#[test]
fn parked_requests_are_bounded_while_credential_lookups_stall() {
    let Some(mut db) = SippeersDb::create() else {
        return;
    };
    db.insert_users([("1001", "pw1001")]);
    const PARKED: usize = 2;
    const USERS: usize = 10;
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            credentials_url: Some(db.url(None)),
            // No periodic reload during the test: only miss lookups read the table.
            refresh_secs: Some(0),
            guard_allow: vec!["127.0.0.0/8"],
            max_parked_per_worker: Some(PARKED),
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    // Users the proxy has never seen: each REGISTER needs a lookup.
    let users: Vec<(String, String)> = (0..USERS)
        .map(|i| (format!("70{i:02}"), format!("pw-70{i:02}")))
        .collect();
    db.insert_users(users.iter().map(|(u, p)| (u.as_str(), p.as_str())));

    // One phone socket: every request lands on the same worker (4-tuple hash).
    let phone = Phone::bind(Ipv4Addr::LOCALHOST);
    let me = phone.addr;
    let register = |user: &str, cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpk{user}.{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{user}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: park-{user}@{me}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\n\
             Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    // The challenges need no lookup: get one per user first.
    let mut creds = Vec::new();
    for (user, password) in &users {
        phone.send(proxy, &register(user, 1, ""));
        let mut seen = Vec::new();
        let challenge = phone.expect_response(401, "1 REGISTER", LIMIT, &mut seen);
        let uri = format!("sip:{DOMAIN}");
        let c = answer_challenge(
            &challenge,
            "WWW-Authenticate",
            user,
            password,
            "REGISTER",
            &uri,
        );
        creds.push(format!("Authorization: {c}\r\n"));
    }

    let lock = db.lock_sippeers();
    for ((user, _), auth) in users.iter().zip(&creds) {
        phone.send(proxy, &register(user, 2, auth));
    }
    // The excess is refused at once; the parked ones get nothing while the table is locked.
    let mut refused = 0;
    let end = Instant::now() + LIMIT;
    while refused < USERS - PARKED {
        let Some(m) = phone.recv_until(end) else {
            break;
        };
        match m.code() {
            Some(503) => {
                assert!(m.header("Retry-After").is_some(), "{}", m.text);
                refused += 1;
            }
            _ => panic!("while lookups stall, only 503s may come:\n{}", m.text),
        }
    }
    assert_eq!(refused, USERS - PARKED, "requests refused beyond the bound");
    let over = |m: &str| sample(m, "sipfront_dropped_total{reason=\"overload\"}");
    let m = metrics_until(admin, proxy, |m| over(m) >= (USERS - PARKED) as f64);
    assert_eq!(
        sample(&m, "sipfront_dropped_total{reason=\"overload\"}"),
        (USERS - PARKED) as f64,
        "{m}"
    );

    // The lock goes: the parked registrations complete.
    drop(lock);
    let mut ok = 0;
    let end = Instant::now() + LIMIT;
    while ok < PARKED {
        let Some(m) = phone.recv_until(end) else {
            break;
        };
        assert_eq!(m.code(), Some(200), "a parked REGISTER:\n{}", m.text);
        ok += 1;
    }
    assert_eq!(ok, PARKED, "parked REGISTERs completed after the lookups");
}
