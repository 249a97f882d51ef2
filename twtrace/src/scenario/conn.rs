//! The connections scenarios make, one at a time on one thread, so each step knows exactly
//! which sockets exist: a listener, clients that keep their port (ESTABLISHED, or TIME_WAIT
//! after closing first), and probes that measure connect() and leave nothing behind.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::report::{Quantiles, Step};
use crate::{event::tcp_state, net::errno_name, time::monotonic_ns};

/// `IP_LOCAL_PORT_RANGE` (include/uapi/linux/in.h, Linux 6.3): a per-socket narrowing of
/// `ip_local_port_range`, as `lo | hi << 16`.
pub const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// A connect() as the caller saw it.
pub struct Attempt {
    /// The socket, or the errno connect() (or a setsockopt before it) failed with.
    pub result: Result<OwnedFd, i32>,
    /// Time spent in connect(2) itself (on loopback the handshake completes inside it).
    pub took: Duration,
}

/// The server all clients connect to, on loopback in the scenario's namespace.
pub struct Server {
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// The server's port: fixed, below every ephemeral range, so the listener never takes a port
/// of the range being measured (bind() to port 0 would pick one from it). The namespace is
/// the scenario's own, so nothing else listens there.
pub const SERVER_PORT: u16 = 8080;

/// The listener's receive timeout, which accepted sockets inherit: bounds an accept() with
/// nothing queued and a read whose peer never closes (churn's slice, the listener's from the
/// start).
const ACCEPT_TIMEOUT: Duration = Duration::from_millis(100);

impl Server {
    /// On 127.0.0.1.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    pub fn start_on(ip: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        let addr = std::net::SocketAddr::from((ip, SERVER_PORT));
        let listener = crate::net::deep_backlog_listener(addr, ACCEPT_TIMEOUT)?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// A blocking connect() from a new socket, timed; `range` sets IP_LOCAL_PORT_RANGE first.
    pub fn connect(&self, range: Option<(u16, u16)>) -> Attempt {
        connect(self.addr, range)
    }

    /// The listening socket, to poll.
    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }

    /// The server side of the connection just made (it is in the accept queue already: on
    /// loopback connect() returns after the handshake).
    pub fn accept(&self) -> anyhow::Result<OwnedFd> {
        let (stream, _) = self.listener.accept()?;
        Ok(OwnedFd::from(stream))
    }
}

/// Connects and keeps both ends: the client's port stays taken by an ESTABLISHED socket.
pub fn hold_established(server: &Server, range: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd), i32> {
    let client = server.connect(range).result?;
    let accepted = server.accept().map_err(|_| libc::EIO)?;
    Ok((client, accepted))
}

/// Connects, then the client closes first and the server after it: the client's port stays
/// taken by a TIME_WAIT socket (for 60 s, unless the namespace's reuse policy lets connect()
/// take it back). The closes finish in softirq on loopback; callers settle before counting.
pub fn hold_time_wait(server: &Server, range: Option<(u16, u16)>) -> Probe {
    let Attempt { result, took } = server.connect(range);
    let client = match result {
        Ok(client) => client,
        Err(e) => return Probe { errno: Some(e), took },
    };
    let Ok(accepted) = server.accept() else { return Probe { errno: Some(libc::EIO), took } };
    drop(client);
    // The server reads the client's FIN (EOF) before closing, as a real one would.
    let mut buf = [0u8; 1];
    // SAFETY: valid descriptor and buffer.
    unsafe { libc::read(accepted.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
    drop(accepted);
    Probe { errno: None, took }
}

/// Closes with an RST (SO_LINGER 0): the port is free at once and no TIME_WAIT is left, so a
/// probe does not change what it measures.
pub fn abort(fd: OwnedFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid descriptor and option of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(fd);
}

/// What a probe saw: connect()'s errno (`None`: connected) and its time.
pub struct Probe {
    pub errno: Option<i32>,
    pub took: Duration,
}

/// A probe: connect() timed, then both ends dropped, the client's with an RST.
pub fn probe(server: &Server, range: Option<(u16, u16)>) -> Probe {
    let Attempt { result, took } = server.connect(range);
    match result {
        Ok(client) => {
            let accepted = server.accept();
            abort(client);
            drop(accepted);
            Probe { errno: None, took }
        }
        Err(e) => Probe { errno: Some(e), took },
    }
}

fn connect(dest: SocketAddr, range: Option<(u16, u16)>) -> Attempt {
    let failed = |e: i32| Attempt { result: Err(e), took: Duration::ZERO };
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    let family = if dest.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a fresh descriptor, owned at once by `fd`.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return failed(errno());
    }
    // SAFETY: we own the fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some((lo, hi)) = range {
        let value: u32 = u32::from(lo) | (u32::from(hi) << 16);
        // SAFETY: valid descriptor and option of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_LOCAL_PORT_RANGE,
                (&value as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return failed(errno());
        }
    }
    let (storage, len) = crate::net::sockaddr(dest);
    let started = Instant::now();
    // SAFETY: valid descriptor and address.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    let took = started.elapsed();
    Attempt { result: if rc == 0 { Ok(fd) } else { Err(errno()) }, took }
}

/// Whether this kernel has IP_LOCAL_PORT_RANGE (6.3+): ENOPROTOOPT before.
pub fn has_port_range_option() -> bool {
    // SAFETY: a fresh descriptor, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return false;
    }
    // SAFETY: we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut value: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: valid descriptor and out-pointers.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_LOCAL_PORT_RANGE,
            (&mut value as *mut u32).cast(),
            &mut len,
        ) == 0
    }
}

/// The connect() calls of one phase of a run, timed, and turned into its [`Step`].
#[derive(Default)]
pub struct Phase {
    start_ns: u64,
    end_ns: u64,
    took_us: Vec<f64>,
    failures: BTreeMap<String, u64>,
}

impl Phase {
    /// One connection closed by the client first (a TIME_WAIT socket if it connected).
    pub fn attempt(&mut self, server: &Server) -> Option<i32> {
        self.time(|| hold_time_wait(server, None)).errno
    }

    /// One connect() to `server`, timed like the others; the socket is the caller's to keep.
    pub fn connect(&mut self, server: &Server) -> Result<OwnedFd, i32> {
        let mut kept = None;
        let probe = self.time(|| {
            let Attempt { result, took } = server.connect(None);
            match result {
                Ok(fd) => {
                    kept = Some(fd);
                    Probe { errno: None, took }
                }
                Err(e) => Probe { errno: Some(e), took },
            }
        });
        kept.ok_or(probe.errno.unwrap_or(libc::EIO))
    }

    /// Runs `connect`, one connect() made some way, and keeps its time and outcome.
    pub fn time(&mut self, connect: impl FnOnce() -> Probe) -> Probe {
        if self.took_us.is_empty() {
            self.start_ns = monotonic_ns();
        }
        let probe = connect();
        self.end_ns = monotonic_ns();
        self.took_us.push(probe.took.as_secs_f64() * 1e6);
        if let Some(e) = probe.errno {
            *self.failures.entry(errno_name(e)).or_insert(0) += 1;
        }
        probe
    }

    /// CLOCK_MONOTONIC ns of the first connect() and of the end of the last.
    pub fn window(&self) -> (u64, u64) {
        (self.start_ns, self.end_ns)
    }

    /// connect() calls made so far.
    pub fn attempts(&self) -> u64 {
        self.took_us.len() as u64
    }

    pub fn connected(&self) -> u64 {
        self.took_us.len() as u64 - self.failures.values().sum::<u64>()
    }

    pub fn step(mut self, label: &str, held: u64, size: u64) -> Step {
        Step {
            label: label.into(),
            held,
            held_kernel: held,
            utilisation: held as f64 / size as f64,
            attempts: self.took_us.len() as u64,
            connected: self.connected(),
            connect_us: Quantiles::of(&mut self.took_us),
            failures: self.failures,
            window_ns: (self.start_ns, self.end_ns),
            twtrace: None,
        }
    }
}

/// How long sockets may take to reach the state a step waits for (closes finish in softirq;
/// an emulated guest is slow).
pub(super) const SETTLE: Duration = Duration::from_secs(10);

/// Reads until EOF (the peer's FIN).
pub(super) fn read_eof(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    // SAFETY: valid descriptor and buffer.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// The server side's TIME_WAIT sockets (local address the server's), once `expected`.
pub(super) fn server_time_wait(server: SocketAddr, expected: u64) -> anyhow::Result<u64> {
    let until = Instant::now() + SETTLE;
    loop {
        let sockets = crate::kernel::sockdiag::tcp_sockets().context("reading sockets over sock_diag")?;
        let count = sockets.iter().filter(|s| s.flow.local == server && s.state == tcp_state::TIME_WAIT).count() as u64;
        if count == expected || Instant::now() >= until {
            return Ok(count);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn local_addr(fd: &OwnedFd) -> anyhow::Result<SocketAddr> {
    // SAFETY: borrowed for the call only; ManuallyDrop keeps the descriptor open.
    let listener = std::mem::ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(fd.as_raw_fd()) });
    Ok(listener.local_addr()?)
}

/// A socket bound to `local` (SO_REUSEADDR) and connected to `dest`, blocking.
pub(super) fn connect_from(local: SocketAddr, dest: SocketAddr) -> Result<OwnedFd, i32> {
    let fd = bound_socket(local, false)?;
    let (storage, len) = crate::net::sockaddr(dest);
    // SAFETY: valid descriptor and address.
    if unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(last_errno());
    }
    Ok(fd)
}

/// The same, non-blocking: returns once the SYN is sent.
pub(super) fn connect_from_nonblocking(local: SocketAddr, dest: SocketAddr) -> anyhow::Result<OwnedFd> {
    let fd = bound_socket(local, true).map_err(|e| anyhow::anyhow!("bind {local}: {}", errno_name(e)))?;
    let (storage, len) = crate::net::sockaddr(dest);
    // SAFETY: valid descriptor and address.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    let errno = last_errno();
    anyhow::ensure!(rc == 0 || errno == libc::EINPROGRESS, "connect to {dest}: {}", errno_name(errno));
    Ok(fd)
}

pub(super) fn bound_socket(local: SocketAddr, nonblocking: bool) -> Result<OwnedFd, i32> {
    let family = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: a fresh descriptor, owned at once.
    let raw = unsafe { libc::socket(family, flags, 0) };
    if raw < 0 {
        return Err(last_errno());
    }
    // SAFETY: we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let (storage, len) = crate::net::sockaddr(local);
    // SAFETY: valid descriptor, option and address.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            return Err(last_errno());
        }
    }
    Ok(fd)
}

pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// `tcpi_state`, the first byte of `struct tcp_info`.
pub(super) fn tcp_state_of(fd: &OwnedFd) -> u8 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the buffer.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
    };
    if rc == 0 { info[0] } else { 0 }
}
