//! A flight-recorder directory (see [`super::segments`]) read as one stream: its segments in
//! the order of their numbers, each read by the ordinary [`Reader`], stitched together.
//!
//! Stitching:
//! - Times: the stream keeps the first segment's clock mapping. Segments of the same run share
//!   it; a later run's events are moved onto it through wall-clock time, so one timeline
//!   holds both.
//! - Namespaces: every segment's header describes the namespaces live at its start. Where that
//!   differs from what the stream has described so far (segments deleted between, a new run),
//!   namespace records are added at the segment's start, so names carry across.
//! - TIME_WAIT socket numbers and lost-record totals count from zero in every run: a later run's
//!   are moved past the earlier ones' so no socket is confused with another and the loss adds up.
//! - Gaps: a missing number (segments deleted or lost), a new run (twtrace was not running),
//!   or an unfinished segment followed after a while by the next one of its run (stopped by a
//!   full disk, or killed) each become a [`Damage::Gap`]; damage inside a segment is reported
//!   with its name.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Read,
    path::{Path, PathBuf},
};

use super::{
    Damage, GapCause, Reader, RecordError, Trailer,
    segment_files::{self, SegmentName},
};
use crate::{
    event::{Event, NamespaceDescription, NamespaceEvent},
    source_info::SourceInfo,
    time::{TimeSpec, WallTime},
};

/// Silence between two segments of one run shorter than this is ordinary (the last events of
/// a segment are sealed up to a second before it closes).
pub const GAP_TOLERANCE_NS: u64 = 2_000_000_000;
/// A later run's TIME_WAIT socket numbers are moved up by this per run (a run numbers its
/// sockets from 1 and would need 2^48 of them to collide).
const RUN_ID_STRIDE: u64 = 1 << 48;

/// The part of the recorded time to read, as given on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<TimeSpec>,
    pub until: Option<TimeSpec>,
}

/// A [`Window`] resolved against a recording's start (Unix ns, both ends included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    pub since_unix_ns: Option<u64>,
    pub until_unix_ns: Option<u64>,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Times of day resolve to their first occurrence from `start`; `--until` from `--since`.
    pub fn resolve(&self, start: WallTime) -> Bounds {
        let since = self.since.map(|s| s.resolve(start));
        let until = self.until.map(|u| u.resolve(since.unwrap_or(start)));
        Bounds { since_unix_ns: since.map(WallTime::unix_ns), until_unix_ns: until.map(WallTime::unix_ns) }
    }
}

impl Bounds {
    pub fn contains(&self, unix_ns: u64) -> bool {
        self.since_unix_ns.is_none_or(|s| unix_ns >= s) && self.until_unix_ns.is_none_or(|u| unix_ns <= u)
    }
}

enum Data {
    File(PathBuf),
    Bytes(Vec<u8>),
}

struct Entry {
    label: String,
    name: SegmentName,
    data: Data,
}

type SegmentReader = Reader<Box<dyn Read + Send>>;

struct Current {
    reader: SegmentReader,
    label: String,
    seq: u64,
    run: Option<u64>,
    /// Added to this segment's timestamps to put them on the stream's clock.
    delta_ns: i64,
    tw_offset: u64,
    /// The latest timestamp read (the segment's own clock).
    last_ts: u64,
    /// Namespace records to hand out before the segment's own events.
    preface: Vec<Event>,
}

/// Where the previous segment ended, for the gap before the next.
struct Ended {
    seq: u64,
    run: Option<u64>,
    end_unix_ns: u64,
}

pub struct DirectoryReader {
    pending: VecDeque<Entry>,
    current: Option<Current>,
    /// The stream's description: the first segment read's header (its sockets included only
    /// when the window starts before it).
    pub info: SourceInfo,
    pub bounds: Bounds,
    stream_offset_ns: i128,
    damage: Vec<Damage>,
    /// The last segment's end chunk, its event count made the sum over the segments read.
    trailer: Option<Trailer>,
    events_declared: u64,
    chunks_before: u64,
    known: BTreeMap<u32, NamespaceDescription>,
    run: Option<u64>,
    runs: u64,
    lost_before_run: u64,
    lost_in_run: u64,
    prev: Option<Ended>,
    segments_read: u64,
}

impl DirectoryReader {
    /// The segments of `dir` within `window`.
    pub fn open(dir: &Path, window: Window) -> Result<Self, RecordError> {
        let entries = segment_files::list(dir)?
            .into_iter()
            .map(|s| Entry {
                label: s.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                name: s.name,
                data: Data::File(s.path),
            })
            .collect();
        Self::from_entries(entries, window).map_err(|e| match e {
            RecordError::Empty => RecordError::NoSegments(dir.to_owned()),
            e => e,
        })
    }

    /// Segments given as (file name, contents): for tests and fuzzing. Names that are not
    /// segment names are left out, as in a directory.
    pub fn from_bytes(segments: Vec<(String, Vec<u8>)>, window: Window) -> Result<Self, RecordError> {
        let mut entries: Vec<Entry> = segments
            .into_iter()
            .filter_map(|(label, bytes)| {
                SegmentName::parse(&label).map(|name| Entry { label, name, data: Data::Bytes(bytes) })
            })
            .collect();
        entries.sort_by_key(|e| e.name);
        Self::from_entries(entries, window)
    }

    fn from_entries(entries: Vec<Entry>, window: Window) -> Result<Self, RecordError> {
        let Some(first) = entries.first() else { return Err(RecordError::Empty) };
        let bounds = window.resolve(WallTime::from_unix_ns(first.name.start_unix_s.saturating_mul(1_000_000_000)));
        let mut reader = Self {
            pending: entries.into(),
            current: None,
            info: SourceInfo {
                host: String::new(),
                kernel: String::new(),
                clock: crate::time::WallClock { realtime_ns: 0, monotonic_ns: 0 },
                started_ns: 0,
                sysctls: Default::default(),
                namespaces: Vec::new(),
                backends: Vec::new(),
                netns: None,
                port: None,
                filter: String::new(),
                sockets: Vec::new(),
                segment: None,
            },
            bounds,
            stream_offset_ns: 0,
            damage: Vec::new(),
            trailer: None,
            events_declared: 0,
            chunks_before: 0,
            known: BTreeMap::new(),
            run: None,
            runs: 0,
            lost_before_run: 0,
            lost_in_run: 0,
            prev: None,
            segments_read: 0,
        };
        if !reader.open_next() {
            let why = reader.damage.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(RecordError::BadHeader(format!("no segment could be read: {why}")));
        }
        Ok(reader)
    }

    /// Everything found wrong so far (complete once [`Self::next_events`] returned `None`).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The end chunk of the last segment read, if it was finished.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Intact chunks read so far, over every segment.
    pub fn chunks(&self) -> u64 {
        self.chunks_before.saturating_add(self.current.as_ref().map_or(0, |c| c.reader.chunks()))
    }

    /// Segments opened so far.
    pub fn segments_read(&self) -> u64 {
        self.segments_read
    }

    /// The next events of the stream, on its clock; `None` at the end of the last segment.
    pub fn next_events(&mut self) -> Option<Vec<Event>> {
        loop {
            let current = match &mut self.current {
                Some(c) => c,
                None => {
                    if !self.open_next() {
                        return None;
                    }
                    continue;
                }
            };
            if !current.preface.is_empty() {
                return Some(std::mem::take(&mut current.preface));
            }
            match current.reader.next_chunk() {
                Some(chunk) => {
                    let mut events = chunk.decoded.events;
                    self.translate(&mut events);
                    return Some(events);
                }
                None => self.close_current(),
            }
        }
    }

    fn translate(&mut self, events: &mut [Event]) {
        let current = self.current.as_mut().expect("reading a segment");
        for event in events {
            current.last_ts = current.last_ts.max(event.ts_ns());
            let ts = event.ts_ns_mut();
            *ts = (*ts as i128 + current.delta_ns as i128).max(0) as u64;
            match event {
                Event::TimeWait(e) => e.tw_id = e.tw_id.wrapping_add(current.tw_offset),
                Event::Lost(e) => {
                    self.lost_in_run = self.lost_in_run.max(e.total);
                    e.total = e.total.saturating_add(self.lost_before_run);
                }
                Event::Namespace(e) => {
                    self.known.insert(e.namespace.netns, e.namespace.clone());
                }
                _ => {}
            }
        }
    }

    fn close_current(&mut self) {
        let Some(c) = self.current.take() else { return };
        for d in c.reader.damage() {
            self.damage.push(Damage::InSegment { segment: c.label.clone(), damage: Box::new(d.clone()) });
        }
        self.chunks_before = self.chunks_before.saturating_add(c.reader.chunks());
        let end_ns = c.reader.trailer().map_or(c.last_ts, |t| t.ended_ns.max(c.last_ts));
        let clock = c.reader.info.clock;
        self.prev = Some(Ended { seq: c.seq, run: c.run, end_unix_ns: clock.to_unix_ns(end_ns) });
        // On the stream's clock, like the events.
        // The events of every segment read so far, to compare with what was read.
        self.events_declared = self.events_declared.saturating_add(c.reader.trailer().map_or(0, |t| t.events));
        self.trailer = c.reader.trailer().cloned().map(|mut t| {
            t.ended_ns = (t.ended_ns as i128 + c.delta_ns as i128).max(0) as u64;
            t.lost = t.lost.saturating_add(self.lost_before_run);
            t.events = self.events_declared;
            t
        });
    }

    /// Opens the next segment the window needs; false when none is left.
    fn open_next(&mut self) -> bool {
        while let Some(entry) = self.pending.pop_front() {
            let first = self.segments_read == 0;
            // Every event of a segment comes before the next one's start: one that starts
            // (to the second, rounded down) at or before `since` makes this one unneeded.
            let before_window = self.bounds.since_unix_ns.is_some_and(|since| {
                self.pending
                    .front()
                    .is_some_and(|next| next.name.start_unix_s.saturating_add(1).saturating_mul(1_000_000_000) <= since)
            });
            let after_window = self
                .bounds
                .until_unix_ns
                .is_some_and(|until| entry.name.start_unix_s.saturating_mul(1_000_000_000) > until);
            if before_window || (after_window && !first) {
                continue;
            }
            let opened: Result<SegmentReader, RecordError> = match entry.data {
                Data::File(path) => std::fs::File::open(&path)
                    .map_err(RecordError::from)
                    .and_then(|f| Reader::new(Box::new(std::io::BufReader::with_capacity(1 << 20, f)) as Box<_>)),
                Data::Bytes(bytes) => Reader::new(Box::new(std::io::Cursor::new(bytes)) as Box<_>),
            };
            let reader = match opened {
                Ok(r) => r,
                Err(e) => {
                    self.damage.push(Damage::SegmentUnreadable { segment: entry.label, why: e.to_string() });
                    continue;
                }
            };
            self.begin(entry.label, entry.name, reader);
            if after_window {
                // Read for its description only: nothing of it is in the window.
                self.pending.clear();
            }
            return true;
        }
        false
    }

    /// Starts reading `reader`: the stream's description if it is the first, else the gap
    /// before it and the namespaces that changed.
    fn begin(&mut self, label: String, name: SegmentName, reader: SegmentReader) {
        let header = reader.info.clone();
        let offset_ns = header.clock.realtime_ns as i128 - header.clock.monotonic_ns as i128;
        let start_unix = header.clock.to_unix_ns(header.started_ns);
        let seq = header.segment.map_or(name.seq, |m| m.seq);
        let run = header.segment.map(|m| m.run);
        let not_recorded = header.segment.map_or(0, |m| m.not_recorded);
        let first = self.segments_read == 0;
        self.segments_read += 1;
        if first {
            self.info = header.clone();
            self.stream_offset_ns = offset_ns;
            if self.bounds.since_unix_ns.is_some_and(|since| since > start_unix) {
                // The picture at the segment's start is not the picture at the window's.
                self.info.sockets.clear();
            }
            if let Some(since) = self.bounds.since_unix_ns.filter(|s| s.saturating_add(GAP_TOLERANCE_NS) < start_unix) {
                self.damage.push(Damage::Gap {
                    from_unix_ns: since,
                    to_unix_ns: start_unix,
                    cause: GapCause::BeforeFirst,
                });
            }
        } else if let Some(prev) = &self.prev {
            let cause = if seq > prev.seq.saturating_add(1) {
                Some(GapCause::Missing { first: prev.seq + 1, last: seq - 1 })
            } else if run.is_none() || run != prev.run {
                Some(GapCause::Restarted)
            } else if not_recorded > 0 || start_unix > prev.end_unix_ns.saturating_add(GAP_TOLERANCE_NS) {
                // A declared loss is a gap however short; silence longer than a rotation leaves
                // is one even when undeclared (killed, or written before the count existed).
                Some(GapCause::Stopped { not_recorded })
            } else {
                None
            };
            if let Some(cause) = cause {
                self.damage.push(Damage::Gap { from_unix_ns: prev.end_unix_ns, to_unix_ns: start_unix, cause });
            }
        }
        if !first && (run.is_none() || run != self.run) {
            self.runs += 1;
            self.lost_before_run = self.lost_before_run.saturating_add(self.lost_in_run);
            self.lost_in_run = 0;
        }
        self.run = run;
        let delta_ns = (offset_ns - self.stream_offset_ns).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let at = (header.started_ns as i128 + delta_ns as i128).max(0) as u64;
        // What the stream knows against what this segment says is live at its start.
        let mut preface = Vec::new();
        let started_ns = header.started_ns;
        if first {
            self.known = header.namespaces.iter().map(|n| (n.netns, n.clone())).collect();
        } else {
            for namespace in &header.namespaces {
                if self.known.get(&namespace.netns) != Some(namespace) {
                    preface.push(Event::Namespace(NamespaceEvent { ts_ns: at, namespace: namespace.clone() }));
                }
            }
            for (netns, known) in &self.known {
                if known.live && !header.namespaces.iter().any(|n| n.netns == *netns) {
                    let gone = NamespaceDescription { live: false, ..known.clone() };
                    preface.push(Event::Namespace(NamespaceEvent { ts_ns: at, namespace: gone }));
                }
            }
            for event in &preface {
                if let Event::Namespace(e) = event {
                    self.known.insert(e.namespace.netns, e.namespace.clone());
                }
            }
        }
        self.current = Some(Current {
            reader,
            label,
            seq,
            run,
            delta_ns,
            tw_offset: self.runs.wrapping_mul(RUN_ID_STRIDE),
            last_ts: started_ns,
            preface,
        });
    }
}

/// The fuzz target's input: segments packed one after another, each `seq u16 | start u16 |
/// len u32 | bytes` (little-endian; start in seconds after a fixed day), after a window of
/// `since u16 | until u16` (seconds after the same day, 0xffff for none). Defined here so the
/// seeds the tests write and the target agree.
pub mod fuzz_input {
    use super::{SegmentName, Window};
    use crate::time::{TimeSpec, WallTime};

    const BASE_S: u64 = 1_795_384_800;

    pub fn unpack(mut data: &[u8]) -> (Window, Vec<(String, Vec<u8>)>) {
        let mut take = |n: usize| {
            let (head, rest) = data.split_at(n.min(data.len()));
            data = rest;
            head
        };
        let u16_at = |d: &[u8]| if d.len() == 2 { u16::from_le_bytes([d[0], d[1]]) } else { 0xffff };
        let bound = |v: u16| {
            (v != 0xffff).then(|| TimeSpec::At(WallTime::from_unix_ns((BASE_S + u64::from(v)) * 1_000_000_000)))
        };
        let since = bound(u16_at(take(2)));
        let until = bound(u16_at(take(2)));
        let mut segments = Vec::new();
        loop {
            let head = take(8);
            if head.len() < 8 {
                break;
            }
            let seq = u64::from(u16::from_le_bytes([head[0], head[1]]));
            let start = BASE_S + u64::from(u16::from_le_bytes([head[2], head[3]]));
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let name = SegmentName { seq, start_unix_s: start }.file_name();
            segments.push((name, take(len).to_vec()));
        }
        (Window { since, until }, segments)
    }

    /// The inverse, for seeds: (seq, seconds after the day, contents).
    pub fn pack(since: Option<u16>, until: Option<u16>, segments: &[(u16, u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&since.unwrap_or(0xffff).to_le_bytes());
        out.extend_from_slice(&until.unwrap_or(0xffff).to_le_bytes());
        for (seq, start, bytes) in segments {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// The day's start, for seeds that name times.
    pub fn base_unix_s() -> u64 {
        BASE_S
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
