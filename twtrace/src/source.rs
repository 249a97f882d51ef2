//! Where the event stream comes from: the live probes or a recording. `trace`, `stat`, `top`
//! and `record` read one [`Source`]; replaying a recording is not special code in any of them.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    aggregate::{Aggregator, ExistingSocket, Settings},
    event::Event,
    kernel::{self, WallClock, netns::Sysctls},
    probes::{self, FamilyReport, LiveProbes, Options},
    record::Replay,
};

/// What a sink needs to know about the source besides its events. A recording's header holds
/// exactly this (the sockets go in chunks of their own).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceInfo {
    pub host: String,
    pub kernel: String,
    /// Kernel timestamps are CLOCK_MONOTONIC: this maps them to wall-clock time.
    pub clock: WallClock,
    /// When tracing started (monotonic ns).
    pub started_ns: u64,
    /// The traced namespace's settings.
    pub sysctls: Sysctls,
    /// Which backend each probe family runs on, and why others could not.
    pub backends: Vec<FamilyReport>,
    /// The in-kernel filters: namespace inode and port.
    pub netns: Option<u32>,
    pub port: Option<u16>,
    /// The userspace filter events passed (`--pid`, `--comm`, ...), in command-line terms.
    #[serde(default)]
    pub filter: String,
    /// TCP sockets of the traced namespace when tracing started (empty when not read).
    #[serde(skip)]
    pub sockets: Vec<ExistingSocket>,
}

impl SourceInfo {
    /// The aggregator for this source, seeded with the sockets that existed at its start.
    pub fn aggregator(&self, top: usize) -> Aggregator {
        let mut aggregator = Aggregator::new(self.settings(top));
        aggregator.seed(self.started_ns, &self.sockets);
        aggregator
    }

    pub fn settings(&self, top: usize) -> Settings {
        Settings { port_range: self.sysctls.ip_local_port_range, max_tw_buckets: self.sysctls.tcp_max_tw_buckets, top }
    }
}

/// Whether a source has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    More,
    /// A recording reached its end (a live source never ends by itself).
    Ended,
}

pub enum Source {
    Live(Box<LiveSource>),
    Replay(Box<Replay>),
}

pub struct LiveSource {
    pub probes: LiveProbes,
    options: Options,
    info: SourceInfo,
}

impl Source {
    /// Loads and attaches the probes. `with_sockets` also reads the namespace's current sockets
    /// (sock_diag), which the views and recordings need and `trace` does not.
    pub fn live(options: &Options, with_sockets: bool) -> anyhow::Result<Self> {
        let probes = LiveProbes::load(options).context("cannot start tracing")?;
        let path = options.netns_path.as_deref();
        if with_sockets && options.netns.is_some() && path.is_none() {
            anyhow::bail!("--netns given as an inode: the views need the namespace's name or path to read its sockets");
        }
        let sysctls = kernel::netns::sysctls(path).context("reading the namespace's TCP settings")?;
        let started_ns = kernel::monotonic_ns();
        let sockets = if with_sockets { current_sockets(options)? } else { Vec::new() };
        let info = SourceInfo {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            clock: WallClock::now(),
            started_ns,
            sysctls,
            backends: probes.reports.clone(),
            netns: options.netns,
            port: options.port,
            filter: String::new(),
            sockets,
        };
        Ok(Self::Live(Box::new(LiveSource { probes, options: options.clone(), info })))
    }

    pub fn info(&self) -> &SourceInfo {
        match self {
            Self::Live(live) => &live.info,
            Self::Replay(r) => r.info(),
        }
    }

    /// The line tools and tests wait for: live, everything after it is traced.
    pub fn describe(&self) -> String {
        match self {
            Self::Live(live) => format!("tracing; {}", probes::backend_summary(&live.info.backends)),
            Self::Replay(r) => {
                let info = r.info();
                format!(
                    "replaying a recording of {} ({}) from {}; {}",
                    info.host,
                    info.kernel,
                    crate::output::rfc3339(info.clock.to_unix_ns(info.started_ns)),
                    probes::backend_summary(&info.backends)
                )
            }
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live(_))
    }

    /// Waits for the next events and appends them to `out`. Cancel-safe.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Flow {
        match self {
            Self::Live(live) => {
                live.probes.next_batch(out).await;
                Flow::More
            }
            Self::Replay(r) => r.next_batch(out).await,
        }
    }

    /// For sinks that run to the end (`trace`, `record`): the next batch, or, at a signal,
    /// at `deadline` or at the end of a recording, everything still pending. Returns whether
    /// to stop once this batch is handled.
    pub async fn next_batch_or_stop(
        &mut self,
        out: &mut Vec<Event>,
        signals: &mut Signals,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        let stop = tokio::select! {
            () = signals.recv() => true,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => true,
            flow = self.next_batch(out) => flow == Flow::Ended,
        };
        if stop {
            self.finish(out);
        }
        stop
    }

    /// Everything still pending (call once before stopping).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        match self {
            Self::Live(live) => live.probes.finish(out),
            Self::Replay(r) => r.finish(out),
        }
    }

    /// The source's present: the monotonic clock live, the replay position in a recording.
    pub fn now_ns(&self) -> u64 {
        match self {
            Self::Live(_) => kernel::monotonic_ns(),
            Self::Replay(r) => r.now_ns(),
        }
    }

    /// Sockets that exist now, for restarting the views (a recording has only its start).
    pub fn sockets_now(&self) -> anyhow::Result<Vec<ExistingSocket>> {
        match self {
            Self::Live(live) => current_sockets(&live.options),
            Self::Replay(_) => Ok(Vec::new()),
        }
    }

    pub fn live_probes(&self) -> Option<&LiveProbes> {
        match self {
            Self::Live(live) => Some(&live.probes),
            Self::Replay(_) => None,
        }
    }
}

fn current_sockets(options: &Options) -> anyhow::Result<Vec<ExistingSocket>> {
    kernel::netns::run_in(options.netns_path.as_deref(), kernel::sockdiag::tcp_sockets)
        .context("listing sockets (sock_diag)")
}

pub fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// SIGINT and SIGTERM, installed before anything is announced: a Ctrl-C right after start must
/// still end cleanly.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
