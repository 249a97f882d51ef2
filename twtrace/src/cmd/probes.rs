//! `twtrace probes`: per family, which backends were tried, which one runs and why the others
//! could not.

use super::ProbeArgs;
use crate::probes::LiveProbes;

pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let probes = LiveProbes::load(&args.options()?)?;
    for report in &probes.reports {
        println!("{report}");
    }
    Ok(())
}
