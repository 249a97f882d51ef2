//! State family: backends and decoding of the TCP state transitions the kernel reports.

use twtrace_common::state::StateEvent as RawState;

use super::{Backend, BackendPlan, Hook};
use crate::event::{Event, Process, SocketFlow, StateEvent};

const TRACEPOINT_HOOKS: &[Hook] =
    &[Hook::RawTracepoint { program: "tcp_state_change", tracepoint: "inet_sock_set_state" }];

pub const BACKENDS: &[BackendPlan] = &[
    BackendPlan { backend: Backend::Fentry, hooks: Err("not implemented in this version (tcp_set_state fentry)") },
    BackendPlan { backend: Backend::Kprobe, hooks: Err("not implemented in this version (tcp_set_state kprobe)") },
    BackendPlan { backend: Backend::Tracepoint, hooks: Ok(TRACEPOINT_HOOKS) },
];

pub fn decode(raw: &RawState) -> Event {
    Event::State(StateEvent {
        ts_ns: raw.header.ts_ns,
        sk_addr: raw.sk_addr,
        netns: raw.netns,
        old_state: raw.old_state,
        new_state: raw.new_state,
        flow: SocketFlow::from_kernel(&raw.flow),
        task: Process::from_kernel(raw.header.pid_tgid, raw.header.cgroup_id, &raw.header.comm),
    })
}
