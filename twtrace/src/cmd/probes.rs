//! `twtrace probes`: per family, which backends were tried, which one runs and why the others
//! could not; with `--programs`, every program twtrace may attach, without loading any.

use super::ProbeArgs;
use crate::probes::{self, LiveProbes};

#[derive(clap::Args)]
pub struct ProbesArgs {
    /// List every program of every backend variant (family, backend, program, hook), one a
    /// line, without loading anything: no root needed.
    #[arg(long)]
    programs: bool,
    /// One JSON document on stdout instead of text (docs/schemas/probes.json).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    probes: ProbeArgs,
}

/// The version of `probes --json`'s layout (docs/schemas/probes.json): raised when a field
/// changes meaning or goes; new fields do not raise it.
pub const SCHEMA_VERSION: u32 = 1;

pub fn run(args: &ProbesArgs) -> anyhow::Result<()> {
    if args.programs {
        let catalogue = probes::catalogue();
        if args.json {
            let programs: Vec<_> = catalogue
                .iter()
                .map(|(family, backend, hook)| {
                    serde_json::json!({"family": family, "backend": backend, "program": hook.program(), "hook": hook.label()})
                })
                .collect();
            println!("{}", serde_json::json!({"schema_version": SCHEMA_VERSION, "programs": programs}));
        } else {
            for (family, backend, hook) in catalogue {
                println!("{family} {backend} {} {}", hook.program(), hook.label());
            }
        }
        return Ok(());
    }
    let probes = LiveProbes::load(&args.probes.options()?)?;
    if args.json {
        println!("{}", serde_json::json!({"schema_version": SCHEMA_VERSION, "families": probes.reports}));
    } else {
        for report in &probes.reports {
            println!("{report}");
        }
    }
    Ok(())
}
