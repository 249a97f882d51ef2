//! Time as the stream and its readers see it: kernel timestamps are CLOCK_MONOTONIC
//! nanoseconds; people read wall-clock time. [`WallClock`] maps one to the other once per run
//! (a recording's header keeps the mapping); [`WallTime`] is a wall-clock instant with the
//! formats twtrace prints.

use serde::{Deserialize, Serialize};

mod civil;

use civil::{civil_from_days, days_from_civil};

/// Maps kernel monotonic timestamps to wall-clock time, measured once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    pub realtime_ns: u64,
    pub monotonic_ns: u64,
}

impl WallClock {
    /// The two clocks cannot be read at once: the realtime read is bracketed by two monotonic
    /// reads and paired with their middle, and of a few tries the tightest bracket is kept. A
    /// pause between two plain reads (a descheduled vCPU in a busy guest: tens of ms) would
    /// shift every wall-clock time of the stream by its length, and with it every
    /// `--since/--until` window.
    pub fn now() -> Self {
        let mut best: Option<(u64, Self)> = None;
        for _ in 0..5 {
            let before = clock_ns(libc::CLOCK_MONOTONIC);
            let realtime_ns = clock_ns(libc::CLOCK_REALTIME);
            let after = clock_ns(libc::CLOCK_MONOTONIC);
            let bracket = after.saturating_sub(before);
            if best.is_none_or(|(tightest, _)| bracket < tightest) {
                best = Some((bracket, Self { realtime_ns, monotonic_ns: before + bracket / 2 }));
            }
        }
        best.expect("five tries").1
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

/// The CPU time the calling thread has used: what a piece of work cost, apart from the time
/// the thread waited for a CPU (on a busy host, wall time includes other processes' turns).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
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

/// A time given on the command line (`--since`, `--until`): a full RFC 3339 instant, or a
/// time of day. A time of day is UTC, as every time twtrace prints is: a recording keeps no
/// time zone, so any other reading would depend on the machine that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    At(WallTime),
    /// Nanoseconds after midnight UTC.
    TimeOfDay(u64),
}

impl TimeSpec {
    /// `2026-11-27T16:39:43Z`, `2026-11-27T17:39:43.5+01:00`, `16:39` or `16:39:43`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!("`{text}` is not a time: give HH:MM[:SS] (UTC) or RFC 3339 (2026-11-27T16:39:43Z, or with +01:00)")
        };
        if !text.contains('-') {
            return parse_time_of_day(text).map(Self::TimeOfDay).ok_or_else(bad);
        }
        let (date, rest) = text.split_at_checked(10).ok_or_else(bad)?;
        let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
        let (Some(Some(y)), Some(Some(m)), Some(Some(d)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
            return Err(bad());
        }
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
        // The zone: Z, or an offset east of UTC.
        let (clock, offset_s) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, 0i64)
        } else {
            let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
            let (clock, zone) = rest.split_at(at);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let hm = parse_time_of_day(&zone[1..]).filter(|ns| ns % 60_000_000_000 == 0).ok_or_else(bad)?;
            (clock, sign * (hm / 1_000_000_000) as i64)
        };
        let day_ns = parse_time_of_day(clock).ok_or_else(bad)?;
        let days = days_from_civil(y, m as u32, d as u32);
        let unix_s = days * 86_400 - offset_s;
        if unix_s < 0 {
            return Err(bad());
        }
        Ok(Self::At(WallTime::from_unix_ns(unix_s as u64 * 1_000_000_000 + day_ns)))
    }

    /// The instant meant, for a recording that starts at `start`: a time of day is its first
    /// occurrence at or after `start` (a window of `--since 23:50 --until 00:10` resolves the
    /// second against the first, so it crosses midnight).
    pub fn resolve(self, start: WallTime) -> WallTime {
        match self {
            Self::At(t) => t,
            Self::TimeOfDay(ns) => {
                let midnight = start.unix_ns - start.unix_ns % NS_PER_DAY;
                let at = midnight + ns;
                WallTime::from_unix_ns(if at < start.unix_ns { at + NS_PER_DAY } else { at })
            }
        }
    }
}

/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction` to nanoseconds after midnight.
fn parse_time_of_day(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (w, f.parse::<u64>().ok()? * 10u64.pow(9 - f.len() as u32))
        }
        Some(_) => return None,
        None => (text, 0),
    };
    let fields: Vec<&str> = whole.split(':').collect();
    if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.len() != 2 || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let number = |i: usize| fields.get(i).map_or(Some(0), |f| f.parse::<u64>().ok());
    let (h, m, s) = (number(0)?, number(1)?, number(2)?);
    if h > 23 || m > 59 || s > 60 || (fields.len() == 2 && fraction > 0) {
        return None;
    }
    Some((h * 3600 + m * 60 + s) * 1_000_000_000 + fraction)
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

    #[test]
    fn times_parse_as_rfc3339_or_utc_time_of_day() {
        let t = |s: &str| TimeSpec::parse(s).unwrap();
        assert_eq!(t("2026-11-22T22:13:19Z"), TimeSpec::At(WallTime::from_unix_ns(1_795_385_599_000_000_000)));
        assert_eq!(t("2026-11-22T23:13:19.5+01:00"), TimeSpec::At(WallTime::from_unix_ns(1_795_385_599_500_000_000)));
        assert_eq!(t("2026-11-22 21:13:19-01:00"), t("2026-11-22T22:13:19Z"));
        assert_eq!(t("2000-02-29T00:00:00Z"), TimeSpec::At(WallTime::from_unix_ns(951_782_400_000_000_000)));
        assert_eq!(t("02:50"), TimeSpec::TimeOfDay(10_200_000_000_000));
        assert_eq!(t("02:50:30.25"), TimeSpec::TimeOfDay(10_230_250_000_000));
        for bad in ["2:50", "25:00", "02:50:", "soon", "2026-13-01T00:00:00Z", "2026-11-22T22:13:19", "02:50.5"] {
            assert!(TimeSpec::parse(bad).is_err(), "{bad}");
        }
        for days in [-1, 0, 59, 365, 10_957, 20_000, 20_780] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_time_of_day_is_its_first_occurrence_from_the_start() {
        let start = WallTime::from_unix_ns(1_795_385_599_000_000_000); // 22:13:19
        let at = |s: &str| TimeSpec::parse(s).unwrap().resolve(start).rfc3339();
        assert_eq!(at("22:50"), "2026-11-22T22:50:00.000000Z");
        assert_eq!(at("02:50"), "2026-11-23T02:50:00.000000Z");
        assert_eq!(at("22:13:19"), "2026-11-22T22:13:19.000000Z");
    }
}
