//! The TCP sockets that exist right now, from NETLINK_SOCK_DIAG (what `ss` reads), so views
//! are right from the first frame, not only for sockets born after start.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::{event::ExistingSocket, event::SocketFlow};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `SOCK_DESTROY` (include/uapi/linux/sock_diag.h, 4.5+): `ss -K`'s request.
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then `inet_diag_sockid`.
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `struct inet_diag_sockid`: ports, addresses, interface, cookie.
const INET_DIAG_SOCKID_LEN: usize = 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48 bytes), expires, rqueue,
/// wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;

/// Every TCP socket of the calling thread's namespace (IPv4 and IPv6), any state. Falls back
/// to /proc/net/tcp{,6} (as `ss` does) when sock_diag is missing: kernels that build
/// inet_diag as a module without it loaded answer ENOENT. `netns` is left 0: the caller knows
/// which namespace the thread is in.
pub fn tcp_sockets() -> std::io::Result<Vec<ExistingSocket>> {
    let mut sockets = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        if let Err(e) = dump(family, &mut sockets) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            log::info!("sock_diag unavailable ({e}); reading /proc/net/tcp instead");
            return proc_net_tcp();
        }
    }
    Ok(sockets)
}

/// /proc/thread-self/net/tcp and tcp6: the same sockets, as text.
fn proc_net_tcp() -> std::io::Result<Vec<ExistingSocket>> {
    let mut sockets = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        match std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            Ok(text) => sockets.extend(text.lines().skip(1).filter_map(|l| parse_proc_line(l, v6))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

/// `sl local rem st tx:rx tr:when retr uid timeout inode ...`: addresses are the kernel's
/// 32-bit words printed in host order; `when` is in USER_HZ (100/s) ticks.
fn parse_proc_line(line: &str, v6: bool) -> Option<ExistingSocket> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let endpoint = |s: &str| -> Option<SocketAddr> {
        let (addr, port) = s.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let mut bytes = Vec::with_capacity(16);
        for word in addr.as_bytes().chunks(8) {
            let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        let ip: IpAddr = if v6 {
            Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into()
        } else {
            Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into()
        };
        Some(SocketAddr::new(ip, port))
    };
    let flow = SocketFlow { local: endpoint(cols.get(1)?)?, remote: endpoint(cols.get(2)?)? };
    let state = u8::from_str_radix(cols.get(3)?, 16).ok()?;
    let when = cols.get(5)?.split_once(':').and_then(|(_, w)| u64::from_str_radix(w, 16).ok()).unwrap_or(0);
    Some(ExistingSocket { netns: 0, flow, state, expires_ms: when * 10 })
}

/// Whether sock_diag answers for TCP here: without its handler (Debian builds inet_diag and
/// tcp_diag as modules) every request, a dump or a destroy, is answered ENOENT.
pub fn has_tcp() -> std::io::Result<bool> {
    match dump(libc::AF_INET as u8, &mut Vec::new()) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One `SOCK_DESTROY` for the TCP socket with this 4-tuple in the calling thread's namespace
/// (what `ss -K` sends; the kernel's `tcp_abort()` does the rest): the kernel's answer, 0 or a
/// positive errno. Err only when netlink itself failed, or for mixed address families.
pub fn destroy(local: SocketAddr, remote: SocketAddr) -> std::io::Result<i32> {
    let fd = request_socket(&destroy_request(local, remote)?)?;
    let mut buf = [0u8; 4096];
    let got = recv(&fd, &mut buf)?;
    parse_ack(&buf[..got])
}

fn dump(family: u8, out: &mut Vec<ExistingSocket>) -> std::io::Result<()> {
    let fd =
        request_socket(&request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, family, &[0; INET_DIAG_SOCKID_LEN]))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(&fd, &mut buf)?;
        if parse_messages(&buf[..n], out)? {
            return Ok(());
        }
    }
}

/// A sock_diag socket with `request` sent to the kernel: the answers are read from it.
fn request_socket(request: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: buffer and fd valid; the kernel is the default destination of a netlink socket.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// One datagram of answers into `buf`: its length.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buffer valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `nlmsghdr` + `inet_diag_req_v2` of TCP sockets of `family` in every state, naming `sockid`
/// (all zeros: no filter).
fn request(kind: u16, flags: u16, family: u8, sockid: &[u8; INET_DIAG_SOCKID_LEN]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&kind.to_ne_bytes());
    r.extend_from_slice(&flags.to_ne_bytes());
    r.extend_from_slice(&1u32.to_ne_bytes()); // seq
    r.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    r.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    r.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    r.extend_from_slice(sockid);
    debug_assert_eq!(r.len(), len);
    r
}

/// A `SOCK_DESTROY` naming one socket: its addresses as sock_diag lists them (`src` the local
/// end), ports in network order, any interface, and no cookie (`INET_DIAG_NOCOOKIE`, both
/// words all ones: `sock_diag_check_cookie()` then accepts any).
fn destroy_request(local: SocketAddr, remote: SocketAddr) -> std::io::Result<Vec<u8>> {
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u8,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u8,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("mixed address families {local} -> {remote}"),
            ));
        }
    };
    let words = |ip: IpAddr| -> [u8; 16] {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
        }
        out
    };
    let mut sockid = [0u8; INET_DIAG_SOCKID_LEN];
    sockid[0..2].copy_from_slice(&local.port().to_be_bytes());
    sockid[2..4].copy_from_slice(&remote.port().to_be_bytes());
    sockid[4..20].copy_from_slice(&words(local.ip()));
    sockid[20..36].copy_from_slice(&words(remote.ip()));
    // idiag_if 0 (any), then idiag_cookie: INET_DIAG_NOCOOKIE.
    sockid[40..48].copy_from_slice(&[0xff; 8]);
    Ok(request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family, &sockid))
}

/// The `NLMSG_ERROR` that acknowledges a request: 0, or the errno it failed with.
fn parse_ack(data: &[u8]) -> std::io::Result<i32> {
    let bad = |what: String| Err(std::io::Error::other(format!("sock_diag: {what}")));
    if data.len() < NLMSG_HDRLEN + 4 {
        return bad(format!("a short answer ({} bytes)", data.len()));
    }
    let kind = u16::from_ne_bytes([data[4], data[5]]);
    if kind != NLMSG_ERROR {
        return bad(format!("answered with message type {kind}, not an acknowledgement"));
    }
    let error = i32::from_ne_bytes(data[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].try_into().expect("4 bytes"));
    Ok(-error)
}

/// Parses one datagram of netlink messages; `Ok(true)` at the end of the dump.
fn parse_messages(mut data: &[u8], out: &mut Vec<ExistingSocket>) -> std::io::Result<bool> {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(std::io::Error::other("sock_diag: malformed netlink message"));
        }
        let payload = &data[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = payload.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes"))).unwrap_or(0);
                if errno != 0 {
                    return Err(std::io::Error::from_raw_os_error(-errno));
                }
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(socket) = parse_inet_diag_msg(payload) {
                    out.push(socket);
                }
            }
            _ => {}
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(false)
}

fn parse_inet_diag_msg(m: &[u8]) -> Option<ExistingSocket> {
    if m.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let (family, state) = (m[0], m[1]);
    let sport = u16::from_be_bytes([m[4], m[5]]);
    let dport = u16::from_be_bytes([m[6], m[7]]);
    let src: [u8; 16] = m[8..24].try_into().ok()?;
    let dst: [u8; 16] = m[24..40].try_into().ok()?;
    let expires_ms = u64::from(u32::from_ne_bytes(m[52..56].try_into().ok()?));
    let ip = |a: [u8; 16]| -> Option<IpAddr> {
        match i32::from(family) {
            libc::AF_INET => Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()),
            libc::AF_INET6 => Some(Ipv6Addr::from(a).into()),
            _ => None,
        }
    };
    let flow = SocketFlow { local: SocketAddr::new(ip(src)?, sport), remote: SocketAddr::new(ip(dst)?, dport) };
    Some(ExistingSocket { netns: 0, flow, state, expires_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn parses_a_time_wait_entry_and_the_end() {
        let mut msg = vec![0u8; INET_DIAG_MSG_LEN];
        msg[0] = libc::AF_INET as u8;
        msg[1] = 6;
        msg[4..6].copy_from_slice(&8080u16.to_be_bytes());
        msg[6..8].copy_from_slice(&40000u16.to_be_bytes());
        msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
        msg[24..28].copy_from_slice(&[127, 0, 0, 2]);
        msg[52..56].copy_from_slice(&59_000u32.to_ne_bytes());
        let mut data = message(SOCK_DIAG_BY_FAMILY, &msg);
        data.extend(message(NLMSG_DONE, &[0; 4]));
        let mut out = Vec::new();
        assert!(parse_messages(&data, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flow.local.to_string(), "127.0.0.1:8080");
        assert_eq!(out[0].flow.remote.to_string(), "127.0.0.2:40000");
        assert_eq!((out[0].state, out[0].expires_ms), (6, 59_000));
    }

    #[test]
    fn reports_errors_and_rejects_garbage() {
        let mut out = Vec::new();
        let err = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse_messages(&err, &mut out).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(parse_messages(&[0xff; 20], &mut out).is_err());
    }

    #[test]
    fn parses_proc_net_tcp_lines() {
        let tw = "   3: 0100007F:1F90 0200007F:9C40 06 00000000:00000000 03:00001770 00000000     0        0 0 3";
        let s = parse_proc_line(tw, false).unwrap();
        assert_eq!(
            (s.flow.local.to_string(), s.flow.remote.to_string()),
            ("127.0.0.1:8080".into(), "127.0.0.2:40000".into())
        );
        assert_eq!((s.state, s.expires_ms), (6, 60_000));
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        let s = parse_proc_line(v6, true).unwrap();
        assert_eq!(s.flow.local.to_string(), "[::1]:8080");
        assert_eq!(s.state, 10);
        assert!(parse_proc_line("  sl  local_address rem_address", false).is_none());
    }

    #[test]
    fn proc_and_netlink_agree_here() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let from_proc = proc_net_tcp().unwrap();
        assert!(from_proc.iter().any(|s| s.state == 10 && s.flow.local.port() == port));
    }

    #[test]
    fn a_destroy_request_names_the_socket_as_sock_diag_lists_it() {
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

    #[test]
    fn dumps_this_machine() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = tcp_sockets().expect("sock_diag");
        assert!(sockets.iter().any(|s| s.state == 10 && s.flow.local.port() == port), "our listener is there");
    }
}
