//! State family: backends and decoding of the TCP state transitions the kernel reports.

use twtrace_common::state::StateEvent as RawState;

use super::{Backend, BackendPlan, Hook, SharedHook, owners::Task};
use crate::event::{Event, SocketFlow, StateEvent};

/// The state change, in both variants: shared with the port search's tracepoint backend.
pub(super) const STATE_CHANGE_RAW: Hook = Hook::RawTracepoint {
    program: "tcp_state_change",
    tracepoint: "inet_sock_set_state",
    shared: Some(SharedHook::STATE_CHANGE),
};
/// tp_btf (5.5+, BTF): the same tracepoint, reading the socket without helper calls.
pub(super) const STATE_CHANGE_BTF: Hook = Hook::BtfTracepoint {
    program: "tcp_state_change_btf",
    tracepoint: "inet_sock_set_state",
    shared: Some(SharedHook::STATE_CHANGE),
};

const TRACEPOINT_HOOKS: &[Hook] = &[STATE_CHANGE_RAW];
const BTF_TRACEPOINT_HOOKS: &[Hook] = &[STATE_CHANGE_BTF];

pub fn backends() -> Vec<BackendPlan> {
    vec![
        BackendPlan::new(
            Backend::Fentry,
            &[Hook::Fentry { program: "tcp_set_state_fentry", function: "tcp_set_state" }],
        ),
        BackendPlan::new(
            Backend::Kprobe,
            &[Hook::Kprobe { program: "tcp_set_state_kprobe", function: "tcp_set_state" }],
        ),
        BackendPlan::with_btf_reads(Backend::Tracepoint, BTF_TRACEPOINT_HOOKS),
        BackendPlan::new(Backend::Tracepoint, TRACEPOINT_HOOKS),
    ]
}

/// `owner`: the task the record names, or the one carried over for its socket
/// (`owners::Owners::on_state`).
pub fn decode(raw: &RawState, owner: Option<Task>) -> Event {
    Event::State(StateEvent {
        ts_ns: raw.header.ts_ns,
        sk_addr: raw.sk_addr,
        netns: raw.netns,
        old_state: raw.old_state,
        new_state: raw.new_state,
        flow: SocketFlow::from_kernel(&raw.flow),
        task: owner.and_then(|t| t.process()),
    })
}

/// A state record as the programs write it, for the decoder's tests. `task` (`pid_tgid`,
/// command) is what the full header names at → SYN_SENT and → FIN_WAIT1; `None` gives the
/// light header of the softirq transitions.
#[cfg(test)]
pub(crate) fn raw_record(
    ts_ns: u64,
    sk_addr: u64,
    netns: u32,
    flow: twtrace_common::Flow,
    (old_state, new_state): (u8, u8),
    task: Option<(u64, &[u8])>,
) -> RawState {
    let mut header = twtrace_common::EventHeader {
        kind: twtrace_common::EventKind::State as u16,
        version: twtrace_common::SCHEMA_VERSION,
        ts_ns,
        ..Default::default()
    };
    if let Some((pid_tgid, comm)) = task {
        header.pid_tgid = pid_tgid;
        header.cgroup_id = 9;
        header.comm[..comm.len()].copy_from_slice(comm);
    }
    RawState { header, sk_addr, netns, old_state, new_state, _pad: [0; 2], flow }
}
