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
