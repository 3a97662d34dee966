//! URI parsing, parameter lookup and percent-decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipfront_fuzz::sip::{percent_decode_into, NameAddr, Uri, Via};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = Uri::parse(s) {
        let _ = (u.lr(), u.transport(), u.maddr(), u.params.iter().count());
        if let Some(user) = u.user {
            let mut buf = [0u8; 4096];
            let _ = percent_decode_into(user, &mut buf);
        }
    }
    if let Ok(n) = NameAddr::parse(s) {
        assert!(n.span.end as usize <= s.len());
        let _ = (n.tag(), n.q(), n.expires(), n.uri());
    }
    if let Ok(v) = Via::parse(s) {
        assert!(v.span.end as usize <= s.len());
        let _ = (v.branch(), v.rport(), v.ttl());
    }
});
