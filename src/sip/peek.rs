//! Cheap peeks at a raw datagram without a full parse, for dispatch decisions such as
//! "which worker owns this dialog" (`DatagramHandler::owner`).
//!
//! The peek walks header lines with `memchr` and stops at the first Call-ID (`Call-ID` or
//! compact `i`); it validates nothing else. The owning worker parses the message properly.

use memchr::memchr;

use super::scan::trim;

/// The raw Call-ID value of the first Call-ID header line (LWS-trimmed, folding not
/// joined), or `None` when there is none before the blank line.
pub fn peek_call_id(buf: &[u8]) -> Option<&[u8]> {
    let mut i = memchr(b'\n', buf)? + 1; // skip the start line
    loop {
        let rest = buf.get(i..)?;
        if matches!(rest.first(), None | Some(b'\r' | b'\n')) {
            return None;
        }
        let end = memchr(b'\n', rest).map_or(rest.len(), |p| p + 1);
        let line = rest.get(..end)?;
        if let Some(colon) = memchr(b':', line) {
            let name = trim(line.get(..colon)?);
            if name.eq_ignore_ascii_case(b"Call-ID") || name.eq_ignore_ascii_case(b"i") {
                return Some(trim(line.get(colon + 1..)?));
            }
        }
        i += end;
    }
}

#[cfg(test)]
mod tests {
    use super::peek_call_id;

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (
                b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID: abc@h\r\n\r\n",
                Some(b"abc@h"),
            ),
            (b"SIP/2.0 200 OK\r\nCALL-id :  q1 \r\n\r\n", Some(b"q1")),
            (b"BYE sip:a@b SIP/2.0\r\ni: c2\r\n\r\n", Some(b"c2")),
            (
                b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n\r\nCall-ID: body\r\n",
                None,
            ),
            (b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n", None),
            (b"garbage", None),
            (b"", None),
        ];
        for (buf, want) in cases {
            assert_eq!(
                peek_call_id(buf),
                *want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}
