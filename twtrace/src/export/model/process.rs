//! The process's own resource use under the names every Prometheus client library gives it
//! (`process_*`, as client_golang's and client_python's process collectors do), so the
//! dashboards and alerts people already run for exporters work on twtrace as they are.
//! `prometheus-client` (Rust) has no such collector: these are read from /proc/self at each
//! publication (a few small reads, once per tick, off the scrape path).

use std::sync::OnceLock;

use super::{Family, Kind, Value};
use crate::kernel;

pub(super) fn process_metrics(out: &mut Vec<Family>) {
    let Some(stat) = kernel::own_stat() else { return };
    let ticks = kernel::clock_ticks_per_s();
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;

    let mut cpu =
        Family::new("process_cpu", Kind::Counter, "Total user and system CPU time spent in seconds.").in_seconds();
    cpu.push(vec![], Value::Float(stat.cpu_ticks as f64 / ticks));
    let mut resident = Family::new("process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.");
    resident.push(vec![], Value::Int(stat.rss_pages * page));
    let mut virt = Family::new("process_virtual_memory_bytes", Kind::Gauge, "Virtual memory size in bytes.");
    virt.push(vec![], Value::Int(stat.vsize_bytes));
    let mut start =
        Family::new("process_start_time", Kind::Gauge, "Start time of the process since unix epoch in seconds.")
            .in_seconds();
    // Fixed for the run: the host's boot time is read once.
    static BOOT_S: OnceLock<Option<u64>> = OnceLock::new();
    if let Some(boot) = *BOOT_S.get_or_init(boot_time_s) {
        start.push(vec![], Value::Float(boot as f64 + stat.start_ticks as f64 / ticks));
    }
    let mut open = Family::new("process_open_fds", Kind::Gauge, "Number of open file descriptors.");
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        open.push(vec![], Value::Int(fds.count() as u64));
    }
    let mut max = Family::new("process_max_fds", Kind::Gauge, "Maximum number of open file descriptors.");
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        max.push(vec![], Value::Int(limit.rlim_cur));
    }
    out.extend([cpu, resident, virt, start, open, max]);
}

/// When the host booted (Unix seconds), from /proc/stat's `btime`.
fn boot_time_s() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}
