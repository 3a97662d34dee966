//! Per-client token buckets: every datagram from a source costs one token; tokens refill at
//! `rate_pps` per second up to `rate_burst`; an empty bucket means the datagram is dropped.
//!
//! Buckets live in a [`Striped`] table bounded to `max_tracked_ips` entries. Evicting the
//! least recently seen bucket is harmless: a client that comes back gets a full bucket, which
//! is what an idle client's bucket would hold anyway. Tokens are counted in thousandths so
//! that refill is exact integer arithmetic: one millisecond at `rate_pps` adds `rate_pps`
//! milli-tokens.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::addr::ClientId;
use super::table::{Found, Hashing, Striped};

/// The verdict on one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admit {
    /// Process it.
    Ok,
    /// The source is over its rate: drop it silently.
    Limited,
}

const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    /// Milli-tokens available at `last_ms`.
    tokens: u64,
    last_ms: u64,
    /// Whether the previous datagram was limited (to log the start of an episode once).
    limiting: bool,
}

pub(super) struct RateLimiter {
    table: Striped<Bucket>,
    /// Milli-tokens added per millisecond (= packets per second); a reload may change it.
    per_ms: AtomicU64,
    /// Bucket size in milli-tokens; a reload may change it.
    burst: AtomicU64,
}

impl RateLimiter {
    pub fn new(rate_pps: u32, burst: u32, max_tracked: usize, stripes: usize) -> Self {
        RateLimiter {
            table: Striped::new(stripes, max_tracked),
            per_ms: AtomicU64::new(u64::from(rate_pps)),
            burst: AtomicU64::new(u64::from(burst.max(1)) * MILLI),
        }
    }

    /// New rate and burst (a reload); buckets keep their tokens, capped at the new burst
    /// when next touched.
    pub fn set_rate(&self, rate_pps: u32, burst: u32) {
        self.per_ms.store(u64::from(rate_pps), Relaxed);
        self.burst.store(u64::from(burst.max(1)) * MILLI, Relaxed);
    }

    /// Take one token from `id`'s bucket.
    pub fn admit(&self, hashing: &Hashing, id: ClientId, now_ms: u64) -> Admit {
        let key = hashing.key(id.0);
        let (per_ms, burst) = (self.per_ms.load(Relaxed), self.burst.load(Relaxed));
        let mut stripe = self.table.lock(key);
        let (b, found) = stripe.entry(key);
        if found != Found::Existing {
            b.tokens = burst;
            b.last_ms = now_ms;
        } else if now_ms > b.last_ms {
            let refill = (now_ms - b.last_ms).saturating_mul(per_ms);
            b.tokens = b.tokens.saturating_add(refill).min(burst);
            b.last_ms = now_ms;
        }
        // A clock that went backwards refills nothing and does not move `last_ms`.
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            b.limiting = false;
            return Admit::Ok;
        }
        let first = !b.limiting;
        b.limiting = true;
        stripe.counter += 1;
        drop(stripe);
        if first {
            tracing::warn!(source = %id.display_short(), "rate limit exceeded: dropping");
        }
        Admit::Limited
    }

    /// (limited datagrams, buckets tracked, buckets evicted)
    pub fn stats(&self) -> (u64, u64, u64) {
        let (mut limited, mut tracked, mut evicted) = (0, 0, 0);
        self.table.for_each(|s| {
            limited += s.counter;
            tracked += s.len() as u64;
            evicted += s.evicted;
        });
        (limited, tracked, evicted)
    }
}

impl ClientId {
    /// The client's address for a log line (IPv6 prefixes shown as their network address).
    pub(super) fn display_short(self) -> std::net::IpAddr {
        self.display(128).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn id(s: &str) -> ClientId {
        ClientId::of(s.parse::<IpAddr>().expect("test address"), 64)
    }

    #[test]
    fn burst_then_steady_rate_on_a_virtual_clock() {
        let h = Hashing::new();
        let rl = RateLimiter::new(10, 5, 1024, 4);
        let a = id("192.0.2.1");
        let t0 = 1_700_000_000_000;
        for i in 0..5 {
            assert_eq!(rl.admit(&h, a, t0), Admit::Ok, "burst packet {i}");
        }
        assert_eq!(rl.admit(&h, a, t0), Admit::Limited);
        assert_eq!(rl.admit(&h, a, t0 + 99), Admit::Limited, "0.99 token");
        assert_eq!(rl.admit(&h, a, t0 + 100), Admit::Ok, "one token per 100 ms");
        assert_eq!(rl.admit(&h, a, t0 + 100), Admit::Limited);
        // Another source is unaffected.
        assert_eq!(rl.admit(&h, id("192.0.2.2"), t0 + 100), Admit::Ok);
        // Long idle: refills to the burst, not beyond.
        let t1 = t0 + 3_600_000;
        for _ in 0..5 {
            assert_eq!(rl.admit(&h, a, t1), Admit::Ok);
        }
        assert_eq!(rl.admit(&h, a, t1), Admit::Limited);
        // A clock step backwards does not refill.
        assert_eq!(rl.admit(&h, a, t0), Admit::Limited);
        assert_eq!(rl.stats().0, 5);
    }

    #[test]
    fn sustained_rate_is_what_is_configured() {
        let h = Hashing::new();
        let rl = RateLimiter::new(50, 10, 64, 1);
        let a = id("2001:db8::1");
        let t0 = 5_000;
        // Offer 200 packets/s for 10 s (one every 5 ms): 10 burst + 50/s × 10 s pass.
        let passed = (0..2000u64)
            .filter(|i| rl.admit(&h, a, t0 + i * 5) == Admit::Ok)
            .count();
        assert!((505..=511).contains(&passed), "{passed}");
        // The same /64 shares the bucket.
        assert_eq!(rl.admit(&h, id("2001:db8::2"), t0 + 9_995), Admit::Limited);
    }

    #[test]
    fn bounded_memory_under_a_flood_of_sources() {
        let h = Hashing::new();
        let rl = RateLimiter::new(1, 1, 256, 8);
        let t = 1_000;
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(rl.admit(&h, ClientId::of(ip, 64), t), Admit::Ok);
        }
        let (limited, tracked, evicted) = rl.stats();
        assert_eq!(limited, 0);
        assert!(tracked <= 256, "{tracked}");
        assert_eq!(tracked + evicted, 100_000);
    }
}
