//! The one event stream every source produces (live probes, later recordings) and every sink
//! consumes. Nothing here knows about BPF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;
pub use twtrace_common::state::tcp_state;
use twtrace_common::timewait::KillPath;

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
        if self.local.is_ipv4() { 4 } else { 6 }
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
        match value {
            tcp_state::FIN_WAIT2 => Self::FinWait2,
            tcp_state::TIME_WAIT => Self::TimeWait,
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
    /// Removed before its timer ran, by a path not known: no kernel stack (a recording made
    /// before twtrace named paths), or a caller twtrace does not know.
    Killed,
    /// Removed early: a connect() took its 4-tuple (`tcp_tw_reuse`).
    Reused,
    /// Removed early: an RST arrived for it (RFC 1337's "TIME-WAIT assassination", which
    /// `tcp_rfc1337=1` refuses in the TIME_WAIT substate).
    Reset,
    /// Removed early: a segment for its 4-tuple, a SYN that opened a new connection over it
    /// (the server side of 4-tuple reuse), or one it answered with a reset.
    Incoming,
    /// Removed early: its network namespace was torn down.
    NamespaceExit,
    /// Removed early: destroyed on request (`tcp_abort()`: `ss -K` through sock_diag, or
    /// `bpf_sock_destroy()`; TIME_WAIT sockets only since 6.0).
    Aborted,
}

impl DeathReason {
    /// An early death by `path` (see [`KillPath`] for the kernel callers behind each).
    pub fn killed(path: KillPath) -> Self {
        match path {
            KillPath::Unknown => Self::Killed,
            KillPath::Reused => Self::Reused,
            KillPath::Reset => Self::Reset,
            KillPath::Incoming => Self::Incoming,
            KillPath::NamespaceExit => Self::NamespaceExit,
            KillPath::Aborted => Self::Aborted,
        }
    }

    /// Removed before its timer ran out, by whatever path.
    pub fn is_early(self) -> bool {
        self != Self::Expired
    }

    /// How it reads in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Killed => "killed",
            Self::Reused => "reused",
            Self::Reset => "reset",
            Self::Incoming => "incoming",
            Self::NamespaceExit => "namespace_exit",
            Self::Aborted => "aborted",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    TimeWait(TimeWaitEvent),
    State(StateEvent),
    Drop(DropEvent),
    PortSearch(PortSearchEvent),
    /// Changes of the kernel's TCP counters (/proc/net/netstat) since the previous sample.
    Netstat(NetstatEvent),
    /// The kernel found the ring buffer full and dropped records: part of the stream, so every
    /// sink (and every recording) shows the loss.
    Lost(LostEvent),
    /// The kernel skipped runs of twtrace's programs (one was already running on that CPU):
    /// each may have been an event. In the stream for the same reason as [`Event::Lost`].
    Skipped(SkippedEvent),
    /// A namespace described (new, or gone): before the first event that names it.
    Namespace(NamespaceEvent),
    /// An annotation someone added to the running stream (`twtrace mark`): a deploy, a
    /// config change. The flight recorder writes it; every reader sees it in order.
    Mark(MarkEvent),
}

impl Event {
    /// CLOCK_MONOTONIC nanoseconds of the event (of the sample, for counters and losses).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::TimeWait(e) => e.ts_ns,
            Event::State(e) => e.ts_ns,
            Event::Drop(e) => e.ts_ns,
            Event::PortSearch(e) => e.ts_ns,
            Event::Netstat(e) => e.ts_ns,
            Event::Lost(e) => e.ts_ns,
            Event::Skipped(e) => e.ts_ns,
            Event::Namespace(e) => e.ts_ns,
            Event::Mark(e) => e.ts_ns,
        }
    }

    /// The timestamp itself, for readers that move a recording onto another clock mapping
    /// (segments of different runs read as one stream).
    pub fn ts_ns_mut(&mut self) -> &mut u64 {
        match self {
            Event::TimeWait(e) => &mut e.ts_ns,
            Event::State(e) => &mut e.ts_ns,
            Event::Drop(e) => &mut e.ts_ns,
            Event::PortSearch(e) => &mut e.ts_ns,
            Event::Netstat(e) => &mut e.ts_ns,
            Event::Lost(e) => &mut e.ts_ns,
            Event::Skipped(e) => &mut e.ts_ns,
            Event::Namespace(e) => &mut e.ts_ns,
            Event::Mark(e) => &mut e.ts_ns,
        }
    }

    /// The network namespace the event happened in; `None` where it names none (or 0: a
    /// drop before 6.11, seen before the socket lookup).
    pub fn netns(&self) -> Option<u32> {
        let netns = match self {
            Event::TimeWait(e) => e.netns,
            Event::State(e) => e.netns,
            Event::Drop(e) => e.netns,
            Event::PortSearch(e) => e.netns,
            Event::Netstat(e) => e.netns,
            Event::Namespace(e) => e.namespace.netns,
            Event::Lost(_) | Event::Skipped(_) | Event::Mark(_) => 0,
        };
        (netns != 0).then_some(netns)
    }
}

/// A mark (`twtrace mark TEXT`). Its author comes from the kernel (the control socket's peer
/// credentials), not from what the client says, so a mark's uid can be trusted as far as root
/// can be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkEvent {
    /// When the recorder took it, on the stream's clock (orders it among the events).
    pub ts_ns: u64,
    /// The same moment in wall-clock time (Unix ns), as the recorder read it: what reports
    /// print, whatever clock mapping a reader later applies to the stream.
    pub unix_ns: u64,
    /// Who made it, as the kernel told the recorder.
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    /// At most [`MarkEvent::MAX_TEXT`] bytes, one line, no control characters.
    pub text: String,
}

impl MarkEvent {
    /// Longest text in bytes: a label on a chart, not a log message.
    pub const MAX_TEXT: usize = 200;

    /// `text` as a mark may carry it: control characters (newlines, escapes that would redraw
    /// a terminal reading the report) become spaces, runs of blanks one space, trimmed, cut to
    /// [`Self::MAX_TEXT`] bytes at a character boundary. `None` when nothing is left.
    pub fn sanitize(text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len().min(Self::MAX_TEXT));
        for c in text.chars().map(|c| if c.is_control() || c.is_whitespace() { ' ' } else { c }) {
            if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
                continue;
            }
            if out.len() + c.len_utf8() > Self::MAX_TEXT {
                break;
            }
            out.push(c);
        }
        let trimmed = out.trim_end();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// "uid 0 pid 4242", or what is known of it.
    pub fn author(&self) -> String {
        let uid = self.uid.map_or("uid ?".into(), |u| format!("uid {u}"));
        let pid = self.pid.map_or(String::new(), |p| format!(" pid {p}"));
        format!("{uid}{pid}")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostEvent {
    /// When userspace noticed (the kernel does not time its losses).
    pub ts_ns: u64,
    /// Records lost since the previous report.
    pub new: u64,
    /// Records lost since tracing started.
    pub total: u64,
}

/// Runs of twtrace's programs the kernel skipped since the previous report (the programs'
/// `recursion_misses`: a softirq hitting a hook while the program runs in process context,
/// counted since 5.12; a kprobe over any running BPF program, counted since 6.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedEvent {
    /// When userspace read the programs' statistics.
    pub ts_ns: u64,
    pub new: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetstatEvent {
    pub ts_ns: u64,
    /// 0 when sampled in twtrace's own namespace without a filter.
    pub netns: u32,
    pub deltas: Vec<(String, i64)>,
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
    /// The process that closed the connection, carried over from the full socket (TIME_WAIT
    /// sockets have no owner of their own). `None` when the close was not seen.
    pub owner: Option<Process>,
    pub change: TimeWaitChange,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TimeWaitChange {
    Birth {
        substate: TimeWaitSubstate,
        timeout_ms: u64,
        /// Whether the peer sent TCP timestamps on the connection (`tw_ts_recent_stamp`):
        /// without them `tcp_tw_reuse` cannot hand this socket's 4-tuple to a new connect().
        /// `None` when not read (a kernel without the member, a recording before format 4).
        timestamps: Option<bool>,
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

/// A task as the kernel saw it (pid = thread group id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
}

impl Process {
    /// `None` for pid 0 (the idle task, or "unknown").
    pub fn from_kernel(pid_tgid: u64, cgroup_id: u64, comm: &[u8; 16]) -> Option<Self> {
        if pid_tgid == 0 {
            return None;
        }
        Some(Self { pid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32, comm: Comm::from_kernel(comm), cgroup_id })
    }
}

/// A task's command name, kept inline: the kernel's `comm` holds at most 15 bytes, and most
/// events name a task, so a heap string per event was a tenth of twtrace's own CPU at 25k
/// connections/s. Always valid UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm {
    len: u8,
    bytes: [u8; Comm::CAPACITY],
}

impl Comm {
    /// `TASK_COMM_LEN` (16) less its terminating NUL.
    pub const CAPACITY: usize = 15;

    /// The kernel's NUL-terminated bytes; a byte that is not UTF-8 becomes `?` (the length
    /// stays within the kernel's).
    pub fn from_kernel(raw: &[u8; 16]) -> Self {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len()).min(Self::CAPACITY);
        let mut comm = Self { len: 0, bytes: [0; Self::CAPACITY] };
        // Nearly every command name is ASCII: one check of the word and one copy, where the
        // UTF-8 validation below cost the decoder about a tenth of its instructions.
        if raw[..end].is_ascii() {
            comm.push(&raw[..end]);
            return comm;
        }
        let mut rest = &raw[..end];
        while !rest.is_empty() {
            let (valid, bad) = match std::str::from_utf8(rest) {
                Ok(all) => (all.len(), 0),
                Err(e) => (e.valid_up_to(), e.error_len().unwrap_or(rest.len() - e.valid_up_to())),
            };
            comm.push(&rest[..valid]);
            if bad > 0 {
                comm.push(b"?");
            }
            rest = &rest[valid + bad..];
        }
        comm
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = usize::from(self.len);
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 sequences are ever stored (`from_kernel`, `From<&str>`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Longer names (from a damaged recording) are cut at the last whole character that fits.
impl From<&str> for Comm {
    fn from(name: &str) -> Self {
        let mut end = name.len().min(Self::CAPACITY);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut comm = Self { len: 0, bytes: [0; Self::CAPACITY] };
        comm.push(&name.as_bytes()[..end]);
        comm
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// By name, as the strings it replaced sorted.
impl Ord for Comm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Comm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `include/net/tcp_states.h` names.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        tcp_state::ESTABLISHED => "ESTABLISHED",
        tcp_state::SYN_SENT => "SYN_SENT",
        tcp_state::SYN_RECV => "SYN_RECV",
        tcp_state::FIN_WAIT1 => "FIN_WAIT1",
        tcp_state::FIN_WAIT2 => "FIN_WAIT2",
        tcp_state::TIME_WAIT => "TIME_WAIT",
        tcp_state::CLOSE => "CLOSE",
        tcp_state::CLOSE_WAIT => "CLOSE_WAIT",
        tcp_state::LAST_ACK => "LAST_ACK",
        tcp_state::LISTEN => "LISTEN",
        tcp_state::CLOSING => "CLOSING",
        tcp_state::NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// A socket that existed before tracing started (from sock_diag, as `ss` reads them): the
/// picture a source starts from, and a recording's first chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct ExistingSocket {
    /// The network namespace it was read in (0: unknown, in recordings before namespaces).
    pub netns: u32,
    pub flow: SocketFlow,
    /// `include/net/tcp_states.h` state ([`tcp_state`]).
    pub state: u8,
    /// For TIME_WAIT: milliseconds left on its timer.
    pub expires_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateEvent {
    pub ts_ns: u64,
    pub sk_addr: u64,
    pub netns: u32,
    pub old_state: u8,
    pub new_state: u8,
    /// Local port 0 with SYN_SENT → CLOSE: connect() found no free local port.
    pub flow: Option<SocketFlow>,
    /// The task running at the transition: the owner for connect() and close(), unrelated for
    /// transitions driven by incoming packets (softirq).
    pub task: Option<Process>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DropEvent {
    pub ts_ns: u64,
    /// Kernel name without the `SKB_DROP_REASON_` prefix, e.g. `TCP_RFC7323_TW_PAWS`: stable
    /// across kernels, unlike the number.
    pub reason: String,
    pub reason_code: u32,
    pub netns: u32,
    /// Seen from this host: `local` is this host's end (a received packet's destination, a
    /// sent packet's source).
    pub flow: Option<SocketFlow>,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack_seq: u32,
    /// A packet this host sent (a connect()'s own SYN dropped on its way out), not received.
    pub outgoing: bool,
}

/// TCP flag bits (`include/net/tcp.h`, TCPHDR_*).
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

impl DropEvent {
    pub fn class(&self) -> Option<DropClass> {
        DropClass::of_reason(&self.reason)
    }

    /// A connection's opening SYN (not the SYN-ACK): the drop cost a connection attempt.
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    }
}

/// What a watched drop reason means for a connection. Reasons are matched by name: the
/// numbers differ between kernels, the names (`SKB_DROP_REASON_*`) do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropClass {
    /// A timestamp (RFC 7323) check: PAWS and its relatives (5.17+; `TCP_RFC7323_TW_PAWS`
    /// 6.16+).
    Paws,
    /// Netfilter's verdict (`NETFILTER_DROP`, 5.18+): a rule's `drop`, or connection tracking
    /// with no room for a new entry ("nf_conntrack: table full, dropping packet").
    Netfilter,
    /// The handshake's last ACK found the listener's accept queue full (`TCP_LISTEN_OVERFLOW`,
    /// 6.15+). A SYN refused for the same reason is consumed, not dropped, on 5.10-6.18: only
    /// `ListenOverflows` counts it.
    ListenOverflow,
}

impl DropClass {
    pub fn of_reason(name: &str) -> Option<Self> {
        if name.starts_with("TCP_RFC7323_") || name.contains("PAWS") {
            Some(Self::Paws)
        } else if name == "NETFILTER_DROP" {
            Some(Self::Netfilter)
        } else if name == "TCP_LISTEN_OVERFLOW" {
            Some(Self::ListenOverflow)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchOp {
    Connect,
    Bind,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortSearchEvent {
    pub ts_ns: u64,
    pub op: SearchOp,
    pub duration_ns: u64,
    /// 0 on success (EINPROGRESS counts as success for a non-blocking connect).
    pub errno: u32,
    /// Candidate ports examined, where the backend can see them.
    pub candidates: Option<u32>,
    /// Measured around the system call, not the port search itself.
    pub approximate: bool,
    pub netns: u32,
    /// connect(): the destination.
    pub remote: Option<SocketAddr>,
    /// bind(): the requested address. connect(): the local address chosen, where the backend
    /// sees it (port 0 when none was found).
    pub local: Option<SocketAddr>,
    pub process: Option<Process>,
}

/// A non-blocking connect() returns this while the handshake goes on: not a failure.
pub const EINPROGRESS: u32 = 115;

/// Symbolic name of the errno values port search reports.
pub fn errno_name(errno: u32) -> String {
    match errno {
        0 => "OK".into(),
        1 => "EPERM".into(),
        4 => "EINTR".into(),
        11 => "EAGAIN".into(),
        13 => "EACCES".into(),
        22 => "EINVAL".into(),
        98 => "EADDRINUSE".into(),
        99 => "EADDRNOTAVAIL".into(),
        101 => "ENETUNREACH".into(),
        103 => "ECONNABORTED".into(),
        104 => "ECONNRESET".into(),
        106 => "EISCONN".into(),
        110 => "ETIMEDOUT".into(),
        111 => "ECONNREFUSED".into(),
        113 => "EHOSTUNREACH".into(),
        114 => "EALREADY".into(),
        115 => "EINPROGRESS".into(),
        other => format!("errno{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Comm, MarkEvent};

    #[test]
    fn mark_text_is_one_bounded_line_without_control_characters() {
        assert_eq!(MarkEvent::sanitize("deploy v2").as_deref(), Some("deploy v2"));
        assert_eq!(MarkEvent::sanitize("  a\n\tb\x1b[2Jc  ").as_deref(), Some("a b [2Jc"));
        assert_eq!(MarkEvent::sanitize(" \n\r\t "), None);
        assert_eq!(MarkEvent::sanitize(""), None);
        let long = "é".repeat(150);
        let cut = MarkEvent::sanitize(&long).unwrap();
        assert_eq!(cut.len(), MarkEvent::MAX_TEXT, "cut at a character boundary");
        assert_eq!(cut.chars().count(), 100);
    }

    fn raw(bytes: &[u8]) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..bytes.len()].copy_from_slice(bytes);
        raw
    }

    #[test]
    fn comm_keeps_the_kernels_name_inline() {
        assert_eq!(Comm::from_kernel(&raw(b"nginx")).as_str(), "nginx");
        // The longest name the kernel keeps, and no terminator at all (not written by a
        // kernel, but read without overrunning).
        assert_eq!(Comm::from_kernel(&raw(b"kworker/u16:2-ev")).as_str(), "kworker/u16:2-e");
        assert_eq!(Comm::from_kernel(&[b'x'; 16]).as_str(), "x".repeat(15));
        assert_eq!(Comm::from_kernel(&[0; 16]).as_str(), "");
    }

    #[test]
    fn comm_bytes_that_are_not_utf8_become_question_marks() {
        assert_eq!(Comm::from_kernel(&raw(b"a\xffb\xc3")).as_str(), "a?b?");
        assert_eq!(Comm::from_kernel(&raw("café".as_bytes())).as_str(), "café");
    }

    #[test]
    fn comm_from_a_longer_string_cuts_at_a_character_boundary() {
        assert_eq!(Comm::from("api-gateway").to_string(), "api-gateway");
        // 14 ASCII bytes and a two-byte character: 16 bytes, cut before the character.
        assert_eq!(Comm::from("abcdefghijklmné").as_str(), "abcdefghijklmn");
        assert_eq!(format!("{:?}", Comm::from("curl")), "\"curl\"");
        assert!(Comm::from("b") > Comm::from("abc"), "ordered by name, not length");
    }
}

/// The namespace's settings that decide TIME_WAIT and port-space behaviour; recorded with
/// every recording, because a postmortem needs them as much as the events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Sysctls {
    /// `net.ipv4.ip_local_port_range`: ports connect() may choose.
    pub ip_local_port_range: (u16, u16),
    pub tcp_max_tw_buckets: Option<u64>,
    pub tcp_tw_reuse: Option<u64>,
    pub tcp_timestamps: Option<u64>,
    /// Seconds an orphaned FIN_WAIT2 socket lives (not TIME_WAIT's 60 s).
    pub tcp_fin_timeout: Option<u64>,
}

/// A network namespace as a person knows it: described once when a source starts (for every
/// namespace present), when one is first seen in an event, and when it is gone. Its settings
/// were read inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NamespaceDescription {
    /// nsfs inode (`ns.inum`): the `netns` of every event.
    pub netns: u32,
    /// `ip netns` name, container or pod, `pid N (comm)`, or the inode when nothing better is
    /// known.
    pub name: String,
    /// Read inside the namespace; `None` when that failed (it vanished, or no way in).
    pub sysctls: Option<Sysctls>,
    /// False once the namespace is gone (deleted, its last process exited).
    pub live: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceEvent {
    pub ts_ns: u64,
    pub namespace: NamespaceDescription,
}
