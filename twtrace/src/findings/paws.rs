//! Findings about PAWS (RFC 7323's protection against wrapped sequence numbers): segments
//! dropped for an old timestamp, from the drop events twtrace saw or, without them, from the
//! kernel's counters.

use super::{
    Evidence, Finding, Kind, NAMED, NAT_FLOWS, PAWS_WARN_DROPS, Severity, TW_RECYCLE_REMOVED, counter_rise, ev, fig,
    in_namespace, kernel_at_least, remedies,
};
use crate::report::Report;

pub(super) fn paws(r: &Report, out: &mut Vec<Finding>) {
    if r.paws.drops == 0 {
        return paws_counted(r, out);
    }
    let rec = &r.recording;
    let nat: Vec<_> = r.paws.sources.iter().filter(|s| s.flows >= NAT_FLOWS).collect();
    let reasons: Vec<String> = r.paws.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let severity = if nat.is_empty() && r.paws.drops < PAWS_WARN_DROPS { Severity::Info } else { Severity::Warning };
    let mut f = Finding::new(
        severity,
        Kind::Paws,
        format!(
            "{} segments were dropped by PAWS ({}) from {} source(s){}. tcp_timestamps is {}.",
            r.paws.drops,
            reasons.join(", "),
            r.paws.sources.len(),
            if nat.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} source(s) with several flows each ({}), the signature of clients behind NAT whose \
                     timestamp clocks differ, or of one host alone where its kernel hashes the ports into each \
                     connection's timestamp offset (stable builds from March 2026, e.g. 6.18.17): then two \
                     connections from one host have unrelated clocks",
                    nat.len(),
                    nat.iter().take(NAMED).map(|s| r.source_label(s)).collect::<Vec<_>>().join(", ")
                )
            },
            rec.sysctls.tcp_timestamps.map_or("unknown".into(), |v| v.to_string())
        ),
    );
    f.evidence = r
        .paws
        .sources
        .iter()
        .take(NAMED)
        .map(|s| {
            ev(
                format!("{}: {} drops, {} flows", r.source_label(s), s.drops, s.flows),
                vec![fig("drops", s.drops as f64, "segments"), fig("flows", s.flows as f64, "flows")],
            )
        })
        .collect();
    f.evidence.extend(r.paws.counters.iter().filter(|(k, _)| k.starts_with("PAWS")).map(|(k, v)| counter_rise(k, *v)));
    let recycle_gone = kernel_at_least(&rec.kernel, TW_RECYCLE_REMOVED);
    f.evidence.push(Evidence::from(if recycle_gone {
        format!("tcp_tw_recycle does not exist on {} (removed in 4.12): it is not the cause", rec.kernel)
    } else {
        format!("kernel {}: check that net.ipv4.tcp_tw_recycle is 0 (it breaks clients behind NAT)", rec.kernel)
    }));
    f.remedies = remedies::paws();
    f.verify = Some(remedies::verify::paws(""));
    out.push(f);
}

/// PAWS rejects the kernel counted while twtrace saw no drop event it can tell apart: each
/// namespace's own counters are then all there is. Kernel facts (docs/kernel-facts.md): drop
/// reasons (the `reason` of `skb:kfree_skb`) exist from 5.17 (c504e5c2f964);
/// `TCP_RFC7323_PAWS` for established sockets came after (6.0-rc1 and 6.1 have it). Before 6.16
/// a TIME_WAIT socket's PAWS reject has no reason of its own: `tcp_v4_rcv()` answers the SYN
/// with an ACK and drops it at `discard_it` with reason NOT_SPECIFIED (read in 6.13.7), counted
/// as `PAWSEstab`, a drop event twtrace cannot tell from any other unexplained drop. 6.16 added
/// `TCP_RFC7323_TW_PAWS` (04271411121a) and `PAWSTimewait` (c449d5f3a3d7). The counters say
/// how many and where, never from whom: the NAT signature (many flows from one source) cannot
/// be seen, so only the count sets severity.
fn paws_counted(r: &Report, out: &mut Vec<Finding>) {
    let paws_only = |counters: &[(String, i64)]| -> Vec<(String, i64)> {
        counters.iter().filter(|(k, v)| k.starts_with("PAWS") && *v > 0).cloned().collect()
    };
    // (namespace, its PAWS counters that rose)
    type Place = (Option<String>, Vec<(String, i64)>);
    let mut places: Vec<Place> =
        r.namespaces.iter().map(|ns| (Some(ns.name.clone()), paws_only(&ns.counters))).collect();
    // Recordings made before namespaces were described: the traced namespace's totals.
    if r.namespaces.is_empty() {
        places.push((None, paws_only(&r.paws.counters)));
    }
    let rec = &r.recording;
    let drops_running = rec.backends.iter().any(|(family, backend)| family == "drops" && backend != "OFF");
    let why = if drops_running {
        format!("kernel {} drops these rejects with no PAWS drop reason (NOT_SPECIFIED before 6.16)", rec.kernel)
    } else {
        "twtrace's drops family is not running (`twtrace probes` says why)".to_owned()
    };
    for (name, counters) in places.into_iter().filter(|(_, c)| !c.is_empty()) {
        let total: i64 = counters.iter().map(|(_, v)| v).sum();
        let listed: Vec<String> = counters.iter().map(|(k, v)| format!("{k} +{v}")).collect();
        let severity = if (total as u64) < PAWS_WARN_DROPS { Severity::Info } else { Severity::Warning };
        let mut f = Finding::new(
            severity,
            Kind::Paws,
            format!(
                "{} rejected {total} segments by PAWS ({}), as the kernel counts them. twtrace saw no PAWS drop event \
                 for them ({why}): no source, flow or NAT signature to show. Per-source detail needs a kernel that drops \
                 them with a reason: 6.16+ for TIME_WAIT sockets (TCP_RFC7323_TW_PAWS); for established connections \
                 TCP_RFC7323_PAWS (6.1 has it). tcp_timestamps is {}.",
                name.as_ref().map_or("The traced namespace".to_owned(), |n| format!("Namespace {n}")),
                listed.join(", "),
                rec.sysctls.tcp_timestamps.map_or("unknown".into(), |v| v.to_string())
            ),
        );
        f.evidence = counters.iter().map(|(k, v)| counter_rise(k, *v)).collect();
        f.evidence.push(ev(format!("PAWS drop events seen: 0 ({why})"), vec![fig("paws_drop_events", 0.0, "events")]));
        f.remedies = remedies::paws_counted();
        f.place.namespace = name.clone();
        f.verify = Some(remedies::verify::paws(&name.as_deref().map(in_namespace).unwrap_or_default()));
        out.push(f);
    }
}
