//! Rows to credentials, and the SQL that reads them.
//!
//! A [`Plan`] is built once per connection from the resolved [`Layout`] and the columns the
//! table really has (probed with `SELECT * ... WHERE 1=0`): required columns must exist,
//! optional ones (`md5secret`, `realm`, `password_digest`, ...) are read only if present. Every
//! identifier was validated by the config and is quoted again here.
//!
//! [`to_credential`] applies the Asterisk rules:
//! - chan_sip (`sippeers`/`sipusers`): the plain password column if non-empty, else the MD5 HA1
//!   column (`md5secret`), which is only usable when computed for the proxy realm.
//! - `ps_auths`: by `auth_type` — `userpass`/`digest` (or empty): `password`, else
//!   `password_digest` (`ALG:hex`); `md5`: `md5_cred`; anything else (`google_oauth`): none.
//!   A stored HA1 is usable only if the row's `realm` is empty or equals the proxy realm.
//! - custom: per `password_kind`, with the optional realm column checked the same way.

use super::config::{Layout, PasswordKind, RowKind};
use super::DbError;
use crate::auth::Algorithm;
use crate::auth::Credential;

/// One row, by meaning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub user: String,
    pub password: Option<String>,
    pub md5: Option<String>,
    pub realm: Option<String>,
    pub auth_type: Option<String>,
    pub digest: Option<String>,
}

/// Which field of [`RawRow`] a selected column fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    User,
    Password,
    Md5,
    Realm,
    AuthType,
    Digest,
}

impl RawRow {
    pub fn set(&mut self, slot: Slot, v: Option<String>) {
        match slot {
            Slot::User => self.user = v.unwrap_or_default(),
            Slot::Password => self.password = v,
            Slot::Md5 => self.md5 = v,
            Slot::Realm => self.realm = v,
            Slot::AuthType => self.auth_type = v,
            Slot::Digest => self.digest = v,
        }
    }
}

/// The statements of one connection.
#[derive(Debug, Clone)]
pub struct Plan {
    pub select_all: String,
    pub select_one: String,
    pub slots: Vec<Slot>,
}

/// SQL identifier quoting style.
#[derive(Debug, Clone, Copy)]
pub enum Quote {
    Backtick,
    Double,
}

fn quote(q: Quote, ident: &str) -> String {
    let c = match q {
        Quote::Backtick => '`',
        Quote::Double => '"',
    };
    ident
        .split('.')
        .map(|p| format!("{c}{p}{c}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The probe statement listing the table's columns.
pub fn probe_sql(layout: &Layout, q: Quote) -> String {
    format!("SELECT * FROM {} WHERE 1=0", quote(q, &layout.table))
}

/// Builds the plan from the columns the table has.
pub fn plan(layout: &Layout, present: &[String], q: Quote) -> Result<Plan, DbError> {
    let has = |c: &str| present.iter().any(|p| p.eq_ignore_ascii_case(c));
    let missing = |c: &str| DbError::MissingColumn {
        table: layout.table.as_str().into(),
        column: c.into(),
    };
    let mut cols: Vec<(Slot, &str)> = vec![
        (Slot::User, &layout.user),
        (Slot::Password, &layout.password),
    ];
    for (slot, opt) in [
        (Slot::Md5, &layout.md5),
        (Slot::Realm, &layout.realm),
        (Slot::AuthType, &layout.auth_type),
        (Slot::Digest, &layout.digest),
    ] {
        if let Some((name, required)) = opt {
            if has(name) {
                cols.push((slot, name));
            } else if *required {
                return Err(missing(name));
            }
        }
    }
    for (_, c) in &cols[..2] {
        if !has(c) {
            return Err(missing(c));
        }
    }
    let list = cols
        .iter()
        .map(|(_, c)| quote(q, c))
        .collect::<Vec<_>>()
        .join(", ");
    let table = quote(q, &layout.table);
    Ok(Plan {
        select_all: format!("SELECT {list} FROM {table}"),
        select_one: format!(
            "SELECT {list} FROM {table} WHERE {} = ?",
            quote(q, &layout.user)
        ),
        slots: cols.into_iter().map(|(s, _)| s).collect(),
    })
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Turns a row into a credential for `realm`; `None` when the row holds nothing usable.
pub fn to_credential(
    kind: &RowKind,
    row: &RawRow,
    realm: &str,
    keep_plain: bool,
) -> Option<Credential> {
    if row.user.is_empty() {
        return None;
    }
    let realm_ok = non_empty(&row.realm).is_none_or(|r| r == realm);
    let plain = |pw: &str| Some(Credential::from_plain(&row.user, realm, pw, keep_plain));
    let hashed = |alg: Algorithm, hex: &str| {
        let mut c = Credential::default();
        (realm_ok && c.set_ha1_hex(alg, hex)).then_some(c)
    };
    match kind {
        RowKind::ChanSip => match (
            row.password.as_deref().filter(|p| !p.is_empty()),
            non_empty(&row.md5),
        ) {
            (Some(pw), _) => plain(pw),
            (None, Some(md5)) => hashed(Algorithm::Md5, md5),
            (None, None) => None,
        },
        RowKind::PsAuths => {
            let at = non_empty(&row.auth_type).unwrap_or("userpass");
            if at.eq_ignore_ascii_case("userpass") || at.eq_ignore_ascii_case("digest") {
                if let Some(pw) = row.password.as_deref().filter(|p| !p.is_empty()) {
                    return plain(pw);
                }
                let (alg, hex) = non_empty(&row.digest)?.split_once(':')?;
                hashed(Algorithm::parse(alg.trim())?, hex)
            } else if at.eq_ignore_ascii_case("md5") {
                hashed(Algorithm::Md5, non_empty(&row.md5)?)
            } else {
                None
            }
        }
        RowKind::Custom(pk) => {
            let v = row.password.as_deref().filter(|p| !p.is_empty())?;
            match pk {
                PasswordKind::Plain => plain(v),
                PasswordKind::Ha1Md5 => hashed(Algorithm::Md5, v),
                PasswordKind::Ha1Sha256 => hashed(Algorithm::Sha256, v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash;
    use crate::db::config::CredentialsConfig;

    fn row(user: &str, f: impl FnOnce(&mut RawRow)) -> RawRow {
        let mut r = RawRow {
            user: user.into(),
            ..RawRow::default()
        };
        f(&mut r);
        r
    }

    fn md5(u: &str, r: &str, p: &str) -> String {
        hash::ha1(Algorithm::Md5, u, r, p).as_str().to_string()
    }

    #[test]
    fn chan_sip_rules() {
        let k = RowKind::ChanSip;
        let c = to_credential(
            &k,
            &row("a", |r| r.password = Some("pw".into())),
            "R",
            false,
        )
        .unwrap();
        assert_eq!(c, Credential::from_plain("a", "R", "pw", false));
        let h = row("a", |r| {
            r.password = Some(String::new());
            r.md5 = Some(md5("a", "R", "pw"));
        });
        assert_eq!(
            to_credential(&k, &h, "R", false)
                .unwrap()
                .ha1_hex(Algorithm::Md5),
            c.ha1_hex(Algorithm::Md5)
        );
        assert!(to_credential(&k, &row("a", |_| {}), "R", false).is_none());
        assert!(
            to_credential(&k, &row("", |r| r.password = Some("x".into())), "R", false).is_none()
        );
    }

    #[test]
    fn ps_auths_rules() {
        let k = RowKind::PsAuths;
        let up = row("b", |r| {
            r.auth_type = Some("userpass".into());
            r.password = Some("pw".into());
        });
        assert_eq!(
            to_credential(&k, &up, "R", false),
            Some(Credential::from_plain("b", "R", "pw", false))
        );
        let m = row("b", |r| {
            r.auth_type = Some("md5".into());
            r.md5 = Some(md5("b", "R", "pw"));
        });
        assert!(to_credential(&k, &m, "R", false).is_some());
        let mut other_realm = m.clone();
        other_realm.realm = Some("asterisk".into());
        assert!(to_credential(&k, &other_realm, "R", false).is_none());
        let sha = hash::ha1(Algorithm::Sha256, "b", "R", "pw");
        let d = row("b", |r| {
            r.auth_type = Some("digest".into());
            r.realm = Some("R".into());
            r.digest = Some(format!("SHA-256:{}", sha.as_str()));
        });
        let c = to_credential(&k, &d, "R", false).unwrap();
        assert_eq!(c.ha1_hex(Algorithm::Sha256), Some(sha));
        assert!(c.ha1_hex(Algorithm::Md5).is_none());
        let oauth = row("b", |r| {
            r.auth_type = Some("google_oauth".into());
            r.password = Some("pw".into());
        });
        assert!(to_credential(&k, &oauth, "R", false).is_none());
    }

    #[test]
    fn plans() {
        let l = CredentialsConfig::default().resolve().unwrap();
        let p = plan(
            &l,
            &["id".into(), "NAME".into(), "secret".into()],
            Quote::Backtick,
        )
        .unwrap();
        assert_eq!(p.select_all, "SELECT `name`, `secret` FROM `sippeers`");
        assert_eq!(
            p.select_one,
            "SELECT `name`, `secret` FROM `sippeers` WHERE `name` = ?"
        );
        let p = plan(
            &l,
            &["name".into(), "secret".into(), "md5secret".into()],
            Quote::Double,
        )
        .unwrap();
        assert_eq!(p.slots, vec![Slot::User, Slot::Password, Slot::Md5]);
        assert!(matches!(
            plan(&l, &["name".into()], Quote::Double),
            Err(DbError::MissingColumn { .. })
        ));
    }
}
