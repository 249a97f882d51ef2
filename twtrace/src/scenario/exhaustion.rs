//! `client-exhaustion`: one client, one server:port, no keep-alive, the client closing first,
//! at a set rate, until connect() fails with EADDRNOTAVAIL: the incident of a client at 710
//! requests/s filling its range with TIME_WAIT sockets. Every connect() is timed and binned by
//! how full the range was when it started, so the search cost reads against utilisation.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{
    conn::{self, Server},
    report::{Check, Quantiles, Run, ScenarioReport, Step},
    sandbox::{self, Sandbox, SocketCount},
    search_cost::RANGE_START,
};
use crate::{net::errno_name, time::monotonic_ns};

/// Linux's TIME_WAIT lifetime (`TCP_TIMEWAIT_LEN`, 60 s in every kernel): the run must fill the
/// range before its first sockets expire, or the count it checks moves under it.
const TIME_WAIT_LIFETIME: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct ExhaustionArgs {
    /// Ports in the range (40000 up).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u16).range(2..=20000))]
    pub range: u16,
    /// Connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 710.0)]
    pub rate: f64,
    /// connect() calls to time once the range is full (each fails).
    #[arg(long, default_value_t = 20)]
    pub after: u64,
    /// Utilisation bins the connects are grouped in.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub bins: u64,
}

pub fn params(args: &ExhaustionArgs) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("range".into(), format!("{}-{}", RANGE_START, RANGE_START + args.range - 1)),
        ("rate".into(), format!("{}/s", args.rate)),
        ("after".into(), args.after.to_string()),
        ("bins".into(), args.bins.to_string()),
    ])
}

/// One connect(): when, how full the range was, what it returned, how long it took.
struct Attempt {
    start_ns: u64,
    end_ns: u64,
    held_before: u64,
    errno: Option<i32>,
    took_us: f64,
}

pub fn run(args: &ExhaustionArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate is connections per second");
    sandbox::allow_open_files(1024)?;
    let sandbox = Sandbox::enter()?;
    let size = u64::from(args.range);
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE_START, RANGE_START + args.range - 1))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let server = Server::start()?;
    let interval = if args.rate > 0.0 { Duration::from_secs_f64(1.0 / args.rate) } else { Duration::ZERO };
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut held = 0u64;
    let mut first_failure_at = None;
    let mut after = 0;
    while after < args.after || first_failure_at.is_none() {
        let due = started + interval * attempts.len() as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if started.elapsed() > TIME_WAIT_LIFETIME - Duration::from_secs(5) {
            anyhow::bail!(
                "the range was not full after {:.0} s ({held} of {size} ports): TIME_WAIT sockets would start to \
                 expire; use a smaller --range or a higher --rate",
                started.elapsed().as_secs_f64()
            );
        }
        let start_ns = monotonic_ns();
        let probe = conn::hold_time_wait(&server, None);
        let end_ns = monotonic_ns();
        attempts.push(Attempt {
            start_ns,
            end_ns,
            held_before: held,
            errno: probe.errno,
            took_us: probe.took.as_secs_f64() * 1e6,
        });
        match probe.errno {
            None => held += 1,
            Some(_) => {
                first_failure_at.get_or_insert(held);
                after += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    report.params.insert("achieved".into(), format!("{:.0}/s", attempts.len() as f64 / seconds));
    // The kernel may end a TIME_WAIT socket early (then its port is free again and one more
    // connect() succeeds): the generator cannot know, so it checks only what must hold
    // whatever the kernel did, and twtrace's count (with --record) must then explain the rest.
    let kernel = sandbox.sockets_to(server.addr)?;
    let kernel = if kernel.time_wait == held && kernel.established + kernel.other == 0 {
        kernel
    } else {
        let settled = SocketCount { time_wait: kernel.time_wait, ..Default::default() };
        sandbox::settle(&sandbox, server.addr, settled, Duration::from_secs(2))?
    };
    report.checks.push(Check::exact(
        "sockets in other states at the end (sock_diag)".into(),
        0,
        kernel.established + kernel.other,
    ));
    report.checks.push(Check::within(
        "TIME_WAIT sockets at the end, never more than connected (generator vs sock_diag)".into(),
        held,
        kernel.time_wait,
        held,
    ));
    let first_failure = first_failure_at.unwrap_or(held);
    report.checks.push(Check::exact(
        "connect() failed only once the range was full (ports held at the first failure, at least the range)".into(),
        size,
        first_failure.min(size),
    ));
    report.params.insert("first_failure_after".into(), format!("{first_failure} connects"));
    let mut run = Run::new("time-wait/sysctl".into(), sandbox.netns.0);
    run.time_wait_at_end = Some(kernel.time_wait);
    run.counted_at_ns = monotonic_ns();
    run.steps = bin(&attempts, size, args.bins);
    report.runs.push(run);
    Ok(())
}

/// Groups attempts by the utilisation they started at: `bins` equal bins below full, then one
/// `full` bin for the attempts made with every port taken.
fn bin(attempts: &[Attempt], size: u64, bins: u64) -> Vec<Step> {
    let mut groups: BTreeMap<u64, Vec<&Attempt>> = BTreeMap::new();
    for a in attempts {
        let bin = if a.held_before >= size { bins } else { a.held_before * bins / size };
        groups.entry(bin).or_default().push(a);
    }
    groups
        .into_iter()
        .map(|(bin, members)| {
            let label = if bin == bins {
                "full".to_owned()
            } else {
                format!("{}-{}%", bin * 100 / bins, (bin + 1) * 100 / bins)
            };
            let mut failures = BTreeMap::new();
            for a in &members {
                if let Some(e) = a.errno {
                    *failures.entry(errno_name(e)).or_insert(0u64) += 1;
                }
            }
            let failed: u64 = failures.values().sum();
            let mut took: Vec<f64> = members.iter().map(|a| a.took_us).collect();
            let held = members[0].held_before;
            Step {
                label,
                held,
                held_kernel: held,
                utilisation: held as f64 / size as f64,
                attempts: members.len() as u64,
                connected: members.len() as u64 - failed,
                failures,
                connect_us: Quantiles::of(&mut took),
                window_ns: (members[0].start_ns, members[members.len() - 1].end_ns),
                twtrace: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(held_before: u64, errno: Option<i32>) -> Attempt {
        Attempt { start_ns: held_before * 10, end_ns: held_before * 10 + 5, held_before, errno, took_us: 1.0 }
    }

    #[test]
    fn attempts_bin_by_the_utilisation_they_started_at_and_full_is_its_own_bin() {
        let mut attempts: Vec<Attempt> = (0..10).map(|h| attempt(h, None)).collect();
        attempts.extend((0..3).map(|_| attempt(10, Some(libc::EADDRNOTAVAIL))));
        let steps = bin(&attempts, 10, 2);
        let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["0-50%", "50-100%", "full"]);
        assert_eq!(steps.iter().map(|s| s.attempts).collect::<Vec<_>>(), [5, 5, 3]);
        assert_eq!(steps[2].failures.get("EADDRNOTAVAIL"), Some(&3));
        assert_eq!(steps[2].connected, 0);
        assert_eq!(steps[1].window_ns, (50, 95));
    }
}
