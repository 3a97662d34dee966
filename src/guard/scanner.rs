//! Known scanner User-Agents: a case-insensitive substring match against a short list.
//!
//! The needles are lowercased once when the guard is built, each with a prebuilt
//! `memchr::memmem::Finder`. A User-Agent value is lowercased into a stack buffer, in windows
//! that overlap by the longest needle less one byte, so a value of any length is searched
//! without allocating and no match can straddle two windows unseen.

use memchr::memmem::Finder;

/// Substrings that only scanning and attack tools put in their User-Agent. `sipsak` is a
/// monitoring tool as well: run it from an `allow`ed address or remove it from the list.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sipsak",
    "iwar",
    "vaxsipuseragent",
    "vaxipuseragent",
    "pplsip",
    "sundayddr",
    "smap",
    "siparmyknife",
    "nmap nse",
];

/// Longest needle accepted (the window overlap depends on it).
pub const MAX_NEEDLE_LEN: usize = 64;

/// Bytes lowercased per window.
const WINDOW: usize = 256;

/// A case-insensitive multi-substring matcher.
#[derive(Debug, Clone)]
pub struct Scanner {
    finders: Vec<Finder<'static>>,
    longest: usize,
}

impl Scanner {
    /// Build from needles (empty ones are ignored; longer than [`MAX_NEEDLE_LEN`] are cut).
    pub fn new<S: AsRef<str>>(needles: &[S]) -> Scanner {
        let mut finders = Vec::with_capacity(needles.len());
        let mut longest = 0;
        for n in needles {
            let mut lower = n.as_ref().trim().as_bytes().to_ascii_lowercase();
            lower.truncate(MAX_NEEDLE_LEN);
            if lower.is_empty() {
                continue;
            }
            longest = longest.max(lower.len());
            finders.push(Finder::new(&lower).into_owned());
        }
        Scanner { finders, longest }
    }

    /// Whether `user_agent` contains one of the needles, ignoring ASCII case.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        if self.finders.is_empty() || user_agent.is_empty() {
            return false;
        }
        let mut buf = [0u8; WINDOW];
        let step = WINDOW - self.longest.saturating_sub(1);
        let mut start = 0;
        loop {
            let end = (start + WINDOW).min(user_agent.len());
            let Some(src) = user_agent.get(start..end) else {
                return false;
            };
            let dst = &mut buf[..src.len()];
            dst.copy_from_slice(src);
            dst.make_ascii_lowercase();
            if self.finders.iter().any(|f| f.find(dst).is_some()) {
                return true;
            }
            if end == user_agent.len() {
                return false;
            }
            start += step;
        }
    }

    pub fn len(&self) -> usize {
        self.finders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_matches_scanners_and_not_phones() {
        let s = Scanner::new(DEFAULT_SCANNER_USER_AGENTS);
        let cases: &[(&str, bool)] = &[
            ("friendly-scanner", true),
            ("Friendly-Scanner 1.0", true),
            ("sipvicious", true),
            ("SIPVicious 0.3.4", true),
            ("sipcli/v1.8", true),
            ("VaxSIPUserAgent/3.1", true),
            ("pplsip", true),
            ("iWar", true),
            ("Nmap NSE", true),
            ("sundayddr", true),
            ("sipsak 0.9.8", true),
            ("Yealink SIP-T46S 66.86.0.15", false),
            ("PolycomVVX-VVX_411-UA/6.4.3.5018", false),
            ("Grandstream GXP2170 1.0.11.3", false),
            ("Zoiper rv2.10.20.1", false),
            (
                "Linphone Desktop/5.2.4 (Ubuntu 24.04) LinphoneCore/5.3.47",
                false,
            ),
            ("MicroSIP/3.21.3", false),
            ("Asterisk PBX 20.5.0", false),
            ("Cisco-SIPGateway/IOS-15.x", false),
            ("", false),
        ];
        for &(ua, want) in cases {
            assert_eq!(s.matches(ua.as_bytes()), want, "{ua:?}");
        }
    }

    #[test]
    fn long_values_are_searched_across_window_boundaries() {
        let s = Scanner::new(&["Friendly-Scanner"]);
        for pad in [0, 1, 200, 240, 241, 250, 255, 256, 300, 1000, 5000] {
            let mut ua = vec![b'x'; pad];
            ua.extend_from_slice(b"FRIENDLY-scanner");
            ua.extend_from_slice(&vec![b'y'; pad % 7]);
            assert!(s.matches(&ua), "pad {pad}");
            let mut miss = vec![b'x'; pad];
            miss.extend_from_slice(b"friendly-scanne");
            assert!(!s.matches(&miss), "pad {pad} miss");
        }
    }

    #[test]
    fn empty_and_oversized_needles() {
        let s = Scanner::new(&["", "  "]);
        assert!(s.is_empty());
        assert!(!s.matches(b"anything"));
        let long = "a".repeat(100);
        let s = Scanner::new(&[long.as_str()]);
        assert_eq!(s.len(), 1);
        assert!(s.matches("A".repeat(64).as_bytes()));
    }
}
