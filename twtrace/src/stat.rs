//! `twtrace stat`: the aggregator's views as periodic text blocks or JSON lines, for scripts,
//! pipes and logs (and what `top` falls back to without a terminal).

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::{
    aggregate::{Aggregator, Settings, Snapshot},
    filter::Filter,
    kernel::{self, WallClock},
    output::rfc3339,
    probes::{self, LiveProbes, Options},
};

pub struct StatOptions {
    pub interval: Duration,
    pub count: Option<u64>,
    pub json: bool,
    pub top: usize,
}

/// The aggregator for the traced namespace, seeded with the sockets that exist now.
pub fn seeded_aggregator(options: &Options, top: usize) -> anyhow::Result<Aggregator> {
    let path = options.netns_path.as_deref();
    if options.netns.is_some() && path.is_none() {
        anyhow::bail!("--netns given as an inode: the views need the namespace's name or path to read its sockets");
    }
    let (port_range, max_tw_buckets) =
        kernel::netns::port_settings(path).context("reading net.ipv4.ip_local_port_range")?;
    let mut aggregator = Aggregator::new(Settings { port_range, max_tw_buckets, top });
    let sockets = kernel::netns::run_in(path, kernel::sockdiag::tcp_sockets).context("listing sockets (sock_diag)")?;
    aggregator.seed(kernel::monotonic_ns(), &sockets);
    Ok(aggregator)
}

pub async fn run(options: &Options, filter: &Filter, stat: &StatOptions) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut probes = LiveProbes::load(options).context("cannot start tracing")?;
    let mut aggregator = seeded_aggregator(options, stat.top)?;
    let clock = WallClock::now();
    eprintln!("twtrace: tracing; {}", probes::backend_summary(&probes.reports));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + stat.interval, stat.interval);
    let mut batch = Vec::new();
    let mut printed = 0u64;
    loop {
        // A stop prints one last report: what happened since the previous one is not lost.
        let (stop, report) = tokio::select! {
            _ = sigint.recv() => (true, true),
            _ = sigterm.recv() => (true, true),
            _ = tick.tick() => (false, true),
            () = probes.next_batch(&mut batch) => (false, false),
        };
        if stop {
            probes.finish(&mut batch);
        }
        for event in batch.drain(..).filter(|e| filter.matches(e)) {
            aggregator.apply(&event);
        }
        aggregator.set_lost(probes.lost());
        if report {
            let now = kernel::monotonic_ns();
            let snapshot = aggregator.snapshot(now);
            if stat.json {
                println!("{}", snapshot_json(&snapshot, clock, &probes.reports));
            } else {
                println!("{}", snapshot_text(&snapshot, clock));
            }
            printed += 1;
        }
        if stop || stat.count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(())
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
