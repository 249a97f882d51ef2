//! Carrying out the plan: attaching each family's first backend that works, sharing the
//! programs on hooks several families use, and unloading what a failed backend attached.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProbeKind, ProgramError, RawTracePoint, TracePoint},
};

use super::{
    error::LoadError,
    plan::{Attempt, Backend, FamilyPlan, FamilyReport, Hook, SharedHook},
};
use crate::kernel::{
    self,
    kprobe::{KprobeError, ReturnProbe},
};

/// Links twtrace holds itself rather than in the `Ebpf`: kretprobes made through tracefs (see
/// `kernel::kprobe` for why), by program. Dropping it detaches them.
#[derive(Default)]
pub struct OwnLinks {
    kretprobes: Vec<(&'static str, ReturnProbe)>,
}

impl OwnLinks {
    /// Hits the kernel did not run a program for, over those kretprobes (an upper bound on
    /// the events missed: a return of a search the filters drop counts too).
    pub fn missed(&self) -> u64 {
        self.kretprobes.iter().filter_map(|(_, probe)| probe.missed()).sum()
    }
}

/// The programs on hooks that serve several families, and which families each serves.
#[derive(Default)]
pub struct SharedHooks {
    /// By [`SharedHook`]: the program attached there, by whichever family came first.
    programs: [Option<&'static str>; SharedHook::COUNT],
    roles: [u32; SharedHook::COUNT],
}

impl SharedHooks {
    /// Gives the programs their roles. Until then they report nothing.
    pub fn publish(&self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        let map = ebpf.map_mut("ROLES").ok_or(LoadError::MissingMap("ROLES"))?;
        let mut array: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(|e| LoadError::Map("ROLES", e))?;
        for (hook, roles) in self.roles.iter().enumerate() {
            array.set(hook as u32, roles, 0).map_err(|e| LoadError::Map("ROLES", e))?;
        }
        Ok(())
    }
}

/// Tries the family's backends in order (only `forced`, if given) until one attaches.
pub fn attach_family(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    family: &FamilyPlan,
    forced: Option<Backend>,
    shared: &mut SharedHooks,
    own: &mut OwnLinks,
) -> FamilyReport {
    let mut report = FamilyReport::off(family.family);
    for plan in &family.backends {
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
            Ok(hooks) => attach_hooks(ebpf, btf, hooks, shared, own),
        };
        let ok = result.is_ok();
        report.attempts.push(Attempt { backend: plan.backend, error: result.err() });
        if ok {
            report.running = Some(plan.backend);
            for hook in plan.hooks.iter().flatten() {
                if let Some(index) = hook.shared() {
                    shared.roles[index.index()] |= family.role;
                }
            }
            report.blind_spots = plan.blind_spots.map(str::to_owned);
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
/// unloaded again so the next backend starts clean. A shared hook that already has a program (another
/// family's, either variant) keeps it: one program serves both, as `roles` says.
fn attach_hooks(
    ebpf: &mut Ebpf,
    btf: Option<&aya::Btf>,
    hooks: &[Hook],
    shared: &mut SharedHooks,
    own: &mut OwnLinks,
) -> Result<(), String> {
    let mut attached: Vec<&Hook> = Vec::new();
    for hook in hooks {
        let index = hook.shared();
        if index.is_some_and(|i| shared.programs[i.index()].is_some()) {
            continue;
        }
        let started = std::time::Instant::now();
        let result = attach_hook(ebpf, btf, hook, own);
        // Under emulation (the VM matrix) a start takes seconds; -v says which hook costs them.
        log::debug!(
            "{}: {} in {} ms",
            hook.label(),
            if result.is_ok() { "attached" } else { "failed" },
            started.elapsed().as_millis()
        );
        if let Err(e) = result {
            for done in attached {
                unload_hook(ebpf, done, own);
                if let Some(i) = done.shared() {
                    shared.programs[i.index()] = None;
                }
            }
            return Err(e);
        }
        if let Some(i) = index {
            shared.programs[i.index()] = Some(hook.program());
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

fn attach_hook(ebpf: &mut Ebpf, btf: Option<&aya::Btf>, hook: &Hook, own: &mut OwnLinks) -> Result<(), String> {
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
        Hook::Kprobe { program, function } => attach_kprobe(ebpf, program, function, own),
        Hook::BtfTracepoint { program, tracepoint, .. } => {
            let btf = btf()?;
            with_program(ebpf, program, |p: &mut BtfTracePoint| {
                p.load(tracepoint, btf).and_then(|()| p.attach().map(drop))
            })
            .map_err(|e| format!("tp_btf {tracepoint} ({program}): {}", describe(&e)))
        }
        Hook::RawTracepoint { program, tracepoint, .. } => {
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

/// A kretprobe through tracefs where it can (`kernel::kprobe`: room for concurrent calls, a
/// miss count), else, and every entry kprobe, through perf as aya does. Entry probes gain
/// little there (their misses need one kprobe hit inside another's handler) and each tracefs
/// event costs a registration: under emulation, seconds for a whole plan.
fn attach_kprobe(ebpf: &mut Ebpf, program: &'static str, function: &str, own: &mut OwnLinks) -> Result<(), String> {
    let mut made = None;
    with_program(ebpf, program, |p: &mut KProbe| {
        p.load()?;
        if !matches!(p.kind(), ProbeKind::Return) {
            return p.attach(function, 0).map(drop);
        }
        match ReturnProbe::attach(p.fd()?.as_fd(), function) {
            Ok(probe) => {
                made = Some(probe);
                Ok(())
            }
            Err(tracefs_error) => {
                // Where perf fails too (no such function, no kprobes), its error is the one
                // to show; where it works, what tracefs refused is worth a warning.
                p.attach(function, 0)?;
                if !matches!(tracefs_error, KprobeError::NoKprobeEvents) {
                    log::warn!(
                        "kretprobe {function} through tracefs failed ({tracefs_error}); attached through perf \
                         instead, where it has room for few concurrent calls (one per CPU on kernels without \
                         CONFIG_PREEMPTION) and, before 6.7, what it misses is not counted"
                    );
                }
                Ok(())
            }
        }
    })
    .map(|()| own.kretprobes.extend(made.map(|probe| (program, probe))))
    .map_err(|e| {
        let mut text = format!("kprobe {function} ({program}): {}", describe(&e));
        if text.contains("devices/kprobe/type") {
            text.push_str(" (this kernel has no kprobes: CONFIG_KPROBES is off)");
        }
        text
    })
}

fn unload_hook(ebpf: &mut Ebpf, hook: &Hook, own: &mut OwnLinks) {
    // Its own links first: the program stays loaded while a perf event holds it.
    own.kretprobes.retain(|(program, _)| *program != hook.program());
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
