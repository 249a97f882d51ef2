//! The views: what `top`, `stat`, `report` and the exporter read of the model at a moment.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{
    Aggregator, Destination, DestinationStats, NameId, PeerTimestamps, RemoteKey, SearchStats, range_size,
    stats::Histogram,
};

impl Aggregator {
    /// The views at `now_ns` (CLOCK_MONOTONIC, the events' clock), as of the last
    /// [`Aggregator::advance`].
    pub fn snapshot(&self, now_ns: u64) -> Snapshot {
        let since = self.started_ns.unwrap_or(now_ns);
        let top = self.settings.top;
        let timewait = self.timewait_view(now_ns, since);
        let us = |ns: Option<u64>| ns.map(|v| v as f64 / 1e3);

        // Remote endpoints searched for but with no destination (every connect failed, or all
        // closed): shown under the unspecified local address.
        let orphan_remotes: Vec<Destination> = self
            .searches
            .keys()
            .filter(|(netns, r)| !self.destinations.keys().any(|d| d.netns == *netns && d.remote == *r))
            .map(|(netns, r)| Destination { netns: *netns, local: unspecified_like(r.ip()), remote: *r })
            .collect();
        let idle = DestinationStats::default();
        let no_search = SearchStats::default();
        let rows = self.destinations.iter().chain(orphan_remotes.iter().map(|d| (d, &idle)));
        let mut all_destinations: Vec<DestinationView> = rows
            .map(|(dest, d)| {
                let range = self.range_size(dest.netns);
                let growth = d.taken.per_second(now_ns, since) - d.freed.per_second(now_ns, since);
                let free = range.saturating_sub(d.in_use) as f64;
                let search = self.searches.get(&(dest.netns, dest.remote)).unwrap_or(&no_search);
                DestinationView {
                    destination: *dest,
                    namespace: self.namespace_name(dest.netns),
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
                    peer_timestamps: (d.peer_timestamps.known() > 0).then_some(d.peer_timestamps),
                }
            })
            .filter(|d| d.in_use > 0 || d.failures > 0 || d.connects_per_s > 0.0)
            .collect();
        // The worst destination on the host first, whichever namespace it is in.
        all_destinations.sort_by(|a, b| {
            b.utilisation
                .total_cmp(&a.utilisation)
                .then(b.failures.cmp(&a.failures))
                .then(a.destination.cmp(&b.destination))
        });
        let namespaces = self.namespace_views(&all_destinations, &timewait.by_netns);
        let mut destinations = all_destinations;
        destinations.truncate(top);

        // By command: one-shot clients (a curl per request) are one row, not one per pid.
        let mut by_command: HashMap<(u32, crate::event::Comm, &str), (u64, HashSet<u32>)> = HashMap::new();
        for ((netns, comm, pid, errno), count) in &self.failures {
            let entry = by_command.entry((*netns, *comm, errno.as_str())).or_default();
            entry.0 += count;
            entry.1.insert(*pid);
        }
        let mut failures: Vec<FailureView> = by_command
            .into_iter()
            .map(|((netns, comm, errno), (count, pids))| {
                let example_pid = pids.iter().copied().min().unwrap_or(0);
                FailureView {
                    netns,
                    namespace: self.namespace_name(netns),
                    process: match pids.len() {
                        1 => format!("{comm}[{example_pid}]"),
                        n => format!("{comm} ({n} processes, e.g. {example_pid})"),
                    },
                    command: comm.to_string(),
                    processes: pids.len() as u64,
                    example_pid,
                    error: errno.to_owned(),
                    count,
                }
            })
            .collect();
        failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.process.cmp(&b.process)).then(a.netns.cmp(&b.netns)));
        let failures_total = failures.iter().map(|f| (f.error.clone(), f.count)).fold(
            std::collections::BTreeMap::<String, u64>::new(),
            |mut totals, (error, count)| {
                *totals.entry(error).or_default() += count;
                totals
            },
        );
        failures.truncate(top);

        let mut sources: Vec<SourceView> = self
            .sources
            .iter()
            .map(|((netns, ip), s)| SourceView {
                netns: *netns,
                source: *ip,
                drops: s.drops,
                flows: s.flows.len() as u64,
            })
            .collect();
        sources.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.source.cmp(&b.source)).then(a.netns.cmp(&b.netns)));
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
            last_mark: self.last_mark.as_ref().map(|m| MarkView {
                at: crate::time::WallTime::from_unix_ns(m.unix_ns),
                ago_s: now_ns.saturating_sub(m.ts_ns) as f64 / 1e9,
                text: m.text.clone(),
                author: m.author(),
            }),
            namespaces_seen: self.namespaces.len() as u64,
            namespaces,
            timewait: timewait.view,
            port_space: PortSpaceView {
                range: self.settings.port_range,
                destinations,
                failures,
                failures_total: failures_total.into_iter().collect(),
                bind_search_p50_us: us(self.bind_search_ns.quantile(0.5)),
                bind_search_p99_us: us(self.bind_search_ns.quantile(0.99)),
                bind_failures: self.bind_failures,
            },
            paws,
        }
    }

    fn timewait_view(&self, now_ns: u64, since: u64) -> TimeWaitParts {
        let top = self.settings.top;
        let mut by_remote: HashMap<&str, u64> = HashMap::new();
        let mut by_local: HashMap<&str, u64> = HashMap::new();
        let mut by_owner: HashMap<&str, u64> = HashMap::new();
        let mut remotes: HashMap<RemoteKey, u64> = HashMap::new();
        let mut by_id: [HashMap<NameId, u64>; 2] = Default::default();
        let mut by_netns: HashMap<u32, u64> = HashMap::new();
        // Per command: sockets, and its distinct owners (processes).
        let mut commands: HashMap<NameId, (u64, HashSet<NameId>)> = HashMap::new();
        for tw in self.live.values() {
            *remotes.entry(tw.remote).or_default() += 1;
            *by_id[0].entry(tw.local).or_default() += 1;
            *by_id[1].entry(tw.owner).or_default() += 1;
            *by_netns.entry(tw.netns).or_default() += 1;
            let command = commands.entry(tw.command).or_default();
            command.0 += 1;
            command.1.insert(tw.owner);
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
            self.existing_tw.values().map(|tw| (tw.flow.remote.ip().to_string(), tw.flow.local.to_string())).collect();
        let mut before_start = 0;
        for ((remote, local), tw) in existing.iter().zip(self.existing_tw.values()) {
            *by_remote.entry(remote).or_default() += 1;
            *by_local.entry(local).or_default() += 1;
            *by_owner.entry("(before start)").or_default() += 1;
            *by_netns.entry(tw.netns).or_default() += 1;
            before_start += 1;
        }
        let mut by_command: Vec<CommandGroup> = commands
            .iter()
            .map(|(id, (count, owners))| CommandGroup {
                command: self.names.name(*id).to_owned(),
                processes: owners.len() as u64,
                count: *count,
            })
            .collect();
        if before_start > 0 {
            by_command.push(CommandGroup { command: "(before start)".into(), processes: 0, count: before_start });
        }
        by_command.sort_by(|a, b| b.count.cmp(&a.count).then(a.command.cmp(&b.command)));
        by_command.truncate(top);
        let names: Vec<(String, u64)> = by_netns.iter().map(|(netns, n)| (self.namespace_name(*netns), *n)).collect();
        let by_namespace = ranked(names.iter().map(|(k, n)| (k.as_str(), *n)).collect(), top);
        let ms = |ns: Option<u64>| ns.map(|v| v as f64 / 1e6);
        // One namespace: its limit is the ceiling. Several: each has its own (the namespace
        // view shows them); a sum would be no one's limit.
        let max_buckets = match self.namespaces.len() {
            0 => self.settings.max_tw_buckets,
            1 => self.namespaces.values().next().and_then(|n| n.max_tw_buckets),
            _ => None,
        };
        let view = TimeWaitView {
            live: (self.live.len() + self.existing_tw.len()) as u64,
            max_buckets,
            births_per_s: self.births.per_second(now_ns, since),
            expired_per_s: self.expired.per_second(now_ns, since),
            killed_per_s: self.killed.per_second(now_ns, since),
            births_total: self.births.total(),
            expired_total: self.expired.total(),
            killed_total: self.killed.total(),
            killed_by: self.killed_by,
            lifetime_p50_ms: ms(self.lifetimes.quantile(0.5)),
            lifetime_p99_ms: ms(self.lifetimes.quantile(0.99)),
            lifetime_max_ms: ms(self.lifetimes.max()),
            by_remote: ranked(by_remote, top),
            by_local: ranked(by_local, top),
            by_owner: ranked(by_owner, top),
            by_command,
            by_namespace,
        };
        TimeWaitParts { view, by_netns }
    }

    /// Every namespace with something to show, the one closest to running out first.
    fn namespace_views(&self, destinations: &[DestinationView], tw_by_netns: &HashMap<u32, u64>) -> Vec<NamespaceView> {
        let mut views: Vec<NamespaceView> = self
            .namespaces
            .iter()
            .map(|(netns, n)| {
                let own = destinations.iter().filter(|d| d.destination.netns == *netns);
                let (mut in_use, mut worst, mut failures) = (0, 0.0f64, 0);
                for d in own {
                    in_use += d.in_use;
                    worst = worst.max(d.utilisation);
                    failures += d.failures;
                }
                NamespaceView {
                    netns: *netns,
                    name: n.name.clone(),
                    described: n.sysctls.is_some(),
                    live: n.live,
                    port_range: n.port_range,
                    range: range_size(n.port_range),
                    max_tw_buckets: n.max_tw_buckets,
                    timewait_live: tw_by_netns.get(netns).copied().unwrap_or(0),
                    ports_in_use: in_use,
                    worst_utilisation: worst,
                    connect_failures: failures,
                    counters: n.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    setup_drops: n.setup_drops.values().cloned().collect(),
                }
            })
            // What is there now: a namespace that is gone has nothing left to show.
            .filter(|v| {
                v.live
                    && (v.timewait_live > 0
                        || v.ports_in_use > 0
                        || v.connect_failures > 0
                        || !v.counters.is_empty()
                        || !v.setup_drops.is_empty())
            })
            .collect();
        views.sort_by(|a, b| {
            b.worst_utilisation
                .total_cmp(&a.worst_utilisation)
                .then(b.connect_failures.cmp(&a.connect_failures))
                .then(b.timewait_live.cmp(&a.timewait_live))
                .then(a.netns.cmp(&b.netns))
        });
        views.truncate(self.settings.top);
        views
    }
}

/// Read-only access to the distributions and running totals behind the views, for the
/// exporter's histograms and counters.
impl Aggregator {
    /// TIME_WAIT lifetimes (ns) of the deaths seen.
    pub fn lifetimes(&self) -> &Histogram {
        &self.lifetimes
    }

    /// bind()/listen() port search durations (ns).
    pub fn bind_searches(&self) -> &Histogram {
        &self.bind_search_ns
    }

    /// connect() port searches per (namespace, remote endpoint): durations (ns), candidates.
    pub fn connect_searches(&self) -> impl Iterator<Item = ((u32, SocketAddr), &Histogram, &Histogram)> {
        self.searches.iter().map(|(k, s)| (*k, &s.search_ns, &s.candidates))
    }

    /// connect() attempts toward a destination since start (0 for one never seen).
    pub fn connects_total(&self, dest: &Destination) -> u64 {
        self.destinations.get(dest).map_or(0, |d| d.connects.total())
    }
}

struct TimeWaitParts {
    view: TimeWaitView,
    by_netns: HashMap<u32, u64>,
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) }
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

/// TIME_WAIT sockets of one command (all its processes: a service's workers are one row).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CommandGroup {
    pub command: String,
    /// Distinct processes of that command holding them.
    pub processes: u64,
    pub count: u64,
}

/// Early deaths by the path that caused them (see [`crate::event::DeathReason`]).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KilledBy {
    /// A connect() took the 4-tuple (`tcp_tw_reuse`).
    pub reused: u64,
    /// An RST arrived (RFC 1337 assassination).
    pub reset: u64,
    /// A segment for the 4-tuple: a new connection's SYN, or one answered with a reset.
    pub incoming: u64,
    /// The namespace was torn down.
    pub namespace_exit: u64,
    /// No path known (no kernel stack, or a caller twtrace does not know).
    pub unknown: u64,
}

impl KilledBy {
    pub fn add(&mut self, reason: crate::event::DeathReason) {
        use crate::event::DeathReason as R;
        match reason {
            R::Expired => {}
            R::Killed => self.unknown += 1,
            R::Reused => self.reused += 1,
            R::Reset => self.reset += 1,
            R::Incoming => self.incoming += 1,
            R::NamespaceExit => self.namespace_exit += 1,
        }
    }

    /// `reused 3, reset 1`: the paths seen, for text output; empty when none.
    pub fn text(&self) -> String {
        [
            ("reused", self.reused),
            ("reset", self.reset),
            ("incoming", self.incoming),
            ("namespace exit", self.namespace_exit),
            ("path unknown", self.unknown),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimeWaitView {
    /// Summed over namespaces.
    pub live: u64,
    /// `tcp_max_tw_buckets` when one namespace is traced (each namespace has its own:
    /// [`NamespaceView::max_tw_buckets`]).
    pub max_buckets: Option<u64>,
    pub births_per_s: f64,
    pub expired_per_s: f64,
    pub killed_per_s: f64,
    pub births_total: u64,
    pub expired_total: u64,
    pub killed_total: u64,
    /// `killed_total` by path.
    pub killed_by: KilledBy,
    pub lifetime_p50_ms: Option<f64>,
    pub lifetime_p99_ms: Option<f64>,
    pub lifetime_max_ms: Option<f64>,
    pub by_remote: Vec<Group>,
    pub by_local: Vec<Group>,
    pub by_owner: Vec<Group>,
    pub by_command: Vec<CommandGroup>,
    pub by_namespace: Vec<Group>,
}

/// One namespace: its own settings, and what it holds of them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NamespaceView {
    pub netns: u32,
    pub name: String,
    /// Its settings were read inside it (otherwise assumed: a recording before namespaces).
    pub described: bool,
    pub live: bool,
    pub port_range: (u16, u16),
    pub range: u64,
    pub max_tw_buckets: Option<u64>,
    pub timewait_live: u64,
    /// Ports held toward every destination of the namespace.
    pub ports_in_use: u64,
    /// The utilisation of its fullest destination (0–1).
    pub worst_utilisation: f64,
    pub connect_failures: u64,
    /// Its kernel counters since start (netstat deltas).
    pub counters: Vec<(String, i64)>,
    /// Drops that cost connections other than PAWS, by reason (the PAWS ones are in
    /// [`PawsView`], by source).
    pub setup_drops: Vec<SetupDropView>,
}

/// A namespace's drops of one reason that cost connections: netfilter's, the accept queue's.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SetupDropView {
    /// Kernel name, e.g. `NETFILTER_DROP`.
    pub reason: String,
    pub class: crate::event::DropClass,
    pub total: u64,
    /// Of those, connections' opening SYNs: connection attempts that were lost.
    pub syns: u64,
    /// Of the SYNs, those this host sent (its own connect()s'), not received.
    pub syns_sent: u64,
    /// The listening (or connected-to) ends and their drops, first seen first; in JSON
    /// `[["127.0.0.1:7000", 12], ...]`.
    pub services: Vec<(SocketAddr, u64)>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DestinationView {
    /// `netns`, `local` and `remote` in the JSON.
    #[serde(flatten)]
    pub destination: Destination,
    /// The namespace's name.
    pub namespace: String,
    pub in_use: u64,
    /// Its namespace's range.
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
    /// Its TIME_WAIT sockets with and without the peer's timestamps (`None`: none read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_timestamps: Option<PeerTimestamps>,
}

/// Failed port searches of one command in one namespace, by error.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FailureView {
    pub netns: u32,
    pub namespace: String,
    /// `comm[pid]`, or `comm (N processes, e.g. PID)`.
    pub process: String,
    pub command: String,
    pub processes: u64,
    pub example_pid: u32,
    pub error: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PortSpaceView {
    /// The range of namespaces nothing described (each destination has its own `range`).
    pub range: (u16, u16),
    pub destinations: Vec<DestinationView>,
    /// The top rows; `failures_total` counts every failure.
    pub failures: Vec<FailureView>,
    /// Every failed search by error (EADDRNOTAVAIL, ...), whatever the rows show.
    pub failures_total: Vec<(String, u64)>,
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
    pub netns: u32,
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
    /// Kernel counter totals since start (netstat deltas), summed over namespaces.
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
    /// The latest mark seen (`twtrace mark`), if any.
    pub last_mark: Option<MarkView>,
    /// Namespaces described or seen in events.
    pub namespaces_seen: u64,
    /// Those with something to show, the one closest to running out of ports first.
    pub namespaces: Vec<NamespaceView>,
    pub timewait: TimeWaitView,
    pub port_space: PortSpaceView,
    pub paws: PawsView,
}

/// A mark as the live views show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MarkView {
    pub at: crate::time::WallTime,
    /// Seconds of stream time since it was made.
    pub ago_s: f64,
    pub text: String,
    /// "uid 0 pid 4242".
    pub author: String,
}
