//! The one event stream every source produces (live probes, later recordings) and every sink
//! consumes. Nothing here knows about BPF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// A TCP connection's two endpoints, from the point of view of the socket's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketFlow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl SocketFlow {
    /// From the kernel's layout; `None` for a family other than IPv4/IPv6 (or an unread socket).
    pub fn from_kernel(flow: &twtrace_common::Flow) -> Option<Self> {
        let (local, remote): (IpAddr, IpAddr) = match flow.family {
            twtrace_common::AF_INET => {
                let s: [u8; 4] = flow.saddr[..4].try_into().ok()?;
                let d: [u8; 4] = flow.daddr[..4].try_into().ok()?;
                (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into())
            }
            twtrace_common::AF_INET6 => (Ipv6Addr::from(flow.saddr).into(), Ipv6Addr::from(flow.daddr).into()),
            _ => return None,
        };
        Some(Self { local: SocketAddr::new(local, flow.sport), remote: SocketAddr::new(remote, flow.dport) })
    }

    pub fn ip_version(&self) -> u8 {
        if self.local.is_ipv4() {
            4
        } else {
            6
        }
    }
}

/// Where a TIME_WAIT socket's timer says it stands (`tw_substate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimeWaitSubstate {
    TimeWait,
    /// An orphaned FIN_WAIT2 socket handed to a timewait sock (`tcp_fin_timeout` applies).
    FinWait2,
    Other(u8),
}

impl TimeWaitSubstate {
    pub fn from_kernel(value: u8) -> Self {
        // include/net/tcp_states.h: TCP_FIN_WAIT2 = 5, TCP_TIME_WAIT = 6 (stable since 2.6).
        match value {
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            other => Self::Other(other),
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::TimeWait => "TIME_WAIT".into(),
            Self::FinWait2 => "FIN_WAIT2".into(),
            Self::Other(v) => format!("state{v}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeathReason {
    /// The timer ran out: the socket lived its full TIME_WAIT period.
    Expired,
    /// Removed before its timer ran: the 4-tuple was reused (a new SYN, or `tcp_tw_reuse` on
    /// connect), or the namespace went away.
    Killed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    TimeWait(TimeWaitEvent),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimeWaitEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Sequence number twtrace gave this socket at birth: unique for the run, unlike the kernel
    /// address, which is reused as soon as the socket is freed.
    pub tw_id: u64,
    pub flow: Option<SocketFlow>,
    pub netns: u32,
    pub change: TimeWaitChange,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TimeWaitChange {
    Birth {
        substate: TimeWaitSubstate,
        timeout_ms: u64,
    },
    /// The timer was pushed out again (a retransmitted FIN, or FIN_WAIT2 becoming TIME_WAIT).
    Rearm {
        substate: TimeWaitSubstate,
        timeout_ms: u64,
    },
    Death {
        reason: DeathReason,
        lifetime_ns: u64,
    },
}
