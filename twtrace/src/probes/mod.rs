//! The kernel side of the stream: per probe family, a plan of backends (`plan`), tried by
//! attaching (`attach`), with struct offsets from BTF (`offsets`); the live source that drains
//! the ring buffer (`live`); and the decoder from records to events (`decode`).
//!
//! Each family module (`timewait`, `portsearch`, `state`, `drops`) owns its backend table
//! (what to attach, in order of preference, and which hooks it shares), its configuration, its
//! decoder and their tests, as data the shared code reads.

mod attach;
mod decode;
mod drain;
pub mod drops;
mod error;
#[cfg(test)]
mod fixtures;
mod live;
mod offsets;
pub mod owners;
mod plan;
pub mod portsearch;
pub mod state;
pub mod timewait;

use twtrace_common::{Config, roles};

pub use decode::{DecodeStats, Decoder, record_bytes};
pub use drain::DrainFigures;
pub use error::LoadError;
pub use live::LiveProbes;
pub use plan::{
    Attempt, Backend, BackendPlan, Family, FamilyPlan, FamilyReport, Hook, Options, SharedHook, backend_summary,
};

use crate::kernel;

/// Kernel time in twtrace's programs so far, by probe family. A program several families
/// share (one `tcp_set_state` hook feeds the state family and the tracepoint port search) counts
/// for the family that owns it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BpfRunTime {
    pub by_family: Vec<(Family, u64)>,
}

impl BpfRunTime {
    pub fn total_ns(&self) -> u64 {
        self.by_family.iter().map(|(_, ns)| ns).sum()
    }
}

/// Every family with its backend table (built from the running kernel's BTF), in the order
/// they are attached and reported. Within a table: fentry, kprobe, tracepoint, and where a
/// backend has variants for different kernels, the newest first.
pub fn families(btf: &kernel::btf::Btf, config: &Config) -> Vec<FamilyPlan> {
    let present = |plans: Vec<BackendPlan>| -> Vec<BackendPlan> {
        plans.into_iter().map(|p| p.if_functions(|f| btf.func_params(f).is_some())).collect()
    };
    vec![
        FamilyPlan { family: Family::TimeWait, role: roles::TIMEWAIT, backends: present(timewait::backends()) },
        FamilyPlan {
            family: Family::PortSearch,
            role: roles::PORTSEARCH,
            backends: present(portsearch::backends(btf, config)),
        },
        FamilyPlan { family: Family::State, role: roles::STATE, backends: present(state::backends()) },
        // Shares no hook.
        FamilyPlan { family: Family::Drops, role: 0, backends: present(drops::backends()) },
    ]
}

/// Every hook of every backend variant of every family, whatever the running kernel: what
/// `twtrace probes --programs` lists, and what the kernel object must contain. A program that
/// serves several families is listed under each, first under the family that owns it (the
/// port search owns none of the tracepoint programs it rides on, so it comes last).
pub fn catalogue() -> Vec<(Family, Backend, Hook)> {
    let families = [
        (Family::TimeWait, timewait::backends()),
        (Family::State, state::backends()),
        (Family::Drops, drops::backends()),
        (Family::PortSearch, portsearch::every_backend()),
    ];
    let mut out: Vec<(Family, Backend, Hook)> = Vec::new();
    for (family, plans) in families {
        for plan in plans {
            for hook in plan.hooks.iter().flatten() {
                // A hook in several variants of a backend (tw_expire_fentry, ...) is listed once.
                if !out.iter().any(|(f, _, h)| *f == family && h.program() == hook.program()) {
                    out.push((family, plan.backend, *hook));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Backend, Family, FamilyReport, catalogue, portsearch::TRACEPOINT_BLIND_SPOTS};

    /// Userspace attaches programs by name: one renamed in the eBPF crate (or dropped from
    /// the build) would fail only at attach time, on whichever kernel picks that variant.
    /// The built object is parsed here, without loading anything (no root needed).
    #[test]
    fn every_program_userspace_attaches_is_in_the_kernel_object() {
        let object = aya_obj::Object::parse(super::live::OBJECT).expect("the built object parses");
        let catalogue = catalogue();
        let missing: Vec<String> = catalogue
            .iter()
            .filter(|(_, _, hook)| !object.programs.contains_key(hook.program()))
            .map(|(family, backend, hook)| format!("{family}/{backend}: {} ({})", hook.program(), hook.label()))
            .collect();
        assert!(missing.is_empty(), "not in the kernel object: {missing:#?}");
        // Every family offers every backend somewhere, and the shared programs are listed.
        for family in [Family::TimeWait, Family::PortSearch, Family::State, Family::Drops] {
            for backend in [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint] {
                assert!(catalogue.iter().any(|(f, b, _)| *f == family && *b == backend), "{family}/{backend}");
            }
        }
        // And the other way: a program in the object that nothing attaches is dead weight.
        let unused: Vec<&String> =
            object.programs.keys().filter(|name| !catalogue.iter().any(|(_, _, h)| h.program() == *name)).collect();
        assert!(unused.is_empty(), "programs nothing attaches: {unused:?}");
    }

    #[test]
    fn probes_says_what_the_tracepoint_port_search_does_not_see() {
        let report = |family, backend, blind_spots: Option<&str>| FamilyReport {
            family,
            running: Some(backend),
            hooks: vec!["tp_btf/inet_sock_set_state".into(), "tp_btf/timer_start".into()],
            attempts: Vec::new(),
            blind_spots: blind_spots.map(str::to_owned),
        };
        let text = report(Family::PortSearch, Backend::Tracepoint, Some(TRACEPOINT_BLIND_SPOTS)).to_string();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "portsearch: tracepoint (tp_btf/inet_sock_set_state, tp_btf/timer_start)",
                "    sees: connect() only, timed from the socket's SYN_SENT to its SYN (approximate, no candidate \
                 count); bind() and listen() searches are not seen",
            ]
        );
        let plain = report(Family::State, Backend::Tracepoint, None).to_string();
        assert!(!plain.contains("sees:"), "{plain}");
    }
}
