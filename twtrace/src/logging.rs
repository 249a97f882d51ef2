//! What twtrace says on stderr: the `log` records (warnings, `-v` debugging) and the status
//! lines of its commands (`twtrace: tracing; ...`, `twtrace: serve ended; ...`).
//!
//! Text by default: a status line reads `twtrace: ...`, as it always has; the long-running
//! `serve` puts an RFC 3339 timestamp before each (`2026-12-08T10:11:12.123456Z twtrace: ...`),
//! as its log is read hours later. `--log-format json` makes every line, records and status
//! lines alike, one JSON object: `{"ts": RFC 3339, "level", "target", "message"}`.

use std::{
    io::Write as _,
    sync::atomic::{AtomicU8, Ordering},
};

pub use log::Level;

/// How stderr lines look (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, with an RFC 3339 timestamp.
    Json,
}

const TEXT: u8 = 0;
const TEXT_STAMPED: u8 = 1;
const JSON: u8 = 2;

/// Set once by [`init`], before any thread that logs exists.
static STYLE: AtomicU8 = AtomicU8::new(TEXT);

/// Sets up the logger: `level` for `log` records (`RUST_LOG` overrides it), in `format`;
/// `stamped`: text status lines carry a timestamp too (the long-running commands).
pub fn init(level: log::LevelFilter, format: LogFormat, stamped: bool) {
    let style = match (format, stamped) {
        (LogFormat::Json, _) => JSON,
        (LogFormat::Text, true) => TEXT_STAMPED,
        (LogFormat::Text, false) => TEXT,
    };
    STYLE.store(style, Ordering::Relaxed);
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).parse_default_env();
    if style == JSON {
        builder.format(|buf, record| {
            let line = json_line(&now(), record.level().as_str(), record.target(), &record.args().to_string());
            writeln!(buf, "{line}")
        });
    }
    // A second init (tests of the library) keeps the first logger.
    let _ = builder.try_init();
}

/// A status line of a command, whatever the log level: `twtrace: {message}` in text (after a
/// timestamp for the long-running commands), a JSON object of level `info` with
/// `--log-format json`. `level` is `error` for the line that says why twtrace failed.
pub fn status(level: log::Level, message: &str) {
    // In text the level is said only for errors: `twtrace: error: ...`.
    let said = if level == log::Level::Error { format!("error: {message}") } else { message.to_owned() };
    let line = match STYLE.load(Ordering::Relaxed) {
        JSON => json_line(&now(), level.as_str(), "twtrace", message),
        TEXT_STAMPED => format!("{} twtrace: {said}", now()),
        _ => format!("twtrace: {said}"),
    };
    // One write of one line, as eprintln! does; a closed stderr is no reason to fail.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// [`status`] at level info, with `format!` arguments: `note!("serving on {addr}")`.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::logging::status($crate::logging::Level::Info, &format!($($arg)*))
    };
}

/// The current time, RFC 3339 in UTC with microseconds.
fn now() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    crate::time::WallTime::from_unix_ns(since.as_nanos() as u64).rfc3339()
}

fn json_line(ts: &str, level: &str, target: &str, message: &str) -> String {
    serde_json::json!({"ts": ts, "level": level.to_ascii_lowercase(), "target": target, "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_an_rfc3339_time_and_the_level() {
        let line = json_line("2026-12-08T10:11:12.123456Z", "WARN", "twtrace::cmd::serve", "say \"hi\"\n");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-12-08T10:11:12.123456Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "say \"hi\"\n");
        assert!(!line.contains('\n'), "one line: {line}");
        let ts = now();
        assert!(ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
}
