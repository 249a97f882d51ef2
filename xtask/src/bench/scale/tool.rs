//! The four views the scale ladder measures, each as a user runs it: `twtrace serve` scraped
//! once a second over HTTP, `twtrace stat --json --interval 1`, the real `twtrace top` in a
//! detached tmux session (200x60, ended with `q`), and `twtrace doctor --duration`. Each is
//! started, asked what it sees at the end of the load, and stopped, every wait bounded.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::parse::{self, View};
use crate::bench::{
    measure::fetch_metrics,
    process::{anon_rss_kib, cpu_ticks, peak_rss_kib, rss_kib},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tool {
    Serve,
    Stat,
    Top,
    Doctor,
}

impl Tool {
    pub const ALL: [Tool; 4] = [Tool::Serve, Tool::Stat, Tool::Top, Tool::Doctor];

    pub fn label(self) -> &'static str {
        match self {
            Tool::Serve => "serve",
            Tool::Stat => "stat",
            Tool::Top => "top",
            Tool::Doctor => "doctor",
        }
    }
}

/// Where the ladder's `serve` listens (the overhead bench's is 19977).
pub const SERVE_ADDR: &str = "127.0.0.1:19978";
/// The bench's own tmux server: other people's sessions are not touched.
const TMUX_SOCKET: &str = "twtrace-bench";
/// How long a view may take to attach (reading a thousand namespaces at start included).
const READY_WITHIN: Duration = Duration::from_secs(180);
/// How long a view may take to end after it was asked to (issue 25 wants 1 s; a view that
/// hangs, as `stat` did in `Aggregator::snapshot`, is killed after this and shown so).
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// Lines of a view's stderr kept (its summary lines come last).
const MAX_LINES: usize = 10_000;
/// How long one scrape may take, as Prometheus' default scrape timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

type Lines = Arc<Mutex<Vec<String>>>;

/// Scrapes of serve during the run.
#[derive(Clone, Debug, Default)]
pub struct Scrapes {
    pub ok: u64,
    pub failed: u64,
    pub max_ms: f64,
}

/// A view's process, from the process table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    pub cpu_ticks: Option<u64>,
    pub rss_kib: Option<u64>,
    pub anon_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
}

/// How a view ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Exit {
    /// By itself or on its signal/key, with this status (`doctor`'s 1 and 2 are findings).
    Status(i32),
    /// Still running `STOP_WITHIN` after it was asked to end: killed.
    Killed,
}

pub struct Ended {
    pub exit: Exit,
    /// Seconds from the request to end (the deadline for doctor) to its exit.
    pub stop_s: f64,
    pub stderr: Vec<String>,
    /// stat's last line, doctor's JSON.
    pub stdout: String,
    pub scrapes: Option<Scrapes>,
}

pub struct Session {
    tool: Tool,
    pid: u32,
    /// serve, stat, doctor (top's process is the tmux pane's).
    child: Option<Child>,
    stderr: Lines,
    /// stat: its last line; doctor: everything.
    stdout: Lines,
    readers: Vec<JoinHandle<()>>,
    /// top: its tmux session and the file its stderr goes to.
    tmux: Option<(String, PathBuf)>,
    scraper: Option<(Arc<AtomicBool>, JoinHandle<Scrapes>)>,
}

fn tmux() -> Command {
    let mut cmd = Command::new("tmux");
    cmd.args(["-L", TMUX_SOCKET]);
    cmd
}

/// Ends the bench's own tmux server (started by the first `top`), if any.
pub fn stop_tmux_server() {
    let _ = tmux().arg("kill-server").stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// The command line of `tool` (without the binary).
pub fn args(tool: Tool, netns: Option<&str>, load: Duration) -> Vec<String> {
    let mut a: Vec<String> = match tool {
        Tool::Serve => vec!["serve".into(), "--listen".into(), SERVE_ADDR.into()],
        Tool::Stat => ["stat", "--json", "--interval", "1"].map(String::from).to_vec(),
        Tool::Top => vec!["top".into()],
        // Long enough for the load, the settle and the reading of the counts after it.
        Tool::Doctor => {
            vec!["doctor".into(), "--json".into(), "--duration".into(), format!("{}s", doctor_seconds(load))]
        }
    };
    if let Some(ns) = netns {
        a.extend(["--netns".into(), ns.into()]);
    }
    a
}

pub fn doctor_seconds(load: Duration) -> u64 {
    load.as_secs() + 8
}

fn read_lines(from: impl Read + Send + 'static, into: Lines, last_only: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut lines = into.lock().expect("not poisoned");
            if last_only {
                lines.clear();
            }
            if lines.len() < MAX_LINES {
                lines.push(line);
            }
        }
    })
}

pub fn start(
    tool: Tool,
    twtrace: &Path,
    netns: Option<&str>,
    load: Duration,
    scratch: &Path,
) -> anyhow::Result<Session> {
    let args = args(tool, netns, load);
    let mut session = if tool == Tool::Top {
        let name = format!("top-{}", std::process::id());
        let err = scratch.join("top.stderr");
        let _ = std::fs::remove_file(&err);
        let shell = format!("exec {} {} 2>{}", twtrace.display(), args.join(" "), err.display());
        crate::run_cmd(tmux().args(["new-session", "-d", "-s", &name, "-x", "200", "-y", "60", &shell]))?;
        let out = tmux().args(["display-message", "-p", "-t", &name, "#{pane_pid}"]).output()?;
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().context("top's pane pid")?;
        Session {
            tool,
            pid,
            child: None,
            stderr: Lines::default(),
            stdout: Lines::default(),
            readers: Vec::new(),
            tmux: Some((name, err)),
            scraper: None,
        }
    } else {
        let mut child = Command::new(twtrace)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting twtrace {}", args.join(" ")))?;
        let stderr = Lines::default();
        let stdout = Lines::default();
        let readers = vec![
            read_lines(child.stderr.take().expect("piped"), stderr.clone(), false),
            read_lines(child.stdout.take().expect("piped"), stdout.clone(), tool == Tool::Stat),
        ];
        Session { tool, pid: child.id(), child: Some(child), stderr, stdout, readers, tmux: None, scraper: None }
    };
    let deadline = Instant::now() + READY_WITHIN;
    while !session.ready() {
        if Instant::now() > deadline || !session.alive() {
            let lines = session.stderr_lines();
            session.kill();
            bail!("twtrace {} did not start tracing within {READY_WITHIN:?}: {lines:?}", tool.label());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if tool == Tool::Serve {
        session.scraper = Some(scrape_every_second());
    }
    Ok(session)
}

/// Scrapes serve once a second until told to stop, as Prometheus would.
fn scrape_every_second() -> (Arc<AtomicBool>, JoinHandle<Scrapes>) {
    let go = Arc::new(AtomicBool::new(true));
    let running = go.clone();
    let handle = std::thread::spawn(move || {
        let mut s = Scrapes::default();
        // Bounded by the flag, and by a day in any case.
        let deadline = Instant::now() + Duration::from_secs(86_400);
        while running.load(Ordering::Relaxed) && Instant::now() < deadline {
            let started = Instant::now();
            match fetch_metrics(SERVE_ADDR, SCRAPE_TIMEOUT) {
                Some(_) => s.ok += 1,
                None => s.failed += 1,
            }
            let took = started.elapsed();
            s.max_ms = s.max_ms.max(took.as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_secs(1).saturating_sub(took));
        }
        s
    });
    (go, handle)
}

impl Session {
    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }

    /// Tracing: the line tools wait for (doctor announces its watch instead), or for top
    /// (whose screen replaces it) the first frame: the probes attach before any of them.
    fn ready(&self) -> bool {
        match &self.tmux {
            Some((name, _)) => tmux()
                .args(["capture-pane", "-p", "-t", name])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("TIME_WAIT")),
            None => self.stderr_lines().iter().any(|l| l.contains("tracing;") || l.contains("doctor: watching")),
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        match &self.tmux {
            Some((_, file)) => std::fs::read_to_string(file).unwrap_or_default().lines().map(String::from).collect(),
            None => self.stderr.lock().expect("not poisoned").clone(),
        }
    }

    /// CPU and memory of the view's process now.
    pub fn sample(&self) -> Sample {
        Sample {
            at: Some(Instant::now()),
            cpu_ticks: cpu_ticks(self.pid),
            rss_kib: rss_kib(self.pid),
            anon_kib: anon_rss_kib(self.pid),
            peak_rss_kib: peak_rss_kib(self.pid),
        }
    }

    /// What the view shows now: serve's exposition, stat's last line, top's screen. doctor
    /// shows nothing until it ends.
    /// With `only`, the counts of the namespaces whose name starts with it (top's screen
    /// has host-wide counts only: none then).
    pub fn view(&self, only: Option<&str>) -> View {
        match self.tool {
            Tool::Serve => {
                fetch_metrics(SERVE_ADDR, SCRAPE_TIMEOUT).map(|b| parse::exposition(&b, only)).unwrap_or_default()
            }
            Tool::Stat => {
                let last = self.stdout.lock().expect("not poisoned").last().cloned().unwrap_or_default();
                parse::stat_json(&last, only).unwrap_or_default()
            }
            Tool::Top if only.is_some() => View::default(),
            Tool::Top => {
                let Some((name, _)) = &self.tmux else { return View::default() };
                match tmux().args(["capture-pane", "-p", "-t", name]).output() {
                    Ok(out) => parse::top_screen(&String::from_utf8_lossy(&out.stdout)),
                    Err(_) => View::default(),
                }
            }
            Tool::Doctor => View::default(),
        }
    }

    /// Kills the view at once (a failed start).
    fn kill(&mut self) {
        signal(self.pid, libc::SIGKILL);
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
        if let Some((name, _)) = &self.tmux {
            let _ = tmux().args(["kill-session", "-t", name]).stderr(Stdio::null()).status();
        }
    }

    /// Asks the view to end as a user would (SIGINT; `q` for top; doctor ends by itself at
    /// its duration, `doctor_deadline`), waits, kills it if it does not end in time.
    pub fn stop(mut self, doctor_deadline: Instant) -> anyhow::Result<Ended> {
        let asked = match self.tool {
            Tool::Top => {
                let (name, _) = self.tmux.as_ref().expect("top runs in tmux");
                crate::run_cmd(tmux().args(["send-keys", "-t", name, "q"]))?;
                Instant::now()
            }
            Tool::Doctor => doctor_deadline.max(Instant::now()),
            Tool::Serve | Tool::Stat => {
                signal(self.pid, libc::SIGINT);
                Instant::now()
            }
        };
        let deadline = asked + STOP_WITHIN;
        let mut killed = false;
        while self.alive() {
            if Instant::now() > deadline {
                eprintln!(
                    "xtask: bench: twtrace {} still running {STOP_WITHIN:?} after it was asked to end: killed",
                    self.tool.label()
                );
                signal(self.pid, libc::SIGKILL);
                killed = true;
                std::thread::sleep(Duration::from_millis(200));
                if self.child.is_none() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stop_s = asked.elapsed().as_secs_f64();
        let status = match &mut self.child {
            Some(child) => child.wait()?.code(),
            None => Some(0),
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if let Some((name, _)) = &self.tmux {
            let _ = tmux().args(["kill-session", "-t", name]).stderr(Stdio::null()).status();
        }
        let scrapes = self.scraper.take().map(|(go, handle)| {
            go.store(false, Ordering::Relaxed);
            handle.join().unwrap_or_default()
        });
        Ok(Ended {
            exit: if killed { Exit::Killed } else { Exit::Status(status.unwrap_or(-1)) },
            stop_s,
            stderr: self.stderr_lines(),
            stdout: self.stdout.lock().expect("not poisoned").join("\n"),
            scrapes,
        })
    }
}

/// Signals a view's process, by its id.
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process the bench started.
    unsafe { libc::kill(pid as i32, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_run_as_users_run_them() {
        let load = Duration::from_secs(10);
        assert_eq!(
            args(Tool::Serve, Some("twscale-dest"), load).join(" "),
            "serve --listen 127.0.0.1:19978 --netns twscale-dest"
        );
        assert_eq!(args(Tool::Stat, None, load).join(" "), "stat --json --interval 1");
        assert_eq!(args(Tool::Top, Some("x"), load).join(" "), "top --netns x");
        assert_eq!(args(Tool::Doctor, Some("x"), load).join(" "), "doctor --json --duration 18s --netns x");
    }
}
