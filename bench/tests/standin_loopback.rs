//! Loopback integration tests of the real `asterisk-standin` binary: plain `UdpSocket`s play
//! the proxy and the phones; the control port and the events file are checked too.
//! Every receive has a timeout; nothing sleeps.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sipfront_bench::standin::parse::{Msg, Start};

const WAIT: Duration = Duration::from_secs(5);

/// The running binary; killed (by its own PID) when dropped.
struct StandIn {
    child: Child,
    sip: SocketAddr,
    control: SocketAddr,
    events: PathBuf,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.events);
    }
}

fn start(args: &[&str]) -> StandIn {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let events = std::env::temp_dir().join(format!(
        "standin-events-{}-{nanos}.jsonl",
        std::process::id()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_asterisk-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--events",
        ])
        .arg(&events)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn asterisk-standin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "asterisk-standin listening sip=ADDR control=ADDR"
    let field = |k: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line:?}"))
            .parse()
            .unwrap()
    };
    StandIn {
        sip: field("sip="),
        control: field("control="),
        events,
        child,
    }
}

impl StandIn {
    fn control(&self, cmd: &str) -> String {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.send_to(cmd.as_bytes(), self.control).unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = s.recv(&mut buf).expect("control reply");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }
}

/// A UDP endpoint playing a phone or the proxy.
struct Peer {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let addr = sock.local_addr().unwrap();
        Peer { sock, addr }
    }

    fn send(&self, to: SocketAddr, text: &str) {
        self.sock.send_to(text.as_bytes(), to).unwrap();
    }

    fn recv(&self) -> String {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf).expect("expected a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Receives until a response with `code` (skipping others, e.g. 100) and returns it.
    fn expect_code(&self, code: u16) -> String {
        for _ in 0..10 {
            let m = self.recv();
            if status(&m) == Some(code) {
                return m;
            }
        }
        panic!("no {code}");
    }

    /// Receives until a request `method`.
    fn expect_request(&self, method: &str) -> String {
        for _ in 0..10 {
            let m = self.recv();
            if m.starts_with(&format!("{method} ")) {
                return m;
            }
        }
        panic!("no {method}");
    }
}

fn status(text: &str) -> Option<u16> {
    match Msg::parse(text.as_bytes()).ok()?.start {
        Start::Response { code, .. } => Some(code),
        Start::Request { .. } => None,
    }
}

fn hdr(text: &str, name: &str) -> String {
    Msg::parse(text.as_bytes())
        .unwrap()
        .header(name)
        .unwrap_or_default()
        .to_owned()
}

fn to_tag(text: &str) -> String {
    Msg::parse(text.as_bytes())
        .unwrap()
        .to_tag()
        .unwrap()
        .to_owned()
}

fn register(user: &str, contact: SocketAddr, expires: u32, n: u32) -> String {
    format!(
        "REGISTER sip:127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {contact};branch=z9hG4bKreg{user}{n}\r\n\
From: <sip:{user}@127.0.0.2>;tag=r\r\nTo: <sip:{user}@127.0.0.2>\r\nCall-ID: reg-{user}\r\nCSeq: {n} REGISTER\r\n\
Contact: <sip:{user}@{contact}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A request from the caller `me` on dialog `call_id` (CSeq 1 for INVITE/ACK/CANCEL).
fn caller_request(
    method: &str,
    exten: &str,
    me: SocketAddr,
    call_id: &str,
    to_tag: Option<&str>,
) -> String {
    let to = to_tag.map_or(String::new(), |t| format!(";tag={t}"));
    let (seq, branch) = if method == "BYE" {
        (2, "z9hG4bKbye")
    } else {
        (1, "z9hG4bKinv")
    };
    format!(
        "{method} sip:{exten}@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}{call_id}\r\n\
From: <sip:alice@127.0.0.2>;tag=fa\r\nTo: <sip:{exten}@127.0.0.2>{to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\n\
Contact: <sip:alice@{me}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The callee's response to `req` (a request the stand-in sent it).
fn callee_response(req: &str, code: u16, me: SocketAddr) -> String {
    let m = Msg::parse(req.as_bytes()).unwrap();
    let vias: String = m
        .headers_named("Via")
        .map(|v| format!("Via: {v}\r\n"))
        .collect();
    format!(
        "SIP/2.0 {code} X\r\n{vias}From: {}\r\nTo: {};tag=tb\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@{me}>\r\n\
Content-Length: 0\r\n\r\n",
        m.header("From").unwrap(),
        m.header("To").unwrap().split(";tag").next().unwrap(),
        m.call_id().unwrap(),
        m.header("CSeq").unwrap()
    )
}

#[test]
fn register_control_and_events() {
    let si = start(&[]);
    let phone = Peer::new();
    phone.send(si.sip, &register("bob", phone.addr, 120, 1));
    let ok = phone.expect_code(200);
    assert_eq!(hdr(&ok, "Expires"), "120");
    let reg = si.control("reg bob");
    assert!(
        reg.contains(&format!("\"contact\":\"sip:bob@{}\"", phone.addr)),
        "{reg}"
    );
    assert!(si.control("stats").contains("\"register\":1,"));
    assert!(si.control("regs").starts_with("{\"bob\":"));
    phone.send(si.sip, &register("bob", phone.addr, 0, 2));
    phone.expect_code(200);
    assert_eq!(si.control("reg bob"), "null");
    let log = std::fs::read_to_string(&si.events).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("\"event\":\"register\"") && lines[0].contains("[\"Expires\",\"120\"]")
    );
    assert!(lines[2].contains("\"event\":\"unregister\""));
    assert_eq!(si.control("quit"), "{\"ok\":true}");
}

#[test]
fn challenged_register() {
    let si = start(&["--challenge", "--password", "secret"]);
    let phone = Peer::new();
    phone.send(si.sip, &register("bob", phone.addr, 60, 1));
    let chal = phone.expect_code(401);
    assert!(hdr(&chal, "WWW-Authenticate")
        .starts_with("Digest algorithm=MD5, realm=\"asterisk\", nonce=\""));
    assert!(si.control("stats").contains("\"register_challenged\":1"));
}

#[test]
fn answer_mode_call() {
    let si = start(&["--route", "600=answer"]);
    let a = Peer::new();
    a.send(
        si.sip,
        &caller_request("INVITE", "600", a.addr, "ans1", None),
    );
    a.expect_code(180);
    let ok = a.expect_code(200);
    assert!(ok.contains("m=audio"));
    let tag = to_tag(&ok);
    a.send(
        si.sip,
        &caller_request("ACK", "600", a.addr, "ans1", Some(&tag)),
    );
    a.send(
        si.sip,
        &caller_request("BYE", "600", a.addr, "ans1", Some(&tag)),
    );
    a.expect_code(200);
    let stats = si.control("stats");
    assert!(
        stats.contains("\"answered\":1,") && stats.contains("\"calls_active\":0"),
        "{stats}"
    );
}

/// Registers bob at `b`, calls him from `a`, returns the B-leg INVITE seen by bob.
fn dial(si: &StandIn, a: &Peer, b: &Peer, call_id: &str) -> String {
    b.send(si.sip, &register("bob", b.addr, 3600, 1));
    b.expect_code(200);
    a.send(
        si.sip,
        &caller_request("INVITE", "bob", a.addr, call_id, None),
    );
    a.expect_code(100);
    let inv = b.expect_request("INVITE");
    assert!(inv.starts_with(&format!("INVITE sip:bob@{} SIP/2.0", b.addr)));
    assert_ne!(hdr(&inv, "Call-ID"), call_id);
    inv
}

#[test]
fn dial_mode_bridges_and_caller_hangs_up() {
    let si = start(&[]);
    let (a, b) = (Peer::new(), Peer::new());
    let inv = dial(&si, &a, &b, "dial1");
    b.send(si.sip, &callee_response(&inv, 180, b.addr));
    let ringing = a.expect_code(180);
    b.send(si.sip, &callee_response(&inv, 200, b.addr));
    let ack = b.expect_request("ACK");
    assert_eq!(hdr(&ack, "CSeq"), "102 ACK");
    let ok = a.expect_code(200);
    assert_eq!(to_tag(&ok), to_tag(&ringing));
    assert_ne!(to_tag(&ok), "tb");
    a.send(
        si.sip,
        &caller_request("ACK", "bob", a.addr, "dial1", Some(&to_tag(&ok))),
    );
    a.send(
        si.sip,
        &caller_request("BYE", "bob", a.addr, "dial1", Some(&to_tag(&ok))),
    );
    a.expect_code(200);
    let bye = b.expect_request("BYE");
    assert_eq!(hdr(&bye, "Call-ID"), hdr(&inv, "Call-ID"));
    b.send(si.sip, &callee_response(&bye, 200, b.addr));
    assert!(si.control("stats").contains("\"b_answered\":1,"));
}

#[test]
fn dial_mode_callee_hangs_up() {
    let si = start(&[]);
    let (a, b) = (Peer::new(), Peer::new());
    let inv = dial(&si, &a, &b, "dial2");
    b.send(si.sip, &callee_response(&inv, 200, b.addr));
    b.expect_request("ACK");
    let ok = a.expect_code(200);
    let m = Msg::parse(inv.as_bytes()).unwrap();
    let bye = format!(
        "BYE sip:alice@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKbb\r\nFrom: {};tag=tb\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        si.sip,
        b.addr,
        m.header("To").unwrap(),
        m.header("From").unwrap(),
        m.call_id().unwrap()
    );
    b.send(si.sip, &bye);
    b.expect_code(200);
    let a_bye = a.expect_request("BYE");
    assert_eq!(hdr(&a_bye, "Call-ID"), "dial2");
    assert_eq!(
        hdr(&a_bye, "From"),
        format!(
            "{};tag={}",
            hdr(&ok, "To").split(";tag").next().unwrap(),
            to_tag(&ok)
        )
    );
    a.send(si.sip, &callee_response(&a_bye, 200, a.addr));
}

#[test]
fn dial_mode_cancel_and_not_found() {
    let si = start(&[]);
    let (a, b) = (Peer::new(), Peer::new());
    let inv = dial(&si, &a, &b, "dial3");
    b.send(si.sip, &callee_response(&inv, 180, b.addr));
    a.expect_code(180);
    a.send(
        si.sip,
        &caller_request("CANCEL", "bob", a.addr, "dial3", None),
    );
    a.expect_code(200);
    a.expect_code(487);
    let cancel = b.expect_request("CANCEL");
    b.send(si.sip, &callee_response(&cancel, 200, b.addr));
    b.send(si.sip, &callee_response(&inv, 487, b.addr));
    let ack = b.expect_request("ACK");
    assert_eq!(
        Msg::parse(ack.as_bytes()).unwrap().branch(),
        Msg::parse(inv.as_bytes()).unwrap().branch()
    );
    a.send(
        si.sip,
        &caller_request("CANCEL", "nobody", a.addr, "dial4", None),
    );
    a.expect_code(481);
    a.send(
        si.sip,
        &caller_request("INVITE", "nobody", a.addr, "dial5", None),
    );
    a.expect_code(404);
    let stats = si.control("stats");
    assert!(
        stats.contains("\"cancel_sent\":1,") && stats.contains("\"not_found\":1,"),
        "{stats}"
    );
}
