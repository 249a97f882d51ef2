//! What a churn run did: each client thread's counts, merged into one [`ChurnResult`], and its
//! text form.

use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;

use super::Closer;

/// What a churn run did. Always `attempts == connections + errors` and `errors` is the sum
/// of `failures`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnResult {
    /// connect() calls made.
    pub attempts: u64,
    /// Successful connects.
    pub connections: u64,
    /// Failed attempts (the sum of `failures`).
    pub errors: u64,
    /// Failed attempts by errno name (`EADDRNOTAVAIL` when the port space is exhausted,
    /// `ECONNREFUSED`, ...; `errno N` for one without a name here), plus [`UNFINISHED`].
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message, as the OS words it.
    pub first_error: Option<String>,
    /// From the first attempt to the last thread's end.
    pub seconds: f64,
    /// Successful connects per second.
    pub per_second: f64,
    pub closer: Closer,
    pub threads: usize,
    /// Destination addresses asked for (`--destinations`).
    pub destinations: u32,
    /// Distinct destination addresses attempts were aimed at (attempt k at address k mod
    /// `destinations`, so `min(attempts, destinations)`).
    pub destinations_used: u64,
    /// Source addresses asked for (`--sources`; 1: the kernel's choice, no bind).
    pub sources: u32,
    /// Distinct source addresses attempts left from (`min(attempts, sources)`).
    pub sources_used: u64,
    /// `SIGINT` or `SIGTERM` when a signal ended the run before its duration.
    pub stopped_by: Option<String>,
}

/// The failure kind of a connect() that churn gave up on at its end, handshake unfinished (a
/// SYN that got no answer within the run). Not an errno: the kernel never said it failed.
pub const UNFINISHED: &str = "unfinished";

/// How many destination and source addresses were asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Spread {
    pub(super) destinations: u32,
    pub(super) sources: u32,
}

/// "2000 destinations", "1 source", "600 of 2000 destinations".
fn addresses_text(used: u64, asked: u32, what: &str) -> String {
    let plural = if asked == 1 { "" } else { "s" };
    if used == u64::from(asked) {
        format!("{asked} {what}{plural}")
    } else {
        format!("{used} of {asked} {what}{plural}")
    }
}

/// The text summary: connections of attempts, rate, failures by errno (most first).
pub fn summary_text(r: &ChurnResult) -> String {
    let mut failures: Vec<(&String, &u64)> = r.failures.iter().collect();
    failures.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let failures = failures.iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "churn: {} of {} connects succeeded in {:.1} s = {:.0}/s ({} closes first, {} threads, {}, {}), {} failed",
        r.connections,
        r.attempts,
        r.seconds,
        r.per_second,
        if r.closer == Closer::Server { "server" } else { "client" },
        r.threads,
        addresses_text(r.destinations_used, r.destinations, "destination"),
        addresses_text(r.sources_used, r.sources, "source"),
        r.errors,
    );
    if r.errors > 0 {
        text += &format!(": {failures}");
    }
    if let Some(first) = &r.first_error {
        text += &format!(" (first: {first})");
    }
    if let Some(signal) = &r.stopped_by {
        text += &format!("; stopped by {signal}");
    }
    text
}

/// Counts of one client thread, merged at the end (no shared counters on the hot path).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Tally {
    connections: u64,
    failures: BTreeMap<String, u64>,
    /// When the first failure happened, and its message: the earliest over threads wins.
    first_error: Option<(Instant, String)>,
}

impl Tally {
    pub(super) fn connected(&mut self) {
        self.connections += 1;
    }

    pub(super) fn failed(&mut self, kind: String, message: impl FnOnce() -> String) {
        *self.failures.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some((Instant::now(), message()));
        }
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.connections += other.connections;
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        self.first_error = match (self.first_error.take(), other.first_error) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    pub(super) fn result(self, seconds: f64, closer: Closer, threads: usize, spread: Spread) -> ChurnResult {
        let errors = self.failures.values().sum::<u64>();
        let attempts = self.connections + errors;
        ChurnResult {
            attempts,
            connections: self.connections,
            errors,
            failures: self.failures,
            first_error: self.first_error.map(|(_, message)| message),
            seconds,
            per_second: if seconds > 0.0 { self.connections as f64 / seconds } else { 0.0 },
            closer,
            threads,
            destinations: spread.destinations,
            destinations_used: attempts.min(u64::from(spread.destinations)),
            sources: spread.sources,
            sources_used: attempts.min(u64::from(spread.sources)),
            stopped_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_into_consistent_counts_and_the_earliest_first_error() {
        let mut a = Tally::default();
        a.connected();
        a.connected();
        a.failed("EADDRNOTAVAIL".into(), || "first".into());
        let mut b = Tally::default();
        b.failed("EADDRNOTAVAIL".into(), || "second".into());
        b.failed(UNFINISHED.into(), || "not kept".into());
        b.connected();
        // `b`'s first failure came later: `a`'s stays first, whichever merges into which.
        let mut merged = b.clone();
        merged.merge(a.clone());
        let mut other = a;
        other.merge(b);
        assert_eq!(merged, other);
        let r = merged.result(2.0, Closer::Client, 2, Spread { destinations: 5, sources: 1 });
        assert_eq!((r.attempts, r.connections, r.errors), (6, 3, 3));
        assert_eq!(r.failures, BTreeMap::from([("EADDRNOTAVAIL".into(), 2), (UNFINISHED.into(), 1)]));
        assert_eq!(r.first_error.as_deref(), Some("first"));
        assert_eq!(r.per_second, 1.5);
        assert_eq!((r.destinations, r.destinations_used, r.sources, r.sources_used), (5, 5, 1, 1));
        let r = Tally::default().result(1.0, Closer::Client, 2, Spread { destinations: 5, sources: 1 });
        assert_eq!((r.destinations_used, r.sources_used), (0, 0), "no attempt, no address used");
    }

    #[test]
    fn text_summary_names_failures_most_first_and_the_signal() {
        let r = ChurnResult {
            attempts: 410,
            connections: 100,
            errors: 310,
            failures: BTreeMap::from([("EADDRNOTAVAIL".into(), 300), ("ECONNREFUSED".into(), 10)]),
            first_error: Some("Cannot assign requested address (os error 99)".into()),
            seconds: 4.0,
            per_second: 25.0,
            closer: Closer::Client,
            threads: 2,
            destinations: 2000,
            destinations_used: 410,
            sources: 1,
            sources_used: 1,
            stopped_by: Some("SIGTERM".into()),
        };
        assert_eq!(
            summary_text(&r),
            "churn: 100 of 410 connects succeeded in 4.0 s = 25/s (client closes first, 2 threads, 410 of 2000 destinations, \
             1 source), 310 failed: \
             EADDRNOTAVAIL 300, ECONNREFUSED 10 (first: Cannot assign requested address (os error 99)); stopped by SIGTERM"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["failures"]["EADDRNOTAVAIL"], 300);
        assert_eq!(json["stopped_by"], "SIGTERM");
        assert_eq!((json["destinations"].as_u64(), json["destinations_used"].as_u64()), (Some(2000), Some(410)));
        assert_eq!((json["sources"].as_u64(), json["sources_used"].as_u64()), (Some(1), Some(1)));
    }
}
