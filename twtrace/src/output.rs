//! The `trace` sink: one line per event, for people or (with `--json`) for tools.

use std::io::Write;

use serde_json::{json, Value};

use crate::{
    event::{Event, TimeWaitChange},
    kernel::WallClock,
};

pub struct Printer<W: Write> {
    out: W,
    json: bool,
    clock: WallClock,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, json: bool, clock: WallClock) -> Self {
        Self { out, json, clock }
    }

    pub fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if self.json {
            let value = event_json(event, self.clock);
            writeln!(self.out, "{value}")
        } else {
            writeln!(self.out, "{}", event_text(event, self.clock))
        }
    }

    /// Reports newly lost records (never silent).
    pub fn lost(&mut self, ts_ns: u64, new: u64, total: u64) -> std::io::Result<()> {
        if self.json {
            let v = json!({"event": "lost", "ts": rfc3339(self.clock.to_unix_ns(ts_ns)), "mono_ns": ts_ns, "count": new, "total": total});
            writeln!(self.out, "{v}")
        } else {
            writeln!(
                self.out,
                "{} LOST  {new} events (ring buffer full; {total} so far)",
                clock_time(self.clock.to_unix_ns(ts_ns))
            )
        }
    }

    /// A JSON line for tools (the human summary goes to stderr).
    pub fn summary(&mut self, summary: &Value) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{summary}")?;
        }
        self.out.flush()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn event_json(event: &Event, clock: WallClock) -> Value {
    match event {
        Event::TimeWait(e) => {
            let mut v = json!({
                "ts": rfc3339(clock.to_unix_ns(e.ts_ns)),
                "mono_ns": e.ts_ns,
                "tw_id": e.tw_id,
                "netns": e.netns,
            });
            let m = v.as_object_mut().expect("object");
            if let Some(flow) = e.flow {
                m.insert("ip".into(), json!(flow.ip_version()));
                m.insert("local".into(), json!(flow.local.to_string()));
                m.insert("remote".into(), json!(flow.remote.to_string()));
            }
            match &e.change {
                TimeWaitChange::Birth { substate, timeout_ms } => {
                    m.insert("event".into(), json!("timewait_birth"));
                    m.insert("substate".into(), json!(substate.name()));
                    m.insert("timeout_ms".into(), json!(timeout_ms));
                }
                TimeWaitChange::Rearm { substate, timeout_ms } => {
                    m.insert("event".into(), json!("timewait_rearm"));
                    m.insert("substate".into(), json!(substate.name()));
                    m.insert("timeout_ms".into(), json!(timeout_ms));
                }
                TimeWaitChange::Death { reason, lifetime_ns } => {
                    m.insert("event".into(), json!("timewait_death"));
                    m.insert("reason".into(), json!(reason));
                    m.insert("lifetime_ns".into(), json!(lifetime_ns));
                }
            }
            v
        }
    }
}

pub fn event_text(event: &Event, clock: WallClock) -> String {
    match event {
        Event::TimeWait(e) => {
            let flow = e.flow.map(|f| format!("{} <- {}", f.local, f.remote)).unwrap_or_else(|| "?".into());
            let what = match &e.change {
                TimeWaitChange::Birth { substate, timeout_ms } => {
                    format!(
                        "TW born   #{:<6} {flow}  {} timeout {}",
                        e.tw_id,
                        substate.name(),
                        seconds(timeout_ms * 1_000_000)
                    )
                }
                TimeWaitChange::Rearm { substate, timeout_ms } => {
                    format!(
                        "TW rearm  #{:<6} {flow}  {} timeout {}",
                        e.tw_id,
                        substate.name(),
                        seconds(timeout_ms * 1_000_000)
                    )
                }
                TimeWaitChange::Death { reason, lifetime_ns } => {
                    let reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!("TW died   #{:<6} {flow}  {reason} after {}", e.tw_id, seconds(*lifetime_ns))
                }
            };
            format!("{} {what}  netns {}", clock_time(clock.to_unix_ns(e.ts_ns)), e.netns)
        }
    }
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// `HH:MM:SS.ffffff` (UTC), for the human format.
fn clock_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let day_secs = secs % 86_400;
    format!("{:02}:{:02}:{:02}.{micros:06}", day_secs / 3600, day_secs / 60 % 60, day_secs % 60)
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T22:13:19.123456Z`.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{}Z", clock_time(unix_ns))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
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
    use std::net::SocketAddr;

    use super::*;
    use crate::event::{DeathReason, SocketFlow, TimeWaitEvent, TimeWaitSubstate};

    const CLOCK: WallClock = WallClock { realtime_ns: 1_795_385_599_000_000_000, monotonic_ns: 1_000_000_000 };

    fn death() -> Event {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: 61_500_000_000,
            tw_id: 7,
            flow: Some(SocketFlow {
                local: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                remote: "[::1]:40000".parse::<SocketAddr>().unwrap(),
            }),
            netns: 4026531840,
            change: TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60_750_000_000 },
        })
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_001_000), "2000-02-29T00:00:00.000001Z");
        assert_eq!(rfc3339(1_795_385_599_000_000_000), "2026-11-22T22:13:19.000000Z");
    }

    #[test]
    fn json_line_has_stable_field_names() {
        let v = event_json(&death(), CLOCK);
        assert_eq!(v["event"], "timewait_death");
        assert_eq!(v["reason"], "expired");
        assert_eq!(v["lifetime_ns"], 60_750_000_000u64);
        assert_eq!(v["local"], "127.0.0.1:8080");
        assert_eq!(v["remote"], "[::1]:40000");
        assert_eq!(v["ts"], "2026-11-22T22:14:19.500000Z");
        assert_eq!(v["mono_ns"], 61_500_000_000u64);
    }

    #[test]
    fn text_line() {
        assert_eq!(
            event_text(&death(), CLOCK),
            "22:14:19.500000 TW died   #7      127.0.0.1:8080 <- [::1]:40000  expired after 60.750s  netns 4026531840"
        );
        let birth = Event::TimeWait(TimeWaitEvent {
            change: TimeWaitChange::Birth { substate: TimeWaitSubstate::FinWait2, timeout_ms: 60_000 },
            ..match death() {
                Event::TimeWait(e) => e,
            }
        });
        assert!(event_text(&birth, CLOCK)
            .contains("TW born   #7      127.0.0.1:8080 <- [::1]:40000  FIN_WAIT2 timeout 60.000s"));
    }
}
