//! A container host in small: several network namespaces, each with its own port range and
//! TIME_WAIT bucket limit, churning at once, and twtrace in the root namespace watching all
//! of them. Each namespace's rows must match `ss` run inside it, against its own range; the
//! exhausted one comes first with the EADDRNOTAVAIL count its client saw. Namespaces that
//! appear or go away mid-run are picked up and retired without error.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{Netns, can_trace};

/// The churn's server, in every namespace: outside every ephemeral range used here.
const SERVER: &str = support::CHURN_SERVER;
/// A second destination, for the sockets that exist before twtrace starts.
const EARLIER: &str = "127.0.0.1:7001";
/// Connections toward it closed by the client before the start: TIME_WAIT, which a slow guest's
/// start can outlive (CI's 6.1 guest once took over 60 s from their birth to the first report).
const EARLIER_CONNECTIONS: usize = 5;
/// Connections toward it held open through the whole run: a count that cannot expire.
const EARLIER_OPEN: usize = 3;

struct Pod {
    ns: Netns,
    range: (u16, u16),
    buckets: u64,
}

impl Pod {
    fn new(tag: &str, range: (u16, u16), buckets: u64) -> Self {
        let ns = Netns::new(tag);
        ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", range.0, range.1));
        ns.sysctl("net.ipv4.tcp_max_tw_buckets", &buckets.to_string());
        // Every closed connection keeps its port for 60 s (the 5.10 default; 2 on loopback
        // since 5.11 would reuse them).
        ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
        Self { ns, range, buckets }
    }

    fn size(&self) -> u64 {
        u64::from(self.range.1 - self.range.0) + 1
    }

    /// Ports of the range held toward `dest`, as `ss` in the namespace counts them.
    fn ports_to(&self, dest: &str) -> u64 {
        self.ns.ports_to(dest, self.range).len() as u64
    }
}

/// `twtrace` with `args` in the root namespace, started (its ready line read).
fn start(args: &[&str]) -> std::process::Child {
    let tag = format!("twtrace {}", args[0]);
    let started = support::started(support::twtrace_cmd(args).stdout(Stdio::piped()), &tag)
        .unwrap_or_else(|said| panic!("{tag} did not start: {said}"));
    let support::Started { child, stderr, .. } = started;
    // Anything it says from now on is kept: a namespace that vanished must not make it complain.
    let first = args[0].to_owned();
    let said = std::thread::spawn(move || {
        let lines: Vec<String> = stderr.map_while(Result::ok).collect();
        for l in &lines {
            eprintln!("[twtrace {first}] {l}");
        }
        lines
    });
    STDERR.with(|s| s.borrow_mut().push(said));
    child
}

thread_local! {
    static STDERR: std::cell::RefCell<Vec<std::thread::JoinHandle<Vec<String>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// The row of `dest` in namespace `netns` among a report's destinations.
fn row<'a>(rows: &'a [Value], netns: u64, dest: &str) -> Option<&'a Value> {
    rows.iter().find(|d| d["netns"] == netns && d["remote"] == dest)
}

/// The exhausted namespace's row is at the top: nothing on the host is fuller, and it comes
/// before the other namespaces' rows. (The VM matrix runs this test once per backend at the
/// same time: another run's exhausted namespace may tie with ours, so ties are allowed; and
/// `blind` events may have been missed.)
fn assert_exhausted_first(rows: &[Value], inodes: &[u64], blind: u64, percent: f64, what: &str) {
    let utilisation = |d: &Value| d["utilisation"].as_f64().or(d["peak_utilisation"].as_f64()).unwrap();
    let at = |inode: u64| rows.iter().position(|d| d["netns"] == inode && d["remote"] == SERVER).unwrap();
    let top = &rows[at(inodes[0])];
    // Full: within the tolerance of every count here, or what twtrace says it may have missed.
    assert!(utilisation(top) >= 1.0 - percent - blind as f64 / 100.0, "{what}: full ({blind} missed?): {top}");
    // Sorted by utilisation: only rows as full come before it (another run's full namespace).
    assert!(rows[..at(inodes[0])].iter().all(|d| utilisation(d) >= utilisation(top)), "{what}: {rows:#?}");
    assert!(at(inodes[0]) < at(inodes[1]) && at(inodes[0]) < at(inodes[2]), "{what}: {rows:#?}");
}

/// What a recording says of namespace `inode` (as the report ends up knowing it, and each
/// description in the stream), for a failure's message.
fn namespace_records(path: &std::path::Path, inode: u64) -> String {
    let header =
        support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(["report", "--json", "--top", "1"]).arg(path));
    let header: Value = serde_json::from_slice(&header.stdout).unwrap_or_default();
    let described = header["recording"]["namespaces"].as_array().cloned().unwrap_or_default();
    let known: Vec<&Value> = described.iter().filter(|n| n["netns"] == inode).collect();
    let stream =
        support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(["trace", "--json", "--replay"]).arg(path));
    let needle = format!("\"netns\":{inode}");
    let in_stream: Vec<String> = String::from_utf8_lossy(&stream.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"namespace\"") && l.contains(&needle))
        .map(str::to_owned)
        .collect();
    format!("as the report knows it: {known:?}\nin the stream: {in_stream:#?}")
}

#[test]
fn each_namespace_against_its_own_range_and_the_exhausted_one_first() {
    if !can_trace() {
        return;
    }
    // 100 ports, 1,000 ports and the default range, each with its own bucket limit.
    let pods = [
        Pod::new("pod100", (40_000, 40_099), 5_000),
        Pod::new("pod1000", (41_000, 41_999), 20_000),
        Pod::new("podwide", (32_768, 60_999), 100_000),
    ];
    // Sockets that exist before twtrace starts, toward another port: client-side TIME_WAIT, and
    // connections held open (client and server ends, kept to the end of the test).
    let _held: Vec<_> = pods
        .iter()
        .map(|pod| {
            pod.ns.run(|| {
                let listener = TcpListener::bind(EARLIER).unwrap();
                support::client_closes_first(&listener, EARLIER_CONNECTIONS);
                let open: Vec<_> = (0..EARLIER_OPEN)
                    .map(|_| (std::net::TcpStream::connect(EARLIER).unwrap(), listener.accept().unwrap().0))
                    .collect();
                (listener, open)
            })
        })
        .collect();
    let doomed = Netns::new("poddoomed");
    doomed.run(|| support::client_closes_first(&TcpListener::bind(EARLIER).unwrap(), 3));
    let inodes: Vec<u64> = pods.iter().map(|p| support::netns_inode(&p.ns.name)).collect();
    // What ss sees of them before twtrace starts and once it has: twtrace reads them in between,
    // and no socket toward EARLIER is born meanwhile, so its count lies between the two (equal
    // unless the TIME_WAIT ones expire during a slow start).
    let earlier_before: Vec<u64> = pods.iter().map(|p| p.ports_to(EARLIER)).collect();
    let made = (EARLIER_CONNECTIONS + EARLIER_OPEN) as u64;
    assert!(earlier_before.iter().all(|n| *n == made), "{earlier_before:?}");

    let path = std::env::temp_dir().join(format!("twtrace-it-{}-containers.twr", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // Every destination: the tracer sees every namespace on the machine, and tests beside this
    // one can add hundreds (tw-deaths' RST runs connect to 50 client ports each).
    let stat = start(&["stat", "--json", "--interval", "1", "--top", "100000"]);
    let earlier_after: Vec<u64> = pods.iter().map(|p| p.ports_to(EARLIER)).collect();
    let record = start(&["record", "-o", path.to_str().unwrap()]);

    // A namespace made after the start, and one deleted while traced.
    let late = Pod::new("podlate", (42_000, 42_099), 7_000);
    drop(doomed);
    let churn = |pod: &Pod, seconds| support::churn_in(&pod.ns, "client", seconds, Duration::ZERO);
    let churns: Vec<_> = pods.iter().map(|p| churn(p, 4)).chain([churn(&late, 2)]).collect();
    let summaries: Vec<Value> = churns.into_iter().map(|c| c.join().unwrap()).collect();
    let truth: Vec<u64> = pods.iter().map(|p| p.ports_to(SERVER)).collect();
    let late_inode = support::netns_inode(&late.ns.name);
    let late_truth = late.ports_to(SERVER);
    // Let the last events be drained, then the final report.
    std::thread::sleep(Duration::from_millis(1500));
    interrupt(&stat);
    interrupt(&record);
    let stat = stat.wait_with_output().unwrap();
    let record = record.wait_with_output().unwrap();
    assert!(stat.status.success() && record.status.success(), "{stat:?} {record:?}");
    let said: Vec<String> = STDERR.with(|s| s.borrow_mut().drain(..).flat_map(|h| h.join().unwrap()).collect());
    assert!(
        !said.iter().any(|l| l.contains("error") || l.contains("WARN")),
        "a namespace that came or went made twtrace complain: {said:#?}"
    );

    let reports: Vec<Value> =
        String::from_utf8_lossy(&stat.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (first, last) = (&reports[0], reports.last().unwrap());

    // The first report already has each namespace's sockets from before the start.
    for (((pod, inode), before), after) in pods.iter().zip(&inodes).zip(&earlier_before).zip(&earlier_after) {
        let earlier = row(first["port_space"]["destinations"].as_array().unwrap(), *inode, EARLIER)
            .unwrap_or_else(|| panic!("{}: no row toward {EARLIER} in the first report: {first}", pod.ns.name));
        if after < before {
            eprintln!(
                "NOTE: {}: {} of the TIME_WAIT sockets expired while twtrace started",
                pod.ns.name,
                before - after
            );
        }
        let shown = earlier["in_use"].as_u64().unwrap();
        assert!((*after..=*before).contains(&shown), "{}: ss {before} then {after}: {earlier}", pod.ns.name);
        assert_eq!(earlier["namespace"], pod.ns.name.as_str());
    }

    let rows = last["port_space"]["destinations"].as_array().unwrap();
    // What the tracer may have missed (records lost, program runs skipped: under emulation,
    // with three tracers at once, a few runs are): counts may be off by that much, no more.
    let blind = last["lost"].as_u64().unwrap() + last["skipped_runs"].as_u64().unwrap();
    if blind > 0 {
        eprintln!("NOTE: the tracer missed up to {blind} events: counts are compared within that");
    }
    // A kprobe program is skipped while another BPF program runs on its CPU, and a kprobe hit
    // while another kprobe's handler runs is missed by the kprobe itself (its nmissed, which
    // twtrace does not read yet: docs/kernels.md, known issues). In an emulated guest running three
    // tracers at once that lost up to 19 of 100 unreported on 6.18 (97, 93 and 81 in three
    // CI runs): there, 20 %. fentry and tracepoint are held to 2 %.
    let kprobe_emulated = support::kprobe_emulated();
    let percent = if kprobe_emulated { 0.20 } else { 0.02 };
    let close = |shown: u64, truth: u64| {
        shown.abs_diff(truth) as f64 <= percent * truth as f64 || shown.abs_diff(truth) <= blind
    };
    for ((pod, inode), (summary, in_ss)) in pods.iter().zip(&inodes).zip(summaries.iter().zip(&truth)) {
        let d = row(rows, *inode, SERVER).unwrap_or_else(|| panic!("{}: no row toward {SERVER}: {last}", pod.ns.name));
        let shown = d["in_use"].as_u64().unwrap();
        eprintln!("{}: twtrace {shown} of {} ports, ss {in_ss}; churn {summary}; row {d}", pod.ns.name, d["range"]);
        assert_eq!(d["namespace"], pod.ns.name.as_str());
        assert_eq!(d["range"], pod.size(), "{}: counted against its own range", pod.ns.name);
        assert!(close(shown, *in_ss), "{}: twtrace {shown} vs ss {in_ss}", pod.ns.name);
        let utilisation = d["utilisation"].as_f64().unwrap();
        // serde_json parses floats to within an ulp, not exactly (no float_roundtrip): CI's 6.18
        // read 185/28232 back one ulp off.
        let expected = shown as f64 / pod.size() as f64;
        assert!(
            (utilisation - expected).abs() <= 1e-12 * expected,
            "against its own range: {utilisation} vs {expected}"
        );
        let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0);
        assert!(
            close(d["failures"].as_u64().unwrap(), refused),
            "{}: EADDRNOTAVAIL as churn counted: {d}",
            pod.ns.name
        );
        let view = last["namespaces"].as_array().unwrap().iter().find(|n| n["netns"] == *inode).expect("its view");
        assert_eq!(view["max_tw_buckets"], pod.buckets);
        assert_eq!(view["port_range"], serde_json::json!([pod.range.0, pod.range.1]));
    }
    // The 100-port namespace ran out: it is the host's worst, first whatever else is there.
    assert_eq!(truth[0], pods[0].size(), "the small range was exhausted");
    assert!(summaries[0]["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0) > 0);
    assert_exhausted_first(rows, &inodes, blind, percent, "stat");
    let views = last["namespaces"].as_array().unwrap();
    let at = |inode: u64| views.iter().position(|n| n["netns"] == inode).expect("each namespace has a view");
    assert!(at(inodes[0]) < at(inodes[1]) && at(inodes[0]) < at(inodes[2]), "{views:#?}");

    // The namespace made after the start: named, its own range, its ports counted.
    let late_row = row(rows, late_inode, SERVER).unwrap_or_else(|| panic!("the late namespace is missing: {last}"));
    assert_eq!(late_row["namespace"], late.ns.name.as_str());
    if late_row["range"] != late.size() {
        let view = last["namespaces"].as_array().unwrap().iter().find(|n| n["netns"] == late_inode);
        panic!(
            "the late namespace is counted against {} ports, not its own {}; stat's view of it: {view:?}; \
             what the recording made beside it says of namespace {late_inode}:\n{}",
            late_row["range"],
            late.size(),
            namespace_records(&path, late_inode)
        );
    }
    assert!(close(late_row["in_use"].as_u64().unwrap(), late_truth), "{late_row} vs ss {late_truth}");

    // The recording says the same, namespace by namespace.
    // Every row: the VM matrix runs this test once per backend at the same time, and each
    // tracer sees the others' namespaces too.
    let report = support::output(
        Command::new(env!("CARGO_BIN_EXE_twtrace")).args(["report", "--json", "--top", "100000"]).arg(&path),
    );
    assert!(report.status.success(), "report: {}", String::from_utf8_lossy(&report.stderr));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let rows = report["destinations"].as_array().unwrap();
    for ((pod, inode), (summary, in_ss)) in pods.iter().zip(&inodes).zip(summaries.iter().zip(&truth)) {
        let d = row(rows, *inode, SERVER).unwrap_or_else(|| panic!("{}: not in the report: {report}", pod.ns.name));
        assert_eq!(d["namespace"], pod.ns.name.as_str());
        if d["range"] != pod.size() {
            panic!(
                "{}: the recording counts it against {} ports, not its own {}; what the recording says of \
                 namespace {inode}:\n{}",
                pod.ns.name,
                d["range"],
                pod.size(),
                namespace_records(&path, *inode)
            );
        }
        assert!(close(d["in_use_at_end"].as_u64().unwrap(), *in_ss), "{}: {d} vs ss {in_ss}", pod.ns.name);
        let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0);
        assert!(close(d["failures"].as_u64().unwrap(), refused), "{d}");
    }
    assert_exhausted_first(rows, &inodes, blind, percent, "report");
    let _ = std::fs::remove_file(&path);
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f.as_str().unwrap().contains(&format!("in namespace {}", pods[0].ns.name))),
        "{findings:#?}"
    );
}
