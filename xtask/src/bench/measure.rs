//! One measurement of the overhead bench: a tracer started beside `twtrace churn` in the
//! bench's namespace, and what the run cost (throughput, CPU, memory, BPF time, loss).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    bpftrace::{BPFTRACE_AGGREGATE, BPFTRACE_PRINT},
    netns::{NETNS, Netns},
    process::{BpfStats, bpf_run_time_ns, clock_ticks_per_s, cpu_ticks, peak_rss_kib, programs_of},
};

/// What runs beside the churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tracer {
    Untraced,
    RecordAll,
    RecordTimeWaitDrops,
    TopHeadless,
    /// `twtrace serve`, scraped once a second as Prometheus would.
    Serve,
    /// The same, also writing the flight recorder's segments (`--record-dir`).
    ServeRecording,
    BpftracePrint,
    BpftraceAggregate,
}

impl Tracer {
    pub const ALL: [Tracer; 8] = [
        Tracer::Untraced,
        Tracer::RecordAll,
        Tracer::RecordTimeWaitDrops,
        Tracer::TopHeadless,
        Tracer::Serve,
        Tracer::ServeRecording,
        Tracer::BpftracePrint,
        Tracer::BpftraceAggregate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tracer::Untraced => "untraced",
            Tracer::RecordAll => "twtrace record, all families",
            Tracer::RecordTimeWaitDrops => "twtrace record, timewait+drops",
            Tracer::TopHeadless => "twtrace top (headless: stat)",
            Tracer::Serve => "twtrace serve, scraped every second",
            Tracer::ServeRecording => "twtrace serve --record-dir, scraped",
            Tracer::BpftracePrint => "bpftrace, prints each event",
            Tracer::BpftraceAggregate => "bpftrace, aggregates in maps",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Run {
    pub connections_per_s: f64,
    pub connections: u64,
    /// Kernel BPF run time per connection (ns), all programs.
    pub bpf_ns_per_connection: Option<f64>,
    /// The tracer's user+system CPU, percent of one core, during the churn.
    pub cpu_percent: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub events: Option<u64>,
    pub lost: Option<u64>,
    pub bytes: Option<u64>,
    /// A null system call (getppid) on this host while the tracer is attached, ns: what the
    /// tracer costs processes that never touch TCP.
    pub syscall_ns: Option<f64>,
}

/// Best of a few timed loops of getppid(), ns per call. The best, not the median: what is
/// sought is the cost of the path itself, and a loop can only be slowed by the noise.
pub fn null_syscall_ns() -> f64 {
    const CALLS: u32 = 1_000_000;
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                // SAFETY: getppid has no arguments and no effects.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Seconds of churn for the BPF-time measurement (kernel statistics on) after each tracer's
/// throughput run.
pub const COSTED_SECONDS: u64 = 4;

pub fn measure(
    twtrace: &Path,
    scratch: &Path,
    tracer: Tracer,
    seconds: u64,
    threads: usize,
    rate: Option<f64>,
    bpf_stats: bool,
) -> anyhow::Result<Run> {
    let _stats = if bpf_stats { Some(BpfStats::enable()?) } else { None };
    let recording = scratch.join("record.twr");
    let bpftrace_out = scratch.join("bpftrace.out");
    // A fresh namespace per measurement: TIME_WAIT sockets of the previous run (they live 60 s)
    // would otherwise fill tcp_max_tw_buckets, and then connections skip TIME_WAIT and the
    // TIME_WAIT probes have less to do. The cap is raised so every connection gets one.
    let _netns = Netns::create()?;
    let mut child: Option<(Child, Lines)> = match tracer {
        Tracer::Untraced => None,
        Tracer::RecordAll | Tracer::RecordTimeWaitDrops => {
            let mut cmd = Command::new(twtrace);
            cmd.args(["record", "--force", "--netns", NETNS, "-o"]).arg(&recording);
            if tracer == Tracer::RecordTimeWaitDrops {
                cmd.args(["--family", "timewait", "--family", "drops"]);
            }
            Some(start_twtrace(&mut cmd)?)
        }
        Tracer::TopHeadless => {
            Some(start_twtrace(Command::new(twtrace).args(["stat", "--netns", NETNS, "--interval", "1"]))?)
        }
        Tracer::Serve => {
            Some(start_twtrace(Command::new(twtrace).args(["serve", "--netns", NETNS, "--listen", SERVE_ADDR]))?)
        }
        Tracer::ServeRecording => {
            let dir = scratch.join("flight");
            let _ = std::fs::remove_dir_all(&dir);
            let mut cmd = Command::new(twtrace);
            cmd.args(["serve", "--netns", NETNS, "--listen", SERVE_ADDR, "--record-dir"]).arg(&dir);
            Some(start_twtrace(&mut cmd)?)
        }
        Tracer::BpftracePrint | Tracer::BpftraceAggregate => {
            let (script, text) = if tracer == Tracer::BpftracePrint {
                ("print.bt", BPFTRACE_PRINT)
            } else {
                ("aggregate.bt", BPFTRACE_AGGREGATE)
            };
            // One program per probe block.
            let probes = text.lines().filter(|l| l.starts_with("tracepoint:")).count();
            let _ = std::fs::remove_file(&bpftrace_out);
            // Unbuffered, as a printing tool would run.
            let child = Command::new("bpftrace")
                .args(["-B", "none"])
                .arg("-o")
                .arg(&bpftrace_out)
                .arg(scratch.join(script))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            // Ready when its probe programs are loaded (its BEGIN output is not always flushed
            // to the file, so its descriptors are asked instead: a count of every program on
            // the machine moves with whatever else loads or unloads), plus a moment to attach.
            let deadline = Instant::now() + Duration::from_secs(60);
            while programs_of(child.id()).len() < probes {
                if Instant::now() > deadline {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("bpftrace did not attach within 60 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(1));
            Some((child, Lines::default()))
        }
    };
    // Before the churn, which would compete with it; not under the statistics, which add
    // their own cost to the traced path.
    let syscall_ns = (!bpf_stats).then(null_syscall_ns);
    let pid = child.as_ref().map(|(c, _)| c.id());
    let cpu_before = pid.and_then(cpu_ticks);
    let bpf_before = pid.map_or(0, bpf_run_time_ns);
    let started = Instant::now();
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(matches!(
        tracer,
        Tracer::Serve | Tracer::ServeRecording
    )));
    let scraper = scraping.clone();
    let scrapes = std::thread::spawn(move || {
        let mut ok = 0u64;
        while scraper.load(std::sync::atomic::Ordering::Relaxed) {
            ok += u64::from(scrape(SERVE_ADDR));
            std::thread::sleep(Duration::from_secs(1));
        }
        ok
    });
    let mut churn = Command::new("ip");
    churn.args(["netns", "exec", NETNS]).arg(twtrace).args([
        "churn",
        "--json",
        "--threads",
        &threads.to_string(),
        "--duration",
        &format!("{seconds}s"),
    ]);
    if let Some(rate) = rate {
        churn.args(["--rate", &rate.to_string()]);
    }
    let out = churn.output().context("running twtrace churn")?;
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scraped = scrapes.join().unwrap_or(0);
    if matches!(tracer, Tracer::Serve | Tracer::ServeRecording) && scraped == 0 {
        bail!("no scrape of twtrace serve on {SERVE_ADDR} succeeded");
    }
    if !out.status.success() {
        bail!("twtrace churn failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bpf_after = pid.map_or(0, bpf_run_time_ns);
    let cpu_after = pid.and_then(cpu_ticks);
    let peak_rss_kib = pid.and_then(peak_rss_kib);
    let result: Value = serde_json::from_slice(&out.stdout).context("churn output")?;
    let connections = result["connections"].as_u64().unwrap_or(0);
    let mut run = Run {
        connections_per_s: result["per_second"].as_f64().unwrap_or(0.0),
        connections,
        bpf_ns_per_connection: (bpf_stats && tracer != Tracer::Untraced && connections > 0)
            .then(|| bpf_after.saturating_sub(bpf_before) as f64 / connections as f64),
        cpu_percent: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some((b - a) as f64 / clock_ticks_per_s() / elapsed * 100.0),
            _ => None,
        },
        peak_rss_kib,
        syscall_ns,
        ..Run::default()
    };
    if let Some((mut child, lines)) = child.take() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait()?;
        // The reader thread ends with the pipe; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let stderr = Some(lines.lock().expect("not poisoned").clone());
        if !status.success() && !matches!(tracer, Tracer::BpftracePrint | Tracer::BpftraceAggregate) {
            bail!("{} exited with {status}: {:?}", tracer.label(), stderr);
        }
        // `twtrace: recorded N events (M lost in the kernel) to FILE: B bytes, ...`
        if let Some(line) = stderr.iter().flatten().find(|l| l.starts_with("twtrace: recorded ")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            run.events = words.get(2).and_then(|w| w.parse().ok());
            run.lost = words.get(4).and_then(|w| w.trim_start_matches('(').parse().ok());
            run.bytes = line.split(": ").nth(2).and_then(|s| s.split_whitespace().next()).and_then(|b| b.parse().ok());
        }
        // `twtrace: serve ended; N events, M lost in the kernel`
        if let Some(line) = stderr.iter().flatten().find_map(|l| l.find("twtrace: serve ended; ").map(|at| &l[at..])) {
            let words: Vec<&str> = line.split_whitespace().collect();
            run.events = words.get(3).and_then(|w| w.parse().ok());
            run.lost = words.get(5).and_then(|w| w.parse().ok());
        }
    }
    Ok(run)
}

/// Where the bench's `twtrace serve` listens.
pub const SERVE_ADDR: &str = "127.0.0.1:19977";

/// One GET of /metrics, as a scraper does; whether it came back 200 with the whole exposition.
pub fn scrape(addr: &str) -> bool {
    fetch_metrics(addr, Duration::from_secs(5)).is_some()
}

/// One GET of /metrics: the response (status line, headers, exposition) if it came back 200
/// with the whole exposition within `timeout` per read.
pub fn fetch_metrics(addr: &str, timeout: Duration) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    (body.starts_with("HTTP/1.1 200") && body.ends_with("# EOF\n")).then_some(body)
}

pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts twtrace and waits for its ready line; the rest of its stderr (the final summary)
/// is collected by a thread.
pub fn start_twtrace(cmd: &mut Command) -> anyhow::Result<(Child, Lines)> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting twtrace")?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("tracing;") => break,
            Some(Ok(_)) => {}
            _ => bail!("twtrace exited before tracing: {:?}", child.wait()),
        }
    }
    let collected = Lines::default();
    let sink = collected.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().expect("not poisoned").push(line);
        }
    });
    Ok((child, collected))
}
