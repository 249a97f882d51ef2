//! Per network namespace: what it is (its inode, its name, and the Kubernetes namespace and
//! pod or the container it belongs to), its settings, TIME_WAIT, kernel counters, conntrack
//! and drops.
//!
//! # Labels
//!
//! Every per-namespace series carries the same five labels:
//!
//! - `netns`: the namespace's inode, what events carry;
//! - `netns_name`: its name as `ip netns` lists it (`/run/netns`, which holds CNI's generated
//!   `cni-UUID` names), else as twtrace names it (`host`, a pod's `namespace/name`, `pod UID`, a
//!   container, `pid N (comm)`);
//! - `namespace`, `pod`: the Kubernetes namespace and pod whose network namespace it is, under
//!   the names cAdvisor and kube-state-metrics give them, empty for any other;
//! - `container`: the container outside Kubernetes whose namespace it is (`docker:3f2a1b9c0d1e`),
//!   empty for the rest (a pod's containers share its namespace).
//!
//! Empty labels are sent, not left out: scraped with `honor_labels: true` (the shipped
//! PodMonitor), a series without `namespace` would take twtrace's own pod's `namespace` from
//! the target, and the host's TIME_WAIT would be counted in twtrace's namespace.

use std::{collections::HashMap as StdHashMap, path::PathBuf};

use foldhash::HashMap;

use super::{Builder, Family, Kind, Value};
use crate::{
    aggregate::{Aggregator, Snapshot},
    kernel::{kube, netns, netstat},
};

/// How often the registered names (`/run/netns`) are read again, at most.
const REGISTERED_EVERY_NS: u64 = 5_000_000_000;

/// What a network namespace is, in labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Identity {
    pub netns_name: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl Identity {
    /// From the name twtrace gives a namespace, and its `ip netns` name if it has one.
    pub(super) fn of(name: &str, registered: Option<&str>) -> Self {
        let netns_name = registered.unwrap_or(name).to_owned();
        if let Some((namespace, pod)) = kube::pod_of_name(name) {
            return Self { netns_name, namespace: namespace.into(), pod: pod.into(), container: String::new() };
        }
        let runtimes = ["docker:", "podman:", "containerd:", "cri-o:"];
        let container = if runtimes.iter().any(|r| name.starts_with(r)) { name.to_owned() } else { String::new() };
        Self { netns_name, container, ..Self::default() }
    }

    /// The folded rows' labels: `other` where a namespace would be named.
    pub(super) fn other() -> Self {
        Self { netns_name: "other".into(), ..Self::default() }
    }

    pub(super) fn labels(&self, netns: String) -> Vec<(&'static str, String)> {
        vec![
            ("netns", netns),
            ("netns_name", self.netns_name.clone()),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
        ]
    }
}

/// The names registered under `ip netns`, read again now and then (a pod's `cni-UUID` name is
/// registered before its pod is named, so a new pod finds its name at the next read).
#[derive(Debug)]
pub(super) struct Registered {
    dir: Option<PathBuf>,
    names: StdHashMap<u32, String>,
    read_at: Option<u64>,
}

impl Registered {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self { dir, names: StdHashMap::new(), read_at: None }
    }

    fn refresh(&mut self, now_ns: u64) {
        let Some(dir) = &self.dir else { return };
        if self.read_at.is_none_or(|at| now_ns.saturating_sub(at) >= REGISTERED_EVERY_NS) {
            self.names = netns::registered(dir);
            self.read_at = Some(now_ns);
        }
    }
}

impl Builder {
    /// Each described namespace's identity, for this build's labels.
    pub(super) fn identify(&mut self, aggregator: &Aggregator, now_ns: u64) {
        self.registered.refresh(now_ns);
        let names = &self.registered.names;
        self.identities = aggregator
            .namespaces()
            .iter()
            .map(|d| (d.netns, Identity::of(&d.name, names.get(&d.netns).map(String::as_str))))
            .collect();
    }

    /// The labels of namespace `netns`, named `name` (when it was not described: its inode).
    pub(super) fn ns(&self, netns: u32, name: &str) -> Vec<(&'static str, String)> {
        match self.identities.get(&netns) {
            Some(id) => id.labels(netns.to_string()),
            None => Identity::of(name, None).labels(netns.to_string()),
        }
    }

    pub(super) fn namespaces(&self, aggregator: &Aggregator, snapshot: &Snapshot, out: &mut Vec<Family>) {
        let views: HashMap<u32, &crate::aggregate::NamespaceView> =
            snapshot.namespaces.iter().map(|v| (v.netns, v)).collect();
        let mut info = Family::new(
            "twtrace_namespace",
            Kind::Info,
            "A network namespace twtrace sees: its inode and name, and the Kubernetes namespace and pod (or the container) it belongs to when known.",
        );
        let mut reuse = Family::new(
            "twtrace_tcp_tw_reuse",
            Kind::Gauge,
            "The namespace's net.ipv4.tcp_tw_reuse: 1 lets connect() take a port from a TIME_WAIT socket whose peer sent timestamps, 2 only on loopback, 0 never.",
        );
        let mut timestamps = Family::new(
            "twtrace_tcp_timestamps",
            Kind::Gauge,
            "The namespace's net.ipv4.tcp_timestamps (0: off; PAWS and tcp_tw_reuse need them).",
        );
        let mut tw = Family::new("twtrace_timewait_sockets", Kind::Gauge, "TIME_WAIT sockets in the namespace now.");
        let mut births = Family::new(
            "twtrace_namespace_timewait_births",
            Kind::Counter,
            "TIME_WAIT sockets born in the namespace since start (twtrace_timewait_births_total is their sum).",
        );
        let mut deaths = Family::new(
            "twtrace_namespace_timewait_deaths",
            Kind::Counter,
            "TIME_WAIT sockets of the namespace gone since start, by reason (as twtrace_timewait_deaths_total, whose sum they are).",
        );
        let mut paws = Family::new(
            "twtrace_namespace_paws_drops",
            Kind::Counter,
            "Segments the namespace dropped for PAWS and the other RFC 7323 timestamp checks since start (twtrace_paws_drops_total, by reason, is their sum).",
        );
        let mut buckets = Family::new(
            "twtrace_timewait_max_buckets",
            Kind::Gauge,
            "The namespace's net.ipv4.tcp_max_tw_buckets: TIME_WAIT sockets beyond it are not made.",
        );
        let mut range = Family::new(
            "twtrace_local_port_range_size",
            Kind::Gauge,
            "Ports in the namespace's net.ipv4.ip_local_port_range.",
        );
        let mut counters = Family::new(
            "twtrace_tcpext",
            Kind::Counter,
            "The namespace's TcpExt counters from /proc/net/netstat (TIME_WAIT and PAWS ones), increase since twtrace started.",
        );
        let mut conntrack_entries = Family::new(
            "twtrace_conntrack_entries",
            Kind::Gauge,
            "Entries in the namespace's connection tracking table (net.netfilter.nf_conntrack_count), where netfilter tracks connections.",
        );
        let mut conntrack_max = Family::new(
            "twtrace_conntrack_max_entries",
            Kind::Gauge,
            "The limit of each namespace's connection tracking table (net.netfilter.nf_conntrack_max).",
        );
        let mut conntrack_drops = Family::new(
            "twtrace_conntrack_dropped_packets",
            Kind::Counter,
            "Packets connection tracking dropped since twtrace started: `full` (no room in the table), `insert_failed` (lost an insert race); `early_drop` counts entries evicted to make room.",
        );
        let mut setup_drops = Family::new(
            "twtrace_connection_drops",
            Kind::Counter,
            "Packets the kernel dropped that cost connections, other than PAWS, by drop reason: NETFILTER_DROP (a rule, or a full conntrack table; 5.18+), TCP_LISTEN_OVERFLOW (a full accept queue; 6.15+).",
        );
        let mut setup_syns = Family::new(
            "twtrace_connection_drop_syns",
            Kind::Counter,
            "Of those, connections' opening SYNs, by direction: `sent` by this host's own connect(), or `received`.",
        );
        for description in aggregator.namespaces() {
            let view = views.get(&description.netns);
            if !description.live && view.is_none() {
                continue;
            }
            let labels = self.ns(description.netns, &description.name);
            info.push(labels.clone(), Value::Info);
            let sysctls = description.sysctls.as_ref();
            if let Some(v) = sysctls.and_then(|s| s.tcp_tw_reuse) {
                reuse.push(labels.clone(), Value::Int(v));
            }
            if let Some(v) = sysctls.and_then(|s| s.tcp_timestamps) {
                timestamps.push(labels.clone(), Value::Int(v));
            }
            tw.push(labels.clone(), Value::Int(view.map_or(0, |v| v.timewait_live)));
            let totals = aggregator.namespace_totals(description.netns);
            births.push(labels.clone(), Value::Int(totals.timewait_births));
            for (reason, count) in super::death_reasons(totals.timewait_expired, &totals.timewait_killed_by) {
                let mut l = labels.clone();
                l.push(("reason", reason.into()));
                deaths.push(l, Value::Int(count));
            }
            paws.push(labels.clone(), Value::Int(totals.paws_drops));
            if let Some(limit) = description.sysctls.as_ref().and_then(|s| s.tcp_max_tw_buckets) {
                buckets.push(labels.clone(), Value::Int(limit));
            }
            range.push(labels.clone(), Value::Int(aggregator.range_size(description.netns)));
            for d in view.map(|v| v.setup_drops.as_slice()).unwrap_or_default() {
                let mut l = labels.clone();
                l.push(("reason", d.reason.clone()));
                setup_drops.push(l.clone(), Value::Int(d.total));
                for (direction, n) in [("sent", d.syns_sent), ("received", d.syns - d.syns_sent)] {
                    let mut l = l.clone();
                    l.push(("direction", direction.into()));
                    setup_syns.push(l, Value::Int(n));
                }
            }
            for (name, value) in view.map(|v| v.counters.as_slice()).unwrap_or_default() {
                let value = Value::Int((*value).max(0) as u64);
                let reason = match name.as_str() {
                    netstat::CONNTRACK_COUNT => {
                        conntrack_entries.push(labels.clone(), value);
                        continue;
                    }
                    netstat::CONNTRACK_MAX => {
                        conntrack_max.push(labels.clone(), value);
                        continue;
                    }
                    netstat::CONNTRACK_DROP => "full",
                    netstat::CONNTRACK_INSERT_FAILED => "insert_failed",
                    netstat::CONNTRACK_EARLY_DROP => "early_drop",
                    _ => {
                        let mut l = labels.clone();
                        l.push(("counter", name.clone()));
                        counters.push(l, value);
                        continue;
                    }
                };
                let mut l = labels.clone();
                l.push(("reason", reason.into()));
                conntrack_drops.push(l, value);
            }
        }
        out.extend([
            info,
            reuse,
            timestamps,
            tw,
            births,
            deaths,
            paws,
            buckets,
            range,
            counters,
            conntrack_entries,
            conntrack_max,
            conntrack_drops,
            setup_drops,
            setup_syns,
        ]);
    }
}
