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
    #[command(flatten)]
    probes: ProbeArgs,
}

pub fn run(args: &ProbesArgs) -> anyhow::Result<()> {
    if args.programs {
        for (family, backend, hook) in probes::catalogue() {
            println!("{family} {backend} {} {}", hook.program(), hook.label());
        }
        return Ok(());
    }
    let probes = LiveProbes::load(&args.probes.options()?)?;
    for report in &probes.reports {
        println!("{report}");
    }
    Ok(())
}
