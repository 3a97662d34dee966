//! SIP over TCP, TLS, WebSocket and secure WebSocket: the connections of one worker.
//!
//! Every worker has its own `SO_REUSEPORT` TCP listener on each stream listen address, so the
//! kernel spreads new connections over the workers; the worker that accepts a connection
//! owns it for its whole life (reads, writes, TLS session, timers). Its id ([`ConnId`]:
//! worker, slot, generation) travels with every message in the message's [`Flow`]; a
//! message for the connection produced on another worker (Asterisk's INVITE handled by the
//! Call-ID owner, say) is passed to the owner over the hand-off channels, like a datagram,
//! and written there. The shared [`Registry`] says which connections are open and which one
//! reaches an address.
//!
//! Data flow on the owning worker, all nonblocking, driven by one epoll descriptor the loop
//! watches beside its UDP sockets:
//! 1. a listener is readable → accept (limits: in all, per IP; then the handler's
//!    admission, i.e. the guard's ban check) → register;
//! 2. a connection is readable → read (through rustls for TLS) into its receive buffer →
//!    frame with [`crate::sip::frame`] (Content-Length; CRLF ping answered with CRLF) →
//!    each message goes to the handler exactly like a datagram; on WS and WSS the plaintext
//!    is the WebSocket handshake and frames instead ([`ws`]), one SIP message per data
//!    message;
//! 3. output for a connection is queued and written as the socket takes it (`EPOLLOUT`
//!    while some is left);
//! 4. a sweep closes idle connections, ones whose message or handshake does not complete in
//!    time (slowloris), and ones whose peer does not read.
//!
//! Bad input (garbage, a missing or wrong Content-Length, an oversized message, a failed
//! handshake) closes that connection only, with a log line.

mod config;
mod conn;
mod epoll;
mod registry;
pub(crate) mod ws;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use rustls::ServerConfig;

pub use config::{StreamConfig, StreamConfigError, WsConfig, WsConfigError};
pub use registry::{Refusal, Registry};

use crate::core::{ConnId, Flow, Local};
use crate::sip::Transport;

use conn::Conn;
pub(crate) use conn::{CloseReason, ReadEnd};
use epoll::{Epoll, NO_EVENT};
use ws::WsEnd;

use super::stats::StreamCounters;

/// Token bit of a listener (the rest is its index); a connection's token is its slot.
const LISTENER: u64 = 1 << 63;

/// Most connections accepted per listener per loop turn.
const ACCEPT_PER_TURN: usize = 64;

/// How often connections are checked for timeouts (monotonic ms).
const SWEEP_MS: u64 = 250;

/// Most readiness events taken per loop turn.
const EVENTS_PER_TURN: usize = 256;

/// One stream listen address of this worker.
pub(crate) struct Listener {
    pub(crate) sock: TcpListener,
    /// Its index in the listen table ([`Local::Listen`]).
    pub(crate) local: u16,
    pub(crate) transport: Transport,
}

/// A readiness event, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Accept(usize),
    Conn {
        slot: u32,
        readable: bool,
        writable: bool,
        hangup: bool,
    },
}

/// What the worker's connections need from outside: the shared pieces.
#[derive(Clone)]
pub struct StreamSetup {
    pub registry: Arc<Registry>,
    pub tls: Option<Arc<ServerConfig>>,
    pub cfg: StreamConfig,
    /// `[ws]`: the WebSocket limits and Origin allow-list.
    pub ws: WsConfig,
    /// Largest message accepted (`[limits] max_message_bytes`).
    pub max_message: usize,
}

/// The connections of one worker.
pub(crate) struct Streams {
    worker: u16,
    epoll: Epoll,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    setup: StreamSetup,
    events: Vec<libc::epoll_event>,
    scratch: Vec<u8>,
    /// WebSocket answers (handshake, pongs, closes) being written.
    ws_out: Vec<u8>,
    next_sweep_ms: u64,
    counters: [StreamCounters; 4],
}

/// The counter index of a stream transport.
fn kind(t: Transport) -> usize {
    match t {
        Transport::Tcp => 0,
        Transport::Tls => 1,
        Transport::Ws => 2,
        _ => 3,
    }
}

impl Streams {
    pub(crate) fn new(
        worker: u16,
        listeners: Vec<Listener>,
        setup: StreamSetup,
    ) -> io::Result<Streams> {
        let epoll = Epoll::new()?;
        for (i, l) in listeners.iter().enumerate() {
            l.sock.set_nonblocking(true)?;
            epoll.add(
                l.sock.as_raw_fd(),
                LISTENER | i as u64,
                libc::EPOLLIN as u32,
            )?;
        }
        Ok(Streams {
            worker,
            epoll,
            listeners,
            conns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            setup,
            events: vec![NO_EVENT; EVENTS_PER_TURN],
            scratch: vec![0; 64 * 1024],
            ws_out: Vec::new(),
            next_sweep_ms: 0,
            counters: [StreamCounters::default(); 4],
        })
    }

    /// The descriptor the loop watches: readable when some stream socket is ready.
    pub(crate) fn fd(&self) -> RawFd {
        self.epoll.fd()
    }

    /// The per-transport counters (TCP, TLS, WS, WSS), with the open gauges.
    pub(crate) fn counters(&self) -> [StreamCounters; 4] {
        self.counters
    }

    pub(crate) fn max_message(&self) -> usize {
        self.setup.max_message
    }

    /// Takes the ready events (without sleeping); how many. Read each with
    /// [`Streams::event`].
    pub(crate) fn poll(&mut self) -> usize {
        match self.epoll.poll(&mut self.events) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(worker = self.worker, error = %e, "epoll_wait failed");
                0
            }
        }
    }

    pub(crate) fn event(&self, k: usize) -> Option<Event> {
        let ev = self.events.get(k)?;
        let (flags, token) = (ev.events, ev.u64);
        if token & LISTENER != 0 {
            return Some(Event::Accept((token & !LISTENER) as usize));
        }
        let has = |f: libc::c_int| flags & f as u32 != 0;
        Some(Event::Conn {
            slot: token as u32,
            readable: has(libc::EPOLLIN),
            writable: has(libc::EPOLLOUT),
            hangup: has(libc::EPOLLHUP) || has(libc::EPOLLERR) || has(libc::EPOLLRDHUP),
        })
    }

    /// Accepts one connection from listener `li`, if one is waiting and the limits allow
    /// it; returns its slot and flow. `None` when nothing more can be accepted this turn.
    pub(crate) fn accept(&mut self, li: usize, now_ms: u64) -> Option<(u32, Flow)> {
        for _ in 0..ACCEPT_PER_TURN {
            let l = self.listeners.get(li)?;
            let (local, transport) = (l.local, l.transport);
            let (sock, remote) = match l.sock.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the listener stays readable; try next turn.
                    tracing::warn!(worker = self.worker, error = %e, "accept failed");
                    return None;
                }
            };
            let c = &mut self.counters[kind(transport)];
            if let Err(why) = self.setup.registry.admit(remote.ip()) {
                c.refused += 1;
                tracing::debug!(%remote, ?why, "connection refused: limit reached");
                drop(sock);
                continue;
            }
            match self.register(sock, local, transport, remote, now_ms) {
                Ok((slot, id)) => {
                    let c = &mut self.counters[kind(transport)];
                    c.accepted += 1;
                    c.open += 1;
                    return Some((slot, Flow::on_conn(Local::Listen(local), remote, id)));
                }
                Err(e) => {
                    self.setup.registry.release(remote.ip());
                    self.counters[kind(transport)].refused += 1;
                    tracing::warn!(%remote, error = %e, "cannot set up a connection");
                }
            }
        }
        None
    }

    fn register(
        &mut self,
        sock: std::net::TcpStream,
        local: u16,
        transport: Transport,
        remote: SocketAddr,
        now_ms: u64,
    ) -> io::Result<(u32, ConnId)> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.conns.len() < self.setup.registry.slots_per_worker() => {
                self.conns.push(None);
                self.gens.push(0);
                (self.conns.len() - 1) as u32
            }
            None => return Err(io::Error::other("no free connection slot")),
        };
        let gen = self.gens[slot as usize].wrapping_add(1) & 0xff_ffff;
        self.gens[slot as usize] = gen;
        let id = ConnId {
            worker: self.worker,
            slot,
            gen,
        };
        let tls = if transport.is_secure() {
            self.setup.tls.as_ref()
        } else {
            None
        };
        let conn = match Conn::new(sock, id, local, transport, remote, tls, now_ms) {
            Ok(c) => c,
            Err(e) => {
                self.free.push(slot);
                return Err(io::Error::other(e));
            }
        };
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if let Err(e) = self
            .epoll
            .add(conn.sock.as_raw_fd(), u64::from(slot), events)
        {
            self.free.push(slot);
            return Err(e);
        }
        self.setup.registry.opened(id, transport, remote);
        self.conns[slot as usize] = Some(conn);
        Ok((slot, id))
    }

    fn conn_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.conns.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Reads what connection `slot` has; `Err` when it must be closed. On WS and WSS the
    /// frames are decoded too: messages wait in the connection for [`Streams::take_ws`].
    pub(crate) fn read(&mut self, slot: u32, now_ms: u64) -> Result<ReadEnd, CloseReason> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = match self.conn_mut(slot) {
            None => Ok((ReadEnd::Drained, 0)),
            Some(c) => c.read(&mut scratch),
        };
        self.scratch = scratch;
        let Some(c) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Ok(ReadEnd::Drained);
        };
        let counters = &mut self.counters[kind(c.transport)];
        match r {
            Ok((end, n)) => {
                counters.bytes_in += n as u64;
                if n > 0 {
                    c.last_rx_ms = now_ms;
                }
                let mut ws_end = None;
                if let Some(ws) = c.ws.as_mut() {
                    let was_open = ws.is_open();
                    let before = c.rx.len();
                    let mut out = std::mem::take(&mut self.ws_out);
                    out.clear();
                    if let Err(e) = ws.decode(&mut c.rx, &mut out, &self.setup.ws) {
                        ws_end = Some(e);
                    }
                    let progressed = c.rx.len() < before;
                    let partial = !ws.is_open() || !c.rx.is_empty() || ws.mid_message();
                    if !was_open && ws.is_open() {
                        c.partial_since_ms = None;
                    }
                    if !partial {
                        c.partial_since_ms = None;
                    } else if progressed || c.partial_since_ms.is_none() {
                        c.partial_since_ms = Some(now_ms);
                    }
                    if !out.is_empty() {
                        if let Ok(w) = c.send_raw(&out, &[]) {
                            counters.bytes_out += w as u64;
                        }
                    }
                    self.ws_out = out;
                }
                if !c.handshaken && !c.handshaking() {
                    c.handshaken = true;
                    if c.rx.is_empty() {
                        c.partial_since_ms = None;
                    }
                }
                // The handshake's answers, and anything queued while it ran.
                let flushed = c.flush();
                if let Ok(w) = flushed {
                    counters.bytes_out += w as u64;
                }
                match (flushed, ws_end) {
                    (Err(_), _) => Err(CloseReason::Io),
                    (Ok(_), None) => Ok(end),
                    (Ok(_), Some(e)) => {
                        if e == WsEnd::Refused {
                            counters.handshake_failures += 1;
                        }
                        tracing::debug!(remote = %c.remote, end = ?e, "WebSocket connection ends");
                        Err(match e {
                            WsEnd::Closed => CloseReason::Eof,
                            WsEnd::TooLarge => CloseReason::TooLarge,
                            WsEnd::Refused | WsEnd::Protocol => CloseReason::WebSocket,
                        })
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                if !c.handshaken {
                    counters.handshake_failures += 1;
                }
                tracing::debug!(remote = %c.remote, error = %e, "TLS error");
                Err(CloseReason::Tls)
            }
            Err(_) => Err(CloseReason::Io),
        }
    }

    /// Whether connection `slot` speaks WebSocket (its messages come from
    /// [`Streams::take_ws`], not from framing the plaintext).
    pub(crate) fn is_ws(&self, slot: u32) -> bool {
        self.conns
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.ws.is_some())
    }

    /// Takes the WebSocket messages received on `slot` (see [`ws::messages`]); give the
    /// buffer back with [`Streams::put_ws`].
    pub(crate) fn take_ws(&mut self, slot: u32) -> Option<(Flow, Vec<u8>)> {
        let c = self.conn_mut(slot)?;
        let ws = c.ws.as_mut().filter(|w| !w.msgs.is_empty())?;
        let msgs = std::mem::take(&mut ws.msgs);
        Some((Flow::on_conn(Local::Listen(c.local), c.remote, c.id), msgs))
    }

    /// Gives back the buffer [`Streams::take_ws`] took (emptied), counting `messages`.
    pub(crate) fn put_ws(&mut self, id: ConnId, mut msgs: Vec<u8>, messages: u64) {
        let Some(c) = self.conn_mut(id.slot).filter(|c| c.id == id) else {
            return;
        };
        msgs.clear();
        if let Some(ws) = c.ws.as_mut() {
            ws.msgs = msgs;
        }
        let t = c.transport;
        self.counters[kind(t)].messages_in += messages;
    }

    /// Takes the received plaintext of `slot` (to frame it while the worker delivers
    /// messages); give it back with [`Streams::put_rx`].
    pub(crate) fn take_rx(&mut self, slot: u32) -> Option<(Flow, Vec<u8>)> {
        let c = self.conn_mut(slot)?;
        if c.rx.is_empty() {
            return None;
        }
        let flow = Flow::on_conn(Local::Listen(c.local), c.remote, c.id);
        Some((flow, std::mem::take(&mut c.rx)))
    }

    /// Gives back what [`Streams::take_rx`] took, minus the `consumed` bytes framed; counts
    /// `messages` delivered. A connection closed meanwhile is left alone.
    pub(crate) fn put_rx(
        &mut self,
        id: ConnId,
        mut rx: Vec<u8>,
        consumed: usize,
        messages: u64,
        now_ms: u64,
    ) {
        let Some(c) = self.conn_mut(id.slot).filter(|c| c.id == id) else {
            return;
        };
        rx.drain(..consumed.min(rx.len()));
        if rx.is_empty() {
            if !c.handshaking() {
                c.partial_since_ms = None;
            }
        } else if c.partial_since_ms.is_none() || consumed > 0 {
            // A message has started and is not complete: its clock starts now.
            c.partial_since_ms = Some(now_ms);
        }
        c.rx = rx;
        let t = c.transport;
        self.counters[kind(t)].messages_in += messages;
    }

    /// Writes `bytes` to connection `id` (owned by this worker); false when it is gone or
    /// had to be closed.
    pub(crate) fn send(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        let max_pending = self.setup.cfg.max_pending_bytes;
        let Some(c) = self
            .conns
            .get_mut(id.slot as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
        else {
            return false;
        };
        let t = c.transport;
        let r = c.send(bytes);
        let result = match r {
            Ok(w) => {
                self.counters[kind(t)].bytes_out += w as u64;
                if c.pending() > max_pending {
                    Err(CloseReason::SlowReader)
                } else {
                    Ok(c.pending() > 0 && !c.wants_out)
                }
            }
            Err(_) => Err(CloseReason::Io),
        };
        match result {
            Ok(arm) => {
                if arm {
                    self.want_out(id.slot, true);
                }
                true
            }
            Err(reason) => {
                self.close(id.slot, reason);
                false
            }
        }
    }

    /// The socket of `slot` can take more output.
    pub(crate) fn writable(&mut self, slot: u32) {
        let Some(c) = self.conn_mut(slot) else {
            return;
        };
        let t = c.transport;
        let flushed = c.flush().map(|w| (w, c.pending() == 0));
        match flushed {
            Ok((w, done)) => {
                self.counters[kind(t)].bytes_out += w as u64;
                if done {
                    self.want_out(slot, false);
                }
            }
            Err(_) => self.close(slot, CloseReason::Io),
        }
    }

    fn want_out(&mut self, slot: u32, on: bool) {
        let Some(c) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.wants_out == on {
            return;
        }
        c.wants_out = on;
        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if on {
            events |= libc::EPOLLOUT as u32;
        }
        let _ = self
            .epoll
            .modify(c.sock.as_raw_fd(), u64::from(slot), events);
    }

    /// Closes connection `slot`.
    pub(crate) fn close(&mut self, slot: u32, reason: CloseReason) {
        let Some(mut c) = self.conns.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        if reason != CloseReason::Io && reason != CloseReason::Eof {
            let ws_closed = matches!(reason, CloseReason::WebSocket | CloseReason::TooLarge);
            c.goodbye(ws_closed);
        }
        let _ = self.epoll.delete(c.sock.as_raw_fd());
        self.setup.registry.closed(c.id, c.transport, c.remote);
        self.setup.registry.release(c.remote.ip());
        let counters = &mut self.counters[kind(c.transport)];
        counters.open = counters.open.saturating_sub(1);
        counters.closed += 1;
        if reason.is_error() {
            counters.errors += 1;
            tracing::info!(
                remote = %c.remote,
                transport = c.transport.as_str(),
                reason = reason.as_str(),
                "connection closed"
            );
        } else {
            tracing::debug!(
                remote = %c.remote,
                transport = c.transport.as_str(),
                reason = reason.as_str(),
                "connection closed"
            );
        }
        self.free.push(slot);
    }

    /// Closes connections that idled too long, whose message or handshake did not complete
    /// in time, or whose peer stopped reading (at most every [`SWEEP_MS`]).
    pub(crate) fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms + SWEEP_MS;
        let idle = self.setup.cfg.idle_timeout_secs.saturating_mul(1000);
        let slow = self.setup.cfg.message_timeout_ms;
        for slot in 0..self.conns.len() as u32 {
            let verdict = match self.conns[slot as usize].as_ref() {
                None => None,
                Some(c) if c.partial_since_ms.is_some_and(|t| now_ms >= t + slow) => {
                    Some(CloseReason::Slow)
                }
                Some(c) if now_ms >= c.last_rx_ms + idle => Some(CloseReason::Idle),
                Some(_) => None,
            };
            if let Some(reason) = verdict {
                self.close(slot, reason);
            }
        }
    }

    /// Closes every connection (shutdown).
    pub(crate) fn close_all(&mut self) {
        for slot in 0..self.conns.len() as u32 {
            self.close(slot, CloseReason::Shutdown);
        }
    }
}
