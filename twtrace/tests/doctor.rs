//! `twtrace doctor` against scenarios whose ground truth the test knows: a namespace whose 100
//! ports run out (the finding names it, with churn's own count of EADDRNOTAVAIL, and the exit
//! status says critical), a healthy churn (nothing to fix: exit 0), and a namespace whose
//! connection tracking table is full (the finding has the table's own count, limit and drops).
//! Settings that fix nothing: a lowered `tcp_fin_timeout` beside TIME_WAIT sockets that lived
//! 60 s, timestamps off, `tcp_tw_reuse` on a namespace that only accepts.
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
    doctor_with(&[], args, |_, _| during())
}

/// [`doctor_while`], with twtrace's `global` options (before `doctor`), and `during` given
/// doctor's pid and what it logged until it started watching.
fn doctor_with(global: &[&str], args: &[&str], during: impl FnOnce(u32, &[String])) -> (i32, Value) {
    use std::io::{BufRead, BufReader, Read};
    let all = doctor_args(args);
    let mut child = support::spawn(
        Command::new(env!("CARGO_BIN_EXE_twtrace"))
            .args(global)
            .args(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = Vec::new();
    let mut line = String::new();
    while !line.contains("watching") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "doctor did not start: {:?}", child.wait());
        log.push(line.clone());
    }
    during(child.id(), &log);
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
fn blind_of(report: &Value) -> u64 {
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
    let kprobe_emulated = support::kprobe_emulated();
    let blind = blind_of(&live) + if kprobe_emulated { 8 } else { 0 };
    // "... peaked at 100% (40 of 40 ports) ..."
    let held = text.split('(').nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok()).unwrap();
    assert!(held.abs_diff(40) <= blind, "40 of 40 ports held ({blind} events may be missed): {text}");
    let failures = finding(&live, "connect_failures");
    let counted = leading_count(failures);
    // In an emulated guest a few refusals in 200 have gone unseen with nothing reported: 1 and
    // then 3, both on 5.10 with fentry (a kernel that counts no skipped runs: that came in
    // 5.12). The cause is not understood (the other backends' tracers attach and detach on
    // the same functions meanwhile; noted in the session's report): 2.5 % there, exact
    // elsewhere.
    let slack = if support::emulated() { refused / 40 } else { 0 };
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
    // The recording was made by a tracer of its own, with blind spots of its own: its count is
    // held to the churn's within those, as the live one is (CI's 6.18 once had 199 live, 198
    // recorded, with up to 4 events missed).
    let recorded = finding(&replayed, "connect_failures");
    let blind_recorded = blind_of(&replayed) + if kprobe_emulated { 8 } else { 0 };
    assert!(
        leading_count(recorded).abs_diff(refused) <= blind_recorded + slack,
        "churn saw {refused} ({blind_recorded} events may be missed by the recorder): {recorded:#}"
    );
}

/// The number a finding's text starts with ("198 connect() calls found ...").
fn leading_count(finding: &Value) -> u64 {
    let text = finding["text"].as_str().unwrap();
    text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count: {text}"))
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
    if !has_nft() {
        return support::skip("doctor", NO_NFT);
    }
    let ns = Netns::new("docconntrack");
    nft(
        &ns,
        "add table inet twt; add chain inet twt in { type filter hook input priority 0 ; }; \
         add rule inet twt in ct state new accept",
    );
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
    // Each packet conntrack dropped was a SYN this host sent, a NETFILTER_DROP event (5.18+),
    // placed in the namespace through its socket (no device before the OUTPUT hook).
    if support::kernel_has_drop_reason("NETFILTER_DROP") && blind_of(&report) == 0 {
        let line = format!(
            "NETFILTER_DROP drop events: {drops}, {drops} of them SYNs ({drops} sent by this host), to 127.0.0.1:7000 x{drops}"
        );
        assert!(f["evidence"].as_array().unwrap().iter().any(|e| *e == line.as_str()), "{line}: {f:#}");
    }
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
    only_notes_besides(report, Some(kind));
    finding(report, kind)
}

/// Every finding but `kind` is a note (what twtrace may have missed, and before 6.11 other
/// tests' unlabelled PAWS drops, aside).
fn only_notes_besides(report: &Value, kind: Option<&str>) {
    for f in report["findings"].as_array().unwrap() {
        let blind_spot = ["loss", "skipped_runs"].contains(&f["kind"].as_str().unwrap());
        let others_drops = other_tests_drops_show() && f["kind"] == "paws";
        if kind.is_none_or(|k| f["kind"] != k) && !blind_spot && !others_drops {
            assert!(["info", "ok"].contains(&f["severity"].as_str().unwrap()), "another finding: {f:#}");
        }
    }
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
    if !can_trace() {
        return;
    }
    let ns = Netns::new("doclisten");
    let before = ns.netstat();
    let mut connected = 0;
    let (status, live, replayed) = live_and_replayed(&ns, "listen", &[], || {
        connected = ns.run(|| {
            let listener = listener_with_backlog(1);
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
    // 6.15+: each handshake whose last ACK met the full queue is also a TCP_LISTEN_OVERFLOW
    // drop event. ListenOverflows counts those and the SYNs refused for the same reason
    // (consumed, no drop event), so the events are bounded by it, not equal to it.
    let events = finding(&live, "listen_overflow")["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.strip_prefix("TCP_LISTEN_OVERFLOW drop events: "))
        .map(|e| e.split(',').next().unwrap().parse::<i64>().unwrap())
        .next();
    eprintln!("TCP_LISTEN_OVERFLOW drop events {events:?}, ListenOverflows +{overflows}");
    assert!(events.is_none_or(|n| n <= overflows), "{events:?} of {overflows}");
}

/// 6.15+: a handshake's last ACK that meets a full accept queue is dropped with a reason,
/// TCP_LISTEN_OVERFLOW. Backlog 2; two handshakes are held half done (an nftables rule drops
/// their last ACKs), the rule goes, and three more connections fill the accept queue (never
/// accepted). When the server re-sends the held handshakes' SYN-ACKs (after 1 s), their
/// clients' ACKs meet the full queue: each is an overflow and a drop event. ListenOverflows
/// also counts SYNs refused for a full queue (consumed, no drop event): a filler that failed
/// sent exactly one (it gives up before a retransmit), so the events are the overflows less
/// those.
#[test]
fn a_last_ack_meeting_a_full_accept_queue_is_a_drop_event() {
    if !can_trace() {
        return;
    }
    if !has_nft() {
        return support::skip("doctor", NO_NFT);
    }
    if !support::kernel_has_drop_reason("TCP_LISTEN_OVERFLOW") {
        return support::skip("doctor", "no TCP_LISTEN_OVERFLOW drop reason (6.15+)");
    }
    let ns = Netns::new("doclastack");
    let before = ns.netstat();
    let mut failed_fillers = 0;
    let mut after = before.clone();
    let (_, live, replayed) = live_and_replayed(&ns, "lastack", &[], || {
        nft(
            &ns,
            "add table inet twt; add chain inet twt out { type filter hook output priority 0 ; }; \
             add rule inet twt out tcp dport 7000 tcp flags & (syn | ack) == ack drop",
        );
        let server: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let listener = ns.run(|| listener_with_backlog(2));
        let connect = move || std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_millis(300));
        // Connected as the clients see it (the SYN-ACK came); half done on the server.
        let held: Vec<_> = ns.run(move || (0..2).map(|_| connect().unwrap()).collect());
        nft(&ns, "delete table inet twt");
        let fillers: Vec<_> = ns.run(move || (0..3).map(|_| connect()).collect());
        failed_fillers = fillers.iter().filter(|f| f.is_err()).count() as i64;
        // The SYN-ACKs are re-sent 1 s after the SYNs; their ACKs come back at once.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        after = ns.netstat();
        // The listener first: a held client's FIN reaching it would be one more overflow.
        drop(listener);
        drop((held, fillers));
        // Doctor reads the counters once a second: let it see the last of them.
        std::thread::sleep(std::time::Duration::from_millis(1500));
    });
    assert_eq!(ns.netstat()["ListenOverflows"], after["ListenOverflows"], "no overflow after the listener went");
    let overflows = after["ListenOverflows"] - before["ListenOverflows"];
    let expected = overflows - failed_fillers;
    eprintln!("ListenOverflows +{overflows}, {failed_fillers} fillers refused: {expected} last ACKs dropped");
    assert!(
        expected > 0,
        "the held handshakes' ACKs met the full queue: {overflows} overflows, {failed_fillers} fillers failed"
    );
    for report in [&live, &replayed] {
        let f = only_finding(report, "listen_overflow");
        let evidence: Vec<&str> = f["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        let line = format!(
            "TCP_LISTEN_OVERFLOW drop events: {expected}, 0 of them SYNs (0 sent by this host), to 127.0.0.1:7000 x{expected}"
        );
        if blind_of(report) == 0 {
            assert!(evidence.contains(&line.as_str()), "{line}: {evidence:?}");
        }
        assert!(evidence.contains(&format!("ListenOverflows +{overflows}").as_str()), "{evidence:?}");
    }
}

/// A listener's SYN queue overflows: syncookies off, backlog 4, and the handshakes' last ACKs
/// dropped by an nftables rule, so the handshakes stay under way. Of 12 clients (each gives up
/// after 300 ms, before a SYN retransmit), the first fill the queue and the others' SYNs are
/// dropped. Doctor names the SYN queue with the namespace's counters as the kernel counts them,
/// and no netfilter finding: the rule drops ACKs, not connection attempts.
#[test]
fn an_overflowing_syn_queue_is_named_with_the_kernels_counts() {
    const CLIENTS: usize = 12;
    if !can_trace() {
        return;
    }
    if !has_nft() {
        return support::skip("doctor", NO_NFT);
    }
    let ns = Netns::new("docsynq");
    ns.sysctl("net.ipv4.tcp_syncookies", "0");
    nft(
        &ns,
        "add table inet twt; add chain inet twt out { type filter hook output priority 0 ; }; \
         add rule inet twt out tcp dport 7000 tcp flags & (syn | ack) == ack drop",
    );
    let before = ns.netstat();
    let (status, live, replayed) = live_and_replayed(&ns, "synq", &[], || {
        ns.run(|| {
            let listener = listener_with_backlog(4);
            let server = listener.local_addr().unwrap();
            // Those that got a SYN-ACK think they are connected; kept open until the end.
            let _clients: Vec<_> = (0..CLIENTS)
                .filter_map(|_| {
                    std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_millis(300)).ok()
                })
                .collect();
            drop(listener);
        });
    });
    let after = ns.netstat();
    let delta = |name: &str| after[name] - before[name];
    let (full, drops, overflows) = (delta("TCPReqQFullDrop"), delta("ListenDrops"), delta("ListenOverflows"));
    assert!(full > 0 && full < CLIENTS as i64, "some SYNs met the full queue: {full}");
    assert_eq!(status, 2, "critical: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "listen_overflow");
        assert_eq!(f["place"]["namespace"], ns.name.as_str(), "{f:#}");
        let text = f["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("A listener's SYN queue overflowed in namespace {}", ns.name)), "{text}");
        let evidence: Vec<&str> = f["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        for line in [
            format!("TCPReqQFullDrop +{full}"),
            format!("ListenDrops +{drops}"),
            format!("ListenOverflows +{overflows}"),
        ] {
            assert!(evidence.contains(&line.as_str()), "{line}: {evidence:?}");
        }
    }
}

/// Doctor's own blind spot: its ring buffer (4 KiB) overflows while it is stopped (SIGSTOP)
/// and 200 connections leave TIME_WAIT sockets. The loss finding comes first, critical, with
/// the count the kernel side kept (its counters map, read with bpftool).
#[test]
fn lost_records_are_named_first_with_the_kernels_count() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docloss");
    let mut lost_in_kernel = 0;
    let args = ["--duration", "5m", "--netns", &ns.name, "--family", "timewait", "--ring-buffer-size", "4096"];
    let (status, report) = doctor_with(&["-v"], &args, |pid, log| {
        let map_id = support::counters_map_id(log).expect("twtrace -v logs its counters map id");
        let pid = pid as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        ns.run(|| support::server_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), 200, None));
        std::thread::sleep(std::time::Duration::from_millis(200));
        lost_in_kernel = support::kernel_lost(&map_id);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    assert!(lost_in_kernel > 0, "200 connections overflow 4 KiB");
    assert_eq!(report["observed"]["lost"], lost_in_kernel, "{report:#}");
    assert_eq!(status, 2, "critical: {report:#}");
    let first = &report["findings"][0];
    assert_eq!(first["kind"], "loss", "what qualifies every figure comes first: {report:#}");
    assert_eq!(first["severity"], "critical");
    let text = first["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("{lost_in_kernel} events were lost in the kernel")), "{text}");
}

/// A damaged recording qualifies every figure: a byte of one chunk flipped, `doctor --replay`
/// names the damage first (a warning), what it is, and reads the rest.
#[test]
fn a_damaged_recording_is_named_first() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docdamage");
    let path = std::env::temp_dir().join(format!("twtrace-it-{}-doctor-damage.twr", std::process::id()));
    let recording = support::Recording::start(&ns, &path);
    // Two bursts 1.5 s apart: chunks are sealed every second, so there is more than one.
    ns.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:7000").unwrap();
        support::client_closes_first(&listener, 10);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        support::client_closes_first(&listener, 10);
    });
    recording.stop();
    let mut bytes = std::fs::read(&path).unwrap();
    let chunks: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| w == b"TWCK").map(|(i, _)| i).collect();
    assert!(chunks.len() >= 3, "a header chunk and two of events at least: {chunks:?}");
    // Inside the second chunk's payload (its header is 36 bytes).
    bytes[chunks[1] + 40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (status, report) = doctor(&["--replay", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let first = &report["findings"][0];
    assert_eq!(first["kind"], "damage", "{report:#}");
    assert_eq!(first["severity"], "warning");
    let problems = first["evidence"].as_array().unwrap();
    assert!(!problems.is_empty(), "{first:#}");
    assert!(first["text"].as_str().unwrap().contains(&format!("({} problem(s)", problems.len())), "{first:#}");
    assert!(report["observed"]["events"].as_u64().unwrap() > 0, "the rest was read: {report:#}");
    assert_eq!(status, 1, "a warning, nothing worse: {report:#}");
}

/// A namespace's firewall drops SYNs: its output chain those of this host's own connect()s
/// to 127.0.0.1:7001, its input chain those received on 127.0.0.1:7002 (listeners on both).
/// Three attempts each, given up after 1.2 s (a SYN and usually one retransmit). Doctor names
/// netfilter with the drop events of each rule, equal to the rule's own packet counter, and
/// the replay agrees.
#[test]
fn syns_dropped_by_a_firewall_rule_are_named_with_the_rules_counts() {
    const ATTEMPTS: usize = 3;
    if !can_trace() {
        return;
    }
    if !has_nft() {
        return support::skip("doctor", NO_NFT);
    }
    if !support::kernel_has_drop_reason("NETFILTER_DROP") {
        return support::skip("doctor", "this kernel frees netfilter's drops without a reason (NETFILTER_DROP, 5.18+)");
    }
    let ns = Netns::new("docfirewall");
    nft(
        &ns,
        "add table inet twt; \
         add chain inet twt out { type filter hook output priority 0 ; }; \
         add rule inet twt out tcp dport 7001 counter drop; \
         add chain inet twt in { type filter hook input priority 0 ; }; \
         add rule inet twt in tcp dport 7002 counter drop",
    );
    let counted = |chain: &str| -> u64 {
        let out = support::output(
            Command::new("ip").args(["netns", "exec", &ns.name, "nft", "list", "chain"]).args(["inet", "twt", chain]),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = text.split("counter packets ").nth(1).unwrap_or_else(|| panic!("no counter: {text}"));
        after.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (status, live, replayed) = live_and_replayed(&ns, "firewall", &[], || {
        ns.run(|| {
            let _listeners: Vec<_> =
                ["127.0.0.1:7001", "127.0.0.1:7002"].map(|a| std::net::TcpListener::bind(a).unwrap()).into();
            for port in [7001, 7002] {
                let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
                for _ in 0..ATTEMPTS {
                    let attempt = std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_millis(1200));
                    assert!(attempt.is_err(), "the rule drops every SYN to {server}");
                }
            }
        });
        // A SYN looped back is dropped by the input rule in the receive softirq, which under
        // load runs after connect() has given up (a CI run's live doctor stopped before the
        // last one and saw 11 of 12): stop watching only once both counters have settled.
        let mut last = (counted("out"), counted("in"));
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = (counted("out"), counted("in"));
            if now == last {
                break;
            }
            last = now;
        }
    });
    let (sent, received) = (counted("out"), counted("in"));
    eprintln!("the rules dropped {sent} SYNs on their way out and {received} on their way in");
    assert!(sent >= ATTEMPTS as u64 && received >= ATTEMPTS as u64, "every attempt sent its SYN: {sent}, {received}");
    assert_eq!(status, 1, "a warning: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "netfilter_drops");
        assert_eq!(f["severity"], "warning", "{f:#}");
        assert_eq!(f["place"]["namespace"], ns.name.as_str());
        assert_eq!(f["place"]["destination"], "127.0.0.1:7001", "the first service dropped");
        let total = sent + received;
        let expected = format!(
            "NETFILTER_DROP drop events: {total}, {total} of them SYNs ({sent} sent by this host), to \
             127.0.0.1:7001 x{sent}, 127.0.0.1:7002 x{received}"
        );
        let evidence = f["evidence"][0].as_str().unwrap();
        if blind_of(report) == 0 {
            assert_eq!(evidence, expected, "the rules counted {sent} and {received}");
        } else {
            eprintln!("NOTE: the tracer missed up to {} events; the evidence was {evidence}", blind_of(report));
        }
        let text = f["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("Netfilter dropped {total} connection attempts (SYNs)")), "{text}");
    }
}

/// The guests have no nft, nor the nf_tables modules.
const NO_NFT: &str = "nft (nftables) is missing: `cargo xtask setup` installs it on the host; the guests have none";

/// Whether nft is here; without it the caller skips with [`NO_NFT`].
fn has_nft() -> bool {
    Command::new("nft").arg("--version").output().is_ok()
}

/// `nft RULES` inside `ns`.
fn nft(ns: &Netns, rules: &str) {
    support::run(Command::new("ip").args(["netns", "exec", &ns.name, "nft"]).arg(rules));
}

/// A listener on 127.0.0.1:7000 (in the calling thread's namespace) with its own `backlog`,
/// which std's `TcpListener::bind` does not take. Close-on-exec, as std's sockets are: a
/// process another test starts meanwhile must not inherit it and keep it open past its drop.
fn listener_with_backlog(backlog: i32) -> std::net::TcpListener {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a new socket, bound and listening; owned by the listener from here on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let (addr, len) = support::sockaddr_of("127.0.0.1:7000".parse().unwrap());
        assert_eq!(libc::bind(fd, std::ptr::addr_of!(addr).cast(), len), 0, "{}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, backlog), 0);
        std::net::TcpListener::from_raw_fd(fd)
    }
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

/// `ss` in the namespace: its TIME_WAIT sockets.
fn time_wait_in(ns: &Netns) -> usize {
    let out =
        support::output(Command::new("ip").args(["netns", "exec", &ns.name, "ss", "-Htan", "state", "time-wait"]));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A namespace with `tcp_fin_timeout` lowered to 10 s, the forums' TIME_WAIT "fix": 20
/// connections closed first by the client, watched until `ss` sees their TIME_WAIT sockets
/// gone. They lived 60 s, and the findings say so next to the namespace's own 10 s; the
/// lowered setting is named as fixing nothing; the peak is the 20 sockets the test made.
#[test]
fn a_lowered_fin_timeout_is_named_beside_time_wait_sockets_that_lived_60_s() {
    const CONNECTIONS: usize = 20;
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docfin");
    ns.sysctl("net.ipv4.tcp_fin_timeout", "10");
    let mut made = 0;
    // Without the drops family: before 6.11 other tests' crafted PAWS drops carry no
    // namespace and would reach this one's report (README, known issues), in the live run and
    // the recording unequally over its 65 s.
    let families = ["timewait", "portsearch", "state"];
    let (status, live, replayed) = live_and_replayed(&ns, "fin", &families, || {
        ns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), CONNECTIONS));
        made = time_wait_in(&ns);
        // TCP_TIMEWAIT_LEN is 60 s; the timer wheel may add a little.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(75);
        while time_wait_in(&ns) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        // Their deaths reach doctor.
        std::thread::sleep(std::time::Duration::from_secs(2));
    });
    assert_eq!(made, CONNECTIONS, "ss saw every TIME_WAIT socket");
    assert_eq!(time_wait_in(&ns), 0, "ss: all expired");
    // Before 6.11 other tests' crafted PAWS drops, unlabelled, pass the --netns filter and
    // warn (README, known issues): the status says so, nothing else may.
    assert!(status == 0 || (other_tests_drops_show() && status == 1), "notes only: {status}: {live:#}");
    for report in [&live, &replayed] {
        let lifetime = finding(report, "time_wait_lifetime");
        let text = lifetime["text"].as_str().unwrap();
        let median: f64 = text
            .strip_prefix("TIME_WAIT sockets lived ")
            .and_then(|t| t.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        // The timer wheel never fires early, and rounds a 60 s timer up by its level's
        // granularity: up to 4.096 s at HZ=1000 (this host's 6.18 measured 61.8 s), 2.048 s at
        // HZ=250; a busy emulated guest may run it a little later still.
        assert!((60.0..=65.0).contains(&median), "TCP_TIMEWAIT_LEN, not tcp_fin_timeout: {text}");
        assert!(text.contains(&format!("(tcp_fin_timeout is 10 s in {})", ns.name)), "the namespace's own: {text}");
        let lowered = finding(report, "fin_timeout_lowered");
        assert_eq!(lowered["place"]["namespace"], ns.name.as_str());
        assert!(lowered["text"].as_str().unwrap().contains("tcp_fin_timeout 10 s"), "{lowered:#}");
        only_notes_besides(report, None);
    }
    let peak = finding(&live, "time_wait_peak");
    assert!(peak["text"].as_str().unwrap().contains(&format!("({CONNECTIONS} sockets)")), "{peak:#}");
}

/// Timestamps off in a namespace whose client closes first: reuse cannot work there and PAWS
/// cannot protect it; a warning naming the namespace, and nothing else.
#[test]
fn timestamps_off_where_connections_are_made_is_a_warning() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("doctsoff");
    ns.sysctl("net.ipv4.tcp_timestamps", "0");
    let (status, live, replayed) = live_and_replayed(&ns, "tsoff", &[], || {
        ns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), 10));
    });
    assert_eq!(time_wait_in(&ns), 10, "ss");
    assert_eq!(status, 1, "a warning: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "timestamps_off");
        assert_eq!(
            (f["severity"].as_str(), f["place"]["namespace"].as_str()),
            (Some("warning"), Some(ns.name.as_str()))
        );
        assert!(f["remedies"][0]["action"].as_str().unwrap().contains("tcp_timestamps=1"), "{f:#}");
    }
}

/// Two namespaces joined by veth pair `n`, the client's end 10.77.n.1, the server's 10.77.n.2:
/// loopback would put both ends in one namespace (a namespace that only accepts needs its
/// clients elsewhere; two peers with different settings need two namespaces).
/// `false` (the skip recorded) where the kernel has no veth device type.
#[must_use]
fn veth_pair(client: &Netns, server: &Netns, n: u8) -> bool {
    let (c, s) = (format!("twc{n}"), format!("tws{n}"));
    let link = ["link", "add", &c, "netns", &client.name, "type", "veth", "peer", "name", &s, "netns", &server.name];
    let made = support::output(Command::new("ip").args(link));
    if !made.status.success() {
        let why = String::from_utf8_lossy(&made.stderr);
        if why.contains("Unknown device type") {
            support::skip("doctor", NO_VETH);
            return false;
        }
        panic!("veth pair {c}/{s}: {why}");
    }
    for (ns, dev, addr) in [(client, &c, format!("10.77.{n}.1/24")), (server, &s, format!("10.77.{n}.2/24"))] {
        support::run(Command::new("ip").args(["-n", &ns.name, "addr", "add", &addr, "dev", dev]));
        support::run(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
    }
    true
}

/// The guests' kernels build veth as a module and their initramfs loads none.
const NO_VETH: &str = "no veth device type (a module this kernel did not load); the host runs this test";

/// `tcp_tw_reuse=1` on a namespace that only accepts (a server closing first, its clients in
/// another namespace across a veth pair): reuse applies to connect() only, so the setting does
/// nothing for its TIME_WAIT sockets. A note naming that namespace; no destination of its own.
#[test]
fn reuse_on_a_namespace_that_only_accepts_is_named_as_doing_nothing() {
    if !can_trace() {
        return;
    }
    let server = Netns::new("docaccept");
    let client = Netns::new("docaclient");
    if !veth_pair(&client, &server, 0) {
        return;
    }
    server.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let (status, live, replayed) = live_and_replayed(&server, "accept", &[], || {
        let listener = server.run(|| std::net::TcpListener::bind("10.77.0.2:7000").unwrap());
        // The listener (and what it accepts) stays in the server's namespace; the thread that
        // connects is in the client's.
        client.run(move || support::server_closes_first(&listener, 10, None));
    });
    assert_eq!(time_wait_in(&server), 10, "ss: the server holds the TIME_WAIT sockets");
    assert_eq!(time_wait_in(&client), 0, "ss: the client holds none");
    assert!(status == 0 || (other_tests_drops_show() && status == 1), "a note: {status}: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "reuse_only_accepting");
        assert_eq!(
            (f["severity"].as_str(), f["place"]["namespace"].as_str()),
            (Some("info"), Some(server.name.as_str()))
        );
    }
}

/// The same client workload toward two peers, one that sends TCP timestamps and one whose
/// namespace has them off: a 100-port client range runs out toward each (100 connections
/// closed first by the client, then one more that fails). Reuse is possible toward the first
/// and impossible toward the second, and each finding says so with the count of the
/// connections it saw (`tw_ts_recent_stamp` at each TIME_WAIT birth, on every backend).
#[test]
fn reuse_is_possible_toward_a_peer_with_timestamps_and_not_toward_one_without() {
    const RANGE: (u16, u16) = (40_000, 40_099);
    const PORTS: usize = 100;
    if !can_trace() {
        return;
    }
    let client = Netns::new("doctsclient");
    let with = Netns::new("doctswith");
    let without = Netns::new("doctswithout");
    if !(veth_pair(&client, &with, 1) && veth_pair(&client, &without, 2)) {
        return;
    }
    client.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    client.sysctl("net.ipv4.tcp_tw_reuse", "0");
    without.sysctl("net.ipv4.tcp_timestamps", "0");
    let peers = ["10.77.1.2:7000", "10.77.2.2:7000"];
    let mut refused = Vec::new();
    let (_, live, replayed) = live_and_replayed(&client, "timestamps", &[], || {
        for (server, peer) in [&with, &without].into_iter().zip(peers) {
            let listener = server.run(move || std::net::TcpListener::bind(peer).unwrap());
            let failed = client.run(move || {
                support::client_closes_first(&listener, PORTS);
                std::net::TcpStream::connect(peer).err().and_then(|e| e.raw_os_error())
            });
            refused.push(failed);
        }
    });
    assert_eq!(refused, [Some(libc::EADDRNOTAVAIL); 2], "each destination's 100 ports ran out");
    for peer in peers {
        assert_eq!(client.ports_to(peer, RANGE).len(), PORTS, "ss toward {peer}");
    }
    for report in [&live, &replayed] {
        let toward = |peer: &str| -> &Value {
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["kind"] == "port_space" && f["place"]["destination"] == peer)
                .unwrap_or_else(|| panic!("no port_space finding toward {peer}: {report:#}"))
        };
        let reuse = |f: &Value| -> String {
            f["remedies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["action"].as_str().unwrap().contains("tcp_tw_reuse=1"))
                .map(|r| r["tradeoff"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("no reuse remedy: {f:#}"))
        };
        let (yes, no) = (toward(peers[0]), toward(peers[1]));
        let can = format!("it can work: the peer sent timestamps on all {PORTS} connections");
        assert!(reuse(yes).contains(&can), "{yes:#}");
        let cannot = format!("it cannot work: the peer sent no timestamps on any of the {PORTS} connections");
        assert!(reuse(no).contains(&cannot), "{no:#}");
        for (f, seen) in [(yes, PORTS), (no, 0)] {
            let line = format!("peer timestamps on {seen} of {PORTS} TIME_WAIT sockets holding ports toward it");
            assert!(f["evidence"].as_array().unwrap().iter().any(|e| e == line.as_str()), "{f:#}");
        }
    }
}
