//! The views: what `top`, `stat`, `report` and the exporter read of the model at a moment.
//! Every view is built in time linear in the rows it reads and k log k in the rows it shows
//! (`topk`): no pass over rows inside a pass over rows, no sort of everything to show ten,
//! and TIME_WAIT groupings read from counts kept as sockets come and go.

use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{
    Aggregator, Destination, NameId, PeerTimestamps, range_size, resync::ResyncView, stats::Histogram,
    timewait::BEFORE_START, timewait::RemoteKey, topk::top_k,
};

/// What a namespace's visible destinations add up to.
#[derive(Default)]
struct NamespaceSums {
    in_use: u64,
    worst: f64,
    failures: u64,
}

impl Aggregator {
    /// The views at `now_ns` (CLOCK_MONOTONIC, the events' clock), as of the last
    /// [`Aggregator::advance`].
    pub fn snapshot(&self, now_ns: u64) -> Snapshot {
        let since = self.started_ns.unwrap_or(now_ns);
        let top = self.settings.top;
        let timewait = self.timewait_view(now_ns, since);
        let (destinations, sums) = self.destination_views(now_ns, since);
        let namespaces = self.namespace_views(&sums);
        let (failures, failures_total) = self.failure_views();

        let sources = top_k(self.sources.iter(), top, |a, b| {
            b.1.drops.cmp(&a.1.drops).then(a.0.1.cmp(&b.0.1)).then(a.0.0.cmp(&b.0.0))
        })
        .into_iter()
        .map(|((netns, ip), s)| SourceView { netns: *netns, source: *ip, drops: s.drops, flows: s.flows.len() as u64 })
        .collect();
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
            approximate: self.approximate(),
            unrepaired_lost: self.unrepaired_loss(),
            last_resync: self.last_resync().cloned(),
            model: self.model_size(),
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
                failures_total,
                bind_search_p50_us: us(self.bind_search_ns.quantile(0.5)),
                bind_search_p99_us: us(self.bind_search_ns.quantile(0.99)),
                bind_failures: self.bind_failures,
            },
            paws,
        }
    }

    /// How many rows of each kind the model holds (what its memory grows with).
    pub fn model_size(&self) -> ModelSize {
        ModelSize {
            destinations: self.destinations.len() as u64,
            searches: self.searches.len() as u64,
            timewait_sockets: self.timewait_live(),
            connections: (self.connected.len() + self.existing_connected.len()) as u64,
            failure_rows: self.failures.len() as u64,
            paws_sources: self.sources.len() as u64,
            names: self.names.len() as u64,
            evicted: self.evicted.rows(),
        }
    }

    /// The top destinations (the fullest on the host first, whichever namespace it is in),
    /// and what each namespace's visible destinations add up to. One pass over the rows.
    fn destination_views(&self, now_ns: u64, since: u64) -> (Vec<DestinationView>, HashMap<u32, NamespaceSums>) {
        /// A row as ranked: the full view is built only for the rows shown.
        struct Ranked<'a> {
            destination: Destination,
            utilisation: f64,
            failures: u64,
            row: Option<&'a super::ports::DestinationRow>,
        }
        // Remotes with failed searches (few, unless every connect fails): a row's failures
        // are looked up only there, and those no row covers are shown on their own.
        let mut failing: HashMap<(u32, SocketAddr), (u64, bool)> =
            self.searches.iter().filter(|(_, s)| s.failures > 0).map(|(k, s)| (*k, (s.failures, false))).collect();
        let mut sums: HashMap<u32, NamespaceSums> = HashMap::new();
        let mut visible = Vec::new();
        for (_, row) in self.destinations.iter() {
            let d = row.destination;
            let failures = match failing.get_mut(&(d.netns, d.remote)) {
                Some((n, covered)) => {
                    *covered = true;
                    *n
                }
                None => 0,
            };
            if row.in_use == 0 && failures == 0 && !row.connects.active(now_ns, since) {
                continue;
            }
            let utilisation = f64::from(row.in_use) / self.range_size(d.netns) as f64;
            visible.push(Ranked { destination: d, utilisation, failures, row: Some(row) });
        }
        // Remote endpoints searched for but with no destination (every connect failed, or all
        // closed): shown under the unspecified local address.
        for ((netns, remote), (failures, covered)) in failing {
            if !covered {
                let destination = Destination { netns, local: unspecified_like(remote.ip()), remote };
                visible.push(Ranked { destination, utilisation: 0.0, failures, row: None });
            }
        }
        // Failures of evicted search rows still count in their namespace.
        for (netns, failures) in &self.evicted_failures_by_netns {
            sums.entry(*netns).or_default().failures += failures;
        }
        for r in &visible {
            let sum = sums.entry(r.destination.netns).or_default();
            sum.in_use += r.row.map_or(0, |row| u64::from(row.in_use));
            sum.worst = sum.worst.max(r.utilisation);
            sum.failures += r.failures;
        }
        let shown = top_k(visible, self.settings.top, |a, b| {
            b.utilisation
                .total_cmp(&a.utilisation)
                .then(b.failures.cmp(&a.failures))
                .then(a.destination.cmp(&b.destination))
        });
        let views = shown
            .into_iter()
            .map(|r| {
                let dest = r.destination;
                let range = self.range_size(dest.netns);
                let search = self.searches.get(&(dest.netns, dest.remote));
                let (in_use, connects_per_s, growth, peer_timestamps) = match r.row {
                    Some(row) => (
                        u64::from(row.in_use),
                        row.connects.per_second(now_ns, since),
                        row.taken.per_second(now_ns, since) - row.freed.per_second(now_ns, since),
                        row.peer_timestamps,
                    ),
                    None => (0, 0.0, 0.0, PeerTimestamps::default()),
                };
                let free = range.saturating_sub(in_use) as f64;
                let quantile = |h: Option<&Histogram>, q| h.and_then(|h| h.quantile(q));
                let search_ns = search.map(|s| &s.search_ns);
                let candidates = search.and_then(|s| s.candidates.as_deref());
                DestinationView {
                    destination: dest,
                    namespace: self.namespace_name(dest.netns),
                    in_use,
                    range,
                    utilisation: r.utilisation,
                    connects_per_s,
                    net_growth_per_s: growth,
                    seconds_to_exhaustion: (growth > 0.01).then(|| free / growth),
                    search_p50_us: us(quantile(search_ns, 0.5)),
                    search_p99_us: us(quantile(search_ns, 0.99)),
                    candidates_p50: quantile(candidates, 0.5),
                    candidates_p99: quantile(candidates, 0.99),
                    failures: r.failures,
                    peer_timestamps: (peer_timestamps.known() > 0).then_some(peer_timestamps),
                }
            })
            .collect();
        (views, sums)
    }

    /// Failed searches by command (one-shot clients, a curl per request, are one row, not
    /// one per pid), and every failure by error whatever the rows show.
    fn failure_views(&self) -> (Vec<FailureView>, Vec<(String, u64)>) {
        let mut totals = std::collections::BTreeMap::<String, u64>::new();
        for ((_, _, errno), group) in &self.failure_groups {
            *totals.entry(crate::event::errno_name(*errno)).or_default() += group.count;
        }
        let views = self.failure_groups.iter().map(|((netns, comm, errno), g)| FailureView {
            netns: *netns,
            namespace: String::new(),
            process: match g.processes {
                1 => format!("{comm}[{}]", g.example_pid),
                n => format!("{comm} ({n} processes, e.g. {})", g.example_pid),
            },
            command: comm.to_string(),
            processes: g.processes,
            example_pid: g.example_pid,
            error: crate::event::errno_name(*errno),
            count: g.count,
        });
        let mut shown = top_k(views, self.settings.top, |a, b| {
            b.count
                .cmp(&a.count)
                .then(a.process.cmp(&b.process))
                .then(a.netns.cmp(&b.netns))
                .then(a.error.cmp(&b.error))
        });
        for f in &mut shown {
            f.namespace = self.namespace_name(f.netns);
        }
        (shown, totals.into_iter().collect())
    }

    fn timewait_view(&self, now_ns: u64, since: u64) -> TimeWaitParts {
        let top = self.settings.top;
        let g = &self.tw_groups;
        // Ranked before any is named: a server's million clients are not formatted per frame.
        // Ties go by address (IPv4 in numeric order, then the others by name).
        let remote_order = |a: &(&RemoteKey, &u32), b: &(&RemoteKey, &u32)| {
            b.1.cmp(a.1).then_with(|| match (a.0, b.0) {
                (RemoteKey::V4(x), RemoteKey::V4(y)) => x.cmp(y),
                (RemoteKey::V4(_), RemoteKey::Named(_)) => std::cmp::Ordering::Less,
                (RemoteKey::Named(_), RemoteKey::V4(_)) => std::cmp::Ordering::Greater,
                (RemoteKey::Named(x), RemoteKey::Named(y)) => self.names.name(*x).cmp(self.names.name(*y)),
            })
        };
        let by_remote = top_k(g.remotes.iter(), top, remote_order)
            .into_iter()
            .map(|(key, count)| Group { key: self.remote_name(*key), count: u64::from(*count) })
            .collect();
        let named = |counts: &HashMap<NameId, u64>| -> Vec<Group> {
            top_k(counts.iter().map(|(id, n)| (self.names.name(*id), *n)), top, by_count)
                .into_iter()
                .map(|(key, count)| Group { key: key.to_owned(), count })
                .collect()
        };
        let before_start = self.names.find(&BEFORE_START.to_owned());
        let by_command = top_k(
            g.commands.iter().map(|(id, (count, processes))| CommandGroup {
                command: self.names.name(*id).to_owned(),
                // Sockets read over sock_diag have no known process.
                processes: if Some(*id) == before_start { 0 } else { *processes },
                count: *count,
            }),
            top,
            |a, b| b.count.cmp(&a.count).then(a.command.cmp(&b.command)),
        );
        let names: Vec<(String, u64)> = g.netns.iter().map(|(netns, n)| (self.namespace_name(*netns), *n)).collect();
        let by_namespace = top_k(names, top, by_count).into_iter().map(|(key, count)| Group { key, count }).collect();
        let ms = |ns: Option<u64>| ns.map(|v| v as f64 / 1e6);
        // One namespace: its limit is the ceiling. Several: each has its own (the namespace
        // view shows them); a sum would be no one's limit.
        let max_buckets = match self.namespaces.len() {
            0 => self.settings.max_tw_buckets,
            1 => self.namespaces.values().next().and_then(|n| n.max_tw_buckets),
            _ => None,
        };
        let view = TimeWaitView {
            live: self.timewait_live(),
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
            by_remote,
            by_local: named(&g.locals),
            by_owner: named(&g.owners),
            by_command,
            by_namespace,
        };
        TimeWaitParts { view }
    }

    /// Every namespace with something to show, the one closest to running out first.
    fn namespace_views(&self, sums: &HashMap<u32, NamespaceSums>) -> Vec<NamespaceView> {
        let none = NamespaceSums::default();
        let rows = self
            .namespaces
            .iter()
            // What is there now: a namespace that is gone has nothing left to show.
            .filter(|(_, n)| n.live)
            .map(|(netns, n)| {
                let sum = sums.get(netns).unwrap_or(&none);
                (netns, n, sum, self.tw_groups.netns.get(netns).copied().unwrap_or(0))
            })
            .filter(|(_, n, sum, tw)| {
                *tw > 0
                    || sum.in_use > 0
                    || sum.failures > 0
                    || !n.counters.is_empty()
                    || !n.setup_drops.is_empty()
                    || n.totals != NamespaceTotals::default()
            });
        let shown = top_k(rows, self.settings.top, |a, b| {
            b.2.worst.total_cmp(&a.2.worst).then(b.2.failures.cmp(&a.2.failures)).then(b.3.cmp(&a.3)).then(a.0.cmp(b.0))
        });
        shown
            .into_iter()
            .map(|(netns, n, sum, tw)| NamespaceView {
                netns: *netns,
                name: n.name.clone(),
                described: n.sysctls.is_some(),
                live: n.live,
                port_range: n.port_range,
                range: range_size(n.port_range),
                max_tw_buckets: n.max_tw_buckets,
                timewait_live: tw,
                ports_in_use: sum.in_use,
                worst_utilisation: sum.worst,
                connect_failures: sum.failures,
                totals: n.totals,
                counters: n.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                setup_drops: n.setup_drops.values().cloned().collect(),
            })
            .collect()
    }
}

/// Read-only access to the distributions behind the views, for the exporter's histograms.
impl Aggregator {
    /// TIME_WAIT lifetimes (ns) of the deaths seen.
    pub fn lifetimes(&self) -> &Histogram {
        &self.lifetimes
    }

    /// bind()/listen() port search durations (ns).
    pub fn bind_searches(&self) -> &Histogram {
        &self.bind_search_ns
    }
}

struct TimeWaitParts {
    view: TimeWaitView,
}

fn us(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e3)
}

/// Most first, then by name.
fn by_count<K: Ord>(a: &(K, u64), b: &(K, u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then(a.0.cmp(&b.0))
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) }
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

/// One namespace's share of the host-wide totals since start: which pod churns, whose
/// sockets die early, who takes the PAWS drops.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NamespaceTotals {
    pub timewait_births: u64,
    /// TIME_WAIT deaths at their timer ...
    pub timewait_expired: u64,
    /// ... and before it, by path.
    pub timewait_killed_by: KilledBy,
    pub paws_drops: u64,
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
    /// Destroyed on request (`tcp_abort()`: `ss -K`, `bpf_sock_destroy()`).
    pub aborted: u64,
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
            R::Aborted => self.aborted += 1,
        }
    }

    /// `reused 3, reset 1`: the paths seen, for text output; empty when none.
    pub fn text(&self) -> String {
        [
            ("reused", self.reused),
            ("reset", self.reset),
            ("incoming", self.incoming),
            ("namespace exit", self.namespace_exit),
            ("aborted", self.aborted),
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
    /// Its TIME_WAIT births and deaths and its PAWS drops since start (seen in the stream).
    pub totals: NamespaceTotals,
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
    /// Records were lost since the last resync: the figures are approximate until the next.
    pub approximate: bool,
    /// Records lost since the last resync.
    pub unrepaired_lost: u64,
    /// The last reconciliation with the kernel's sockets after loss, if any.
    pub last_resync: Option<ResyncView>,
    /// How many rows of each kind the model holds.
    pub model: ModelSize,
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

/// Rows of each kind in the model: what its memory grows with.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ModelSize {
    pub destinations: u64,
    /// connect() search rows (namespace, remote endpoint).
    pub searches: u64,
    pub timewait_sockets: u64,
    /// Connected client sockets holding a port.
    pub connections: u64,
    /// Failed searches by (namespace, process, errno).
    pub failure_rows: u64,
    pub paws_sources: u64,
    /// Interned addresses and owners.
    pub names: u64,
    /// Rows evicted, their totals kept (see [`super::Evicted`]).
    pub evicted: u64,
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
