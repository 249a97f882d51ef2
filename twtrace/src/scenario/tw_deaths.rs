//! `tw-deaths`: every way a TIME_WAIT socket ends before its 60 s, each made on purpose in a
//! namespace of its own, with the count the kernel (sock_diag, `/proc/net/netstat`) or the
//! generator vouches for. With `--record`, twtrace must name each death's path and count
//! exactly these (see `DeathReason`; kernel facts in `twtrace_common::timewait::KillPath`).
//!
//! Runs, `--sockets` N each:
//! - `reused`: `tcp_tw_reuse=1`, a range of N ports full of TIME_WAIT, then N more connects,
//!   each taking one over once the sockets are a second old. Truth: `TWRecycled`.
//! - `incoming`: the server closes first (its side keeps the TIME_WAIT), then each client
//!   connects again from the same port: the SYN opens a new connection over the TIME_WAIT.
//!   Truth: the reconnects accepted, and no TIME_WAIT left (sock_diag).
//! - `reset fin_wait2`: the client's FIN acknowledged, the client closes (TIME_WAIT in its
//!   FIN_WAIT2 substate), then the server closes with SO_LINGER 0: an RST. Truth: sock_diag.
//! - `reset time_wait rfc1337=0|1`: TIME_WAIT in its TIME_WAIT substate, and the RST comes
//!   from the peer's side: a connect() from the server's old port to each client port sends a
//!   SYN, the TIME_WAIT socket answers with an ACK, and the connecting socket, which expected
//!   none, answers that with an RST in the TIME_WAIT's window. RFC 1337's "assassination":
//!   the socket dies unless `tcp_rfc1337=1`. Truth: sock_diag (N gone, or N left).
//! - `bucket limit`: `tcp_max_tw_buckets` N/2 and N connections: half keep no TIME_WAIT
//!   socket at all (never born, not a death). Truth: `TCPTimeWaitOverflow`, sock_diag.
//! - `namespace exit`: N TIME_WAIT sockets in a namespace that a thread made and leaves: its
//!   teardown purges them. Truth: sock_diag before the teardown. Last, because nothing keeps
//!   that namespace's inode from coming back.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    conn::{
        self, Phase, SETTLE, Server, connect_from, connect_from_nonblocking, local_addr, read_eof, server_time_wait,
        tcp_state_of,
    },
    report::{Check, Run, ScenarioReport},
    sandbox::{self, Sandbox, SocketCount},
    search_cost::RANGE_START,
};
use crate::{event::tcp_state, net::errno_name, time::monotonic_ns};

/// LINUX_MIB_TIMEWAITRECYCLED: TIME_WAIT sockets connect() took over.
const TW_RECYCLED: &str = "TWRecycled";
/// LINUX_MIB_TCPTIMEWAITOVERFLOW: a TIME_WAIT socket refused for the limit.
const TW_OVERFLOW: &str = "TCPTimeWaitOverflow";
/// How long a namespace's teardown may take to purge its TIME_WAIT sockets once its last
/// user is gone (`cleanup_net` runs from a workqueue, after an RCU grace period).
const TEARDOWN: Duration = Duration::from_secs(5);

#[derive(clap::Args, Clone, Debug)]
pub struct TwDeathsArgs {
    /// TIME_WAIT sockets each run makes and ends.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub sockets: u64,
}

pub fn params(args: &TwDeathsArgs) -> BTreeMap<String, String> {
    BTreeMap::from([("sockets".into(), args.sockets.to_string())])
}

pub fn run(args: &TwDeathsArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    sandbox::allow_open_files(4 * args.sockets + 256)?;
    let n = args.sockets;
    report.runs.push(reused(n, &mut report.checks)?);
    report.runs.push(incoming(n, &mut report.checks)?);
    report.runs.push(reset_in_fin_wait2(n, &mut report.checks)?);
    report.runs.push(reset_in_time_wait(n, false, &mut report.checks)?);
    report.runs.push(reset_in_time_wait(n, true, &mut report.checks)?);
    report.runs.push(bucket_limit(n, &mut report.checks)?);
    report.runs.push(namespace_exit(n, &mut report.checks)?);
    Ok(())
}

/// The run's namespace with a range of `ports` ports, reuse off unless asked.
fn sandbox(ports: u64, reuse: u8) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::enter()?;
    let last = RANGE_START as u64 + ports - 1;
    anyhow::ensure!(last <= 60999, "at most {} sockets", 60999 - RANGE_START as u64 + 1);
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} {last}"))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", &reuse.to_string())?;
    Ok(sandbox)
}

/// Client-side TIME_WAIT sockets: `n` connections the client closes first.
fn fill(server: &Server, n: u64, label: &str) -> anyhow::Result<Phase> {
    let mut phase = Phase::default();
    for i in 0..n {
        if let Some(e) = phase.attempt(server) {
            anyhow::bail!("{label}: connection {} of {n} failed with {}", i + 1, errno_name(e));
        }
    }
    Ok(phase)
}

fn settled(sandbox: &Sandbox, dest: SocketAddr, time_wait: u64) -> anyhow::Result<SocketCount> {
    sandbox::settle(sandbox, dest, SocketCount { time_wait, ..SocketCount::default() }, SETTLE)
}

fn deaths(path: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(path.to_owned(), n)])
}

fn reused(n: u64, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = "reused (tcp_tw_reuse=1)";
    // The fill runs with reuse off: before `tcp_tw_reuse_delay`, reuse needs only a later
    // second of the clock than the peer's last timestamp, so a fill crossing a second boundary
    // would take over sockets it made a few ms earlier (seen on 6.1: one at 18.8 ms).
    let sandbox = sandbox(n, 0)?;
    let server = Server::start()?;
    let recycled_before = sandbox.counter(TW_RECYCLED)?;
    let filled = fill(&server, n, label)?;
    settled(&sandbox, server.addr, n)?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    // Every socket older than a second (a later second of the clock before
    // `tcp_tw_reuse_delay`; 1,000 ms by default with it).
    std::thread::sleep(Duration::from_millis(1_100));
    let mut takeover = Phase::default();
    for _ in 0..n {
        takeover.attempt(&server);
    }
    let listed = settled(&sandbox, server.addr, n)?;
    let recycled = (sandbox.counter(TW_RECYCLED)? - recycled_before) as u64;
    // Each connect() takes a socket over, unless the kernel ended one early by another path
    // meanwhile and freed its port (seen under emulation): at most the connects.
    let connected = takeover.connected();
    checks.push(Check::within(
        format!("{label}: TIME_WAIT taken over (TWRecycled), at most the connects that succeeded"),
        connected,
        recycled,
        connected,
    ));
    let mut run = Run::new(label.into(), sandbox.netns.0);
    run.time_wait_at_end = Some(listed.time_wait);
    run.counted_at_ns = monotonic_ns();
    run.expected_deaths = deaths("reused", recycled);
    run.steps.push(filled.step("fill", 0, n));
    run.steps.push(takeover.step("take over", n, n));
    Ok(run)
}

fn incoming(n: u64, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = "incoming (a SYN over the server's TIME_WAIT)";
    let sandbox = sandbox(n, 0)?;
    let server = Server::start()?;
    let mut made = Phase::default();
    let mut clients = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client =
            made.connect(&server).map_err(|e| anyhow::anyhow!("{label}: connecting failed with {}", errno_name(e)))?;
        clients.push(client);
    }
    // The server closes first, then each client once it has read the server's FIN: the
    // server's side ends in TIME_WAIT, the client's port is free again.
    let mut ports = Vec::with_capacity(clients.len());
    for client in clients {
        let accepted = server.accept()?;
        drop(accepted);
        read_eof(&client);
        ports.push(local_addr(&client)?);
        drop(client);
    }
    let before = server_time_wait(server.addr, n)?;
    checks.push(Check::exact(format!("{label}: server-side TIME_WAIT before (sock_diag)"), n, before));
    // The timestamp clock ticks in ms: a new SYN then carries a newer timestamp too.
    std::thread::sleep(Duration::from_millis(20));
    let mut accepted = 0u64;
    let mut again = Vec::with_capacity(ports.len());
    for port in &ports {
        match connect_from(*port, server.addr) {
            Ok(fd) => {
                again.push((fd, server.accept()?));
                accepted += 1;
            }
            Err(e) => anyhow::bail!("{label}: reconnecting from {port} failed with {}", errno_name(e)),
        }
    }
    for (client, server_side) in again {
        conn::abort(client);
        drop(server_side);
    }
    let left = server_time_wait(server.addr, 0)?;
    checks.push(Check::exact(format!("{label}: reconnects accepted (generator)"), n, accepted));
    let mut run = Run::new(label.into(), sandbox.netns.0);
    run.time_wait_at_end = Some(left);
    run.counted_at_ns = monotonic_ns();
    run.expected_deaths = deaths("incoming", n - left.min(n));
    run.steps.push(made.step("connect", 0, n));
    Ok(run)
}

fn reset_in_fin_wait2(n: u64, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = "reset (FIN_WAIT2 substate)";
    let sandbox = sandbox(n, 0)?;
    let server = Server::start()?;
    let mut made = Phase::default();
    let mut pairs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client =
            made.connect(&server).map_err(|e| anyhow::anyhow!("{label}: connecting failed with {}", errno_name(e)))?;
        pairs.push((client, server.accept()?));
    }
    // The FIN first, and close() only once it is acknowledged (the server acknowledges a FIN
    // with a delayed ACK): an orphan whose FIN is acknowledged while close() still holds the
    // socket stays a full FIN_WAIT2 socket; closed in FIN_WAIT2 it becomes TIME_WAIT.
    for (client, _) in &pairs {
        // SAFETY: a valid descriptor.
        unsafe { libc::shutdown(client.as_raw_fd(), libc::SHUT_WR) };
    }
    let until = Instant::now() + SETTLE;
    while pairs.iter().any(|(client, _)| tcp_state_of(client) != tcp_state::FIN_WAIT2) {
        anyhow::ensure!(Instant::now() < until, "{label}: clients not in FIN_WAIT2 after {SETTLE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut servers = Vec::with_capacity(pairs.len());
    for (client, accepted) in pairs {
        drop(client);
        servers.push(accepted);
    }
    // sock_diag lists a TIME_WAIT socket by its substate: these read FIN_WAIT2 (no full
    // socket is left in that state: each was closed).
    let in_fin_wait2 = SocketCount { other: n, ..SocketCount::default() };
    let before = sandbox::settle(&sandbox, server.addr, in_fin_wait2, SETTLE)?;
    checks.push(Check::exact(format!("{label}: TIME_WAIT before the RSTs (sock_diag, as FIN_WAIT2)"), n, before.other));
    for accepted in servers {
        conn::abort(accepted); // SO_LINGER 0: an RST instead of a FIN
    }
    let after = sandbox::settle(&sandbox, server.addr, SocketCount::default(), SETTLE)?;
    let left = after.other + after.time_wait;
    let mut run = Run::new(label.into(), sandbox.netns.0);
    run.time_wait_at_end = Some(left);
    run.counted_at_ns = monotonic_ns();
    run.expected_deaths = deaths("reset", n - left.min(n));
    run.steps.push(made.step("connect", 0, n));
    Ok(run)
}

fn reset_in_time_wait(n: u64, rfc1337: bool, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = format!("reset (TIME_WAIT substate, tcp_rfc1337={})", u8::from(rfc1337));
    let sandbox = sandbox(n, 0)?;
    sandbox.sysctl("net.ipv4.tcp_rfc1337", if rfc1337 { "1" } else { "0" })?;
    let server = Server::start()?;
    let server_addr = server.addr;
    let filled = fill(&server, n, &label)?;
    let before = settled(&sandbox, server_addr, n)?;
    checks.push(Check::exact(format!("{label}: TIME_WAIT before the RSTs (sock_diag)"), n, before.time_wait));
    let ports: Vec<SocketAddr> = crate::kernel::sockdiag::tcp_sockets()
        .context("listing the TIME_WAIT sockets")?
        .into_iter()
        .filter(|s| s.flow.remote == server_addr && s.state == tcp_state::TIME_WAIT)
        .map(|s| s.flow.local)
        .collect();
    // The server's port, free once its listener is gone, sends one SYN to each: non-blocking,
    // since each connect() only ends when its SYN is answered for good.
    drop(server);
    let mut peers = Vec::with_capacity(ports.len());
    for port in &ports {
        peers.push(connect_from_nonblocking(server_addr, *port).with_context(|| format!("{label}: a SYN to {port}"))?);
    }
    let expected_left = if rfc1337 { n } else { 0 };
    if rfc1337 {
        // Nothing to wait for but the exchanges themselves (on loopback they finish within
        // microseconds of each connect()).
        std::thread::sleep(Duration::from_millis(300));
    }
    let left = settled(&sandbox, server_addr, expected_left)?.time_wait;
    // Those sockets' later SYNs would meet what is left: they go before the count is used.
    for peer in peers {
        conn::abort(peer);
    }
    checks.push(Check::exact(format!("{label}: TIME_WAIT left after the RSTs (sock_diag)"), expected_left, left));
    let mut run = Run::new(label, sandbox.netns.0);
    run.time_wait_at_end = Some(left);
    run.counted_at_ns = monotonic_ns();
    if !rfc1337 {
        run.expected_deaths = deaths("reset", n - left.min(n));
    } else {
        // None expected: a check that twtrace saw no early death at all.
        run.expected_deaths = deaths("reset", 0);
    }
    run.steps.push(filled.step("connect", 0, n));
    Ok(run)
}

fn bucket_limit(n: u64, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let limit = n / 2;
    let label = format!("bucket limit (tcp_max_tw_buckets={limit})");
    let sandbox = sandbox(n, 0)?;
    sandbox.sysctl("net.ipv4.tcp_max_tw_buckets", &limit.to_string())?;
    let server = Server::start()?;
    let overflow_before = sandbox.counter(TW_OVERFLOW)?;
    let made = fill(&server, n, &label)?;
    let listed = settled(&sandbox, server.addr, limit)?;
    let refused = (sandbox.counter(TW_OVERFLOW)? - overflow_before) as u64;
    checks.push(Check::exact(format!("{label}: TIME_WAIT kept, the limit (sock_diag)"), limit, listed.time_wait));
    checks.push(Check::exact(format!("{label}: refused past the limit ({TW_OVERFLOW})"), n - limit, refused));
    let mut run = Run::new(label, sandbox.netns.0);
    run.time_wait_at_end = Some(listed.time_wait);
    run.counted_at_ns = monotonic_ns();
    run.time_wait_refused = refused;
    run.steps.push(made.step("connect", 0, n));
    Ok(run)
}

fn namespace_exit(n: u64, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = "namespace exit";
    // The namespace lives as long as the thread (and its sockets): the thread returns what it
    // counted and ends, and the kernel tears the namespace down.
    let (netns, made, listed) = std::thread::spawn(move || -> anyhow::Result<_> {
        let sandbox = Sandbox::enter_this_thread_only()?;
        sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} {}", RANGE_START as u64 + n - 1))?;
        // Off, as in every other run: a new namespace's default (2) lets a fill that crosses a
        // second boundary take over its own loopback TIME_WAIT sockets (the 6.1 guest under
        // the matrix's load kept 12 of 20).
        sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
        let server = Server::start()?;
        let made = fill(&server, n, label)?;
        let listed = settled(&sandbox, server.addr, n)?;
        Ok((sandbox.netns, made, listed.time_wait))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("{label}: the namespace's thread panicked"))??;
    let born_by_ns = monotonic_ns();
    checks.push(Check::exact(format!("{label}: TIME_WAIT before the teardown (sock_diag)"), n, listed));
    std::thread::sleep(TEARDOWN);
    let mut run = Run::new(label.into(), netns.0);
    // Its inode is free once the namespace is gone, and another namespace (a test beside
    // this one) may get it: births after the thread ended are not this run's.
    run.born_by_ns = Some(born_by_ns);
    // The namespace is gone, and nothing of it with it: twtrace's deaths must equal its births.
    run.time_wait_at_end = Some(0);
    run.counted_at_ns = monotonic_ns();
    run.expected_deaths = deaths("namespace_exit", listed);
    run.steps.push(made.step("connect", 0, n));
    Ok(run)
}
