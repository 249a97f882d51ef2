//! `twtrace report`: a postmortem of a recording as text, JSON, or a self-contained HTML page.
//! The recording is driven through a sink like any source; the model is `crate::report`, the
//! conclusions `crate::findings`.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    drive::{self, Limits, Sink, Status},
    event::{Event, ExistingSocket},
    filter::Filter,
    findings,
    record::directory::Window,
    report::{self, Report, ReportBuilder},
    source::Source,
};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The recording (`twtrace record -o FILE`), or a flight-recorder directory
    /// (`record --record-dir DIR`, `serve --record-dir DIR`) read as one stream.
    file: PathBuf,
    #[command(flatten)]
    window: super::WindowArgs,
    /// JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts (no network needed to view it).
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Rows per ranking (as stat's and top's --top).
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
}

pub async fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let report = build(&args.file, args.top, args.window.window()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::text(&report));
    }
    if let Some(out) = &args.html {
        std::fs::write(out, report::html(&report)).with_context(|| format!("writing {}", out.display()))?;
        crate::note!("wrote {}", out.display());
    }
    for d in &report.recording.damage {
        crate::note!("damage: {d}");
    }
    Ok(())
}

/// Reads the recording (within `window`) into a [`Report`], findings included.
pub async fn build(path: &Path, top: usize, window: Window) -> anyhow::Result<Report> {
    let mut source = Source::replay(path, None, window)?;
    let report = build_from(&mut source, Filter::default(), top, Limits::default(), path.display().to_string()).await?;
    Ok(report.0)
}

/// Any source, live or replayed, into a [`Report`] with its findings' headlines, and the
/// findings whole (`doctor` prints them). `file` names the source in the report.
pub async fn build_from(
    source: &mut Source,
    filter: Filter,
    top: usize,
    limits: Limits,
    file: String,
) -> anyhow::Result<(Report, Vec<findings::Finding>)> {
    let info = source.info();
    let builder = ReportBuilder::new(super::aggregator_for(info, top), info.started_ns);
    let mut sink = ReportSink { file, builder: Some(builder), report: None };
    drive::drive(source, filter, &mut sink, limits).await?;
    let mut report = sink.report.expect("finish builds the report");
    let found = findings::of(&report);
    report.findings = found.iter().map(|f| f.text.clone()).collect();
    Ok((report, found))
}

struct ReportSink {
    file: String,
    /// Taken by `finish`, which leaves the report.
    builder: Option<ReportBuilder>,
    report: Option<Report>,
}

impl Sink for ReportSink {
    type Wake = ();

    /// Silent: the report is the output.
    fn start(&mut self, _status: &Status) -> anyhow::Result<()> {
        Ok(())
    }

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        self.builder.as_mut().expect("until finish").event(event);
        Ok(())
    }

    fn resync_due(&self, now_ns: u64) -> bool {
        self.builder.as_ref().is_some_and(|b| b.resync_due(now_ns))
    }

    fn resync(&mut self, now_ns: u64, sockets: Option<&[ExistingSocket]>) {
        if let Some(b) = &mut self.builder {
            b.resync(now_ns, sockets);
        }
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        let builder = self.builder.take().expect("finish runs once");
        let health = status.health();
        // Live (doctor): the figures of its views, as every view command ends with.
        if health.replay.is_none() {
            crate::note!("{}", builder.times.line(&health));
        }
        self.report = Some(builder.finish(std::mem::take(&mut self.file), status.info(), &status.health()));
        Ok(())
    }
}

/// [`build`] on a runtime of its own, for tests.
#[cfg(test)]
fn build_blocking(path: &Path, top: usize) -> anyhow::Result<Report> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(build(path, top, Window::default()))
}
