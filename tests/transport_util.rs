//! Shared helpers of the transport integration tests (included with `#[path]`): an echo
//! handler that tags replies with the worker index, and a loopback client.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sipfront::core::{Flow, Local, Now};
use sipfront::transport::{
    Backend, DatagramHandler, Outbox, TransportConfig, WorkerContext, WorkerSet,
};

/// Echoes every datagram back to its source on the socket it arrived on, prefixed with
/// one byte: `b'0' + worker index`. Optionally hands datagrams to worker
/// `first byte % n`, sends `"woke"` to `notify` on wake, and `"timer"` once at `deadline`.
pub struct Echo {
    pub index: usize,
    pub by_first_byte: bool,
    pub notify: Option<SocketAddr>,
    pub deadline: Option<u64>,
    pub scratch: Vec<u8>,
}

impl Echo {
    pub fn new(ctx: &WorkerContext) -> Self {
        Echo {
            index: ctx.index,
            by_first_byte: false,
            notify: None,
            deadline: None,
            scratch: Vec::with_capacity(70_000),
        }
    }
}

impl DatagramHandler for Echo {
    fn owner(&self, _from: Flow, data: &[u8], n_workers: usize) -> usize {
        match (self.by_first_byte, data.first()) {
            (true, Some(&b)) => usize::from(b) % n_workers,
            _ => self.index,
        }
    }

    fn on_datagram(&mut self, _now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        self.scratch.clear();
        self.scratch.push(b'0' + self.index as u8);
        self.scratch.extend_from_slice(data);
        out.send(from, &self.scratch);
    }

    fn on_wake(&mut self, _now: Now, out: &mut Outbox) {
        if let Some(dst) = self.notify {
            out.send(Flow::new(Local::Upstream, dst), b"woke");
        }
    }

    fn on_timer(&mut self, _now: Now, out: &mut Outbox) {
        self.deadline = None;
        if let Some(dst) = self.notify {
            out.send(Flow::new(Local::Listen(0), dst), b"timer");
        }
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        self.deadline
    }
}

pub fn cfg(backend: Backend) -> TransportConfig {
    TransportConfig {
        backend,
        recv_buffer_bytes: 1 << 20,
        send_buffer_bytes: 1 << 20,
        pin_cores: false,
        ..TransportConfig::default()
    }
}

/// The backends to test: mmsg always, io_uring when the kernel allows it (a missing
/// io_uring is reported, and `SIPFRONT_REQUIRE_IO_URING=1` makes it a failure).
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Mmsg];
    let probe = WorkerSet::spawn(
        &["127.0.0.1:0".parse().unwrap()],
        1,
        &cfg(Backend::IoUring),
        Echo::new,
    );
    match probe {
        Ok(set) => {
            set.shutdown_and_join().unwrap();
            v.push(Backend::IoUring);
        }
        Err(e) => {
            eprintln!("io_uring backend not tested: {e}");
            assert!(
                std::env::var("SIPFRONT_REQUIRE_IO_URING").is_err(),
                "io_uring required: {e}"
            );
        }
    }
    v
}

pub fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Receives one datagram (5 s timeout) into `buf`; returns (length, source).
/// EINTR is retried: io_uring task work aimed at this thread (ring teardown) interrupts
/// blocking receives that have a timeout.
pub fn recv(s: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    for _ in 0..100 {
        match s.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r.expect("reply within 5 s"),
        }
    }
    panic!("recv interrupted 100 times");
}

/// Sends `count` datagrams in windows of `window` and checks every echo. Payloads carry a
/// sequence number; byte 0 is `first(i)`. Returns, per reply, the worker byte.
pub fn echo_round(
    s: &UdpSocket,
    to: SocketAddr,
    count: u32,
    window: u32,
    first: impl Fn(u32) -> u8,
) -> Vec<u8> {
    let mut workers = Vec::with_capacity(count as usize);
    let mut buf = [0u8; 2048];
    let mut i = 0;
    while i < count {
        let n = window.min(count - i);
        let mut expect = std::collections::HashSet::new();
        for k in i..i + n {
            let mut msg = [0u8; 100];
            msg[0] = first(k);
            msg[1..5].copy_from_slice(&k.to_be_bytes());
            s.send_to(&msg, to).unwrap();
            expect.insert(k);
        }
        for _ in 0..n {
            let (len, from) = recv(s, &mut buf);
            assert_eq!(from, to, "reply must come from the address we sent to");
            assert_eq!(len, 101);
            let k = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
            assert_eq!(buf[1], first(k));
            assert!(expect.remove(&k), "unexpected or duplicate reply {k}");
            workers.push(buf[0] - b'0');
        }
        i += n;
    }
    workers
}

/// Waits (bounded, 5 s) until the published counters satisfy `pred`; counters are
/// published once per loop turn, after the turn's sends, so a reply can arrive first.
pub fn wait_counters(
    set: &WorkerSet,
    pred: impl Fn(&[sipfront::transport::WorkerCounters]) -> bool,
) -> Vec<sipfront::transport::WorkerCounters> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = set.all_counters();
        if pred(&c) || std::time::Instant::now() > deadline {
            return c;
        }
        std::thread::yield_now();
    }
}
