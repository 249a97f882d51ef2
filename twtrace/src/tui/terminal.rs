//! The terminal while `top` draws: raw mode and the alternate screen, restored whatever ends
//! the view, and keys read on a thread of their own.

use anyhow::Context as _;
use ratatui::crossterm::{
    event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};

use super::state::Key;

/// Restores the terminal when dropped, whatever ended the view.
pub struct TerminalGuard;

impl TerminalGuard {
    pub fn enter() -> anyhow::Result<Self> {
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

/// Keys from a blocking reader thread. It ends when the receiver is dropped (at the next key)
/// or the terminal goes away.
pub fn spawn_key_reader() -> tokio::sync::mpsc::Receiver<Key> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Key>(64);
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
            if tx.blocking_send(key).is_err() {
                break;
            }
        }
    });
    rx
}
