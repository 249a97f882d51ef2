//! Facts about the running kernel and this process: privileges, clocks, namespaces.

pub mod btf;
pub mod cgroup;
pub mod kallsyms;
pub mod kprobe;
pub mod kube;
pub mod namespaces;
pub mod netns;
pub mod netstat;
pub mod perf_link;
pub mod sockdiag;

use std::{os::unix::fs::MetadataExt, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "twtrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN on kernels before 5.8) to load \
         its probes, and CAP_SYSLOG to read kernel symbol addresses; run it as root, e.g. \
         `sudo twtrace ...`. Missing: {0}"
    )]
    Missing(String),
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities before anything is loaded, so the user gets one clear
/// message instead of an EPERM from the middle of the loader.
pub fn check_privileges() -> Result<(), PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if !has(CAP_SYSLOG) {
        missing.push("CAP_SYSLOG");
    }
    if missing.is_empty() { Ok(()) } else { Err(PrivilegeError::Missing(missing.join(", "))) }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so the ring buffer fits.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed: {}", std::io::Error::last_os_error());
    }
}

/// The kernel tick rate (CONFIG_HZ): the coarse clocks advance once per tick, so their
/// resolution is 1/HZ. Needed to turn timer jiffies into time.
pub fn hz() -> u64 {
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } == 0;
    let tick_ns = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
    if ok && tick_ns > 0 { (1_000_000_000 + tick_ns / 2) / tick_ns } else { 250 }
}

/// This process as /proc/self/stat tells it (proc(5)).
pub struct OwnStat {
    /// utime + stime so far, in clock ticks (fields 14 and 15).
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot (field 22).
    pub start_ticks: u64,
    /// Virtual memory size, bytes (field 23).
    pub vsize_bytes: u64,
    /// Resident set, pages (field 24).
    pub rss_pages: u64,
}

pub fn own_stat() -> Option<OwnStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces and parentheses:
    // count after the last ')'. The text after it starts at field 3.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(OwnStat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// utime + stime of this process so far, in clock ticks.
pub fn own_cpu_ticks() -> Option<u64> {
    own_stat().map(|s| s.cpu_ticks)
}

/// The unit of [`own_cpu_ticks`] (USER_HZ, 100 on every common build).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Classic tracepoints are attached by id, read from tracefs. Mounts it when missing (it often
/// is on minimal systems and containers).
pub fn ensure_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
    // SAFETY: valid C strings; mount(2) with no data.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        log::info!("mounted tracefs at {TRACEFS}");
        Ok(())
    } else {
        Err(format!(
            "tracefs is not mounted and mounting it failed ({}); mount it with `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        ))
    }
}

/// A network namespace given as an inode number, a name under /run/netns, or a path (such as
/// /proc/PID/ns/net): its inode, and its path when one was given (needed to read its counters).
pub fn netns_spec(spec: &str) -> Result<(u32, Option<std::path::PathBuf>), String> {
    if let Ok(inode) = spec.parse::<u32>() {
        return Ok((inode, None));
    }
    let path = if spec.contains('/') { Path::new(spec).to_owned() } else { Path::new("/run/netns").join(spec) };
    std::fs::metadata(&path)
        .map(|m| (m.ino() as u32, Some(path.clone())))
        .map_err(|e| format!("network namespace `{spec}`: {}: {e}", path.display()))
}
