//! `cargo xtask fuzz`: the recording reader under libFuzzer (cargo fuzz, nightly), seeded with
//! a valid recording of every event kind. Not part of `cargo xtask test`: a useful run takes
//! minutes, not seconds.

use std::{process::Command, time::Instant};

use anyhow::bail;

use crate::{run_cmd, setup, workspace_root};

pub const TARGETS: &[&str] = &["read_recording", "decode_chunk", "read_directory"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Fuzz target (read_recording: whole files; decode_chunk: records past the checksum;
    /// read_directory: segments stitched into one stream). Default: all, one after the other.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    if Command::new("cargo").args(["fuzz", "--version"]).output().map_or(true, |o| !o.status.success()) {
        // cargo-fuzz: MIT OR Apache-2.0.
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let root = workspace_root();
    let corpus = root.join("target/fuzz-corpus");
    // Seeds come from the format's own tests, so they always match the current format.
    run_cmd(
        Command::new("cargo")
            .args(["test", "-p", "twtrace", "--lib", "write_fuzz_seeds", "--", "--ignored", "--exact"])
            .arg("record::tests::write_fuzz_seeds")
            .env("TWTRACE_FUZZ_SEEDS", &corpus)
            .current_dir(&root),
    )?;
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    for target in targets {
        let started = Instant::now();
        let dir = corpus.join(target);
        let result = run_cmd(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
                .arg(&dir)
                .arg("--")
                .arg(format!("-max_total_time={}", args.seconds))
                .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
                .current_dir(&root),
        );
        let inputs = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        eprintln!(
            "xtask: fuzz {target}: {} after {:.0}s; corpus {} inputs in {}",
            if result.is_ok() { "clean" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            inputs,
            dir.display()
        );
        if result.is_err() {
            bail!("fuzz target {target} found a failure: the input is under fuzz/artifacts/{target}/");
        }
    }
    Ok(())
}
