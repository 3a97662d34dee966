//! HEP capture (`[hep]`): a copy of every SIP datagram the proxy receives and sends, with its
//! real source and destination, sent to a Homer collector as HEPv3 over UDP — how Kamailio
//! operators debug today (`siptrace`/`sipcapture`).
//!
//! Data flow, built so that SIP never waits for capture:
//! - at start, [`Capture::start`] allocates `queue_size` buffers of `max_message_bytes`
//!   capacity into a free pool (a bounded crossbeam channel) and starts one sender thread;
//! - each worker holds a [`Tap`] (its socket addresses and the channel ends). For each
//!   datagram received ([`Tap::received`]) or sent ([`Tap::sent`]) it takes a free buffer
//!   (`try_recv`, never blocks), copies the bytes in (the capacity is enough: no
//!   allocation), stamps the time and queues it (`try_send`). No free buffer, or a message
//!   larger than `max_message_bytes`, means the copy is dropped and counted — a slow or
//!   unreachable collector costs captures, never SIP latency;
//! - the sender thread encodes each queued copy as HEPv3 ([`encode`]) into one reused
//!   buffer, sends it from its own UDP socket, and returns the buffer to the pool.
//!
//! Counters ([`HepStats`]): sent, dropped (pool empty or message too large), failed (the
//! kernel refused the send, e.g. ICMP unreachable); `/metrics` exposes them as
//! `sipfront_hep_packets_total{result}`.

pub mod encode;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;

use crate::core::{Flow, Local};

pub use encode::{encode, Captured};

/// `[hep]`: capture to a Homer collector; off unless `collector` is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HepConfig {
    /// The collector's `IP:PORT` (UDP); unset = no capture.
    pub collector: Option<SocketAddr>,
    /// The capture agent id Homer shows (HEP chunk 0x000c).
    pub capture_id: u32,
    /// The collector's password (HEP auth key chunk), if it wants one.
    pub password: Option<String>,
    /// Copies that may wait for the sender thread; past it copies are dropped and counted.
    pub queue_size: usize,
    /// Largest message copied; larger ones are dropped and counted. Each queue slot is a
    /// buffer of this capacity (memory is touched only as slots are used).
    pub max_message_bytes: usize,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            collector: None,
            capture_id: 1,
            password: None,
            queue_size: 1024,
            max_message_bytes: 16 * 1024,
        }
    }
}

/// An invalid `[hep]` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `hep.collector`: {0} is not a collector address (expected IP:PORT with a concrete IP and a non-zero port, e.g. \"192.0.2.10:9060\")")]
    Collector(SocketAddr),
    #[error("config key `hep.password`: must be 1..=128 printable characters")]
    Password,
    #[error("config key `hep.queue_size`: must be 16..=1000000 (got {0})")]
    QueueSize(usize),
    #[error("config key `hep.max_message_bytes`: must be 512..=65000 (got {0})")]
    MaxMessageBytes(usize),
}

impl HepConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = self.collector {
            if c.port() == 0 || c.ip().is_unspecified() {
                return Err(ConfigError::Collector(c));
            }
        }
        if let Some(p) = &self.password {
            if p.is_empty() || p.len() > 128 || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::Password);
            }
        }
        if !(16..=1_000_000).contains(&self.queue_size) {
            return Err(ConfigError::QueueSize(self.queue_size));
        }
        if !(512..=65_000).contains(&self.max_message_bytes) {
            return Err(ConfigError::MaxMessageBytes(self.max_message_bytes));
        }
        Ok(())
    }
}

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HepError {
    #[error("HEP capture to {collector}: cannot open a UDP socket: {source}")]
    Socket {
        collector: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the HEP sender thread: {0}")]
    Thread(std::io::Error),
}

/// Capture counters (shared by the taps and the sender thread).
#[derive(Debug, Default)]
pub struct HepStats {
    /// HEP packets the kernel accepted.
    pub sent: AtomicU64,
    /// Copies not taken: no free buffer (the sender is behind) or the message too large.
    pub dropped: AtomicU64,
    /// HEP packets the kernel refused to send.
    pub failed: AtomicU64,
}

/// One copied message waiting for the sender thread.
struct Record {
    buf: Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    proto: u8,
    secs: u32,
    micros: u32,
}

/// The running capture: the sender thread and what new taps are made of.
pub struct Capture {
    queue: Sender<Record>,
    free: Receiver<Vec<u8>>,
    stats: Arc<HepStats>,
    max: usize,
    collector: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Allocate the pool, open the socket and start the sender thread. `None` when
    /// `cfg.collector` is unset.
    pub fn start(cfg: &HepConfig) -> Result<Option<Capture>, HepError> {
        let Some(collector) = cfg.collector else {
            return Ok(None);
        };
        let sock_err = |source| HepError::Socket { collector, source };
        let bind: SocketAddr = if collector.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = UdpSocket::bind(bind).map_err(sock_err)?;
        sock.connect(collector).map_err(sock_err)?;
        let (queue, pending) = crossbeam_channel::bounded::<Record>(cfg.queue_size);
        let (give_back, free) = crossbeam_channel::bounded::<Vec<u8>>(cfg.queue_size);
        for _ in 0..cfg.queue_size {
            // The pool starts full; `try_send` cannot fail here.
            let _ = give_back.try_send(Vec::with_capacity(cfg.max_message_bytes));
        }
        let stats = Arc::new(HepStats::default());
        let forwarder = Forwarder {
            sock,
            capture_id: cfg.capture_id,
            password: cfg.password.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sipfront-hep".into())
            .spawn(move || forwarder.run(&pending, &give_back))
            .map_err(HepError::Thread)?;
        tracing::info!(%collector, capture_id = cfg.capture_id, "HEP capture on");
        Ok(Some(Capture {
            queue,
            free,
            stats,
            max: cfg
                .max_message_bytes
                .min(encode::max_payload(cfg.password.as_deref())),
            collector,
            thread: Some(thread),
        }))
    }

    /// What workers' taps are made of (for a worker factory that must own its parts).
    pub fn taps(&self) -> Taps {
        Taps {
            queue: self.queue.clone(),
            free: self.free.clone(),
            stats: self.stats.clone(),
            max: self.max,
        }
    }

    /// A worker's tap (see [`Taps::tap`]).
    pub fn tap(&self, listen: Vec<SocketAddr>, upstream: SocketAddr) -> Tap {
        self.taps().tap(listen, upstream)
    }

    pub fn stats(&self) -> &Arc<HepStats> {
        &self.stats
    }

    pub fn collector(&self) -> SocketAddr {
        self.collector
    }

    /// Send what is queued and stop the thread (call after the workers, whose taps hold the
    /// other ends of the queue, have stopped).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Replace our sender so the channel disconnects once the taps are gone too.
        let (closed, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.queue, closed));
        let _ = thread.join();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The sender thread's state.
struct Forwarder {
    sock: UdpSocket,
    capture_id: u32,
    password: Option<String>,
    stats: Arc<HepStats>,
}

impl Forwarder {
    /// Until every tap and the [`Capture`] are gone: encode, send, give the buffer back.
    fn run(self, pending: &Receiver<Record>, give_back: &crossbeam_channel::Sender<Vec<u8>>) {
        let mut out = Vec::with_capacity(usize::from(u16::MAX));
        for rec in pending {
            let m = Captured {
                src: rec.src,
                dst: rec.dst,
                secs: rec.secs,
                micros: rec.micros,
                proto: rec.proto,
                payload: &rec.buf,
            };
            let ok = encode(&mut out, &m, self.capture_id, self.password.as_deref()).is_some()
                && self.sock.send(&out).is_ok();
            let counter = if ok {
                &self.stats.sent
            } else {
                &self.stats.failed
            };
            counter.fetch_add(1, Relaxed);
            let _ = give_back.try_send(rec.buf);
        }
    }
}

/// The channel ends every [`Tap`] shares.
#[derive(Clone)]
pub struct Taps {
    queue: Sender<Record>,
    free: Receiver<Vec<u8>>,
    stats: Arc<HepStats>,
    max: usize,
}

impl Taps {
    /// A worker's tap: its listen sockets' addresses (by `Local::Listen` index) and its
    /// upstream socket's.
    pub fn tap(&self, listen: Vec<SocketAddr>, upstream: SocketAddr) -> Tap {
        Tap {
            queue: self.queue.clone(),
            free: self.free.clone(),
            stats: self.stats.clone(),
            max: self.max,
            listen,
            upstream,
        }
    }
}

/// A worker's end of the capture: copies a datagram into a pooled buffer and queues it,
/// never blocking and never allocating.
pub struct Tap {
    queue: Sender<Record>,
    free: Receiver<Vec<u8>>,
    stats: Arc<HepStats>,
    max: usize,
    listen: Vec<SocketAddr>,
    upstream: SocketAddr,
}

impl Tap {
    /// The address of this worker's socket `local`.
    fn local(&self, local: Local) -> SocketAddr {
        match local {
            Local::Listen(i) => self
                .listen
                .get(usize::from(i))
                .copied()
                .unwrap_or(self.upstream),
            Local::Upstream => self.upstream,
        }
    }

    /// The IP protocol of a flow: TCP over a connection, else UDP.
    fn proto(flow: Flow) -> u8 {
        if flow.conn.is_some() {
            encode::PROTO_TCP
        } else {
            encode::PROTO_UDP
        }
    }

    /// A message arrived over `from`.
    #[inline]
    pub fn received(&self, from: Flow, data: &[u8]) {
        self.capture(from.remote, self.local(from.local), Self::proto(from), data);
    }

    /// A message is being sent over `to`.
    #[inline]
    pub fn sent(&self, to: Flow, data: &[u8]) {
        self.capture(self.local(to.local), to.remote, Self::proto(to), data);
    }

    fn capture(&self, src: SocketAddr, dst: SocketAddr, proto: u8, data: &[u8]) {
        if data.len() > self.max {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        }
        let Ok(mut buf) = self.free.try_recv() else {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        };
        buf.clear();
        // Capacity is max_message_bytes >= data.len(): no allocation.
        buf.extend_from_slice(data);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let rec = Record {
            buf,
            src,
            dst,
            proto,
            secs: u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
            micros: now.subsec_micros(),
        };
        match self.queue.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                // The pool holds as many buffers as the queue: unreachable while the
                // sender runs; the buffer is dropped with the record.
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn config_validation_names_the_key() {
        assert_eq!(HepConfig::default().validate(), Ok(()));
        for (text, key) in [
            ("collector = \"0.0.0.0:9060\"", "hep.collector"),
            ("collector = \"192.0.2.1:0\"", "hep.collector"),
            ("password = \"\"", "hep.password"),
            ("password = \"a b\"", "hep.password"),
            ("queue_size = 1", "hep.queue_size"),
            ("max_message_bytes = 100000", "hep.max_message_bytes"),
        ] {
            let c: HepConfig = toml::from_str(text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = toml::from_str::<HepConfig>("collector = \"nonsense\"").unwrap_err();
        assert!(e.to_string().contains("collector"), "{e}");
    }

    #[test]
    fn taps_copy_both_directions_and_drop_when_full() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let cfg = HepConfig {
            collector: Some(collector.local_addr().unwrap()),
            capture_id: 7,
            queue_size: 16,
            max_message_bytes: 600,
            ..HepConfig::default()
        };
        let capture = Capture::start(&cfg).unwrap().unwrap();
        let listen: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let phone: SocketAddr = "127.0.0.9:5062".parse().unwrap();
        let tap = capture.tap(vec![listen], upstream);
        tap.received(
            Flow::new(Local::Listen(0), phone),
            b"REGISTER sip:x SIP/2.0\r\n\r\n",
        );
        tap.sent(
            Flow::new(Local::Upstream, "127.0.0.2:5080".parse().unwrap()),
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        tap.sent(Flow::new(Local::Listen(0), phone), &[b'a'; 601]);
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).unwrap();
        let p = &buf[..n];
        assert_eq!(&p[..4], b"HEP3");
        assert!(p.ends_with(b"REGISTER sip:x SIP/2.0\r\n\r\n"));
        assert!(p.windows(2).any(|w| w == 5062u16.to_be_bytes()));
        let n = collector.recv(&mut buf).unwrap();
        assert!(buf[..n].ends_with(b"SIP/2.0 200 OK\r\n\r\n"));
        assert!(buf[..n].windows(2).any(|w| w == 40000u16.to_be_bytes()));
        assert_eq!(capture.stats().dropped.load(Relaxed), 1, "too large");
        drop(tap);
        let stats = capture.stats().clone();
        capture.stop();
        assert_eq!(stats.sent.load(Relaxed), 2);
    }
}
