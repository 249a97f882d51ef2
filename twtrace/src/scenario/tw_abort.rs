//! `tw-abort`: can `tcp_abort()` end a TIME_WAIT socket, and what does twtrace call that
//! death? `ss -K` reaches `tcp_abort()` through sock_diag: a `SOCK_DESTROY` request (netlink
//! message type 21) naming the socket's 4-tuple goes to `tcp_diag_destroy()`, which looks the
//! socket up (TIME_WAIT sockets included) and calls `sock_diag_destroy()`, then the protocol's
//! `diag_destroy`, `tcp_abort()`. `bpf_sock_destroy()` calls the same function from a BPF
//! iterator. The scenario sends that request itself, as `ss -K` does, so it needs no tool in
//! the guest and sees each answer's errno.
//!
//! Kernel facts (read in the sources, see docs/kernel-facts.md):
//! - Before 6.0, `tcp_abort()` answers a socket that is not a full socket (TIME_WAIT) with
//!   EOPNOTSUPP, unless it is a request socket: the TIME_WAIT socket lives on.
//! - From 6.0 (af9784d007d8 "tcp: diag: add support for TIME_WAIT sockets to tcp_abort()") it
//!   calls `inet_twsk_deschedule_put()` itself: the socket dies at once, and `tcp_abort` is
//!   the caller twtrace sees (`aborted`).
//! - Without `CONFIG_INET_DIAG_DESTROY` no socket can be destroyed this way at all (EOPNOTSUPP
//!   for every state): an ESTABLISHED socket destroyed first tells the two cases apart.
//! - Without sock_diag's TCP handler (inet_diag and tcp_diag, modules on Debian) every request
//!   is answered ENOENT: the run is then reported unavailable, its checks kept.
//!
//! Run: `--sockets` N client-side TIME_WAIT sockets, then one `SOCK_DESTROY` per socket.
//! Truth: the kernel's answer to each request, and sock_diag (the sockets still listed must be
//! N less the requests it acknowledged). With `--record`, twtrace must count exactly the
//! acknowledged ones as `aborted`.

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::Context as _;

use super::{
    conn::{self, Phase, SETTLE, Server},
    report::{Check, Run, ScenarioReport},
    sandbox::{self, Sandbox, SocketCount},
    search_cost::RANGE_START,
};
use crate::{event::tcp_state, kernel::sockdiag, net::errno_name, time::monotonic_ns};

#[derive(clap::Args, Clone, Debug)]
pub struct TwAbortArgs {
    /// TIME_WAIT sockets to make, then destroy one by one.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub sockets: u64,
}

pub fn params(args: &TwAbortArgs) -> BTreeMap<String, String> {
    BTreeMap::from([("sockets".into(), args.sockets.to_string())])
}

pub fn run(args: &TwAbortArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    sandbox::allow_open_files(2 * args.sockets + 256)?;
    let n = args.sockets;
    let label = "SOCK_DESTROY on each TIME_WAIT socket";
    let sandbox = Sandbox::enter()?;
    // One more port than the sockets: the ESTABLISHED control's.
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} {}", RANGE_START as u64 + n))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let server = Server::start()?;
    // Debian builds inet_diag and tcp_diag as modules, which the VM lab's guests do not load:
    // there sock_diag has no handler for TCP and answers every request with ENOENT (as it does
    // a socket it cannot find, hence this test apart).
    let has_diag = sockdiag::has_tcp().context("asking sock_diag for TCP sockets")?;
    report.params.insert("sock_diag_tcp".into(), if has_diag { "yes" } else { "no (ENOENT)" }.into());

    // The control: an ESTABLISHED socket, which every kernel with CONFIG_INET_DIAG_DESTROY can
    // destroy. Both ends go with an RST, so it leaves no TIME_WAIT socket.
    let (client, accepted) = conn::hold_established(&server, None)
        .map_err(|e| anyhow::anyhow!("{label}: the control connection failed with {}", errno_name(e)))?;
    let control = sockdiag::destroy(conn::local_addr(&client)?, server.addr)
        .context("SOCK_DESTROY of the ESTABLISHED control")?;
    conn::abort(client);
    conn::abort(accepted);
    report.params.insert("destroy_established".into(), answer(control));
    sandbox::settle(&sandbox, server.addr, SocketCount::default(), SETTLE)?;

    let mut made = Phase::default();
    for i in 0..n {
        if let Some(e) = made.attempt(&server) {
            anyhow::bail!("{label}: connection {} of {n} failed with {}", i + 1, errno_name(e));
        }
    }
    let before =
        sandbox::settle(&sandbox, server.addr, SocketCount { time_wait: n, ..SocketCount::default() }, SETTLE)?;
    report.checks.push(Check::exact(format!("{label}: TIME_WAIT before (sock_diag)"), n, before.time_wait));
    let flows: Vec<(SocketAddr, SocketAddr)> = sockdiag::tcp_sockets()
        .context("listing the TIME_WAIT sockets")?
        .into_iter()
        .filter(|s| s.flow.remote == server.addr && s.state == tcp_state::TIME_WAIT)
        .map(|s| (s.flow.local, s.flow.remote))
        .collect();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for flow in &flows {
        let errno =
            sockdiag::destroy(flow.0, flow.1).with_context(|| format!("SOCK_DESTROY of {} -> {}", flow.0, flow.1))?;
        *answers.entry(answer(errno)).or_insert(0) += 1;
    }
    let acknowledged = answers.get("ok").copied().unwrap_or(0);
    let expected_left = flows.len() as u64 - acknowledged;
    let left = sandbox::settle(
        &sandbox,
        server.addr,
        SocketCount { time_wait: expected_left, ..SocketCount::default() },
        SETTLE,
    )?
    .time_wait;
    report.params.insert(
        "destroy_time_wait".into(),
        answers.iter().map(|(a, k)| format!("{a} {k}")).collect::<Vec<_>>().join(", "),
    );
    report.checks.push(Check::exact(
        format!("{label}: TIME_WAIT left, those not acknowledged (kernel's answers vs sock_diag)"),
        expected_left,
        left,
    ));
    let mut run = Run::new(label.into(), sandbox.netns.0);
    if !has_diag {
        run.unavailable =
            Some("no sock_diag handler for TCP (inet_diag, tcp_diag not loaded): nothing reaches tcp_abort()".into());
    }
    run.time_wait_at_end = Some(left);
    run.counted_at_ns = monotonic_ns();
    // Zero where the kernel refused: then a check that twtrace saw no early death either.
    run.expected_deaths = BTreeMap::from([("aborted".to_owned(), acknowledged)]);
    run.steps.push(made.step("connect", 0, n));
    report.runs.push(run);
    Ok(())
}

/// `ok`, or the errno's name (those sock_diag answers a destroy with, beyond the usual).
fn answer(errno: i32) -> String {
    match errno {
        0 => "ok".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::ENOENT => "ENOENT".into(),
        other => errno_name(other),
    }
}
