//! The deployment files under `deploy/` against a real Prometheus (included by `serve.rs`):
//! promtool checks and unit-tests the alerting rules, and every query of the Grafana dashboard
//! must return data from what `serve` exposes.

use std::{path::Path, process::Command};

use serde_json::Value;

use crate::{prometheus::Prometheus, support};

/// The repository's deployment files.
pub const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// Every query of the dashboard and every alerting rule against the scenario's Prometheus.
pub fn deploy_queries_return_data(prom: &Prometheus, rules: &Path) {
    let check = support::output(Command::new("promtool").arg("check").arg("rules").arg(rules));
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The rules' unit tests: for every alert, series that must fire it (before and after its
    // `for:`) and series that must not.
    let tests = rules.with_file_name("twtrace-rules.test.yml");
    let test = support::output(Command::new("promtool").arg("test").arg("rules").arg(&tests));
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let alerts = std::fs::read_to_string(rules).unwrap().matches("- alert: ").count();
    let tested = std::fs::read_to_string(&tests).unwrap();
    for name in std::fs::read_to_string(rules).unwrap().lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tested.contains(&format!("alertname: {name}\n")), "no unit test of {name}");
    }
    eprintln!("promtool test rules: {alerts} alerts tested");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(DEPLOY).join("grafana/twtrace.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:#?}");
    // The variables as Grafana would fill them for this Prometheus ("All" selected).
    let fill = |e: &str| {
        // Grafana's $__rate_interval: four scrape intervals (2 s under emulation, support/prometheus.rs).
        let rate_interval = if support::emulated() { "8s" } else { "4s" };
        let mut e = e.replace("$__rate_interval", rate_interval).replace("$__range", "1m").replace("$datasource", "");
        for var in ["cluster", "node", "namespace", "pod"] {
            e = e.replace(&format!("${{{var}:regex}}"), ".*").replace(&format!("${var}"), ".*");
        }
        e
    };
    let quiet = |e: &str| quiet_here(e).is_some();
    for expr in &exprs {
        let result = prom.query(&fill(expr));
        eprintln!("dashboard: {} series: {expr}", result.len());
        if let (true, Some(why)) = (result.is_empty(), quiet_here(expr)) {
            eprintln!("  (no data: {why})");
            continue;
        }
        assert!(!result.is_empty(), "no data for the dashboard query {expr}");
    }

    #[derive(serde::Deserialize)]
    struct Rules {
        groups: Vec<Group>,
    }
    #[derive(serde::Deserialize)]
    struct Group {
        rules: Vec<Rule>,
    }
    #[derive(serde::Deserialize)]
    struct Rule {
        alert: Option<String>,
        record: Option<String>,
        expr: String,
    }
    let rules: Rules = serde_norway::from_str(&std::fs::read_to_string(rules).unwrap()).unwrap();
    // What this scenario provokes: a range that ran out, EADDRNOTAVAIL, a bucket overflow.
    let provoked = [
        "TwtracePortRangeExhausted",
        "TwtracePortRangeNearlyFull",
        "TwtraceConnectAddrNotAvail",
        "TwtraceTimeWaitBucketOverflow",
    ];
    let mut fired = Vec::new();
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        let name = rule.alert.clone().or(rule.record.clone()).unwrap();
        let result = prom.query(&rule.expr);
        eprintln!("rule {name}: {} series", result.len());
        if provoked.contains(&name.as_str()) {
            assert!(
                !result.is_empty(),
                "the rule {name} returns nothing in a scenario that provokes it: {}",
                rule.expr
            );
            fired.push(name.clone());
        } else {
            // Quiet here (no PAWS drops, no loss): the query is evaluated, and every
            // twtrace metric it reads has series, so only its condition does not hold.
            for metric in metric_names(&rule.expr).into_iter().filter(|m| !quiet(m)) {
                assert!(!prom.query(&metric).is_empty(), "{name}: no series of {metric}");
            }
        }
    }
    assert_eq!(fired.len(), provoked.len(), "{fired:?}");
}

/// Why a query may return nothing in this scenario: the series it reads exist only when
/// something happens that the scenario does not make.
fn quiet_here(expr: &str) -> Option<&'static str> {
    if expr.contains("twtrace_paws_source") {
        return Some("per-source PAWS series exist only once a PAWS drop was seen; the scenario makes none");
    }
    if expr.contains("twtrace_bpf_run")
        && std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "0")
    {
        return Some("BPF run time is accounted only with kernel.bpf_stats_enabled=1");
    }
    if expr.contains("twtrace_destination_exhaustion") {
        return Some("time to exhaustion exists only while a range is growing; the churn has ended");
    }
    if expr.contains("twtrace_connection_drop") {
        return Some("netfilter and listen-overflow drop series exist only once such a drop was seen; none is made");
    }
    if expr.contains("twtrace_conntrack_dropped") {
        return Some("conntrack's drop counters are served once they have moved; nothing fills the table here");
    }
    if expr.contains("twtrace_conntrack") && !Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists() {
        return Some("no connection tracking here (nf_conntrack not loaded)");
    }
    if expr.contains("ListenOverflows") || expr.contains("TCPReqQFullDrop") {
        return Some("a counter is served once it has moved; no listener overflows here");
    }
    None
}

/// The `twtrace_*` metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("twtrace_"))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    // Template variables' queries are label_values(...), not PromQL.
                    ("templating", _) => {}
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
