//! Project automation: `cargo xtask setup | test | run | dist | vm | bench | study | fuzz | deploy`.
//!
//! The README's two commands are `cargo xtask run -- <twtrace args>` and `cargo xtask test`;
//! both install whatever a fresh machine lacks first (see `setup`).

mod bench;
mod deploy;
mod dist;
mod fuzz;
mod runner;
mod setup;
mod study;
mod test;
mod vm;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "twtrace development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent; fast when nothing is missing).
    Setup,
    /// Set up, lint (host crates and the eBPF crate) and run every test.
    Test(test::TestArgs),
    /// Boot kernels under QEMU and run a command inside each (static twtrace and the test
    /// binaries are in the guest; twtrace is on PATH).
    Vm {
        /// 5.10, 6.1, 6.12, 6.18, sid (Debian cloud kernels), bpo-MAJOR.MINOR (the newest build of that
        /// line in trixie-backports, e.g. bpo-6.16), or a bzImage/vmlinuz path. Repeatable.
        #[arg(long = "kernel", required = true)]
        kernels: Vec<String>,
        /// Seconds before a guest is declared hung and killed.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Re-resolve Debian kernels to their newest build instead of the cached one.
        #[arg(long)]
        refresh: bool,
        /// The command to run in the guest, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Measure what tracing costs: loopback churn untraced, under twtrace and under bpftrace,
    /// plus memory, recording size and replay speed. Prints one table (needs root). With
    /// --scale, the cardinality ladders instead (destinations, TIME_WAIT sockets, failing
    /// processes, namespaces).
    Bench(bench::BenchArgs),
    /// Load the bench's scale ladder runs inside its namespaces (run by `bench --scale`).
    #[command(hide = true)]
    BenchHelper(bench::scale::helper::HelperArgs),
    /// Fuzz the recording reader with cargo fuzz (nightly, libFuzzer), seeded with a valid
    /// recording. Failing inputs are kept under fuzz/artifacts/.
    Fuzz(fuzz::FuzzArgs),
    /// Run one `twtrace scenario` (recorded, checked) on the host and in a guest per kernel,
    /// and compare: a table (also Markdown and JSON) and an SVG chart under target/study/.
    Study(study::StudyArgs),
    /// Release artifacts in target/dist/: a static x86-64 tarball, a Debian package and an
    /// OCI image archive, with man pages and shell completions.
    Dist(dist::DistArgs),
    /// Write the Kubernetes package's generated files: the PrometheusRule from the alerting
    /// rules, and deploy/kubernetes/twtrace.yaml rendered from the kustomize base.
    Deploy,
    /// Set up, build twtrace (release) and run it with the given arguments.
    Run {
        /// Arguments for twtrace, after `--`, e.g. `cargo xtask run -- trace --json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::ensure(),
        Task::Test(args) => test::run(&args),
        Task::Run { args } => run(&args),
        Task::Deploy => deploy::run(),
        Task::Dist(args) => dist::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::BenchHelper(args) => bench::scale::helper::run(&args),
        Task::Study(args) => study::run(&args),
        Task::Vm { kernels, timeout, refresh, command } => {
            vm::run(&kernels, &command, std::time::Duration::from_secs(timeout), refresh)
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    cargo(&["build", "--release", "--package", "twtrace"])?;
    let binary = workspace_root().join("target/release/twtrace");
    let args: Vec<String> = if args.is_empty() { vec!["trace".into()] } else { args.to_vec() };
    let mut cmd = if setup::is_root() || which("sudo").is_none() {
        Command::new(&binary)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&binary);
        c
    };
    let status = cmd.args(&args).status().with_context(|| format!("running {}", binary.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Where cargo builds: `CARGO_TARGET_DIR` (relative to the workspace root), else `target/`.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Runs cargo in the workspace root; fails on a non-zero exit. Through rustup's proxy on PATH
/// (not $CARGO, the resolved binary), so `+nightly` works.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run_cmd(Command::new("cargo").args(args).current_dir(workspace_root()))
}

pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let started = std::time::Instant::now();
    let status = cmd.status().with_context(|| format!("cannot run {}", describe(cmd)))?;
    // CI's budget is minutes: every step says what it took.
    eprintln!("xtask: ({:.0}s) {}", started.elapsed().as_secs_f64(), describe(cmd));
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
