//! The network namespace a scenario runs in: made for it, with the settings it asks for, so a
//! scenario never changes the host's port range or reuse policy, and its sockets are the only
//! ones in there (ground truth is then a plain count).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    event::{ExistingSocket, tcp_state},
    kernel::{namespaces::NetnsId, sockdiag},
};

/// Every namespace a scenario made, held open until the process exits.
static KEPT: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// The process's own network namespace, new and empty but for `lo` (up).
pub struct Sandbox {
    pub netns: NetnsId,
}

impl Sandbox {
    /// Moves the whole process into a new network namespace. Call it from the main thread
    /// before any other thread exists: unshare(2) moves only the calling thread, and threads
    /// made later inherit its namespace. Each call makes a fresh one; the previous one goes
    /// when its last socket does (its TIME_WAIT sockets are then purged by the kernel).
    pub fn enter() -> anyhow::Result<Self> {
        // SAFETY: no pointers; affects this thread (the process's only one, see above).
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            anyhow::bail!(
                "a scenario runs in a network namespace of its own: unshare(CLONE_NEWNET) failed ({e}); it needs \
                 CAP_SYS_ADMIN (run as root)"
            );
        }
        set_loopback_up().context("bringing lo up in the scenario's namespace")?;
        let netns = crate::kernel::namespaces::netns_of_pid(std::process::id())
            .context("reading the scenario's namespace inode")?;
        // Kept open until the process exits. A namespace torn down while the scenario runs
        // frees its inode number before its TIME_WAIT sockets are purged (seen on 5.10: a
        // later run's namespace got the same inode, and the purge's deaths were counted as
        // that run's). Runs are matched to twtrace's events by inode, so no inode may come back.
        let file = std::fs::File::open("/proc/self/ns/net").context("holding the scenario's namespace")?;
        KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(file);
        Ok(Self { netns })
    }

    /// Moves the calling thread alone into a new network namespace that nothing keeps: it is
    /// torn down when the thread exits (and its sockets are closed), and the kernel then
    /// purges its TIME_WAIT sockets. For a run whose subject is that teardown; call it on a
    /// thread of its own. Its inode may come back for a later namespace, so such a run comes
    /// last.
    pub fn enter_this_thread_only() -> anyhow::Result<Self> {
        // SAFETY: no pointers; affects the calling thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            anyhow::bail!("unshare(CLONE_NEWNET) on a thread failed ({e}); it needs CAP_SYS_ADMIN");
        }
        set_loopback_up().context("bringing lo up in the thread's namespace")?;
        let link = std::fs::read_link("/proc/thread-self/ns/net").context("reading the thread's namespace")?;
        let netns = crate::kernel::namespaces::parse_ns_link(&link.to_string_lossy())
            .ok_or_else(|| anyhow::anyhow!("unexpected namespace link {}", link.display()))?;
        Ok(Self { netns })
    }

    /// Writes a `net.*` sysctl of this namespace (`/proc/sys` resolves `net` by the writer's
    /// namespace).
    pub fn sysctl(&self, name: &str, value: &str) -> anyhow::Result<()> {
        std::fs::write(sysctl_path(name), value).with_context(|| format!("setting {name} = {value}"))
    }

    /// A `net.*` sysctl of this namespace; `None` where this kernel has none by that name.
    pub fn read_sysctl(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(sysctl_path(name)).ok().map(|v| v.trim().to_owned())
    }

    /// A `net.*` counter of this namespace (`/proc/self/net/netstat`, TcpExt), 0 when absent.
    pub fn counter(&self, name: &str) -> anyhow::Result<i64> {
        let text = std::fs::read_to_string("/proc/self/net/netstat").context("reading /proc/self/net/netstat")?;
        Ok(crate::kernel::netstat::parse(&text).get(name).copied().unwrap_or(0))
    }

    /// Whether this kernel has the `net.*` counter `name` (TcpExt) at all.
    pub fn has_counter(&self, name: &str) -> anyhow::Result<bool> {
        let text = std::fs::read_to_string("/proc/self/net/netstat").context("reading /proc/self/net/netstat")?;
        Ok(crate::kernel::netstat::parse(&text).contains_key(name))
    }

    /// Adds `ip` to `lo` (as the label `lo:1`): an address on the loopback device that is not a
    /// loopback address, which `tcp_tw_reuse = 2` treats as any remote host (the kernel's test
    /// is by address, `ipv4_is_loopback`, 4.19-6.18).
    pub fn add_address_on_lo(&self, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
        set_address("lo:1", ip).with_context(|| format!("adding {ip} to lo"))
    }

    /// The sockets to `dest` by state, from sock_diag (what `ss` reads): the kernel's count.
    pub fn sockets_to(&self, dest: SocketAddr) -> anyhow::Result<SocketCount> {
        let sockets = sockdiag::tcp_sockets().context("reading sockets over sock_diag")?;
        Ok(SocketCount::of(&sockets, dest))
    }
}

/// Client-side sockets toward one destination, as the kernel lists them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCount {
    pub established: u64,
    pub time_wait: u64,
    /// Any other state (FIN_WAIT, SYN_SENT, ...): a scenario that waits for its sockets to
    /// settle expects none.
    pub other: u64,
}

impl SocketCount {
    pub fn of(sockets: &[ExistingSocket], dest: SocketAddr) -> Self {
        let mut count = Self::default();
        for s in sockets.iter().filter(|s| s.flow.remote == dest) {
            match s.state {
                tcp_state::ESTABLISHED => count.established += 1,
                tcp_state::TIME_WAIT => count.time_wait += 1,
                _ => count.other += 1,
            }
        }
        count
    }
}

/// `/proc/sys/net/ipv4/...` for `net.ipv4....`.
fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// `ip link set lo up`, by ioctl (no `ip` needed).
fn set_loopback_up() -> io::Result<()> {
    // SAFETY: a fresh descriptor, owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the name fits (with its NUL).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid descriptor and ifreq for both calls.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_address(label: &str, ip: std::net::Ipv4Addr) -> io::Result<()> {
    // SAFETY: a fresh descriptor, owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the label fits (with its NUL); a sockaddr_in fits in
    // the union's sockaddr.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(label.bytes().chain(std::iter::once(0))) {
            *dst = src as libc::c_char;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
            sin_zero: [0; 8],
        };
        std::ptr::write((&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast(), sin);
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFADDR, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the open-file limit to at least `needed` (scenarios hold thousands of sockets);
/// root may raise the hard limit too.
pub fn allow_open_files(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    limit.rlim_max = limit.rlim_max.max(needed);
    limit.rlim_cur = needed;
    // SAFETY: valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        anyhow::bail!(
            "this scenario holds {needed} sockets: raising RLIMIT_NOFILE failed ({})",
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Waits (up to `within`) until the kernel lists `expected` for `dest`: closes complete in
/// softirq, and a sock_diag dump right after the last close can still see a socket in a
/// passing state.
pub fn settle(
    sandbox: &Sandbox,
    dest: SocketAddr,
    expected: SocketCount,
    within: Duration,
) -> anyhow::Result<SocketCount> {
    let until = std::time::Instant::now() + within;
    loop {
        let now = sandbox.sockets_to(dest)?;
        if now == expected || std::time::Instant::now() >= until {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
