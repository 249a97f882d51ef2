//! `twtrace doctor` against scenarios whose ground truth the test knows: a namespace whose 100
//! ports run out (the finding names it, with churn's own count of EADDRNOTAVAIL, and the exit
//! status says critical), and a healthy churn (nothing to fix: exit 0). The same findings
//! come from a recording of the scenario (`--replay`).

mod support;

use std::process::Command;

use serde_json::Value;
use support::{Netns, can_trace};

fn doctor(args: &[&str]) -> (i32, Value) {
    let mut all: Vec<String> = vec!["doctor".into(), "--json".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    if let Some(b) = support::forced_backend().filter(|_| !args.contains(&"--replay")) {
        all.extend(["--backend".into(), b]);
    }
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(&all));
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor {all:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("an exit status"), json)
}

/// `twtrace churn` in the namespace toward 127.0.0.1:7000; its JSON summary.
fn churn(ns: &Netns, closer: &str, seconds: u32) -> std::thread::JoinHandle<Value> {
    let name = ns.name.clone();
    let closer = closer.to_owned();
    std::thread::spawn(move || {
        // Once doctor (or the recording) is tracing.
        std::thread::sleep(std::time::Duration::from_secs(3));
        let out = support::output(Command::new("ip").args(["netns", "exec", &name]).args([
            env!("CARGO_BIN_EXE_twtrace"),
            "churn",
            "--closer",
            &closer,
            "--rate",
            "60",
            "--duration",
            &seconds.to_string(),
            "--listen",
            "127.0.0.1:7000",
            "--json",
        ]));
        assert!(out.status.success(), "churn: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    })
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
    let client = churn(&ns, "client", 3);
    let (status, live) = doctor(&["--duration", "8", "--netns", &ns.name]);
    let summary = client.join().unwrap();
    recording.stop();
    let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap();
    assert!(refused > 0, "the range ran out: {summary}");
    assert_eq!(status, 2, "critical: {live:#}");
    assert_eq!(live["severity"], "critical");
    let ports = finding(&live, "port_space");
    assert_eq!(ports["place"]["namespace"], ns.name.as_str());
    assert_eq!(ports["place"]["destination"], "127.0.0.1:7000");
    let text = ports["text"].as_str().unwrap();
    assert!(text.contains("(100 of 100 ports)") && text.contains("now 40000-40099"), "{text}");
    let failures = finding(&live, "connect_failures");
    assert!(
        failures["text"].as_str().unwrap().starts_with(&format!("{refused} connect() calls found no free local port")),
        "churn saw {refused}: {failures:#}"
    );
    // From the recording: the same findings (blind spots of the live run aside).
    let (replayed_status, replayed) = doctor(&["--replay", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(replayed_status, status);
    let substantive = |k: &Vec<String>| -> Vec<String> {
        k.iter()
            .filter(|k| !["skipped_runs", "approximate_search", "time_wait_peak"].contains(&k.as_str()))
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
    let server = churn(&ns, "server", 2);
    let (status, report) = doctor(&["--duration", "7", "--netns", &ns.name]);
    let summary = server.join().unwrap();
    assert!(summary["connections"].as_u64().unwrap() > 50, "{summary}");
    assert_eq!(status, 0, "{report:#}");
    for f in report["findings"].as_array().unwrap() {
        assert!(["info", "ok"].contains(&f["severity"].as_str().unwrap()), "only notes: {f:#}");
    }
}
