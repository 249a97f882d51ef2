//! `paws-nat`: clients behind one source address (as behind a NAT) whose TCP timestamp clocks
//! differ, reusing 4-tuples the server still holds in TIME_WAIT. The first clients connect
//! from ports of the range and the server closes first; then other clients, from the same
//! address and the same ports, connect again with a clock that is behind the first ones'.
//!
//! How the clocks differ without a NAT: a connection's timestamps carry a random offset when
//! `tcp_timestamps = 1`, and none when it is 2 (the sysctl is per namespace and read at
//! connect()). The offset is one per address pair or one per 4-tuple, by build: see
//! docs/studies/paws-nat.md, finding 5, and docs/kernel-facts.md. One namespace switched between the two is two clients
//! with the same address and different offsets, which is what a NAT does to hosts behind it.
//! `TCP_TIMESTAMP` (getsockopt) tells which of the two clocks is ahead.
//!
//! What the kernel does with the later client's SYN (5.10-6.18): the TIME_WAIT socket rejects
//! it by PAWS (its timestamp is older than the last one seen; counted as `PAWSEstab`, as
//! `PAWSTimewait` since 6.16, which also drops it with reason `TCP_RFC7323_TW_PAWS`), and
//! answers with an ACK. The client, which expected a SYN-ACK, answers that with an RST in the
//! socket's window, which kills it (RFC 1337's assassination, `tcp_rfc1337 = 0`); the client's
//! SYN retransmitted a second later then connects. With `tcp_rfc1337 = 1` the TIME_WAIT socket
//! survives and each retransmission meets it again. Runs: the clock behind under
//! `tcp_rfc1337` 0 and 1, and the same clock (a control: the SYN is newer, and opens a new
//! connection over the TIME_WAIT at once).

use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use super::{
    conn::{self, Phase, Server, connect_from_nonblocking, local_addr, read_eof, server_time_wait},
    report::{Check, LaterClients, Quantiles, Run, ScenarioReport},
    sandbox::{self, Sandbox},
    search_cost::RANGE_START,
};
use crate::time::monotonic_ns;

/// TIME_WAIT PAWS rejections: `PAWSEstab` before 6.16, `PAWSTimewait` since.
const PAWS_ESTABLISHED: &str = "PAWSEstab";
const PAWS_TIME_WAIT: &str = "PAWSTimewait";
/// `TCP_TIMESTAMP` (include/uapi/linux/tcp.h): a socket's current timestamp clock.
const TCP_TIMESTAMP: libc::c_int = 24;
/// The initial retransmission timeout (`TCP_TIMEOUT_INIT`, 1 s): a SYN lost (or rejected)
/// once costs the client this much.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// How long the clients behind are watched: past the first retransmission, before the second
/// (at 3 s).
const WATCH: Duration = Duration::from_millis(2_500);
/// How far (ms) a first client's clock must be ahead of the later one's: well past the time
/// the run takes, so the later clock cannot catch up.
const CLOCK_MARGIN_MS: i32 = 60_000;

#[derive(clap::Args, Clone, Debug)]
pub struct PawsNatArgs {
    /// Clients (4-tuples) per run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=500))]
    pub clients: u64,
}

pub fn params(args: &PawsNatArgs) -> BTreeMap<String, String> {
    BTreeMap::from([("clients".into(), args.clients.to_string())])
}

/// One run's policy.
#[derive(Clone, Copy)]
enum Later {
    /// The later clients' clock is behind the first ones'.
    Behind { rfc1337: bool },
    /// The same clock: a control.
    Same,
}

impl Later {
    fn label(self) -> String {
        match self {
            Self::Behind { rfc1337 } => format!("clock behind, tcp_rfc1337={}", u8::from(rfc1337)),
            Self::Same => "same clock".into(),
        }
    }
}

pub fn run(args: &PawsNatArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    sandbox::allow_open_files(4 * args.clients + 256)?;
    for later in [Later::Behind { rfc1337: false }, Later::Behind { rfc1337: true }, Later::Same] {
        report.runs.push(one_run(args.clients, later, &mut report.checks)?);
    }
    Ok(())
}

fn one_run(n: u64, later: Later, checks: &mut Vec<Check>) -> anyhow::Result<Run> {
    let label = later.label();
    let sandbox = Sandbox::enter()?;
    // Wide enough for the first clients and the connections set aside (see below).
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} {}", RANGE_START as u64 + 16 * n + 63))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let rfc1337 = matches!(later, Later::Behind { rfc1337: true });
    sandbox.sysctl("net.ipv4.tcp_rfc1337", if rfc1337 { "1" } else { "0" })?;
    let server = Server::start()?;
    // A connection made under `tcp_timestamps = 2` reads the plain clock for the whole run.
    sandbox.sysctl("net.ipv4.tcp_timestamps", "2")?;
    let plain = server.connect(None).result.map_err(|e| anyhow::anyhow!("{label}: connect: errno {e}"))?;
    let plain_server_side = server.accept()?;
    let clock_ahead = |fd: &OwnedFd| -> anyhow::Result<i32> {
        Ok(timestamp_clock(fd)?.wrapping_sub(timestamp_clock(&plain)?) as i32)
    };
    // Which setting the first clients use, and which the later ones: the later clock must be
    // behind. With per-connection offsets (builds with 165573e41f2f), a `tcp_timestamps = 1`
    // connection whose clock is ahead of the plain one is kept and the others set aside; with
    // one offset per address pair, all are ahead or all behind, and when behind the roles swap.
    sandbox.sysctl("net.ipv4.tcp_timestamps", "1")?;
    let mut first = Phase::default();
    let mut kept: Vec<OwnedFd> = Vec::with_capacity(n as usize);
    let mut set_aside = 0u64;
    let mut behind_seen = 0u64;
    let mut roles = ("1", "2");
    let mut seen_ms: Vec<i32> = Vec::new();
    while (kept.len() as u64) < n {
        anyhow::ensure!(
            first.attempts() < 16 * n + 32,
            "{label}: too few connections with a clock ahead of the plain one by {CLOCK_MARGIN_MS} ms: {} kept of {}; \
             the first clocks ahead by (ms) {:?}",
            kept.len(),
            first.attempts(),
            &seen_ms[..seen_ms.len().min(12)]
        );
        let fd = first.connect(&server).map_err(|e| anyhow::anyhow!("{label}: a first connect failed: errno {e}"))?;
        let by = clock_ahead(&fd)?;
        seen_ms.push(by);
        let ahead = matches!(later, Later::Same) || roles.0 == "2" || by > CLOCK_MARGIN_MS;
        if ahead {
            kept.push(fd);
            continue;
        }
        behind_seen += 1;
        // Set aside: the client's RST first, so that neither side keeps a TIME_WAIT socket
        // (the server closing first would leave one, which the RST would then kill).
        let accepted = server.accept()?;
        conn::abort(fd);
        drop(accepted);
        set_aside += 1;
        if kept.is_empty() && behind_seen == 16 {
            // One offset per address pair, behind: the first clients use the plain clock.
            roles = ("2", "1");
            sandbox.sysctl("net.ipv4.tcp_timestamps", "2")?;
        }
    }
    if matches!(later, Later::Same) {
        roles = ("1", "1");
    }
    // The server closes first: its side keeps each 4-tuple in TIME_WAIT.
    let mut ports = Vec::with_capacity(kept.len());
    for client in kept {
        drop(server.accept()?);
        read_eof(&client);
        ports.push(local_addr(&client)?);
        drop(client);
    }
    let held = server_time_wait(server.addr, n)?;
    checks.push(Check::exact(format!("{label}: the server's TIME_WAIT sockets (sock_diag)"), n, held));

    // The later clients: the same address and ports, the other clock.
    sandbox.sysctl("net.ipv4.tcp_timestamps", roles.1)?;
    std::thread::sleep(Duration::from_millis(20));
    let paws_before = paws_rejections(&sandbox)?;
    let started = Instant::now();
    let mut pending: Vec<OwnedFd> = Vec::with_capacity(ports.len());
    for port in &ports {
        pending.push(connect_from_nonblocking(*port, server.addr)?);
    }
    let mut delays_us = Vec::new();
    let mut connected = Vec::new();
    let mut refused = 0u64;
    while !pending.is_empty() && started.elapsed() < WATCH {
        std::thread::sleep(Duration::from_millis(2));
        let mut still = Vec::with_capacity(pending.len());
        for fd in pending {
            match connect_outcome(&fd) {
                None => still.push(fd),
                Some(0) => {
                    delays_us.push(started.elapsed().as_secs_f64() * 1e6);
                    connected.push(fd);
                }
                Some(_) => refused += 1,
            }
        }
        pending = still;
    }
    let waiting = pending.len() as u64;
    let left = server_time_wait(server.addr, if rfc1337 { n } else { 0 })?;
    // Tidy: the clients' ends aborted (no TIME_WAIT), the waiting ones given up (a SYN_SENT
    // socket closes without a packet), the server's ends taken from the queue and closed.
    for fd in connected.into_iter().chain(pending) {
        conn::abort(fd);
    }
    while let Some(fd) = accept_now(&server)? {
        drop(fd);
    }
    conn::abort(plain);
    drop(plain_server_side);
    // Counted once the waiting clients are gone: until then their SYNs are still rejected
    // (tcp_rfc1337 1), and twtrace's drops are counted up to the run's end (`counted_at_ns`).
    // Read before the tidy, the counter missed those of the last moments: 40 against
    // twtrace's 50 in an emulated 6.18 guest (2026-12-07).
    let paws = paws_rejections(&sandbox)? - paws_before;
    let connected_n = delays_us.len() as u64;
    let slow = delays_us.iter().filter(|us| **us >= INITIAL_RTO.as_secs_f64() * 0.9e6).count() as u64;
    let mut run = Run::new(label.clone(), sandbox.netns.0);
    let paws_check = format!("{label}: SYNs rejected by PAWS ({PAWS_ESTABLISHED} + {PAWS_TIME_WAIT})");
    match later {
        Later::Behind { rfc1337: false } => {
            // Rejected once each: the RST that follows ends the TIME_WAIT socket, and the SYN
            // sent again 2 jiffies later (the kernel's quick retry after an unacceptable ACK,
            // `TCP_TIMEOUT_MIN`) finds the listener.
            checks.push(Check::exact(paws_check, n, paws));
            checks.push(Check::exact(format!("{label}: connects made within {WATCH:?}"), n, connected_n));
            checks.push(Check::exact(format!("{label}: TIME_WAIT left (sock_diag)"), 0, left));
            run.expected_deaths = BTreeMap::from([("reset".to_owned(), n)]);
        }
        Later::Behind { rfc1337: true } => {
            checks.push(Check::exact(format!("{label}: connects still waiting at {WATCH:?}"), n, waiting));
            // Each SYN is rejected again (the first, its quick retry, the retransmission after
            // a second; the TIME_WAIT socket's ACKs are rate-limited): at least one per client.
            checks.push(Check::exact(format!("{paws_check}, at least one per client"), n, paws.min(n)));
            checks.push(Check::exact(format!("{label}: TIME_WAIT left (sock_diag)"), n, left));
            run.expected_deaths = BTreeMap::from([("reset".to_owned(), 0)]);
        }
        Later::Same => {
            checks.push(Check::exact(paws_check, 0, paws));
            checks.push(Check::exact(format!("{label}: connects made within {WATCH:?}"), n, connected_n));
            checks.push(Check::exact(format!("{label}: TIME_WAIT left (sock_diag)"), 0, left));
            run.expected_deaths = BTreeMap::from([("incoming".to_owned(), n)]);
        }
    }
    checks.push(Check::exact(format!("{label}: connects refused"), 0, refused));
    if sandbox.has_counter(PAWS_TIME_WAIT)? {
        // 6.16+: each rejection is a drop with its own reason.
        run.expected_drops = Some(("TCP_RFC7323_TW_PAWS".to_owned(), paws));
    }
    run.later_clients = Some(LaterClients {
        first_tcp_timestamps: roles.0.to_owned(),
        later_tcp_timestamps: roles.1.to_owned(),
        set_aside,
        connected: connected_n,
        after_a_retransmission: slow,
        still_waiting: waiting,
        paws_rejections: paws,
        connect_us: Quantiles::of(&mut delays_us),
    });
    run.time_wait_at_end = Some(left);
    run.time_wait_refused = set_aside;
    run.counted_at_ns = monotonic_ns();
    run.steps.push(first.step("first clients", 0, n));
    Ok(run)
}

fn timestamp_clock(fd: &OwnedFd) -> anyhow::Result<u32> {
    let mut value: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the u32.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, TCP_TIMESTAMP, (&mut value as *mut u32).cast(), &mut len)
    };
    anyhow::ensure!(rc == 0, "getsockopt(TCP_TIMESTAMP): {}", std::io::Error::last_os_error());
    Ok(value)
}

fn paws_rejections(sandbox: &Sandbox) -> anyhow::Result<u64> {
    Ok((sandbox.counter(PAWS_ESTABLISHED)? + sandbox.counter(PAWS_TIME_WAIT)?) as u64)
}

/// A non-blocking connect's outcome: `None` while it is under way, else its SO_ERROR.
fn connect_outcome(fd: &OwnedFd) -> Option<i32> {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
        return None;
    }
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the int.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    Some(error)
}

/// One connection from the accept queue, if any is there now.
fn accept_now(server: &Server) -> anyhow::Result<Option<OwnedFd>> {
    let mut poll = libc::pollfd { fd: server.listener_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
        return Ok(None);
    }
    Ok(Some(server.accept()?))
}
