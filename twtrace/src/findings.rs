//! Findings: what is wrong, where, the evidence as measured figures, what to do about it (in
//! order of preference, with the trade-offs and the kernels each remedy needs) and the
//! command that shows it fixed. Rules over the report model with named thresholds; `report`
//! prints their headlines first and `doctor` prints them whole, so the two never disagree.

mod drops;
mod evidence;
mod paws;
mod remedies;
pub mod runbooks;

use serde::Serialize;

pub use evidence::{Evidence, Figure};
use evidence::{counter_rise, ev, fig};

use crate::{
    aggregate::NamespaceView,
    report::{DestinationSummary, Report},
};

/// A destination whose port space peaked at this share of the range is reported: connect()
/// to it fails with EADDRNOTAVAIL once it is full.
pub const PORT_SPACE_PEAK: f64 = 0.8;
/// TIME_WAIT's fixed lifetime: `TCP_TIMEWAIT_LEN`, 60 s in every kernel since 2.x
/// (include/net/tcp.h); `tcp_fin_timeout` does not change it.
pub const TIMEWAIT_LEN_MS: f64 = 60_000.0;
/// How far a median lifetime may be from [`TIMEWAIT_LEN_MS`] and still be the fixed 60 s
/// (timer-wheel slack makes it 60.7-61.0 s; see ../shared/KERNEL-NOTES.md).
pub const TIMEWAIT_LEN_SLACK_MS: f64 = 5_000.0;
/// TIME_WAIT population at this share of `tcp_max_tw_buckets` is near the ceiling beyond
/// which the kernel skips TIME_WAIT (and counts TCPTimeWaitOverflow).
pub const BUCKETS_NEAR_LIMIT: f64 = 0.9;
/// A PAWS source with at least this many distinct flows looks like hosts behind NAT. Two is
/// not enough: a healthy loopback churn on 6.18 had late FINs of two flows dropped by
/// `TCP_RFC7323_TW_PAWS` (CI's guest), which is no NAT.
pub const NAT_FLOWS: u64 = 3;
/// How many processes, sources or groups a finding names.
const NAMED: usize = 3;
/// PAWS drops below this, none from a NAT-like source, are worth knowing, no more: on a healthy host a
/// retransmitted FIN or ACK that reaches a TIME_WAIT socket late is dropped now and then
/// (seen: one `TCP_RFC7323_TW_PAWS` in a 10 s loopback churn on 6.18) and nobody is hurt.
pub const PAWS_WARN_DROPS: u64 = 10;
/// A conntrack table this full is a warning: at the limit, new connections' first packets
/// are dropped.
pub const CONNTRACK_NEAR_LIMIT: f64 = 0.9;
/// `tcp_tw_recycle` was removed in 4.12 (it broke clients behind NAT): 4396e46187ca "tcp: remove
/// tcp_tw_recycle" (docs/kernel-facts.md).
const TW_RECYCLE_REMOVED: (u32, u32) = (4, 12);

/// How bad, worst last (the order sorts findings and sets `doctor`'s exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing wrong.
    Ok,
    /// Worth knowing; nothing to fix (which backend runs, a setting that does nothing).
    Info,
    /// Will hurt if it goes on, or harms some traffic now.
    Warning,
    /// Failing now: connections refused, records lost.
    Critical,
}

/// What a finding is about; its text says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Damage,
    Loss,
    SkippedRuns,
    ApproximateSearch,
    PortSpace,
    ConnectFailures,
    TimeWaitLifetime,
    FinTimeoutLowered,
    TimeWaitBuckets,
    TimeWaitPeak,
    Paws,
    ListenOverflow,
    Conntrack,
    NetfilterDrops,
    TimestampsOff,
    ReuseOnlyAccepting,
    Nothing,
}

/// Where it happens, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Where {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Remedy {
    pub action: String,
    pub tradeoff: String,
    /// The kernel or condition it needs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
}

fn remedy(action: impl Into<String>, tradeoff: impl Into<String>, needs: Option<&str>) -> Remedy {
    Remedy { action: action.into(), tradeoff: tradeoff.into(), needs: needs.map(str::to_owned) }
}

/// Serialised in findings/evidence.rs: the evidence as sentences and as figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub kind: Kind,
    /// One paragraph: what, where and the main figure (what `report` prints).
    pub text: String,
    pub place: Where,
    /// The measured figures behind it.
    pub evidence: Vec<Evidence>,
    /// Most preferable first.
    pub remedies: Vec<Remedy>,
    /// A command that shows it fixed.
    pub verify: Option<String>,
}

impl Finding {
    fn new(severity: Severity, kind: Kind, text: String) -> Self {
        Self { severity, kind, text, place: Where::default(), evidence: Vec::new(), remedies: Vec::new(), verify: None }
    }

    /// The text's first sentence: what and where with the main figure, without the advice
    /// (`top`'s findings pane). A sentence ends at ". " before a capital: addresses, `e.g. 51`
    /// and `x80.` at the end do not end one early.
    pub fn headline(&self) -> &str {
        let t = &self.text;
        let end = t.match_indices(". ").map(|(i, _)| i).find(|&i| t[i + 2..].starts_with(|c: char| c.is_uppercase()));
        end.map_or(t, |i| &t[..=i])
    }
}

impl Severity {
    /// A short label, the same in `doctor` and `top`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "note",
            Severity::Ok => "OK",
        }
    }
}

/// The worst severity among `findings` (`Ok` for none).
pub fn worst(findings: &[Finding]) -> Severity {
    findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
}

/// `ip netns exec NAME ` for a namespace known by an `ip netns` name; empty for the host's and
/// for one named otherwise.
fn in_namespace(name: &str) -> String {
    match name {
        "host" => String::new(),
        // Not a container, `pid N (comm)`, an inode or a pod's `namespace/name`.
        n if !n.contains([' ', ':', '/']) && n.parse::<u32>().is_err() => format!("ip netns exec {n} "),
        _ => String::new(),
    }
}

/// The findings of a report: what qualifies every figure (a damaged recording, lost records)
/// first, then the worst first (in the order found within a severity).
pub fn of(r: &Report) -> Vec<Finding> {
    let mut out = Vec::new();
    recording_health(r, &mut out);
    port_space(r, &mut out);
    time_wait(r, &mut out);
    paws::paws(r, &mut out);
    drops::conntrack(r, &mut out);
    drops::netfilter_drops(r, &mut out);
    drops::listen_queues(r, &mut out);
    settings(r, &mut out);
    if out.iter().all(|f| f.severity <= Severity::Info) && !out.iter().any(|f| f.kind != Kind::ApproximateSearch) {
        let mut ok = Finding::new(
            Severity::Ok,
            Kind::Nothing,
            "Nothing stands out: no port-space pressure, no PAWS drops, no loss.".into(),
        );
        let busiest = r.destinations.first().map_or(0.0, |d| d.peak_utilisation * 100.0);
        ok.evidence = vec![
            ev(
                format!("{} events over {:.0} s", r.recording.events, r.recording.seconds),
                vec![fig("events", r.recording.events as f64, "events"), fig("observed", r.recording.seconds, "s")],
            ),
            ev(
                format!("busiest destination at {busiest:.0}% of its range"),
                vec![fig("busiest_destination_utilisation", busiest, "percent")],
            ),
            ev(
                format!("TIME_WAIT peak {}", r.timewait.peak),
                vec![fig("timewait_peak", r.timewait.peak as f64, "sockets")],
            ),
            ev(
                format!("{} PAWS drops, {} records lost", r.paws.drops, r.recording.lost),
                vec![
                    fig("paws_drops", r.paws.drops as f64, "segments"),
                    fig("lost", r.recording.lost as f64, "records"),
                ],
            ),
        ];
        out.push(ok);
    }
    // What qualifies every figure (damage, loss) first, then the worst first.
    out.sort_by_key(|f| (!matches!(f.kind, Kind::Damage | Kind::Loss), std::cmp::Reverse(f.severity)));
    out
}

fn recording_health(r: &Report, out: &mut Vec<Finding>) {
    let rec = &r.recording;
    if !rec.complete || !rec.damage.is_empty() {
        let mut f = Finding::new(
            Severity::Warning,
            Kind::Damage,
            format!(
                "The recording is incomplete or damaged ({} problem(s), listed below): figures cover only what could be read.",
                rec.damage.len()
            ),
        );
        f.evidence = rec.damage.iter().cloned().map(Evidence::from).collect();
        out.push(f);
    }
    if rec.lost > 0 {
        let mut f = Finding::new(
            Severity::Critical,
            Kind::Loss,
            format!(
                "{} events were lost in the kernel (ring buffer full): counts below are lower bounds. Record with a larger --ring-buffer-size.",
                rec.lost
            ),
        );
        f.remedies = remedies::loss();
        out.push(f);
    }
    let skipped = rec.skipped_runs;
    if skipped > 0 {
        out.push(Finding::new(
            Severity::Info,
            Kind::SkippedRuns,
            format!(
                "The kernel skipped {skipped} runs of twtrace's programs (a softirq or kprobe hit them while a BPF program \
                 was already running on that CPU): up to {skipped} events may be missing, most likely fewer."
            ),
        ));
    }
    let approximate = rec.backends.iter().any(|(family, backend)| family == "portsearch" && backend == "tracepoint");
    if approximate && !r.destinations.is_empty() {
        out.push(Finding::new(
            Severity::Info,
            Kind::ApproximateSearch,
            "Port searches were timed on the tracepoint backend: from the socket's SYN_SENT to its SYN \
             (approximate, no candidate counts; bind() searches unseen). fentry or kprobe see the search itself."
                .into(),
        ));
    }
}

fn port_space(r: &Report, out: &mut Vec<Finding>) {
    for d in r.destinations.iter().filter(|d| d.peak_utilisation >= PORT_SPACE_PEAK) {
        out.push(port_space_finding(r, d));
    }
    let failed: u64 = r.failures_total.iter().filter(|(e, _)| e == "EADDRNOTAVAIL").map(|(_, n)| *n).sum();
    if failed > 0 {
        let listed: Vec<_> = r.failures.iter().filter(|f| f.error == "EADDRNOTAVAIL").take(NAMED).collect();
        let who: Vec<String> = listed.iter().map(|f| format!("{} x{}", f.process, f.count)).collect();
        let mut f = Finding::new(
            Severity::Critical,
            Kind::ConnectFailures,
            format!("{failed} connect() calls found no free local port (EADDRNOTAVAIL): {}.", who.join(", ")),
        );
        f.place.processes = listed.iter().map(|f| format!("[{}] {}", f.namespace, f.process)).collect();
        f.evidence = listed
            .iter()
            .map(|f| {
                ev(
                    format!("{} in namespace {}: {} EADDRNOTAVAIL", f.process, f.namespace, f.count),
                    vec![fig("eaddrnotavail", f.count as f64, "calls")],
                )
            })
            .collect();
        out.push(f);
    }
}

fn port_space_finding(r: &Report, d: &DestinationSummary) -> Finding {
    let (lo, hi) = d.port_range;
    let full = d.peak_in_use >= d.range || d.failures > 0;
    let mut f = Finding::new(
        if full { Severity::Critical } else { Severity::Warning },
        Kind::PortSpace,
        format!(
            "Port space toward {} from {} in namespace {} peaked at {:.0}% ({} of {} ports) at {}: connect() to it \
             fails with EADDRNOTAVAIL when full. Reuse connections (keep-alive or pooling), widen that namespace's \
             ip_local_port_range (now {lo}-{hi}), or spread load over more destination addresses or ports.",
            d.destination.remote,
            d.destination.local,
            d.namespace,
            d.peak_utilisation * 100.0,
            d.peak_in_use,
            d.range,
            d.peak_at.time_of_day()
        ),
    );
    f.place = Where {
        namespace: Some(d.namespace.clone()),
        local: Some(d.destination.local.to_string()),
        destination: Some(d.destination.remote.to_string()),
        processes: r
            .failures
            .iter()
            .filter(|x| x.netns == d.destination.netns)
            .take(NAMED)
            .map(|x| x.process.clone())
            .collect(),
    };
    f.evidence = vec![
        ev(
            format!(
                "peak {} of {} ports ({:.1}%) at {}",
                d.peak_in_use,
                d.range,
                d.peak_utilisation * 100.0,
                d.peak_at
            ),
            vec![
                fig("peak_in_use", d.peak_in_use as f64, "ports"),
                fig("range", d.range as f64, "ports"),
                fig("peak_utilisation", d.peak_utilisation * 100.0, "percent"),
            ],
        ),
        ev(
            format!("{} in use at the end", d.in_use_at_end),
            vec![fig("in_use_at_end", d.in_use_at_end as f64, "ports")],
        ),
        ev(
            format!("{} connect() calls failed toward it", d.failures),
            vec![fig("failures", d.failures as f64, "calls")],
        ),
    ];
    if let Some(p99) = d.search_p99_us {
        f.evidence.push(ev(format!("port search p99 {p99:.1} us"), vec![fig("search_p99", p99, "us")]));
    }
    let sysctls =
        r.recording.namespaces.iter().find(|n| n.netns == d.destination.netns).and_then(|n| n.sysctls.as_ref());
    let reuse = sysctls.and_then(|s| s.tcp_tw_reuse);
    let timestamps = sysctls.and_then(|s| s.tcp_timestamps);
    let settings = [("tcp_tw_reuse", reuse), ("tcp_timestamps", timestamps)];
    f.evidence.push(ev(
        format!(
            "namespace settings: tcp_tw_reuse {}, tcp_timestamps {}",
            reuse.map_or("?".into(), |v| v.to_string()),
            timestamps.map_or("?".into(), |v| v.to_string())
        ),
        settings.iter().filter_map(|(name, v)| v.map(|v| fig(*name, v as f64, "setting"))).collect(),
    ));
    if let Some(ts) = d.peer_timestamps {
        f.evidence.push(ev(
            format!("peer timestamps on {} of {} TIME_WAIT sockets holding ports toward it", ts.seen, ts.known()),
            vec![
                fig("peer_timestamps_seen", ts.seen as f64, "sockets"),
                fig("sockets_known", ts.known() as f64, "sockets"),
            ],
        ));
    }
    f.remedies =
        remedies::port_space(&d.namespace, &format!("{lo}-{hi}"), Some(d.range), &reuse_outlook(d, timestamps));
    f.verify = Some(remedies::verify::port_space(
        &in_namespace(&d.namespace),
        &d.destination.remote.to_string(),
        &d.namespace,
    ));
    f
}

/// Whether `tcp_tw_reuse` could free ports toward `d`, from what its TIME_WAIT sockets showed
/// of the peer's timestamps (`tcp_twsk_unique()` reuses only those whose peer sent them).
fn reuse_outlook(d: &DestinationSummary, local_timestamps: Option<u64>) -> String {
    if local_timestamps == Some(0) {
        return "here it cannot work: tcp_timestamps is 0 in this namespace".into();
    }
    match d.peer_timestamps {
        None => "twtrace did not read whether this peer sends them (a recording older than format 4, or a \
                 kernel without tw_ts_recent_stamp)"
            .into(),
        Some(ts) if ts.seen == 0 => format!(
            "toward this destination it cannot work: the peer sent no timestamps on any of the {} connections \
             whose TIME_WAIT sockets hold ports here",
            ts.absent
        ),
        Some(ts) if ts.absent == 0 => format!(
            "toward this destination it can work: the peer sent timestamps on all {} connections whose TIME_WAIT \
             sockets hold ports here",
            ts.seen
        ),
        Some(ts) => format!(
            "toward this destination it can free only some ports: the peer sent timestamps on {} of {} \
             connections (several hosts behind one address, some with timestamps off?)",
            ts.seen,
            ts.known()
        ),
    }
}

fn time_wait(r: &Report, out: &mut Vec<Finding>) {
    let rec = &r.recording;
    if let Some(p50) = r.timewait.lifetime_p50_ms {
        if (p50 - TIMEWAIT_LEN_MS).abs() <= TIMEWAIT_LEN_SLACK_MS {
            let fin = fin_timeouts(r).map(|f| format!(" ({f})")).unwrap_or_default();
            let mut f = Finding::new(
                Severity::Info,
                Kind::TimeWaitLifetime,
                format!(
                    "TIME_WAIT sockets lived {:.1} s (median): that is the kernel's fixed TCP_TIMEWAIT_LEN of 60 s; \
                     tcp_fin_timeout does not shorten it{fin}, it only bounds orphaned FIN_WAIT2 sockets.",
                    p50 / 1e3
                ),
            );
            let (p99, max) = (r.timewait.lifetime_p99_ms, r.timewait.lifetime_max_ms);
            let figures = [("lifetime_p50", Some(p50)), ("lifetime_p99", p99), ("lifetime_max", max)];
            f.evidence = vec![ev(
                format!(
                    "lifetime p50 {:.1} s, p99 {}, max {}",
                    p50 / 1e3,
                    p99.map_or("-".into(), |v| format!("{:.1} s", v / 1e3)),
                    max.map_or("-".into(), |v| format!("{:.1} s", v / 1e3))
                ),
                figures.iter().filter_map(|(name, ms)| ms.map(|ms| fig(*name, ms / 1e3, "s"))).collect(),
            )];
            out.push(f);
        }
    }
    // A lowered tcp_fin_timeout, wherever it is, taken for a TIME_WAIT fix.
    for ns in &rec.namespaces {
        let Some(fin) = ns.sysctls.as_ref().and_then(|s| s.tcp_fin_timeout) else { continue };
        let busy = r.namespaces.iter().any(|v| v.netns == ns.netns && saw_time_wait(v));
        if fin < 60 && busy {
            let mut f = Finding::new(
                Severity::Info,
                Kind::FinTimeoutLowered,
                format!(
                    "Namespace {} has tcp_fin_timeout {fin} s: that shortens only orphaned FIN_WAIT2 sockets, not \
                     TIME_WAIT (always 60 s); it fixes nothing about TIME_WAIT sockets.",
                    ns.name
                ),
            );
            f.place.namespace = Some(ns.name.clone());
            out.push(f);
        }
    }
    buckets(r, out);
    if r.timewait.peak > 0 {
        if let Some(top) = r.timewait.by_remote_at_peak.first() {
            out.push(Finding::new(
                Severity::Info,
                Kind::TimeWaitPeak,
                format!(
                    "At the TIME_WAIT peak ({}) the largest group was toward {} ({} sockets); by owner: {}.",
                    r.timewait.peak,
                    top.key,
                    top.count,
                    r.timewait
                        .by_owner_at_peak
                        .iter()
                        .take(NAMED)
                        .map(|g| format!("{} {}", g.key, g.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
}

/// Whether a namespace had TIME_WAIT sockets during the run: alive at its end, or finished
/// meanwhile (its `TW` counter: sockets whose TIME_WAIT ran out).
fn saw_time_wait(ns: &NamespaceView) -> bool {
    ns.timewait_live > 0 || counter(ns, "TW") > 0
}

/// `tcp_fin_timeout` where the TIME_WAIT sockets were, read inside each namespace ("tcp_fin_timeout
/// is 10 s in pod-a"), or twtrace's own namespace's when none is known: the figure the user
/// compares the measured lifetimes with is the one of the namespace that holds them.
fn fin_timeouts(r: &Report) -> Option<String> {
    let mut seen: Vec<String> = r
        .namespaces
        .iter()
        .filter(|v| saw_time_wait(v))
        .filter_map(|v| {
            let desc = r.recording.namespaces.iter().find(|d| d.netns == v.netns)?;
            let fin = desc.sysctls.as_ref()?.tcp_fin_timeout?;
            Some(format!("{fin} s in {}", desc.name))
        })
        .collect();
    if seen.is_empty() {
        return r.recording.sysctls.tcp_fin_timeout.map(|f| format!("tcp_fin_timeout is {f} s"));
    }
    let more = seen.len().saturating_sub(NAMED);
    seen.truncate(NAMED);
    let etc = if more > 0 { format!(" and {more} more") } else { String::new() };
    Some(format!("tcp_fin_timeout is {}{etc}", seen.join(", ")))
}

fn counter(ns: &NamespaceView, name: &str) -> i64 {
    ns.counters.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v)
}

fn buckets(r: &Report, out: &mut Vec<Finding>) {
    let mut reported = false;
    for ns in &r.namespaces {
        let overflow = counter(ns, "TCPTimeWaitOverflow");
        let near =
            ns.max_tw_buckets.is_some_and(|max| max > 0 && ns.timewait_live as f64 >= BUCKETS_NEAR_LIMIT * max as f64);
        if overflow <= 0 && !near {
            continue;
        }
        reported = true;
        let max = ns.max_tw_buckets.map_or("?".into(), |m| m.to_string());
        let mut f = Finding::new(
            if overflow > 0 { Severity::Critical } else { Severity::Warning },
            Kind::TimeWaitBuckets,
            format!(
                "Namespace {} holds {} TIME_WAIT sockets against tcp_max_tw_buckets {max}{}: beyond it the kernel \
                 skips TIME_WAIT (a late segment of an old connection can then corrupt a new one).",
                ns.name,
                ns.timewait_live,
                if overflow > 0 {
                    format!(", and skipped it {overflow} times (TCPTimeWaitOverflow)")
                } else {
                    String::new()
                }
            ),
        );
        f.place.namespace = Some(ns.name.clone());
        let mut sockets = vec![fig("timewait", ns.timewait_live as f64, "sockets")];
        sockets.extend(ns.max_tw_buckets.map(|m| fig("tcp_max_tw_buckets", m as f64, "sockets")));
        f.evidence = vec![
            ev(format!("TIME_WAIT {} of {max}", ns.timewait_live), sockets),
            ev(format!("TCPTimeWaitOverflow +{overflow}"), vec![fig("TCPTimeWaitOverflow", overflow as f64, "count")]),
        ];
        f.remedies = remedies::timewait_buckets(&ns.name);
        f.verify = Some(remedies::verify::timewait_buckets(&in_namespace(&ns.name)));
        out.push(f);
    }
    // Recordings without namespace views: the one traced namespace.
    if let (false, Some(max), peak) = (reported, r.timewait.max_buckets, r.timewait.peak) {
        if max > 0 && peak as f64 >= BUCKETS_NEAR_LIMIT * max as f64 {
            out.push(Finding::new(
                Severity::Warning,
                Kind::TimeWaitBuckets,
                format!(
                    "TIME_WAIT peaked at {peak}, {:.0}% of tcp_max_tw_buckets ({max}): beyond it the kernel skips \
                     TIME_WAIT and counts TCPTimeWaitOverflow.",
                    peak as f64 / max as f64 * 100.0
                ),
            ));
        }
    }
}

/// Whether `release` (e.g. `6.12.57+deb13-cloud-amd64`) is at least `major.minor`.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

fn settings(r: &Report, out: &mut Vec<Finding>) {
    for desc in &r.recording.namespaces {
        let Some(s) = &desc.sysctls else { continue };
        let view = r.namespaces.iter().find(|v| v.netns == desc.netns);
        let connects = r.destinations.iter().any(|d| d.destination.netns == desc.netns);
        if s.tcp_timestamps == Some(0) && (connects || view.is_some_and(|v| v.timewait_live > 0)) {
            let mut f = Finding::new(
                Severity::Warning,
                Kind::TimestampsOff,
                format!(
                    "TCP timestamps are off in namespace {}: PAWS cannot protect reused 4-tuples, and tcp_tw_reuse \
                     cannot reuse a TIME_WAIT port (it needs timestamps on both sides).",
                    desc.name
                ),
            );
            f.place.namespace = Some(desc.name.clone());
            f.remedies = remedies::timestamps_off(&desc.name);
            out.push(f);
        }
        let accepts_only = !connects && view.is_some_and(|v| v.timewait_live > 0 && v.ports_in_use == 0);
        if s.tcp_tw_reuse == Some(1) && accepts_only {
            let mut f = Finding::new(
                Severity::Info,
                Kind::ReuseOnlyAccepting,
                format!(
                    "tcp_tw_reuse is 1 in namespace {}, which only accepted connections here: reuse applies to \
                     outgoing connect()s only, so it does nothing for these TIME_WAIT sockets.",
                    desc.name
                ),
            );
            f.place.namespace = Some(desc.name.clone());
            out.push(f);
        }
    }
}

#[cfg(test)]
mod tests;
