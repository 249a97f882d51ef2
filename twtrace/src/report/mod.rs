//! The postmortem model of a recording, and its renderers (text here, HTML in `html`). The
//! stream goes through the same aggregator `top` uses ([`ReportBuilder`], fed by the `report`
//! command's sink), sampled every second of recorded time for the timelines.

mod html;
mod text;

use std::collections::HashMap;

use serde::Serialize;

pub use html::render as html;
pub use text::text;

use crate::{
    aggregate::{
        Aggregator, Destination, FailureView, Group, NamespaceView, PeerTimestamps, Sample, Snapshot, SourceView,
    },
    event::{Event, NamespaceDescription, Sysctls},
    source::Health,
    source_info::SourceInfo,
    time::WallTime,
};

/// Timeline resolution while reading; charts merge points down to at most [`CHART_POINTS`].
const SAMPLE_NS: u64 = 1_000_000_000;
const CHART_POINTS: usize = 600;
/// Destinations drawn in the port-space chart.
const CHART_DESTINATIONS: usize = 6;
/// A new TIME_WAIT peak is kept in full (its breakdown by remote and owner) once it exceeds
/// the previous one by this factor: peaks are rare, so this stays cheap.
const PEAK_STEP: f64 = 1.05;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub recording: RecordingSummary,
    /// Conclusions in plain words, most important first (`crate::findings`).
    pub findings: Vec<String>,
    pub timewait: TimeWaitSummary,
    pub destinations: Vec<DestinationSummary>,
    /// The top failing commands; `failures_total` counts every failure by error.
    pub failures: Vec<FailureView>,
    pub failures_total: Vec<(String, u64)>,
    /// Each namespace at the end: its settings, TIME_WAIT, ports and counters.
    pub namespaces: Vec<NamespaceView>,
    pub paws: PawsSummary,
    pub timeline: Timeline,
    /// The marks made while recording (`twtrace mark`), in stream order.
    pub marks: Vec<MarkSummary>,
}

/// A mark as the report shows it: on every chart and in its own list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarkSummary {
    pub at: WallTime,
    pub text: String,
    pub uid: Option<u32>,
    pub pid: Option<u32>,
}

impl MarkSummary {
    /// "uid 0 pid 4242", or what is known of it.
    pub fn author(&self) -> String {
        let uid = self.uid.map_or("uid ?".into(), |u| format!("uid {u}"));
        let pid = self.pid.map_or(String::new(), |p| format!(" pid {p}"));
        format!("{uid}{pid}")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordingSummary {
    pub file: String,
    pub host: String,
    pub kernel: String,
    pub started: WallTime,
    pub ended: WallTime,
    pub seconds: f64,
    pub events: u64,
    pub lost: u64,
    /// Runs of twtrace's programs the kernel skipped while recording.
    pub skipped_runs: u64,
    pub chunks: u64,
    /// The end marker was found (`twtrace record` finished normally); always, for a live source.
    pub complete: bool,
    pub damage: Vec<String>,
    pub backends: Vec<(String, String)>,
    pub sysctls: Sysctls,
    pub netns: Option<u32>,
    pub port: Option<u16>,
    pub filter: String,
    pub sockets_at_start: usize,
    /// Every namespace described or seen, with its own settings.
    pub namespaces: Vec<NamespaceDescription>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimeWaitSummary {
    pub peak: u64,
    pub peak_at: Option<WallTime>,
    pub at_start: u64,
    pub at_end: u64,
    pub max_buckets: Option<u64>,
    pub births: u64,
    pub expired: u64,
    pub killed: u64,
    pub killed_by: crate::aggregate::KilledBy,
    pub lifetime_p50_ms: Option<f64>,
    pub lifetime_p99_ms: Option<f64>,
    pub lifetime_max_ms: Option<f64>,
    /// Where the TIME_WAIT sockets were at the peak: by remote address and by owner.
    pub by_remote_at_peak: Vec<Group>,
    pub by_owner_at_peak: Vec<Group>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DestinationSummary {
    /// `netns`, `local` and `remote` in the JSON.
    #[serde(flatten)]
    pub destination: Destination,
    /// Its namespace's name, and that namespace's `ip_local_port_range` and its size.
    pub namespace: String,
    pub port_range: (u16, u16),
    pub range: u64,
    pub peak_in_use: u64,
    pub peak_utilisation: f64,
    pub peak_at: WallTime,
    pub in_use_at_end: u64,
    pub search_p50_us: Option<f64>,
    pub search_p99_us: Option<f64>,
    pub candidates_p99: Option<u64>,
    pub failures: u64,
    /// Its TIME_WAIT sockets with and without the peer's timestamps (`None`: none read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_timestamps: Option<PeerTimestamps>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PawsSummary {
    pub drops: u64,
    pub by_reason: Vec<(String, u64)>,
    pub sources: Vec<SourceView>,
    pub peak_per_s: f64,
    pub peak_at: Option<WallTime>,
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
    pub destinations: Vec<DestinationSeries>,
}

/// One destination's utilisation over time; in JSON `["local → remote", [values]]`.
#[derive(Clone, Debug)]
pub struct DestinationSeries {
    pub destination: Destination,
    pub utilisation: Vec<f64>,
}

impl Serialize for DestinationSeries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.destination.label(), &self.utilisation).serialize(serializer)
    }
}

/// Reads the stream into a [`Report`]: applies every event to the aggregator, sampling it
/// every second of recorded time.
pub struct ReportBuilder {
    aggregator: Aggregator,
    samples: Vec<Sample>,
    next_sample: u64,
    /// The full picture at the highest TIME_WAIT peak so far.
    peak_snapshot: Option<Snapshot>,
    last_ts: u64,
    events: u64,
    marks: Vec<MarkSummary>,
    /// How long each sample (and the peak's snapshot) took.
    pub times: crate::drive::ViewTimes,
}

impl Report {
    /// The name of namespace `netns` as the recording described it (its inode if it was not).
    pub fn namespace_name(&self, netns: u32) -> String {
        let described = self.recording.namespaces.iter().find(|d| d.netns == netns).map(|d| d.name.clone());
        described
            .or_else(|| self.namespaces.iter().find(|v| v.netns == netns).map(|v| v.name.clone()))
            .unwrap_or_else(|| netns.to_string())
    }

    /// A PAWS source as people read it: the address and the namespace that received from it
    /// (one address in two namespaces is two sources, e.g. 127.0.0.1 in each).
    pub fn source_label(&self, s: &crate::aggregate::SourceView) -> String {
        format!("{} in {}", s.source, self.namespace_name(s.netns))
    }
}

impl ReportBuilder {
    /// `aggregator`: seeded with the sockets at the start, `started_ns`.
    pub fn new(mut aggregator: Aggregator, started_ns: u64) -> Self {
        aggregator.advance(started_ns);
        let samples = vec![aggregator.sample(started_ns)];
        Self {
            aggregator,
            samples,
            next_sample: started_ns + SAMPLE_NS,
            peak_snapshot: None,
            last_ts: started_ns,
            events: 0,
            marks: Vec::new(),
            times: crate::drive::ViewTimes::default(),
        }
    }

    /// The model's repair after loss (see [`Aggregator::resync_due`]).
    pub fn resync_due(&self, now_ns: u64) -> bool {
        self.aggregator.resync_due(now_ns)
    }

    pub fn resync(&mut self, now_ns: u64, sockets: Option<&[crate::event::ExistingSocket]>) {
        self.aggregator.resync(now_ns, sockets);
    }

    pub fn event(&mut self, event: &Event) {
        let ts = event.ts_ns();
        while ts >= self.next_sample {
            self.take_sample(self.next_sample);
            self.next_sample += SAMPLE_NS;
        }
        if !matches!(event, Event::Lost(_)) {
            self.events += 1;
        }
        self.last_ts = self.last_ts.max(ts);
        if let Event::Mark(m) = event {
            self.marks.push(MarkSummary {
                at: WallTime::from_unix_ns(m.unix_ns),
                text: m.text.clone(),
                uid: m.uid,
                pid: m.pid,
            });
        }
        self.aggregator.apply(event);
    }

    fn take_sample(&mut self, at: u64) {
        let (aggregator, peak_snapshot) = (&mut self.aggregator, &mut self.peak_snapshot);
        let sample = self.times.time(|| {
            aggregator.advance(at);
            let sample = aggregator.sample(at);
            let peak = peak_snapshot.as_ref().map_or(0, |s| s.timewait.live);
            if sample.timewait_live > 0 && sample.timewait_live as f64 > peak as f64 * PEAK_STEP {
                *peak_snapshot = Some(aggregator.snapshot(at));
            }
            sample
        });
        self.samples.push(sample);
    }

    /// The report of everything read; `file` names the recording, `health` is the source's
    /// at the end (its end marker, chunks and damage).
    pub fn finish(mut self, file: String, info: &SourceInfo, health: &Health) -> Report {
        let replay = health.replay.as_ref();
        let trailer = replay.and_then(|r| r.trailer.as_ref());
        let ended_ns = trailer.map_or(self.last_ts, |t| t.ended_ns.max(self.last_ts));
        self.take_sample(ended_ns);
        let end = self.aggregator.snapshot(ended_ns);
        let mut damage: Vec<String> =
            replay.map(|r| r.damage.iter().map(ToString::to_string).collect()).unwrap_or_default();
        if let Some(t) = trailer {
            if t.events != self.events && damage.is_empty() {
                damage.push(format!("the end marker counts {} events, {} were read", t.events, self.events));
            }
        }
        // A live run ends when it is stopped: complete. A recording is when its end marker is there.
        let complete = replay.is_none() || trailer.is_some();
        let recording = RecordingSummary {
            complete,
            damage,
            ..summary(file, info, health, ended_ns, self.events, &self.aggregator)
        };
        let mut report = assemble(recording, info, &self.samples, self.peak_snapshot, &end, &self.aggregator);
        report.marks = self.marks;
        report
    }
}

/// The report of a model still running (`top`'s findings pane): `end` is its snapshot now,
/// and the one sample is now too, so a "peak" is the figure at this moment. No timeline and no
/// peak breakdown to keep: cheap enough for once a frame, and nothing grows with the run.
pub fn live(model: &Aggregator, end: &Snapshot, info: &SourceInfo, health: &Health) -> Report {
    let replay = health.replay.as_ref();
    let damage: Vec<String> = replay.map(|r| r.damage.iter().map(ToString::to_string).collect()).unwrap_or_default();
    // A replay still under way is not incomplete; one that ended without its end marker is.
    let complete = replay.is_none_or(|r| !r.ended || r.trailer.is_some());
    let recording =
        RecordingSummary { complete, damage, ..summary(String::new(), info, health, end.mono_ns, end.events, model) };
    assemble(recording, info, &[model.sample(end.mono_ns)], None, end, model)
}

/// What was read, up to `ended_ns`, for a finished stream and a live one alike; complete and
/// undamaged until the caller says otherwise.
fn summary(
    file: String,
    info: &SourceInfo,
    health: &Health,
    ended_ns: u64,
    events: u64,
    model: &Aggregator,
) -> RecordingSummary {
    RecordingSummary {
        file,
        host: info.host.clone(),
        kernel: info.kernel.clone(),
        started: info.clock.at(info.started_ns),
        ended: info.clock.at(ended_ns),
        seconds: ended_ns.saturating_sub(info.started_ns) as f64 / 1e9,
        events,
        lost: health.lost,
        skipped_runs: health.skipped_runs,
        chunks: health.replay.as_ref().map_or(0, |r| r.chunks),
        complete: true,
        damage: Vec::new(),
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
        namespaces: model.namespaces(),
    }
}

fn assemble(
    recording: RecordingSummary,
    info: &SourceInfo,
    samples: &[Sample],
    peak: Option<Snapshot>,
    end: &Snapshot,
    model: &Aggregator,
) -> Report {
    let wall = |mono: u64| info.clock.at(mono);
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
        killed_by: tw.killed_by,
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
            let view = end.port_space.destinations.iter().find(|d| d.destination == *dest);
            let range = model.range_size(dest.netns);
            DestinationSummary {
                destination: *dest,
                namespace: model.namespace_name(dest.netns),
                port_range: model.port_range(dest.netns),
                range,
                peak_in_use: *peak_in_use,
                peak_utilisation: *peak_in_use as f64 / range.max(1) as f64,
                peak_at: wall(*at),
                in_use_at_end: view.map_or(0, |v| v.in_use),
                search_p50_us: view.and_then(|v| v.search_p50_us),
                search_p99_us: view.and_then(|v| v.search_p99_us),
                candidates_p99: view.and_then(|v| v.candidates_p99),
                failures: view.map_or(0, |v| v.failures),
                peer_timestamps: view.and_then(|v| v.peer_timestamps),
            }
        })
        .collect();
    // Remotes every connect() to which failed hold no ports, but belong in the table.
    for v in &end.port_space.destinations {
        if !destinations.iter().any(|d| d.destination == v.destination) {
            destinations.push(DestinationSummary {
                destination: v.destination,
                namespace: v.namespace.clone(),
                port_range: model.port_range(v.destination.netns),
                range: v.range,
                peak_in_use: v.in_use,
                peak_utilisation: v.utilisation,
                peak_at: wall(end.mono_ns),
                in_use_at_end: v.in_use,
                search_p50_us: v.search_p50_us,
                search_p99_us: v.search_p99_us,
                candidates_p99: v.candidates_p99,
                failures: v.failures,
                peer_timestamps: v.peer_timestamps,
            });
        }
    }
    destinations.sort_by(|a, b| {
        // The fullest against its own namespace's range first, as in the live views.
        b.peak_utilisation
            .total_cmp(&a.peak_utilisation)
            .then(b.failures.cmp(&a.failures))
            .then(b.peak_in_use.cmp(&a.peak_in_use))
            .then(a.destination.cmp(&b.destination))
    });
    // As many rows as asked for (`--top`). Not as many as the end snapshot has: destinations
    // of namespaces gone by then have peaks but no row there, and a recording on a busy host
    // (the test matrix: other tests' namespaces come and go) then cut rows that were asked for.
    destinations.truncate(model.top().max(10));

    let timeline = timeline(info, samples, &destinations);
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
        peak_at: peak_drops_at.map(WallTime::from_unix_secs),
        counters: end.paws.counters.clone(),
    };
    Report {
        recording,
        findings: Vec::new(),
        timewait,
        destinations,
        failures: end.port_space.failures.clone(),
        failures_total: end.port_space.failures_total.clone(),
        namespaces: end.namespaces.clone(),
        paws,
        timeline,
        marks: Vec::new(),
    }
}

fn timeline(info: &SourceInfo, samples: &[Sample], destinations: &[DestinationSummary]) -> Timeline {
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
                .filter(|(k, _)| *k == d.destination)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            series.push(max as f64 / d.range.max(1) as f64);
        }
        prev = last;
    }
    t.destinations = charted
        .iter()
        .zip(dest_series)
        .map(|(d, utilisation)| DestinationSeries { destination: d.destination, utilisation })
        .collect();
    t
}
