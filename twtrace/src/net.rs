//! Socket plumbing shared by `churn` and the scenarios: raw addresses for libc calls, socket
//! timeouts, listeners with a deep backlog, and errno names of socket calls. Policy (which
//! address, how long a slice) stays with the callers.

use std::{
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, FromRawFd as _},
    time::Duration,
};

/// `addr` as the `sockaddr` libc's bind() and connect() take, and its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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

/// Sets a socket timeout (`SO_SNDTIMEO` or `SO_RCVTIMEO`).
pub fn set_timeout(fd: &impl AsRawFd, option: libc::c_int, timeout: Duration) -> std::io::Result<()> {
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

/// An `int` socket option.
fn set_int_option(
    fd: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: valid descriptor and an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The accept queue's length: the default of std's (128) drops SYNs under churn.
const BACKLOG: libc::c_int = 4096;

/// A listener on `addr` with a deep backlog. `accept_timeout` bounds accept() (EAGAIN after it
/// passes without a connection), and accepted sockets inherit it (the kernel clones the
/// listener's sock; seen on 6.18): so does their read.
pub fn deep_backlog_listener(addr: SocketAddr, accept_timeout: Duration) -> anyhow::Result<TcpListener> {
    listener(addr, None, accept_timeout)
}

/// The loopback device, in every network namespace.
pub const LOOPBACK_DEVICE: &str = "lo";

/// A listener on every IPv4 address (`0.0.0.0:port`) confined to the loopback device
/// (`SO_BINDTODEVICE "lo"`): it answers all of 127.0.0.0/8 and nothing else, so it is no more
/// exposed than one on 127.0.0.1. (Measured on 6.18: a connection from another namespace over
/// a veth, and one from inside to the namespace's own veth address, were both refused.) Since
/// Linux 5.7 binding a socket not yet bound to a device needs no privilege (seen as uid 65534
/// without capabilities on 6.18); where it fails (older kernels without CAP_NET_RAW) this
/// fails too, rather than listen on the wildcard address unconfined. Deep backlog and
/// `accept_timeout` as [`deep_backlog_listener`].
pub fn loopback_wildcard_listener(port: u16, accept_timeout: Duration) -> anyhow::Result<TcpListener> {
    listener(SocketAddr::from(([0, 0, 0, 0], port)), Some(LOOPBACK_DEVICE), accept_timeout)
}

fn listener(addr: SocketAddr, device: Option<&str>, accept_timeout: Duration) -> anyhow::Result<TcpListener> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a fresh descriptor, owned at once by the listener (closed on every error path).
    let listener = unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        TcpListener::from_raw_fd(fd)
    };
    // As before this module existed: a failure here only costs the reuse of a port in TIME_WAIT.
    let _ = set_int_option(&listener, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    if let Some(device) = device {
        // Before bind(), so that no moment exists when it listens unconfined.
        // SAFETY: valid descriptor; the name and its length.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                device.as_ptr().cast(),
                device.len() as libc::socklen_t,
            )
        };
        anyhow::ensure!(
            rc == 0,
            "cannot confine the listener on {addr} to device {device} (SO_BINDTODEVICE: {}); refusing to listen \
             on every address unconfined (before Linux 5.7 this needs CAP_NET_RAW)",
            std::io::Error::last_os_error()
        );
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: valid descriptor and address.
    let rc = unsafe { libc::bind(listener.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    anyhow::ensure!(rc == 0, "bind {addr}: {}", std::io::Error::last_os_error());
    // SAFETY: valid, bound descriptor.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
    anyhow::ensure!(rc == 0, "listen: {}", std::io::Error::last_os_error());
    set_timeout(&listener, libc::SO_RCVTIMEO, accept_timeout).map_err(|e| anyhow::anyhow!("SO_RCVTIMEO: {e}"))?;
    Ok(listener)
}

/// Binds a fresh socket to the source address `ip` with port 0, leaving the port to connect()
/// (`IP_BIND_ADDRESS_NO_PORT`, Linux 4.2): connect() then picks a port unique for the whole
/// 4-tuple, as it does for an unbound socket, instead of bind() reserving a port of its own.
/// Returns the errno of the call that failed.
pub fn bind_source_no_port(fd: &impl AsRawFd, ip: std::net::IpAddr) -> Result<(), i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
    set_int_option(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1).map_err(errno)?;
    let (storage, len) = sockaddr(SocketAddr::new(ip, 0));
    // SAFETY: valid descriptor and address.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 { Ok(()) } else { Err(errno(std::io::Error::last_os_error())) }
}

/// The symbolic name of a socket call's errno, as `errno(3)` spells it; `errno N` otherwise.
/// (`event::errno_name` names the errno values the kernel side reports, in its own spelling.)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(libc::ETIMEDOUT), "ETIMEDOUT");
        assert_eq!(errno_name(4242), "errno 4242");
    }
}
