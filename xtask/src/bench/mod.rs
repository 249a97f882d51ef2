//! `cargo xtask bench`: what tracing costs a busy host, measured in one run.
//!
//! Loopback churn (`twtrace churn`, server closes first) runs in a namespace of its own,
//! untraced and under each tracer, in alternating repetitions; the table reports medians.
//! Throughput is compared as a ratio to the untraced runs of the same repetition round.
//! Kernel-side cost comes from the kernel's own BPF statistics (`kernel.bpf_stats_enabled`),
//! summed over every loaded program, so the tracer's programs are measured exactly as the
//! kernel accounts them. The statistics cost something themselves (two clock reads per program
//! run), so they are on only in a second, shorter run per tracer: throughput, CPU and loss come
//! from a run without them, as users run.
//!
//! The modules: `measure` runs one tracer beside the churn, `process` reads what a process
//! costs from /proc, `netns` makes the load's namespace, `bpftrace` holds the scripts compared
//! with, `guest` the backend comparison under QEMU, `report` the table. `scale` is the other
//! bench, `--scale`: the cardinality ladders of issue 25.

mod bpftrace;
mod guest;
mod measure;
mod netns;
mod process;
mod report;
pub mod scale;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::{cargo, setup, workspace_root};
use bpftrace::{BPFTRACE_AGGREGATE, BPFTRACE_PRINT};
use guest::{guest_costs, guest_table};
use measure::{COSTED_SECONDS, Run, Tracer, measure};
use netns::Tracefs;
use report::{memory_figures, pipeline_figures, replay_figures, table};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of churn per measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Alternating repetitions (the table shows medians).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Churn threads (client and server each). Four saturate two cores: with two, the CPUs
    /// sat 5-9 % idle while client and server waited on each other.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Skip the 60 s zero-loss run at 25k connections/s.
    #[arg(long)]
    quick: bool,
    /// Also write the table as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Kernel whose guest compares the backends' BPF cost (this host allows only tracepoints).
    #[arg(long, default_value = "6.12", value_name = "KERNEL")]
    vm_kernel: String,
    /// Skip the guest comparison.
    #[arg(long)]
    no_vm: bool,
    /// Only the guest comparison.
    #[arg(long, conflicts_with = "no_vm")]
    vm_only: bool,
    #[command(flatten)]
    scale: scale::ScaleArgs,
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative to the workspace,
/// as cargo reads it), else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    cargo(&["build", "--release", "--package", "twtrace"])?;
    let root = workspace_root();
    let twtrace = target_dir().join("release/twtrace");
    if args.scale.enabled() {
        return scale::run(&args.scale, args.quick, &twtrace, args.markdown.as_deref());
    }
    if crate::which("bpftrace").is_none() {
        bail!("bpftrace is missing: `cargo xtask setup` installs it");
    }
    // bpftrace (0.17, Debian 12) finds tracepoints through tracefs only; a host that has not
    // mounted it (this project's CI machines) would fail the bpftrace rows.
    let _tracefs = Tracefs::ensure()?;
    let scratch = std::env::temp_dir().join("twtrace-bench");
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(scratch.join("print.bt"), BPFTRACE_PRINT)?;
    std::fs::write(scratch.join("aggregate.bt"), BPFTRACE_AGGREGATE)?;
    if args.vm_only {
        eprintln!("xtask: bench: backends compared in a {} guest", args.vm_kernel);
        println!("{}", guest_table(&guest_costs(&args.vm_kernel)?, &args.vm_kernel));
        return Ok(());
    }
    let mut runs: BTreeMap<Tracer, Vec<Run>> = BTreeMap::new();
    let mut ratios: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    for round in 0..args.repetitions {
        let mut untraced = None;
        // Alternate the order each round so drift (thermal, page cache) does not favour one.
        let mut order = Tracer::ALL.to_vec();
        if round % 2 == 1 {
            order[1..].reverse();
        }
        for tracer in order {
            let context = || format!("{} (round {})", tracer.label(), round + 1);
            // Throughput, CPU and loss as users run it: without the kernel's BPF statistics,
            // which add two clock reads to every program run. Then a shorter run with them on,
            // for the BPF time per connection alone.
            let mut run =
                measure(&twtrace, &scratch, tracer, args.seconds, args.threads, None, false).with_context(context)?;
            if tracer != Tracer::Untraced {
                let costed = measure(&twtrace, &scratch, tracer, COSTED_SECONDS, args.threads, None, true)
                    .with_context(context)?;
                run.bpf_ns_per_connection = costed.bpf_ns_per_connection;
            }
            eprintln!(
                "xtask: bench: round {} {:<34} {:>8.0} conn/s  bpf {}  cpu {}",
                round + 1,
                tracer.label(),
                run.connections_per_s,
                run.bpf_ns_per_connection.map_or("-".into(), |v| format!("{:.2}us/conn", v / 1e3)),
                run.cpu_percent.map_or("-".into(), |v| format!("{v:.1}%"))
            );
            if tracer == Tracer::Untraced {
                untraced = Some(run.connections_per_s);
            }
            runs.entry(tracer).or_default().push(run);
        }
        let base = untraced.expect("untraced runs every round");
        for tracer in Tracer::ALL {
            let last = runs[&tracer].last().expect("ran").connections_per_s;
            ratios.entry(tracer).or_default().push(last / base);
        }
    }

    let long = if args.quick {
        None
    } else {
        eprintln!("xtask: bench: 60 s at 25k connections/s under twtrace record (all families)");
        Some(measure(&twtrace, &scratch, Tracer::RecordAll, 60, args.threads, Some(25_000.0), false)?)
    };

    // The recording of the last saturating run: its size and how fast it replays.
    let recording = scratch.join("record.twr");
    let replay = replay_figures(&root, &recording)?;
    let memory = memory_figures(&root)?;
    let pipeline = pipeline_figures(&root)?;
    let mut table = table(&runs, &ratios, long.as_ref(), &replay, &memory, args);
    table.push_str("\nDecoder and aggregator (criterion, benches/pipeline.rs):\n");
    for line in &pipeline {
        table.push_str(&format!("    {line}\n"));
    }
    // The host's figures first: a guest that fails must not lose them.
    println!("{table}");
    let save = |table: &str| -> anyhow::Result<()> {
        if let Some(path) = &args.markdown {
            std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: bench: wrote {}", path.display());
        }
        Ok(())
    };
    save(&table)?;
    if !args.no_vm {
        eprintln!("xtask: bench: backends compared in a {} guest", args.vm_kernel);
        let guest = guest_table(&guest_costs(&args.vm_kernel)?, &args.vm_kernel);
        println!("{guest}");
        table.push_str(&guest);
        save(&table)?;
    }
    Ok(())
}
