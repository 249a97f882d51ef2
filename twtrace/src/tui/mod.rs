//! `twtrace top`: the live incident view. The terminal is owned by a guard that restores it on
//! exit, error, panic or signal; all drawing is `render::draw`, all key handling `state`.

pub mod render;
pub mod state;
#[cfg(test)]
mod tests;

use std::{io::IsTerminal, time::Duration};

use anyhow::Context as _;
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};
use state::{Action, Key, UiState};

use crate::{
    aggregate::Aggregator,
    filter::Filter,
    probes::LiveProbes,
    record::Replay,
    source::{Flow, Signals, Source},
    stat,
};

/// Restores the terminal when dropped, whatever ended the view.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        enable_raw_mode().context("terminal raw mode")?;
        execute!(std::io::stdout(), EnterAlternateScreen).context("alternate screen")?;
        // A panic must not leave the terminal raw: restore first, then report.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(Self)
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, ratatui::crossterm::cursor::Show);
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

const FRAME: Duration = Duration::from_millis(500);

pub async fn run(mut source: Source, filter: Filter, top: usize) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        eprintln!("twtrace: stdout is not a terminal: printing `twtrace stat` reports instead");
        let stat = stat::StatOptions { interval: Duration::from_secs(1), count: None, json: false, top };
        return stat::run(&mut source, &filter, &stat).await;
    }
    let mut signals = Signals::new()?;
    let info = source.info().clone();
    let mut aggregator = info.aggregator(top);
    let mut header = render::Header {
        host: info.host.clone(),
        kernel: info.kernel.clone(),
        backends: info
            .backends
            .iter()
            .map(|r| (r.family.to_string(), r.running.map(|b| b.to_string()).unwrap_or_else(|| "OFF".into())))
            .collect(),
        ..render::Header::default()
    };

    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout())).context("terminal")?;
    terminal.clear()?;
    // Keys come from a blocking reader thread, started only now: started earlier it would
    // swallow the terminal's answer to ratatui's cursor-position query. It ends when the
    // channel closes.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Key>(64);
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            let key = match ev {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
                    KeyCode::Char(c) => Key::Char(c),
                    KeyCode::Enter => Key::Enter,
                    KeyCode::Esc => Key::Esc,
                    KeyCode::Backspace => Key::Backspace,
                    _ => continue,
                },
                _ => continue,
            };
            if keys_tx.blocking_send(key).is_err() {
                break;
            }
        }
    });

    let mut ui = UiState::default();
    let mut filter = filter;
    let mut batch = Vec::new();
    let mut frame_tick = tokio::time::interval(FRAME);
    let mut usage = Usage::now();
    let mut events_since = 0u64;
    let mut ended = false;
    let mut snapshot = aggregator.snapshot(source.now_ns());
    loop {
        let mut redraw = false;
        tokio::select! {
            () = signals.recv() => break,
            Some(key) = keys.recv() => {
                match ui.on_key(key) {
                    Action::Quit => break,
                    Action::SetFilter(new) => {
                        // Counts restart from the sockets that exist now, under the new filter.
                        filter = new;
                        aggregator = Aggregator::new(info.settings(top));
                        aggregator.seed(source.now_ns(), &source.sockets_now()?);
                    }
                    Action::None => {}
                }
                redraw = true;
            }
            _ = frame_tick.tick() => {
                let (cpu, bpf, events_per_s) = usage.update(source.live_probes(), events_since);
                events_since = 0;
                header.cpu_percent = cpu;
                header.bpf_us_per_s = bpf;
                header.events_per_s = events_per_s;
                if let Source::Replay(r) = &source {
                    header.replay = Some(replay_status(r, ended));
                }
                if !ui.paused {
                    snapshot = aggregator.snapshot(source.now_ns());
                }
                redraw = true;
            }
            flow = source.next_batch(&mut batch), if !ui.paused || source.is_live() => {
                ended = flow == Flow::Ended;
            }
        }
        events_since += batch.len() as u64;
        for event in batch.drain(..).filter(|e| filter.matches(e)) {
            aggregator.apply(&event);
        }
        if redraw {
            terminal.draw(|f| render::draw(f, &snapshot, &header, &ui))?;
        }
    }
    drop(guard);
    eprintln!("twtrace: top ended; {} events, {} lost in the kernel", snapshot.events, snapshot.lost);
    if let Source::Replay(r) = &source {
        eprintln!("twtrace: {}", r.summary());
    }
    Ok(())
}

/// The header's replay position: recorded wall time, speed, and whether the end was reached.
fn replay_status(replay: &Replay, ended: bool) -> String {
    let info = replay.info();
    let at = crate::output::rfc3339(info.clock.to_unix_ns(replay.now_ns()));
    let speed = replay.speed().map(|s| format!("x{s}")).unwrap_or_else(|| "full speed".into());
    format!("REPLAY {} {speed}{}", &at[..19], if ended { " (end of recording)" } else { "" })
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
        Self { at: std::time::Instant::now(), cpu_ticks: own_cpu_ticks(), bpf_ns: None }
    }

    fn update(&mut self, probes: Option<&LiveProbes>, events: u64) -> (Option<f64>, Option<f64>, f64) {
        let elapsed = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = std::time::Instant::now();
        let ticks = own_cpu_ticks();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu = match (self.cpu_ticks, ticks) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / hz / elapsed * 100.0),
            _ => None,
        };
        self.cpu_ticks = ticks;
        let bpf_now = probes.and_then(LiveProbes::bpf_run_time_ns);
        let bpf = match (self.bpf_ns, bpf_now) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e3 / elapsed),
            _ => None,
        };
        self.bpf_ns = bpf_now;
        (cpu, bpf, events as f64 / elapsed)
    }
}

/// utime + stime of this process, in clock ticks (/proc/self/stat fields 14 and 15).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
