//! The admin API's view of one HTTP exchange, independent of the HTTP library: a
//! [`Request`] (method, decoded path and query parameters) goes into [`super::api::route`],
//! a [`Response`] (status, content type, body) comes out. The server ([`super`]) converts
//! from and to `tiny_http`; the router's tests build these directly.

use crate::auth::hash::decode_hex;

/// Why a request target could not be decoded (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("request target must start with /")]
    NotAPath,
    #[error("malformed percent-encoding in the request target")]
    BadEncoding,
}

/// The request methods the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    /// Anything else (answered 405).
    Other,
}

/// A request as the router sees it (no endpoint takes a body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The decoded path, without the query.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// Split and decode `target` (`/path?k=v&...`).
    pub fn new(method: Method, target: &str) -> Result<Request, TargetError> {
        if !target.starts_with('/') {
            return Err(TargetError::NotAPath);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = decode_component(path)?;
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode_component(k)?, decode_component(v)?));
        }
        Ok(Request {
            method,
            path,
            query: params,
        })
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decode `%XX` escapes and `+` (as a space) into a UTF-8 string; a malformed escape or
/// invalid UTF-8 is an error (not passed on silently).
pub fn decode_component(s: &str) -> Result<String, TargetError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let mut byte = [0u8; 1];
                s.get(i + 1..i + 3)
                    .and_then(|hex| decode_hex(hex, &mut byte))
                    .ok_or(TargetError::BadEncoding)?;
                out.extend_from_slice(&byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| TargetError::BadEncoding)
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A response: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// For 405: the methods the path allows.
    pub allow: Option<&'static str>,
    /// For 401: ask for a bearer token (`WWW-Authenticate: Bearer`).
    pub www_authenticate: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body,
            allow: None,
            www_authenticate: false,
        }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status, JSON, format!("{value}\n"))
    }

    /// `{"error": msg}` with `status`.
    pub fn error(status: u16, msg: &str) -> Self {
        Response::json(status, &serde_json::json!({ "error": msg }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_path_and_query() {
        let r = Request::new(
            Method::Get,
            "/v1/registrations?user=al%40ice&uri=sip%3Ax+y&flag",
        )
        .unwrap();
        assert_eq!(r.path, "/v1/registrations");
        assert_eq!(r.param("user"), Some("al@ice"));
        assert_eq!(r.param("uri"), Some("sip:x y"));
        assert_eq!(r.param("flag"), Some(""));
        assert_eq!(r.param("nope"), None);
        let r = Request::new(Method::Delete, "/v1/bans?ip=::1").unwrap();
        assert_eq!(r.param("ip"), Some("::1"));
    }

    #[test]
    fn bad_targets_are_errors() {
        for (t, e) in [
            ("nopath", TargetError::NotAPath),
            ("*", TargetError::NotAPath),
            ("/a%zz", TargetError::BadEncoding),
            ("/?u=%ff%fe", TargetError::BadEncoding),
            ("/?u=%", TargetError::BadEncoding),
            ("/?u=%4", TargetError::BadEncoding),
            ("/?u=%é1", TargetError::BadEncoding),
        ] {
            assert_eq!(Request::new(Method::Get, t), Err(e), "{t}");
        }
    }

    #[test]
    fn error_bodies_are_json() {
        let r = Response::error(404, "no \"such\" thing");
        assert_eq!(r.content_type, JSON);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"], "no \"such\" thing");
    }
}
