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
    pub _pad: u8,
    /// The 4-tuple, read at `Start` only (zero for other phases). Who closed the connection
    /// is not here: userspace joins it from the state family's → FIN_WAIT1 record of the same
    /// 4-tuple (a kernel map for that join cost about 0.4 µs per birth on 6.18).
    pub flow: Flow,
}

const _: () = assert!(core::mem::size_of::<TimeWaitEvent>() == 48 + 24 + 40);
