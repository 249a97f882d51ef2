//! Entering a network namespace: on a short-lived thread, after checking that the path still
//! leads to the namespace expected (see the parent module's "Entering").

use std::{
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use super::{NetnsError, NetnsId};
use crate::event::Sysctls;

/// The settings of this thread's namespace (a reader thread that entered it).
pub(super) fn sysctls_here() -> std::io::Result<Sysctls> {
    crate::kernel::netns::sysctls(None)
}

/// This thread's namespace's cookie (`SO_NETNS_COOKIE` on a Unix socket made here: every
/// socket reports its namespace's), `None` before 5.14, which lacks the option (ENOPROTOOPT).
pub(super) fn cookie_here() -> Option<u64> {
    // SAFETY: a socket of our own, closed below; getsockopt writes at most `len` bytes into a
    // u64.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let got =
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len);
        libc::close(fd);
        (got == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
    }
}

/// Whether a cookie read now is the one read when the namespace was described; unknown now
/// (the option refused) is no evidence of a new namespace.
pub(super) fn same_cookie(known: u64, now: Option<u64>) -> bool {
    now.is_none_or(|now| now == known)
}

/// Opens a namespace file and checks it is namespace `id` (and on nsfs).
fn open_checked(id: NetnsId, path: &Path, nsfs_dev: Option<u64>) -> Result<std::fs::File, OpenFailure> {
    let file = std::fs::File::open(path).map_err(OpenFailure::classify)?;
    let meta = file.metadata().map_err(OpenFailure::classify)?;
    let on_nsfs = nsfs_dev.is_none_or(|dev| meta.dev() == dev);
    if !on_nsfs || meta.ino() != u64::from(id.0) {
        // The path now leads elsewhere: a reused PID, a re-created name.
        return Err(OpenFailure::Stale);
    }
    Ok(file)
}

enum OpenFailure {
    /// The path no longer leads to this namespace.
    Stale,
    Refused(std::io::Error),
}

impl OpenFailure {
    fn classify(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            Self::Stale
        } else {
            Self::Refused(e)
        }
    }
}

fn setns(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: a valid namespace descriptor; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(super) enum Entered<T, F> {
    Ran(std::io::Result<T>),
    /// Not entered: the way in is stale; `f` is handed back for another try.
    Stale(F),
    Refused(std::io::Error),
}

pub(super) fn enter_and_run<T: Send + 'static, F: FnOnce() -> std::io::Result<T> + Send + 'static>(
    id: NetnsId,
    path: &Path,
    nsfs_dev: Option<u64>,
    f: F,
) -> Entered<T, F> {
    let file = match open_checked(id, path, nsfs_dev) {
        Ok(file) => file,
        Err(OpenFailure::Stale) => return Entered::Stale(f),
        Err(OpenFailure::Refused(e)) => return Entered::Refused(e),
    };
    // The open descriptor pins the namespace: it cannot vanish between here and the read.
    let outcome = std::thread::spawn(move || match setns(&file) {
        Ok(()) => Ok(f()),
        Err(e) => Err(e),
    })
    .join();
    match outcome {
        Ok(Ok(result)) => Entered::Ran(result),
        Ok(Err(refused)) => Entered::Refused(refused),
        Err(_) => Entered::Ran(Err(std::io::Error::other("the namespace reader thread panicked"))),
    }
}

/// Runs `f` inside namespace `id` entered through `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`), after checking that `path` is that namespace. For callers that hold a
/// path of their own; the registry's [`NetnsRegistry::run_in`] also finds a new way in.
pub fn run_in_netns<T: Send + 'static>(
    id: NetnsId,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, NetnsError> {
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
    match enter_and_run(id, path, nsfs_dev, f) {
        Entered::Ran(Ok(value)) => Ok(value),
        Entered::Ran(Err(source)) => Err(NetnsError::Read { id, source }),
        Entered::Refused(source) => Err(NetnsError::Enter { id, path: path.to_owned(), source }),
        Entered::Stale(_) => Err(NetnsError::Gone { id }),
    }
}

pub(super) enum Batch<T> {
    Read(T),
    Stale,
    /// Opened, but setns(2) refused (no CAP_SYS_ADMIN there): as [`NetnsError::Enter`].
    Refused(std::io::Error),
    Failed(std::io::Error),
}

/// Runs `f` inside each namespace in turn on one thread (setns into each: it only ever
/// affects that thread, which ends after the last). One thread for hundreds of namespaces
/// instead of one each.
pub(super) fn read_in_each<T: Send + 'static>(
    targets: Vec<(NetnsId, PathBuf)>,
    nsfs_dev: Option<u64>,
    f: fn() -> std::io::Result<T>,
) -> Vec<Batch<T>> {
    let count = targets.len();
    let reader = std::thread::spawn(move || {
        targets
            .into_iter()
            .map(|(id, path)| match open_checked(id, &path, nsfs_dev) {
                Err(OpenFailure::Stale) => Batch::Stale,
                Err(OpenFailure::Refused(e)) => Batch::Refused(e),
                Ok(file) => match setns(&file) {
                    Err(e) => Batch::Refused(e),
                    Ok(()) => f().map_or_else(Batch::Failed, Batch::Read),
                },
            })
            .collect::<Vec<_>>()
    });
    reader.join().unwrap_or_else(|_| {
        (0..count).map(|_| Batch::Failed(std::io::Error::other("the namespace reader thread panicked"))).collect()
    })
}

/// The best way in: an `ip netns` mount, another mount, else the process's link.
pub(super) fn way_in(proc_root: &Path, mounts: &[PathBuf], first_pid: Option<u32>) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| super::naming::ip_netns_name(m).is_some())
        .or(mounts.first())
        .cloned()
        .or_else(|| first_pid.map(|pid| proc_root.join(pid.to_string()).join("ns/net")))
}
