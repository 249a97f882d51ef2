//! The overhead bench's table and the figures it takes from the criterion and memory bench
//! binaries.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::Context as _;

use super::{
    BenchArgs,
    measure::{Run, Tracer},
};

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 })
}

#[derive(Default)]
pub struct Replay {
    pub bytes_per_event: Option<f64>,
    pub events_per_s: Option<f64>,
    pub report: String,
}

/// The recording's size per event and replay speed, from the `recording` bench binary.
pub fn replay_figures(root: &Path, recording: &Path) -> anyhow::Result<Replay> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "recording", "--"])
        .arg(recording)
        .current_dir(root)
        .output()
        .context("cargo bench --bench recording")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let figure = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Ok(Replay { bytes_per_event: figure("bytes/event: "), events_per_s: figure("replay events/s: "), report: text })
}

/// Criterion's time and throughput lines for the decoder and the aggregator.
pub fn pipeline_figures(root: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "pipeline"])
        .current_dir(root)
        .output()
        .context("cargo bench --bench pipeline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if line.starts_with("pipeline/") {
            name = line.split_whitespace().next().unwrap_or("").to_owned();
        }
        // Criterion follows with a `change:` block (another `thrpt:` line, in percent)
        // against whatever run of this machine came before: not a figure of this run.
        if let Some(thrpt) = line.trim().strip_prefix("thrpt:").filter(|t| !t.contains('%')) {
            lines.push(format!("{name}: {} (low, median, high)", thrpt.trim()));
        }
    }
    Ok(lines)
}

/// Userspace memory with 1M live TIME_WAIT sockets, from the `memory` bench binary.
pub fn memory_figures(root: &Path) -> anyhow::Result<String> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "memory"])
        .current_dir(root)
        .output()
        .context("cargo bench --bench memory")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn target(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

pub fn table(
    runs: &BTreeMap<Tracer, Vec<Run>>,
    ratios: &BTreeMap<Tracer, Vec<f64>>,
    long: Option<&Run>,
    replay: &Replay,
    memory: &str,
    args: &BenchArgs,
) -> String {
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!(
        "Loopback churn, server closes first, {} client + {} server threads, {} s per run, {} alternating rounds, medians.",
        args.threads, args.threads, args.seconds, args.repetitions
    ));
    line(String::new());
    line("| configuration | conn/s | ratio to untraced (rounds' range) | BPF µs/conn | tracer CPU % | tracer peak RSS MiB | events | lost | getppid() ns |".into());
    line("|---|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    let mut summary = BTreeMap::new();
    for tracer in Tracer::ALL {
        let rs = &runs[&tracer];
        let med = |f: &dyn Fn(&Run) -> Option<f64>| median(rs.iter().filter_map(f).collect());
        let cps = med(&|r| Some(r.connections_per_s));
        let ratio = median(ratios[&tracer].clone());
        // The rounds' spread beside the median: single rounds move by ±10 % on this kind of
        // machine, and the reader should see how far one figure can be trusted.
        let spread = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if v.len() > 1 && tracer != Tracer::Untraced { format!(" ({lo:.2}-{hi:.2})") } else { String::new() }
        };
        let bpf = med(&|r| r.bpf_ns_per_connection).map(|v| v / 1e3);
        let cpu = med(&|r| r.cpu_percent);
        let rss = med(&|r| r.peak_rss_kib.map(|k| k as f64 / 1024.0));
        let events = med(&|r| r.events.map(|e| e as f64));
        let lost = med(&|r| r.lost.map(|e| e as f64));
        let syscall = med(&|r| r.syscall_ns);
        let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        line(format!(
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
            tracer.label(),
            f(cps, 0),
            f(ratio, 3),
            spread(&ratios[&tracer]),
            f(bpf, 2),
            f(cpu, 1),
            f(rss, 1),
            f(events, 0),
            f(lost, 0),
            f(syscall, 0)
        ));
        summary.insert(tracer, (ratio, bpf, cpu, events, syscall));
    }
    line(String::new());
    line("Targets (issue 7):".into());
    let (ratio_all, bpf_all, cpu_all, events_all, syscall_all) = summary[&Tracer::RecordAll];
    let (_, bpf_twd, _, _, syscall_twd) = summary[&Tracer::RecordTimeWaitDrops];
    let syscall_untraced = summary[&Tracer::Untraced].4;
    if let Some(r) = ratio_all {
        line(format!(
            "- throughput ratio with `twtrace record` at saturating churn ≥ 0.97: {r:.3} ({})",
            target(r >= 0.97)
        ));
    }
    if let Some(b) = bpf_twd {
        line(format!("- BPF run time per connection, timewait+drops ≤ 2.0 µs: {b:.2} µs ({})", target(b <= 2.0)));
    }
    if let Some(b) = bpf_all {
        line(format!("- BPF run time per connection, all families ≤ 3.0 µs: {b:.2} µs ({})", target(b <= 3.0)));
    }
    // Not a target of the issue: what every other process on the host pays.
    if let (Some(base), Some(all), Some(twd)) = (syscall_untraced, syscall_all, syscall_twd) {
        line(format!(
            "- a null system call elsewhere on the host (getppid): {base:.0} ns untraced, {all:.0} ns under `record` \
             with all families ({:+.0} %), {twd:.0} ns with timewait+drops (a syscall tracepoint would slow every \
             system call: +32 % when the port search had them)",
            (all / base - 1.0) * 100.0
        ));
    }
    if let (Some(cpu), Some(events)) = (cpu_all, events_all) {
        let seconds = args.seconds as f64;
        let per_10k = cpu / 100.0 * seconds / events * 10_000.0 * 1e3;
        line(format!("- userspace CPU per 10k events (record, all families): {per_10k:.1} ms"));
    }
    match long {
        Some(run) => {
            line(format!(
                "- zero lost events at 25k connections/s for 60 s (default buffer): {} connections at {:.0}/s, {} events, lost {} ({})",
                run.connections,
                run.connections_per_s,
                run.events.map_or("-".into(), |e| e.to_string()),
                run.lost.map_or("-".into(), |l| l.to_string()),
                target(run.lost == Some(0) && run.connections_per_s >= 24_000.0)
            ));
            if let Some(cpu) = run.cpu_percent {
                line(format!(
                    "- userspace CPU ≤ 15 % of one core at 25k connections/s: {cpu:.1} % ({})",
                    target(cpu <= 15.0)
                ));
            }
        }
        None => line("- 60 s zero-loss run: skipped (--quick)".into()),
    }
    if let Some(b) = replay.bytes_per_event {
        line(format!("- ≤ 16 bytes per event on disk: {b:.2} ({})", target(b <= 16.0)));
    }
    if let Some(r) = replay.events_per_s {
        line(format!("- replay ≥ 5M events/s: {:.2}M ({})", r / 1e6, target(r >= 5e6)));
    }
    for l in memory.lines().filter(|l| !l.trim().is_empty()) {
        line(format!("- {l}"));
    }
    line(String::new());
    line("Recording figures (benches/recording.rs on the last saturating recording):".into());
    for l in replay.report.lines().filter(|l| !l.trim().is_empty()) {
        line(format!("    {l}"));
    }
    t
}
