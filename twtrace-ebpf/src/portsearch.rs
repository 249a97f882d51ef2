//! Port-search family: how long finding a local port takes, which port, and how it ends.
//!
//! fentry/fexit and kprobe/kretprobe backends hook the search itself: `__inet_hash_connect`
//! (connect(); `__inet_check_established` once per candidate port) and `inet_csk_get_port`
//! (bind(), listen()).
//!
//! The tracepoint backend has no hook inside the search. It rides on two hooks other families
//! already run, so that it costs no extra program run per event (kernel facts, 5.10 to 6.18;
//! `tcp_v4_connect`, `tcp_v6_connect`):
//! - the socket's move to SYN_SENT, made by connect() right before `inet_hash_connect()`:
//!   the start (`connect_begun`, from the state hook);
//! - the first arm of the socket's retransmit timer (`tcp_write_timer`) by `tcp_connect()`,
//!   right after the SYN is sent: the end of a search that found a port (`retransmit_armed`,
//!   from the `timer_start` hook);
//! - the move back to CLOSE (`connect_failed`, from the state hook): the end of a failed
//!   connect(). Still without a local port, the search itself failed (EADDRNOTAVAIL when the
//!   range is exhausted).
//!
//! Events are marked approximate: the time includes sending the SYN (on loopback, the peer's
//! handling of it). bind() searches are not seen on that backend: no tracepoint marks them, and
//! syscall tracepoints would slow every system call on the host.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::Array,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use twtrace_common::{
    Counter, EventKind,
    portsearch::{PortSearchEvent, SearchOp},
};

use crate::{
    Direct, Fields, KernelRead, Probed, Snapshot, Typed, config, count, fill_flow_from, header, netns_in, netns_of,
    netns_wanted, port_wanted, reserve, submit,
};

/// EADDRNOTAVAIL: what a connect() gets when no local port is free toward its destination.
const EADDRNOTAVAIL: i32 = 99;

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
    /// 1: timed by the tracepoint backend (SYN_SENT to the SYN), see the module comment.
    approximate: u8,
    _pad: [u8; 4],
}

const SEARCH_SLOTS: u32 = 16_384;

/// Port searches under way, in slot `tid % SEARCH_SLOTS`. An array, not a hash map: the slot is
/// written in place, without the hash map's bucket lock and element allocation at the start
/// and its lookup and delete at the end (about 0.3 µs per connect() on 6.18). A search does
/// not nest in another on the same thread; two threads sharing a slot and searching at the
/// same time clash, and the earlier search is counted as lost.
#[map]
static SEARCHES: Array<Search> = Array::with_max_entries(SEARCH_SLOTS, 0);

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
    if netns_wanted(netns_of::<R>(sk)) {
        claim_slot(op, sk, requested_port, 0);
    }
}

/// Starts timing a search by this thread on `sk`.
#[inline(always)]
fn claim_slot(op: SearchOp, sk: *const u8, requested_port: u16, approximate: u8) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = SEARCHES.get_ptr_mut(tid % SEARCH_SLOTS) else { return };
    // SAFETY: an array slot; the only writers are threads mapping to it, and a clash is
    // detected by the thread id it holds.
    let slot = unsafe { &mut *slot };
    if slot.tid != 0 && slot.tid != tid {
        count(Counter::Lost);
    }
    // SAFETY: helper without preconditions.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    *slot =
        Search { start_ns, sk: sk as u64, tid, candidates: 0, requested_port, op: op as u8, approximate, _pad: [0; 4] };
}

/// This thread's search, taken out of its slot: `None` if the slot holds none of this
/// thread's (filtered out at the start, begun before tracing, or a clash), or, with `only_sk`,
/// a search on another socket.
#[inline(always)]
fn take_slot(only_sk: Option<u64>) -> Option<Search> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let slot = SEARCHES.get_ptr_mut(tid % SEARCH_SLOTS)?;
    // SAFETY: as in `claim_slot`.
    let slot = unsafe { &mut *slot };
    if slot.tid != tid || only_sk.is_some_and(|sk| sk != slot.sk) {
        return None;
    }
    slot.tid = 0;
    Some(*slot)
}

#[inline(always)]
fn count_candidate() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = SEARCHES.get_ptr_mut(tid % SEARCH_SLOTS) {
        // SAFETY: as in `claim_slot`; only this thread's own search is counted.
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
    if let Some(search) = take_slot(None) {
        report::<R>(&search, typed_sk, ret);
    }
}

// Tracepoint backend (see the module comment), called from the shared hooks.

/// `sk` moved to SYN_SENT in connect(): its port search starts. The caller checked the
/// namespace filter.
#[inline(always)]
pub(crate) fn connect_begun(sk: *const u8) {
    claim_slot(SearchOp::Connect, sk, 0, 1);
}

/// A `tcp_write_timer` timer was armed: if it is the retransmit timer of the socket this
/// thread is connecting, the SYN is out and the search found a port.
#[inline(always)]
pub(crate) fn retransmit_armed(timer: *const u8) {
    let sk = timer as u64 - u64::from(config().offsets.icsk_retransmit_timer);
    if let Some(search) = take_slot(Some(sk)) {
        report::<Probed>(&search, None, 0);
    }
}

/// `sk`, connecting on this thread, went from SYN_SENT back to CLOSE before its SYN: the
/// connect() failed. Without a local port (`sport`), in the search.
#[inline(always)]
pub(crate) fn connect_failed<R: KernelRead>(sk: *const u8, sport: u16) {
    if let Some(search) = take_slot(Some(sk as u64)) {
        report::<R>(&search, Some(sk), if sport == 0 { -EADDRNOTAVAIL } else { 0 });
    }
}

#[inline(always)]
fn fill_socket<F: Fields>(ev: &mut PortSearchEvent, sk: &F) {
    fill_flow_from(&mut ev.flow, sk);
    ev.netns = netns_in(sk);
}

/// Reports a finished search; `typed_sk` as in [`search_end`].
#[inline(always)]
fn report<R: KernelRead>(search: &Search, typed_sk: Option<*const u8>, ret: i32) {
    let Some(mut entry) = reserve::<PortSearchEvent>() else { return };
    // SAFETY: reserved slot, fully written before submit or discarded.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // Plain loads where the socket is typed; otherwise one copy of its `sock_common` instead
    // of a probe read per field (nine of them).
    match typed_sk {
        Some(sk) if R::PLAIN_LOADS => fill_socket(ev, &Typed::<R>::new(sk)),
        Some(sk) => fill_socket(ev, &Snapshot::take(sk)),
        None => fill_socket(ev, &Snapshot::take(search.sk as *const u8)),
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
    ev.approximate = search.approximate;
    ev._pad = [0; 2];
    submit(entry);
}
