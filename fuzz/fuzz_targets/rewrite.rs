//! Forward and response rewriting of any parsable datagram; every output must parse again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipfront_fuzz::sip::{
    write_forward, write_response, ForwardOps, Message, ResponseSpec, ViaSpec, EMPTY_HEADER,
    MAX_HEADERS, MAX_MESSAGE_SIZE,
};
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(m) = Message::parse_datagram(msg, &mut headers) else {
        return;
    };
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
    if write_forward(&m, &ops, &mut out).is_ok() {
        let mut h2 = [EMPTY_HEADER; MAX_HEADERS];
        let again = Message::parse_datagram(&out, &mut h2);
        assert!(
            matches!(
                again,
                Ok(_) | Err(sipfront_fuzz::sip::ParseError::TooManyHeaders)
            ),
            "{:?}",
            again.err()
        );
    }
    let spec = ResponseSpec {
        code: 401,
        reason: "Unauthorized",
        to_tag: Some("t1"),
        extra_headers: b"",
        body: b"",
    };
    if write_response(&m, &spec, &mut out).is_ok() {
        let mut h2 = [EMPTY_HEADER; MAX_HEADERS];
        let again = Message::parse_datagram(&out, &mut h2);
        assert!(
            matches!(
                again,
                Ok(_) | Err(sipfront_fuzz::sip::ParseError::TooManyHeaders)
            ),
            "{:?}",
            again.err()
        );
    }
});
