//! Table-driven tests of message framing and the typed accessors, in the style of
//! httparse's `req!` macro: each case is a name, the raw bytes and either a closure
//! checking the parsed message or the expected error.

use super::*;

macro_rules! req {
    ($name:ident, $buf:expr, |$msg:ident| $body:expr) => {
        #[test]
        fn $name() {
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            let buf: &[u8] = $buf;
            let $msg = Message::parse_datagram(buf, &mut headers)
                .unwrap_or_else(|e| panic!("parse failed: {e:?}"));
            $body
        }
    };
    ($name:ident, $buf:expr, Err($err:expr)) => {
        #[test]
        fn $name() {
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            let buf: &[u8] = $buf;
            assert_eq!(Message::parse_datagram(buf, &mut headers).err(), Some($err));
        }
    };
}

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:100@example.com>\r\n\
From: \"Desk 100\" <sip:100@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:100@192.0.2.10:5060;transport=udp>;expires=3600;q=0.8, <sip:100@198.51.100.1>\r\n\
Expires: 7200\r\n\
Authorization: Digest username=\"100\", realm=\"example.com\", nonce=\"abc\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n\
Supported: path, outbound\r\n\
User-Agent: Phone/1.0\r\n\
Content-Length: 0\r\n\r\n";

req!(register_basics, REGISTER, |m| {
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.request_uri(), Some("sip:example.com"));
    assert_eq!(m.headers.len(), 12);
    assert_eq!(m.call_id(), Ok("843817637684230@998sdasdh09"));
    assert_eq!(
        m.cseq(),
        Ok(CSeq {
            seq: 1826,
            method: Method::Register
        })
    );
    assert_eq!(m.max_forwards(), Ok(Some(70)));
    assert_eq!(m.expires(), Ok(Some(7200)));
    assert_eq!(m.content_length(), Ok(Some(0)));
    assert_eq!(m.from().unwrap().tag(), Some("456248"));
    assert_eq!(m.from().unwrap().display, Some(&b"Desk 100"[..]));
    assert_eq!(m.to().unwrap().tag(), None);
    assert_eq!(m.user_agent(), Some("Phone/1.0"));
    let tags: Vec<_> = m.supported().map(Result::unwrap).collect();
    assert_eq!(tags, ["path", "outbound"]);
    let via = m.top_via().unwrap();
    assert_eq!(
        (via.host, via.port, via.rport()),
        ("192.0.2.10", Some(5060), Rport::Empty)
    );
    assert_eq!(
        &m.buf[via.span.range()],
        &b"SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK776asdhds"[..]
    );
    let contacts: Vec<_> = m.contacts().map(Result::unwrap).collect();
    assert_eq!(contacts.len(), 2);
    let Contact::Addr(c0) = contacts[0] else {
        panic!("star")
    };
    assert_eq!((c0.expires(), c0.q()), (Ok(Some(3600)), Some(800)));
    assert_eq!(c0.uri().unwrap().transport(), Some("udp"));
    let d = m.authorization(false).unwrap().unwrap();
    assert!(d.username.eq_str("100"));
    assert!(m.authorization(true).is_none());
    assert!(m.body.is_empty());
});

req!(
    compact_forms_and_folding,
    b"INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n\
V: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n\
f: <sip:alice@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\ni: abc@host\r\n\
CSEQ: 1\r\n  INVITE\r\nm: *\r\nl: 4\r\nc: text/plain\r\nk: 100rel\r\n\r\nbody",
    |m| {
        let hosts: Vec<_> = m.vias().map(|v| v.unwrap().host).collect();
        assert_eq!(hosts, ["a.example.com", "b.example.com", "c.example.com"]);
        assert_eq!(m.call_id(), Ok("abc@host"));
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
        assert_eq!(m.contacts().next(), Some(Ok(Contact::Star)));
        assert_eq!(m.body, b"body");
        assert_eq!(m.content_type(), Some("text/plain"));
        assert_eq!(
            m.header(HeaderName::Supported).map(|h| h.raw_name),
            Some("k")
        );
        assert_eq!(m.headers_named(HeaderName::Via).count(), 2);
    }
);

req!(response_with_record_route,
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p.example.com;branch=z9hG4bKx\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRecord-Route: <sip:p3.example.com;lr>\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\n\r\n",
    |m| {
        assert_eq!(m.status_code(), Some(200));
        assert_eq!(m.method(), None);
        let rr: Vec<_> = m.record_routes().map(|r| r.unwrap().uri).collect();
        assert_eq!(rr, ["sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com;lr"]);
        assert!(m.record_routes().all(|r| r.unwrap().uri().unwrap().lr()));
        assert_eq!(m.content_length(), Ok(None));
    });

req!(
    leading_crlf_and_bare_lf,
    b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\nCall-ID: y\n\n",
    |m| {
        assert_eq!(m.method(), Some(Method::Options));
        assert_eq!(m.call_id(), Ok("y"));
        assert_eq!(m.start_line.start, 4);
    }
);

req!(
    missing_cl_takes_rest_of_datagram,
    b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: z\r\n\r\nhello",
    |m| {
        assert_eq!(m.body, b"hello");
    }
);

req!(
    cl_bounds_body,
    b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhello",
    |m| {
        assert_eq!(m.body, b"he");
    }
);

req!(empty_reason, b"SIP/2.0 100 \r\n\r\n", |m| {
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 100,
            reason: ""
        }
    );
});

req!(unknown_method, b"FOO sip:a@b SIP/2.0\r\n\r\n", |m| {
    assert_eq!(m.method(), Some(Method::Other("FOO")));
});

req!(err_empty, b"\r\n\r\n", Err(ParseError::Empty));
req!(
    err_truncated_head,
    b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
    Err(ParseError::Truncated)
);
req!(
    err_truncated_body,
    b"INVITE sip:a@b SIP/2.0\r\nl: 10\r\n\r\nabc",
    Err(ParseError::BodyTruncated)
);
req!(
    err_version,
    b"INVITE sip:a@b SIP/7.0\r\n\r\n",
    Err(ParseError::BadVersion)
);
req!(
    err_start_line,
    b"INVITE  sip:a@b SIP/2.0\r\n\r\n",
    Err(ParseError::BadStartLine)
);
req!(
    err_trailing_ws,
    b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
    Err(ParseError::BadStartLine)
);
req!(
    err_lws_uri,
    b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
    Err(ParseError::BadUri)
);
req!(
    err_angle_uri,
    b"INVITE <sip:a@b> SIP/2.0\r\n\r\n",
    Err(ParseError::BadUri)
);
req!(
    err_method,
    b"INV@TE sip:a@b SIP/2.0\r\n\r\n",
    Err(ParseError::BadMethod)
);
req!(
    err_status,
    b"SIP/2.0 4294967301 big\r\n\r\n",
    Err(ParseError::BadStatusCode)
);
req!(
    err_status_range,
    b"SIP/2.0 099 low\r\n\r\n",
    Err(ParseError::BadStatusCode)
);
req!(
    err_header_no_colon,
    b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n",
    Err(ParseError::BadHeader)
);
req!(
    err_header_space_name,
    b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
    Err(ParseError::BadHeader)
);
req!(
    err_leading_continuation,
    b"INVITE sip:a@b SIP/2.0\r\n x: y\r\n\r\n",
    Err(ParseError::BadHeader)
);
req!(
    err_cl_negative,
    b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
    Err(ParseError::BadContentLength)
);
req!(
    err_cl_huge,
    b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    Err(ParseError::BadContentLength)
);
req!(
    err_cl_too_large,
    b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n",
    Err(ParseError::TooLarge)
);
req!(
    err_cl_dup,
    b"INVITE sip:a@b SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n",
    Err(ParseError::DuplicateContentLength)
);

#[test]
fn uri_too_long() {
    let mut m = b"INVITE sip:".to_vec();
    m.resize(m.len() + MAX_URI_LEN, b'a');
    m.extend_from_slice(b"@b SIP/2.0\r\n\r\n");
    let mut headers = [EMPTY_HEADER; 4];
    assert_eq!(
        Message::parse_datagram(&m, &mut headers).err(),
        Some(ParseError::UriTooLong)
    );
}

#[test]
fn too_many_headers_and_too_large() {
    let mut m = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for _ in 0..5 {
        m.extend_from_slice(b"X: y\r\n");
    }
    m.extend_from_slice(b"\r\n");
    let mut small = [EMPTY_HEADER; 4];
    assert_eq!(
        Message::parse_datagram(&m, &mut small).err(),
        Some(ParseError::TooManyHeaders)
    );
    let mut big = vec![EMPTY_HEADER; MAX_HEADERS + 10];
    let mut many = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for _ in 0..MAX_HEADERS + 1 {
        many.extend_from_slice(b"X: y\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        Message::parse_datagram(&many, &mut big).err(),
        Some(ParseError::TooManyHeaders)
    );
    let huge = vec![b'a'; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        Message::parse_datagram(&huge, &mut big).err(),
        Some(ParseError::TooLarge)
    );
    assert_eq!(
        Message::parse_stream(&huge, &mut big).err(),
        Some(ParseError::TooLarge)
    );
}

#[test]
fn stream_prefixes_are_partial() {
    let full: &[u8] =
        b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: s\r\nContent-Length: 5\r\n\r\nhelloNEXT";
    let msg_len = full.len() - 4;
    for cut in 1..msg_len {
        let mut headers = [EMPTY_HEADER; 8];
        assert_eq!(
            Message::parse_stream(&full[..cut], &mut headers).map(|s| s.is_complete()),
            Ok(false),
            "cut {cut}"
        );
    }
    let mut headers = [EMPTY_HEADER; 8];
    let Status::Complete((m, used)) = Message::parse_stream(full, &mut headers).unwrap() else {
        panic!("partial")
    };
    assert_eq!((used, m.body), (msg_len, &b"hello"[..]));
    let mut headers = [EMPTY_HEADER; 8];
    assert_eq!(
        Message::parse_stream(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n", &mut headers).err(),
        Some(ParseError::MissingHeader("Content-Length"))
    );
}

#[test]
fn accessor_errors() {
    let buf: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nMax-Forwards: 300\r\nExpires: 10000000000000000000\r\n\
CSeq: 2147483648 INVITE\r\nFrom: \"unterminated <sip:a@b>\r\nVia: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n\r\n";
    let mut headers = [EMPTY_HEADER; 8];
    let m = Message::parse_datagram(buf, &mut headers).unwrap();
    assert_eq!(m.max_forwards(), Err(ParseError::BadMaxForwards));
    assert_eq!(m.expires(), Err(ParseError::BadExpires));
    assert_eq!(m.cseq(), Err(ParseError::BadCSeq));
    assert_eq!(m.from(), Err(ParseError::BadNameAddr));
    assert_eq!(m.to(), Err(ParseError::MissingHeader("To")));
    assert_eq!(m.call_id(), Err(ParseError::MissingHeader("Call-ID")));
    assert_eq!(m.top_via(), Err(ParseError::BadVia));
}

mod rewrite_tests;

// A Latin-1 display name (not UTF-8) makes the head non-UTF-8: every header still parses
// (each value is then checked on its own); the display name is kept as bytes, and a header
// the proxy only passes on (User-Agent) is not text.
req!(
    latin1_display_name_is_accepted,
    b"INVITE sip:600@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKlat1\r\n\
From: \"M\xfcller\" <sip:100@example.com>;tag=1\r\n\
To: <sip:600@example.com>\r\n\
Call-ID: latin1@x\r\n\
CSeq: 1 INVITE\r\n\
User-Agent: caf\xe9\r\n\
Content-Length: 0\r\n\r\n",
    |m| {
        assert!(m.head_text.is_none());
        assert_eq!(m.call_id(), Ok("latin1@x"));
        assert_eq!(m.top_via().map(|v| v.branch()), Ok(Some("z9hG4bKlat1")));
        assert_eq!(m.to().map(|t| t.uri), Ok("sip:600@example.com"));
        let from = m.from().unwrap();
        assert_eq!(from.display, Some(&b"M\xfcller"[..]));
        assert_eq!((from.uri, from.tag()), ("sip:100@example.com", Some("1")));
        assert_eq!(m.user_agent(), None);
    }
);

req!(utf8_head_is_validated_once, REGISTER, |m| {
    assert_eq!(m.head_text.map(str::len), Some(m.head_len));
    assert_eq!(m.user_agent(), Some("Phone/1.0"));
});
