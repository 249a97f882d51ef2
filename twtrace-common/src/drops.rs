//! Drops family: packets freed with a drop reason twtrace watches (PAWS and related, netfilter,
//! accept-queue overflow), with the flow from the packet's own headers, seen from this host.

use crate::{EventHeader, Flow};

/// Reasons are kernel enum values that differ between kernels: userspace resolves the names it
/// wants from BTF and sets their bits here. Values above this are ignored.
pub const MAX_REASONS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub header: EventHeader,
    /// `enum skb_drop_reason` value on the running kernel.
    pub reason: u32,
    pub netns: u32,
    /// From the packet, seen from this host: for a received packet `saddr`/`sport` are its
    /// destination, for one this host sent (`outgoing`) its source.
    pub flow: Flow,
    pub seq: u32,
    pub ack_seq: u32,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: u8,
    /// 1: a packet this host sent (its socket's local port is the packet's source port).
    pub outgoing: u8,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<DropEvent>() == 48 + 8 + 40 + 16);
