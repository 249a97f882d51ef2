//! The k first of many rows, in order, without sorting them all: a view shows ten rows of a
//! hundred thousand. O(n) comparisons and O(k) room whatever n is.

use std::cmp::Ordering;

/// The first `k` items of `items` by `order`, sorted. Keeps at most 2k items at a time:
/// whenever the buffer fills, the k best are selected (`select_nth_unstable_by`, linear) and
/// the rest dropped, so the whole costs O(n + k log k). `order` must be total (ties broken
/// by a key) for the result not to depend on the input's order.
pub fn top_k<T>(items: impl IntoIterator<Item = T>, k: usize, order: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    let limit = k.saturating_mul(2).max(16);
    let mut kept: Vec<T> = Vec::with_capacity(limit.min(1024));
    for item in items {
        kept.push(item);
        if kept.len() == limit {
            kept.select_nth_unstable_by(k - 1, &order);
            kept.truncate(k);
        }
    }
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, &order);
        kept.truncate(k);
    }
    kept.sort_by(&order);
    kept
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn the_first_k_in_order_whatever_the_input_order() {
        let values: Vec<u64> = (0..10_000u64).map(|i| (i * 7919) % 10_007).collect();
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        for k in [0, 1, 5, 16, 17, 100, 9_999, 10_000, 20_000] {
            let got = top_k(values.iter().copied(), k, |a, b| b.cmp(a));
            assert_eq!(got, sorted[..k.min(sorted.len())], "k {k}");
        }
        assert!(top_k(Vec::<u64>::new(), 3, |a, b| a.cmp(b)).is_empty());
    }
}
