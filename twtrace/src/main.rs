//! twtrace: TIME_WAIT, ephemeral-port and PAWS tracing for Linux TCP. This file is the command
//! line; each command lives in `twtrace::cmd`.

use clap::{Parser, Subcommand};
use twtrace::{cmd, drive, scenario};

#[derive(Parser)]
#[command(version, about = "Trace Linux TCP TIME_WAIT sockets, ephemeral port search and PAWS drops")]
struct Cli {
    /// More logging on stderr (-v: debug, including verifier logs; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Rows of each kind (destinations, connect() searches, failing processes) the live model
    /// keeps; past it the least recently active go, their totals kept and shown as evicted.
    /// Rows holding ports are never evicted.
    #[arg(long, global = true, value_name = "N", default_value_t = twtrace::aggregate::DEFAULT_MAX_ROWS)]
    max_rows: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream events, one line each (live, or from a recording with --replay).
    Trace(cmd::trace::TraceArgs),
    /// Show, per probe family, which backends were tried, which one runs and why others failed.
    Probes(cmd::probes::ProbesArgs),
    /// Print the aggregated views periodically (text or JSON lines), for scripts and logs.
    Stat(cmd::stat::StatArgs),
    /// The live view: TIME_WAIT, port space per destination, PAWS drops (falls back to `stat`
    /// when stdout is not a terminal).
    Top(cmd::top::TopArgs),
    /// Write the event stream to a file for later analysis, on any machine.
    Record(cmd::record::RecordArgs),
    /// A postmortem summary of a recording: text, JSON, or a self-contained HTML page.
    Report(cmd::report::ReportArgs),
    /// What is wrong, where, the evidence and what to do about it: watches every namespace for
    /// a while (or reads a recording). Exit status 0 fine, 1 warning, 2 critical, 3 could not run.
    Doctor(cmd::doctor::DoctorArgs),
    /// Add a mark ("deploy v2") to the running flight recording in --dir: `report` and
    /// `top --replay` show it. Fails unless the recorder confirms it.
    Mark(cmd::mark::MarkArgs),
    /// Serve the model to Prometheus (/metrics, /healthz) while tracing, until SIGTERM.
    Serve(cmd::serve::ServeArgs),
    /// Generate connection churn on loopback, toward one or many addresses: reproduce TIME_WAIT
    /// and port-space pressure, or measure tracing overhead (no root needed).
    Churn(cmd::churn::ChurnArgs),
    /// Reproduce a TCP behaviour on purpose, in a namespace of its own, with ground truth:
    /// `search-cost`, `client-exhaustion` (needs root). With --record, checks twtrace too.
    Scenario(scenario::ScenarioArgs),
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
    twtrace::aggregate::set_max_rows(cli.max_rows);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twtrace: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Commands that run the drive loop (churn has its own handler; probes ends at once; a
    // scenario ends by itself, and Ctrl-C ends it and its recorder at once).
    if !matches!(cli.command, Command::Churn(_) | Command::Probes(_) | Command::Scenario(_)) {
        let _inside = runtime.enter();
        if let Err(e) = drive::install_signals() {
            eprintln!("twtrace: cannot handle signals: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    // doctor's exit status says how bad things are, and that it could not tell.
    if let Command::Doctor(args) = &cli.command {
        return match runtime.block_on(cmd::doctor::run(args)) {
            Ok(severity) => std::process::ExitCode::from(cmd::doctor::exit_code(severity)),
            Err(e) => {
                eprintln!("twtrace: error: {e:#}");
                std::process::ExitCode::from(cmd::doctor::EXIT_UNKNOWN)
            }
        };
    }
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
        Command::Trace(args) => cmd::trace::run(args).await,
        Command::Probes(args) => cmd::probes::run(&args),
        Command::Top(args) => cmd::top::run(args).await,
        Command::Stat(args) => cmd::stat::run(args).await,
        Command::Record(args) => cmd::record::run(args).await,
        Command::Report(args) => cmd::report::run(&args).await,
        Command::Doctor(_) => unreachable!("run by main for its exit status"),
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::Mark(args) => cmd::mark::run(&args),
        Command::Churn(args) => cmd::churn::run(&args),
        Command::Scenario(args) => scenario::run(args).await,
    }
}
