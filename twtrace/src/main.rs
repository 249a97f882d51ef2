//! twtrace: TIME_WAIT, ephemeral-port and PAWS tracing for Linux TCP.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use twtrace::{
    churn, filter, kernel, output,
    probes::{Backend, Family, LiveProbes, Options},
    record::{self, Replay},
    report,
    source::Source,
    stat, tui,
};

#[derive(Parser)]
#[command(version, about = "Trace Linux TCP TIME_WAIT sockets, ephemeral port search and PAWS drops")]
struct Cli {
    /// More logging on stderr (-v: debug, including verifier logs; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream events, one line each (live, or from a recording with --replay).
    Trace(TraceArgs),
    /// Show, per probe family, which backends were tried, which one runs and why others failed.
    Probes(ProbeArgs),
    /// Print the aggregated views periodically (text or JSON lines), for scripts and logs.
    Stat(StatArgs),
    /// The live view: TIME_WAIT, port space per destination, PAWS drops (falls back to `stat`
    /// when stdout is not a terminal).
    Top(TopArgs),
    /// Write the event stream to a file for later analysis, on any machine.
    Record(RecordArgs),
    /// A postmortem summary of a recording: text, JSON, or a self-contained HTML page.
    Report(report::ReportArgs),
    /// Generate connection churn on loopback: reproduce TIME_WAIT and port-space pressure, or
    /// measure tracing overhead (no root needed).
    Churn(churn::ChurnArgs),
}

/// Where events come from: the kernel (the default) or a recording.
#[derive(Args)]
struct SourceArgs {
    /// Read this recording instead of tracing the kernel (no root needed). --port and an inode
    /// --netns then filter the recording.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

impl SourceArgs {
    /// The source and the userspace filter. `with_sockets`: the views need the sockets that
    /// exist at start. `speed`: pacing of a replay (`None`: as fast as possible).
    fn open(&self, with_sockets: bool, speed: Option<f64>) -> anyhow::Result<(Source, filter::Filter)> {
        let mut filter = self.filters.filter();
        let Some(path) = &self.replay else {
            let source = Source::live(&self.probes.options()?, with_sockets)?;
            return Ok((source, filter));
        };
        let p = &self.probes;
        if p.backend.is_some() || p.ring_buffer_size != DEFAULT_RING_BYTES || !p.family.is_empty() {
            anyhow::bail!("--backend, --family and --ring-buffer-size apply to live tracing, not to --replay");
        }
        if let Some(netns) = &p.netns {
            filter.netns.push(netns.parse().map_err(|_| {
                anyhow::anyhow!(
                    "with --replay, --netns takes the namespace's inode number (names and paths are of this machine)"
                )
            })?);
        }
        filter.ports.extend(p.port);
        let replay = Replay::open(path, speed).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((Source::Replay(Box::new(replay)), filter))
    }
}

/// What `top` and `stat` both take: the source, the filters and the size of the rankings.
#[derive(Args)]
struct ViewArgs {
    /// Rows per ranking (destinations, remotes, owners, sources).
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args)]
struct TopArgs {
    /// Replay speed: a multiple of the recorded pace (1 = as recorded), or `max`.
    #[arg(long, value_name = "X", value_parser = parse_speed, requires = "replay")]
    speed: Option<Speed>,
    #[command(flatten)]
    view: ViewArgs,
}

#[derive(Clone, Copy)]
struct Speed(Option<f64>);

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed(None));
    }
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(Speed(Some(x))),
        _ => Err(format!("`{text}`: give a positive multiple (0.5, 1, 10) or `max`")),
    }
}

#[derive(Args)]
struct StatArgs {
    /// Seconds between reports (of recorded time, with --replay).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    interval: f64,
    /// Stop after this many reports.
    #[arg(long)]
    count: Option<u64>,
    /// JSON Lines instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    view: ViewArgs,
}

const DEFAULT_RING_BYTES: u32 = 8 << 20;

#[derive(Args, Clone)]
struct ProbeArgs {
    /// Use this backend for every family instead of the best one that works.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Only sockets in this network namespace: inode number, name under /run/netns, or a path
    /// such as /proc/PID/ns/net.
    #[arg(long, value_name = "NETNS")]
    netns: Option<String>,
    /// Only flows with this local or remote port (filtered in the kernel).
    #[arg(long)]
    port: Option<u16>,
    /// Ring buffer size in bytes (power of two, at least 4096).
    #[arg(long, default_value_t = DEFAULT_RING_BYTES, value_name = "BYTES")]
    ring_buffer_size: u32,
    /// Only this probe family (repeatable); the others are not attached and cost nothing.
    #[arg(long, value_enum, value_name = "FAMILY")]
    family: Vec<Family>,
}

impl ProbeArgs {
    fn options(&self) -> anyhow::Result<Options> {
        let netns = self.netns.as_deref().map(kernel::netns_spec).transpose().map_err(anyhow::Error::msg)?;
        Ok(Options {
            backend: self.backend,
            netns: netns.as_ref().map(|(inode, _)| *inode),
            netns_path: netns.and_then(|(_, path)| path),
            port: self.port,
            ring_bytes: self.ring_buffer_size,
            families: (!self.family.is_empty()).then(|| self.family.clone()),
        })
    }
}

/// Filters on who and where, applied to events after decoding.
#[derive(Args, Clone)]
struct FilterArgs {
    /// Only events of this process (the owner of a TIME_WAIT socket, the caller of connect()).
    /// Repeatable.
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only events of processes with this command name. Repeatable.
    #[arg(long, value_name = "COMM")]
    comm: Vec<String>,
    /// Only events of processes in this cgroup (id as in bpf_get_current_cgroup_id). Repeatable.
    #[arg(long, value_name = "ID")]
    cgroup: Vec<u64>,
    /// Only flows with a local or remote address in this prefix, e.g. 10.0.0.0/8. Repeatable.
    #[arg(long, value_name = "CIDR")]
    addr: Vec<filter::Cidr>,
}

impl FilterArgs {
    fn filter(&self) -> filter::Filter {
        filter::Filter {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            cgroups: self.cgroup.clone(),
            addrs: self.addr.clone(),
            ..filter::Filter::default()
        }
    }
}

#[derive(Args)]
struct TraceArgs {
    /// JSON Lines on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this long (seconds, or with s, m, h).
    #[arg(long, value_name = "DURATION", value_parser = record::parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Args)]
struct RecordArgs {
    /// The recording to write (created with mode 0600).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
    /// Stop after this long (seconds, or with s, m, h); otherwise at Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = record::parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

fn main() -> std::process::ExitCode {
    // Like any Unix filter: `twtrace trace | head` ends quietly when the reader goes away.
    // SAFETY: restoring a default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new().filter_level(level).parse_default_env().init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twtrace: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twtrace: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Trace(args) => {
            let (mut source, filter) = args.source.open(false, None)?;
            output::run(&mut source, &filter, args.json, args.duration).await
        }
        Command::Probes(args) => probes_report(args),
        Command::Top(args) => {
            // A replay in top defaults to the recorded pace; `--speed max` as fast as it reads.
            let speed = args.speed.map_or(Some(1.0), |s| s.0);
            let (source, filter) = args.view.source.open(true, speed)?;
            tui::run(source, filter, args.view.top).await
        }
        Command::Stat(args) => {
            if !(args.interval > 0.0 && args.interval.is_finite()) {
                anyhow::bail!("--interval must be a positive number of seconds");
            }
            let stat = stat::StatOptions {
                interval: Duration::from_secs_f64(args.interval),
                count: args.count,
                json: args.json,
                top: args.view.top,
            };
            let (mut source, filter) = args.view.source.open(true, None)?;
            stat::run(&mut source, &filter, &stat).await
        }
        Command::Record(args) => {
            let filter = args.filters.filter();
            // Before loading anything: an existing file is refused at once.
            if !args.force && args.output.exists() {
                return Err(record::RecordError::Exists(args.output).into());
            }
            let mut source = Source::live(&args.probes.options()?, true)?;
            record::run(&mut source, &filter, &args.output, args.force, args.duration).await
        }
        Command::Report(args) => report::run(&args),
        Command::Churn(args) => churn::run(&args),
    }
}

fn probes_report(args: ProbeArgs) -> anyhow::Result<()> {
    let probes = LiveProbes::load(&args.options()?)?;
    for report in &probes.reports {
        println!("{report}");
    }
    Ok(())
}
