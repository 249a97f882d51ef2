//! `twtrace churn`: a connection-churn load generator on loopback, to reproduce TIME_WAIT and
//! port-space pressure on purpose (a client doing 710 non-keep-alive requests/s to one server)
//! and to measure what tracing costs (`cargo xtask bench`). It needs no privilege.
//!
//! Each connection is connect(), accept(), then a close by the side that closes first (which
//! gets the TIME_WAIT socket) after the other saw nothing but its FIN, then the other close.
//!
//! Churn ends at its duration whatever connect() returns, and at the first SIGINT or SIGTERM
//! (a second one kills it). Every blocking call is bounded by a short slice (socket timeouts
//! of [`SLICE`]) after which the thread looks at the clock and the stop request again: a
//! connect() whose SYN is dropped (full accept queue, a firewall) retransmits for minutes, an
//! acceptor waits in accept() for ever, and once the client's port range is exhausted nothing
//! can be connected to wake it. Each attempt is counted exactly once: a connection, or one
//! failure by errno (`EADDRNOTAVAIL` when the range is exhausted), or `unfinished` when churn
//! ended while the handshake was still under way; the summary says so in text and `--json`.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

/// Which side closes first, and so keeps the TIME_WAIT socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Closer {
    /// Server-side TIME_WAIT (a web server closing after each response).
    Server,
    /// Client-side TIME_WAIT: holds the client's ephemeral ports toward the server.
    Client,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ChurnArgs {
    /// Client threads (and as many accepting server threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Connections per second over all threads (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long (seconds, or with s, m, h). SIGINT or SIGTERM ends it earlier, with its summary.
    #[arg(long, default_value = "10s", value_parser = crate::cmd::parse_duration)]
    pub duration: Duration,
    /// Which side closes first.
    #[arg(long, value_enum, default_value_t = Closer::Server)]
    pub closer: Closer,
    /// Server address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The summary as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a churn run did. Always `attempts == connections + errors` and `errors` is the sum
/// of `failures`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnResult {
    /// connect() calls made.
    pub attempts: u64,
    /// Successful connects.
    pub connections: u64,
    /// Failed attempts (the sum of `failures`).
    pub errors: u64,
    /// Failed attempts by errno name (`EADDRNOTAVAIL` when the port space is exhausted,
    /// `ECONNREFUSED`, ...; `errno N` for one without a name here), plus [`UNFINISHED`].
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message, as the OS words it.
    pub first_error: Option<String>,
    /// From the first attempt to the last thread's end.
    pub seconds: f64,
    /// Successful connects per second.
    pub per_second: f64,
    pub closer: Closer,
    pub threads: usize,
    /// `SIGINT` or `SIGTERM` when a signal ended the run before its duration.
    pub stopped_by: Option<String>,
}

/// The failure kind of a connect() that churn gave up on at its end, handshake unfinished (a
/// SYN that got no answer within the run). Not an errno: the kernel never said it failed.
pub const UNFINISHED: &str = "unfinished";

/// How long any blocking call may run before its thread checks the clock and the stop request
/// again: the bound on how late churn ends.
pub const SLICE: Duration = Duration::from_millis(100);

/// Set by the SIGINT/SIGTERM handler of [`run`] to the signal's number.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap, signal(2), raise(3).
    if SIGNALLED.swap(signal, Ordering::SeqCst) != 0 {
        // A second signal: the user insists. Die by it as if churn had not caught it.
        // SAFETY: both are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// SIGINT and SIGTERM handlers that request a stop, restored to what they were on drop.
struct StopOnSignals {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl StopOnSignals {
    fn install() -> std::io::Result<Self> {
        SIGNALLED.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: an all-zero sigaction is valid; the handler only touches an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                // SA_RESTART: calls without a timeout resume; socket calls with one (all of
                // churn's blocking calls) return EINTR instead, handled as a slice's end.
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                previous.push((signal, old));
            }
        }
        Ok(Self { previous })
    }

    fn received(&self) -> Option<libc::c_int> {
        Some(SIGNALLED.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

impl Drop for StopOnSignals {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the action saved by `install`.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// `twtrace churn`: runs until the duration or SIGINT/SIGTERM, then prints the summary.
pub fn run(args: &ChurnArgs) -> anyhow::Result<()> {
    let signals = StopOnSignals::install()?;
    let mut result = churn_until(args, Arc::new(|| SIGNALLED.load(Ordering::Relaxed) != 0))?;
    result.stopped_by = signals.received().map(signal_name);
    // Keep the handlers until the summary is out: a SIGTERM now must not lose it.
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", summary_text(&result));
    }
    drop(signals);
    Ok(())
}

/// The text summary: connections of attempts, rate, failures by errno (most first).
pub fn summary_text(r: &ChurnResult) -> String {
    let mut failures: Vec<(&String, &u64)> = r.failures.iter().collect();
    failures.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let failures = failures.iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "churn: {} of {} connects succeeded in {:.1} s = {:.0}/s ({} closes first, {} threads), {} failed",
        r.connections,
        r.attempts,
        r.seconds,
        r.per_second,
        if r.closer == Closer::Server { "server" } else { "client" },
        r.threads,
        r.errors,
    );
    if r.errors > 0 {
        text += &format!(": {failures}");
    }
    if let Some(first) = &r.first_error {
        text += &format!(" (first: {first})");
    }
    if let Some(signal) = &r.stopped_by {
        text += &format!("; stopped by {signal}");
    }
    text
}

/// Churn for the whole duration (no signal handling: for callers that own the process).
pub fn churn(args: &ChurnArgs) -> anyhow::Result<ChurnResult> {
    churn_until(args, Arc::new(|| false))
}

/// Churn until the duration passes or `stop()` returns true (checked at least every
/// [`SLICE`] by every thread).
pub fn churn_until(args: &ChurnArgs, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> anyhow::Result<ChurnResult> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a number of connections per second");
    let listener = deep_backlog_listener(args.listen)?;
    let server = listener.local_addr()?;
    let listener = Arc::new(listener);
    // The acceptors' own stop: set once every client has finished.
    let clients_done = Arc::new(AtomicBool::new(false));

    let mut servers = Vec::new();
    for _ in 0..args.threads {
        let (listener, done, closer) = (listener.clone(), clients_done.clone(), args.closer);
        servers.push(std::thread::spawn(move || serve(&listener, &done, closer)));
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let per_thread_interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.threads as f64 / args.rate));
    let mut clients = Vec::new();
    for i in 0..args.threads {
        let (stop, closer) = (stop.clone(), args.closer);
        // Spread the threads' schedules over one interval.
        let first = started + per_thread_interval.map_or(Duration::ZERO, |d| d * i as u32 / args.threads as u32);
        let give_up = move || Instant::now() >= deadline || stop();
        clients.push(std::thread::spawn(move || client(server, closer, first, per_thread_interval, &give_up)));
    }
    let mut tally = Tally::default();
    for c in clients {
        // A panicking client thread is a bug: say so rather than report partial counts.
        tally.merge(c.join().map_err(|_| anyhow::anyhow!("a churn client thread panicked"))?);
    }
    let seconds = started.elapsed().as_secs_f64();
    clients_done.store(true, Ordering::Relaxed);
    // Wakes the acceptors at once: shutdown() of a listening socket stops it and makes
    // blocked accept() calls return EINVAL (Linux). Without it they would still see the
    // flag within a SLICE (the listener's receive timeout bounds accept()). Connecting to
    // the listener to wake them, as churn once did, needs a free port: an exhausted range
    // has none, and churn never ended.
    // SAFETY: plain syscall on the listener's descriptor, still open.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    for s in servers {
        let _ = s.join();
    }
    Ok(tally.result(seconds, args.closer, args.threads))
}

/// One client thread: connect on schedule until `give_up()`; its own counts.
fn client(
    server: SocketAddr,
    closer: Closer,
    first: Instant,
    interval: Option<Duration>,
    give_up: &dyn Fn() -> bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = first;
    loop {
        if interval.is_some() && !sleep_until(next, give_up) {
            break;
        }
        if give_up() {
            break;
        }
        if let Some(interval) = interval {
            next += interval;
        }
        match connect(server, give_up) {
            Ok(mut stream) => {
                tally.connected();
                if closer == Closer::Server {
                    // Wait for the server's FIN (EOF) so that the server closes first.
                    read_until_eof(&mut stream, give_up);
                }
                drop(stream);
            }
            Err(failure) => {
                tally.failed(failure.kind(), || failure.message());
                if interval.is_none() {
                    // Do not spin on an exhausted port range.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    tally
}

/// One acceptor: accept and close (after the client's FIN when the client closes first)
/// until `done`.
fn serve(listener: &TcpListener, done: &AtomicBool, closer: Closer) {
    while !done.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                if closer == Closer::Client {
                    // Bounded: the accepted socket inherits the listener's receive timeout.
                    read_until_eof(&mut conn, &|| done.load(Ordering::Relaxed));
                }
                drop(conn);
            }
            // A SLICE without a connection, or a signal.
            Err(e) if is_slice_end(&e) => {}
            // EMFILE and the like: keep serving, without spinning; EINVAL after shutdown().
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Sleeps until `at` in slices; false when `give_up()` said to stop first.
fn sleep_until(at: Instant, give_up: &dyn Fn() -> bool) -> bool {
    loop {
        if give_up() {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(SLICE));
    }
}

/// Reads until EOF, an error, or `give_up()` (checked after each receive timeout).
fn read_until_eof(stream: &mut TcpStream, give_up: &dyn Fn() -> bool) {
    let mut buf = [0u8; 1];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_slice_end(&e) => {
                if give_up() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// A socket call that returned because its timeout slice passed (EAGAIN) or a signal came.
fn is_slice_end(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
}

/// Why a connect() attempt did not give a connection.
#[derive(Debug)]
enum ConnectFailure {
    /// The kernel said no: socket() or connect() (or the handshake's SO_ERROR) with this errno.
    Errno(i32),
    /// Churn ended while the handshake was still under way.
    Unfinished,
}

impl ConnectFailure {
    fn kind(&self) -> String {
        match self {
            Self::Errno(errno) => errno_name(*errno),
            Self::Unfinished => UNFINISHED.into(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Errno(errno) => std::io::Error::from_raw_os_error(*errno).to_string(),
            Self::Unfinished => "connect() still under way when churn ended".into(),
        }
    }
}

/// A blocking connect() bounded by SO_SNDTIMEO slices: Linux's connect() returns EINPROGRESS
/// when the send timeout passes (EINTR on a signal) while the handshake goes on; then poll()
/// for it in slices until it ends or `give_up()`. On loopback the handshake is done before
/// connect() returns, so the usual cost is the two setsockopt() calls.
fn connect(server: SocketAddr, give_up: &dyn Fn() -> bool) -> Result<TcpStream, ConnectFailure> {
    let errno = || ConnectFailure::Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    let family = if server.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a fresh descriptor, owned at once by `fd`.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(errno());
    }
    // SAFETY: we own the fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The receive timeout bounds the client's wait for the server's FIN as well.
    set_timeout(&fd, libc::SO_SNDTIMEO, SLICE).map_err(|_| errno())?;
    set_timeout(&fd, libc::SO_RCVTIMEO, SLICE).map_err(|_| errno())?;
    let (storage, len) = sockaddr(server);
    // SAFETY: valid descriptor and address.
    if unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::EINPROGRESS && e != libc::EINTR {
            return Err(ConnectFailure::Errno(e));
        }
        loop {
            if give_up() {
                return Err(ConnectFailure::Unfinished);
            }
            let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, SLICE.as_millis() as libc::c_int) };
            if n > 0 {
                break;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(errno());
            }
        }
        let mut so_error: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid descriptor and out-pointers of the right size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut so_error as *mut libc::c_int).cast(),
                &mut size,
            )
        };
        if rc != 0 {
            return Err(errno());
        }
        if so_error != 0 {
            return Err(ConnectFailure::Errno(so_error));
        }
    }
    Ok(TcpStream::from(fd))
}

fn set_timeout(fd: &impl std::os::fd::AsRawFd, option: libc::c_int, timeout: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid descriptor and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The symbolic name of a connect() errno, as `errno(3)` spells it; `errno N` otherwise.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EINVAL => "EINVAL",
        other => return format!("errno {other}"),
    };
    name.into()
}

/// Counts of one client thread, merged at the end (no shared counters on the hot path).
#[derive(Clone, Debug, Default, PartialEq)]
struct Tally {
    connections: u64,
    failures: BTreeMap<String, u64>,
    /// When the first failure happened, and its message: the earliest over threads wins.
    first_error: Option<(Instant, String)>,
}

impl Tally {
    fn connected(&mut self) {
        self.connections += 1;
    }

    fn failed(&mut self, kind: String, message: impl FnOnce() -> String) {
        *self.failures.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some((Instant::now(), message()));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.connections += other.connections;
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        self.first_error = match (self.first_error.take(), other.first_error) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    fn result(self, seconds: f64, closer: Closer, threads: usize) -> ChurnResult {
        let errors = self.failures.values().sum::<u64>();
        ChurnResult {
            attempts: self.connections + errors,
            connections: self.connections,
            errors,
            failures: self.failures,
            first_error: self.first_error.map(|(_, message)| message),
            seconds,
            per_second: if seconds > 0.0 { self.connections as f64 / seconds } else { 0.0 },
            closer,
            threads,
            stopped_by: None,
        }
    }
}

/// A listener with a deep backlog: the default of std's (128) drops SYNs under churn.
pub(crate) fn deep_backlog_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd as _;
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let (storage, len) = sockaddr(addr);
        anyhow::ensure!(
            libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) == 0,
            "bind {addr}: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(libc::listen(fd, 4096) == 0, "listen: {}", std::io::Error::last_os_error());
        // Bounds accept() (EAGAIN after a SLICE without a connection), and accepted sockets
        // inherit it (the kernel clones the listener's sock; seen on 6.18): so does their read.
        set_timeout(&listener, libc::SO_RCVTIMEO, SLICE).map_err(|e| anyhow::anyhow!("SO_RCVTIMEO: {e}"))?;
        Ok(listener)
    }
}

pub(crate) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the variants below fit inside it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rate: f64, duration: Duration, closer: Closer) -> ChurnArgs {
        ChurnArgs { threads: 2, rate, duration, closer, listen: "127.0.0.1:0".parse().unwrap(), json: true }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(libc::ETIMEDOUT), "ETIMEDOUT");
        assert_eq!(errno_name(4242), "errno 4242");
    }

    #[test]
    fn tallies_merge_into_consistent_counts_and_the_earliest_first_error() {
        let mut a = Tally::default();
        a.connected();
        a.connected();
        a.failed("EADDRNOTAVAIL".into(), || "first".into());
        let mut b = Tally::default();
        b.failed("EADDRNOTAVAIL".into(), || "second".into());
        b.failed(UNFINISHED.into(), || "not kept".into());
        b.connected();
        // `b`'s first failure came later: `a`'s stays first, whichever merges into which.
        let mut merged = b.clone();
        merged.merge(a.clone());
        let mut other = a;
        other.merge(b);
        assert_eq!(merged, other);
        let r = merged.result(2.0, Closer::Client, 2);
        assert_eq!((r.attempts, r.connections, r.errors), (6, 3, 3));
        assert_eq!(r.failures, BTreeMap::from([("EADDRNOTAVAIL".into(), 2), (UNFINISHED.into(), 1)]));
        assert_eq!(r.first_error.as_deref(), Some("first"));
        assert_eq!(r.per_second, 1.5);
    }

    #[test]
    fn text_summary_names_failures_most_first_and_the_signal() {
        let r = ChurnResult {
            attempts: 410,
            connections: 100,
            errors: 310,
            failures: BTreeMap::from([("EADDRNOTAVAIL".into(), 300), ("ECONNREFUSED".into(), 10)]),
            first_error: Some("Cannot assign requested address (os error 99)".into()),
            seconds: 4.0,
            per_second: 25.0,
            closer: Closer::Client,
            threads: 2,
            stopped_by: Some("SIGTERM".into()),
        };
        assert_eq!(
            summary_text(&r),
            "churn: 100 of 410 connects succeeded in 4.0 s = 25/s (client closes first, 2 threads), 310 failed: \
             EADDRNOTAVAIL 300, ECONNREFUSED 10 (first: Cannot assign requested address (os error 99)); stopped by SIGTERM"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["failures"]["EADDRNOTAVAIL"], 300);
        assert_eq!(json["stopped_by"], "SIGTERM");
    }

    #[test]
    fn refused_connects_are_counted_by_errno() {
        // A port nobody listens on: bind one, note it, close it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = connect(port, &|| false).expect_err("nothing listens");
        assert_eq!(err.kind(), "ECONNREFUSED");
    }

    /// A SYN that no one answers (the listener's accept queue is full: backlog 0 holds one
    /// connection, further SYNs are dropped and retransmitted for minutes) must not hold a
    /// client past its end: it is given up as `unfinished` within a slice.
    #[test]
    fn an_unanswered_handshake_is_given_up_at_the_end() {
        use std::os::fd::FromRawFd as _;
        // SAFETY: a fresh socket owned at once by the listener.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            TcpListener::from_raw_fd(fd)
        };
        let (addr, len) = sockaddr("127.0.0.1:0".parse().unwrap());
        // SAFETY: valid descriptor and address.
        unsafe {
            assert_eq!(libc::bind(listener.as_raw_fd(), (&addr as *const libc::sockaddr_storage).cast(), len), 0);
            assert_eq!(libc::listen(listener.as_raw_fd(), 0), 0);
        }
        let server = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut outcome = None;
        for _ in 0..4 {
            let end = Instant::now() + Duration::from_millis(300);
            let started = Instant::now();
            match connect(server, &|| Instant::now() >= end) {
                Ok(stream) => held.push(stream),
                Err(e) => {
                    outcome = Some((e.kind(), started.elapsed()));
                    break;
                }
            }
        }
        let (kind, took) = outcome.expect("the accept queue fills within 4 connects");
        assert_eq!(kind, UNFINISHED);
        assert!(
            took < Duration::from_millis(300) + SLICE * 5,
            "given up at the end, not at the SYN's retries: {took:?}"
        );
    }

    #[test]
    fn ends_at_its_duration_with_every_attempt_counted() {
        for closer in [Closer::Server, Closer::Client] {
            let started = Instant::now();
            let r = churn(&args(200.0, Duration::from_millis(300), closer)).unwrap();
            let took = started.elapsed();
            assert!(r.connections > 0, "{r:?}");
            assert_eq!(r.attempts, r.connections + r.errors, "{r:?}");
            assert_eq!(r.errors, r.failures.values().sum::<u64>(), "{r:?}");
            // 200/s for 0.3 s: 60 on schedule, at most one more per thread.
            assert!(r.attempts <= 62, "paced by --rate: {r:?}");
            // Bounded by the duration and a few slices (the acceptors' last slice included).
            assert!(took < Duration::from_millis(300) + SLICE * 10, "{took:?}");
        }
    }

    #[test]
    fn a_stop_request_ends_it_early() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let r = churn_until(
            &args(100.0, Duration::from_secs(60), Closer::Client),
            Arc::new(move || stop.load(Ordering::Relaxed)),
        )
        .unwrap();
        stopper.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stopped within slices, not at 60 s: {:?}",
            started.elapsed()
        );
        assert_eq!(r.attempts, r.connections + r.errors);
        assert!(r.seconds < 3.0);
    }
}
