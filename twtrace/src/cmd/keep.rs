//! What makes the flight recorder keep a window (`crate::record::kept`): the findings of the
//! segment's own report, the same rules `report` and `doctor` apply, and the window's report
//! written beside its segments.

use std::{path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    drive::Limits,
    filter::Filter,
    findings::{Finding, Kind, Severity},
    record::{
        directory::Window,
        kept::Analyst,
        segments::{FlightRecorder, Policy},
    },
    report::{self, Report},
    source::Source,
    source_info::SourceInfo,
};

/// The flight recorder of `record --record-dir` and `serve --record-dir`, keeping windows around
/// incidents.
pub fn start_flight(dir: &Path, policy: Policy, info: &SourceInfo) -> anyhow::Result<FlightRecorder> {
    let mut recorder = FlightRecorder::start(dir, policy, info).with_context(|| dir.display().to_string())?;
    recorder.keep_windows(Arc::new(FindingsAnalyst)).with_context(|| format!("{}: kept windows", dir.display()))?;
    Ok(recorder)
}

/// Findings worth keeping a window for: something failing or about to, now. Settings that
/// hold all day (timestamps off, tcp_fin_timeout lowered) would keep every segment, and
/// damage is the recorder's own trouble, not the network's.
fn worth_keeping(f: &Finding) -> bool {
    f.severity >= Severity::Warning
        && matches!(
            f.kind,
            Kind::PortSpace
                | Kind::ConnectFailures
                | Kind::TimeWaitBuckets
                | Kind::Paws
                | Kind::Loss
                | Kind::ListenOverflow
                | Kind::Conntrack
                | Kind::NetfilterDrops
        )
}

/// `findings::of` on the report of a segment or a window, off the recorder's thread.
struct FindingsAnalyst;

impl FindingsAnalyst {
    /// On a thread of its own with its own runtime: the recorder calls this from its worker
    /// and, for the window still open when recording stops, from the drive loop's thread,
    /// where a runtime already runs and another cannot block (CI's 6.18 guest: a panic at
    /// the end of a recording whose last segments had a finding).
    fn report(path: &Path) -> anyhow::Result<(Report, Vec<Finding>)> {
        let (path, shown) = (path.to_owned(), path.display().to_string());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut source = Source::replay(&path, None, Window::default())?;
                let label = path.display().to_string();
                super::report::build_from(&mut source, Filter::default(), 10, Limits::default(), label).await
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the analysis of {shown} panicked"))?
    }
}

impl Analyst for FindingsAnalyst {
    fn triggers(&self, segment: &Path) -> Vec<String> {
        if !segment.exists() {
            // Retention took it while analyses were behind (see `record::kept`).
            log::debug!("{} was deleted before its analysis", segment.display());
            return Vec::new();
        }
        match Self::report(segment) {
            Ok((_, found)) => found
                .iter()
                .filter(|f| worth_keeping(f))
                .filter_map(|f| serde_json::to_value(f.kind).ok()?.as_str().map(str::to_owned))
                .collect(),
            Err(e) => {
                log::warn!("cannot analyse {} for kept windows: {e:#}", segment.display());
                Vec::new()
            }
        }
    }

    fn write_report(&self, window: &Path) {
        let written = Self::report(window).and_then(|(report, _)| {
            std::fs::write(window.join("report.txt"), report::text(&report))?;
            std::fs::write(window.join("report.html"), report::html(&report))?;
            Ok(())
        });
        match written {
            Ok(()) => log::warn!("kept {} with its report", window.display()),
            Err(e) => log::warn!("cannot write the report of {}: {e:#}", window.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, kind: Kind) -> Finding {
        Finding {
            severity,
            kind,
            text: String::new(),
            place: Default::default(),
            evidence: Vec::new(),
            remedies: Vec::new(),
            verify: None,
        }
    }

    #[test]
    fn incidents_keep_windows_and_standing_settings_do_not() {
        assert!(worth_keeping(&finding(Severity::Critical, Kind::PortSpace)));
        assert!(worth_keeping(&finding(Severity::Warning, Kind::Paws)));
        assert!(!worth_keeping(&finding(Severity::Info, Kind::Paws)), "a stray PAWS drop");
        assert!(!worth_keeping(&finding(Severity::Warning, Kind::TimestampsOff)));
        assert!(!worth_keeping(&finding(Severity::Critical, Kind::Damage)));
    }
}
