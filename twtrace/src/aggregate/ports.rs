//! Port space in the model: one row per destination (namespace, local address, remote
//! endpoint) with the ports held toward it, the connections holding them, and connect()'s
//! searches and failures. A crawler's host has a hundred thousand destinations: a row is about
//! 150 bytes until it is busy (its rates get rings, its searches a histogram).

use foldhash::HashMap;
use std::net::SocketAddr;

use super::{Aggregator, Destination, PeerTimestamps, stats::Histogram, stats::Rate};
use crate::event::{Comm, EINPROGRESS, PortSearchEvent, SearchOp, StateEvent, tcp_state};

/// A destination's number in the [`DestinationTable`]: the per-socket records carry this
/// (4 bytes) instead of the destination (56).
pub(super) type DestinationId = std::num::NonZeroU32;

pub(super) struct DestinationRow {
    pub destination: Destination,
    /// Ports held now: connected client sockets and their TIME_WAIT sockets.
    pub in_use: u32,
    pub taken: Rate,
    pub freed: Rate,
    pub connects: Rate,
    pub peer_timestamps: PeerTimestamps,
}

/// Destinations by number, and their rows.
#[derive(Default)]
pub(super) struct DestinationTable {
    ids: HashMap<Destination, DestinationId>,
    rows: Vec<DestinationRow>,
}

impl DestinationTable {
    /// The destination's number, making its row if it has none.
    pub fn id(&mut self, destination: Destination) -> DestinationId {
        if let Some(&id) = self.ids.get(&destination) {
            return id;
        }
        self.rows.push(DestinationRow {
            destination,
            in_use: 0,
            taken: Rate::default(),
            freed: Rate::default(),
            connects: Rate::default(),
            peer_timestamps: PeerTimestamps::default(),
        });
        let id = DestinationId::new(self.rows.len() as u32).expect("starts at 1");
        self.ids.insert(destination, id);
        id
    }

    pub fn find(&self, destination: &Destination) -> Option<DestinationId> {
        self.ids.get(destination).copied()
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

    pub fn iter(&self) -> impl Iterator<Item = (DestinationId, &DestinationRow)> {
        self.rows.iter().enumerate().map(|(i, row)| (DestinationId::new(i as u32 + 1).expect("from 1"), row))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
}

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
                d.search_ns.record(e.duration_ns);
                if let Some(c) = e.candidates {
                    d.candidates.get_or_insert_default().record(u64::from(c));
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

    /// connect() attempts toward a destination since start (0 for one never seen).
    pub fn connects_total(&self, dest: &Destination) -> u64 {
        self.destinations.by_destination(dest).map_or(0, |d| d.connects.total())
    }

    /// connect() port searches per (namespace, remote endpoint): durations (ns), candidates.
    pub fn connect_searches(&self) -> impl Iterator<Item = ((u32, SocketAddr), &Histogram, &Histogram)> {
        static NONE: Histogram = Histogram::EMPTY;
        self.searches.iter().map(|(k, s)| (*k, &s.search_ns, s.candidates.as_deref().unwrap_or(&NONE)))
    }
}
