//! A recording as a source of the event stream: as fast as possible, or paced at a multiple
//! of the recorded speed. A recording is one file or a flight-recorder directory of segments,
//! read whole or within a window of recorded time.

use std::{collections::VecDeque, path::Path, time::Duration};

use super::{Flow, Health, ReplayHealth};
use crate::{
    event::Event,
    record::{
        Damage, Reader, RecordError, Trailer,
        directory::{Bounds, DirectoryReader, Window},
    },
    source_info::SourceInfo,
};

/// Longest a paced replay sleeps before looking again (keys and frames stay responsive).
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Events are written in the order they reach userspace, which can trail their timestamps
/// by a batch: reading stops only once a chunk starts this far past `--until`.
const UNTIL_SLACK_NS: u64 = 5_000_000_000;

enum Input {
    File(Box<Reader<std::io::BufReader<std::fs::File>>>),
    Directory(Box<DirectoryReader>),
}

impl Input {
    fn next_events(&mut self) -> Option<Vec<Event>> {
        match self {
            Self::File(r) => r.next_chunk().map(|c| c.decoded.events),
            Self::Directory(d) => d.next_events(),
        }
    }

    fn info(&self) -> &SourceInfo {
        match self {
            Self::File(r) => &r.info,
            Self::Directory(d) => &d.info,
        }
    }

    fn info_mut(&mut self) -> &mut SourceInfo {
        match self {
            Self::File(r) => &mut r.info,
            Self::Directory(d) => &mut d.info,
        }
    }

    fn damage(&self) -> &[Damage] {
        match self {
            Self::File(r) => r.damage(),
            Self::Directory(d) => d.damage(),
        }
    }

    fn trailer(&self) -> Option<&Trailer> {
        match self {
            Self::File(r) => r.trailer(),
            Self::Directory(d) => d.trailer(),
        }
    }

    fn chunks(&self) -> u64 {
        match self {
            Self::File(r) => r.chunks(),
            Self::Directory(d) => d.chunks(),
        }
    }
}

pub struct Replay {
    input: Input,
    /// `None`: as fast as possible.
    speed: Option<f64>,
    /// The window, on the recording's monotonic clock (both ends included).
    since_ns: Option<u64>,
    until_ns: Option<u64>,
    pending: VecDeque<Event>,
    /// Wall instant and recorded time of the first event: the pacing origin.
    origin: Option<(tokio::time::Instant, u64)>,
    now_ns: u64,
    ended: bool,
    /// Reading stopped past `--until`.
    past_until: bool,
    replayed: u64,
    /// Loss and skipped runs as the replayed stream has told them so far; loss counted before
    /// the window is left out.
    lost: u64,
    lost_before_window: u64,
    skipped_runs: u64,
}

impl Replay {
    /// A file, or a directory of segments; `window` limits what is read to a stretch of
    /// recorded time.
    pub fn open(path: &Path, speed: Option<f64>, window: Window) -> Result<Self, RecordError> {
        let (input, bounds) = if path.is_dir() {
            let dir = DirectoryReader::open(path, window)?;
            let bounds = dir.bounds;
            (Input::Directory(Box::new(dir)), bounds)
        } else {
            let mut reader = Reader::open(path)?;
            let bounds = window.resolve(reader.info.clock.at(reader.info.started_ns));
            if bounds.since_unix_ns.is_some_and(|s| s > reader.info.clock.to_unix_ns(reader.info.started_ns)) {
                // The picture at the start is not the picture at the window's start.
                reader.info.sockets.clear();
            }
            (Input::File(Box::new(reader)), bounds)
        };
        let clock = input.info().clock;
        let to_mono = |unix: u64| (unix as i128 - clock.realtime_ns as i128 + clock.monotonic_ns as i128).max(0) as u64;
        let Bounds { since_unix_ns, until_unix_ns } = bounds;
        let mut replay = Self {
            input,
            speed,
            since_ns: since_unix_ns.map(to_mono),
            until_ns: until_unix_ns.map(to_mono),
            pending: VecDeque::new(),
            origin: None,
            now_ns: 0,
            ended: false,
            past_until: false,
            replayed: 0,
            lost: 0,
            lost_before_window: 0,
            skipped_runs: 0,
        };
        replay.skip_to_window();
        replay.now_ns = replay.input.info().started_ns;
        Ok(replay)
    }

    /// Reads up to the window's start before any sink looks: the namespaces described
    /// meanwhile join the description, and the loss counted meanwhile is left out.
    fn skip_to_window(&mut self) {
        let Some(since) = self.since_ns else { return };
        loop {
            while let Some(e) = self.pending.front() {
                if e.ts_ns() >= since {
                    let info = self.input.info_mut();
                    info.started_ns = info.started_ns.max(since);
                    return;
                }
                let e = self.pending.pop_front().expect("front exists");
                match e {
                    Event::Namespace(n) => {
                        let namespaces = &mut self.input.info_mut().namespaces;
                        namespaces.retain(|d| d.netns != n.namespace.netns);
                        namespaces.push(n.namespace);
                    }
                    Event::Lost(l) => self.lost_before_window = self.lost_before_window.max(l.total),
                    _ => {}
                }
            }
            match self.input.next_events() {
                Some(events) => self.pending.extend(events),
                None => {
                    let info = self.input.info_mut();
                    info.started_ns = info.started_ns.max(since);
                    return;
                }
            }
        }
    }

    pub fn info(&self) -> &SourceInfo {
        self.input.info()
    }

    pub(super) fn info_mut(&mut self) -> &mut SourceInfo {
        self.input.info_mut()
    }

    pub fn health(&self) -> Health {
        let mut trailer = self.input.trailer().cloned();
        if self.since_ns.is_some() || self.until_ns.is_some() {
            // The end marker counts the whole recording; a window holds what was replayed.
            if let Some(t) = &mut trailer {
                t.events = self.replayed;
            }
        }
        Health {
            lost: self.lost,
            skipped_runs: self.skipped_runs,
            decoder: trailer.as_ref().map(|t| t.decoder),
            bpf_run_time: None,
            replay: Some(ReplayHealth {
                position_ns: self.now_ns,
                speed: self.speed,
                ended: self.ended,
                replayed: self.replayed,
                chunks: self.input.chunks(),
                damage: self.input.damage().to_vec(),
                trailer,
            }),
            drain: None,
        }
    }

    /// The recorded time the replay has reached.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Whether an event belongs to the window. A namespace description before it still
    /// passes: a later event may name that namespace.
    fn in_window(&self, e: &Event) -> bool {
        let ts = e.ts_ns();
        let after_since = self.since_ns.is_none_or(|s| ts >= s) || matches!(e, Event::Namespace(_));
        after_since && self.until_ns.is_none_or(|u| ts <= u)
    }

    fn refill(&mut self) -> bool {
        while self.pending.is_empty() && !self.past_until {
            let Some(events) = self.input.next_events() else { return false };
            if let (Some(until), Some(first)) = (self.until_ns, events.iter().map(Event::ts_ns).min()) {
                if first > until.saturating_add(UNTIL_SLACK_NS) {
                    self.past_until = true;
                }
            }
            for e in events {
                if self.in_window(&e) {
                    self.pending.push_back(e);
                } else if let Event::Lost(l) = &e {
                    if self.since_ns.is_some_and(|s| l.ts_ns < s) {
                        self.lost_before_window = self.lost_before_window.max(l.total);
                    }
                }
            }
        }
        !self.pending.is_empty()
    }

    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Flow {
        if self.ended {
            // Nothing more will come: behave like an idle live source.
            tokio::time::sleep(MAX_SLEEP).await;
            return Flow::Ended;
        }
        if !self.refill() {
            self.end();
            return Flow::Ended;
        }
        let Some(speed) = self.speed else {
            self.emit_until(u64::MAX, out);
            return Flow::More;
        };
        let first_ts = self.pending.front().map_or(self.now_ns, Event::ts_ns);
        let (origin_wall, origin_ts) = *self.origin.get_or_insert((tokio::time::Instant::now(), first_ts));
        let recorded_now =
            |at: tokio::time::Instant| origin_ts + ((at - origin_wall).as_secs_f64() * speed * 1e9) as u64;
        let now = recorded_now(tokio::time::Instant::now());
        if first_ts > now {
            let wait = Duration::from_secs_f64((first_ts - now) as f64 / 1e9 / speed).min(MAX_SLEEP);
            tokio::time::sleep(wait).await;
        }
        let now = recorded_now(tokio::time::Instant::now());
        self.emit_until(now, out);
        self.now_ns = self.now_ns.max(now.min(self.pending.front().map_or(now, Event::ts_ns)));
        Flow::More
    }

    /// Moves the events up to recorded time `until` (a chunk at most) to `out`.
    fn emit_until(&mut self, until: u64, out: &mut Vec<Event>) {
        while let Some(e) = self.pending.front() {
            if e.ts_ns() > until {
                break;
            }
            let e = self.pending.pop_front().expect("front exists");
            self.now_ns = self.now_ns.max(e.ts_ns());
            self.replayed += 1;
            match &e {
                Event::Lost(l) => self.lost = self.lost.max(l.total.saturating_sub(self.lost_before_window)),
                Event::Skipped(s) => self.skipped_runs += s.new,
                _ => {}
            }
            out.push(e);
        }
    }

    fn end(&mut self) {
        self.ended = true;
        if let Some(t) = self.input.trailer() {
            self.now_ns = self.now_ns.max(t.ended_ns);
        }
        if let Some(until) = self.until_ns {
            self.now_ns = self.now_ns.min(until.max(self.input.info().started_ns));
        }
    }

    /// Stopping a replay (Ctrl-C) leaves the rest of the recording unread.
    pub fn finish(&mut self) {
        self.end();
    }
}
