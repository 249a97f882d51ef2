//! Settings userspace writes into the kernel object before load (`EbpfLoader::override_global`).
//!
//! Rust eBPF programs get no CO-RE relocations, so every struct offset the programs use is
//! computed in userspace from the running kernel's BTF and passed here. An offset of
//! [`OFFSET_UNKNOWN`] means "this kernel has no such member": the program leaves the field 0.

pub const OFFSET_UNKNOWN: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address of `tw_timer_handler` (from /proc/kallsyms): the timer callback of every
    /// TIME_WAIT socket, used to pick their timers out of all kernel timers.
    pub tw_timer_handler: u64,
    /// Only report sockets in this network namespace (inode number); 0 = all.
    pub netns_filter: u32,
    /// Ring-buffer fill level (bytes) above which a submit wakes userspace up. Below it records
    /// are submitted with BPF_RB_NO_WAKEUP and userspace drains on a short timer: per-event
    /// wake-ups cost about a quarter of loopback churn throughput (KERNEL-NOTES).
    pub wakeup_bytes: u32,
    pub offsets: Offsets,
}

/// Byte offsets of the kernel struct members the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `timer_list.function`.
    pub timer_function: u32,
    /// `timer_list.expires`.
    pub timer_expires: u32,
    /// `inet_timewait_sock.tw_timer`.
    pub tw_timer: u32,
    /// `inet_timewait_sock.tw_substate`.
    pub tw_substate: u32,
    /// `sock_common` members (an `inet_timewait_sock` starts with a `sock_common`).
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `sock_common.skc_net` (a `possible_net_t`, i.e. a `struct net *`).
    pub skc_net: u32,
    /// `net.ns.inum`: the network namespace's inode number.
    pub net_ns_inum: u32,
    pub _pad: u32,
}

impl Offsets {
    pub const UNKNOWN: Self = Self {
        timer_function: OFFSET_UNKNOWN,
        timer_expires: OFFSET_UNKNOWN,
        tw_timer: OFFSET_UNKNOWN,
        tw_substate: OFFSET_UNKNOWN,
        skc_daddr: OFFSET_UNKNOWN,
        skc_rcv_saddr: OFFSET_UNKNOWN,
        skc_dport: OFFSET_UNKNOWN,
        skc_num: OFFSET_UNKNOWN,
        skc_family: OFFSET_UNKNOWN,
        skc_v6_daddr: OFFSET_UNKNOWN,
        skc_v6_rcv_saddr: OFFSET_UNKNOWN,
        skc_net: OFFSET_UNKNOWN,
        net_ns_inum: OFFSET_UNKNOWN,
        _pad: 0,
    };
}

impl Config {
    pub const DEFAULT: Self =
        Self { tw_timer_handler: 0, netns_filter: 0, wakeup_bytes: 64 * 1024, offsets: Offsets::UNKNOWN };
}

const _: () = assert!(core::mem::size_of::<Offsets>() == 14 * 4);
const _: () = assert!(core::mem::size_of::<Config>() == 16 + 14 * 4);
