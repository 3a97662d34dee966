//! The protections of issue 7 against the REAL `sipfront` binary on loopback, one test each:
//! per-source rate limiting (`[guard] rate_pps`/`rate_burst`, `allow`), the failed-auth ban
//! (`ban_ip_failures`, `sipfront ctl bans`/`unban`), scanner User-Agents, "never an open
//! relay" (non-local domain, forged in-dialog requests without the Record-Route token, only
//! Asterisk skipping auth) and overload (`[limits] max_transactions_per_worker` → 503 with
//! Retry-After, bounded memory).
//!
//! Phones are raw UDP sockets ([`Phone`]) on their own loopback addresses (127.0.0.3 and up)
//! so each is its own "source" for the guard; 127.0.0.2 is Asterisk (`match = "ip"`: any
//! port of it is trusted). Every wait is a socket read timeout; a "no answer" check waits
//! [`SILENCE`] and no longer. The proxy's own view comes from `/metrics` and `sipfront ctl`.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::admin::{ctl, ctl_ok, free_admin_addr, metric};
use support::phone::{answer_challenge, Phone, SipMsg};
use support::proxy::{Tune, DOMAIN};
use support::{password, Scene, Setup};

/// How long a request that must go unanswered is given to be answered anyway.
const SILENCE: Duration = Duration::from_millis(600);
/// How long an answer that must come may take.
const ANSWER: Duration = Duration::from_secs(5);

const ASTERISK_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const PHONE_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const PHONE_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// An out-of-dialog OPTIONS to the proxy itself (answered 200 by the proxy), numbered `n`.
fn options(me: SocketAddr, proxy: SocketAddr, n: u32, user_agent: Option<&str>) -> String {
    let ua = user_agent.map_or(String::new(), |u| format!("User-Agent: {u}\r\n"));
    format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKopt{n}x{p};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=o{n}\r\nTo: <sip:{proxy}>\r\n\
         Call-ID: opt{n}-{p}@{me}\r\nCSeq: {n} OPTIONS\r\n{ua}Content-Length: 0\r\n\r\n",
        p = me.port()
    )
}

/// Sends `count` OPTIONS back to back, then counts the 200s received until [`SILENCE`]
/// passes without one (each answer restarts the wait; bounded by `count` answers).
fn flood_options(phone: &Phone, proxy: SocketAddr, count: u32) -> u32 {
    for n in 1..=count {
        phone.send(proxy, &options(phone.addr, proxy, n, None));
    }
    let mut answered = 0;
    while let Some(m) = phone.recv_until(Instant::now() + SILENCE) {
        if m.code() == Some(200) {
            answered += 1;
        }
    }
    answered
}

/// One request, and the first response to it within `limit` (`None`: silence).
fn ask(phone: &Phone, proxy: SocketAddr, text: &str, limit: Duration) -> Option<SipMsg> {
    phone.send(proxy, text);
    let cseq = text
        .lines()
        .find_map(|l| l.strip_prefix("CSeq: "))
        .unwrap_or("")
        .to_owned();
    let deadline = Instant::now() + limit;
    while let Some(m) = phone.recv_until(deadline) {
        if m.code().is_some() && m.header("CSeq") == Some(cseq.as_str()) {
            return Some(m);
        }
    }
    None
}

/// Waits until `series` of `/metrics` reaches `want` (the workers publish every 100 ms).
/// Between scrapes it paces itself on an OPTIONS round trip from `pacer`, an exempt source.
fn wait_metric(scene: &Scene, pacer: &Phone, series: &str, want: f64) -> f64 {
    let admin = scene.proxy.admin.expect("admin API enabled");
    let deadline = Instant::now() + ANSWER;
    for n in 1.. {
        let got = metric(admin, series);
        if got >= want || Instant::now() >= deadline {
            return got;
        }
        let _ = ask(
            pacer,
            scene.proxy.addr,
            &options(pacer.addr, scene.proxy.addr, n, None),
            SILENCE,
        );
    }
    unreachable!("the loop above only ends by returning")
}

fn register_text(me: SocketAddr, user: &str, call_id: &str, cseq: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{call_id}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\nExpires: 300\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// A REGISTER of `user` from a fresh socket on `ip`, answering the 401 with `pw`: the final
/// code of the authenticated REGISTER, `Err("no challenge")` / `Err("no final")` on silence.
fn try_register(
    ip: Ipv4Addr,
    proxy: SocketAddr,
    user: &str,
    pw: &str,
) -> Result<u16, &'static str> {
    let phone = Phone::bind(ip);
    let call_id = format!("reg{}", phone.addr.port());
    let first = register_text(phone.addr, user, &call_id, 1, "");
    let challenge = ask(&phone, proxy, &first, SILENCE).ok_or("no challenge")?;
    if challenge.code() != Some(401) {
        return challenge.code().ok_or("no challenge");
    }
    let uri = format!("sip:{DOMAIN}");
    let creds = answer_challenge(&challenge, "WWW-Authenticate", user, pw, "REGISTER", &uri);
    let second = register_text(
        phone.addr,
        user,
        &call_id,
        2,
        &format!("Authorization: {creds}\r\n"),
    );
    // The first failure of a source waits for the credential lookup: allow more than SILENCE.
    let last = ask(&phone, proxy, &second, SILENCE * 3).ok_or("no final")?;
    last.code().ok_or("no final")
}

#[test]
fn rate_limit_drops_a_flood_from_one_source_only() {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            rate_pps: Some(1),
            rate_burst: Some(5),
            guard_allow: vec!["127.0.0.5"],
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let flooder = Phone::bind(PHONE_A);
    let answered = flood_options(&flooder, proxy, 40);
    // The bucket holds 5 tokens and refills 1/s; the flood takes a few ms.
    assert!(
        (5..=6).contains(&answered),
        "a flood of 40 OPTIONS from one source got {answered} answers, not about the burst of 5"
    );
    let asterisk = Phone::bind(ASTERISK_IP);
    let limited = wait_metric(
        &scene,
        &asterisk,
        "sipfront_dropped_total{reason=\"rate_limited\"}",
        34.0,
    );
    assert!(
        limited >= 34.0,
        "rate_limited drops are {limited}, not at least 34"
    );
    // `sipfront ctl stats` shows the same counter to an operator.
    let stats = ctl_ok(admin, &["stats"]);
    let shown: Option<u64> = stats
        .split("rate-limited ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok());
    assert!(
        shown.is_some_and(|n| n >= 34),
        "ctl stats shows rate-limited {shown:?}:\n{stats}"
    );

    // Another phone still has its own full bucket.
    let other = Phone::bind(PHONE_B);
    assert_eq!(
        flood_options(&other, proxy, 3),
        3,
        "another phone's OPTIONS"
    );
    // Asterisk and an allow-listed address are exempt: every one of 40 is answered.
    assert_eq!(
        flood_options(&asterisk, proxy, 40),
        40,
        "Asterisk's OPTIONS"
    );
    let allowed = Phone::bind(ALLOWED);
    assert_eq!(
        flood_options(&allowed, proxy, 40),
        40,
        "an allow-listed source's OPTIONS"
    );
}

#[test]
fn failed_auth_bans_the_source_until_unbanned() {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            ban_ip_failures: Some(3),
            ban_secs: Some(600),
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    // Two wrong passwords are challenged again; the third bans the source at once.
    for attempt in 1..=2 {
        assert_eq!(
            try_register(PHONE_A, proxy, "1001", "wrong"),
            Ok(401),
            "wrong password {attempt}"
        );
    }
    assert_eq!(
        try_register(PHONE_A, proxy, "1001", "wrong"),
        Err("no final"),
        "third wrong password"
    );
    // Banned: ignored even with the right password (not even challenged).
    assert_eq!(
        try_register(PHONE_A, proxy, "1001", password("1001")),
        Err("no challenge")
    );
    let a = Phone::bind(PHONE_A);
    assert!(
        ask(&a, proxy, &options(a.addr, proxy, 1, None), SILENCE).is_none(),
        "OPTIONS from a banned source"
    );
    // Other phones are unaffected.
    assert_eq!(
        try_register(PHONE_B, proxy, "2001", password("2001")),
        Ok(200)
    );

    let bans = ctl_ok(admin, &["bans"]);
    assert!(
        bans.contains("127.0.0.3"),
        "ctl bans does not list 127.0.0.3:\n{bans}"
    );
    assert!(
        !bans.contains("127.0.0.4"),
        "ctl bans lists the good phone:\n{bans}"
    );
    assert_eq!(metric(admin, "sipfront_bans"), 1.0, "sipfront_bans gauge");

    ctl_ok(admin, &["unban", "127.0.0.3"]);
    let bans = ctl_ok(admin, &["bans"]);
    assert!(
        !bans.contains("127.0.0.3"),
        "still banned after unban:\n{bans}"
    );
    assert!(
        !ctl(admin, &["unban", "127.0.0.3"]).status.success(),
        "a second unban succeeded"
    );
    assert_eq!(
        try_register(PHONE_A, proxy, "1001", password("1001")),
        Ok(200),
        "after unban"
    );
}

#[test]
fn scanner_user_agents_get_no_answer() {
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(PHONE_A);
    for (n, ua) in [
        (1, "friendly-scanner"),
        (2, "sipvicious 0.3"),
        (3, "SIPCLI/v1.8"),
    ] {
        let got = ask(
            &phone,
            proxy,
            &options(phone.addr, proxy, n, Some(ua)),
            SILENCE,
        );
        assert!(
            got.is_none(),
            "scanner {ua:?} was answered: {:?}",
            got.map(|m| m.text)
        );
    }
    // A REGISTER from a scanner is not even challenged.
    let reg = register_text(
        phone.addr,
        "1001",
        "scanreg",
        1,
        "User-Agent: friendly-scanner\r\n",
    );
    assert!(
        ask(&phone, proxy, &reg, SILENCE).is_none(),
        "scanner REGISTER was answered"
    );
    // The same source with a phone's User-Agent is answered (scanners are dropped, not banned).
    let ok = ask(
        &phone,
        proxy,
        &options(phone.addr, proxy, 9, Some("Yealink SIP-T46S 66.86.0.15")),
        ANSWER,
    );
    assert_eq!(ok.and_then(|m| m.code()), Some(200), "a phone's OPTIONS");
    let pacer = Phone::bind(PHONE_B);
    let dropped = wait_metric(
        &scene,
        &pacer,
        "sipfront_dropped_total{reason=\"scanner\"}",
        4.0,
    );
    assert!(dropped >= 4.0, "scanner drops are {dropped}, not 4");
}

/// A request inside a dialog the proxy never Record-Routed: To tag, Route to the proxy with
/// `route_params` (no or a forged `sft` token), then a Route to `target`.
fn forged_in_dialog(
    method: &str,
    me: SocketAddr,
    proxy: SocketAddr,
    route_params: &str,
    target: SocketAddr,
    n: u32,
) -> String {
    format!(
        "{method} sip:victim@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKforge{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=f{n}\r\nTo: <sip:victim@{target}>;tag=t{n}\r\n\
         Route: <sip:{proxy};lr{route_params}>, <sip:{target};lr>\r\n\
         Call-ID: forge{n}@{me}\r\nCSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn never_an_open_relay() {
    let scene = Scene::start(Setup::default());
    let proxy = scene.proxy.addr;
    let phone = Phone::bind(PHONE_A);
    let target = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 6), 0)).expect("target socket");
    let target_addr = target.local_addr().expect("target address");

    // A non-local domain: 403 Not relaying, before any challenge.
    for (n, method) in [(1, "INVITE"), (2, "MESSAGE"), (3, "OPTIONS")] {
        let text = format!(
            "{method} sip:bob@elsewhere.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrelay{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=r{n}\r\nTo: <sip:bob@elsewhere.example.com>\r\n\
             Call-ID: relay{n}@{me}\r\nCSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n",
            me = phone.addr
        );
        let got = ask(&phone, proxy, &text, ANSWER).map(|m| m.start_line().to_owned());
        assert_eq!(
            got.as_deref(),
            Some("SIP/2.0 403 Not relaying"),
            "{method} to a non-local domain"
        );
    }
    // Forged in-dialog requests: no token, a bogus token, a token of the right shape: 403.
    // An empty `sft=` makes the Route URI unparseable, so the proxy does not see itself in
    // it and answers 404 Not Here (src/core/route.rs): refused all the same.
    let forged: [(&str, &[u16]); 4] = [
        ("", &[403]),
        (";sft=", &[403, 404]),
        (";sft=deadbeef", &[403]),
        (";sft=0123456789abcdef0123456789abcdef", &[403]),
    ];
    for (i, (params, want)) in forged.into_iter().enumerate() {
        let n = 10 + i as u32;
        let bye = forged_in_dialog("BYE", phone.addr, proxy, params, target_addr, n);
        let got = ask(&phone, proxy, &bye, ANSWER).and_then(|m| m.code());
        assert!(
            got.is_some_and(|c| want.contains(&c)),
            "forged BYE with Route params {params:?}: {got:?}, want one of {want:?}"
        );
        // An ACK is never answered; it must not be relayed either.
        let ack = forged_in_dialog("ACK", phone.addr, proxy, params, target_addr, n + 100);
        phone.send(proxy, &ack);
    }
    target
        .set_read_timeout(Some(SILENCE))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    if let Ok((len, from)) = target.recv_from(&mut buf) {
        panic!(
            "a forged in-dialog request reached the target (from {from}):\n{}",
            String::from_utf8_lossy(buf.get(..len).unwrap_or_default())
        );
    }

    // Only Asterisk skips auth: the same OPTIONS to a user is challenged from a phone
    // (407) and routed from 127.0.0.2 (1001 is not registered: 404/480, never a challenge).
    let to_user = |me: SocketAddr, n: u32| {
        format!(
            "OPTIONS sip:1001@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKau{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:2001@{DOMAIN}>;tag=a{n}\r\nTo: <sip:1001@{DOMAIN}>\r\n\
             Call-ID: au{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let from_phone = ask(&phone, proxy, &to_user(phone.addr, 30), ANSWER).and_then(|m| m.code());
    assert_eq!(from_phone, Some(407), "OPTIONS to a user from a phone");
    let asterisk = Phone::bind(ASTERISK_IP);
    let from_asterisk =
        ask(&asterisk, proxy, &to_user(asterisk.addr, 31), ANSWER).and_then(|m| m.code());
    assert!(
        matches!(from_asterisk, Some(404 | 480)),
        "OPTIONS to an unregistered user from Asterisk: {from_asterisk:?} (want 404/480, no challenge)"
    );
}

/// Phone 1001's INVITE to the stand-in-less Asterisk, answering the 407: the first response
/// to the authenticated INVITE (100 when admitted, 503 when refused).
fn invite_first_response(proxy: SocketAddr) -> Option<SipMsg> {
    let phone = Phone::bind(PHONE_A);
    let me = phone.addr;
    let call_id = format!("ovl{}", me.port());
    let uri = format!("sip:600@{DOMAIN}");
    let text = |cseq: u32, extra: &str| {
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=t{call_id}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:1001@{me}>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    };
    let challenge = ask(&phone, proxy, &text(1, ""), ANSWER)?;
    assert_eq!(
        challenge.code(),
        Some(407),
        "first INVITE: {}",
        challenge.text
    );
    let ack = format!(
        "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=t{call_id}\r\nTo: <{uri}>;tag={}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        challenge.to_tag()
    );
    phone.send(proxy, &ack);
    let creds = answer_challenge(
        &challenge,
        "Proxy-Authenticate",
        "1001",
        password("1001"),
        "INVITE",
        &uri,
    );
    ask(
        &phone,
        proxy,
        &text(2, &format!("Proxy-Authorization: {creds}\r\n")),
        ANSWER,
    )
}

/// INVITEs the overload test sends.
const ROUNDS: usize = 200;

/// The resident set size of `pid` (0 if unreadable).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn overload_answers_503_with_retry_after() {
    // Asterisk is a socket that never answers: every admitted INVITE stays open (Timer B is
    // 64·T1 = 32 s, longer than this test).
    let asterisk = UdpSocket::bind((ASTERISK_IP, 0)).expect("silent Asterisk socket");
    let admin = free_admin_addr();
    let mut scene = Scene::start(Setup {
        standin: false,
        extra_nodes: vec![asterisk.local_addr().expect("Asterisk address")],
        tune: Tune {
            max_transactions_per_worker: Some(2),
            // 3 datagrams per INVITE: more than the default burst of 400 from one source.
            guard_allow: vec!["127.0.0.3"],
            admin: Some(admin),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let pid = scene.proxy.proc.child_mut().id();
    let (mut admitted, mut refused) = (0usize, 0u32);
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let first = invite_first_response(proxy).expect("an answer to every authenticated INVITE");
        match first.code() {
            Some(100) => admitted += 1,
            Some(503) => {
                refused += 1;
                assert!(
                    first.header("Retry-After").is_some(),
                    "503 without Retry-After:\n{}",
                    first.text
                );
            }
            other => panic!(
                "INVITE {round}: unexpected first response {other:?}:\n{}",
                first.text
            ),
        }
        // From round 25 on: the first rounds also meet the proxy's own start-up (threads'
        // first allocations, the credential database opened on the first miss), which can
        // land on either side of round 0 on a busy machine.
        if round % 25 == 0 && round > 0 {
            rss.push(rss_kib(pid));
        }
    }
    // Only admitted INVITEs reach Asterisk (Timer A retransmits them: count Call-IDs).
    asterisk
        .set_read_timeout(Some(SILENCE))
        .expect("read timeout");
    let mut buf = vec![0u8; 65_536];
    let mut forwarded = std::collections::HashSet::new();
    // Retransmissions keep coming (Timer A): stop at a quiet gap or after ANSWER at most.
    let drain_end = Instant::now() + ANSWER;
    while let Ok(n) = asterisk.recv(&mut buf) {
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        let call_id = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .map(str::to_owned);
        if text.starts_with("INVITE ") {
            forwarded.extend(call_id);
        }
        if forwarded.len() > 4 || Instant::now() >= drain_end {
            break;
        }
    }
    assert_eq!(
        forwarded.len(),
        admitted,
        "INVITEs reaching Asterisk vs admitted"
    );
    // 2 workers × 2 transactions: at most 4 INVITEs can be held at once.
    assert!(
        (1..=4).contains(&admitted),
        "{admitted} INVITEs admitted, {refused} refused"
    );
    assert_eq!(admitted + refused as usize, ROUNDS);
    rss.push(rss_kib(pid));
    eprintln!("overload: {admitted} INVITEs admitted, {refused} refused with 503, RSS KiB {rss:?}");
    // The first rounds touch fresh pages (buffers, slabs, the allocator's arenas); after
    // that, refusing more INVITEs must cost nothing.
    let span = |r: &[u64]| r.iter().max().unwrap_or(&0) - r.iter().min().unwrap_or(&0);
    let second_half = rss.get(rss.len() / 2..).unwrap_or_default();
    assert!(
        span(&rss) < 8 * 1024 && span(second_half) < 2 * 1024,
        "RSS (KiB, every 25 INVITEs) grows under overload: {rss:?}"
    );
    // Still alive and answering.
    let probe = Phone::bind(PHONE_B);
    let ok =
        ask(&probe, proxy, &options(probe.addr, proxy, 1, None), ANSWER).and_then(|m| m.code());
    assert_eq!(ok, Some(200), "OPTIONS while overloaded");
    let dropped = wait_metric(
        &scene,
        &probe,
        "sipfront_dropped_total{reason=\"overload\"}",
        f64::from(refused),
    );
    assert!(
        dropped >= f64::from(refused),
        "overload drops {dropped}, refused {refused}"
    );
    assert!(scene.proxy.proc.exited().is_none(), "sipfront exited");
}

/// docs/guard.md, "Exemption": Asterisk nodes and `allow` entries are never
/// scanner-checked (a pentest host may be allow-listed). The core
/// checks the User-Agent of every request whatever its source (src/core/request.rs calls
/// `guard.is_scanner` without looking at the source), so both are dropped silently.
#[test]
fn exempt_sources_are_not_scanner_checked() {
    let scene = Scene::start(Setup {
        tune: Tune {
            guard_allow: vec!["127.0.0.5"],
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let allowed = Phone::bind(ALLOWED);
    let text = options(allowed.addr, proxy, 1, Some("sipvicious 0.3.4"));
    let got = ask(&allowed, proxy, &text, ANSWER).and_then(|m| m.code());
    assert_eq!(
        got,
        Some(200),
        "a scanner User-Agent from an allow-listed address"
    );
    let asterisk = Phone::bind(ASTERISK_IP);
    let text = options(asterisk.addr, proxy, 2, Some("friendly-scanner"));
    let got = ask(&asterisk, proxy, &text, ANSWER).and_then(|m| m.code());
    assert_eq!(
        got,
        Some(200),
        "OPTIONS from Asterisk with a scanner User-Agent"
    );
}
