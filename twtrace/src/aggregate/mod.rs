//! The aggregator: a pure model of what the event stream says, for `top`, `stat`, `report`
//! and later the exporter. Feed it events (and an initial socket picture), move its clock with
//! [`Aggregator::advance`], and read a [`Snapshot`] at that time; reading never changes it.
//! No BPF, no clocks of its own: unit-tested with made-up streams.
//!
//! Everything is keyed by network namespace first: each namespace has its own port range,
//! TIME_WAIT bucket limit and counters (described by [`Event::Namespace`], read inside it),
//! and a destination's ports count against its own namespace's range. Host-wide figures are
//! sums over namespaces, never a merge of unrelated rows.

mod snapshot;
pub mod stats;
#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashSet};
use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;
pub use snapshot::{
    CommandGroup, DestinationView, FailureView, Group, KilledBy, MarkView, NamespaceView, PawsView, PortSpaceView,
    ReasonView, RecentDrop, Sample, SetupDropView, Snapshot, SourceView, TimeWaitView,
};
use stats::{Histogram, Rate};

use crate::event::{
    Comm, DropClass, DropEvent, Event, ExistingSocket, NamespaceDescription, PortSearchEvent, Process, SearchOp,
    SocketFlow, StateEvent, TimeWaitChange, TimeWaitEvent, errno_name, tcp_state,
};
use crate::kernel::netstat;

/// The settings of namespaces nothing described (recordings made before namespaces were,
/// unit tests), and the size of the rankings.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// `net.ipv4.ip_local_port_range`: ports connect() may choose.
    pub port_range: (u16, u16),
    /// `net.ipv4.tcp_max_tw_buckets`.
    pub max_tw_buckets: Option<u64>,
    /// Rows per ranking.
    pub top: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { port_range: (32_768, 60_999), max_tw_buckets: None, top: 10 }
    }
}

/// Ports in `ip_local_port_range` (both ends included).
pub fn range_size(range: (u16, u16)) -> u64 {
    u64::from(range.1.saturating_sub(range.0)) + 1
}

/// Toward one destination from one local address, in one namespace: connect() can use each
/// port of that namespace's range once per (local address, remote address and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Destination {
    pub netns: u32,
    pub local: IpAddr,
    pub remote: SocketAddr,
}

impl Destination {
    pub fn of(netns: u32, flow: &SocketFlow) -> Self {
        Self { netns, local: flow.local.ip(), remote: flow.remote }
    }

    /// `10.0.0.5 → 10.0.0.9:8080`, as charts name it (the namespace is named beside it).
    pub fn label(&self) -> String {
        format!("{} → {}", self.local, self.remote)
    }
}

/// What is known of one namespace.
#[derive(Clone, Debug)]
struct Namespace {
    name: String,
    port_range: (u16, u16),
    max_tw_buckets: Option<u64>,
    /// As read inside it; `None` when it was not described (its range and limit above are
    /// then assumed from [`Settings`]).
    sysctls: Option<crate::event::Sysctls>,
    live: bool,
    /// Its own kernel counters since start (netstat deltas).
    counters: BTreeMap<String, i64>,
    /// Drops that cost connections other than PAWS (netfilter, accept-queue overflow), by
    /// reason name.
    setup_drops: BTreeMap<String, SetupDropView>,
}

#[derive(Default)]
struct DestinationStats {
    in_use: u64,
    taken: Rate,
    freed: Rate,
    connects: Rate,
    peer_timestamps: PeerTimestamps,
}

/// Of the client-side TIME_WAIT sockets born toward a destination (those that hold a port),
/// how many had the peer's TCP timestamps. `tcp_tw_reuse` can hand a port back to connect()
/// only from those (`tcp_twsk_unique()`): a peer that never sends them (a load balancer with
/// timestamps off) defeats reuse whatever the sysctl says. Births whose timestamps were not
/// read (an older recording) are in neither count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerTimestamps {
    pub seen: u64,
    pub absent: u64,
}

impl PeerTimestamps {
    pub fn known(&self) -> u64 {
        self.seen + self.absent
    }
}

/// connect() port searches toward one remote endpoint of one namespace. Kept per remote, not
/// per destination: a failed search has no local address, and recordings made before
/// 2026-11-24 timed the tracepoint backend's searches around the syscall, without one.
#[derive(Default)]
struct SearchStats {
    search_ns: Histogram,
    candidates: Histogram,
    failures: u64,
}

/// 24 bytes per live TIME_WAIT socket (a busy host has a million): names and destinations
/// are numbers in the aggregator's tables.
struct LiveTimeWait {
    /// Counted toward this destination's ports (client-side TIME_WAIT in the ephemeral range).
    holds_port_of: Option<DestinationId>,
    remote: RemoteKey,
    local: NameId,
    /// `comm[pid]`, and `comm` alone: a service's workers are one command, many owners.
    owner: NameId,
    command: NameId,
    netns: u32,
}

/// The remote address of a TIME_WAIT socket. Servers see a million distinct clients: IPv4
/// ones are kept as they are instead of as names in the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum RemoteKey {
    V4([u8; 4]),
    Named(NameId),
}

type NameId = u32;
type DestinationId = std::num::NonZeroU32;

/// Strings the views group by (addresses, owners), stored once.
#[derive(Default)]
struct Names {
    ids: HashMap<String, NameId>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: String) -> NameId {
        if let Some(&id) = self.ids.get(&name) {
            return id;
        }
        let id = self.names.len() as NameId;
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: NameId) -> &str {
        &self.names[id as usize]
    }
}

/// Destinations by number, for the per-socket records.
#[derive(Default)]
struct DestinationIds {
    ids: HashMap<Destination, DestinationId>,
    destinations: Vec<Destination>,
}

impl DestinationIds {
    fn id(&mut self, dest: Destination) -> DestinationId {
        if let Some(&id) = self.ids.get(&dest) {
            return id;
        }
        self.destinations.push(dest);
        let id = DestinationId::new(self.destinations.len() as u32).expect("starts at 1");
        self.ids.insert(dest, id);
        id
    }

    fn get(&self, id: DestinationId) -> Destination {
        self.destinations[id.get() as usize - 1]
    }
}

/// How many services (addresses and ports) a namespace's setup drops are tallied for; later
/// ones count in the totals only.
const SETUP_DROP_SERVICES: usize = 8;

/// One address PAWS drops came from.
#[derive(Default)]
struct PawsSource {
    drops: u64,
    flows: HashSet<(u16, u16)>,
}

/// A TIME_WAIT socket that existed at start: its death is not in the stream, so it leaves at
/// its timer.
struct ExistingTimeWait {
    expires_ns: u64,
    netns: u32,
    flow: SocketFlow,
    holds_port: bool,
}

#[derive(Default)]
pub struct Aggregator {
    settings: Settings,
    started_ns: Option<u64>,
    events: u64,
    lost: u64,
    skipped_runs: u64,
    /// The latest mark (`twtrace mark`): the live views show it beside the figures.
    last_mark: Option<crate::event::MarkEvent>,
    namespaces: HashMap<u32, Namespace>,
    // TIME_WAIT
    live: HashMap<u64, LiveTimeWait>,
    names: Names,
    /// (command, pid) of an owner → its name ids (`None`: owner unknown).
    owner_ids: HashMap<Option<(Comm, u32)>, (NameId, NameId)>,
    destination_ids: DestinationIds,
    /// TIME_WAIT sockets read at start, by namespace and 4-tuple.
    existing_tw: HashMap<(u32, SocketFlow), ExistingTimeWait>,
    births: Rate,
    expired: Rate,
    killed: Rate,
    killed_by: KilledBy,
    lifetimes: Histogram,
    // Port space
    destinations: HashMap<Destination, DestinationStats>,
    /// Client sockets holding a port: by kernel address (from state events) ...
    connected: HashMap<u64, Destination>,
    /// ... or, for sockets that existed before start, by destination and local port.
    existing_connected: HashSet<(Destination, u16)>,
    /// Connections made by connect() since start, by namespace and 4-tuple, with their
    /// socket's address: their TIME_WAIT keeps holding the port. A server-side TIME_WAIT
    /// socket on an ephemeral-range listening port does not.
    client_flows: HashMap<(u32, SocketFlow), u64>,
    /// Local ports with a listener at start, per namespace: sockets on them are server side.
    listening_ports: HashSet<(u32, u16)>,
    searches: HashMap<(u32, SocketAddr), SearchStats>,
    failures: HashMap<(u32, Comm, u32, String), u64>,
    bind_search_ns: Histogram,
    bind_failures: u64,
    // PAWS
    drops: Rate,
    drops_by_reason: BTreeMap<String, (u64, Rate)>,
    sources: HashMap<(u32, IpAddr), PawsSource>,
    recent_drops: VecDeque<DropEvent>,
    /// Kernel counters summed over namespaces.
    counters: BTreeMap<String, i64>,
}

const RECENT_DROPS: usize = 8;

impl Aggregator {
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Rows per ranking, as the views were asked for (`--top`).
    pub fn top(&self) -> usize {
        self.settings.top
    }

    /// A namespace's name and settings (from [`Event::Namespace`], or a source's start).
    pub fn describe(&mut self, ns: &NamespaceDescription) {
        if !ns.live {
            self.forget_existing(ns.netns);
        }
        let previous = self.namespaces.get(&ns.netns);
        let (port_range, max_tw_buckets) = match (&ns.sysctls, previous) {
            (Some(s), _) => (s.ip_local_port_range, s.tcp_max_tw_buckets),
            // Gone before its settings could be read again: keep what was known.
            (None, Some(p)) => (p.port_range, p.max_tw_buckets),
            (None, None) => (self.settings.port_range, self.settings.max_tw_buckets),
        };
        // A live namespace after a gone one on the same inode is a new namespace: its
        // counters (levels above all) start from nothing.
        let same = previous.filter(|p| p.live || !ns.live);
        let counters = same.map(|p| p.counters.clone()).unwrap_or_default();
        let setup_drops = same.map(|p| p.setup_drops.clone()).unwrap_or_default();
        let sysctls = ns.sysctls.clone().or_else(|| previous.and_then(|p| p.sysctls.clone()));
        self.namespaces.insert(
            ns.netns,
            Namespace {
                name: ns.name.clone(),
                port_range,
                max_tw_buckets,
                sysctls,
                live: ns.live,
                counters,
                setup_drops,
            },
        );
    }

    /// A namespace is gone: the kernel destroyed its sockets with it. Those seen born are told
    /// dead by the stream; those that existed at start are not, so they go now.
    fn forget_existing(&mut self, netns: u32) {
        let mut freed = Vec::new();
        self.existing_tw.retain(|_, tw| {
            let gone = tw.netns == netns;
            if gone && tw.holds_port {
                freed.push(Destination::of(tw.netns, &tw.flow));
            }
            !gone
        });
        self.existing_connected.retain(|(dest, _)| {
            if dest.netns == netns {
                freed.push(*dest);
            }
            dest.netns != netns
        });
        for dest in freed {
            if let Some(d) = self.destinations.get_mut(&dest) {
                d.in_use = d.in_use.saturating_sub(1);
            }
        }
    }

    /// The namespace, as described, or assumed from the settings when it was not.
    fn namespace(&mut self, netns: u32) -> &mut Namespace {
        let settings = &self.settings;
        self.namespaces.entry(netns).or_insert_with(|| Namespace {
            name: netns.to_string(),
            port_range: settings.port_range,
            max_tw_buckets: settings.max_tw_buckets,
            sysctls: None,
            live: true,
            counters: BTreeMap::new(),
            setup_drops: BTreeMap::new(),
        })
    }

    /// A namespace's `ip_local_port_range` (the settings' when it was not described).
    pub fn port_range(&self, netns: u32) -> (u16, u16) {
        self.namespaces.get(&netns).map_or(self.settings.port_range, |n| n.port_range)
    }

    /// The size of a namespace's ephemeral port range.
    pub fn range_size(&self, netns: u32) -> u64 {
        range_size(self.port_range(netns))
    }

    fn ephemeral(&self, netns: u32, port: u16) -> bool {
        let (lo, hi) = self.port_range(netns);
        (lo..=hi).contains(&port)
    }

    /// Sockets found at start, so the first frame is right, not only what is born after.
    pub fn seed(&mut self, now_ns: u64, sockets: &[ExistingSocket]) {
        self.started_ns.get_or_insert(now_ns);
        self.listening_ports
            .extend(sockets.iter().filter(|s| s.state == tcp_state::LISTEN).map(|s| (s.netns, s.flow.local.port())));
        for s in sockets {
            self.namespace(s.netns);
            // Before start we did not see who connected: a socket on an ephemeral port that is
            // not a listener's is taken to be a client's.
            let port = s.flow.local.port();
            let holds = self.ephemeral(s.netns, port) && !self.listening_ports.contains(&(s.netns, port));
            let dest = Destination::of(s.netns, &s.flow);
            match s.state {
                tcp_state::TIME_WAIT => {
                    let tw = ExistingTimeWait {
                        expires_ns: now_ns + s.expires_ms * 1_000_000,
                        netns: s.netns,
                        flow: s.flow,
                        holds_port: holds,
                    };
                    // (A 4-tuple is one socket: a second read of it counts nothing more.)
                    if self.existing_tw.insert((s.netns, s.flow), tw).is_none() && holds {
                        self.destinations.entry(dest).or_default().in_use += 1;
                    }
                }
                // LISTEN and CLOSE hold no connection's port.
                tcp_state::LISTEN | tcp_state::CLOSE => {}
                _ if holds && self.existing_connected.insert((dest, port)) => {
                    self.destinations.entry(dest).or_default().in_use += 1;
                }
                _ => {}
            }
        }
    }

    /// Records the kernel reported lost so far (they are shown, never hidden).
    pub fn set_lost(&mut self, lost: u64) {
        self.lost = lost;
    }

    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        match event {
            Event::TimeWait(e) => {
                self.started_ns.get_or_insert(e.ts_ns);
                self.time_wait(e);
            }
            Event::State(e) => {
                self.started_ns.get_or_insert(e.ts_ns);
                self.state(e);
            }
            Event::PortSearch(e) => {
                self.started_ns.get_or_insert(e.ts_ns);
                self.port_search(e);
            }
            Event::Drop(e) => {
                self.started_ns.get_or_insert(e.ts_ns);
                self.drop_event(e);
            }
            Event::Netstat(e) => {
                let own = &mut self.namespace(e.netns).counters;
                for (name, delta) in &e.deltas {
                    *own.entry(name.clone()).or_default() += delta;
                }
                // Host-wide totals; a level (a table's size, its limit) summed over namespaces
                // means nothing.
                for (name, delta) in e.deltas.iter().filter(|(name, _)| !netstat::is_level(name)) {
                    *self.counters.entry(name.clone()).or_default() += delta;
                }
            }
            Event::Lost(e) => self.lost = self.lost.max(e.total),
            Event::Skipped(e) => self.skipped_runs += e.new,
            Event::Namespace(e) => self.describe(&e.namespace),
            Event::Mark(e) => self.last_mark = Some(e.clone()),
        }
    }

    fn time_wait(&mut self, e: &TimeWaitEvent) {
        let netns = e.netns;
        match &e.change {
            TimeWaitChange::Birth { timestamps, .. } => {
                self.births.add(e.ts_ns, 1);
                self.namespace(netns);
                // The full socket ends here. Its → CLOSE follows, or is left out by the kernel
                // when this birth stands for it (the state family's `LAST_BIRTH`): either way
                // its hold on the port ends now, and a client's TIME_WAIT takes the port over.
                let handed_over = e.flow.and_then(|f| self.client_flows.remove(&(netns, f)).map(|sk| (f, sk)));
                if let Some((f, sk)) = handed_over {
                    if let Some(dest) = self.connected.remove(&sk) {
                        self.release(dest, e.ts_ns);
                    }
                    // Read at start as TIME_WAIT already, though born before the read: one
                    // socket, counted once.
                    self.forget_existing_time_wait(netns, &f);
                }
                // A client connection that existed at start and closes first: its TIME_WAIT
                // keeps the port it held (counted once, at start).
                let existing_client = match (handed_over, e.flow) {
                    (None, Some(f)) => {
                        let dest = Destination::of(netns, &f);
                        self.existing_connected.remove(&(dest, f.local.port())).then_some(dest)
                    }
                    _ => None,
                };
                let holds_port_of = handed_over.map(|(f, _)| Destination::of(netns, &f));
                if let Some(dest) = holds_port_of {
                    let d = self.destinations.entry(dest).or_default();
                    d.in_use += 1;
                    d.taken.add(e.ts_ns, 1);
                }
                let holds_port_of = holds_port_of.or(existing_client);
                if let (Some(dest), Some(seen)) = (holds_port_of, timestamps) {
                    let counts = &mut self.destinations.entry(dest).or_default().peer_timestamps;
                    if *seen {
                        counts.seen += 1;
                    } else {
                        counts.absent += 1;
                    }
                }
                // A client's local port is one of thousands of ephemeral ports: its address is
                // the useful group (and keeps the name table small).
                let (remote, local) = match e.flow {
                    Some(f) if holds_port_of.is_some() => (Some(f.remote.ip()), f.local.ip().to_string()),
                    Some(f) => (Some(f.remote.ip()), f.local.to_string()),
                    None => (None, "?".into()),
                };
                let remote = match remote {
                    Some(IpAddr::V4(v4)) => RemoteKey::V4(v4.octets()),
                    Some(other) => RemoteKey::Named(self.names.id(other.to_string())),
                    None => RemoteKey::Named(self.names.id("?".into())),
                };
                let (owner, command) = self.owner_ids(e.owner.as_ref());
                let live = LiveTimeWait {
                    holds_port_of: holds_port_of.map(|d| self.destination_ids.id(d)),
                    remote,
                    local: self.names.id(local),
                    owner,
                    command,
                    netns,
                };
                self.live.insert(e.tw_id, live);
            }
            TimeWaitChange::Rearm { .. } => {}
            TimeWaitChange::Death { reason, lifetime_ns } => {
                if reason.is_early() {
                    self.killed.add(e.ts_ns, 1);
                    self.killed_by.add(*reason);
                } else {
                    self.expired.add(e.ts_ns, 1);
                }
                self.lifetimes.record(*lifetime_ns);
                if let Some(tw) = self.live.remove(&e.tw_id) {
                    if let Some(dest) = tw.holds_port_of {
                        self.release(self.destination_ids.get(dest), e.ts_ns);
                    }
                }
            }
        }
    }

    /// The name ids of an owner (`comm[pid]`) and its command, formatted only the first time
    /// the owner is seen: a birth per connection must not format two strings.
    fn owner_ids(&mut self, owner: Option<&Process>) -> (NameId, NameId) {
        let key = owner.map(|p| (p.comm, p.pid));
        if let Some(ids) = self.owner_ids.get(&key) {
            return *ids;
        }
        let ids = (
            self.names.id(owner_name(owner)),
            self.names.id(owner.map_or_else(|| "(unknown)".into(), |p| p.comm.to_string())),
        );
        self.owner_ids.insert(key, ids);
        ids
    }

    /// A TIME_WAIT socket read at start that the stream also tells of (born between the
    /// probes' attach and the read) leaves the start picture: the stream has it.
    fn forget_existing_time_wait(&mut self, netns: u32, flow: &SocketFlow) {
        if self.existing_tw.is_empty() {
            return;
        }
        let Some(tw) = self.existing_tw.remove(&(netns, *flow)) else { return };
        if tw.holds_port {
            if let Some(d) = self.destinations.get_mut(&Destination::of(netns, flow)) {
                d.in_use = d.in_use.saturating_sub(1);
            }
        }
    }

    fn release(&mut self, dest: Destination, ts_ns: u64) {
        if let Some(d) = self.destinations.get_mut(&dest) {
            d.in_use = d.in_use.saturating_sub(1);
            d.freed.add(ts_ns, 1);
        }
    }

    fn state(&mut self, e: &StateEvent) {
        let Some(flow) = e.flow else { return };
        let dest = Destination::of(e.netns, &flow);
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        if e.new_state == SYN_SENT {
            self.namespace(e.netns);
            self.destinations.entry(dest).or_default().connects.add(e.ts_ns, 1);
        }
        if e.old_state == SYN_SENT && e.new_state == ESTABLISHED && self.connected.insert(e.sk_addr, dest).is_none() {
            self.client_flows.insert((e.netns, flow), e.sk_addr);
            // Connected before the sockets were read at start, but told after: the read
            // counted it already. (One port toward one destination is held once at a time.)
            // (Empty after the first minutes: skip the lookup then.)
            let counted =
                !self.existing_connected.is_empty() && self.existing_connected.remove(&(dest, flow.local.port()));
            let d = self.destinations.entry(dest).or_default();
            if !counted {
                d.in_use += 1;
            }
            d.taken.add(e.ts_ns, 1);
        }
        if e.new_state == CLOSE {
            // A socket that became TIME_WAIT was already ended by the birth; this is one that
            // closed without.
            if let Some(dest) = self.connected.remove(&e.sk_addr) {
                self.client_flows.remove(&(e.netns, flow));
                self.release(dest, e.ts_ns);
            } else if self.existing_connected.remove(&(dest, flow.local.port())) {
                self.release(dest, e.ts_ns);
            }
        }
    }

    fn port_search(&mut self, e: &PortSearchEvent) {
        let failed = e.errno != 0 && e.errno != crate::event::EINPROGRESS;
        if failed {
            let who = e.process.as_ref().map(|p| (p.comm, p.pid)).unwrap_or_else(|| (Comm::from("?"), 0));
            *self.failures.entry((e.netns, who.0, who.1, errno_name(e.errno))).or_default() += 1;
        }
        match e.op {
            SearchOp::Connect => {
                let Some(remote) = e.remote else { return };
                self.namespace(e.netns);
                let d = self.searches.entry((e.netns, remote)).or_default();
                d.search_ns.record(e.duration_ns);
                if let Some(c) = e.candidates {
                    d.candidates.record(u64::from(c));
                }
                if failed {
                    d.failures += 1;
                }
            }
            SearchOp::Bind => {
                self.bind_search_ns.record(e.duration_ns);
                if failed {
                    self.bind_failures += 1;
                }
            }
        }
    }

    fn drop_event(&mut self, e: &DropEvent) {
        match e.class() {
            // Watched reasons of another class (a recording from a future twtrace) count as
            // PAWS did before classes: nothing vanishes.
            Some(DropClass::Paws) | None => self.paws_drop(e),
            Some(class) => self.setup_drop(e, class),
        }
    }

    /// A drop that cost a connection (its SYN) or a handshake, counted in its namespace.
    fn setup_drop(&mut self, e: &DropEvent, class: DropClass) {
        let ns = self.namespace(e.netns);
        let view = ns.setup_drops.entry(e.reason.clone()).or_insert_with(|| SetupDropView {
            reason: e.reason.clone(),
            class,
            total: 0,
            syns: 0,
            syns_sent: 0,
            services: Vec::new(),
        });
        view.total += 1;
        if e.is_syn() {
            view.syns += 1;
            view.syns_sent += u64::from(e.outgoing);
        }
        // The end that was listening, or being connected to: a sent packet's remote end, a
        // received one's local end.
        if let Some(f) = e.flow {
            let service = if e.outgoing { f.remote } else { f.local };
            let room = view.services.len() < SETUP_DROP_SERVICES;
            match view.services.iter_mut().find(|(s, _)| *s == service) {
                Some((_, n)) => *n += 1,
                None if room => view.services.push((service, 1)),
                None => {}
            }
        }
    }

    fn paws_drop(&mut self, e: &DropEvent) {
        self.drops.add(e.ts_ns, 1);
        let entry = self.drops_by_reason.entry(e.reason.clone()).or_default();
        entry.0 += 1;
        entry.1.add(e.ts_ns, 1);
        if let Some(flow) = e.flow {
            let source = self.sources.entry((e.netns, flow.remote.ip())).or_default();
            source.drops += 1;
            source.flows.insert((flow.remote.port(), flow.local.port()));
        }
        if self.recent_drops.len() == RECENT_DROPS {
            self.recent_drops.pop_front();
        }
        self.recent_drops.push_back(e.clone());
    }

    /// Moves the model's clock to `now_ns`: pre-existing TIME_WAIT sockets whose timer has
    /// run out by then leave (their deaths are not in the stream). Call before reading
    /// [`Self::sample`] or [`Self::snapshot`] at `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        let mut freed = Vec::new();
        self.existing_tw.retain(|_, tw| {
            let alive = tw.expires_ns > now_ns;
            if !alive && tw.holds_port {
                freed.push(Destination::of(tw.netns, &tw.flow));
            }
            alive
        });
        for dest in freed {
            self.release(dest, now_ns);
        }
    }

    /// A few running totals at `now_ns`, cheap enough to take every second of a long
    /// recording (the report's timelines); [`Self::snapshot`] has everything.
    pub fn sample(&self, now_ns: u64) -> Sample {
        Sample {
            mono_ns: now_ns,
            timewait_live: (self.live.len() + self.existing_tw.len()) as u64,
            births_total: self.births.total(),
            expired_total: self.expired.total(),
            killed_total: self.killed.total(),
            drops_total: self.drops.total(),
            connect_failures_total: self.searches.values().map(|s| s.failures).sum(),
            ports_in_use: self.destinations.iter().filter(|(_, d)| d.in_use > 0).map(|(k, d)| (*k, d.in_use)).collect(),
        }
    }

    /// A namespace's name as described (its inode when it was not).
    pub fn namespace_name(&self, netns: u32) -> String {
        self.namespaces.get(&netns).map_or_else(|| netns.to_string(), |n| n.name.clone())
    }

    /// Every namespace described or seen, with its settings as known.
    pub fn namespaces(&self) -> Vec<NamespaceDescription> {
        let mut out: Vec<NamespaceDescription> = self
            .namespaces
            .iter()
            .map(|(netns, n)| NamespaceDescription {
                netns: *netns,
                name: n.name.clone(),
                sysctls: n.sysctls.clone(),
                live: n.live,
            })
            .collect();
        out.sort_by_key(|n| n.netns);
        out
    }
}

fn owner_name(owner: Option<&Process>) -> String {
    owner.map(|p| format!("{}[{}]", p.comm, p.pid)).unwrap_or_else(|| "(unknown)".into())
}
