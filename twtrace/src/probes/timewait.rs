//! TIME_WAIT family: backends, configuration and the decoder that turns timer phases into
//! births, re-arms and deaths.

use foldhash::{HashMap, HashMapExt};

use twtrace_common::{
    Config,
    config::KillCaller,
    timewait::{KillPath, TW_TS_KNOWN, TW_TS_SEEN, TimeWaitEvent as RawTimeWait, TimerPhase},
};

use super::{Backend, BackendPlan, Hook, LoadError, SharedHook, owners::Owners};
use crate::{
    event::{DeathReason, Event, Process, SocketFlow, TimeWaitChange, TimeWaitEvent, TimeWaitSubstate},
    kernel::{btf::Btf, kallsyms},
};

/// `timer_start`, in both variants: shared with the port search's tracepoint backend.
pub(super) const TIMER_START_BTF: Hook = Hook::BtfTracepoint {
    program: "tw_timer_start_btf",
    tracepoint: "timer_start",
    shared: Some(SharedHook::TIMER_START),
};
pub(super) const TIMER_START_RAW: Hook =
    Hook::RawTracepoint { program: "tw_timer_start", tracepoint: "timer_start", shared: Some(SharedHook::TIMER_START) };

/// tp_btf (5.5+, BTF): the timer is typed, so the filter that runs for every kernel timer
/// needs no helper call.
const BTF_TRACEPOINT_HOOKS: &[Hook] = &[
    TIMER_START_BTF,
    Hook::BtfTracepoint { program: "tw_timer_cancel_btf", tracepoint: "timer_cancel", shared: None },
    Hook::BtfTracepoint { program: "tw_timer_expire_btf", tracepoint: "timer_expire_entry", shared: None },
];

const TRACEPOINT_HOOKS: &[Hook] = &[
    TIMER_START_RAW,
    Hook::RawTracepoint { program: "tw_timer_cancel", tracepoint: "timer_cancel", shared: None },
    Hook::RawTracepoint { program: "tw_timer_expire", tracepoint: "timer_expire_entry", shared: None },
];

/// 6.9+ (`inet_twsk_hashdance_schedule` exists): births there, re-arms at __inet_twsk_schedule.
const FENTRY_HOOKS_HASHDANCE: &[Hook] = &[
    Hook::Fentry { program: "tw_hashdance_fentry", function: "inet_twsk_hashdance_schedule" },
    Hook::Fentry { program: "tw_rearm_fentry", function: "__inet_twsk_schedule" },
    Hook::Fentry { program: "tw_expire_fentry", function: "tw_timer_handler" },
    Hook::Fentry { program: "tw_kill_fentry", function: "inet_twsk_deschedule_put" },
];

const KPROBE_HOOKS_HASHDANCE: &[Hook] = &[
    Hook::Kprobe { program: "tw_hashdance_kprobe", function: "inet_twsk_hashdance_schedule" },
    Hook::Kprobe { program: "tw_rearm_kprobe", function: "__inet_twsk_schedule" },
    Hook::Kprobe { program: "tw_expire_kprobe", function: "tw_timer_handler" },
    Hook::Kprobe { program: "tw_kill_kprobe", function: "inet_twsk_deschedule_put" },
];

/// Before 6.9: births and re-arms both at __inet_twsk_schedule.
const FENTRY_HOOKS: &[Hook] = &[
    Hook::Fentry { program: "tw_schedule_fentry", function: "__inet_twsk_schedule" },
    Hook::Fentry { program: "tw_expire_fentry", function: "tw_timer_handler" },
    Hook::Fentry { program: "tw_kill_fentry", function: "inet_twsk_deschedule_put" },
];

/// Before 6.9: kills at the timer's deletion, which a namespace's teardown reaches with
/// `inet_twsk_deschedule_put` inlined into `inet_twsk_purge` (Debian's 5.10.262 and 6.1.192;
/// see the eBPF side). `timer_delete_sync` where `del_timer_sync` is its inline wrapper (6.2+,
/// and stable builds that took the rename), else `del_timer_sync`; where neither attaches, the
/// plans at `inet_twsk_deschedule_put` below, which miss those kills.
const FENTRY_HOOKS_TIMER_DELETE: &[Hook] = &[
    Hook::Fentry { program: "tw_schedule_fentry", function: "__inet_twsk_schedule" },
    Hook::Fentry { program: "tw_expire_fentry", function: "tw_timer_handler" },
    Hook::Fentry { program: "tw_kill_timer_fentry", function: "timer_delete_sync" },
];

const FENTRY_HOOKS_DEL_TIMER: &[Hook] = &[
    Hook::Fentry { program: "tw_schedule_fentry", function: "__inet_twsk_schedule" },
    Hook::Fentry { program: "tw_expire_fentry", function: "tw_timer_handler" },
    Hook::Fentry { program: "tw_kill_timer_fentry", function: "del_timer_sync" },
];

const KPROBE_HOOKS_TIMER_DELETE: &[Hook] = &[
    Hook::Kprobe { program: "tw_schedule_kprobe", function: "__inet_twsk_schedule" },
    Hook::Kprobe { program: "tw_expire_kprobe", function: "tw_timer_handler" },
    Hook::Kprobe { program: "tw_kill_timer_kprobe", function: "timer_delete_sync" },
];

const KPROBE_HOOKS_DEL_TIMER: &[Hook] = &[
    Hook::Kprobe { program: "tw_schedule_kprobe", function: "__inet_twsk_schedule" },
    Hook::Kprobe { program: "tw_expire_kprobe", function: "tw_timer_handler" },
    Hook::Kprobe { program: "tw_kill_timer_kprobe", function: "del_timer_sync" },
];

const KPROBE_HOOKS: &[Hook] = &[
    Hook::Kprobe { program: "tw_schedule_kprobe", function: "__inet_twsk_schedule" },
    Hook::Kprobe { program: "tw_expire_kprobe", function: "tw_timer_handler" },
    Hook::Kprobe { program: "tw_kill_kprobe", function: "inet_twsk_deschedule_put" },
];

pub fn backends() -> Vec<BackendPlan> {
    vec![
        BackendPlan::new(Backend::Fentry, FENTRY_HOOKS_HASHDANCE),
        BackendPlan::new(Backend::Fentry, FENTRY_HOOKS_TIMER_DELETE),
        BackendPlan::new(Backend::Fentry, FENTRY_HOOKS_DEL_TIMER),
        BackendPlan::new(Backend::Fentry, FENTRY_HOOKS),
        BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS_HASHDANCE),
        BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS_TIMER_DELETE),
        BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS_DEL_TIMER),
        BackendPlan::new(Backend::Kprobe, KPROBE_HOOKS),
        BackendPlan::with_btf_reads(Backend::Tracepoint, BTF_TRACEPOINT_HOOKS),
        BackendPlan::new(Backend::Tracepoint, TRACEPOINT_HOOKS),
    ]
}

/// The timer callback that marks TIME_WAIT sockets' timers.
pub const KERNEL_SYMBOL: &str = "tw_timer_handler";

/// The callers of `inet_twsk_deschedule_put` and the path each means (see [`KillPath`] for the
/// kernel facts). Innermost first in a stack, so a reset seen by `tcp_timewait_state_process`
/// is not taken for `tcp_v4_rcv`, which called it.
pub const KILL_CALLERS: &[(&str, KillPath)] = &[
    ("__inet_hash_connect", KillPath::Reused),
    ("__inet_check_established", KillPath::Reused),
    ("__inet6_check_established", KillPath::Reused),
    ("tcp_timewait_state_process", KillPath::Reset),
    ("tcp_v4_rcv", KillPath::Incoming),
    ("tcp_v6_rcv", KillPath::Incoming),
    ("inet_twsk_purge", KillPath::NamespaceExit),
    // It calls inet_twsk_deschedule_put() itself (6.0+), from sock_diag's SOCK_DESTROY or a BPF
    // iterator's bpf_sock_destroy(): neither path passes through another caller above.
    ("tcp_abort", KillPath::Aborted),
];
const _: () = assert!(KILL_CALLERS.len() <= twtrace_common::config::KILL_CALLERS);

/// Every kernel symbol this family reads from /proc/kallsyms.
pub fn kernel_symbols() -> impl Iterator<Item = &'static str> {
    std::iter::once(KERNEL_SYMBOL).chain(KILL_CALLERS.iter().map(|(name, _)| *name))
}

/// Fills in the symbol address and timer offsets the TIME_WAIT programs need (socket offsets
/// are shared: `super::configure_sockets`).
pub fn configure(btf: &Btf, symbols: &kallsyms::Symbols, config: &mut Config) -> Result<(), LoadError> {
    let o = &mut config.offsets;
    // Required: without them no TIME_WAIT timer can be recognised.
    o.timer_function = btf.member_offset("timer_list", "function")?;
    o.tw_timer = btf.member_offset("inet_timewait_sock", "tw_timer")?;
    config.tw_timer_handler = symbols.address(KERNEL_SYMBOL)?;
    o.timer_expires = super::offsets::optional_offset(btf, "timer_list", "expires");
    o.tw_substate = super::offsets::optional_offset(btf, "inet_timewait_sock", "tw_substate");
    o.tw_ts_recent_stamp = super::offsets::optional_offset(btf, "tcp_timewait_sock", "tw_ts_recent_stamp");
    // A caller missing (IPv6 built as a module, a renamed function) only leaves its kills
    // without a path.
    let known = KILL_CALLERS.iter().filter_map(|(name, path)| Some((symbols.range(name)?, *path)));
    for (slot, ((start, end), path)) in config.kill_callers.iter_mut().zip(known) {
        *slot = KillCaller { start, end, path: path as u8, _pad: [0; 7] };
    }
    Ok(())
}

/// `mod_timer` on a pending timer fires cancel then start back to back, in softirq, where no
/// other traced event can come between them on that CPU. So a start that is the very next
/// record of that CPU (of any family), for the same socket address and the same 4-tuple, is a
/// re-arm, not a kill followed by a new socket reusing the freed memory. No time window: an
/// emulated vCPU can be descheduled between the two for milliseconds. The bound below only
/// guards against a pathological stream.
const REARM_WINDOW_NS: u64 = 100_000_000;

/// A cancel whose CPU has reported nothing else for this long was an early kill: a natural
/// expiry's `timer_expire_entry` follows its cancel within microseconds natively, but an
/// emulated vCPU may be descheduled in between; no shorter than `REARM_WINDOW_NS`.
const CANCEL_GRACE_NS: u64 = 100_000_000;

/// 24 bytes per live socket, 32 with its address as the table's key (a busy host has a
/// million, in 2^21 slots: each byte less a slot is 2 MiB): an IPv4 4-tuple inline; the
/// namespace, owner and kind of address in the tracker's table of origins (few distinct ones);
/// IPv6 4-tuples aside.
struct Live {
    /// The low 32 bits of its id ([`Tracker::full_id`]).
    tw_id: u32,
    /// Its birth, in microseconds of CLOCK_MONOTONIC modulo 2^32 (71 minutes): only lifetimes
    /// are taken from it, and no TIME_WAIT socket lives half that long (TIME_WAIT is 60 s; a
    /// FIN_WAIT2 one lasts `tcp_fin_timeout`, 60 s by default).
    birth_us: u32,
    /// Local address, remote address, local port, remote port (IPv4 only).
    v4: [u8; 12],
    origin: OriginId,
}

// The figure the scale target rests on (issue 25: 200 bytes per TIME_WAIT socket, whole process).
const _: () = assert!(std::mem::size_of::<(u64, Live)>() == 32);

/// [`Live::birth_us`] of a CLOCK_MONOTONIC time.
fn micros(ts_ns: u64) -> u32 {
    (ts_ns / 1_000) as u32
}

/// The lifetime of a socket born at `birth_us` ([`micros`]) and dead at `death_ns`, to the
/// microsecond. A death stamped before its birth (records of two CPUs) lived 0.
fn lifetime_ns(birth_us: u32, death_ns: u64) -> u64 {
    let us = micros(death_ns).wrapping_sub(birth_us);
    if us > u32::MAX / 2 { 0 } else { u64::from(us) * 1_000 }
}

/// Index in `Tracker::origins`.
type OriginId = u32;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    netns: u32,
    owner: Option<Process>,
    /// `None`: no 4-tuple; `Some(true)`: IPv4, inline; `Some(false)`: IPv6, in `v6_flows`.
    v4: Option<bool>,
}

fn pack_v4(flow: &SocketFlow) -> Option<[u8; 12]> {
    let (std::net::SocketAddr::V4(l), std::net::SocketAddr::V4(r)) = (flow.local, flow.remote) else { return None };
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&l.ip().octets());
    out[4..8].copy_from_slice(&r.ip().octets());
    out[8..10].copy_from_slice(&l.port().to_ne_bytes());
    out[10..].copy_from_slice(&r.port().to_ne_bytes());
    Some(out)
}

fn unpack_v4(b: &[u8; 12]) -> SocketFlow {
    let ip = |o: &[u8]| std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3]);
    let port = |o: &[u8]| u16::from_ne_bytes([o[0], o[1]]);
    SocketFlow { local: (ip(&b[..4]), port(&b[8..10])).into(), remote: (ip(&b[4..8]), port(&b[10..])).into() }
}

#[derive(Clone, Copy)]
struct PendingCancel {
    tw_addr: u64,
    ts_ns: u64,
    /// The path its stack showed, should it turn out to be a kill.
    path: KillPath,
}

/// Follows TIME_WAIT sockets by kernel address and decides how each ended.
///
/// Invariant: the ring buffer delivers one CPU's records in the order that CPU produced them, so
/// "what this CPU reported right after the cancel" is well defined.
pub struct Tracker {
    hz: u64,
    next_id: u64,
    live: HashMap<u64, Live>,
    origins: Vec<Origin>,
    origin_ids: HashMap<Origin, OriginId>,
    /// Live sockets holding each origin. One no socket holds is forgotten and its number given
    /// to the next new origin: a host whose connections are closed by a new process each time
    /// (a script's curl per request, CGI) makes a new origin per process, which must not stay
    /// for the rest of the run.
    origin_holds: Vec<u32>,
    free_origins: Vec<OriginId>,
    v6_flows: HashMap<u64, SocketFlow>,
    pending: HashMap<u32, PendingCancel>,
    /// Deaths of sockets born before tracing started (no birth time, no 4-tuple).
    pub untracked_deaths: u64,
}

impl Tracker {
    pub fn new(hz: u64) -> Self {
        Self {
            hz: hz.max(1),
            next_id: 1,
            live: HashMap::new(),
            origins: Vec::new(),
            origin_ids: HashMap::new(),
            origin_holds: Vec::new(),
            free_origins: Vec::new(),
            v6_flows: HashMap::new(),
            pending: HashMap::new(),
            untracked_deaths: 0,
        }
    }

    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// `owners` gives a birth the task that closed its connection.
    pub fn on_record(&mut self, raw: &RawTimeWait, owners: &mut Owners, out: &mut Vec<Event>) {
        let Some(phase) = TimerPhase::from_u8(raw.phase) else { return };
        let cpu = raw.header.cpu;
        let ts = raw.header.ts_ns;
        if let Some(pending) = self.pending.remove(&cpu) {
            let same_socket = pending.tw_addr == raw.tw_addr;
            match phase {
                TimerPhase::Expire if same_socket => {
                    self.die(pending.tw_addr, ts, DeathReason::Expired, out);
                    return;
                }
                TimerPhase::Start
                    if same_socket
                        && ts.saturating_sub(pending.ts_ns) <= REARM_WINDOW_NS
                        && self
                            .live
                            .get(&raw.tw_addr)
                            .is_none_or(|live| self.flow(raw.tw_addr, live) == SocketFlow::from_kernel(&raw.flow)) =>
                {
                    self.rearm(raw, out);
                    return;
                }
                _ => self.die(pending.tw_addr, pending.ts_ns, DeathReason::killed(pending.path), out),
            }
        }
        if phase == TimerPhase::Start && self.live.contains_key(&raw.tw_addr) {
            self.end_reused(raw, out);
        }
        match phase {
            TimerPhase::Start if self.live.contains_key(&raw.tw_addr) => self.rearm(raw, out),
            TimerPhase::Start => self.birth(raw, owners, out),
            // fentry/kprobe backends say what happened; no inference needed.
            TimerPhase::Rearm => self.rearm(raw, out),
            TimerPhase::Kill => self.die(raw.tw_addr, ts, DeathReason::killed(KillPath::from_u8(raw.path)), out),
            TimerPhase::Cancel => {
                let path = KillPath::from_u8(raw.path);
                self.pending.insert(cpu, PendingCancel { tw_addr: raw.tw_addr, ts_ns: ts, path });
            }
            // An expiry whose cancel we did not see (attached in between): still an expiry.
            TimerPhase::Expire => self.die(raw.tw_addr, ts, DeathReason::Expired, out),
        }
    }

    /// A start at the address of a live socket that is not a re-arm of it: the socket there was
    /// killed and its memory already holds a new TIME_WAIT socket (TIME_WAIT sockets are
    /// `SLAB_TYPESAFE_BY_RCU`: a freed one can be reused at once, on another CPU).
    /// - Its cancel is still pending on another CPU (that CPU has reported nothing since): a
    ///   re-arm's cancel and start come from the same CPU, so it was a kill.
    /// - Or the 4-tuple differs: a re-arm never changes it. Its cancel went unseen (a skipped
    ///   run); it died at the latest now.
    ///
    /// Measured before this rule: 627 of 373,293 births in 15 s of churn at 25k/s taken for
    /// re-arms, with births short of the kernel's TW counter by as many.
    fn end_reused(&mut self, raw: &RawTimeWait, out: &mut Vec<Event>) {
        let pending_elsewhere = self.pending.iter().find(|(_, p)| p.tw_addr == raw.tw_addr).map(|(cpu, p)| (*cpu, *p));
        if let Some((cpu, pending)) = pending_elsewhere {
            self.pending.remove(&cpu);
            self.die(pending.tw_addr, pending.ts_ns, DeathReason::killed(pending.path), out);
            return;
        }
        let moved = self
            .live
            .get(&raw.tw_addr)
            .is_some_and(|live| self.flow(raw.tw_addr, live) != SocketFlow::from_kernel(&raw.flow));
        if moved {
            self.die(raw.tw_addr, raw.header.ts_ns, DeathReason::Killed, out);
        }
    }

    /// Another family's record from `cpu`: a cancel pending there was not followed by its
    /// expiry or re-arm, so it was a kill.
    pub fn on_other_record(&mut self, cpu: u32, out: &mut Vec<Event>) {
        if let Some(pending) = self.pending.remove(&cpu) {
            self.die(pending.tw_addr, pending.ts_ns, DeathReason::killed(pending.path), out);
        }
    }

    /// Resolves cancels older than the grace period as kills. `now_ns` is CLOCK_MONOTONIC;
    /// `u64::MAX` resolves all of them (end of stream).
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let mut expired: Vec<(u32, PendingCancel)> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ns == u64::MAX || p.ts_ns.saturating_add(CANCEL_GRACE_NS) < now_ns)
            .map(|(cpu, p)| (*cpu, *p))
            .collect();
        expired.sort_by_key(|(_, p)| p.ts_ns);
        for (cpu, p) in expired {
            self.pending.remove(&cpu);
            self.die(p.tw_addr, p.ts_ns, DeathReason::killed(p.path), out);
        }
    }

    /// The number of `origin`, held once more (by the socket being born).
    fn hold_origin(&mut self, origin: Origin) -> OriginId {
        if let Some(&id) = self.origin_ids.get(&origin) {
            self.origin_holds[id as usize] += 1;
            return id;
        }
        let id = match self.free_origins.pop() {
            Some(id) => {
                self.origins[id as usize] = origin.clone();
                self.origin_holds[id as usize] = 1;
                id
            }
            None => {
                self.origins.push(origin.clone());
                self.origin_holds.push(1);
                (self.origins.len() - 1) as OriginId
            }
        };
        self.origin_ids.insert(origin, id);
        id
    }

    /// A socket holding origin `id` is gone; the origin too once none holds it.
    fn release_origin(&mut self, id: OriginId) {
        let holds = &mut self.origin_holds[id as usize];
        *holds = holds.saturating_sub(1);
        if *holds == 0 {
            self.origin_ids.remove(&self.origins[id as usize]);
            crate::memory::shrink_if_sparse(&mut self.origin_ids);
            self.free_origins.push(id);
        }
    }

    #[cfg(test)]
    pub fn origins_held(&self) -> usize {
        self.origin_ids.len()
    }

    /// A live socket's whole id: the latest id given out with its low 32 bits. Ids are given
    /// one after another and a socket is live for at most minutes, so four billion births never
    /// lie between a live socket's and the next.
    fn full_id(&self, live: &Live) -> u64 {
        self.next_id - u64::from((self.next_id as u32).wrapping_sub(live.tw_id))
    }

    fn flow(&self, tw_addr: u64, live: &Live) -> Option<SocketFlow> {
        match self.origins[live.origin as usize].v4 {
            None => None,
            Some(true) => Some(unpack_v4(&live.v4)),
            Some(false) => self.v6_flows.get(&tw_addr).copied(),
        }
    }

    fn timeout_ms(&self, jiffies: u64) -> u64 {
        // Saturating: a timer already past due reads as a huge unsigned difference.
        if jiffies > 1 << 40 { 0 } else { jiffies * 1000 / self.hz }
    }

    fn birth(&mut self, raw: &RawTimeWait, owners: &mut Owners, out: &mut Vec<Event>) {
        let tw_id = self.next_id;
        self.next_id += 1;
        let flow = SocketFlow::from_kernel(&raw.flow);
        let owner = owners.take_closer(raw.netns, &raw.flow).and_then(|t| t.process());
        let v4 = flow.as_ref().and_then(pack_v4);
        if let (Some(f), None) = (flow, v4) {
            self.v6_flows.insert(raw.tw_addr, f);
        }
        let origin = self.hold_origin(Origin { netns: raw.netns, owner, v4: flow.map(|_| v4.is_some()) });
        let live = Live { tw_id: tw_id as u32, birth_us: micros(raw.header.ts_ns), v4: v4.unwrap_or_default(), origin };
        self.live.insert(raw.tw_addr, live);
        out.push(Event::TimeWait(TimeWaitEvent {
            ts_ns: raw.header.ts_ns,
            tw_id,
            flow,
            netns: raw.netns,
            owner,
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::from_kernel(raw.substate),
                timeout_ms: self.timeout_ms(raw.timeout_jiffies),
                timestamps: (raw.flags & TW_TS_KNOWN != 0).then_some(raw.flags & TW_TS_SEEN != 0),
            },
        }));
    }

    fn rearm(&mut self, raw: &RawTimeWait, out: &mut Vec<Event>) {
        // A re-arm of a socket born before we started stays untracked.
        let Some(live) = self.live.get(&raw.tw_addr) else { return };
        out.push(Event::TimeWait(TimeWaitEvent {
            ts_ns: raw.header.ts_ns,
            tw_id: self.full_id(live),
            flow: self.flow(raw.tw_addr, live),
            netns: self.origins[live.origin as usize].netns,
            owner: self.origins[live.origin as usize].owner,
            change: TimeWaitChange::Rearm {
                substate: TimeWaitSubstate::from_kernel(raw.substate),
                timeout_ms: self.timeout_ms(raw.timeout_jiffies),
            },
        }));
    }

    fn die(&mut self, tw_addr: u64, ts_ns: u64, reason: DeathReason, out: &mut Vec<Event>) {
        let Some(live) = self.live.remove(&tw_addr) else {
            self.untracked_deaths += 1;
            return;
        };
        crate::memory::shrink_if_sparse(&mut self.live);
        let flow = self.flow(tw_addr, &live);
        if self.v6_flows.remove(&tw_addr).is_some() {
            crate::memory::shrink_if_sparse(&mut self.v6_flows);
        }
        out.push(Event::TimeWait(TimeWaitEvent {
            ts_ns,
            tw_id: self.full_id(&live),
            flow,
            netns: self.origins[live.origin as usize].netns,
            owner: self.origins[live.origin as usize].owner,
            change: TimeWaitChange::Death { reason, lifetime_ns: lifetime_ns(live.birth_us, ts_ns) },
        }));
        self.release_origin(live.origin);
    }
}

#[cfg(test)]
mod tests;
