//! The live source's namespaces: every namespace present at the start is described (named,
//! its settings read inside it) before the first event; one first seen in an event is
//! described in the stream just before that event; one that appears or goes away is
//! described again on the next look. The registry doing the looking is `kernel::namespaces`.

use crate::{
    event::{Event, ExistingSocket, NamespaceDescription, NamespaceEvent},
    kernel::namespaces::{NetnsId, NetnsInfo, NetnsRegistry},
};

/// How often the host is looked over for namespaces that appeared or went away.
const REFRESH_NS: u64 = 2_000_000_000;
/// Namespaces whose sockets are read at the start, at most: each costs a thread that enters
/// it and a sock_diag dump. Beyond this their first frame misses what existed before.
pub const MAX_SOCKET_READS: usize = 1024;

pub struct NamespaceTracker {
    registry: NetnsRegistry,
    /// Only this namespace (`--netns`): the probes see no other.
    only: Option<u32>,
    /// Described in the stream (or at the start), and whether as live.
    announced: std::collections::HashMap<u32, bool>,
    next_refresh_ns: u64,
}

impl NamespaceTracker {
    pub fn new(only: Option<u32>) -> Self {
        Self { registry: NetnsRegistry::new(), only, announced: Default::default(), next_refresh_ns: 0 }
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
        out
    }

    /// The sockets of every described live namespace (bounded by [`MAX_SOCKET_READS`]). A
    /// namespace that vanishes meanwhile has none; that is not an error.
    pub fn sockets(&mut self) -> Vec<ExistingSocket> {
        let ids: Vec<u32> = self.announced.iter().filter(|(_, live)| **live).map(|(id, _)| *id).collect();
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
            described.extend(
                self.refresh().into_iter().map(|namespace| Event::Namespace(NamespaceEvent { ts_ns, namespace })),
            );
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
            if self.only.is_none_or(|only| only == id.0) && self.announced.get(&id.0) != Some(&true) {
                out.push(self.describe(id));
            }
        }
        for id in report.retired {
            if self.announced.get(&id.0) == Some(&true) {
                out.push(self.describe(id));
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

    fn describe(&mut self, id: NetnsId) -> NamespaceDescription {
        let description = match self.registry.get(id) {
            Some(info) => description(info),
            // No process or mount holds it any more (or none that this process may see): its
            // events still count, under its inode and the settings assumed for it.
            None => NamespaceDescription { netns: id.0, name: id.0.to_string(), sysctls: None, live: true },
        };
        self.announced.insert(id.0, description.live);
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
