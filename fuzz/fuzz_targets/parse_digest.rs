//! Authorization / Proxy-Authorization value parsing and unescaping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipfront_fuzz::sip::parse_digest;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = parse_digest(data) {
        let mut buf = [0u8; 512];
        for q in [
            Some(d.username),
            Some(d.realm),
            Some(d.nonce),
            Some(d.uri),
            Some(d.response),
            d.cnonce,
            d.opaque,
        ]
        .into_iter()
        .flatten()
        {
            let eq = q.eq_str(q.raw());
            if q.as_str().is_some() {
                assert!(eq);
            }
            let _ = q.unescape_into(&mut buf);
        }
    }
});
