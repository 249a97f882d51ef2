//! The aggregator: a pure model of what the event stream says, for `top`, `stat`, `report`
//! and later the exporter. Feed it events (and an initial socket picture), move its clock with
//! [`Aggregator::advance`], and read a [`Snapshot`] at that time; reading never changes it.
//! No BPF, no clocks of its own: unit-tested with made-up streams.

pub mod stats;
#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;
use stats::{Histogram, Rate};

use crate::event::{
    Comm, DeathReason, DropEvent, Event, ExistingSocket, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent,
    TimeWaitChange, TimeWaitEvent, errno_name, tcp_state,
};

/// What the aggregator needs to know about the traced namespace.
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

impl Settings {
    fn range_size(&self) -> u64 {
        u64::from(self.port_range.1.saturating_sub(self.port_range.0)) + 1
    }

    fn ephemeral(&self, port: u16) -> bool {
        (self.port_range.0..=self.port_range.1).contains(&port)
    }
}

/// Toward one destination from one local address: connect() can use each port of the range
/// once per (local address, remote address and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Destination {
    pub local: IpAddr,
    pub remote: SocketAddr,
}

impl Destination {
    pub fn of(flow: &SocketFlow) -> Self {
        Self { local: flow.local.ip(), remote: flow.remote }
    }

    /// `10.0.0.5 → 10.0.0.9:8080`, as charts name it.
    pub fn label(&self) -> String {
        format!("{} → {}", self.local, self.remote)
    }
}

#[derive(Default)]
struct DestinationStats {
    in_use: u64,
    taken: Rate,
    freed: Rate,
    connects: Rate,
}

/// connect() port searches toward one remote endpoint. Kept per remote, not per destination:
/// a failed search has no local address, and recordings made before 2026-11-24 timed the
/// tracepoint backend's searches around the syscall, without one.
#[derive(Default)]
struct SearchStats {
    search_ns: Histogram,
    candidates: Histogram,
    failures: u64,
}

/// 16 bytes per live TIME_WAIT socket (a busy host has a million): names and destinations
/// are numbers in the aggregator's tables.
struct LiveTimeWait {
    /// Counted toward this destination's ports (client-side TIME_WAIT in the ephemeral range).
    holds_port_of: Option<DestinationId>,
    remote: RemoteKey,
    local: NameId,
    owner: NameId,
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
    // TIME_WAIT
    live: HashMap<u64, LiveTimeWait>,
    names: Names,
    destination_ids: DestinationIds,
    /// Pre-existing TIME_WAIT sockets: their deaths are not seen, so they leave at their timer.
    existing_tw: Vec<(u64, SocketFlow, bool)>,
    births: Rate,
    expired: Rate,
    killed: Rate,
    lifetimes: Histogram,
    // Port space
    destinations: HashMap<Destination, DestinationStats>,
    /// Client sockets holding a port: by kernel address (from state events) ...
    connected: HashMap<u64, Destination>,
    /// ... or, for sockets that existed before start, by destination and local port.
    existing_connected: HashSet<(Destination, u16)>,
    /// Connections made by connect() since start, by 4-tuple, with their socket's address:
    /// their TIME_WAIT keeps holding the port. A server-side TIME_WAIT socket on an
    /// ephemeral-range listening port does not.
    client_flows: HashMap<SocketFlow, u64>,
    /// Local ports with a listener at start: sockets on them are server side.
    listening_ports: HashSet<u16>,
    searches: HashMap<SocketAddr, SearchStats>,
    failures: HashMap<(Comm, u32, String), u64>,
    bind_search_ns: Histogram,
    bind_failures: u64,
    // PAWS
    drops: Rate,
    drops_by_reason: BTreeMap<String, (u64, Rate)>,
    sources: HashMap<IpAddr, PawsSource>,
    recent_drops: VecDeque<DropEvent>,
    counters: BTreeMap<String, i64>,
}

const RECENT_DROPS: usize = 8;

impl Aggregator {
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Sockets found at start, so the first frame is right, not only what is born after.
    pub fn seed(&mut self, now_ns: u64, sockets: &[ExistingSocket]) {
        self.started_ns.get_or_insert(now_ns);
        self.listening_ports
            .extend(sockets.iter().filter(|s| s.state == tcp_state::LISTEN).map(|s| s.flow.local.port()));
        for s in sockets {
            // Before start we did not see who connected: a socket on an ephemeral port that is
            // not a listener's is taken to be a client's.
            let port = s.flow.local.port();
            let holds = self.settings.ephemeral(port) && !self.listening_ports.contains(&port);
            let dest = Destination::of(&s.flow);
            match s.state {
                tcp_state::TIME_WAIT => {
                    self.existing_tw.push((now_ns + s.expires_ms * 1_000_000, s.flow, holds));
                    if holds {
                        self.destinations.entry(dest).or_default().in_use += 1;
                    }
                }
                // LISTEN and CLOSE hold no connection's port.
                tcp_state::LISTEN | tcp_state::CLOSE => {}
                _ if holds && self.existing_connected.insert((dest, s.flow.local.port())) => {
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
                for (name, delta) in &e.deltas {
                    *self.counters.entry(name.clone()).or_default() += delta;
                }
            }
            Event::Lost(e) => self.lost = self.lost.max(e.total),
            Event::Skipped(e) => self.skipped_runs += e.new,
        }
    }

    fn time_wait(&mut self, e: &TimeWaitEvent) {
        match &e.change {
            TimeWaitChange::Birth { .. } => {
                self.births.add(e.ts_ns, 1);
                // The full socket ends here. Its → CLOSE follows, or is left out by the kernel
                // when this birth stands for it (the state family's `LAST_BIRTH`): either way
                // its hold on the port ends now, and a client's TIME_WAIT takes the port over.
                let handed_over = e.flow.and_then(|f| self.client_flows.remove(&f).map(|sk| (f, sk)));
                if let Some((_, sk)) = handed_over {
                    if let Some(dest) = self.connected.remove(&sk) {
                        self.release(dest, e.ts_ns);
                    }
                } else if let Some(f) = e.flow {
                    if self.existing_connected.remove(&(Destination::of(&f), f.local.port())) {
                        self.release(Destination::of(&f), e.ts_ns);
                    }
                }
                let holds_port_of = handed_over.map(|(f, _)| Destination::of(&f));
                if let Some(dest) = holds_port_of {
                    let d = self.destinations.entry(dest).or_default();
                    d.in_use += 1;
                    d.taken.add(e.ts_ns, 1);
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
                let live = LiveTimeWait {
                    holds_port_of: holds_port_of.map(|d| self.destination_ids.id(d)),
                    remote,
                    local: self.names.id(local),
                    owner: self.names.id(owner_name(e.owner.as_ref())),
                };
                self.live.insert(e.tw_id, live);
            }
            TimeWaitChange::Rearm { .. } => {}
            TimeWaitChange::Death { reason, lifetime_ns } => {
                match reason {
                    DeathReason::Expired => self.expired.add(e.ts_ns, 1),
                    DeathReason::Killed => self.killed.add(e.ts_ns, 1),
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

    fn release(&mut self, dest: Destination, ts_ns: u64) {
        if let Some(d) = self.destinations.get_mut(&dest) {
            d.in_use = d.in_use.saturating_sub(1);
            d.freed.add(ts_ns, 1);
        }
    }

    fn state(&mut self, e: &StateEvent) {
        let Some(flow) = e.flow else { return };
        let dest = Destination::of(&flow);
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        if e.new_state == SYN_SENT {
            self.destinations.entry(dest).or_default().connects.add(e.ts_ns, 1);
        }
        if e.old_state == SYN_SENT && e.new_state == ESTABLISHED && self.connected.insert(e.sk_addr, dest).is_none() {
            self.client_flows.insert(flow, e.sk_addr);
            let d = self.destinations.entry(dest).or_default();
            d.in_use += 1;
            d.taken.add(e.ts_ns, 1);
        }
        if e.new_state == CLOSE {
            // A socket that became TIME_WAIT was already ended by the birth; this is one that
            // closed without.
            if let Some(dest) = self.connected.remove(&e.sk_addr) {
                self.client_flows.remove(&flow);
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
            *self.failures.entry((who.0, who.1, errno_name(e.errno))).or_default() += 1;
        }
        match e.op {
            SearchOp::Connect => {
                let Some(remote) = e.remote else { return };
                let d = self.searches.entry(remote).or_default();
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
        self.drops.add(e.ts_ns, 1);
        let entry = self.drops_by_reason.entry(e.reason.clone()).or_default();
        entry.0 += 1;
        entry.1.add(e.ts_ns, 1);
        if let Some(flow) = e.flow {
            let source = self.sources.entry(flow.remote.ip()).or_default();
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
        self.existing_tw.retain(|(expires, flow, holds)| {
            let alive = *expires > now_ns;
            if !alive && *holds {
                freed.push(Destination::of(flow));
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

    /// The size of the ephemeral port range.
    pub fn port_range_size(&self) -> u64 {
        self.settings.range_size()
    }

    /// The views at `now_ns` (CLOCK_MONOTONIC, the events' clock), as of the last
    /// [`Self::advance`].
    pub fn snapshot(&self, now_ns: u64) -> Snapshot {
        let since = self.started_ns.unwrap_or(now_ns);
        let top = self.settings.top;
        let range = self.settings.range_size();

        let mut by_remote: HashMap<&str, u64> = HashMap::new();
        let mut by_local: HashMap<&str, u64> = HashMap::new();
        let mut by_owner: HashMap<&str, u64> = HashMap::new();
        let mut remotes: HashMap<RemoteKey, u64> = HashMap::new();
        let mut by_id: [HashMap<NameId, u64>; 2] = Default::default();
        for tw in self.live.values() {
            *remotes.entry(tw.remote).or_default() += 1;
            *by_id[0].entry(tw.local).or_default() += 1;
            *by_id[1].entry(tw.owner).or_default() += 1;
        }
        for (counts, by_name) in by_id.iter().zip([&mut by_local, &mut by_owner]) {
            for (id, n) in counts {
                *by_name.entry(self.names.name(*id)).or_default() += n;
            }
        }
        // Only the leaders get names: formatting a million addresses per frame would not do.
        let mut remotes: Vec<(RemoteKey, u64)> = remotes.into_iter().collect();
        remotes.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
        let remote_names: Vec<(String, u64)> = remotes
            .iter()
            .take(top * 4 + 16)
            .map(|(key, n)| {
                let name = match key {
                    RemoteKey::V4(o) => std::net::Ipv4Addr::from(*o).to_string(),
                    RemoteKey::Named(id) => self.names.name(*id).to_owned(),
                };
                (name, *n)
            })
            .collect();
        for (name, n) in &remote_names {
            *by_remote.entry(name).or_default() += n;
        }
        let existing: Vec<(String, String)> =
            self.existing_tw.iter().map(|(_, f, _)| (f.remote.ip().to_string(), f.local.to_string())).collect();
        for (remote, local) in &existing {
            *by_remote.entry(remote).or_default() += 1;
            *by_local.entry(local).or_default() += 1;
            *by_owner.entry("(before start)").or_default() += 1;
        }
        let ms = |ns: Option<u64>| ns.map(|v| v as f64 / 1e6);
        let timewait = TimeWaitView {
            live: (self.live.len() + self.existing_tw.len()) as u64,
            max_buckets: self.settings.max_tw_buckets,
            births_per_s: self.births.per_second(now_ns, since),
            expired_per_s: self.expired.per_second(now_ns, since),
            killed_per_s: self.killed.per_second(now_ns, since),
            births_total: self.births.total(),
            expired_total: self.expired.total(),
            killed_total: self.killed.total(),
            lifetime_p50_ms: ms(self.lifetimes.quantile(0.5)),
            lifetime_p99_ms: ms(self.lifetimes.quantile(0.99)),
            lifetime_max_ms: ms(self.lifetimes.max()),
            by_remote: ranked(by_remote, top),
            by_local: ranked(by_local, top),
            by_owner: ranked(by_owner, top),
        };

        let us = |ns: Option<u64>| ns.map(|v| v as f64 / 1e3);
        // Remote endpoints searched for but with no destination (every connect failed, or all
        // closed): shown under the unspecified local address.
        let orphan_remotes: Vec<Destination> = self
            .searches
            .keys()
            .filter(|r| !self.destinations.keys().any(|d| d.remote == **r))
            .map(|r| Destination { local: unspecified_like(r.ip()), remote: *r })
            .collect();
        let idle = DestinationStats::default();
        let no_search = SearchStats::default();
        let rows = self.destinations.iter().chain(orphan_remotes.iter().map(|d| (d, &idle)));
        let mut destinations: Vec<DestinationView> = rows
            .map(|(dest, d)| {
                let growth = d.taken.per_second(now_ns, since) - d.freed.per_second(now_ns, since);
                let free = range.saturating_sub(d.in_use) as f64;
                let search = self.searches.get(&dest.remote).unwrap_or(&no_search);
                DestinationView {
                    destination: *dest,
                    in_use: d.in_use,
                    range,
                    utilisation: d.in_use as f64 / range as f64,
                    connects_per_s: d.connects.per_second(now_ns, since),
                    net_growth_per_s: growth,
                    seconds_to_exhaustion: (growth > 0.01).then(|| free / growth),
                    search_p50_us: us(search.search_ns.quantile(0.5)),
                    search_p99_us: us(search.search_ns.quantile(0.99)),
                    candidates_p50: search.candidates.quantile(0.5),
                    candidates_p99: search.candidates.quantile(0.99),
                    failures: search.failures,
                }
            })
            .filter(|d| d.in_use > 0 || d.failures > 0 || d.connects_per_s > 0.0)
            .collect();
        destinations.sort_by(|a, b| {
            b.utilisation
                .total_cmp(&a.utilisation)
                .then(b.failures.cmp(&a.failures))
                .then(a.destination.remote.cmp(&b.destination.remote))
        });
        destinations.truncate(top);
        let mut failures: Vec<FailureView> = self
            .failures
            .iter()
            .map(|((comm, pid, errno), count)| FailureView {
                process: format!("{comm}[{pid}]"),
                error: errno.clone(),
                count: *count,
            })
            .collect();
        failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.process.cmp(&b.process)));
        failures.truncate(top);

        let mut sources: Vec<SourceView> = self
            .sources
            .iter()
            .map(|(ip, s)| SourceView { source: *ip, drops: s.drops, flows: s.flows.len() as u64 })
            .collect();
        sources.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.source.cmp(&b.source)));
        sources.truncate(top);
        let paws = PawsView {
            drops_per_s: self.drops.per_second(now_ns, since),
            drops_total: self.drops.total(),
            by_reason: self
                .drops_by_reason
                .iter()
                .map(|(reason, (total, rate))| ReasonView {
                    reason: reason.clone(),
                    total: *total,
                    per_s: rate.per_second(now_ns, since),
                })
                .collect(),
            sources,
            recent: self
                .recent_drops
                .iter()
                .rev()
                .map(|d| RecentDrop {
                    mono_ns: d.ts_ns,
                    reason: d.reason.clone(),
                    local: d.flow.map(|f| f.local),
                    remote: d.flow.map(|f| f.remote),
                })
                .collect(),
            counters: self.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        Snapshot {
            mono_ns: now_ns,
            seconds: (now_ns.saturating_sub(since)) as f64 / 1e9,
            events: self.events,
            lost: self.lost,
            skipped_runs: self.skipped_runs,
            timewait,
            port_space: PortSpaceView {
                range: self.settings.port_range,
                destinations,
                failures,
                bind_search_p50_us: us(self.bind_search_ns.quantile(0.5)),
                bind_search_p99_us: us(self.bind_search_ns.quantile(0.99)),
                bind_failures: self.bind_failures,
            },
            paws,
        }
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) }
}

fn owner_name(owner: Option<&Process>) -> String {
    owner.map(|p| format!("{}[{}]", p.comm, p.pid)).unwrap_or_else(|| "(unknown)".into())
}

fn ranked(counts: HashMap<&str, u64>, top: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = counts.into_iter().map(|(key, count)| Group { key: key.to_owned(), count }).collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    groups.truncate(top);
    groups
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Group {
    pub key: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimeWaitView {
    pub live: u64,
    pub max_buckets: Option<u64>,
    pub births_per_s: f64,
    pub expired_per_s: f64,
    pub killed_per_s: f64,
    pub births_total: u64,
    pub expired_total: u64,
    pub killed_total: u64,
    pub lifetime_p50_ms: Option<f64>,
    pub lifetime_p99_ms: Option<f64>,
    pub lifetime_max_ms: Option<f64>,
    pub by_remote: Vec<Group>,
    pub by_local: Vec<Group>,
    pub by_owner: Vec<Group>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DestinationView {
    /// `local` and `remote` in the JSON.
    #[serde(flatten)]
    pub destination: Destination,
    pub in_use: u64,
    pub range: u64,
    pub utilisation: f64,
    pub connects_per_s: f64,
    pub net_growth_per_s: f64,
    pub seconds_to_exhaustion: Option<f64>,
    pub search_p50_us: Option<f64>,
    pub search_p99_us: Option<f64>,
    pub candidates_p50: Option<u64>,
    pub candidates_p99: Option<u64>,
    pub failures: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FailureView {
    pub process: String,
    pub error: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PortSpaceView {
    pub range: (u16, u16),
    pub destinations: Vec<DestinationView>,
    pub failures: Vec<FailureView>,
    pub bind_search_p50_us: Option<f64>,
    pub bind_search_p99_us: Option<f64>,
    pub bind_failures: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReasonView {
    pub reason: String,
    pub total: u64,
    pub per_s: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceView {
    pub source: IpAddr,
    pub drops: u64,
    /// Distinct (remote port, local port) pairs: many flows from one address is the NAT
    /// signature (hosts behind one address with unsynchronised timestamp clocks).
    pub flows: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecentDrop {
    pub mono_ns: u64,
    pub reason: String,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PawsView {
    pub drops_per_s: f64,
    pub drops_total: u64,
    pub by_reason: Vec<ReasonView>,
    pub sources: Vec<SourceView>,
    pub recent: Vec<RecentDrop>,
    /// Kernel counter totals since start (netstat deltas).
    pub counters: Vec<(String, i64)>,
}

/// See [`Aggregator::sample`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub mono_ns: u64,
    pub timewait_live: u64,
    pub births_total: u64,
    pub expired_total: u64,
    pub killed_total: u64,
    pub drops_total: u64,
    pub connect_failures_total: u64,
    /// Ports held per destination (destinations holding none are left out).
    pub ports_in_use: Vec<(Destination, u64)>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Snapshot {
    pub mono_ns: u64,
    pub seconds: f64,
    pub events: u64,
    pub lost: u64,
    /// Runs of twtrace's programs the kernel skipped (each may have been an event).
    pub skipped_runs: u64,
    pub timewait: TimeWaitView,
    pub port_space: PortSpaceView,
    pub paws: PawsView,
}
