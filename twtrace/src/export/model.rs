//! What a scrape returns: an [`Exposition`] built from the aggregator on the drive loop's tick,
//! and the `prometheus-client` collector that encodes it when `/metrics` is asked for.
//!
//! Building reads the model (on the drive loop, once per tick, whatever the number of
//! scrapers); encoding reads only the immutable [`Exposition`] (on the HTTP side, once per
//! tick however many scrapers ask). Neither waits for the other.
//!
//! Cardinality is bounded by [`Limits::top_k`]: per kind of row (destinations, connect
//! searches, PAWS sources) the K most important get their own series and the rest are summed
//! into one `other` series, with `twtrace_series_folded{kind}` saying how many were. A
//! destination that holds no port and whose counters have not moved for
//! [`Limits::idle_after`] is left out (`twtrace_series_aged_out{kind="destination"}`).
//! Namespaces are not folded: each has its own few series (see docs/serve.md, "Cardinality", for the sum).

mod health;
mod namespaces;
mod other;
mod process;

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use foldhash::{HashMap, HashMapExt};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    aggregate::{Aggregator, Destination, KilledBy, Snapshot, stats::Histogram, topk::top_k},
    probes::FamilyReport,
    source::Health,
};

/// How much of the model a scrape shows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Series of their own per kind of row; the rest are folded into `other`.
    pub top_k: usize,
    /// A destination holding no port whose counters stood still this long is left out.
    pub idle_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { top_k: 20, idle_after: Duration::from_secs(600) }
    }
}

/// Rows the aggregator ranks for the exporter before it folds (what `--top` is for `stat`):
/// beyond this many destinations or sources a snapshot is cut, so `other` then counts only
/// the first ones. Large enough for any host docs/serve.md's sizing covers.
pub const MODEL_ROWS: usize = 1000;

/// TIME_WAIT lifetime bounds (s): the 60 s timer and its timer-wheel slack, and early kills.
const LIFETIME_BOUNDS: [f64; 12] = [1.0, 10.0, 30.0, 59.0, 60.0, 60.5, 61.0, 61.5, 62.0, 65.0, 120.0, 300.0];
/// Port search duration bounds (s): a few microseconds when ports are free, milliseconds when
/// the kernel walks a nearly full range.
const SEARCH_BOUNDS: [f64; 14] =
    [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0];
/// Candidate ports examined per search.
const CANDIDATE_BOUNDS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 32768.0, 65536.0];

/// TIME_WAIT deaths by the `reason` label's values (host-wide and per namespace alike).
fn death_reasons(expired: u64, k: &KilledBy) -> [(&'static str, u64); 7] {
    [
        ("expired", expired),
        ("reused", k.reused),
        ("reset", k.reset),
        ("incoming", k.incoming),
        ("namespace_exit", k.namespace_exit),
        ("aborted", k.aborted),
        ("killed", k.unknown),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Info,
    Histogram,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// An info series: its labels are the information, its value 1.
    Info,
    /// Cumulative counts at each bound, `+Inf` last.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// One metric family. `name` is without the unit and type suffixes the encoder adds
/// (`_seconds`, `_total`, `_info`, `_bucket`...).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub seconds: bool,
    pub kind: Kind,
    pub series: Vec<Series>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self { name, help, seconds: false, kind, series: Vec::new() }
    }

    fn in_seconds(mut self) -> Self {
        self.seconds = true;
        self
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: Value) {
        self.series.push(Series { labels, value });
    }

    /// The full name of its samples' stem, as Prometheus sees it.
    pub fn full_name(&self) -> String {
        let mut name = self.name.to_owned();
        if self.seconds {
            name.push_str("_seconds");
        }
        match self.kind {
            Kind::Counter => name.push_str("_total"),
            Kind::Info => name.push_str("_info"),
            _ => {}
        }
        name
    }
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Counts builds: scrapes of the same generation share one encoding.
    pub generation: u64,
    /// CLOCK_MONOTONIC of the model's state.
    pub mono_ns: u64,
    pub families: Vec<Family>,
}

impl Exposition {
    pub fn family(&self, full_name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.full_name() == full_name)
    }

    /// Series in the exposition (a histogram counts once).
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}

/// Builds [`Exposition`]s, remembering when each destination last moved (for ageing).
pub struct Builder {
    limits: Limits,
    generation: u64,
    /// Per destination: (in use, connects, failures) as last seen, and since when unchanged.
    activity: HashMap<Destination, ((u64, u64, u64), u64)>,
    /// Each described namespace's labels, as of this build.
    identities: HashMap<u32, namespaces::Identity>,
    /// `ip netns` names (`/run/netns`), for `netns_name`.
    registered: namespaces::Registered,
    /// The folded rows' `other` counters, which only grow (`other.rs`).
    other: other::OtherCounters,
}

fn histogram(h: &Histogram, bounds: &[f64], scale: f64) -> Value {
    let raw: Vec<u64> = bounds.iter().map(|b| (b * scale).round() as u64).collect();
    let mut buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(h.at_or_below(&raw)).collect();
    buckets.push((f64::INFINITY, h.count()));
    Value::Histogram { sum: h.sum() as f64 / scale, count: h.count(), buckets }
}

impl Builder {
    pub fn new(limits: Limits) -> Self {
        Self::with_ip_netns_dir(limits, Some("/run/netns".into()))
    }

    /// A builder that reads `ip netns` names in `dir` (`None`: nowhere; tests).
    pub fn with_ip_netns_dir(limits: Limits, dir: Option<std::path::PathBuf>) -> Self {
        Self {
            limits,
            generation: 0,
            activity: HashMap::new(),
            identities: HashMap::new(),
            registered: namespaces::Registered::new(dir),
            other: other::OtherCounters::default(),
        }
    }

    /// The exposition of `aggregator` at `now_ns` (advance it first). `health` and `backends`
    /// describe the source.
    pub fn build(
        &mut self,
        aggregator: &Aggregator,
        now_ns: u64,
        health: &Health,
        backends: &[FamilyReport],
    ) -> Exposition {
        self.generation += 1;
        let snapshot = aggregator.snapshot(now_ns);
        self.identify(aggregator, now_ns);
        let mut families = Vec::new();
        self.namespaces(aggregator, &snapshot, &mut families);
        self.timewait(aggregator, &snapshot, &mut families);
        self.destinations(aggregator, &snapshot, now_ns, &mut families);
        self.searches(aggregator, &mut families);
        self.paws(&snapshot, &mut families);
        self_metrics(&snapshot, health, backends, &mut families);
        health::model_metrics(&snapshot, &mut families);
        process::process_metrics(&mut families);
        // Folding counts were pushed as they were found: keep them in one family, last.
        let mut folded = Family::new(
            "twtrace_series_folded",
            Kind::Gauge,
            "Rows beyond --top summed into the `other` series of their kind.",
        );
        let mut aged = Family::new(
            "twtrace_series_aged_out",
            Kind::Gauge,
            "Idle rows left out of the exposition (no port held, no counter moved for --idle-after).",
        );
        for f in &mut families {
            if f.name == "twtrace_series_folded" {
                folded.series.append(&mut f.series);
            } else if f.name == "twtrace_series_aged_out" {
                aged.series.append(&mut f.series);
            }
        }
        families.retain(|f| {
            !f.series.is_empty() && f.name != "twtrace_series_folded" && f.name != "twtrace_series_aged_out"
        });
        families.push(folded);
        families.push(aged);
        Exposition { generation: self.generation, mono_ns: now_ns, families }
    }

    fn timewait(&self, aggregator: &Aggregator, snapshot: &Snapshot, out: &mut Vec<Family>) {
        let t = &snapshot.timewait;
        let mut births = Family::new("twtrace_timewait_births", Kind::Counter, "TIME_WAIT sockets born since start.");
        births.push(vec![], Value::Int(t.births_total));
        let mut deaths = Family::new(
            "twtrace_timewait_deaths",
            Kind::Counter,
            "TIME_WAIT sockets gone since start, by reason: expired (the timer ran out), or the path that ended \
             it early: reused (by connect(), tcp_tw_reuse), reset (an RST), incoming (a SYN opened a new \
             connection over it), namespace_exit (its namespace torn down), aborted (destroyed on request: ss -K, bpf_sock_destroy), \
             killed (path not known).",
        );
        for (reason, count) in death_reasons(t.expired_total, &t.killed_by) {
            deaths.push(vec![("reason", reason.into())], Value::Int(count));
        }
        let mut lifetime = Family::new(
            "twtrace_timewait_lifetime",
            Kind::Histogram,
            "Lifetime of TIME_WAIT sockets at their death (to about 3%).",
        )
        .in_seconds();
        lifetime.push(vec![], histogram(aggregator.lifetimes(), &LIFETIME_BOUNDS, 1e9));
        out.extend([births, deaths, lifetime]);
    }

    fn destinations(&mut self, aggregator: &Aggregator, snapshot: &Snapshot, now_ns: u64, out: &mut Vec<Family>) {
        let mut in_use = Family::new(
            "twtrace_destination_ports_in_use",
            Kind::Gauge,
            "Local ports held toward a destination (local address -> remote endpoint) by connected and client-side TIME_WAIT sockets.",
        );
        let mut range = Family::new(
            "twtrace_destination_port_range_size",
            Kind::Gauge,
            "Ports connect() may use toward the destination: its namespace's ip_local_port_range.",
        );
        let mut ratio = Family::new(
            "twtrace_destination_port_utilisation_ratio",
            Kind::Gauge,
            "Ports in use over the range size (0-1).",
        );
        let mut connects =
            Family::new("twtrace_destination_connects", Kind::Counter, "connect() attempts toward the destination.");
        let mut failures = Family::new(
            "twtrace_destination_connect_failures",
            Kind::Counter,
            "Failed connect() port searches toward the destination's remote endpoint (any errno).",
        );
        let mut exhaustion = Family::new(
            "twtrace_destination_exhaustion",
            Kind::Gauge,
            "Time until the range is full toward the destination at the current net growth (absent when not growing).",
        )
        .in_seconds();
        let mut peer_timestamps = Family::new(
            "twtrace_destination_timewait_births",
            Kind::Counter,
            "TIME_WAIT sockets born holding a port toward the destination, by whether the peer had sent TCP timestamps on \
             the connection (tcp_tw_reuse can give connect() back only the ports of those that had: `sent`).",
        );
        let mut folded = Family::new("twtrace_series_folded", Kind::Gauge, "");
        let mut aged = Family::new("twtrace_series_aged_out", Kind::Gauge, "");

        let mut seen = HashMap::with_capacity(snapshot.port_space.destinations.len());
        let mut shown = 0;
        let (mut n_folded, mut n_aged) = (0u64, 0u64);
        // Ports in use toward folded rows: a gauge, summed afresh.
        let mut other_in_use = 0u64;
        for d in &snapshot.port_space.destinations {
            let total_connects = aggregator.connects_total(&d.destination);
            let signature = (d.in_use, total_connects, d.failures);
            let previous = self.activity.get(&d.destination);
            let since = match previous {
                Some((s, since)) if *s == signature => *since,
                _ => now_ns,
            };
            let previous = previous.map(|((_, connects, failures), _)| (*connects, *failures));
            seen.insert(d.destination, (signature, since));
            if d.in_use == 0 && now_ns.saturating_sub(since) >= self.limits.idle_after.as_nanos() as u64 {
                n_aged += 1;
                continue;
            }
            if shown >= self.limits.top_k {
                n_folded += 1;
                other_in_use += d.in_use;
                self.other.fold_destination(total_connects, d.failures, previous);
                continue;
            }
            shown += 1;
            let mut labels = self.ns(d.destination.netns, &d.namespace);
            labels.push(("local", d.destination.local.to_string()));
            labels.push(("remote", d.destination.remote.to_string()));
            in_use.push(labels.clone(), Value::Int(d.in_use));
            range.push(labels.clone(), Value::Int(d.range));
            ratio.push(labels.clone(), Value::Float(d.utilisation));
            connects.push(labels.clone(), Value::Int(total_connects));
            failures.push(labels.clone(), Value::Int(d.failures));
            if let Some(ts) = d.peer_timestamps {
                for (peer, n) in [("sent", ts.seen), ("absent", ts.absent)] {
                    let mut l = labels.clone();
                    l.push(("peer_timestamps", peer.to_owned()));
                    peer_timestamps.push(l, Value::Int(n));
                }
            }
            if let Some(s) = d.seconds_to_exhaustion {
                exhaustion.push(labels, Value::Float(s));
            }
        }
        self.activity = seen;
        let (other_connects, other_failures) = (self.other.connects, self.other.failures);
        if n_folded > 0 || other_connects > 0 || other_failures > 0 {
            let labels = || {
                let mut l = namespaces::Identity::other().labels("other".into());
                l.extend([("local", "other".to_owned()), ("remote", "other".to_owned())]);
                l
            };
            in_use.push(labels(), Value::Int(other_in_use));
            connects.push(labels(), Value::Int(other_connects));
            failures.push(labels(), Value::Int(other_failures));
        }
        folded.push(vec![("kind", "destination".into())], Value::Int(n_folded));
        aged.push(vec![("kind", "destination".into())], Value::Int(n_aged));

        let mut by_errno = Family::new(
            "twtrace_port_search_failures",
            Kind::Counter,
            "Failed connect() and bind() port searches in the namespace, by errno (EADDRNOTAVAIL: no free port).",
        );
        let mut sums: HashMap<(u32, &str, &str), u64> = HashMap::new();
        for f in &snapshot.port_space.failures {
            *sums.entry((f.netns, f.namespace.as_str(), f.error.as_str())).or_default() += f.count;
        }
        let mut sums: Vec<_> = sums.into_iter().collect();
        sums.sort();
        for ((netns, name, errno), count) in sums {
            let mut labels = self.ns(netns, name);
            labels.push(("errno", errno.to_owned()));
            by_errno.push(labels, Value::Int(count));
        }
        out.extend([in_use, range, ratio, connects, failures, exhaustion, peer_timestamps, by_errno, folded, aged]);
    }

    fn searches(&mut self, aggregator: &Aggregator, out: &mut Vec<Family>) {
        let mut duration = Family::new(
            "twtrace_connect_search_duration",
            Kind::Histogram,
            "connect() ephemeral port search duration per remote endpoint (tracepoint backend: SYN_SENT to the SYN, approximate).",
        )
        .in_seconds();
        let mut candidates = Family::new(
            "twtrace_connect_search_candidates",
            Kind::Histogram,
            "Candidate ports connect() examined per search (fentry and kprobe backends only).",
        );
        // The busiest rows by name (a selection, not a sort of a hundred thousand rows); the
        // rest summed into `other`.
        type Row<'a> = ((u32, SocketAddr), &'a Histogram, &'a Histogram);
        let busiest = |a: &Row, b: &Row| b.1.count().cmp(&a.1.count()).then(a.0.cmp(&b.0));
        let shown: Vec<Row> = top_k(aggregator.connect_searches(), self.limits.top_k, busiest);
        // The rest: what every search so far (evicted rows' included) grew by, less the rows
        // named, accumulated so that it only grows (`other.rs`).
        let n_folded = aggregator.connect_search_rows().saturating_sub(shown.len()) as u64;
        self.other.searches(aggregator.all_connect_searches(), &shown);
        let (rest_d, rest_c) = (&self.other.search_duration, &self.other.search_candidates);
        let other_d = (rest_d.count() > 0).then(|| histogram(rest_d, &SEARCH_BOUNDS, 1e9));
        let other_c = (rest_c.count() > 0).then(|| histogram(rest_c, &CANDIDATE_BOUNDS, 1.0));
        for ((netns, remote), d, c) in shown {
            let mut labels = self.ns(netns, &aggregator.namespace_name(netns));
            labels.push(("remote", remote.to_string()));
            duration.push(labels.clone(), histogram(d, &SEARCH_BOUNDS, 1e9));
            if c.count() > 0 {
                candidates.push(labels, histogram(c, &CANDIDATE_BOUNDS, 1.0));
            }
        }
        let other = || {
            let mut l = namespaces::Identity::other().labels("other".into());
            l.push(("remote", "other".to_owned()));
            l
        };
        if let Some(v) = other_d {
            duration.push(other(), v);
        }
        if let Some(v @ Value::Histogram { count: 1.., .. }) = other_c {
            candidates.push(other(), v);
        }
        let mut bind = Family::new(
            "twtrace_bind_search_duration",
            Kind::Histogram,
            "bind()/listen() port search duration, host-wide (fentry and kprobe backends only).",
        )
        .in_seconds();
        bind.push(vec![], histogram(aggregator.bind_searches(), &SEARCH_BOUNDS, 1e9));
        let mut folded = Family::new("twtrace_series_folded", Kind::Gauge, "");
        folded.push(vec![("kind", "connect_search".into())], Value::Int(n_folded));
        out.extend([duration, candidates, bind, folded]);
    }

    fn paws(&mut self, snapshot: &Snapshot, out: &mut Vec<Family>) {
        let p = &snapshot.paws;
        let mut drops = Family::new(
            "twtrace_paws_drops",
            Kind::Counter,
            "Segments the kernel dropped for PAWS and other RFC 7323 timestamp checks, by drop reason.",
        );
        // The usual reasons start at 0, so rate() and alerts see the first drop.
        let usual = ["TCP_RFC7323_PAWS", "TCP_RFC7323_PAWS_ACK", "TCP_RFC7323_TW_PAWS", "TCP_RFC7323_TSECR"];
        let mut reasons: Vec<(String, u64)> = usual.iter().map(|r| (r.to_string(), 0)).collect();
        for r in &p.by_reason {
            match reasons.iter_mut().find(|(name, _)| *name == r.reason) {
                Some(known) => known.1 = r.total,
                None => reasons.push((r.reason.clone(), r.total)),
            }
        }
        for (reason, total) in reasons {
            drops.push(vec![("reason", reason)], Value::Int(total));
        }
        let mut by_source = Family::new(
            "twtrace_paws_source_drops",
            Kind::Counter,
            "PAWS drops by source address (many flows from one source: hosts behind NAT).",
        );
        let mut flows = Family::new(
            "twtrace_paws_source_flows",
            Kind::Gauge,
            "Distinct flows (remote port, local port) dropped from the source.",
        );
        let top_k = self.limits.top_k;
        self.other.paws_sources(p.sources.iter().enumerate().map(|(i, s)| ((s.netns, s.source), s.drops, i < top_k)));
        let n_folded = p.sources.len().saturating_sub(top_k) as u64;
        let other = self.other.paws_drops;
        for s in p.sources.iter().take(top_k) {
            let name = snapshot
                .namespaces
                .iter()
                .find(|n| n.netns == s.netns)
                .map_or_else(|| s.netns.to_string(), |n| n.name.clone());
            let mut labels = self.ns(s.netns, &name);
            labels.push(("source", s.source.to_string()));
            by_source.push(labels.clone(), Value::Int(s.drops));
            flows.push(labels, Value::Int(s.flows));
        }
        if n_folded > 0 || other > 0 {
            let mut labels = namespaces::Identity::other().labels("other".into());
            labels.push(("source", "other".to_owned()));
            by_source.push(labels, Value::Int(other));
        }
        let mut folded = Family::new("twtrace_series_folded", Kind::Gauge, "");
        folded.push(vec![("kind", "paws_source".into())], Value::Int(n_folded));
        out.extend([drops, by_source, flows, folded]);
    }
}

fn self_metrics(snapshot: &Snapshot, health: &Health, backends: &[FamilyReport], out: &mut Vec<Family>) {
    let counter = |name, help, v: u64| {
        let mut f = Family::new(name, Kind::Counter, help);
        f.push(vec![], Value::Int(v));
        f
    };
    out.push(counter("twtrace_events", "Events twtrace decoded and aggregated (after the filters).", snapshot.events));
    out.push(counter(
        "twtrace_lost_records",
        "Records the kernel could not put in the ring buffer (each was an event twtrace did not see).",
        health.lost.max(snapshot.lost),
    ));
    out.push(counter(
        "twtrace_skipped_runs",
        "Runs of twtrace's BPF programs the kernel skipped (another BPF program was running on the CPU, or a kprobe missed a hit).",
        health.skipped_runs.max(snapshot.skipped_runs),
    ));
    if let Some(d) = &health.decoder {
        out.push(counter(
            "twtrace_decoder_malformed_records",
            "Records the decoder could not read.",
            d.malformed + d.wrong_version,
        ));
    }
    if let Some(run_time) = &health.bpf_run_time {
        let mut f = Family::new(
            "twtrace_bpf_run",
            Kind::Counter,
            "Kernel time spent in twtrace's BPF programs, by the probe family that owns each (needs kernel.bpf_stats_enabled=1).",
        )
        .in_seconds();
        for (family, ns) in &run_time.by_family {
            f.push(vec![("family", family.to_string())], Value::Float(*ns as f64 / 1e9));
        }
        out.push(f);
    }
    let mut build = Family::new("twtrace_build", Kind::Info, "The twtrace that serves these metrics.");
    build.push(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], Value::Info);
    out.push(build);
    let mut published = Family::new(
        "twtrace_last_publish_timestamp",
        Kind::Gauge,
        "When these figures were built (Unix time): it stops advancing when twtrace's event loop stalls, while scrapes still succeed.",
    )
    .in_seconds();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    published.push(vec![], Value::Float(now.as_secs_f64()));
    out.push(published);
    let mut info = Family::new(
        "twtrace_probe",
        Kind::Info,
        "Per probe family: the backend it runs on (off: not attached) and its kernel hooks.",
    );
    for r in backends {
        info.push(
            vec![
                ("family", r.family.to_string()),
                ("backend", r.running.map_or_else(|| "off".to_owned(), |b| b.to_string())),
                ("hooks", r.hooks.join(",")),
            ],
            Value::Info,
        );
    }
    out.push(info);
}

/// Encodes an [`Exposition`] through `prometheus-client` when a registry asks.
#[derive(Debug)]
struct ExpositionCollector(Arc<Exposition>);

impl Collector for ExpositionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seconds = Unit::Seconds;
        for f in &self.0.families {
            let kind = match f.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Info => MetricType::Info,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, f.seconds.then_some(&seconds), kind)?;
            for s in &f.series {
                let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if s.value == Value::Info {
                    metric.encode_info(&labels)?;
                    continue;
                }
                let mut m = metric.encode_family(&labels)?;
                match (&s.value, f.kind) {
                    (Value::Int(v), Kind::Counter) => m.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    (Value::Float(v), Kind::Counter) => m.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    (Value::Int(v), _) => m.encode_gauge(v)?,
                    (Value::Float(v), _) => m.encode_gauge(v)?,
                    (Value::Histogram { sum, count, buckets }, _) => {
                        // The encoder wants each bucket's own count; ours are cumulative.
                        let mut previous = 0;
                        let own: Vec<(f64, u64)> = buckets
                            .iter()
                            .map(|(le, n)| {
                                let own = n - previous;
                                previous = *n;
                                (*le, own)
                            })
                            .collect();
                        m.encode_histogram::<NoLabelSet>(*sum, *count, &own, None)?;
                    }
                    (Value::Info, _) => unreachable!("handled above"),
                }
            }
        }
        Ok(())
    }
}

/// The OpenMetrics text of an exposition (`# EOF` included).
pub fn encode(exposition: Arc<Exposition>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExpositionCollector(exposition)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        // Writing to a String cannot fail; an encoder refusal would be a bug here.
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

#[cfg(test)]
mod tests;
