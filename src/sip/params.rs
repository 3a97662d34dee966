//! `;name[=value]` parameter lists (header params and URI params), kept as one raw slice.
//!
//! A [`Params`] is validated once when the enclosing value is parsed; lookups then walk
//! the raw text again (lists are short, so this beats building an index). LWS around `;`
//! and `=` is allowed, as RFC 3261's `SEMI` and `EQUAL` permit.

use super::scan::{quoted_end, trim_str, Split};
use super::ParseError;

/// A raw parameter list, e.g. `;branch=z9hG4bK1;rport`. Starts with `;` unless empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'b> {
    raw: &'b str,
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
    pub fn parse(raw: &'b str) -> Result<Params<'b>, ParseError> {
        let p = Params { raw };
        if raw.is_empty() {
            return Ok(p);
        }
        if !raw.starts_with(';') {
            return Err(ParseError::BadParams);
        }
        for item in Split::new(raw.get(1..).unwrap_or("").as_bytes(), b';') {
            check_item(item)?;
        }
        // A trailing ';' yields an empty last item only when something follows it in
        // `Split`; reject a dangling one explicitly.
        if trim_str(raw).ends_with(';') {
            return Err(ParseError::BadParams);
        }
        Ok(p)
    }

    /// An empty list.
    pub const fn empty() -> Params<'static> {
        Params { raw: "" }
    }

    /// The raw text, starting with `;` (or empty).
    pub fn raw(&self) -> &'b str {
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
        let body = self.raw.get(1..).unwrap_or("");
        Split::new(body.as_bytes(), b';').filter_map(move |item| {
            // Items are sub-slices of `body`, which is valid UTF-8 cut on ASCII bytes.
            let raw = super::scan::sub_str(body, item)?;
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
    let item = std::str::from_utf8(item).map_err(|_| ParseError::BadParams)?;
    let (name, value) = split_item(item);
    if name.is_empty() || !name.bytes().all(is_name_char) {
        return Err(ParseError::BadParams);
    }
    let Some(v) = value else { return Ok(()) };
    let vb = v.as_bytes();
    if vb.first() == Some(&b'"') {
        return match quoted_end(vb, 0) {
            Some(end) if end + 1 == vb.len() => Ok(()),
            _ => Err(ParseError::BadParams),
        };
    }
    if vb.is_empty() || vb.iter().any(|&b| b <= b' ' || b == b'"' || b == 0x7f) {
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
    fn rejects() {
        for bad in [";;", ";a;", "a", ";=b", ";a=", ";a=\"x", ";a b=c", ";a=b c"] {
            assert_eq!(Params::parse(bad), Err(ParseError::BadParams), "{bad:?}");
        }
        assert!(Params::parse("").unwrap().is_empty());
        assert!(Params::parse(";\r\n  tag = 98asjd8").is_ok());
    }
}
