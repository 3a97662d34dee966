//! Client side: the Authorization value answering a challenge, for the REGISTERs the proxy
//! forwards to an Asterisk that challenges them (PJSIP endpoints with inbound auth).
//!
//! Data flow: Asterisk's 401 → the core hands the WWW-Authenticate values to
//! [`super::pick_challenge`] → [`compute_client_response`] writes
//! `Digest username="…", realm="…", nonce="…", uri="…", response="…", algorithm=…, cnonce="…",
//! qop=auth, nc=…, opaque="…"` into a caller buffer → the core adds it as an Authorization
//! header to the re-sent REGISTER.
//!
//! The secret is either a plain password or the stored credential of the user: the stored HA1
//! works when Asterisk's realm equals the realm it was computed for (configure the same realm
//! on both sides), otherwise the plain password must have been kept
//! (`credentials.keep_plain = true`).

use super::challenge_parse::Challenge;
use super::hash::{self, Hasher, Hex, QopAuth};
use super::{Algorithm, Credential};

/// What the client proves knowledge of.
#[derive(Debug, Clone, Copy)]
pub enum ClientSecret<'a> {
    /// The plain password.
    Password(&'a str),
    /// A stored credential whose HA1s were computed for `realm`.
    Stored {
        cred: &'a Credential,
        realm: &'a str,
    },
}

/// The request being authorized.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    pub username: &'a str,
    pub method: &'a str,
    /// The Request-URI of the request that will carry the Authorization header.
    pub uri: &'a str,
    /// A fresh client nonce (e.g. [`random_cnonce`]); used only when the challenge offers qop.
    pub cnonce: &'a str,
    /// Nonce count, 1 for the first request with this nonce.
    pub nc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("challenge algorithm not supported")]
    UnsupportedAlgorithm,
    #[error("challenge offers qop without auth (auth-int only)")]
    UnsupportedQop,
    #[error("stored credential is for another realm and no plain password is kept")]
    RealmMismatch,
    #[error("stored credential has no HA1 for the challenge algorithm")]
    NoCredentialForAlgorithm,
    #[error("username, uri or cnonce contains a control character")]
    BadInput,
    #[error("no random source for the cnonce")]
    Random,
}

/// A random 16-hex-digit client nonce.
pub fn random_cnonce() -> Result<Hex, ClientError> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|_| ClientError::Random)?;
    Ok(Hex::from_bytes(&b))
}

fn push_quoted(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn unescaped_eq(raw: &str, escaped: bool, plain: &str) -> bool {
    if !escaped {
        return raw == plain;
    }
    let mut it = raw.bytes();
    let mut p = plain.bytes();
    while let Some(mut b) = it.next() {
        if b == b'\\' {
            match it.next() {
                Some(n) => b = n,
                None => return false,
            }
        }
        if p.next() != Some(b) {
            return false;
        }
    }
    p.next().is_none()
}

/// Appends the Authorization (or Proxy-Authorization) header *value* answering `ch` to `out`.
pub fn compute_client_response(
    ch: &Challenge,
    secret: ClientSecret,
    req: &ClientRequest,
    out: &mut Vec<u8>,
) -> Result<(), ClientError> {
    let alg = ch.algorithm().ok_or(ClientError::UnsupportedAlgorithm)?;
    let qop = match ch.qop {
        None => false,
        Some(_) if ch.offers_qop_auth() => true,
        Some(_) => return Err(ClientError::UnsupportedQop),
    };
    let ctl = |s: &str| s.bytes().any(|b| b < 0x20 || b == 0x7f);
    if ctl(req.username) || ctl(req.uri) || ctl(req.cnonce) || (qop && req.cnonce.is_empty()) {
        return Err(ClientError::BadInput);
    }
    let ha1 = match secret {
        ClientSecret::Password(pw) => {
            let mut h = Hasher::new(alg);
            h.update(req.username.as_bytes()).update(b":");
            h.update_unescaped(ch.realm.raw.as_bytes()).update(b":");
            h.update(pw.as_bytes());
            h.finish_hex()
        }
        ClientSecret::Stored { cred, realm } => {
            if unescaped_eq(ch.realm.raw, ch.realm.escaped, realm) {
                cred.ha1_hex(alg)
                    .ok_or(ClientError::NoCredentialForAlgorithm)?
            } else if let Some(pw) = cred.plain_password() {
                let mut h = Hasher::new(alg);
                h.update(req.username.as_bytes()).update(b":");
                h.update_unescaped(ch.realm.raw.as_bytes()).update(b":");
                h.update(pw.as_bytes());
                h.finish_hex()
            } else {
                return Err(ClientError::RealmMismatch);
            }
        }
    };
    let ha2 = hash::ha2(alg, req.method, req.uri);
    let mut nc_buf = [0u8; 8];
    let nc_text = format_nc(req.nc, &mut nc_buf);
    // The response hashes the nonce with its escapes removed.
    let mut h = Hasher::new(alg);
    h.update(ha1.as_bytes()).update(b":");
    h.update_unescaped(ch.nonce.raw.as_bytes()).update(b":");
    if qop {
        let q = QopAuth {
            nc: nc_text,
            cnonce: req.cnonce,
        };
        h.update(q.nc.as_bytes()).update(b":");
        h.update(q.cnonce.as_bytes()).update(b":auth:");
    }
    h.update(ha2.as_bytes());
    let response = h.finish_hex();

    out.extend_from_slice(b"Digest username=\"");
    push_quoted(out, req.username);
    out.extend_from_slice(b"\", realm=\"");
    out.extend_from_slice(ch.realm.raw.as_bytes());
    out.extend_from_slice(b"\", nonce=\"");
    out.extend_from_slice(ch.nonce.raw.as_bytes());
    out.extend_from_slice(b"\", uri=\"");
    push_quoted(out, req.uri);
    out.extend_from_slice(b"\", response=\"");
    out.extend_from_slice(response.as_bytes());
    out.extend_from_slice(b"\", algorithm=");
    out.extend_from_slice(alg_token(alg, ch.algorithm).as_bytes());
    if qop {
        out.extend_from_slice(b", cnonce=\"");
        push_quoted(out, req.cnonce);
        out.extend_from_slice(b"\", qop=auth, nc=");
        out.extend_from_slice(nc_text.as_bytes());
    }
    if let Some(op) = ch.opaque {
        out.extend_from_slice(b", opaque=\"");
        out.extend_from_slice(op.raw.as_bytes());
        out.push(b'"');
    }
    Ok(())
}

/// Echo the challenge's own spelling of the algorithm when it gave one.
fn alg_token(alg: Algorithm, given: Option<&str>) -> &str {
    given.unwrap_or(alg.as_str())
}

fn format_nc(nc: u32, buf: &mut [u8; 8]) -> &str {
    let h = Hex::from_bytes(&nc.to_be_bytes());
    buf.copy_from_slice(h.as_bytes());
    std::str::from_utf8(buf).unwrap_or("00000001")
}

#[cfg(test)]
mod tests {
    use super::super::challenge_parse::parse_challenge;
    use super::*;

    #[test]
    fn rfc7616_sha256_as_client() {
        let ch = parse_challenge(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        let req = ClientRequest {
            username: "Mufasa",
            method: "GET",
            uri: "/dir/index.html",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            nc: 1,
        };
        let mut out = Vec::new();
        compute_client_response(
            &ch,
            ClientSecret::Password("Circle of Life"),
            &req,
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{s}"
        );
        assert!(s.contains("qop=auth, nc=00000001"), "{s}");
        assert!(
            s.contains(r#"opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#),
            "{s}"
        );
        assert!(s.contains("algorithm=SHA-256"), "{s}");
    }

    #[test]
    fn rfc2069_no_qop_and_stored() {
        let ch = parse_challenge(
            r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#,
        )
        .unwrap();
        let req = ClientRequest {
            username: "Mufasa",
            method: "GET",
            uri: "/dir/index.html",
            cnonce: "",
            nc: 1,
        };
        let mut out = Vec::new();
        compute_client_response(
            &ch,
            ClientSecret::Password("Circle Of Life"),
            &req,
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(r#"response="670fd8c2df070c60b045671b8b24ff02""#),
            "{s}"
        );
        assert!(!s.contains("qop"), "{s}");
        let cred = Credential::from_plain("Mufasa", "testrealm@host.com", "Circle Of Life", false);
        let mut out2 = Vec::new();
        let stored = ClientSecret::Stored {
            cred: &cred,
            realm: "testrealm@host.com",
        };
        compute_client_response(&ch, stored, &req, &mut out2).unwrap();
        assert_eq!(s.as_bytes(), &out2[..]);
        let other = ClientSecret::Stored {
            cred: &cred,
            realm: "elsewhere",
        };
        assert_eq!(
            compute_client_response(&ch, other, &req, &mut out2),
            Err(ClientError::RealmMismatch)
        );
        assert_eq!(format_nc(0x1a, &mut [0; 8]), "0000001a");
        assert!(unescaped_eq(r#"a\"b"#, true, "a\"b"));
        assert!(!unescaped_eq(r#"a\"b"#, true, "a\"bc"));
    }
}
