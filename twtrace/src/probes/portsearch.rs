//! Port-search family: backends and decoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use twtrace_common::{
    AF_INET, AF_INET6,
    portsearch::{PortSearchEvent as RawSearch, SearchOp as RawOp},
};

use super::{Backend, BackendPlan, Hook};
use crate::event::{Event, PortSearchEvent, Process, SearchOp};

const TRACEPOINT_HOOKS: &[Hook] = &[
    Hook::Tracepoint { program: "connect_enter", category: "syscalls", name: "sys_enter_connect" },
    Hook::Tracepoint { program: "connect_exit", category: "syscalls", name: "sys_exit_connect" },
    Hook::Tracepoint { program: "bind_enter", category: "syscalls", name: "sys_enter_bind" },
    Hook::Tracepoint { program: "bind_exit", category: "syscalls", name: "sys_exit_bind" },
];

pub const BACKENDS: &[BackendPlan] = &[
    BackendPlan { backend: Backend::Fentry, hooks: Err("not implemented in this version (__inet_hash_connect fexit)") },
    BackendPlan {
        backend: Backend::Kprobe,
        hooks: Err("not implemented in this version (__inet_hash_connect kretprobe)"),
    },
    BackendPlan { backend: Backend::Tracepoint, hooks: Ok(TRACEPOINT_HOOKS) },
];

pub fn decode(raw: &RawSearch) -> Option<Event> {
    let op = match RawOp::from_u8(raw.op)? {
        RawOp::Connect => SearchOp::Connect,
        RawOp::Bind => SearchOp::Bind,
    };
    let f = &raw.flow;
    let (addr, port) = if op == SearchOp::Connect { (f.daddr, f.dport) } else { (f.saddr, f.sport) };
    let ip: Option<IpAddr> = match f.family {
        AF_INET => Some(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()),
        AF_INET6 => Some(Ipv6Addr::from(addr).into()),
        _ => None,
    };
    Some(Event::PortSearch(PortSearchEvent {
        ts_ns: raw.header.ts_ns,
        op,
        duration_ns: raw.duration_ns,
        errno: raw.errno,
        candidates: (raw.approximate == 0).then_some(raw.candidates),
        approximate: raw.approximate != 0,
        netns: raw.netns,
        addr: ip.map(|ip| SocketAddr::new(ip, port)),
        process: Process::from_kernel(raw.header.pid_tgid, raw.header.cgroup_id, &raw.header.comm),
    }))
}
