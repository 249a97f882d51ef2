//! `twtrace scenario <name>`: generators that reproduce a TCP behaviour on purpose, in a
//! network namespace of their own, with ground truth. Each one measures what its callers saw,
//! asks the kernel what exists (sock_diag, inside the namespace), and with `--record` traces
//! itself with `twtrace record` and checks twtrace's view against both. Tests, `cargo xtask
//! study` (the same scenario on several kernels, compared) and users reproducing an incident
//! run the same code.

mod conn;
mod exhaustion;
pub mod join;
mod paws_nat;
pub mod report;
mod sandbox;
mod search_cost;
mod tw_abort;
mod tw_buckets;
mod tw_deaths;
mod tw_reuse;
mod tw_timer_cpu;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context as _;

pub use exhaustion::ExhaustionArgs;
pub use paws_nat::PawsNatArgs;
use report::ScenarioReport;
pub use search_cost::SearchCostArgs;
pub use tw_abort::TwAbortArgs;
pub use tw_buckets::TwBucketsArgs;
pub use tw_deaths::TwDeathsArgs;
pub use tw_reuse::TwReuseArgs;
pub use tw_timer_cpu::TwTimerCpuArgs;

#[derive(clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Trace the run with `twtrace record` into this file, then check twtrace's figures
    /// against the generator's and the kernel's (a disagreement fails the scenario).
    #[arg(long, global = true, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// The backend the recorder must use (default: the best that loads).
    #[arg(long, global = true, requires = "record")]
    pub backend: Option<String>,
    /// The report as one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum Scenario {
    /// connect() search time and candidates as the ports toward one destination fill up
    /// (held by ESTABLISHED or TIME_WAIT sockets; range by sysctl or IP_LOCAL_PORT_RANGE).
    SearchCost(SearchCostArgs),
    /// One client, one server, no keep-alive, client closes first, at a rate, until
    /// EADDRNOTAVAIL: connect() cost against utilisation.
    ClientExhaustion(ExhaustionArgs),
    /// A client closing first fills its range with TIME_WAIT, then keeps connecting under
    /// tcp_tw_reuse 0, 1 and 2 (and the reuse delay where it exists): reuses, their age, failures.
    TwReuse(TwReuseArgs),
    /// A namespace's own TIME_WAIT limit (tcp_max_tw_buckets): its default (also under
    /// tcp_child_ehash_entries), and the connections past it that keep no TIME_WAIT socket
    /// (TCPTimeWaitOverflow).
    TwBuckets(TwBucketsArgs),
    /// Every way a TIME_WAIT socket ends early, each made on purpose: reuse by connect(), a
    /// SYN over the server's, an RST (in both substates; tcp_rfc1337 0 and 1), the bucket
    /// limit refusing it, the namespace torn down; twtrace must name each path.
    TwDeaths(TwDeathsArgs),
    /// Clients behind one source address (as behind a NAT) with different timestamp clocks,
    /// reusing 4-tuples the server holds in TIME_WAIT: PAWS rejections, drops, the RST that
    /// ends the TIME_WAIT socket (tcp_rfc1337 0 and 1), the connect delay clients see.
    PawsNat(PawsNatArgs),
    /// On which CPU each TIME_WAIT timer fires, against the CPU that closed the connection
    /// (the closer pinned to each CPU in turn; one wait of about 60 s; the kernel's timer
    /// tracepoints through a tracefs instance of its own).
    TwTimerCpu(TwTimerCpuArgs),
    /// tcp_abort() on TIME_WAIT sockets: a SOCK_DESTROY request (what `ss -K` sends) for each,
    /// the kernel's answers, what is left, and twtrace's name for those deaths (`aborted`).
    TwAbort(TwAbortArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Self::SearchCost(_) => "search-cost",
            Self::ClientExhaustion(_) => "client-exhaustion",
            Self::TwReuse(_) => "tw-reuse",
            Self::TwBuckets(_) => "tw-buckets",
            Self::TwDeaths(_) => "tw-deaths",
            Self::PawsNat(_) => "paws-nat",
            Self::TwTimerCpu(_) => "tw-timer-cpu",
            Self::TwAbort(_) => "tw-abort",
        }
    }
}

/// Runs the scenario (and the recorder around it), prints the report; fails when a check did.
pub async fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    // Before the scenario leaves this namespace: the recorder traces every namespace anyway,
    // and is then not inside one the scenario tears down.
    let recorder = args.record.as_deref().map(|path| Recorder::start(path, args.backend.as_deref())).transpose()?;
    let (kernel, kernel_build) = report::uname();
    let params = match &args.scenario {
        Scenario::SearchCost(a) => search_cost::params(a),
        Scenario::ClientExhaustion(a) => exhaustion::params(a),
        Scenario::TwReuse(a) => tw_reuse::params(a),
        Scenario::TwBuckets(a) => tw_buckets::params(a),
        Scenario::TwDeaths(a) => tw_deaths::params(a),
        Scenario::PawsNat(a) => paws_nat::params(a),
        Scenario::TwTimerCpu(a) => tw_timer_cpu::params(a),
        Scenario::TwAbort(a) => tw_abort::params(a),
    };
    let mut report = ScenarioReport {
        scenario: args.scenario.name().into(),
        kernel,
        kernel_build,
        params,
        runs: Vec::new(),
        twtrace: None,
        checks: Vec::new(),
        passed: false,
    };
    match &args.scenario {
        Scenario::SearchCost(a) => search_cost::run(a, &mut report)?,
        Scenario::ClientExhaustion(a) => exhaustion::run(a, &mut report)?,
        Scenario::TwReuse(a) => tw_reuse::run(a, &mut report)?,
        Scenario::TwBuckets(a) => tw_buckets::run(a, &mut report)?,
        Scenario::TwDeaths(a) => tw_deaths::run(a, &mut report)?,
        Scenario::PawsNat(a) => paws_nat::run(a, &mut report)?,
        Scenario::TwTimerCpu(a) => tw_timer_cpu::run(a, &mut report)?,
        Scenario::TwAbort(a) => tw_abort::run(a, &mut report)?,
    }
    if let (Some(recorder), Some(path)) = (recorder, &args.record) {
        recorder.stop()?;
        join::join(&mut report, path).await.with_context(|| format!("reading the recording {}", path.display()))?;
    }
    report.finish();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    let failed = report.checks.iter().filter(|c| !c.passed).count();
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed: the figures above disagree", report.checks.len());
    Ok(())
}

/// `twtrace record` as a child, from "tracing;" until SIGINT. Killed if dropped unstopped.
struct Recorder {
    child: Child,
}

impl Recorder {
    fn start(path: &Path, backend: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating twtrace for the recorder")?;
        let mut cmd = Command::new(exe);
        cmd.arg("record").arg("-o").arg(path);
        if let Some(b) = backend {
            cmd.args(["--backend", b]);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting twtrace record")?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("tracing;") => break,
                Some(Ok(line)) => said.push(line),
                _ => {
                    let status = child.wait()?;
                    anyhow::bail!("twtrace record did not start ({status}): {}", said.join("; "));
                }
            }
        }
        // Its later words (loss, the summary) go to our stderr.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("[record] {l}")));
        Ok(Self { child })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "twtrace record exited with {status}");
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
