//! `;name[=value]` parameter lists (header params and URI params), kept as one raw slice.
//!
//! A [`Params`] is validated once when the enclosing value is parsed; lookups then walk
//! the raw bytes again (lists are short, so this beats building an index). LWS around `;`
//! and `=` is allowed, as RFC 3261's `SEMI` and `EQUAL` permit.
//!
//! Names are tokens and unquoted values UTF-8 text; a quoted value may hold any bytes
//! (header parameters of From/To/Contact come from old phones in Latin-1). Such an item is
//! forwarded untouched but never interpreted: lookups skip items that are not UTF-8. URI and
//! Via parameters are parsed from text that is already UTF-8.

use super::scan::{ascii_or_utf8, quoted_end, trim_str, Split};
use super::ParseError;

/// A raw parameter list, e.g. `;branch=z9hG4bK1;rport`. Starts with `;` unless empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'b> {
    raw: &'b [u8],
}

/// One parameter: name, optional value (quoted values keep their quotes), raw item text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Param<'b> {
    pub(crate) name: &'b str,
    pub(crate) value: Option<&'b str>,
    pub(crate) raw: &'b str,
}

impl<'b> Params<'b> {
    /// Validates `raw` (empty, or starting with `;`) as a parameter list.
    pub fn parse<S: AsRef<[u8]> + ?Sized>(raw: &'b S) -> Result<Params<'b>, ParseError> {
        let raw = raw.as_ref();
        let p = Params { raw };
        if raw.is_empty() {
            return Ok(p);
        }
        if raw.first() != Some(&b';') {
            return Err(ParseError::BadParams);
        }
        for item in Split::new(raw.get(1..).unwrap_or(&[]), b';') {
            check_item(item)?;
        }
        // A trailing ';' yields an empty last item only when something follows it in
        // `Split`; reject a dangling one explicitly.
        if super::scan::trim(raw).last() == Some(&b';') {
            return Err(ParseError::BadParams);
        }
        Ok(p)
    }

    /// An empty list.
    pub const fn empty() -> Params<'static> {
        Params { raw: b"" }
    }

    /// The raw bytes, starting with `;` (or empty).
    pub fn raw(&self) -> &'b [u8] {
        self.raw
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Looks a parameter up by name, case-insensitively. `Some(None)` is a parameter
    /// without value (`;lr`); quoted values keep their quotes.
    pub fn get(&self, name: &str) -> Option<Option<&'b str>> {
        self.items()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }

    /// All parameters in order as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'b str, Option<&'b str>)> + 'b {
        self.items().map(|p| (p.name, p.value))
    }

    pub(crate) fn items(&self) -> impl Iterator<Item = Param<'b>> + 'b {
        let body = self.raw.get(1..).unwrap_or(&[]);
        Split::new(body, b';').filter_map(move |item| {
            // An item that is not UTF-8 (a Latin-1 quoted value) is never interpreted.
            let raw = ascii_or_utf8(item)?;
            let (name, value) = split_item(raw);
            Some(Param { name, value, raw })
        })
    }
}

fn split_item(item: &str) -> (&str, Option<&str>) {
    match super::scan::find_byte(item, b'=') {
        Some(eq) => (
            trim_str(item.get(..eq).unwrap_or("")),
            Some(trim_str(item.get(eq + 1..).unwrap_or(""))),
        ),
        None => (trim_str(item), None),
    }
}

fn is_name_char(b: u8) -> bool {
    super::scan::is_token(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'$')
}

fn check_item(item: &[u8]) -> Result<(), ParseError> {
    let (name, value) = match memchr::memchr(b'=', item) {
        Some(eq) => (
            super::scan::trim(item.get(..eq).unwrap_or(&[])),
            Some(super::scan::trim(item.get(eq + 1..).unwrap_or(&[]))),
        ),
        None => (super::scan::trim(item), None),
    };
    if name.is_empty() || !name.iter().all(|&b| is_name_char(b)) {
        return Err(ParseError::BadParams);
    }
    let Some(vb) = value else { return Ok(()) };
    if vb.first() == Some(&b'"') {
        // A quoted string: any bytes (quoted-pairs honoured) up to the closing quote.
        return match quoted_end(vb, 0) {
            Some(end) if end + 1 == vb.len() => Ok(()),
            _ => Err(ParseError::BadParams),
        };
    }
    if vb.is_empty()
        || vb.iter().any(|&b| b <= b' ' || b == b'"' || b == 0x7f)
        || ascii_or_utf8(vb).is_none()
    {
        return Err(ParseError::BadParams);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let p = Params::parse(";branch=z9hG4bK1;RPORT ; q = 0.5;x=\"a;b\";lr").unwrap();
        assert_eq!(p.get("branch"), Some(Some("z9hG4bK1")));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.get("Q"), Some(Some("0.5")));
        assert_eq!(p.get("x"), Some(Some("\"a;b\"")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("nope"), None);
        assert_eq!(p.iter().count(), 5);
    }

    #[test]
    fn latin1_only_in_quoted_values() {
        let p = Params::parse(b";tag=1;x=\"M\xfcller\";lr").unwrap();
        assert_eq!(p.get("tag"), Some(Some("1")));
        assert_eq!(p.get("x"), None, "never interpreted");
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.iter().count(), 2);
        for bad in [&b";x=M\xfcller"[..], b";\xfc=1", b";a=\"\xfc"] {
            assert_eq!(Params::parse(bad), Err(ParseError::BadParams), "{bad:?}");
        }
        assert!(
            Params::parse(";x=caf\u{e9}").is_ok(),
            "UTF-8 text stays valid"
        );
    }

    #[test]
    fn rejects() {
        for bad in [";;", ";a;", "a", ";=b", ";a=", ";a=\"x", ";a b=c", ";a=b c"] {
            assert_eq!(Params::parse(bad), Err(ParseError::BadParams), "{bad:?}");
        }
        assert!(Params::parse("").unwrap().is_empty());
        assert!(Params::parse(";\r\n  tag = 98asjd8").is_ok());
    }
}
