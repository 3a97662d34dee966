//! Proves that parsing and rewriting allocate nothing on the heap.
//!
//! A counting `#[global_allocator]` wraps `System`; counting is switched on per thread
//! (a `const`-initialised thread-local, which itself never allocates), so allocations made
//! by the test harness on other threads do not disturb the count. Output buffers are
//! reserved before counting starts, as a worker does once at start-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use sipfront::sip::{
    write_forward, write_response, Contact, ForwardOps, HeaderName, Message, ResponseSpec, ViaSpec,
    EMPTY_HEADER, MAX_HEADERS, MAX_MESSAGE_SIZE,
};

struct Counting;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with` never panics during thread teardown.
    let _ = ENABLED.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with counting on and returns how many allocations it made.
fn count_allocs(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    ENABLED.with(|e| e.set(true));
    f();
    ENABLED.with(|e| e.set(false));
    COUNT.with(|c| c.get())
}

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;rport;branch=z9hG4bK-524287-1---e8a3f2c1d4b5a697\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:1001@10.1.2.3:5060;rinstance=7ad2c5e1b3f4a6d8;transport=UDP>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000000000001>\"\r\n\
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

const INVITE: &[u8] = include_bytes!("fixtures/sip/phone-invite.sip");

const OK_RR: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsipfront1\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-524287-1---77e2a0f3b1c4d5e6;rport=40001;received=203.0.113.9\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
Contact: <sip:1002@192.0.2.50:5060>\r\n\
To: <sip:1002@example.com>;tag=as6f1d2c3b\r\n\
From: \"Alice\" <sip:1001@example.com>;tag=3c1d9a77\r\n\
Call-ID: NTQ4ZDJkMjBmNGYzNjU3NzA0ZDI1ZjBiY2E1ZjY0YzE\r\n\
CSeq: 2 INVITE\r\n\
Server: Asterisk PBX 20.5.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

const BYE: &[u8] = b"BYE sip:1002@192.0.2.50:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-524287-1---0d9c8b7a;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:192.0.2.1;lr>\r\n\
To: <sip:1002@example.com>;tag=as6f1d2c3b\r\n\
From: \"Alice\" <sip:1001@example.com>;tag=3c1d9a77\r\n\
Call-ID: NTQ4ZDJkMjBmNGYzNjU3NzA0ZDI1ZjBiY2E1ZjY0YzE\r\n\
CSeq: 3 BYE\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn parse_and_rewrite_allocate_nothing() {
    let mut out = Vec::with_capacity(MAX_MESSAGE_SIZE);
    let mut resp = Vec::with_capacity(MAX_MESSAGE_SIZE);
    let src = (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40001);
    let mut sink = 0usize;

    let n = count_allocs(|| {
        // REGISTER: typed access the registrar needs, a 401 challenge and the forward.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let m = Message::parse_datagram(REGISTER, &mut headers).expect("register");
        let cred = m.authorization(false).expect("auth").expect("digest");
        sink += usize::from(cred.username.eq_str("1001"));
        for c in m.contacts() {
            if let Ok(Contact::Addr(a)) = c {
                sink += a.expires().ok().flatten().unwrap_or(0) as usize
                    + a.uri().map(|u| u.port.unwrap_or(0) as usize).unwrap_or(0);
            }
        }
        sink += m.expires().ok().flatten().unwrap_or(0) as usize
            + m.cseq().map(|c| c.seq as usize).unwrap_or(0);
        sink += m.supported().count() + m.from().map(|f| f.tag().map_or(0, str::len)).unwrap_or(0);
        let spec = ResponseSpec {
            code: 401,
            reason: "Unauthorized",
            to_tag: Some("sf-1a2b3c"),
            extra_headers: b"WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\n",
            body: b"",
        };
        write_response(&m, &spec, &mut resp).expect("401");
        let ops = ForwardOps {
            request_uri: Some("sip:192.0.2.50:5060"),
            add_via: Some(ViaSpec {
                transport: "UDP",
                host: "192.0.2.1",
                port: 5060,
                branch: "z9hG4bKsf1",
            }),
            top_via_received: Some(src),
            decrement_max_forwards: true,
            extra_headers: b"Path: <sip:192.0.2.1;lr>\r\n",
            ..ForwardOps::default()
        };
        write_forward(&m, &ops, &mut out).expect("fwd register");
        sink += out.len() + resp.len();

        // INVITE with SDP: proxy forward with record-route.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let m = Message::parse_datagram(INVITE, &mut headers).expect("invite");
        sink += m.vias().count() + m.body.len();
        let cred = m.authorization(true).expect("pauth").expect("digest");
        sink += cred.response.raw().len();
        let ops = ForwardOps {
            request_uri: Some("sip:1002@192.0.2.50:5060"),
            add_via: Some(ViaSpec {
                transport: "UDP",
                host: "192.0.2.1",
                port: 5060,
                branch: "z9hG4bKsf2",
            }),
            top_via_received: Some(src),
            record_routes: &["sip:192.0.2.1;lr"],
            decrement_max_forwards: true,
            ..ForwardOps::default()
        };
        write_forward(&m, &ops, &mut out).expect("fwd invite");
        sink += out.len();

        // 200 OK with Record-Route: strip our Via and relay.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let m = Message::parse_datagram(OK_RR, &mut headers).expect("200");
        sink += m.record_routes().count()
            + m.header(HeaderName::Other("Server"))
                .map_or(0, |h| h.value.len());
        let second = m.vias().nth(1).expect("second via").expect("via");
        sink += usize::from(second.rport() != sipfront::sip::Rport::Absent);
        let ops = ForwardOps {
            remove_top_via: true,
            ..ForwardOps::default()
        };
        write_forward(&m, &ops, &mut out).expect("fwd 200");
        sink += out.len();

        // BYE: loose-route past ourselves.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let m = Message::parse_datagram(BYE, &mut headers).expect("bye");
        let ops = ForwardOps {
            remove_routes: 1,
            add_via: Some(ViaSpec {
                transport: "UDP",
                host: "192.0.2.1",
                port: 5060,
                branch: "z9hG4bKsf3",
            }),
            top_via_received: Some(src),
            decrement_max_forwards: true,
            ..ForwardOps::default()
        };
        write_forward(&m, &ops, &mut out).expect("fwd bye");
        let spec = ResponseSpec {
            code: 200,
            reason: "OK",
            ..ResponseSpec::default()
        };
        write_response(&m, &spec, &mut resp).expect("200 to bye");
        sink += out.len() + resp.len();
    });
    assert!(sink > 0);
    assert_eq!(n, 0, "heap allocations during parse + rewrite");
}

#[test]
fn counter_sees_allocations() {
    // Guards against a vacuous pass: the counter does see a real allocation.
    let n = count_allocs(|| {
        let v: Vec<u8> = Vec::with_capacity(64);
        std::hint::black_box(&v);
    });
    assert_eq!(n, 1);
}
