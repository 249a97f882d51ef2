//! `cargo xtask bench --scale`: the cardinality ladders of issue 25. At each rung, in fresh
//! namespaces, each view (`serve`, `stat`, `top`, `doctor`) runs beside the rung's load and
//! is asked what it saw; twtrace's own `scale:` line gives loss, view build times and drain
//! stalls; /proc gives its CPU and memory; `ss` and the namespace's counters give the truth.
//! Figures are printed and compared with the targets, never asserted.
//!
//! `ladder` says what each rung runs, `tool` starts and stops the views, `parse` reads what
//! they print, `truth` reads the kernel, `table` prints, `helper` is the failing-process load.

pub mod helper;
mod ladder;
mod parse;
mod table;
mod tool;
mod truth;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{netns::Namespaces, process::clock_ticks_per_s};
use ladder::{Knobs, Ladder, Plan, Program, Rung};
use parse::{ScaleLine, View};
use tool::{Exit, Scrapes, Tool};

#[derive(clap::Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Run the cardinality ladders (issue 25) instead of the overhead comparison. With
    /// --quick, only the smallest rung of each ladder.
    #[arg(long)]
    scale: bool,
    /// Ladders to climb (comma-separated; all by default).
    #[arg(long, value_enum, value_delimiter = ',', requires = "scale")]
    scale_ladder: Vec<Ladder>,
    /// Only rungs of these sizes (comma-separated, e.g. 1k,10k,1M; all by default).
    #[arg(long, value_delimiter = ',', value_parser = ladder::parse_count, requires = "scale")]
    scale_steps: Vec<u64>,
    /// Views to measure at each rung (comma-separated; all by default).
    #[arg(long, value_enum, value_delimiter = ',', requires = "scale")]
    scale_tools: Vec<Tool>,
    /// Connections per second of the churn ladders.
    #[arg(long, default_value_t = 20_000.0, requires = "scale")]
    scale_rate: f64,
    /// Churn threads (client and server each) of the churn ladders.
    #[arg(long, default_value_t = 4, requires = "scale")]
    scale_threads: usize,
}

impl ScaleArgs {
    pub fn enabled(&self) -> bool {
        self.scale
    }
}

/// What the load did.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub connections: u64,
    pub processes: u64,
    /// Failed connects the helper's processes saw with EADDRNOTAVAIL.
    pub eaddrnotavail: u64,
    /// Connections (or processes) per second, summed over the loads.
    pub per_second: f64,
    /// From the first start to the last end.
    pub seconds: f64,
    pub problems: Vec<String>,
}

/// One view at one rung.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub rung: Rung,
    pub tool: Tool,
    pub load: LoadResult,
    pub scale: Option<ScaleLine>,
    /// What the view showed at the end of the load (doctor: at its end).
    pub view: View,
    /// From the `scale:` line, else the view's own loss figure.
    pub lost: Option<u64>,
    pub cpu_s: Option<f64>,
    pub window_s: f64,
    pub rss_delta_kib: Option<i64>,
    /// The growth of anonymous memory only: what the per-socket and per-row figures divide.
    pub anon_delta_kib: Option<i64>,
    pub peak_rss_kib: Option<u64>,
    pub ss_timewait: Option<u64>,
    /// TcpExtTW + TcpExtTWKilled over the run.
    pub kernel_births: Option<i64>,
    pub exit: Option<Exit>,
    pub stop_s: f64,
    pub scrapes: Option<Scrapes>,
    /// Why the run gave no figures.
    pub error: Option<String>,
}

impl Outcome {
    fn failed(rung: Rung, tool: Tool, error: String) -> Self {
        Outcome {
            rung,
            tool,
            load: LoadResult::default(),
            scale: None,
            view: View::default(),
            lost: None,
            cpu_s: None,
            window_s: 0.0,
            rss_delta_kib: None,
            anon_delta_kib: None,
            peak_rss_kib: None,
            ss_timewait: None,
            kernel_births: None,
            exit: None,
            stop_s: 0.0,
            scrapes: None,
            error: Some(error),
        }
    }
}

/// Whether `twtrace churn` has `flag` (issue 25 adds `--destinations` and `--sources`).
fn churn_has(twtrace: &Path, flag: &str) -> bool {
    Command::new(twtrace)
        .args(["churn", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().any(|w| w.trim_matches(',') == flag))
}

pub fn run(args: &ScaleArgs, quick: bool, twtrace: &Path, markdown: Option<&Path>) -> anyhow::Result<()> {
    if !crate::setup::is_root() {
        bail!("the scale ladder makes namespaces and attaches probes: run it as root");
    }
    let ladders = if args.scale_ladder.is_empty() { Ladder::ALL.to_vec() } else { args.scale_ladder.clone() };
    let tools = if args.scale_tools.is_empty() { Tool::ALL.to_vec() } else { args.scale_tools.clone() };
    let knobs = Knobs { rate: args.scale_rate, threads: args.scale_threads };
    let scratch = std::env::temp_dir().join("twtrace-bench-scale");
    std::fs::create_dir_all(&scratch)?;
    let mut skipped = Vec::new();
    let mut outcomes = Vec::new();
    for rung in ladder::select(&ladders, &args.scale_steps, quick) {
        if let Some(flag) = rung.ladder.needs_churn_flag().filter(|f| !churn_has(twtrace, f)) {
            let why = format!("`twtrace churn` has no {flag} yet (issue 25's load generator)");
            eprintln!("xtask: bench: {} {}: skipped: {why}", rung.ladder.unit(), ladder::count_label(rung.size));
            if !skipped.iter().any(|(l, _)| *l == rung.ladder) {
                skipped.push((rung.ladder, why));
            }
            continue;
        }
        for &tool in &tools {
            eprintln!(
                "xtask: bench: scale: {} {} under {}",
                ladder::count_label(rung.size),
                rung.ladder.unit(),
                tool.label()
            );
            let outcome = measure(rung, tool, knobs, twtrace, &scratch)
                .unwrap_or_else(|e| Outcome::failed(rung, tool, format!("{e:#}")));
            eprintln!("xtask: bench: scale: {}", table::one_line(&outcome));
            outcomes.push(outcome);
        }
    }
    tool::stop_tmux_server();
    let text = table::report(&ladders, &outcomes, &skipped, knobs);
    println!("{text}");
    if let Some(path) = markdown {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: bench: wrote {}", path.display());
    }
    Ok(())
}

/// Counters summed over the plan's namespaces.
fn kernel_births(plan: &Plan) -> Option<i64> {
    truth::netstat_sum(&plan.namespaces).ok().map(|c| truth::births(&c))
}

/// Seconds to let the views catch up after the load (serve publishes and stat prints once a
/// second, top draws twice).
const SETTLE: Duration = Duration::from_secs(2);

/// One view beside one rung's load, in namespaces of its own.
fn measure(rung: Rung, tool: Tool, knobs: Knobs, twtrace: &Path, scratch: &Path) -> anyhow::Result<Outcome> {
    let plan = ladder::plan(rung, knobs);
    let sysctls: Vec<String> = plan.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let namespaces = Namespaces::create(&plan.namespaces, &sysctls)?;
    let births_before = kernel_births(&plan);
    let session = tool::start(tool, twtrace, plan.netns_filter.as_deref(), plan.load, scratch)?;
    let doctor_deadline = Instant::now() + Duration::from_secs(tool::doctor_seconds(plan.load));
    let before = session.sample();
    let load = run_load(&plan, twtrace, scratch);
    std::thread::sleep(SETTLE);
    // Watching every namespace, twtrace also sees the rest of the host (serve's scrapes,
    // other people's tests): compare the bench's namespaces only.
    let only = plan.netns_filter.is_none().then_some(ladder::PREFIX);
    let mut view = session.view(only);
    let after = session.sample();
    let ss_timewait = truth::ss_timewait_sum(&plan.namespaces).ok();
    let births_after = kernel_births(&plan);
    let ended = session.stop(doctor_deadline)?;
    drop(namespaces);
    let load = load?;
    let scale = parse::last_scale_line(&ended.stderr);
    // The end lines and doctor's JSON fill in what the screen or the last line lacked.
    let ended_view = match tool {
        Tool::Doctor => parse::doctor_json(&ended.stdout),
        Tool::Stat => parse::stat_json(&ended.stdout, only).unwrap_or_default(),
        Tool::Serve | Tool::Top => match parse::end_line(&ended.stderr) {
            Some((events, lost)) => View { events: Some(events), lost: Some(lost), ..View::default() },
            None => View::default(),
        },
    };
    view.events = ended_view.events.or(view.events);
    view.lost = ended_view.lost.or(view.lost);
    view.model = view.model.or(ended_view.model);
    let window_s = match (before.at, after.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Outcome {
        rung,
        tool,
        lost: scale.as_ref().map(|s| s.lost).or(view.lost),
        scale,
        view,
        cpu_s: match (before.cpu_ticks, after.cpu_ticks) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clock_ticks_per_s()),
            _ => None,
        },
        window_s,
        rss_delta_kib: match (before.rss_kib, after.rss_kib) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        },
        anon_delta_kib: match (before.anon_kib, after.anon_kib) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        },
        peak_rss_kib: after.peak_rss_kib,
        ss_timewait,
        kernel_births: births_after.zip(births_before).map(|(a, b)| a - b),
        exit: Some(ended.exit),
        stop_s: ended.stop_s,
        scrapes: ended.scrapes,
        load,
        error: None,
    })
}

/// Runs every load of the plan at once and waits for all (bounded: the load's duration and
/// a minute; stragglers are killed and said so).
fn run_load(plan: &Plan, twtrace: &Path, scratch: &Path) -> anyhow::Result<LoadResult> {
    let xtask = std::env::current_exe()?;
    let started = Instant::now();
    let mut children = Vec::new();
    for (i, (ns, program)) in plan.loads.iter().enumerate() {
        let out = scratch.join(format!("load-{i}.out"));
        let err = scratch.join(format!("load-{i}.err"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        match program {
            Program::Twtrace(args) => cmd.arg(twtrace).args(args),
            Program::Helper(args) => cmd.arg(&xtask).arg("bench-helper").args(args),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting the load in {ns}"))?;
        children.push((child, out, err));
    }
    let deadline = started + plan.load + Duration::from_secs(60);
    let mut result = LoadResult::default();
    for (child, out, err) in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                // SAFETY: kill(2) on the load's own process, by its id.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&*out).unwrap_or_default();
        let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        result.connections += summary["connections"].as_u64().unwrap_or(0);
        result.processes += summary["processes"].as_u64().unwrap_or(0);
        result.eaddrnotavail += summary["eaddrnotavail"].as_u64().unwrap_or(0);
        result.per_second += summary["per_second"].as_f64().unwrap_or(0.0);
        if status.is_none_or(|s| !s.success()) && result.problems.len() < 3 {
            let why = std::fs::read_to_string(&*err).unwrap_or_default();
            result.problems.push(format!("{status:?}: {}", why.lines().last().unwrap_or("").trim()));
        }
        let _ = std::fs::remove_file(&*out);
        let _ = std::fs::remove_file(&*err);
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
