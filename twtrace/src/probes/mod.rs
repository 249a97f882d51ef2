//! Loading the kernel object, choosing a backend per probe family by trying, and turning the
//! ring buffer into the event stream.
//!
//! Each family module (`timewait`, ...) owns its backend table (what to attach, in order of
//! preference), its decoder and its tests. This module holds what they share.

pub mod drops;
pub mod owners;
pub mod portsearch;
pub mod state;
pub mod timewait;

use std::{collections::HashMap, fmt};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, RawTracePoint, TracePoint},
};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use twtrace_common::{Config, Counter, EventHeader, EventKind, SCHEMA_VERSION, config::OFFSET_UNKNOWN, roles};

use crate::{event::Event, kernel};

/// How a family's programs hook into the kernel, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fentry/fexit trampolines: cheapest, need BTF and trampoline support.
    Fentry,
    /// kprobe/kretprobe: need CONFIG_KPROBES.
    Kprobe,
    /// Tracepoints only (classic, raw): always present, but see less.
    Tracepoint,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[serde(rename = "timewait")]
    #[value(name = "timewait")]
    TimeWait,
    #[serde(rename = "portsearch")]
    #[value(name = "portsearch")]
    PortSearch,
    State,
    Drops,
}

impl Family {
    /// Its bit in the roles of a shared hook (`twtrace_common::roles`).
    fn role(self) -> u32 {
        match self {
            Self::TimeWait => roles::TIMEWAIT,
            Self::PortSearch => roles::PORTSEARCH,
            Self::State => roles::STATE,
            Self::Drops => 0,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TimeWait => "timewait",
            Self::PortSearch => "portsearch",
            Self::State => "state",
            Self::Drops => "drops",
        })
    }
}

/// Every family with its backend table (built from the running kernel's BTF), in the order
/// they are attached and reported. Within a table: fentry, kprobe, tracepoint, and where a
/// backend has variants for different kernels, the newest first.
fn families(btf: &kernel::btf::Btf, config: &Config) -> Vec<(Family, Vec<BackendPlan>)> {
    vec![
        (Family::TimeWait, timewait::backends()),
        (Family::PortSearch, portsearch::backends(btf, config)),
        (Family::State, state::backends()),
        (Family::Drops, drops::backends()),
    ]
}

/// One kernel hook of a backend: which program of the object goes where.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// A raw tracepoint whose arguments the verifier types from BTF (`tp_btf`, 5.5+).
    BtfTracepoint {
        program: &'static str,
        tracepoint: &'static str,
    },
    RawTracepoint {
        program: &'static str,
        tracepoint: &'static str,
    },
    /// A classic (perf) tracepoint; needs tracefs for its id.
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    Fentry {
        program: &'static str,
        function: &'static str,
    },
    Fexit {
        program: &'static str,
        function: &'static str,
    },
    /// kprobe or kretprobe (the program's section says which).
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
}

impl Hook {
    fn program(&self) -> &'static str {
        match *self {
            Hook::BtfTracepoint { program, .. }
            | Hook::RawTracepoint { program, .. }
            | Hook::Tracepoint { program, .. }
            | Hook::Fentry { program, .. }
            | Hook::Fexit { program, .. }
            | Hook::Kprobe { program, .. } => program,
        }
    }

    /// The shared hook (`roles::*_HOOK`) this hook's program serves, if it serves several
    /// families: both variants of a tracepoint map to the same one.
    fn shared(&self) -> Option<u32> {
        let is = |variants: [Hook; 2]| variants.iter().any(|v| v.program() == self.program());
        if is([state::STATE_CHANGE_BTF, state::STATE_CHANGE_RAW]) {
            Some(roles::STATE_CHANGE_HOOK)
        } else if is([timewait::TIMER_START_BTF, timewait::TIMER_START_RAW]) {
            Some(roles::TIMER_START_HOOK)
        } else {
            None
        }
    }

    /// `kind/target`, as `bpftool` and libbpf name program sections.
    pub fn label(&self) -> String {
        match *self {
            Hook::BtfTracepoint { tracepoint, .. } => format!("tp_btf/{tracepoint}"),
            Hook::RawTracepoint { tracepoint, .. } => format!("raw_tp/{tracepoint}"),
            Hook::Tracepoint { category, name, .. } => format!("tracepoint/{category}/{name}"),
            Hook::Fentry { function, .. } => format!("fentry/{function}"),
            Hook::Fexit { function, .. } => format!("fexit/{function}"),
            Hook::Kprobe { function, program } => {
                // The program's section says which; its name ends the same way.
                let kind = if program.ends_with("kretprobe") { "kretprobe" } else { "kprobe" };
                format!("{kind}/{function}")
            }
        }
    }
}

/// One backend of a family: its hooks, or why it cannot be offered on this kernel.
pub struct BackendPlan {
    pub backend: Backend,
    pub hooks: Result<Vec<Hook>, String>,
    /// The programs read kernel memory through BTF-typed pointers (tp_btf arguments,
    /// `bpf_get_current_task_btf`) instead of probe reads; a variant without follows.
    pub btf_reads: bool,
}

impl BackendPlan {
    pub fn new(backend: Backend, hooks: &[Hook]) -> Self {
        Self { backend, hooks: Ok(hooks.to_vec()), btf_reads: false }
    }

    pub fn with_btf_reads(backend: Backend, hooks: &[Hook]) -> Self {
        Self { btf_reads: true, ..Self::new(backend, hooks) }
    }

    pub fn unavailable(backend: Backend, why: impl Into<String>) -> Self {
        Self { backend, hooks: Err(why.into()), btf_reads: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] kernel::PrivilegeError),
    #[error(transparent)]
    Btf(#[from] kernel::btf::BtfError),
    #[error(transparent)]
    Kallsyms(#[from] kernel::kallsyms::KallsymsError),
    #[error("loading the kernel object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("ring buffer size {0} must be a power of two and at least 4096 bytes")]
    RingSize(u32),
    #[error("map `{0}` is missing from the kernel object")]
    MissingMap(&'static str),
    #[error("map `{0}`: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("no probe family could attach:\n{0}")]
    NothingAttached(String),
    #[error("cannot watch the ring buffer: {0}")]
    Poll(std::io::Error),
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub backend: Backend,
    /// `None` if it attached; otherwise why not.
    pub error: Option<String>,
}

/// What was tried for one family and what runs.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct FamilyReport {
    pub family: Family,
    pub running: Option<Backend>,
    /// The hooks of the running backend, e.g. `tp_btf/timer_start` (empty in recordings made
    /// before this was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    pub attempts: Vec<Attempt>,
}

impl FamilyReport {
    /// What the family does not see on the backend it runs on, where that is less than on the
    /// others.
    pub fn limits(&self) -> Option<&'static str> {
        match (self.family, self.running) {
            (Family::PortSearch, Some(Backend::Tracepoint)) => Some(
                "connect() only, timed from the socket's SYN_SENT to its SYN (approximate, no candidate \
                 count); bind() and listen() searches are not seen",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.running {
            Some(b) if self.hooks.is_empty() => write!(f, "{}: {b}", self.family)?,
            Some(b) => write!(f, "{}: {b} ({})", self.family, self.hooks.join(", "))?,
            None if self.attempts.is_empty() => write!(f, "{}: off (not selected with --family)", self.family)?,
            None => write!(f, "{}: NOT RUNNING", self.family)?,
        }
        if let Some(limits) = self.limits() {
            write!(f, "\n    sees: {limits}")?;
        }
        // A variant of the backend that runs (for another kernel version) failing is expected:
        // only backends that do not run are explained. `--json` keeps every attempt.
        for a in self.attempts.iter().filter(|a| Some(a.backend) != self.running) {
            if let Some(err) = &a.error {
                write!(f, "\n    {} unavailable: {err}", a.backend)?;
            }
        }
        Ok(())
    }
}

/// One line: which backend each family runs on, e.g. `timewait: tracepoint, drops: OFF`.
pub fn backend_summary(reports: &[FamilyReport]) -> String {
    let families: Vec<String> = reports
        .iter()
        .map(|r| match r.running {
            Some(b) => format!("{}: {b}", r.family),
            None if r.attempts.is_empty() => format!("{}: OFF (not selected with --family)", r.family),
            None => format!(
                "{}: OFF ({})",
                r.family,
                r.attempts.iter().filter_map(|a| a.error.as_deref()).collect::<Vec<_>>().join("; ")
            ),
        })
        .collect();
    format!("{} (`twtrace probes` explains)", families.join(", "))
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Force one backend for every family instead of trying them in order.
    pub backend: Option<Backend>,
    pub netns: Option<u32>,
    /// The namespace's path, when the user named it: lets twtrace read its counters.
    pub netns_path: Option<std::path::PathBuf>,
    pub port: Option<u16>,
    pub ring_bytes: u32,
    /// Only these families (`None`: all). The others are not loaded at all: no cost.
    pub families: Option<Vec<Family>>,
}

impl Options {
    /// Whether `family` is to be loaded (`--family` names it, or none was given).
    fn selects(&self, family: Family) -> bool {
        self.families.as_ref().is_none_or(|only| only.contains(&family))
    }
}

/// The kernel object, built by build.rs from `twtrace-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/twtrace"));

/// A loaded, attached set of probes: the live source of the event stream.
pub struct LiveProbes {
    // Dropping the `Ebpf` detaches every program: keep it for the source's lifetime.
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    decoder: Decoder,
    tick: tokio::time::Interval,
    netstat: Option<kernel::netstat::Sampler>,
    next_netstat_ns: u64,
    /// The namespace the kernel's counters are labelled with: the traced one, or 0 for
    /// twtrace's own.
    counters_netns: u32,
    /// The lost count last put into the stream.
    lost_reported: u64,
    /// Runs of our programs the kernel skipped, as last put into the stream (`kernel_skips`).
    skipped_reported: u64,
    pub reports: Vec<FamilyReport>,
}

/// How often the kernel's TCP counters are sampled.
const NETSTAT_INTERVAL_NS: u64 = 1_000_000_000;

/// How often userspace drains the ring buffer when no wake-up came (records are submitted
/// without wake-ups until the buffer is a quarter full).
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

impl LiveProbes {
    pub fn load(options: &Options) -> Result<Self, LoadError> {
        kernel::check_privileges()?;
        kernel::raise_memlock_limit();
        if options.ring_bytes < 4096 || !options.ring_bytes.is_power_of_two() {
            return Err(LoadError::RingSize(options.ring_bytes));
        }
        let btf = kernel::btf::Btf::from_file(kernel::btf::Btf::VMLINUX)?;
        let mut config = Config::DEFAULT;
        config.wakeup_bytes = options.ring_bytes / 4;
        config.netns_filter = options.netns.unwrap_or(0);
        config.port_filter = options.port.unwrap_or(0);
        configure_sockets(&btf, &mut config);
        let symbols = kernel::kallsyms::Symbols::read(&[timewait::KERNEL_SYMBOL, portsearch::KERNEL_SYMBOL])?;
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

        // aya's own BTF handle, for fentry/fexit attach targets.
        let aya_btf = aya::Btf::from_sys_fs().ok();
        let mut shared = SharedHooks::default();
        let reports: Vec<FamilyReport> = families(&btf, &config)
            .into_iter()
            .map(|(family, plans)| {
                if !options.selects(family) {
                    return FamilyReport { family, running: None, hooks: Vec::new(), attempts: Vec::new() };
                }
                attach_family(&mut ebpf, aya_btf.as_ref(), family, &plans, options.backend, &mut shared)
            })
            .collect();
        if reports.iter().all(|r| r.running.is_none()) {
            let why = reports.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n");
            return Err(LoadError::NothingAttached(why));
        }
        shared.publish(&mut ebpf)?;

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(LoadError::MissingMap("EVENTS"))?)
            .map_err(|e| LoadError::Map("EVENTS", e))?;
        // SAFETY: the RingBuf owns its fd and keeps it open, unchanged, for as long as the
        // AsyncFd (which owns the RingBuf) lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| LoadError::Poll(e.into()))?;
        let counters_map = ebpf.take_map("COUNTERS").ok_or(LoadError::MissingMap("COUNTERS"))?;
        if let aya::maps::Map::PerCpuArray(data) = &counters_map {
            // Tests read the kernel's own count through this id (bpftool) to check ours.
            if let Ok(info) = data.info() {
                log::debug!("COUNTERS map id {}", info.id());
            }
        }
        let counters = PerCpuArray::try_from(counters_map).map_err(|e| LoadError::Map("COUNTERS", e))?;
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            ebpf,
            ring,
            counters,
            decoder: Decoder::new(kernel::hz(), drop_reasons),
            tick,
            netstat: netstat_sampler(options),
            next_netstat_ns: 0,
            counters_netns: options.netns.unwrap_or(0),
            lost_reported: 0,
            skipped_reported: 0,
            reports,
        })
    }

    /// Waits for a wake-up or the drain timer, then appends every decoded event to `out`.
    /// Cancel-safe: nothing is consumed before the await completes.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut guard) = guard {
                    guard.clear_ready();
                }
            }
            _ = self.tick.tick() => {}
        }
        self.drain(out);
        let now = crate::time::monotonic_ns();
        self.decoder.flush(now, out);
        self.report_lost(now, out);
        if now >= self.next_netstat_ns {
            self.next_netstat_ns = now + NETSTAT_INTERVAL_NS;
            self.sample_netstat(now, out);
            self.report_skipped(now, out);
        }
    }

    fn sample_netstat(&mut self, now: u64, out: &mut Vec<Event>) {
        let Some(sampler) = &mut self.netstat else { return };
        match sampler.deltas() {
            Ok(deltas) if !deltas.is_empty() => {
                out.push(Event::Netstat(crate::event::NetstatEvent { ts_ns: now, netns: self.counters_netns, deltas }))
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("reading /proc/net/netstat failed, counters stop: {e}");
                self.netstat = None;
            }
        }
    }

    /// Drains what is left and resolves every pending decision; call once before exiting.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.drain(out);
        self.decoder.flush(u64::MAX, out);
        let now = crate::time::monotonic_ns();
        self.report_lost(now, out);
        self.sample_netstat(now, out);
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

    fn drain(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            self.decoder.decode(&item, out);
        }
    }

    /// Kernel-side run time of twtrace's attached programs so far, or `None` while the kernel
    /// does not account it (`sysctl kernel.bpf_stats_enabled=1` turns it on, at a small cost).
    pub fn bpf_run_time_ns(&self) -> Option<u64> {
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1");
        if !enabled {
            return None;
        }
        Some(self.ebpf.programs().filter_map(|(_, p)| p.info().ok()).map(|i| i.run_time().as_nanos() as u64).sum())
    }

    /// Records the kernel could not fit in the ring buffer, summed over CPUs.
    pub fn lost(&self) -> u64 {
        self.counters.get(&(Counter::Lost as u32), 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
    }

    /// Runs of our programs the kernel skipped because a BPF program was already running on
    /// that CPU: a softirq that arrives while one of our programs runs in process context and
    /// hits the same hook (tp_btf, raw tracepoints; counted since 5.12), or a kprobe over any
    /// running program (counted since 6.7). Each may have been an event: an upper bound on
    /// the events missed, since most skipped timer filter runs were other timers'.
    fn kernel_skips(&self) -> u64 {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
                fdinfo_field(&info, "recursion_misses")
            })
            .sum()
    }

    pub fn stats(&self) -> DecodeStats {
        DecodeStats {
            untracked_deaths: self.decoder.timewait.untracked_deaths,
            owner_table_resets: self.decoder.owners.resets,
            ..self.decoder.stats
        }
    }
}

/// A numeric field of a `/proc/PID/fdinfo/FD` text (`name:\tvalue` lines).
fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// Counters of the traced namespace: ours without `--netns`; the named one with it. An inode
/// alone gives no way in, so then there are no counters (said once).
fn netstat_sampler(options: &Options) -> Option<kernel::netstat::Sampler> {
    use kernel::netstat::{Sampler, Source};
    let source = match (&options.netns_path, options.netns) {
        (Some(path), Some(_)) => Source::Namespace(path.clone()),
        (None, Some(_)) => {
            log::warn!("--netns given as an inode: TCP counters need the namespace's name or path");
            return None;
        }
        _ => Source::OwnNamespace,
    };
    Sampler::new(source).map_err(|e| log::warn!("no TCP counters: {e}")).ok()
}

/// The programs on hooks that serve several families, and which families each serves.
#[derive(Default)]
struct SharedHooks {
    /// Indexed by `roles::*_HOOK`: the program attached there, by whichever family came first.
    programs: [Option<&'static str>; roles::SHARED_HOOKS as usize],
    roles: [u32; roles::SHARED_HOOKS as usize],
}

impl SharedHooks {
    /// Gives the programs their roles. Until then they report nothing.
    fn publish(&self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        let map = ebpf.map_mut("ROLES").ok_or(LoadError::MissingMap("ROLES"))?;
        let mut array: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(|e| LoadError::Map("ROLES", e))?;
        for (hook, roles) in self.roles.iter().enumerate() {
            array.set(hook as u32, roles, 0).map_err(|e| LoadError::Map("ROLES", e))?;
        }
        Ok(())
    }
}

fn attach_family(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    family: Family,
    plans: &[BackendPlan],
    forced: Option<Backend>,
    shared: &mut SharedHooks,
) -> FamilyReport {
    let mut report = FamilyReport { family, running: None, hooks: Vec::new(), attempts: Vec::new() };
    for plan in plans {
        if forced.is_some_and(|b| b != plan.backend) {
            continue;
        }
        let result = match &plan.hooks {
            Err(why) => Err(why.clone()),
            // For testing the variants without BTF reads on kernels that would not pick them,
            // and a way out should a kernel's BTF-typed access misbehave.
            Ok(_) if plan.btf_reads && no_btf_reads() => {
                Err("the variant with BTF reads is skipped (TWTRACE_NO_BTF_READS is set)".into())
            }
            Ok(hooks) => attach_hooks(ebpf, btf, hooks, shared),
        };
        let ok = result.is_ok();
        report.attempts.push(Attempt { backend: plan.backend, error: result.err() });
        if ok {
            report.running = Some(plan.backend);
            for hook in plan.hooks.iter().flatten() {
                if let Some(index) = hook.shared() {
                    shared.roles[index as usize] |= family.role();
                }
            }
            report.hooks = plan.hooks.iter().flatten().map(Hook::label).collect();
            if plan.btf_reads {
                report.hooks.push("BTF reads".into());
            }
            break;
        }
    }
    if report.attempts.is_empty() {
        if let Some(b) = forced {
            report.attempts.push(Attempt { backend: b, error: Some("this family has no such backend".into()) });
        }
    }
    report
}

fn no_btf_reads() -> bool {
    std::env::var_os("TWTRACE_NO_BTF_READS").is_some_and(|v| !v.is_empty())
}

/// Attaches every hook of one backend, or none: on failure the ones already attached are
/// unloaded again so the next backend starts clean.
/// Attaches `hooks`, or none of them. A shared hook that already has a program (another
/// family's, either variant) keeps it: one program serves both, as `roles` says.
fn attach_hooks(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    hooks: &[Hook],
    shared: &mut SharedHooks,
) -> Result<(), String> {
    let mut attached: Vec<&Hook> = Vec::new();
    for hook in hooks {
        let index = hook.shared();
        if index.is_some_and(|i| shared.programs[i as usize].is_some()) {
            continue;
        }
        if let Err(e) = attach_hook(ebpf, btf, hook) {
            for done in attached {
                unload_hook(ebpf, done);
                if let Some(i) = done.shared() {
                    shared.programs[i as usize] = None;
                }
            }
            return Err(e);
        }
        if let Some(i) = index {
            shared.programs[i as usize] = Some(hook.program());
        }
        attached.push(hook);
    }
    Ok(())
}

/// Runs `f` on program `name` of the object as type `T` (FEntry, KProbe, ...).
fn with_program<T>(
    ebpf: &mut Ebpf,
    name: &str,
    f: impl FnOnce(&mut T) -> Result<(), ProgramError>,
) -> Result<(), ProgramError>
where
    for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    f(<&mut T>::try_from(program)?)
}

fn attach_hook(ebpf: &mut Ebpf, btf: Option<&aya::Btf>, hook: &Hook) -> Result<(), String> {
    let btf = || btf.ok_or_else(|| "the kernel's BTF could not be loaded".to_owned());
    match *hook {
        Hook::Fentry { program, function } => {
            let btf = btf()?;
            with_program(ebpf, program, |p: &mut FEntry| p.load(function, btf).and_then(|()| p.attach().map(drop)))
                .map_err(|e| format!("fentry {function}: {}", describe(&e)))
        }
        Hook::Fexit { program, function } => {
            let btf = btf()?;
            with_program(ebpf, program, |p: &mut FExit| p.load(function, btf).and_then(|()| p.attach().map(drop)))
                .map_err(|e| format!("fexit {function}: {}", describe(&e)))
        }
        Hook::Kprobe { program, function } => {
            with_program(ebpf, program, |p: &mut KProbe| p.load().and_then(|()| p.attach(function, 0).map(drop)))
                .map_err(|e| {
                    let mut text = format!("kprobe {function} ({program}): {}", describe(&e));
                    if text.contains("devices/kprobe/type") {
                        text.push_str(" (this kernel has no kprobes: CONFIG_KPROBES is off)");
                    }
                    text
                })
        }
        Hook::BtfTracepoint { program, tracepoint } => {
            let btf = btf()?;
            with_program(ebpf, program, |p: &mut BtfTracePoint| {
                p.load(tracepoint, btf).and_then(|()| p.attach().map(drop))
            })
            .map_err(|e| format!("tp_btf {tracepoint} ({program}): {}", describe(&e)))
        }
        Hook::RawTracepoint { program, tracepoint } => {
            with_program(ebpf, program, |p: &mut RawTracePoint| p.load().and_then(|()| p.attach(tracepoint).map(drop)))
                .map_err(|e| format!("raw tracepoint {tracepoint} ({program}): {}", describe(&e)))
        }
        Hook::Tracepoint { program, category, name } => {
            kernel::ensure_tracefs().map_err(|e| format!("tracepoint {category}:{name}: {e}"))?;
            with_program(ebpf, program, |p: &mut TracePoint| p.load().and_then(|()| p.attach(category, name).map(drop)))
                .map_err(|e| format!("tracepoint {category}:{name} ({program}): {}", describe(&e)))
        }
    }
}

fn unload_hook(ebpf: &mut Ebpf, hook: &Hook) {
    let result = match *hook {
        Hook::BtfTracepoint { program, .. } => with_program(ebpf, program, |p: &mut BtfTracePoint| p.unload()),
        Hook::RawTracepoint { program, .. } => with_program(ebpf, program, |p: &mut RawTracePoint| p.unload()),
        Hook::Tracepoint { program, .. } => with_program(ebpf, program, |p: &mut TracePoint| p.unload()),
        Hook::Fentry { program, .. } => with_program(ebpf, program, |p: &mut FEntry| p.unload()),
        Hook::Fexit { program, .. } => with_program(ebpf, program, |p: &mut FExit| p.unload()),
        Hook::Kprobe { program, .. } => with_program(ebpf, program, |p: &mut KProbe| p.unload()),
    };
    if let Err(e) = result {
        log::debug!("unloading {hook:?}: {e}");
    }
}

/// Socket and packet offsets shared by several families. A member this kernel lacks is left
/// unknown: the programs then read 0 for that field, and the user is told.
fn configure_sockets(btf: &kernel::btf::Btf, config: &mut Config) {
    let o = &mut config.offsets;
    o.skc_daddr = optional_offset(btf, "sock_common", "skc_daddr");
    o.skc_rcv_saddr = optional_offset(btf, "sock_common", "skc_rcv_saddr");
    o.skc_dport = optional_offset(btf, "sock_common", "skc_dport");
    o.skc_num = optional_offset(btf, "sock_common", "skc_num");
    o.skc_family = optional_offset(btf, "sock_common", "skc_family");
    o.skc_v6_daddr = optional_offset(btf, "sock_common", "skc_v6_daddr");
    o.skc_v6_rcv_saddr = optional_offset(btf, "sock_common", "skc_v6_rcv_saddr");
    o.skc_net = optional_offset(btf, "sock_common", "skc_net");
    o.net_ns_inum = btf.path_offset("net", "ns.inum").unwrap_or_else(|e| {
        log::warn!("{e}; network namespace ids will read as 0");
        OFFSET_UNKNOWN
    });
    o.inet_sport = optional_offset(btf, "inet_sock", "inet_sport");
    o.sk_protocol = optional_offset(btf, "sock", "sk_protocol");
    o.skb_head = optional_offset(btf, "sk_buff", "head");
    o.skb_network_header = optional_offset(btf, "sk_buff", "network_header");
    o.skb_transport_header = optional_offset(btf, "sk_buff", "transport_header");
    o.skb_dev = optional_offset(btf, "sk_buff", "dev");
    o.dev_nd_net = optional_offset(btf, "net_device", "nd_net");
    o.skc_state = optional_offset(btf, "sock_common", "skc_state");
}

fn optional_offset(btf: &kernel::btf::Btf, ty: &str, member: &str) -> u32 {
    btf.member_offset(ty, member).unwrap_or_else(|e| {
        log::warn!("{e}; that field will read as 0");
        OFFSET_UNKNOWN
    })
}

/// Error text with the verifier log only when asked for (`-v`): it can be thousands of lines.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            if log::log_enabled!(log::Level::Debug) {
                format!("load failed: {io_error}; verifier log:\n{verifier_log}")
            } else {
                format!("load failed: {io_error} (run with -v for the verifier log)")
            }
        }
        other => {
            // aya's syscall errors keep the errno in their source: show the whole chain.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                text.push_str(&format!(": {e}"));
                source = e.source();
            }
            text
        }
    }
}

/// Counters of records the decoder could not use: never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DecodeStats {
    pub records: u64,
    pub malformed: u64,
    pub wrong_version: u64,
    /// TIME_WAIT sockets that died during the run but were born before it started.
    pub untracked_deaths: u64,
    /// Times the owner join's tables hit their bound and started over (only lost records
    /// leave entries behind): owners of sockets open at that moment are unknown afterwards.
    #[serde(default)]
    pub owner_table_resets: u64,
}

impl DecodeStats {
    /// `, owner tables reset N times (...)` when that happened (only after lost records), or
    /// nothing: for the end-of-run sentences.
    pub fn owner_resets_note(&self) -> String {
        match self.owner_table_resets {
            0 => String::new(),
            n => format!(", owner tables reset {n} times (owners of sockets open then are unknown)"),
        }
    }
}

/// Turns ring-buffer records into events. Pure: unit-tested on byte records.
pub struct Decoder {
    pub stats: DecodeStats,
    pub timewait: timewait::Tracker,
    owners: owners::Owners,
    /// `skb_drop_reason` names by value on the kernel that produced the records.
    drop_reasons: HashMap<u32, String>,
}

impl Decoder {
    pub fn new(hz: u64, drop_reasons: HashMap<u32, String>) -> Self {
        Self {
            stats: DecodeStats::default(),
            timewait: timewait::Tracker::new(hz),
            owners: owners::Owners::new(),
            drop_reasons,
        }
    }

    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Event>) {
        self.stats.records += 1;
        let Some(header) = read_record::<EventHeader>(record) else {
            self.stats.malformed += 1;
            return;
        };
        if header.version != SCHEMA_VERSION {
            self.stats.wrong_version += 1;
            return;
        }
        let kind = EventKind::from_u16(header.kind);
        if kind != Some(EventKind::TimeWait) {
            self.timewait.on_other_record(header.cpu, out);
        }
        match kind {
            Some(EventKind::TimeWait) => match read_record(record) {
                Some(raw) => self.timewait.on_record(&raw, &mut self.owners, out),
                None => self.stats.malformed += 1,
            },
            Some(EventKind::State) => match read_record(record) {
                Some(raw) => {
                    let owner = self.owners.on_state(&raw);
                    out.push(state::decode(&raw, owner));
                }
                None => self.stats.malformed += 1,
            },
            Some(EventKind::Drop) => match read_record(record) {
                Some(raw) => out.push(drops::decode(&raw, &self.drop_reasons)),
                None => self.stats.malformed += 1,
            },
            Some(EventKind::PortSearch) => match read_record(record).and_then(|raw| portsearch::decode(&raw)) {
                Some(event) => out.push(event),
                None => self.stats.malformed += 1,
            },
            None => self.stats.malformed += 1,
        }
    }

    /// Resolves decisions that wait on what follows (see `timewait::Tracker::flush`).
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.timewait.flush(now_ns, out);
    }
}

/// Copies a `T` out of the front of a record, if the record is long enough.
fn read_record<T: aya::Pod>(record: &[u8]) -> Option<T> {
    if record.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is Pod (any bit pattern valid); unaligned read.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

/// The bytes of a Pod value, as the kernel would write them (for tests and benchmarks).
pub fn record_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
    // SAFETY: T is Pod: plain bytes without padding.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::{Backend, Family, FamilyReport, fdinfo_field};

    #[test]
    fn probes_says_what_the_tracepoint_port_search_does_not_see() {
        let report = |family, backend| FamilyReport {
            family,
            running: Some(backend),
            hooks: vec!["tp_btf/inet_sock_set_state".into(), "tp_btf/timer_start".into()],
            attempts: Vec::new(),
        };
        let text = report(Family::PortSearch, Backend::Tracepoint).to_string();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "portsearch: tracepoint (tp_btf/inet_sock_set_state, tp_btf/timer_start)",
                "    sees: connect() only, timed from the socket's SYN_SENT to its SYN (approximate, no candidate \
                 count); bind() and listen() searches are not seen",
            ]
        );
        assert!(report(Family::PortSearch, Backend::Fentry).limits().is_none());
        assert!(report(Family::State, Backend::Tracepoint).limits().is_none());
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
