//! `twtrace stat`: the aggregator's views as periodic text blocks or JSON lines, for scripts,
//! pipes and logs (and what `top` falls back to without a terminal).

use std::time::Duration;

use serde_json::json;

use crate::{
    aggregate::{Aggregator, Snapshot},
    filter::Filter,
    kernel::WallClock,
    output::rfc3339,
    probes,
    source::{Flow, Signals, Source},
};

pub struct StatOptions {
    pub interval: Duration,
    pub count: Option<u64>,
    pub json: bool,
    pub top: usize,
}

pub async fn run(source: &mut Source, filter: &Filter, stat: &StatOptions) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let info = source.info().clone();
    let mut aggregator = info.aggregator(stat.top);
    eprintln!("twtrace: {}", source.describe());
    let interval_ns = stat.interval.as_nanos() as u64;
    // Live: a report each wall interval. Replay: each interval of recorded time, cut exactly
    // between events, so a replayed recording gives the timeline it would have given live.
    let live = source.is_live();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + stat.interval, stat.interval);
    let mut next_report_ns = info.started_ns + interval_ns;
    let mut batch = Vec::new();
    let mut printed = 0u64;
    let mut print = |aggregator: &mut Aggregator, at_ns: u64| {
        let snapshot = aggregator.snapshot(at_ns);
        if stat.json {
            println!("{}", snapshot_json(&snapshot, info.clock, &info.backends));
        } else {
            println!("{}", snapshot_text(&snapshot, info.clock));
        }
        printed += 1;
        stat.count.is_some_and(|c| printed >= c)
    };
    loop {
        // A stop prints one last report: what happened since the previous one is not lost.
        let (stop, report) = tokio::select! {
            () = signals.recv() => (true, true),
            _ = tick.tick(), if live => (false, true),
            flow = source.next_batch(&mut batch) => (flow == Flow::Ended, flow == Flow::Ended),
        };
        if stop {
            source.finish(&mut batch);
        }
        for event in batch.drain(..).filter(|e| filter.matches(e)) {
            while !live && event.ts_ns() >= next_report_ns {
                if print(&mut aggregator, next_report_ns) {
                    return Ok(());
                }
                next_report_ns += interval_ns;
            }
            aggregator.apply(&event);
        }
        if report && print(&mut aggregator, source.now_ns()) {
            return Ok(());
        }
        if stop {
            return Ok(());
        }
    }
}

pub fn snapshot_json(s: &Snapshot, clock: WallClock, backends: &[probes::FamilyReport]) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("ts".into(), json!(rfc3339(clock.to_unix_ns(s.mono_ns))));
        m.insert(
            "backends".into(),
            json!(
                backends
                    .iter()
                    .map(|r| (r.family.to_string(), r.running.map(|b| b.to_string())))
                    .collect::<std::collections::BTreeMap<_, _>>()
            ),
        );
    }
    v
}

fn opt(v: Option<f64>, unit: &str, scale: f64) -> String {
    v.map(|v| format!("{:.1}{unit}", v / scale)).unwrap_or_else(|| "-".into())
}

/// A few lines per interval; the same numbers as the JSON and the TUI.
pub fn snapshot_text(s: &Snapshot, clock: WallClock) -> String {
    let tw = &s.timewait;
    let ts = rfc3339(clock.to_unix_ns(s.mono_ns));
    let mut out = format!(
        "{} TIME_WAIT {}{}  born {:.1}/s  died {:.1}/s expired + {:.1}/s killed  lifetime p50 {} p99 {} max {}  lost {}",
        &ts[11..19],
        tw.live,
        tw.max_buckets.map(|m| format!("/{m}")).unwrap_or_default(),
        tw.births_per_s,
        tw.expired_per_s,
        tw.killed_per_s,
        opt(tw.lifetime_p50_ms, "s", 1e3),
        opt(tw.lifetime_p99_ms, "s", 1e3),
        opt(tw.lifetime_max_ms, "s", 1e3),
        s.lost,
    );
    for g in tw.by_remote.iter().take(3) {
        out.push_str(&format!("\n  tw remote {} x{}", g.key, g.count));
    }
    for d in &s.port_space.destinations {
        out.push_str(&format!(
            "\n  ports {} -> {}  in use {}/{} ({:.1}%)  connects {:.1}/s  exhausted in {}  search p50 {} p99 {}  candidates p99 {}  failures {}",
            d.local,
            d.remote,
            d.in_use,
            d.range,
            d.utilisation * 100.0,
            d.connects_per_s,
            d.seconds_to_exhaustion.map(|e| format!("{e:.0}s")).unwrap_or_else(|| "-".into()),
            opt(d.search_p50_us, "us", 1.0),
            opt(d.search_p99_us, "us", 1.0),
            d.candidates_p99.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            d.failures
        ));
    }
    for f in &s.port_space.failures {
        out.push_str(&format!("\n  failed {} {} x{}", f.process, f.error, f.count));
    }
    if s.paws.drops_total > 0 || !s.paws.counters.is_empty() {
        let reasons: Vec<String> = s.paws.by_reason.iter().map(|r| format!("{} {}", r.reason, r.total)).collect();
        let counters: Vec<String> = s.paws.counters.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
        out.push_str(&format!(
            "\n  paws {:.1}/s  {}  counters {}",
            s.paws.drops_per_s,
            reasons.join(", "),
            counters.join(", ")
        ));
        for src in s.paws.sources.iter().take(3) {
            out.push_str(&format!("\n  paws source {} drops {} flows {}", src.source, src.drops, src.flows));
        }
    }
    out
}
