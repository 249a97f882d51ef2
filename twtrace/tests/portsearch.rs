//! Ephemeral port exhaustion against the real kernel: a client in its own namespace with a
//! ten-port range; every EADDRNOTAVAIL it gets is attributed to it and its destination.

mod support;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use support::{NETNS_THREAD, Netns, can_trace};

const RANGE: (u16, u16) = (40_000, 40_009);
const EXTRA_ATTEMPTS: usize = 5;

#[test]
fn exhausted_range_failures_are_attributed_to_process_and_destination() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("exhaust");
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    let Some(tracer) = support::tracer_for("portsearch", &["--netns", &ns.name]) else { return };
    // The family alone: on the tracepoint backend its hooks are the state and TIME_WAIT
    // families' programs, which must then report nothing of their own.
    let Some(alone) = support::tracer_for("portsearch", &["--netns", &ns.name, "--family", "portsearch"]) else {
        return;
    };
    let (server, connected, failures) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:5000").unwrap();
        let server = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut failures = 0;
        // Fill the range, then keep knocking: each further connect() finds no port.
        loop {
            match TcpStream::connect(server) {
                Ok(stream) => held.push((stream, listener.accept().unwrap())),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
                    failures += 1;
                    break;
                }
            }
            assert!(held.len() <= 10, "more connections than ports");
        }
        for _ in 0..EXTRA_ATTEMPTS {
            let e = TcpStream::connect(server).expect_err("range is exhausted");
            assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
            failures += 1;
        }
        (server, held.len(), failures)
    });
    assert_eq!(connected, usize::from(RANGE.1 - RANGE.0 + 1), "every port of the range was usable");

    let expected_events = connected + failures;
    tracer.wait_for("port_search", Duration::from_secs(10), |e| {
        e.iter().filter(|v| v["op"] == "connect").count() >= expected_events
    });
    alone.wait_for("port_search", Duration::from_secs(10), |e| e.len() >= expected_events);
    let approximate = tracer.ready_line.contains("portsearch: tracepoint");
    let lines = tracer.stop();
    std::thread::sleep(Duration::from_millis(200));
    let alone = alone.stop();
    // Nothing but port searches: connect()'s, and on fentry/kprobe the listener's bind().
    let others: Vec<_> =
        alone.iter().filter(|v| !matches!(v["event"].as_str(), Some("port_search" | "netstat" | "summary"))).collect();
    let alone_connects = alone.iter().filter(|v| v["event"] == "port_search" && v["op"] == "connect").count();
    // Short only by runs the kernel skipped and said so (a busy 6.18 guest saw 15 of 16).
    let skipped = support::skipped_runs(&alone) as usize;
    assert!(
        others.is_empty() && alone_connects <= expected_events && alone_connects + skipped >= expected_events,
        "--family portsearch alone: {alone_connects} searches of {expected_events}, {skipped} runs skipped; others {others:?}"
    );
    let connects: Vec<_> = lines.iter().filter(|v| v["event"] == "port_search" && v["op"] == "connect").collect();
    let failed: Vec<_> = connects.iter().filter(|v| v["errno"] != 0).collect();
    assert_eq!(connects.len(), expected_events, "one event per connect()");
    assert_eq!(failed.len(), failures, "{failed:?}");
    for f in &failed {
        assert_eq!(f["error"], "EADDRNOTAVAIL", "{f}");
        assert_eq!(f["pid"], std::process::id(), "{f}");
        assert_eq!(f["comm"], NETNS_THREAD, "{f}");
        assert_eq!(support::addr(f, "remote"), server, "{f}");
        assert_eq!(f["approximate"], approximate, "only the tracepoint backend times from SYN_SENT to the SYN");
        // No port was kept.
        assert_eq!(support::addr(f, "local").port(), 0, "{f}");
        if !approximate {
            // fentry/kprobe see the search: every port of the range was tried.
            assert_eq!(f["candidates"], u64::from(RANGE.1 - RANGE.0 + 1), "{f}");
        }
    }
    let mut chosen = std::collections::BTreeSet::new();
    for ok in connects.iter().filter(|v| v["errno"] == 0) {
        assert_eq!(ok["pid"], std::process::id(), "{ok}");
        assert_eq!(support::addr(ok, "remote"), server, "{ok}");
        let port = support::addr(ok, "local").port();
        assert!((RANGE.0..=RANGE.1).contains(&port), "chosen port {port} is in the range: {ok}");
        chosen.insert(port);
    }
    assert_eq!(chosen.len(), connected, "each connect() that got a port got its own");
    // The tracepoint-only fingerprint: SYN_SENT -> CLOSE before a local port was chosen.
    let portless: Vec<_> = lines
        .iter()
        .filter(|v| v["event"] == "state" && v["old_state"] == "SYN_SENT" && v["new_state"] == "CLOSE")
        .filter(|v| support::addr(v, "local").port() == 0)
        .collect();
    assert_eq!(portless.len(), failures, "{portless:?}");
    for p in &portless {
        assert_eq!(p["task_pid"], std::process::id(), "{p}");
        assert_eq!(support::addr(p, "remote"), server, "{p}");
    }
    let _: SocketAddr = server;
}

/// Many connect() searches at once through a full range, each trying every port and yielding
/// the CPU once per candidate (`cond_resched()` in `__inet_hash_connect`): far more searches
/// under way than there are CPUs. Every one is reported, or counted as missed. On the kprobe
/// backend that takes kretprobes with room for them: the kernel's default for a perf-made one
/// is a return instance per CPU on 5.10 (without CONFIG_PREEMPTION) and 10 on 6.x, and it
/// silently lost 35 % of the searches in a 2-CPU 5.10 guest. twtrace makes its kretprobes
/// in tracefs instead (`kernel::kprobe`), and they are there exactly while it runs.
#[test]
fn concurrent_searches_through_a_full_range_are_each_reported() {
    const RANGE: (u16, u16) = (41_000, 41_199);
    const THREADS: usize = 24;
    const EACH: usize = 4;
    if !can_trace() {
        return;
    }
    let ns = Netns::new("concur");
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    let Some(tracer) = support::tracer_for("portsearch", &["--netns", &ns.name, "--family", "portsearch"]) else {
        return;
    };
    let kprobe = tracer.ready_line.contains("portsearch: kprobe");
    let pid = tracer.pid();
    // `kprobe_events` lines of the tracer's own probes (`r4096:twtrace/twt_PID_N_function ...`).
    let ours = || -> Vec<String> {
        let events = std::fs::read_to_string("/sys/kernel/tracing/kprobe_events").unwrap_or_default();
        events.lines().filter(|l| l.contains(&format!("twtrace/twt_{pid}_"))).map(str::to_owned).collect()
    };
    if kprobe {
        let lines = ours();
        assert!(lines.iter().any(|l| l.starts_with("r4096:")), "a kretprobe with room for 4096 calls: {lines:?}");
    }
    let (held, failures) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:5001").unwrap();
        let server = listener.local_addr().unwrap();
        let mut held = Vec::new();
        // Fill the range: the connect() that finds no port ends it, and is a search too.
        loop {
            match TcpStream::connect(server) {
                Ok(stream) => held.push((stream, listener.accept().unwrap())),
                Err(e) => break assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}"),
            }
        }
        let failures: usize = std::thread::scope(|s| {
            let knockers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(move || {
                        (0..EACH)
                            .filter(|_| {
                                let e = TcpStream::connect(server).expect_err("the range is full");
                                assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
                                true
                            })
                            .count()
                    })
                })
                .collect();
            knockers.into_iter().map(|k| k.join().unwrap()).sum()
        });
        (held.len(), failures + 1)
    });
    assert_eq!(held, usize::from(RANGE.1 - RANGE.0 + 1));
    let made = held + failures;
    tracer.wait_for("port_search", Duration::from_secs(20), |e| {
        e.iter().filter(|v| v["op"] == "connect").count() >= made
    });
    let lines = tracer.stop();
    let seen = lines.iter().filter(|v| v["event"] == "port_search" && v["op"] == "connect").count();
    let blind = lines
        .iter()
        .map(|v| match v["event"].as_str() {
            Some("lost") => v["count"].as_u64().unwrap_or(0),
            Some("netstat") => v["deltas"]["SkippedRuns"].as_u64().unwrap_or(0),
            _ => 0,
        })
        .sum::<u64>() as usize;
    // Exact on the host. Under emulation, with three tracers side by side, a kprobe program is
    // still skipped now and then while another BPF program runs on its CPU, uncounted before
    // 6.7: 3 % there, against the third and more a kretprobe short of instances loses.
    let slack = if support::emulated() { made.div_ceil(33) } else { 0 };
    assert!(seen <= made && made - seen <= blind + slack, "{seen} of {made} searches reported, {blind} missed");
    if kprobe {
        assert_eq!(ours(), Vec::<String>::new(), "twtrace removes its kprobe events when it exits");
    }
}
