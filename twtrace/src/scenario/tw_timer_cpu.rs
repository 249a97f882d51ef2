//! `tw-timer-cpu`: on which CPU does a TIME_WAIT socket's timer fire, against the CPU that
//! closed the connection? The closer (client and server alike: one thread) is pinned to each
//! CPU in turn with sched_setaffinity and makes `--sockets` TIME_WAIT sockets there; then one
//! wait of about 60 s lets every timer run out, the last CPU kept busy by a spinning thread
//! and the others idle.
//!
//! On loopback the last FIN is processed in softirq on the CPU that sent it, so
//! `tcp_time_wait()` arms the timer on the closing CPU. Where it fires then depends on how the
//! timer was set up (docs/kernel-facts.md):
//! - `TIMER_PINNED` from 4.18's `timer_setup()` (4.11 already used `setup_pinned_timer()`) up to
//!   6.10: `mod_timer()` queues it on the arming CPU's wheel, and it fires there.
//! - From 6.11 (c75ad7c759cc "net: tcp: un-pin the tw_timer", after b334b924c9b7 "net:
//!   tcp/dccp: prepare for tw_timer un-pinning") it is set up with no flag: still queued on
//!   the arming CPU (the local CPU is busy when it arms it), but it is a "global" timer that,
//!   with the timer migration hierarchy (6.9+), an idle CPU leaves to another one to expire.
//!
//! Ground truth is the kernel's own timer tracepoints, read through a tracefs instance of the
//! scenario's own (its buffer and its event switches; nothing else's tracing is touched):
//! `timer_start` (the CPU that armed each `tw_timer_handler` timer, and its `P` flag when
//! pinned) and `timer_expire_entry` (the CPU that ran it), in the monotonic clock. twtrace's
//! events carry no CPU once decoded (only the raw records' header has one), so with `--record`
//! twtrace is held to its births and expiries, counted exactly, not to the CPUs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    conn::{Phase, SETTLE, Server},
    report::{Check, Run, ScenarioReport},
    sandbox::{self, Sandbox, SocketCount},
    search_cost::RANGE_START,
};
use crate::{net::errno_name, time::monotonic_ns};

/// TCP_TIMEWAIT_LEN is 60 s; the wheel may fire a timer that far out up to 1/8 late
/// (its level's granularity), and emulated guests run behind: the wait's bound.
const WAIT_FOR_EXPIRY: Duration = Duration::from_secs(90);
const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(clap::Args, Clone, Debug)]
pub struct TwTimerCpuArgs {
    /// TIME_WAIT sockets made on each CPU.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=2000))]
    pub sockets: u64,
}

pub fn params(args: &TwTimerCpuArgs) -> BTreeMap<String, String> {
    BTreeMap::from([("sockets_per_cpu".into(), args.sockets.to_string())])
}

pub fn run(args: &TwTimerCpuArgs, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let n = args.sockets;
    let cpus = allowed_cpus()?;
    let total = n * cpus.len() as u64;
    sandbox::allow_open_files(2 * total + 256)?;
    let sandbox = Sandbox::enter()?;
    sandbox.sysctl("net.ipv4.ip_local_port_range", &format!("{RANGE_START} {}", RANGE_START as u64 + total - 1))?;
    sandbox.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    let server = Server::start()?;
    let handler = crate::kernel::kallsyms::Symbols::read(&["tw_timer_handler"])
        .ok()
        .and_then(|s| s.address("tw_timer_handler").ok())
        .ok_or_else(|| anyhow::anyhow!("tw_timer_handler is not in /proc/kallsyms (run as root)"))?;
    let trace = TimerTrace::start(handler)?;
    // SAFETY: no arguments.
    let tid = unsafe { libc::gettid() } as u32;

    let mut steps = Vec::new();
    for &cpu in &cpus {
        pin(&[cpu])?;
        // SAFETY: no arguments.
        let on = unsafe { libc::sched_getcpu() };
        anyhow::ensure!(on == cpu as i32, "pinned to CPU {cpu}, running on {on}");
        let mut phase = Phase::default();
        for i in 0..n {
            if let Some(e) = phase.attempt(&server) {
                anyhow::bail!("CPU {cpu}: connection {} of {n} failed with {}", i + 1, errno_name(e));
            }
        }
        steps.push((cpu, phase));
    }
    pin(&cpus)?;
    let born =
        sandbox::settle(&sandbox, server.addr, SocketCount { time_wait: total, ..SocketCount::default() }, SETTLE)?;
    report.checks.push(Check::exact("TIME_WAIT sockets made (sock_diag)".into(), total, born.time_wait));

    // One wait for all of them, until sock_diag lists none, with the last CPU kept busy and the
    // others left idle: a timer that is not pinned may then be expired by the busy CPU on an
    // idle one's behalf (the timer migration hierarchy), where a pinned one wakes its own CPU.
    let busy = (cpus.len() > 1).then(|| Spinner::start(*cpus.last().expect("not empty")));
    if let Some(b) = &busy {
        report.params.insert("busy_during_wait".into(), format!("cpu{}", b.cpu));
    }
    let until = Instant::now() + WAIT_FOR_EXPIRY;
    let left = loop {
        let now = sandbox.sockets_to(server.addr)?.time_wait;
        if now == 0 || Instant::now() >= until {
            break now;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(busy);
    let counted_at_ns = monotonic_ns();
    report.checks.push(Check::exact("TIME_WAIT left after the wait (sock_diag)".into(), 0, left));
    // The expiry's tracepoint comes before the socket leaves the hash: a moment for the last.
    std::thread::sleep(Duration::from_millis(200));
    let events = parse_trace(&trace.finish()?);

    let mut matrix: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let (mut pinned, mut armed_total) = (0u64, 0u64);
    let mut run = Run::new("close pinned to each CPU".into(), sandbox.netns.0);
    // Each CPU's births: from its first connect() to the next CPU's (the last socket is born
    // in its close(), on loopback, but a little slack costs nothing), the last to the count.
    let starts_at: Vec<u64> = steps.iter().map(|(_, p)| p.window().0).skip(1).chain([counted_at_ns]).collect();
    for ((cpu, phase), next) in steps.into_iter().zip(starts_at) {
        let (from, to) = (phase.window().0, (phase.window().1 + 50_000_000).min(next));
        let starts: Vec<&TimerEvent> = events
            .iter()
            .filter(|e| e.start && (from..=to).contains(&e.ts_ns) && (e.pid == tid || e.comm.starts_with("ksoftirqd")))
            .collect();
        let here = starts.iter().filter(|e| e.cpu == cpu).count() as u64;
        report.checks.push(Check::exact(
            format!("CPU {cpu}: TIME_WAIT timers armed (generator vs timer_start)"),
            n,
            starts.len() as u64,
        ));
        report.checks.push(Check::exact(format!("CPU {cpu}: timers armed on the closing CPU (timer_start)"), n, here));
        for s in &starts {
            armed_total += 1;
            pinned += u64::from(s.pinned);
            let expiry = events.iter().find(|e| !e.start && e.timer == s.timer && e.ts_ns > s.ts_ns);
            if let Some(e) = expiry {
                *matrix.entry((s.cpu, e.cpu)).or_insert(0) += 1;
            }
        }
        run.steps.push(phase.step(&format!("close on CPU {cpu}"), 0, n));
    }
    let expired: u64 = matrix.values().sum();
    report.checks.push(Check::exact("timers that ran out (timer_expire_entry)".into(), total, expired));
    report.params.insert(
        "tw_timer".into(),
        match pinned {
            0 => "not pinned".into(),
            p if p == armed_total => "pinned".into(),
            p => format!("pinned {p} of {armed_total}"),
        },
    );
    report.params.insert("armed_then_expired_on".into(), matrix_text(&matrix));
    run.time_wait_at_end = Some(left);
    run.counted_at_ns = counted_at_ns;
    run.expected_deaths = BTreeMap::from([("expired".to_owned(), total)]);
    report.runs.push(run);
    Ok(())
}

/// `cpu0->cpu0 20, cpu1->cpu0 3, cpu1->cpu1 17`: armed on, then expired on.
fn matrix_text(matrix: &BTreeMap<(u32, u32), u64>) -> String {
    matrix.iter().map(|((a, e), k)| format!("cpu{a}->cpu{e} {k}")).collect::<Vec<_>>().join(", ")
}

/// The CPUs this process may run on.
fn allowed_cpus() -> anyhow::Result<Vec<u32>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        anyhow::bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
    }
    // SAFETY: reading a valid set.
    let cpus: Vec<u32> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).map(|c| c as u32).collect();
    anyhow::ensure!(!cpus.is_empty(), "no CPU allowed");
    Ok(cpus)
}

/// Pins the calling thread to `cpus`.
fn pin(cpus: &[u32]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c is below CPU_SETSIZE (it came from the kernel's set).
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the set is valid.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        anyhow::bail!("sched_setaffinity to {cpus:?}: {}", std::io::Error::last_os_error());
    }
    // The move takes effect at once for the calling thread (the kernel migrates it before
    // returning), which sched_getcpu() then confirms.
    Ok(())
}

/// A thread pinned to one CPU, spinning until dropped.
struct Spinner {
    cpu: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start(cpu: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Unpinned, it still spins: the wait's outcome then only lacks its idle CPU.
            let _ = pin(&[cpu]);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Self { cpu, stop, thread: Some(thread) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tracefs instance of our own with `timer_start` and `timer_expire_entry` on, filtered to
/// TIME_WAIT timers (their function is `tw_timer_handler`).
struct TimerTrace {
    dir: PathBuf,
    /// tracefs was not mounted, and we mounted it (unmounted again at the end).
    mounted: bool,
}

const EVENTS: [&str; 2] = ["timer/timer_start", "timer/timer_expire_entry"];

impl TimerTrace {
    fn start(handler: u64) -> anyhow::Result<Self> {
        let root = Path::new(TRACEFS);
        let mut mounted = false;
        if !root.join("instances").exists() {
            let status = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .context("mounting tracefs")?;
            anyhow::ensure!(status.success(), "mounting tracefs on {TRACEFS}: {status}");
            mounted = true;
        }
        let dir = root.join("instances").join(format!("twtrace-tw-timer-cpu-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("making the tracefs instance {}", dir.display()))?;
        let trace = Self { dir, mounted };
        // CLOCK_MONOTONIC (4.1+), as the scenario's windows are.
        trace.write("trace_clock", "mono")?;
        trace.write("buffer_size_kb", "4096")?;
        for event in EVENTS {
            trace.write(&format!("events/{event}/filter"), &format!("function == {handler:#x}"))?;
            trace.write(&format!("events/{event}/enable"), "1")?;
        }
        Ok(trace)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.join(file), value).with_context(|| format!("writing {value} to {file} (tracefs)"))
    }

    /// The trace, as text; the instance is removed.
    fn finish(self) -> anyhow::Result<String> {
        for event in EVENTS {
            self.write(&format!("events/{event}/enable"), "0")?;
        }
        std::fs::read_to_string(self.dir.join("trace")).context("reading the trace")
    }
}

impl Drop for TimerTrace {
    fn drop(&mut self) {
        for event in EVENTS {
            let _ = std::fs::write(self.dir.join(format!("events/{event}/enable")), "0");
        }
        let _ = std::fs::remove_dir(&self.dir);
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(TRACEFS).status();
        }
    }
}

#[derive(Debug, PartialEq)]
struct TimerEvent {
    /// `timer_start` (else `timer_expire_entry`).
    start: bool,
    comm: String,
    pid: u32,
    /// The CPU the event ran on.
    cpu: u32,
    ts_ns: u64,
    /// The timer's address as the trace prints it (hashed, stable for the boot).
    timer: String,
    /// `timer_start`: `TIMER_PINNED` (`P` among its flags).
    pinned: bool,
}

/// Lines like `comm-123 [001] d.s2. 812.123456: timer_start: timer=000000003c1d0f8e
/// function=tw_timer_handler expires=... cpu=1 idx=226 flags=P`.
fn parse_trace(text: &str) -> Vec<TimerEvent> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TimerEvent> {
    let (head, start, body) = if let Some((h, b)) = line.split_once(": timer_start: ") {
        (h, true, b)
    } else {
        let (h, b) = line.split_once(": timer_expire_entry: ")?;
        (h, false, b)
    };
    let open = head.rfind(" [")?;
    let (task, rest) = head.split_at(open);
    let (cpu, rest) = rest.trim_start().strip_prefix('[')?.split_once(']')?;
    let ts = rest.split_whitespace().last()?;
    let (secs, frac) = ts.split_once('.')?;
    let frac_ns = format!("{frac:0<9}").get(..9)?.parse::<u64>().ok()?;
    let (comm, pid) = task.trim().rsplit_once('-')?;
    let field = |name: &str| body.split_whitespace().find_map(|f| f.strip_prefix(name));
    if field("function=")? != "tw_timer_handler" {
        return None;
    }
    Some(TimerEvent {
        start,
        comm: comm.to_owned(),
        pid: pid.parse().ok()?,
        cpu: cpu.trim().parse().ok()?,
        ts_ns: secs.parse::<u64>().ok()? * 1_000_000_000 + frac_ns,
        timer: field("timer=")?.to_owned(),
        pinned: start && field("flags=").is_some_and(|f| f.split('|').any(|flag| flag == "P")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_events_and_the_pinned_flag() {
        let text = "# tracer: nop\n\
            twtrace-812 [001] D.s4. 23377.941782: timer_start: timer=00000000534e01a4 function=tw_timer_handler expires=4300751714 [timeout=15000] bucket_expiry=4300751872 cpu=1 idx=226 flags=\n\
            kworker/0:1 x-9 [000] ..s1. 23437.000001: timer_start: timer=00000000aa function=tw_timer_handler expires=1 [timeout=1] cpu=0 idx=2 flags=P|I\n\
            <idle>-0 [000] ..s2. 23438.5: timer_expire_entry: timer=00000000534e01a4 function=tw_timer_handler now=4300751900 baseclk=4300751872\n\
            <idle>-0 [000] ..s2. 23438.5: timer_expire_entry: timer=00000000cc function=process_timeout now=1 baseclk=1\n";
        let events = parse_trace(text);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            TimerEvent {
                start: true,
                comm: "twtrace".into(),
                pid: 812,
                cpu: 1,
                ts_ns: 23_377_941_782_000,
                timer: "00000000534e01a4".into(),
                pinned: false,
            }
        );
        assert!(events[1].pinned);
        assert_eq!((events[1].comm.as_str(), events[1].pid), ("kworker/0:1 x", 9));
        assert_eq!((events[2].start, events[2].cpu, events[2].ts_ns), (false, 0, 23_438_500_000_000));
    }

    #[test]
    fn the_matrix_reads_armed_then_expired() {
        let m = BTreeMap::from([((0, 0), 20), ((1, 0), 3), ((1, 1), 17)]);
        assert_eq!(matrix_text(&m), "cpu0->cpu0 20, cpu1->cpu0 3, cpu1->cpu1 17");
    }
}
