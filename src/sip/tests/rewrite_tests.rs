//! Rewriter cases: each builds an output from a received message and compares the exact
//! bytes, so any re-serialisation of untouched text shows up as a diff.

use super::super::*;
use std::net::{IpAddr, Ipv4Addr};

fn forward(input: &[u8], ops: &ForwardOps) -> Result<String, RewriteError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let m = Message::parse_datagram(input, &mut headers).expect("parse");
    let mut out = Vec::with_capacity(MAX_MESSAGE_SIZE);
    write_forward(&m, ops, &mut out)?;
    // Every output must parse again.
    let mut h2 = [EMPTY_HEADER; MAX_HEADERS];
    Message::parse_datagram(&out, &mut h2).expect("output parses");
    Ok(String::from_utf8(out).expect("utf8"))
}

const INVITE: &[u8] = b"INVITE sip:200@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:proxy.example.com;lr>, <sip:asterisk.example.com;lr>\r\n\
From: <sip:100@example.com>;tag=1\r\n\
To: <sip:200@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn forward_invite_all_ops() {
    let ops = ForwardOps {
        request_uri: Some("sip:200@192.0.2.50:5060"),
        add_via: Some(ViaSpec {
            transport: "UDP",
            host: "192.0.2.1",
            port: 5060,
            branch: "z9hG4bKp1",
        }),
        top_via_received: Some((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 40000)),
        remove_routes: 1,
        record_routes: &["sip:192.0.2.1;lr"],
        decrement_max_forwards: true,
        extra_headers: b"X-Auth-User: 100\r\n",
        ..ForwardOps::default()
    };
    let want = "INVITE sip:200@192.0.2.50:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;received=203.0.113.7;rport=40000\r\n\
Max-Forwards: 69\r\n\
Route: <sip:asterisk.example.com;lr>\r\n\
From: <sip:100@example.com>;tag=1\r\n\
To: <sip:200@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
X-Auth-User: 100\r\n\
\r\n\
v=0\n";
    assert_eq!(forward(INVITE, &ops).unwrap(), want);
}

#[test]
fn unchanged_copy_is_identical() {
    assert_eq!(
        forward(INVITE, &ForwardOps::default()).unwrap().as_bytes(),
        INVITE
    );
}

#[test]
fn remove_top_via_single_and_comma() {
    let resp: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p.example.com;branch=z9hG4bKp\r\n\
Via: SIP/2.0/UDP phone.example.com;branch=z9hG4bKq\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n";
    let ops = ForwardOps {
        remove_top_via: true,
        ..ForwardOps::default()
    };
    assert_eq!(
        forward(resp, &ops).unwrap(),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP phone.example.com;branch=z9hG4bKq\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n"
    );
    let folded: &[u8] = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP p.example.com;branch=z9hG4bKp ,\r\n SIP/2.0/UDP phone.example.com;branch=z9hG4bKq\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        forward(folded, &ops).unwrap(),
        "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP phone.example.com;branch=z9hG4bKq\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn max_forwards_absent_zero_and_routes() {
    let no_mf: &[u8] = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRoute: <sip:only.example.com;lr>\r\nContent-Length: 0\r\n\r\n";
    let ops = ForwardOps {
        decrement_max_forwards: true,
        remove_routes: 1,
        push_routes: &["sip:r1.example.com;lr", "sip:r2.example.com;lr"],
        ..ForwardOps::default()
    };
    assert_eq!(
        forward(no_mf, &ops).unwrap(),
        "BYE sip:a@b SIP/2.0\r\nRoute: <sip:r1.example.com;lr>\r\nRoute: <sip:r2.example.com;lr>\r\n\
Max-Forwards: 69\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    );
    let zero: &[u8] = b"BYE sip:a@b SIP/2.0\r\nMax-Forwards: 0\r\n\r\n";
    assert_eq!(forward(zero, &ops), Err(RewriteError::MaxForwardsExhausted));
}

#[test]
fn double_record_route_and_removing_two_routes() {
    // RFC 5658: two Record-Routes, top first; both of our Routes removed again, whether
    // they share a line or not.
    let ops = ForwardOps {
        record_routes: &["sip:out.example;lr;r2=on", "sip:in.example;lr;r2=on"],
        ..ForwardOps::default()
    };
    let out = forward(INVITE, &ops).unwrap();
    assert!(out.starts_with(
        "INVITE sip:200@example.com SIP/2.0\r\nRecord-Route: <sip:out.example;lr;r2=on>\r\n\
Record-Route: <sip:in.example;lr;r2=on>\r\nVia:"
    ));
    let two = ForwardOps {
        remove_routes: 2,
        ..ForwardOps::default()
    };
    let three: &[u8] = b"BYE sip:a@b SIP/2.0\r\nRoute: <sip:p1;lr>, <sip:p2;lr>, <sip:next;lr>\r\nCall-ID: x\r\n\r\n";
    assert_eq!(
        forward(three, &two).unwrap(),
        "BYE sip:a@b SIP/2.0\r\nRoute: <sip:next;lr>\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    );
    let lines: &[u8] = b"BYE sip:a@b SIP/2.0\r\nRoute: <sip:p1;lr>\r\nRoute: <sip:p2;lr>, <sip:next;lr>\r\nCall-ID: x\r\n\r\n";
    assert_eq!(
        forward(lines, &two).unwrap(),
        "BYE sip:a@b SIP/2.0\r\nRoute: <sip:next;lr>\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    );
    let only_two: &[u8] =
        b"BYE sip:a@b SIP/2.0\r\nRoute: <sip:p1;lr>\r\nRoute: <sip:p2;lr>\r\nCall-ID: x\r\n\r\n";
    assert_eq!(
        forward(only_two, &two).unwrap(),
        "BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    );
    // INVITE's Route line holds both: the whole line goes.
    let out = forward(INVITE, &two).unwrap();
    assert!(!out.contains("Route:"), "{out}");
    let too_many = ForwardOps {
        remove_routes: 3,
        ..ForwardOps::default()
    };
    assert_eq!(
        forward(three, &too_many),
        Err(RewriteError::BadInput("remove_routes"))
    );
}

#[test]
fn body_and_content_length() {
    let no_cl: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: m\r\n\r\nhi";
    assert_eq!(
        forward(no_cl, &ForwardOps::default()).unwrap(),
        "MESSAGE sip:a@b SIP/2.0\r\nCall-ID: m\r\nContent-Length: 2\r\n\r\nhi"
    );
    let ops = ForwardOps {
        body: Some(b"new body"),
        ..ForwardOps::default()
    };
    assert_eq!(
        forward(INVITE, &ops).unwrap().split("\r\n\r\n").collect::<Vec<_>>(),
        [
            "INVITE sip:200@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport\r\nMax-Forwards: 70\r\n\
Route: <sip:proxy.example.com;lr>, <sip:asterisk.example.com;lr>\r\nFrom: <sip:100@example.com>;tag=1\r\nTo: <sip:200@example.com>\r\n\
Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 8",
            "new body"
        ]
    );
}

#[test]
fn bad_inputs() {
    let cases: &[(ForwardOps, RewriteError)] = &[
        (
            ForwardOps {
                extra_headers: b"X: 1",
                ..ForwardOps::default()
            },
            RewriteError::BadExtraHeaders,
        ),
        (
            ForwardOps {
                extra_headers: b"X: 1\nY: 2\r\n",
                ..ForwardOps::default()
            },
            RewriteError::BadExtraHeaders,
        ),
        (
            ForwardOps {
                request_uri: Some("sip:a b"),
                ..ForwardOps::default()
            },
            RewriteError::BadInput("request_uri"),
        ),
        (
            ForwardOps {
                record_routes: &["sip:x>\r\nEvil: 1"],
                ..ForwardOps::default()
            },
            RewriteError::BadInput("record_route"),
        ),
        (
            ForwardOps {
                add_via: Some(ViaSpec {
                    transport: "UDP",
                    host: "h",
                    port: 1,
                    branch: "a;b",
                }),
                ..ForwardOps::default()
            },
            RewriteError::BadInput("add_via.branch"),
        ),
        (
            ForwardOps {
                remove_top_via: true,
                top_via_received: Some(("192.0.2.1".parse().unwrap(), 1)),
                ..ForwardOps::default()
            },
            RewriteError::Conflict("remove_top_via with top_via_received"),
        ),
    ];
    for (ops, err) in cases {
        assert_eq!(forward(INVITE, ops), Err(*err));
    }
    let resp: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let ops = ForwardOps {
        request_uri: Some("sip:x"),
        ..ForwardOps::default()
    };
    assert_eq!(forward(resp, &ops), Err(RewriteError::NotARequest));
    let ops = ForwardOps {
        remove_top_via: true,
        ..ForwardOps::default()
    };
    assert_eq!(
        forward(resp, &ops),
        Err(RewriteError::Parse(ParseError::MissingHeader("Via")))
    );
}

#[test]
fn ipv6_via_is_bracketed() {
    let ops = ForwardOps {
        add_via: Some(ViaSpec {
            transport: "UDP",
            host: "2001:db8::1",
            port: 5060,
            branch: "z9hG4bKv6",
        }),
        top_via_received: Some(("2001:db8::99".parse().unwrap(), 5062)),
        ..ForwardOps::default()
    };
    let out = forward(INVITE, &ops).unwrap();
    assert!(
        out.contains("Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6\r\n"),
        "{out}"
    );
    assert!(
        out.contains(";branch=z9hG4bKabc;received=2001:db8::99;rport=5062\r\n"),
        "{out}"
    );
}

fn respond(input: &[u8], spec: &ResponseSpec) -> Result<String, RewriteError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let m = Message::parse_datagram(input, &mut headers).expect("parse");
    let mut out = Vec::with_capacity(MAX_MESSAGE_SIZE);
    write_response(&m, spec, &mut out)?;
    Ok(String::from_utf8(out).expect("utf8"))
}

#[test]
fn response_with_to_tag() {
    let req: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport\r\n\
v: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bK0\r\nMax-Forwards: 70\r\nt: <sip:100@example.com>\r\nFrom: <sip:100@example.com>;tag=9\r\n\
Call-ID: r1\r\nCSeq: 3 REGISTER\r\nContact: <sip:100@10.0.0.5>\r\nContent-Length: 0\r\n\r\n";
    let spec = ResponseSpec {
        code: 401,
        reason: "Unauthorized",
        to_tag: Some("srv1"),
        extra_headers: b"WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n\"\r\n",
        body: b"",
    };
    assert_eq!(
        respond(req, &spec).unwrap(),
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport\r\nv: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bK0\r\n\
t: <sip:100@example.com>;tag=srv1\r\nFrom: <sip:100@example.com>;tag=9\r\nCall-ID: r1\r\nCSeq: 3 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n\"\r\nContent-Length: 0\r\n\r\n"
    );
    let tagged: &[u8] = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@b>;tag=x\r\nFrom: <sip:a@b>;tag=y\r\n\
Call-ID: q\r\nCSeq: 4 BYE\r\n\r\n";
    let spec = ResponseSpec {
        code: 200,
        reason: "OK",
        to_tag: Some("zzz"),
        body: b"ok",
        ..ResponseSpec::default()
    };
    assert_eq!(
        respond(tagged, &spec).unwrap(),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@b>;tag=x\r\nFrom: <sip:a@b>;tag=y\r\n\
Call-ID: q\r\nCSeq: 4 BYE\r\nContent-Length: 2\r\n\r\nok"
    );
    let spec = ResponseSpec {
        code: 700,
        reason: "X",
        ..ResponseSpec::default()
    };
    assert_eq!(respond(tagged, &spec), Err(RewriteError::BadInput("code")));
    let no_callid: &[u8] = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:b@b>\r\nFrom: <sip:a@b>\r\nCSeq: 1 BYE\r\n\r\n";
    let spec = ResponseSpec {
        code: 400,
        reason: "Bad Request",
        ..ResponseSpec::default()
    };
    assert_eq!(
        respond(no_callid, &spec),
        Err(RewriteError::Parse(ParseError::MissingHeader("Call-ID")))
    );
}
