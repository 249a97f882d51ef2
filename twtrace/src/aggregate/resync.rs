//! Repair after loss. A lost record is a birth, a death or a close the model never learns:
//! without repair a namespace's live TIME_WAIT count stays off for good (12,447 sockets
//! shown where `ss` counted none, before this existed). So the model is told what the kernel
//! holds now, read over sock_diag inside every namespace, and reconciles with it: sockets it
//! holds that the kernel no longer has leave, sockets the kernel has that it lacks join (as
//! sockets read at start do), and the views say how far off they had been.
//!
//! The read is not an instant in the stream: events queued before it are applied after it.
//! That is safe because each kind of event is idempotent against the read: a birth removes a
//! read socket of its 4-tuple (one socket, counted once), a death of a socket the read already
//! removed finds nothing, an ESTABLISHED finds its connection already counted, a close finds
//! nothing to release.

use foldhash::{HashMapExt as _, HashSet, HashSetExt as _};
use serde::Serialize;

use super::{
    Aggregator, Destination,
    timewait::{FlowHash, LiveId, flow_hash},
};
use crate::event::{ExistingSocket, tcp_state};

/// Shortest time between two resyncs: a read of every namespace's sockets costs about a
/// second per million sockets, in the loop that applies events.
pub const MIN_INTERVAL_NS: u64 = 5_000_000_000;
/// How long loss must have stopped before a resync (another loss right after would spoil it)
/// unless it has gone on for [`MIN_INTERVAL_NS`] since the first unrepaired loss.
pub const QUIET_NS: u64 = 1_000_000_000;

#[derive(Default)]
pub(super) struct ResyncState {
    /// Records lost since the last resync began: the views are approximate while above 0.
    unrepaired: u64,
    /// When the first of them was noticed, and the last (stream time; `None` when unknown).
    first_loss_ns: Option<u64>,
    last_loss_ns: Option<u64>,
    /// The last attempt, whether the read worked or not.
    last_attempt_ns: Option<u64>,
    last: Option<ResyncView>,
}

impl ResyncState {
    /// `n` more records lost, noticed at `ts_ns`.
    pub fn lost(&mut self, n: u64, ts_ns: Option<u64>) {
        self.unrepaired += n;
        if let Some(ts) = ts_ns {
            self.first_loss_ns.get_or_insert(ts);
            self.last_loss_ns = Some(ts);
        }
    }
}

/// The last resync, as the views show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResyncView {
    /// Resyncs so far.
    pub count: u64,
    /// When the last one read the sockets (CLOCK_MONOTONIC ns).
    pub mono_ns: u64,
    /// Records lost before it, which it repaired.
    pub repaired_lost: u64,
    /// Live TIME_WAIT sockets the model held, and the kernel held, in the namespaces read.
    pub timewait_model: u64,
    pub timewait_kernel: u64,
    /// Sockets the model dropped (the kernel no longer had them) and added (it lacked them),
    /// TIME_WAIT and port-holding connections together.
    pub removed: u64,
    pub added: u64,
}

impl Aggregator {
    /// Whether the views are approximate: records were lost since the last resync.
    pub fn approximate(&self) -> bool {
        self.resync.unrepaired > 0
    }

    /// Records lost since the last resync.
    pub fn unrepaired_loss(&self) -> u64 {
        self.resync.unrepaired
    }

    pub fn last_resync(&self) -> Option<&ResyncView> {
        self.resync.last.as_ref()
    }

    /// Whether it is time to read the sockets again and [`Self::resync`]: something was
    /// lost, the loss has stopped for [`QUIET_NS`] (or gone on for [`MIN_INTERVAL_NS`]), and
    /// the last resync was at least [`MIN_INTERVAL_NS`] ago.
    pub fn resync_due(&self, now_ns: u64) -> bool {
        let r = &self.resync;
        if r.unrepaired == 0 {
            return false;
        }
        let rested = r.last_attempt_ns.is_none_or(|t| now_ns.saturating_sub(t) >= MIN_INTERVAL_NS);
        let quiet = r.last_loss_ns.is_none_or(|t| now_ns.saturating_sub(t) >= QUIET_NS);
        let overdue = r.first_loss_ns.is_none_or(|t| now_ns.saturating_sub(t) >= MIN_INTERVAL_NS);
        rested && (quiet || overdue)
    }

    /// Reconciles the model with `sockets`, every socket of every live namespace the model
    /// knows, read at `now_ns` (`None`: the read failed; the next try waits its interval).
    /// O(sockets + model).
    pub fn resync(&mut self, now_ns: u64, sockets: Option<&[ExistingSocket]>) {
        self.resync.last_attempt_ns = Some(now_ns);
        if let Some(sockets) = sockets {
            self.reconcile(now_ns, sockets);
        }
    }

    fn reconcile(&mut self, now_ns: u64, sockets: &[ExistingSocket]) {
        let covered: HashSet<u32> = self
            .namespaces
            .iter()
            .filter(|(_, n)| n.live)
            .map(|(netns, _)| *netns)
            .chain(sockets.iter().map(|s| s.netns))
            .collect();
        let repaired_lost = std::mem::take(&mut self.resync.unrepaired);
        self.resync.first_loss_ns = None;
        self.resync.last_loss_ns = None;
        self.listening_ports
            .extend(sockets.iter().filter(|s| s.state == tcp_state::LISTEN).map(|s| (s.netns, s.flow.local.port())));

        // What the kernel has.
        let mut kernel_tw: HashSet<(u32, FlowHash)> = HashSet::with_capacity(sockets.len());
        let mut kernel_conns: HashSet<(u32, crate::event::SocketFlow)> = HashSet::new();
        for s in sockets {
            match s.state {
                tcp_state::TIME_WAIT => {
                    kernel_tw.insert((s.netns, flow_hash(&s.flow)));
                }
                tcp_state::LISTEN | tcp_state::CLOSE => {}
                _ => {
                    kernel_conns.insert((s.netns, s.flow));
                }
            }
        }
        let timewait_model = self.live.values().filter(|tw| covered.contains(&self.netns_of(&tw.key))).count() as u64
            + self.existing_tw.keys().filter(|(netns, _)| covered.contains(netns)).count() as u64;
        let mut removed = 0u64;

        // What the model holds that the kernel does not: gone, its death or close lost. A
        // 4-tuple has one TIME_WAIT socket at a time: of several the model holds for one (the
        // deaths of the earlier ones lost, the 4-tuple reused), only the newest is alive.
        // Newest: born nearest before the latest birth (ids are sequential and may wrap).
        let age = |id: LiveId| self.last_live_id.wrapping_sub(id);
        let mut newest: foldhash::HashMap<(u32, FlowHash), LiveId> = foldhash::HashMap::with_capacity(self.live.len());
        for (id, tw) in &self.live {
            if tw.flow_hash != 0 {
                let n = newest.entry((self.netns_of(&tw.key), tw.flow_hash)).or_insert(*id);
                if age(*id) < age(*n) {
                    *n = *id;
                }
            }
        }
        let stale: Vec<LiveId> = self
            .live
            .iter()
            .filter(|(_, tw)| tw.flow_hash != 0 && covered.contains(&self.netns_of(&tw.key)))
            .filter(|(id, tw)| {
                let key = (self.netns_of(&tw.key), tw.flow_hash);
                !kernel_tw.contains(&key) || newest.get(&key) != Some(*id)
            })
            .map(|(id, _)| *id)
            .collect();
        drop(newest);
        for id in stale {
            if let Some(tw) = self.live.remove(&id) {
                self.end_live_silently(&tw);
                removed += 1;
            }
        }
        let stale: Vec<_> = self
            .existing_tw
            .keys()
            .filter(|(netns, flow)| covered.contains(netns) && !kernel_tw.contains(&(*netns, flow_hash(flow))))
            .copied()
            .collect();
        for key in stale {
            if let Some(tw) = self.existing_tw.remove(&key) {
                self.end_existing_time_wait(&tw, None);
                removed += 1;
            }
        }
        let stale: Vec<_> = self
            .client_flows
            .iter()
            .filter(|((netns, flow), _)| covered.contains(netns) && !kernel_conns.contains(&(*netns, *flow)))
            .map(|(k, sk)| (*k, *sk))
            .collect();
        for (key, sk) in stale {
            self.client_flows.remove(&key);
            if let Some(id) = self.connected.remove(&sk) {
                let row = self.destinations.row_mut(id);
                row.in_use = row.in_use.saturating_sub(1);
                removed += 1;
            }
        }
        // Connections whose 4-tuple no record points to any more (their end lost, the
        // socket's address reused): the kernel's read says which connections are there.
        let referenced: HashSet<u64> = self.client_flows.values().copied().collect();
        let orphans: Vec<u64> = self.connected.keys().filter(|sk| !referenced.contains(sk)).copied().collect();
        for sk in orphans {
            if let Some(id) = self.connected.remove(&sk) {
                let row = self.destinations.row_mut(id);
                row.in_use = row.in_use.saturating_sub(1);
                removed += 1;
            }
        }
        let destinations = &self.destinations;
        let stale: Vec<_> = self
            .existing_connected
            .iter()
            .filter(|(id, port)| {
                let d = destinations.get(*id).destination;
                let flow =
                    crate::event::SocketFlow { local: std::net::SocketAddr::new(d.local, *port), remote: d.remote };
                covered.contains(&d.netns) && !kernel_conns.contains(&(d.netns, flow))
            })
            .copied()
            .collect();
        for key in stale {
            self.existing_connected.remove(&key);
            let row = self.destinations.row_mut(key.0);
            row.in_use = row.in_use.saturating_sub(1);
            removed += 1;
        }

        // What the kernel has that the model lacks: its birth or connect lost.
        let model_tw: HashSet<(u32, FlowHash)> = self
            .live
            .values()
            .filter(|tw| tw.flow_hash != 0)
            .map(|tw| (self.netns_of(&tw.key), tw.flow_hash))
            .collect();
        let mut added = 0u64;
        for s in sockets {
            let known = match s.state {
                tcp_state::TIME_WAIT => match self.existing_tw.get_mut(&(s.netns, s.flow)) {
                    Some(tw) => {
                        // The timer as it stands now.
                        tw.expires_ns = now_ns + s.expires_ms * 1_000_000;
                        true
                    }
                    None => model_tw.contains(&(s.netns, flow_hash(&s.flow))),
                },
                tcp_state::LISTEN | tcp_state::CLOSE => true,
                _ => {
                    self.client_flows.contains_key(&(s.netns, s.flow))
                        || self
                            .destinations
                            .find(&Destination::of(s.netns, &s.flow))
                            .is_some_and(|id| self.existing_connected.contains(&(id, s.flow.local.port())))
                }
            };
            if !known {
                let before = self.model_size_now();
                self.add_existing(now_ns, s);
                added += u64::from(self.model_size_now() != before);
            }
        }
        let timewait_kernel = kernel_tw.iter().filter(|(netns, _)| covered.contains(netns)).count() as u64;
        let count = self.resync.last.as_ref().map_or(0, |l| l.count) + 1;
        self.resync.last =
            Some(ResyncView { count, mono_ns: now_ns, repaired_lost, timewait_model, timewait_kernel, removed, added });
    }

    /// A live socket the kernel no longer has: out of the groups, its port given back, no
    /// death counted (the death, if it comes, counts then).
    fn end_live_silently(&mut self, tw: &super::timewait::LiveTimeWait) {
        let existing =
            super::timewait::ExistingTimeWait { expires_ns: 0, holds_port_of: tw.holds_port_of, key: tw.key };
        self.end_existing_time_wait(&existing, None);
    }

    /// Sockets the model holds (TIME_WAIT and port-holding connections), to tell whether an
    /// added socket counted.
    fn model_size_now(&self) -> usize {
        self.existing_tw.len() + self.existing_connected.len()
    }
}
