//! What every sink may know about where its events come from besides the events: the host,
//! the kernel, the clock mapping, the namespace's settings, the backends, the filters and the
//! sockets at start. A recording's header is exactly this (its sockets go in chunks of their
//! own), so a replay describes itself as the live run did.

use serde::{Deserialize, Serialize};

use crate::{
    event::{ExistingSocket, NamespaceDescription, Sysctls},
    probes::FamilyReport,
    time::WallClock,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceInfo {
    pub host: String,
    pub kernel: String,
    /// Kernel timestamps are CLOCK_MONOTONIC: this maps them to wall-clock time.
    pub clock: WallClock,
    /// When tracing started (monotonic ns).
    pub started_ns: u64,
    /// The settings of twtrace's own namespace, or of the one `--netns` named: the assumption
    /// for namespaces not described (recordings made before namespaces were).
    pub sysctls: Sysctls,
    /// Every namespace present at the start, described (its settings read inside it).
    /// Namespaces that appear later are described in the stream ([`crate::event::Event::Namespace`]).
    #[serde(default)]
    pub namespaces: Vec<NamespaceDescription>,
    /// Which backend each probe family runs on, and why others could not.
    pub backends: Vec<FamilyReport>,
    /// The in-kernel filters: namespace inode and port.
    pub netns: Option<u32>,
    pub port: Option<u16>,
    /// The userspace filter events passed (`--pid`, `--comm`, ...), in command-line terms.
    #[serde(default)]
    pub filter: String,
    /// TCP sockets of every described namespace when tracing started (empty when not read).
    #[serde(skip)]
    pub sockets: Vec<ExistingSocket>,
    /// Set in the segments of a flight-recorder directory: which run and which place in it.
    /// Absent in single recordings; older readers ignore it (the format stays version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentMark>,
}

#[cfg(test)]
impl SourceInfo {
    /// A live source on host `web-7` that started at 100 s of monotonic time, nothing
    /// described, no backend: for tests that build a model by hand.
    pub fn for_tests(kernel: &str) -> Self {
        const S: u64 = 1_000_000_000;
        Self {
            host: "web-7".into(),
            kernel: kernel.into(),
            clock: WallClock { realtime_ns: 1_795_000_000 * S, monotonic_ns: 100 * S },
            started_ns: 100 * S,
            sysctls: Sysctls::default(),
            namespaces: Vec::new(),
            backends: Vec::new(),
            netns: None,
            port: None,
            filter: String::new(),
            sockets: Vec::new(),
            segment: None,
        }
    }
}

/// Where a segment stands among the others of its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMark {
    /// Identifies one run of twtrace (its start, in Unix ns, and its pid): segments of one
    /// run share their clock and their TIME_WAIT socket numbers.
    pub run: u64,
    /// The segment's number in the directory, counted on across runs: a number missing
    /// between two segments is a segment deleted or lost.
    pub seq: u64,
    /// The segment's place in its run, from 0.
    pub part: u32,
    /// Events of this run that reached the recorder after the segment before this one and
    /// could not be written (a write error, a full disk above all, stopped recording). A reader
    /// names the outage from this even when it was too short to show as silence between the
    /// segments' times. Absent (0) in segments written before twtrace counted it.
    #[serde(default)]
    pub not_recorded: u64,
}
