//! Drops family: packets freed with a reason userspace asked for (PAWS and the other RFC 7323
//! checks, netfilter's drops, the accept queue's overflow), with the TCP flow seen from this
//! host. Tracepoint-only backend: the `kfree_skb` raw tracepoint.
//!
//! `TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason[, struct sock
//! *rx_sk])`: the reason argument exists from 5.17. This program reads `args[2]`, so on older
//! kernels the attach itself fails (the context is larger than the tracepoint's arguments) and
//! userspace falls back to the netstat counters.

use aya_ebpf::{
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use twtrace_common::{AF_INET, AF_INET6, EventKind, Flow, drops::DropEvent};

use crate::{Probed, config, light_header, net_inum, netns_of, netns_wanted, port_wanted, read_at, reserve, submit};

const IPPROTO_TCP: u8 = 6;
/// `skb->transport_header` when unset.
const HEADER_UNSET: u16 = 0xffff;

/// 6.11+: the fourth argument is the receiving socket, which names the namespace when the
/// packet no longer has a device (TCP clears `skb->dev` before established-state processing:
/// PAWS drops on ESTABLISHED connections are seen here with `dev == NULL`).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn skb_drop_rx_sk(ctx: RawTracePointContext) -> u32 {
    let reason: u64 = ctx.arg(2);
    if !watched(reason) {
        return 0;
    }
    on_drop(ctx.arg(0), reason, ctx.arg(3));
    0
}

/// 5.17 to 6.10: no `rx_sk`; drops of packets without a device report namespace 0.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn skb_drop(ctx: RawTracePointContext) -> u32 {
    let reason: u64 = ctx.arg(2);
    if !watched(reason) {
        return 0;
    }
    on_drop(ctx.arg(0), reason, core::ptr::null());
    0
}

// fentry/kprobe backends: the function that fires the tracepoint. 6.11+:
// `sk_skb_reason_drop(sk, skb, reason)`; 5.17 to 6.10: `kfree_skb_reason(skb, reason)`.

#[fentry(function = "sk_skb_reason_drop")]
pub fn sk_skb_reason_drop_fentry(ctx: FEntryContext) -> u32 {
    let reason: u64 = ctx.arg(2);
    if watched(reason) {
        on_drop(ctx.arg(1), reason, ctx.arg(0));
    }
    0
}

#[fentry(function = "kfree_skb_reason")]
pub fn kfree_skb_reason_fentry(ctx: FEntryContext) -> u32 {
    let reason: u64 = ctx.arg(1);
    if watched(reason) {
        on_drop(ctx.arg(0), reason, core::ptr::null());
    }
    0
}

#[kprobe]
pub fn sk_skb_reason_drop_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(skb), Some(reason)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1), ctx.arg::<u64>(2))
    else {
        return 0;
    };
    if watched(reason) {
        on_drop(skb, reason, sk);
    }
    0
}

#[kprobe]
pub fn kfree_skb_reason_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(skb), Some(reason)) = (ctx.arg::<*const u8>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    if watched(reason) {
        on_drop(skb, reason, core::ptr::null());
    }
    0
}

#[inline(always)]
fn watched(reason: u64) -> bool {
    let cfg = config();
    // Bounded index first: the verifier needs it, and most frees are not drops we watch.
    let word = match reason / 64 {
        0 => cfg.drop_reasons[0],
        1 => cfg.drop_reasons[1],
        2 => cfg.drop_reasons[2],
        3 => cfg.drop_reasons[3],
        _ => return false,
    };
    (word >> (reason % 64)) & 1 == 1
}

#[inline(always)]
fn on_drop(skb: *const u8, reason: u64, rx_sk: *const u8) {
    let o = &config().offsets;
    let dev: u64 = read_at(skb, o.skb_dev);
    // A packet this host sends has no device before `ip_output` (after the netfilter OUTPUT
    // hook, where a full conntrack table drops a client's SYN: 5.10-6.18), but has its socket.
    let own_sk: u64 = read_at(skb, o.skb_sk);
    let netns = if dev != 0 {
        net_inum::<Probed>(read_at(dev as *const u8, o.dev_nd_net))
    } else if !rx_sk.is_null() {
        netns_of::<Probed>(rx_sk)
    } else if own_sk != 0 {
        netns_of::<Probed>(own_sk as *const u8)
    } else {
        0
    };
    // Before 6.11 a TCP drop after the socket lookup has neither a device (tcp_v4_rcv clears
    // skb->dev) nor an rx_sk: its namespace is unknown (0). Such drops pass the namespace
    // filter rather than vanish; they are reported with netns 0.
    if netns != 0 && !netns_wanted(netns) {
        return;
    }
    let head: u64 = read_at(skb, o.skb_head);
    let network: u16 = read_at(skb, o.skb_network_header);
    let transport: u16 = read_at(skb, o.skb_transport_header);
    let ip = (head as *const u8).wrapping_add(network as usize);
    let version = read_at::<u8>(ip, 0) >> 4;
    // The packet's addresses: its source in `daddr`, its destination in `saddr` (seen from
    // the receiving host); swapped below for a packet this host sent.
    let mut flow = Flow::default();
    let tcp = if version == 4 {
        let first: u8 = read_at(ip, 0);
        if read_at::<u8>(ip, 9) != IPPROTO_TCP {
            return;
        }
        flow.family = AF_INET;
        let saddr: [u8; 4] = read_at(ip, 12);
        let daddr: [u8; 4] = read_at(ip, 16);
        flow.daddr[..4].copy_from_slice(&saddr);
        flow.saddr[..4].copy_from_slice(&daddr);
        ip.wrapping_add(((first & 0x0f) as usize) * 4)
    } else if version == 6 {
        // Extension headers before TCP are not followed: such drops are not reported.
        if read_at::<u8>(ip, 6) != IPPROTO_TCP {
            return;
        }
        flow.family = AF_INET6;
        flow.daddr = read_at(ip, 8);
        flow.saddr = read_at(ip, 24);
        ip.wrapping_add(40)
    } else {
        return;
    };
    let tcp = if transport != HEADER_UNSET && transport > network {
        (head as *const u8).wrapping_add(transport as usize)
    } else {
        tcp
    };
    let source_port = u16::from_be(read_at(tcp, 0));
    let dest_port = u16::from_be(read_at(tcp, 2));
    // Sent by this host: the packet's socket is bound to its source port and connected to its
    // destination port (a received packet's socket, if early demux set one, is the reverse).
    let outgoing = own_sk != 0 && {
        let sk = own_sk as *const u8;
        read_at::<u16>(sk, o.skc_num) == source_port && u16::from_be(read_at(sk, o.skc_dport)) == dest_port
    };
    if outgoing {
        core::mem::swap(&mut flow.saddr, &mut flow.daddr);
        flow.sport = source_port;
        flow.dport = dest_port;
    } else {
        flow.dport = source_port;
        flow.sport = dest_port;
    }
    if !port_wanted(&flow) {
        return;
    }
    let Some(mut entry) = reserve::<DropEvent>() else {
        return;
    };
    entry.write(DropEvent {
        header: light_header(EventKind::Drop),
        reason: reason as u32,
        netns,
        flow,
        seq: u32::from_be(read_at(tcp, 4)),
        ack_seq: u32::from_be(read_at(tcp, 8)),
        tcp_flags: read_at(tcp, 13),
        outgoing: outgoing as u8,
        _pad: [0; 6],
    });
    submit(entry);
}
