//! `tw-reuse`: a client that closes first fills its range with TIME_WAIT sockets, then keeps
//! connecting: with `tcp_tw_reuse` 0 every connect() fails; with 1 (or 2 toward a loopback
//! address) connect() takes over TIME_WAIT sockets once they are old enough. How old they are
//! when taken (twtrace's lifetime of each killed socket), how many (the kernel's `TWRecycled`,
//! which `__inet_check_established` counts on each takeover), and the failures, per policy.
//! `tcp_tw_reuse = 2` is tried toward 127.0.0.1 and toward a non-loopback address on `lo`, and
//! the reuse delay (`tcp_tw_reuse_delay`, ms) where the kernel has it.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{
    conn::{Phase, Server},
    report::{Check, Run, ScenarioReport},
    sandbox::{self, Sandbox},
    search_cost::RANGE_START,
};
use crate::{net::errno_name, time::monotonic_ns};

/// The kernel's count of TIME_WAIT sockets connect() took over (LINUX_MIB_TIMEWAITRECYCLED).
const TW_RECYCLED: &str = "TWRecycled";
/// A destination on `lo` that is not a loopback address (TEST-NET-2, never routed).
const NOT_LOOPBACK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// `net.ipv4.tcp_tw_reuse_delay`: milliseconds a TIME_WAIT socket must have been quiet before
/// reuse (the timestamp clock moved to ms with it; before it, a whole second).
const REUSE_DELAY_SYSCTL: &str = "net.ipv4.tcp_tw_reuse_delay";

#[derive(clap::Args, Clone, Debug)]
pub struct TwReuseArgs {
    /// Ports in the range (40000 up).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(2..=5000))]
    pub range: u16,
    /// Connections per second once the range is full.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of connecting once the range is full.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// The reuse delay (ms) of the delay run, where the kernel has `tcp_tw_reuse_delay`.
    #[arg(long, default_value_t = 100)]
    pub delay_ms: u32,
}

pub fn params(args: &TwReuseArgs) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("range".into(), format!("{}-{}", RANGE_START, RANGE_START + args.range - 1)),
        ("rate".into(), format!("{}/s", args.rate)),
        ("seconds".into(), args.seconds.to_string()),
        ("delay_ms".into(), args.delay_ms.to_string()),
    ])
}

/// One reuse policy toward one address.
struct Policy {
    reuse: u8,
    dest: Ipv4Addr,
    delay_ms: Option<u32>,
}

impl Policy {
    /// `tcp_tw_reuse` 1, or 2 toward a loopback address (`tcp_twsk_unique()`, 4.18-6.18).
    fn allows_reuse(&self) -> bool {
        self.reuse == 1 || (self.reuse == 2 && self.dest.is_loopback())
    }

    fn label(&self) -> String {
        let toward = if self.dest.is_loopback() { "loopback" } else { "non-loopback" };
        match self.delay_ms {
            Some(ms) => format!("reuse={} delay={ms}ms {toward}", self.reuse),
            None => format!("reuse={} {toward}", self.reuse),
        }
    }
}

pub fn run(args: &TwReuseArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate is connections per second");
    anyhow::ensure!(args.seconds > 0.0 && args.seconds <= 30.0, "--seconds is at most 30 (TIME_WAIT lasts 60)");
    sandbox::allow_open_files(1024)?;
    let mut policies = vec![
        Policy { reuse: 0, dest: Ipv4Addr::LOCALHOST, delay_ms: None },
        Policy { reuse: 1, dest: NOT_LOOPBACK, delay_ms: None },
        Policy { reuse: 2, dest: Ipv4Addr::LOCALHOST, delay_ms: None },
        Policy { reuse: 2, dest: NOT_LOOPBACK, delay_ms: None },
    ];
    policies.push(Policy { reuse: 1, dest: NOT_LOOPBACK, delay_ms: Some(args.delay_ms) });
    for policy in &policies {
        report.runs.push(one_run(args, policy, &mut report.checks)?);
    }
    Ok(())
}

fn one_run(args: &TwReuseArgs, policy: &Policy, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = policy.label();
    let sandbox = Sandbox::enter()?;
    let mut run = Run::new(label.clone(), sandbox.netns.0);
    if let Some(ms) = policy.delay_ms {
        if sandbox.read_sysctl(REUSE_DELAY_SYSCTL).is_none() {
            run.unavailable = Some(format!("{REUSE_DELAY_SYSCTL} is not in this kernel"));
            return Ok(run);
        }
        sandbox.sysctl(REUSE_DELAY_SYSCTL, &ms.to_string())?;
    }
    if !policy.dest.is_loopback() {
        sandbox.add_address_on_lo(policy.dest)?;
    }
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE_START, RANGE_START + args.range - 1))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", &policy.reuse.to_string())?;
    let server = Server::start_on(policy.dest)?;
    let recycled_before = sandbox.counter(TW_RECYCLED)?;
    // Fill: as fast as it goes, until every port of the range holds a TIME_WAIT socket. Under
    // emulation the fill can outlast the reuse delay (or cross a second boundary, which is
    // all kernels before the delay sysctl ask), and connect() then takes over sockets the
    // fill made instead of a free port: a success that takes no new port. Since 4.6 the search
    // visits ports of one parity first, so once those are all reusable the free ports of the
    // other parity are never reached: the fill stops after twice the range's attempts, and
    // the second step says how many ports were held (sock_diag).
    let mut fill = Phase::default();
    let mut held = 0u64;
    let size = u64::from(args.range);
    let filled = loop {
        if held >= size {
            let filled = sandbox.counter(TW_RECYCLED)? - recycled_before;
            if held - filled as u64 >= size || fill.attempts() >= 2 * size {
                break filled;
            }
        }
        match fill.attempt(&server) {
            None => held += 1,
            Some(e) => anyhow::bail!("{label}: filling the range failed at port {} with {}", held + 1, errno_name(e)),
        }
    };
    let ports_held = sandbox.sockets_to(server.addr)?.time_wait;
    // Full: every connect() now needs a TIME_WAIT socket to take over.
    let mut full = Phase::default();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs_f64(args.seconds) {
        if let Some(wait) = (started + interval * n).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        full.attempt(&server);
        n += 1;
    }
    let recycled = sandbox.counter(TW_RECYCLED)? - recycled_before;
    // A connect() that succeeded with the range full took a TIME_WAIT socket over, unless the
    // kernel had ended one early by another path and freed its port: under emulation, with
    // three scenarios side by side in one guest, up to 13 % of them did (the deaths are in
    // twtrace's count, which the join checks against sock_diag). So the kernel's count of
    // takeovers is at most what the generator made possible, never more.
    if !policy.allows_reuse() {
        checks.push(Check::exact(
            format!("{label}: takeovers (TWRecycled), none under this policy"),
            0,
            recycled as u64,
        ));
    }
    let possible = full.connected() + filled as u64;
    checks.push(Check::within(
        format!(
            "{label}: takeovers (TWRecycled), at most the connects with the range full plus {filled} while filling"
        ),
        possible,
        recycled as u64,
        possible,
    ));
    let tw = sandbox.sockets_to(server.addr)?;
    run.time_wait_at_end = Some(tw.time_wait);
    run.counted_at_ns = monotonic_ns();
    run.steps.push(fill.step("fill", 0, size));
    run.steps.push(full.step("full", ports_held, size));
    Ok(run)
}
