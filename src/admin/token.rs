//! The admin API's bearer token (`[admin] token_file`): read from a file (never from the
//! config text, never logged), kept only as its SHA-256 digest, and compared with the
//! digest of what a client presents in constant time (`subtle`), so neither the comparison
//! time nor its length reveals anything about the token. `sipfront ctl` reads the same file
//! ([`read_token_file`]) and sends `Authorization: Bearer TOKEN`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted (characters after trimming).
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("config key `admin.token_file`: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config key `admin.token_file`: the token in {path} is shorter than {MIN_TOKEN_LEN} characters (expected a random string, e.g. `openssl rand -hex 32 > {path}`)")]
    TooShort { path: PathBuf },
    #[error("config key `admin.token_file`: the token in {path} holds whitespace or control characters inside it (expected one line)")]
    BadCharacters { path: PathBuf },
}

/// The token in `path`: the file's content without surrounding whitespace (a trailing
/// newline is usual), at least [`MIN_TOKEN_LEN`] visible ASCII characters.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort {
            path: path.to_owned(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::BadCharacters {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// The expected token, as its digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(token: &str) -> Token {
        Token {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    pub fn load(path: &Path) -> Result<Token, TokenError> {
        read_token_file(path).map(|t| Token::new(&t))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>` (scheme
    /// case-insensitive, RFC 6750).
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization.map(str::trim) else {
            return false;
        };
        let Some((scheme, presented)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let got: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(got.ct_eq(&self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_bearer_token() {
        let t = Token::new("0123456789abcdef0123");
        assert!(t.accepts(Some("Bearer 0123456789abcdef0123")));
        assert!(t.accepts(Some("bearer  0123456789abcdef0123 ")));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("Basic 0123456789abcdef0123"),
            Some("0123456789abcdef0123"),
        ] {
            assert!(!t.accepts(bad), "{bad:?}");
        }
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  s3cr3t-t0ken-0123456789\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "s3cr3t-t0ken-0123456789");
        std::fs::write(&p, "short\n").unwrap();
        let e = read_token_file(&p).unwrap_err();
        assert!(matches!(e, TokenError::TooShort { .. }), "{e}");
        assert!(e.to_string().contains("admin.token_file"), "{e}");
        std::fs::write(&p, "0123456789 abcdef0123").unwrap();
        assert!(matches!(
            read_token_file(&p),
            Err(TokenError::BadCharacters { .. })
        ));
        let e = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, TokenError::Read { .. }), "{e}");
    }
}
