//! twtrace's library: the event stream and everything that produces or consumes it. The
//! `twtrace` binary is its command line; benchmarks and the recording fuzzer use it directly.
//!
//! The modules, in the order the data flows:
//! - `probes` (the kernel side: plans, attach, decode) and `record` (the file format) produce
//!   [`event::Event`]s; `source` makes either one stream, described by `source_info`.
//! - `drive` feeds a source, through `filter`, into a sink.
//! - Sinks: `cmd::trace` (printer), `cmd::record` (recorder), and `cmd::stat`, `cmd::top`,
//!   `cmd::report` over the `aggregate` model; `report` and `findings` turn it into a
//!   postmortem, `tui` draws it.
//! - Underneath: `event`, `time`, `kernel` (facts about the running kernel), `net` (socket
//!   plumbing of `cmd::churn`, the traffic generator, and of `scenario`), `logging` (what
//!   twtrace says on stderr).

pub mod aggregate;
pub mod cmd;
pub mod drive;
pub mod event;
pub mod export;
pub mod filter;
pub mod findings;
pub mod kernel;
pub mod logging;
pub mod memory;
#[cfg(test)]
mod module_graph;
pub mod net;
pub mod probes;
pub mod record;
pub mod report;
pub mod scenario;
pub mod source;
pub mod source_info;
pub mod time;
pub mod tui;
