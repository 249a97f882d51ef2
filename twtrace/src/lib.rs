//! twtrace's library: the event stream and everything that produces or consumes it. The
//! `twtrace` binary is its command line; benchmarks and the recording fuzzer use it directly.

pub mod aggregate;
pub mod churn;
pub mod event;
pub mod filter;
pub mod kernel;
pub mod output;
pub mod probes;
pub mod record;
pub mod report;
pub mod source;
pub mod stat;
pub mod tui;
