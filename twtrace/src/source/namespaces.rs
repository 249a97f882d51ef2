//! The live source's namespaces: every namespace present at the start is described (named,
//! its settings read inside it) before the first event; one first seen in an event is
//! described in the stream just before that event; one that appears or goes away, or that the
//! registry names better (a pod once its kubelet log directory is read), is described again on
//! the next look. The registry doing the looking is `kernel::namespaces`.

use std::collections::{BTreeMap, HashMap};

use crate::{
    event::{Event, ExistingSocket, NamespaceDescription, NamespaceEvent, NetstatEvent, Sysctls},
    kernel::{
        namespaces::{NetnsId, NetnsInfo, NetnsRegistry},
        netstat,
    },
};

/// How often the host is looked over for namespaces that appeared or went away.
const REFRESH_NS: u64 = 2_000_000_000;
/// A namespace's settings are read again at every look while it is younger than this (and
/// for its first [`SETTINGS_YOUNG_LOOKS`] looks, however long they take), then every
/// [`SETTINGS_OLD_NS`].
const SETTINGS_YOUNG_NS: u64 = 10_000_000_000;
const SETTINGS_OLD_NS: u64 = 30_000_000_000;
/// Looks at which a new namespace's settings are read again whatever its age. Age alone failed
/// in CI's emulated guests: a stat whose loop stalled for 13 s (three container tests and a
/// doctor test at once on two emulated CPUs) took no look while the namespace was young, and
/// kept for good the default range read before the test had set its own.
const SETTINGS_YOUNG_LOOKS: u32 = 3;

/// How often each namespace's TCP counters (/proc/net/netstat, read inside it) are sampled.
const COUNTERS_NS: u64 = 1_000_000_000;
/// Namespaces whose counters are read per interval, at most (each read enters the namespace
/// on a short-lived thread, about 0.1 ms): with more, they take turns.
pub const MAX_COUNTER_READS: usize = 256;
/// Namespaces whose sockets are read at the start, at most: each costs a thread that enters
/// it and a sock_diag dump. Beyond this their first frame misses what existed before.
pub const MAX_SOCKET_READS: usize = 1024;

/// What the stream was last told of a namespace inode.
struct Announced {
    live: bool,
    /// Which namespace to hold this inode (the kernel gives a freed inode number to the next
    /// namespace made).
    generation: u32,
    name: String,
}

/// A namespace's settings as last read, and how young the namespace is.
struct SettingsRead {
    sysctls: Option<Sysctls>,
    /// When this namespace (this generation of its inode) was first described.
    first_ns: u64,
    /// Looks that have read its settings again since.
    looks: u32,
}

impl SettingsRead {
    /// Whether its settings are read again at a look `now_ns`: at every look while it is young
    /// (by age or by looks taken), then every [`SETTINGS_OLD_NS`].
    fn due(&self, now_ns: u64) -> bool {
        let age = now_ns.saturating_sub(self.first_ns);
        age < SETTINGS_YOUNG_NS
            || self.looks < SETTINGS_YOUNG_LOOKS
            || (age / REFRESH_NS).is_multiple_of(SETTINGS_OLD_NS / REFRESH_NS)
    }
}

pub struct NamespaceTracker {
    registry: NetnsRegistry,
    /// Only this namespace (`--netns`): the probes see no other.
    only: Option<u32>,
    /// Described in the stream (or at the start): as what (see [`Announced`]).
    announced: HashMap<u32, Announced>,
    /// What each namespace's settings were last read as, and when: a namespace's settings
    /// are often set just after it is made (by a runtime or CNI plugin, or a person during an
    /// incident), so they are read again.
    settings: HashMap<u32, SettingsRead>,
    next_refresh_ns: u64,
    /// Each namespace's counters when last read: the stream carries their changes.
    counters: HashMap<u32, BTreeMap<String, i64>>,
    next_counters_ns: u64,
    /// Where the last round of counter reads stopped, when there are more namespaces than
    /// [`MAX_COUNTER_READS`].
    counters_cursor: usize,
    /// The levels read at the start, carried by the first round of the stream.
    pending: Vec<Event>,
}

impl NamespaceTracker {
    pub fn new(only: Option<u32>) -> Self {
        Self {
            registry: NetnsRegistry::new(),
            only,
            announced: HashMap::new(),
            settings: HashMap::new(),
            next_refresh_ns: 0,
            counters: HashMap::new(),
            next_counters_ns: 0,
            counters_cursor: 0,
            pending: Vec::new(),
        }
    }

    /// Every namespace there now (or only the one asked for), described.
    pub fn start(&mut self, now_ns: u64) -> Vec<NamespaceDescription> {
        if let Err(e) = self.registry.refresh() {
            log::warn!("looking for network namespaces: {e}");
        }
        self.next_refresh_ns = now_ns + REFRESH_NS;
        let ids: Vec<NetnsId> = match self.only {
            Some(only) => vec![NetnsId(only)],
            None => self.registry.live().map(|n| n.id).collect(),
        };
        let mut out: Vec<NamespaceDescription> = ids.into_iter().map(|id| self.describe(id)).collect();
        out.sort_by_key(|n| n.netns);
        // The counters' starting values: what changes from now on is reported (levels as
        // they are, with the first events).
        let mut levels = Vec::new();
        self.sample_counters(now_ns, &mut levels, false);
        self.pending = levels;
        out
    }

    /// Every interval (or now, when `force`d at the end), the changes of each live
    /// namespace's TCP counters since its last read, as counter events of that namespace.
    /// A namespace that cannot be entered (gone, no permission) is skipped.
    pub fn sample_counters(&mut self, now_ns: u64, out: &mut Vec<Event>, force: bool) {
        out.append(&mut self.pending);
        if !force && now_ns < self.next_counters_ns {
            return;
        }
        self.next_counters_ns = now_ns + COUNTERS_NS;
        let mut ids: Vec<u32> = self.live_announced().collect();
        ids.sort_unstable();
        let turn = ids.len().min(MAX_COUNTER_READS);
        if ids.len() > turn {
            let start = self.counters_cursor % ids.len();
            ids.rotate_left(start);
            self.counters_cursor += turn;
        }
        let turn: Vec<NetnsId> = ids.into_iter().take(turn).map(NetnsId).collect();
        for (id, read) in self.registry.netstat_each(&turn) {
            let netns = id.0;
            let now = match read {
                Ok(now) => now,
                Err(e) => {
                    log::debug!("counters of namespace {netns}: {e}");
                    continue;
                }
            };
            let deltas = match self.counters.insert(netns, now) {
                Some(before) => netstat::delta(&before, &self.counters[&netns]),
                // The first reading: totals count from now, levels are carried whole.
                // (A level of 0 too: an empty table is a figure.)
                None => self.counters[&netns]
                    .iter()
                    .filter(|(name, _)| netstat::is_level(name))
                    .map(|(name, value)| (name.clone(), *value))
                    .collect(),
            };
            if !deltas.is_empty() {
                out.push(Event::Netstat(NetstatEvent { ts_ns: now_ns, netns, deltas }));
            }
        }
    }

    /// The sockets of every described live namespace (bounded by [`MAX_SOCKET_READS`]). A
    /// namespace that vanishes meanwhile has none; that is not an error.
    pub fn sockets(&mut self) -> Vec<ExistingSocket> {
        let ids: Vec<u32> = self.live_announced().collect();
        if ids.len() > MAX_SOCKET_READS {
            log::warn!(
                "{} namespaces: the sockets of only {MAX_SOCKET_READS} are read at start; the others' first frame \
                 shows what happens from now on",
                ids.len()
            );
        }
        let mut sockets = Vec::new();
        for id in ids.into_iter().take(MAX_SOCKET_READS) {
            match self.registry.tcp_sockets(NetnsId(id)) {
                Ok(found) => sockets.extend(found),
                Err(e) => log::debug!("sockets of namespace {id}: {e}"),
            }
        }
        sockets
    }

    /// [`Self::sockets`] read on a thread of its own, for a caller that must stay responsive
    /// meanwhile (a resync after loss: `crate::drive`). Bounded the same way.
    pub fn sockets_later(&self) -> impl std::future::Future<Output = Vec<ExistingSocket>> + Send + 'static {
        let ids: Vec<NetnsId> = self.live_announced().take(MAX_SOCKET_READS).map(NetnsId).collect();
        self.registry.tcp_sockets_later(&ids)
    }

    /// Puts a description before the events of every namespace the batch is the first to
    /// name, and, every few seconds, of namespaces that appeared or went away.
    pub fn observe(&mut self, batch: &mut Vec<Event>, now_ns: u64) {
        let mut new: Vec<u32> = Vec::new();
        for netns in batch.iter().filter_map(Event::netns) {
            if !self.announced.contains_key(&netns) && !new.contains(&netns) {
                new.push(netns);
            }
        }
        let refresh = now_ns >= self.next_refresh_ns;
        if new.is_empty() && !refresh {
            return;
        }
        let ts_ns = batch.first().map_or(now_ns, Event::ts_ns);
        let mut described: Vec<Event> = Vec::new();
        for netns in new {
            let namespace = self.discover(NetnsId(netns));
            described.push(Event::Namespace(NamespaceEvent { ts_ns, namespace }));
        }
        if refresh {
            self.next_refresh_ns = now_ns + REFRESH_NS;
            let mut changed = self.refresh();
            changed.extend(self.reread_settings(now_ns));
            described
                .extend(changed.into_iter().map(|namespace| Event::Namespace(NamespaceEvent { ts_ns, namespace })));
        }
        batch.splice(0..0, described);
    }

    /// Namespaces that appeared (named before any event of theirs) or went away since the
    /// last look.
    fn refresh(&mut self) -> Vec<NamespaceDescription> {
        let report = match self.registry.refresh() {
            Ok(report) => report,
            Err(e) => {
                log::debug!("looking for network namespaces: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for id in report.added {
            let generation = self.registry.get(id).map_or(0, |info| info.generation);
            let before = self.announced.get(&id.0);
            let known = before.is_some_and(|a| a.live && a.generation == generation);
            if self.only.is_none_or(|only| only == id.0) && !known {
                // A new namespace on a reused inode: the one the stream knows by it is gone
                // first (a sink forgets its sockets), then the new one is described.
                if let Some(old) = before.filter(|a| a.live) {
                    out.push(NamespaceDescription { netns: id.0, name: old.name.clone(), sysctls: None, live: false });
                }
                // Its counters start afresh.
                self.counters.remove(&id.0);
                out.push(self.describe(id));
            }
        }
        for id in report.retired {
            if self.announced.get(&id.0).is_some_and(|a| a.live) {
                out.push(self.describe(id));
            }
        }
        // Reading a namespace's counters or settings retires it when it is gone (its way in
        // went with it): those are gone too, though this refresh did not see them go.
        let retired_meanwhile: Vec<NetnsId> = self
            .live_announced()
            .map(NetnsId)
            .filter(|id| self.registry.get(*id).is_some_and(|info| !info.is_live()))
            .collect();
        for id in retired_meanwhile {
            out.push(self.describe(id));
        }
        out.extend(self.renamed());
        out
    }

    /// Live namespaces the registry has since named better: a pod's name once the kubelet's
    /// log directory for it is read (a pod made after the start is first seen by its cgroup,
    /// `pod UID`), a container's. Described again under the new name with the settings last
    /// read, so every sink (serve's labels above all) follows; settings and age carry on.
    fn renamed(&mut self) -> Vec<NamespaceDescription> {
        let renamed: Vec<NetnsId> = self
            .announced
            .iter()
            .filter(|(id, a)| {
                a.live
                    && self
                        .registry
                        .get(NetnsId(**id))
                        .is_some_and(|info| info.is_live() && info.name.to_string() != a.name)
            })
            .map(|(id, _)| NetnsId(*id))
            .collect();
        let mut out = Vec::new();
        for id in renamed {
            let Some(info) = self.registry.get(id) else { continue };
            let mut d = description(info);
            if let Some(read) = self.settings.get(&id.0).filter(|r| r.sysctls.is_some()) {
                d.sysctls = read.sysctls.clone();
            }
            if let Some(a) = self.announced.get_mut(&id.0) {
                a.name = d.name.clone();
            }
            out.push(d);
        }
        out
    }

    /// Namespaces whose settings changed since they were read: young ones at every look, the
    /// others every [`SETTINGS_OLD_NS`] (at most [`MAX_COUNTER_READS`] reads per look).
    fn reread_settings(&mut self, now_ns: u64) -> Vec<NamespaceDescription> {
        let due: Vec<u32> = self
            .live_announced()
            .filter(|id| self.settings.get(id).is_some_and(|read| read.due(now_ns)))
            .take(MAX_COUNTER_READS)
            .collect();
        let mut out = Vec::new();
        let due: Vec<NetnsId> = due.into_iter().map(NetnsId).collect();
        for (id, read) in self.registry.sysctls_each(&due) {
            let netns = id.0;
            let entry = self.settings.get_mut(&netns).expect("due ones are known");
            entry.looks = entry.looks.saturating_add(1);
            let Ok(now) = read else { continue };
            if entry.sysctls.as_ref() != Some(&now) {
                entry.sysctls = Some(now.clone());
                if let Some(info) = self.registry.get(NetnsId(netns)) {
                    out.push(NamespaceDescription { sysctls: Some(now), ..description(info) });
                }
            }
        }
        out
    }

    /// A namespace first seen in an event: looked for (a bounded scan of /proc), and
    /// described as well as it can be.
    fn discover(&mut self, id: NetnsId) -> NamespaceDescription {
        self.registry.lookup_or_discover(id);
        self.describe(id)
    }

    fn live_announced(&self) -> impl Iterator<Item = u32> + '_ {
        self.announced.iter().filter(|(_, a)| a.live).map(|(id, _)| *id)
    }

    fn describe(&mut self, id: NetnsId) -> NamespaceDescription {
        let (description, generation) = match self.registry.get(id) {
            Some(info) => (description(info), info.generation),
            // No process or mount holds it any more (or none that this process may see): its
            // events still count, under its inode and the settings assumed for it.
            None => (NamespaceDescription { netns: id.0, name: id.0.to_string(), sysctls: None, live: true }, 0),
        };
        // A namespace the stream did not know live as this generation is new from now: young,
        // its settings re-read at every look. (One on an inode whose old namespace was gone
        // and forgotten by the registry comes back as generation 0 too: keeping the old
        // namespace's first sighting made it old at once, and its settings, often set just
        // after it is made, were not read again for 30 s; CI's guests showed it.)
        let fresh = self.announced.get(&id.0).is_none_or(|a| !a.live || a.generation != generation);
        self.announced.insert(id.0, Announced { live: description.live, generation, name: description.name.clone() });
        let now_ns = crate::time::monotonic_ns();
        let (first_ns, looks) = match self.settings.get(&id.0) {
            Some(read) if !fresh => (read.first_ns, read.looks),
            _ => (now_ns, 0),
        };
        self.settings.insert(id.0, SettingsRead { sysctls: description.sysctls.clone(), first_ns, looks });
        description
    }
}

fn description(info: &NetnsInfo) -> NamespaceDescription {
    NamespaceDescription {
        netns: info.id.0,
        name: info.name.to_string(),
        sysctls: info.sysctls.clone(),
        live: info.is_live(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_new_namespace_is_read_again_at_its_first_looks_however_late_they_come() {
        let read = |looks| SettingsRead { sysctls: None, first_ns: 100 * S, looks };
        // Young by age: every look.
        assert!(read(5).due(104 * S));
        // The loop stalled past the young age before any look: still read again, three times.
        assert!(read(0).due(113 * S));
        assert!(read(2).due(113 * S));
        // Old, its looks taken: only every 30 s of age.
        assert!(!read(3).due(112 * S));
        assert!(read(3).due(130 * S));
        assert!(!read(3).due(132 * S));
    }
}
