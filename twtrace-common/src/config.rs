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
    /// Address of `tcp_write_timer`, the callback of a TCP socket's retransmit timer. Its first
    /// arm in connect() (`tcp_connect()`, once the SYN is out) ends a port search on the
    /// tracepoint backend. 0: unknown, that backend's port search is off.
    pub tcp_write_timer: u64,
    /// Only report sockets in this network namespace (inode number); 0 = all.
    pub netns_filter: u32,
    /// Ring-buffer fill level (bytes) above which a submit wakes userspace up. Below it records
    /// are submitted with BPF_RB_NO_WAKEUP and userspace drains on a short timer: per-event
    /// wake-ups cost about a quarter of loopback churn throughput (KERNEL-NOTES).
    pub wakeup_bytes: u32,
    /// Only report flows with this local or remote port; 0 = all.
    pub port_filter: u16,
    pub _pad: [u8; 6],
    /// Bit `n` set: report `kfree_skb` with drop reason `n` (see `drops::MAX_REASONS`).
    pub drop_reasons: [u64; 4],
    pub offsets: Offsets,
    /// The kernel functions whose call to `inet_twsk_deschedule_put` ends a TIME_WAIT socket
    /// early, and which path each is (see [`crate::timewait::KillPath`]); unused slots empty.
    pub kill_callers: [KillCaller; KILL_CALLERS],
}

/// How many kernel functions [`Config::kill_callers`] can name.
pub const KILL_CALLERS: usize = 8;

/// A kernel function's text, `[start, end)` from /proc/kallsyms (end: the next symbol), and
/// the [`crate::timewait::KillPath`] a call from it means.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillCaller {
    pub start: u64,
    pub end: u64,
    pub path: u8,
    pub _pad: [u8; 7],
}

impl KillCaller {
    pub const EMPTY: Self = Self { start: 0, end: 0, path: 0, _pad: [0; 7] };
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
    /// `inet_sock.inet_sport` (big-endian). Unlike `skc_num` it survives unhashing, so it is
    /// still right at FIN_WAIT2/LAST_ACK → CLOSE.
    pub inet_sport: u32,
    /// `sock.sk_protocol` (a u16 since 5.6).
    pub sk_protocol: u32,
    /// `sk_buff` members: `head` (pointer), `network_header` and `transport_header` (u16
    /// offsets from head), `dev` (pointer).
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    /// `net_device.nd_net` (a `possible_net_t`).
    pub dev_nd_net: u32,
    /// `sock_common.skc_state`: the old state at fentry/kprobe `tcp_set_state`.
    pub skc_state: u32,
    /// `inet_connection_sock.icsk_retransmit_timer`: where a socket's retransmit timer lies,
    /// to tell the connecting socket's timer from others with the same callback.
    pub icsk_retransmit_timer: u32,
    /// `tcp_timewait_sock.tw_ts_recent_stamp`: when the peer's last timestamp was taken, 0 if
    /// it sent none (the connection did not negotiate TCP timestamps).
    pub tw_ts_recent_stamp: u32,
    /// `sk_buff.sk`: the socket a packet belongs to. A packet this host sends has no device
    /// until after the netfilter OUTPUT hook (`ip_output` sets it), so a drop there is placed
    /// in its namespace, and told apart as outgoing, through this socket.
    pub skb_sk: u32,
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
        inet_sport: OFFSET_UNKNOWN,
        sk_protocol: OFFSET_UNKNOWN,
        skb_head: OFFSET_UNKNOWN,
        skb_network_header: OFFSET_UNKNOWN,
        skb_transport_header: OFFSET_UNKNOWN,
        skb_dev: OFFSET_UNKNOWN,
        dev_nd_net: OFFSET_UNKNOWN,
        skc_state: OFFSET_UNKNOWN,
        icsk_retransmit_timer: OFFSET_UNKNOWN,
        tw_ts_recent_stamp: OFFSET_UNKNOWN,
        skb_sk: OFFSET_UNKNOWN,
    };
}

impl Config {
    pub const DEFAULT: Self = Self {
        tw_timer_handler: 0,
        tcp_write_timer: 0,
        netns_filter: 0,
        wakeup_bytes: 64 * 1024,
        port_filter: 0,
        _pad: [0; 6],
        drop_reasons: [0; 4],
        offsets: Offsets::UNKNOWN,
        kill_callers: [KillCaller::EMPTY; KILL_CALLERS],
    };
}

// No implicit padding anywhere (aya::Pod): an even number of offsets keeps Config a multiple
// of 8 bytes.
const _: () = assert!(core::mem::size_of::<Offsets>() == 24 * 4);
const _: () = assert!(core::mem::size_of::<Config>() == 32 + 32 + 24 * 4 + KILL_CALLERS * 24);
