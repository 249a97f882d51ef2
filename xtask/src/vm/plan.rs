//! Which cells of the VM matrix a run takes, and how a guest spreads them over its lanes.
//!
//! Under software emulation a guest is one host core, and CI has two: the whole matrix (every
//! test binary on every backend of four kernels) took 2,710 s of CI's 3,682 (2026-12-06). Most
//! of it ran the same userspace code again and again: doctor, the flight recorder, top and
//! the reports do the same with a kprobe's events as with an fentry's. So by default:
//!
//! - the binaries of the probe families and the kernel-behaviour scenarios ([`EVERY_BACKEND`])
//!   run on every backend of every kernel: that is where a backend meets a kernel;
//! - every other binary runs once per kernel, under [`once_backend`]: fentry, what each of
//!   these kernels picks by itself, and kprobe on one kernel. The host runs them (and all the
//!   rest) under the tracepoint backend, the only one its kernel allows. So each of those
//!   binaries meets each backend in every CI run.
//!
//! - [`WITH_TOOLS`] (doctor's three binaries and serve) also run on fentry and kprobe both, where the guest has
//!   the lab's tools (expect.rs, `tools`: nft, the netfilter and veth modules, Prometheus):
//!   their firewall, conntrack, listener and exporter scenarios run nowhere else on those
//!   backends.
//!
//! `cargo xtask test --full-matrix` runs every cell, as before a release or after a change to
//! the kernel side shared by all binaries.

use super::expect::{self, BACKENDS};
use crate::runner::ALONE;

/// Test binaries whose subject is what each backend's kernel programs see.
pub const EVERY_BACKEND: &[&str] = &["timewait", "portsearch", "state", "drops", "scenario"];

/// Binaries that run on fentry and kprobe where the guest has the lab's tools.
pub const WITH_TOOLS: &[&str] = &["doctor", "doctor_limits", "doctor_settings", "serve"];

/// The backend under which `kernel` runs the binaries outside [`EVERY_BACKEND`].
pub fn once_backend(kernel: &str) -> &'static str {
    // 6.12: its guest was the fastest of CI's (1,101 s against 1,272-1,449), and kprobe runs
    // are the slowest under emulation (each event is a breakpoint trap).
    if kernel == "6.12" { "kprobe" } else { "fentry" }
}

/// One cell: a test binary under one forced backend.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cell {
    pub binary: String,
    pub backend: &'static str,
}

/// The cells `kernel` runs, in table order.
pub fn cells(kernel: &str, binaries: &[String], full: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    for binary in binaries {
        for backend in BACKENDS {
            let tooled = WITH_TOOLS.contains(&binary.as_str())
                && ["fentry", "kprobe"].contains(backend)
                && expect::row(kernel).is_some_and(|r| r.tools);
            if full || tooled || EVERY_BACKEND.contains(&binary.as_str()) || *backend == once_backend(kernel) {
                cells.push(Cell { binary: binary.clone(), backend });
            }
        }
    }
    cells
}

/// A cell's wall time in a guest, seconds: the slowest kernel's (2026-12-07, this plan in four
/// lanes, one guest per kernel), for the lanes' balance only. An unknown binary counts as a minute.
fn expected_secs(cell: &Cell) -> u64 {
    const MEASURED: &[(&str, u64)] = &[
        // doctor.rs took 426 s before it was split by subject (2026-12-07); each part
        // (doctor_settings, doctor_limits, doctor) gets its share of the three's host times
        // then (65, 15 and 7 s: the settings wait out 60 s TIME_WAIT lifetimes) until the
        // matrix measures them.
        ("doctor_settings", 318),
        ("timewait", 310),
        ("flight", 226),
        ("scenario", 187),
        ("filters", 149),
        // Measured in the 6.18 guest with the lab's tools (2026-12-07): elsewhere every test
        // of it is a gap and it takes a second.
        ("serve", 143),
        ("containers", 119),
        ("portsearch", 92),
        ("record", 77),
        ("state", 76),
        ("doctor_limits", 73),
        ("namespaces", 72),
        ("drops", 61),
        ("doctor", 35),
        ("churn", 31),
        ("stat", 24),
        ("loss", 7),
    ];
    MEASURED.iter().find(|(b, _)| *b == cell.binary).map_or(60, |(_, s)| *s)
}

/// Spreads `cells` over `lanes` lanes that a guest runs side by side, each one cell after
/// another: the longest first, each to the lane with the least so far (LPT), so that the lanes
/// end close together and the guest's wall time is near its total work over the lanes.
pub fn lanes(cells: &[Cell], lanes: usize) -> Vec<Vec<Cell>> {
    let mut sorted = cells.to_vec();
    sorted.sort_by_key(|c| (std::cmp::Reverse(expected_secs(c)), c.clone()));
    let mut out: Vec<(u64, Vec<Cell>)> = vec![(0, Vec::new()); lanes.max(1)];
    for cell in sorted {
        let lane = out.iter_mut().min_by_key(|(load, _)| *load).expect("at least one lane");
        lane.0 += expected_secs(&cell);
        lane.1.push(cell);
    }
    out.into_iter().map(|(_, cells)| cells).filter(|l| !l.is_empty()).collect()
}

/// One guest's share of a kernel's cells: the `runner::ALONE` cells it runs first, its lanes,
/// whether it also runs the kernel's BTF unit tests (the first share does), and its expected
/// wall time (its alone cells and its longest lane).
#[derive(Clone, Debug)]
pub struct Shard {
    pub alone: Vec<Cell>,
    pub lanes: Vec<Vec<Cell>>,
    pub unit: bool,
    pub expected_secs: u64,
}

impl Shard {
    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.alone.iter().chain(self.lanes.iter().flatten())
    }
}

/// Splits a kernel's cells into `shards` guests of `lanes` lanes each (LPT at both levels).
/// With three kernels and two host cores, whole kernels leave one core idle while the last
/// guest runs alone (6.1 and 5.10, then 6.12 by itself); halves of kernels pack the two
/// cores to within one half's length.
pub fn shards(cells: &[Cell], shards: usize, lanes: usize) -> Vec<Shard> {
    let (alone, shared): (Vec<Cell>, Vec<Cell>) =
        cells.iter().cloned().partition(|c| ALONE.contains(&c.binary.as_str()));
    let mut out: Vec<Shard> = self::lanes(&shared, shards)
        .into_iter()
        .enumerate()
        .map(|(i, share)| {
            let lanes = self::lanes(&share, lanes);
            let expected_secs = lanes.iter().map(|l| l.iter().map(expected_secs).sum()).max().unwrap_or(0);
            Shard { alone: Vec::new(), lanes, unit: i == 0, expected_secs }
        })
        .collect();
    // Each alone cell, longest first, to the share then expected to end first (6.18's two
    // serve cells go to its two guests, not both to one).
    let mut alone = alone;
    alone.sort_by_key(|c| std::cmp::Reverse(expected_secs(c)));
    for cell in alone {
        if let Some(lightest) = out.iter_mut().min_by_key(|s| s.expected_secs) {
            lightest.expected_secs += expected_secs(&cell);
            lightest.alone.push(cell);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binaries() -> Vec<String> {
        ["doctor", "drops", "flight", "timewait", "top"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn families_run_on_every_backend_the_rest_once() {
        let cells = cells("6.1", &binaries(), false);
        let of = |b: &str| cells.iter().filter(|c| c.binary == b).map(|c| c.backend).collect::<Vec<_>>();
        assert_eq!(of("drops"), BACKENDS);
        assert_eq!(of("timewait"), BACKENDS);
        assert_eq!(of("doctor"), ["fentry"]);
        assert_eq!(of("top"), ["fentry"]);
        let on_612 = super::cells("6.12", &binaries(), false);
        assert!(on_612.iter().filter(|c| c.binary == "flight").all(|c| c.backend == "kprobe"));
        assert_eq!(super::cells("6.1", &binaries(), true).len(), binaries().len() * BACKENDS.len());
        // Where the guest has the tools, doctor runs on fentry and kprobe.
        let on_618 = super::cells("6.18", &binaries(), false);
        let doctor: Vec<_> = on_618.iter().filter(|c| c.binary == "doctor").map(|c| c.backend).collect();
        assert_eq!(doctor, ["fentry", "kprobe"]);
    }

    #[test]
    fn lanes_hold_every_cell_once_and_balance() {
        let cells = cells("5.10", &binaries(), true);
        let lanes = lanes(&cells, 4);
        assert_eq!(lanes.len(), 4);
        let mut all: Vec<Cell> = lanes.iter().flatten().cloned().collect();
        all.sort();
        let mut want = cells.clone();
        want.sort();
        assert_eq!(all, want);
        let loads: Vec<u64> = lanes.iter().map(|l| l.iter().map(expected_secs).sum()).collect();
        let (max, min) = (*loads.iter().max().unwrap(), *loads.iter().min().unwrap());
        // LPT: no lane ends later than the lightest by more than the longest cell.
        assert!(max - min <= 426, "{loads:?}");
        assert_eq!(super::lanes(&cells[..1], 4).len(), 1, "no empty lanes");
    }

    #[test]
    fn shards_split_a_kernel_and_one_runs_the_unit_tests() {
        let cells = cells("6.1", &binaries(), false);
        let shards = shards(&cells, 2, 4);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards.iter().filter(|s| s.unit).count(), 1);
        let count: usize = shards.iter().map(|s| s.cells().count()).sum();
        assert_eq!(count, cells.len());
        // top runs alone, in one guest, never in a lane.
        let top: Vec<&Shard> = shards.iter().filter(|s| s.alone.iter().any(|c| c.binary == "top")).collect();
        assert_eq!(top.len(), 1);
        assert!(shards.iter().all(|s| s.lanes.iter().flatten().all(|c| c.binary != "top")));
        assert!(shards.iter().all(|s| s.expected_secs > 0));
    }
}
