//! One binding as the cluster keeps it in Redis: the value of a hash field (the field is the
//! Contact URI) under the AOR's key.
//!
//! `OWNER \t EXPIRES_AT_MS \t OWNER_ADDRESS \t JSON` — the owner (the node holding the
//! phone's flow) and the expiry come first so the Lua script of [`super::store`] reads them
//! with one pattern match; the JSON holds the rest of the binding. None of the parts holds a
//! line feed (JSON escapes them), so a published AOR is its values joined by line feeds.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::registrar::persist::Row;
use crate::sip::Transport;

/// The binding's fields besides owner and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    contact: String,
    dest: SocketAddr,
    transport: String,
    socket: SocketAddr,
    nated: bool,
    path: Vec<String>,
    q: Option<u16>,
    call_id: String,
    cseq: u32,
    user_agent: String,
    since_s: u32,
    /// RFC 5626 `+sip.instance` ("" for none) and `reg-id` (0 for none); absent in values
    /// written before outbound was kept.
    #[serde(default)]
    instance: String,
    #[serde(default)]
    reg_id: u32,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub owner: String,
    pub owner_addr: SocketAddr,
    pub row: Row,
}

/// Why a value from Redis was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("a stored binding is not `owner\\texpiry\\taddress\\tjson`")]
    Shape,
    #[error("a stored binding's JSON is not a binding")]
    Json,
}

/// Encode `row` owned by `owner` (reachable at `owner_addr`).
pub fn encode(owner: &str, owner_addr: SocketAddr, row: &Row) -> String {
    let body = Body {
        contact: row.contact.clone(),
        dest: row.dest,
        transport: row.transport.as_str().to_owned(),
        socket: row.socket,
        nated: row.nated,
        path: row.path.clone(),
        q: row.q,
        call_id: row.call_id.clone(),
        cseq: row.cseq,
        user_agent: row.user_agent.clone(),
        since_s: row.since_s,
        instance: row.instance.clone(),
        reg_id: row.reg_id,
    };
    // Serializing plain strings and numbers cannot fail.
    let json = serde_json::to_string(&body).unwrap_or_default();
    format!("{owner}\t{}\t{owner_addr}\t{json}", row.expires_at_ms)
}

/// Decode a value of AOR `aor`.
pub fn decode(aor: &str, v: &[u8]) -> Result<Value, WireError> {
    let s = std::str::from_utf8(v).map_err(|_| WireError::Shape)?;
    let mut parts = s.splitn(4, '\t');
    let (Some(owner), Some(exp), Some(addr), Some(json)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::Shape);
    };
    let expires_at_ms = exp.parse().map_err(|_| WireError::Shape)?;
    let owner_addr = addr.parse().map_err(|_| WireError::Shape)?;
    let b: Body = serde_json::from_str(json).map_err(|_| WireError::Json)?;
    let transport = Transport::parse(&b.transport).ok_or(WireError::Json)?;
    Ok(Value {
        owner: owner.to_owned(),
        owner_addr,
        row: Row {
            aor: aor.to_owned(),
            contact: b.contact,
            dest: b.dest,
            transport,
            socket: b.socket,
            nated: b.nated,
            path: b.path,
            expires_at_ms,
            q: b.q,
            call_id: b.call_id,
            cseq: b.cseq,
            user_agent: b.user_agent,
            since_s: b.since_s,
            instance: b.instance,
            reg_id: b.reg_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            aor: "alice".into(),
            contact: "sip:alice@192.0.2.7:5060;ob".into(),
            dest: "198.51.100.1:40000".parse().unwrap(),
            transport: Transport::Udp,
            socket: "10.0.0.1:5060".parse().unwrap(),
            nated: true,
            path: vec!["<sip:edge;lr>".into()],
            expires_at_ms: 1_764_159_377_000,
            q: Some(500),
            call_id: "a\tb\nc".into(),
            cseq: 7,
            user_agent: "Phone \"1\"".into(),
            since_s: 1_764_159_000,
            instance: "\"<urn:uuid:00000000-0000-1000-8000-000000000001>\"".into(),
            reg_id: 1,
        }
    }

    #[test]
    fn round_trip_without_line_feeds() {
        let addr: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let v = encode("edge-1", addr, &row());
        assert!(!v.contains('\n'));
        assert!(v.starts_with("edge-1\t1764159377000\t10.0.0.1:5060\t{"));
        let d = decode("alice", v.as_bytes()).unwrap();
        assert_eq!(d.owner, "edge-1");
        assert_eq!(d.owner_addr, addr);
        assert_eq!(d.row, row());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"x",
            b"a\t1\t10.0.0.1:1",
            b"a\tx\t10.0.0.1:1\t{}",
            b"a\t1\tnot-an-addr\t{}",
            b"a\t1\t10.0.0.1:1\t{}",
            b"\xff\xfe",
        ] {
            assert!(decode("a", bad).is_err(), "{bad:?}");
        }
    }
}
