//! The flight recorder: the event stream as a directory of segments, each a complete
//! recording in the ordinary format (so `report FILE` reads any one of them alone), rotated by
//! time and size and deleted oldest first by age and total size.
//!
//! ```text
//! DIR/                      mode 0700 when twtrace creates it
//!   twtrace-20261127T164943Z-000041.twr   mode 0600; start time (UTC, to the second), then
//!   twtrace-20261127T165943Z-000042.twr   the segment's number in the directory
//! ```
//!
//! Invariants:
//! - Numbers only grow, across runs too (a new run continues after the highest on disk), and a
//!   segment that could not be created gives its number back, so a number missing between two
//!   segments is a segment deleted or lost, never a reordering or a failed attempt.
//! - Every segment's header describes the run as at the segment's start: the namespaces live
//!   then (from the stream's namespace records), the run's clock mapping, and a
//!   [`SegmentMark`]. Only a run's first segment holds the socket picture of the start: later
//!   ones would need the sockets as they are at rotation, which the stream does not carry.
//! - Retention runs before a segment is opened and deletes closed segments only, so the
//!   directory holds at most `keep_bytes` of closed segments plus the one being written: it
//!   exceeds the bound by one segment at most, and by the two a kept-window analysis still
//!   needs while it runs ([`super::kept`]; `DIR/kept/` has its own bound).
//! - Marks (`twtrace mark`, over [`super::control`]) enter the stream at the batch they
//!   arrive in, as events of their own, on the stream's clock; each is acknowledged only once
//!   written and its chunk sealed, and refused while recording is stopped.
//! - A write error (a full disk above all) never ends the run: the segment is cut back to its
//!   last whole chunk, one log line says why, the error is counted, and a new segment is tried
//!   every [`RETRY`] until one opens. That segment's header counts the events not recorded
//!   meanwhile, so readers name the outage however short it was.

use std::{
    collections::BTreeMap,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    RecordError, Recorder, Trailer,
    control::Control,
    kept::{Analyst, Keeper},
    segment_files::{OnDisk, SegmentName, list},
};
use crate::{
    event::{Event, MarkEvent, NamespaceDescription},
    probes::DecodeStats,
    source_info::{SegmentMark, SourceInfo},
};

/// Defaults of `--segment`, `--segment-size`, `--keep`, `--keep-size`: a day of history in at
/// most 2 GiB, in pieces small enough to copy off a host during an incident.
pub const DEFAULT_SEGMENT_TIME: Duration = Duration::from_secs(600);
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
pub const DEFAULT_KEEP_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_KEEP_BYTES: u64 = 2 << 30;
/// After a write error, how often opening a new segment is tried (at most; a shorter
/// `--segment` retries at each rotation).
pub const RETRY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A segment is closed after this long ...
    pub segment_time: Duration,
    /// ... or once it holds this many bytes (it may pass them by the last chunk, a second's worth).
    pub segment_bytes: u64,
    /// Closed segments whose last write is older than this are deleted.
    pub keep_age: Option<Duration>,
    /// Closed segments are deleted, oldest first, until they total at most this.
    pub keep_bytes: Option<u64>,
    /// Windows around incidents kept past retention, at most (0: none; see [`super::kept`]).
    pub keep_windows: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            segment_time: DEFAULT_SEGMENT_TIME,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            keep_age: Some(DEFAULT_KEEP_AGE),
            keep_bytes: Some(DEFAULT_KEEP_BYTES),
            keep_windows: super::kept::DEFAULT_KEEP_WINDOWS,
        }
    }
}

impl Policy {
    pub fn check(&self) -> Result<(), String> {
        if self.segment_time < Duration::from_secs(1) {
            return Err("--segment must be at least 1s (chunks are sealed every second)".into());
        }
        if self.segment_bytes < 4096 {
            return Err("--segment-size must be at least 4KiB".into());
        }
        if let Some(keep) = self.keep_bytes {
            if keep < self.segment_bytes {
                return Err(format!(
                    "--keep-size ({keep} bytes) must be at least --segment-size ({})",
                    self.segment_bytes
                ));
            }
        }
        Ok(())
    }
}

/// Which of the closed `segments` (by number) retention deletes: those last written more than
/// `keep_age` before `now_unix_ns`, then the oldest until the rest total at most `keep_bytes`.
pub fn expired(segments: &[OnDisk], now_unix_ns: u64, policy: &Policy) -> Vec<usize> {
    let mut delete = Vec::new();
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    for (i, s) in segments.iter().enumerate() {
        let too_old =
            policy.keep_age.is_some_and(|age| now_unix_ns.saturating_sub(s.modified_unix_ns) > age.as_nanos() as u64);
        let too_big = policy.keep_bytes.is_some_and(|keep| total > keep);
        if too_old || too_big {
            delete.push(i);
            total -= s.bytes;
        }
    }
    delete
}

/// What the recorder has done so far, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Writes, syncs or segment creations that failed.
    pub write_errors: u64,
    /// Bytes of segments in the directory at the last look (rotation), the open one included.
    pub bytes: u64,
    pub segments_opened: u64,
    pub segments_deleted: u64,
    /// Events written, and events that came while recording was stopped by an error.
    pub events: u64,
    pub events_not_recorded: u64,
    /// False while stopped by a write error.
    pub recording: bool,
}

impl RecorderStats {
    /// The end-of-run line.
    pub fn summary(&self, dir: &str, lost: u64) -> String {
        let mut out = format!(
            "recorded {} events ({lost} lost in the kernel) to {dir}: {} segments opened, {} deleted, {} bytes kept",
            self.events, self.segments_opened, self.segments_deleted, self.bytes
        );
        if self.write_errors > 0 {
            out.push_str(&format!(
                "; {} write errors, {} events not recorded while stopped",
                self.write_errors, self.events_not_recorded
            ));
        }
        out
    }
}

/// What the run has counted so far: each segment's end chunk carries it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTotals {
    pub lost: u64,
    pub decoder: DecodeStats,
}

/// How long chunks must reach the disk again before an outage is over. On a file system still
/// all but full one small chunk fits and the next does not: CI's 6.18 guests printed "resumed"
/// after the first header (stop 20), then after the first chunk (stop 21), each time followed
/// by a second "stopped" for the same outage.
const RESUME_CONFIRM_NS: u64 = 3_000_000_000;

struct Open {
    recorder: Recorder,
    path: PathBuf,
    seq: u64,
    opened_ns: u64,
    /// Opened during an outage: its header's size. A chunk past it on disk starts the
    /// [`RESUME_CONFIRM_NS`] that end the outage; a header that fits proves nothing.
    proving_from: Option<u64>,
}

/// Writes the stream into a directory of segments. Never fails after [`Self::start`]: write
/// errors stop the recording until space returns (see the module's invariants).
/// How long a mark waits for the drain to read past the moment it arrived: six drain intervals
/// (50 ms each), room for a drain thread kept waiting by a loaded machine.
const MARK_SETTLE_NS: u64 = 300_000_000;

pub struct FlightRecorder {
    dir: PathBuf,
    policy: Policy,
    /// The run's description; its namespaces and socket picture are replaced per segment.
    info: SourceInfo,
    /// Namespaces live now, as the stream described them: the next segment's header.
    namespaces: BTreeMap<u32, NamespaceDescription>,
    open: Option<Open>,
    next_seq: u64,
    run: u64,
    part: u32,
    /// While stopped by an error: the stream time of the next attempt.
    retry_ns: Option<u64>,
    /// When the current outage began (stream ns), for the line that says it ended.
    stopped_ns: Option<u64>,
    /// During an outage: since when chunks have reached the disk again without a failure.
    writing_since: Option<u64>,
    /// `stats.events_not_recorded` as the last segment opened declared it: the next segment's
    /// header declares what was not recorded since ([`SegmentMark::not_recorded`]).
    not_recorded_declared: u64,
    now_ns: u64,
    stats: RecorderStats,
    /// Where marks come from; `None` if another recorder listens on this directory.
    control: Option<Control>,
    /// Marks received and the stream time they arrived, waiting for the stream to catch up.
    waiting_marks: Vec<(u64, super::control::Request)>,
    /// Keeps windows around incidents (after [`Self::keep_windows`]).
    keeper: Option<Keeper>,
}

impl FlightRecorder {
    /// Creates `dir` if needed (mode 0700), applies retention to what is there and opens the
    /// first segment. Fails only if the directory cannot be made or listed; a full disk now
    /// is the same as later (logged, retried).
    pub fn start(dir: &Path, policy: Policy, info: &SourceInfo) -> Result<Self, RecordError> {
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            // The mode is masked by the umask: set it outright.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let existing = list(dir)?;
        // Without the socket the recording is still worth having: say so, and go on.
        let control = Control::bind(dir).unwrap_or_else(|e| {
            log::warn!("marks cannot reach this recorder ({}): {e}", dir.display());
            None
        });
        if control.is_none() {
            log::warn!("another twtrace listens for marks on {}: marks go to it", dir.display());
        }
        let next_seq = existing.last().map_or(0, |s| s.name.seq + 1);
        let run = info.clock.to_unix_ns(info.started_ns) ^ u64::from(std::process::id());
        let mut recorder = Self {
            dir: dir.to_owned(),
            policy,
            namespaces: info.namespaces.iter().map(|n| (n.netns, n.clone())).collect(),
            info: info.clone(),
            open: None,
            next_seq,
            run,
            part: 0,
            retry_ns: None,
            stopped_ns: None,
            writing_since: None,
            not_recorded_declared: 0,
            now_ns: info.started_ns,
            stats: RecorderStats::default(),
            control,
            waiting_marks: Vec::new(),
            keeper: None,
        };
        recorder.open_next(info.started_ns);
        Ok(recorder)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the segments around incidents, as `analyst` finds them, in `DIR/kept/` (up to
    /// the policy's `keep_windows`; none if 0).
    pub fn keep_windows(&mut self, analyst: std::sync::Arc<dyn Analyst>) -> Result<(), RecordError> {
        if self.policy.keep_windows > 0 {
            self.keeper = Some(Keeper::new(&self.dir, self.policy.keep_windows, analyst)?);
        }
        Ok(())
    }

    pub fn stats(&self) -> RecorderStats {
        let mut stats = self.stats;
        // An outage ends when a chunk reaches the disk again (see [`Open::proving_from`]).
        stats.recording = self.open.is_some() && self.stopped_ns.is_none();
        stats
    }

    /// One event of the stream, in order.
    pub fn event(&mut self, event: &Event) {
        if let Event::Namespace(e) = event {
            if e.namespace.live {
                self.namespaces.insert(e.namespace.netns, e.namespace.clone());
            } else {
                self.namespaces.remove(&e.namespace.netns);
            }
        }
        let Some(open) = &mut self.open else {
            self.stats.events_not_recorded += 1;
            return;
        };
        match open.recorder.write(event) {
            Ok(()) => self.stats.events += 1,
            Err(e) => {
                self.stats.events_not_recorded += 1;
                self.fail(&e);
            }
        }
    }

    /// After every batch, with the stream's present: seals chunks, rotates, retries.
    pub fn tick(&mut self, now_ns: u64, totals: RunTotals) {
        self.now_ns = now_ns;
        self.take_marks(now_ns);
        if let Some(keeper) = &mut self.keeper {
            keeper.poll();
        }
        if let Some(open) = &mut self.open {
            if let Err(e) = open.recorder.tick() {
                self.fail(&e);
                return;
            }
            let proven = open.proving_from.take_if(|header| open.recorder.bytes_written() > *header).is_some();
            let age = Duration::from_nanos(now_ns.saturating_sub(open.opened_ns));
            let full = age >= self.policy.segment_time || open.recorder.bytes_written() >= self.policy.segment_bytes;
            if proven {
                self.writing_since.get_or_insert(now_ns);
            }
            if self.stopped_ns.is_some()
                && self.writing_since.is_some_and(|since| now_ns.saturating_sub(since) >= RESUME_CONFIRM_NS)
            {
                self.resumed(now_ns);
            }
            if full {
                self.close(now_ns, totals);
                self.open_next(now_ns);
            }
        } else if self.retry_ns.is_some_and(|at| now_ns >= at) {
            self.open_next(now_ns);
        }
    }

    /// Writes the marks waiting on the control socket, stamped `now_ns` (after the batch just
    /// written), and answers each client.
    ///
    /// A mark waits [`MARK_SETTLE_NS`] first: the ring buffer is drained on a thread of its
    /// own, so events that happened just before the mark may not have reached this sink yet
    /// when it arrives; after the wait the drain has read past them, and the mark lands after
    /// them in the stream. The client waits for the answer, so nothing it does after the mark
    /// can come before it.
    fn take_marks(&mut self, now_ns: u64) {
        let Some(control) = &mut self.control else { return };
        self.waiting_marks.extend(control.poll().into_iter().map(|r| (now_ns, r)));
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_marks)
            .into_iter()
            .partition(|(arrived, _)| now_ns.saturating_sub(*arrived) >= MARK_SETTLE_NS);
        self.waiting_marks = waiting;
        for (_, request) in due {
            let outcome = self.mark(now_ns, &request.text, request.uid, request.pid);
            request.answer(outcome);
        }
    }

    /// One mark into the stream; `Ok(time)` once its chunk is sealed (on disk within the
    /// writer's next sync), `Err(why)` if it is not recorded.
    fn mark(&mut self, now_ns: u64, text: &str, uid: Option<u32>, pid: Option<u32>) -> Result<String, String> {
        let text = MarkEvent::sanitize(text).ok_or("empty mark")?;
        if self.open.is_none() {
            return Err(format!("recording to {} is stopped by a write error: not recorded", self.dir.display()));
        }
        // The stream's own clock mapping: the mark sits where the events around it sit.
        let unix_ns = self.info.clock.to_unix_ns(now_ns);
        let mark = Event::Mark(MarkEvent { ts_ns: now_ns, unix_ns, uid, pid, text });
        self.event(&mark);
        let sealed = self.open.as_mut().map(|o| o.recorder.seal_now());
        match sealed {
            Some(Ok(())) => Ok(crate::time::WallTime::from_unix_ns(unix_ns).rfc3339()),
            Some(Err(e)) => {
                self.fail(&e);
                Err(format!("writing failed: {e}"))
            }
            None => Err("writing failed: recording stopped".into()),
        }
    }

    /// Ends the open segment with its end chunk.
    pub fn finish(mut self, now_ns: u64, totals: RunTotals) -> RecorderStats {
        // The stream is drained to its end: marks still waiting go in now, last.
        for (_, request) in std::mem::take(&mut self.waiting_marks) {
            let outcome = self.mark(now_ns, &request.text, request.uid, request.pid);
            request.answer(outcome);
        }
        self.close(now_ns, totals);
        // Waits for the last analyses and reports: the windows are whole when the run ends.
        if let Some(keeper) = self.keeper.take() {
            keeper.finish();
        }
        self.stats.bytes = list(&self.dir).map_or(self.stats.bytes, |l| l.iter().map(|s| s.bytes).sum());
        self.stats()
    }

    fn close(&mut self, now_ns: u64, totals: RunTotals) {
        let Some(open) = self.open.take() else { return };
        let trailer =
            Trailer { events: open.recorder.events(), lost: totals.lost, ended_ns: now_ns, decoder: totals.decoder };
        match open.recorder.finish(&trailer) {
            Ok(_) => {
                // Its end chunk is on disk: writing works again (see `writing_since`).
                if open.proving_from.is_some() {
                    self.writing_since.get_or_insert(now_ns);
                }
                if let Some(keeper) = &mut self.keeper {
                    keeper.closed(open.seq, &open.path);
                }
            }
            Err(e) => self.fail(&e),
        }
        // The end chunk is synced; the entry's name was synced when the segment was opened.
        log::debug!("closed {}", open.path.display());
    }

    /// Retention, then a new segment. On failure the recorder stays stopped until the next try.
    fn open_next(&mut self, now_ns: u64) {
        self.retain(now_ns);
        let seq = self.next_seq;
        let name = SegmentName { seq, start_unix_s: self.info.clock.to_unix_ns(now_ns) / 1_000_000_000 };
        let path = self.dir.join(name.file_name());
        let mut header = self.info.clone();
        header.started_ns = now_ns;
        header.namespaces = self.namespaces.values().cloned().collect();
        let not_recorded = self.stats.events_not_recorded.saturating_sub(self.not_recorded_declared);
        header.segment = Some(SegmentMark { run: self.run, seq, part: self.part, not_recorded });
        // The picture at start belongs to the run's first segment only (see the module).
        if self.part > 0 {
            header.sockets.clear();
        }
        match Recorder::create(&path, &header, false).and_then(|r| sync_dir(&self.dir).map(|()| r)) {
            Ok(recorder) => {
                self.next_seq += 1;
                let proving_from = self.stopped_ns.map(|_| recorder.bytes_written());
                self.open = Some(Open { recorder, path, seq, opened_ns: now_ns, proving_from });
                self.part += 1;
                self.not_recorded_declared = self.stats.events_not_recorded;
                self.stats.segments_opened += 1;
                self.retry_ns = None;
                self.info.sockets.clear();
            }
            Err(RecordError::Exists(_)) => {
                // Another writer took the number (two twtraces on one directory): never
                // touch its file; the next attempt takes the next number.
                self.next_seq += 1;
                self.fail(&RecordError::Exists(path));
            }
            Err(e) => {
                // A segment that could not be made holds nothing worth keeping (part of a
                // header at most), and its number is used again: numbers missing between
                // segments mean segments deleted, never attempts that failed.
                let _ = std::fs::remove_file(&path);
                self.fail(&e);
            }
        }
        self.stats.bytes = list(&self.dir).map_or(self.stats.bytes, |l| l.iter().map(|s| s.bytes).sum());
    }

    /// Deletes what the policy no longer keeps (closed segments only: the open one, if any,
    /// is not listed as closed since retention runs between segments).
    fn retain(&mut self, now_ns: u64) {
        let Ok(segments) = list(&self.dir) else { return };
        let open = self.open.as_ref().map(|o| o.path.clone());
        let protected = self.keeper.as_ref().and_then(Keeper::protected_from).unwrap_or(u64::MAX);
        let closed: Vec<OnDisk> =
            segments.into_iter().filter(|s| Some(&s.path) != open.as_ref() && s.name.seq < protected).collect();
        let now_unix = self.info.clock.to_unix_ns(now_ns);
        for i in expired(&closed, now_unix, &self.policy) {
            match std::fs::remove_file(&closed[i].path) {
                Ok(()) => self.stats.segments_deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot delete {}: {e}", closed[i].path.display()),
            }
        }
    }

    /// An outage is over: chunks have reached the disk for [`RESUME_CONFIRM_NS`].
    fn resumed(&mut self, now_ns: u64) {
        self.writing_since = None;
        if let Some(since) = self.stopped_ns.take() {
            log::warn!(
                "recording to {} resumed after {:.0}s stopped ({} events not recorded so far)",
                self.dir.display(),
                now_ns.saturating_sub(since) as f64 / 1e9,
                self.stats.events_not_recorded
            );
        }
    }

    /// Stops recording after `error`: one line per outage, every failure counted.
    fn fail(&mut self, error: &RecordError) {
        self.stats.write_errors += 1;
        self.writing_since = None;
        if let Some(open) = self.open.take() {
            // Joins the writer: its synced chunks stay readable.
            drop(open.recorder);
        }
        let retry = RETRY.min(self.policy.segment_time);
        self.retry_ns = Some(self.now_ns + retry.as_nanos() as u64);
        if self.stopped_ns.is_none() {
            self.stopped_ns = Some(self.now_ns);
            let why = if error.is_out_of_space() { "the file system is full" } else { "a write failed" };
            log::error!(
                "recording to {} stopped: {why} ({error}); twtrace keeps running and tries again every {}s",
                self.dir.display(),
                retry.as_secs()
            );
        }
    }
}

/// Makes a new directory entry durable: without it a power loss can lose a whole segment
/// whose data blocks were synced.
fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u64, bytes: u64, modified_s: u64) -> OnDisk {
        OnDisk {
            name: SegmentName { seq, start_unix_s: modified_s },
            path: PathBuf::from(format!("{seq}")),
            bytes,
            modified_unix_ns: modified_s.saturating_mul(1_000_000_000),
        }
    }

    #[test]
    fn size_retention_deletes_oldest_until_inside_the_bound() {
        let policy = Policy { keep_age: None, keep_bytes: Some(250), ..Policy::default() };
        let segments: Vec<_> = (0..5).map(|i| segment(i, 100, 1000 + i)).collect();
        // 500 bytes: the three oldest go, 200 remain.
        assert_eq!(expired(&segments, 2_000_000_000_000, &policy), vec![0, 1, 2]);
        let policy = Policy { keep_bytes: Some(500), ..policy };
        assert!(expired(&segments, 2_000_000_000_000, &policy).is_empty());
    }

    #[test]
    fn age_retention_deletes_what_was_last_written_too_long_ago() {
        let policy = Policy { keep_age: Some(Duration::from_secs(60)), keep_bytes: None, ..Policy::default() };
        let segments = vec![segment(7, 10, 100), segment(8, 10, 150), segment(9, 10, 200)];
        // At 220 s: 120 s and 70 s old go, 20 s old stays.
        assert_eq!(expired(&segments, 220_000_000_000, &policy), vec![0, 1]);
        // Exactly the age is kept.
        assert_eq!(expired(&segments, 210_000_000_000, &policy), vec![0]);
    }

    #[test]
    fn policies_are_checked() {
        assert!(Policy::default().check().is_ok());
        assert!(Policy { segment_bytes: 100, ..Policy::default() }.check().is_err());
        assert!(Policy { keep_bytes: Some(1 << 20), ..Policy::default() }.check().is_err());
        assert!(Policy { segment_time: Duration::from_millis(10), ..Policy::default() }.check().is_err());
    }
}
