//! `tw-buckets`: a namespace's own TIME_WAIT limit (`net.ipv4.tcp_max_tw_buckets`) and what
//! happens past it. In a fresh namespace: report the limit the kernel gave it, set it to
//! `--limit`, then make twice as many connections, the client closing first. Past the limit
//! `tcp_time_wait()` keeps no TIME_WAIT socket (the connection just closes) and counts
//! `TCPTimeWaitOverflow`: sock_diag must list exactly the limit, the counter the rest, and
//! twtrace must see exactly the limit's births.
//!
//! Then the same in a namespace made under `net.ipv4.tcp_child_ehash_entries` (6.1+): a
//! namespace whose `tcp_child_ehash_entries` is N makes children with an established hash of
//! their own, `roundup_pow_of_two(N)` buckets, and a default limit of half that
//! (`tcp_set_hashinfo()`, d1e5e6408b30 "tcp: Introduce optional per-netns ehash.", 6.1). The
//! child keeps its default limit: `--times` times that many connections, and the same checks.
//! On a kernel without the sysctl (5.10) that run is reported as unavailable.

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
const CHILD_EHASH: &str = "net.ipv4.tcp_child_ehash_entries";

#[derive(clap::Args, Clone, Debug)]
pub struct TwBucketsArgs {
    /// The namespace's TIME_WAIT limit to set.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub limit: u64,
    /// Connections to make, as a multiple of the limit.
    #[arg(long, default_value_t = 2)]
    pub times: u64,
    /// `tcp_child_ehash_entries` of the namespace that makes the second run's namespace.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub child_ehash: u64,
}

pub fn params(args: &TwBucketsArgs) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("limit".into(), args.limit.to_string()),
        ("connections".into(), (args.limit * args.times).to_string()),
        ("child_ehash_entries".into(), args.child_ehash.to_string()),
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
    let label = format!("limit {}", args.limit);
    report.runs.push(fill_past(&sandbox, args.limit, connections, &label, &mut report.checks)?);
    let child = child_namespace(args, report)?;
    report.runs.push(child);
    Ok(())
}

/// Makes `connections` TIME_WAIT-bound connections in `sandbox`, whose limit is `limit`: the
/// run, and its checks against sock_diag and `TCPTimeWaitOverflow`.
fn fill_past(
    sandbox: &Sandbox,
    limit: u64,
    connections: u64,
    label: &str,
    checks: &mut Vec<Check>,
) -> anyhow::Result<Run> {
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
    let kept = connected.min(limit);
    checks.push(Check::exact(format!("{label}: connections made (generator)"), connections, connected));
    checks.push(Check::exact(
        format!("{label}: TIME_WAIT sockets kept, the limit (sock_diag)"),
        kept,
        listed.time_wait,
    ));
    checks.push(Check::exact(
        format!("{label}: TIME_WAIT refused past the limit (generator vs {TW_OVERFLOW})"),
        connected - kept,
        refused,
    ));
    checks.push(Check::exact(
        format!("{label}: sockets in other states (sock_diag)"),
        0,
        listed.established + listed.other,
    ));
    Ok(Run {
        steps: vec![Step {
            label: format!("{connections} connections"),
            held: listed.time_wait,
            held_kernel: listed.time_wait,
            utilisation: listed.time_wait as f64 / limit as f64,
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
        ..Run::new(label.to_owned(), sandbox.netns.0)
    })
}

/// The second run: a parent namespace with `tcp_child_ehash_entries` set, and in the child it
/// makes, the limit the kernel gave, then connections past it.
fn child_namespace(args: &TwBucketsArgs, report: &mut ScenarioReport) -> anyhow::Result<Run> {
    let label = format!("child of tcp_child_ehash_entries={}", args.child_ehash);
    let parent = Sandbox::enter()?;
    if parent.read_sysctl(CHILD_EHASH).is_none() {
        report.params.insert("child_namespace_default_limit".into(), "none (no tcp_child_ehash_entries)".into());
        return Ok(Run {
            unavailable: Some(format!("no {CHILD_EHASH} on this kernel (6.1+)")),
            ..Run::new(label, parent.netns.0)
        });
    }
    parent.sysctl(CHILD_EHASH, &args.child_ehash.to_string())?;
    // unshare() from the parent: the child's hash is sized by the creator's sysctl.
    let child = Sandbox::enter()?;
    let limit: u64 = child
        .read_sysctl(MAX_TW_BUCKETS)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("reading {MAX_TW_BUCKETS} in the child namespace"))?;
    report.params.insert("child_namespace_default_limit".into(), limit.to_string());
    if let Some(size) = child.read_sysctl("net.ipv4.tcp_ehash_entries") {
        // Positive: a table of its own; negative: the global one, shared.
        report.params.insert("child_ehash_entries_read".into(), size);
    }
    report.checks.push(Check::exact(
        format!("{label}: the child's default limit (kernel) is roundup_pow_of_two(N) / 2"),
        args.child_ehash.next_power_of_two() / 2,
        limit,
    ));
    anyhow::ensure!(
        limit * args.times <= 20_000,
        "the child's limit {limit} times {} is over 20,000 connections",
        args.times
    );
    fill_past(&child, limit, limit * args.times, &label, &mut report.checks)
}
