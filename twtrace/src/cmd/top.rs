//! `twtrace top`: the live incident view, a sink like any other. The terminal is owned by a
//! guard that restores it on exit, error, panic or signal; all drawing is
//! `tui::render::draw`, all key handling `tui::state`.

use std::{io::IsTerminal, time::Duration};

use anyhow::Context as _;
use ratatui::{Terminal, backend::CrosstermBackend};

use super::{ViewArgs, stat};
use crate::{
    aggregate::{Aggregator, Snapshot},
    drive::{self, Control, Limits, Sink, Status, ViewTimes},
    event::{Event, ExistingSocket},
    findings::{self, Finding},
    kernel, report,
    source::{Health, ReplayHealth},
    tui::{
        render::{self, Header},
        state::{Action, Key, UiState},
        terminal::{self, TerminalGuard},
    },
};

#[derive(clap::Args)]
pub struct TopArgs {
    /// Replay speed: a multiple of the recorded pace (1 = as recorded), or `max`.
    #[arg(long, value_name = "X", value_parser = parse_speed, requires = "replay")]
    speed: Option<Speed>,
    #[command(flatten)]
    view: ViewArgs,
}

#[derive(Clone, Copy)]
struct Speed(Option<f64>);

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed(None));
    }
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(Speed(Some(x))),
        _ => Err(format!("`{text}`: give a positive multiple (0.5, 1, 10) or `max`")),
    }
}

const FRAME: Duration = Duration::from_millis(500);

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    // A replay in top defaults to the recorded pace; `--speed max` as fast as it reads.
    let speed = args.speed.map_or(Some(1.0), |s| s.0);
    let top = args.view.top;
    let (mut source, filter) = args.view.source.open(true, speed)?;
    if !std::io::stdout().is_terminal() {
        crate::note!("stdout is not a terminal: printing `twtrace stat` reports instead");
        let options = stat::StatOptions { interval: Duration::from_secs(1), count: None, json: false, top };
        return stat::stat(&mut source, filter, &options).await;
    }
    let info = source.info();
    let header = Header {
        host: info.host.clone(),
        kernel: info.kernel.clone(),
        backends: info
            .backends
            .iter()
            .map(|r| (r.family.to_string(), r.running.map(|b| b.to_string()).unwrap_or_else(|| "OFF".into())))
            .collect(),
        ..Header::default()
    };
    let aggregator = super::aggregator_for(info, top);
    let snapshot = aggregator.snapshot(source.now_ns());
    let mut sink = TopSink {
        top,
        aggregator,
        snapshot,
        findings: Vec::new(),
        header,
        ui: UiState::default(),
        screen: None,
        frames: tokio::time::interval(FRAME),
        usage: Usage::now(),
        events_since: 0,
        times: ViewTimes::default(),
    };
    drive::drive(&mut source, filter, &mut sink, Limits::default()).await
}

/// The terminal and the keys, from the first frame on.
struct Screen {
    // Dropped before the guard restores the terminal.
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
    keys: tokio::sync::mpsc::Receiver<Key>,
    _guard: TerminalGuard,
}

struct TopSink {
    top: usize,
    aggregator: Aggregator,
    /// What is drawn: refreshed each frame unless paused.
    snapshot: Snapshot,
    /// `doctor`'s findings on the same model, refreshed with the snapshot: once a frame, not
    /// per event (a report of the model is a few clones of its views).
    findings: Vec<Finding>,
    header: Header,
    ui: UiState,
    screen: Option<Screen>,
    frames: tokio::time::Interval,
    usage: Usage,
    events_since: u64,
    times: ViewTimes,
}

enum Wake {
    Key(Key),
    Frame,
}

impl TopSink {
    fn draw(&mut self) -> anyhow::Result<()> {
        let Some(screen) = &mut self.screen else { return Ok(()) };
        screen.terminal.draw(|f| render::draw(f, &self.snapshot, &self.header, &self.ui, &self.findings))?;
        Ok(())
    }
}

impl Sink for TopSink {
    type Wake = Wake;

    fn start(&mut self, _status: &Status) -> anyhow::Result<()> {
        let guard = TerminalGuard::enter()?;
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout())).context("terminal")?;
        terminal.clear()?;
        // Keys come from a reader thread started only now: started earlier it would swallow
        // the terminal's answer to ratatui's cursor-position query.
        let keys = terminal::spawn_key_reader();
        self.screen = Some(Screen { terminal, keys, _guard: guard });
        Ok(())
    }

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        self.events_since += 1;
        self.aggregator.apply(event);
        Ok(())
    }

    async fn wait(&mut self) -> Wake {
        let keys = self.screen.as_mut().map(|s| &mut s.keys);
        tokio::select! {
            Some(key) = async { keys?.recv().await } => Wake::Key(key),
            _ = self.frames.tick() => Wake::Frame,
        }
    }

    fn on_wake(&mut self, wake: Wake, status: &Status) -> anyhow::Result<Control> {
        let control = match wake {
            Wake::Key(key) => match self.ui.on_key(key) {
                Action::Quit => return Ok(Control::Stop),
                // Counts restart from the sockets that exist now, under the new filter.
                Action::SetFilter(filter) => Control::Refilter(filter),
                Action::None => Control::Continue,
            },
            Wake::Frame => {
                let health = status.health();
                let (cpu, bpf, events_per_s) = self.usage.update(&health, self.events_since);
                self.events_since = 0;
                self.header.cpu_percent = cpu;
                self.header.bpf_us_per_s = bpf;
                self.header.events_per_s = events_per_s;
                self.header.replay = health.replay.as_ref().map(|r| replay_status(r, status));
                if !self.ui.paused {
                    let now = status.now_ns();
                    let aggregator = &mut self.aggregator;
                    let (snapshot, found) = self.times.time(|| {
                        aggregator.advance(now);
                        let snapshot = aggregator.snapshot(now);
                        let live = report::live(aggregator, &snapshot, status.info(), &health);
                        (snapshot, findings::of(&live))
                    });
                    self.snapshot = snapshot;
                    self.findings = found;
                }
                Control::Continue
            }
        };
        self.draw()?;
        Ok(control)
    }

    fn holding(&self) -> bool {
        self.ui.paused
    }

    /// The last frame of a recording stays on screen until `q`.
    fn stops_at_end(&self) -> bool {
        false
    }

    fn restart(&mut self, sockets: &[ExistingSocket], status: &Status) -> anyhow::Result<()> {
        let known = self.aggregator.namespaces();
        self.aggregator = Aggregator::new(super::settings_for(status.info(), self.top));
        for namespace in &known {
            self.aggregator.describe(namespace);
        }
        self.aggregator.seed(status.now_ns(), sockets);
        Ok(())
    }

    fn resync_due(&self, now_ns: u64) -> bool {
        self.aggregator.resync_due(now_ns)
    }

    fn resync(&mut self, now_ns: u64, sockets: Option<&[ExistingSocket]>) {
        self.aggregator.resync(now_ns, sockets);
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        drop(self.screen.take());
        let health = status.health();
        crate::note!("top ended; {} events, {} lost in the kernel", self.snapshot.events, health.lost);
        crate::note!("{}", self.times.line(&health));
        if let Some(replay) = status.health().replay {
            crate::note!("{}", replay.summary());
        }
        Ok(())
    }
}

/// The header's replay position: recorded wall time, speed, and whether the end was reached.
fn replay_status(replay: &ReplayHealth, status: &Status) -> String {
    let at = status.info().clock.at(replay.position_ns).to_second();
    let speed = replay.speed.map(|s| format!("x{s}")).unwrap_or_else(|| "full speed".into());
    format!("REPLAY {at} {speed}{}", if replay.ended { " (end of recording)" } else { "" })
}

/// twtrace's own CPU time, the kernel-side run time of its programs, and event rate, per
/// wall second since the previous frame.
struct Usage {
    at: std::time::Instant,
    cpu_ticks: Option<u64>,
    bpf_ns: Option<u64>,
}

impl Usage {
    fn now() -> Self {
        Self { at: std::time::Instant::now(), cpu_ticks: kernel::own_cpu_ticks(), bpf_ns: None }
    }

    fn update(&mut self, health: &Health, events: u64) -> (Option<f64>, Option<f64>, f64) {
        let elapsed = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = std::time::Instant::now();
        let ticks = kernel::own_cpu_ticks();
        let cpu = match (self.cpu_ticks, ticks) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / kernel::clock_ticks_per_s() / elapsed * 100.0),
            _ => None,
        };
        self.cpu_ticks = ticks;
        let now_ns = health.bpf_run_time.as_ref().map(crate::probes::BpfRunTime::total_ns);
        let bpf = match (self.bpf_ns, now_ns) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e3 / elapsed),
            _ => None,
        };
        self.bpf_ns = now_ns;
        (cpu, bpf, events as f64 / elapsed)
    }
}
