//! TIME_WAIT sockets in the model: those seen born (until their death), those read over
//! sock_diag (until their timer, or until the stream tells of them), and the counts the views
//! group them by, kept as sockets come and go so no view walks a million sockets.

use foldhash::HashMap;
use std::{hash::Hash, net::IpAddr};

use super::{Aggregator, Destination, NameId, ports::DestinationId};
use crate::event::{Process, SocketFlow, TimeWaitChange, TimeWaitEvent};

/// The remote address of a TIME_WAIT socket. Servers see a million distinct clients: IPv4
/// ones are kept as they are instead of as names in the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RemoteKey {
    V4([u8; 4]),
    Named(NameId),
}

/// Where a TIME_WAIT socket comes from, as the views group it besides its remote address:
/// its namespace, local address and owner. A host has few (a service's listening address
/// and workers, a client's address and processes), so a socket keeps the number of its
/// origin in a table, not the four numbers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub netns: u32,
    pub local: NameId,
    /// `comm[pid]`, and `comm` alone: a service's workers are one command, many owners.
    pub owner: NameId,
    pub command: NameId,
}

pub(super) type OriginId = u32;

/// Origins by number, each held by the live sockets that come from it and freed with the last.
pub(super) type Origins = super::intern::Interner<Origin>;

/// What the views group a TIME_WAIT socket by: 12 bytes.
#[derive(Clone, Copy)]
pub(super) struct GroupKey {
    pub remote: RemoteKey,
    pub origin: OriginId,
}

/// A live socket's key in the model: the low 32 bits of the id the decoder gave it.
///
/// The decoder numbers births one after another, and a socket seen born lives at most about
/// a minute (TCP_TIMEWAIT_LEN, 60 s, fixed in every kernel) unless its death is lost, which
/// a resync repairs; so live ids are distinct unless four billion births lie between two of
/// them. An id met again ends the earlier socket (as a recording stitched from two runs,
/// whose ids both start at 1, has always done). Why not the whole u64: with a 20-byte record
/// an entry of the table is 24 bytes instead of 32; at a million sockets the table has 2^21
/// slots (hashbrown keeps it at most 7/8 full), so that is 17 bytes per socket of the 200
/// the scale target allows.
pub(super) type LiveId = u32;

/// The model's key for the decoder's id of a socket.
pub(super) fn live_id(tw_id: u64) -> LiveId {
    tw_id as LiveId
}

/// 20 bytes per live TIME_WAIT socket (a busy host has a million): names, origins and
/// destinations are numbers in the aggregator's tables.
pub(super) struct LiveTimeWait {
    /// Counted toward this destination's ports (client-side TIME_WAIT in the ephemeral range).
    pub holds_port_of: Option<DestinationId>,
    pub key: GroupKey,
    /// The 4-tuple's [`flow_hash`] (0: not read), to find the socket in a sock_diag read.
    pub flow_hash: FlowHash,
}

// The figures the scale target rests on (see [`LiveId`]): a table entry is 24 bytes.
const _: () = assert!(std::mem::size_of::<(LiveId, LiveTimeWait)>() == 24);

/// A TIME_WAIT socket read over sock_diag that the stream never told of: its death is not in
/// the stream, so it leaves at its timer (or when the stream tells of its 4-tuple).
pub(super) struct ExistingTimeWait {
    pub expires_ns: u64,
    pub holds_port_of: Option<DestinationId>,
    pub key: GroupKey,
}

/// Live TIME_WAIT sockets by each grouping the views show.
#[derive(Default)]
pub(super) struct GroupCounts {
    /// u32: a million distinct clients make a million entries here.
    pub remotes: HashMap<RemoteKey, u32>,
    pub locals: HashMap<NameId, u64>,
    pub owners: HashMap<NameId, u64>,
    /// Per command: sockets, and its owners (processes) holding any.
    pub commands: HashMap<NameId, (u64, u64)>,
    pub netns: HashMap<u32, u64>,
}

impl GroupCounts {
    fn add(&mut self, remote: RemoteKey, o: &Origin) {
        *self.remotes.entry(remote).or_default() += 1;
        *self.locals.entry(o.local).or_default() += 1;
        *self.netns.entry(o.netns).or_default() += 1;
        let owner = self.owners.entry(o.owner).or_default();
        *owner += 1;
        let first_of_owner = *owner == 1;
        let command = self.commands.entry(o.command).or_default();
        command.0 += 1;
        command.1 += u64::from(first_of_owner);
    }

    fn remove(&mut self, remote: RemoteKey, o: &Origin) {
        if let Some(n) = self.remotes.get_mut(&remote) {
            *n -= 1;
            if *n == 0 {
                self.remotes.remove(&remote);
                crate::memory::shrink_if_sparse(&mut self.remotes);
            }
        }
        decrement(&mut self.locals, o.local);
        decrement(&mut self.netns, o.netns);
        let owner_gone = decrement(&mut self.owners, o.owner);
        if let Some(command) = self.commands.get_mut(&o.command) {
            command.0 -= 1;
            command.1 -= u64::from(owner_gone);
            if command.0 == 0 {
                self.commands.remove(&o.command);
            }
        }
    }
}

/// Takes one off `key`'s count, removing it at zero; whether it reached zero.
fn decrement<K: Hash + Eq>(map: &mut HashMap<K, u64>, key: K) -> bool {
    let Some(n) = map.get_mut(&key) else { return false };
    *n -= 1;
    if *n == 0 {
        map.remove(&key);
        return true;
    }
    false
}

/// A hash of a 4-tuple, the same in every run (foldhash's fixed seed; never 0): a live socket
/// keeps this instead of its 4-tuple (4 bytes, not 64) to be found again in a sock_diag read.
///
/// 32 bits: of a million TIME_WAIT sockets in one namespace about a hundred pairs share a
/// hash (n²/2³³), so a resync there may keep or drop about one socket in ten thousand it
/// should not (a socket the kernel lacks seems present when another has its hash); at the
/// tens of thousands a test holds, a collision is a one-in-ten event, of one socket. The
/// views count sockets, never look them up by hash; only the resync matches by it.
pub(super) type FlowHash = u32;

pub(super) fn flow_hash(flow: &SocketFlow) -> FlowHash {
    use std::hash::BuildHasher as _;
    foldhash::quality::FixedState::with_seed(0x7477_7472_6163_6521).hash_one(flow) as FlowHash | 1
}

/// The name of a TIME_WAIT socket's owner in the views of sockets read over sock_diag.
pub const BEFORE_START: &str = "(before start)";

impl Aggregator {
    pub(super) fn time_wait(&mut self, e: &TimeWaitEvent) {
        let netns = e.netns;
        match &e.change {
            TimeWaitChange::Birth { timestamps, .. } => {
                self.births.add(e.ts_ns, 1);
                self.namespace(netns).totals.timewait_births += 1;
                // The full socket ends here. Its → CLOSE follows, or is left out by the kernel
                // when this birth stands for it (the state family's `LAST_BIRTH`): either way
                // its hold on the port ends now, and a client's TIME_WAIT takes the port over.
                let handed_over = e.flow.and_then(|f| self.client_flows.remove(&(netns, f)).map(|sk| (f, sk)));
                if let Some((_, sk)) = handed_over {
                    if let Some(id) = self.connected.remove(&sk) {
                        self.release(id, e.ts_ns);
                    }
                }
                // Read over sock_diag already (at start or at a resync), though born before
                // the read: one socket, counted once. (One 4-tuple has one TIME_WAIT socket.)
                if let Some(f) = e.flow {
                    if let Some(tw) = self.existing_tw.remove(&(netns, f)) {
                        self.end_existing_time_wait(&tw, None);
                    }
                }
                // A client connection that existed at start and closes first: its TIME_WAIT
                // keeps the port it held (counted once, at start).
                let existing_client = match (handed_over, e.flow) {
                    (None, Some(f)) if !self.existing_connected.is_empty() => self
                        .destinations
                        .find(&Destination::of(netns, &f))
                        .filter(|id| self.existing_connected.remove(&(*id, f.local.port()))),
                    _ => None,
                };
                let holds_port_of = handed_over.map(|(f, _)| self.destinations.id(Destination::of(netns, &f)));
                if let Some(id) = holds_port_of {
                    let row = self.destinations.row_mut(id);
                    row.in_use += 1;
                    row.taken.add(e.ts_ns, 1);
                }
                let holds_port_of = holds_port_of.or(existing_client);
                if let (Some(id), Some(seen)) = (holds_port_of, timestamps) {
                    let counts = &mut self.destinations.row_mut(id).peer_timestamps;
                    if *seen {
                        counts.seen += 1;
                    } else {
                        counts.absent += 1;
                    }
                }
                let (owner, command) = self.owner_ids(e.owner.as_ref());
                let key = self.group_key(netns, e.flow.as_ref(), holds_port_of.is_some(), owner, command);
                self.group_add(&key);
                let live = LiveTimeWait { holds_port_of, key, flow_hash: e.flow.as_ref().map_or(0, flow_hash) };
                self.last_live_id = live_id(e.tw_id);
                if let Some(previous) = self.live.insert(live_id(e.tw_id), live) {
                    // The same id twice (a recording stitched from two runs, or four billion
                    // births between two, see [`LiveId`]): the first is over.
                    self.end_live(&previous, None);
                }
            }
            TimeWaitChange::Rearm { .. } => {}
            TimeWaitChange::Death { reason, lifetime_ns } => {
                let totals = &mut self.namespace(netns).totals;
                if reason.is_early() {
                    totals.timewait_killed_by.add(*reason);
                    self.killed.add(e.ts_ns, 1);
                    self.killed_by.add(*reason);
                } else {
                    totals.timewait_expired += 1;
                    self.expired.add(e.ts_ns, 1);
                }
                self.lifetimes.record(*lifetime_ns);
                if let Some(tw) = self.live.remove(&live_id(e.tw_id)) {
                    self.end_live(&tw, Some(e.ts_ns));
                } else if let Some(f) = e.flow {
                    // Its birth was not applied (lost, or before start) but a read found it.
                    if let Some(tw) = self.existing_tw.remove(&(netns, f)) {
                        self.end_existing_time_wait(&tw, Some(e.ts_ns));
                    }
                }
            }
        }
    }

    /// What the views group a socket by. A client's local port is one of thousands of
    /// ephemeral ports: its address is the useful group (and keeps the name table small).
    fn group_key(
        &mut self,
        netns: u32,
        flow: Option<&SocketFlow>,
        holds_port: bool,
        owner: NameId,
        command: NameId,
    ) -> GroupKey {
        let (remote, local) = match flow {
            Some(f) if holds_port => (Some(f.remote.ip()), f.local.ip().to_string()),
            Some(f) => (Some(f.remote.ip()), f.local.to_string()),
            None => (None, "?".into()),
        };
        let remote = match remote {
            Some(IpAddr::V4(v4)) => RemoteKey::V4(v4.octets()),
            Some(other) => RemoteKey::Named(self.names.id(other.to_string())),
            None => RemoteKey::Named(self.names.id("?".into())),
        };
        let origin = Origin { netns, local: self.names.id(local), owner, command };
        GroupKey { remote, origin: self.origins.id(origin) }
    }

    /// A socket seen born leaves the model: its groups, and its port (`at`: freed then, for
    /// the rate; `None`: the port is only given back, as for a socket that was never there).
    fn end_live(&mut self, tw: &LiveTimeWait, at: Option<u64>) {
        crate::memory::shrink_if_sparse(&mut self.live);
        self.group_remove(&tw.key);
        if let Some(id) = tw.holds_port_of {
            self.give_back(id, at);
        }
    }

    /// A socket joins the groups: its origin (and the origin's names) and its remote's name
    /// are held while it lives.
    fn group_add(&mut self, key: &GroupKey) {
        let origin = *self.origins.get(key.origin);
        self.tw_groups.add(key.remote, &origin);
        if self.origins.hold(key.origin) {
            for id in [origin.local, origin.owner, origin.command] {
                self.names.hold(id);
            }
        }
        if let RemoteKey::Named(id) = key.remote {
            self.names.hold(id);
        }
    }

    /// A socket leaves the groups; an origin no live socket comes from any more is freed with
    /// its names, and an owner whose name is freed is forgotten.
    fn group_remove(&mut self, key: &GroupKey) {
        let origin = *self.origins.get(key.origin);
        self.tw_groups.remove(key.remote, &origin);
        let mut freed = Vec::new();
        if let Some(origin) = self.origins.release(key.origin) {
            freed.extend([origin.local, origin.owner, origin.command]);
        }
        if let RemoteKey::Named(id) = key.remote {
            freed.push(id);
        }
        for id in freed {
            if self.names.release(id).is_some() {
                if let Some(owner) = self.owner_keys.remove(&id) {
                    self.owner_ids.remove(&owner);
                }
            }
        }
    }

    /// The namespace of a socket's origin.
    pub(super) fn netns_of(&self, key: &GroupKey) -> u32 {
        self.origins.get(key.origin).netns
    }

    /// The record of a TIME_WAIT socket read over sock_diag, counted in the groups and, when
    /// it holds a port, in its destination's ports.
    pub(super) fn existing_time_wait(
        &mut self,
        expires_ns: u64,
        netns: u32,
        flow: SocketFlow,
        holds: bool,
    ) -> ExistingTimeWait {
        let holds_port_of = holds.then(|| self.destinations.id(Destination::of(netns, &flow)));
        if let Some(id) = holds_port_of {
            self.destinations.row_mut(id).in_use += 1;
        }
        let before = self.names.id(BEFORE_START.into());
        // Named by address and port: whether a read socket was a client's is a guess (an
        // ephemeral port without a listener), so its port stays in sight.
        let key = self.group_key(netns, Some(&flow), false, before, before);
        self.group_add(&key);
        ExistingTimeWait { expires_ns, holds_port_of, key }
    }

    /// A socket read over sock_diag leaves the model (see [`Self::end_live`] for `at`).
    pub(super) fn end_existing_time_wait(&mut self, tw: &ExistingTimeWait, at: Option<u64>) {
        crate::memory::shrink_if_sparse(&mut self.existing_tw);
        self.group_remove(&tw.key);
        if let Some(id) = tw.holds_port_of {
            self.give_back(id, at);
        }
    }

    /// A port held toward a destination is free again.
    fn give_back(&mut self, id: DestinationId, at: Option<u64>) {
        match at {
            Some(ts) => self.release(id, ts),
            None => {
                let row = self.destinations.row_mut(id);
                row.in_use = row.in_use.saturating_sub(1);
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
        self.owner_keys.insert(ids.0, key);
        ids
    }

    /// The text of a group's remote address.
    pub(super) fn remote_name(&self, key: RemoteKey) -> String {
        match key {
            RemoteKey::V4(o) => std::net::Ipv4Addr::from(o).to_string(),
            RemoteKey::Named(id) => self.names.name(id).to_owned(),
        }
    }
}

fn owner_name(owner: Option<&Process>) -> String {
    owner.map(|p| format!("{}[{}]", p.comm, p.pid)).unwrap_or_else(|| "(unknown)".into())
}
