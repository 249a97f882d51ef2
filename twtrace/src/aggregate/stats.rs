//! Small statistics for the aggregator: a log-bucketed histogram (percentiles within about 3%)
//! and per-second counters over a sliding window (rates). Both are kept per destination row,
//! and a crawler's host has a hundred thousand rows: each is a few dozen bytes until it is
//! used, and grows only with what it holds (a histogram with the buckets it has values in, a
//! rate with a ring only once it has counted in two different seconds).

/// Sub-buckets per power of two: relative error of a reported percentile below 1/32.
const SUB_BUCKETS: u64 = 32;

/// Histogram of non-negative integers (e.g. nanoseconds), exact below `SUB_BUCKETS`. Sparse:
/// only buckets that hold values take room (16 bytes each), in bucket order. A row with one
/// connect() search holds one bucket; a busy global histogram a few dozen.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// (bucket, count), ascending by bucket; no zero counts. Bucket numbers stay below 2,048
    /// for any u64 value (32 + 59 × 32).
    counts: Vec<(u16, u64)>,
    total: u64,
    min: u64,
    max: u64,
    /// Of every value recorded (the exporter's histograms carry it).
    sum: u128,
}

impl Histogram {
    /// No values (a `const`, for a shared empty one).
    pub const EMPTY: Histogram = Histogram { counts: Vec::new(), total: 0, min: 0, max: 0, sum: 0 };

    fn bucket_of(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let magnitude = 63 - u64::from(value.leading_zeros()); // floor(log2)
        let shift = magnitude - 5; // SUB_BUCKETS = 2^5
        let sub = (value >> shift) - SUB_BUCKETS;
        (SUB_BUCKETS + (magnitude - 5) * SUB_BUCKETS + sub) as usize
    }

    /// The smallest value that falls in `bucket` (what a percentile reports).
    fn low_of(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < SUB_BUCKETS {
            return b;
        }
        let magnitude = (b - SUB_BUCKETS) / SUB_BUCKETS + 5;
        let sub = (b - SUB_BUCKETS) % SUB_BUCKETS;
        (SUB_BUCKETS + sub) << (magnitude - 5)
    }

    /// The middle of a bucket, kept within the values seen.
    fn middle_of(&self, bucket: usize) -> u64 {
        let middle = (Self::low_of(bucket) + Self::low_of(bucket + 1).saturating_sub(1)) / 2;
        middle.clamp(self.min, self.max)
    }

    pub fn record(&mut self, value: u64) {
        let b = Self::bucket_of(value) as u16;
        match self.counts.binary_search_by_key(&b, |(bucket, _)| *bucket) {
            Ok(i) => self.counts[i].1 += 1,
            Err(i) => self.counts.insert(i, (b, 1)),
        }
        self.min = if self.total == 0 { value } else { self.min.min(value) };
        self.total += 1;
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// Adds every value of `other` (to bucket precision), as if recorded here.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        for &(b, n) in &other.counts {
            match self.counts.binary_search_by_key(&b, |(bucket, _)| *bucket) {
                Ok(i) => self.counts[i].1 += n,
                Err(i) => self.counts.insert(i, (b, n)),
            }
        }
        self.min = if self.total == 0 { other.min } else { self.min.min(other.min) };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// Takes away the values of `part`, which were all recorded here too (a row's share of
    /// a total). Counts and sum are exact; min and max stay the whole's (they only keep a
    /// bucket's reported middle within the values seen).
    pub fn subtract(&mut self, part: &Histogram) {
        for &(b, n) in &part.counts {
            if let Ok(i) = self.counts.binary_search_by_key(&b, |(bucket, _)| *bucket) {
                self.counts[i].1 = self.counts[i].1.saturating_sub(n);
            }
        }
        self.counts.retain(|(_, n)| *n > 0);
        self.total = self.total.saturating_sub(part.total);
        self.sum = self.sum.saturating_sub(part.sum);
    }

    /// How many values fall at or below each of `bounds` (ascending), to bucket precision: a
    /// bucket counts where its middle (as [`Self::quantile`] reports it) falls. Cumulative.
    pub fn at_or_below(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = vec![0; bounds.len()];
        for &(bucket, count) in &self.counts {
            let middle = self.middle_of(usize::from(bucket));
            let first = bounds.partition_point(|b| *b < middle);
            out[first..].iter_mut().for_each(|n| *n += count);
        }
        out
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The value below which `q` (0..=1) of the recorded values fall, to bucket precision: the
    /// middle of its bucket, kept within the smallest and largest values seen (so a stream of
    /// identical values, such as 60 s TIME_WAIT lifetimes, reports exactly that value).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bucket, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(self.middle_of(usize::from(bucket)));
            }
        }
        Some(self.max)
    }
}

/// Counts per whole second over the last `WINDOW_SECONDS` seconds; rates are per second over
/// the seconds that have passed (up to the window), so a fresh start is not diluted.
///
/// 24 bytes inline. A rate that has counted in one second only keeps that second and its
/// count; the first count in a later second gives it a ring of the window's seconds (48 bytes
/// on the heap). Most of a crawler's destinations see one connect and never get a ring.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    total: u64,
    recent: Recent,
}

#[derive(Clone, Debug, Default)]
enum Recent {
    #[default]
    Nothing,
    /// Every count so far fell in one second.
    One {
        second: u32,
        count: u32,
    },
    Ring(Box<Ring>),
}

/// The seconds `newest - WINDOW_SECONDS ..= newest`, each in slot `second % SLOTS`.
#[derive(Clone, Debug)]
struct Ring {
    newest: u32,
    counts: [u32; SLOTS],
}

pub const WINDOW_SECONDS: u64 = 10;
const SLOTS: usize = WINDOW_SECONDS as usize + 1;

/// Whole seconds of a CLOCK_MONOTONIC timestamp (u32 lasts 136 years of uptime).
fn second_of(ts_ns: u64) -> u32 {
    u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX)
}

impl Ring {
    fn slot(second: u32) -> usize {
        second as usize % SLOTS
    }

    /// Moves the window forward to end at `second`, clearing the seconds it leaves behind.
    fn advance(&mut self, second: u32) {
        let steps = (second - self.newest).min(SLOTS as u32);
        for k in 1..=steps {
            self.counts[Self::slot(self.newest.wrapping_add(k))] = 0;
        }
        self.newest = second;
    }
}

impl Rate {
    pub fn add(&mut self, ts_ns: u64, n: u64) {
        let second = second_of(ts_ns);
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.total += n;
        self.recent = match std::mem::take(&mut self.recent) {
            Recent::Nothing => Recent::One { second, count: n32 },
            // Out-of-order within the window: credit the newest second (rates stay right).
            Recent::One { second: s, count } if second <= s => {
                Recent::One { second: s, count: count.saturating_add(n32) }
            }
            Recent::One { second: s, count } => {
                let mut ring = Ring { newest: s, counts: [0; SLOTS] };
                ring.counts[Ring::slot(s)] = count;
                ring.advance(second);
                ring.counts[Ring::slot(second)] = n32;
                Recent::Ring(Box::new(ring))
            }
            Recent::Ring(mut ring) => {
                if second > ring.newest {
                    ring.advance(second);
                }
                let slot = Ring::slot(ring.newest);
                ring.counts[slot] = ring.counts[slot].saturating_add(n32);
                Recent::Ring(ring)
            }
        };
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The last second anything was counted in (`None`: never).
    pub fn last_second(&self) -> Option<u64> {
        match &self.recent {
            Recent::Nothing => None,
            Recent::One { second, .. } => Some(u64::from(*second)),
            Recent::Ring(ring) => Some(u64::from(ring.newest)),
        }
    }

    /// Events per second over the complete seconds of the window before `now_ns`, and the
    /// current partial second weighted by how much of it has passed.
    pub fn per_second(&self, now_ns: u64, since_ns: u64) -> f64 {
        let now_s = now_ns as f64 / 1e9;
        let start = (now_s - WINDOW_SECONDS as f64).max(since_ns as f64 / 1e9);
        let span = (now_s - start).max(1e-3);
        let from = start.floor() as u64;
        let sum: u64 = match &self.recent {
            Recent::Nothing => 0,
            Recent::One { second, count } => {
                if u64::from(*second) >= from {
                    u64::from(*count)
                } else {
                    0
                }
            }
            Recent::Ring(ring) => (0..SLOTS as u32)
                .filter_map(|k| ring.newest.checked_sub(k))
                .filter(|s| u64::from(*s) >= from)
                .map(|s| u64::from(ring.counts[Ring::slot(s)]))
                .sum(),
        };
        sum as f64 / span.max(1.0)
    }

    /// Whether anything was counted in the window before `now_ns` (a rate above zero).
    pub fn active(&self, now_ns: u64, since_ns: u64) -> bool {
        let now_s = now_ns as f64 / 1e9;
        let start = (now_s - WINDOW_SECONDS as f64).max(since_ns as f64 / 1e9);
        self.last_second().is_some_and(|s| s >= start.floor() as u64) && self.per_second(now_ns, since_ns) > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 0..20 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(9));
        assert_eq!(h.quantile(1.0), Some(19));
        assert_eq!(h.quantile(0.0), Some(0));
        assert_eq!(h.max(), Some(19));
    }

    #[test]
    fn percentiles_within_bucket_precision() {
        let mut h = Histogram::default();
        // Lifetimes 60.000 s .. 60.999 s in ms, plus one 62 s outlier.
        for ms in 60_000..61_000u64 {
            h.record(ms * 1_000_000);
        }
        h.record(62_000_000_000);
        let p50 = h.quantile(0.5).unwrap() as f64 / 1e9;
        let p99 = h.quantile(0.99).unwrap() as f64 / 1e9;
        assert!((p50 - 60.5).abs() / 60.5 < 1.0 / 32.0, "p50 {p50}");
        assert!((p99 - 60.99).abs() / 60.99 < 1.0 / 32.0, "p99 {p99}");
        assert_eq!(h.max(), Some(62_000_000_000));
        assert_eq!(h.count(), 1001);
        assert_eq!(h.sum(), (60_000..61_000u128).sum::<u128>() * 1_000_000 + 62_000_000_000);
    }

    #[test]
    fn counts_at_or_below_bounds_are_cumulative() {
        let mut h = Histogram::default();
        for v in [1, 5, 5, 20, 1000, 60_000] {
            h.record(v);
        }
        assert_eq!(h.at_or_below(&[0, 1, 5, 100, 1000, 100_000]), [0, 1, 3, 4, 5, 6]);
        assert_eq!(Histogram::default().at_or_below(&[1, 2]), [0, 0]);
    }

    #[test]
    fn bucket_bounds_round_trip() {
        for v in [0, 1, 31, 32, 33, 63, 64, 65, 1000, 123_456_789, u64::MAX / 2] {
            let b = Histogram::bucket_of(v);
            let low = Histogram::low_of(b);
            assert!(low <= v, "{v}: low {low}");
            assert!(Histogram::bucket_of(low) == b, "{v}");
            assert!((v - low) as f64 <= v as f64 / 32.0 + 1.0, "{v} vs {low}");
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_sparse_histogram_merges_subtracts_and_keeps_its_order() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [1_000, 5, 70_000] {
            a.record(v);
        }
        for v in [5, 2_000_000] {
            b.record(v);
        }
        let mut whole = a.clone();
        whole.merge(&b);
        whole.subtract(&b);
        assert_eq!((whole.counts.clone(), whole.total, whole.sum), (a.counts.clone(), a.total, a.sum));
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert_eq!(a.max(), Some(2_000_000));
        assert_eq!(a.quantile(0.0), Some(5));
        assert_eq!(a.quantile(0.4), Some(5));
        assert!(a.counts.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", a.counts);
        // One bucket per distinct magnitude, not one per possible bucket below the largest.
        assert_eq!(a.counts.len(), 4);
    }

    #[test]
    fn rate_in_one_second_needs_no_ring_and_matches_a_ring() {
        let s = 1_000_000_000u64;
        let mut one = Rate::default();
        one.add(100 * s + 5, 3);
        one.add(100 * s + 7, 4);
        assert!(matches!(one.recent, Recent::One { second: 100, count: 7 }));
        assert!((one.per_second(101 * s, 0) - 7.0 / 10.0).abs() < 1e-9);
        // Out of order: credited to the newest second, as before.
        one.add(99 * s, 1);
        assert!(matches!(one.recent, Recent::One { second: 100, count: 8 }));
        // A count in a later second makes a ring; the window forgets seconds it leaves.
        one.add(103 * s, 2);
        assert!(matches!(one.recent, Recent::Ring(_)));
        assert!((one.per_second(104 * s, 0) - 10.0 / 10.0).abs() < 1e-9);
        assert_eq!(one.per_second(111 * s, 0), 2.0 / 10.0);
        assert_eq!(one.per_second(200 * s, 0), 0.0);
        assert!(!one.active(200 * s, 0));
        assert!(one.active(104 * s, 0));
        // A jump longer than the window clears every slot.
        one.add(500 * s, 1);
        assert_eq!(one.per_second(501 * s, 0), 0.1);
        assert_eq!(one.total(), 11);
    }

    #[test]
    fn rate_over_the_window() {
        let s = 1_000_000_000u64;
        let mut r = Rate::default();
        for t in 0..30 {
            r.add(100 * s + t * s, 710); // 710 per second for 30 s
        }
        let rate = r.per_second(130 * s, 0);
        assert!((rate - 710.0).abs() < 1.0, "{rate}");
        assert_eq!(r.total(), 30 * 710);
        // Two seconds after start, the rate is not diluted by the empty rest of the window.
        let mut fresh = Rate::default();
        fresh.add(500 * s, 100);
        fresh.add(501 * s, 100);
        let rate = fresh.per_second(502 * s, 500 * s);
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
        // Nothing for a while: the rate falls to zero.
        assert_eq!(fresh.per_second(600 * s, 500 * s), 0.0);
    }
}
