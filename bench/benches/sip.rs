//! SIP message layer benchmarks: parse and rewrite of realistic REGISTER, INVITE with
//! SDP and 200 OK messages (as a softphone and Asterisk send them), with byte
//! throughput. Run: `cargo bench -p sipfront-bench --bench sip`.
//!
//! "parse" is `Message::parse_datagram` only (framing + header split, no typed
//! decoding); "parse+access" adds the typed accessors the proxy touches per message;
//! "rewrite" is the output step into a pre-reserved buffer.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, Criterion, Throughput};
use sipfront::sip::{
    write_forward, write_response, Contact, ForwardOps, Message, ResponseSpec, Rport, ViaSpec,
    EMPTY_HEADER, MAX_HEADERS, MAX_MESSAGE_SIZE,
};

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;rport;branch=z9hG4bK-524287-1---e8a3f2c1d4b5a697\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:1001@10.1.2.3:5060;rinstance=7ad2c5e1b3f4a6d8;transport=UDP>;expires=3600\r\n\
To: <sip:1001@example.com>\r\n\
From: <sip:1001@example.com>;tag=8f3e7a21\r\n\
Call-ID: ZDk3ZWU2YjQ1ZTI0NGE5NjBiNjQ3YjU3OTdhNDYxZTc\r\n\
CSeq: 2 REGISTER\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n\
User-Agent: Z 5.6.1 v2.10.20.1\r\n\
Authorization: Digest username=\"1001\",realm=\"example.com\",nonce=\"5f8b2c1e00000000a1b2c3d4e5f60718\",uri=\"sip:example.com\",response=\"0a4f113b9c8d7e6f5a4b3c2d1e0f9a8b\",cnonce=\"a1b2c3d4\",nc=00000001,qop=auth,algorithm=MD5\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 0\r\n\r\n";

/// The INVITE of `tests/sip_alloc.rs` (one fixture file for both).
const INVITE: &[u8] = include_bytes!("../../tests/fixtures/sip/phone-invite.sip");

const OK200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsipfront1\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-524287-1---77e2a0f3b1c4d5e6;rport=40001;received=203.0.113.9\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
Contact: <sip:1002@192.0.2.50:5060>\r\n\
To: <sip:1002@example.com>;tag=as6f1d2c3b\r\n\
From: \"Alice\" <sip:1001@example.com>;tag=3c1d9a77\r\n\
Call-ID: NTQ4ZDJkMjBmNGYzNjU3NzA0ZDI1ZjBiY2E1ZjY0YzE\r\n\
CSeq: 2 INVITE\r\n\
Server: Asterisk PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 176\r\n\r\n\
v=0\r\no=- 1863 1863 IN IP4 192.0.2.50\r\ns=Asterisk\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n\
m=audio 14062 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

const SRC: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40001);
const VIA: ViaSpec<'static> = ViaSpec {
    transport: "UDP",
    host: "192.0.2.1",
    port: 5060,
    branch: "z9hG4bKsf0001",
};

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip/parse");
    for (name, msg) in [
        ("register", REGISTER),
        ("invite_sdp", INVITE),
        ("ok200", OK200),
    ] {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = [EMPTY_HEADER; MAX_HEADERS];
                let m = Message::parse_datagram(black_box(msg), &mut headers).expect("parse");
                black_box(m.headers.len())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sip/parse+access");
    g.throughput(Throughput::Bytes(REGISTER.len() as u64));
    g.bench_function("register", |b| b.iter(|| black_box(access_register())));
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite_sdp", |b| b.iter(|| black_box(access_invite())));
    g.finish();
}

/// Parse the REGISTER and read what the proxy reads of it.
fn access_register() -> usize {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let m = Message::parse_datagram(black_box(REGISTER), &mut headers).expect("parse");
    let via = m.top_via().expect("via");
    let cred = m.authorization(false).expect("auth").expect("digest");
    let mut n = usize::from(via.rport() != Rport::Absent) + cred.username.raw().len();
    for c in m.contacts().flatten() {
        if let Contact::Addr(a) = c {
            n += a.expires().ok().flatten().unwrap_or(0) as usize;
        }
    }
    n += m.cseq().expect("cseq").seq as usize + m.call_id().expect("call-id").len();
    n + m.to().expect("to").uri.len() + m.expires().expect("expires").unwrap_or(0) as usize
}

/// Parse the INVITE and read what the proxy reads of it.
fn access_invite() -> usize {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let m = Message::parse_datagram(black_box(INVITE), &mut headers).expect("parse");
    let via = m.top_via().expect("via");
    let cred = m.authorization(true).expect("auth").expect("digest");
    via.branch().map_or(0, str::len)
        + cred.response.raw().len()
        + m.cseq().expect("cseq").seq as usize
        + m.call_id().expect("call-id").len()
        + m.from().expect("from").tag().map_or(0, str::len)
        + m.max_forwards().expect("mf").unwrap_or(0) as usize
}

fn rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip/rewrite");
    let mut out = Vec::with_capacity(MAX_MESSAGE_SIZE);

    let mut h = [EMPTY_HEADER; MAX_HEADERS];
    let reg = Message::parse_datagram(REGISTER, &mut h).expect("register");
    g.throughput(Throughput::Bytes(REGISTER.len() as u64));
    g.bench_function("register_401", |b| {
        let spec = ResponseSpec {
            code: 401,
            reason: "Unauthorized",
            to_tag: Some("sf-1a2b3c"),
            extra_headers: b"WWW-Authenticate: Digest realm=\"example.com\", nonce=\"5f8b2c1e00000000a1b2c3d4e5f60718\", qop=\"auth\", algorithm=MD5\r\n",
            body: b"",
        };
        b.iter(|| {
            write_response(black_box(&reg), &spec, &mut out).expect("401");
            black_box(out.len())
        })
    });
    g.bench_function("register_forward", |b| {
        let ops = ForwardOps {
            request_uri: Some("sip:192.0.2.50:5060"),
            add_via: Some(VIA),
            top_via_received: Some(SRC),
            decrement_max_forwards: true,
            extra_headers: b"Path: <sip:192.0.2.1;lr>\r\n",
            ..ForwardOps::default()
        };
        b.iter(|| {
            write_forward(black_box(&reg), &ops, &mut out).expect("fwd");
            black_box(out.len())
        })
    });

    let mut h = [EMPTY_HEADER; MAX_HEADERS];
    let inv = Message::parse_datagram(INVITE, &mut h).expect("invite");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite_forward", |b| {
        let ops = ForwardOps {
            request_uri: Some("sip:1002@192.0.2.50:5060"),
            add_via: Some(VIA),
            top_via_received: Some(SRC),
            record_routes: &["sip:192.0.2.1;lr"],
            decrement_max_forwards: true,
            ..ForwardOps::default()
        };
        b.iter(|| {
            write_forward(black_box(&inv), &ops, &mut out).expect("fwd");
            black_box(out.len())
        })
    });

    let mut h = [EMPTY_HEADER; MAX_HEADERS];
    let ok = Message::parse_datagram(OK200, &mut h).expect("200");
    g.throughput(Throughput::Bytes(OK200.len() as u64));
    g.bench_function("ok200_strip_via", |b| {
        let ops = ForwardOps {
            remove_top_via: true,
            ..ForwardOps::default()
        };
        b.iter(|| {
            write_forward(black_box(&ok), &ops, &mut out).expect("fwd");
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, parse, rewrite);

/// `SIP_BENCH_LOOP=N` runs N plain parses of the INVITE (`SIP_BENCH_MSG=register|ok200` for
/// the others; `SIP_BENCH_ACCESS=1`: the parse+access of the INVITE or REGISTER) and exits,
/// without criterion, so
/// `perf stat -e cycles:u,instructions:u` can count user-space cycles per parse even on a
/// loaded machine (wall-clock timings there include time spent descheduled).
fn main() {
    if let Some(n) = std::env::var("SIP_BENCH_LOOP")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let which = std::env::var("SIP_BENCH_MSG").unwrap_or_default();
        let access = std::env::var_os("SIP_BENCH_ACCESS").is_some();
        let msg = match which.as_str() {
            "register" => REGISTER,
            "ok200" => OK200,
            _ => INVITE,
        };
        let mut total = 0usize;
        for _ in 0..n {
            total += match (access, which.as_str()) {
                (true, "register") => access_register(),
                (true, _) => access_invite(),
                (false, _) => {
                    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
                    let m = Message::parse_datagram(black_box(msg), &mut headers).expect("parse");
                    black_box(m.headers.len())
                }
            };
        }
        println!("{n} parses, {total} headers");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
