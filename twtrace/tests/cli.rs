//! The command line as scripts and monitoring rely on it (issue 29): exit statuses, the old
//! spellings of flags, `--version`, the log format, and every command's `--json` checked
//! against its schema in docs/schemas/. Everything here runs unprivileged, on a recording
//! written with the library, a stand-in flight recorder and loopback churn, but `probes
//! --json` on the live kernel, which needs root (support::can_trace).

#[path = "support/schema.rs"]
mod schema;
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use twtrace::{
    event::{
        DeathReason, Event, ExistingSocket, NamespaceDescription, PortSearchEvent, Process, SearchOp, SocketFlow,
        Sysctls, TimeWaitChange, TimeWaitEvent, TimeWaitSubstate,
    },
    record::{Recorder, Trailer, control::Control},
    source_info::SourceInfo,
    time::WallClock,
};

fn twtrace(args: &[&str]) -> Output {
    support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(args))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("twtrace-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const S: u64 = 1_000_000_000;
const START: u64 = 100 * S;
/// The namespaces the recording's header names.
const HOST_NS: u32 = 4026531840;
const POD_NS: u32 = 4026532001;

/// A recording of a client in namespace `tw-a` with a ten-port range, nine ports held by
/// TIME_WAIT sockets and three connect()s failing with EADDRNOTAVAIL (a critical finding
/// with figures); one socket born and dying in the host's namespace.
fn recording(dir: &Path) -> PathBuf {
    let flow =
        |local: &str, remote: &str| SocketFlow { local: local.parse().unwrap(), remote: remote.parse().unwrap() };
    let sysctls = Sysctls {
        ip_local_port_range: (32768, 32777),
        tcp_max_tw_buckets: Some(100),
        tcp_tw_reuse: Some(0),
        tcp_timestamps: Some(1),
        tcp_fin_timeout: Some(60),
    };
    let info = SourceInfo {
        host: "web-7".into(),
        kernel: "6.12.117".into(),
        clock: WallClock { realtime_ns: 1_795_000_000 * S, monotonic_ns: START },
        started_ns: START,
        sysctls: sysctls.clone(),
        backends: Vec::new(),
        namespaces: vec![
            NamespaceDescription { netns: HOST_NS, name: "host".into(), sysctls: Some(sysctls.clone()), live: true },
            NamespaceDescription { netns: POD_NS, name: "tw-a".into(), sysctls: Some(sysctls), live: true },
        ],
        netns: None,
        port: None,
        filter: String::new(),
        sockets: (0..9)
            .map(|i| ExistingSocket {
                netns: POD_NS,
                flow: flow(&format!("10.0.0.1:{}", 32768 + i), "10.0.0.2:80"),
                state: 6,
                expires_ms: 50_000,
            })
            .collect(),
        segment: None,
    };
    let path = dir.join("incident.twr");
    let mut rec = Recorder::create(&path, &info, false).unwrap();
    let process = Some(Process { pid: 4242, tid: 4242, comm: "curl".into(), cgroup_id: 1 });
    let mut events: Vec<Event> = (0..3)
        .map(|i| {
            Event::PortSearch(PortSearchEvent {
                ts_ns: START + (2 + i) * S,
                op: SearchOp::Connect,
                duration_ns: 40_000,
                errno: 99,
                candidates: Some(10),
                approximate: false,
                netns: POD_NS,
                remote: Some("10.0.0.2:80".parse().unwrap()),
                local: Some("10.0.0.1:0".parse().unwrap()),
                process,
            })
        })
        .collect();
    let tw = |ts, change| {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: ts,
            tw_id: 1,
            flow: Some(flow("10.0.0.3:80", "192.0.2.9:5555")),
            netns: HOST_NS,
            owner: process,
            change,
        })
    };
    let birth = TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None };
    events.push(tw(START + S, birth));
    events.push(tw(START + 61 * S, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * S }));
    events.sort_by_key(Event::ts_ns);
    for e in &events {
        rec.write(e).unwrap();
    }
    let trailer =
        Trailer { events: events.len() as u64, lost: 0, ended_ns: START + 70 * S, decoder: Default::default() };
    rec.finish(&trailer).unwrap();
    path
}

#[test]
fn doctor_exits_3_on_usage_errors_and_other_commands_2() {
    for args in [&["doctor", "--no-such-flag"][..], &["doctor", "--duration", "soon"], &["--max-rows", "x", "doctor"]] {
        let out = twtrace(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("error:"), "clap says what was wrong: {}", text(&out.stderr));
    }
    for args in [&["stat", "--no-such-flag"][..], &["stat", "--interval", "soon"], &["serve", "--top", "x"]] {
        assert_eq!(twtrace(args).status.code(), Some(2), "{args:?}");
    }
    let help = twtrace(&["doctor", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("3 doctor could not run"), "{}", text(&help.stdout));
}

#[test]
fn version_names_the_commit_the_build_date_and_the_bpf_object() {
    let out = twtrace(&["--version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    // `twtrace 0.1.0 (commit abc1234, built 2026-12-08, BPF object crc32 3a362e75)`
    let commit = version.split("(commit ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    assert!(!commit.is_empty(), "{version}");
    let date = version.split("built ").nth(1).map(|r| &r[..10]).unwrap_or_default();
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.starts_with("20"), "{version}");
    let crc = version.split("crc32 ").nth(1).map(|r| r.trim_end().trim_end_matches(')')).unwrap_or_default();
    assert!(crc.len() == 8 && crc.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
    // Where the sources are a git checkout (not in the VM guests), it is HEAD.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match head {
        Some(head) => assert_eq!(commit, text(&head.stdout).trim(), "{version}"),
        None => eprintln!("no git checkout here: the commit ({commit}) is not compared with HEAD"),
    }
}

#[test]
fn help_lists_every_scenario() {
    let names = [
        "search-cost",
        "client-exhaustion",
        "tw-reuse",
        "tw-buckets",
        "tw-deaths",
        "paws-nat",
        "tw-timer-cpu",
        "tw-abort",
    ];
    for args in [&["--help"][..], &["scenario", "--help"]] {
        let out = twtrace(args);
        assert!(out.status.success());
        let help = text(&out.stdout);
        let scenario_part = if args.len() == 1 { help.split("scenario").nth(1).unwrap_or_default() } else { &help };
        for name in names {
            assert!(scenario_part.contains(name), "{args:?} does not name {name}:\n{help}");
        }
    }
}

/// The old spellings still parse, to the same flags: --rotate is --record-dir (so it conflicts
/// with --output), --top-k is serve's --top, --dir is mark's --record-dir (below, with a
/// recorder), and --interval takes a duration.
#[test]
fn old_spellings_are_aliases_of_the_new_names() {
    let out = twtrace(&["record", "--rotate", "/nonexistent/x", "--output", "/nonexistent/y"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--record-dir"), "{}", text(&out.stderr));
    for flag in ["--top-k", "--top"] {
        // Refused by serve itself, before it binds or loads anything: exit 1, not a usage error.
        let out = twtrace(&["serve", flag, "0"]);
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--top must be at least 1"), "{}", text(&out.stderr));
    }
    let scratch = Scratch::new("interval");
    let path = recording(&scratch.0);
    for interval in ["30", "30s", "0.5m"] {
        let out = twtrace(&["stat", "--replay", path.to_str().unwrap(), "--json", "--interval", interval]);
        assert!(out.status.success(), "--interval {interval}: {}", text(&out.stderr));
        // 70 s of recording: a report per 30 s, and the last at the end.
        assert_eq!(text(&out.stdout).lines().count(), 2 + 1, "--interval {interval}");
    }
}

#[test]
fn log_lines_are_json_with_a_time_or_text_stamped_for_serve() {
    let out = twtrace(&["--log-format", "json", "mark", "--record-dir", "/nonexistent", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_str(text(&out.stderr).trim()).expect("one JSON line");
    assert_eq!(line["level"], "error");
    assert!(line["message"].as_str().unwrap().contains("no flight recorder runs on /nonexistent"), "{line}");
    let mut ts = serde_json::json!({"type": "string", "format": "date-time"});
    schema::assert_conforms(&ts, &line["ts"], "the log line's time");
    // serve's lines carry their time in text too; other commands' read as before.
    let out = twtrace(&["serve", "--top", "0"]);
    let said = text(&out.stderr);
    let (stamp, rest) = said.trim().split_once(' ').unwrap();
    ts = serde_json::json!(stamp);
    schema::assert_conforms(&serde_json::json!({"format": "date-time"}), &ts, "serve's stamp");
    assert_eq!(rest, "twtrace: error: --top must be at least 1");
    let out = twtrace(&["mark", "--record-dir", "/nonexistent", "x"]);
    assert!(text(&out.stderr).starts_with("twtrace: error: no flight recorder"), "{}", text(&out.stderr));
}

#[test]
fn doctor_json_matches_its_schema_with_figures_beside_each_sentence() {
    let scratch = Scratch::new("doctor");
    let path = recording(&scratch.0);
    let out = twtrace(&["doctor", "--replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "EADDRNOTAVAIL is critical: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::assert_conforms(&schema::load("doctor"), &doc, "doctor --json");
    for f in doc["findings"].as_array().unwrap() {
        let sentences = f["evidence"].as_array().unwrap();
        let detailed = f["evidence_figures"].as_array().unwrap();
        assert_eq!(sentences.len(), detailed.len(), "{f:#}");
        assert!(sentences.iter().zip(detailed).all(|(s, d)| *s == d["text"]), "{f:#}");
    }
    let port_space = doc["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "port_space").expect("a finding");
    let figures = &port_space["evidence_figures"][0]["figures"];
    assert_eq!(figures[0], serde_json::json!({"name": "peak_in_use", "value": 9, "unit": "ports"}), "{port_space:#}");
    assert_eq!(figures[1], serde_json::json!({"name": "range", "value": 10, "unit": "ports"}), "{port_space:#}");
}

#[test]
fn stat_and_trace_json_match_their_schemas_and_netns_takes_a_recorded_name() {
    let scratch = Scratch::new("stat");
    let path = recording(&scratch.0);
    let replay = path.to_str().unwrap();
    let out = twtrace(&["stat", "--replay", replay, "--json", "--interval", "30s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stat = schema::load("stat");
    for line in text(&out.stdout).lines() {
        schema::assert_conforms(&stat, &serde_json::from_str(line).unwrap(), "a stat --json line");
    }
    let trace = schema::load("trace");
    let lines = |args: &[&str]| -> Vec<Value> {
        let out = twtrace(&[&["trace", "--replay", replay, "--json"][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let all = lines(&[]);
    for v in &all {
        schema::assert_conforms(&trace, v, "a trace --json line");
    }
    let birth = all.iter().find(|v| v["event"] == "timewait_birth").expect("a birth");
    assert_eq!((birth["timeout_ns"].as_u64(), birth["timeout_ms"].as_u64()), (Some(60 * S), Some(60_000)));
    // --netns with --replay: the inode, or the name the header gives.
    let kinds = |events: &[Value]| -> Vec<String> {
        events.iter().filter(|v| v["event"] != "summary").map(|v| v["event"].as_str().unwrap().to_owned()).collect()
    };
    let by_name = lines(&["--netns", "tw-a"]);
    assert_eq!(kinds(&by_name), ["port_search"; 3], "{by_name:#?}");
    assert_eq!(kinds(&lines(&["--netns", &POD_NS.to_string()])), kinds(&by_name));
    assert_eq!(kinds(&lines(&["--netns", "host"])), ["timewait_birth", "timewait_death"]);
    let out = twtrace(&["trace", "--replay", replay, "--netns", "tw-b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("host (4026531840), tw-a (4026532001)"), "{}", text(&out.stderr));
}

#[test]
fn probes_json_matches_its_schema() {
    let schema = schema::load("probes");
    let out = twtrace(&["probes", "--programs", "--json"]);
    assert!(out.status.success());
    let programs: Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::assert_conforms(&schema, &programs, "probes --programs --json");
    assert!(programs["programs"].as_array().unwrap().len() > 10, "{programs}");
    if !support::can_trace() {
        return;
    }
    let mut args = vec!["probes", "--json"];
    let backend = support::forced_backend();
    if let Some(b) = &backend {
        args.extend(["--backend", b]);
    }
    let out = twtrace(&args);
    // A forced backend that attaches nothing is `twtrace probes`'s error, not the schema's.
    if !out.status.success() && backend.is_some() {
        support::skip("probes", &text(&out.stderr).replace('\n', " "));
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    let families: Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::assert_conforms(&schema, &families, "probes --json");
    assert_eq!(families["families"].as_array().unwrap().len(), 4, "{families:#}");
}

/// `mark --json` against a stand-in recorder: the control socket's own code, answering OK.
/// The old spelling `--dir` reaches the same recorder.
#[test]
fn mark_json_matches_its_schema() {
    let scratch = Scratch::new("mark");
    let mut control = Control::bind(&scratch.0).unwrap().expect("the socket is ours");
    let schema = schema::load("mark");
    for flag in ["--record-dir", "--dir"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_twtrace"));
        cmd.args(["mark", "--json", flag, scratch.0.to_str().unwrap(), "deploy", "v2"]);
        let child = support::spawn(cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = 0;
        while answered == 0 && Instant::now() < deadline {
            for request in control.poll() {
                assert_eq!(request.text, "deploy v2");
                request.answer(Ok("2026-12-08T10:11:12.000000Z".into()));
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        let said: Value = serde_json::from_slice(&out.stdout).unwrap();
        schema::assert_conforms(&schema, &said, "mark --json");
        assert_eq!(
            (said["text"].as_str(), said["at"].as_str()),
            (Some("deploy v2"), Some("2026-12-08T10:11:12.000000Z"))
        );
    }
}

#[test]
fn churn_json_matches_its_schema() {
    let out = twtrace(&["churn", "--json", "--rate", "50", "--duration", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::assert_conforms(&schema::load("churn"), &summary, "churn --json");
    assert!(summary["connections"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn report_json_matches_its_schema() {
    let scratch = Scratch::new("report");
    let path = recording(&scratch.0);
    let out = twtrace(&["report", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Ok(dump) = std::env::var("TWTRACE_DUMP_REPORT") {
        std::fs::write(dump, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    schema::assert_conforms(&schema::load("report"), &doc, "report --json");
}
