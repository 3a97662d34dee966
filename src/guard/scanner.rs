//! Known scanner User-Agents: a case-insensitive multi-substring match against a short list.
//!
//! Built once from the needles: three 257-entry tables of 64-bit masks, one per needle byte
//! position 0..3, where bit `k` of `table[p][b]` says "needle `k` may have byte `b` (either
//! ASCII case) at position `p`" (entry 256 stands for "past the end of the value", allowed
//! only for needles shorter than `p + 1`). Scanning a value is one pass: at each position the
//! masks of the next three bytes are ANDed, and only the needles left (rarely any) are
//! compared in full with `eq_ignore_ascii_case`. No allocation, no lowercased copy, any
//! length.

/// Substrings that only scanning and attack tools put in their User-Agent. `sipsak` is not
/// one of them: it is the monitoring tool behind Nagios' `check_sip` (add it to
/// `scanner_user_agents` to drop it anyway).
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "iwar",
    "vaxsipuseragent",
    "vaxipuseragent",
    "pplsip",
    "sundayddr",
    "smap",
    "siparmyknife",
    "nmap nse",
];

/// Longest needle accepted.
pub const MAX_NEEDLE_LEN: usize = 64;

/// Most needles one matcher holds (one bit each in a `u64`).
pub const MAX_NEEDLES: usize = 64;

/// Needle byte positions filtered through tables before a full comparison.
const FILTER: usize = 3;
/// Table entry for "past the end of the value".
const END: usize = 256;

/// A case-insensitive multi-substring matcher.
#[derive(Clone)]
pub struct Scanner {
    needles: Vec<Box<[u8]>>,
    masks: Box<[[u64; 257]; FILTER]>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Scanner {
    /// Build from needles: trimmed, empty ones ignored, each cut to [`MAX_NEEDLE_LEN`] bytes,
    /// at most [`MAX_NEEDLES`] kept (`GuardConfig::validate` refuses more).
    pub fn new<S: AsRef<str>>(needles: &[S]) -> Scanner {
        let mut kept: Vec<Box<[u8]>> = Vec::new();
        let mut masks = Box::new([[0u64; 257]; FILTER]);
        for n in needles {
            let bytes = n.as_ref().trim().as_bytes();
            let bytes = bytes.get(..MAX_NEEDLE_LEN).unwrap_or(bytes);
            if bytes.is_empty() || kept.len() == MAX_NEEDLES {
                continue;
            }
            let bit = 1u64 << kept.len();
            for (p, table) in masks.iter_mut().enumerate() {
                match bytes.get(p) {
                    Some(&b) => {
                        table[usize::from(b.to_ascii_lowercase())] |= bit;
                        table[usize::from(b.to_ascii_uppercase())] |= bit;
                    }
                    // Shorter than p + 1: any byte, or the end, may follow.
                    None => table.iter_mut().for_each(|m| *m |= bit),
                }
            }
            kept.push(bytes.into());
        }
        Scanner {
            needles: kept,
            masks,
        }
    }

    /// Whether `user_agent` contains one of the needles, ignoring ASCII case.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        if self.needles.is_empty() {
            return false;
        }
        let [m0, m1, m2] = &*self.masks;
        let at = |i: usize| user_agent.get(i).map_or(END, |&b| usize::from(b));
        for (i, &b) in user_agent.iter().enumerate() {
            let mut m = m0[usize::from(b)];
            if m == 0 {
                continue;
            }
            m &= m1[at(i + 1)] & m2[at(i + 2)];
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                m &= m - 1;
                let Some(needle) = self.needles.get(k) else {
                    continue;
                };
                let hit = user_agent
                    .get(i..i + needle.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(needle));
                if hit {
                    return true;
                }
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.needles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
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
            ("sipsak 0.9.8", false),
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
    fn long_values_are_searched_to_the_end() {
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
        let s = Scanner::new(&["x", "Yz"]);
        assert!(s.matches(b"abX"));
        assert!(s.matches(b"ayZ"));
        assert!(!s.matches(b"aby"));
        let many: Vec<String> = (0..100).map(|i| format!("needle{i:03}")).collect();
        let s = Scanner::new(&many);
        assert_eq!(s.len(), MAX_NEEDLES);
        assert!(s.matches(b"..NEEDLE063.."));
        assert!(!s.matches(b"..needle064.."));
        let long = "a".repeat(100);
        let s = Scanner::new(&[long.as_str()]);
        assert_eq!(s.len(), 1);
        assert!(s.matches("A".repeat(64).as_bytes()));
    }
}
