//! Findings: what is wrong, where, the evidence as measured figures, what to do about it (in
//! order of preference, with the trade-offs and the kernels each remedy needs) and the
//! command that shows it fixed. Rules over the report model with named thresholds; `report`
//! prints their headlines first and `doctor` prints them whole, so the two never disagree.

use serde::Serialize;

use crate::{
    aggregate::{NamespaceView, SetupDropView},
    event::DropClass,
    kernel::netstat::{LISTEN_DROPS, LISTEN_OVERFLOWS, SYN_QUEUE_FULL_COOKIES, SYN_QUEUE_FULL_DROP},
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
/// `tcp_tw_recycle` was removed in 4.12 (it broke clients behind NAT).
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

/// One measured figure behind a finding: a number and its unit (`ports`, `calls`, `sockets`,
/// `segments`, `flows`, `entries`, `packets`, `events`, `records`, `percent`, `s`, `us`;
/// `count` for a rise of a kernel counter, named as the kernel names it; `setting` for a
/// sysctl's value).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// Integral values as JSON integers (`100`, not `100.0`), the rest as they are.
impl Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("Figure", 3)?;
        out.serialize_field("name", &self.name)?;
        if self.value.fract() == 0.0 && self.value.abs() < 9.0e15 {
            out.serialize_field("value", &(self.value as i64))?;
        } else {
            out.serialize_field("value", &self.value)?;
        }
        out.serialize_field("unit", self.unit)?;
        out.end()
    }
}

fn fig(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
    Figure { name: name.into(), value, unit }
}

/// One line of evidence: the sentence people read, and the figures in it for tools.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    pub text: String,
    pub figures: Vec<Figure>,
}

fn ev(text: String, figures: Vec<Figure>) -> Evidence {
    Evidence { text, figures }
}

/// A sentence with no figure to give apart (a damaged chunk's description).
impl From<String> for Evidence {
    fn from(text: String) -> Self {
        Self { text, figures: Vec::new() }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for Evidence {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// A counter's rise as evidence: `PAWSEstab +12`.
fn counter_rise(name: &str, rise: i64) -> Evidence {
    ev(format!("{name} {rise:+}"), vec![fig(name, rise as f64, "count")])
}

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

/// In JSON: `evidence` the sentences, as before; `evidence_figures` the same lines with their
/// figures as numbers and units (doctor's schema version 2, docs/schemas/doctor.json).
impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            severity: Severity,
            kind: Kind,
            text: &'a str,
            place: &'a Where,
            evidence: Vec<&'a str>,
            evidence_figures: &'a [Evidence],
            remedies: &'a [Remedy],
            #[serde(skip_serializing_if = "Option::is_none")]
            verify: Option<&'a str>,
        }
        Json {
            severity: self.severity,
            kind: self.kind,
            text: &self.text,
            place: &self.place,
            evidence: self.evidence.iter().map(|e| e.text.as_str()).collect(),
            evidence_figures: &self.evidence,
            remedies: &self.remedies,
            verify: self.verify.as_deref(),
        }
        .serialize(s)
    }
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

/// `ip netns exec NAME ` for a namespace known by an `ip netns` name; empty for the host's.
fn in_namespace(name: &str) -> String {
    match name {
        "host" => String::new(),
        n if !n.contains(' ') && !n.contains(':') && n.parse::<u32>().is_err() => format!("ip netns exec {n} "),
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
    paws(r, &mut out);
    conntrack(r, &mut out);
    netfilter_drops(r, &mut out);
    listen_queues(r, &mut out);
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
        f.remedies.push(remedy(
            "run twtrace with a larger --ring-buffer-size (a power of two, e.g. 33554432)",
            "more locked kernel memory",
            None,
        ));
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
    f.remedies = vec![
        remedy(
            "reuse connections: HTTP keep-alive or a connection pool toward this destination",
            "none in the kernel; needs the client (and the server's keep-alive timeout) to allow it",
            None,
        ),
        remedy(
            format!("widen ip_local_port_range in namespace {} (now {lo}-{hi}, e.g. 1024-65535)", d.namespace),
            "the range must not cover ports that services listen on (reserve them with ip_local_reserved_ports)",
            None,
        ),
        remedy(
            "spread connections over more destination addresses or ports (each adds a whole range of 4-tuples)",
            "more backends or listeners to run",
            None,
        ),
        remedy(
            "set net.ipv4.tcp_tw_reuse=1 in that namespace: connect() may take a port still in TIME_WAIT toward \
             this destination",
            format!(
                "only for outgoing connections, and only from TIME_WAIT sockets whose peer sent TCP timestamps \
                 (tcp_timestamps on here and at the peer; a load balancer with timestamps off defeats it): {}",
                reuse_outlook(d, timestamps)
            ),
            Some("any kernel; 2 (loopback only) is the default since 4.19"),
        ),
        remedy(
            "if the client bind()s before connect(): set IP_BIND_ADDRESS_NO_PORT on the socket, so the port is \
             chosen per destination at connect()",
            "a code change in the client",
            Some("Linux 4.2+"),
        ),
        remedy(
            "give the client's sockets their own range with the IP_LOCAL_PORT_RANGE socket option",
            "a code change; does not add ports to the namespace",
            Some("Linux 6.3+"),
        ),
    ];
    f.verify = Some(format!(
        "{}ss -Htan dst {} | wc -l   # ports held toward it; or twtrace top --netns {}",
        in_namespace(&d.namespace),
        d.destination.remote,
        d.namespace
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
        f.remedies = vec![
            remedy("make fewer connections: keep-alive or pooling", "none in the kernel", None),
            remedy(
                format!("raise tcp_max_tw_buckets in namespace {}", ns.name),
                "about 200 bytes of kernel memory per TIME_WAIT socket",
                Some("per namespace since 4.20 (5.x for all settings)"),
            ),
        ];
        f.verify = Some(format!("{}nstat -az TcpExtTCPTimeWaitOverflow", in_namespace(&ns.name)));
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

/// A namespace whose connection tracking table is full (or nearly): netfilter drops the first
/// packet of new connections, which stall for the client's SYN retries (1 s, then 3 s...) and
/// go through at the rate entries expire. A tracked TCP connection keeps its entry for
/// `nf_conntrack_tcp_timeout_time_wait` (120 s) after it closes, so non-keep-alive churn fills
/// the table as it fills the port range.
fn conntrack(r: &Report, out: &mut Vec<Finding>) {
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
        f.remedies = vec![
            remedy(
                "keep connections alive (pooling): each closed connection keeps its entry 120 s \
                 (nf_conntrack_tcp_timeout_time_wait)",
                "application change",
                None,
            ),
            remedy(
                "raise net.netfilter.nf_conntrack_max in the initial namespace",
                "about 300 bytes of kernel memory per entry; one limit for every namespace",
                None,
            ),
            remedy(
                "lower net.netfilter.nf_conntrack_tcp_timeout_time_wait",
                "a late segment of a closed connection may then pass as INVALID or NEW",
                None,
            ),
            remedy(
                "do not track traffic that needs no NAT or stateful rule (nftables `notrack` in a raw-priority chain)",
                "rules that match on ct state stop seeing it",
                None,
            ),
        ];
        f.verify = Some(format!(
            "{}cat /proc/sys/net/netfilter/nf_conntrack_count /proc/sys/net/netfilter/nf_conntrack_max",
            in_namespace(&ns.name)
        ));
        out.push(f);
    }
}

fn paws(r: &Report, out: &mut Vec<Finding>) {
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
                     timestamp clocks differ",
                    nat.len(),
                    nat.iter().take(NAMED).map(|s| s.source.to_string()).collect::<Vec<_>>().join(", ")
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
                format!("{}: {} drops, {} flows", s.source, s.drops, s.flows),
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
    f.remedies = paws_remedies();
    f.verify = Some("nstat -az TcpExtPAWSActive TcpExtPAWSEstab TcpExtPAWSTimewait".into());
    out.push(f);
}

fn paws_remedies() -> Vec<Remedy> {
    vec![
        remedy(
            "make the clients behind one address not reuse 4-tuples quickly (keep-alive, fewer new connections)",
            "client-side change",
            None,
        ),
        remedy(
            "on the server, avoid being the side that closes first for these clients (no server-side TIME_WAIT)",
            "application change",
            None,
        ),
    ]
}

/// PAWS rejects the kernel counted while twtrace saw no drop event: each namespace's own
/// counters are then all there is. Kernel facts: drop reasons (the `reason` of
/// `skb:kfree_skb`) exist from 5.17; `TCP_RFC7323_PAWS` for established sockets came after (6.1
/// has it); a TIME_WAIT socket's PAWS reject had no reason at all (the SYN is answered with an
/// ACK and freed as consumed, counted as `PAWSEstab`) until 6.16 added `TCP_RFC7323_TW_PAWS`
/// and `PAWSTimewait`. The counters say how many and where, never from whom: the NAT
/// signature (many flows from one source) cannot be seen, so only the count sets severity.
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
        format!("kernel {} counts these rejects without a drop reason", rec.kernel)
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
                "{} rejected {total} segments by PAWS ({}), as the kernel counts them. twtrace saw no drop event for \
                 them ({why}): no source, flow or NAT signature to show. Per-source detail needs a kernel that drops \
                 them with a reason: 6.16+ for TIME_WAIT sockets (TCP_RFC7323_TW_PAWS); for established connections \
                 TCP_RFC7323_PAWS (6.1 has it). tcp_timestamps is {}.",
                name.as_ref().map_or("The traced namespace".to_owned(), |n| format!("Namespace {n}")),
                listed.join(", "),
                rec.sysctls.tcp_timestamps.map_or("unknown".into(), |v| v.to_string())
            ),
        );
        f.evidence = counters.iter().map(|(k, v)| counter_rise(k, *v)).collect();
        f.evidence.push(ev(format!("PAWS drop events seen: 0 ({why})"), vec![fig("paws_drop_events", 0.0, "events")]));
        f.remedies = vec![remedy(
            "find the sources with a capture on the server: tcpdump -nv 'tcp[tcpflags] & tcp-syn != 0', looking \
             for one address whose SYNs' TSval goes backwards across ports",
            "manual; a 6.16+ kernel lets twtrace name each drop's source",
            None,
        )];
        f.remedies.extend(paws_remedies());
        f.place.namespace = name.clone();
        f.verify = Some(format!(
            "{}nstat -az TcpExtPAWSActive TcpExtPAWSEstab TcpExtPAWSTimewait",
            name.as_deref().map(in_namespace).unwrap_or_default()
        ));
        out.push(f);
    }
}

/// Packets a namespace's connection tracking dropped: no room for an entry, or a lost insert
/// race.
fn conntrack_dropped(ns: &NamespaceView) -> i64 {
    use crate::kernel::netstat::{CONNTRACK_DROP, CONNTRACK_INSERT_FAILED};
    counter(ns, CONNTRACK_DROP) + counter(ns, CONNTRACK_INSERT_FAILED)
}

/// A namespace's drops of one class, if twtrace saw any.
fn setup_drops(ns: &NamespaceView, class: DropClass) -> Option<&SetupDropView> {
    ns.setup_drops.iter().find(|d| d.class == class)
}

/// "NETFILTER_DROP drop events: 30, 30 of them SYNs (30 sent by this host), to 127.0.0.1:7000 x30"
fn drop_evidence(d: &SetupDropView) -> Evidence {
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
fn netfilter_drops(r: &Report, out: &mut Vec<Finding>) {
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
        f.remedies = vec![
            remedy(
                "find the rule: its packet counter grows with each retry (`nft list ruleset`, `iptables-save -c`)",
                "none",
                None,
            ),
            remedy(
                "where refusing is meant, reject instead of drop (`reject with tcp reset`): clients fail at once",
                "tells a scanner the port is filtered",
                None,
            ),
        ];
        f.verify = Some(format!("{}nft list ruleset | grep -E 'drop|counter'", in_namespace(&ns.name)));
        out.push(f);
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

/// A listener's queues overflowing: the accept queue (connections the application has not
/// accept()ed; `ListenOverflows`) or the SYN queue (handshakes under way, with syncookies off;
/// `TCPReqQFullDrop`). Either way the SYN or the handshake's last ACK is dropped and the
/// client waits for a retransmit. `ListenDrops` counts every such drop, and more.
fn listen_queues(r: &Report, out: &mut Vec<Finding>) {
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
        f.remedies = vec![
            remedy("accept faster: more accepting threads or workers", "application change", None),
            remedy(
                "raise the listen() backlog and net.core.somaxconn (the SYN queue is bounded by the backlog too)",
                "a longer queue hides a slow acceptor for longer",
                None,
            ),
        ];
        if syn_queue > 0 {
            f.remedies.push(remedy(
                "set net.ipv4.tcp_syncookies=1 (the default): a full SYN queue then answers with cookies instead of \
                 dropping",
                "a connection made by cookie loses the TCP options the SYN-ACK could not carry (window scaling \
                 without timestamps)",
                None,
            ));
        }
        f.verify = Some(format!(
            "{}nstat -az TcpExtListenOverflows TcpExtListenDrops TcpExtTCPReqQFullDrop; ss -Hltn   # Recv-Q \
             against Send-Q (the backlog)",
            in_namespace(&ns.name)
        ));
        out.push(f);
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
            f.remedies = vec![remedy(
                format!("set net.ipv4.tcp_timestamps=1 in namespace {}", desc.name),
                "12 bytes of options per segment",
                None,
            )];
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
mod tests {
    use super::*;
    use crate::{
        aggregate::{Aggregator, Settings},
        event::{Event, NamespaceDescription, NetstatEvent, Sysctls},
        probes::{Backend, Family, FamilyReport},
        source::Health,
        source_info::SourceInfo,
    };

    const S: u64 = 1_000_000_000;

    /// The findings of a live model in which namespace `pod-a` (netns 2) counted `deltas`, and
    /// twtrace saw no drop event; `drops` on the tracepoint backend, or not running.
    fn counted(kernel: &str, drops_running: bool, deltas: &[(&str, i64)]) -> Vec<Finding> {
        counted_with(kernel, drops_running, deltas, &[])
    }

    /// [`counted`], and `events` seen in the namespace besides.
    fn counted_with(kernel: &str, drops_running: bool, deltas: &[(&str, i64)], events: &[Event]) -> Vec<Finding> {
        let mut model = Aggregator::new(Settings { port_range: (32_768, 60_999), max_tw_buckets: None, top: 10 });
        let sysctls = Sysctls { tcp_timestamps: Some(1), ..Sysctls::default() };
        model.describe(&NamespaceDescription { netns: 2, name: "pod-a".into(), sysctls: Some(sysctls), live: true });
        model.apply(&Event::Netstat(NetstatEvent {
            ts_ns: 101 * S,
            netns: 2,
            deltas: deltas.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }));
        events.iter().for_each(|e| model.apply(e));
        model.advance(102 * S);
        let mut info = SourceInfo::for_tests(kernel);
        info.backends = vec![FamilyReport {
            family: Family::Drops,
            running: drops_running.then_some(Backend::Tracepoint),
            hooks: Vec::new(),
            attempts: Vec::new(),
            blind_spots: None,
        }];
        let snap = model.snapshot(102 * S);
        of(&crate::report::live(&model, &snap, &info, &Health::default()))
    }

    /// A 6.12 kernel: TIME_WAIT PAWS rejects count PAWSEstab and have no drop reason. The
    /// finding names the namespace and the counter rise, says there is no per-source detail
    /// and which kernel gives it; twelve rejects are a warning, as twelve drop events are.
    #[test]
    fn paws_counters_without_drop_events_are_named_per_namespace() {
        let found = counted("6.12.57+deb13-cloud-amd64", true, &[("PAWSEstab", 12), ("PAWSActive", 0), ("TW", 40)]);
        let f = found.iter().find(|f| f.kind == Kind::Paws).expect("a PAWS finding");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.place.namespace.as_deref(), Some("pod-a"));
        // The pane's headline runs into the next sentence (it starts in lower case): what is missing.
        assert_eq!(
            f.headline(),
            "Namespace pod-a rejected 12 segments by PAWS (PAWSEstab +12), as the kernel counts them. twtrace saw no \
             drop event for them (kernel 6.12.57+deb13-cloud-amd64 counts these rejects without a drop reason): no \
             source, flow or NAT signature to show."
        );
        assert!(
            f.text.contains("kernel 6.12.57+deb13-cloud-amd64 counts these rejects without a drop reason"),
            "{}",
            f.text
        );
        assert!(f.text.contains("no source, flow or NAT signature") && f.text.contains("6.16+"), "{}", f.text);
        assert!(f.text.ends_with("tcp_timestamps is unknown."), "the traced namespace's setting: {}", f.text);
        assert_eq!(f.evidence[0], "PAWSEstab +12");
        assert_eq!(
            f.verify.as_deref(),
            Some("ip netns exec pod-a nstat -az TcpExtPAWSActive TcpExtPAWSEstab TcpExtPAWSTimewait")
        );
        // Fewer than PAWS_WARN_DROPS is a note; with the drops family off, the text says so.
        let found = counted("5.10.0-35-cloud-amd64", false, &[("PAWSEstab", 3), ("PAWSActive", 1)]);
        let f = found.iter().find(|f| f.kind == Kind::Paws).unwrap();
        assert_eq!(f.severity, Severity::Info);
        assert!(f.headline().contains("rejected 4 segments by PAWS (PAWSActive +1, PAWSEstab +3)"), "{}", f.text);
        assert!(f.text.contains("twtrace's drops family is not running"), "{}", f.text);
        // No PAWS counter rose: no finding.
        assert!(counted("6.12.57", true, &[("TW", 40)]).iter().all(|f| f.kind != Kind::Paws));
    }

    /// `n` SYNs netfilter dropped in pod-a (netns 2), sent by this host toward 10.0.0.9:5432
    /// or received on 10.0.0.1:8080.
    fn netfilter_syns(n: u16, sent: bool) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let (local, remote) = if sent {
                    (format!("10.0.0.1:{}", 40_000 + i), "10.0.0.9:5432".to_owned())
                } else {
                    ("10.0.0.1:8080".to_owned(), format!("192.0.2.1:{}", 40_000 + i))
                };
                Event::Drop(crate::event::DropEvent {
                    ts_ns: 101 * S,
                    reason: "NETFILTER_DROP".into(),
                    reason_code: 14,
                    netns: 2,
                    flow: Some(crate::event::SocketFlow {
                        local: local.parse().unwrap(),
                        remote: remote.parse().unwrap(),
                    }),
                    tcp_flags: crate::event::TCP_FLAG_SYN,
                    seq: 1,
                    ack_seq: 0,
                    outgoing: sent,
                })
            })
            .collect()
    }

    /// SYNs netfilter dropped beyond what conntrack dropped for want of room: a rule. This
    /// host's own connect()s dropped are a warning; received SYNs dropped a note (a firewall
    /// may mean it). Within conntrack's own count they are its finding's evidence instead.
    #[test]
    fn netfilter_drops_of_syns_are_a_rule_unless_conntrack_counted_them() {
        let found = counted_with("6.18.4", true, &[], &netfilter_syns(3, true));
        let f = found.iter().find(|f| f.kind == Kind::NetfilterDrops).expect("a netfilter finding");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.headline(),
            "Netfilter dropped 3 connection attempts (SYNs) in namespace pod-a, 3 of them this host's own connect()s."
        );
        assert_eq!(f.place.destination.as_deref(), Some("10.0.0.9:5432"));
        assert_eq!(
            f.evidence,
            ["NETFILTER_DROP drop events: 3, 3 of them SYNs (3 sent by this host), to 10.0.0.9:5432 x3"]
        );

        let found = counted_with("6.18.4", true, &[], &netfilter_syns(2, false));
        let f = found.iter().find(|f| f.kind == Kind::NetfilterDrops).unwrap();
        assert_eq!(f.severity, Severity::Info, "received SYNs dropped: a firewall may mean it");
        assert_eq!(f.place.destination.as_deref(), Some("10.0.0.1:8080"));

        let full = [("ConntrackDrop", 3), ("ConntrackCount", 50), ("ConntrackMax", 50)];
        let found = counted_with("6.18.4", true, &full, &netfilter_syns(3, true));
        assert!(found.iter().all(|f| f.kind != Kind::NetfilterDrops), "conntrack dropped them: {found:#?}");
        let f = found.iter().find(|f| f.kind == Kind::Conntrack).unwrap();
        assert_eq!(
            f.evidence.last().map(|e| e.text.as_str()),
            Some("NETFILTER_DROP drop events: 3, 3 of them SYNs (3 sent by this host), to 10.0.0.9:5432 x3")
        );
    }

    /// In JSON each finding gives its evidence twice: the sentences as before, and the same
    /// lines with their figures as numbers (integers as integers) and units.
    #[test]
    fn evidence_serialises_as_sentences_and_as_figures_in_the_same_order() {
        let found = counted("6.12.57", true, &[("PAWSEstab", 12)]);
        let f = found.iter().find(|f| f.kind == Kind::Paws).unwrap();
        let v = serde_json::to_value(f).unwrap();
        let sentences: Vec<&str> = v["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert_eq!(sentences[0], "PAWSEstab +12");
        let figures = &v["evidence_figures"];
        assert_eq!(figures.as_array().unwrap().len(), sentences.len());
        assert_eq!(
            figures[0],
            serde_json::json!({"text": "PAWSEstab +12", "figures": [
            {"name": "PAWSEstab", "value": 12, "unit": "count"}]})
        );
        assert_eq!(
            figures[1]["figures"][0],
            serde_json::json!({"name": "paws_drop_events", "value": 0, "unit": "events"})
        );
        let p99 = Figure { name: "search_p99".into(), value: 111.6, unit: "us" };
        assert_eq!(serde_json::to_value(&p99).unwrap()["value"], 111.6);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.12.57+deb13-cloud-amd64", (4, 12)));
        assert!(kernel_at_least("4.12.0", (4, 12)));
        assert!(!kernel_at_least("4.9.337", (4, 12)));
        assert!(!kernel_at_least("?", (4, 12)));
    }

    #[test]
    fn a_headline_is_the_first_sentence() {
        let f = |text: &str| Finding::new(Severity::Info, Kind::Nothing, text.into());
        let port = f("Port space toward 10.0.0.9:80 in namespace pod a.b peaked at 100% (e.g. 51): connect() fails \
                      when full. Reuse connections.");
        assert_eq!(
            port.headline(),
            "Port space toward 10.0.0.9:80 in namespace pod a.b peaked at 100% (e.g. 51): connect() fails when full."
        );
        assert_eq!(f("3 connect() calls failed: curl x3.").headline(), "3 connect() calls failed: curl x3.");
        assert_eq!(f("no end").headline(), "no end");
    }

    #[test]
    fn severities_order_worst_last() {
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
        assert_eq!(worst(&[]), Severity::Ok);
    }
}
