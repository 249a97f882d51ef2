//! `cargo xtask test`: everything CI runs, in the order that fails fastest.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{cargo, run_cmd, runner, setup, vm, vm::protocol};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip rustfmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the VM matrix (host tests only).
    #[arg(long)]
    pub no_vm: bool,
    /// Only the VM matrix.
    #[arg(long, conflicts_with = "no_vm")]
    pub vm_only: bool,
    /// Kernels for the VM matrix (default: 5.10, 6.1, 6.12, 6.18; `sid` on demand). Repeatable.
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
    /// Guests booted at once (each takes one host core under software emulation; default:
    /// the host's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Every test binary on every backend of each kernel (by default only the probe families'
    /// binaries run on every backend, the rest once per kernel: xtask/src/vm/plan.rs).
    #[arg(long, conflicts_with = "no_vm")]
    pub full_matrix: bool,
    /// Show every guest console line, not only failures and results.
    #[arg(long)]
    pub verbose: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

/// How long one guest of the matrix may take before it counts as hung. CI's 5.10 guest took
/// 702 s (2026-11); on 2026-12-06 the 5.10 guest ran past 900 s on the same machine kind, with
/// its doctor binary alone at 300-340 s (kretprobes made through tracefs or through perf
/// alike), where CI's had taken under 200.
const GUEST_TIMEOUT_SECS: u64 = 1500;

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    if !args.vm_only {
        require_root_or_unprivileged()?;
    }
    setup::ensure()?;
    if !args.vm_only {
        host(args)?;
    }
    if !args.no_vm {
        let kernels: Vec<String> = if args.kernels.is_empty() {
            vm::matrix::DEFAULT_KERNELS.iter().map(|k| k.to_string()).collect()
        } else {
            args.kernels.clone()
        };
        let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        // Under software emulation one kernel's run takes 10 to 15 minutes; a hang is cut off.
        let timeout = std::time::Duration::from_secs(GUEST_TIMEOUT_SECS);
        vm::matrix::run(&kernels, timeout, false, args.verbose, jobs, args.full_matrix)?;
    }
    Ok(())
}

fn host(args: &TestArgs) -> anyhow::Result<()> {
    if !args.no_lint {
        cargo(&["fmt", "--all", "--check"])?;
        cargo(&["clippy", "--workspace", "--exclude", "twtrace-ebpf", "--all-targets", "--", "-D", "warnings"])?;
        // The eBPF crate is outside default-members and only builds with nightly; lint it on the
        // host target the way aya does (panic=abort, as its no_std panic handler requires).
        cargo(&[
            "+nightly",
            "clippy",
            "--package",
            "twtrace-ebpf",
            "--",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
            "-Zpanic_abort_tests",
        ])?;
    }
    // Every skip is recorded here by the tests (tests/support) and summarised at the end.
    let skip_log = crate::workspace_root().join("target/test-skips.log");
    std::fs::create_dir_all(skip_log.parent().expect("target"))?;
    std::fs::write(&skip_log, "")?;
    let test = ["test", "--workspace", "--exclude", "twtrace-ebpf"];
    let result = if args.cargo_test_args.is_empty() {
        all_host_tests(&skip_log)
    } else {
        // A filter: cargo's own runner, one binary after another, as the user would run it.
        let mut filtered = test.to_vec();
        filtered.push("--");
        filtered.extend(args.cargo_test_args.iter().map(String::as_str));
        cargo_test(&filtered, &skip_log)
    };
    summarise_skips(&skip_log)?;
    result
}

fn require_root_or_unprivileged() -> anyhow::Result<()> {
    // Integration tests load BPF programs: without root they fail (each says why), unless the
    // run is explicitly unprivileged; say so before minutes of building.
    let unprivileged = std::env::var_os(protocol::UNPRIVILEGED_ENV).is_some_and(|v| !v.is_empty());
    if !setup::is_root() && !unprivileged {
        bail!(
            "the integration tests need root (CAP_BPF, CAP_PERFMON, CAP_SYSLOG, CAP_NET_ADMIN): run as root, or set \
             {}=1 to run them as recorded skips (every one then skips, and the summary says so)",
            protocol::UNPRIVILEGED_ENV
        );
    }
    Ok(())
}

fn cargo_test(args: &[&str], skip_log: &Path) -> anyhow::Result<()> {
    run_cmd(Command::new("cargo").args(args).env(protocol::SKIP_LOG_ENV, skip_log).current_dir(crate::workspace_root()))
}

/// Every host test binary, several at once ([`runner`]), and a second run of the ones that read
/// kernel memory through BTF-typed pointers without those variants: every kernel with BTF runs
/// the tracepoint backend's BTF-reading variants, so the fallbacks (kernels without BTF, before
/// 5.11) get a run of their own here.
///
/// twtrace's own test binaries are the VM matrix's static release build (`vm::build_static`,
/// with overflow checks on in twtrace's code): the same binaries on the host as in the guests,
/// and one build of them instead of a debug build beside it (175 s of CI, 2026-12-07). The
/// other packages' tests (xtask, twtrace-common) are a debug build of their own.
///
/// This machine kind's kernel lets twtrace use only the tracepoint backend (fentry programs
/// are refused with EPERM, and it is built without CONFIG_KPROBES): the host run is where the
/// binaries that the VM matrix runs once per kernel (`vm::plan`) meet that backend.
fn all_host_tests(skip_log: &Path) -> anyhow::Result<()> {
    const WITHOUT_BTF_READS: &[&str] = &["timewait", "state", "portsearch"];
    let build = vm::build_static()?;
    // `cargo xtask dist`'s packaging, with this build: the .deb a user installs holds a
    // static twtrace naming HEAD, its man pages and completions; the OCI layout is valid.
    crate::dist::self_test(&build.twtrace)?;
    let dir = crate::workspace_root().join("twtrace");
    let run = |label: String, name: &str, path: &Path| runner::Run {
        label,
        name: name.to_owned(),
        path: path.to_owned(),
        dir: dir.clone(),
        env: Vec::new(),
    };
    let mut runs: Vec<runner::Run> =
        build.tests.iter().map(|(name, path)| run(format!("tests/{name}.rs"), name, path)).collect();
    runs.push(run("unittests twtrace".into(), "twtrace", &build.unit));
    runs.extend(runner::build(&["test", "--workspace", "--exclude", "twtrace-ebpf", "--exclude", "twtrace"])?);
    let again: Vec<runner::Run> = runs
        .iter()
        .filter(|r| r.label.starts_with("tests/") && WITHOUT_BTF_READS.contains(&r.name.as_str()))
        .map(|r| runner::Run {
            label: format!("{} (TWTRACE_NO_BTF_READS=1)", r.label),
            env: vec![("TWTRACE_NO_BTF_READS".into(), "1".into())],
            ..r.clone()
        })
        .collect();
    runs.extend(again);
    runner::run_all(runs, runner::JOBS, &[(protocol::SKIP_LOG_ENV, skip_log)])
}

/// Prints how many tests skipped on this host and why (never silent: a skip names its reason).
fn summarise_skips(skip_log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(skip_log).with_context(|| format!("reading {}", skip_log.display()))?;
    let skips: Vec<protocol::Skip> = text.lines().filter_map(protocol::Skip::parse).collect();
    if skips.is_empty() {
        eprintln!("xtask: host tests: no test skipped");
        return Ok(());
    }
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for s in &skips {
        by_reason.entry(s.reason.as_str()).or_default().push(s.test.as_str());
    }
    eprintln!(
        "xtask: host tests: {} skipped ({} distinct reasons; list in {}):",
        skips.len(),
        by_reason.len(),
        skip_log.display()
    );
    for (reason, tests) in by_reason {
        eprintln!("  {} x {reason}  (e.g. {})", tests.len(), tests[0]);
    }
    Ok(())
}
