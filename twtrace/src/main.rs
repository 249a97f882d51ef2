//! twtrace: TIME_WAIT, ephemeral-port and PAWS tracing for Linux TCP. This file is the command
//! line; each command lives in `twtrace::cmd`.

mod generate;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use twtrace::{cmd, drive, logging, scenario};

/// What `--version` says: the crate's version, the commit, the build date and a checksum of
/// the embedded BPF object (set by build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TWTRACE_COMMIT"),
    ", built ",
    env!("TWTRACE_BUILD_DATE"),
    ", BPF object crc32 ",
    env!("TWTRACE_BPF_CRC32"),
    ")"
);

/// Exit statuses of every command but doctor (whose own are in its help).
const EXIT_STATUS: &str = "Exit status: 0 success; 1 an error (the last line on stderr says which); 2 a usage \
                           error (an unknown option, a bad value). doctor: 0 fine, 1 warning, 2 critical, 3 could \
                           not run (usage errors included).";

const DOCTOR_EXIT_STATUS: &str = "Exit status, the monitoring plugins' convention: 0 nothing wrong (notes only), 1 \
                                  a warning, 2 something failing now (critical), 3 doctor could not run, usage \
                                  errors (an unknown option, a bad value) included.";

const ABOUT: &str = "Trace Linux TCP TIME_WAIT sockets, ephemeral port search and PAWS drops";

#[derive(Parser)]
#[command(version = VERSION, about = ABOUT, after_long_help = EXIT_STATUS)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    invocation: Invocation,
}

/// What the man pages and the completions describe: the command line without `generate`
/// (clap's completions would offer a hidden subcommand too).
#[derive(Parser)]
#[command(name = "twtrace", version = VERSION, about = ABOUT, after_long_help = EXIT_STATUS)]
struct Documented {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once, at start")]
enum Invocation {
    #[command(flatten)]
    Run(Command),
    /// Write the man pages and the bash, zsh and fish completions into DIR (`cargo xtask
    /// dist` packages them).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// The options every command takes.
#[derive(clap::Args)]
struct Globals {
    /// More logging on stderr (-v: debug, including verifier logs; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How stderr's lines look: `text`, or `json` (one object per line: ts in RFC 3339, level,
    /// target, message), for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, value_name = "FORMAT")]
    log_format: logging::LogFormat,
    /// Rows of each kind (destinations, connect() searches, failing processes) the live model
    /// keeps; past it the least recently active go, their totals kept and shown as evicted.
    /// Rows holding ports are never evicted.
    #[arg(long, global = true, value_name = "N", default_value_t = twtrace::aggregate::DEFAULT_MAX_ROWS)]
    max_rows: usize,
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
    #[command(after_long_help = DOCTOR_EXIT_STATUS)]
    Doctor(cmd::doctor::DoctorArgs),
    /// Add a mark ("deploy v2") to the running flight recording in --record-dir: `report` and
    /// `top --replay` show it. Fails unless the recorder confirms it.
    Mark(cmd::mark::MarkArgs),
    /// Serve the model to Prometheus (/metrics, /healthz) while tracing, until SIGTERM.
    Serve(cmd::serve::ServeArgs),
    /// Generate connection churn on loopback, toward one or many addresses: reproduce TIME_WAIT
    /// and port-space pressure, or measure tracing overhead (no root needed).
    Churn(cmd::churn::ChurnArgs),
    /// Reproduce a TCP behaviour on purpose, in a namespace of its own, with ground truth
    /// (needs root): `search-cost`, `client-exhaustion`, `tw-reuse`, `tw-buckets`,
    /// `tw-deaths`, `paws-nat`, `tw-timer-cpu`, `tw-abort`. With --record, checks twtrace too.
    Scenario(scenario::ScenarioArgs),
}

/// Parses the command line. A usage error exits 2, as clap's do, except under `doctor`, whose
/// 2 means CRITICAL to a health check: there it exits 3, "could not run".
fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let error = match Cli::command().try_get_matches_from(&args).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let usage = !matches!(error.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
    if usage && invoked_command(&args).as_deref() == Some("doctor") {
        let _ = error.print();
        std::process::exit(i32::from(cmd::doctor::EXIT_UNKNOWN));
    }
    error.exit()
}

/// The subcommand a command line names, even when the rest of it does not parse.
fn invoked_command(args: &[std::ffi::OsString]) -> Option<String> {
    let matches = Cli::command().ignore_errors(true).try_get_matches_from(args).ok()?;
    matches.subcommand_name().map(str::to_owned)
}

fn main() -> std::process::ExitCode {
    // Like any Unix filter: `twtrace trace | head` ends quietly when the reader goes away.
    // SAFETY: restoring a default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    twtrace::memory::tune_allocator();
    let cli = parse();
    let level = match cli.globals.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // serve runs for days: its lines say when.
    let serve = matches!(cli.invocation, Invocation::Run(Command::Serve(_)));
    logging::init(level, cli.globals.log_format, serve);
    let command = match cli.invocation {
        Invocation::Run(command) => command,
        Invocation::Generate(args) => {
            return match generate::run(Documented::command(), &args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
    };
    twtrace::aggregate::set_max_rows(cli.globals.max_rows);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    // Commands that run the drive loop (churn has its own handler; probes ends at once; a
    // scenario ends by itself, and Ctrl-C ends it and its recorder at once).
    if !matches!(command, Command::Churn(_) | Command::Probes(_) | Command::Scenario(_)) {
        let _inside = runtime.enter();
        if let Err(e) = drive::install_signals() {
            return fail(&anyhow::anyhow!("cannot handle signals: {e}"));
        }
    }
    // doctor's exit status says how bad things are, and that it could not tell.
    if let Command::Doctor(args) = &command {
        return match runtime.block_on(cmd::doctor::run(args)) {
            Ok(severity) => std::process::ExitCode::from(cmd::doctor::exit_code(severity)),
            Err(e) => {
                fail(&e);
                std::process::ExitCode::from(cmd::doctor::EXIT_UNKNOWN)
            }
        };
    }
    match runtime.block_on(run(command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Says why twtrace failed (`twtrace: error: ...`, or a JSON line of level error); exit 1.
fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    logging::status(log::Level::Error, &format!("{e:#}"));
    std::process::ExitCode::FAILURE
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
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
