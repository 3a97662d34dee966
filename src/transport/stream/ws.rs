//! SIP over WebSocket (RFC 7118) on one connection: the RFC 6455 opening handshake, then
//! frames in and out. Sans-IO: it works on the plaintext the connection read (after TLS for
//! WSS) and on output buffers; [`super::conn::Conn`] moves the bytes.
//!
//! Flow of the bytes of one connection:
//! 1. until the handshake is done, `rx` holds an HTTP request: [`WsConn::decode`] answers it
//!    (101 with `Sec-WebSocket-Protocol: sip`, or a clear HTTP error and the connection is
//!    closed: no `sip` subprotocol, a disallowed `Origin`, not a WebSocket upgrade);
//! 2. after it, `rx` holds frames: each data message (one SIP message, text or binary, whole
//!    or in fragments) is appended to [`WsConn::msgs`] as a 4-byte big-endian length and the
//!    bytes, for the worker to hand to the proxy like a datagram; a ping is answered with a
//!    pong, a close with a close;
//! 3. SIP output is written as one unmasked text frame ([`frame_header`]); the core's
//!    RFC 5626 CRLFCRLF keepalive becomes a ping frame ([`ping_header`]).
//!
//! The frame header codec and the `Sec-WebSocket-Accept` derivation are tungstenite's
//! (`FrameHeader::parse`/`format`, `derive_accept_key`); the HTTP request is parsed with
//! httparse (which tungstenite uses too). tungstenite's `WebSocket` object is not used: it
//! allocates a `Message` for every frame read and written, and the message path here stays
//! allocation-free (tests/transport_alloc.rs) — see docs/transport.md.
//!
//! Protocol errors (an unmasked client frame, reserved bits or opcodes, a bad continuation,
//! invalid UTF-8 in a text message, a frame or message over the limits) send a close frame
//! with the RFC 6455 status code and close this connection only.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::config::WsConfig;

/// Largest HTTP upgrade request accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// Most request headers parsed.
const MAX_HEADERS: usize = 32;

/// Largest frame header (RFC 6455 §5.2: 2 + 8 length bytes + 4 mask bytes).
pub(crate) const MAX_HEADER: usize = 14;

/// RFC 6455 §7.4.1 status codes sent in close frames.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_BAD_DATA: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
/// The close status the proxy sends when it ends a connection itself (idle, shutdown).
pub(crate) const GOING_AWAY: u16 = 1001;

/// Why a WebSocket connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsEnd {
    /// The upgrade request was refused (the HTTP answer is in the output).
    Refused,
    /// The peer sent a close frame (answered).
    Closed,
    /// A protocol error (a close frame with its code is in the output).
    Protocol,
    /// A frame or message over the limits (a close frame 1009 is in the output).
    TooLarge,
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub(crate) struct WsConn {
    open: bool,
    /// Data messages received and not yet delivered: `len (u32 BE) ‖ bytes`, repeated.
    pub(crate) msgs: Vec<u8>,
    /// A fragmented message being reassembled, and whether it is text.
    frag: Vec<u8>,
    frag_text: Option<bool>,
}

/// What the upgrade request asked, once it is acceptable.
struct Upgrade<'a> {
    key: &'a [u8],
}

/// An upgrade request that is refused, with its HTTP answer.
struct Refusal {
    status: &'static str,
    why: &'static str,
    extra: &'static str,
}

impl WsConn {
    pub(crate) fn new() -> WsConn {
        WsConn {
            open: false,
            msgs: Vec::new(),
            frag: Vec::new(),
            frag_text: None,
        }
    }

    /// Whether the opening handshake is done.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Whether a fragmented message is incomplete.
    pub(crate) fn mid_message(&self) -> bool {
        self.frag_text.is_some()
    }

    /// Consumes what it can of `rx` (handshake, then frames): messages go to
    /// [`WsConn::msgs`], answers (101 or an HTTP error, pongs, closes) to `out`. `Err` when
    /// the connection must be closed once `out` is written.
    pub(crate) fn decode(
        &mut self,
        rx: &mut Vec<u8>,
        out: &mut Vec<u8>,
        cfg: &WsConfig,
    ) -> Result<(), WsEnd> {
        if !self.open {
            match self.handshake(rx, out, cfg)? {
                0 => return Ok(()),
                n => {
                    rx.drain(..n);
                }
            }
        }
        let mut off = 0;
        let r = loop {
            match self.frame(&mut rx[off..], out, cfg) {
                Ok(0) => break Ok(()),
                Ok(n) => off += n,
                Err(e) => break Err(e),
            }
        };
        rx.drain(..off);
        r
    }

    /// Answers the upgrade request at the start of `rx`: the bytes it took (0 while it is
    /// incomplete).
    fn handshake(&mut self, rx: &[u8], out: &mut Vec<u8>, cfg: &WsConfig) -> Result<usize, WsEnd> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let refusal = match req.parse(rx) {
            Ok(httparse::Status::Partial) if rx.len() <= MAX_REQUEST => return Ok(0),
            Ok(httparse::Status::Partial) => Refusal::bad("request too large"),
            Err(_) => Refusal::bad("not an HTTP request"),
            Ok(httparse::Status::Complete(n)) => match check_upgrade(&req, cfg) {
                Ok(up) => {
                    let accept = tungstenite::handshake::derive_accept_key(up.key);
                    out.extend_from_slice(
                        b"HTTP/1.1 101 Switching Protocols\r\n\
                          Upgrade: websocket\r\n\
                          Connection: Upgrade\r\n\
                          Sec-WebSocket-Protocol: sip\r\n\
                          Sec-WebSocket-Accept: ",
                    );
                    out.extend_from_slice(accept.as_bytes());
                    out.extend_from_slice(b"\r\n\r\n");
                    self.open = true;
                    return Ok(n);
                }
                Err(r) => r,
            },
        };
        tracing::debug!(
            status = refusal.status,
            why = refusal.why,
            "WebSocket upgrade refused"
        );
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(refusal.status.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nConnection: close\r\n");
        out.extend_from_slice(refusal.extra.as_bytes());
        out.extend_from_slice(
            format!("Content-Length: {}\r\n\r\n", refusal.why.len() + 2).as_bytes(),
        );
        out.extend_from_slice(refusal.why.as_bytes());
        out.extend_from_slice(b"\r\n");
        Err(WsEnd::Refused)
    }

    /// Takes one frame from the start of `rx`: the bytes it took (0 while it is incomplete).
    fn frame(&mut self, rx: &mut [u8], out: &mut Vec<u8>, cfg: &WsConfig) -> Result<usize, WsEnd> {
        let mut cur = Cursor::new(&*rx);
        let (head, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(0),
            Err(_) => return Err(close(out, CLOSE_PROTOCOL)),
        };
        let hl = cur.position() as usize;
        if head.rsv1 || head.rsv2 || head.rsv3 {
            return Err(close(out, CLOSE_PROTOCOL));
        }
        // RFC 6455 §5.1: a server closes the connection on an unmasked client frame.
        let Some(mask) = head.mask else {
            return Err(close(out, CLOSE_PROTOCOL));
        };
        if len > cfg.max_frame_bytes as u64 {
            return Err(too_big(out));
        }
        let len = len as usize;
        let Some(payload) = rx.get_mut(hl..hl + len) else {
            return Ok(0);
        };
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        let payload = &*payload;
        match head.opcode {
            OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                if self.frag_text.is_some() {
                    return Err(close(out, CLOSE_PROTOCOL));
                }
                let text = d == Data::Text;
                if head.is_final {
                    self.deliver(payload, text, out, cfg)?;
                } else {
                    self.frag_text = Some(text);
                    self.add_fragment(payload, out, cfg)?;
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(text) = self.frag_text else {
                    return Err(close(out, CLOSE_PROTOCOL));
                };
                self.add_fragment(payload, out, cfg)?;
                if head.is_final {
                    let frag = std::mem::take(&mut self.frag);
                    self.frag_text = None;
                    let r = self.deliver(&frag, text, out, cfg);
                    self.frag = frag;
                    self.frag.clear();
                    r?;
                }
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(close(out, CLOSE_PROTOCOL));
            }
            // §5.5: control frames are not fragmented and carry at most 125 bytes.
            OpCode::Control(_) if !head.is_final || len > 125 => {
                return Err(close(out, CLOSE_PROTOCOL));
            }
            OpCode::Control(Control::Ping) => {
                write_frame(out, OpCode::Control(Control::Pong), payload);
            }
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => {
                // Echo the status code (§5.5.1), or none when the peer gave none.
                let code = match payload {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 0,
                };
                if code == 0 {
                    write_frame(out, OpCode::Control(Control::Close), &[]);
                } else {
                    close(
                        out,
                        if code < 1000 {
                            CLOSE_PROTOCOL
                        } else {
                            CLOSE_NORMAL
                        },
                    );
                }
                return Err(WsEnd::Closed);
            }
        }
        Ok(hl + len)
    }

    fn add_fragment(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        cfg: &WsConfig,
    ) -> Result<(), WsEnd> {
        if self.frag.len() + payload.len() > cfg.max_message_bytes {
            return Err(too_big(out));
        }
        self.frag.extend_from_slice(payload);
        Ok(())
    }

    /// A whole data message: checked, then queued for the proxy. A message of CR and LF
    /// only (a keepalive some clients send as data) is dropped.
    fn deliver(
        &mut self,
        msg: &[u8],
        text: bool,
        out: &mut Vec<u8>,
        cfg: &WsConfig,
    ) -> Result<(), WsEnd> {
        if msg.len() > cfg.max_message_bytes {
            return Err(too_big(out));
        }
        if text && std::str::from_utf8(msg).is_err() {
            return Err(close(out, CLOSE_BAD_DATA));
        }
        if msg.iter().all(|&b| b == b'\r' || b == b'\n') {
            return Ok(());
        }
        self.msgs
            .extend_from_slice(&(msg.len() as u32).to_be_bytes());
        self.msgs.extend_from_slice(msg);
        Ok(())
    }
}

impl Refusal {
    fn bad(why: &'static str) -> Refusal {
        Refusal {
            status: "400 Bad Request",
            why,
            extra: "",
        }
    }
}

/// Checks a complete upgrade request (RFC 6455 §4.2.1, RFC 7118 §4.1).
fn check_upgrade<'a>(
    req: &httparse::Request<'_, 'a>,
    cfg: &WsConfig,
) -> Result<Upgrade<'a>, Refusal> {
    if req.method != Some("GET") {
        return Err(Refusal {
            status: "405 Method Not Allowed",
            why: "a WebSocket upgrade is a GET",
            extra: "Allow: GET\r\n",
        });
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&c| c == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal {
            status: "426 Upgrade Required",
            why: "this is a SIP WebSocket server (RFC 7118): upgrade to websocket",
            extra: "Upgrade: websocket\r\nConnection: Upgrade\r\n",
        });
    }
    if header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Refusal {
            status: "426 Upgrade Required",
            why: "WebSocket version 13 only",
            extra: "Sec-WebSocket-Version: 13\r\n",
        });
    }
    let Some(key) = header("sec-websocket-key").map(<[u8]>::trim_ascii) else {
        return Err(Refusal::bad("Sec-WebSocket-Key is missing"));
    };
    if key.len() != 24 {
        return Err(Refusal::bad("Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    if !has_token("sec-websocket-protocol", "sip") {
        return Err(Refusal::bad(
            "Sec-WebSocket-Protocol must offer sip (RFC 7118): only SIP is spoken here",
        ));
    }
    if !cfg.origins.is_empty() {
        let origin = header("origin").and_then(|o| std::str::from_utf8(o.trim_ascii()).ok());
        if !origin.is_some_and(|o| cfg.origins.iter().any(|a| a.eq_ignore_ascii_case(o))) {
            return Err(Refusal {
                status: "403 Forbidden",
                why: "this Origin is not allowed (ws.origins)",
                extra: "",
            });
        }
    }
    Ok(Upgrade { key })
}

/// The header of an unmasked final frame of `len` payload bytes with `opcode`, written into
/// `buf`; its length.
fn header_into(buf: &mut [u8; MAX_HEADER], opcode: OpCode, len: usize) -> usize {
    let head = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let mut cur = Cursor::new(&mut buf[..]);
    // A 14-byte buffer always holds an unmasked header.
    let _ = head.format(len as u64, &mut cur);
    cur.position() as usize
}

/// The header of the text frame that carries one SIP message of `len` bytes (the server's
/// frames are not masked): write it, then the message.
pub(crate) fn frame_header(buf: &mut [u8; MAX_HEADER], len: usize) -> usize {
    header_into(buf, OpCode::Data(Data::Text), len)
}

/// The RFC 5626 keepalive ping on a stream; sent as a WebSocket ping frame instead.
pub(crate) const CRLF_PING: &[u8] = b"\r\n\r\n";

/// The header of an empty ping frame.
pub(crate) fn ping_header(buf: &mut [u8; MAX_HEADER]) -> usize {
    header_into(buf, OpCode::Control(Control::Ping), 0)
}

/// The header of a close frame with a 2-byte status code.
pub(crate) fn close_header(buf: &mut [u8; MAX_HEADER]) -> usize {
    header_into(buf, OpCode::Control(Control::Close), 2)
}

fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut buf = [0u8; MAX_HEADER];
    let n = header_into(&mut buf, opcode, payload.len());
    out.extend_from_slice(&buf[..n]);
    out.extend_from_slice(payload);
}

/// Writes a close frame with `code`; the end it stands for.
fn close(out: &mut Vec<u8>, code: u16) -> WsEnd {
    write_frame(out, OpCode::Control(Control::Close), &code.to_be_bytes());
    match code {
        CLOSE_NORMAL => WsEnd::Closed,
        CLOSE_TOO_BIG => WsEnd::TooLarge,
        _ => WsEnd::Protocol,
    }
}

fn too_big(out: &mut Vec<u8>) -> WsEnd {
    close(out, CLOSE_TOO_BIG)
}

/// The data messages queued in a [`WsConn::msgs`] buffer, in order.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let len = buf.get(off..off + 4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let m = buf.get(off + 4..off + 4 + len)?;
        off += 4 + len;
        Some(m)
    })
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
