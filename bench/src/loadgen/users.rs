//! The phone accounts the generator plays: a numeric range with a password pattern
//! (`1001-2000`, `pw{user}`), or a CSV file (sipp injection format `user;domain;password;...`
//! after a `SEQUENTIAL` line, or `user;password` / `user,password` lines).

use thiserror::Error;

/// Why the user list could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UsersError {
    #[error("--users: expected FIRST-LAST with FIRST <= LAST, got {0:?}")]
    BadRange(String),
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path} line {line}: expected user;password or user;domain;password")]
    BadLine { path: String, line: usize },
    #[error("no users")]
    Empty,
}

/// Users and their passwords, indexed 0..len.
#[derive(Debug, Clone, Default)]
pub struct Users {
    names: Vec<Box<[u8]>>,
    passwords: Vec<Box<[u8]>>,
}

impl Users {
    /// `FIRST-LAST` (inclusive); `{user}` in `pattern` is replaced by the user name.
    pub fn range(spec: &str, pattern: &str) -> Result<Users, UsersError> {
        let bad = || UsersError::BadRange(spec.to_owned());
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let (a, b): (u64, u64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b - a >= 10_000_000 {
            return Err(bad());
        }
        let mut u = Users::default();
        for n in a..=b {
            let name = n.to_string();
            u.passwords
                .push(pattern.replace("{user}", &name).into_bytes().into());
            u.names.push(name.into_bytes().into());
        }
        Ok(u)
    }

    /// Reads a CSV file (see the module docs).
    pub fn from_csv(path: &str) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_csv(&text, path)
    }

    fn parse_csv(text: &str, path: &str) -> Result<Users, UsersError> {
        let mut u = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line == "SEQUENTIAL" || line == "RANDOM"
            {
                continue;
            }
            let sep = if line.contains(';') { ';' } else { ',' };
            let f: Vec<&str> = line.split(sep).collect();
            let (name, pw) = match f.as_slice() {
                [n, p] => (*n, *p),
                [n, _domain, p, ..] => (*n, *p),
                _ => {
                    return Err(UsersError::BadLine {
                        path: path.to_owned(),
                        line: i + 1,
                    })
                }
            };
            if name.is_empty() {
                return Err(UsersError::BadLine {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
            u.names.push(name.as_bytes().into());
            u.passwords.push(pw.as_bytes().into());
        }
        if u.names.is_empty() {
            return Err(UsersError::Empty);
        }
        Ok(u)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// User `i % len` (name, password).
    pub fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let i = i % self.len().max(1);
        (
            self.names.get(i).map(|b| &b[..]).unwrap_or_default(),
            self.passwords.get(i).map(|b| &b[..]).unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_pattern() {
        let u = Users::range("1001-1003", "pw{user}").expect("range");
        assert_eq!(u.len(), 3);
        assert_eq!(u.get(2), (&b"1003"[..], &b"pw1003"[..]));
        assert_eq!(u.get(3).0, b"1001");
        assert!(Users::range("5-1", "x").is_err());
        assert!(Users::range("abc", "x").is_err());
    }

    #[test]
    fn csv_formats() {
        let u = Users::parse_csv(
            "SEQUENTIAL\n1001;sipfront.test;pw1;600;[auth]\n1002;pw2\n1003,pw3\n",
            "f",
        )
        .expect("csv");
        assert_eq!(u.len(), 3);
        assert_eq!(u.get(0), (&b"1001"[..], &b"pw1"[..]));
        assert_eq!(u.get(1), (&b"1002"[..], &b"pw2"[..]));
        assert_eq!(u.get(2), (&b"1003"[..], &b"pw3"[..]));
        assert!(matches!(
            Users::parse_csv("x\n", "f"),
            Err(UsersError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            Users::parse_csv("SEQUENTIAL\n", "f"),
            Err(UsersError::Empty)
        ));
    }
}
