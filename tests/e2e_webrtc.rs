//! A real browser through sipfront's WSS: headless Chromium (the Debian package) opens a test
//! page (tests/fixtures/webrtc/phone.html) that loads JsSIP 3.13.8 (vendored, see the
//! fixture README), registers over WSS with digest auth, receives a call placed by the
//! Asterisk stand-in and answers it, hangs up, then calls 600 and hangs up. The page reports
//! each step to a small HTTP server this test runs on loopback (which also serves the page,
//! so its origin is `http://127.0.0.1:PORT`, the one `[ws] origins` allows); every
//! assertion is here.
//!
//! The incoming call: a UDP phone (user 2002) calls 1001 through sipfront; the stand-in in
//! dial mode (like Asterisk's `Dial(PJSIP/1001)`) places the call to 1001's registered
//! Contact — sipfront — which delivers it over the browser's WebSocket. The caller offers a
//! WebRTC-shaped SDP (ICE credentials, a DTLS fingerprint, `rtcp-mux`), which sipfront and the
//! stand-in pass through untouched, so Chromium accepts it and JsSIP answers; the stand-in
//! answers the browser's own call to 600 in kind (`webrtc_answer` in the stand-in). No media
//! flows: neither side offers ICE candidates (Chromium runs with UDP disabled for WebRTC), so
//! the test checks signalling up to the confirmed dialog (200 and ACK) and its BYE, which is
//! as far as JsSIP goes without media.
//!
//! Skipped, with a message, where Chromium is not installed (scripts/test installs the
//! `chromium` package). Chromium only talks to loopback: its other networking is disabled
//! and every host name resolves to nothing.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::flows::{ack_2xx, Outcome};
use support::netns::which;
use support::phone::{answer_challenge, Phone};
use support::procs::Proc;
use support::proxy::{Tune, DOMAIN};
use support::tls::TestPki;
use support::{password, Scene, Setup};

/// The bound of each step (Chromium starts slowly on a busy machine).
const WAIT: Duration = Duration::from_secs(60);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webrtc");

/// The loopback HTTP server of the page: `GET /phone.html`, `GET /jssip.min.js`, and
/// `POST /report` (one line of the page's progress, sent on `reports`).
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    fn start(reports: Sender<String>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let addr = listener.local_addr().expect("page server address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Blocking accepts; `Drop` sets the flag and connects once to wake the last one.
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(s) = s {
                    serve(s, &reports);
                }
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP request on `s`, answered and closed.
fn serve(mut s: TcpStream, reports: &Sender<String>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 && buf.len() < 1 << 20 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match path {
        "/phone.html" => ("200 OK", "text/html", read_fixture("phone.html")),
        "/jssip.min.js" => (
            "200 OK",
            "text/javascript",
            read_fixture("jssip-3.13.8.min.js"),
        ),
        "/report" => {
            let text = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
            let _ = reports.send(text);
            ("204 No Content", "text/plain", Vec::new())
        }
        _ => ("404 Not Found", "text/plain", Vec::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body);
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).expect("a WebRTC fixture")
}

/// Headless Chromium on `url`, in its own process group (killed as a group on drop), its
/// log (console messages included) in `log`.
struct Browser {
    proc: Proc,
    pgid: libc::pid_t,
}

impl Browser {
    fn start(bin: &Path, url: &str, profile: &Path, log: &Path) -> Browser {
        let stderr = std::fs::File::create(log).expect("chromium log file");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--mute-audio",
            "--ignore-certificate-errors",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            // Nothing leaves loopback: no host name resolves, WebRTC opens no UDP sockets
            // (no ICE candidates), and no mDNS names are announced.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
            "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let proc = Proc::spawn("chromium", &mut cmd);
        let pgid = libc::pid_t::try_from(proc.id()).expect("pid in range");
        Browser { proc, pgid }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.proc.exited().is_none() && self.pgid > 0 {
            // SAFETY: kill(2) reads two integers; the group is the one this test started
            // (the browser's PID, unreaped, leads it).
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
        self.proc.kill_and_reap();
    }
}

/// The page's reports, with what came so far (for failure messages).
struct Reports {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Reports {
    /// Waits for a report starting with `want`; panics on a failure report or at `WAIT`.
    fn expect(&mut self, want: &str, log: &Path) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(want) {
                        return line;
                    }
                    let bad = line.starts_with("error")
                        || line.starts_with("registrationFailed")
                        || line.contains(" failed ");
                    assert!(
                        !bad,
                        "the page reported `{line}`; so far {:?}\n{}",
                        self.seen,
                        tail(log)
                    );
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no `{want}` from the page within {WAIT:?}; got {:?}\n{}",
                    self.seen,
                    tail(log)
                ),
            }
        }
    }
}

/// The end of Chromium's log.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(80);
    format!(
        "chromium log ({}):\n{}",
        log.display(),
        lines[from..].join("\n")
    )
}

/// A WebRTC-shaped SDP offer (what a browser or Asterisk with `webrtc=yes` sends).
const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Xk9q\r\n\
a=ice-pwd:a7kKx0y0Lmb2QfUv9nJ3cDpE\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 3B:4C:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08:19:2A:3B:4C:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08:19:2A\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// The caller's INVITE (as 2002, from `me`) for 1001 with the WebRTC offer.
fn invite(me: SocketAddr, call_id: &str, cseq: u32, auth: &str) -> String {
    format!(
        "INVITE sip:1001@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:2002@{DOMAIN}>;tag=caller\r\nTo: <sip:1001@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:2002@{me}>\r\n{auth}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

#[test]
fn chromium_with_jssip_registers_over_wss_answers_a_call_and_calls_600() {
    let Some(chromium) = which("chromium").or_else(|| which("chromium-browser")) else {
        eprintln!(
            "SKIPPED e2e_webrtc: Chromium is not installed (scripts/test installs the Debian \
             package `chromium`; `apt-get install chromium` to run this test)"
        );
        return;
    };
    let (tx, rx) = channel();
    let page = PageServer::start(tx);
    let origin = format!("http://{}", page.addr);
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let s = Scene::start(Setup {
        tune: Tune {
            ws: true,
            tls: Some((pki.cert.clone(), pki.key.clone())),
            extra_toml: Some(format!("[ws]\norigins = [\"{origin}\"]\n")),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let wss = s.proxy.wss.expect("a WSS listener");
    let url = format!(
        "{origin}/phone.html?ws=wss://{wss}&user=1001&password={}&domain={DOMAIN}",
        password("1001")
    );
    let log: PathBuf = s.dir().join("chromium.log");
    let profile = tempfile::tempdir().unwrap();
    let _browser = Browser::start(&chromium, &url, profile.path(), &log);
    let mut reports = Reports {
        rx,
        seen: Vec::new(),
    };

    // JsSIP registers over WSS through the 401 challenge; the binding reaches Asterisk.
    reports.expect("registered", &log);
    s.standin().wait_registered("1001");

    // 2002 calls 1001: through sipfront to the stand-in, whose dial-mode INVITE comes back
    // through sipfront and down the browser's WebSocket. JsSIP answers.
    let caller = Phone::bind(Ipv4Addr::LOCALHOST);
    let proxy = s.proxy.addr;
    let call_id = format!("webrtc-in.{}", std::process::id());
    caller.send(proxy, &invite(caller.addr, &call_id, 1, ""));
    let mut seen = Vec::new();
    let challenge = caller.expect_final("1 INVITE", Duration::from_secs(10), &mut seen);
    assert_eq!(challenge.code(), Some(407), "{}", challenge.text);
    let ack = format!(
        "ACK sip:1001@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{call_id}.1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:2002@{DOMAIN}>;tag=caller\r\n\
         To: <sip:1001@{DOMAIN}>;tag={}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        caller.addr,
        challenge.to_tag()
    );
    caller.send(proxy, &ack);
    let uri = format!("sip:1001@{DOMAIN}");
    let creds = answer_challenge(
        &challenge,
        "Proxy-Authenticate",
        "2002",
        password("2002"),
        "INVITE",
        &uri,
    );
    let sent = invite(
        caller.addr,
        &call_id,
        2,
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    caller.send(proxy, &sent);
    reports.expect("incoming from", &log);
    seen.clear();
    let ok = caller.expect_final("2 INVITE", WAIT, &mut seen);
    assert_eq!(ok.code(), Some(200), "{}", ok.text);
    // Chromium's answer came back untouched through the WebSocket, sipfront and the stand-in.
    assert!(ok.text.contains("a=fingerprint:sha-256 "), "{}", ok.text);
    assert!(ok.text.contains("UDP/TLS/RTP/SAVPF"), "{}", ok.text);
    ack_2xx(
        &caller,
        proxy,
        &Outcome {
            last: ok,
            before: Vec::new(),
            sent,
        },
    );
    reports.expect("incoming confirmed", &log);
    // The browser hangs up: the stand-in relays the BYE to the caller.
    let bye = caller.expect_request("BYE", WAIT);
    caller.send(bye.from, &bye.reply(200, "OK", "", ""));
    let ended = reports.expect("incoming ended", &log);
    assert!(ended.contains("local"), "{ended}");

    // The browser calls 600 (challenged by sipfront, JsSIP answers with the password); the
    // stand-in answers, JsSIP ACKs, then hangs up.
    reports.expect("calling 600", &log);
    reports.expect("outgoing confirmed", &log);
    let ended = reports.expect("outgoing ended", &log);
    assert!(ended.contains("local"), "{ended}");

    let st = s.standin();
    assert!(
        st.stat("b_answered") >= 1,
        "the browser answered the stand-in's call"
    );
    assert!(st.stat("answered") >= 1, "600 answered the browser");
    st.wait_stat("bye", 2, Duration::from_secs(10));
}
