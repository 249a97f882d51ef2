//! Where the event stream comes from: the live probes or a recording. Sinks never see which:
//! they get events through [`crate::drive`], and the source's state through [`Health`].

mod namespaces;
mod replay;

use anyhow::Context as _;

pub use replay::Replay;

use crate::{
    event::{Event, ExistingSocket},
    kernel,
    probes::{self, DecodeStats, LiveProbes, Options},
    record::{Damage, Trailer, directory::Window},
    source_info::SourceInfo,
    time::WallClock,
};

/// Whether a source has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    More,
    /// A recording reached its end (a live source never ends by itself).
    Ended,
}

/// How the source is doing: what it lost, what it could not decode, what it costs, and for a
/// replay where it stands and what was damaged. The one way these reach sinks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// Records the kernel dropped (ring buffer full) so far, as the stream has reported them.
    pub lost: u64,
    /// Runs of twtrace's programs the kernel skipped so far, as the stream has reported them.
    pub skipped_runs: u64,
    /// The decoder's counts: live, or what a finished recording's end marker says.
    pub decoder: Option<DecodeStats>,
    /// Kernel-side run time of the attached programs, when the kernel accounts it
    /// (`kernel.bpf_stats_enabled=1`); never for a replay.
    pub bpf_run_time: Option<crate::probes::BpfRunTime>,
    /// Replaying a recording: its position and state.
    pub replay: Option<ReplayHealth>,
    /// The live drain thread's figures (longest gap between drains, the queue's peak).
    pub drain: Option<probes::DrainFigures>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplayHealth {
    /// Recorded time reached (monotonic ns of the recording).
    pub position_ns: u64,
    /// A multiple of the recorded pace; `None`: as fast as it reads.
    pub speed: Option<f64>,
    pub ended: bool,
    pub replayed: u64,
    /// Intact chunks read so far.
    pub chunks: u64,
    /// What was found wrong so far (complete once `ended`).
    pub damage: Vec<Damage>,
    /// The end marker, if the recording was finished and it has been read.
    pub trailer: Option<Trailer>,
}

impl ReplayHealth {
    /// What was replayed and, at the end, what was damaged: one line, then one per damage.
    pub fn summary(&self) -> String {
        let mut out = format!("{} events replayed from {} chunks", self.replayed, self.chunks);
        if self.ended {
            if self.damage.is_empty() {
                out.push_str("; the recording is complete and intact");
            }
            for d in &self.damage {
                out.push_str(&format!("\n  damage: {d}"));
            }
        }
        out
    }
}

pub enum Source {
    Live(Box<LiveSource>),
    Replay(Box<Replay>),
}

pub struct LiveSource {
    probes: LiveProbes,
    options: Options,
    info: SourceInfo,
    namespaces: namespaces::NamespaceTracker,
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
        let started_ns = crate::time::monotonic_ns();
        let mut tracker = namespaces::NamespaceTracker::new(options.netns);
        let namespaces = tracker.start(started_ns);
        let sockets = if with_sockets { current_sockets(options, &mut tracker)? } else { Vec::new() };
        let info = SourceInfo {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            clock: WallClock::now(),
            started_ns,
            sysctls,
            backends: probes.reports.clone(),
            namespaces,
            netns: options.netns,
            port: options.port,
            filter: String::new(),
            sockets,
            segment: None,
        };
        Ok(Self::Live(Box::new(LiveSource { probes, options: options.clone(), info, namespaces: tracker })))
    }

    /// A recording (a file, or a flight-recorder directory), within `window`, paced at
    /// `speed` times the recorded pace (`None`: as fast as it reads).
    pub fn replay(path: &std::path::Path, speed: Option<f64>, window: Window) -> anyhow::Result<Self> {
        let replay = Replay::open(path, speed, window).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self::Replay(Box::new(replay)))
    }

    pub fn info(&self) -> &SourceInfo {
        match self {
            Self::Live(live) => &live.info,
            Self::Replay(r) => r.info(),
        }
    }

    /// Records the userspace filter in the description (a recording's header keeps it).
    pub fn set_filter_description(&mut self, filter: String) {
        match self {
            Self::Live(live) => live.info.filter = filter,
            Self::Replay(r) => r.info_mut().filter = filter,
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
                    info.clock.at(info.started_ns),
                    probes::backend_summary(&info.backends)
                )
            }
        }
    }

    /// Whether the source can wait for its reader: a replay can, the kernel cannot (its ring
    /// buffer fills and records are lost).
    pub fn can_wait(&self) -> bool {
        matches!(self, Self::Replay(_))
    }

    /// Waits for the next events and appends them to `out`. Cancel-safe.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Flow {
        match self {
            Self::Live(live) => {
                live.probes.next_batch(out).await;
                let now = crate::time::monotonic_ns();
                live.namespaces.observe(out, now);
                live.namespaces.sample_counters(now, out, false);
                Flow::More
            }
            Self::Replay(r) => r.next_batch(out).await,
        }
    }

    /// Everything still pending (call once before stopping).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        match self {
            Self::Live(live) => {
                live.probes.finish(out);
                let now = crate::time::monotonic_ns();
                live.namespaces.observe(out, now);
                live.namespaces.sample_counters(now, out, true);
            }
            Self::Replay(r) => r.finish(),
        }
    }

    /// The source's present: the monotonic clock live, the replay position in a recording.
    pub fn now_ns(&self) -> u64 {
        match self {
            Self::Live(_) => crate::time::monotonic_ns(),
            Self::Replay(r) => r.now_ns(),
        }
    }

    /// Sockets that exist now, for restarting the views (a recording has only its start).
    pub fn sockets_now(&mut self) -> anyhow::Result<Vec<ExistingSocket>> {
        match self {
            Self::Live(live) => current_sockets(&live.options, &mut live.namespaces),
            Self::Replay(_) => Ok(Vec::new()),
        }
    }

    pub fn health(&self) -> Health {
        match self {
            Self::Live(live) => Health {
                lost: live.probes.lost_reported(),
                skipped_runs: live.probes.skipped_reported(),
                decoder: Some(live.probes.stats()),
                bpf_run_time: live.probes.bpf_run_time(),
                replay: None,
                drain: Some(live.probes.drain_figures()),
            },
            Self::Replay(r) => r.health(),
        }
    }

    /// [`Self::sockets_now`] on a thread of its own: what the drive loop awaits beside its
    /// signals, so that a long read (a million sockets) never holds a Ctrl-C.
    pub fn sockets_later(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<ExistingSocket>>> + Send>> {
        let Self::Live(live) = self else { return Box::pin(async { Ok(Vec::new()) }) };
        let (Some(netns), Some(path)) = (live.options.netns, live.options.netns_path.clone()) else {
            let read = live.namespaces.sockets_later();
            return Box::pin(async move { Ok(read.await) });
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(sockets_in(netns, &path));
        });
        Box::pin(async move {
            rx.await
                .map_err(|_| anyhow::anyhow!("the socket reader thread ended without an answer"))?
                .context("listing sockets (sock_diag)")
        })
    }
}

/// The sockets of the namespace `--netns` names (read through the path given), or of every
/// namespace described.
fn current_sockets(
    options: &Options,
    namespaces: &mut namespaces::NamespaceTracker,
) -> anyhow::Result<Vec<ExistingSocket>> {
    let (Some(netns), Some(path)) = (options.netns, options.netns_path.as_deref()) else {
        return Ok(namespaces.sockets());
    };
    sockets_in(netns, path).context("listing sockets (sock_diag)")
}

/// The TCP sockets of namespace `netns`, entered through `path` (`--netns`).
fn sockets_in(netns: u32, path: &std::path::Path) -> std::io::Result<Vec<ExistingSocket>> {
    let mut sockets = kernel::netns::run_in(Some(path), kernel::sockdiag::tcp_sockets)?;
    for socket in &mut sockets {
        socket.netns = netns;
    }
    Ok(sockets)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}
