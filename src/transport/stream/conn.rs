//! One TCP, TLS, WS or WSS connection: its nonblocking socket, the TLS session when there is
//! one, the WebSocket state when there is one ([`super::ws`]), the plaintext received and not
//! yet framed, and the bytes waiting to be written.
//!
//! Reading drains the socket (up to a cap per call) into `rx` (decrypting through rustls for
//! TLS); writing queues plaintext (TLS encrypts into its own buffer) and writes as much as
//! the socket takes, the rest waiting for `EPOLLOUT`. Nothing here blocks.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::core::ConnId;
use crate::sip::Transport;

use super::ws::{self, WsConn};

/// Most bytes read from one socket per readiness event (fairness between connections).
const READ_CAP: usize = 256 * 1024;

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// The socket has nothing more for now.
    Drained,
    /// More may be waiting (the per-call cap was reached).
    Capped,
    /// The peer closed its side.
    Eof,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Eof,
    Io,
    Tls,
    Framing,
    /// A WebSocket upgrade refused, or a WebSocket protocol error.
    WebSocket,
    TooLarge,
    Idle,
    Slow,
    SlowReader,
    Refused,
    Shutdown,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Eof => "closed by the peer",
            CloseReason::Io => "socket error",
            CloseReason::Tls => "TLS error",
            CloseReason::Framing => "bad message framing",
            CloseReason::WebSocket => "WebSocket upgrade refused or protocol error",
            CloseReason::TooLarge => "message too large",
            CloseReason::Idle => "idle timeout",
            CloseReason::Slow => "message or handshake not completed in time",
            CloseReason::SlowReader => "peer does not read its output",
            CloseReason::Refused => "refused",
            CloseReason::Shutdown => "shutting down",
        }
    }

    /// Whether the close counts as an error of the connection (not a normal end).
    pub(crate) fn is_error(self) -> bool {
        !matches!(
            self,
            CloseReason::Eof | CloseReason::Idle | CloseReason::Shutdown
        )
    }
}

/// A connection owned by one worker.
pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    pub(crate) id: ConnId,
    /// The listen address it was accepted on (index into the listen table).
    pub(crate) local: u16,
    pub(crate) transport: Transport,
    pub(crate) remote: SocketAddr,
    tls: Option<Box<ServerConnection>>,
    /// The WebSocket state (WS and WSS).
    pub(crate) ws: Option<Box<WsConn>>,
    /// Plaintext received and not yet framed.
    pub(crate) rx: Vec<u8>,
    /// Bytes (ciphertext for TLS) waiting for the socket.
    tx: Vec<u8>,
    tx_pos: usize,
    /// Last time anything arrived (monotonic ms).
    pub(crate) last_rx_ms: u64,
    /// When the message (or handshake) in progress started, if one is.
    pub(crate) partial_since_ms: Option<u64>,
    /// `EPOLLOUT` is armed.
    pub(crate) wants_out: bool,
    /// Whether the TLS handshake had completed at the last look (counted once).
    pub(crate) handshaken: bool,
}

impl Conn {
    pub(crate) fn new(
        sock: TcpStream,
        id: ConnId,
        local: u16,
        transport: Transport,
        remote: SocketAddr,
        tls: Option<&Arc<ServerConfig>>,
        now_ms: u64,
    ) -> Result<Conn, rustls::Error> {
        let tls = match tls {
            Some(cfg) => Some(Box::new(ServerConnection::new(cfg.clone())?)),
            None => None,
        };
        let ws =
            matches!(transport, Transport::Ws | Transport::Wss).then(|| Box::new(WsConn::new()));
        let handshaking = tls.is_some() || ws.is_some();
        Ok(Conn {
            sock,
            id,
            local,
            transport,
            remote,
            tls,
            ws,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            last_rx_ms: now_ms,
            partial_since_ms: handshaking.then_some(now_ms),
            wants_out: false,
            handshaken: !handshaking,
        })
    }

    /// Whether the TLS or WebSocket handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
            || self.ws.as_ref().is_some_and(|w| !w.is_open())
    }

    /// Reads what the socket has into `rx` (through TLS when there is a session), using
    /// `scratch` for ciphertext-free reads. Returns how many bytes the socket gave.
    pub(crate) fn read(&mut self, scratch: &mut [u8]) -> io::Result<(ReadEnd, usize)> {
        let mut total = 0;
        loop {
            if total >= READ_CAP {
                return Ok((ReadEnd::Capped, total));
            }
            let n = match &mut self.tls {
                None => self.sock.read(scratch),
                Some(tls) => tls.read_tls(&mut self.sock),
            };
            match n {
                Ok(0) => return Ok((ReadEnd::Eof, total)),
                Ok(n) => {
                    total += n;
                    match &mut self.tls {
                        None => self.rx.extend_from_slice(&scratch[..n]),
                        Some(tls) => {
                            tls.process_new_packets()
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                            loop {
                                match tls.reader().read(scratch) {
                                    Ok(0) => break,
                                    Ok(k) => self.rx.extend_from_slice(&scratch[..k]),
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(e) => return Err(e),
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((ReadEnd::Drained, total))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues one SIP message (plaintext; in a WebSocket text frame on WS and WSS) and
    /// writes what the socket takes; returns the bytes written to the socket.
    ///
    /// On a WebSocket the RFC 5626 CRLFCRLF keepalive the core sends to a stream becomes a
    /// ping frame (RFC 6455 §5.5.2): a browser answers it by itself, where a CRLFCRLF text
    /// message would reach its SIP stack as an unparsable message.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut head = [0u8; ws::MAX_HEADER];
        let (hl, body) = match &self.ws {
            Some(_) if bytes == ws::CRLF_PING => (ws::ping_header(&mut head), &[][..]),
            Some(_) => (ws::frame_header(&mut head, bytes.len()), bytes),
            None => (0, bytes),
        };
        self.send_raw(&head[..hl], body)
    }

    /// Queues `a` then `b` (plaintext, as they are) and writes what the socket takes.
    pub(crate) fn send_raw(&mut self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                if self.pending() == 0 {
                    // Fast path: straight to the socket.
                    let iov = [io::IoSlice::new(a), io::IoSlice::new(b)];
                    let n = match self.sock.write_vectored(&iov) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(e) => return Err(e),
                    };
                    if n < a.len() {
                        self.tx.extend_from_slice(&a[n..]);
                        self.tx.extend_from_slice(b);
                    } else if n < a.len() + b.len() {
                        self.tx.extend_from_slice(&b[n - a.len()..]);
                    }
                    return Ok(n);
                }
                self.tx.extend_from_slice(a);
                self.tx.extend_from_slice(b);
            }
            Some(tls) => {
                // One TLS record for the frame header and the message.
                let mut w = tls.writer();
                let n = w.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])?;
                if n < a.len() {
                    w.write_all(&a[n..])?;
                    w.write_all(b)?;
                } else {
                    w.write_all(&b[n - a.len()..])?;
                }
            }
        }
        self.flush()
    }

    /// Writes pending output (and TLS records, handshake included); returns the bytes the
    /// socket took.
    pub(crate) fn flush(&mut self) -> io::Result<usize> {
        if let Some(tls) = &mut self.tls {
            // Move TLS records into `tx` (rustls buffers them internally until then).
            while tls.wants_write() {
                let mut w = VecWriter(&mut self.tx);
                tls.write_tls(&mut w)?;
            }
        }
        let mut written = 0;
        while self.tx_pos < self.tx.len() {
            match self.sock.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.tx_pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.tx_pos == self.tx.len() {
            self.tx.clear();
            self.tx_pos = 0;
        } else if self.tx_pos > 64 * 1024 {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
        Ok(written)
    }

    /// Bytes waiting for the socket.
    pub(crate) fn pending(&self) -> usize {
        self.tx.len() - self.tx_pos
    }

    /// Sends a TLS close_notify (best effort) before the socket is closed.
    /// On an open WebSocket, a close frame 1001 ("going away") first, unless `ws_closed`
    /// (one was sent already).
    pub(crate) fn goodbye(&mut self, ws_closed: bool) {
        if !ws_closed && self.ws.as_ref().is_some_and(|w| w.is_open()) {
            let mut head = [0u8; ws::MAX_HEADER];
            let hl = ws::close_header(&mut head);
            let _ = self.send_raw(&head[..hl], &ws::GOING_AWAY.to_be_bytes());
        }
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = self.flush();
        }
    }
}

/// `io::Write` into a `Vec` (rustls writes TLS records through it).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl Write for VecWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
