//! A browser-like phone on a WebSocket (RFC 7118): tungstenite's client over TCP (WS) or
//! over a rustls connection trusting the test CA (WSS), offering the `sip` subprotocol; SIP
//! messages travel one per text frame. Raw bytes can be written past the WebSocket layer
//! (malformed frames).

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use super::phone::SipMsg;
use super::stream::{expect_request_on, expect_response_on, Wire};
use super::tls::TestPki;

/// A phone talking SIP over one WebSocket.
pub struct WsPhone {
    pub ws: WebSocket<Box<dyn Wire>>,
    /// The phone's end of the connection.
    pub addr: SocketAddr,
    /// The proxy's end.
    pub peer: SocketAddr,
    /// The TCP socket under it (a clone of the descriptor: to set read timeouts).
    sock: TcpStream,
}

/// The WebSocket upgrade of a connection to `peer` (`scheme` ws or wss) with `protocol`
/// offered; the HTTP error answer when the proxy refuses it.
pub fn upgrade(
    wire: Box<dyn Wire>,
    scheme: &str,
    peer: SocketAddr,
    protocol: &str,
) -> Result<WebSocket<Box<dyn Wire>>, String> {
    let mut req = format!("{scheme}://{peer}/")
        .into_client_request()
        .expect("a WebSocket request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).expect("header value"),
    );
    match tungstenite::client::client(req, wire) {
        Ok((ws, resp)) => {
            let proto = resp.headers().get("Sec-WebSocket-Protocol");
            assert_eq!(proto.map(|v| v.as_bytes()), Some(&b"sip"[..]));
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let body = r.body().as_deref().map(String::from_utf8_lossy);
            Err(format!("{} {}", r.status(), body.unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn tcp(peer: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(peer).expect("TCP connect to sipfront");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    tcp
}

impl WsPhone {
    /// A WS connection to `proxy`.
    pub fn ws(proxy: SocketAddr) -> WsPhone {
        let t = tcp(proxy);
        let sock = t.try_clone().expect("socket clone");
        let ws = upgrade(Box::new(t), "ws", proxy, "sip").expect("WebSocket upgrade");
        WsPhone::ready(ws, sock, proxy)
    }

    /// A WSS connection to `proxy`, trusting `pki`'s CA.
    pub fn wss(proxy: SocketAddr, pki: &TestPki) -> WsPhone {
        let conn = pki.connect(proxy);
        let sock = conn.s.sock.try_clone().expect("socket clone");
        let ws = upgrade(Box::new(conn), "wss", proxy, "sip").expect("WebSocket upgrade");
        WsPhone::ready(ws, sock, proxy)
    }

    /// A WS (`pki` `None`) or WSS phone.
    pub fn connect(proxy: SocketAddr, pki: Option<&TestPki>) -> WsPhone {
        match pki {
            Some(pki) => WsPhone::wss(proxy, pki),
            None => WsPhone::ws(proxy),
        }
    }

    fn ready(ws: WebSocket<Box<dyn Wire>>, sock: TcpStream, peer: SocketAddr) -> WsPhone {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("local address");
        WsPhone {
            ws,
            addr,
            peer,
            sock,
        }
    }

    pub fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .expect("WebSocket send to sipfront");
    }

    /// Writes `bytes` as they are, past the WebSocket layer.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.ws.get_mut();
        w.write_all(bytes).expect("write to sipfront");
        w.flush().expect("flush to sipfront");
    }

    /// The next SIP message (one per data frame), or `None` once `deadline` has passed or
    /// the connection closed.
    pub fn recv_until(&mut self, deadline: Instant) -> Option<SipMsg> {
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(SipMsg {
                        text: t.as_str().to_owned(),
                        from: self.peer,
                    })
                }
                Ok(Message::Binary(b)) => {
                    return Some(SipMsg {
                        text: String::from_utf8_lossy(&b).into_owned(),
                        from: self.peer,
                    })
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Whether the proxy closed the connection (a close frame, or the socket) within
    /// `limit`; the close frame's status code when there was one.
    pub fn closed_within(&mut self, limit: Duration) -> Option<Option<u16>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Close(c)) => return Some(c.map(|c| u16::from(c.code))),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Some(None),
            }
        }
        None
    }

    /// Reads until a WebSocket ping arrives (tungstenite answers it with a pong); panics on
    /// a SIP message or at `limit`.
    pub fn expect_ping(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Ping(_)) => {
                    // The pong goes out with the next write or flush.
                    let _ = self.ws.flush();
                    return;
                }
                Ok(Message::Text(t)) => panic!("a SIP message instead of a ping: {t:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("the WebSocket failed while waiting for a ping: {e}"),
            }
        }
        panic!("no WebSocket ping within {limit:?}");
    }

    /// Receives until a response with `code` to `cseq` (e.g. `"2 INVITE"`) arrives.
    pub fn expect_response(&mut self, code: u16, cseq: &str, limit: Duration) -> SipMsg {
        expect_response_on(|d| self.recv_until(d), "WebSocket", code, cseq, limit)
    }

    /// Receives until a request `method` arrives.
    pub fn expect_request(&mut self, method: &str, limit: Duration) -> SipMsg {
        expect_request_on(|d| self.recv_until(d), "WebSocket", method, limit)
    }
}
