//! `twtrace report`: a postmortem of a recording. The recording is replayed through the same
//! aggregator `top` uses, sampled every second of recorded time for the timelines; the
//! [`Report`] model is then rendered as text, JSON or a self-contained HTML page.

mod html;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, path::PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    aggregate::{Destination, FailureView, Group, Sample, Snapshot, SourceView},
    filter::Filter,
    kernel::netns::Sysctls,
    output::rfc3339,
    record::Reader,
    source::SourceInfo,
};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The recording (`twtrace record -o FILE`).
    file: PathBuf,
    /// JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts (no network needed to view it).
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Rows per ranking.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// Timeline resolution while reading; charts merge points down to at most [`CHART_POINTS`].
const SAMPLE_NS: u64 = 1_000_000_000;
const CHART_POINTS: usize = 600;
/// Destinations drawn in the port-space chart.
const CHART_DESTINATIONS: usize = 6;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub recording: RecordingSummary,
    /// Conclusions in plain words, most important first.
    pub findings: Vec<String>,
    pub timewait: TimeWaitSummary,
    pub destinations: Vec<DestinationSummary>,
    pub failures: Vec<FailureView>,
    pub paws: PawsSummary,
    pub timeline: Timeline,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordingSummary {
    pub file: String,
    pub host: String,
    pub kernel: String,
    pub started: String,
    pub ended: String,
    pub seconds: f64,
    pub events: u64,
    pub lost: u64,
    pub chunks: u64,
    /// The end marker was found: `twtrace record` finished normally.
    pub complete: bool,
    pub damage: Vec<String>,
    pub backends: Vec<(String, String)>,
    pub sysctls: Sysctls,
    pub netns: Option<u32>,
    pub port: Option<u16>,
    pub filter: String,
    pub sockets_at_start: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimeWaitSummary {
    pub peak: u64,
    pub peak_at: Option<String>,
    pub at_start: u64,
    pub at_end: u64,
    pub max_buckets: Option<u64>,
    pub births: u64,
    pub expired: u64,
    pub killed: u64,
    pub lifetime_p50_ms: Option<f64>,
    pub lifetime_p99_ms: Option<f64>,
    pub lifetime_max_ms: Option<f64>,
    /// Where the TIME_WAIT sockets were at the peak: by remote address and by owner.
    pub by_remote_at_peak: Vec<Group>,
    pub by_owner_at_peak: Vec<Group>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DestinationSummary {
    pub local: String,
    pub remote: String,
    pub range: u64,
    pub peak_in_use: u64,
    pub peak_utilisation: f64,
    pub peak_at: String,
    pub in_use_at_end: u64,
    pub search_p50_us: Option<f64>,
    pub search_p99_us: Option<f64>,
    pub candidates_p99: Option<u64>,
    pub failures: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PawsSummary {
    pub drops: u64,
    pub by_reason: Vec<(String, u64)>,
    pub sources: Vec<SourceView>,
    pub peak_per_s: f64,
    pub peak_at: Option<String>,
    /// Kernel counters over the recording (/proc/net/netstat deltas).
    pub counters: Vec<(String, i64)>,
}

/// Series over recorded time, one point per `step_s` (each point the maximum, or for rates
/// the mean, of the seconds it covers).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub step_s: f64,
    /// Unix seconds of each point.
    pub t: Vec<f64>,
    pub timewait_live: Vec<f64>,
    pub births_per_s: Vec<f64>,
    pub deaths_per_s: Vec<f64>,
    pub drops_per_s: Vec<f64>,
    pub connect_failures_per_s: Vec<f64>,
    /// Port utilisation (0–1) of the busiest destinations.
    pub destinations: Vec<(String, Vec<f64>)>,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let report = build(&args.file, args.top)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    if let Some(out) = &args.html {
        std::fs::write(out, html::render(&report)).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("twtrace: wrote {}", out.display());
    }
    for d in &report.recording.damage {
        eprintln!("twtrace: damage: {d}");
    }
    Ok(())
}

/// Reads the whole recording into a [`Report`].
pub fn build(path: &std::path::Path, top: usize) -> anyhow::Result<Report> {
    let mut reader = Reader::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let info = reader.info.clone();
    let filter = Filter::default();
    let mut aggregator = info.aggregator(top);
    let mut samples: Vec<Sample> = vec![aggregator.sample(info.started_ns)];
    let mut next_sample = info.started_ns + SAMPLE_NS;
    let mut peak_snapshot: Option<Snapshot> = None;
    let mut last_ts = info.started_ns;
    let mut events = 0u64;
    let mut lost = 0u64;
    // A full snapshot whenever TIME_WAIT reaches a new peak (by at least 5 %), for the
    // breakdown at the peak: cheap, because peaks are rare.
    let mut take_sample = |aggregator: &mut crate::aggregate::Aggregator, at: u64, samples: &mut Vec<Sample>| {
        let sample = aggregator.sample(at);
        let peak = peak_snapshot.as_ref().map_or(0, |s| s.timewait.live);
        if sample.timewait_live > 0 && sample.timewait_live as f64 > peak as f64 * 1.05 {
            peak_snapshot = Some(aggregator.snapshot(at));
        }
        samples.push(sample);
    };
    while let Some(chunk) = reader.next_chunk() {
        for event in chunk.decoded.events.iter().filter(|e| filter.matches(e)) {
            let ts = event.ts_ns();
            while ts >= next_sample {
                take_sample(&mut aggregator, next_sample, &mut samples);
                next_sample += SAMPLE_NS;
            }
            if let crate::event::Event::Lost(l) = event {
                lost = l.total;
            } else {
                events += 1;
            }
            last_ts = last_ts.max(ts);
            aggregator.apply(event);
        }
    }
    let ended_ns = reader.trailer().map_or(last_ts, |t| t.ended_ns.max(last_ts));
    take_sample(&mut aggregator, ended_ns, &mut samples);
    let end = aggregator.snapshot(ended_ns);
    let mut damage: Vec<String> = reader.damage().iter().map(ToString::to_string).collect();
    if let Some(t) = reader.trailer() {
        if t.events != events && damage.is_empty() {
            damage.push(format!("the end marker counts {} events, {events} were read", t.events));
        }
    }
    let recording = RecordingSummary {
        file: path.display().to_string(),
        host: info.host.clone(),
        kernel: info.kernel.clone(),
        started: rfc3339(info.clock.to_unix_ns(info.started_ns)),
        ended: rfc3339(info.clock.to_unix_ns(ended_ns)),
        seconds: ended_ns.saturating_sub(info.started_ns) as f64 / 1e9,
        events,
        lost,
        chunks: reader.chunks(),
        complete: reader.trailer().is_some(),
        damage,
        backends: info
            .backends
            .iter()
            .map(|r| (r.family.to_string(), r.running.map_or("OFF".into(), |b| b.to_string())))
            .collect(),
        sysctls: info.sysctls.clone(),
        netns: info.netns,
        port: info.port,
        filter: info.filter.clone(),
        sockets_at_start: info.sockets.len(),
    };
    Ok(assemble(recording, &info, &samples, peak_snapshot, &end, aggregator.port_range_size()))
}

fn assemble(
    recording: RecordingSummary,
    info: &SourceInfo,
    samples: &[Sample],
    peak: Option<Snapshot>,
    end: &Snapshot,
    range: u64,
) -> Report {
    let wall = |mono: u64| rfc3339(info.clock.to_unix_ns(mono));
    let first = samples.first().expect("at least the start sample");
    let peak_tw = samples.iter().max_by_key(|s| (s.timewait_live, std::cmp::Reverse(s.mono_ns))).unwrap_or(first);
    let tw = &end.timewait;
    let timewait = TimeWaitSummary {
        peak: peak_tw.timewait_live,
        peak_at: (peak_tw.timewait_live > 0).then(|| wall(peak_tw.mono_ns)),
        at_start: first.timewait_live,
        at_end: tw.live,
        max_buckets: tw.max_buckets,
        births: tw.births_total,
        expired: tw.expired_total,
        killed: tw.killed_total,
        lifetime_p50_ms: tw.lifetime_p50_ms,
        lifetime_p99_ms: tw.lifetime_p99_ms,
        lifetime_max_ms: tw.lifetime_max_ms,
        by_remote_at_peak: peak.as_ref().map(|p| p.timewait.by_remote.clone()).unwrap_or_default(),
        by_owner_at_peak: peak.as_ref().map(|p| p.timewait.by_owner.clone()).unwrap_or_default(),
    };

    // Per destination: its peak over the samples, and the search figures of the end snapshot.
    let mut peaks: HashMap<Destination, (u64, u64)> = HashMap::new();
    for s in samples {
        for (dest, in_use) in &s.ports_in_use {
            let entry = peaks.entry(*dest).or_insert((0, s.mono_ns));
            if *in_use > entry.0 {
                *entry = (*in_use, s.mono_ns);
            }
        }
    }
    let mut destinations: Vec<DestinationSummary> = peaks
        .iter()
        .map(|(dest, (peak_in_use, at))| {
            let view = end.port_space.destinations.iter().find(|d| d.local == dest.local && d.remote == dest.remote);
            DestinationSummary {
                local: dest.local.to_string(),
                remote: dest.remote.to_string(),
                range,
                peak_in_use: *peak_in_use,
                peak_utilisation: *peak_in_use as f64 / range.max(1) as f64,
                peak_at: wall(*at),
                in_use_at_end: view.map_or(0, |v| v.in_use),
                search_p50_us: view.and_then(|v| v.search_p50_us),
                search_p99_us: view.and_then(|v| v.search_p99_us),
                candidates_p99: view.and_then(|v| v.candidates_p99),
                failures: view.map_or(0, |v| v.failures),
            }
        })
        .collect();
    // Remotes every connect() to which failed hold no ports, but belong in the table.
    for v in &end.port_space.destinations {
        if !destinations.iter().any(|d| d.local == v.local.to_string() && d.remote == v.remote.to_string()) {
            destinations.push(DestinationSummary {
                local: v.local.to_string(),
                remote: v.remote.to_string(),
                range,
                peak_in_use: v.in_use,
                peak_utilisation: v.utilisation,
                peak_at: wall(end.mono_ns),
                in_use_at_end: v.in_use,
                search_p50_us: v.search_p50_us,
                search_p99_us: v.search_p99_us,
                candidates_p99: v.candidates_p99,
                failures: v.failures,
            });
        }
    }
    destinations.sort_by(|a, b| {
        b.peak_in_use.cmp(&a.peak_in_use).then(b.failures.cmp(&a.failures)).then(a.remote.cmp(&b.remote))
    });
    destinations.truncate(end.port_space.destinations.len().max(10));

    let timeline = timeline(info, samples, &destinations, range);
    let (peak_drops, peak_drops_at) = timeline
        .drops_per_s
        .iter()
        .zip(&timeline.t)
        .fold((0.0, None), |(best, at), (v, t)| if *v > best { (*v, Some(*t)) } else { (best, at) });
    let paws = PawsSummary {
        drops: end.paws.drops_total,
        by_reason: end.paws.by_reason.iter().map(|r| (r.reason.clone(), r.total)).collect(),
        sources: end.paws.sources.clone(),
        peak_per_s: peak_drops,
        peak_at: peak_drops_at.map(|t| rfc3339((t * 1e9) as u64)),
        counters: end.paws.counters.clone(),
    };
    let mut report = Report {
        recording,
        findings: Vec::new(),
        timewait,
        destinations,
        failures: end.port_space.failures.clone(),
        paws,
        timeline,
    };
    report.findings = findings(&report);
    report
}

fn timeline(info: &SourceInfo, samples: &[Sample], destinations: &[DestinationSummary], range: u64) -> Timeline {
    let per = samples.len().div_ceil(CHART_POINTS).max(1);
    let mut t = Timeline { step_s: per as f64 * SAMPLE_NS as f64 / 1e9, ..Timeline::default() };
    let charted: Vec<&DestinationSummary> =
        destinations.iter().filter(|d| d.peak_in_use > 0).take(CHART_DESTINATIONS).collect();
    let mut dest_series: Vec<Vec<f64>> = vec![Vec::new(); charted.len()];
    let mut prev = &samples[0];
    for group in samples.chunks(per) {
        let last = group.last().expect("chunks are not empty");
        let seconds = (last.mono_ns.saturating_sub(prev.mono_ns)).max(1) as f64 / 1e9;
        let rate = |f: fn(&Sample) -> u64| f(last).saturating_sub(f(prev)) as f64 / seconds;
        t.t.push(info.clock.to_unix_ns(last.mono_ns) as f64 / 1e9);
        t.timewait_live.push(group.iter().map(|s| s.timewait_live).max().unwrap_or(0) as f64);
        t.births_per_s.push(if std::ptr::eq(prev, last) { 0.0 } else { rate(|s| s.births_total) });
        t.deaths_per_s.push(if std::ptr::eq(prev, last) { 0.0 } else { rate(|s| s.expired_total + s.killed_total) });
        t.drops_per_s.push(if std::ptr::eq(prev, last) { 0.0 } else { rate(|s| s.drops_total) });
        t.connect_failures_per_s.push(if std::ptr::eq(prev, last) { 0.0 } else { rate(|s| s.connect_failures_total) });
        for (series, d) in dest_series.iter_mut().zip(&charted) {
            let max = group
                .iter()
                .flat_map(|s| &s.ports_in_use)
                .filter(|(k, _)| k.local.to_string() == d.local && k.remote.to_string() == d.remote)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            series.push(max as f64 / range.max(1) as f64);
        }
        prev = last;
    }
    t.destinations = charted.iter().map(|d| format!("{} → {}", d.local, d.remote)).zip(dest_series).collect();
    t
}

/// The conclusions a postmortem should start with.
fn findings(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let rec = &r.recording;
    if !rec.complete || !rec.damage.is_empty() {
        out.push(format!(
            "The recording is incomplete or damaged ({} problem(s), listed below): figures cover only what could be read.",
            rec.damage.len()
        ));
    }
    if rec.lost > 0 {
        out.push(format!(
            "{} events were lost in the kernel (ring buffer full): counts below are lower bounds. Record with a larger --ring-buffer-size.",
            rec.lost
        ));
    }
    let skipped = r.paws.counters.iter().find(|(name, _)| name == crate::probes::SKIPPED_RUNS).map_or(0, |(_, n)| *n);
    if skipped > 0 {
        out.push(format!(
            "The kernel skipped {skipped} runs of twtrace's programs (a softirq or kprobe hit them while a BPF program \
             was already running on that CPU): up to {skipped} events may be missing, most likely fewer."
        ));
    }
    let (lo, hi) = rec.sysctls.ip_local_port_range;
    for d in r.destinations.iter().filter(|d| d.peak_utilisation >= 0.8) {
        out.push(format!(
            "Port space toward {} from {} peaked at {:.0}% ({} of {} ports) at {}: connect() to it fails with \
             EADDRNOTAVAIL when full. Reuse connections (keep-alive or pooling), widen ip_local_port_range (now \
             {lo}-{hi}), or spread load over more destination addresses or ports.",
            d.remote,
            d.local,
            d.peak_utilisation * 100.0,
            d.peak_in_use,
            d.range,
            &d.peak_at[11..19]
        ));
    }
    let failed: u64 = r.failures.iter().filter(|f| f.error == "EADDRNOTAVAIL").map(|f| f.count).sum();
    if failed > 0 {
        let who: Vec<String> = r.failures.iter().take(3).map(|f| format!("{} x{}", f.process, f.count)).collect();
        out.push(format!("{failed} connect() calls found no free local port (EADDRNOTAVAIL): {}.", who.join(", ")));
    }
    if let Some(p50) = r.timewait.lifetime_p50_ms {
        if (55_000.0..=65_000.0).contains(&p50) {
            let fin = rec.sysctls.tcp_fin_timeout.map(|f| format!(" (tcp_fin_timeout is {f} s)")).unwrap_or_default();
            out.push(format!(
                "TIME_WAIT sockets lived {:.1} s (median): that is the kernel's fixed TCP_TIMEWAIT_LEN of 60 s; \
                 tcp_fin_timeout{fin} does not shorten it, it only bounds orphaned FIN_WAIT2 sockets.",
                p50 / 1e3
            ));
        }
    }
    if let (Some(max), peak) = (r.timewait.max_buckets, r.timewait.peak) {
        if max > 0 && peak as f64 >= 0.9 * max as f64 {
            out.push(format!(
                "TIME_WAIT peaked at {peak}, {:.0}% of tcp_max_tw_buckets ({max}): beyond it the kernel skips \
                 TIME_WAIT and counts TCPTimeWaitOverflow.",
                peak as f64 / max as f64 * 100.0
            ));
        }
    }
    if r.timewait.peak > 0 {
        if let Some(top) = r.timewait.by_remote_at_peak.first() {
            out.push(format!(
                "At the TIME_WAIT peak ({}) the largest group was toward {} ({} sockets); by owner: {}.",
                r.timewait.peak,
                top.key,
                top.count,
                r.timewait
                    .by_owner_at_peak
                    .iter()
                    .take(3)
                    .map(|g| format!("{} {}", g.key, g.count))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if r.paws.drops > 0 {
        let nat: Vec<&SourceView> = r.paws.sources.iter().filter(|s| s.flows >= 2).collect();
        let reasons: Vec<String> = r.paws.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push(format!(
            "{} segments were dropped by PAWS ({}) from {} source(s){}. tcp_timestamps is {}.",
            r.paws.drops,
            reasons.join(", "),
            r.paws.sources.len(),
            if nat.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} source(s) with several flows each ({}), the signature of clients behind NAT whose \
                     timestamp clocks differ",
                    nat.len(),
                    nat.iter().take(3).map(|s| s.source.to_string()).collect::<Vec<_>>().join(", ")
                )
            },
            rec.sysctls.tcp_timestamps.map_or("unknown".into(), |v| v.to_string())
        ));
    }
    if out.is_empty() {
        out.push("Nothing stands out: no port-space pressure, no PAWS drops, no loss.".into());
    }
    out
}

/// A line of block characters for a series (the text report's timelines).
fn sparkline(values: &[f64], width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return String::new();
    }
    let per = values.len().div_ceil(width).max(1);
    let points: Vec<f64> = values.chunks(per).map(|c| c.iter().copied().fold(0.0, f64::max)).collect();
    let max = points.iter().copied().fold(0.0, f64::max);
    points.iter().map(|v| if max <= 0.0 { BLOCKS[0] } else { BLOCKS[((v / max) * 7.0).round() as usize] }).collect()
}

fn ms_text(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}s", v / 1e3))
}

fn us_text(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}us"))
}

pub fn text(r: &Report) -> String {
    let rec = &r.recording;
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("twtrace report: {}", rec.file));
    line(format!(
        "  host {} kernel {}  {} .. {} ({:.0} s)  {} events, {} lost, {} chunks{}",
        rec.host,
        rec.kernel,
        rec.started,
        rec.ended,
        rec.seconds,
        rec.events,
        rec.lost,
        rec.chunks,
        if rec.complete { "" } else { ", NOT FINISHED" }
    ));
    let s = &rec.sysctls;
    let opt = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    line(format!(
        "  ip_local_port_range {}-{}  tcp_tw_reuse {}  tcp_timestamps {}  tcp_max_tw_buckets {}  tcp_fin_timeout {}",
        s.ip_local_port_range.0,
        s.ip_local_port_range.1,
        opt(s.tcp_tw_reuse),
        opt(s.tcp_timestamps),
        opt(s.tcp_max_tw_buckets),
        opt(s.tcp_fin_timeout)
    ));
    let backends: Vec<String> = rec.backends.iter().map(|(f, b)| format!("{f}:{b}")).collect();
    line(format!(
        "  backends {}{}",
        backends.join(" "),
        if rec.filter.is_empty() { String::new() } else { format!("  filter {}", rec.filter) }
    ));
    for d in &rec.damage {
        line(format!("  DAMAGE: {d}"));
    }
    line(String::new());
    line("Findings".into());
    for f in &r.findings {
        line(format!("  - {f}"));
    }
    line(String::new());
    let tw = &r.timewait;
    line(format!(
        "TIME_WAIT  peak {}{} at {}  start {} end {}  born {} expired {} killed {}  lifetime p50 {} p99 {} max {}",
        tw.peak,
        tw.max_buckets.map(|m| format!("/{m}")).unwrap_or_default(),
        tw.peak_at.as_deref().map_or("-", |t| &t[11..19]),
        tw.at_start,
        tw.at_end,
        tw.births,
        tw.expired,
        tw.killed,
        ms_text(tw.lifetime_p50_ms),
        ms_text(tw.lifetime_p99_ms),
        ms_text(tw.lifetime_max_ms)
    ));
    line(format!("  population  {}", sparkline(&r.timeline.timewait_live, 60)));
    for g in tw.by_remote_at_peak.iter().take(5) {
        line(format!("  at peak toward {} x{}", g.key, g.count));
    }
    for g in tw.by_owner_at_peak.iter().take(5) {
        line(format!("  at peak owned by {} x{}", g.key, g.count));
    }
    line(String::new());
    line(format!("Port space per destination (range {} ports)", r.destinations.first().map_or(0, |d| d.range)));
    for d in &r.destinations {
        let label = format!("{} → {}", d.local, d.remote);
        let series = r.timeline.destinations.iter().find(|(l, _)| *l == label).map_or(&[][..], |(_, s)| s.as_slice());
        line(format!(
            "  {} -> {}  peak {} ({:.1}%) at {}  end {}  search p50 {} p99 {}  candidates p99 {}  failures {}  {}",
            d.local,
            d.remote,
            d.peak_in_use,
            d.peak_utilisation * 100.0,
            &d.peak_at[11..19],
            d.in_use_at_end,
            us_text(d.search_p50_us),
            us_text(d.search_p99_us),
            d.candidates_p99.map_or("-".into(), |c| c.to_string()),
            d.failures,
            sparkline(series, 30)
        ));
    }
    for f in &r.failures {
        line(format!("  failed {} {} x{}", f.process, f.error, f.count));
    }
    line(String::new());
    let p = &r.paws;
    let reasons: Vec<String> = p.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
    line(format!(
        "PAWS drops {}  {}  peak {:.1}/s{}",
        p.drops,
        reasons.join(", "),
        p.peak_per_s,
        p.peak_at.as_deref().map(|t| format!(" at {}", &t[11..19])).unwrap_or_default()
    ));
    for s in &p.sources {
        line(format!("  from {} drops {} flows {}", s.source, s.drops, s.flows));
    }
    if !p.counters.is_empty() {
        let c: Vec<String> = p.counters.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
        line(format!("  counters {}", c.join(", ")));
    }
    o
}
