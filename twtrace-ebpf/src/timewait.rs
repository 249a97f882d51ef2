//! TIME_WAIT family, tracepoint-only backend: the timers of `inet_timewait_sock`.
//!
//! Kernel facts (checked on 5.10, 6.1, 6.12, 6.18):
//! - Every TIME_WAIT socket arms `tw->tw_timer` with callback `tw_timer_handler`; `timer_start`
//!   with that callback is its birth (or a re-arm: `mod_timer` on a pending timer fires
//!   `timer_cancel` then `timer_start` back to back).
//! - Natural expiry: `__run_timers` detaches the timer (`timer_cancel`), then calls it
//!   (`timer_expire_entry`). An early kill (4-tuple reused, `inet_twsk_deschedule_put`) fires
//!   `timer_cancel` alone.
//! - The first argument of all three tracepoints is the `struct timer_list *` on every version
//!   (later arguments changed in 5.x), so raw tracepoints read only `args[0]`.
//!
//! `timer_start`/`timer_cancel` fire for every kernel timer (about 16 per loopback connection):
//! the callback comparison is the first thing each program does. On the tracepoint backend
//! `timer_start` also ends connect()'s port searches (`portsearch`, the first arm of a TCP
//! retransmit timer), for whichever of the two families userspace gave it (`roles`).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_stack, bpf_jiffies64},
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};
use twtrace_common::{
    EventKind, Flow,
    config::{KILL_CALLERS, OFFSET_UNKNOWN},
    roles,
    timewait::{KILL_STACK_DEPTH, KillPath, TW_TS_KNOWN, TW_TS_SEEN, TimeWaitEvent, TimerPhase},
};

use crate::{
    Direct, Fields, KernelRead, Probed, Snapshot, Typed, config, fill_flow_from, light_header, netns_in, netns_wanted,
    note_birth, port_wanted, portsearch, reserve, roles_of, submit,
};

// Two variants of the tracepoint backend: tp_btf (5.5+, needs BTF) filters with plain loads
// from the typed `timer_list *`; raw tracepoints need a probe read for the same test. The
// filter runs about 16 times per connection, so that read is most of the family's cost.

#[btf_tracepoint(function = "timer_start")]
pub fn tw_timer_start_btf(ctx: BtfTracePointContext) -> u32 {
    on_timer::<Direct, _>(&ctx, ctx.arg(0), TimerPhase::Start);
    0
}

#[btf_tracepoint(function = "timer_cancel")]
pub fn tw_timer_cancel_btf(ctx: BtfTracePointContext) -> u32 {
    on_timer::<Direct, _>(&ctx, ctx.arg(0), TimerPhase::Cancel);
    0
}

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn tw_timer_expire_btf(ctx: BtfTracePointContext) -> u32 {
    on_timer::<Direct, _>(&ctx, ctx.arg(0), TimerPhase::Expire);
    0
}

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn tw_timer_start(ctx: RawTracePointContext) -> u32 {
    on_timer::<Probed, _>(&ctx, ctx.arg(0), TimerPhase::Start);
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn tw_timer_cancel(ctx: RawTracePointContext) -> u32 {
    on_timer::<Probed, _>(&ctx, ctx.arg(0), TimerPhase::Cancel);
    0
}

#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn tw_timer_expire(ctx: RawTracePointContext) -> u32 {
    on_timer::<Probed, _>(&ctx, ctx.arg(0), TimerPhase::Expire);
    0
}

// fentry and kprobe backends: the TIME_WAIT functions themselves, one call per event instead
// of filtering every kernel timer. fentry arguments are BTF-typed: those programs read the
// socket with plain loads (`Direct`), except from a timer, where the socket's address is
// computed. `__inet_twsk_schedule(tw, timeo, rearm)` (exported since
// 4.x; `inet_twsk_schedule`/`inet_twsk_reschedule` are inline wrappers) arms it,
// `tw_timer_handler(timer)` is the expiry, `inet_twsk_deschedule_put(tw)` the early removal
// (4-tuple reuse, tcp_tw_reuse, namespace teardown).

// 6.9+: tcp_time_wait() arms the timer through inet_twsk_hashdance_schedule(tw, sk, hashinfo,
// timeo), in the same file as __inet_twsk_schedule, which the compiler may inline there (7.2
// does): births come from the former, re-arms (external callers) from the latter, and its
// rearm = false calls are ignored so an out-of-line copy cannot count a birth twice.

#[fentry(function = "inet_twsk_hashdance_schedule")]
pub fn tw_hashdance_fentry(ctx: FEntryContext) -> u32 {
    on_schedule::<Direct>(ctx.arg(0), ctx.arg::<u64>(3) as i32, false);
    0
}

#[fentry(function = "__inet_twsk_schedule")]
pub fn tw_rearm_fentry(ctx: FEntryContext) -> u32 {
    if ctx.arg::<u64>(2) as u8 != 0 {
        on_schedule::<Direct>(ctx.arg(0), ctx.arg::<u64>(1) as i32, true);
    }
    0
}

#[kprobe]
pub fn tw_hashdance_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(tw), Some(timeo)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(3)) {
        on_schedule::<Probed>(tw, timeo as i32, false);
    }
    0
}

#[kprobe]
pub fn tw_rearm_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(tw), Some(timeo), Some(rearm)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2)) {
        if rearm as u8 != 0 {
            on_schedule::<Probed>(tw, timeo as i32, true);
        }
    }
    0
}

// Before 6.9: tcp_time_wait() calls inet_twsk_schedule(), an inline wrapper of
// __inet_twsk_schedule(tw, timeo, rearm = false), from another file: births and re-arms both
// arrive here.

#[fentry(function = "__inet_twsk_schedule")]
pub fn tw_schedule_fentry(ctx: FEntryContext) -> u32 {
    on_schedule::<Direct>(ctx.arg(0), ctx.arg::<u64>(1) as i32, ctx.arg::<u64>(2) as u8 != 0);
    0
}

#[fentry(function = "tw_timer_handler")]
pub fn tw_expire_fentry(ctx: FEntryContext) -> u32 {
    let timer: *const u8 = ctx.arg(0);
    on_tw::<Probed>(timer.wrapping_sub(config().offsets.tw_timer as usize), TimerPhase::Expire, 0, 0);
    0
}

#[fentry(function = "inet_twsk_deschedule_put")]
pub fn tw_kill_fentry(ctx: FEntryContext) -> u32 {
    on_tw::<Direct>(ctx.arg(0), TimerPhase::Kill, 0, kill_path(&ctx));
    0
}

// Before the timer rework of `inet_twsk_deschedule_put()` (seen in Debian's 5.10.262 and
// 6.1.192), `inet_twsk_purge()` (a namespace's teardown) has that small function inlined, from
// the same file, so those kills never reach a hook on it. Every kill deletes the socket's
// timer first, inlined caller or not: these programs catch kills there, at
// `timer_delete_sync(&tw->tw_timer)` (`del_timer_sync()` is an inline wrapper of it since
// 6.2, and in those stable builds, which took the rename), or `del_timer_sync` itself where
// it is still the function. They run for every such call in the kernel (few: TCP's own
// timers use the non-sync variant), and the stack still names the caller.

#[fentry(function = "timer_delete_sync")]
pub fn tw_kill_timer_fentry(ctx: FEntryContext) -> u32 {
    on_timer_delete::<Direct, _>(&ctx, ctx.arg(0));
    0
}

#[kprobe]
pub fn tw_kill_timer_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(timer) = ctx.arg::<*const u8>(0) {
        on_timer_delete::<Probed, _>(&ctx, timer);
    }
    0
}

#[inline(always)]
fn on_timer_delete<R: KernelRead, C: EbpfContext>(ctx: &C, timer: *const u8) {
    let cfg = config();
    let function: u64 = R::at(timer, cfg.offsets.timer_function);
    if function == 0 || function != cfg.tw_timer_handler {
        return;
    }
    let tw = timer.wrapping_sub(cfg.offsets.tw_timer as usize);
    on_tw::<Probed>(tw, TimerPhase::Kill, 0, kill_path(ctx));
}

#[kprobe]
pub fn tw_schedule_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(tw), Some(timeo), Some(rearm)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
    on_schedule::<Probed>(tw, timeo as i32, rearm as u8 != 0);
    0
}

#[kprobe]
pub fn tw_expire_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(timer) = ctx.arg::<*const u8>(0) {
        on_tw::<Probed>(timer.wrapping_sub(config().offsets.tw_timer as usize), TimerPhase::Expire, 0, 0);
    }
    0
}

#[kprobe]
pub fn tw_kill_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(tw) = ctx.arg::<*const u8>(0) {
        on_tw::<Probed>(tw, TimerPhase::Kill, 0, kill_path(&ctx));
    }
    0
}

#[inline(always)]
fn on_schedule<R: KernelRead>(tw: *const u8, timeo: i32, rearm: bool) {
    let phase = if rearm { TimerPhase::Rearm } else { TimerPhase::Start };
    on_tw::<R>(tw, phase, timeo.max(0) as u64, 0);
}

/// `R` reads the timer itself; the TIME_WAIT socket around it is always probe-read (its
/// address is computed, not typed). Only `timer_start` is shared with the port search: the
/// cancel and expiry hooks serve the TIME_WAIT family alone.
#[inline(always)]
fn on_timer<R: KernelRead, C: EbpfContext>(ctx: &C, timer: *const u8, phase: TimerPhase) {
    let cfg = config();
    let function: u64 = R::at(timer, cfg.offsets.timer_function);
    if function == 0 {
        return;
    }
    let shared = phase == TimerPhase::Start;
    if function == cfg.tcp_write_timer {
        if shared && roles_of(roles::TIMER_START_HOOK) & roles::PORTSEARCH != 0 {
            portsearch::retransmit_armed(timer);
        }
        return;
    }
    if function != cfg.tw_timer_handler || (shared && roles_of(roles::TIMER_START_HOOK) & roles::TIMEWAIT == 0) {
        return;
    }
    // The socket starts before the typed timer pointer, where the verifier allows no plain
    // load: it is probe-read, like on every other backend.
    let tw = timer.wrapping_sub(cfg.offsets.tw_timer as usize);
    let timeout_jiffies = if phase == TimerPhase::Start {
        let expires: u64 = R::at(timer, cfg.offsets.timer_expires);
        // SAFETY: helper without preconditions (5.5+).
        expires.wrapping_sub(unsafe { bpf_jiffies64() })
    } else {
        0
    };
    // A cancel is either an expiry about to run or a kill: the stack tells a kill's path.
    let path = if phase == TimerPhase::Cancel { kill_path(ctx) } else { 0 };
    on_tw::<Probed>(tw, phase, timeout_jiffies, path);
}

/// The [`KillPath`] of the first frame of this kernel stack that lies in one of the callers
/// userspace named (`Config::kill_callers`), innermost first: the caller of
/// `inet_twsk_deschedule_put` comes before the functions that called it. bpf_get_stack works
/// from kprobes, tracepoints and (5.5+) fentry, which unwind through their trampoline.
#[inline(always)]
fn kill_path<C: EbpfContext>(ctx: &C) -> u8 {
    let mut frames = [0u64; KILL_STACK_DEPTH];
    // SAFETY: the buffer is ours and `size` bytes long; flags 0 is the kernel stack.
    let got = unsafe { bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), (KILL_STACK_DEPTH * 8) as u32, 0) };
    if got <= 0 {
        return KillPath::Unknown as u8;
    }
    let callers = &config().kill_callers;
    for ip in frames {
        if ip == 0 {
            break;
        }
        for caller in callers.iter().take(KILL_CALLERS) {
            if caller.start <= ip && ip < caller.end {
                return caller.path;
            }
        }
    }
    KillPath::Unknown as u8
}

/// Reports one phase of a TIME_WAIT socket; `Start` and `Rearm` carry the 4-tuple, substate
/// and timeout.
#[inline(always)]
fn on_tw<R: KernelRead>(tw: *const u8, phase: TimerPhase, timeout_jiffies: u64, path: u8) {
    // A birth reads the 4-tuple, the namespace pointer and the substate: without plain
    // loads, one copy of `sock_common` replaces six of those helper calls. A death reads
    // only the namespace.
    if (phase == TimerPhase::Start || phase == TimerPhase::Rearm) && !R::PLAIN_LOADS {
        report_tw(tw, &Snapshot::take(tw), phase, timeout_jiffies, path);
    } else {
        report_tw(tw, &Typed::<R>::new(tw), phase, timeout_jiffies, path);
    }
}

/// Whether the connection that became this TIME_WAIT socket had the peer's timestamps
/// (`tw_ts_recent_stamp`, copied from the full socket by `tcp_time_wait()` before the socket
/// is scheduled or hashed: 5.10-6.18). The member lies past `inet_timewait_sock`, beyond what
/// a typed pointer lets the verifier load: probe-read on every backend.
#[inline(always)]
fn timestamps_of(tw: *const u8) -> u8 {
    let offset = config().offsets.tw_ts_recent_stamp;
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    let stamp: u32 = Probed::at(tw, offset);
    TW_TS_KNOWN | if stamp != 0 { TW_TS_SEEN } else { 0 }
}

#[inline(always)]
fn report_tw<F: Fields>(tw: *const u8, sk: &F, phase: TimerPhase, timeout_jiffies: u64, path: u8) {
    let cfg = config();
    let netns = netns_in(sk);
    if !netns_wanted(netns) {
        return;
    }
    let Some(mut entry) = reserve::<TimeWaitEvent>() else {
        return;
    };
    // SAFETY: `entry` is a reserved, exclusively owned TimeWaitEvent-sized slot; every field is
    // written below before submit (or the slot is discarded).
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = light_header(EventKind::TimeWait);
    ev.tw_addr = tw as u64;
    ev.netns = netns;
    ev.phase = phase as u8;
    ev.flags = 0;
    ev.path = path;
    if phase == TimerPhase::Start || phase == TimerPhase::Rearm {
        fill_flow_from(&mut ev.flow, sk);
        // Only a start carries the 4-tuple (and so can be port-filtered); later phases are
        // matched to it in userspace by socket address, and unmatched ones are dropped there.
        if !port_wanted(&ev.flow) {
            entry.discard(0);
            return;
        }
        ev.timeout_jiffies = timeout_jiffies;
        ev.substate = sk.field(cfg.offsets.tw_substate);
        if phase == TimerPhase::Start {
            ev.flags = timestamps_of(tw);
            note_birth(&ev.flow);
        }
    } else {
        ev.flow = Flow::default();
        ev.timeout_jiffies = 0;
        ev.substate = 0;
    }
    submit(entry);
}
