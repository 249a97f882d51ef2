//! Port-search family, tracepoint-only backend: connect() and bind() system calls.
//!
//! Without kprobes or fentry the port search itself (`__inet_hash_connect`,
//! `inet_csk_get_port`) is invisible; the syscall around it gives its latency and errno
//! (EADDRNOTAVAIL when the ephemeral range toward a destination is exhausted, EADDRINUSE on
//! bind). Events are marked approximate. Syscall tracepoint layouts are fixed: `__syscall_nr` at
//! 8, then one 8-byte slot per argument from 16; `ret` at 16 on exit.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::Array,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use twtrace_common::{
    AF_INET, AF_INET6, Counter, EventKind, Flow,
    portsearch::{PortSearchEvent, SearchOp},
};

use crate::{
    Direct, KernelRead, Probed, config, count, fill_flow, header, net_inum, netns_of, netns_wanted, port_wanted,
    reserve, submit,
};

#[derive(Clone, Copy)]
struct InFlight {
    start_ns: u64,
    /// The thread in the call; 0: the slot is free.
    tid: u32,
    netns: u32,
    op: u8,
    _pad: [u8; 7],
    flow: Flow,
}

const IN_FLIGHT_SLOTS: u32 = 16_384;

/// connect()/bind() calls under way, in slot `tid % IN_FLIGHT_SLOTS`. An array, not a hash
/// map: the slot is written in place, without the hash map's bucket lock and element
/// allocation at entry and its lookup and delete at exit (about 0.3 µs per connect() on 6.18).
/// Two threads whose ids share a slot and that are inside connect() at the same time clash:
/// the later call takes the slot and the earlier one goes unmeasured, counted as lost.
#[map]
static IN_FLIGHT: Array<InFlight> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

// The `_btf` variants find the caller's namespace with plain loads from the BTF-typed current
// task (5.11+); the others with probe reads.

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn connect_enter_btf(ctx: TracePointContext) -> u32 {
    on_enter::<Direct>(&ctx, SearchOp::Connect);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn bind_enter_btf(ctx: TracePointContext) -> u32 {
    on_enter::<Direct>(&ctx, SearchOp::Bind);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn connect_enter(ctx: TracePointContext) -> u32 {
    on_enter::<Probed>(&ctx, SearchOp::Connect);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn connect_exit(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn bind_enter(ctx: TracePointContext) -> u32 {
    on_enter::<Probed>(&ctx, SearchOp::Bind);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn bind_exit(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[inline(always)]
fn on_enter<R: KernelRead>(ctx: &TracePointContext, op: SearchOp) {
    let sockaddr = record_slot(ctx, 24);
    let Some(user) = read_sockaddr(sockaddr as *const u8) else { return };
    let family = user.family;
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let netns = current_netns::<R>();
    if !netns_wanted(netns) {
        return;
    }
    let port = u16::from_be(user.port_be);
    let mut flow = Flow { family, ..Flow::default() };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&user.v4_addr);
    } else {
        addr = user.v6_addr;
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
    let Some(slot) = IN_FLIGHT.get_ptr_mut(tid % IN_FLIGHT_SLOTS) else { return };
    // SAFETY: an array slot; the only writers are threads mapping to it, and a clash is
    // detected by the thread id it holds.
    let slot = unsafe { &mut *slot };
    if slot.tid != 0 && slot.tid != tid {
        count(Counter::Lost);
    }
    // SAFETY: helper without preconditions.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    *slot = InFlight { start_ns, tid, netns, op: op as u8, _pad: [0; 7], flow };
}

/// The start of a `sockaddr_in` or `sockaddr_in6` (without the v6 scope id).
#[repr(C)]
#[derive(Clone, Copy)]
struct UserSockaddr {
    family: u16,
    port_be: u16,
    /// `sin_addr`, or `sin6_flowinfo`.
    v4_addr: [u8; 4],
    v6_addr: [u8; 16],
}

/// One user-memory read for the common case (each read is a helper call with its own
/// uaccess setup); a `sockaddr_in` (16 bytes) at the very end of a mapping makes the long
/// read fault, and then the short one is taken.
#[inline(always)]
fn read_sockaddr(sockaddr: *const u8) -> Option<UserSockaddr> {
    // SAFETY: user memory read through the helper, which tolerates bad pointers.
    if let Ok(whole) = unsafe { bpf_probe_read_user(sockaddr.cast::<UserSockaddr>()) } {
        return Some(whole);
    }
    let short: [u16; 4] = unsafe { bpf_probe_read_user(sockaddr.cast()) }.ok()?;
    let mut v4_addr = [0u8; 4];
    v4_addr[..2].copy_from_slice(&short[2].to_ne_bytes());
    v4_addr[2..].copy_from_slice(&short[3].to_ne_bytes());
    Some(UserSockaddr { family: short[0], port_be: short[1], v4_addr, v6_addr: [0; 16] })
}

/// An 8-byte slot of the syscall tracepoint's record, read with a plain load: the verifier
/// checks context reads against the record's size, so no helper call is needed (aya's
/// `read_at` makes one).
#[inline(always)]
fn record_slot(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: offsets 16 and 24 lie inside both syscall records (8-byte aligned argument
    // slots); the verifier rejects the program otherwise.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) }
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = IN_FLIGHT.get_ptr_mut(tid % IN_FLIGHT_SLOTS) else { return };
    // SAFETY: as in `on_enter`.
    let slot = unsafe { &mut *slot };
    // Not ours: a call the entry program filtered out (not AF_INET/AF_INET6, another
    // namespace or port), or one begun before tracing started, or a clash.
    if slot.tid != tid {
        return;
    }
    slot.tid = 0;
    let call = *slot;
    let ret = record_slot(ctx, 16) as i64;
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
fn current_netns<R: KernelRead>() -> u32 {
    let o = &config().offsets;
    let nsproxy: u64 = R::at(R::current_task(), o.task_nsproxy);
    if nsproxy == 0 {
        return 0;
    }
    net_inum::<R>(R::at(nsproxy as *const u8, o.nsproxy_net_ns))
}

// fentry/fexit and kprobe/kretprobe backends: the port search itself.
// connect(): `__inet_hash_connect(death_row, sk, port_offset, [hash_port0,] check_established)`
// calls `check_established` (`__inet_check_established`, `__inet6_check_established`) once per
// candidate port that has a bound bucket; bind()/listen(): `inet_csk_get_port(sk, snum)`.
// fexit finds the return value after the last argument: 2025 kernels added `hash_port0`, so
// there is one fexit program per arity and userspace loads the one the BTF prototype matches.

#[derive(Clone, Copy)]
struct Search {
    start_ns: u64,
    sk: u64,
    /// The thread in the search; 0: the slot is free.
    tid: u32,
    candidates: u32,
    requested_port: u16,
    op: u8,
    _pad: [u8; 5],
}

/// Port searches under way, in slot `tid % IN_FLIGHT_SLOTS`: an array, for the reason
/// `IN_FLIGHT` is one (no bucket lock, allocation, lookup and delete per connect()). A search
/// does not nest in another on the same thread; two threads sharing a slot and searching at
/// the same time clash, and the earlier search is counted as lost.
#[map]
static SEARCHES: Array<Search> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

// fentry/fexit arguments are BTF-typed: the socket is read with plain loads, from the
// argument itself at exit rather than from the pointer saved at entry (which has lost its
// type). kretprobes have no arguments: they probe-read the saved one.

#[fentry(function = "__inet_hash_connect")]
pub fn hash_connect_fentry(ctx: FEntryContext) -> u32 {
    search_begin::<Direct>(SearchOp::Connect, ctx.arg(1), 0);
    0
}

#[fexit(function = "__inet_hash_connect")]
pub fn hash_connect_fexit4(ctx: FExitContext) -> u32 {
    search_end::<Direct>(Some(ctx.arg(1)), ctx.arg::<u64>(4) as i32);
    0
}

#[fexit(function = "__inet_hash_connect")]
pub fn hash_connect_fexit5(ctx: FExitContext) -> u32 {
    search_end::<Direct>(Some(ctx.arg(1)), ctx.arg::<u64>(5) as i32);
    0
}

#[fentry(function = "__inet_check_established")]
pub fn check_established_fentry(_ctx: FEntryContext) -> u32 {
    count_candidate();
    0
}

#[fentry(function = "__inet6_check_established")]
pub fn check_established6_fentry(_ctx: FEntryContext) -> u32 {
    count_candidate();
    0
}

#[fentry(function = "inet_csk_get_port")]
pub fn get_port_fentry(ctx: FEntryContext) -> u32 {
    search_begin::<Direct>(SearchOp::Bind, ctx.arg(0), ctx.arg::<u64>(1) as u16);
    0
}

#[fexit(function = "inet_csk_get_port")]
pub fn get_port_fexit(ctx: FExitContext) -> u32 {
    search_end::<Direct>(Some(ctx.arg(0)), ctx.arg::<u64>(2) as i32);
    0
}

#[kprobe]
pub fn hash_connect_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(1) {
        search_begin::<Probed>(SearchOp::Connect, sk, 0);
    }
    0
}

#[kretprobe]
pub fn hash_connect_kretprobe(ctx: RetProbeContext) -> u32 {
    search_end::<Probed>(None, ctx.ret::<u64>() as i32);
    0
}

#[kprobe]
pub fn check_established_kprobe(_ctx: ProbeContext) -> u32 {
    count_candidate();
    0
}

#[kprobe]
pub fn get_port_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(port)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(1)) {
        search_begin::<Probed>(SearchOp::Bind, sk, port as u16);
    }
    0
}

#[kretprobe]
pub fn get_port_kretprobe(ctx: RetProbeContext) -> u32 {
    search_end::<Probed>(None, ctx.ret::<u64>() as i32);
    0
}

#[inline(always)]
fn search_begin<R: KernelRead>(op: SearchOp, sk: *const u8, requested_port: u16) {
    if !netns_wanted(netns_of::<R>(sk)) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = SEARCHES.get_ptr_mut(tid % IN_FLIGHT_SLOTS) else { return };
    // SAFETY: an array slot; the only writers are threads mapping to it, and a clash is
    // detected by the thread id it holds.
    let slot = unsafe { &mut *slot };
    if slot.tid != 0 && slot.tid != tid {
        count(Counter::Lost);
    }
    // SAFETY: helper without preconditions.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    *slot = Search { start_ns, sk: sk as u64, tid, candidates: 0, requested_port, op: op as u8, _pad: [0; 5] };
}

#[inline(always)]
fn count_candidate() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = SEARCHES.get_ptr_mut(tid % IN_FLIGHT_SLOTS) {
        // SAFETY: as in `search_begin`; only this thread's own search is counted.
        unsafe {
            if (*slot).tid == tid {
                (*slot).candidates += 1;
            }
        }
    }
}

/// `typed_sk`: the socket as the exit hook's own typed argument (fexit), read with `R`;
/// `None`: the one saved at entry, probe-read (kretprobe).
#[inline(always)]
fn search_end<R: KernelRead>(typed_sk: Option<*const u8>, ret: i32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = SEARCHES.get_ptr_mut(tid % IN_FLIGHT_SLOTS) else { return };
    // SAFETY: as in `search_begin`.
    let slot = unsafe { &mut *slot };
    // Not ours: filtered out at entry (another namespace), begun before tracing, or a clash.
    if slot.tid != tid {
        return;
    }
    slot.tid = 0;
    let search = *slot;
    let Some(mut entry) = reserve::<PortSearchEvent>() else { return };
    // SAFETY: reserved slot, fully written before submit or discarded.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    match typed_sk {
        Some(sk) => {
            fill_flow::<R>(&mut ev.flow, sk);
            ev.netns = netns_of::<R>(sk);
        }
        None => {
            let sk = search.sk as *const u8;
            fill_flow::<Probed>(&mut ev.flow, sk);
            ev.netns = netns_of::<Probed>(sk);
        }
    }
    if search.op == SearchOp::Bind as u8 && ret != 0 {
        // A failed bind leaves no port in the socket: report the one asked for.
        ev.flow.sport = search.requested_port;
    }
    if !port_wanted(&ev.flow) {
        entry.discard(0);
        return;
    }
    ev.header = header(EventKind::PortSearch);
    ev.duration_ns = ev.header.ts_ns.saturating_sub(search.start_ns);
    // inet_csk_get_port returns a positive "in use" flag on some kernels: any non-zero is a
    // failure, reported as EADDRINUSE there.
    ev.errno = if ret < 0 {
        (-ret) as u32
    } else if ret > 0 {
        98
    } else {
        0
    };
    ev.candidates = search.candidates;
    ev.op = search.op;
    ev.approximate = 0;
    ev._pad = [0; 2];
    submit(entry);
}
