//! Running a piece of code inside another network namespace: on a short-lived thread that
//! enters it (setns affects only the calling thread). /proc/thread-self/net, /proc/sys/net and
//! new sockets then belong to that namespace.

use std::{
    collections::HashMap,
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    path::Path,
};

use crate::event::Sysctls;

/// Runs `f` in the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`), or right here
/// when `path` is `None`.
pub fn run_in<T: Send + 'static>(
    path: Option<&Path>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let Some(path) = path else { return f() };
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        // SAFETY: valid fd; affects only this thread, which ends with the closure.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// Reads [`Sysctls`] inside the namespace at `path` (here when `None`).
pub fn sysctls(path: Option<&Path>) -> std::io::Result<Sysctls> {
    run_in(path, || {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
        let mut parts = range.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
        let (Some(lo), Some(hi)) = (parts.next(), parts.next()) else {
            return Err(std::io::Error::other(format!("unexpected ip_local_port_range `{}`", range.trim())));
        };
        let number =
            |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok()?.trim().parse().ok();
        Ok(Sysctls {
            ip_local_port_range: (lo, hi),
            tcp_max_tw_buckets: number("tcp_max_tw_buckets"),
            tcp_tw_reuse: number("tcp_tw_reuse"),
            tcp_timestamps: number("tcp_timestamps"),
            tcp_fin_timeout: number("tcp_fin_timeout"),
        })
    })
}

/// The namespaces registered in `dir` (`/run/netns`: `ip netns add`, CNI's `cni-UUID`), by
/// inode: what `ip netns list` shows. Only files on nsfs count (a leftover plain file is no
/// namespace); a missing directory has none. The first name in sorted order when a namespace
/// has several.
pub fn registered(dir: &Path) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Some(nsfs) = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev()) else { return out };
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for path in names {
        // stat follows the bind mount to the namespace's nsfs inode.
        let (Ok(meta), Some(name)) = (std::fs::metadata(&path), path.file_name().and_then(|n| n.to_str())) else {
            continue;
        };
        if let (true, Ok(inode)) = (meta.dev() == nsfs, u32::try_from(meta.ino())) {
            out.entry(inode).or_insert_with(|| name.to_owned());
        }
    }
    out
}
