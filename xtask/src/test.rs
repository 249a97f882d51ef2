//! `cargo xtask test`: everything CI runs, in the order that fails fastest.

use crate::{cargo, setup};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip rustfmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::ensure()?;
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
    }
    cargo(&test)
}
