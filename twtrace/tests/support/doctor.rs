//! Running `twtrace doctor` and reading its report, for the doctor test binaries
//! (`doctor.rs`, `doctor_limits.rs`, `doctor_settings.rs`).
#![allow(dead_code, reason = "each doctor binary uses a different subset")]

use std::process::Command;

use serde_json::Value;

use crate::support::{self, Netns};

pub fn doctor_args(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = vec!["doctor".into(), "--json".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    if let Some(b) = support::forced_backend().filter(|_| !args.contains(&"--replay")) {
        all.extend(["--backend".into(), b]);
    }
    all
}

/// `twtrace doctor --json ARGS` to its end: its exit status and report.
pub fn doctor(args: &[&str]) -> (i32, Value) {
    let all = doctor_args(args);
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(&all));
    parse(&all, out)
}

pub fn parse(all: &[String], out: std::process::Output) -> (i32, Value) {
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor {all:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("an exit status"), json)
}

/// `twtrace doctor` live: `during` runs once it is watching (its probes loaded, which takes
/// seconds in an emulated guest), then doctor is stopped by Ctrl-C and reports. Not by a
/// duration: in a slow guest `during` may start seconds after doctor does, and its last
/// events would fall past a fixed end.
pub fn doctor_while(args: &[&str], during: impl FnOnce()) -> (i32, Value) {
    doctor_with(&[], args, |_, _| during())
}

/// [`doctor_while`], with twtrace's `global` options (before `doctor`), and `during` given
/// doctor's pid and what it logged until it started watching.
pub fn doctor_with(global: &[&str], args: &[&str], during: impl FnOnce(u32, &[String])) -> (i32, Value) {
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
pub fn blind_of(report: &Value) -> u64 {
    report["observed"]["lost"].as_u64().unwrap() + report["observed"]["skipped_runs"].as_u64().unwrap()
}

pub fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect()
}

pub fn finding<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}: {report:#}"))
}

/// Before 6.11 a drop seen before the socket lookup carries no namespace and passes every
/// --netns filter (docs/kernels.md, known issues): other tests' crafted PAWS drops can show in any
/// scenario's report there.
pub fn other_tests_drops_show() -> bool {
    !kernel_at_least(6, 11)
}

pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap(), parts.next().unwrap()) >= (major, minor)
}

/// Doctor live in namespace `ns` while `during` runs (stopped once it is done), then on the
/// recording made meanwhile: both reports, the recording's with the same findings.
/// `families`: only these probe families, in both (all when empty).
pub fn live_and_replayed(ns: &Netns, tag: &str, families: &[&str], during: impl FnOnce()) -> (i32, Value, Value) {
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
pub fn only_finding<'a>(report: &'a Value, kind: &str) -> &'a Value {
    only_notes_besides(report, Some(kind));
    finding(report, kind)
}

/// Every finding but `kind` is a note (what twtrace may have missed, and before 6.11 other
/// tests' unlabelled PAWS drops, aside).
pub fn only_notes_besides(report: &Value, kind: Option<&str>) {
    for f in report["findings"].as_array().unwrap() {
        let blind_spot = ["loss", "skipped_runs"].contains(&f["kind"].as_str().unwrap());
        let others_drops = other_tests_drops_show() && f["kind"] == "paws";
        if kind.is_none_or(|k| f["kind"] != k) && !blind_spot && !others_drops {
            assert!(["info", "ok"].contains(&f["severity"].as_str().unwrap()), "another finding: {f:#}");
        }
    }
}
