//! The plan of what to attach: families, their backends in order of preference, the hooks of
//! each, and the report of what was tried and what runs. Data only; `attach` carries it out.

use std::fmt;

use serde::Serialize;
use twtrace_common::roles;

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

/// One kernel hook of a backend: which program of the object goes where.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// A raw tracepoint whose arguments the verifier types from BTF (`tp_btf`, 5.5+).
    BtfTracepoint {
        program: &'static str,
        tracepoint: &'static str,
        /// The shared hook this program serves, when it serves several families.
        shared: Option<SharedHook>,
    },
    RawTracepoint {
        program: &'static str,
        tracepoint: &'static str,
        shared: Option<SharedHook>,
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
    pub fn program(&self) -> &'static str {
        match *self {
            Hook::BtfTracepoint { program, .. }
            | Hook::RawTracepoint { program, .. }
            | Hook::Tracepoint { program, .. }
            | Hook::Fentry { program, .. }
            | Hook::Fexit { program, .. }
            | Hook::Kprobe { program, .. } => program,
        }
    }

    /// The kernel function it hooks, for fentry, fexit and kprobes.
    pub fn function(&self) -> Option<&'static str> {
        match *self {
            Hook::Fentry { function, .. } | Hook::Fexit { function, .. } | Hook::Kprobe { function, .. } => {
                Some(function)
            }
            Hook::BtfTracepoint { .. } | Hook::RawTracepoint { .. } | Hook::Tracepoint { .. } => None,
        }
    }

    /// The shared hook this hook's program serves, if it serves several families: both
    /// variants of a tracepoint name the same one.
    pub fn shared(&self) -> Option<SharedHook> {
        match *self {
            Hook::BtfTracepoint { shared, .. } | Hook::RawTracepoint { shared, .. } => shared,
            _ => None,
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

/// A program attached to a hook that serves several families, and where in `ROLES` the
/// families it serves are published (`twtrace_common::roles::*_HOOK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedHook(pub u32);

impl SharedHook {
    /// `inet_sock_set_state`: state changes, and the port search's start and failure.
    pub const STATE_CHANGE: Self = Self(roles::STATE_CHANGE_HOOK);
    /// `timer_start`: TIME_WAIT births, and the end of the port search.
    pub const TIMER_START: Self = Self(roles::TIMER_START_HOOK);
    pub const COUNT: usize = roles::SHARED_HOOKS as usize;

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A family and its backends, in order of preference.
pub struct FamilyPlan {
    pub family: Family,
    /// Its bit in the roles of a shared hook (`twtrace_common::roles`; 0: it shares none).
    pub role: u32,
    pub backends: Vec<BackendPlan>,
}

/// One backend of a family: its hooks, or why it cannot be offered on this kernel.
pub struct BackendPlan {
    pub backend: Backend,
    pub hooks: Result<Vec<Hook>, String>,
    /// The programs read kernel memory through BTF-typed pointers (tp_btf arguments,
    /// `bpf_get_current_task_btf`) instead of probe reads; a variant without follows.
    pub btf_reads: bool,
    /// What the family does not see on this backend, where that is less than on the others.
    pub blind_spots: Option<&'static str>,
}

impl BackendPlan {
    pub fn new(backend: Backend, hooks: &[Hook]) -> Self {
        Self { backend, hooks: Ok(hooks.to_vec()), btf_reads: false, blind_spots: None }
    }

    pub fn with_btf_reads(backend: Backend, hooks: &[Hook]) -> Self {
        Self { btf_reads: true, ..Self::new(backend, hooks) }
    }

    pub fn unavailable(backend: Backend, why: impl Into<String>) -> Self {
        Self { backend, hooks: Err(why.into()), btf_reads: false, blind_spots: None }
    }

    pub fn blind_to(self, what: &'static str) -> Self {
        Self { blind_spots: Some(what), ..self }
    }

    /// Unavailable where one of its hooks' functions is not in the kernel (`has_function`:
    /// its BTF lists it). Otherwise attaching would load, verify and attach the hooks before
    /// the missing one, then take them down again for the next variant: on 5.10 the TIME_WAIT
    /// family's kprobe backend verified seven programs and registered five kprobes to keep
    /// three, most of a second per start under emulation.
    pub fn if_functions(self, has_function: impl Fn(&str) -> bool) -> Self {
        let missing = self.hooks.iter().flatten().filter_map(Hook::function).find(|f| !has_function(f));
        match missing {
            Some(function) => {
                Self::unavailable(self.backend, format!("{function} is not in this kernel (not in its BTF)"))
            }
            None => self,
        }
    }
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
    /// What the family does not see on the backend it runs on ([`BackendPlan::blind_spots`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_spots: Option<String>,
}

impl FamilyReport {
    /// A family not selected with `--family`: nothing tried, nothing running.
    pub fn off(family: Family) -> Self {
        Self { family, running: None, hooks: Vec::new(), attempts: Vec::new(), blind_spots: None }
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
        if let Some(blind) = &self.blind_spots {
            write!(f, "\n    sees: {blind}")?;
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
    pub fn selects(&self, family: Family) -> bool {
        self.families.as_ref().is_none_or(|only| only.contains(&family))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_whose_function_the_kernel_lacks_is_unavailable_before_anything_loads() {
        let hooks = [
            Hook::Kprobe { program: "tw_schedule_kprobe", function: "__inet_twsk_schedule" },
            Hook::RawTracepoint { program: "tw_timer_start", tracepoint: "timer_start", shared: None },
            Hook::Kprobe { program: "tw_kill_timer_kprobe", function: "timer_delete_sync" },
        ];
        // 5.10: del_timer_sync, no timer_delete_sync.
        let on_5_10 = |f: &str| f != "timer_delete_sync";
        let plan = BackendPlan::new(Backend::Kprobe, &hooks).if_functions(on_5_10);
        assert_eq!(plan.hooks.err().as_deref(), Some("timer_delete_sync is not in this kernel (not in its BTF)"));
        assert_eq!(plan.backend, Backend::Kprobe);
        let kept = BackendPlan::new(Backend::Kprobe, &hooks).if_functions(|_| true);
        assert_eq!(kept.hooks.unwrap().len(), 3, "tracepoints are not looked up");
    }
}
