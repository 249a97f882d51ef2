//! Reading namespaces' sockets without holding the caller. A resync after lost records reads
//! every namespace's sockets through sock_diag: at a million sockets that takes seconds (29 s
//! in an overloaded run, 2026-12), and the drive loop that waited for it could not see a
//! Ctrl-C meanwhile. Here the read runs on a thread of its own and the caller awaits it beside
//! its signals; dropped, the read finishes unobserved and its result is thrown away.

use std::{future::Future, path::PathBuf};

use super::{
    NetnsId, NetnsRegistry,
    enter::{Batch, read_in_each},
};
use crate::event::ExistingSocket;

impl NetnsRegistry {
    /// The TCP sockets of `ids`, read on a thread of their own, each entered through the way
    /// in known now. A namespace unknown, gone or whose way in went stale has none this time:
    /// unlike [`NetnsRegistry::tcp_sockets`] no search for another way in (it would mutate the
    /// registry from that thread); the next refresh settles it, and a resync that missed a
    /// namespace for a round repairs it the next time.
    pub fn tcp_sockets_later(&self, ids: &[NetnsId]) -> impl Future<Output = Vec<ExistingSocket>> + Send + 'static {
        let targets: Vec<(NetnsId, PathBuf)> =
            ids.iter().filter_map(|id| Some((*id, self.way_in(*id).ok()?))).collect();
        let nsfs_dev = self.nsfs_dev;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let order: Vec<NetnsId> = targets.iter().map(|(id, _)| *id).collect();
            let mut sockets = Vec::new();
            for (id, result) in
                order.into_iter().zip(read_in_each(targets, nsfs_dev, crate::kernel::sockdiag::tcp_sockets))
            {
                match result {
                    Batch::Read(found) => sockets.extend(found.into_iter().map(|mut s| {
                        s.netns = id.0;
                        s
                    })),
                    Batch::Stale => log::debug!("sockets of namespace {}: its way in went stale", id.0),
                    Batch::Refused(e) | Batch::Failed(e) => log::debug!("sockets of namespace {}: {e}", id.0),
                }
            }
            // The receiver is gone when the caller stopped waiting: nothing to deliver.
            let _ = tx.send(sockets);
        });
        async move { rx.await.unwrap_or_default() }
    }
}
