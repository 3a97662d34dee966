//! Replays every input kept under `tests/fixtures/fuzz-regressions/` through every SIP
//! entry point the fuzz targets cover (message parse + accessors, URI / name-addr / Via,
//! Digest, forward and response rewriting). Passing means: no panic, and rewritten output
//! parses again.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use sipfront::sip::{
    parse_digest, write_forward, write_response, Contact, ForwardOps, Message, NameAddr,
    ParseError, ResponseSpec, Uri, Via, ViaSpec, EMPTY_HEADER, MAX_HEADERS, MAX_MESSAGE_SIZE,
};

fn replay(data: &[u8]) {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    if let Ok(m) = Message::parse_datagram(data, &mut headers) {
        if let Some(u) = m.request_uri() {
            let _ = Uri::parse(u);
        }
        let _ = m.vias().count();
        let _ = (
            m.call_id(),
            m.cseq(),
            m.from(),
            m.to(),
            m.max_forwards(),
            m.expires(),
        );
        for c in m.contacts().flatten() {
            if let Contact::Addr(a) = c {
                let _ = (a.uri(), a.q(), a.expires());
            }
        }
        let _ = m
            .authorizations(false)
            .chain(m.authorizations(true))
            .count();
        for flags in [0u8, 0xff, 0b1011_0101, 0b0100_1010] {
            rewrite(&m, flags);
        }
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let _ = Message::parse_stream(data, &mut headers);
    let _ = parse_digest(data);
    let _ = sipfront::sip::peek_call_id(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Uri::parse(s);
        let _ = NameAddr::parse(s);
        let _ = Via::parse(s);
    }
}

fn rewrite(m: &Message, flags: u8) {
    let bit = |i: u8| flags & (1 << i) != 0;
    let ops = ForwardOps {
        request_uri: bit(0).then_some("sip:target@192.0.2.50:5060"),
        remove_top_via: bit(1),
        add_via: bit(2).then_some(ViaSpec {
            transport: "UDP",
            host: "192.0.2.1",
            port: 5060,
            branch: "z9hG4bKf",
        }),
        top_via_received: (bit(3) && !bit(1))
            .then_some((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 4000)),
        remove_routes: u8::from(bit(4)) + u8::from(bit(4) && bit(5)),
        push_routes: if bit(5) {
            &["sip:r.example.com;lr"]
        } else {
            &[]
        },
        record_routes: match (bit(6), bit(5)) {
            (false, _) => &[],
            (true, false) => &["sip:192.0.2.1;lr"],
            (true, true) => &["sip:192.0.2.1;lr;r2=on", "sip:198.51.100.1;lr;r2=on"],
        },
        decrement_max_forwards: bit(7),
        drop_lines: &[],
        extra_headers: b"X-Fuzz: 1\r\n",
        body: None,
    };
    let mut out = Vec::with_capacity(MAX_MESSAGE_SIZE);
    if write_forward(m, &ops, &mut out).is_ok() {
        reparse(&out);
    }
    let spec = ResponseSpec {
        code: 401,
        reason: "Unauthorized",
        to_tag: Some("t1"),
        ..ResponseSpec::default()
    };
    if write_response(m, &spec, &mut out).is_ok() {
        reparse(&out);
    }
}

fn reparse(out: &[u8]) {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match Message::parse_datagram(out, &mut headers) {
        Ok(_) | Err(ParseError::TooManyHeaders) => {}
        Err(e) => panic!(
            "rewritten output does not parse: {e:?}\n{}",
            String::from_utf8_lossy(out)
        ),
    }
}

#[test]
fn replay_fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("regression dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        replay(&std::fs::read(&path).expect("read"));
        n += 1;
    }
    eprintln!("replayed {n} fuzz regression inputs");
}

#[test]
fn replay_rfc4475_through_all_entry_points() {
    // The torture messages double as a seed corpus; run them through the same paths.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475");
    for entry in std::fs::read_dir(&dir).expect("rfc4475 dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sip") {
            replay(&std::fs::read(&path).expect("read"));
        }
    }
}
