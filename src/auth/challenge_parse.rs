//! A small, allocation-free parser for a `WWW-Authenticate` / `Proxy-Authenticate` header
//! value (RFC 7235 §4.1 challenge syntax, RFC 3261 §25.1 `digest-cln`), used to answer the
//! challenges Asterisk sends to the proxy's forwarded REGISTERs.
//!
//! Only `Digest` challenges are read. Quoted values are returned raw (without the quotes,
//! escapes still in place) together with a flag; the client code feeds them to the hasher with
//! the escapes removed. Unknown parameters are skipped. A value that holds several challenges
//! (`Digest a=1, Digest b=2`) yields the first Digest one from [`parse_challenge`]; use
//! [`pick_challenge`] to choose among several header values.

use super::Algorithm;

/// A parameter value: raw text between the quotes (escapes kept) or a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Value<'a> {
    pub raw: &'a str,
    /// Contains backslash escapes that must be removed before use.
    pub escaped: bool,
}

/// The parameters of one Digest challenge we need to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Challenge<'a> {
    pub realm: Value<'a>,
    pub nonce: Value<'a>,
    pub opaque: Option<Value<'a>>,
    /// The `algorithm` token; `None` means MD5.
    pub algorithm: Option<&'a str>,
    /// The raw `qop` list (e.g. `auth,auth-int`).
    pub qop: Option<&'a str>,
    pub stale: bool,
}

impl Challenge<'_> {
    /// The algorithm to answer with, if supported (`-sess` variants are not).
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
            .map_or(Some(Algorithm::Md5), Algorithm::parse)
    }

    /// Whether `qop=auth` is offered (then the answer uses it).
    pub fn offers_qop_auth(&self) -> bool {
        self.qop
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeParseError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("malformed challenge parameter")]
    Malformed,
    #[error("challenge without realm or nonce")]
    MissingParam,
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(is_token_char) {
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or("")
    }
    fn quoted(&mut self) -> Result<Value<'a>, ChallengeParseError> {
        // at the opening quote
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(ChallengeParseError::Malformed),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(_) => self.i += 1,
            }
        }
        let raw = self
            .s
            .get(start..self.i)
            .ok_or(ChallengeParseError::Malformed)?;
        self.i += 1;
        Ok(Value { raw, escaped })
    }
}

/// Parses the first Digest challenge in a header value.
pub fn parse_challenge(value: &str) -> Result<Challenge<'_>, ChallengeParseError> {
    let mut c = Cursor { s: value, i: 0 };
    // Find a "Digest" scheme token.
    loop {
        c.skip_ws();
        let scheme = c.token();
        if scheme.is_empty() {
            return Err(ChallengeParseError::NotDigest);
        }
        if scheme.eq_ignore_ascii_case("digest") && matches!(c.peek(), Some(b' ' | b'\t')) {
            break;
        }
        // Skip to the next comma-separated element of another scheme.
        while let Some(b) = c.peek() {
            match b {
                b'"' => {
                    c.quoted()?;
                }
                b',' => {
                    c.i += 1;
                    break;
                }
                _ => c.i += 1,
            }
        }
        if c.peek().is_none() {
            return Err(ChallengeParseError::NotDigest);
        }
    }
    let mut ch = Challenge::default();
    let (mut have_realm, mut have_nonce) = (false, false);
    loop {
        c.skip_ws();
        let name = c.token();
        if name.is_empty() {
            break;
        }
        c.skip_ws();
        if c.peek() != Some(b'=') {
            // The start of the next challenge ("Digest ..." or another scheme).
            break;
        }
        c.i += 1;
        c.skip_ws();
        let v = if c.peek() == Some(b'"') {
            c.quoted()?
        } else {
            let t = c.token();
            if t.is_empty() {
                return Err(ChallengeParseError::Malformed);
            }
            Value {
                raw: t,
                escaped: false,
            }
        };
        match name.to_ascii_lowercase_cmp() {
            N::Realm => {
                ch.realm = v;
                have_realm = true;
            }
            N::Nonce => {
                ch.nonce = v;
                have_nonce = true;
            }
            N::Opaque => ch.opaque = Some(v),
            N::Algorithm => ch.algorithm = Some(v.raw),
            N::Qop => ch.qop = Some(v.raw),
            N::Stale => ch.stale = v.raw.eq_ignore_ascii_case("true"),
            N::Other => {}
        }
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.i += 1,
            None => break,
            Some(_) => return Err(ChallengeParseError::Malformed),
        }
    }
    if !have_realm || !have_nonce {
        return Err(ChallengeParseError::MissingParam);
    }
    Ok(ch)
}

enum N {
    Realm,
    Nonce,
    Opaque,
    Algorithm,
    Qop,
    Stale,
    Other,
}

trait ParamName {
    fn to_ascii_lowercase_cmp(&self) -> N;
}

impl ParamName for str {
    fn to_ascii_lowercase_cmp(&self) -> N {
        const NAMES: [(&str, N); 6] = [
            ("realm", N::Realm),
            ("nonce", N::Nonce),
            ("opaque", N::Opaque),
            ("algorithm", N::Algorithm),
            ("qop", N::Qop),
            ("stale", N::Stale),
        ];
        for (n, v) in NAMES {
            if self.eq_ignore_ascii_case(n) {
                return v;
            }
        }
        N::Other
    }
}

/// Picks, among several challenge header values, the Digest challenge with the strongest
/// algorithm we support (`qop=auth` or no qop). `None` when none is usable.
pub fn pick_challenge<'a, I>(values: I) -> Option<Challenge<'a>>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(Challenge<'a>, u8)> = None;
    for v in values {
        let Ok(ch) = parse_challenge(v) else { continue };
        let Some(alg) = ch.algorithm() else { continue };
        if ch.qop.is_some() && !ch.offers_qop_auth() {
            continue;
        }
        if best.as_ref().is_none_or(|(_, s)| alg.strength() > *s) {
            best = Some((ch, alg.strength()));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisk_style() {
        let v = r#"Digest  realm="asterisk",nonce="1700000000/abc\"d",opaque="5f2e", algorithm=md5, qop="auth""#;
        let c = parse_challenge(v).unwrap();
        assert_eq!(c.realm.raw, "asterisk");
        assert_eq!(
            c.nonce,
            Value {
                raw: r#"1700000000/abc\"d"#,
                escaped: true
            }
        );
        assert_eq!(c.opaque.unwrap().raw, "5f2e");
        assert_eq!(c.algorithm(), Some(Algorithm::Md5));
        assert!(c.offers_qop_auth());
        assert!(!c.stale);
    }

    #[test]
    fn errors_and_multiple() {
        assert_eq!(
            parse_challenge("Basic realm=\"x\""),
            Err(ChallengeParseError::NotDigest)
        );
        assert_eq!(parse_challenge(""), Err(ChallengeParseError::NotDigest));
        assert_eq!(
            parse_challenge("Digest realm=\"x"),
            Err(ChallengeParseError::Malformed)
        );
        assert_eq!(
            parse_challenge("Digest realm=\"x\""),
            Err(ChallengeParseError::MissingParam)
        );
        assert_eq!(
            parse_challenge("Digest realm=\"x\" nonce=1"),
            Err(ChallengeParseError::Malformed)
        );
        let two = r#"Basic realm="b", Digest realm="r", nonce="n", stale=TRUE, Digest realm="s", nonce="m""#;
        let c = parse_challenge(two).unwrap();
        assert_eq!((c.realm.raw, c.nonce.raw, c.stale), ("r", "n", true));
        let picked = pick_challenge([
            r#"Digest realm="r", nonce="a", algorithm=MD5, qop="auth""#,
            r#"Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth""#,
            r#"Digest realm="r", nonce="c", algorithm=SHA-256-sess, qop="auth""#,
            r#"Digest realm="r", nonce="d", algorithm=SHA-512-256, qop="auth-int""#,
        ])
        .unwrap();
        assert_eq!(picked.nonce.raw, "b");
        assert!(pick_challenge(["Basic x=1"]).is_none());
    }
}
