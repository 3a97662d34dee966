//! The WebSocket layer of a phone connection (RFC 6455, subprotocol `sip`, RFC 7118), for
//! `--transport ws|wss`: the opening handshake (blocking, at connect), then frames over the
//! connection's plaintext. tungstenite provides the key, the accept check and the frame
//! header codec; the bytes move through [`super::stream::StreamConn`]'s own buffers.
//!
//! Data flow: [`handshake`] writes the upgrade request and reads the 101 (bytes after it are
//! returned, they are frames); [`WsClient::decode`] turns received frames into SIP messages
//! appended to the connection's input (each SIP message is one data message, and sipfront
//! writes Content-Length, so the connection cuts them as on TCP); [`WsClient::encode`] wraps
//! one outgoing SIP message into a masked text frame.

use std::io::{Cursor, ErrorKind, Read, Write};

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest HTTP answer to the upgrade.
const MAX_ANSWER: usize = 8 * 1024;

/// Why a WebSocket connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket upgrade refused: {0}")]
    Refused(String),
    #[error("WebSocket protocol error from the proxy")]
    Protocol,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes the upgrade request for `host` on `wire` (blocking) and reads the answer; the bytes
/// that followed the 101 are returned (frames already sent).
pub fn handshake(wire: &mut (impl Read + Write), host: &str) -> Result<Vec<u8>, WsError> {
    let key = tungstenite::handshake::client::generate_key();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: sip\r\n\r\n"
    );
    wire.write_all(req.as_bytes())?;
    wire.flush()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // Bounded: stops at the end of the answer, EOF, an error or MAX_ANSWER bytes.
    let end = loop {
        if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_ANSWER {
            return Err(WsError::Refused("answer too long".into()));
        }
        match wire.read(&mut chunk) {
            Ok(0) => return Err(WsError::Refused("closed during the upgrade".into())),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    let head = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned();
    let first = head.lines().next().unwrap_or("").to_owned();
    if !first.starts_with("HTTP/1.1 101") {
        return Err(WsError::Refused(first));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let has = |name: &str, value: &str| {
        head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    };
    if !has("sec-websocket-accept", &accept) || !has("sec-websocket-protocol", "sip") {
        return Err(WsError::Refused(
            "no matching Sec-WebSocket-Accept or no sip subprotocol".into(),
        ));
    }
    Ok(buf.split_off(end))
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub struct WsClient {
    /// Received bytes not yet decoded into messages.
    raw: Vec<u8>,
    /// The next frame's mask (xorshift: masks need not be secret from the proxy here).
    mask: u32,
    /// Control frames to send (pongs, the close answer).
    pub control: Vec<u8>,
}

impl WsClient {
    pub fn new(leftover: Vec<u8>, seed: u32) -> WsClient {
        WsClient {
            raw: leftover,
            mask: seed | 1,
            control: Vec::new(),
        }
    }

    /// Bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    /// Bytes buffered and not decoded.
    pub fn buffered(&self) -> usize {
        self.raw.len()
    }

    /// Decodes every whole frame: data payloads are appended to `messages` (a fragmented
    /// message's fragments in order, which concatenate to it), pings answered into
    /// [`WsClient::control`]. `Ok(false)` when the proxy closed the WebSocket.
    pub fn decode(&mut self, messages: &mut Vec<u8>) -> Result<bool, WsError> {
        let mut off = 0;
        let mut open = true;
        // Bounded: each turn consumes a whole frame or stops.
        while open {
            let rest = self.raw.get(off..).unwrap_or_default();
            let mut cur = Cursor::new(rest);
            let (head, len) = match FrameHeader::parse(&mut cur) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(_) => return Err(WsError::Protocol),
            };
            let hl = cur.position() as usize;
            let Ok(len) = usize::try_from(len) else {
                return Err(WsError::Protocol);
            };
            if len > super::stream::MAX_MESSAGE {
                return Err(WsError::Protocol);
            }
            let Some(payload) = rest.get(hl..hl + len) else {
                break;
            };
            match head.opcode {
                OpCode::Data(Data::Text | Data::Binary | Data::Continue) => {
                    messages.extend_from_slice(payload);
                }
                OpCode::Control(Control::Ping) => {
                    let p = payload.to_vec();
                    self.encode_into(OpCode::Control(Control::Pong), &p);
                }
                OpCode::Control(Control::Close) => {
                    self.encode_into(OpCode::Control(Control::Close), &[]);
                    open = false;
                }
                OpCode::Control(Control::Pong) => {}
                _ => return Err(WsError::Protocol),
            }
            off += hl + len;
        }
        self.raw.drain(..off.min(self.raw.len()));
        Ok(open)
    }

    /// One SIP message as a masked text frame, written to `out`.
    pub fn encode(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        self.frame(OpCode::Data(Data::Text), msg, out);
    }

    fn encode_into(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut out = std::mem::take(&mut self.control);
        self.frame(opcode, payload, &mut out);
        self.control = out;
    }

    fn frame(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let mask = self.mask.to_be_bytes();
        let head = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(mask),
        };
        // Writing into a Vec cannot fail.
        let _ = head.format(payload.len() as u64, out);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_pings_are_answered() {
        let mut c = WsClient::new(Vec::new(), 7);
        let mut out = Vec::new();
        c.encode(b"REGISTER", &mut out);
        // A client frame: masked, text, final.
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 8);
        let mask = &out[2..6];
        let plain: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i & 3])
            .collect();
        assert_eq!(plain, b"REGISTER");
        // Server frames: unmasked; a ping between two messages, the second split in two.
        let mut rx = vec![0x81, 3];
        rx.extend_from_slice(b"one");
        rx.extend_from_slice(&[0x89, 2, b'h', b'i']);
        rx.extend_from_slice(&[0x81, 3, b't']);
        c.push(&rx);
        let mut msgs = Vec::new();
        assert!(c.decode(&mut msgs).unwrap());
        assert_eq!(msgs, b"one");
        assert_eq!(c.control[0], 0x8a, "a pong");
        assert_eq!(c.buffered(), 3);
        c.push(b"wo");
        assert!(c.decode(&mut msgs).unwrap());
        assert_eq!(msgs, b"onetwo");
        c.push(&[0x88, 0]);
        assert!(!c.decode(&mut msgs).unwrap(), "closed");
    }
}
