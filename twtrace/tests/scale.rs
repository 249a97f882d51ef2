//! The live model at scale, scaled down to what a test run affords (`cargo xtask bench
//! --scale` has the full ladder): many distinct destinations counted exactly, and a model that
//! lost records repairing itself from the kernel's sockets.
//!
//! Ground truth is the namespace's own: `ss` inside it and its `TcpExtTW` counter.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Netns, can_trace};

/// A running `twtrace stat --json --interval 1` on one namespace, its reports collected.
struct Stat {
    child: Child,
    reports: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Stat {
    fn start(ns: &Netns, extra: &[&str]) -> Self {
        let mut args = vec!["stat", "--json", "--interval", "1", "--netns", &ns.name];
        args.extend_from_slice(extra);
        let started = support::started(support::twtrace_cmd(&args).stdout(Stdio::piped()), "twtrace")
            .unwrap_or_else(|said| panic!("twtrace stat did not start: {said}"));
        let (mut child, log) = started.keep_stderr("twtrace");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str::<Value>(&line).expect("a JSON report"));
            }
        });
        Self { child, reports, stderr: log }
    }

    fn last(&self) -> Option<Value> {
        self.reports.lock().unwrap().last().cloned()
    }

    /// Waits until a report satisfies `done` or `timeout` passes; the last report seen.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.last();
            if let Some(r) = &last {
                if done(r) {
                    return r.clone();
                }
            }
            if Instant::now() > deadline {
                return last.expect("stat printed no report");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until a report satisfies `done` and then until `value` has stayed the same over
    /// two consecutive reports (the model has applied what the kernel emitted), or `timeout`
    /// passes; the last report seen.
    fn wait_settled(&self, timeout: Duration, done: impl Fn(&Value) -> bool, value: impl Fn(&Value) -> Value) -> Value {
        let deadline = Instant::now() + timeout;
        let first = self.wait_for(timeout, done);
        let mut seen = self.reports.lock().unwrap().len();
        let mut previous = value(&first);
        loop {
            if Instant::now() > deadline {
                return self.last().expect("stat printed no report");
            }
            std::thread::sleep(Duration::from_millis(200));
            let count = self.reports.lock().unwrap().len();
            if count == seen {
                continue;
            }
            seen = count;
            let last = self.last().expect("a report");
            let now = value(&last);
            if now == previous {
                return last;
            }
            previous = now;
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGINT, then the last report and the end line (`twtrace: scale: ...`).
    fn stop(mut self) -> (Value, String) {
        self.signal(libc::SIGINT);
        assert!(self.child.wait().unwrap().success(), "stat exits cleanly on SIGINT");
        // The readers end with the pipes.
        std::thread::sleep(Duration::from_millis(200));
        let scale = self.stderr.lock().unwrap().iter().find(|l| l.starts_with("twtrace: scale:")).cloned();
        (self.last().expect("a final report"), scale.expect("stat ends with its scale line"))
    }
}

/// A namespace whose port range and TIME_WAIT table are wide enough to hold every socket the
/// test makes.
fn wide_namespace(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000");
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "2000000");
    ns
}

/// `twtrace churn` inside `ns` with `args`; its JSON summary.
fn churn(ns: &Netns, args: &[&str]) -> Value {
    let out = support::output(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_twtrace"), "churn", "--json"])
            .args(args),
    );
    assert!(out.status.success(), "churn: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("churn's JSON summary")
}

/// TIME_WAIT births as the kernel counts them (6.1+: `TW` or `TWKilled` at each birth, by its
/// timeout; 5.10 counts them at expiry). `Netns::netstat` names counters without the `TcpExt`
/// prefix.
fn tw_counter(ns: &Netns) -> i64 {
    let c = ns.netstat();
    c.get("TW").copied().unwrap_or(0) + c.get("TWKilled").copied().unwrap_or(0)
}

/// A client talking to 20,000 distinct destinations, closing first: every TIME_WAIT socket
/// holds a port toward its own destination. Nothing may be lost, every birth is the kernel's
/// `TcpExtTW`, and the live count is `ss`'s.
#[test]
fn twenty_thousand_destinations_are_counted_exactly() {
    if !can_trace() {
        return;
    }
    let ns = wide_namespace("scale20k");
    let stat = Stat::start(&ns, &[]);
    let tw_before = tw_counter(&ns);
    let load = churn(
        &ns,
        &[
            "--destinations",
            "20000",
            "--closer",
            "client",
            "--rate",
            "4000",
            "--duration",
            "5s",
            "--listen",
            "127.0.0.1:8080",
        ],
    );
    let connections = load["connections"].as_u64().unwrap();
    // The last connections' TIME_WAIT sockets are born as their FINs cross, just after the
    // churn's end: count once they have.
    std::thread::sleep(Duration::from_secs(1));
    // The load's own rate is not under test (a busy host made 19,998 of 20,000): enough
    // destinations to be a crowd, then exactness against the kernel.
    assert!(connections >= 10_000 || support::emulated(), "churn made only {connections} connections: {load}");
    let born = (tw_counter(&ns) - tw_before) as u64;
    let in_kernel = ns.time_wait_sockets().len() as u64;
    if born == 0 {
        // 5.10 counts TW when the timer fires, not when the socket is born (6.1 and later
        // count births): no ground truth for births within the test.
        support::skip("timewait", "this kernel counts TW at expiry, not at birth: no ground truth for births");
        return;
    }
    // A kprobe hit while another kprobe's handler runs is missed without a count twtrace
    // reads (README, known issues): as tests/timewait.rs allows, 1 %, 5 % emulated.
    let uncounted = match (support::forced_backend().as_deref() == Some("kprobe"), support::emulated()) {
        (true, true) => born / 20,
        (true, false) => born / 100,
        (false, _) => 0,
    };
    // An emulated guest applies 100,000-odd events slowly: wait for them, not for a clock.
    // A kprobe backend may stay short of the kernel's count for good (missed hits), so wait
    // for the count to be within the allowance and then to stop moving; never past TIME_WAIT's
    // 60 s, after which `ss` below would no longer hold what the churn made.
    let patience = Duration::from_secs(if support::emulated() { 45 } else { 10 });
    let report = stat.wait_settled(
        patience,
        // Runs the kernel skipped and twtrace reported (fentry's recursion guard, under load)
        // are births it may never see: waiting for them ran a busy 6.18 guest past the
        // sockets' 60 s (36 skipped, 2026-12-07).
        |r| {
            let seen = r["timewait"]["births_total"].as_u64().unwrap_or(0) + r["skipped_runs"].as_u64().unwrap_or(0);
            seen >= born - uncounted
        },
        |r| r["timewait"]["births_total"].clone(),
    );
    let (last, scale) = stat.stop();
    eprintln!("{scale}");
    assert_eq!(last["lost"], 0, "{scale}");
    let births = report["timewait"]["births_total"].as_u64().unwrap();
    let skipped = last["skipped_runs"].as_u64().expect("skipped_runs in stat's JSON");
    assert!(
        births <= born && born - births <= uncounted + skipped,
        "births {births} against TcpExtTW {born} ({skipped} runs skipped)"
    );
    let live = last["timewait"]["live"].as_u64().unwrap();
    let ss_now = ns.time_wait_sockets().len() as u64;
    // Nothing expires within the test (TIME_WAIT lasts 60 s): ss before and after agree.
    assert_eq!(in_kernel, ss_now, "the kernel's count moved during the test");
    assert!(live <= ss_now && ss_now - live <= uncounted + skipped, "live TIME_WAIT {live} against ss {ss_now}");
    // Against the destinations the churn used: its threads share the list, so a slow run
    // (an emulated guest: 3,124 connections) may use fewer destinations than it made connections.
    let used = load["destinations_used"].as_u64().unwrap();
    let destinations = last["model"]["destinations"].as_u64().unwrap();
    // Runs of twtrace's programs the kernel skipped (fentry's recursion guard, under load: 430
    // in a busy 6.18 guest, 2026-12-07) are events missed, and counted as such: each may be
    // one destination's only search.
    assert!(
        destinations + skipped >= used,
        "{destinations} destination rows for {used} destinations used ({connections} connections, {skipped} runs skipped)"
    );
}

/// A ring buffer of one page, with twtrace stopped while the churn runs (so loss is certain on
/// any machine, an emulated guest's included): once it runs again the model must re-read the
/// sockets and agree with `ss` (within 1 %) within 20 s, and say it did.
#[test]
fn after_forced_loss_the_model_resyncs_to_the_kernel() {
    if !can_trace() {
        return;
    }
    let ns = wide_namespace("scaleresync");
    let stat = Stat::start(&ns, &["--ring-buffer-size", "4096"]);
    stat.signal(libc::SIGSTOP);
    let load = churn(&ns, &["--closer", "client", "--threads", "2", "--duration", "3s", "--listen", "127.0.0.1:7000"]);
    stat.signal(libc::SIGCONT);
    let stopped = Instant::now();
    // The last connections' TIME_WAIT sockets are born as their FINs cross, just after the
    // churn's end: count once they have.
    std::thread::sleep(Duration::from_secs(1));
    let in_kernel = ns.time_wait_sockets().len() as u64;
    assert!(in_kernel > 0, "the churn left no TIME_WAIT socket: {load}");
    let close_enough = |r: &Value| {
        let live = r["timewait"]["live"].as_u64().unwrap_or(0);
        r["approximate"] == false && !r["last_resync"].is_null() && live.abs_diff(in_kernel) * 100 <= in_kernel
    };
    let report = stat.wait_for(Duration::from_secs(20), close_enough);
    let waited = stopped.elapsed();
    let (last, scale) = stat.stop();
    eprintln!("{scale}; repaired {:.1} s after the load", waited.as_secs_f64());
    let lost = last["lost"].as_u64().unwrap();
    assert!(lost > 0, "a stopped tracer's 4 KiB ring buffer lost nothing under churn ({load})");
    let ss_now = ns.time_wait_sockets().len() as u64;
    assert_eq!(in_kernel, ss_now, "the kernel's count moved during the test");
    assert!(close_enough(&report), "20 s after the load: {report}\n(ss: {in_kernel})");
    let resync = &report["last_resync"];
    assert!(resync["count"].as_u64() >= Some(1) && resync["repaired_lost"].as_u64() > Some(0), "{resync}");
}
