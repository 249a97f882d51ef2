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

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::Context as _;

use super::{
    conn::{self, Phase, SETTLE, Server},
    report::{Check, Run, ScenarioReport},
    sandbox::{self, Sandbox, SocketCount},
    search_cost::RANGE_START,
};
use crate::{event::tcp_state, net::errno_name, time::monotonic_ns};

const NETLINK_SOCK_DIAG: i32 = 4;
/// `SOCK_DESTROY` (include/uapi/linux/sock_diag.h, 4.5+): `ss -K`'s request.
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then `inet_diag_sockid`.
const INET_DIAG_REQ_V2_LEN: usize = 56;

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
    let has_diag = sock_diag_has_tcp()?;
    report.params.insert("sock_diag_tcp".into(), if has_diag { "yes" } else { "no (ENOENT)" }.into());

    // The control: an ESTABLISHED socket, which every kernel with CONFIG_INET_DIAG_DESTROY can
    // destroy. Both ends go with an RST, so it leaves no TIME_WAIT socket.
    let (client, accepted) = conn::hold_established(&server, None)
        .map_err(|e| anyhow::anyhow!("{label}: the control connection failed with {}", errno_name(e)))?;
    let control =
        destroy((conn::local_addr(&client)?, server.addr)).context("SOCK_DESTROY of the ESTABLISHED control")?;
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
    let flows: Vec<(SocketAddr, SocketAddr)> = crate::kernel::sockdiag::tcp_sockets()
        .context("listing the TIME_WAIT sockets")?
        .into_iter()
        .filter(|s| s.flow.remote == server.addr && s.state == tcp_state::TIME_WAIT)
        .map(|s| (s.flow.local, s.flow.remote))
        .collect();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for flow in &flows {
        let errno = destroy(*flow).with_context(|| format!("SOCK_DESTROY of {} -> {}", flow.0, flow.1))?;
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

/// One `SOCK_DESTROY` for the TCP socket with this 4-tuple in the calling thread's namespace:
/// the kernel's answer, 0 or a positive errno. Err only when netlink itself failed.
fn destroy((local, remote): (SocketAddr, SocketAddr)) -> anyhow::Result<i32> {
    // SAFETY: a plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    anyhow::ensure!(raw >= 0, "netlink socket: {}", std::io::Error::last_os_error());
    // SAFETY: we own the fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let request = destroy_request(local, remote)?;
    // SAFETY: buffer and fd valid; the kernel is a netlink socket's default destination.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    anyhow::ensure!(sent >= 0, "sending SOCK_DESTROY: {}", std::io::Error::last_os_error());
    let mut buf = [0u8; 4096];
    // SAFETY: buffer valid for its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    anyhow::ensure!(got >= 0, "reading SOCK_DESTROY's answer: {}", std::io::Error::last_os_error());
    parse_ack(&buf[..got as usize])
}

/// Whether sock_diag can dump IPv4 TCP sockets here: without a handler it answers the dump
/// with an `NLMSG_ERROR` of ENOENT at once; with one, with sockets or `NLMSG_DONE`.
fn sock_diag_has_tcp() -> anyhow::Result<bool> {
    // SAFETY: a plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    anyhow::ensure!(raw >= 0, "netlink socket: {}", std::io::Error::last_os_error());
    // SAFETY: we own the fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut request = destroy_request("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?)?;
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    // SAFETY: buffer and fd valid.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    anyhow::ensure!(sent >= 0, "sending a sock_diag dump: {}", std::io::Error::last_os_error());
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buffer valid for its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    anyhow::ensure!(got >= 0, "reading the dump: {}", std::io::Error::last_os_error());
    let first = &buf[..got as usize];
    let is_error = first.len() >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([first[4], first[5]]) == NLMSG_ERROR;
    Ok(!(is_error && parse_ack(first)? == libc::ENOENT))
}

/// `nlmsghdr` + `inet_diag_req_v2` naming one socket: its addresses as sock_diag lists them
/// (`src` the local end), ports in network order, any interface, and no cookie
/// (`INET_DIAG_NOCOOKIE`, both words all ones: `sock_diag_check_cookie()` then accepts any).
fn destroy_request(local: SocketAddr, remote: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => anyhow::bail!("mixed address families {local} -> {remote}"),
    };
    let words = |ip: IpAddr| -> [u8; 16] {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
        }
        out
    };
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    r.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    r.extend_from_slice(&1u32.to_ne_bytes()); // seq
    r.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    r.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    r.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: any
    r.extend_from_slice(&local.port().to_be_bytes());
    r.extend_from_slice(&remote.port().to_be_bytes());
    r.extend_from_slice(&words(local.ip()));
    r.extend_from_slice(&words(remote.ip()));
    r.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    r.extend_from_slice(&[0xff; 8]); // idiag_cookie: INET_DIAG_NOCOOKIE
    debug_assert_eq!(r.len(), len);
    Ok(r)
}

/// The `NLMSG_ERROR` that acknowledges a request: 0, or the errno it failed with.
fn parse_ack(data: &[u8]) -> anyhow::Result<i32> {
    anyhow::ensure!(data.len() >= NLMSG_HDRLEN + 4, "SOCK_DESTROY: a short answer ({} bytes)", data.len());
    let kind = u16::from_ne_bytes([data[4], data[5]]);
    anyhow::ensure!(kind == NLMSG_ERROR, "SOCK_DESTROY: answered with message type {kind}, not an acknowledgement");
    let error = i32::from_ne_bytes(data[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].try_into().expect("4 bytes"));
    Ok(-error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_socket_as_sock_diag_lists_it() {
        let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let r = destroy_request(local, remote).unwrap();
        assert_eq!(r.len(), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 21);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(&r[24..28], &[0x9c, 0x41, 0x1f, 0x90]); // 40001, 8080 big-endian
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[127, 0, 0, 1]);
        assert_eq!(&r[64..72], &[0xff; 8]);
        assert!(destroy_request(local, "[::1]:8080".parse().unwrap()).is_err());
    }

    #[test]
    fn an_acknowledgement_gives_the_errno() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[16..20].copy_from_slice(&(-libc::EOPNOTSUPP).to_ne_bytes());
        assert_eq!(parse_ack(&ack).unwrap(), libc::EOPNOTSUPP);
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(parse_ack(&ack).unwrap(), 0);
        assert!(parse_ack(&ack[..10]).is_err());
    }
}
