//! `twtrace serve` scraped by a real Prometheus server (Debian's `prometheus` package, started
//! here on a loopback port with a 1 s scrape interval) while two network namespaces churn:
//! through Prometheus' query API, TIME_WAIT per namespace and ports in use per destination
//! must match `ss` inside each namespace within 2 %, and the EADDRNOTAVAIL counter must equal
//! what the churn itself counted. The same over TLS with basic auth, which must fail without
//! the credentials. Every query of the Grafana dashboard and every alerting rule under
//! `deploy/` runs against that Prometheus; `promtool check rules` passes on the rules, and
//! the Python client's strict OpenMetrics parser accepts the exposition.

#[path = "support/deploy.rs"]
mod deploy;
#[path = "support/kubelet.rs"]
mod kubelet;
#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use deploy::{DEPLOY, deploy_queries_return_data};
use prometheus::{Prometheus, Scratch, Serve, can_run, curl, kubernetes_job, openmetrics_parse};
use serde_json::Value;
use support::Netns;

/// The churn's server in each namespace: outside every ephemeral range used here.
const SERVER: &str = "127.0.0.1:7000";

struct Pod {
    ns: Netns,
    range: (u16, u16),
}

impl Pod {
    fn new(tag: &str, range: (u16, u16), buckets: u64) -> Self {
        let ns = Netns::new(tag);
        ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", range.0, range.1));
        ns.sysctl("net.ipv4.tcp_max_tw_buckets", &buckets.to_string());
        // A closed connection keeps its port for 60 s.
        ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
        Self { ns, range }
    }

    /// `twtrace churn` in the namespace, the client closing first; its JSON summary.
    fn churn(&self, seconds: u32) -> std::thread::JoinHandle<Value> {
        let name = self.ns.name.clone();
        std::thread::spawn(move || {
            let out = support::output(Command::new("ip").args(["netns", "exec", &name]).args([
                env!("CARGO_BIN_EXE_twtrace"),
                "churn",
                "--closer",
                "client",
                "--rate",
                "60",
                "--duration",
                &seconds.to_string(),
                "--listen",
                SERVER,
                "--json",
            ]));
            assert!(out.status.success(), "churn in {name}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).expect("churn's JSON summary")
        })
    }
}

/// Within 2 %; under kprobe in an emulated guest within 20 %, as containers.rs allows and for
/// the same reason: kprobe hits missed there go unreported (README, known issues). The 6.18
/// guest served 97 TIME_WAIT sockets of ss's 100 under kprobe (2026-12-07).
fn within_two_percent(shown: f64, truth: f64) -> bool {
    let percent = if support::kprobe_emulated() { 0.20 } else { 0.02 };
    (shown - truth).abs() <= percent * truth
}

/// A count twtrace takes from its own events (connect() failures): never over the truth, and
/// short by at most the program runs the kernel skipped and twtrace reported (`skipped`: a
/// busy 6.18 guest's fentry run counted 197 of 198). Under kprobe in an emulated guest up to
/// 20 % short, since kernels before 6.7 do not report kprobe misses (141 of 151 in the 6.18
/// guest before twtrace read its links' counts, 2026-12-07).
fn counted(shown: f64, truth: f64, skipped: f64) -> bool {
    let slack = if support::kprobe_emulated() { 0.2 * truth } else { 0.0 };
    shown <= truth && shown + skipped + slack >= truth
}

#[test]
fn prometheus_sees_each_namespace_as_ss_does() {
    if !can_run() {
        return;
    }
    // One namespace runs out of its 100 ports (EADDRNOTAVAIL); the other keeps at most 50
    // TIME_WAIT sockets (the bucket limit overflows), in a range it does not fill.
    let pods = [Pod::new("srv100", (40_000, 40_099), 5_000), Pod::new("srvtw50", (41_000, 41_999), 50)];
    // Every row shown: in the VM matrix other test binaries' churn runs beside this one, and
    // their destinations ranked this test's out of a top 10 (6.18 guest, 2026-12-07).
    let serve = Serve::start(&["--top", "1000"]);
    // A namespace that comes and goes while served: its series must go with it. (Made after
    // the start: TIME_WAIT sockets that existed at the start stay in the model until their
    // timers run out, even when their namespace is deleted.)
    let doomed = Netns::new("srvgone");
    doomed.run(|| support::client_closes_first(&std::net::TcpListener::bind(SERVER).unwrap(), 3));
    let doomed_name = doomed.name.clone();
    let job = kubernetes_job(&serve.addr, "node-a");
    let rules = Path::new(DEPLOY).join("prometheus/twtrace-rules.yml");
    let prom = Prometheus::start("plain", &job, rules.exists().then_some(rules.as_path()));
    assert_eq!(prom.wait_for("up{job=\"twtrace/twtrace\"}", |v| v == 1.0), Some(1.0), "Prometheus scrapes serve");

    let doomed_info = format!("twtrace_namespace_info{{netns_name=\"{doomed_name}\"}}");
    assert_eq!(prom.wait_for(&doomed_info, |v| v == 1.0), Some(1.0), "the doomed namespace is served");
    drop(doomed);
    let summaries: Vec<Value> =
        pods.iter().map(|p| p.churn(5)).collect::<Vec<_>>().into_iter().map(|c| c.join().unwrap()).collect();
    // ss inside each namespace: nothing changes now for 60 s (no TIME_WAIT expires yet).
    let tw_truth: Vec<usize> = pods.iter().map(|p| p.ns.time_wait_sockets().len()).collect();
    let ports_truth: Vec<usize> = pods.iter().map(|p| p.ns.ports_to(SERVER, p.range).len()).collect();
    let refused: Vec<u64> = summaries.iter().map(|s| s["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0)).collect();
    eprintln!("ss: TIME_WAIT {tw_truth:?}, ports {ports_truth:?}; churn EADDRNOTAVAIL {refused:?}");
    assert_eq!(ports_truth[0], 100, "the small range was exhausted");
    assert!(refused[0] > 0, "{}", summaries[0]);
    // The kernel checks the limit before it counts the new socket, without a lock
    // (`inet_twsk_alloc`): sockets closing on several CPUs at once can each pass it, so one
    // over per other CPU (51 in a two-vCPU guest, 2026-12-07).
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(tw_truth[1] < 50 + cpus, "the bucket limit held: {} ({cpus} CPUs)", tw_truth[1]);

    for ((pod, summary), (tw, ports)) in pods.iter().zip(&summaries).zip(tw_truth.iter().zip(&ports_truth)) {
        let name = &pod.ns.name;
        let inode = support::netns_inode(name);
        // Not a pod's: no Kubernetes namespace or pod, and not twtrace's own pod's either.
        let selector = format!("netns_name=\"{name}\",netns=\"{inode}\",namespace=\"\",pod=\"\"");
        // TIME_WAIT and ports first: they last 60 s from the churn, the failure count for good.
        let q = format!("twtrace_timewait_sockets{{{selector}}}");
        let shown = prom.wait_for(&q, |v| within_two_percent(v, *tw as f64)).expect("a TIME_WAIT series");
        eprintln!("{name}: TIME_WAIT prometheus {shown} ss {tw}");
        assert!(within_two_percent(shown, *tw as f64), "{name}: TIME_WAIT {shown} vs ss {tw}");
        let q = format!("twtrace_destination_ports_in_use{{{selector},remote=\"{SERVER}\"}}");
        // Rehearsal 6 (6.18 guest) once found no such series for 60 s while the namespace's
        // TIME_WAIT series was right: say what serve itself exposed if it happens again.
        let shown = prom.wait_for(&q, |v| within_two_percent(v, *ports as f64)).unwrap_or_else(|| {
            panic!(
                "{name}: no ports series within 2% of ss ({ports}) in Prometheus; serve exposes: {:#?}",
                serve.samples_with(&["twtrace_destination_ports_in_use", name.as_str()])
            )
        });
        eprintln!("{name}: ports prometheus {shown} ss {ports}");
        assert!(within_two_percent(shown, *ports as f64), "{name}: ports in use {shown} vs ss {ports}");
        let errno = format!("twtrace_port_search_failures_total{{{selector},errno=\"EADDRNOTAVAIL\"}}");
        let expected = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0) as f64;
        // The last scrape after the last event: wait until Prometheus has the final count (none
        // expected: no series, or 0, at once).
        let skipped = || prom.value("twtrace_skipped_runs_total").unwrap_or(0.0);
        let shown = if expected == 0.0 {
            prom.value(&errno).unwrap_or(0.0)
        } else {
            prom.wait_for(&errno, |v| counted(v, expected, skipped())).unwrap_or(0.0)
        };
        let skipped = skipped();
        assert!(
            counted(shown, expected, skipped),
            "{name}: EADDRNOTAVAIL {shown}, churn counted {expected}, {skipped} runs skipped"
        );
        // Births in this namespace alone: every connection the churn made and closed first left
        // a TIME_WAIT socket, but those the bucket limit refused (the namespace's own
        // TCPTimeWaitOverflow; a fresh namespace's counters start at 0).
        let made = summary["connections"].as_u64().expect("churn counts its connections") as f64;
        let overflow = pod.ns.netstat().get("TCPTimeWaitOverflow").copied().unwrap_or(0) as f64;
        let births = format!("twtrace_namespace_timewait_births_total{{{selector}}}");
        let runs_skipped = || prom.value("twtrace_skipped_runs_total").unwrap_or(0.0);
        let shown = prom.wait_for(&births, |v| counted(v, made - overflow, runs_skipped())).unwrap_or(0.0);
        eprintln!("{name}: births prometheus {shown}, connections {made} less {overflow} refused by the bucket limit");
        assert!(
            counted(shown, made - overflow, runs_skipped()),
            "{name}: births {shown}, churn made {made} connections, {overflow} refused TIME_WAIT"
        );
        let range = prom.value(&format!("twtrace_destination_port_range_size{{{selector},remote=\"{SERVER}\"}}"));
        assert_eq!(range, Some(f64::from(pod.range.1 - pod.range.0 + 1)), "{name}: its own range");
        // The info series names it, without pod or container (an `ip netns` name).
        let info = prom.query(&format!("twtrace_namespace_info{{{selector}}}"));
        assert_eq!(info.len(), 1, "{info:#?}");
    }
    // The dashboard and the rules while the churn's state lasts: its TIME_WAIT sockets expire
    // 60 s after it, and with them the full range the rules must see (in an emulated guest,
    // checked after the rest of this test, TwtracePortRangeExhausted found nothing).
    if Path::new(DEPLOY).exists() {
        deploy_queries_return_data(&prom, &rules);
    } else {
        // Recorded, so that a runner that lost the files (the VM lab copies them into its
        // guests) is told: the table has no such gap.
        support::skip("serve", &format!("no deploy/ directory at {DEPLOY}: dashboard and rule queries not checked"));
    }
    // Deleted mid-run: gone from the exposition, so Prometheus marks its series stale.
    let start = Instant::now();
    while !prom.query(&doomed_info).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the deleted namespace is still served");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(prom.query(&format!("twtrace_timewait_sockets{{netns_name=\"{doomed_name}\"}}")).is_empty());
    // The label scheme under honor_labels: a network namespace's series keep their own (empty)
    // Kubernetes labels, never the target's; twtrace's own series take its pod's.
    let host = prom.query("twtrace_timewait_sockets{netns_name=\"host\"}");
    assert_eq!(host.len(), 1, "{host:#?}");
    for label in ["namespace", "pod", "container"] {
        assert!(host[0]["metric"].get(label).is_none(), "the host's series has a {label}: {host:#?}");
    }
    assert_eq!(host[0]["metric"]["node"], "node-a", "{host:#?}");
    assert!(prom.query("{__name__=~\"twtrace_.*\",exported_namespace!=\"\"}").is_empty(), "no exported_* label");
    let own = prom.query("twtrace_lost_records_total");
    assert_eq!(
        (own[0]["metric"]["namespace"].as_str(), own[0]["metric"]["pod"].as_str()),
        (Some("twtrace"), Some("twtrace-abcde"))
    );
    assert_eq!(prom.value("twtrace_lost_records_total"), Some(0.0), "no record lost");
    assert!(prom.value("twtrace_probe_info{family=\"timewait\"}").is_some());

    // The exposition as served is valid OpenMetrics for a strict parser.
    let (code, text) = curl(&["-H", "Accept: application/openmetrics-text", &format!("http://{}/metrics", serve.addr)]);
    assert_eq!(code, 200);
    let families = openmetrics_parse(&text).unwrap_or_else(|e| panic!("the strict parser refused it: {e}\n{text}"));
    assert!(families > 20, "{families} families");
    // The classic 0.0.4 text for a client that prefers it, gzipped for one that takes gzip (curl
    // --compressed; Prometheus asks for gzip at every scrape above): promtool, Prometheus' own
    // parser, reads it.
    let url = format!("http://{}/metrics", serve.addr);
    let (code, text) = curl(&["--compressed", "-D", "-", "-H", "Accept: text/plain;version=0.0.4", &url]);
    assert_eq!(code, 200);
    let (head, body) = text.split_once("\r\n\r\n").expect("the headers, then the body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(!body.contains("# EOF") && body.contains("# TYPE twtrace_lost_records_total counter"), "{body}");
    let check = promtool_check_metrics(body);
    assert!(check.status.success(), "promtool check metrics: {}", String::from_utf8_lossy(&check.stderr));
    let (code, body) = curl(&[&format!("http://{}/healthz", serve.addr)]);
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, _) = curl(&[&format!("http://{}/", serve.addr)]);
    assert_eq!(code, 200);

    let said = serve.stop();
    assert!(!said.iter().any(|l| l.contains("error") || l.contains("WARN")), "{said:#?}");
    assert!(said.iter().any(|l| l.contains("serve ended;") && l.contains(", 0 lost")), "{said:#?}");
}

/// A node's pods as the kubelet and containerd lay them out (see `support/kubelet.rs`): shop/web
/// under the systemd cgroup driver and db/pg-0 under the cgroupfs driver, each in a namespace
/// registered as `cni-UUID`, with the kubelet's log directories. `twtrace serve` runs as a pod
/// of its own would: in another pod's cgroup, in a cgroup namespace of its own (`unshare
/// --cgroup`), where the cgroupfs pod's path reads `/../../pod<UID>/<ID>` unless twtrace reads
/// it in the host's cgroup namespace. Through a Prometheus scraping as the PodMonitor does, the
/// web pod's TIME_WAIT (as `ss` counts it) and EADDRNOTAVAIL (as its client counted them) must
/// appear under its Kubernetes namespace and pod name, with the CNI name as `netns_name`; the
/// other pod is named too, and so is a pod made while serve runs, once its log directory
/// appears. `stat` names them the same way.
#[test]
fn pods_laid_out_as_the_kubelet_does_are_named_in_prometheus() {
    if !can_run() {
        return;
    }
    let Some(cgroups) = kubelet::cgroup2_root() else {
        support::skip("serve", "no cgroup v2 hierarchy mounted here");
        return;
    };
    let scratch = Scratch::new("kubelet");
    let logs = scratch.0.join("pods");
    let web =
        kubelet::KubeletPod::new(&cgroups, &logs, kubelet::Driver::Systemd, ("shop", "web-7d9f8c6b5-x2x4q", "web"), 1);
    let db = kubelet::KubeletPod::new(&cgroups, &logs, kubelet::Driver::Cgroupfs, ("db", "pg-0", "postgres"), 2);
    // twtrace's own pod, whose cgroup it runs in.
    let (own_uid, own_id) = kubelet::ids(3);
    std::fs::create_dir_all(logs.join(format!("twtrace_twtrace-abcde_{own_uid}/twtrace"))).unwrap();
    let (_own_cgroup, own_dir) =
        kubelet::CgroupDirs::make(&cgroups, &kubelet::container_cgroup(kubelet::Driver::Cgroupfs, &own_uid, &own_id));
    let range = (40_000, 40_099);
    web.netns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", range.0, range.1));
    web.netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    // The quiet pod holds one TIME_WAIT socket, so that every view lists it: an idle namespace
    // shows only by its counters, which an emulated guest's stat had not read in its first
    // snapshot (6.18, 2026-12-07).
    db.netns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 1));

    let procs = std::ffi::CString::new(own_dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    let serve = Serve::start_with(&["--top", "1000"], |argv| {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env(KUBELET_POD_LOGS, &logs);
        // Into its pod's cgroup ("0": the writer itself), then a cgroup namespace of its own,
        // in the child before it execs twtrace: what `unshare --cgroup` does, without a
        // shell and util-linux (busybox's sh and unshare in the VM guests have no --cgroup).
        // SAFETY: only async-signal-safe calls (open, write, close, unshare) on data made
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    });
    let ns_of = |pid: String| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap();
    assert_ne!(ns_of(serve.child.id().to_string()), ns_of("self".into()), "serve has a cgroup namespace of its own");
    let own_view = std::fs::read_to_string(format!("/proc/{}/cgroup", serve.child.id())).unwrap();
    assert!(own_view.contains(&own_id), "serve runs in its pod's cgroup: {own_view}");
    let seen_from_serve = support::output(
        Command::new("nsenter")
            .arg(format!("--cgroup=/proc/{}/ns/cgroup", serve.child.id()))
            .args(["cat", &format!("/proc/{}/cgroup", db.pause_pid())]),
    );
    eprintln!(
        "db's sandbox as serve's cgroup namespace shows it: {}",
        String::from_utf8_lossy(&seen_from_serve.stdout)
    );

    let prom = Prometheus::start("kubelet", &kubernetes_job(&serve.addr, "node-a"), None);
    let pod = |p: &kubelet::KubeletPod| {
        format!("namespace=\"{}\",pod=\"{}\",netns_name=\"{}\"", p.namespace, p.name, p.netns.name)
    };
    for p in [&web, &db] {
        let info = format!("twtrace_namespace_info{{{}}}", pod(p));
        let named = prom.wait_for(&info, |v| v == 1.0);
        assert_eq!(
            named,
            Some(1.0),
            "{}/{} is not named: {:#?}",
            p.namespace,
            p.name,
            prom.query("twtrace_namespace_info")
        );
    }
    // A pod made while serve runs, whose log directory twtrace has not read when it first sees
    // the namespace: served unnamed first (its cgroup alone), then under its name once the
    // directory is read, which the stream must carry to the labels (a better name learnt later
    // was never sent before stop 33).
    let late =
        kubelet::KubeletPod::new_unlogged(&cgroups, &logs, kubelet::Driver::Systemd, ("shop", "late-5d8c9-x7k2p"), 4);
    let unnamed = format!("twtrace_namespace_info{{netns_name=\"{}\",pod=\"\"}}", late.netns.name);
    let seen = prom.wait_for(&unnamed, |v| v == 1.0);
    assert_eq!(seen, Some(1.0), "the late pod's namespace, unnamed: {:#?}", prom.query("twtrace_namespace_info"));
    late.log("app");
    let info = format!("twtrace_namespace_info{{{}}}", pod(&late));
    let named = prom.wait_for(&info, |v| v == 1.0);
    assert_eq!(named, Some(1.0), "the late pod, named: {:#?}", prom.query("twtrace_namespace_info"));
    let summary = support::churn_in(&web.netns, "client", 5, Duration::ZERO).join().unwrap();
    let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0);
    let tw = web.netns.time_wait_sockets().len();
    eprintln!("web: ss TIME_WAIT {tw}, churn EADDRNOTAVAIL {refused}");
    assert!(refused > 0 && tw >= 99, "the 100-port range ran out: {summary}");
    let failures = format!("twtrace_port_search_failures_total{{{},errno=\"EADDRNOTAVAIL\"}}", pod(&web));
    let skipped = || prom.value("twtrace_skipped_runs_total").unwrap_or(0.0);
    let shown = prom.wait_for(&failures, |v| counted(v, refused as f64, skipped()));
    let skipped = skipped();
    assert!(
        shown.is_some_and(|v| counted(v, refused as f64, skipped)),
        "EADDRNOTAVAIL under its pod: {shown:?}, churn {refused}, {skipped} runs skipped"
    );
    let timewait = format!("twtrace_timewait_sockets{{{}}}", pod(&web));
    let shown = prom.wait_for(&timewait, |v| within_two_percent(v, tw as f64)).expect("TIME_WAIT under its pod");
    assert!(within_two_percent(shown, tw as f64), "TIME_WAIT {shown} vs ss {tw}");
    // The pod's series carry its Kubernetes labels, not those of twtrace's own pod.
    let series = prom.query(&timewait);
    assert_eq!(series[0]["metric"]["node"], "node-a", "{series:#?}");
    assert!(series[0]["metric"].get("container").is_none(), "{series:#?}");

    // stat (top's text form) names them alike, from the same registry. Every namespace is
    // listed (--top): tests running beside this one make namespaces that rank above an idle pod.
    // An idle pod shows by its counters, whose first reading an emulated guest's stat had not
    // yet taken after 1 s (6.18 under kprobe, 2026-12-07): 3 s there.
    let interval = if support::emulated() { "3" } else { "1" };
    let stat = support::output(
        Command::new(env!("CARGO_BIN_EXE_twtrace"))
            .args(["stat", "--json", "--interval", interval, "--count", "1", "--top", "1000"])
            .env(KUBELET_POD_LOGS, &logs),
    );
    let stat = String::from_utf8_lossy(&stat.stdout);
    for p in [&web, &db] {
        assert!(stat.contains(&format!("\"{}/{}\"", p.namespace, p.name)), "stat does not name {}: {stat}", p.name);
    }
    let said = serve.stop();
    assert!(!said.iter().any(|l| l.contains("error") || l.contains("WARN")), "{said:#?}");
}

/// Where twtrace reads the kubelet's pod log directories instead of /var/log/pods.
const KUBELET_POD_LOGS: &str = "TWTRACE_KUBELET_POD_LOGS";

#[test]
fn tls_and_basic_auth_from_the_web_config_file() {
    if !can_run() {
        return;
    }
    let scratch = Scratch::new("tls");
    let (cert, key) = (scratch.0.join("tls.crt"), scratch.0.join("tls.key"));
    let out = support::output(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=twtrace-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let hash = bcrypt::hash("scrape-me", 10).unwrap();
    let web = scratch.file(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let serve = Serve::start(&["--web-config-file", web.to_str().unwrap(), "--family", "timewait"]);
    let ca = cert.display();
    // The jobs that send the password scrape every 3 s with 2.9 s to answer: twtrace checks
    // it against a bcrypt hash (cost 10) on every scrape, which in an emulated guest took over
    // the 0.9 s the other jobs get (6.18 guest, 2026-12-07: `up` stayed 0).
    let jobs = format!(
        "  - job_name: secure\n    scrape_interval: 3s\n    scrape_timeout: 2900ms\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: scrape-me\n    static_configs:\n      - targets: ['{a}']\n\
         \x20 - job_name: nocreds\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    static_configs:\n      - targets: ['{a}']\n\
         \x20 - job_name: wrongpass\n    scrape_interval: 3s\n    scrape_timeout: 2900ms\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: guess\n    static_configs:\n      - targets: ['{a}']\n\
         \x20 - job_name: plaintext\n    static_configs:\n      - targets: ['{a}']\n",
        a = serve.addr
    );
    let prom = Prometheus::start("tls", &jobs, None);
    assert_eq!(prom.wait_for("up{job=\"secure\"}", |v| v == 1.0), Some(1.0), "TLS + basic auth scrape works");
    for job in ["nocreds", "wrongpass", "plaintext"] {
        assert_eq!(prom.wait_for(&format!("up{{job=\"{job}\"}}"), |v| v == 0.0), Some(0.0), "{job} must fail");
    }
    assert!(prom.value("twtrace_timewait_births_total{job=\"secure\"}").is_some());
    assert!(prom.query("twtrace_timewait_births_total{job=\"nocreds\"}").is_empty());

    let url = format!("https://{}/metrics", serve.addr);
    let cacert = cert.to_str().unwrap();
    assert_eq!(curl(&["--cacert", cacert, &url]).0, 401);
    assert_eq!(curl(&["--cacert", cacert, "-u", "prometheus:guess", &url]).0, 401);
    assert_eq!(curl(&["--cacert", cacert, "-u", "nobody:scrape-me", &url]).0, 401);
    let (code, text) = curl(&["--cacert", cacert, "-u", "prometheus:scrape-me", &url]);
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Liveness stays open for kubelet probes, and says nothing else.
    let (code, body) = curl(&["--cacert", cacert, &format!("https://{}/healthz", serve.addr)]);
    assert_eq!((code, body.trim()), (200, "ok"));
    // No TLS, no answer.
    assert_eq!(curl(&[&format!("http://{}/metrics", serve.addr)]).0, 0);
    serve.stop();
}

/// One GET of `path` on `addr` over plain HTTP/1.1: (status line's code, body, seconds taken).
fn get(addr: &str, path: &str) -> (u16, String, f64) {
    use std::io::{Read as _, Write as _};
    let started = Instant::now();
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return (0, String::new(), 0.0) };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new(), 0.0);
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body, started.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A benchmark, not run by default (`cargo test --test serve -- --ignored --nocapture`): 50
/// scrapers at once for 30 s while a namespace churns. Prints scrape latency and memory;
/// asserts only what must hold (every scrape answered whole, no record lost), never a time.
#[test]
#[ignore = "a 40 s benchmark: run with --ignored"]
fn fifty_concurrent_scrapers_during_churn() {
    if !can_run() {
        return;
    }
    const SCRAPERS: usize = 50;
    const SECONDS: u64 = 30;
    let pod = Pod::new("bench", (32_768, 60_999), 200_000);
    let serve = Serve::start(&[]);
    let pid = serve.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_kib(pid);
    let name = pod.ns.name.clone();
    let churn = std::thread::spawn(move || {
        support::output(Command::new("ip").args(["netns", "exec", &name]).args([
            env!("CARGO_BIN_EXE_twtrace"),
            "churn",
            "--rate",
            "5000",
            "--threads",
            "2",
            "--duration",
            &(SECONDS + 4).to_string(),
            "--json",
        ]))
    });
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let addr = serve.addr.clone();
            std::thread::spawn(move || {
                let (mut latencies, mut failed) = (Vec::new(), 0u32);
                while Instant::now() < deadline {
                    let (code, body, seconds) = get(&addr, "/metrics");
                    if code == 200 && body.ends_with("# EOF\n") {
                        latencies.push(seconds);
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for s in scrapers {
        let (l, f) = s.join().unwrap();
        latencies.extend(l);
        failed += f;
    }
    let churned = churn.join().unwrap();
    let summary: Value = serde_json::from_slice(&churned.stdout).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    let (_, text, _) = get(&serve.addr, "/metrics");
    let lost = text.lines().find_map(|l| l.strip_prefix("twtrace_lost_records_total ")).map(|v| v.to_owned());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] * 1e3;
    println!(
        "serve under {SCRAPERS} scrapers for {SECONDS} s during churn ({} conn/s): {} scrapes ({:.0}/s), {failed} failed; \
         latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; RSS {:.1} MiB before, {:.1} MiB after; lost records {}",
        summary["per_second"].as_f64().unwrap_or(0.0).round(),
        latencies.len(),
        latencies.len() as f64 / SECONDS as f64,
        at(0.5),
        at(0.99),
        latencies.last().unwrap() * 1e3,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        lost.as_deref().unwrap_or("?"),
    );
    assert_eq!(failed, 0, "every scrape is answered whole");
    assert_eq!(lost.as_deref(), Some("0"), "no record lost");
    assert_eq!(get(&serve.addr, "/healthz").0, 200);
    serve.stop();
}

/// Clients that send half a request do not hold up a scrape and are cut after the header
/// timeout; SIGTERM during a stream of scrapes ends serve cleanly, and no scrape gets a
/// truncated exposition (each is whole, or refused once serve has stopped accepting).
#[test]
fn slow_clients_and_sigterm_during_scrapes() {
    if !can_run() {
        return;
    }
    use std::io::{Read as _, Write as _};
    let serve = Serve::start(&["--family", "timewait"]);
    let slow: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&serve.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n").unwrap();
            s
        })
        .collect();
    let (code, body, seconds) = get(&serve.addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.ends_with("# EOF\n"));
    assert!(seconds < 2.0, "a scrape beside 10 stalled clients took {seconds:.1} s");
    // The stalled ones are cut after the header timeout (10 s), with or without a 408.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(read.is_ok(), "{read:?}: not closed within 20 s");
        let text = String::from_utf8_lossy(&rest);
        assert!(rest.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            let (addr, stop) = (serve.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut whole, mut refused, mut truncated) = (0, 0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get(&addr, "/metrics") {
                        (200, body, _) if body.ends_with("# EOF\n") => whole += 1,
                        (0, body, _) if body.is_empty() => refused += 1,
                        (code, body, _) => truncated.push(format!("{code}: {} bytes", body.len())),
                    }
                }
                (whole, refused, truncated)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let said = serve.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut whole, mut refused) = (0, 0);
    for s in scrapers {
        let (w, r, truncated) = s.join().unwrap();
        assert!(truncated.is_empty(), "scrapes cut short by SIGTERM: {truncated:?}");
        whole += w;
        refused += r;
    }
    eprintln!("SIGTERM during scrapes: {whole} whole, {refused} refused after the stop; {said:?}");
    assert!(whole > 0);
}

/// `promtool check metrics` on `text` (the 0.0.4 text format on its standard input).
fn promtool_check_metrics(text: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = support::spawn(
        Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}
