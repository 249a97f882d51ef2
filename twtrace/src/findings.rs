//! Findings: the conclusions a person paged about an incident should read first, each with
//! its evidence in the text. Rules over the report model with named thresholds; `report`
//! prints them first, and `doctor` will grow from here.

use crate::report::Report;

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
/// A PAWS source with at least this many distinct flows looks like hosts behind NAT.
pub const NAT_FLOWS: u64 = 2;
/// How many processes, sources or groups a finding names.
const NAMED: usize = 3;

/// What a finding is about; its text says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Damage,
    Loss,
    SkippedRuns,
    PortSpace,
    ConnectFailures,
    TimeWaitLifetime,
    TimeWaitBuckets,
    TimeWaitPeak,
    Paws,
    Nothing,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub text: String,
}

impl Finding {
    fn new(kind: Kind, text: String) -> Self {
        Self { kind, text }
    }
}

/// The findings of a report, most important first.
pub fn of(r: &Report) -> Vec<Finding> {
    let mut out = Vec::new();
    let rec = &r.recording;
    if !rec.complete || !rec.damage.is_empty() {
        out.push(Finding::new(
            Kind::Damage,
            format!(
                "The recording is incomplete or damaged ({} problem(s), listed below): figures cover only what could be read.",
                rec.damage.len()
            ),
        ));
    }
    if rec.lost > 0 {
        out.push(Finding::new(
            Kind::Loss,
            format!(
                "{} events were lost in the kernel (ring buffer full): counts below are lower bounds. Record with a larger --ring-buffer-size.",
                rec.lost
            ),
        ));
    }
    let skipped = rec.skipped_runs;
    if skipped > 0 {
        out.push(Finding::new(
            Kind::SkippedRuns,
            format!(
                "The kernel skipped {skipped} runs of twtrace's programs (a softirq or kprobe hit them while a BPF program \
                 was already running on that CPU): up to {skipped} events may be missing, most likely fewer."
            ),
        ));
    }
    for d in r.destinations.iter().filter(|d| d.peak_utilisation >= PORT_SPACE_PEAK) {
        let (lo, hi) = d.port_range;
        out.push(Finding::new(
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
        ));
    }
    let failed: u64 = r.failures.iter().filter(|f| f.error == "EADDRNOTAVAIL").map(|f| f.count).sum();
    if failed > 0 {
        let who: Vec<String> = r.failures.iter().take(NAMED).map(|f| format!("{} x{}", f.process, f.count)).collect();
        out.push(Finding::new(
            Kind::ConnectFailures,
            format!("{failed} connect() calls found no free local port (EADDRNOTAVAIL): {}.", who.join(", ")),
        ));
    }
    if let Some(p50) = r.timewait.lifetime_p50_ms {
        if (p50 - TIMEWAIT_LEN_MS).abs() <= TIMEWAIT_LEN_SLACK_MS {
            let fin = rec.sysctls.tcp_fin_timeout.map(|f| format!(" (tcp_fin_timeout is {f} s)")).unwrap_or_default();
            out.push(Finding::new(
                Kind::TimeWaitLifetime,
                format!(
                    "TIME_WAIT sockets lived {:.1} s (median): that is the kernel's fixed TCP_TIMEWAIT_LEN of 60 s; \
                     tcp_fin_timeout{fin} does not shorten it, it only bounds orphaned FIN_WAIT2 sockets.",
                    p50 / 1e3
                ),
            ));
        }
    }
    if let (Some(max), peak) = (r.timewait.max_buckets, r.timewait.peak) {
        if max > 0 && peak as f64 >= BUCKETS_NEAR_LIMIT * max as f64 {
            out.push(Finding::new(
                Kind::TimeWaitBuckets,
                format!(
                    "TIME_WAIT peaked at {peak}, {:.0}% of tcp_max_tw_buckets ({max}): beyond it the kernel skips \
                     TIME_WAIT and counts TCPTimeWaitOverflow.",
                    peak as f64 / max as f64 * 100.0
                ),
            ));
        }
    }
    if r.timewait.peak > 0 {
        if let Some(top) = r.timewait.by_remote_at_peak.first() {
            out.push(Finding::new(
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
    if r.paws.drops > 0 {
        let nat: Vec<_> = r.paws.sources.iter().filter(|s| s.flows >= NAT_FLOWS).collect();
        let reasons: Vec<String> = r.paws.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push(Finding::new(
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
        ));
    }
    if out.is_empty() {
        out.push(Finding::new(
            Kind::Nothing,
            "Nothing stands out: no port-space pressure, no PAWS drops, no loss.".into(),
        ));
    }
    out
}
