//! Crafted TCP segments for PAWS tests: raw sockets to send, an AF_PACKET socket to learn a live
//! connection's real sequence numbers and timestamps first. Run inside a namespace thread.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

pub const SYN: u8 = 0x02;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A TCP segment with a timestamp option.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub tsval: u32,
    pub tsecr: u32,
    pub payload_len: usize,
}

/// The socket's current TSval clock (`TCP_TIMESTAMP`), the value its next segment would carry.
pub fn tcp_timestamp(socket: &impl AsRawFd) -> u32 {
    let mut value: u32 = 0;
    let mut len = 4u32;
    // SAFETY: valid fd and out-pointers.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_TIMESTAMP,
            (&mut value as *mut u32).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_TIMESTAMP: {}", std::io::Error::last_os_error());
    value
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `segment` through a raw socket; the kernel adds the IP header.
pub fn send(segment: &Segment, payload: &[u8]) {
    assert_eq!(payload.len(), segment.payload_len);
    let mut tcp = Vec::with_capacity(32 + payload.len());
    tcp.extend_from_slice(&segment.src.port().to_be_bytes());
    tcp.extend_from_slice(&segment.dst.port().to_be_bytes());
    tcp.extend_from_slice(&segment.seq.to_be_bytes());
    tcp.extend_from_slice(&segment.ack.to_be_bytes());
    tcp.push(8 << 4); // data offset: 32 bytes
    tcp.push(segment.flags);
    tcp.extend_from_slice(&65_535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(&[1, 1, 8, 10]); // NOP NOP TS(len 10)
    tcp.extend_from_slice(&segment.tsval.to_be_bytes());
    tcp.extend_from_slice(&segment.tsecr.to_be_bytes());
    tcp.extend_from_slice(payload);
    let (domain, dst_storage, dst_len) = match (segment.src.ip(), segment.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut sum = checksum_add(0, &src.octets());
            sum = checksum_add(sum, &dst.octets());
            sum += 6 + tcp.len() as u32;
            let csum = checksum_fold(checksum_add(sum, &tcp));
            tcp[16..18].copy_from_slice(&csum.to_be_bytes());
            let (storage, len) = super::sockaddr_of(SocketAddr::new(dst.into(), 0));
            (libc::AF_INET, storage, len)
        }
        (IpAddr::V6(_), IpAddr::V6(dst)) => {
            let (storage, len) = super::sockaddr_of(SocketAddr::new(dst.into(), 0));
            (libc::AF_INET6, storage, len)
        }
        _ => panic!("mixed address families"),
    };
    // SAFETY: raw socket syscalls on an fd we own.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        // Without a bind the kernel sends from the route's source address, whatever the
        // segment says (127.0.0.1 for any loopback destination).
        let (src, src_len) = super::sockaddr_of(SocketAddr::new(segment.src.ip(), 0));
        let bound = libc::bind(fd.as_raw_fd(), (&src as *const libc::sockaddr_storage).cast(), src_len);
        assert_eq!(bound, 0, "bind raw socket to {}: {}", segment.src.ip(), std::io::Error::last_os_error());
        if domain == libc::AF_INET6 {
            // The kernel fills the TCP checksum (at offset 16) for IPv6 raw sockets on request.
            let offset: libc::c_int = 16;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_CHECKSUM,
                (&offset as *const libc::c_int).cast(),
                4,
            );
        }
        let sent = libc::sendto(
            fd.as_raw_fd(),
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&dst_storage as *const libc::sockaddr_storage).cast(),
            dst_len,
        );
        assert_eq!(sent, tcp.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    }
}

/// Captures IP packets on `lo` (of the calling thread's namespace) until `pred` accepts a TCP
/// segment, while `trigger` runs once after the capture is open.
pub fn capture(trigger: impl FnOnce(), pred: impl Fn(&Segment) -> bool) -> Segment {
    // SAFETY: packet socket syscalls on an fd we own; buffers are sized.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        trigger();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 65_536];
        while Instant::now() < deadline {
            let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
            if n <= 0 {
                continue;
            }
            if let Some(seg) = parse(&buf[..n as usize]) {
                if pred(&seg) {
                    return seg;
                }
            }
        }
        panic!("no matching segment captured");
    }
}

fn parse(ip: &[u8]) -> Option<Segment> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.get(9) != Some(&6) {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (s.into(), d.into(), ip.get(ihl..total)?)
        }
        6 => {
            if ip.get(6) != Some(&6) {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (s.into(), d.into(), ip.get(40..40 + payload)?)
        }
        _ => return None,
    };
    let be32 = |at: usize| Some(u32::from_be_bytes(tcp.get(at..at + 4)?.try_into().ok()?));
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let mut segment = Segment {
        src: SocketAddr::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
        seq: be32(4)?,
        ack: be32(8)?,
        flags: tcp[13],
        tsval: 0,
        tsecr: 0,
        payload_len: tcp.len().saturating_sub(doff),
    };
    let mut options = tcp.get(20..doff)?;
    while let [kind, rest @ ..] = options {
        match kind {
            0 => break,
            1 => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if *kind == 8 && len == 10 {
                    segment.tsval = u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?);
                    segment.tsecr = u32::from_be_bytes(rest.get(5..9)?.try_into().ok()?);
                }
                options = options.get(len.max(2)..)?;
            }
        }
    }
    Some(segment)
}
