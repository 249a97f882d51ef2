//! The TCP sockets that exist right now, from NETLINK_SOCK_DIAG (what `ss` reads), so views
//! are right from the first frame, not only for sockets born after start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{event::ExistingSocket, event::SocketFlow};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
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

fn dump(family: u8, out: &mut Vec<ExistingSocket>) -> std::io::Result<()> {
    // SAFETY: plain socket syscalls on an fd owned by `fd` below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the fresh fd.
    let fd: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
    let request = request(family);
    // SAFETY: buffer and fd valid; the kernel is the default destination of a netlink socket.
    let sent = unsafe { libc::send(std::os::fd::AsRawFd::as_raw_fd(&fd), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buffer valid for its length.
        let n = unsafe { libc::recv(std::os::fd::AsRawFd::as_raw_fd(&fd), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if parse_messages(&buf[..n as usize], out)? {
            return Ok(());
        }
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` for all TCP sockets of `family` in every state.
fn request(family: u8) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r.extend_from_slice(&1u32.to_ne_bytes()); // seq
    r.extend_from_slice(&0u32.to_ne_bytes()); // pid
    r.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    r.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    r.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: no filter
    r
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
    fn dumps_this_machine() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = tcp_sockets().expect("sock_diag");
        assert!(sockets.iter().any(|s| s.state == 10 && s.flow.local.port() == port), "our listener is there");
    }
}
