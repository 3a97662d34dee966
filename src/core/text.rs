//! [`InlineStr`]: a short string kept inline (a fixed array and a length), so a transaction
//! slot or a lookup request can own one without a heap allocation.

/// At most `N` bytes of UTF-8, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineStr<const N: usize> {
    buf: [u8; N],
    len: u16,
}

impl<const N: usize> InlineStr<N> {
    /// The empty string.
    pub const fn empty() -> Self {
        InlineStr {
            buf: [0; N],
            len: 0,
        }
    }

    /// A copy of `s`, or `None` when it is longer than `N` bytes.
    pub fn new(s: &str) -> Option<Self> {
        if s.len() > N || s.len() > usize::from(u16::MAX) {
            return None;
        }
        let mut out = Self::empty();
        out.buf[..s.len()].copy_from_slice(s.as_bytes());
        out.len = s.len() as u16;
        Some(out)
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> std::fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_fits() {
        let s = InlineStr::<8>::new("alice").unwrap();
        assert_eq!(s.as_str(), "alice");
        assert!(!s.is_empty());
        assert!(InlineStr::<4>::new("alice").is_none());
        assert!(InlineStr::<4>::empty().is_empty());
        assert_eq!(format!("{s:?}"), "\"alice\"");
    }
}
