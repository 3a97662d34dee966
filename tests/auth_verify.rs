//! Server-side digest verification, end to end through the public API: write a challenge,
//! answer it with the client side, verify. Virtual clock (`now_ms`), no sleeps.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use sipfront::auth::client::ClientRequest;
use sipfront::auth::Credential;
use sipfront::auth::{
    compute_client_response, parse_challenge, username_matches_from, Algorithm, AuthConfig,
    Authenticator, ClientSecret, DigestInput, Verdict,
};

const REALM: &str = "example.com";
const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
const URI: &str = "sip:example.com";
const T0: u64 = 1_700_000_000_000;

fn auth(f: impl FnOnce(&mut AuthConfig)) -> Authenticator {
    let mut cfg = AuthConfig {
        algorithms: vec![Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256],
        ..AuthConfig::default()
    };
    f(&mut cfg);
    Authenticator::new(&cfg, REALM).expect("authenticator")
}

/// Parses `k=v, k="v"` pairs of an Authorization value (test helper; the real parser is the
/// sip module's).
fn params(value: &str) -> HashMap<String, String> {
    let body = value.strip_prefix("Digest ").expect("Digest");
    let mut m = HashMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=').expect("=");
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            let end = r.find('"').expect("quote");
            (&r[..end], &r[end + 1..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            (&r[..end], &r[end..])
        };
        m.insert(k.trim().to_string(), v.to_string());
        rest = r.trim_start_matches(',').trim_start();
    }
    m
}

/// Challenge lines as header values.
fn challenges(a: &Authenticator, proxy: bool, stale: bool, now: u64) -> Vec<String> {
    let mut out = Vec::with_capacity(1024);
    a.write_challenge(&mut out, proxy, stale, now, SRC);
    let text = String::from_utf8(out).expect("utf8");
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(": ").expect("header").1.to_string())
        .collect()
}

/// Answers the challenge for `alg` and returns the Authorization parameters.
fn answer(
    a: &Authenticator,
    alg: Algorithm,
    password: &str,
    nc: u32,
    now: u64,
) -> HashMap<String, String> {
    let all = challenges(a, false, false, now);
    let value = all
        .iter()
        .find(|c| c.contains(&format!("algorithm={},", alg.as_str())))
        .expect("challenge for alg");
    let ch = parse_challenge(value).expect("parse");
    let mut out = Vec::new();
    let req = ClientRequest {
        username: "alice",
        method: "REGISTER",
        uri: URI,
        cnonce: "0a4f113b",
        nc,
    };
    compute_client_response(&ch, ClientSecret::Password(password), &req, &mut out).expect("answer");
    params(std::str::from_utf8(&out).expect("utf8"))
}

fn input(p: &HashMap<String, String>) -> DigestInput<'_> {
    let g = |k: &str| p.get(k).map(String::as_str);
    DigestInput {
        username: g("username").unwrap_or(""),
        realm: g("realm").unwrap_or(""),
        nonce: g("nonce").unwrap_or(""),
        uri: g("uri").unwrap_or(""),
        response: g("response").unwrap_or(""),
        algorithm: g("algorithm"),
        cnonce: g("cnonce"),
        nc: g("nc"),
        qop: g("qop"),
        opaque: g("opaque"),
    }
}

fn cred() -> Credential {
    Credential::from_plain("alice", REALM, "secret", false)
}

#[test]
fn challenges_strongest_first_without_allocation() {
    let a = auth(|_| {});
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(b"SIP/2.0 401 Unauthorized\r\n");
    let ptr = out.as_ptr();
    a.write_challenge(&mut out, false, true, T0, SRC);
    assert_eq!(out.as_ptr(), ptr, "no reallocation");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 3);
    for (l, alg) in lines.iter().zip(["SHA-512-256", "SHA-256", "MD5"]) {
        assert!(
            l.starts_with("WWW-Authenticate: Digest realm=\"example.com\", nonce=\""),
            "{l}"
        );
        assert!(
            l.contains(&format!("algorithm={alg}, qop=\"auth\", stale=true")),
            "{l}"
        );
        assert!(l.contains("opaque=\""), "{l}");
    }
    let proxy = challenges(
        &auth(|c| c.algorithms = vec![Algorithm::Md5]),
        true,
        false,
        T0,
    );
    assert_eq!(proxy.len(), 1);
    assert!(!proxy[0].contains("stale"));
    let mut out = Vec::new();
    a.write_challenge(&mut out, true, false, T0, SRC);
    assert!(out.starts_with(b"Proxy-Authenticate: Digest "));
    let mut only = Vec::new();
    a.write_challenge_for(&mut only, false, false, T0, SRC, &[Algorithm::Md5]);
    assert_eq!(String::from_utf8(only).expect("utf8").lines().count(), 1);
}

#[test]
fn every_algorithm_verifies_and_wrong_password_fails() {
    let a = auth(|_| {});
    for alg in Algorithm::STRONGEST_FIRST {
        let p = answer(&a, alg, "secret", 1, T0);
        assert_eq!(
            a.verify(&input(&p), "REGISTER", URI, &cred(), T0 + 10, SRC),
            Verdict::Ok,
            "{alg:?}"
        );
        let p = answer(&a, alg, "wrong", 1, T0);
        assert_eq!(
            a.verify(&input(&p), "REGISTER", URI, &cred(), T0 + 10, SRC),
            Verdict::WrongPassword
        );
        // the method is part of the hash
        let p = answer(&a, alg, "secret", 1, T0);
        assert_eq!(
            a.verify(&input(&p), "INVITE", URI, &cred(), T0 + 10, SRC),
            Verdict::WrongPassword
        );
    }
}

#[test]
fn uppercase_hex_response_is_accepted() {
    let a = auth(|_| {});
    let mut p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    let up = p["response"].to_uppercase();
    p.insert("response".into(), up);
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Ok
    );
}

#[test]
fn replay_and_nonce_count() {
    let a = auth(|_| {});
    let p = answer(&a, Algorithm::Sha256, "secret", 1, T0);
    let i = input(&p);
    assert_eq!(a.verify(&i, "REGISTER", URI, &cred(), T0, SRC), Verdict::Ok);
    assert_eq!(
        a.verify(&i, "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Replay
    );
    // same nonce, higher nc: fine; then a lower one is a replay
    let nonce = p["nonce"].clone();
    let ch =
        format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\"");
    let ch = parse_challenge(&ch).expect("parse");
    for (nc, want) in [(5, Verdict::Ok), (3, Verdict::Replay), (6, Verdict::Ok)] {
        let mut out = Vec::new();
        let req = ClientRequest {
            username: "alice",
            method: "REGISTER",
            uri: URI,
            cnonce: "c",
            nc,
        };
        compute_client_response(&ch, ClientSecret::Password("secret"), &req, &mut out)
            .expect("answer");
        let q = params(std::str::from_utf8(&out).expect("utf8"));
        assert_eq!(
            a.verify(&input(&q), "REGISTER", URI, &cred(), T0, SRC),
            want,
            "nc {nc}"
        );
    }
}

#[test]
fn stale_only_after_the_password_checked_out() {
    let a = auth(|c| c.nonce_ttl_secs = 30);
    let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    let later = T0 + 31_000;
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &cred(), later, SRC),
        Verdict::Stale
    );
    let wrong = answer(&a, Algorithm::Md5, "nope", 1, T0);
    assert_eq!(
        a.verify(&input(&wrong), "REGISTER", URI, &cred(), later, SRC),
        Verdict::WrongPassword
    );
}

#[test]
fn forged_nonce_opaque_and_ip_binding() {
    let a = auth(|c| c.bind_nonce_to_ip = true);
    let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &cred(), T0, other),
        Verdict::BadNonce
    );
    let mut forged = p.clone();
    forged.insert(
        "nonce".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    );
    assert_eq!(
        a.verify(&input(&forged), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::BadNonce
    );
    let mut op = p.clone();
    op.insert("opaque".into(), "0000000000000000".into());
    assert_eq!(
        a.verify(&input(&op), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::BadNonce
    );
    // another authenticator with a random secret does not accept our nonces
    let b = auth(|_| {});
    let mut no_opaque = p.clone();
    no_opaque.remove("opaque");
    assert_eq!(
        b.verify(&input(&no_opaque), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::BadNonce
    );
    assert_eq!(
        a.verify(&input(&no_opaque), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Ok
    );
}

#[test]
fn nodes_sharing_a_secret_accept_each_others_nonces() {
    let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let a = auth(|c| c.nonce_secret = secret.into());
    let b = auth(|c| c.nonce_secret = secret.into());
    let p = answer(&a, Algorithm::Sha512_256, "secret", 1, T0);
    assert_eq!(
        b.verify(&input(&p), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Ok
    );
}

#[test]
fn policy_checks() {
    let a = auth(|c| c.algorithms = vec![Algorithm::Md5]);
    let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    let ok = input(&p);
    let check = |i: &DigestInput, uri: &str| a.verify(i, "REGISTER", uri, &cred(), T0, SRC);
    assert_eq!(check(&ok, "sip:other.com"), Verdict::UriMismatch);
    assert_eq!(
        check(
            &DigestInput {
                realm: "other",
                ..ok
            },
            URI
        ),
        Verdict::RealmMismatch
    );
    assert_eq!(
        check(
            &DigestInput {
                algorithm: Some("SHA-256"),
                ..ok
            },
            URI
        ),
        Verdict::Unsupported
    );
    assert_eq!(
        check(
            &DigestInput {
                algorithm: Some("MD5-sess"),
                ..ok
            },
            URI
        ),
        Verdict::Unsupported
    );
    assert_eq!(
        check(
            &DigestInput {
                qop: Some("auth-int"),
                ..ok
            },
            URI
        ),
        Verdict::Unsupported
    );
    assert_eq!(
        check(&DigestInput { qop: None, ..ok }, URI),
        Verdict::QopRequired
    );
    assert_eq!(
        check(
            &DigestInput {
                nc: Some("1"),
                ..ok
            },
            URI
        ),
        Verdict::Malformed
    );
    assert_eq!(
        check(&DigestInput { cnonce: None, ..ok }, URI),
        Verdict::Malformed
    );
    assert_eq!(
        check(
            &DigestInput {
                response: "abc",
                ..ok
            },
            URI
        ),
        Verdict::Malformed
    );
    // the host part of the URI compares case-insensitively
    assert_eq!(
        check(
            &DigestInput {
                uri: "sip:EXAMPLE.com",
                ..ok
            },
            URI
        ),
        Verdict::WrongPassword
    );
    assert_eq!(check(&ok, "sip:Example.COM"), Verdict::Ok);
}

#[test]
fn no_qop_only_when_allowed_and_single_use() {
    let a = auth(|c| {
        c.allow_no_qop = true;
        c.algorithms = vec![Algorithm::Md5];
    });
    let nonce = {
        let c = challenges(&a, false, false, T0);
        parse_challenge(&c[0]).expect("parse").nonce.raw.to_string()
    };
    let ch = format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\"");
    let ch = parse_challenge(&ch).expect("parse");
    let mut out = Vec::new();
    let req = ClientRequest {
        username: "alice",
        method: "REGISTER",
        uri: URI,
        cnonce: "",
        nc: 1,
    };
    compute_client_response(&ch, ClientSecret::Password("secret"), &req, &mut out).expect("answer");
    let p = params(std::str::from_utf8(&out).expect("utf8"));
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Ok
    );
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &cred(), T0, SRC),
        Verdict::Replay
    );
}

#[test]
fn stored_md5_only_cannot_verify_sha() {
    let a = auth(|_| {});
    let mut md5_only = Credential::default();
    let ha1 = sipfront::auth::hash::ha1(Algorithm::Md5, "alice", REALM, "secret");
    assert!(md5_only.set_ha1_hex(Algorithm::Md5, ha1.as_str()));
    let p = answer(&a, Algorithm::Sha256, "secret", 1, T0);
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &md5_only, T0, SRC),
        Verdict::NoCredentialForAlgorithm
    );
    let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    assert_eq!(
        a.verify(&input(&p), "REGISTER", URI, &md5_only, T0, SRC),
        Verdict::Ok
    );
}

#[test]
fn from_user_helper_and_bad_realm() {
    assert!(username_matches_from("alice", Some("alice")));
    assert!(!username_matches_from("alice", Some("Alice")));
    assert!(!username_matches_from("alice", None));
    for bad in ["", "a\"b", "a\\b", "a\r\nb"] {
        assert!(
            Authenticator::new(&AuthConfig::default(), bad).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn shared_between_workers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authenticator>();
    assert_send_sync::<sipfront::db::CredentialCache>();
    assert_send_sync::<sipfront::db::LookupPool>();
    assert_send_sync::<sipfront::db::RefreshHandle>();
}

#[test]
fn uri_check_modes() {
    use sipfront::auth::{OwnNames, UriCheck};
    let own = || OwnNames {
        domains: vec![REALM.into()],
        addrs: vec!["127.0.0.1:5070".parse().expect("addr")],
    };
    // The phone's digest uri is URI (`sip:example.com`, the proxy's domain); the request goes
    // to an address of the proxy, or to a user of another domain.
    let to_proxy = "sip:600@127.0.0.1:5070";
    let elsewhere = "sip:600@other.org";
    let cases = [
        (UriCheck::Strict, to_proxy, Verdict::UriMismatch),
        (UriCheck::Strict, URI, Verdict::Ok),
        (UriCheck::Host, to_proxy, Verdict::Ok),
        (UriCheck::Host, "sip:bob@example.com:5060", Verdict::Ok),
        (UriCheck::Host, elsewhere, Verdict::Ok),
        (UriCheck::Off, elsewhere, Verdict::Ok),
    ];
    for (mode, request_uri, want) in cases {
        let a = auth(|c| c.uri_check = mode).with_own_names(own());
        let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
        let got = a.verify(&input(&p), "REGISTER", request_uri, &cred(), T0, SRC);
        assert_eq!(got, want, "{mode:?}: {request_uri}");
    }
    // Without the proxy's own names, `host` only accepts the Request-URI's own host.
    let a = auth(|c| c.uri_check = UriCheck::Host);
    let p = answer(&a, Algorithm::Md5, "secret", 1, T0);
    assert_eq!(
        a.verify(&input(&p), "REGISTER", to_proxy, &cred(), T0, SRC),
        Verdict::UriMismatch
    );
    // A wrong password stays wrong whatever the mode.
    let a = auth(|c| c.uri_check = UriCheck::Off);
    let p = answer(&a, Algorithm::Md5, "not-it", 1, T0);
    assert_eq!(
        a.verify(&input(&p), "REGISTER", elsewhere, &cred(), T0, SRC),
        Verdict::WrongPassword
    );
}
