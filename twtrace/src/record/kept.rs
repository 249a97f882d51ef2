//! Kept windows: the segments around an incident, saved from retention with their report.
//!
//! ```text
//! DIR/kept/<start of the segment that fired, UTC>-<its number>-<kind>/
//!     twtrace-...-000041.twr   the segment before (hard links: no copy while DIR has them)
//!     twtrace-...-000042.twr   the segment whose findings fired
//!     twtrace-...-000043.twr   the one after (and more while the findings go on)
//!     report.txt, report.html  the report of the window, read as one stream
//! ```
//!
//! Every closed segment is analysed on a worker thread (one at a time: at most one core, and
//! never on the thread that drains the kernel's ring buffer) by an [`Analyst`], which for
//! twtrace is `findings::of` on the segment's report: a window is kept exactly when `report`
//! of that segment would show an incident finding. The record module only plans and links;
//! it knows nothing of findings (they live above it).
//!
//! Invariants:
//! - A window holds the segment before the one that fired (if retention left it), that one,
//!   and the segments after it while each of them fires too, up to [`MAX_WINDOW_SEGMENTS`];
//!   its report is written once the last of them has been analysed.
//! - At most `keep_windows` windows stay; the oldest (by name, which starts with the time) go.
//!   So kept windows take at most `keep_windows × MAX_WINDOW_SEGMENTS` segments besides the
//!   directory's own bound, less while their segments are still in DIR (shared blocks).
//! - While a segment is being analysed, it and the one before are not deleted by retention
//!   (normally for well under a segment's time), so the window can still take them. Only the
//!   newest such pair is spared: if analyses fall behind (segments shorter than the time to
//!   read one), an older segment may go before its turn, and is then not analysed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use super::segment_files::{OnDisk, PREFIX, SegmentName, list};

/// The subdirectory of DIR holding kept windows.
pub const KEPT_DIR: &str = "kept";
/// Default of `--keep-windows`.
pub const DEFAULT_KEEP_WINDOWS: usize = 4;
/// Longest window, in segments: an incident that goes on for hours keeps its start and its
/// report, not every segment of it.
pub const MAX_WINDOW_SEGMENTS: usize = 6;

/// What decides that a segment holds an incident, and writes a window's report.
pub trait Analyst: Send + Sync {
    /// The kinds of finding in `segment` that make it worth keeping (empty: none), as short
    /// names fit for a directory name.
    fn triggers(&self, segment: &Path) -> Vec<String>;
    /// Writes the report of the window directory `window` into it.
    fn write_report(&self, window: &Path);
}

enum Job {
    Analyse { seq: u64, path: PathBuf },
    Report { window: PathBuf },
}

/// A window still taking segments.
#[derive(Debug)]
struct Open {
    path: PathBuf,
    /// The segment whose analysis decides whether the window goes on.
    last: u64,
    segments: usize,
}

/// Keeps windows for the flight recorder: told of every closed segment, polled every batch.
pub struct Keeper {
    dir: PathBuf,
    windows: usize,
    analyst: Arc<dyn Analyst>,
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<(u64, Vec<String>)>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Segments sent for analysis, not answered yet.
    pending: BTreeSet<u64>,
    open: Option<Open>,
    /// Windows made in this run.
    pub made: u64,
}

impl Keeper {
    pub fn new(dir: &Path, windows: usize, analyst: Arc<dyn Analyst>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, results) = mpsc::channel();
        let worker_analyst = Arc::clone(&analyst);
        let worker = std::thread::Builder::new().name("twtrace-keeper".into()).spawn(move || {
            for job in rx {
                match job {
                    Job::Analyse { seq, path } => {
                        let _ = tx.send((seq, worker_analyst.triggers(&path)));
                    }
                    Job::Report { window } => worker_analyst.write_report(&window),
                }
            }
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            windows,
            analyst,
            jobs: Some(jobs),
            results,
            worker: Some(worker),
            pending: BTreeSet::new(),
            open: None,
            made: 0,
        })
    }

    /// Retention must not delete segments numbered from this on: the newest segment under
    /// analysis and the one before (see the module). Only those two, so the directory's bound
    /// moves by two segments at most even when analyses fall behind.
    pub fn protected_from(&self) -> Option<u64> {
        self.pending.last().map(|s| s.saturating_sub(1))
    }

    /// Segment `seq` at `path` was closed (finished normally): linked into a window waiting
    /// for it, and sent for analysis.
    pub fn closed(&mut self, seq: u64, path: &Path) {
        if let Some(open) = &self.open {
            if seq == open.last {
                link(path, &open.path);
            }
        }
        self.pending.insert(seq);
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Analyse { seq, path: path.to_owned() });
        }
    }

    /// Acts on the analyses finished so far.
    pub fn poll(&mut self) {
        while let Ok((seq, kinds)) = self.results.try_recv() {
            self.analysed(seq, &kinds, false);
        }
    }

    /// At the end of the run: waits for every analysis and report, writing the last ones here.
    pub fn finish(mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        while let Ok((seq, kinds)) = self.results.try_recv() {
            self.analysed(seq, &kinds, true);
        }
        // Waiting for a segment that will never come: the window ends here.
        if let Some(open) = self.open.take() {
            self.analyst.write_report(&open.path);
        }
    }

    fn analysed(&mut self, seq: u64, kinds: &[String], at_end: bool) {
        self.pending.remove(&seq);
        let step = plan(self.open.as_ref().map(|o| (o.last, o.segments)), seq, !kinds.is_empty());
        match step {
            Step::Nothing => {}
            Step::Extend => {
                let open = self.open.as_mut().expect("extending an open window");
                open.last = seq + 1;
                open.segments += 1;
                self.link_existing(seq + 1);
            }
            Step::Close => {
                let open = self.open.take().expect("closing an open window");
                if at_end {
                    self.analyst.write_report(&open.path);
                } else if let Some(jobs) = &self.jobs {
                    let _ = jobs.send(Job::Report { window: open.path });
                }
            }
            Step::Open => {
                let Some(path) = self.create(seq, &kinds[0]) else { return };
                self.open = Some(Open { path, last: seq + 1, segments: 3 });
                for s in seq.saturating_sub(1)..=seq + 1 {
                    self.link_existing(s);
                }
                self.made += 1;
                self.prune();
            }
        }
    }

    /// Links segment `seq` into the open window if it is in DIR and closed (the open segment
    /// is linked when it closes, whole).
    fn link_existing(&self, seq: u64) {
        let Some(open) = &self.open else { return };
        let Ok(segments) = list(&self.dir) else { return };
        let closed = |s: &&OnDisk| s.name.seq == seq && (self.pending.contains(&seq) || seq < open.last);
        if let Some(s) = segments.iter().find(closed) {
            link(&s.path, &open.path);
        }
    }

    fn create(&self, seq: u64, kind: &str) -> Option<PathBuf> {
        let start = list(&self.dir).ok()?.into_iter().find(|s| s.name.seq == seq).map_or(0, |s| s.name.start_unix_s);
        let path = self.dir.join(KEPT_DIR).join(window_name(SegmentName { seq, start_unix_s: start }, kind));
        match std::fs::create_dir_all(&path) {
            Ok(()) => Some(path),
            Err(e) => {
                log::warn!("cannot keep the window around segment {seq}: {}: {e}", path.display());
                None
            }
        }
    }

    /// Deletes the oldest windows beyond the bound (never the open one: it is the newest).
    fn prune(&self) {
        let kept = self.dir.join(KEPT_DIR);
        let Ok(entries) = std::fs::read_dir(&kept) else { return };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        for name in expired_windows(&names, self.windows) {
            if let Err(e) = std::fs::remove_dir_all(kept.join(name)) {
                log::warn!("cannot delete kept window {name}: {e}");
            }
        }
    }
}

/// What one analysis means for the windows.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    /// A new window around the segment.
    Open,
    /// The open window takes the next segment too.
    Extend,
    /// The open window is complete: write its report.
    Close,
}

/// `open`: the open window's deciding segment and length. `seq` was analysed, `fired` if it
/// holds an incident.
fn plan(open: Option<(u64, usize)>, seq: u64, fired: bool) -> Step {
    match open {
        Some((last, segments)) if last == seq => {
            if fired && segments < MAX_WINDOW_SEGMENTS {
                Step::Extend
            } else {
                Step::Close
            }
        }
        // Segments inside the open window were analysed before it opened, or fired at its
        // start: nothing more to do for them.
        Some(_) => Step::Nothing,
        None if fired => Step::Open,
        None => Step::Nothing,
    }
}

/// `<start, UTC>-<number>-<kind>`: sorts by time, unique per segment.
fn window_name(segment: SegmentName, kind: &str) -> String {
    let file = segment.file_name();
    let stamp = file.strip_prefix(PREFIX).and_then(|f| f.split('-').next()).unwrap_or("");
    let kind: String = kind.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("{stamp}-{:06}-{kind}", segment.seq)
}

/// Of `names` (sorted, oldest first), those beyond the newest `keep`.
fn expired_windows(names: &[String], keep: usize) -> &[String] {
    &names[..names.len().saturating_sub(keep)]
}

/// Hard-links `segment` into `window` (a copy if the file system cannot link). A segment
/// already there is left alone.
fn link(segment: &Path, window: &Path) {
    let Some(name) = segment.file_name() else { return };
    let target = window.join(name);
    if target.exists() {
        return;
    }
    if let Err(e) = std::fs::hard_link(segment, &target).or_else(|_| std::fs::copy(segment, &target).map(|_| ())) {
        log::warn!("cannot keep {} in {}: {e}", segment.display(), window.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_opens_on_a_finding_grows_while_they_go_on_and_closes_after() {
        assert_eq!(plan(None, 5, false), Step::Nothing);
        assert_eq!(plan(None, 5, true), Step::Open);
        // The window opened at 5 waits for 6.
        assert_eq!(plan(Some((6, 3)), 6, true), Step::Extend);
        assert_eq!(plan(Some((6, 3)), 6, false), Step::Close);
        assert_eq!(plan(Some((9, MAX_WINDOW_SEGMENTS)), 9, true), Step::Close, "bounded");
        assert_eq!(plan(Some((6, 3)), 5, true), Step::Nothing);
    }

    #[test]
    fn windows_are_named_by_time_and_number_and_the_oldest_go() {
        let name = window_name(SegmentName { seq: 42, start_unix_s: 1_795_385_599 }, "port space/x");
        assert_eq!(name, "20261122T221319Z-000042-port_space_x");
        let names: Vec<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(expired_windows(&names, 2), ["a"]);
        assert!(expired_windows(&names, 5).is_empty());
    }
}
