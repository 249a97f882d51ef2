//! Drops in the model: PAWS (timestamp) drops by reason and by source address, and the other
//! drops that cost connections (netfilter, the accept queue) per namespace.

use super::{Aggregator, PawsSource, RECENT_DROPS, SETUP_DROP_SERVICES, SetupDropView};
use crate::event::{DropClass, DropEvent};

impl Aggregator {
    pub(super) fn drop_event(&mut self, e: &DropEvent) {
        match e.class() {
            // Watched reasons of another class (a recording from a future twtrace) count as
            // PAWS did before classes: nothing vanishes.
            Some(DropClass::Paws) | None => self.paws_drop(e),
            Some(class) => self.setup_drop(e, class),
        }
    }

    /// A drop that cost a connection (its SYN) or a handshake, counted in its namespace.
    fn setup_drop(&mut self, e: &DropEvent, class: DropClass) {
        let ns = self.namespace(e.netns);
        let view = ns.setup_drops.entry(e.reason.clone()).or_insert_with(|| SetupDropView {
            reason: e.reason.clone(),
            class,
            total: 0,
            syns: 0,
            syns_sent: 0,
            services: Vec::new(),
        });
        view.total += 1;
        if e.is_syn() {
            view.syns += 1;
            view.syns_sent += u64::from(e.outgoing);
        }
        // The end that was listening, or being connected to: a sent packet's remote end, a
        // received one's local end.
        if let Some(f) = e.flow {
            let service = if e.outgoing { f.remote } else { f.local };
            let room = view.services.len() < SETUP_DROP_SERVICES;
            match view.services.iter_mut().find(|(s, _)| *s == service) {
                Some((_, n)) => *n += 1,
                None if room => view.services.push((service, 1)),
                None => {}
            }
        }
    }

    fn paws_drop(&mut self, e: &DropEvent) {
        self.drops.add(e.ts_ns, 1);
        self.namespace(e.netns).totals.paws_drops += 1;
        let entry = self.drops_by_reason.entry(e.reason.clone()).or_default();
        entry.0 += 1;
        entry.1.add(e.ts_ns, 1);
        if let Some(flow) = e.flow {
            let source: &mut PawsSource = self.sources.entry((e.netns, flow.remote.ip())).or_default();
            source.drops += 1;
            source.flows.insert((flow.remote.port(), flow.local.port()));
        }
        if self.recent_drops.len() == RECENT_DROPS {
            self.recent_drops.pop_front();
        }
        self.recent_drops.push_back(e.clone());
    }
}
