//! The one loop between a source and a sink: signals, the next batch, the filter, the sink,
//! and the stop. Every command (`trace`, `record`, `stat`, `top`, `report`) is a [`Sink`]
//! driven by [`drive`]; none of them reads a source itself, and none knows whether its events
//! come from the kernel or from a recording.

use std::{future::Future, time::Duration};

use crate::{
    event::{Event, ExistingSocket},
    filter::Filter,
    source::{Flow, Health, Source},
    source_info::SourceInfo,
};

/// What a sink asks of the loop after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop now: the source's pending events are drained into the sink first, then
    /// [`Sink::finish`] runs.
    Stop,
    /// Filter from now on with this (the TUI's `/`): the sink is restarted with the sockets
    /// that exist now ([`Sink::restart`]).
    Refilter(Filter),
}

/// Where the run stands, for sinks: the source's description, its present and its health.
/// Sinks see the source only through this.
pub struct Status<'a> {
    source: &'a Source,
}

impl Status<'_> {
    pub fn info(&self) -> &SourceInfo {
        self.source.info()
    }

    /// The source's present (CLOCK_MONOTONIC ns): now when live, the position in a replay.
    pub fn now_ns(&self) -> u64 {
        self.source.now_ns()
    }

    /// Loss, skipped runs, decoder counts, BPF run time, replay position and damage. Computed
    /// when asked (BPF run time reads every program's statistics): call it per frame or at
    /// the end, not per event.
    pub fn health(&self) -> Health {
        self.source.health()
    }

    /// The line tools and tests wait for: everything after it is traced.
    pub fn describe(&self) -> String {
        self.source.describe()
    }
}

/// A consumer of the event stream.
pub trait Sink {
    /// What [`Sink::wait`] yields.
    type Wake;

    /// Called once, after SIGINT/SIGTERM handling is in place and before the first event.
    /// By default announces the source on stderr (tools and tests wait for that line).
    fn start(&mut self, status: &Status) -> anyhow::Result<()> {
        crate::note!("{}", status.describe());
        Ok(())
    }

    /// One event that passed the filter, in stream order.
    fn event(&mut self, event: &Event, status: &Status) -> anyhow::Result<()>;

    /// After every batch (a live source delivers one at least every drain interval, empty or
    /// not, so this is also the sink's clock).
    fn batch_done(&mut self, _status: &Status) -> anyhow::Result<Control> {
        Ok(Control::Continue)
    }

    /// Something besides the stream the sink waits for (the TUI's keys and frames). Never,
    /// by default.
    fn wait(&mut self) -> impl Future<Output = Self::Wake> {
        std::future::pending()
    }

    fn on_wake(&mut self, _wake: Self::Wake, _status: &Status) -> anyhow::Result<Control> {
        Ok(Control::Continue)
    }

    /// While true, a source that can wait (a replay) is not read; a live source is read
    /// regardless, or the kernel would drop records.
    fn holding(&self) -> bool {
        false
    }

    /// Whether the end of a recording ends the run (the TUI keeps showing the last frame).
    fn stops_at_end(&self) -> bool {
        true
    }

    /// Start over from the sockets that exist now (after [`Control::Refilter`]).
    fn restart(&mut self, _sockets: &[ExistingSocket], _status: &Status) -> anyhow::Result<()> {
        Ok(())
    }

    /// Whether the sink's model lost records and wants the sockets that exist now to repair
    /// itself ([`Sink::resync`]); asked after every batch of a live source.
    fn resync_due(&self, _now_ns: u64) -> bool {
        false
    }

    /// The sockets of every namespace traced, read at `now_ns` (`None`: the read failed; the
    /// sink waits before it asks again).
    fn resync(&mut self, _now_ns: u64, _sockets: Option<&[ExistingSocket]>) {}

    /// The run is over (signal, deadline, end of the recording, or the sink's own stop).
    fn finish(&mut self, status: &Status) -> anyhow::Result<()>;
}

/// How long a run may last, besides signals and the end of a recording.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Stop this long after the start (`--duration`).
    pub duration: Option<Duration>,
}

/// Feeds `source`, through `filter`, into `sink` until a signal, the limits, the end of a
/// recording or the sink stops it. The sink sees every pending event before it finishes.
pub async fn drive<S: Sink>(source: &mut Source, filter: Filter, sink: &mut S, limits: Limits) -> anyhow::Result<()> {
    // Installed at start-up (`install_signals`), before any command announced itself; else now.
    let early = EARLY_SIGNALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let mut signals = match early {
        Some(signals) => signals,
        None => Signals::new()?,
    };
    // Every namespace described so far, for filters by name (the TUI's may come later).
    let mut namespaces = source.info().namespaces.clone();
    let mut filter = filter;
    namespaces.iter().for_each(|n| filter.learn(n));
    sink.start(&Status { source })?;
    let deadline = limits.duration.map(|d| tokio::time::Instant::now() + d);
    let mut batch = Vec::new();
    // A signal (or the deadline) that came while the loop awaited something else.
    let mut stop_pending = false;
    loop {
        let read = !(sink.holding() && source.can_wait());
        let mut stop = stop_pending;
        let mut ended = false;
        let mut woke = None;
        if !stop {
            tokio::select! {
                () = stop_asked(&mut signals, deadline) => stop = true,
                wake = sink.wait() => woke = Some(wake),
                flow = source.next_batch(&mut batch), if read => ended = flow == Flow::Ended,
            }
        }
        if let Some(wake) = woke {
            match sink.on_wake(wake, &Status { source })? {
                Control::Continue => {}
                Control::Stop => stop = true,
                Control::Refilter(new) => {
                    filter = new;
                    namespaces.iter().for_each(|n| filter.learn(n));
                    let sockets = source.sockets_now()?;
                    sink.restart(&sockets, &Status { source })?;
                }
            }
        }
        let stop_now = stop || (ended && sink.stops_at_end());
        if stop_now {
            source.finish(&mut batch);
        }
        for event in batch.drain(..) {
            if let Event::Namespace(e) = &event {
                filter.learn(&e.namespace);
                namespaces.retain(|n| n.netns != e.namespace.netns);
                namespaces.push(e.namespace.clone());
            }
            if filter.matches(&event) {
                sink.event(&event, &Status { source })?;
            }
        }
        if sink.batch_done(&Status { source })? == Control::Stop || stop_now {
            break;
        }
        // After loss, the model repairs itself from what the kernel holds now. The drain runs
        // on its own thread meanwhile: a long read delays the model, never the ring buffer.
        // The read runs on a thread of its own too, awaited beside the signals and the
        // deadline: at a million sockets it takes seconds, and a Ctrl-C must not wait for it
        // (the read is abandoned; the events since are still in the drain's queue).
        let now = source.now_ns();
        if !source.can_wait() && sink.resync_due(now) {
            let read = source.sockets_later();
            tokio::select! {
                () = stop_asked(&mut signals, deadline) => stop_pending = true,
                sockets = read => match sockets {
                    Ok(sockets) => sink.resync(now, Some(&sockets)),
                    Err(e) => {
                        log::warn!("cannot read the sockets to repair the model after lost records: {e:#}");
                        sink.resync(now, None);
                    }
                },
            }
        }
    }
    sink.finish(&Status { source })
}

/// Returns when a signal comes, or the deadline (`--duration`) passes if there is one.
async fn stop_asked(signals: &mut Signals, deadline: Option<tokio::time::Instant>) {
    tokio::select! {
        () = signals.recv() => {}
        () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
    }
}

/// How long a sink's views took to build (snapshots, frames, expositions, samples): with the
/// source's drain figures, the one line every view command prints at its end, which the
/// scale benchmark reads (`twtrace: scale: ...`).
#[derive(Default)]
pub struct ViewTimes {
    /// Wall time per build: what a reader waits.
    ns: crate::aggregate::stats::Histogram,
    /// The building thread's CPU time per build: what the build costs, without the time the
    /// thread waited for a CPU while a load generator (or the host's work) had it.
    cpu_ns: crate::aggregate::stats::Histogram,
}

impl ViewTimes {
    /// Runs `build` (on this thread), timing it.
    pub fn time<T>(&mut self, build: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let cpu = crate::time::thread_cpu_ns();
        let out = build();
        self.cpu_ns.record(crate::time::thread_cpu_ns().saturating_sub(cpu));
        self.ns.record(started.elapsed().as_nanos() as u64);
        out
    }

    /// `scale: views N, build p50 X ms p99 Y ms max Z ms, on CPU p50 A ms p99 B ms; drain
    /// stall max S ms; queued peak Q events; lost L, skipped K` (K: runs of twtrace's programs
    /// the kernel skipped, each a possible missed event, as `lost` is a certain one).
    pub fn line(&self, health: &Health) -> String {
        let ms = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e6;
        let drain = health.drain.unwrap_or_default();
        format!(
            "scale: views {}, build p50 {:.1} ms p99 {:.1} ms max {:.1} ms, on CPU p50 {:.1} ms p99 {:.1} ms; drain stall max {:.1} ms; queued peak {} events; lost {}, skipped {}",
            self.ns.count(),
            ms(self.ns.quantile(0.5)),
            ms(self.ns.quantile(0.99)),
            ms(self.ns.max()),
            ms(self.cpu_ns.quantile(0.5)),
            ms(self.cpu_ns.quantile(0.99)),
            drain.longest_gap_ns as f64 / 1e6,
            drain.queued_peak,
            health.lost,
            health.skipped_runs,
        )
    }
}

/// The handlers `main` installs before the command runs, for the drive loop to take.
static EARLY_SIGNALS: std::sync::Mutex<Option<Signals>> = std::sync::Mutex::new(None);

/// Takes over SIGINT and SIGTERM now (inside the runtime), before a command prints that it is
/// running: until tokio's handler is installed a Ctrl-C kills the process with the default
/// action, and a signal sent before a `Signals` exists is not reported to it. A script that
/// waits for "watching" or "tracing" and then interrupts must get a clean end and a report.
pub fn install_signals() -> std::io::Result<()> {
    let signals = Signals::new()?;
    *EARLY_SIGNALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(signals);
    Ok(())
}

/// SIGINT and SIGTERM.
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
