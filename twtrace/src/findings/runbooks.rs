//! One runbook per kind of finding, for the alerts that page on the same conditions
//! (`deploy/prometheus/twtrace-rules.yml` points each alert's `runbook_url` at one). Written
//! by `twtrace doctor --runbooks DIR` into `docs/runbooks/<kind>.md`, from the same remedies
//! and commands `doctor` prints (with placeholders where doctor names the place), so the page
//! an alert links to never says other than `doctor` does. A unit test keeps the files in the
//! repository equal to what this writes, and every alert's runbook present.

use std::path::{Path, PathBuf};

use super::{Kind, Remedy, remedies, remedies::verify};

/// Placeholders the runbooks print where doctor names the place.
const NAMESPACE: &str = "<namespace>";
const PREFIX: &str = "ip netns exec <namespace> ";

/// Runbooks in `docs/runbooks/` that no finding kind writes: what to do when twtrace itself
/// stops answering, and the index.
pub const HAND_WRITTEN: &[&str] = &["exporter.md"];

impl Kind {
    /// Every kind of finding, in the order `doctor`'s rules look for them.
    pub const ALL: [Kind; 17] = [
        Kind::Damage,
        Kind::Loss,
        Kind::SkippedRuns,
        Kind::ApproximateSearch,
        Kind::PortSpace,
        Kind::ConnectFailures,
        Kind::TimeWaitLifetime,
        Kind::FinTimeoutLowered,
        Kind::TimeWaitBuckets,
        Kind::TimeWaitPeak,
        Kind::Paws,
        Kind::ListenOverflow,
        Kind::Conntrack,
        Kind::NetfilterDrops,
        Kind::TimestampsOff,
        Kind::ReuseOnlyAccepting,
        Kind::Nothing,
    ];

    /// Its name in `doctor --json` (`"kind"`) and its runbook's file name.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Damage => "damage",
            Kind::Loss => "loss",
            Kind::SkippedRuns => "skipped_runs",
            Kind::ApproximateSearch => "approximate_search",
            Kind::PortSpace => "port_space",
            Kind::ConnectFailures => "connect_failures",
            Kind::TimeWaitLifetime => "time_wait_lifetime",
            Kind::FinTimeoutLowered => "fin_timeout_lowered",
            Kind::TimeWaitBuckets => "time_wait_buckets",
            Kind::TimeWaitPeak => "time_wait_peak",
            Kind::Paws => "paws",
            Kind::ListenOverflow => "listen_overflow",
            Kind::Conntrack => "conntrack",
            Kind::NetfilterDrops => "netfilter_drops",
            Kind::TimestampsOff => "timestamps_off",
            Kind::ReuseOnlyAccepting => "reuse_only_accepting",
            Kind::Nothing => "nothing",
        }
    }

    /// A title for its runbook.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Damage => "The recording is damaged or incomplete",
            Kind::Loss => "twtrace lost kernel records",
            Kind::SkippedRuns => "The kernel skipped runs of twtrace's programs",
            Kind::ApproximateSearch => "Port searches timed approximately",
            Kind::PortSpace => "Ephemeral ports running out toward a destination",
            Kind::ConnectFailures => "connect() fails with EADDRNOTAVAIL",
            Kind::TimeWaitLifetime => "TIME_WAIT lasts its fixed 60 s",
            Kind::FinTimeoutLowered => "tcp_fin_timeout lowered, taken for a TIME_WAIT fix",
            Kind::TimeWaitBuckets => "TIME_WAIT sockets at tcp_max_tw_buckets",
            Kind::TimeWaitPeak => "Where the TIME_WAIT peak was",
            Kind::Paws => "Segments dropped by PAWS (TCP timestamps)",
            Kind::ListenOverflow => "A listener's queue overflows",
            Kind::Conntrack => "The connection tracking table is full or nearly",
            Kind::NetfilterDrops => "Netfilter drops connection attempts",
            Kind::TimestampsOff => "TCP timestamps are off",
            Kind::ReuseOnlyAccepting => "tcp_tw_reuse set where it cannot help",
            Kind::Nothing => "Nothing stands out",
        }
    }

    /// When doctor reports it, and how bad it is then.
    fn when(self) -> &'static str {
        match self {
            Kind::Damage => {
                "Warning. A recording (or a flight-recorder segment) ends before its last chunk or holds chunks \
                 that failed their checksum: twtrace was killed, the machine lost power, or the disk filled. \
                 Every figure covers only what could be read."
            }
            Kind::Loss => {
                "Critical. The kernel could not put some events into twtrace's ring buffer because it was \
                 full: every count is a lower bound, and a condition twtrace did not see may be missing. It \
                 heads doctor's list because it qualifies every other finding."
            }
            Kind::SkippedRuns => {
                "Note. The kernel skipped runs of twtrace's BPF programs because another BPF program was already \
                 running on that CPU (a softirq, or a kprobe hit inside one). Up to that many events may be \
                 missing; most of the skipped runs are other sockets' timer filters, so usually fewer."
            }
            Kind::ApproximateSearch => {
                "Note. The port-search family runs on the tracepoint backend, which times a connect() from the \
                 socket's SYN_SENT to its SYN: it includes sending the SYN, has no candidate counts and does \
                 not see bind() searches. The fentry and kprobe backends time the search itself."
            }
            Kind::PortSpace => {
                "Warning from 80 % of the range held toward one destination; critical when the range was full \
                 or connect() failed toward it. Every connection from one local address to one remote endpoint \
                 needs its own local port, from the namespace's `ip_local_port_range`, and a client that closes \
                 first keeps that port in TIME_WAIT for 60 s. When all are held, connect() fails with \
                 EADDRNOTAVAIL. The alerts `TwtracePortRangeExhausted`, `TwtracePortRangeNearlyFull` and \
                 `TwtracePortRangeRunningOut` point here. The first is held back, as doctor's outlook says, \
                 where `tcp_tw_reuse` is 1, timestamps are on and every TIME_WAIT socket toward the \
                 destination had the peer's timestamps: connect() then takes those ports back and does not \
                 fail."
            }
            Kind::ConnectFailures => {
                "Critical. connect() calls found no free local port and returned EADDRNOTAVAIL to the \
                 application: requests failed. doctor names the processes and namespaces; the port-space \
                 finding of the same destination (runbook `port_space.md`) says which range ran out and what to \
                 do. The alert `TwtraceConnectAddrNotAvail` points here."
            }
            Kind::TimeWaitLifetime => {
                "Note. TIME_WAIT sockets lived a median of about 60 s: the kernel's fixed TCP_TIMEWAIT_LEN. \
                 `tcp_fin_timeout` does not change it (it bounds orphaned FIN_WAIT2 sockets only)."
            }
            Kind::FinTimeoutLowered => {
                "Note. A namespace that holds TIME_WAIT sockets has `tcp_fin_timeout` below 60 s. That setting \
                 is often lowered to shorten TIME_WAIT, which it does not do: TIME_WAIT is always 60 s."
            }
            Kind::TimeWaitBuckets => {
                "Warning from 90 % of the namespace's `tcp_max_tw_buckets`; critical once the kernel skipped \
                 TIME_WAIT for want of buckets (`TCPTimeWaitOverflow`, logged as \"time wait bucket table \
                 overflow\"). A connection closed without its TIME_WAIT loses the protection against old \
                 duplicate segments arriving on a new connection with the same 4-tuple. The alerts \
                 `TwtraceTimeWaitBucketOverflow` and `TwtraceTimeWaitNearBucketLimit` point here."
            }
            Kind::TimeWaitPeak => {
                "Note. Where the TIME_WAIT sockets were at their peak: the largest group by remote endpoint, \
                 and by owner."
            }
            Kind::Paws => {
                "Note below 10 drops from no NAT-like source; warning from 10, or from any source with 3 or \
                 more distinct flows dropped (hosts behind NAT whose timestamp clocks differ; or one host alone, \
                 where its kernel hashes the ports into each connection's timestamp offset). PAWS (RFC 7323) \
                 drops a segment whose TCP timestamp is older than the last one seen on the same 4-tuple: a \
                 new connection's SYN meeting a TIME_WAIT socket of another client behind the same address is \
                 dropped, and that client retries and times out. On kernels without the drop reasons (before \
                 6.16 for TIME_WAIT sockets) doctor reports the namespace's PAWS counters instead, without \
                 sources. The alert `TwtracePawsDropsFromOneSource` points here."
            }
            Kind::ListenOverflow => {
                "Critical. A listener's accept queue (connections the application has not accept()ed yet, \
                 `ListenOverflows`) or its SYN queue (`TCPReqQFullDrop`, syncookies off) overflowed: the SYN or \
                 the handshake's last ACK was dropped, and the client waits for a retransmit (1 s, then 3 s). \
                 The alert `TwtraceListenOverflows` points here."
            }
            Kind::Conntrack => {
                "Warning from 90 % of `nf_conntrack_max`; critical once packets were dropped for want of room \
                 (or lost insert races). At the limit the first packet of each new connection is dropped and \
                 connections stall for SYN retries. Each closed connection keeps its entry for \
                 `nf_conntrack_tcp_timeout_time_wait` (120 s), so churn without keep-alive fills the table as it \
                 fills the port range. The alerts `TwtraceConntrackNearlyFull` and `TwtraceConntrackDropping` \
                 point here."
            }
            Kind::NetfilterDrops => {
                "Warning when this host's own connect()s had their SYNs dropped by netfilter; a note when only \
                 received SYNs were (a firewall may mean it). Only SYNs beyond what a full conntrack table \
                 explains count: a rule's `drop`, or a chain's drop policy. The client gets no answer, retries \
                 and times out."
            }
            Kind::TimestampsOff => {
                "Warning. `tcp_timestamps` is 0 in a namespace that makes connections or holds TIME_WAIT \
                 sockets: PAWS cannot protect reused 4-tuples, and `tcp_tw_reuse` cannot reuse a TIME_WAIT port \
                 (it needs timestamps on both sides)."
            }
            Kind::ReuseOnlyAccepting => {
                "Note. `tcp_tw_reuse` is 1 in a namespace that only accepted connections: reuse applies to \
                 outgoing connect()s only, so it does nothing for its TIME_WAIT sockets."
            }
            Kind::Nothing => {
                "OK. No port-space pressure, no PAWS drops, no loss: what doctor says when nothing else does."
            }
        }
    }

    /// The remedies doctor gives, with placeholders for the place.
    fn remedies(self) -> Vec<Remedy> {
        match self {
            Kind::Loss => remedies::loss(),
            Kind::PortSpace => remedies::port_space(
                NAMESPACE,
                "<low>-<high>",
                None,
                "doctor says here whether reuse can work toward this destination, from the timestamps its \
                 TIME_WAIT sockets saw",
            ),
            Kind::TimeWaitBuckets => remedies::timewait_buckets(NAMESPACE),
            Kind::Conntrack => remedies::conntrack(),
            // Sources known; from the counters alone, finding them comes first.
            Kind::Paws => remedies::paws_counted(),
            Kind::ListenOverflow => remedies::listen_overflow(true),
            Kind::NetfilterDrops => remedies::netfilter_drops(),
            Kind::TimestampsOff => remedies::timestamps_off(NAMESPACE),
            Kind::Damage
            | Kind::SkippedRuns
            | Kind::ApproximateSearch
            | Kind::ConnectFailures
            | Kind::TimeWaitLifetime
            | Kind::FinTimeoutLowered
            | Kind::TimeWaitPeak
            | Kind::ReuseOnlyAccepting
            | Kind::Nothing => Vec::new(),
        }
    }

    /// The command doctor gives to see it fixed, with placeholders.
    fn verify(self) -> Option<String> {
        match self {
            Kind::PortSpace => Some(verify::port_space(PREFIX, "<destination>", NAMESPACE)),
            Kind::TimeWaitBuckets => Some(verify::timewait_buckets(PREFIX)),
            Kind::Conntrack => Some(verify::conntrack(PREFIX)),
            Kind::Paws => Some(verify::paws(PREFIX)),
            Kind::ListenOverflow => Some(verify::listen_overflow(PREFIX)),
            Kind::NetfilterDrops => Some(verify::netfilter_drops(PREFIX)),
            _ => None,
        }
    }

    /// Where to read on when doctor gives no remedy of its own.
    fn see_also(self) -> Option<&'static str> {
        match self {
            Kind::ConnectFailures => Some("port_space.md: the range that ran out, and what to do about it."),
            Kind::Damage => Some("../recording.md: what a reader keeps of a cut file."),
            Kind::SkippedRuns | Kind::ApproximateSearch => {
                Some("../kernels.md, \"Known issues\": which backends miss what, on which kernels.")
            }
            Kind::TimeWaitLifetime | Kind::FinTimeoutLowered | Kind::TimeWaitPeak => {
                Some("time_wait_buckets.md and port_space.md: when the TIME_WAIT population does hurt.")
            }
            Kind::ReuseOnlyAccepting => Some("port_space.md: where tcp_tw_reuse does help (outgoing connections)."),
            _ => None,
        }
    }
}

/// The runbook of `kind`, as Markdown.
pub fn runbook(kind: Kind) -> String {
    let mut out = format!("# {}\n\n", kind.title());
    out.push_str(&format!(
        "<!-- Written by `twtrace doctor --runbooks docs/runbooks` from twtrace/src/findings/: change the text \
         there, then run that again. -->\n\nFinding kind `{}` (`\"kind\": \"{}\"` in `twtrace doctor --json`).\n\n",
        kind.slug(),
        kind.slug()
    ));
    out.push_str("## What it means\n\n");
    out.push_str(kind.when());
    out.push_str("\n\n## Confirm\n\n");
    out.push_str(
        "Watch the node for ten seconds and read the finding with its evidence, on the node itself or in \
         twtrace's pod there (`--netns` narrows it to one network namespace):\n\n```sh\ntwtrace doctor \
         --duration 10s\nkubectl -n twtrace exec twtrace-XXXXX -- /twtrace doctor --duration 10s\n```\n",
    );
    if let Some(cmd) = kind.verify() {
        out.push_str(&format!(
            "\nThe command doctor gives to see it fixed (`{NAMESPACE}` is the network namespace's name; for a \
             pod, its `cni-...` name under /run/netns, the `netns_name` label of the alert's series):\n\n```sh\n{cmd}\n```\n"
        ));
    }
    let remedies = kind.remedies();
    if remedies.is_empty() {
        out.push_str("\n## What to do\n\ndoctor gives no remedy for this finding itself.");
        if let Some(see) = kind.see_also() {
            out.push_str(&format!(" See {see}"));
        }
        out.push('\n');
    } else {
        out.push_str("\n## What to do, most preferable first\n\n");
        for (i, r) in remedies.iter().enumerate() {
            let needs = r.needs.as_ref().map(|n| format!(" Needs: {n}.")).unwrap_or_default();
            let item = format!("{}. {}. Cost: {}.{needs}", i + 1, capitalise(&r.action), r.tradeoff);
            out.push_str(&item);
            out.push('\n');
        }
        if let Some(see) = kind.see_also() {
            out.push_str(&format!("\nSee also {see}\n"));
        }
    }
    out
}

/// Writes every kind's runbook into `dir` (created if need be); returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    Kind::ALL
        .iter()
        .map(|kind| {
            let path = dir.join(format!("{}.md", kind.slug()));
            std::fs::write(&path, runbook(*kind))?;
            Ok(path)
        })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    #[test]
    fn every_kind_once_with_its_json_name() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.slug(), "{kind:?}");
            assert!(!Kind::ALL[..i].contains(kind), "{kind:?} twice");
        }
    }

    /// docs/runbooks holds exactly what `doctor --runbooks` writes (plus the hand-written
    /// ones). After changing a finding's text: `twtrace doctor --runbooks docs/runbooks`.
    #[test]
    fn the_runbooks_in_the_repository_are_current() {
        let dir = Path::new(ROOT).join("docs/runbooks");
        for kind in Kind::ALL {
            let path = dir.join(format!("{}.md", kind.slug()));
            let found = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                found == runbook(kind),
                "{} is not what `twtrace doctor --runbooks docs/runbooks` writes: run it",
                path.display()
            );
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let generated = Kind::ALL.iter().any(|k| name == format!("{}.md", k.slug()));
            assert!(generated || HAND_WRITTEN.contains(&name.as_str()), "{name}: neither generated nor listed");
        }
    }

    /// Every alert waits (`for:`) and names a runbook that exists.
    #[test]
    fn every_alert_has_a_for_and_a_runbook_that_exists() {
        let path = Path::new(ROOT).join("deploy/prometheus/twtrace-rules.yml");
        let rules: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut alerts = 0;
        for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
            let Some(name) = rule["alert"].as_str() else { continue };
            alerts += 1;
            assert!(rule["for"].as_str().is_some_and(|f| f != "0s" && f != "0m"), "{name}: no `for:`");
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
            let (_, file) = url.split_once("/docs/runbooks/").unwrap_or_else(|| panic!("{name}: {url}"));
            assert!(Path::new(ROOT).join("docs/runbooks").join(file).is_file(), "{name}: {url} does not exist");
        }
        assert!(alerts >= 10, "{alerts} alerts");
    }

    #[test]
    fn a_runbook_carries_doctors_remedies() {
        let text = runbook(Kind::PortSpace);
        assert!(text.starts_with("# Ephemeral ports running out toward a destination\n"), "{text}");
        assert!(text.contains("Widen ip_local_port_range in namespace <namespace> (now <low>-<high>"), "{text}");
        assert!(text.contains("ip netns exec <namespace> ss -Htan dst <destination>"), "{text}");
    }
}
