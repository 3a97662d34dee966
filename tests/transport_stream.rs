//! The transport's TCP and TLS connections with an echo handler (no proxy): framing by
//! Content-Length across segments, several messages in one segment, CRLF keepalives,
//! replies over the same connection (also when another worker handled the message), bad
//! input closing only its connection, the per-IP limit and the slowloris timeout, both
//! backends.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipfront::core::{Flow, Links, Now};
use sipfront::sip::Transport;
use sipfront::transport::stream::{Registry, StreamConfig, StreamSetup};
use sipfront::transport::tls::{TlsConfig, TlsContext};
use sipfront::transport::{
    Backend, DatagramHandler, Endpoints, Outbox, StreamListen, TransportConfig, WorkerContext,
    WorkerCounters, WorkerSet,
};
use support::stream::StreamPhone;
use support::tls::TestPki;

/// Replies to every message with `REPLY <worker> <message length>` (a SIP response with
/// that text as its body); messages whose Call-ID starts with a digit go to that worker.
struct Echo {
    index: usize,
}

impl DatagramHandler for Echo {
    fn owner(&self, _from: Flow, data: &[u8], n: usize) -> usize {
        let text = String::from_utf8_lossy(data);
        text.lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .and_then(|c| c.chars().next())
            .and_then(|c| c.to_digit(10))
            .map_or(usize::MAX, |d| d as usize % n)
    }
    fn on_datagram(&mut self, _now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        let body = format!("REPLY {} {}", self.index, data.len());
        let reply = format!(
            "SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        out.send(from, reply.as_bytes());
    }
    fn on_wake(&mut self, _now: Now, _out: &mut Outbox) {}
    fn on_timer(&mut self, _now: Now, _out: &mut Outbox) {}
    fn next_deadline_ms(&self) -> Option<u64> {
        None
    }
}

fn options(call_id: &str, pad: usize) -> String {
    let body = "x".repeat(pad);
    format!(
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

struct Rig {
    set: WorkerSet,
    tcp: SocketAddr,
    tls: SocketAddr,
    registry: Arc<Registry>,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

fn rig(backend: Backend, stream_cfg: StreamConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let tls_cfg = TlsConfig {
        cert: Some(pki.cert.clone()),
        key: Some(pki.key.clone()),
        ..TlsConfig::default()
    };
    let tls = TlsContext::load(&tls_cfg).expect("TLS context");
    let registry = Arc::new(Registry::new(
        2,
        64,
        stream_cfg.max_connections,
        stream_cfg.max_connections_per_ip,
    ));
    let setup = StreamSetup {
        registry: registry.clone(),
        tls: Some(tls.server_config()),
        cfg: stream_cfg,
        ws: Default::default(),
        max_message: 8192,
    };
    let endpoints = Endpoints {
        udp: vec!["127.0.0.1:0".parse().unwrap()],
        upstream_on: 0,
        streams: vec![
            StreamListen {
                addr: "127.0.0.1:0".parse().unwrap(),
                transport: Transport::Tcp,
                setup: setup.clone(),
            },
            StreamListen {
                addr: "127.0.0.1:0".parse().unwrap(),
                transport: Transport::Tls,
                setup,
            },
        ],
    };
    let cfg = TransportConfig {
        backend,
        pin_cores: false,
        ..TransportConfig::default()
    };
    let set = WorkerSet::spawn_endpoints(&endpoints, 2, &cfg, |ctx: &WorkerContext| Echo {
        index: ctx.index,
    })
    .expect("workers with TCP and TLS listeners");
    let (tcp, tls) = (set.listen_addrs()[1], set.listen_addrs()[2]);
    Rig {
        set,
        tcp,
        tls,
        registry,
        pki,
        _dir: dir,
    }
}

fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Mmsg];
    if WorkerSet::spawn(
        &["127.0.0.1:0".parse().unwrap()],
        1,
        &TransportConfig {
            backend: Backend::IoUring,
            pin_cores: false,
            ..TransportConfig::default()
        },
        |ctx: &WorkerContext| Echo { index: ctx.index },
    )
    .is_ok()
    {
        v.push(Backend::IoUring);
    }
    v
}

const WAIT: Duration = Duration::from_secs(5);

fn body_of(m: &support::phone::SipMsg) -> String {
    m.text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[test]
fn messages_are_framed_and_answered_over_the_same_connection() {
    for backend in backends() {
        let r = rig(backend, StreamConfig::default());
        for transport in [Transport::Tcp, Transport::Tls] {
            let mut p = match transport {
                Transport::Tcp => StreamPhone::tcp(r.tcp),
                _ => StreamPhone::tls(r.tls, &r.pki),
            };
            // Two messages in one write, then one split in three writes, then a ping.
            let (a, b, c) = (options("x-a", 10), options("x-b", 0), options("x-c", 2000));
            p.send(&format!("{a}{b}"));
            let deadline = Instant::now() + WAIT;
            let r1 = p.recv_until(deadline).expect("reply to a");
            let r2 = p.recv_until(deadline).expect("reply to b");
            assert!(
                body_of(&r1).ends_with(&format!(" {}", a.len())),
                "{backend:?} {}",
                r1.text
            );
            assert!(body_of(&r2).ends_with(&format!(" {}", b.len())));
            let (x, y) = c.split_at(100);
            let (y, z) = y.split_at(1000);
            p.send(x);
            p.send(y);
            p.send(z);
            let r3 = p.recv_until(Instant::now() + WAIT).expect("reply to c");
            assert!(body_of(&r3).ends_with(&format!(" {}", c.len())));
            p.send("\r\n\r\n");
            p.send(&options("x-d", 0));
            p.recv_until(Instant::now() + WAIT).expect("reply to d");
            assert_eq!(
                p.pongs, 1,
                "{backend:?} {transport:?}: a CRLF pong answers the ping"
            );
            // A message another worker handles: its reply still comes back here.
            for w in 0..2 {
                p.send(&options(&format!("{w}-handoff"), 0));
                let m = p
                    .recv_until(Instant::now() + WAIT)
                    .expect("handed-off reply");
                assert!(
                    body_of(&m).starts_with(&format!("REPLY {w} ")),
                    "{}",
                    m.text
                );
            }
        }
        let open: u64 = r
            .set
            .all_counters()
            .iter()
            .map(|c| c.stream(Transport::Tls).open)
            .sum();
        assert!(open <= 1);
        r.set.shutdown_and_join().unwrap();
    }
}

/// The workers' counters once `pred` holds of them (or after 5 s, for the caller's assertion
/// to report): workers publish their counters at the end of a loop turn.
fn wait_counters(set: &WorkerSet, pred: impl Fn(&[WorkerCounters]) -> bool) -> Vec<WorkerCounters> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = set.all_counters();
        if pred(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::yield_now();
    }
}

#[test]
fn bad_input_closes_only_its_connection() {
    let r = rig(Backend::Mmsg, StreamConfig::default());
    let mut good = StreamPhone::tcp(r.tcp);
    good.send(&options("g1", 0));
    good.recv_until(Instant::now() + WAIT).expect("first reply");
    let cases: [&[u8]; 4] = [
        b"\x00\x01\x02 garbage",
        b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nContent-Length: nope\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 100000\r\n\r\n",
    ];
    for bad in cases {
        let mut p = StreamPhone::tcp(r.tcp);
        p.send_bytes(bad);
        assert!(p.closed_within(WAIT), "{:?}", String::from_utf8_lossy(bad));
    }
    // A TLS client that speaks plain text fails its handshake.
    let mut p = StreamPhone::tcp(r.tls);
    p.send(&options("plain-on-tls", 0));
    assert!(p.closed_within(WAIT));
    good.send(&options("g2", 0));
    good.recv_until(Instant::now() + WAIT)
        .expect("the good connection still works");
    // The worker that failed the handshake publishes its counters at the end of its turn,
    // which may come after the good connection's answer (another worker).
    let failures = |c: &[WorkerCounters]| -> u64 {
        c.iter()
            .map(|c| c.stream(Transport::Tls).handshake_failures)
            .sum()
    };
    let c = wait_counters(&r.set, |c| failures(c) >= 1);
    assert_eq!(failures(&c), 1);
    r.set.shutdown_and_join().unwrap();
}

#[test]
fn limits_and_slowloris_are_contained() {
    let cfg = StreamConfig {
        max_connections_per_ip: 3,
        message_timeout_ms: 300,
        ..StreamConfig::default()
    };
    let r = rig(Backend::Mmsg, cfg);
    let mut held: Vec<StreamPhone> = (0..3).map(|_| StreamPhone::tcp(r.tcp)).collect();
    for (i, p) in held.iter_mut().enumerate() {
        p.send(&options(&format!("h{i}"), 0));
        p.recv_until(Instant::now() + WAIT)
            .expect("within the limit");
    }
    // The fourth from the same IP is closed at once.
    let mut extra = StreamPhone::tcp(r.tcp);
    assert!(extra.closed_within(WAIT));
    // A slowloris: half a message, then nothing: closed after the message timeout.
    let slow = &mut held[0];
    slow.send("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n");
    let t0 = Instant::now();
    assert!(slow.closed_within(WAIT));
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // Its slot is free again: a new connection works, the others were not affected.
    let mut again = StreamPhone::tcp(r.tcp);
    again.send(&options("again", 0));
    again
        .recv_until(Instant::now() + WAIT)
        .expect("a new connection after the close");
    held[1].send(&options("h1b", 0));
    held[1]
        .recv_until(Instant::now() + WAIT)
        .expect("an old connection still works");
    // The registry knows the connections by address.
    assert!(r.registry.find(Transport::Tcp, again.addr).is_some());
    r.set.shutdown_and_join().unwrap();
}

#[test]
fn workers_with_stream_listeners_sleep_between_messages() {
    for backend in backends() {
        let r = rig(backend, StreamConfig::default());
        let mut p = StreamPhone::tcp(r.tcp);
        let before: u64 = r.set.all_counters().iter().map(|c| c.turns).sum();
        // 100 strictly sequential round trips: a loop that never sleeps would turn
        // thousands of times meanwhile; a sleeping one a few times per message (plus the
        // connection sweeps, four a second).
        for i in 0..100 {
            p.send(&options(&format!("idle-{i}"), 0));
            p.recv_until(Instant::now() + WAIT).expect("reply");
        }
        let after: u64 = r.set.all_counters().iter().map(|c| c.turns).sum();
        assert!(
            after - before <= 100 * 4 + 40,
            "{backend:?}: {} turns for 100 messages",
            after - before
        );
        r.set.shutdown_and_join().unwrap();
    }
}
