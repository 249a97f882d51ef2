//! TIME_WAIT family: what the kernel reports about `inet_timewait_sock` timers.
//!
//! The kernel side reports raw timer phases; userspace turns them into births, re-arms and
//! deaths (see `twtrace::probes::timewait`), because telling "expired" from "killed early"
//! needs to know what the same CPU did next.

use crate::{EventHeader, Flow};

/// Phase of a TIME_WAIT socket's timer.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerPhase {
    /// `timer_start`: a TIME_WAIT socket was scheduled (a birth, or a re-arm after `mod_timer`).
    Start = 1,
    /// `timer_cancel`: the timer was detached; either it is about to run (natural expiry), or
    /// the socket is being killed early, or `mod_timer` is re-arming it.
    Cancel = 2,
    /// `timer_expire_entry` / `tw_timer_handler`: the timer callback runs: natural expiry.
    Expire = 3,
    /// fentry/kprobe backends: `__inet_twsk_schedule(tw, timeo, rearm = true)`.
    Rearm = 4,
    /// fentry/kprobe backends: `inet_twsk_deschedule_put(tw)`: removed before expiry.
    Kill = 5,
}

impl TimerPhase {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Start),
            2 => Some(Self::Cancel),
            3 => Some(Self::Expire),
            4 => Some(Self::Rearm),
            5 => Some(Self::Kill),
            _ => None,
        }
    }
}

/// `flags` of a `Start`: the socket's `tw_ts_recent_stamp` was read (its offset is known on
/// this kernel).
pub const TW_TS_KNOWN: u8 = 1 << 0;
/// `flags` of a `Start`: `tw_ts_recent_stamp` is set, i.e. the peer sent TCP timestamps on this
/// connection. `tcp_twsk_unique()` lets a connect() take over a TIME_WAIT socket's 4-tuple
/// (`tcp_tw_reuse`) only when it is (every kernel since 3.x): without it, reuse cannot work
/// toward that peer whatever the sysctl says.
pub const TW_TS_SEEN: u8 = 1 << 1;

/// Which kernel path removed a TIME_WAIT socket before its timer ran: the caller of
/// `inet_twsk_deschedule_put`, found in the kernel stack at `Kill` (fentry/kprobe) or at
/// `Cancel` (tracepoints; a cancel that turns out to be an expiry has none). Callers, the same
/// on 5.10-6.18:
/// - `__inet_hash_connect`, `__inet_check_established`, `__inet6_check_established`: a
///   connect() took its 4-tuple (`tcp_tw_reuse`).
/// - `tcp_timewait_state_process`: an RST arrived (RFC 1337's "TIME-WAIT assassination",
///   unless `tcp_rfc1337=1`; in the FIN_WAIT2 substate always).
/// - `tcp_v4_rcv`, `tcp_v6_rcv`: a segment for its 4-tuple: a SYN that opened a new connection
///   over it (`TCP_TW_SYN`), or one it answered with a reset (`TCP_TW_RST`).
/// - `inet_twsk_purge`: its network namespace was torn down.
/// - `tcp_abort`: destroyed on request, through sock_diag's `SOCK_DESTROY` (`ss -K`) or
///   `bpf_sock_destroy()` from a BPF iterator (6.5+). Only since 6.0 (af9784d007d8 "tcp: diag:
///   add support for TIME_WAIT sockets to tcp_abort()"); before, `tcp_abort()` refuses a
///   TIME_WAIT socket with EOPNOTSUPP and it lives on.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPath {
    /// No known caller in the stack (or no stack: an expiry's cancel, an old kernel).
    Unknown = 0,
    Reused = 1,
    Reset = 2,
    Incoming = 3,
    NamespaceExit = 4,
    Aborted = 5,
}

impl KillPath {
    pub const fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Reused,
            2 => Self::Reset,
            3 => Self::Incoming,
            4 => Self::NamespaceExit,
            5 => Self::Aborted,
            _ => Self::Unknown,
        }
    }
}

/// Kernel stack frames searched for a [`KillPath`] caller: from a tracepoint the stack holds
/// the BPF and timer frames (up to 7 on 6.18) before `inet_twsk_deschedule_put`'s caller.
pub const KILL_STACK_DEPTH: usize = 12;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitEvent {
    pub header: EventHeader,
    /// Kernel address of the `inet_timewait_sock`: identifies the socket while it lives.
    pub tw_addr: u64,
    /// Timeout in jiffies at `Start`/`Rearm` (`expires - jiffies`, or the `timeo` argument).
    pub timeout_jiffies: u64,
    /// Network namespace inode of the socket (0 if this kernel's layout is unknown).
    pub netns: u32,
    pub phase: u8,
    /// `tw_substate` at `Start`: TCP_TIME_WAIT (6) or TCP_FIN_WAIT2 (5).
    pub substate: u8,
    /// At `Start`: [`TW_TS_KNOWN`], [`TW_TS_SEEN`].
    pub flags: u8,
    /// At `Kill` and `Cancel`: the [`KillPath`] found in the kernel stack.
    pub path: u8,
    /// The 4-tuple, read at `Start` only (zero for other phases). Who closed the connection
    /// is not here: userspace joins it from the state family's → FIN_WAIT1 record of the same
    /// 4-tuple (a kernel map for that join cost about 0.4 µs per birth on 6.18).
    pub flow: Flow,
}

const _: () = assert!(core::mem::size_of::<TimeWaitEvent>() == 48 + 24 + 40);
