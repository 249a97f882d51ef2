//! `cargo xtask bench`: what tracing costs a busy host, measured in one run.
//!
//! Loopback churn (`twtrace churn`, server closes first) runs in a namespace of its own,
//! untraced and under each tracer, in alternating repetitions; the table reports medians.
//! Throughput is compared as a ratio to the untraced runs of the same repetition round.
//! Kernel-side cost comes from the kernel's own BPF statistics (`kernel.bpf_stats_enabled`),
//! summed over every loaded program, so the tracer's programs are measured exactly as the
//! kernel accounts them. The statistics cost something themselves (two clock reads per program
//! run), so they are on only in a second, shorter run per tracer: throughput, CPU and loss come
//! from a run without them, as users run.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{cargo, run_cmd, setup, workspace_root};

const NETNS: &str = "twtrace-bench";
/// Room for every TIME_WAIT socket of a 60 s run at 25k connections/s.
const TW_BUCKETS: &str = "net.ipv4.tcp_max_tw_buckets=2000000";

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of churn per measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Alternating repetitions (the table shows medians).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Churn threads (client and server each). Four saturate two cores: with two, the CPUs
    /// sat 5-9 % idle while client and server waited on each other.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Skip the 60 s zero-loss run at 25k connections/s.
    #[arg(long)]
    quick: bool,
    /// Also write the table as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Kernel whose guest compares the backends' BPF cost (this host allows only tracepoints).
    #[arg(long, default_value = "6.12", value_name = "KERNEL")]
    vm_kernel: String,
    /// Skip the guest comparison.
    #[arg(long)]
    no_vm: bool,
    /// Only the guest comparison.
    #[arg(long, conflicts_with = "no_vm")]
    vm_only: bool,
}

/// Runs in the guest: twtrace record on each backend beside the same churn, then the kernel's
/// per-program BPF statistics per connection (busybox awk: the guest has no Python).
const GUEST_SCRIPT: &str = r#"
sysctl -qw kernel.bpf_stats_enabled=1
twtrace probes --programs | sed 's/^/VMCATALOGUE /'
for b in tracepoint fentry kprobe; do
  # A fresh namespace each: the previous run's TIME_WAIT sockets must not fill the table.
  # iproute2 by path: busybox's ip applet (also on PATH) has no netns support.
  /usr/sbin/ip netns add bench-$b
  /usr/sbin/ip netns exec bench-$b /usr/sbin/ip link set lo up
  /usr/sbin/ip netns exec bench-$b /usr/sbin/sysctl -qw net.ipv4.tcp_max_tw_buckets=2000000
  twtrace record -o /tmp/vb.twr --force --backend $b --netns bench-$b 2>/tmp/rec.err &
  pid=$!
  i=0; while ! grep -q "tracing;" /tmp/rec.err && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  echo "VMREADY backend=$b $(grep tracing /tmp/rec.err)"
  conns=$(/usr/sbin/ip netns exec bench-$b twtrace churn --duration 15 --json | sed 's/.*"connections":\([0-9]*\).*/\1/')
  bpftool prog show | awk -v b=$b -v c=$conns '/^[0-9]+:/ { name=$4 } /run_time_ns/ { for (i=1;i<=NF;i++) { if ($i=="run_time_ns") t=$(i+1); if ($i=="run_cnt") n=$(i+1) }; printf "VMPROG backend=%s prog=%s calls_per_conn=%.2f ns_per_conn=%.0f\n", b, name, n/c, t/c }'
  kill -INT $pid; wait $pid
done
"#;

/// The kernel keeps a program's name to BPF_OBJ_NAME_LEN (16) less its NUL: bpftool shows
/// the first 15 characters.
const KERNEL_NAME_LEN: usize = 15;

/// Which family each program belongs to, as `twtrace probes --programs` lists them (`VMCATALOGUE
/// family backend program hook` lines), by the name the kernel shows. A program several
/// families share is listed first under its owner, which is charged with its cost.
fn program_families(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.split("VMCATALOGUE ").nth(1)) {
        let mut fields = line.split_whitespace();
        if let (Some(family), Some(_backend), Some(program)) = (fields.next(), fields.next(), fields.next()) {
            let shown: String = program.chars().take(KERNEL_NAME_LEN).collect();
            families.entry(shown).or_insert_with(|| family.to_owned());
        }
    }
    families
}

/// BPF ns per connection by backend and family, from a guest.
fn guest_costs(kernel: &str) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let out = Command::new(std::env::current_exe()?)
        .args(["vm", "--kernel", kernel, "--timeout", "900", "--", "sh", "-c", GUEST_SCRIPT])
        .stderr(Stdio::inherit())
        .output()
        .context("booting the guest")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let families = program_families(&text);
    let mut costs = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.split("VMPROG ").nth(1)) {
        // Per program, for the reader who wants more than the family sums.
        eprintln!("xtask: bench: guest: {line}");
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k).map(str::to_owned));
        if let (Some(b), Some(p), Some(ns)) = (field("backend="), field("prog="), field("ns_per_conn=")) {
            // bpftool lists every program on the guest: only twtrace's are counted.
            let Some(family) = families.get(&p) else { continue };
            *costs.entry((b, family.clone())).or_insert(0.0) += ns.parse::<f64>().unwrap_or(0.0);
        }
    }
    if costs.is_empty() {
        bail!("the guest reported no figures:\n{text}");
    }
    // Which backend each family really ran on: a family that could not attach is missing.
    for line in text.lines().filter_map(|l| l.split("VMREADY ").nth(1)) {
        eprintln!("xtask: bench: guest: {line}");
    }
    Ok(costs)
}

/// What runs beside the churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tracer {
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
    const ALL: [Tracer; 8] = [
        Tracer::Untraced,
        Tracer::RecordAll,
        Tracer::RecordTimeWaitDrops,
        Tracer::TopHeadless,
        Tracer::Serve,
        Tracer::ServeRecording,
        Tracer::BpftracePrint,
        Tracer::BpftraceAggregate,
    ];

    fn label(self) -> &'static str {
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

/// The same tracepoints twtrace's tracepoint backend uses, printing every event. connect()'s
/// port search is timed the way that backend does: from SYN_SENT (state 2) to the first arm of
/// the socket's retransmit timer on the same thread, or to CLOSE (7).
const BPFTRACE_PRINT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("state %d %d %d %d\n", args->oldstate, args->newstate, args->sport, args->dport);
  if (args->newstate == 2) { @start[tid] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 7 && @start[tid]) { printf("connect failed %d %s\n", nsecs - @start[tid], comm); delete(@start[tid]); }
}
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { printf("tw_start %lx %d\n", args->timer, args->expires - args->now); }
tracepoint:timer:timer_start /args->function == kaddr("tcp_write_timer") && @start[tid]/ { printf("connect %d %s\n", nsecs - @start[tid], comm); delete(@start[tid]); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { printf("tw_expire %lx\n", args->timer); }
tracepoint:skb:kfree_skb /args->reason > 2/ { printf("drop %d\n", args->reason); }
"#;

/// The same tracepoints, aggregating in kernel maps (nothing crosses to userspace per event).
const BPFTRACE_AGGREGATE: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  @states[args->oldstate, args->newstate] = count();
  if (args->newstate == 2) { @start[tid] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 7 && @start[tid]) { @connect_failed_ns = hist(nsecs - @start[tid]); delete(@start[tid]); }
}
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { @tw_start = count(); }
tracepoint:timer:timer_start /args->function == kaddr("tcp_write_timer") && @start[tid]/ { @connect_ns = hist(nsecs - @start[tid]); delete(@start[tid]); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { @tw_expire = count(); }
tracepoint:skb:kfree_skb /args->reason > 2/ { @drops[args->reason] = count(); }
"#;

#[derive(Clone, Debug, Default)]
struct Run {
    connections_per_s: f64,
    connections: u64,
    /// Kernel BPF run time per connection (ns), all programs.
    bpf_ns_per_connection: Option<f64>,
    /// The tracer's user+system CPU, percent of one core, during the churn.
    cpu_percent: Option<f64>,
    peak_rss_kib: Option<u64>,
    events: Option<u64>,
    lost: Option<u64>,
    bytes: Option<u64>,
    /// A null system call (getppid) on this host while the tracer is attached, ns: what the
    /// tracer costs processes that never touch TCP.
    syscall_ns: Option<f64>,
}

/// Best of a few timed loops of getppid(), ns per call. The best, not the median: what is
/// sought is the cost of the path itself, and a loop can only be slowed by the noise.
fn null_syscall_ns() -> f64 {
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
const COSTED_SECONDS: u64 = 4;

/// tracefs at /sys/kernel/tracing for the bench's duration: mounted if it was not (and
/// unmounted after), left alone if it was.
struct Tracefs {
    mounted_here: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

impl Tracefs {
    fn ensure() -> anyhow::Result<Self> {
        if Path::new(TRACEFS).join("events").exists() {
            return Ok(Self { mounted_here: false });
        }
        eprintln!("xtask: bench: mounting tracefs at {TRACEFS} for bpftrace (unmounted after)");
        run_cmd(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))
            .context("mounting tracefs (bpftrace needs it to find tracepoints)")?;
        Ok(Self { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    cargo(&["build", "--release", "--package", "twtrace"])?;
    let root = workspace_root();
    let twtrace = root.join("target/release/twtrace");
    if crate::which("bpftrace").is_none() {
        bail!("bpftrace is missing: `cargo xtask setup` installs it");
    }
    // bpftrace (0.17, Debian 12) finds tracepoints through tracefs only; a host that has not
    // mounted it (this project's CI machines) would fail the bpftrace rows.
    let _tracefs = Tracefs::ensure()?;
    let scratch = std::env::temp_dir().join("twtrace-bench");
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(scratch.join("print.bt"), BPFTRACE_PRINT)?;
    std::fs::write(scratch.join("aggregate.bt"), BPFTRACE_AGGREGATE)?;
    if args.vm_only {
        eprintln!("xtask: bench: backends compared in a {} guest", args.vm_kernel);
        println!("{}", guest_table(&guest_costs(&args.vm_kernel)?, &args.vm_kernel));
        return Ok(());
    }
    let mut runs: BTreeMap<Tracer, Vec<Run>> = BTreeMap::new();
    let mut ratios: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    for round in 0..args.repetitions {
        let mut untraced = None;
        // Alternate the order each round so drift (thermal, page cache) does not favour one.
        let mut order = Tracer::ALL.to_vec();
        if round % 2 == 1 {
            order[1..].reverse();
        }
        for tracer in order {
            let context = || format!("{} (round {})", tracer.label(), round + 1);
            // Throughput, CPU and loss as users run it: without the kernel's BPF statistics,
            // which add two clock reads to every program run. Then a shorter run with them on,
            // for the BPF time per connection alone.
            let mut run =
                measure(&twtrace, &scratch, tracer, args.seconds, args.threads, None, false).with_context(context)?;
            if tracer != Tracer::Untraced {
                let costed = measure(&twtrace, &scratch, tracer, COSTED_SECONDS, args.threads, None, true)
                    .with_context(context)?;
                run.bpf_ns_per_connection = costed.bpf_ns_per_connection;
            }
            eprintln!(
                "xtask: bench: round {} {:<34} {:>8.0} conn/s  bpf {}  cpu {}",
                round + 1,
                tracer.label(),
                run.connections_per_s,
                run.bpf_ns_per_connection.map_or("-".into(), |v| format!("{:.2}us/conn", v / 1e3)),
                run.cpu_percent.map_or("-".into(), |v| format!("{v:.1}%"))
            );
            if tracer == Tracer::Untraced {
                untraced = Some(run.connections_per_s);
            }
            runs.entry(tracer).or_default().push(run);
        }
        let base = untraced.expect("untraced runs every round");
        for tracer in Tracer::ALL {
            let last = runs[&tracer].last().expect("ran").connections_per_s;
            ratios.entry(tracer).or_default().push(last / base);
        }
    }

    let long = if args.quick {
        None
    } else {
        eprintln!("xtask: bench: 60 s at 25k connections/s under twtrace record (all families)");
        Some(measure(&twtrace, &scratch, Tracer::RecordAll, 60, args.threads, Some(25_000.0), false)?)
    };

    // The recording of the last saturating run: its size and how fast it replays.
    let recording = scratch.join("record.twr");
    let replay = replay_figures(&root, &recording)?;
    let memory = memory_figures(&root)?;
    let pipeline = pipeline_figures(&root)?;
    let mut table = table(&runs, &ratios, long.as_ref(), &replay, &memory, args);
    table.push_str("\nDecoder and aggregator (criterion, benches/pipeline.rs):\n");
    for line in &pipeline {
        table.push_str(&format!("    {line}\n"));
    }
    // The host's figures first: a guest that fails must not lose them.
    println!("{table}");
    let save = |table: &str| -> anyhow::Result<()> {
        if let Some(path) = &args.markdown {
            std::fs::write(path, table).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: bench: wrote {}", path.display());
        }
        Ok(())
    };
    save(&table)?;
    if !args.no_vm {
        eprintln!("xtask: bench: backends compared in a {} guest", args.vm_kernel);
        let guest = guest_table(&guest_costs(&args.vm_kernel)?, &args.vm_kernel);
        println!("{guest}");
        table.push_str(&guest);
        save(&table)?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 })
}

fn measure(
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
const SERVE_ADDR: &str = "127.0.0.1:19977";

/// One GET of /metrics, as a scraper does; whether it came back 200 with the whole exposition.
fn scrape(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    stream.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1.1 200") && body.ends_with("# EOF\n")
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts twtrace and waits for its ready line; the rest of its stderr (the final summary)
/// is collected by a thread.
fn start_twtrace(cmd: &mut Command) -> anyhow::Result<(Child, Lines)> {
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

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.split_whitespace().next()?.parse().ok())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The BPF programs process `pid` holds, each once (by id) with its kernel run time so far:
/// the `prog_id` and `run_time_ns` lines of /proc/PID/fdinfo of its program descriptors (not
/// its links'). Only
/// the tracer's own programs: other work on the machine (tests, other tracers) loads and
/// unloads programs meanwhile.
fn programs_of(pid: u32) -> std::collections::BTreeMap<u64, u64> {
    let mut programs = std::collections::BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return programs };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        // A program's own descriptor has its run time; a link's names the program too, without
        // it (and usually comes later: letting it in read every program as 0 µs).
        if let (Some(id), Some(run_time)) = (field("prog_id:"), field("run_time_ns:")) {
            programs.insert(id, run_time);
        }
    }
    programs
}

/// Kernel run time of the tracer's programs so far (`kernel.bpf_stats_enabled=1`).
fn bpf_run_time_ns(pid: u32) -> u64 {
    programs_of(pid).values().sum()
}

/// `kernel.bpf_stats_enabled=1` while it lives; the previous value comes back.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(Self::PATH).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling kernel.bpf_stats_enabled (root needed)")?;
        Ok(Self(previous.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// The churn's own namespace: its TIME_WAIT sockets and port range do not touch the host's.
struct Netns;

impl Netns {
    fn create() -> anyhow::Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).stderr(Stdio::null()).status();
        crate::run_cmd(Command::new("ip").args(["netns", "add", NETNS]))?;
        crate::run_cmd(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        crate::run_cmd(Command::new("ip").args(["netns", "exec", NETNS, "sysctl", "-qw", TW_BUCKETS]))?;
        Ok(Self)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        // The kernel tears the namespace (and its TIME_WAIT sockets) down in a work queue:
        // let that finish before the next measurement starts.
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[derive(Default)]
struct Replay {
    bytes_per_event: Option<f64>,
    events_per_s: Option<f64>,
    report: String,
}

/// The recording's size per event and replay speed, from the `recording` bench binary.
fn replay_figures(root: &Path, recording: &Path) -> anyhow::Result<Replay> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "recording", "--"])
        .arg(recording)
        .current_dir(root)
        .output()
        .context("cargo bench --bench recording")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let figure = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Ok(Replay { bytes_per_event: figure("bytes/event: "), events_per_s: figure("replay events/s: "), report: text })
}

/// Criterion's time and throughput lines for the decoder and the aggregator.
fn pipeline_figures(root: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "pipeline"])
        .current_dir(root)
        .output()
        .context("cargo bench --bench pipeline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if line.starts_with("pipeline/") {
            name = line.split_whitespace().next().unwrap_or("").to_owned();
        }
        // Criterion follows with a `change:` block (another `thrpt:` line, in percent)
        // against whatever run of this machine came before: not a figure of this run.
        if let Some(thrpt) = line.trim().strip_prefix("thrpt:").filter(|t| !t.contains('%')) {
            lines.push(format!("{name}: {} (low, median, high)", thrpt.trim()));
        }
    }
    Ok(lines)
}

/// Userspace memory with 1M live TIME_WAIT sockets, from the `memory` bench binary.
fn memory_figures(root: &Path) -> anyhow::Result<String> {
    let out = Command::new("cargo")
        .args(["bench", "-p", "twtrace", "--bench", "memory"])
        .current_dir(root)
        .output()
        .context("cargo bench --bench memory")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn guest_table(costs: &BTreeMap<(String, String), f64>, kernel: &str) -> String {
    let mut t = format!(
        "\nBPF run time per connection by backend, in a {kernel} guest under QEMU (TCG): absolute times under \
         emulation mean little, ratios to the tracepoint backend in the same guest do.\n\n\
         | family | tracepoint µs | fentry µs (ratio) | kprobe µs (ratio) |\n|---|---:|---:|---:|\n"
    );
    let get = |b: &str, f: &str| costs.get(&(b.to_owned(), f.to_owned())).copied();
    let mut totals = [0.0f64; 3];
    for family in ["timewait", "state", "portsearch", "drops"] {
        let tp = get("tracepoint", family);
        let cell = |b: &str| match (get(b, family), tp) {
            (Some(v), Some(tp)) if tp > 0.0 => format!("{:.1} ({:.2})", v / 1e3, v / tp),
            (Some(v), _) => format!("{:.1}", v / 1e3),
            _ => "-".into(),
        };
        for (i, b) in ["tracepoint", "fentry", "kprobe"].iter().enumerate() {
            totals[i] += get(b, family).unwrap_or(0.0);
        }
        // The tracepoint backend's port search has no programs of its own: it runs in the
        // state and timer_start programs, and its cost is in those rows.
        let shared = family == "portsearch" && tp.is_none() && get("fentry", family).is_some();
        t.push_str(&format!(
            "| {family} | {} | {} | {} |\n",
            tp.map_or(if shared { "in the rows above".into() } else { "-".into() }, |v| format!("{:.1}", v / 1e3)),
            cell("fentry"),
            cell("kprobe")
        ));
    }
    t.push_str(&format!(
        "| all | {:.1} | {:.1} ({:.2}) | {:.1} ({:.2}) |\n",
        totals[0] / 1e3,
        totals[1] / 1e3,
        totals[1] / totals[0].max(1.0),
        totals[2] / 1e3,
        totals[2] / totals[0].max(1.0)
    ));
    t
}

fn target(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn table(
    runs: &BTreeMap<Tracer, Vec<Run>>,
    ratios: &BTreeMap<Tracer, Vec<f64>>,
    long: Option<&Run>,
    replay: &Replay,
    memory: &str,
    args: &BenchArgs,
) -> String {
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!(
        "Loopback churn, server closes first, {} client + {} server threads, {} s per run, {} alternating rounds, medians.",
        args.threads, args.threads, args.seconds, args.repetitions
    ));
    line(String::new());
    line("| configuration | conn/s | ratio to untraced (rounds' range) | BPF µs/conn | tracer CPU % | tracer peak RSS MiB | events | lost | getppid() ns |".into());
    line("|---|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    let mut summary = BTreeMap::new();
    for tracer in Tracer::ALL {
        let rs = &runs[&tracer];
        let med = |f: &dyn Fn(&Run) -> Option<f64>| median(rs.iter().filter_map(f).collect());
        let cps = med(&|r| Some(r.connections_per_s));
        let ratio = median(ratios[&tracer].clone());
        // The rounds' spread beside the median: single rounds move by ±10 % on this kind of
        // machine, and the reader should see how far one figure can be trusted.
        let spread = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if v.len() > 1 && tracer != Tracer::Untraced { format!(" ({lo:.2}-{hi:.2})") } else { String::new() }
        };
        let bpf = med(&|r| r.bpf_ns_per_connection).map(|v| v / 1e3);
        let cpu = med(&|r| r.cpu_percent);
        let rss = med(&|r| r.peak_rss_kib.map(|k| k as f64 / 1024.0));
        let events = med(&|r| r.events.map(|e| e as f64));
        let lost = med(&|r| r.lost.map(|e| e as f64));
        let syscall = med(&|r| r.syscall_ns);
        let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        line(format!(
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
            tracer.label(),
            f(cps, 0),
            f(ratio, 3),
            spread(&ratios[&tracer]),
            f(bpf, 2),
            f(cpu, 1),
            f(rss, 1),
            f(events, 0),
            f(lost, 0),
            f(syscall, 0)
        ));
        summary.insert(tracer, (ratio, bpf, cpu, events, syscall));
    }
    line(String::new());
    line("Targets (issue 7):".into());
    let (ratio_all, bpf_all, cpu_all, events_all, syscall_all) = summary[&Tracer::RecordAll];
    let (_, bpf_twd, _, _, syscall_twd) = summary[&Tracer::RecordTimeWaitDrops];
    let syscall_untraced = summary[&Tracer::Untraced].4;
    if let Some(r) = ratio_all {
        line(format!(
            "- throughput ratio with `twtrace record` at saturating churn ≥ 0.97: {r:.3} ({})",
            target(r >= 0.97)
        ));
    }
    if let Some(b) = bpf_twd {
        line(format!("- BPF run time per connection, timewait+drops ≤ 2.0 µs: {b:.2} µs ({})", target(b <= 2.0)));
    }
    if let Some(b) = bpf_all {
        line(format!("- BPF run time per connection, all families ≤ 3.0 µs: {b:.2} µs ({})", target(b <= 3.0)));
    }
    // Not a target of the issue: what every other process on the host pays.
    if let (Some(base), Some(all), Some(twd)) = (syscall_untraced, syscall_all, syscall_twd) {
        line(format!(
            "- a null system call elsewhere on the host (getppid): {base:.0} ns untraced, {all:.0} ns under `record` \
             with all families ({:+.0} %), {twd:.0} ns with timewait+drops (a syscall tracepoint would slow every \
             system call: +32 % when the port search had them)",
            (all / base - 1.0) * 100.0
        ));
    }
    if let (Some(cpu), Some(events)) = (cpu_all, events_all) {
        let seconds = args.seconds as f64;
        let per_10k = cpu / 100.0 * seconds / events * 10_000.0 * 1e3;
        line(format!("- userspace CPU per 10k events (record, all families): {per_10k:.1} ms"));
    }
    match long {
        Some(run) => {
            line(format!(
                "- zero lost events at 25k connections/s for 60 s (default buffer): {} connections at {:.0}/s, {} events, lost {} ({})",
                run.connections,
                run.connections_per_s,
                run.events.map_or("-".into(), |e| e.to_string()),
                run.lost.map_or("-".into(), |l| l.to_string()),
                target(run.lost == Some(0) && run.connections_per_s >= 24_000.0)
            ));
            if let Some(cpu) = run.cpu_percent {
                line(format!(
                    "- userspace CPU ≤ 15 % of one core at 25k connections/s: {cpu:.1} % ({})",
                    target(cpu <= 15.0)
                ));
            }
        }
        None => line("- 60 s zero-loss run: skipped (--quick)".into()),
    }
    if let Some(b) = replay.bytes_per_event {
        line(format!("- ≤ 16 bytes per event on disk: {b:.2} ({})", target(b <= 16.0)));
    }
    if let Some(r) = replay.events_per_s {
        line(format!("- replay ≥ 5M events/s: {:.2}M ({})", r / 1e6, target(r >= 5e6)));
    }
    for l in memory.lines().filter(|l| !l.trim().is_empty()) {
        line(format!("- {l}"));
    }
    line(String::new());
    line("Recording figures (benches/recording.rs on the last saturating recording):".into());
    for l in replay.report.lines().filter(|l| !l.trim().is_empty()) {
        line(format!("    {l}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::program_families;

    #[test]
    fn programs_map_to_their_owner_by_the_kernels_short_name() {
        let text = "noise\n\
                    [ 1.2] VMCATALOGUE timewait tracepoint tw_timer_start_btf tp_btf/timer_start\n\
                    VMCATALOGUE state tracepoint tcp_state_change raw_tp/inet_sock_set_state\n\
                    VMCATALOGUE portsearch fentry check_established6_fentry fentry/__inet6_check_established\n\
                    VMCATALOGUE portsearch tracepoint tw_timer_start_btf tp_btf/timer_start\n";
        let families = program_families(text);
        assert_eq!(families["tw_timer_start_"], "timewait", "the owner comes first and is kept");
        assert_eq!(families["tcp_state_chang"], "state");
        assert_eq!(families["check_establish"], "portsearch");
        assert_eq!(families.len(), 3);
    }
}
