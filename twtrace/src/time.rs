//! Time as the stream and its readers see it: kernel timestamps are CLOCK_MONOTONIC
//! nanoseconds; people read wall-clock time. [`WallClock`] maps one to the other once per run
//! (a recording's header keeps the mapping); [`WallTime`] is a wall-clock instant with the
//! formats twtrace prints.

use serde::{Deserialize, Serialize};

/// Maps kernel monotonic timestamps to wall-clock time, measured once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    pub realtime_ns: u64,
    pub monotonic_ns: u64,
}

impl WallClock {
    pub fn now() -> Self {
        Self { realtime_ns: clock_ns(libc::CLOCK_REALTIME), monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC) }
    }

    /// Unix nanoseconds of a monotonic timestamp.
    pub fn to_unix_ns(self, mono_ns: u64) -> u64 {
        (self.realtime_ns as i128 + mono_ns as i128 - self.monotonic_ns as i128).max(0) as u64
    }

    /// The wall-clock instant of a monotonic timestamp.
    pub fn at(self, mono_ns: u64) -> WallTime {
        WallTime::from_unix_ns(self.to_unix_ns(mono_ns))
    }
}

/// CLOCK_MONOTONIC now, the clock of `bpf_ktime_get_ns` and so of every event.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A wall-clock instant (UTC, nanoseconds since the Unix epoch). Serialised as RFC 3339 with
/// microseconds, the form every JSON output of twtrace uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime {
    unix_ns: u64,
}

impl WallTime {
    pub const fn from_unix_ns(unix_ns: u64) -> Self {
        Self { unix_ns }
    }

    pub fn from_unix_secs(secs: f64) -> Self {
        Self { unix_ns: (secs.max(0.0) * 1e9) as u64 }
    }

    pub const fn unix_ns(self) -> u64 {
        self.unix_ns
    }

    pub fn unix_secs(self) -> f64 {
        self.unix_ns as f64 / 1e9
    }

    /// `2026-11-22T22:13:19.123456Z`.
    pub fn rfc3339(self) -> String {
        format!("{}T{}Z", self.date(), self.time_of_day_micros())
    }

    /// `2026-11-22T22:13:19` (to the second, no zone): headers where space is short.
    pub fn to_second(self) -> String {
        format!("{}T{}", self.date(), self.time_of_day())
    }

    /// `2026-11-22`.
    pub fn date(self) -> String {
        let (y, m, d) = civil_from_days((self.unix_ns / NS_PER_DAY) as i64);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// `22:13:19` (UTC).
    pub fn time_of_day(self) -> String {
        let day_secs = self.unix_ns % NS_PER_DAY / 1_000_000_000;
        format!("{:02}:{:02}:{:02}", day_secs / 3600, day_secs / 60 % 60, day_secs % 60)
    }

    /// `22:13:19.123456` (UTC): the text event lines.
    pub fn time_of_day_micros(self) -> String {
        let micros = (self.unix_ns % 1_000_000_000) / 1_000;
        format!("{}.{micros:06}", self.time_of_day())
    }
}

const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for WallTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// published method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(WallTime::from_unix_ns(0).rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(WallTime::from_unix_ns(951_782_400_000_001_000).rfc3339(), "2000-02-29T00:00:00.000001Z");
        let t = WallTime::from_unix_ns(1_795_385_599_000_000_000);
        assert_eq!(t.rfc3339(), "2026-11-22T22:13:19.000000Z");
        assert_eq!(t.time_of_day(), "22:13:19");
        assert_eq!(t.to_second(), "2026-11-22T22:13:19");
        assert_eq!(serde_json::to_value(t).unwrap(), "2026-11-22T22:13:19.000000Z");
    }

    #[test]
    fn clock_maps_monotonic_to_wall() {
        let clock = WallClock { realtime_ns: 1_795_385_599_000_000_000, monotonic_ns: 1_000_000_000 };
        assert_eq!(clock.at(61_500_000_000).rfc3339(), "2026-11-22T22:14:19.500000Z");
        assert_eq!(clock.to_unix_ns(0), 1_795_385_598_000_000_000);
    }
}
