//! `twtrace scenario` against the real kernel, recorded: each scenario's steps must hold what
//! they say (sock_diag agrees), and twtrace must have seen exactly the connect() searches and
//! failures the generator made. The scenario checks both itself; these tests check that it
//! does, and the figures a study would publish.

#[path = "support/schema.rs"]
mod schema;
mod support;

use std::process::Command;

use serde_json::Value;
use support::can_trace;

/// Runs a scenario recorded (on the forced backend, if any) and returns its JSON report.
fn scenario(args: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!("twt-scenario-{}-{}", std::process::id(), args[0]));
    std::fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("run.twr");
    let _ = std::fs::remove_file(&recording);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_twtrace"));
    cmd.arg("scenario").args(args).arg("--record").arg(&recording).arg("--json");
    if let Some(b) = support::forced_backend() {
        cmd.args(["--backend", &b]);
    }
    let out = support::output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); status {}; stderr:\n{stderr}", out.status));
    schema::assert_conforms(&schema::load("scenario"), &report, "scenario --json");
    // Under emulation, with three tracers side by side (the matrix runs the backends at once),
    // twtrace missed up to 7.5 % of a step's events without counting them: 6.12 fentry 98 of
    // 100 searches, not explained. (5.10 kprobe lost up to 35 % until its kretprobes got room
    // for concurrent searches: tests/portsearch.rs.) A check of twtrace's counts may then fall
    // short by up to 10 % there. Everything else, and everything on the host, is exact.
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] != true)
        .filter(|c| {
            let twtrace_count = c["what"].as_str().unwrap().contains("twtrace");
            let (expected, observed) = (c["expected"].as_u64().unwrap(), c["observed"].as_u64().unwrap());
            !(support::emulated() && twtrace_count && expected.abs_diff(observed) <= slack(expected.max(observed)))
        })
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\nstderr:\n{stderr}");
    assert!(out.status.success() || report["passed"] == false, "{report:#}\nstderr:\n{stderr}");
    if let Some(b) = support::forced_backend() {
        assert_eq!(report["twtrace"]["backends"]["portsearch"], b.as_str(), "{report:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// Whether this kernel has IP_LOCAL_PORT_RANGE (6.3+, and Debian's 6.1), asked directly.
fn kernel_has_port_range_option() -> bool {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    use std::os::fd::AsRawFd as _;
    let mut value = 0u32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: valid descriptor and out-pointers (51: IP_LOCAL_PORT_RANGE).
    unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_IP, 51, (&mut value as *mut u32).cast(), &mut len) == 0
    }
}

/// Whether the report's kernel (`uname -r`) is at least `major.minor`.
fn kernel_at_least(report: &Value, major: u32, minor: u32) -> bool {
    let release = report["kernel"].as_str().unwrap();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap(), parts.next().unwrap()) >= (major, minor)
}

/// How far a count of twtrace's may fall short under emulation (see [`scenario`]): 0 on the
/// host. 10 %, and 20 % under kprobe: a kprobe hit while another kprobe's handler runs is
/// missed by the kprobe itself, which twtrace does not count yet (docs/kernels.md, known issues; the
/// same allowance as tests/containers.rs). In a rehearsal on 6.12 kprobe a paws-nat check of
/// twtrace's counts was 8 against the kernel's 10.
fn slack(expected: u64) -> u64 {
    if !support::emulated() {
        return 0;
    }
    let tenths = if support::kprobe_emulated() { 2 } else { 1 };
    (expected * tenths).div_ceil(10).max(1)
}

/// twtrace's count `seen` of something that happened `made` times: exact on the host; under
/// emulation within [`slack`] either way (a missed birth moves a derived count up).
#[track_caller]
fn assert_seen(seen: u64, made: u64, what: &str) {
    assert!(seen.abs_diff(made) <= slack(made.max(seen)), "{what}: twtrace saw {seen} of {made}");
}

fn failures(v: &Value, name: &str) -> u64 {
    v["failures"][name].as_u64().unwrap_or(0)
}

#[test]
fn search_cost_holds_each_step_and_twtrace_sees_every_probe() {
    if !can_trace() {
        return;
    }
    const PROBES: u64 = 10;
    let report = scenario(&["search-cost", "--range", "100", "--steps", "0,50,100", "--probes", "10"]);
    let runs = report["runs"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["established/sysctl", "established/sockopt", "time-wait/sysctl", "time-wait/sockopt"]);
    for run in runs {
        let sockopt = run["label"].as_str().unwrap().ends_with("sockopt");
        if sockopt && !kernel_has_port_range_option() {
            assert!(run["unavailable"].as_str().unwrap().contains("IP_LOCAL_PORT_RANGE"), "{run:#}");
            continue;
        }
        assert!(run["unavailable"].is_null(), "{run:#}");
        let steps = run["steps"].as_array().unwrap();
        let held: Vec<u64> = steps.iter().map(|s| s["held"].as_u64().unwrap()).collect();
        assert_eq!(held, [0, 50, 100], "{run:#}");
        for s in steps {
            assert_eq!(s["held_kernel"], s["held"], "sock_diag lists what the generator holds: {s:#}");
            assert_eq!(s["attempts"], PROBES);
            let seen = &s["twtrace"];
            assert_seen(seen["searches"].as_u64().unwrap(), PROBES, &format!("probe searches: {s:#}"));
            // A free port is found while one exists; with none left, every probe fails.
            let expected_failures = if s["held"] == 100 { PROBES } else { 0 };
            // (Under emulation a TIME_WAIT holder can die early by an RST and free a port.)
            assert_seen(failures(s, "EADDRNOTAVAIL"), expected_failures, &format!("probes failed: {s:#}"));
            assert_seen(failures(seen, "EADDRNOTAVAIL"), expected_failures, &format!("failures: {s:#}"));
            // Candidates: none on the tracepoint backend; else a full range has them all
            // examined (calls of __inet_check_established, one per port with a bucket; two per
            // TIME_WAIT-held port from 6.15, whose lockless pre-pass checks it again locked).
            let per_port = if run["label"].as_str().unwrap().starts_with("time-wait") && kernel_at_least(&report, 6, 15)
            {
                2.0
            } else {
                1.0
            };
            match seen["candidates"]["max"].as_f64() {
                None => assert_eq!(report["twtrace"]["backends"]["portsearch"], "tracepoint", "{s:#}"),
                Some(max) if s["held"] == 100 => assert_eq!(max, 100.0 * per_port, "{s:#}"),
                Some(_) => {}
            }
        }
    }
}

#[test]
fn client_exhaustion_fails_exactly_when_the_range_is_full() {
    if !can_trace() {
        return;
    }
    let report = scenario(&["client-exhaustion", "--range", "200", "--rate", "0", "--after", "5", "--bins", "2"]);
    let run = &report["runs"][0];
    let steps = run["steps"].as_array().unwrap();
    let labels: Vec<&str> = steps.iter().map(|s| s["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["0-50%", "50-100%", "full"]);
    // A TIME_WAIT socket the kernel ends early frees its port for one more connect() (under
    // emulation a few die by an RST, see docs/studies/client-exhaustion.md): the range's 200,
    // plus at most one per early death twtrace saw.
    let tw = &run["time_wait"];
    let early = tw["early_lifetime_ms"]["n"].as_u64().unwrap_or(0);
    let connected: u64 = steps.iter().map(|s| s["connected"].as_u64().unwrap()).sum();
    assert!(
        connected >= 200 && connected <= 200 + early + slack(200),
        "every port connected once, then failures: {run:#}"
    );
    assert_seen(tw["births"].as_u64().unwrap(), connected, &format!("one TIME_WAIT birth per connection: {tw:#}"));
    let first: u64 =
        report["params"]["first_failure_after"].as_str().unwrap().trim_end_matches(" connects").parse().unwrap();
    assert!((200..=connected).contains(&first), "no failure before the range was full: {report:#}");
    if !support::emulated() {
        assert_eq!((connected, first, early), (200, 200, 0), "on the host nothing dies early here: {run:#}");
    }
    let full = &steps[2];
    assert_eq!(failures(full, "EADDRNOTAVAIL"), 5, "{full:#}");
    assert_seen(failures(&full["twtrace"], "EADDRNOTAVAIL"), 5, &format!("{full:#}"));
    let searches: u64 = steps.iter().map(|s| s["twtrace"]["searches"].as_u64().unwrap()).sum();
    assert_seen(searches, connected + 5, &format!("every connect(): {report:#}"));
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args([
        "scenario",
        "search-cost",
        "--steps",
        "120",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("percentages"), "{stderr}");
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(["scenario", "tw-nothing"]));
    assert!(!out.status.success());
}

#[test]
fn tw_reuse_takes_over_time_wait_only_where_the_policy_allows() {
    if !can_trace() {
        return;
    }
    let report = scenario(&["tw-reuse", "--range", "100", "--rate", "100", "--seconds", "1.6"]);
    for run in report["runs"].as_array().unwrap() {
        let label = run["label"].as_str().unwrap();
        if !run["unavailable"].is_null() {
            assert!(label.contains("delay"), "only the reuse delay may be missing: {run:#}");
            continue;
        }
        let (fill, full) = (&run["steps"][0], &run["steps"][1]);
        let tw = &run["time_wait"];
        // Early deaths by every path (reused, reset, ...): all but expiries.
        let killed: u64 = tw["deaths"]
            .as_object()
            .map(|by| by.iter().filter(|(path, _)| *path != "expired").map(|(_, n)| n.as_u64().unwrap()).sum())
            .unwrap_or(0);
        // tcp_tw_reuse 2 means loopback addresses only (by address: 198.51.100.1 on lo is not).
        let allowed = !(label.starts_with("reuse=0") || label == "reuse=2 non-loopback");
        if allowed {
            assert!(full["connected"].as_u64().unwrap() > 0, "{label}: some connect() took a TIME_WAIT over: {run:#}");
        } else {
            // No takeover (the scenario checked TWRecycled is 0): a connect() succeeds only on a
            // port some TIME_WAIT socket freed by dying early another way (under emulation the
            // kernel ends a few by an RST, see docs/studies/client-exhaustion.md).
            assert_eq!(fill["connected"], 100, "{label}: {run:#}");
            let connected_full = full["connected"].as_u64().unwrap();
            assert!(connected_full <= killed + slack(connected_full), "{label}: {run:#}");
        }
        // Every connection left a TIME_WAIT socket; every takeover killed one (the scenario
        // checked the takeovers against TWRecycled too); at most the range's worth remain
        // (under emulation a fill with reuse may leave ports of one parity free).
        let connected = fill["connected"].as_u64().unwrap() + full["connected"].as_u64().unwrap();
        let remaining = run["time_wait_at_end"].as_u64().unwrap();
        assert!(remaining <= 100, "{label}: {run:#}");
        let births = tw["births"].as_u64().unwrap();
        assert_seen(births, connected, &format!("{label} births: {tw:#}"));
        // The kernel's early deaths: connections made less sockets left (not twtrace's births
        // less them: a kprobe run under emulation saw 99 births of 100 with 100 left).
        assert_seen(killed, connected.saturating_sub(remaining), &format!("{label} deaths: {tw:#}"));
    }
}

#[test]
fn tw_buckets_keeps_exactly_the_namespaces_limit() {
    if !can_trace() {
        return;
    }
    let report = scenario(&["tw-buckets", "--limit", "40", "--times", "3"]);
    let run = &report["runs"][0];
    assert_seen(run["time_wait_at_end"].as_u64().unwrap(), 40, &format!("the limit's worth kept: {run:#}"));
    assert_eq!(run["time_wait_refused"], 80, "TCPTimeWaitOverflow counted the rest: {run:#}");
    assert_seen(run["time_wait"]["births"].as_u64().unwrap(), 40, &format!("only the kept ones born: {run:#}"));
    assert_eq!(run["steps"][0]["connected"], 120);
    let default: u64 = report["params"]["namespace_default_limit"].as_str().unwrap().parse().unwrap();
    assert!(default > 0, "{report:#}");
    // The namespace made under tcp_child_ehash_entries=256 (the default): half of 256 (6.1+).
    let child = &report["runs"][1];
    if child["unavailable"].is_null() {
        let limit = report["params"]["child_namespace_default_limit"].as_str().unwrap();
        assert_eq!(limit, "128", "{report:#}");
        assert_seen(child["time_wait_at_end"].as_u64().unwrap(), 128, &format!("the child's limit kept: {child:#}"));
        assert_eq!(child["time_wait_refused"], 256, "three times the limit made: {child:#}");
        assert_seen(child["time_wait"]["births"].as_u64().unwrap(), 128, &format!("child births: {child:#}"));
    } else {
        assert!(!kernel_at_least(&report, 6, 1), "the sysctl is missing on a 6.1+ kernel: {report:#}");
    }
}

/// SOCK_DESTROY (`ss -K`) on TIME_WAIT sockets: ended, and named `aborted`, where tcp_abort()
/// takes TIME_WAIT sockets (6.0+) and the kernel has CONFIG_INET_DIAG_DESTROY; refused with
/// EOPNOTSUPP, and the sockets left alone, elsewhere. The scenario checks the counts against the
/// kernel's answers and sock_diag; this test checks the outcome by kernel.
#[test]
fn tw_abort_ends_time_wait_sockets_where_the_kernel_can() {
    if !can_trace() {
        return;
    }
    let report = scenario(&["tw-abort", "--sockets", "10"]);
    let run = &report["runs"][0];
    let params = &report["params"];
    if params["sock_diag_tcp"] != "yes" {
        // The VM lab's guests load no module, and Debian builds sock_diag's TCP handler as
        // modules: nothing reaches tcp_abort(), which the run says, and nothing ends.
        assert!(run["unavailable"].is_string(), "{run:#}");
        assert_eq!(run["time_wait_at_end"], 10, "{run:#}");
        return;
    }
    let destroys = params["destroy_established"] == "ok";
    if destroys && kernel_at_least(&report, 6, 0) {
        assert_eq!(params["destroy_time_wait"], "ok 10", "{report:#}");
        assert_eq!(run["time_wait_at_end"], 0, "{run:#}");
        assert_seen(run["time_wait"]["deaths"]["aborted"].as_u64().unwrap_or(0), 10, &format!("{run:#}"));
    } else {
        assert_eq!(params["destroy_time_wait"], "EOPNOTSUPP 10", "{report:#}");
        assert_eq!(run["time_wait_at_end"], 10, "{run:#}");
        assert!(run["time_wait"]["deaths"]["aborted"].is_null(), "{run:#}");
    }
}

/// Every early death made on purpose, and twtrace naming each one's path: the scenario checks
/// the counts (against TWRecycled, TCPTimeWaitOverflow, sock_diag and what it did); this test
/// checks that each run produced its path and no other.
#[test]
fn tw_deaths_names_the_path_of_each_early_death() {
    if !can_trace() {
        return;
    }
    const SOCKETS: u64 = 20;
    let report = scenario(&["tw-deaths", "--sockets", &SOCKETS.to_string()]);
    let runs = report["runs"].as_array().unwrap();
    let path_of = |label: &str| -> Option<&str> {
        match label {
            l if l.starts_with("reused") => Some("reused"),
            l if l.starts_with("incoming") => Some("incoming"),
            l if l.starts_with("reset") && !l.contains("rfc1337=1") => Some("reset"),
            l if l.starts_with("namespace exit") => Some("namespace_exit"),
            _ => None,
        }
    };
    assert_eq!(runs.len(), 7, "{report:#}");
    for run in runs {
        let label = run["label"].as_str().unwrap();
        let deaths = run["time_wait"]["deaths"].as_object().cloned().unwrap_or_default();
        let early = |keep: &dyn Fn(&str) -> bool| -> u64 {
            deaths.iter().filter(|(p, _)| *p != "expired" && keep(p)).map(|(_, n)| n.as_u64().unwrap()).sum()
        };
        let path = path_of(label);
        let ours = path.map_or(0, |path| early(&|p| p == path));
        // Under emulation the kernel ends a few sockets early by another path of its own (an
        // RST; see docs/studies/tw-deaths.md); on the host none.
        let others = early(&|p| Some(p) != path);
        assert!(others <= slack(SOCKETS), "{label}: early deaths by another path: {run:#}");
        match path {
            Some(_) => assert_seen(ours + others, SOCKETS, &format!("{label}: {run:#}")),
            // The RST ignored (tcp_rfc1337=1), the limit's refusals (never born): no death.
            None => assert_eq!(ours, 0),
        }
    }
}

/// Clients behind one address with a clock behind the first ones': each SYN rejected by PAWS
/// on the server's TIME_WAIT, which the RST that follows ends (tcp_rfc1337=0) or does not
/// (=1, the clients are still waiting); with the same clock, each SYN opens a connection over
/// the TIME_WAIT at once. The scenario checks the counts against the kernel's; this test checks
/// the outcome each run is about.
#[test]
fn paws_nat_clients_behind_one_address_meet_the_servers_time_wait() {
    if !can_trace() {
        return;
    }
    const CLIENTS: u64 = 10;
    let report = scenario(&["paws-nat", "--clients", &CLIENTS.to_string()]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{report:#}");
    let later = |run: &Value, field: &str| run["later_clients"][field].as_u64().unwrap();
    let deaths = |run: &Value, path: &str| run["time_wait"]["deaths"][path].as_u64().unwrap_or(0);
    for run in runs {
        let label = run["label"].as_str().unwrap();
        match label {
            "clock behind, tcp_rfc1337=0" => {
                assert_eq!(later(run, "connected"), CLIENTS, "{run:#}");
                assert_eq!(later(run, "paws_rejections"), CLIENTS, "{run:#}");
                assert_seen(deaths(run, "reset"), CLIENTS, &format!("{run:#}"));
            }
            "clock behind, tcp_rfc1337=1" => {
                assert_eq!(later(run, "still_waiting"), CLIENTS, "{run:#}");
                assert!(later(run, "paws_rejections") >= CLIENTS, "{run:#}");
                assert_eq!(deaths(run, "reset"), 0, "{run:#}");
            }
            "same clock" => {
                assert_eq!((later(run, "connected"), later(run, "paws_rejections")), (CLIENTS, 0), "{run:#}");
                assert_seen(deaths(run, "incoming"), CLIENTS, &format!("{run:#}"));
            }
            other => panic!("unexpected run {other}"),
        }
    }
}
