//! Types shared by the kernel programs (`twtrace-ebpf`) and userspace (`twtrace`).
//!
//! Every type here is `#[repr(C)]` with fixed-width fields and explicit padding, so both sides
//! agree on the layout byte for byte; sizes are checked at compile time below. The ring buffer
//! carries one record per event: an [`EventHeader`] followed by the family's payload.
#![no_std]

pub mod config;
pub mod drops;
pub mod portsearch;
pub mod state;
pub mod timewait;

pub use config::Config;

/// On the tracepoint backend some hooks serve several families: the state change serves the
/// state family and the start of a connect()'s port search, `timer_start` the TIME_WAIT
/// family and the search's end. One program runs per hook (a second would double the
/// dispatch cost, which is most of what these hooks cost), and userspace tells it which
/// families it serves through the `ROLES` map, once it knows which backend each family got.
pub mod roles {
    /// Bits of a hook's roles.
    pub const TIMEWAIT: u32 = 1;
    pub const PORTSEARCH: u32 = 2;
    pub const STATE: u32 = 4;

    /// Indices in `ROLES`: `inet_sock_set_state` (tp_btf or raw) and `timer_start`.
    pub const STATE_CHANGE_HOOK: u32 = 0;
    pub const TIMER_START_HOOK: u32 = 1;
    pub const SHARED_HOOKS: u32 = 2;
}

/// Bumped whenever any record layout changes; userspace refuses records of another version.
pub const SCHEMA_VERSION: u8 = 2;

/// Which family (and which record type) follows the header.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    TimeWait = 1,
    State = 2,
    Drop = 3,
    PortSearch = 4,
}

impl EventKind {
    pub const fn from_u16(value: u16) -> Option<Self> {
        match value {
            1 => Some(Self::TimeWait),
            2 => Some(Self::State),
            3 => Some(Self::Drop),
            4 => Some(Self::PortSearch),
            _ => None,
        }
    }
}

/// Common prefix of every ring-buffer record.
///
/// `pid_tgid`, `cgroup_id` and `comm` describe the task that was running when the hook fired,
/// and are filled only where that task acted on the socket (connect(), close(), bind()). Events
/// raised in softirq or timer context (TIME_WAIT timers, drops, most state changes) leave them
/// 0: the running task there is unrelated, and userspace carries the socket's owner over from
/// its earlier records instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub version: u8,
    pub _pad0: u8,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    pub pid_tgid: u64,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}

/// A TCP 4-tuple as the kernel stores it. Addresses are in network byte order (IPv4 in the
/// first four bytes); ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flow {
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Index of the kernel-side counters in the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records that did not fit in the ring buffer (`bpf_ringbuf_reserve` failed).
    Lost = 0,
}

pub const COUNTER_SLOTS: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and arrays of integers, and have
    // no implicit padding (checked by the size assertions below).
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::timewait::TimeWaitEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::state::StateEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::drops::DropEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::portsearch::PortSearchEvent {}
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);
const _: () = assert!(core::mem::size_of::<Flow>() == 40);
