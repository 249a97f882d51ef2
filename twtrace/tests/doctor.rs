//! `twtrace doctor` against scenarios whose ground truth the test knows: a namespace whose 100
//! ports run out (the finding names it, with churn's own count of EADDRNOTAVAIL, and the exit
//! status says critical), and a healthy churn (nothing to fix: exit 0). The same findings
//! come from a recording of the scenario (`--replay`).

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
/// seconds in an emulated guest), then its report.
fn doctor_during(args: &[&str], during: impl FnOnce()) -> (i32, Value) {
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
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let path = std::env::temp_dir().join(format!("twtrace-it-{}-doctor.twr", std::process::id()));
    let recording = support::Recording::start(&ns, &path);
    let mut summary = Value::Null;
    let (status, live) = doctor_during(&["--duration", "8", "--netns", &ns.name], || summary = churn(&ns, "client", 3));
    recording.stop();
    let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap();
    assert!(refused > 0, "the range ran out: {summary}");
    assert_eq!(status, 2, "critical: {live:#}");
    assert_eq!(live["severity"], "critical");
    let ports = finding(&live, "port_space");
    assert_eq!(ports["place"]["namespace"], ns.name.as_str());
    assert_eq!(ports["place"]["destination"], "127.0.0.1:7000");
    let text = ports["text"].as_str().unwrap();
    assert!(text.contains("now 40000-40099"), "{text}");
    let blind = blind(&live);
    // "... peaked at 100% (100 of 100 ports) ..."
    let held = text.split('(').nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok()).unwrap();
    assert!(held.abs_diff(100) <= blind, "100 of 100 ports held ({blind} events may be missed): {text}");
    let failures = finding(&live, "connect_failures");
    let counted = failures["text"].as_str().unwrap().split_whitespace().next().unwrap().parse::<u64>().unwrap();
    assert!(counted.abs_diff(refused) <= blind, "churn saw {refused} ({blind} events may be missed): {failures:#}");
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
        doctor_during(&["--duration", "6", "--netns", &ns.name], || summary = churn(&ns, "server", 2));
    assert!(summary["connections"].as_u64().unwrap() > 50, "{summary}");
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

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap(), parts.next().unwrap()) >= (major, minor)
}
