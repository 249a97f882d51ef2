//! `twtrace record`: the stream, filtered, into a recording until Ctrl-C, SIGTERM or
//! `--duration`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{FilterArgs, ProbeArgs};
use crate::{
    drive::{self, Control, Limits, Sink, Status},
    event::Event,
    record::{RecordError, Recorder, Trailer},
    source::Source,
};

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The recording to write (created with mode 0600).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
    /// Stop after this long (seconds, or with s, m, h); otherwise at Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    duration: Option<std::time::Duration>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    let filter = args.filters.filter();
    // Before loading anything: an existing file is refused at once.
    if !args.force && args.output.exists() {
        return Err(RecordError::Exists(args.output).into());
    }
    let mut source = Source::live(&args.probes.options()?, true)?;
    source.set_filter_description(filter.describe());
    let recorder =
        Recorder::create(&args.output, source.info(), args.force).with_context(|| args.output.display().to_string())?;
    let mut sink = RecordSink { path: &args.output, recorder: Some(recorder) };
    drive::drive(&mut source, filter, &mut sink, Limits { duration: args.duration }).await
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
        eprintln!("twtrace: recording to {}; {}", self.path.display(), status.describe());
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
        eprintln!(
            "twtrace: recorded {events} events ({} lost in the kernel) to {path}: {size} bytes{per_event}{}",
            health.lost,
            decoder.owner_resets_note()
        );
        Ok(())
    }
}
