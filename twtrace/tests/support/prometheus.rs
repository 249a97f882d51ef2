//! `twtrace serve` and a real Prometheus server for the exporter's integration tests
//! (included by `serve.rs`): tools checked, a scratch directory, curl, a started `serve`, a
//! Prometheus with its own configuration, and the Python client's strict OpenMetrics parser.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{self, can_trace};

/// Why this test cannot run here, or `None`.
pub fn missing_tools() -> Option<String> {
    for (tool, package) in [
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("ss", "iproute2"),
    ] {
        if which(tool).is_none() {
            return Some(format!(
                "`{tool}` is not installed (Debian package {package}; `cargo xtask setup` installs it)"
            ));
        }
    }
    let parser = Command::new("/usr/bin/python3").args(["-c", "import prometheus_client.openmetrics.parser"]).output();
    if !parser.is_ok_and(|o| o.status.success()) {
        return Some("the Python Prometheus client is not installed (Debian package python3-prometheus-client)".into());
    }
    None
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

pub fn can_run() -> bool {
    if !can_trace() {
        return false;
    }
    if let Some(why) = missing_tools() {
        // In the form the VM matrix reports (only its guests with the lab's tools have Prometheus).
        support::skip("serve", &why);
        return false;
    }
    true
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("twtrace-serve-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `curl` with `args`: (HTTP status, body). Status 0: no HTTP answer (connection or TLS failed).
pub fn curl(args: &[&str]) -> (u16, String) {
    // A TLS handshake and a bcrypt check in a loaded emulated guest can take seconds each.
    let limit = if support::emulated() { "30" } else { "10" };
    let out = support::output(Command::new("curl").args(["-s", "-m", limit, "-w", "\n%{http_code}"]).args(args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `twtrace serve` with `args`, started (its ready line read); SIGTERM on drop.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Serve {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |argv| {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        })
    }

    /// [`Self::start`] through the command `wrap` makes of twtrace's whole command line (the
    /// binary first): another cgroup, a namespace of its own, an environment. The command must
    /// end by exec'ing twtrace, so that its process is twtrace's.
    pub fn start_with(args: &[&str], wrap: impl FnOnce(&[String]) -> Command) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut all = vec!["serve", "--listen", &addr, "--publish-interval", "0.5"];
        all.extend_from_slice(args);
        let backend = support::forced_backend();
        if let Some(b) = &backend {
            all.extend(["--backend", b]);
        }
        let argv: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_twtrace")).chain(all).map(str::to_owned).collect();
        let started = support::started(wrap(&argv).stdout(Stdio::null()), "serve")
            .unwrap_or_else(|said| panic!("twtrace serve did not start: {said}"));
        let support::Started { child, before, stderr, .. } = started;
        let stderr = std::thread::spawn(move || before.into_iter().chain(stderr.map_while(Result::ok)).collect());
        Self { child, addr, stderr: Some(stderr) }
    }

    /// The exposition's sample lines that contain every one of `needles`, read from serve
    /// directly: what a test prints when Prometheus lacks a series, to tell twtrace's side from
    /// the scrape's.
    pub fn samples_with(&self, needles: &[&str]) -> Vec<String> {
        let (code, body) = curl(&[&format!("http://{}/metrics", self.addr)]);
        if code != 200 {
            return vec![format!("(reading {}/metrics: HTTP {code}: {body})", self.addr)];
        }
        body.lines()
            .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM; it must drain and exit 0, saying nothing alarming.
    pub fn stop(mut self) -> Vec<String> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        let status = self.child.wait().unwrap();
        let said = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "serve exited {status}: {said:#?}");
        assert!(started.elapsed() < Duration::from_secs(15), "SIGTERM took {:?}", started.elapsed());
        said
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Prometheus server on a loopback port with its own configuration and storage.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _scratch: Scratch,
}

impl Prometheus {
    /// `scrape_configs` is YAML for the jobs (indented under `scrape_configs:`).
    pub fn start(tag: &str, scrape_configs: &str, rules: Option<&Path>) -> Self {
        let scratch = Scratch::new(&format!("prom-{tag}"));
        let rule_files = rules.map(|r| format!("rule_files:\n  - {}\n", r.display())).unwrap_or_default();
        // Under software emulation a scrape (TLS, bcrypt, a few hundred series through a
        // loaded guest) can outlast 0.9 s: every scrape then fails and `up` stays 0 (6.18
        // guest, 2026-12-07). Jobs may set their own.
        let (interval, timeout) = if support::emulated() { ("2s", "1900ms") } else { ("1s", "900ms") };
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {timeout}\n  evaluation_interval: 1s\n{rule_files}scrape_configs:\n{scrape_configs}"
        );
        let config = scratch.file("prometheus.yml", &config);
        let port = free_port();
        let child = support::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", scratch.0.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let url = format!("http://127.0.0.1:{port}");
        let me = Self { child, url, _scratch: scratch };
        let start = Instant::now();
        while curl(&[&format!("{}/-/ready", me.url)]).0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(30), "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }

    /// An instant query's result vector (panics on an error answer).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (code, body) =
            curl(&["-G", &format!("{}/api/v1/query", self.url), "--data-urlencode", &format!("query={promql}")]);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"));
        assert_eq!((code, v["status"].as_str()), (200, Some("success")), "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value `promql` returns (None when it returns nothing).
    pub fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(result.len() <= 1, "{promql}: more than one series: {result:#?}");
        result.first().map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// Waits until `promql` returns a value for which `ok` holds, or 20 s (60 s emulated).
    /// Given up, it prints each target's last scrape (health, error, duration): a series that
    /// never came is most often a scrape that failed.
    pub fn wait_for(&self, promql: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
        let patience = Duration::from_secs(if support::emulated() { 60 } else { 20 });
        let start = Instant::now();
        loop {
            let v = self.value(promql);
            if v.is_some_and(&ok) {
                return v;
            }
            if start.elapsed() > patience {
                eprintln!("{promql}: {v:?} after {patience:?}; targets: {}", self.targets());
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each active target's job, health, last error and last scrape's duration.
    pub fn targets(&self) -> String {
        let (_, body) = curl(&[&format!("{}/api/v1/targets?state=active", self.url)]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let each = targets.iter().map(|t| {
            format!(
                "{} {} ({:.2} s) {}",
                t["labels"]["job"].as_str().unwrap_or("?"),
                t["health"].as_str().unwrap_or("?"),
                t["lastScrapeDuration"].as_f64().unwrap_or(-1.0),
                t["lastError"].as_str().unwrap_or("")
            )
        });
        each.collect::<Vec<_>>().join("; ")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The strict OpenMetrics parser of the Python client on `text`; its error if it refuses.
pub fn openmetrics_parse(text: &str) -> Result<usize, String> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
                  print(len(list(p(sys.stdin.read()))))\n";
    let mut child = support::spawn(
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// A scrape job as prometheus-operator makes one of the shipped PodMonitor
/// (deploy/kubernetes/base/podmonitor.yaml) for twtrace's pod on `node`: the target labels
/// kubernetes_sd's `pod` role gives (`__meta_kubernetes_*`, here set by hand) relabelled to
/// `namespace`, `pod`, `container`, `node` and the job, and `honor_labels: true`.
pub fn kubernetes_job(target: &str, node: &str) -> String {
    format!(
        "  - job_name: podMonitor/twtrace/twtrace/0
    honor_labels: true
    static_configs:
      - targets: ['{target}']
        labels:
          __meta_kubernetes_namespace: twtrace
          __meta_kubernetes_pod_name: twtrace-abcde
          __meta_kubernetes_pod_container_name: twtrace
          __meta_kubernetes_pod_node_name: {node}
    relabel_configs:
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_container_name]
        target_label: container
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
      - target_label: endpoint
        replacement: metrics
      - target_label: job
        replacement: twtrace/twtrace
"
    )
}
