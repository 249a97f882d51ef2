//! Small statistics for the aggregator: a log-bucketed histogram (percentiles within about 3%,
//! constant memory) and per-second counters over a sliding window (rates).

/// Sub-buckets per power of two: relative error of a reported percentile below 1/32.
const SUB_BUCKETS: u64 = 32;

/// Histogram of non-negative integers (e.g. nanoseconds), exact below `SUB_BUCKETS`.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    /// Of every value recorded (the exporter's histograms carry it).
    sum: u128,
}

impl Histogram {
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

    pub fn record(&mut self, value: u64) {
        let b = Self::bucket_of(value);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
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

    /// How many values fall at or below each of `bounds` (ascending), to bucket precision: a
    /// bucket counts where its middle (as [`Self::quantile`] reports it) falls. Cumulative.
    pub fn at_or_below(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = vec![0; bounds.len()];
        for (bucket, &count) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let middle =
                ((Self::low_of(bucket) + Self::low_of(bucket + 1).saturating_sub(1)) / 2).clamp(self.min, self.max);
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
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let middle = (Self::low_of(bucket) + Self::low_of(bucket + 1).saturating_sub(1)) / 2;
                return Some(middle.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Counts per whole second over the last `WINDOW` seconds; rates are per second over the
/// seconds that have passed (up to the window), so a fresh start is not diluted.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    /// (second, count), oldest first.
    seconds: std::collections::VecDeque<(u64, u64)>,
    total: u64,
}

pub const WINDOW_SECONDS: u64 = 10;

impl Rate {
    pub fn add(&mut self, ts_ns: u64, n: u64) {
        let second = ts_ns / 1_000_000_000;
        match self.seconds.back_mut() {
            Some((s, count)) if *s == second => *count += n,
            // Out-of-order within the window: credit the newest second (rates stay right).
            Some((s, count)) if *s > second => *count += n,
            _ => self.seconds.push_back((second, n)),
        }
        self.total += n;
        while self.seconds.len() as u64 > WINDOW_SECONDS + 1 {
            self.seconds.pop_front();
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Events per second over the complete seconds of the window before `now_ns`, and the
    /// current partial second weighted by how much of it has passed.
    pub fn per_second(&self, now_ns: u64, since_ns: u64) -> f64 {
        let now_s = now_ns as f64 / 1e9;
        let start = (now_s - WINDOW_SECONDS as f64).max(since_ns as f64 / 1e9);
        let span = (now_s - start).max(1e-3);
        let from = start.floor() as u64;
        let sum: u64 = self.seconds.iter().filter(|(s, _)| *s >= from).map(|(_, c)| c).sum();
        sum as f64 / span.max(1.0)
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
