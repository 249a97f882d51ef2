//! The live source: loading the kernel object, attaching the plan, and turning the ring
//! buffer (and the kernel's counters) into the event stream.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
};
use twtrace_common::{Config, Counter};

use super::{
    attach,
    decode::{DecodeStats, Decoder},
    drain::{DRAIN_INTERVAL, Drain, DrainFigures},
    drops,
    error::LoadError,
    offsets,
    plan::{FamilyReport, Options},
    portsearch, timewait,
};
use crate::{event::Event, kernel};

/// The kernel object, built by build.rs from `twtrace-ebpf`.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/twtrace"));

/// A loaded, attached set of probes: the live source of the event stream.
pub struct LiveProbes {
    /// Kretprobes twtrace made itself; detached before the `Ebpf` below is dropped.
    own_links: attach::OwnLinks,
    /// Descriptors of the kprobes attached through perf links, whose misses 6.7+ reports.
    kprobe_links: Vec<std::os::fd::RawFd>,
    // Dropping the `Ebpf` detaches every program: keep it for the source's lifetime.
    ebpf: Ebpf,
    /// The thread that empties the ring buffer and decodes it (`drain`).
    drain: Drain,
    counters: PerCpuArray<MapData, u64>,
    next_skips_ns: u64,
    /// The lost count last put into the stream.
    lost_reported: u64,
    /// Runs of our programs the kernel skipped, as last put into the stream (`kernel_skips`).
    skipped_reported: u64,
    pub reports: Vec<FamilyReport>,
    /// Each program's owning family, for its run time.
    owners: std::collections::HashMap<&'static str, super::Family>,
}

/// How long each phase of a start took.
struct Phases {
    last: std::time::Instant,
    done: Vec<(String, std::time::Duration)>,
}

impl Phases {
    fn start() -> Self {
        Self { last: std::time::Instant::now(), done: Vec::new() }
    }

    fn mark(&mut self, phase: impl ToString) {
        let now = std::time::Instant::now();
        self.done.push((phase.to_string(), now - self.last));
        self.last = now;
    }

    /// `412 ms (BTF 20 ms, kallsyms 41 ms, ...)`.
    fn summary(&self) -> String {
        let ms = |d: std::time::Duration| d.as_millis();
        let total: std::time::Duration = self.done.iter().map(|(_, d)| *d).sum();
        let parts: Vec<String> = self.done.iter().map(|(p, d)| format!("{p} {} ms", ms(*d))).collect();
        format!("{} ms ({})", ms(total), parts.join(", "))
    }
}

/// Each program's owning family: the first to list it in the catalogue.
fn program_owners() -> std::collections::HashMap<&'static str, super::Family> {
    let mut owners = std::collections::HashMap::new();
    for (family, _, hook) in super::catalogue() {
        owners.entry(hook.program()).or_insert(family);
    }
    owners
}

/// How often the programs' skip counts are read.
const SKIPS_INTERVAL_NS: u64 = 1_000_000_000;

impl LiveProbes {
    pub fn load(options: &Options) -> Result<Self, LoadError> {
        kernel::check_privileges()?;
        kernel::raise_memlock_limit();
        if options.ring_bytes < 4096 || !options.ring_bytes.is_power_of_two() {
            return Err(LoadError::RingSize(options.ring_bytes));
        }
        // Each phase's cost, for `-v`: under emulation (the VM matrix) a start takes seconds.
        let mut phases = Phases::start();
        let btf = kernel::btf::Btf::from_file(kernel::btf::Btf::VMLINUX)?;
        phases.mark("BTF");
        let mut config = Config::DEFAULT;
        config.wakeup_bytes = options.ring_bytes / 4;
        config.netns_filter = options.netns.unwrap_or(0);
        config.port_filter = options.port.unwrap_or(0);
        offsets::configure_sockets(&btf, &mut config);
        let names: Vec<&'static str> =
            timewait::kernel_symbols().chain(std::iter::once(portsearch::KERNEL_SYMBOL)).collect();
        let symbols = kernel::kallsyms::Symbols::read(&names)?;
        phases.mark("kallsyms");
        timewait::configure(&btf, &symbols, &mut config)?;
        portsearch::configure(&btf, &symbols, &mut config);
        let drop_reasons = drops::reason_names(&btf);
        if drops::configure(&drop_reasons, &mut config) == 0 {
            log::warn!("this kernel names no PAWS drop reasons (kfree_skb reasons need 5.17+)");
        }

        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", options.ring_bytes)
            .load(OBJECT)?;
        phases.mark("object");

        // aya's own BTF handle, for fentry/fexit attach targets.
        let aya_btf = aya::Btf::from_sys_fs().ok();
        phases.mark("aya BTF");
        let mut shared = attach::SharedHooks::default();
        let mut own_links = attach::OwnLinks::default();
        let reports: Vec<FamilyReport> = super::families(&btf, &config)
            .iter()
            .map(|plan| {
                if !options.selects(plan.family) {
                    return FamilyReport::off(plan.family);
                }
                let report = attach::attach_family(
                    &mut ebpf,
                    aya_btf.as_ref(),
                    plan,
                    options.backend,
                    &mut shared,
                    &mut own_links,
                );
                phases.mark(plan.family);
                report
            })
            .collect();
        log::debug!("started in {}", phases.summary());
        if reports.iter().all(|r| r.running.is_none()) {
            let why = reports.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n");
            return Err(LoadError::NothingAttached(why));
        }
        shared.publish(&mut ebpf)?;

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(LoadError::MissingMap("EVENTS"))?)
            .map_err(|e| LoadError::Map("EVENTS", e))?;
        let counters_map = ebpf.take_map("COUNTERS").ok_or(LoadError::MissingMap("COUNTERS"))?;
        if let aya::maps::Map::PerCpuArray(data) = &counters_map {
            // Tests read the kernel's own count through this id (bpftool) to check ours.
            if let Ok(info) = data.info() {
                log::debug!("COUNTERS map id {}", info.id());
            }
        }
        let counters = PerCpuArray::try_from(counters_map).map_err(|e| LoadError::Map("COUNTERS", e))?;
        let drain = Drain::start(ring, Decoder::new(kernel::hz(), drop_reasons)).map_err(LoadError::Drain)?;
        Ok(Self {
            own_links,
            kprobe_links: kernel::perf_link::kprobe_links(),
            ebpf,
            drain,
            counters,
            next_skips_ns: 0,
            lost_reported: 0,
            skipped_reported: 0,
            reports,
            owners: program_owners(),
        })
    }

    /// Waits for the drain thread's next batch (at most a drain interval: the sinks' clock),
    /// then appends every decoded event waiting to `out`. Cancel-safe.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) {
        self.drain.next(out, DRAIN_INTERVAL).await;
        let now = crate::time::monotonic_ns();
        self.report_lost(now, out);
        if now >= self.next_skips_ns {
            self.next_skips_ns = now + SKIPS_INTERVAL_NS;
            self.report_skipped(now, out);
        }
    }

    /// Drains what is left and resolves every pending decision; call once before exiting.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.drain.finish(out);
        let now = crate::time::monotonic_ns();
        self.report_lost(now, out);
        self.report_skipped(now, out);
    }

    /// Puts the rise of the kernel's skip count into the stream: recorded, summed by
    /// `stat`/`top`, and named by `report`.
    fn report_skipped(&mut self, now: u64, out: &mut Vec<Event>) {
        let total = self.kernel_skips();
        if total > self.skipped_reported {
            out.push(Event::Skipped(crate::event::SkippedEvent { ts_ns: now, new: total - self.skipped_reported }));
            self.skipped_reported = total;
        }
    }

    /// Records lost, as far as the stream has been told ([`Event::Lost`]).
    pub fn lost_reported(&self) -> u64 {
        self.lost_reported
    }

    /// Skipped runs, as far as the stream has been told ([`Event::Skipped`]).
    pub fn skipped_reported(&self) -> u64 {
        self.skipped_reported
    }

    /// Puts a [`LostEvent`](crate::event::LostEvent) into the stream when the kernel's count rose.
    fn report_lost(&mut self, now: u64, out: &mut Vec<Event>) {
        let total = self.lost();
        if total > self.lost_reported {
            out.push(Event::Lost(crate::event::LostEvent { ts_ns: now, new: total - self.lost_reported, total }));
            self.lost_reported = total;
        }
    }

    /// Kernel-side run time of twtrace's attached programs so far, by the family that owns
    /// each (the first to list it in [`super::catalogue`]), or `None` while the kernel does not
    /// account it (`sysctl kernel.bpf_stats_enabled=1` turns it on, at a small cost).
    pub fn bpf_run_time(&self) -> Option<super::BpfRunTime> {
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1");
        if !enabled {
            return None;
        }
        let mut by_family: Vec<(super::Family, u64)> = Vec::new();
        for (name, program) in self.ebpf.programs() {
            // Programs of backends not chosen are not loaded: nothing to count.
            let Ok(info) = program.info() else { continue };
            let Some(family) = self.owners.get(name) else { continue };
            let ns = info.run_time().as_nanos() as u64;
            match by_family.iter_mut().find(|(f, _)| f == family) {
                Some((_, total)) => *total += ns,
                None => by_family.push((*family, ns)),
            }
        }
        Some(super::BpfRunTime { by_family })
    }

    /// Records lost: those the kernel could not fit in the ring buffer (summed over CPUs), and
    /// those the drain decoded but had to drop because the consumer was too far behind.
    pub fn lost(&self) -> u64 {
        let kernel: u64 =
            self.counters.get(&(Counter::Lost as u32), 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        kernel + self.drain.dropped()
    }

    /// The drain thread's figures: its longest gap, the queue's peak, what it dropped.
    pub fn drain_figures(&self) -> DrainFigures {
        self.drain.figures()
    }

    /// Runs of our programs the kernel skipped because a BPF program was already running on
    /// that CPU: a softirq that arrives while one of our programs runs in process context and
    /// hits the same hook (tp_btf, raw tracepoints; counted since 5.12), or a kprobe over any
    /// running program (counted since 6.7); and returns a kretprobe missed for want of a free
    /// instance (`kernel::kprobe`), or a kprobe attached through a perf link missed (a hit
    /// inside another kprobe's handler; reported since 6.7: `kernel::perf_link`). Each may have been an event: an upper bound on
    /// the events missed, since most skipped timer filter runs were other timers'.
    fn kernel_skips(&self) -> u64 {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let program_skips: u64 = self
            .ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
                fdinfo_field(&info, "recursion_misses")
            })
            .sum();
        program_skips + self.own_links.missed() + kernel::perf_link::missed(&self.kprobe_links)
    }

    pub fn stats(&self) -> DecodeStats {
        self.drain.stats()
    }
}

/// A numeric field of a `/proc/PID/fdinfo/FD` text (`name:\tvalue` lines).
fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::fdinfo_field;

    /// BPF time goes to one family per program: the first to list it, never the port search
    /// for a program another family also lists (it rides on theirs).
    #[test]
    fn every_program_has_one_owning_family() {
        let owners = super::program_owners();
        let catalogue = super::super::catalogue();
        for (family, _, hook) in &catalogue {
            let owner = owners[hook.program()];
            let shared = catalogue.iter().any(|(f, _, h)| h.program() == hook.program() && f != family);
            if shared {
                assert_ne!(owner, super::super::Family::PortSearch, "{}", hook.program());
            } else {
                assert_eq!(owner, *family, "{}", hook.program());
            }
        }
    }

    #[test]
    fn fdinfo_fields_of_a_bpf_program() {
        // As 6.18 prints it for a program descriptor.
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2063\nprog_type:\t26\nprog_jited:\t1\n\
                    prog_tag:\t65bdc395b2d7151b\nmemlock:\t4096\nprog_id:\t119\nrun_time_ns:\t27933\n\
                    run_cnt:\t67\nrecursion_misses:\t3\nverified_insns:\t14\n";
        assert_eq!(fdinfo_field(info, "recursion_misses"), Some(3));
        assert_eq!(fdinfo_field(info, "run_cnt"), Some(67));
        // 5.10 has no such line: nothing is invented.
        assert_eq!(fdinfo_field("prog_type:\t26\nrun_cnt:\t0\n", "recursion_misses"), None);
        assert_eq!(fdinfo_field(info, "run"), None, "a prefix of another name does not match");
    }
}
