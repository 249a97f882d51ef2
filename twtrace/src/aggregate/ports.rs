//! Port space in the model: one row per destination (namespace, local address, remote
//! endpoint) with the ports held toward it, the connections holding them, and connect()'s
//! searches and failures. A crawler's host has a hundred thousand destinations: a row is about
//! 150 bytes until it is busy (its rates get rings, its searches a histogram).

use std::{hash::BuildHasher as _, net::SocketAddr};

use super::{Aggregator, Destination, PeerTimestamps, stats::Histogram, stats::Rate};
use crate::event::{Comm, EINPROGRESS, PortSearchEvent, SearchOp, StateEvent, tcp_state};

/// A destination's number in the [`DestinationTable`]: the per-socket records carry this
/// (4 bytes) instead of the destination (56).
pub(super) type DestinationId = std::num::NonZeroU32;

pub(super) struct DestinationRow {
    pub destination: Destination,
    /// False for a number freed by eviction and not yet reused.
    taken_up: bool,
    /// Ports held now: connected client sockets and their TIME_WAIT sockets.
    pub in_use: u32,
    pub taken: Rate,
    pub freed: Rate,
    pub connects: Rate,
    pub peer_timestamps: PeerTimestamps,
}

/// Destinations by number, and their rows. An evicted row's number is reused; only rows
/// holding no port are evicted, and only those are unreferenced (every per-socket record
/// that names a row holds one of its ports: `in_use` counts them).
#[derive(Default)]
pub(super) struct DestinationTable {
    /// Row numbers, found by hashing the destination their row holds: the index keeps 4
    /// bytes a slot, not the 56-byte destination again. (At the default 250,000 rows its
    /// slots are 2^19: a map keyed by the destination took 32 MiB, this takes 2.5 MiB; issue
    /// 25's 1M-socket rung, whose clients make a destination each, measured the difference.)
    ids: hashbrown::HashTable<DestinationId>,
    hasher: foldhash::fast::RandomState,
    rows: Vec<DestinationRow>,
    free: Vec<DestinationId>,
}

impl DestinationRow {
    fn new(destination: Destination) -> Self {
        Self {
            destination,
            taken_up: true,
            in_use: 0,
            taken: Rate::default(),
            freed: Rate::default(),
            connects: Rate::default(),
            peer_timestamps: PeerTimestamps::default(),
        }
    }

    /// The last second anything happened toward it.
    fn last_active(&self) -> u64 {
        [self.connects.last_second(), self.taken.last_second(), self.freed.last_second()]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0)
    }
}

impl DestinationTable {
    /// The destination's number, making its row if it has none.
    fn hash(&self, destination: &Destination) -> u64 {
        self.hasher.hash_one(destination)
    }

    pub fn id(&mut self, destination: Destination) -> DestinationId {
        if let Some(id) = self.find(&destination) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.rows[id.get() as usize - 1] = DestinationRow::new(destination);
                id
            }
            None => {
                self.rows.push(DestinationRow::new(destination));
                DestinationId::new(self.rows.len() as u32).expect("starts at 1")
            }
        };
        let hash = self.hash(&destination);
        let (hasher, rows) = (&self.hasher, &self.rows);
        self.ids.insert_unique(hash, id, |id| hasher.hash_one(rows[id.get() as usize - 1].destination));
        id
    }

    pub fn find(&self, destination: &Destination) -> Option<DestinationId> {
        let rows = &self.rows;
        self.ids.find(self.hash(destination), |id| rows[id.get() as usize - 1].destination == *destination).copied()
    }

    pub fn get(&self, id: DestinationId) -> &DestinationRow {
        &self.rows[id.get() as usize - 1]
    }

    pub fn row_mut(&mut self, id: DestinationId) -> &mut DestinationRow {
        &mut self.rows[id.get() as usize - 1]
    }

    pub fn by_destination(&self, destination: &Destination) -> Option<&DestinationRow> {
        self.find(destination).map(|id| self.get(id))
    }

    /// Every row in use, in the table's order (sequential in memory).
    pub fn iter(&self) -> impl Iterator<Item = (DestinationId, &DestinationRow)> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.taken_up)
            .map(|(i, row)| (DestinationId::new(i as u32 + 1).expect("from 1"), row))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Evicts the least recently active rows that hold no port until `keep` rows are left
    /// (or none more can go), adding what they counted to `into`. O(rows).
    fn evict_idle(&mut self, keep: usize, into: &mut Evicted) {
        let excess = self.ids.len().saturating_sub(keep);
        let mut idle: Vec<(u64, DestinationId)> =
            self.iter().filter(|(_, row)| row.in_use == 0).map(|(id, row)| (row.last_active(), id)).collect();
        let n = excess.min(idle.len());
        if n == 0 {
            return;
        }
        idle.select_nth_unstable(n - 1);
        for &(_, id) in &idle[..n] {
            let destination = self.get(id).destination;
            if let Ok(entry) = self.ids.find_entry(self.hasher.hash_one(destination), |x| *x == id) {
                entry.remove();
            }
            let row = std::mem::replace(
                self.row_mut(id),
                DestinationRow { taken_up: false, ..DestinationRow::new(destination) },
            );
            self.free.push(id);
            into.destinations += 1;
            into.connects += row.connects.total();
        }
    }
}

/// What evicted rows had counted: kept so no total goes silently away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evicted {
    /// Destination rows evicted, and the connect() attempts they had counted.
    pub destinations: u64,
    pub connects: u64,
    /// connect() search rows evicted, and the failures they had counted (their durations stay
    /// in [`Aggregator::all_connect_searches`]).
    pub searches: u64,
    pub search_failures: u64,
    /// Per-process failure rows forgotten (their counts stay in the per-command totals; a
    /// process that fails again afterwards counts as one more process).
    pub failure_rows: u64,
}

impl Evicted {
    pub fn rows(&self) -> u64 {
        self.destinations + self.searches + self.failure_rows
    }
}

/// Rows of each kind the model keeps by default: with about 400 bytes per destination and
/// its search row, 250,000 of each fit the DaemonSet's 512 MiB beside a million TIME_WAIT
/// sockets. Rows holding ports are never evicted (they are bounded by the kernel's sockets).
pub const DEFAULT_MAX_ROWS: usize = 250_000;

/// connect() port searches toward one remote endpoint of one namespace. Kept per remote, not
/// per destination: a failed search has no local address, and recordings made before
/// 2026-11-24 timed the tracepoint backend's searches around the syscall, without one.
#[derive(Default)]
pub(super) struct SearchStats {
    pub search_ns: Histogram,
    /// Only backends that see the port search itself count candidates (not tracepoints):
    /// no room taken where there are none.
    pub candidates: Option<Box<Histogram>>,
    pub failures: u64,
    /// The last second a search was seen (for eviction).
    pub last_second: u32,
}

/// One process's failed searches of one kind: (namespace, command, pid, errno).
pub(super) type FailureKey = (u32, Comm, u32, u32);

/// Failed searches of one command in one namespace with one errno, over its processes.
#[derive(Clone, Copy, Default)]
pub(super) struct FailureGroup {
    pub count: u64,
    pub processes: u64,
    /// The lowest pid among them (the example shown).
    pub example_pid: u32,
}

impl Aggregator {
    pub(super) fn release(&mut self, id: DestinationId, ts_ns: u64) {
        let row = self.destinations.row_mut(id);
        row.in_use = row.in_use.saturating_sub(1);
        row.freed.add(ts_ns, 1);
    }

    pub(super) fn state(&mut self, e: &StateEvent) {
        let Some(flow) = e.flow else { return };
        let dest = Destination::of(e.netns, &flow);
        use tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
        if e.new_state == SYN_SENT {
            self.namespace(e.netns);
            let id = self.destinations.id(dest);
            self.destinations.row_mut(id).connects.add(e.ts_ns, 1);
        }
        if e.old_state == SYN_SENT && e.new_state == ESTABLISHED && !self.connected.contains_key(&e.sk_addr) {
            let id = self.destinations.id(dest);
            self.connected.insert(e.sk_addr, id);
            if let Some(earlier) = self.client_flows.insert((e.netns, flow), e.sk_addr) {
                // One 4-tuple, one connection: the earlier one's end was lost. Its port is
                // this one's now.
                if let Some(id) = self.connected.remove(&earlier) {
                    let row = self.destinations.row_mut(id);
                    row.in_use = row.in_use.saturating_sub(1);
                }
            }
            // Connected before the sockets were read (at start or at a resync), but told
            // after: the read counted it already. (One port toward one destination is held
            // once at a time.) (Empty most of the time: skip the lookup then.)
            let counted =
                !self.existing_connected.is_empty() && self.existing_connected.remove(&(id, flow.local.port()));
            let row = self.destinations.row_mut(id);
            if !counted {
                row.in_use += 1;
            }
            row.taken.add(e.ts_ns, 1);
        }
        if e.new_state == CLOSE {
            // A socket that became TIME_WAIT was already ended by the birth; this is one that
            // closed without.
            if let Some(id) = self.connected.remove(&e.sk_addr) {
                self.client_flows.remove(&(e.netns, flow));
                self.release(id, e.ts_ns);
            } else if !self.existing_connected.is_empty() {
                if let Some(id) = self.destinations.find(&dest) {
                    if self.existing_connected.remove(&(id, flow.local.port())) {
                        self.release(id, e.ts_ns);
                    }
                }
            }
        }
    }

    pub(super) fn port_search(&mut self, e: &PortSearchEvent) {
        let failed = e.errno != 0 && e.errno != EINPROGRESS;
        if failed {
            let who = e.process.as_ref().map(|p| (p.comm, p.pid)).unwrap_or_else(|| (Comm::from("?"), 0));
            let count = self.failures.entry((e.netns, who.0, who.1, e.errno)).or_default();
            *count += 1;
            let first_of_process = *count == 1;
            let group = self.failure_groups.entry((e.netns, who.0, e.errno)).or_default();
            if first_of_process {
                group.example_pid = if group.processes == 0 { who.1 } else { group.example_pid.min(who.1) };
                group.processes += 1;
            }
            group.count += 1;
        }
        match e.op {
            SearchOp::Connect => {
                let Some(remote) = e.remote else { return };
                self.namespace(e.netns);
                let d = self.searches.entry((e.netns, remote)).or_default();
                d.last_second = u32::try_from(e.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
                d.search_ns.record(e.duration_ns);
                self.all_search_ns.record(e.duration_ns);
                if let Some(c) = e.candidates {
                    d.candidates.get_or_insert_default().record(u64::from(c));
                    self.all_candidates.record(u64::from(c));
                }
                if failed {
                    d.failures += 1;
                    self.connect_failures += 1;
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

    /// Keeps each kind of row within the limit: past it, the least recently active rows
    /// (of destinations, those holding no port) go, down to nine tenths of it, so the O(rows)
    /// sweep runs once per tenth of the limit of new rows.
    pub(super) fn evict_beyond_limit(&mut self) {
        let limit = self.max_rows();
        let keep = limit - limit / 10;
        if self.destinations.len() > limit {
            self.destinations.evict_idle(keep, &mut self.evicted);
        }
        if self.searches.len() > limit {
            let mut idle: Vec<(u32, (u32, SocketAddr))> =
                self.searches.iter().map(|(k, s)| (s.last_second, *k)).collect();
            let n = self.searches.len() - keep;
            idle.select_nth_unstable(n - 1);
            for (_, key) in &idle[..n] {
                if let Some(row) = self.searches.remove(key) {
                    self.evicted.searches += 1;
                    self.evicted.search_failures += row.failures;
                    *self.evicted_failures_by_netns.entry(key.0).or_default() += row.failures;
                }
            }
        }
        if self.failures.len() > limit {
            self.evicted.failure_rows += self.failures.len() as u64;
            self.failures.clear();
        }
    }

    /// Every connect() search's duration and candidates so far, whatever its row (evicted
    /// ones included): the exporter's `other` is this less the rows it names, O(rows named).
    pub fn all_connect_searches(&self) -> (&Histogram, &Histogram) {
        (&self.all_search_ns, &self.all_candidates)
    }

    /// What evicted rows had counted.
    pub fn evicted(&self) -> Evicted {
        self.evicted
    }

    /// connect() attempts toward a destination since start (0 for one never seen).
    pub fn connects_total(&self, dest: &Destination) -> u64 {
        self.destinations.by_destination(dest).map_or(0, |d| d.connects.total())
    }

    /// connect() port searches per (namespace, remote endpoint): durations (ns), candidates.
    /// How many (namespace, remote endpoint) search rows there are.
    pub fn connect_search_rows(&self) -> usize {
        self.searches.len()
    }

    pub fn connect_searches(&self) -> impl Iterator<Item = ((u32, SocketAddr), &Histogram, &Histogram)> {
        static NONE: Histogram = Histogram::EMPTY;
        self.searches.iter().map(|(k, s)| (*k, &s.search_ns, s.candidates.as_deref().unwrap_or(&NONE)))
    }
}
