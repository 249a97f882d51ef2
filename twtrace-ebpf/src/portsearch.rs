//! Port-search family, tracepoint-only backend: connect() and bind() system calls.
//!
//! Without kprobes or fentry the port search itself (`__inet_hash_connect`,
//! `inet_csk_get_port`) is invisible; the syscall around it gives its latency and errno
//! (EADDRNOTAVAIL when the ephemeral range toward a destination is exhausted, EADDRINUSE on
//! bind). Events are marked approximate. Syscall tracepoint layouts are fixed: `__syscall_nr` at
//! 8, then one 8-byte slot per argument from 16; `ret` at 16 on exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_get_current_task},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use twtrace_common::{
    AF_INET, AF_INET6, EventKind, Flow,
    portsearch::{PortSearchEvent, SearchOp},
};

use crate::{config, header, net_inum, netns_wanted, port_wanted, read_at, reserve, submit};

#[derive(Clone, Copy)]
struct InFlight {
    start_ns: u64,
    netns: u32,
    op: u8,
    _pad: [u8; 3],
    flow: Flow,
}

/// connect()/bind() calls under way, by thread id.
#[map]
static IN_FLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(16_384, 0);

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn connect_enter(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, SearchOp::Connect);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn connect_exit(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn bind_enter(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, SearchOp::Bind);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn bind_exit(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, op: SearchOp) {
    // SAFETY: offsets inside the syscall tracepoint record.
    let Ok(sockaddr) = (unsafe { ctx.read_at::<u64>(24) }) else { return };
    let sockaddr = sockaddr as *const u8;
    // SAFETY: user memory read through the helper, which tolerates bad pointers.
    let user = |offset: usize| sockaddr.wrapping_add(offset);
    let Ok(family) = (unsafe { bpf_probe_read_user(user(0).cast::<u16>()) }) else { return };
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let netns = current_netns();
    if !netns_wanted(netns) {
        return;
    }
    let port = u16::from_be(unsafe { bpf_probe_read_user(user(2).cast::<u16>()) }.unwrap_or(0));
    let mut flow = Flow { family, ..Flow::default() };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        let v4: [u8; 4] = unsafe { bpf_probe_read_user(user(4).cast()) }.unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&v4);
    } else {
        addr = unsafe { bpf_probe_read_user(user(8).cast()) }.unwrap_or([0; 16]);
    }
    if op == SearchOp::Connect {
        flow.daddr = addr;
        flow.dport = port;
    } else {
        flow.saddr = addr;
        flow.sport = port;
    }
    if !port_wanted(&flow) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: helper without preconditions.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let _ = IN_FLIGHT.insert(tid, InFlight { start_ns, netns, op: op as u8, _pad: [0; 3], flow }, 0);
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out before the remove.
    let Some(call) = (unsafe { IN_FLIGHT.get(tid) }).copied() else { return };
    let _ = IN_FLIGHT.remove(tid);
    // SAFETY: `ret` slot of the exit record.
    let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    let Some(mut entry) = reserve::<PortSearchEvent>() else { return };
    let header = header(EventKind::PortSearch);
    entry.write(PortSearchEvent {
        duration_ns: header.ts_ns.saturating_sub(call.start_ns),
        header,
        errno: if ret < 0 { (-ret) as u32 } else { 0 },
        candidates: 0,
        netns: call.netns,
        op: call.op,
        approximate: 1,
        _pad: [0; 2],
        flow: call.flow,
    });
    submit(entry);
}

/// Network namespace of the current task (`current->nsproxy->net_ns->ns.inum`).
#[inline(always)]
fn current_netns() -> u32 {
    let o = &config().offsets;
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nsproxy: u64 = read_at(task, o.task_nsproxy);
    if nsproxy == 0 {
        return 0;
    }
    net_inum(read_at(nsproxy as *const u8, o.nsproxy_net_ns))
}
