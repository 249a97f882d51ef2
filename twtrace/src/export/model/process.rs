//! The process's own resource use under the names every Prometheus client library gives it
//! (`process_*`, as client_golang's and client_python's process collectors do), so the
//! dashboards and alerts people already run for exporters work on twtrace as they are.
//! `prometheus-client` (Rust) has no such collector: these are read from /proc/self at each
//! publication (a few small reads, once per tick, off the scrape path).

use super::{Family, Kind, Value};

/// Field numbers of /proc/PID/stat (proc(5), from 1): user and system CPU time (clock
/// ticks), start time (ticks after boot), virtual size (bytes), resident set (pages).
const UTIME: usize = 14;
const STIME: usize = 15;
const STARTTIME: usize = 22;
const VSIZE: usize = 23;
const RSS: usize = 24;

pub(super) fn process_metrics(out: &mut Vec<Family>) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields from the 3rd: after the command's closing parenthesis (a command may hold spaces
    // and parentheses; the last ')' ends it).
    let Some((_, rest)) = stat.rsplit_once(')') else { return };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let (ticks, page) = (ticks.max(1) as f64, page.max(1) as u64);

    let mut cpu =
        Family::new("process_cpu", Kind::Counter, "Total user and system CPU time spent in seconds.").in_seconds();
    if let (Some(u), Some(s)) = (field(UTIME), field(STIME)) {
        cpu.push(vec![], Value::Float((u + s) as f64 / ticks));
    }
    let mut resident = Family::new("process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.");
    if let Some(pages) = field(RSS) {
        resident.push(vec![], Value::Int(pages * page));
    }
    let mut virt = Family::new("process_virtual_memory_bytes", Kind::Gauge, "Virtual memory size in bytes.");
    if let Some(bytes) = field(VSIZE) {
        virt.push(vec![], Value::Int(bytes));
    }
    let mut start =
        Family::new("process_start_time", Kind::Gauge, "Start time of the process since unix epoch in seconds.")
            .in_seconds();
    if let (Some(after_boot), Some(boot)) = (field(STARTTIME), boot_time_s()) {
        start.push(vec![], Value::Float(boot as f64 + after_boot as f64 / ticks));
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
