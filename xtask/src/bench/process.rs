//! What a process costs, read from /proc: CPU (utime+stime), memory (VmRSS, VmHWM) and the
//! kernel's run time of the BPF programs it holds.

use anyhow::Context as _;

pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident memory now.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Resident anonymous memory now (the heap, stacks): without the file-backed pages, among them
/// the BPF ring buffer's, which the kernel maps and which become resident as the load passes
/// through the ring (16 MiB by default: a fixed cost, not one per socket or row).
pub fn anon_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
}

pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The BPF programs process `pid` holds, each once (by id) with its kernel run time so far:
/// the `prog_id` and `run_time_ns` lines of /proc/PID/fdinfo of its program descriptors (not
/// its links'). Only
/// the tracer's own programs: other work on the machine (tests, other tracers) loads and
/// unloads programs meanwhile.
pub fn programs_of(pid: u32) -> std::collections::BTreeMap<u64, u64> {
    let mut programs = std::collections::BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return programs };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        // A program's own descriptor has its run time; a link's names the program too, without
        // it (and usually comes later: letting it in read every program as 0 µs).
        if let (Some(id), Some(run_time)) = (field("prog_id:"), field("run_time_ns:")) {
            programs.insert(id, run_time);
        }
    }
    programs
}

/// Kernel run time of the tracer's programs so far (`kernel.bpf_stats_enabled=1`).
pub fn bpf_run_time_ns(pid: u32) -> u64 {
    programs_of(pid).values().sum()
}

/// `kernel.bpf_stats_enabled=1` while it lives; the previous value comes back.
pub struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    pub fn enable() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(Self::PATH).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling kernel.bpf_stats_enabled (root needed)")?;
        Ok(Self(previous.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}
