use super::*;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\
    Origin: https://phone.example\r\n\r\n";

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

fn open(cfg: &WsConfig) -> WsConn {
    let mut ws = WsConn::new();
    let mut rx = UPGRADE.as_bytes().to_vec();
    let mut out = Vec::new();
    ws.decode(&mut rx, &mut out, cfg).unwrap();
    assert!(ws.is_open() && rx.is_empty());
    ws
}

fn msgs(ws: &WsConn) -> Vec<Vec<u8>> {
    messages(&ws.msgs).map(<[u8]>::to_vec).collect()
}

#[test]
fn handshake_answers_101_with_the_rfc_6455_accept_key() {
    let mut ws = WsConn::new();
    let cfg = WsConfig::default();
    let mut out = Vec::new();
    // In two pieces: nothing happens until the request is whole.
    let (a, b) = UPGRADE.as_bytes().split_at(40);
    let mut rx = a.to_vec();
    ws.decode(&mut rx, &mut out, &cfg).unwrap();
    assert!(!ws.is_open() && out.is_empty());
    rx.extend_from_slice(b);
    // A frame right behind the request is read too.
    rx.extend(client_frame(true, 1, b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
    ws.decode(&mut rx, &mut out, &cfg).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    // The RFC 6455 §1.3 example key and answer.
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains("Sec-WebSocket-Protocol: sip\r\n"));
    assert_eq!(msgs(&ws), [b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec()]);
}

#[test]
fn refused_upgrades_get_a_clear_http_answer() {
    let origins = WsConfig {
        origins: vec!["https://other.example".into()],
        ..WsConfig::default()
    };
    let cases: &[(&str, &str, &WsConfig, &str)] = &[
        (
            "no sip subprotocol",
            "sip",
            &WsConfig::default(),
            "400 Bad Request",
        ),
        ("another origin", "", &origins, "403 Forbidden"),
        (
            "old version",
            "Version: 13",
            &WsConfig::default(),
            "426 Upgrade Required",
        ),
        (
            "not an upgrade",
            "Upgrade: websocket",
            &WsConfig::default(),
            "426 Upgrade Required",
        ),
    ];
    for (what, cut, cfg, status) in cases {
        let req = match *what {
            "no sip subprotocol" => UPGRADE.replace("Protocol: sip", "Protocol: chat"),
            "old version" => UPGRADE.replace(cut, "Version: 8"),
            "not an upgrade" => UPGRADE.replace(cut, "Upgrade: h2c"),
            _ => UPGRADE.to_owned(),
        };
        let mut ws = WsConn::new();
        let mut rx = req.into_bytes();
        let mut out = Vec::new();
        assert_eq!(
            ws.decode(&mut rx, &mut out, cfg),
            Err(WsEnd::Refused),
            "{what}"
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{what}: {text}"
        );
        assert!(!ws.is_open());
    }
    // An allowed origin passes.
    let ok = WsConfig {
        origins: vec![
            "https://other.example".into(),
            "HTTPS://phone.example".into(),
        ],
        ..WsConfig::default()
    };
    open(&ok);
    // Garbage and endless headers are refused too.
    for rx in [b"\x16\x03\x01 TLS hello".to_vec(), {
        let mut v = b"GET / HTTP/1.1\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 1));
        v
    }] {
        let mut rx = rx;
        let mut out = Vec::new();
        assert_eq!(
            WsConn::new().decode(&mut rx, &mut out, &ok),
            Err(WsEnd::Refused)
        );
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}

#[test]
fn text_binary_fragments_and_control_frames() {
    let cfg = WsConfig::default();
    let mut ws = open(&cfg);
    let mut rx = Vec::new();
    rx.extend(client_frame(true, 1, b"one"));
    rx.extend(client_frame(true, 2, b"two"));
    rx.extend(client_frame(false, 1, b"th"));
    rx.extend(client_frame(true, 9, b"hi")); // a ping between fragments
    rx.extend(client_frame(false, 0, b"re"));
    rx.extend(client_frame(true, 0, b"e"));
    rx.extend(client_frame(true, 1, b"\r\n\r\n")); // keepalive: dropped
    rx.extend(client_frame(true, 10, b"")); // an unsolicited pong: ignored
    let tail = client_frame(true, 1, b"four");
    rx.extend_from_slice(&tail[..3]);
    let mut out = Vec::new();
    ws.decode(&mut rx, &mut out, &cfg).unwrap();
    assert_eq!(msgs(&ws), [&b"one"[..], b"two", b"three"]);
    assert_eq!(out, [0x8a, 2, b'h', b'i'], "the ping's pong, unmasked");
    assert!(!ws.mid_message());
    assert_eq!(rx.len(), 3, "a partial frame waits");
    rx.extend_from_slice(&tail[3..]);
    ws.decode(&mut rx, &mut out, &cfg).unwrap();
    assert_eq!(msgs(&ws).last().unwrap(), b"four");
    // A close is answered with the same code, and ends the connection.
    let mut out = Vec::new();
    let mut rx = client_frame(true, 8, &1000u16.to_be_bytes());
    assert_eq!(ws.decode(&mut rx, &mut out, &cfg), Err(WsEnd::Closed));
    assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
}

#[test]
fn protocol_errors_and_limits_close_with_a_status_code() {
    let cfg = WsConfig {
        max_frame_bytes: 200,
        max_message_bytes: 1024,
        ..WsConfig::default()
    };
    let unmasked = {
        let mut f = vec![0x81, 3];
        f.extend_from_slice(b"abc");
        f
    };
    let mut reserved = client_frame(true, 1, b"x");
    reserved[0] |= 0x40;
    let big_ping = client_frame(true, 9, &[0; 126]);
    let fragmented_ping = client_frame(false, 9, b"x");
    let lone_continuation = client_frame(true, 0, b"x");
    let bad_utf8 = client_frame(true, 1, &[0xff, 0xfe]);
    let mut interleaved = client_frame(false, 1, b"a");
    interleaved.extend(client_frame(true, 1, b"b"));
    let mut too_long = Vec::new();
    for _ in 0..6 {
        too_long.extend(client_frame(
            false,
            if too_long.is_empty() { 1 } else { 0 },
            &[b'a'; 200],
        ));
    }
    let cases: Vec<(&str, Vec<u8>, WsEnd, u16)> = vec![
        ("unmasked", unmasked, WsEnd::Protocol, 1002),
        ("reserved bit", reserved, WsEnd::Protocol, 1002),
        (
            "reserved opcode",
            client_frame(true, 3, b"x"),
            WsEnd::Protocol,
            1002,
        ),
        ("ping over 125 bytes", big_ping, WsEnd::Protocol, 1002),
        ("fragmented ping", fragmented_ping, WsEnd::Protocol, 1002),
        (
            "continuation of nothing",
            lone_continuation,
            WsEnd::Protocol,
            1002,
        ),
        (
            "new message inside a fragmented one",
            interleaved,
            WsEnd::Protocol,
            1002,
        ),
        ("invalid UTF-8 text", bad_utf8, WsEnd::Protocol, 1007),
        (
            "frame over the limit",
            client_frame(true, 2, &[0; 201]),
            WsEnd::TooLarge,
            1009,
        ),
        ("message over the limit", too_long, WsEnd::TooLarge, 1009),
    ];
    for (what, mut rx, end, code) in cases {
        let mut ws = open(&cfg);
        let mut out = Vec::new();
        assert_eq!(ws.decode(&mut rx, &mut out, &cfg), Err(end), "{what}");
        assert_eq!(out[..2], [0x88, 2], "{what}: a close frame");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), code, "{what}");
    }
    // A huge announced length is refused from its header, before any payload arrives.
    let mut ws = open(&cfg);
    let mut rx = vec![0x82, 0x80 | 127];
    rx.extend_from_slice(&(1u64 << 40).to_be_bytes());
    rx.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        ws.decode(&mut rx, &mut Vec::new(), &cfg),
        Err(WsEnd::TooLarge)
    );
}

#[test]
fn server_frame_headers() {
    let head = |len| {
        let mut buf = [0u8; MAX_HEADER];
        let n = frame_header(&mut buf, len);
        buf[..n].to_vec()
    };
    assert_eq!(head(5), [0x81, 5]);
    assert_eq!(head(300), [0x81, 126, 1, 44]);
    assert_eq!(head(70_000), [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    let mut buf = [0u8; MAX_HEADER];
    let n = ping_header(&mut buf);
    assert_eq!(buf[..n], [0x89, 0]);
}
