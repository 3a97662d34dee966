//! Message framing plus every typed accessor, on datagram and stream parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipfront_fuzz::sip::{peek_call_id, Contact, Message, Status, Uri, EMPTY_HEADER, MAX_HEADERS};

fn exercise(m: &Message) {
    let _ = m.method();
    let _ = m.status_code();
    if let Some(u) = m.request_uri() {
        let _ = Uri::parse(u);
    }
    for v in m.vias() {
        if let Ok(v) = v {
            assert!(v.span.end as usize <= m.buf.len());
            let _ = (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl());
        }
    }
    let _ = (
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
        m.expires(),
        m.content_length(),
    );
    for n in [m.from(), m.to()].into_iter().flatten() {
        let _ = (n.tag(), n.uri());
    }
    for c in m.contacts().flatten() {
        if let Contact::Addr(a) = c {
            let _ = (a.expires(), a.q(), a.uri());
        }
    }
    for r in m
        .routes()
        .chain(m.record_routes())
        .chain(m.paths())
        .flatten()
    {
        let _ = r.uri().map(|u| (u.lr(), u.transport()));
    }
    for d in m
        .authorizations(false)
        .chain(m.authorizations(true))
        .flatten()
    {
        let mut buf = [0u8; 256];
        let _ = d.username.unescape_into(&mut buf);
    }
    let _ = (m.user_agent(), m.content_type());
    let _ = m.supported().count() + m.require().count() + m.proxy_require().count();
}

fuzz_target!(|data: &[u8]| {
    if let Some(id) = peek_call_id(data) {
        assert!(id.len() <= data.len());
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    if let Ok(m) = Message::parse_datagram(data, &mut headers) {
        assert!(m.head_len + m.body.len() <= data.len());
        exercise(&m);
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    if let Ok(Status::Complete((m, used))) = Message::parse_stream(data, &mut headers) {
        assert!(used <= data.len());
        exercise(&m);
    }
});
