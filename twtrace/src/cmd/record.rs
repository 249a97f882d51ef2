//! `twtrace record`: the stream, filtered, into a recording until Ctrl-C, SIGTERM or
//! `--duration`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use super::{FilterArgs, ProbeArgs};
use crate::{
    drive::{self, Control, Limits, Sink, Status},
    event::Event,
    record::{
        RecordError, Recorder, Trailer,
        segments::{FlightRecorder, Policy, RunTotals},
    },
    source::Source,
};

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The recording to write (created with mode 0600).
    #[arg(short, long, value_name = "FILE", required_unless_present = "record_dir", conflicts_with = "record_dir")]
    output: Option<PathBuf>,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
    /// Record into this directory as a flight recorder: a sequence of segments, each a
    /// complete recording, rotated and deleted oldest first (see --segment, --keep). The same
    /// flag as `serve --record-dir` and `mark --record-dir`. (Was --rotate, still accepted.)
    #[arg(long, alias = "rotate", value_name = "DIR")]
    record_dir: Option<PathBuf>,
    #[command(flatten)]
    segments: SegmentArgs,
    /// Stop after this long (seconds, or with s, m, h); otherwise at Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    duration: Option<std::time::Duration>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

/// The flight recorder's rotation and retention (`record --record-dir`, `serve --record-dir`).
#[derive(clap::Args, Clone)]
pub struct SegmentArgs {
    /// Start a new segment after this long (seconds, or with s, m, h).
    #[arg(long = "segment", value_name = "DURATION", default_value = "10m", value_parser = super::parse_duration)]
    segment_time: Duration,
    /// ... or once the segment holds this many bytes (K, M, G: KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    segment_size: u64,
    /// Delete segments last written longer ago than this (`off`: never by age).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_optional_duration)]
    keep: Bound<Duration>,
    /// Delete the oldest segments while all of them take more than this; the directory then
    /// exceeds it by one segment at most, the one being written (`off`: no bound).
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_optional_size)]
    keep_size: Bound<u64>,
    /// Keep at most this many windows around incidents (segments before, during and after a
    /// finding, with their report) in DIR/kept, past --keep and --keep-size (0: none).
    #[arg(long, value_name = "N", default_value_t = crate::record::kept::DEFAULT_KEEP_WINDOWS)]
    keep_windows: usize,
}

/// A retention bound, or `off` (a type of its own: clap reads a bare `Option` as "flag may be
/// absent").
#[derive(Clone, Copy, Debug)]
pub struct Bound<T>(Option<T>);

impl SegmentArgs {
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let policy = Policy {
            segment_time: self.segment_time,
            segment_bytes: self.segment_size,
            keep_age: self.keep.0,
            keep_bytes: self.keep_size.0,
            keep_windows: self.keep_windows,
        };
        policy.check().map_err(anyhow::Error::msg)?;
        Ok(policy)
    }
}

/// `64MiB`, `512K`, `2G`, `1000000`: bytes, with binary multiples.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(format!("`{text}` is not a size: use bytes, or a number with KiB, MiB or GiB (64MiB)")),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * scale as f64) as u64),
        _ => Err(format!("`{text}` is not a size: use bytes, or a number with KiB, MiB or GiB (64MiB)")),
    }
}

fn parse_optional_size(text: &str) -> Result<Bound<u64>, String> {
    if text.trim() == "off" { Ok(Bound(None)) } else { parse_size(text).map(|v| Bound(Some(v))) }
}

fn parse_optional_duration(text: &str) -> Result<Bound<Duration>, String> {
    if text.trim() == "off" { Ok(Bound(None)) } else { super::parse_duration(text).map(|v| Bound(Some(v))) }
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    let filter = args.filters.filter();
    let limits = Limits { duration: args.duration };
    if let Some(dir) = &args.record_dir {
        let policy = args.segments.policy()?;
        let mut source = Source::live(&args.probes.options()?, true)?;
        source.set_filter_description(filter.describe());
        let recorder = super::keep::start_flight(dir, policy, source.info())?;
        let mut sink = FlightSink { recorder: Some(recorder) };
        return drive::drive(&mut source, filter, &mut sink, limits).await;
    }
    let output = args.output.expect("clap requires --output without --record-dir");
    // Before loading anything: an existing file is refused at once.
    if !args.force && output.exists() {
        return Err(RecordError::Exists(output).into());
    }
    let mut source = Source::live(&args.probes.options()?, true)?;
    source.set_filter_description(filter.describe());
    let recorder =
        Recorder::create(&output, source.info(), args.force).with_context(|| output.display().to_string())?;
    let mut sink = RecordSink { path: &output, recorder: Some(recorder) };
    drive::drive(&mut source, filter, &mut sink, limits).await
}

/// The run's counts as each segment's end chunk carries them.
pub fn run_totals(status: &Status) -> RunTotals {
    let health = status.health();
    RunTotals { lost: health.lost, decoder: health.decoder.unwrap_or_default() }
}

/// The flight recorder as a sink: `record --record-dir`.
struct FlightSink {
    /// Taken by `finish`.
    recorder: Option<FlightRecorder>,
}

impl Sink for FlightSink {
    type Wake = ();

    fn start(&mut self, status: &Status) -> anyhow::Result<()> {
        let dir = self.recorder.as_ref().map_or_else(String::new, |r| r.dir().display().to_string());
        crate::note!("recording to {dir} (segments); {}", status.describe());
        Ok(())
    }

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        self.recorder.as_mut().expect("the recorder lives until finish").event(event);
        Ok(())
    }

    fn batch_done(&mut self, status: &Status) -> anyhow::Result<Control> {
        let totals = run_totals(status);
        self.recorder.as_mut().expect("the recorder lives until finish").tick(status.now_ns(), totals);
        Ok(Control::Continue)
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        let recorder = self.recorder.take().expect("finish runs once");
        let dir = recorder.dir().display().to_string();
        let stats = recorder.finish(status.now_ns(), run_totals(status));
        crate::note!("{}", stats.summary(&dir, status.health().lost));
        Ok(())
    }
}

/// The recorder as a sink.
struct RecordSink<'a> {
    path: &'a Path,
    /// Taken by `finish`.
    recorder: Option<Recorder>,
}

impl RecordSink<'_> {
    fn recorder(&mut self) -> &mut Recorder {
        self.recorder.as_mut().expect("the recorder lives until finish")
    }
}

impl Sink for RecordSink<'_> {
    type Wake = ();

    fn start(&mut self, status: &Status) -> anyhow::Result<()> {
        crate::note!("recording to {}; {}", self.path.display(), status.describe());
        Ok(())
    }

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        let path = self.path;
        self.recorder().write(event).with_context(|| format!("writing {}", path.display()))
    }

    /// Seals the chunk once it is a second old.
    fn batch_done(&mut self, _status: &Status) -> anyhow::Result<Control> {
        let path = self.path;
        self.recorder().tick().with_context(|| format!("writing {}", path.display()))?;
        Ok(Control::Continue)
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        let recorder = self.recorder.take().expect("finish runs once");
        let events = recorder.events();
        let health = status.health();
        let decoder = health.decoder.unwrap_or_default();
        let trailer = Trailer { events, lost: health.lost, ended_ns: status.now_ns(), decoder };
        let path = self.path.display();
        let size = recorder.finish(&trailer).with_context(|| format!("finishing {path}"))?;
        // The header and sockets alone are a few kB: a per-event figure means nothing without events.
        let per_event =
            if events == 0 { String::new() } else { format!(", {:.1} bytes/event", size as f64 / events as f64) };
        crate::note!(
            "recorded {events} events ({} lost in the kernel) to {path}: {size} bytes{per_event}{}",
            health.lost,
            decoder.owner_resets_note()
        );
        Ok(())
    }
}
