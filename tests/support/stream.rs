//! A phone on a TCP or TLS connection: writes SIP messages as text and reads them back
//! framed by Content-Length (the proxy's own framer, `sipfront::sip::frame`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sipfront::sip::{frame, Frame, Status};

use super::phone::SipMsg;
use super::tls::{TestPki, TlsConn};

/// Reads and writes of one connection.
pub trait Wire: Read + Write {}
impl<T: Read + Write> Wire for T {}

/// A phone talking SIP over one connection.
pub struct StreamPhone {
    pub wire: Box<dyn Wire>,
    /// The phone's end of the connection.
    pub addr: SocketAddr,
    /// The proxy's end.
    pub peer: SocketAddr,
    buf: Vec<u8>,
    /// CRLF pongs received.
    pub pongs: usize,
    /// CRLFCRLF pings received (the proxy's NAT keepalives).
    pub pings: usize,
}

impl StreamPhone {
    /// A TCP connection to `proxy`.
    pub fn tcp(proxy: SocketAddr) -> StreamPhone {
        let tcp = TcpStream::connect(proxy).expect("TCP connect to sipfront");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        StreamPhone::tcp_from(tcp, proxy)
    }

    /// A phone on an already connected TCP stream.
    pub fn tcp_from(tcp: TcpStream, proxy: SocketAddr) -> StreamPhone {
        let addr = tcp.local_addr().expect("local address");
        StreamPhone {
            wire: Box::new(tcp),
            addr,
            peer: proxy,
            buf: Vec::new(),
            pongs: 0,
            pings: 0,
        }
    }

    /// A TLS connection to `proxy`, trusting `pki`'s CA.
    pub fn tls(proxy: SocketAddr, pki: &TestPki) -> StreamPhone {
        let conn: TlsConn = pki.connect(proxy);
        let addr = conn.s.sock.local_addr().expect("local address");
        conn.s
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        StreamPhone {
            wire: Box::new(conn),
            addr,
            peer: proxy,
            buf: Vec::new(),
            pongs: 0,
            pings: 0,
        }
    }

    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.wire.write_all(bytes).expect("write to sipfront");
        self.wire.flush().expect("flush to sipfront");
    }

    /// The next message, or `None` once `deadline` has passed or the connection closed.
    pub fn recv_until(&mut self, deadline: Instant) -> Option<SipMsg> {
        loop {
            loop {
                match frame(&self.buf, 65_535) {
                    Ok(Status::Complete(Frame::Message { len })) => {
                        let text = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                        self.buf.drain(..len);
                        return Some(SipMsg {
                            text,
                            from: self.peer,
                        });
                    }
                    Ok(Status::Complete(f)) => {
                        match f {
                            Frame::Pong { .. } => self.pongs += 1,
                            Frame::Ping { .. } => self.pings += 1,
                            Frame::Message { .. } => {}
                        }
                        self.buf.drain(..f.consumed());
                    }
                    Ok(Status::Partial) => break,
                    Err(e) => panic!("bad stream from sipfront: {e}"),
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.wire.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Whether the proxy closed the connection within `limit` (reading and dropping
    /// whatever comes first).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.wire.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Receives until a response with `code` to `cseq` (e.g. `"2 INVITE"`) arrives.
    pub fn expect_response(&mut self, code: u16, cseq: &str, limit: Duration) -> SipMsg {
        expect_response_on(|d| self.recv_until(d), "stream", code, cseq, limit)
    }

    /// Receives until a request `method` arrives.
    pub fn expect_request(&mut self, method: &str, limit: Duration) -> SipMsg {
        expect_request_on(|d| self.recv_until(d), "stream", method, limit)
    }
}

/// Takes messages from `recv` (one per call, `None` at the deadline) until a response with
/// `code` to `cseq` arrives; panics naming `what` (the connection kind) and what came instead.
pub fn expect_response_on(
    mut recv: impl FnMut(Instant) -> Option<SipMsg>,
    what: &str,
    code: u16,
    cseq: &str,
    limit: Duration,
) -> SipMsg {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(m) = recv(deadline) {
        let c = m.header("CSeq").unwrap_or("").to_owned();
        if m.code() == Some(code) && c.split_whitespace().eq(cseq.split_whitespace()) {
            return m;
        }
        seen.push(format!("{} ({c})", m.start_line()));
    }
    panic!("no {code} to {cseq} within {limit:?} on the {what}; got {seen:?}");
}

/// Like [`expect_response_on`], for a request `method`.
pub fn expect_request_on(
    mut recv: impl FnMut(Instant) -> Option<SipMsg>,
    what: &str,
    method: &str,
    limit: Duration,
) -> SipMsg {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(m) = recv(deadline) {
        if m.method() == Some(method) {
            return m;
        }
        seen.push(m.start_line().to_owned());
    }
    panic!("no {method} within {limit:?} on the {what}; got {seen:?}");
}
