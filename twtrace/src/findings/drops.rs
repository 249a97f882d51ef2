//! Findings about drops that cost connections other than PAWS: a full connection tracking
//! table, SYNs a netfilter rule dropped, a listener's queues overflowing.

use super::{
    CONNTRACK_NEAR_LIMIT, Evidence, Finding, Kind, NAMED, Severity, counter, counter_rise, ev, fig, in_namespace,
    remedies,
};
use crate::{
    aggregate::{NamespaceView, SetupDropView},
    event::DropClass,
    kernel::netstat::{LISTEN_DROPS, LISTEN_OVERFLOWS, SYN_QUEUE_FULL_COOKIES, SYN_QUEUE_FULL_DROP},
    report::Report,
};

/// A namespace whose connection tracking table is full (or nearly): netfilter drops the first
/// packet of new connections, which stall for the client's SYN retries (1 s, then 3 s...) and
/// go through at the rate entries expire. A tracked TCP connection keeps its entry for
/// `nf_conntrack_tcp_timeout_time_wait` (120 s) after it closes, so non-keep-alive churn fills
/// the table as it fills the port range.
pub(super) fn conntrack(r: &Report, out: &mut Vec<Finding>) {
    use crate::kernel::netstat::{CONNTRACK_COUNT, CONNTRACK_DROP, CONNTRACK_INSERT_FAILED, CONNTRACK_MAX};
    for ns in &r.namespaces {
        let (count, max) = (counter(ns, CONNTRACK_COUNT), counter(ns, CONNTRACK_MAX));
        let dropped = conntrack_dropped(ns);
        let near = max > 0 && count as f64 >= CONNTRACK_NEAR_LIMIT * max as f64;
        if dropped <= 0 && !near {
            continue;
        }
        let mut f = Finding::new(
            if dropped > 0 { Severity::Critical } else { Severity::Warning },
            Kind::Conntrack,
            format!(
                "Namespace {}'s connection tracking table holds {count} of {max} entries{}: at the limit the first \
                 packet of each new connection is dropped, and connections stall for SYN retries (1 s, 3 s, ...).",
                ns.name,
                if dropped > 0 { format!(" and dropped {dropped} packets for want of room") } else { String::new() }
            ),
        );
        f.place.namespace = Some(ns.name.clone());
        let (drop, insert_failed) = (counter(ns, CONNTRACK_DROP), counter(ns, CONNTRACK_INSERT_FAILED));
        f.evidence = vec![
            ev(
                format!("nf_conntrack_count {count}, nf_conntrack_max {max}"),
                vec![
                    fig("nf_conntrack_count", count as f64, "entries"),
                    fig("nf_conntrack_max", max as f64, "entries"),
                ],
            ),
            ev(format!("conntrack drop +{drop}"), vec![fig("conntrack_drop", drop as f64, "packets")]),
            ev(
                format!("conntrack insert_failed +{insert_failed}"),
                vec![fig("conntrack_insert_failed", insert_failed as f64, "packets")],
            ),
        ];
        f.evidence.extend(setup_drops(ns, DropClass::Netfilter).map(drop_evidence));
        f.remedies = remedies::conntrack();
        f.verify = Some(remedies::verify::conntrack(&in_namespace(&ns.name)));
        out.push(f);
    }
}

/// Packets a namespace's connection tracking dropped: no room for an entry, or a lost insert
/// race.
pub(super) fn conntrack_dropped(ns: &NamespaceView) -> i64 {
    use crate::kernel::netstat::{CONNTRACK_DROP, CONNTRACK_INSERT_FAILED};
    counter(ns, CONNTRACK_DROP) + counter(ns, CONNTRACK_INSERT_FAILED)
}

/// A namespace's drops of one class, if twtrace saw any.
pub(super) fn setup_drops(ns: &NamespaceView, class: DropClass) -> Option<&SetupDropView> {
    ns.setup_drops.iter().find(|d| d.class == class)
}

/// "NETFILTER_DROP drop events: 30, 30 of them SYNs (30 sent by this host), to 127.0.0.1:7000 x30"
pub(super) fn drop_evidence(d: &SetupDropView) -> Evidence {
    let services: Vec<String> = d.services.iter().take(NAMED).map(|(s, n)| format!("{s} x{n}")).collect();
    ev(
        format!(
            "{} drop events: {}, {} of them SYNs ({} sent by this host){}",
            d.reason,
            d.total,
            d.syns,
            d.syns_sent,
            if services.is_empty() { String::new() } else { format!(", to {}", services.join(", ")) }
        ),
        vec![
            fig("drop_events", d.total as f64, "packets"),
            fig("syns", d.syns as f64, "packets"),
            fig("syns_sent", d.syns_sent as f64, "packets"),
        ],
    )
}

/// Connection attempts (SYNs) netfilter dropped beyond what a full conntrack table explains:
/// a rule's `drop` (or a chain's drop policy). The client sees no refusal, only silence: it
/// retries the SYN (1 s, 3 s, ...) and times out. This host's own connect()s dropped on their
/// way out are a warning; received SYNs dropped may be a firewall doing its job (an
/// internet-facing host drops scans all day), so they are a note that names the services.
pub(super) fn netfilter_drops(r: &Report, out: &mut Vec<Finding>) {
    for ns in &r.namespaces {
        let Some(d) = setup_drops(ns, DropClass::Netfilter) else { continue };
        let by_conntrack = conntrack_dropped(ns).max(0) as u64;
        if d.syns <= by_conntrack {
            continue;
        }
        let beyond = if by_conntrack > 0 {
            format!(" ({by_conntrack} of them for want of conntrack room)")
        } else {
            String::new()
        };
        let (severity, whose) = if d.syns_sent > 0 {
            (Severity::Warning, format!("{} of them this host's own connect()s", d.syns_sent))
        } else {
            (Severity::Info, "all received: a firewall refusing them by dropping, by design or not".to_owned())
        };
        let mut f = Finding::new(
            severity,
            Kind::NetfilterDrops,
            format!(
                "Netfilter dropped {} connection attempts (SYNs) in namespace {}{beyond}, {whose}. A dropped SYN \
                 gets no answer: the client retries (1 s, 3 s, ...) and times out.",
                d.syns, ns.name
            ),
        );
        f.place.namespace = Some(ns.name.clone());
        f.place.destination = d.services.first().map(|(s, _)| s.to_string());
        f.evidence.push(drop_evidence(d));
        f.remedies = remedies::netfilter_drops();
        f.verify = Some(remedies::verify::netfilter_drops(&in_namespace(&ns.name)));
        out.push(f);
    }
}

/// A listener's queues overflowing: the accept queue (connections the application has not
/// accept()ed; `ListenOverflows`) or the SYN queue (handshakes under way, with syncookies off;
/// `TCPReqQFullDrop`). Either way the SYN or the handshake's last ACK is dropped and the
/// client waits for a retransmit. `ListenDrops` counts every such drop, and more.
pub(super) fn listen_queues(r: &Report, out: &mut Vec<Finding>) {
    for ns in &r.namespaces {
        let overflows = counter(ns, LISTEN_OVERFLOWS);
        let drops = counter(ns, LISTEN_DROPS);
        let syn_queue = counter(ns, SYN_QUEUE_FULL_DROP);
        if overflows <= 0 && drops <= 0 && syn_queue <= 0 {
            continue;
        }
        let queue = match (overflows > 0, syn_queue > 0) {
            (_, false) => "accept queue",
            (false, true) => "SYN queue",
            (true, true) => "accept and SYN queues",
        };
        let mut f = Finding::new(
            Severity::Critical,
            Kind::ListenOverflow,
            format!(
                "A listener's {queue} overflowed in namespace {}: {overflows} accept-queue overflows, {syn_queue} SYNs \
                 dropped for a full SYN queue, {drops} SYNs or handshakes dropped in all. New connections stall for \
                 a SYN retransmit (1 s, then 3 s).",
                ns.name
            ),
        );
        f.place.namespace = Some(ns.name.clone());
        f.evidence = vec![
            counter_rise(LISTEN_OVERFLOWS, overflows),
            counter_rise(LISTEN_DROPS, drops),
            counter_rise(SYN_QUEUE_FULL_DROP, syn_queue),
        ];
        let cookies = counter(ns, SYN_QUEUE_FULL_COOKIES);
        if cookies > 0 {
            f.evidence.push(ev(
                format!("{SYN_QUEUE_FULL_COOKIES} +{cookies} (answered with syncookies, not dropped)"),
                vec![fig(SYN_QUEUE_FULL_COOKIES, cookies as f64, "count")],
            ));
        }
        // 6.15+: a handshake's last ACK dropped for a full accept queue has a reason (a SYN
        // refused for either queue is consumed: counted, never a drop event; 5.10-6.18).
        f.evidence.extend(setup_drops(ns, DropClass::ListenOverflow).map(drop_evidence));
        f.remedies = remedies::listen_overflow(syn_queue > 0);
        f.verify = Some(remedies::verify::listen_overflow(&in_namespace(&ns.name)));
        out.push(f);
    }
}
