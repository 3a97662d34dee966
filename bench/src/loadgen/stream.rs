//! A phone socket that is a connection to the proxy, over TCP or TLS (rustls), optionally
//! carrying a WebSocket (WS, WSS: [`super::ws`]). The generator plays one phone port per
//! connection, as a desk phone (or a browser tab) keeps one connection to its proxy.
//!
//! Data flow: [`StreamConn::connect`] opens the connection (and completes the TLS handshake)
//! blocking, then turns it nonblocking. Received bytes go to an input buffer
//! ([`StreamConn::fill`]); [`StreamConn::next_message`] cuts one SIP message off it by its
//! Content-Length (RFC 3261 §18.3), skipping keepalive CRLFs. Outgoing messages are queued
//! ([`StreamConn::queue`]) and written as far as the socket takes them
//! ([`StreamConn::flush`]); what is left waits for the next flush. Nothing is retransmitted
//! over a connection (the worker turns its timers off for reliable transports).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::ws::{self, WsClient};

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the generator accepts on a connection (its peers send < 2 kB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A connection from one phone port to the proxy.
#[derive(Debug)]
pub struct StreamConn {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// The WebSocket layer (WS over TCP, WSS over TLS).
    ws: Option<Box<WsClient>>,
    /// A frame being built for [`StreamConn::queue`].
    frame: Vec<u8>,
    peer: SocketAddrV4,
    /// Received bytes (plaintext) not yet cut into messages.
    input: Vec<u8>,
    /// Plaintext queued and not yet written (TCP) or not yet taken by the TLS session.
    output: Vec<u8>,
    /// The peer closed, or the connection failed; nothing more is read or written.
    closed: bool,
}

impl StreamConn {
    /// Connects from `local_ip` (any free port) to `proxy`; with `tls`, completes the
    /// handshake before returning, and with `websocket` the WebSocket upgrade after it. The
    /// connection is nonblocking afterwards.
    pub fn connect(
        local_ip: std::net::Ipv4Addr,
        proxy: SocketAddrV4,
        tls: Option<&Arc<ClientConfig>>,
        websocket: bool,
    ) -> std::io::Result<StreamConn> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.bind(&SocketAddr::from(SocketAddrV4::new(local_ip, 0)).into())?;
        s.set_nodelay(true)?;
        s.connect_timeout(&SocketAddr::from(proxy).into(), CONNECT_TIMEOUT)?;
        let mut tcp: TcpStream = s.into();
        let mut tls = match tls {
            None => None,
            Some(cfg) => {
                let name = ServerName::IpAddress((*proxy.ip()).into());
                let mut conn =
                    ClientConnection::new(Arc::clone(cfg), name).map_err(std::io::Error::other)?;
                tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
                tcp.set_write_timeout(Some(CONNECT_TIMEOUT))?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp)?;
                }
                Some(Box::new(conn))
            }
        };
        let ws = if websocket {
            tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            tcp.set_write_timeout(Some(CONNECT_TIMEOUT))?;
            let host = proxy.to_string();
            let leftover = match tls.as_deref_mut() {
                None => ws::handshake(&mut tcp, &host),
                Some(conn) => ws::handshake(&mut rustls::Stream::new(conn, &mut tcp), &host),
            }
            .map_err(std::io::Error::other)?;
            let seed = u32::from(tcp.local_addr()?.port()) << 8 | 0x5a;
            Some(Box::new(WsClient::new(leftover, seed)))
        } else {
            None
        };
        tcp.set_nonblocking(true)?;
        let mut conn = StreamConn {
            tcp,
            tls,
            ws,
            frame: Vec::new(),
            peer: proxy,
            input: Vec::with_capacity(16 * 1024),
            output: Vec::new(),
            closed: false,
        };
        // Frames that arrived with the 101.
        conn.decode_ws();
        Ok(conn)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// TCP, TLS, WS or WSS.
    pub fn wire(&self) -> super::net::Wire {
        use super::net::Wire;
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => Wire::Tcp,
            (true, false) => Wire::Tls,
            (false, true) => Wire::Ws,
            (true, true) => Wire::Wss,
        }
    }

    /// The proxy this connection goes to.
    pub fn peer(&self) -> SocketAddrV4 {
        self.peer
    }

    pub fn fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads what the socket has into the input buffer (bounded: at most `MAX_MESSAGE` ×4
    /// bytes buffered). Returns false once the connection is closed.
    pub fn fill(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: stops at WouldBlock, EOF, an error or a full buffer.
        while self.input.len() + self.ws.as_ref().map_or(0, |w| w.buffered()) < 4 * MAX_MESSAGE {
            let got = match self.tls.as_deref_mut() {
                None => self.tcp.read(&mut chunk),
                Some(tls) => read_tls(tls, &mut self.tcp, &mut chunk),
            };
            match got {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    let got = chunk.get(..n).unwrap_or_default();
                    match self.ws.as_deref_mut() {
                        None => self.input.extend_from_slice(got),
                        Some(ws) => ws.push(got),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        self.decode_ws();
        !self.closed
    }

    /// WS/WSS: decodes the received frames into SIP messages in the input buffer, and
    /// sends the pongs (or the close answer) they call for.
    fn decode_ws(&mut self) {
        let Some(ws) = self.ws.as_deref_mut() else {
            return;
        };
        let open = ws.decode(&mut self.input);
        let control = std::mem::take(&mut ws.control);
        if !control.is_empty() {
            self.queue_raw(&control);
            self.flush();
        }
        if !matches!(open, Ok(true)) {
            self.closed = true;
        }
    }

    /// Cuts the next whole message off the input into `out` (cleared first); false when
    /// none is complete. Keepalive CRLFs before a message are skipped. A message that cannot
    /// be framed (no Content-Length, or larger than [`MAX_MESSAGE`]) closes the connection.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> bool {
        let skip = self
            .input
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.input.drain(..skip);
        match frame_len(&self.input) {
            Frame::Whole(n) => {
                out.clear();
                out.extend_from_slice(self.input.get(..n).unwrap_or_default());
                self.input.drain(..n);
                true
            }
            Frame::Partial => false,
            Frame::Bad => {
                self.input.clear();
                self.closed = true;
                false
            }
        }
    }

    /// True when a whole message is already buffered (epoll will not report it again).
    pub fn has_message(&self) -> bool {
        let skip = self
            .input
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        matches!(
            frame_len(self.input.get(skip..).unwrap_or_default()),
            Frame::Whole(_)
        )
    }

    /// Queues one SIP message for sending (in a WebSocket frame on WS/WSS); false if the
    /// connection is closed.
    pub fn queue(&mut self, bytes: &[u8]) -> bool {
        let Some(ws) = self.ws.as_deref_mut() else {
            return self.queue_raw(bytes);
        };
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        ws.encode(bytes, &mut frame);
        let ok = self.queue_raw(&frame);
        self.frame = frame;
        ok
    }

    /// Queues `bytes` as they are.
    fn queue_raw(&mut self, bytes: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        self.output.extend_from_slice(bytes);
        true
    }

    /// True when queued bytes wait for the socket.
    pub fn wants_write(&self) -> bool {
        !self.closed
            && (!self.output.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write()))
    }

    /// Writes queued bytes until the socket would block. Returns false if the connection
    /// failed. Over TLS, queued plaintext enters the session as far as its buffer takes it
    /// (rustls bounds it; a proxy that reads slowly used to make `write_all` fail here and
    /// the generator drop the connection) and waits here for the rest.
    pub fn flush(&mut self) -> bool {
        if self.closed {
            return false;
        }
        // Bounded: each turn writes > 0 bytes or stops.
        loop {
            if let Some(tls) = self.tls.as_deref_mut() {
                if !self.output.is_empty() {
                    match tls.writer().write(&self.output) {
                        Ok(n) => {
                            self.output.drain(..n.min(self.output.len()));
                        }
                        Err(_) => {
                            self.closed = true;
                            return false;
                        }
                    }
                }
            }
            let wrote = match self.tls.as_deref_mut() {
                None if self.output.is_empty() => return true,
                None => self.tcp.write(&self.output),
                Some(tls) if !tls.wants_write() => return true,
                Some(tls) => tls.write_tls(&mut self.tcp),
            };
            match wrote {
                Ok(0) => {
                    self.closed = true;
                    return false;
                }
                Ok(n) => {
                    if self.tls.is_none() {
                        self.output.drain(..n.min(self.output.len()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return false;
                }
            }
        }
    }
}

impl StreamConn {
    /// Closes the connection: TLS close_notify (if TLS), what is queued written as far as the
    /// socket takes it, then a TCP FIN.
    pub fn close(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
        }
        self.flush();
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
        self.closed = true;
    }
}

/// One read of plaintext from a TLS connection: decrypted bytes already buffered first, else
/// one read of records from the socket.
fn read_tls(
    tls: &mut ClientConnection,
    tcp: &mut TcpStream,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match tls.reader().read(buf) {
        Ok(n) => return Ok(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let n = tls.read_tls(tcp)?;
    if n == 0 {
        return Ok(0);
    }
    tls.process_new_packets().map_err(std::io::Error::other)?;
    // Records that held no application data (e.g. session tickets) leave nothing to read.
    match tls.reader().read(buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::Interrupted.into()),
        other => other,
    }
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole message of this many bytes.
    Whole(usize),
    Partial,
    /// No Content-Length, a bad one, or too large.
    Bad,
}

fn frame_len(buf: &[u8]) -> Frame {
    let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Bad
        } else {
            Frame::Partial
        };
    };
    let head = buf.get(..head_end).unwrap_or_default();
    let mut length = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
            length = super::sip::parse_u32(value);
            if length.is_none() {
                return Frame::Bad;
            }
        }
    }
    let Some(body) = length else {
        return Frame::Bad;
    };
    let total = head_end + 4 + body as usize;
    if total > MAX_MESSAGE {
        Frame::Bad
    } else if buf.len() >= total {
        Frame::Whole(total)
    } else {
        Frame::Partial
    }
}

/// A TLS client configuration for the benchmark: the proxy's certificate is not checked
/// (loopback only; the generator measures the proxy, not a PKI), its signatures are. The ring
/// provider, as the proxy uses (deprecated in rustls 0.23.48 for lacking post-quantum key
/// exchange, which phones do not offer either), with X25519 first as phones' TLS stacks
/// offer it (ring's default puts P-384 first, which would make every handshake pay for P-384
/// ECDH).
#[allow(deprecated)]
pub fn insecure_client_config() -> Arc<ClientConfig> {
    use rustls::crypto::ring::kx_group;
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    });
    let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match cfg {
        Ok(c) => Arc::new(c),
        // The ring provider supports the default versions; this cannot fail at run time,
        // but a broken build of rustls should say so rather than panic.
        Err(e) => {
            eprintln!("sipfront-loadgen: TLS client configuration: {e}");
            std::process::exit(2)
        }
    }
}

/// Accepts any server certificate; checks handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length() {
        let two =
            b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(frame_len(two), Frame::Whole(27));
        assert_eq!(frame_len(&two[..20]), Frame::Partial);
        assert_eq!(frame_len(&two[..25]), Frame::Partial);
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nCSeq: 1 X\r\n\r\n"),
            Frame::Bad
        );
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Frame::Bad
        );
        assert_eq!(
            frame_len(b"SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n"),
            Frame::Bad
        );
    }

    #[test]
    fn tcp_messages_round_trip_with_keepalives_between() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = match listener.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound on IPv4"),
        };
        let mut conn =
            StreamConn::connect(std::net::Ipv4Addr::LOCALHOST, addr, None, false).expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        let msg = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";
        assert!(conn.queue(msg) && conn.flush());
        let mut got = vec![0u8; msg.len()];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got[..], &msg[..]);
        peer.write_all(b"\r\n\r\n").expect("write");
        peer.write_all(msg).expect("write");
        peer.write_all(&msg[..10]).expect("write");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !conn.has_message() {
            assert!(std::time::Instant::now() < deadline, "no message arrived");
            assert!(conn.fill());
        }
        assert!(conn.next_message(&mut out));
        assert_eq!(&out[..], &msg[..]);
        assert!(!conn.next_message(&mut out), "only a part of the second");
        drop(peer);
        while conn.fill() {
            assert!(std::time::Instant::now() < deadline, "no EOF seen");
        }
        assert!(conn.is_closed());
    }
}
