//! State family: the TCP state transitions the aggregator needs, filtered in the kernel.
//!
//! Reported: connect() starting (→ SYN_SENT), its outcome (SYN_SENT → *), active closes
//! (→ FIN_WAIT1), and final closes (→ CLOSE). Everything else (about half of all transitions)
//! stays in the kernel.

use crate::{EventHeader, Flow};

/// `include/net/tcp_states.h`, unchanged since 2.6.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateEvent {
    pub header: EventHeader,
    /// Kernel address of the `struct sock`: ties one socket's transitions together.
    pub sk_addr: u64,
    pub netns: u32,
    pub old_state: u8,
    pub new_state: u8,
    pub _pad: [u8; 2],
    /// Local port 0 on SYN_SENT → CLOSE means connect() failed before a port was found: the
    /// ephemeral range toward that destination is exhausted (EADDRNOTAVAIL).
    pub flow: Flow,
}

const _: () = assert!(core::mem::size_of::<StateEvent>() == 48 + 16 + 40);
