//! Port-search family: backends and decoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use twtrace_common::{
    AF_INET, AF_INET6,
    portsearch::{PortSearchEvent as RawSearch, SearchOp as RawOp},
};

use twtrace_common::{Config, config::OFFSET_UNKNOWN};

use super::{Backend, BackendPlan, Hook};
use crate::event::{Event, PortSearchEvent, Process, SearchOp};
use crate::kernel::{btf::Btf, kallsyms};

/// The retransmit timer's callback, whose first arm ends a search on the tracepoint backend.
pub const KERNEL_SYMBOL: &str = "tcp_write_timer";

/// What the tracepoint backend needs to know a connecting socket's retransmit timer; left
/// unset (and that backend unavailable) where the kernel lacks either.
pub fn configure(btf: &Btf, symbols: &kallsyms::Symbols, config: &mut Config) {
    config.offsets.icsk_retransmit_timer =
        btf.member_offset("inet_connection_sock", "icsk_retransmit_timer").unwrap_or(OFFSET_UNKNOWN);
    config.tcp_write_timer = symbols.address(KERNEL_SYMBOL).unwrap_or(0);
}

/// The tracepoint backend rides on the state family's and the TIME_WAIT family's tracepoints
/// (see twtrace-ebpf/src/portsearch.rs): when those families run on that backend too, the
/// same programs serve all three, at no extra program run.
const TRACEPOINT_BTF_HOOKS: &[Hook] = &[super::state::STATE_CHANGE_BTF, super::timewait::TIMER_START_BTF];

const TRACEPOINT_HOOKS: &[Hook] = &[super::state::STATE_CHANGE_RAW, super::timewait::TIMER_START_RAW];

const KPROBE_HOOKS: &[Hook] = &[
    Hook::Kprobe { program: "hash_connect_kprobe", function: "__inet_hash_connect" },
    Hook::Kprobe { program: "hash_connect_kretprobe", function: "__inet_hash_connect" },
    Hook::Kprobe { program: "check_established_kprobe", function: "__inet_check_established" },
    Hook::Kprobe { program: "get_port_kprobe", function: "inet_csk_get_port" },
    Hook::Kprobe { program: "get_port_kretprobe", function: "inet_csk_get_port" },
];

/// fexit reads the return value after the last argument, so the program must match the
/// running kernel's `__inet_hash_connect` arity (4 until 2025, then 5 with `hash_port0`).
pub fn backends(btf: &Btf, config: &Config) -> Vec<BackendPlan> {
    let fentry = match btf.func_params("__inet_hash_connect") {
        Some(arity @ (4 | 5)) => BackendPlan::new(
            Backend::Fentry,
            &fentry_hooks(arity, btf.func_params("__inet6_check_established").is_some()),
        ),
        Some(other) => BackendPlan::unavailable(
            Backend::Fentry,
            format!("__inet_hash_connect has {other} parameters; twtrace knows 4 and 5"),
        ),
        None => BackendPlan::unavailable(Backend::Fentry, "the kernel's BTF does not describe __inet_hash_connect"),
    };
    let mut plans = vec![fentry, BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS)];
    plans.extend(tracepoint_backends(config));
    plans
}

/// The fentry backend's hooks for an `__inet_hash_connect` of `arity` (4 or 5) parameters;
/// `ipv6`: the kernel has `__inet6_check_established` (IPv6 built in).
fn fentry_hooks(arity: u32, ipv6: bool) -> Vec<Hook> {
    let exit = if arity == 4 { "hash_connect_fexit4" } else { "hash_connect_fexit5" };
    let mut hooks = vec![
        Hook::Fentry { program: "hash_connect_fentry", function: "__inet_hash_connect" },
        Hook::Fexit { program: exit, function: "__inet_hash_connect" },
        Hook::Fentry { program: "check_established_fentry", function: "__inet_check_established" },
        Hook::Fentry { program: "get_port_fentry", function: "inet_csk_get_port" },
        Hook::Fexit { program: "get_port_fexit", function: "inet_csk_get_port" },
    ];
    if ipv6 {
        hooks.push(Hook::Fentry { program: "check_established6_fentry", function: "__inet6_check_established" });
    }
    hooks
}

/// Every backend variant this family may attach, whatever the running kernel: for listing
/// and for checking the kernel object (`super::catalogue`).
pub fn every_backend() -> Vec<BackendPlan> {
    let mut config = Config::DEFAULT;
    // Any known address and offset: they only decide whether the tracepoint backend is offered.
    config.tcp_write_timer = 1;
    config.offsets.icsk_retransmit_timer = 0;
    let mut plans: Vec<BackendPlan> =
        [4, 5].iter().map(|&arity| BackendPlan::new(Backend::Fentry, &fentry_hooks(arity, true))).collect();
    plans.push(BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS));
    plans.extend(tracepoint_backends(&config));
    plans
}

/// What the tracepoint backend does not see: it has no hook inside the search.
pub const TRACEPOINT_BLIND_SPOTS: &str = "connect() only, timed from the socket's SYN_SENT to its SYN (approximate, \
     no candidate count); bind() and listen() searches are not seen";

fn tracepoint_backends(config: &Config) -> Vec<BackendPlan> {
    if config.tcp_write_timer == 0 || config.offsets.icsk_retransmit_timer == OFFSET_UNKNOWN {
        return vec![BackendPlan::unavailable(
            Backend::Tracepoint,
            "tcp_write_timer (kallsyms) or inet_connection_sock.icsk_retransmit_timer (BTF) not found: \
             the end of a search cannot be recognised",
        )];
    }
    vec![
        BackendPlan::with_btf_reads(Backend::Tracepoint, TRACEPOINT_BTF_HOOKS).blind_to(TRACEPOINT_BLIND_SPOTS),
        BackendPlan::new(Backend::Tracepoint, TRACEPOINT_HOOKS).blind_to(TRACEPOINT_BLIND_SPOTS),
    ]
}

pub fn decode(raw: &RawSearch) -> Option<Event> {
    let op = match RawOp::from_u8(raw.op)? {
        RawOp::Connect => SearchOp::Connect,
        RawOp::Bind => SearchOp::Bind,
    };
    let f = &raw.flow;
    let ip = |addr: [u8; 16]| -> Option<IpAddr> {
        match f.family {
            AF_INET => Some(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()),
            AF_INET6 => Some(Ipv6Addr::from(addr).into()),
            _ => None,
        }
    };
    let local = ip(f.saddr).map(|a| SocketAddr::new(a, f.sport));
    let remote = match op {
        SearchOp::Connect => ip(f.daddr).map(|a| SocketAddr::new(a, f.dport)),
        SearchOp::Bind => None,
    };
    let approximate = raw.approximate != 0;
    Some(Event::PortSearch(PortSearchEvent {
        ts_ns: raw.header.ts_ns,
        op,
        duration_ns: raw.duration_ns,
        errno: raw.errno,
        candidates: (raw.approximate == 0).then_some(raw.candidates),
        approximate,
        netns: raw.netns,
        remote,
        local,
        process: Process::from_kernel(raw.header.pid_tgid, raw.header.cgroup_id, &raw.header.comm),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracepoint_backend_says_what_it_does_not_see() {
        let mut config = Config::DEFAULT;
        config.tcp_write_timer = 0xffff_ffff_8100_0000;
        config.offsets.icsk_retransmit_timer = 960;
        let plans = tracepoint_backends(&config);
        assert_eq!(plans.len(), 2);
        assert!(
            plans.iter().all(|p| p.backend == Backend::Tracepoint && p.blind_spots == Some(TRACEPOINT_BLIND_SPOTS))
        );
        // Without the timer, the backend is unavailable and says why.
        let unavailable = tracepoint_backends(&Config::DEFAULT);
        assert!(unavailable[0].hooks.as_ref().is_err_and(|why| why.contains("tcp_write_timer")));
    }
}
