//! Every RFC 4475 torture message (`tests/fixtures/rfc4475/*.sip`), every fuzz regression
//! input (`tests/fixtures/fuzz-regressions/`) and a few pieces of hand-made garbage, sent
//! over UDP to the REAL `sipfront` binary, once from a phone (127.0.0.3) and once from the
//! trusted Asterisk address (127.0.0.2, `match = "ip"`), each source in its own test and
//! its own proxy.
//!
//! After each datagram the test collects what comes back (until a final response, or
//! [`QUIET`] without one) and then checks the process: it has not exited and still answers an
//! OPTIONS keep-alive. The answers are judged against [`EXPECT`], which says per message and
//! per source what the core (src/core/request.rs) must do with it; the comments there say
//! why. Where the exact code depends on routing rather than on the message, a class is
//! asserted. Set `SIPFRONT_TORTURE_PRINT=1` to print every answer.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use support::phone::{Phone, SipMsg};
use support::proxy::DOMAIN;
use support::{Scene, Setup};

/// How long to wait for an answer that may not come (no final response yet).
const QUIET: Duration = Duration::from_millis(300);
/// How long the keep-alive OPTIONS may take.
const ALIVE: Duration = Duration::from_secs(5);

/// What must come back for one message from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Nothing at all (unparseable, a response matching no transaction, ...).
    Silence,
    /// A final response with exactly this code.
    Code(u16),
    /// A final response with one of these codes (routing decides between them).
    OneOf(&'static [u16]),
    /// Anything, as long as the process lives (fuzz inputs carry no expectation).
    Alive,
}

use Want::{Code, Silence};

/// A phone's request for a non-local domain: refused before anything else
/// (src/core/request.rs, `403 Not relaying`). Every RFC 4475 request is for example.com.
const RELAY: Want = Code(403);
/// Asterisk's request to a user: not challenged (Asterisk is trusted), routed to the user's
/// binding; nobody is registered, so the core answers 404 Not Found (480 would be as right).
const NOT_FOUND: Want = Want::OneOf(&[404, 480]);
/// A REGISTER from Asterisk: `403 Forbidden (REGISTER from Asterisk)`.
const AST_REG: Want = Code(403);
/// A phone's request for the local domain: authenticated first (407; 401 for REGISTER).
const CHALLENGE: Want = Want::OneOf(&[401, 407]);
const REG_CHALLENGE: Want = Code(401);

/// One RFC 4475 message: what sipfront answers it from a phone (as is), from Asterisk (as
/// is) and from a phone with the Request-URI host made local (see [`localize`]; rows of
/// responses and non-`sip:` URIs are not sent in that pass). `rfc` is set where sipfront
/// deviates from what RFC 4475 asks: the deviation is pinned by the passing tests (so the
/// process's robustness is checked) and asserted by the ignored `torture_rfc_answers`.
struct Row {
    name: &'static str,
    phone: Want,
    asterisk: Want,
    local: Want,
    rfc: Option<Want>,
}

const fn row(name: &'static str, phone: Want, asterisk: Want, local: Want) -> Row {
    Row {
        name,
        phone,
        asterisk,
        local,
        rfc: None,
    }
}

/// Answered `code` on every path, as RFC 4475 asks.
const fn answered(name: &'static str, code: u16) -> Row {
    Row {
        name,
        phone: Code(code),
        asterisk: Code(code),
        local: Code(code),
        rfc: None,
    }
}

/// Silent on every path although RFC 4475 asks for `rfc`.
const fn dropped(name: &'static str, rfc: Option<Want>) -> Row {
    Row {
        name,
        phone: Silence,
        asterisk: Silence,
        local: Silence,
        rfc,
    }
}

const EXPECT: &[Row] = &[
    // 3.1.1 valid messages. wsinv has a To tag and no Route: an in-dialog request for no
    // dialog of this proxy → 404 Not Here (src/core/route.rs) from every source.
    row("wsinv", Code(404), Code(404), Code(404)),
    row("intmeth", RELAY, NOT_FOUND, CHALLENGE),
    row("esc01", RELAY, NOT_FOUND, CHALLENGE),
    row("escnull", RELAY, AST_REG, REG_CHALLENGE),
    row("esc02", RELAY, NOT_FOUND, CHALLENGE),
    row("lwsdisp", RELAY, NOT_FOUND, CHALLENGE),
    row("longreq", RELAY, NOT_FOUND, CHALLENGE),
    // Two REGISTERs in one datagram: the first (by Content-Length) is handled.
    row("dblreq", RELAY, AST_REG, REG_CHALLENGE),
    row("semiuri", RELAY, NOT_FOUND, CHALLENGE),
    row("transports", RELAY, NOT_FOUND, CHALLENGE),
    row("mpart01", RELAY, NOT_FOUND, CHALLENGE),
    // Responses matching no transaction: dropped (counted `unmatched`).
    row("unreason", Silence, Silence, Silence),
    row("noreason", Silence, Silence, Silence),
    // 3.1.2 invalid messages.
    // Via and Contact malformed: answered to the datagram's source with the raw lines.
    answered("badinv01", 400),
    // Content-Length beyond the datagram: RFC 3261 §18.3, a request gets 400 (issue #16).
    answered("clerr", 400),
    // The rest are rejected by the parser (src/sip) or have an unparseable To/From/CSeq:
    // answered 400 with the raw Via/From/To/Call-ID/CSeq lines (src/core/build.rs).
    answered("ncl", 400),
    answered("scalar02", 400),
    // A response with an out-of-range CSeq: dropped.
    dropped("scalarlg", None),
    answered("quotbal", 400),
    answered("ltgtruri", 400),
    answered("lwsruri", 400),
    answered("lwsstart", 400),
    answered("trws", 400),
    // Escaped headers in the Request-URI (RFC 4475: 400): refused all the same (403/404,
    // or challenged first); the headers are never turned into real ones.
    row("escruri", RELAY, NOT_FOUND, CHALLENGE),
    // sipfront never interprets Date.
    row("baddate", RELAY, NOT_FOUND, CHALLENGE),
    // Invalid Contact (RFC 4475: 400): the registrar authenticates first.
    row("regbadct", RELAY, AST_REG, REG_CHALLENGE),
    answered("badaspec", 400),
    answered("baddn", 400),
    answered("badvers", 505),
    row("mismatch01", Code(400), Code(400), Code(400)),
    row(
        "mismatch02",
        Want::OneOf(&[400, 501]),
        Want::OneOf(&[400, 501]),
        Want::OneOf(&[400, 501]),
    ),
    // A response with a status code past 699: unparseable, dropped.
    dropped("bigcode", None),
    // 3.2: a bare magic cookie branch is still a branch.
    row("badbranch", RELAY, NOT_FOUND, CHALLENGE),
    // 3.3 application layer.
    answered("insuf", 400),
    row("unkscm", Code(416), Code(416), Code(416)),
    row("novelsc", Code(416), Code(416), Code(416)),
    row("unksm2", RELAY, AST_REG, REG_CHALLENGE),
    // Unknown Proxy-Require: RFC 3261 §16.3 step 5, before authentication: 420.
    answered("bext01", 420),
    row("invut", RELAY, NOT_FOUND, CHALLENGE),
    // Unknown auth scheme: ignored, the REGISTER is challenged.
    row("regaut01", RELAY, AST_REG, REG_CHALLENGE),
    answered("multi01", 400),
    answered("mcl01", 400),
    // A response whose next Via is a broadcast address: never forwarded (matches nothing).
    dropped("bcast", None),
    // OPTIONS to a user with Max-Forwards 0.
    row("zeromf", Code(483), Code(483), Code(483)),
    row("cparam01", RELAY, AST_REG, REG_CHALLENGE),
    row("cparam02", RELAY, AST_REG, REG_CHALLENGE),
    row("regescrt", RELAY, AST_REG, REG_CHALLENGE),
    row("sdp01", RELAY, NOT_FOUND, CHALLENGE),
    // 3.4: an RFC 2543 INVITE (no branch, no Max-Forwards, no Content-Length).
    row("inv2543", RELAY, NOT_FOUND, CHALLENGE),
];

/// Hand-made inputs: (name, bytes, what every source gets).
fn garbage() -> Vec<(&'static str, Vec<u8>, Want)> {
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKstray\r\n\
                 From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: stray\r\n\
                 CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let no_via = "OPTIONS sip:1001@sipfront.test SIP/2.0\r\nMax-Forwards: 70\r\n\
                  From: <sip:a@b>;tag=1\r\nTo: <sip:1001@sipfront.test>\r\nCall-ID: novia\r\n\
                  CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let big = format!(
        "OPTIONS sip:1001@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKbig\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1001@{DOMAIN}>\r\nCall-ID: big\r\n\
         CSeq: 1 OPTIONS\r\nX-Pad: {}\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(20_000)
    );
    vec![
        ("crlf-keepalive", b"\r\n\r\n".to_vec(), Silence),
        ("nul-bytes", vec![0u8; 100], Silence),
        ("binary", (0..=255u8).cycle().take(1500).collect(), Silence),
        ("text", b"hello world\r\n\r\n".to_vec(), Silence),
        ("stray-response", stray.as_bytes().to_vec(), Silence),
        (
            "truncated-head",
            b"INVITE sip:1001@sipfront.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9".to_vec(),
            Silence,
        ),
        ("no-via", no_via.as_bytes().to_vec(), Silence),
        // Over `[limits] max_message_bytes` (16 KiB by default).
        ("oversize", big.into_bytes(), Code(513)),
        ("max-udp-payload", vec![b'A'; 65_507], Silence),
    ]
}

fn print() -> bool {
    std::env::var_os("SIPFRONT_TORTURE_PRINT").is_some()
}

/// Sends `data` and returns every message received until a final response (included) or
/// until [`QUIET`] passes without any.
fn exchange(sock: &Phone, proxy: SocketAddr, data: &[u8]) -> Vec<SipMsg> {
    sock.send_bytes(proxy, data);
    let mut got = Vec::new();
    while let Some(m) = sock.recv_until(Instant::now() + QUIET) {
        let fin = m.code().is_some_and(|c| c >= 200);
        got.push(m);
        if fin {
            break;
        }
    }
    got
}

/// The process is alive: not exited, and an OPTIONS keep-alive is answered 200.
fn assert_alive(scene: &mut Scene, sock: &Phone, after: &str, n: u32) {
    assert!(
        scene.proxy.proc.exited().is_none(),
        "sipfront exited after {after}"
    );
    let proxy = scene.proxy.addr;
    let me = sock.addr;
    let options = format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKalive{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=alive{n}\r\nTo: <sip:{proxy}>\r\n\
         Call-ID: alive{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send(proxy, &options);
    let deadline = Instant::now() + ALIVE;
    let want = format!("{n} OPTIONS");
    while let Some(m) = sock.recv_until(deadline) {
        if m.code() == Some(200) && m.header("CSeq") == Some(want.as_str()) {
            return;
        }
    }
    panic!("sipfront does not answer OPTIONS after {after}");
}

/// `data` with the Request-URI's host replaced by the proxy's local domain, so that a phone's
/// request reaches authentication instead of the open-relay check; `None` when the first
/// line is not a request with a `sip:` URI (responses, other schemes, garbage).
fn localize(data: &[u8]) -> Option<Vec<u8>> {
    let eol = data.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(data.get(..eol)?).ok()?;
    let (method, rest) = line.split_once(' ')?;
    let (uri, version) = rest.rsplit_once(' ')?;
    if method.starts_with("SIP/") || version != "SIP/2.0" {
        return None;
    }
    let body = uri.strip_prefix("sip:")?;
    // The last '@' ends the user part (intmeth's user part holds a '?').
    let host_start = body.rfind('@').map_or(0, |i| i + 1);
    let host_len = body
        .get(host_start..)?
        .find([';', '?', '>', ' '])
        .unwrap_or(body.len() - host_start);
    let new_uri = format!(
        "sip:{}{DOMAIN}{}",
        body.get(..host_start)?,
        body.get(host_start + host_len..)?
    );
    let mut out = format!("{method} {new_uri} {version}").into_bytes();
    out.extend_from_slice(data.get(eol..)?);
    Some(out)
}

/// Where a pass sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A phone (127.0.0.3), fixtures as they are.
    Phone,
    /// Asterisk (127.0.0.2, trusted), fixtures as they are.
    Asterisk,
    /// A phone (127.0.0.4), Request-URI host made local ([`localize`]).
    Local,
}

/// The files under `tests/fixtures/SUB` (README.md excepted), sorted: (stem, bytes).
fn files(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (stem, data)
        })
        .collect()
}

/// The inputs of one pass with what each must get. With `rfc`, only the RFC 4475 rows where
/// sipfront deviates, judged by what the RFC asks.
fn cases(source: Source, rfc: bool) -> Vec<(String, Vec<u8>, Want)> {
    let mut out = Vec::new();
    let fixtures = files("rfc4475");
    assert_eq!(
        fixtures.len(),
        EXPECT.len(),
        "every RFC 4475 fixture has one row in EXPECT"
    );
    for (name, data) in fixtures {
        let row = EXPECT
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("rfc4475/{name} has no row in EXPECT"));
        let want = match (rfc, row.rfc, source) {
            (true, None, _) => continue,
            (true, Some(w), _) => w,
            (false, _, Source::Phone) => row.phone,
            (false, _, Source::Asterisk) => row.asterisk,
            (false, _, Source::Local) => row.local,
        };
        let data = match source {
            Source::Local => match localize(&data) {
                Some(d) => d,
                None => continue,
            },
            _ => data,
        };
        out.push((format!("rfc4475/{name}"), data, want));
    }
    if rfc || source == Source::Local {
        return out;
    }
    // Fuzz inputs: the process must live; what they get depends on what they are.
    for (name, data) in files("fuzz-regressions") {
        out.push((format!("fuzz-regressions/{name}"), data, Want::Alive));
    }
    for (name, data, want) in garbage() {
        out.push((format!("garbage/{name}"), data, want));
    }
    out
}

/// `None` when `got` is what `want` asks for, else what is wrong.
fn judge(want: Want, got: &[SipMsg]) -> Option<String> {
    let lines: Vec<&str> = got.iter().map(SipMsg::start_line).collect();
    let fin = got.last().and_then(SipMsg::code).filter(|c| *c >= 200);
    let ok = match want {
        Want::Alive => return None,
        Silence => got.is_empty(),
        Code(c) => fin == Some(c),
        Want::OneOf(cs) => fin.is_some_and(|f| cs.contains(&f)),
    };
    (!ok).then(|| format!("want {want:?}, got {lines:?}"))
}

/// Sends every case of the pass from `source`; after each, the process must be alive.
/// Returns the cases whose answer was wrong.
fn run(source: Source, rfc: bool) -> Vec<String> {
    let ip = match source {
        Source::Phone => Ipv4Addr::new(127, 0, 0, 3),
        Source::Asterisk => Ipv4Addr::new(127, 0, 0, 2),
        Source::Local => Ipv4Addr::new(127, 0, 0, 4),
    };
    let mut scene = Scene::start(Setup::default());
    let sock = Phone::bind(ip);
    let proxy = scene.proxy.addr;
    let mut failures = Vec::new();
    for (i, (name, data, want)) in cases(source, rfc).into_iter().enumerate() {
        let got = exchange(&sock, proxy, &data);
        if print() {
            let lines: Vec<&str> = got.iter().map(SipMsg::start_line).collect();
            eprintln!("{name} from {source:?}: {lines:?}");
        }
        if let Some(why) = judge(want, &got) {
            failures.push(format!("{name} from {source:?}: {why}"));
        }
        assert_alive(&mut scene, &sock, &name, 10_000 + i as u32);
    }
    failures
}

#[test]
fn torture_from_a_phone() {
    let failures = run(Source::Phone, false);
    assert!(failures.is_empty(), "wrong answers: {failures:#?}");
}

#[test]
fn torture_from_asterisk() {
    let failures = run(Source::Asterisk, false);
    assert!(failures.is_empty(), "wrong answers: {failures:#?}");
}

#[test]
fn torture_local_from_a_phone() {
    let failures = run(Source::Local, false);
    assert!(failures.is_empty(), "wrong answers: {failures:#?}");
}

/// What RFC 4475 asks where sipfront deviates (the `rfc` column of [`EXPECT`]): 400 for
/// malformed requests the parser or the response writer gives up on, 505 for badvers, 420
/// for bext01. Run with `--ignored` to list them.
#[test]
fn torture_rfc_answers() {
    let mut failures = run(Source::Asterisk, true);
    failures.extend(run(Source::Local, true));
    assert!(
        failures.is_empty(),
        "answers RFC 4475 asks for: {failures:#?}"
    );
}
