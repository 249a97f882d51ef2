//! `search-cost`: how long connect() searches for a free port, and how many candidates it
//! examines, as the ports toward one destination fill up. For each holder kind (ESTABLISHED
//! sockets, or TIME_WAIT sockets with reuse off) and each way of setting the range (the
//! namespace's `ip_local_port_range`, or the per-socket `IP_LOCAL_PORT_RANGE` of 6.3+), in a
//! fresh namespace: hold N ports (N from 0 to the whole range in steps), check the kernel
//! lists N, then time `--probes` connect() calls that leave nothing behind.

use std::{collections::BTreeMap, os::fd::OwnedFd, time::Duration};

use super::{
    conn::{self, Server},
    report::{Check, Quantiles, Run, ScenarioReport, Step},
    sandbox::{self, Sandbox, SocketCount},
};
use crate::{net::errno_name, time::monotonic_ns};

/// The first port of the range scenarios set: inside every default range, so the per-socket
/// option (which only narrows the namespace's range) can select it too.
pub const RANGE_START: u16 = 40000;

/// The namespace range of the `sockopt` variant: Linux's default `ip_local_port_range`.
const WIDE_RANGE: (u16, u16) = (32768, 60999);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Holder {
    /// Ports held by ESTABLISHED connections.
    Established,
    /// Ports held by TIME_WAIT sockets (the client closed first; `tcp_tw_reuse` 0).
    TimeWait,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// The namespace's `net.ipv4.ip_local_port_range` is the range.
    Sysctl,
    /// The namespace keeps the default range; every socket narrows it with
    /// `IP_LOCAL_PORT_RANGE` (Linux 6.3+).
    Sockopt,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SearchCostArgs {
    /// Ports in the range (40000 up).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u16).range(2..=20000))]
    pub range: u16,
    /// Percentages of the range to hold before each step's probes. Dense around 50 %: since
    /// Linux 4.6 connect() takes ports of one parity first, and the cost jumps when they are
    /// all held.
    #[arg(long, value_delimiter = ',', default_value = "0,25,40,45,49,50,51,75,90,95,99,100")]
    pub steps: Vec<f64>,
    /// Timed connect() calls per step.
    #[arg(long, default_value_t = 50)]
    pub probes: u64,
    /// What holds the ports.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "established,time-wait")]
    pub holders: Vec<Holder>,
    /// How the range is set.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sysctl,sockopt")]
    pub variants: Vec<Variant>,
}

pub fn params(args: &SearchCostArgs) -> BTreeMap<String, String> {
    let list = |v: Vec<String>| v.join(",");
    BTreeMap::from([
        ("range".into(), format!("{}-{}", RANGE_START, RANGE_START + args.range - 1)),
        ("steps".into(), list(args.steps.iter().map(|s| format!("{s}%")).collect())),
        ("probes".into(), args.probes.to_string()),
        ("holders".into(), list(args.holders.iter().map(|h| holder_name(*h).into()).collect())),
        ("variants".into(), list(args.variants.iter().map(|v| variant_name(*v).into()).collect())),
    ])
}

fn holder_name(h: Holder) -> &'static str {
    match h {
        Holder::Established => "established",
        Holder::TimeWait => "time-wait",
    }
}

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Sysctl => "sysctl",
        Variant::Sockopt => "sockopt",
    }
}

pub fn run(args: &SearchCostArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    anyhow::ensure!(!args.steps.is_empty(), "--steps needs at least one percentage");
    anyhow::ensure!(args.steps.iter().all(|s| (0.0..=100.0).contains(s)), "--steps are percentages, 0 to 100");
    // Both ends of every held connection, and the probes' server ends until dropped.
    sandbox::allow_open_files(2 * u64::from(args.range) + 1024)?;
    for &holder in &args.holders {
        for &variant in &args.variants {
            let run = one_run(args, holder, variant, &mut report.checks)?;
            report.runs.push(run);
        }
    }
    Ok(())
}

fn one_run(args: &SearchCostArgs, holder: Holder, variant: Variant, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = format!("{}/{}", holder_name(holder), variant_name(variant));
    let sandbox = Sandbox::enter()?;
    let range = (RANGE_START, RANGE_START + args.range - 1);
    let mut run = Run::new(label.clone(), sandbox.netns.0);
    if variant == Variant::Sockopt && !conn::has_port_range_option() {
        run.unavailable = Some("IP_LOCAL_PORT_RANGE is not in this kernel (added in Linux 6.3)".into());
        return Ok(run);
    }
    let (sysctl_range, socket_range) = match variant {
        Variant::Sysctl => (range, None),
        Variant::Sockopt => (WIDE_RANGE, Some(range)),
    };
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", sysctl_range.0, sysctl_range.1))?;
    // Reuse would hand TIME_WAIT ports back to connect() (2, loopback only, is the default
    // since 4.19): this scenario measures the search over ports that stay taken.
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let server = Server::start()?;
    let size = u64::from(args.range);
    let mut held: Vec<(OwnedFd, OwnedFd)> = Vec::new();
    let mut held_count = 0u64;
    for &pct in &args.steps {
        let target = ((pct / 100.0) * size as f64).round() as u64;
        while held_count < target {
            let outcome = match holder {
                Holder::Established => conn::hold_established(&server, socket_range).map(|pair| held.push(pair)),
                Holder::TimeWait => match conn::hold_time_wait(&server, socket_range).errno {
                    None => Ok(()),
                    Some(e) => Err(e),
                },
            };
            if let Err(e) = outcome {
                checks.push(Check::exact(format!("{label}: ports the generator could hold"), target, held_count));
                anyhow::bail!("{label}: holding port {} of {target} failed with {}", held_count + 1, errno_name(e));
            }
            held_count += 1;
        }
        let expected = match holder {
            Holder::Established => SocketCount { established: held_count, ..Default::default() },
            Holder::TimeWait => SocketCount { time_wait: held_count, ..Default::default() },
        };
        let kernel = sandbox::settle(&sandbox, server.addr, expected, Duration::from_secs(2))?;
        let held_kernel = kernel.established + kernel.time_wait;
        let step_label = format!("{pct}%");
        checks.push(Check::exact(
            format!("{label} {step_label}: ports held (generator vs sock_diag)"),
            held_count,
            held_kernel,
        ));
        checks.push(Check::exact(
            format!("{label} {step_label}: sockets in other states (sock_diag)"),
            0,
            kernel.other,
        ));
        let mut took = Vec::new();
        let mut failures = BTreeMap::new();
        let start = monotonic_ns();
        for _ in 0..args.probes {
            let probe = conn::probe(&server, socket_range);
            took.push(probe.took.as_secs_f64() * 1e6);
            if let Some(e) = probe.errno {
                *failures.entry(errno_name(e)).or_insert(0) += 1;
            }
        }
        let end = monotonic_ns();
        let failed: u64 = failures.values().sum();
        run.steps.push(Step {
            label: step_label,
            held: held_count,
            held_kernel,
            utilisation: held_count as f64 / size as f64,
            attempts: args.probes,
            connected: args.probes - failed,
            failures,
            connect_us: Quantiles::of(&mut took),
            window_ns: (start, end),
            twtrace: None,
        });
    }
    // Dropping the held sockets next leaves TIME_WAIT sockets that the namespace's teardown
    // then kills: not the run's deaths, so twtrace's are counted up to here.
    run.counted_at_ns = monotonic_ns();
    Ok(run)
}
