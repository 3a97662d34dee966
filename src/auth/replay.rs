//! Replay guard: the highest nonce count (`nc`) seen per nonce, in bounded, lock-striped memory.
//!
//! A response is accepted only if its `nc` is greater than the last one recorded for the same
//! nonce (responses without qop count as `nc = 0`, so such a nonce is single use). The table is
//! split into [`STRIPES`] independently locked stripes chosen by the nonce's MAC bytes (already
//! uniformly distributed), so workers rarely contend.
//!
//! Memory is bounded: each stripe holds at most `capacity / STRIPES` nonces. When a stripe is
//! full, nonces past their lifetime are dropped first (they can only ever be stale); if it is
//! still full the oldest nonce is evicted and the stripe's `floor_ms` rises to its issue time.
//! A nonce issued at or before the floor that is not in the table is answered as
//! [`ReplayCheck::Forgotten`] (the caller treats it as stale: the client re-authenticates with
//! a fresh nonce), so eviction can never let a replay through.

use std::collections::HashMap;
use std::sync::Mutex;

use super::nonce::NonceKey;

/// Number of independently locked stripes.
pub const STRIPES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// First use of this `nc` for this nonce; recorded.
    Fresh,
    /// `nc` not greater than the last one seen.
    Replay,
    /// The nonce was evicted (or is older than anything still tracked): ask for a new one.
    Forgotten,
}

#[derive(Clone, Copy)]
struct Slot {
    nc: u32,
    issued_ms: u64,
}

#[derive(Default)]
struct Stripe {
    map: HashMap<NonceKey, Slot>,
    floor_ms: u64,
}

/// Bounded per-nonce `nc` tracking.
pub struct ReplayGuard {
    stripes: Box<[Mutex<Stripe>]>,
    per_stripe: usize,
    ttl_ms: u64,
}

impl ReplayGuard {
    /// `capacity` nonces in total; `ttl_ms` is the nonce lifetime.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        let per_stripe = (capacity / STRIPES).max(1);
        ReplayGuard {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            per_stripe,
            ttl_ms,
        }
    }

    /// Checks `nc` for the nonce `key` (issued at `issued_ms`) and records it when fresh.
    pub fn check(&self, key: &NonceKey, issued_ms: u64, nc: u32, now_ms: u64) -> ReplayCheck {
        let idx = usize::from(key[0]) % STRIPES;
        let Some(lock) = self.stripes.get(idx) else {
            return ReplayCheck::Forgotten;
        };
        // A poisoned stripe only means another thread panicked mid-update; the map is still
        // a valid map, so keep using it.
        let mut stripe = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = stripe.map.get_mut(key) {
            if nc > slot.nc {
                slot.nc = nc;
                return ReplayCheck::Fresh;
            }
            return ReplayCheck::Replay;
        }
        if issued_ms <= stripe.floor_ms {
            return ReplayCheck::Forgotten;
        }
        if stripe.map.len() >= self.per_stripe {
            let ttl = self.ttl_ms;
            stripe
                .map
                .retain(|_, s| s.issued_ms.saturating_add(ttl) >= now_ms);
            if stripe.map.len() >= self.per_stripe {
                let oldest = stripe
                    .map
                    .iter()
                    .min_by_key(|(_, s)| s.issued_ms)
                    .map(|(k, s)| (*k, s.issued_ms));
                if let Some((k, ts)) = oldest {
                    stripe.map.remove(&k);
                    stripe.floor_ms = stripe.floor_ms.max(ts);
                    if issued_ms <= stripe.floor_ms {
                        return ReplayCheck::Forgotten;
                    }
                }
            }
        }
        stripe.map.insert(*key, Slot { nc, issued_ms });
        ReplayCheck::Fresh
    }

    /// Number of nonces tracked (for metrics and tests).
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses an `nc` value: exactly 8 hex digits (RFC 2617 §3.2.2), at least 1.
pub fn parse_nc(nc: &str) -> Option<u32> {
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok().filter(|&n| n >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> NonceKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn increasing_nc_only() {
        let g = ReplayGuard::new(4096, 1000);
        assert_eq!(g.check(&key(1), 10, 1, 10), ReplayCheck::Fresh);
        assert_eq!(g.check(&key(1), 10, 1, 10), ReplayCheck::Replay);
        assert_eq!(g.check(&key(1), 10, 3, 10), ReplayCheck::Fresh);
        assert_eq!(g.check(&key(1), 10, 2, 10), ReplayCheck::Replay);
        assert_eq!(g.check(&key(2), 10, 0, 10), ReplayCheck::Fresh);
        assert_eq!(g.check(&key(2), 10, 0, 10), ReplayCheck::Replay);
    }

    #[test]
    fn bounded_and_never_lets_replay_through() {
        // capacity 64 => one slot per stripe; all keys below share stripe 0.
        let g = ReplayGuard::new(64, 1_000_000);
        assert_eq!(g.check(&[0; 16], 100, 1, 100), ReplayCheck::Fresh);
        let mut k2 = [0u8; 16];
        k2[1] = 1;
        assert_eq!(g.check(&k2, 200, 1, 200), ReplayCheck::Fresh);
        // the first nonce was evicted: its replay is not accepted
        assert_eq!(g.check(&[0; 16], 100, 1, 200), ReplayCheck::Forgotten);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn expired_entries_make_room_first() {
        let g = ReplayGuard::new(64, 10);
        assert_eq!(g.check(&[0; 16], 100, 1, 100), ReplayCheck::Fresh);
        let mut k2 = [0u8; 16];
        k2[1] = 1;
        assert_eq!(g.check(&k2, 50, 1, 200), ReplayCheck::Fresh);
    }

    #[test]
    fn nc_parsing() {
        assert_eq!(parse_nc("00000001"), Some(1));
        assert_eq!(parse_nc("0000000a"), Some(10));
        assert_eq!(parse_nc("FFFFFFFF"), Some(u32::MAX));
        for bad in ["", "1", "00000000", "0000000g", "000000001", "+0000001"] {
            assert_eq!(parse_nc(bad), None, "{bad}");
        }
    }
}
