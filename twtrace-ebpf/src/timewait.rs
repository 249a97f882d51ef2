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
//! the callback comparison is the first thing each program does.

use aya_ebpf::{helpers::bpf_jiffies64, macros::raw_tracepoint, programs::RawTracePointContext};
use twtrace_common::{
    timewait::{TimeWaitEvent, TimerPhase},
    EventKind, Flow, AF_INET, AF_INET6,
};

use crate::{config, header, read_at, reserve, submit};

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn tw_timer_start(ctx: RawTracePointContext) -> u32 {
    on_timer(&ctx, TimerPhase::Start);
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn tw_timer_cancel(ctx: RawTracePointContext) -> u32 {
    on_timer(&ctx, TimerPhase::Cancel);
    0
}

#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn tw_timer_expire(ctx: RawTracePointContext) -> u32 {
    on_timer(&ctx, TimerPhase::Expire);
    0
}

#[inline(always)]
fn on_timer(ctx: &RawTracePointContext, phase: TimerPhase) {
    let cfg = config();
    let timer: *const u8 = ctx.arg(0);
    let function: u64 = read_at(timer, cfg.offsets.timer_function);
    if function != cfg.tw_timer_handler || function == 0 {
        return;
    }
    let tw = timer.wrapping_sub(cfg.offsets.tw_timer as usize);
    let netns = netns_of(tw);
    if cfg.netns_filter != 0 && netns != cfg.netns_filter {
        return;
    }
    let Some(mut entry) = reserve::<TimeWaitEvent>() else {
        return;
    };
    let (flow, substate, timeout_jiffies) = if phase == TimerPhase::Start {
        let expires: u64 = read_at(timer, cfg.offsets.timer_expires);
        // SAFETY: helper without preconditions (5.5+).
        let now = unsafe { bpf_jiffies64() };
        (flow_of(tw), read_at::<u8>(tw, cfg.offsets.tw_substate), expires.wrapping_sub(now))
    } else {
        (Flow::default(), 0, 0)
    };
    entry.write(TimeWaitEvent {
        header: header(EventKind::TimeWait),
        tw_addr: tw as u64,
        timeout_jiffies,
        netns,
        phase: phase as u8,
        substate,
        _pad: [0; 2],
        flow,
    });
    submit(entry);
}

/// Network namespace inode of a socket (`sock_common.skc_net->ns.inum`), 0 if unknown.
#[inline(always)]
pub(crate) fn netns_of(sk: *const u8) -> u32 {
    let cfg = config();
    let net: u64 = read_at(sk, cfg.offsets.skc_net);
    if net == 0 {
        return 0;
    }
    read_at(net as *const u8, cfg.offsets.net_ns_inum)
}

/// The 4-tuple of a socket from its `sock_common` (full sockets and TIME_WAIT sockets alike).
#[inline(always)]
pub(crate) fn flow_of(sk: *const u8) -> Flow {
    let o = &config().offsets;
    let family: u16 = read_at(sk, o.skc_family);
    let mut flow = Flow {
        family,
        sport: read_at(sk, o.skc_num),
        dport: u16::from_be(read_at(sk, o.skc_dport)),
        ..Flow::default()
    };
    if family == AF_INET {
        let saddr: [u8; 4] = read_at(sk, o.skc_rcv_saddr);
        let daddr: [u8; 4] = read_at(sk, o.skc_daddr);
        flow.saddr[..4].copy_from_slice(&saddr);
        flow.daddr[..4].copy_from_slice(&daddr);
    } else if family == AF_INET6 {
        flow.saddr = read_at(sk, o.skc_v6_rcv_saddr);
        flow.daddr = read_at(sk, o.skc_v6_daddr);
    }
    flow
}
