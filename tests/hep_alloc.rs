//! The worker side of HEP capture allocates nothing: copying received and sent datagrams
//! into the pooled buffers and queueing them, and dropping copies when the pool is empty,
//! run under a counting allocator (this thread only: the sender thread encodes and sends
//! on its own). The collector is a UDP socket of this test on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sipfront::core::{Flow, Local};
use sipfront::hep::{Capture, HepConfig};

mod counting;

#[test]
fn capturing_allocates_nothing_on_the_worker() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = HepConfig {
        collector: Some(collector.local_addr().unwrap()),
        queue_size: 64,
        max_message_bytes: 2048,
        ..HepConfig::default()
    };
    let capture = Capture::start(&cfg).unwrap().expect("collector set");
    let listen: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let tap = capture.tap(vec![listen], "127.0.0.1:40001".parse().unwrap());
    let phone: SocketAddr = "127.0.0.9:5062".parse().unwrap();
    let asterisk: SocketAddr = "127.0.0.2:5080".parse().unwrap();
    let invite = b"INVITE sip:600@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    // Warm up once (first use of the channels and the clock).
    tap.received(Flow::new(Local::Listen(0), phone), invite);
    counting::start();
    for _ in 0..2_000 {
        tap.received(Flow::new(Local::Listen(0), phone), invite);
        tap.sent(Flow::new(Local::Upstream, asterisk), invite);
        tap.received(Flow::new(Local::Upstream, asterisk), ok);
        tap.sent(Flow::new(Local::Listen(0), phone), ok);
    }
    let allocations = counting::stop();
    assert_eq!(allocations, 0, "allocations while capturing");
    // 8001 copies through a 64-slot pool: the sender thread sent some, the rest were
    // dropped and counted; none was lost uncounted.
    let stats = capture.stats().clone();
    drop(tap);
    capture.stop();
    let (sent, dropped, failed) = (
        stats.sent.load(Relaxed),
        stats.dropped.load(Relaxed),
        stats.failed.load(Relaxed),
    );
    assert!(sent >= 1, "nothing sent");
    assert_eq!(
        sent + dropped + failed,
        8_001,
        "{sent} + {dropped} + {failed}"
    );
    // What was sent arrived as HEPv3.
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let n = collector.recv(&mut buf).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(&buf[..4], b"HEP3");
    assert!(buf[..n].ends_with(invite) || buf[..n].ends_with(ok));
}
