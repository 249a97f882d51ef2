//! Port-search family: how long finding a local port takes and how it ends.
//!
//! The tracepoint-only backend cannot see the search itself. It times connect()'s from the
//! socket's move to SYN_SENT (just before the search) to the first arm of its retransmit timer
//! (just after the SYN is sent), or to its move back to CLOSE when the search failed: an
//! approximation that also counts sending the SYN. bind() port searches are invisible there.

use crate::{EventHeader, Flow};

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchOp {
    /// connect(): ephemeral port for a destination (`__inet_hash_connect`).
    Connect = 1,
    /// bind()/listen(): `inet_csk_get_port`.
    Bind = 2,
}

impl SearchOp {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Connect),
            2 => Some(Self::Bind),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSearchEvent {
    pub header: EventHeader,
    pub duration_ns: u64,
    /// 0 on success, else the positive errno (EADDRNOTAVAIL 99, EADDRINUSE 98, ...).
    pub errno: u32,
    /// Candidate ports examined; 0 when the backend cannot see them (tracepoint-only).
    pub candidates: u32,
    pub netns: u32,
    pub op: u8,
    /// 1 when measured from the state change before the search to the SYN after it (the
    /// tracepoint backend), not around the search itself.
    pub approximate: u8,
    pub _pad: [u8; 2],
    /// For connect(): destination in `daddr`/`dport`, chosen local port in `sport` (0 if
    /// unknown). For bind(): requested address/port in `saddr`/`sport`.
    pub flow: Flow,
}

const _: () = assert!(core::mem::size_of::<PortSearchEvent>() == 48 + 24 + 40);
