//! twtrace: TIME_WAIT, ephemeral-port and PAWS tracing for Linux TCP.

mod aggregate;
mod event;
mod filter;
mod kernel;
mod output;
mod probes;
mod stat;
mod tui;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::probes::{Backend, LiveProbes, Options};

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
    /// Stream events, one line each.
    Trace(TraceArgs),
    /// Show, per probe family, which backends were tried, which one runs and why others failed.
    Probes(ProbeArgs),
    /// Print the aggregated views periodically (text or JSON lines), for scripts and logs.
    Stat(StatArgs),
    /// The live view: TIME_WAIT, port space per destination, PAWS drops (falls back to `stat`
    /// when stdout is not a terminal).
    Top(ViewArgs),
}

/// What `top` and `stat` both take: the probes, the filters and the size of the rankings.
#[derive(Args)]
struct ViewArgs {
    /// Rows per ranking (destinations, remotes, owners, sources).
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

#[derive(Args)]
struct StatArgs {
    /// Seconds between reports.
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
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES")]
    ring_buffer_size: u32,
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
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

fn main() -> std::process::ExitCode {
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
        Command::Trace(args) => trace(args).await,
        Command::Probes(args) => probes_report(args),
        Command::Top(args) => tui::run(&args.probes.options()?, args.filters.filter(), args.top).await,
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
            stat::run(&args.view.probes.options()?, &args.view.filters.filter(), &stat).await
        }
    }
}

fn probes_report(args: ProbeArgs) -> anyhow::Result<()> {
    let probes = LiveProbes::load(&args.options()?)?;
    for report in &probes.reports {
        println!("{report}");
    }
    Ok(())
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let options = args.probes.options()?;
    let filter = args.filters.filter();
    // Before anything is announced: a Ctrl-C right after start must still end cleanly.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut probes = LiveProbes::load(&options).context("cannot start tracing")?;
    let clock = kernel::WallClock::now();
    // Tools and tests wait for this line: everything after it is traced.
    eprintln!("twtrace: tracing; {}", probes::backend_summary(&probes.reports));

    let mut printer = output::Printer::new(std::io::BufWriter::new(std::io::stdout().lock()), args.json, clock);
    let mut batch = Vec::new();
    let mut events = 0u64;
    let mut lost_seen = 0u64;
    let deadline = args.duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));

    loop {
        let stop = tokio::select! {
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => true,
            () = probes.next_batch(&mut batch) => false,
        };
        if stop {
            probes.finish(&mut batch);
        }
        events += batch.len() as u64;
        for event in batch.drain(..).filter(|e| filter.matches(e)) {
            printer.event(&event)?;
        }
        let lost = probes.lost();
        if lost > lost_seen {
            printer.lost(kernel::monotonic_ns(), lost - lost_seen, lost)?;
            lost_seen = lost;
        }
        // Once per drained batch, so pipes (jq, tests) see events within a drain interval.
        printer.flush()?;
        if stop {
            break;
        }
    }

    let stats = probes.stats();
    printer.summary(&json!({
        "event": "summary",
        "events": events,
        "lost": lost_seen,
        "decoder": stats,
        "backends": probes.reports,
    }))?;
    eprintln!(
        "twtrace: {events} events, {lost_seen} lost in the kernel (ring buffer full), {} malformed records, \
         {} TIME_WAIT deaths of sockets born before tracing started",
        stats.malformed + stats.wrong_version,
        stats.untracked_deaths
    );
    Ok(())
}
