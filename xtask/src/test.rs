//! `cargo xtask test`: everything CI runs, in the order that fails fastest.

use crate::{cargo, setup, vm};

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
    /// Kernels for the VM matrix (default: 5.10, 6.1, 6.12; `sid` on demand). Repeatable.
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
    /// Show every guest console line, not only failures and results.
    #[arg(long)]
    pub verbose: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
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
        // Under software emulation one kernel's run takes a few minutes; a hang is cut off.
        vm::matrix::run(&kernels, std::time::Duration::from_secs(900), false, args.verbose)?;
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
    let mut test = vec!["test", "--workspace", "--exclude", "twtrace-ebpf"];
    if !args.cargo_test_args.is_empty() {
        test.push("--");
        test.extend(args.cargo_test_args.iter().map(String::as_str));
        return cargo(&test);
    }
    cargo(&test)?;
    // Every kernel with BTF runs the tracepoint backend's variants that read through
    // BTF-typed pointers, so the variants without (kernels without BTF, before 5.11) get a
    // run of their own here.
    crate::run_cmd(
        std::process::Command::new("cargo")
            .args(["test", "-p", "twtrace", "--test", "timewait", "--test", "state", "--test", "portsearch"])
            .env("TWTRACE_NO_BTF_READS", "1")
            .current_dir(crate::workspace_root()),
    )
}
