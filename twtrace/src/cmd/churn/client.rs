//! The client side of churn: threads that connect on schedule, each attempt bounded by
//! slices and counted once.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use super::{
    Closer,
    addresses::Targets,
    slices::{SLICE, read_until_eof, sleep_until},
    summary::{Tally, UNFINISHED},
};
use crate::net::{bind_source_no_port, errno_name, set_timeout, sockaddr};

/// One client thread: connect on schedule, to and from where `targets` says, until
/// `give_up()`; its own counts.
pub(super) fn client(
    targets: &Targets,
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
        let (destination, source) = targets.next();
        match connect(destination, source, give_up) {
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
/// connect() returns, so the usual cost is the two setsockopt() calls. With a `source` the
/// socket is bound to it first, the port left to connect().
fn connect(
    server: SocketAddr,
    source: Option<IpAddr>,
    give_up: &dyn Fn() -> bool,
) -> Result<TcpStream, ConnectFailure> {
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
    if let Some(source) = source {
        bind_source_no_port(&fd, source).map_err(ConnectFailure::Errno)?;
    }
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn refused_connects_are_counted_by_errno() {
        // A port nobody listens on: bind one, note it, close it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = connect(port, None, &|| false).expect_err("nothing listens");
        assert_eq!(err.kind(), "ECONNREFUSED");
    }

    #[test]
    fn a_source_is_bound_before_connect_with_the_port_left_to_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.128.0.7".parse().unwrap();
        let stream = connect(listener.local_addr().unwrap(), Some(source), &|| false).expect("connects");
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), source);
        assert_ne!(local.port(), 0);
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, local);
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
            match connect(server, None, &|| Instant::now() >= end) {
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
}
