//! `twtrace stat`: the aggregator's views as periodic text blocks or JSON lines, for scripts,
//! pipes and logs (and what `top` falls back to without a terminal).

use std::time::Duration;

use serde_json::json;

use super::ViewArgs;
use crate::{
    aggregate::{Aggregator, Snapshot},
    drive::{self, Control, Limits, Sink, Status, ViewTimes},
    event::{Event, ExistingSocket},
    filter::Filter,
    probes,
    source::Source,
    time::WallClock,
};

#[derive(clap::Args)]
pub struct StatArgs {
    /// Time between reports (of recorded time, with --replay): seconds, or with s, m, h
    /// (0.5, 10s, 5m).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = super::parse_duration)]
    interval: Duration,
    /// Stop after this many reports.
    #[arg(long)]
    count: Option<u64>,
    /// JSON Lines instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    view: ViewArgs,
}

pub struct StatOptions {
    pub interval: Duration,
    pub count: Option<u64>,
    pub json: bool,
    pub top: usize,
}

pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    if args.interval < Duration::from_millis(1) {
        anyhow::bail!("--interval must be at least 1ms");
    }
    let options = StatOptions { interval: args.interval, count: args.count, json: args.json, top: args.view.top };
    let (mut source, filter) = args.view.source.open(true, None)?;
    stat(&mut source, filter, &options).await
}

/// Reports on `source` every interval (also `top`'s fallback without a terminal).
pub async fn stat(source: &mut Source, filter: Filter, options: &StatOptions) -> anyhow::Result<()> {
    let info = source.info();
    let interval_ns = options.interval.as_nanos() as u64;
    let mut sink = StatSink {
        aggregator: super::aggregator_for(info, options.top),
        clock: info.clock,
        backends: info.backends.clone(),
        json: options.json,
        count: options.count,
        interval_ns,
        next_report_ns: info.started_ns + interval_ns,
        printed: 0,
        times: ViewTimes::default(),
    };
    drive::drive(source, filter, &mut sink, Limits::default()).await
}

/// Reports each interval of the source's time (wall time live, recorded time in a replay),
/// cut exactly between events: a replayed recording gives the timeline it gave live.
struct StatSink {
    aggregator: Aggregator,
    clock: WallClock,
    backends: Vec<probes::FamilyReport>,
    json: bool,
    count: Option<u64>,
    interval_ns: u64,
    next_report_ns: u64,
    printed: u64,
    times: ViewTimes,
}

impl StatSink {
    fn done(&self) -> bool {
        self.count.is_some_and(|c| self.printed >= c)
    }

    fn print(&mut self, at_ns: u64) {
        if self.done() {
            return;
        }
        let aggregator = &mut self.aggregator;
        let snapshot = self.times.time(|| {
            aggregator.advance(at_ns);
            aggregator.snapshot(at_ns)
        });
        if self.json {
            println!("{}", snapshot_json(&snapshot, self.clock, &self.backends));
        } else {
            println!("{}", snapshot_text(&snapshot, self.clock));
        }
        self.printed += 1;
    }

    /// Every report due before `now_ns`.
    fn reports_until(&mut self, now_ns: u64) {
        while now_ns >= self.next_report_ns && !self.done() {
            self.print(self.next_report_ns);
            self.next_report_ns += self.interval_ns;
        }
    }
}

impl Sink for StatSink {
    type Wake = ();

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        self.reports_until(event.ts_ns());
        self.aggregator.apply(event);
        Ok(())
    }

    fn batch_done(&mut self, status: &Status) -> anyhow::Result<Control> {
        self.reports_until(status.now_ns());
        Ok(if self.done() { Control::Stop } else { Control::Continue })
    }

    fn resync_due(&self, now_ns: u64) -> bool {
        self.aggregator.resync_due(now_ns)
    }

    fn resync(&mut self, now_ns: u64, sockets: Option<&[ExistingSocket]>) {
        self.aggregator.resync(now_ns, sockets);
    }

    /// A stop prints one last report: what happened since the previous one is not lost.
    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        self.print(status.now_ns());
        crate::note!("{}", self.times.line(&status.health()));
        Ok(())
    }
}

pub fn snapshot_json(s: &Snapshot, clock: WallClock, backends: &[probes::FamilyReport]) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("ts".into(), json!(clock.at(s.mono_ns)));
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

/// What loss did to the figures and how they were repaired: `APPROXIMATE: 120 records lost
/// since the last resync` and `resync 3, 4.2 s ago: TIME_WAIT 30683 -> 0 (removed 30683,
/// added 0)`. `None` when nothing was ever lost.
pub fn repair_note(s: &Snapshot) -> Option<String> {
    let approximate =
        s.approximate.then(|| format!("APPROXIMATE: {} records lost since the last resync", s.unrepaired_lost));
    let resync = s.last_resync.as_ref().map(|r| {
        format!(
            "resync {}, {:.1} s ago: TIME_WAIT {} -> {} (removed {}, added {})",
            r.count,
            s.mono_ns.saturating_sub(r.mono_ns) as f64 / 1e9,
            r.timewait_model,
            r.timewait_kernel,
            r.removed,
            r.added
        )
    });
    match (approximate, resync) {
        (None, None) => None,
        (a, r) => Some([a, r].into_iter().flatten().collect::<Vec<_>>().join("; ")),
    }
}

fn opt(v: Option<f64>, unit: &str, scale: f64) -> String {
    v.map(|v| format!("{:.1}{unit}", v / scale)).unwrap_or_else(|| "-".into())
}

/// A few lines per interval; the same numbers as the JSON and the TUI.
pub fn snapshot_text(s: &Snapshot, clock: WallClock) -> String {
    let tw = &s.timewait;
    let mut out = format!(
        "{} TIME_WAIT {}{}  born {:.1}/s  died: expired {:.1}/s killed {:.1}/s  lifetime p50 {} p99 {} max {}  lost {}  namespaces {}",
        clock.at(s.mono_ns).time_of_day(),
        tw.live,
        tw.max_buckets.map(|m| format!("/{m}")).unwrap_or_default(),
        tw.births_per_s,
        tw.expired_per_s,
        tw.killed_per_s,
        opt(tw.lifetime_p50_ms, "s", 1e3),
        opt(tw.lifetime_p99_ms, "s", 1e3),
        opt(tw.lifetime_max_ms, "s", 1e3),
        s.lost,
        s.namespaces_seen,
    );
    if s.model.evicted > 0 {
        out.push_str(&format!("\n  evicted rows {} (least recently active; their totals kept)", s.model.evicted));
    }
    if let Some(note) = repair_note(s) {
        out.push_str(&format!("\n  {note}"));
    }
    for g in tw.by_remote.iter().take(3) {
        out.push_str(&format!("\n  tw remote {} x{}", g.key, g.count));
    }
    for n in &s.namespaces {
        out.push_str(&format!(
            "\n  netns {} ({})  range {}-{}  ports in use {} (worst {:.1}%)  TIME_WAIT {}{}  connect failures {}",
            n.name,
            n.netns,
            n.port_range.0,
            n.port_range.1,
            n.ports_in_use,
            n.worst_utilisation * 100.0,
            n.timewait_live,
            n.max_tw_buckets.map(|m| format!("/{m}")).unwrap_or_default(),
            n.connect_failures
        ));
    }
    for d in &s.port_space.destinations {
        out.push_str(&format!(
            "\n  ports [{}] {} -> {}  in use {}/{} ({:.1}%)  connects {:.1}/s  exhausted in {}  search p50 {} p99 {}  candidates p99 {}  failures {}",
            d.namespace,
            d.destination.local,
            d.destination.remote,
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
        out.push_str(&format!("\n  failed [{}] {} {} x{}", f.namespace, f.process, f.error, f.count));
    }
    for n in &s.namespaces {
        for d in &n.setup_drops {
            out.push_str(&format!(
                "\n  dropped [{}] {} {}  SYNs {} (sent {})",
                n.name, d.reason, d.total, d.syns, d.syns_sent
            ));
        }
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
