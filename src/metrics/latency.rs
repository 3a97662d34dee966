//! One latency series as a worker records it: an hdrhistogram (percentiles for `ctl stats`
//! and `/v1/stats`) and fixed Prometheus buckets with an exact sum (the `_bucket{le=..}`,
//! `_sum` and `_count` of `/metrics`, which Prometheus can aggregate across instances and
//! window with `rate()`).
//!
//! Both parts are allocated once, when the worker starts; recording is a saturating hdr
//! record plus a search over [`BOUNDS_NS`] and two additions, and merging (a scrape) or
//! copying (a publication) never resizes anything.

use hdrhistogram::Histogram;

/// Upper bounds of the Prometheus buckets in ns (the `+Inf` bucket is implicit): 5 µs to
/// 30 s, so that the proxy's own processing time (µs) and Asterisk's response time (ms to
/// s) share one layout.
pub const BOUNDS_NS: [u64; 21] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Buckets per series: one per bound plus `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Non-cumulative bucket counts and the exact sum of the values recorded, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// `counts[i]`: values in `(BOUNDS_NS[i-1], BOUNDS_NS[i]]`; the last one is `+Inf`.
    pub counts: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            counts: [0; BUCKETS],
            sum_ns: 0,
        }
    }
}

impl Buckets {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn add(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, non-cumulative count)` per bucket, `+Inf` last: the form
    /// `prometheus_client`'s histogram encoder takes.
    pub fn seconds(&self) -> [(f64, u64); BUCKETS] {
        let mut out = [(f64::INFINITY, 0); BUCKETS];
        for (i, (o, c)) in out.iter_mut().zip(self.counts).enumerate() {
            let bound = BOUNDS_NS.get(i).map_or(f64::INFINITY, |b| *b as f64 / 1e9);
            *o = (bound, c);
        }
        out
    }
}

/// Largest value a latency histogram tracks (60 s in ns); larger values are clamped.
pub const MAX_TRACKED_NS: u64 = 60_000_000_000;

/// Significant decimal digits of the hdr histograms (1% precision).
const SIGFIG: u8 = 2;

/// A latency histogram in nanoseconds with the bounds every sipfront histogram shares (so
/// merging never resizes or allocates).
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds well inside hdrhistogram's limits (low >= 1, high >= 2 * low,
    // sigfig <= 5): this cannot fail for any input.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIG).expect("constant histogram bounds")
}

/// One latency series: percentiles (hdr) and Prometheus buckets, cumulative since start.
#[derive(Debug, Clone)]
pub struct Latency {
    pub hdr: Histogram<u64>,
    pub buckets: Buckets,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hdr: new_histogram(),
            buckets: Buckets::default(),
        }
    }
}

impl Latency {
    /// Record one value (ns, at least 1). Never allocates.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let ns = ns.max(1);
        self.hdr.saturating_record(ns);
        self.buckets.record(ns);
    }

    /// `self += other` (same bounds everywhere: nothing is resized).
    pub fn add(&mut self, other: &Latency) {
        // Same bounds: adding cannot fail.
        let _ = self.hdr.add(&other.hdr);
        self.buckets.add(&other.buckets);
    }

    /// `self = other` without allocating: a reset and a memory copy.
    pub fn copy_from(&mut self, other: &Latency) {
        self.hdr.reset();
        let _ = self.hdr.add(&other.hdr);
        self.buckets = other.buckets;
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.hdr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hdr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut b = Buckets::default();
        for ns in [1, 5_000, 5_001, 30_000_000_000, 30_000_000_001, u64::MAX] {
            b.record(ns);
        }
        assert_eq!(b.counts[0], 2, "1 ns and exactly 5 µs are le=5e-06");
        assert_eq!(b.counts[1], 1);
        assert_eq!(b.counts[BUCKETS - 2], 1, "30 s is le=30");
        assert_eq!(b.counts[BUCKETS - 1], 2, "above 30 s is +Inf");
        assert_eq!(b.count(), 6);
        assert_eq!(b.sum_ns, u64::MAX, "the sum saturates");
        let s = b.seconds();
        assert_eq!(s[0], (5e-6, 2));
        assert_eq!(s[BUCKETS - 2].0, 30.0);
        assert!(s[BUCKETS - 1].0.is_infinite());
    }

    #[test]
    fn merge_and_copy() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.record(7_000);
        b.record(2_000_000);
        b.record(0);
        a.add(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.buckets.count(), 3);
        assert_eq!(a.buckets.sum_ns, 7_000 + 2_000_000 + 1);
        let mut c = Latency::default();
        c.record(1);
        c.copy_from(&b);
        assert_eq!(c.len(), 2);
        assert_eq!(c.buckets, b.buckets);
    }
}
