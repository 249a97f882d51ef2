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
         PAWS drop event for them (kernel 6.12.57+deb13-cloud-amd64 drops these rejects with no PAWS drop reason \
         (NOT_SPECIFIED before 6.16)): no source, flow or NAT signature to show."
    );
    assert!(
        f.text.contains("kernel 6.12.57+deb13-cloud-amd64 drops these rejects with no PAWS drop reason"),
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
                flow: Some(crate::event::SocketFlow { local: local.parse().unwrap(), remote: remote.parse().unwrap() }),
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
    assert_eq!(figures[1]["figures"][0], serde_json::json!({"name": "paws_drop_events", "value": 0, "unit": "events"}));
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

/// docs/kernel-facts.md: one row per kernel fact, with its first release, commit and the
/// files that claim it.
const KERNEL_FACTS: &str = include_str!("../../../docs/kernel-facts.md");

/// Words after which `N.M` is a claim about when the kernel changed ("since 4.18", "Linux
/// 6.3"); `N.M+`, `"title", N.M` and `(N.M)` are claims too.
const CLAIM_WORDS: &[&str] =
    &["since ", "from ", "before ", "until ", "after ", "linux ", "removed in ", "added in ", "came in "];

/// The kernel releases (`major.minor`) that `text` claims something of: "6.16+", "since 4.18",
/// "before 6.14", "Linux 6.3", "removed in 4.12", `"title", 5.18` or "(4.11)". Not a build
/// ("6.12.57+deb13"), a duration ("after 2.5 s") or the kernels a study ran ("from 5.10 to 6.18").
fn version_claims(text: &str) -> Vec<String> {
    // One line, as a reader sees it: Rust's `\` continuations and Markdown's wrapping gone.
    let flat = text.replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ");
    let b = flat.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len() {
        let starts = (b'2'..=b'7').contains(&b[i]) && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.'));
        if !starts || b.get(i + 1) != Some(&b'.') {
            continue;
        }
        let minor = b[i + 2..].iter().take_while(|c| c.is_ascii_digit()).count();
        let j = i + 2 + minor;
        let longer = b.get(j).is_some_and(u8::is_ascii_digit)
            || (b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit));
        if !(1..=2).contains(&minor) || longer {
            continue;
        }
        let (before, after) = (flat[..i].to_lowercase(), &flat[j..]);
        let unit: String = after.trim_start().chars().take_while(|c| c.is_alphabetic() || *c == '%').collect();
        if after.starts_with(' ') && ["s", "ms", "µs", "GiB", "MiB", "%", "x"].contains(&unit.as_str()) {
            continue;
        }
        if before.ends_with("from ") && (after.starts_with(" to ") || after.starts_with('-')) {
            continue;
        }
        let claim = after.starts_with('+')
            || CLAIM_WORDS.iter().any(|w| before.ends_with(w))
            || before.ends_with("\", ")
            || (after.starts_with(')') && (before.ends_with('(') || before.ends_with(", ")));
        if claim {
            out.push(flat[i..j].to_owned());
        }
    }
    out
}

/// The files whose version claims need a row: the findings' sources (what doctor, the
/// remedies and the runbooks say) and the studies, by the name the table's last column uses.
fn claiming_files() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![("findings.rs".to_owned(), root.join("src/findings.rs"))];
    let dirs = [(root.join("src/findings"), "findings", "rs"), (root.join("../docs/studies"), "studies", "md")];
    for (dir, key, ext) in dirs {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The tests hold kernel strings of their own, and this scanner's examples.
            if path.extension().is_some_and(|e| e == ext) && name != "tests.rs" {
                files.push((format!("{key}/{name}"), path));
            }
        }
    }
    files.into_iter().map(|(key, path)| (key, std::fs::read_to_string(&path).unwrap())).collect()
}

/// (first release as `major.minor`, the table row) for each row of docs/kernel-facts.md.
fn kernel_fact_rows() -> Vec<(String, Vec<String>)> {
    KERNEL_FACTS
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| fact |"))
        .map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect();
            assert_eq!(cells.len(), 5, "docs/kernel-facts.md: a row needs 5 cells: {l}");
            // "4.11", or a stable build's "6.18.17 (stable, 2026-03)": its line, 6.18.
            let number: String = cells[1].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let release = number.split('.').take(2).collect::<Vec<_>>().join(".");
            assert!(release.contains('.'), "docs/kernel-facts.md: no release in {l}");
            (release, cells)
        })
        .collect()
}

#[test]
fn version_claims_are_told_from_builds_durations_and_ranges() {
    let found = version_claims(
        "6.16+ and since 4.18, Before\n   6.14 and Linux 6.3, removed in 4.12, \"a title\", 5.18; (4.11) and (Eric \
         Dumazet, 6.8); not 6.12.57+deb13, after 2.5 s, from 5.10 to 6.18, 5.10-6.18, the 6.1 guest, 6.18.15",
    );
    assert_eq!(found, ["6.16", "4.18", "6.14", "6.3", "4.12", "5.18", "4.11", "6.8"]);
}

/// Every version the findings (and so doctor's remedies and the runbooks) or the studies claim
/// has a row in docs/kernel-facts.md that names its commit (or says it is not verified) and
/// lists the file. Remove a row, or claim a release in a finding without adding one, and this
/// fails.
#[test]
fn every_version_claim_has_a_kernel_fact() {
    let rows = kernel_fact_rows();
    let files = claiming_files();
    assert!(files.iter().any(|(k, _)| k == "studies/paws-nat.md") && files.len() >= 12, "{} files", files.len());
    let mut missing = Vec::new();
    for (key, text) in &files {
        for version in version_claims(text) {
            let named = format!("`{key}`");
            if !rows.iter().any(|(release, cells)| *release == version && cells[4].contains(&named)) {
                missing.push(format!("{key}: {version}"));
            }
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "version claims without a row in docs/kernel-facts.md: {missing:?}");
    for (release, cells) in &rows {
        assert!(!cells[2].is_empty() && !cells[3].is_empty(), "{release}: no commit or no check: {cells:?}");
        for used in cells[4].split(", ") {
            let key = used.trim_matches('`');
            assert!(files.iter().any(|(k, _)| k == key), "{release}: `where used` names {key}, not a claiming file");
        }
    }
}
