//! `twtrace doctor`: watches every namespace for a while (or reads a recording) and says what
//! is wrong, where, the evidence, what to do about it and how to see it fixed. The findings
//! are `crate::findings`, the same that head `report`.
//!
//! Exit status, for scripts and health checks: 0 nothing wrong (informational notes do not
//! count), 1 a warning, 2 something failing now (critical), 3 doctor itself could not run.

use std::time::Duration;

use super::SourceArgs;
use crate::{
    drive::Limits,
    findings::{Finding, Severity, worst},
    report::Report,
};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// How long to watch (live only; seconds, or with s, m, h).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// JSON on stdout instead of text (docs/schemas/doctor.json).
    #[arg(long)]
    json: bool,
    /// Write one runbook per kind of finding into DIR (docs/runbooks) and exit: the pages the
    /// alerting rules' runbook_url annotations point at.
    #[arg(long, hide = true, value_name = "DIR")]
    runbooks: Option<std::path::PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Exit statuses (see the module documentation).
pub fn exit_code(severity: Severity) -> u8 {
    match severity {
        Severity::Ok | Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// When doctor cannot run at all, usage errors included (main.rs).
pub const EXIT_UNKNOWN: u8 = 3;

/// The version of `doctor --json`'s layout (docs/schemas/doctor.json): raised when a field
/// changes meaning or goes, not when one is added. 1 was the layout before it said so; 2 adds
/// `schema_version` and each finding's `evidence_figures`.
pub const SCHEMA_VERSION: u32 = 2;

pub async fn run(args: &DoctorArgs) -> anyhow::Result<Severity> {
    if let Some(dir) = &args.runbooks {
        let written = crate::findings::runbooks::write_all(dir)?;
        eprintln!("twtrace: doctor: {} runbooks written in {}", written.len(), dir.display());
        return Ok(Severity::Ok);
    }
    let (mut source, filter) = args.source.open(true, None)?;
    let live = !source.can_wait();
    let limits = Limits { duration: live.then_some(args.duration) };
    if live {
        crate::note!("doctor: watching every namespace for {:.0} s ...", args.duration.as_secs_f64());
    }
    let label = if live { "live".to_owned() } else { args.source.replay_path().unwrap_or_default() };
    let (report, found) = super::report::build_from(&mut source, filter, 50, limits, label).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&report, &found))?);
    } else {
        print!("{}", text(&report, &found, 80));
    }
    Ok(worst(&found))
}

fn json(r: &Report, found: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "severity": worst(found),
        "observed": {
            "host": r.recording.host,
            "kernel": r.recording.kernel,
            "started": r.recording.started,
            "seconds": r.recording.seconds,
            "events": r.recording.events,
            "lost": r.recording.lost,
            "skipped_runs": r.recording.skipped_runs,
            "namespaces": r.recording.namespaces.len(),
        },
        "findings": found,
    })
}

/// Findings worst first, wrapped to `width` columns.
pub fn text(r: &Report, found: &[Finding], width: usize) -> String {
    let mut out = String::new();
    let rec = &r.recording;
    out.push_str(&wrap(
        &format!(
            "twtrace doctor: {} ({}), {:.0} s observed, {} events, {} namespace(s)",
            rec.host,
            rec.kernel,
            rec.seconds,
            rec.events,
            rec.namespaces.len().max(1)
        ),
        width,
        "",
    ));
    for (i, f) in found.iter().enumerate() {
        out.push('\n');
        out.push_str(&wrap(&format!("{}. [{}] {}", i + 1, f.severity.label(), f.text), width, "   "));
        let place = [
            f.place.namespace.as_ref().map(|n| format!("namespace {n}")),
            f.place.local.as_ref().map(|l| format!("from {l}")),
            f.place.destination.as_ref().map(|d| format!("to {d}")),
            (!f.place.processes.is_empty()).then(|| format!("by {}", f.place.processes.join(", "))),
        ];
        let place: Vec<String> = place.into_iter().flatten().collect();
        if !place.is_empty() {
            out.push_str(&wrap(&format!("where: {}", place.join(", ")), width, "   "));
        }
        for e in &f.evidence {
            out.push_str(&wrap(&format!("- {e}"), width, "     "));
        }
        for (n, m) in f.remedies.iter().enumerate() {
            let needs = m.needs.as_ref().map(|k| format!(" [needs {k}]")).unwrap_or_default();
            out.push_str(&wrap(&format!("fix {}: {}{needs}; cost: {}", n + 1, m.action, m.tradeoff), width, "     "));
        }
        if let Some(v) = &f.verify {
            out.push_str(&wrap(&format!("check: {v}"), width, "     "));
        }
    }
    out
}

/// `text` as lines of at most `width` columns (words longer than that stand alone); the
/// first line indented by three spaces, the rest by `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = if indent.is_empty() { String::new() } else { "   ".to_owned() };
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_line_within_the_width() {
        let text = "Port space toward 10.96.0.10:5432 from 10.1.4.7 in namespace pod checkout-7d9f peaked at 100% \
                    (100 of 100 ports)";
        let wrapped = wrap(text, 40, "     ");
        assert!(wrapped.lines().all(|l| l.chars().count() <= 40), "{wrapped}");
        assert_eq!(wrapped.split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>());
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("     ")));
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_code(Severity::Ok), 0);
        assert_eq!(exit_code(Severity::Info), 0);
        assert_eq!(exit_code(Severity::Warning), 1);
        assert_eq!(exit_code(Severity::Critical), 2);
    }
}
