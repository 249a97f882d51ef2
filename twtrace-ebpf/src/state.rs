//! State family, tracepoint-only backend: the `inet_sock_set_state` raw tracepoint
//! (`TP_PROTO(const struct sock *sk, int oldstate, int newstate)`, 4.16+). On that backend the
//! hook also starts and fails connect()'s port searches (`portsearch`), for whichever of the
//! two families userspace gave it (`roles`).
//!
//! Only → SYN_SENT (connect()) and → FIN_WAIT1 (close(), shutdown()) run in the owning
//! process's context; their records carry the task. The other transitions run in softirq or
//! timers, where the running task is unrelated: userspace carries the owner over by socket
//! address, and to the TIME_WAIT socket by 4-tuple.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};
use twtrace_common::{
    EventKind, Flow,
    config::OFFSET_UNKNOWN,
    roles,
    state::{StateEvent, tcp_state},
};

use crate::{
    Direct, KernelRead, Probed, config, fill_flow, header, light_header, netns_of, netns_wanted, port_wanted,
    portsearch, read_at, reserve, roles_of, submit, take_birth_of,
};

const IPPROTO_TCP: u16 = 6;

/// tp_btf variant (5.5+, needs BTF): the socket is read with plain loads.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcp_state_change_btf(ctx: BtfTracePointContext) -> u32 {
    let roles = roles_of(roles::STATE_CHANGE_HOOK);
    on_state::<Direct>(ctx.arg(0), ctx.arg::<u64>(1) as u8, ctx.arg::<u64>(2) as u8, roles)
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcp_state_change(ctx: RawTracePointContext) -> u32 {
    let roles = roles_of(roles::STATE_CHANGE_HOOK);
    on_state::<Probed>(ctx.arg(0), ctx.arg::<u64>(1) as u8, ctx.arg::<u64>(2) as u8, roles)
}

/// fentry/kprobe backends: `tcp_set_state(sk, state)`; the old state is still in the socket.
/// fentry's `sk` is BTF-typed: plain loads. These hooks serve the state family alone.
#[fentry(function = "tcp_set_state")]
pub fn tcp_set_state_fentry(ctx: FEntryContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    on_state::<Direct>(sk, Direct::at(sk, config().offsets.skc_state), ctx.arg::<u64>(1) as u8, roles::STATE)
}

#[kprobe]
pub fn tcp_set_state_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(state)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    on_state::<Probed>(sk, read_at(sk, config().offsets.skc_state), state as u8, roles::STATE)
}

#[inline(always)]
fn on_state<R: KernelRead>(sk: *const u8, old_state: u8, new_state: u8, roles: u32) -> u32 {
    let connect_search = roles & roles::PORTSEARCH != 0
        && (new_state == tcp_state::SYN_SENT || (old_state == tcp_state::SYN_SENT && new_state == tcp_state::CLOSE));
    if roles & roles::STATE == 0 && !connect_search {
        return 0;
    }
    if !(new_state == tcp_state::SYN_SENT
        || old_state == tcp_state::SYN_SENT
        || new_state == tcp_state::FIN_WAIT1
        || new_state == tcp_state::CLOSE)
    {
        return 0;
    }
    let o = &config().offsets;
    // The tracepoint also fires for SCTP and MPTCP sockets. (Before 5.6 sk_protocol is a
    // bitfield whose offset is unknown here: then every socket passes.)
    if o.sk_protocol != OFFSET_UNKNOWN && R::at::<u16>(sk, o.sk_protocol) != IPPROTO_TCP {
        return 0;
    }
    let netns = netns_of::<R>(sk);
    if !netns_wanted(netns) {
        return 0;
    }
    let mut flow = Flow::default();
    fill_flow::<R>(&mut flow, sk);
    // skc_num is already 0 once the socket is unhashed (→ CLOSE); inet_sport is not. It lies
    // in `inet_sock`, beyond the `struct sock` the tp_btf argument is typed as: probe-read.
    if new_state == tcp_state::CLOSE {
        flow.sport = u16::from_be(read_at(sk, o.inet_sport));
    }
    // Before the port filter: the search's port is not known yet at its start.
    if connect_search {
        if new_state == tcp_state::SYN_SENT {
            portsearch::connect_begun(sk);
        } else {
            portsearch::connect_failed::<R>(sk, flow.sport);
        }
    }
    if roles & roles::STATE == 0 {
        return 0;
    }
    if !port_wanted(&flow) {
        return 0;
    }
    // The TIME_WAIT birth just reported on this CPU stands for this → CLOSE.
    if new_state == tcp_state::CLOSE && take_birth_of(&flow) {
        return 0;
    }
    let Some(mut entry) = reserve::<StateEvent>() else {
        return 0;
    };
    // SAFETY: reserved slot, fully written before submit or discarded.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.flow = flow;
    ev.header = if new_state == tcp_state::SYN_SENT || new_state == tcp_state::FIN_WAIT1 {
        header(EventKind::State)
    } else {
        light_header(EventKind::State)
    };
    ev.sk_addr = sk as u64;
    ev.netns = netns;
    ev.old_state = old_state;
    ev.new_state = new_state;
    ev._pad = [0; 2];
    submit(entry);
    0
}
