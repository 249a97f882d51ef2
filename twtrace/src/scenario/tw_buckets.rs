//! `tw-buckets`: a namespace's own TIME_WAIT limit (`net.ipv4.tcp_max_tw_buckets`) and what
//! happens past it. In a fresh namespace: report the limit the kernel gave it, set it to
//! `--limit`, then make twice as many connections, the client closing first. Past the limit
//! `tcp_time_wait()` keeps no TIME_WAIT socket (the connection just closes) and counts
//! `TCPTimeWaitOverflow`: sock_diag must list exactly the limit, the counter the rest, and
//! twtrace must see exactly the limit's births.

use std::collections::BTreeMap;

use super::{
    conn::{self, Server},
    report::{Check, Quantiles, Run, ScenarioReport, Step},
    sandbox::{self, Sandbox},
    search_cost::RANGE_START,
};
use crate::{net::errno_name, time::monotonic_ns};

/// LINUX_MIB_TCPTIMEWAITOVERFLOW: a TIME_WAIT socket refused for the limit.
const TW_OVERFLOW: &str = "TCPTimeWaitOverflow";
const MAX_TW_BUCKETS: &str = "net.ipv4.tcp_max_tw_buckets";

#[derive(clap::Args, Clone, Debug)]
pub struct TwBucketsArgs {
    /// The namespace's TIME_WAIT limit to set.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub limit: u64,
    /// Connections to make, as a multiple of the limit.
    #[arg(long, default_value_t = 2)]
    pub times: u64,
}

pub fn params(args: &TwBucketsArgs) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("limit".into(), args.limit.to_string()),
        ("connections".into(), (args.limit * args.times).to_string()),
    ])
}

pub fn run(args: &TwBucketsArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    anyhow::ensure!(args.times >= 1, "--times is at least 1");
    let connections = args.limit * args.times;
    anyhow::ensure!(connections <= 20_000, "at most 20,000 connections (the range is 40000-60999)");
    sandbox::allow_open_files(1024)?;
    let sandbox = Sandbox::enter()?;
    let default_limit = sandbox
        .read_sysctl(MAX_TW_BUCKETS)
        .ok_or_else(|| anyhow::anyhow!("reading {MAX_TW_BUCKETS} in the namespace"))?;
    report.params.insert("namespace_default_limit".into(), default_limit);
    sandbox.sysctl(MAX_TW_BUCKETS, &args.limit.to_string())?;
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} 60999"))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let server = Server::start()?;
    let overflow_before = sandbox.counter(TW_OVERFLOW)?;
    let mut took = Vec::new();
    let mut failures = BTreeMap::new();
    let start = monotonic_ns();
    for _ in 0..connections {
        let probe = conn::hold_time_wait(&server, None);
        took.push(probe.took.as_secs_f64() * 1e6);
        if let Some(e) = probe.errno {
            *failures.entry(errno_name(e)).or_insert(0u64) += 1;
        }
    }
    let end = monotonic_ns();
    let connected = connections - failures.values().sum::<u64>();
    let listed = sandbox.sockets_to(server.addr)?;
    let counted_at_ns = monotonic_ns();
    let refused = (sandbox.counter(TW_OVERFLOW)? - overflow_before) as u64;
    let kept = connected.min(args.limit);
    report.checks.push(Check::exact("connections made (generator)".into(), connections, connected));
    report.checks.push(Check::exact("TIME_WAIT sockets kept, the limit (sock_diag)".into(), kept, listed.time_wait));
    report.checks.push(Check::exact(
        format!("TIME_WAIT refused past the limit (generator vs {TW_OVERFLOW})"),
        connected - kept,
        refused,
    ));
    report.checks.push(Check::exact(
        "sockets in other states (sock_diag)".into(),
        0,
        listed.established + listed.other,
    ));
    report.runs.push(Run {
        steps: vec![Step {
            label: format!("{connections} connections"),
            held: listed.time_wait,
            held_kernel: listed.time_wait,
            utilisation: listed.time_wait as f64 / args.limit as f64,
            attempts: connections,
            connected,
            failures,
            connect_us: Quantiles::of(&mut took),
            window_ns: (start, end),
            twtrace: None,
        }],
        time_wait_at_end: Some(listed.time_wait),
        counted_at_ns,
        time_wait_refused: refused,
        ..Run::new(format!("limit {}", args.limit), sandbox.netns.0)
    });
    Ok(())
}
