//! The aggregator: a pure model of what the event stream says, for `top`, `stat`, `report`
//! and later the exporter. Feed it events (and an initial socket picture), move its clock with
//! [`Aggregator::advance`], and read a [`Snapshot`] at that time; reading never changes it.
//! No BPF, no clocks of its own: unit-tested with made-up streams.
//!
//! Everything is keyed by network namespace first: each namespace has its own port range,
//! TIME_WAIT bucket limit and counters (described by [`Event::Namespace`], read inside it),
//! and a destination's ports count against its own namespace's range. Host-wide figures are
//! sums over namespaces, never a merge of unrelated rows.

mod intern;
mod paws;
mod ports;
mod resync;
mod snapshot;
pub mod stats;
#[cfg(test)]
mod tests;
mod timewait;
pub(crate) mod topk;

use foldhash::{HashMap, HashSet};
use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

pub use ports::{DEFAULT_MAX_ROWS, Evicted};
use ports::{DestinationTable, FailureGroup, FailureKey, SearchStats};
use timewait::{ExistingTimeWait, GroupCounts, LiveTimeWait, Origins};

pub use resync::ResyncView;
use serde::Serialize;
pub use snapshot::{
    CommandGroup, DestinationView, FailureView, Group, KilledBy, MarkView, ModelSize, NamespaceTotals, NamespaceView,
    PawsView, PortSpaceView, ReasonView, RecentDrop, Sample, SetupDropView, Snapshot, SourceView, TimeWaitView,
};
use stats::{Histogram, Rate};

use crate::event::{Comm, DropEvent, Event, ExistingSocket, NamespaceDescription, SocketFlow, tcp_state};
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
    /// Its share of the stream's TIME_WAIT births and deaths and PAWS drops.
    totals: NamespaceTotals,
    /// Drops that cost connections other than PAWS (netfilter, accept-queue overflow), by
    /// reason name.
    setup_drops: BTreeMap<String, SetupDropView>,
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

type NameId = u32;

/// Strings the views group by (addresses, owners), stored once, each held by the origins
/// and remotes of live sockets (`intern.rs`).
type Names = intern::Interner<String>;

impl Names {
    fn name(&self, id: NameId) -> &str {
        self.get(id)
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
    names: Names,
    // TIME_WAIT (`timewait.rs`)
    /// Sockets seen born, by the id twtrace gave them (its low 32 bits: [`timewait::LiveId`]).
    live: HashMap<timewait::LiveId, LiveTimeWait>,
    /// The id of the latest birth: the newest of several ids is the one nearest below it.
    last_live_id: timewait::LiveId,
    /// (command, pid) of an owner → its name ids (`None`: owner unknown), while it names
    /// live sockets; and back, to forget an owner whose name is freed.
    owner_ids: HashMap<Option<(Comm, u32)>, (NameId, NameId)>,
    owner_keys: HashMap<NameId, Option<(Comm, u32)>>,
    /// TIME_WAIT sockets read at start (or at a resync) and not seen born, by namespace and
    /// 4-tuple: they leave at their timer, or when the stream tells of them.
    existing_tw: HashMap<(u32, SocketFlow), ExistingTimeWait>,
    /// Live TIME_WAIT sockets (seen born and read) by remote, local, owner, command and
    /// namespace, kept as sockets come and go: the views read them without a pass over a
    /// million sockets.
    tw_groups: GroupCounts,
    /// Where live sockets come from (namespace, local address, owner), by number.
    origins: Origins,
    births: Rate,
    expired: Rate,
    killed: Rate,
    killed_by: KilledBy,
    lifetimes: Histogram,
    // Port space (`ports.rs`)
    destinations: DestinationTable,
    /// Client sockets holding a port: by kernel address (from state events) ...
    connected: HashMap<u64, ports::DestinationId>,
    /// ... or, for sockets that existed before start, by destination and local port.
    existing_connected: HashSet<(ports::DestinationId, u16)>,
    /// Connections made by connect() since start, by namespace and 4-tuple, with their
    /// socket's address: their TIME_WAIT keeps holding the port. A server-side TIME_WAIT
    /// socket on an ephemeral-range listening port does not.
    client_flows: HashMap<(u32, SocketFlow), u64>,
    /// Local ports with a listener at start, per namespace: sockets on them are server side.
    listening_ports: HashSet<(u32, u16)>,
    searches: HashMap<(u32, SocketAddr), SearchStats>,
    /// Failed searches per process (its first failure counts it in its group) ...
    failures: HashMap<FailureKey, u64>,
    /// ... and per (namespace, command, errno), kept as they come.
    failure_groups: HashMap<(u32, Comm, u32), FailureGroup>,
    connect_failures: u64,
    bind_search_ns: Histogram,
    bind_failures: u64,
    // PAWS (`paws.rs`)
    drops: Rate,
    drops_by_reason: BTreeMap<String, (u64, Rate)>,
    sources: HashMap<(u32, IpAddr), PawsSource>,
    recent_drops: VecDeque<DropEvent>,
    /// Kernel counters summed over namespaces.
    counters: BTreeMap<String, i64>,
    /// Loss and its repair (`resync.rs`).
    resync: resync::ResyncState,
    /// Rows of each kind kept at most (`None`: [`DEFAULT_MAX_ROWS`]), and what evicted rows
    /// had counted (`ports.rs`).
    max_rows: Option<usize>,
    evicted: Evicted,
    /// Every connect() search, whatever its row (`ports.rs`).
    all_search_ns: Histogram,
    all_candidates: Histogram,
    evicted_failures_by_netns: HashMap<u32, u64>,
}

const RECENT_DROPS: usize = 8;

/// The row limit every new aggregator starts with (`--max-rows`; 0: [`DEFAULT_MAX_ROWS`]).
static MAX_ROWS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the row limit of every aggregator made from now on (the command line's `--max-rows`).
pub fn set_max_rows(max: usize) {
    MAX_ROWS.store(max, std::sync::atomic::Ordering::Relaxed);
}

impl Aggregator {
    pub fn new(settings: Settings) -> Self {
        let max_rows = Some(MAX_ROWS.load(std::sync::atomic::Ordering::Relaxed)).filter(|n| *n > 0);
        Self { settings, max_rows: max_rows.map(|n| n.max(10)), ..Self::default() }
    }

    /// Keeps at most `max` rows of each kind (destinations, connect() searches, failing
    /// processes), evicting the least recently active into counted totals.
    pub fn limit_rows(&mut self, max: usize) {
        self.max_rows = Some(max.max(10));
    }

    fn max_rows(&self) -> usize {
        self.max_rows.unwrap_or(DEFAULT_MAX_ROWS)
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
        let totals = same.map(|p| p.totals).unwrap_or_default();
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
                totals,
                setup_drops,
            },
        );
    }

    /// A namespace is gone: the kernel destroyed its sockets with it. Those seen born are told
    /// dead by the stream; those that existed at start are not, so they go now.
    fn forget_existing(&mut self, netns: u32) {
        let gone: Vec<(u32, SocketFlow)> = self.existing_tw.keys().filter(|(n, _)| *n == netns).copied().collect();
        for key in gone {
            if let Some(tw) = self.existing_tw.remove(&key) {
                self.end_existing_time_wait(&tw, None);
            }
        }
        let mut freed = Vec::new();
        let destinations = &self.destinations;
        self.existing_connected.retain(|(id, _)| {
            let gone = destinations.get(*id).destination.netns == netns;
            if gone {
                freed.push(*id);
            }
            !gone
        });
        for id in freed {
            let row = self.destinations.row_mut(id);
            row.in_use = row.in_use.saturating_sub(1);
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
            totals: NamespaceTotals::default(),
            setup_drops: BTreeMap::new(),
        })
    }

    /// A namespace's `ip_local_port_range` (the settings' when it was not described).
    pub fn port_range(&self, netns: u32) -> (u16, u16) {
        self.namespaces.get(&netns).map_or(self.settings.port_range, |n| n.port_range)
    }

    /// A namespace's TIME_WAIT births and deaths and PAWS drops since start, whether or not
    /// a view ranks it (a counter must not fall back to 0 when its namespace drops out of a
    /// view's top rows).
    pub fn namespace_totals(&self, netns: u32) -> NamespaceTotals {
        self.namespaces.get(&netns).map_or_else(NamespaceTotals::default, |n| n.totals)
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
            self.add_existing(now_ns, s);
        }
    }

    /// One socket read over sock_diag (at start, or at a resync) that the model does not
    /// have: a TIME_WAIT socket that leaves at its timer, or a connection holding its port.
    fn add_existing(&mut self, now_ns: u64, s: &ExistingSocket) {
        self.namespace(s.netns);
        // Before start we did not see who connected: a socket on an ephemeral port that is
        // not a listener's is taken to be a client's.
        let port = s.flow.local.port();
        let holds = self.ephemeral(s.netns, port) && !self.listening_ports.contains(&(s.netns, port));
        match s.state {
            tcp_state::TIME_WAIT => {
                // (A 4-tuple is one socket: a second read of it counts nothing more.)
                if self.existing_tw.contains_key(&(s.netns, s.flow)) {
                    return;
                }
                let tw = self.existing_time_wait(now_ns + s.expires_ms * 1_000_000, s.netns, s.flow, holds);
                self.existing_tw.insert((s.netns, s.flow), tw);
            }
            // LISTEN and CLOSE hold no connection's port.
            tcp_state::LISTEN | tcp_state::CLOSE => {}
            _ if holds => {
                let id = self.destinations.id(Destination::of(s.netns, &s.flow));
                if self.existing_connected.insert((id, port)) {
                    self.destinations.row_mut(id).in_use += 1;
                }
            }
            _ => {}
        }
    }

    /// Records the kernel reported lost so far (they are shown, never hidden).
    pub fn set_lost(&mut self, lost: u64) {
        if lost > self.lost {
            self.resync.lost(lost - self.lost, None);
        }
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
                if self.destinations.len() > self.max_rows() {
                    self.evict_beyond_limit();
                }
            }
            Event::PortSearch(e) => {
                self.started_ns.get_or_insert(e.ts_ns);
                self.port_search(e);
                let limit = self.max_rows();
                if self.searches.len() > limit || self.failures.len() > limit {
                    self.evict_beyond_limit();
                }
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
            Event::Lost(e) => {
                if e.total > self.lost {
                    self.resync.lost(e.total - self.lost, Some(e.ts_ns));
                }
                self.lost = self.lost.max(e.total);
            }
            Event::Skipped(e) => self.skipped_runs += e.new,
            Event::Namespace(e) => self.describe(&e.namespace),
            Event::Mark(e) => self.last_mark = Some(e.clone()),
        }
    }

    /// Moves the model's clock to `now_ns`: TIME_WAIT sockets read over sock_diag whose timer
    /// has run out by then leave (their deaths are not in the stream). Call before reading
    /// [`Self::sample`] or [`Self::snapshot`] at `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        if self.existing_tw.is_empty() {
            return;
        }
        let expired: Vec<(u32, SocketFlow)> =
            self.existing_tw.iter().filter(|(_, tw)| tw.expires_ns <= now_ns).map(|(k, _)| *k).collect();
        for key in expired {
            if let Some(tw) = self.existing_tw.remove(&key) {
                self.end_existing_time_wait(&tw, Some(now_ns));
            }
        }
    }

    /// A few running totals at `now_ns`, cheap enough to take every second of a long
    /// recording (the report's timelines); [`Self::snapshot`] has everything. Of the ports in
    /// use, only the [`SAMPLE_DESTINATIONS`] destinations holding the most.
    pub fn sample(&self, now_ns: u64) -> Sample {
        let held = self.destinations.iter().filter(|(_, row)| row.in_use > 0);
        let busiest = topk::top_k(held, SAMPLE_DESTINATIONS, |a, b| {
            b.1.in_use.cmp(&a.1.in_use).then_with(|| a.1.destination.cmp(&b.1.destination))
        });
        Sample {
            mono_ns: now_ns,
            timewait_live: self.timewait_live(),
            births_total: self.births.total(),
            expired_total: self.expired.total(),
            killed_total: self.killed.total(),
            drops_total: self.drops.total(),
            connect_failures_total: self.connect_failures,
            ports_in_use: busiest.into_iter().map(|(_, row)| (row.destination, u64::from(row.in_use))).collect(),
        }
    }

    /// TIME_WAIT sockets the model holds now, over every namespace.
    fn timewait_live(&self) -> u64 {
        (self.live.len() + self.existing_tw.len()) as u64
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

/// Destinations a [`Sample`] keeps (the busiest): a report charts a handful, and a sample a
/// second with a hundred thousand destinations would grow a long report by gigabytes.
pub const SAMPLE_DESTINATIONS: usize = 64;
