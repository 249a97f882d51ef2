//! `twtrace doctor` against scenarios whose ground truth the test knows: a namespace whose 100
//! ports run out (the finding names it, with churn's own count of EADDRNOTAVAIL, and the exit
//! status says critical), a healthy churn (nothing to fix: exit 0), and a namespace whose
//! connection tracking table is full (the finding has the table's own count, limit and drops).
//! The same findings come from a recording of the scenario (`--replay`).

mod support;

use std::process::Command;

use serde_json::Value;
use support::{Netns, can_trace};

fn doctor_args(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = vec!["doctor".into(), "--json".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    if let Some(b) = support::forced_backend().filter(|_| !args.contains(&"--replay")) {
        all.extend(["--backend".into(), b]);
    }
    all
}

/// `twtrace doctor --json ARGS` to its end: its exit status and report.
fn doctor(args: &[&str]) -> (i32, Value) {
    let all = doctor_args(args);
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(&all));
    parse(&all, out)
}

fn parse(all: &[String], out: std::process::Output) -> (i32, Value) {
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor {all:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("an exit status"), json)
}

/// `twtrace doctor` live: `during` runs once it is watching (its probes loaded, which takes
/// seconds in an emulated guest), then doctor is stopped by Ctrl-C and reports. Not by a
/// duration: in a slow guest `during` may start seconds after doctor does, and its last
/// events would fall past a fixed end.
fn doctor_while(args: &[&str], during: impl FnOnce()) -> (i32, Value) {
    use std::io::{BufRead, BufReader, Read};
    let all = doctor_args(args);
    let mut child = support::spawn(
        Command::new(env!("CARGO_BIN_EXE_twtrace"))
            .args(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("watching") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "doctor did not start: {:?}", child.wait());
    }
    during();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    parse(&all, std::process::Output { stderr: rest.into_bytes(), ..out })
}

/// What the tracer may have missed: records lost and program runs the kernel skipped. Under
/// emulation (the VM matrix, three backends at once) interrupts land inside programs often
/// enough that a few runs are skipped; each may be a missed event, so figures may be off by
/// that much and no more.
fn blind(report: &Value) -> u64 {
    report["observed"]["lost"].as_u64().unwrap() + report["observed"]["skipped_runs"].as_u64().unwrap()
}

fn churn(ns: &Netns, closer: &str, seconds: u32) -> Value {
    support::churn_in(ns, closer, seconds, std::time::Duration::ZERO).join().unwrap()
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect()
}

fn finding<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}: {report:#}"))
}

#[test]
fn a_namespace_out_of_ports_is_named_with_the_clients_own_count() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docports");
    // 40 ports: a slow emulated guest churns at 15 connections/s, and the range must run out
    // within the churn's 4 s there too.
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40039");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let path = std::env::temp_dir().join(format!("twtrace-it-{}-doctor.twr", std::process::id()));
    let recording = support::Recording::start(&ns, &path);
    let mut summary = Value::Null;
    let (status, live) = doctor_while(&["--duration", "5m", "--netns", &ns.name], || summary = churn(&ns, "client", 4));
    recording.stop();
    let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap();
    assert!(refused > 0, "the range ran out: {summary}");
    assert_eq!(status, 2, "critical: {live:#}");
    assert_eq!(live["severity"], "critical");
    let ports = finding(&live, "port_space");
    assert_eq!(ports["place"]["namespace"], ns.name.as_str());
    assert_eq!(ports["place"]["destination"], "127.0.0.1:7000");
    let text = ports["text"].as_str().unwrap();
    assert!(text.contains("now 40000-40039"), "{text}");
    // A kprobe program is also missed while another kprobe's handler runs on its CPU, and
    // twtrace does not read the kprobes' own miss counts yet (README, known issues): in an
    // emulated guest running three tracers, CI's 6.18 saw 93 of 100 with none reported (and
    // the container test 81 of 100).
    let kprobe_emulated = support::emulated() && support::forced_backend().as_deref() == Some("kprobe");
    let blind = blind(&live) + if kprobe_emulated { 8 } else { 0 };
    // "... peaked at 100% (40 of 40 ports) ..."
    let held = text.split('(').nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok()).unwrap();
    assert!(held.abs_diff(40) <= blind, "40 of 40 ports held ({blind} events may be missed): {text}");
    let failures = finding(&live, "connect_failures");
    let counted = failures["text"].as_str().unwrap().split_whitespace().next().unwrap().parse::<u64>().unwrap();
    // In an emulated guest one refusal in 200 once went unseen with nothing reported (5.10,
    // fentry; not understood, noted in the session's report): 1 % there, exact elsewhere.
    let slack = if support::emulated() { refused / 100 } else { 0 };
    assert!(
        counted.abs_diff(refused) <= blind + slack,
        "churn saw {refused} ({blind} events may be missed): {failures:#}"
    );
    if blind > 0 {
        eprintln!("NOTE: the tracer missed up to {blind} events (lost, skipped runs): counts within that");
    }
    // From the recording: the same findings (blind spots of the live run aside).
    let (replayed_status, replayed) = doctor(&["--replay", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(replayed_status, status);
    // Notes that depend on the moment aside; and before 6.11 a drop seen before the socket
    // lookup carries no namespace and passes every --netns filter (README, known issues): the
    // two tracers may see other tests' crafted PAWS drops at different moments.
    let drops_unlabelled = !kernel_at_least(6, 11);
    let substantive = |k: &Vec<String>| -> Vec<String> {
        k.iter()
            .filter(|k| !["skipped_runs", "approximate_search", "time_wait_peak"].contains(&k.as_str()))
            .filter(|k| !(drops_unlabelled && k.as_str() == "paws"))
            .cloned()
            .collect()
    };
    assert_eq!(substantive(&kinds(&replayed)), substantive(&kinds(&live)), "{replayed:#}\n{live:#}");
    assert_eq!(finding(&replayed, "connect_failures")["text"], failures["text"]);
}

#[test]
fn a_healthy_churn_needs_nothing_fixed() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("dochealthy");
    let mut summary = Value::Null;
    let (status, report) =
        doctor_while(&["--duration", "5m", "--netns", &ns.name], || summary = churn(&ns, "server", 2));
    // (A slow emulated guest made 38 in 2 s.)
    assert!(summary["connections"].as_u64().unwrap() > 20, "{summary}");
    // Before 6.11 a drop seen before the socket lookup carries no namespace and passes every
    // --netns filter (README, known issues): other tests' crafted PAWS drops can show here.
    let drops_unlabelled = !kernel_at_least(6, 11);
    for f in report["findings"].as_array().unwrap() {
        if drops_unlabelled && f["kind"] == "paws" {
            eprintln!("NOTE: PAWS drops without a namespace (before 6.11), not this namespace's: {}", f["text"]);
            continue;
        }
        assert!(["info", "ok"].contains(&f["severity"].as_str().unwrap()), "only notes: {f:#}");
    }
    assert!(status == 0 || (drops_unlabelled && status == 1), "{status}: {report:#}");
}

/// Before 6.11 a drop seen before the socket lookup carries no namespace and passes every
/// --netns filter (README, known issues): other tests' crafted PAWS drops can show in any
/// scenario's report there.
fn other_tests_drops_show() -> bool {
    !kernel_at_least(6, 11)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap(), parts.next().unwrap()) >= (major, minor)
}

/// The limit every namespace's conntrack table is held to (set in the initial namespace),
/// lowered for a test and put back when dropped. Taken under a lock: the VM matrix runs this
/// test once per backend at the same time, and each would otherwise save the other's value.
struct ConntrackLimit {
    old: String,
    _lock: std::fs::File,
}

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackLimit {
    fn set(max: u32) -> Self {
        use std::os::fd::AsRawFd as _;
        let lock = std::fs::File::create("/run/twtrace-test-conntrack.lock").expect("lock file");
        // SAFETY: a valid descriptor; the lock goes with it.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let old = std::fs::read_to_string(CONNTRACK_MAX).expect("nf_conntrack_max");
        std::fs::write(CONNTRACK_MAX, max.to_string()).expect("lower nf_conntrack_max");
        Self { old, _lock: lock }
    }
}

impl Drop for ConntrackLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(CONNTRACK_MAX, self.old.trim());
    }
}

/// The namespace's conntrack drops (`drop` + `insert_failed` of /proc/net/stat/nf_conntrack,
/// summed over CPUs) and its table's count, read inside it.
fn conntrack_truth(ns: &Netns) -> (u64, u64) {
    ns.run(|| {
        let stat = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack").unwrap();
        let mut lines = stat.lines();
        let columns: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        let (drop, failed) = (at("drop"), at("insert_failed"));
        let drops: u64 = lines
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                u64::from_str_radix(f[drop], 16).unwrap() + u64::from_str_radix(f[failed], 16).unwrap()
            })
            .sum();
        let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").unwrap();
        (drops, count.trim().parse().unwrap())
    })
}

/// "Why do new connections stall at 1,000/s?": the namespace's conntrack table is full. A
/// namespace tracks connections (an nftables rule on ct state), the shared limit is lowered to
/// 50, and 80 connections are made: the first 50 take the entries (each closed connection keeps
/// its entry 120 s), the other 30 have their SYNs dropped and time out. Doctor names the
/// namespace with the table's count, limit and drops as the kernel counts them.
#[test]
fn a_full_conntrack_table_is_named_with_its_own_counts() {
    const LIMIT: u32 = 50;
    const CONNECTIONS: usize = 80;
    if !can_trace() {
        return;
    }
    if !std::path::Path::new(CONNTRACK_MAX).exists() {
        return support::skip("doctor", "this kernel has no connection tracking (nf_conntrack)");
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return support::skip("doctor", "nft (nftables) is missing: `cargo xtask setup` installs it");
    }
    let ns = Netns::new("docconntrack");
    support::run(Command::new("ip").args(["netns", "exec", &ns.name, "nft"]).arg(
        "add table inet twt; add chain inet twt in { type filter hook input priority 0 ; }; \
         add rule inet twt in ct state new accept",
    ));
    let _limit = ConntrackLimit::set(LIMIT);
    // The limit is shared: a host that tracks its own connections would lose them meanwhile.
    let host_count: u64 =
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").unwrap().trim().parse().unwrap();
    if host_count > 0 {
        return support::skip(
            "doctor",
            "the host tracks connections itself: lowering the shared limit would drop them",
        );
    }
    let (mut made, mut refused) = (0, 0);
    let (status, report) = doctor_while(&["--duration", "5m", "--netns", &ns.name], || {
        (made, refused) = ns.run(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:7000").unwrap();
            let server: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
            let (mut made, mut refused) = (0, 0);
            for _ in 0..CONNECTIONS {
                match std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_millis(300)) {
                    Ok(client) => {
                        drop(listener.accept().unwrap());
                        drop(client);
                        made += 1;
                    }
                    Err(_) => refused += 1,
                }
            }
            (made, refused)
        });
    });
    let (drops, count) = conntrack_truth(&ns);
    assert_eq!((made, refused, count), (LIMIT as usize, CONNECTIONS - LIMIT as usize, u64::from(LIMIT)));
    assert!(drops >= refused as u64, "each refused connection lost at least its SYN: {drops}");
    assert_eq!(status, 2, "critical: {report:#}");
    let f = finding(&report, "conntrack");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["place"]["namespace"], ns.name.as_str());
    let text = f["text"].as_str().unwrap();
    assert!(text.contains(&format!("holds {LIMIT} of {LIMIT} entries")), "{text}");
    assert!(text.contains(&format!("dropped {drops} packets")), "the kernel counted {drops}: {text}");
}

/// Doctor live in namespace `ns` while `during` runs (stopped once it is done), then on the
/// recording made meanwhile: both reports, the recording's with the same findings.
/// `families`: only these probe families, in both (all when empty).
fn live_and_replayed(ns: &Netns, tag: &str, families: &[&str], during: impl FnOnce()) -> (i32, Value, Value) {
    let path = std::env::temp_dir().join(format!("twtrace-it-{}-doctor-{tag}.twr", std::process::id()));
    let recording = support::Recording::start_families(ns, &path, families);
    let mut args = vec!["--duration", "5m", "--netns", &ns.name];
    args.extend(families.iter().flat_map(|f| ["--family", f]));
    let (status, live) = doctor_while(&args, during);
    recording.stop();
    let (replayed_status, replayed) = doctor(&["--replay", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(replayed_status, status, "{replayed:#}\n{live:#}");
    let substantive = |r: &Value| -> Vec<String> {
        kinds(r)
            .into_iter()
            .filter(|k| !["skipped_runs", "approximate_search", "time_wait_peak"].contains(&k.as_str()))
            .filter(|k| !(other_tests_drops_show() && k.as_str() == "paws" && tag != "paws"))
            .collect()
    };
    assert_eq!(substantive(&replayed), substantive(&live), "{replayed:#}\n{live:#}");
    (status, live, replayed)
}

/// The scenario's finding, and nothing else above a note (what twtrace may have missed aside).
fn only_finding<'a>(report: &'a Value, kind: &str) -> &'a Value {
    for f in report["findings"].as_array().unwrap() {
        let blind_spot = ["loss", "skipped_runs"].contains(&f["kind"].as_str().unwrap());
        let others_drops = other_tests_drops_show() && f["kind"] == "paws";
        if f["kind"] != kind && !blind_spot && !others_drops {
            assert!(["info", "ok"].contains(&f["severity"].as_str().unwrap()), "another finding: {f:#}");
        }
    }
    finding(report, kind)
}

/// A namespace whose TIME_WAIT sockets reach its own `tcp_max_tw_buckets` (10): 30
/// connections closed first by the client make 10 TIME_WAIT sockets and 20 overflows, as the
/// namespace's TCPTimeWaitOverflow counts them.
#[test]
fn time_wait_beyond_the_bucket_limit_is_named_with_the_kernels_overflow_count() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docbuckets");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "10");
    let before = ns.netstat();
    let (status, live, replayed) = live_and_replayed(&ns, "buckets", &[], || {
        ns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), 30));
    });
    let overflow = ns.netstat()["TCPTimeWaitOverflow"] - before["TCPTimeWaitOverflow"];
    assert_eq!(overflow, 20, "the kernel's count");
    let in_ss =
        support::output(Command::new("ip").args(["netns", "exec", &ns.name, "ss", "-Htan", "state", "time-wait"]));
    assert_eq!(String::from_utf8_lossy(&in_ss.stdout).lines().count(), 10, "ss");
    assert_eq!(status, 2, "critical: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "time_wait_buckets");
        assert_eq!(
            (f["severity"].as_str(), f["place"]["namespace"].as_str()),
            (Some("critical"), Some(ns.name.as_str()))
        );
        let text = f["text"].as_str().unwrap();
        assert!(text.contains("holds 10 TIME_WAIT sockets against tcp_max_tw_buckets 10"), "{text}");
        assert!(text.contains(&format!("skipped it {overflow} times")), "{text}");
    }
}

/// An accept queue that overflows: a listener with a backlog of 1 that never accepts, and 10
/// clients that give up after 300 ms (before their SYN is sent again). The finding has the
/// namespace's ListenOverflows and ListenDrops as the kernel counts them.
#[test]
fn an_overflowing_accept_queue_is_named_with_the_kernels_counts() {
    use std::os::fd::FromRawFd as _;
    if !can_trace() {
        return;
    }
    let ns = Netns::new("doclisten");
    let before = ns.netstat();
    let mut connected = 0;
    let (status, live, replayed) = live_and_replayed(&ns, "listen", &[], || {
        connected = ns.run(|| {
            // SAFETY: a new socket, bound and listening with backlog 1; owned by the listener.
            let listener = unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let (addr, len) = support::sockaddr_of("127.0.0.1:7000".parse().unwrap());
                assert_eq!(libc::bind(fd, std::ptr::addr_of!(addr).cast(), len), 0);
                assert_eq!(libc::listen(fd, 1), 0);
                std::net::TcpListener::from_raw_fd(fd)
            };
            let server = listener.local_addr().unwrap();
            let clients: Vec<_> = (0..10)
                .filter_map(|_| {
                    std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_millis(300)).ok()
                })
                .collect();
            // Whatever the server drops meanwhile settles (request sockets whose client is gone).
            std::thread::sleep(std::time::Duration::from_secs(1));
            drop(listener);
            clients.len()
        });
    });
    let after = ns.netstat();
    let (overflows, drops) =
        (after["ListenOverflows"] - before["ListenOverflows"], after["ListenDrops"] - before["ListenDrops"]);
    assert!(overflows > 0 && connected < 10, "the queue overflowed: {overflows}, {connected} connected");
    for report in [&live, &replayed] {
        let f = only_finding(report, "listen_overflow");
        assert_eq!(f["place"]["namespace"], ns.name.as_str(), "{f:#}");
        let evidence: Vec<&str> = f["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert!(evidence.contains(&format!("ListenOverflows +{overflows}").as_str()), "{evidence:?}");
        assert!(evidence.contains(&format!("ListenDrops +{drops}").as_str()), "{evidence:?}");
    }
    assert!(status >= 1, "{live:#}");
}

/// "Why do 1-3 % of users behind NAT fail?": SYNs from one address, four 4-tuples the server
/// holds in TIME_WAIT, each with an older timestamp (clients behind one NAT with different
/// clocks): the kernel drops each (PAWSTimewait), and doctor names the one source with four
/// flows.
#[test]
fn paws_drops_from_one_address_are_named_as_nat() {
    const TUPLES: u16 = 4;
    const SOURCE: &str = "127.0.0.5";
    if !can_trace() {
        return;
    }
    if !support::kernel_has_drop_reason("TCP_RFC7323_TW_PAWS") {
        return support::skip(
            "doctor",
            "this kernel gives TIME_WAIT PAWS rejects no drop reason (TCP_RFC7323_TW_PAWS, 6.16+)",
        );
    }
    let ns = Netns::new("docpaws");
    let before = ns.netstat();
    let (_, live, replayed) = live_and_replayed(&ns, "paws", &[], || craft_time_wait_paws(&ns, SOURCE, TUPLES));
    let dropped = ns.netstat()["PAWSTimewait"] - before["PAWSTimewait"];
    assert_eq!(dropped, i64::from(TUPLES), "the kernel's count");
    for report in [&live, &replayed] {
        let f = only_finding(report, "paws");
        assert_eq!(f["severity"], "warning", "{f:#}");
        let text = f["text"].as_str().unwrap();
        assert!(text.contains(&format!("{TUPLES} segments were dropped by PAWS")), "{text}");
        assert!(text.contains(&format!("1 source(s) with several flows each ({SOURCE})")), "{text}");
        let evidence: Vec<&str> = f["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert!(evidence.contains(&format!("{SOURCE}: {TUPLES} drops, {TUPLES} flows").as_str()), "{evidence:?}");
        assert!(evidence.contains(&format!("PAWSTimewait +{TUPLES}").as_str()), "{evidence:?}");
    }
}

/// SYNs from `source`, `tuples` 4-tuples the server (127.0.0.1:7000 in `ns`) holds in TIME_WAIT,
/// each with an older timestamp than the connection it reuses: the kernel rejects each by PAWS
/// (PAWSTimewait from 6.16, PAWSEstab before; a drop reason only from 6.16).
fn craft_time_wait_paws(ns: &Netns, source: &'static str, tuples: u16) {
    use support::packets::{self, SYN, Segment};
    ns.run(move || {
        let listener = std::net::TcpListener::bind("127.0.0.1:7000").unwrap();
        let server = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..tuples {
            let from = std::net::SocketAddr::new(source.parse().unwrap(), 43_000 + i);
            let client = support::connect_from(from, server);
            let tsval = packets::tcp_timestamp(&client);
            drop(listener.accept().unwrap().0); // the server closes first: TIME_WAIT is its
            assert_eq!(std::io::Read::read(&mut &client, &mut [0u8; 1]).unwrap(), 0);
            drop(client);
            clients.push((from, tsval));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        for (from, tsval) in clients {
            let syn = Segment {
                src: from,
                dst: server,
                seq: 7,
                ack: 0,
                flags: SYN,
                tsval: tsval.wrapping_sub(100_000),
                tsecr: 0,
                payload_len: 0,
            };
            packets::send(&syn, &[]);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    });
}

/// PAWS rejects twtrace sees no drop event for (before 5.17 no drop reasons; a TIME_WAIT
/// socket's PAWS reject has none before 6.16): doctor falls back to the namespace's counters.
/// The drops family is left out so that this holds on every kernel, 6.16+ included; the same
/// SYNs as above then show only as the counter the kernel raises (PAWSTimewait from 6.16,
/// PAWSEstab before), named with the namespace and its exact rise, as a note (below
/// PAWS_WARN_DROPS, and no source to call NAT).
#[test]
fn paws_rejects_without_drop_events_are_named_from_the_namespaces_counters() {
    const TUPLES: u16 = 4;
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docpawscount");
    let before = ns.netstat();
    let families = ["timewait", "portsearch", "state"];
    let (status, live, replayed) =
        live_and_replayed(&ns, "pawscount", &families, || craft_time_wait_paws(&ns, "127.0.0.6", TUPLES));
    let after = ns.netstat();
    let rose: Vec<String> = after
        .iter()
        .filter(|(k, v)| k.starts_with("PAWS") && **v > before.get(*k).copied().unwrap_or(0))
        .map(|(k, v)| format!("{k} +{}", v - before.get(k).copied().unwrap_or(0)))
        .collect();
    let counter = if after.contains_key("PAWSTimewait") { "PAWSTimewait" } else { "PAWSEstab" };
    assert_eq!(rose, [format!("{counter} +{TUPLES}")], "the kernel's count");
    assert_eq!(status, 0, "a note: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "paws");
        assert_eq!((f["severity"].as_str(), f["place"]["namespace"].as_str()), (Some("info"), Some(ns.name.as_str())));
        let text = f["text"].as_str().unwrap();
        let head = format!("Namespace {} rejected {TUPLES} segments by PAWS ({counter} +{TUPLES})", ns.name);
        assert!(text.starts_with(&head), "{text}");
        assert!(text.contains("twtrace's drops family is not running"), "{text}");
        assert!(text.contains("no source, flow or NAT signature") && text.contains("6.16+"), "{text}");
        assert_eq!(f["evidence"][0], format!("{counter} +{TUPLES}").as_str(), "{f:#}");
    }
}
