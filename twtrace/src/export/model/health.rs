//! The model's own size and repair as series: what its memory grows with, and whether its
//! figures are exact (records lost since the last resync) or were repaired.

use super::{Family, Kind, Value};
use crate::aggregate::Snapshot;

pub(super) fn model_metrics(snapshot: &Snapshot, out: &mut Vec<Family>) {
    let m = &snapshot.model;
    let mut rows =
        Family::new("twtrace_model_rows", Kind::Gauge, "Rows the model holds, by kind (what its memory grows with).");
    for (kind, n) in [
        ("destinations", m.destinations),
        ("searches", m.searches),
        ("timewait_sockets", m.timewait_sockets),
        ("connections", m.connections),
        ("failure_rows", m.failure_rows),
        ("paws_sources", m.paws_sources),
        ("names", m.names),
        ("evicted", m.evicted),
    ] {
        rows.push(vec![("kind", kind.to_owned())], Value::Int(n));
    }
    let mut approximate = Family::new(
        "twtrace_model_approximate",
        Kind::Gauge,
        "1 while records lost since the last resync leave the figures approximate, else 0.",
    );
    approximate.push(vec![], Value::Int(u64::from(snapshot.approximate)));
    let mut resyncs = Family::new(
        "twtrace_resyncs",
        Kind::Counter,
        "Times the model re-read the kernel's sockets (sock_diag) to repair itself after lost records.",
    );
    let last = snapshot.last_resync.as_ref();
    resyncs.push(vec![], Value::Int(last.map_or(0, |r| r.count)));
    let mut drift = Family::new(
        "twtrace_resync_drift_sockets",
        Kind::Gauge,
        "At the last resync: sockets the model dropped (removed) and added to match the kernel.",
    );
    drift.push(vec![("change", "removed".to_owned())], Value::Int(last.map_or(0, |r| r.removed)));
    drift.push(vec![("change", "added".to_owned())], Value::Int(last.map_or(0, |r| r.added)));
    out.extend([rows, approximate, resyncs, drift]);
}
