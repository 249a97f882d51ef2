//! A recording as a source of the event stream: as fast as possible, or paced at a multiple
//! of the recorded speed.

use std::{collections::VecDeque, path::Path, time::Duration};

use super::{Flow, Health, ReplayHealth};
use crate::{
    event::Event,
    record::{Reader, RecordError},
    source_info::SourceInfo,
};

/// Longest a paced replay sleeps before looking again (keys and frames stay responsive).
const MAX_SLEEP: Duration = Duration::from_millis(100);

pub struct Replay {
    reader: Reader<std::io::BufReader<std::fs::File>>,
    /// `None`: as fast as possible.
    speed: Option<f64>,
    pending: VecDeque<Event>,
    /// Wall instant and recorded time of the first event: the pacing origin.
    origin: Option<(tokio::time::Instant, u64)>,
    now_ns: u64,
    ended: bool,
    replayed: u64,
    /// Loss and skipped runs as the replayed stream has told them so far.
    lost: u64,
    skipped_runs: u64,
}

impl Replay {
    pub fn open(path: &Path, speed: Option<f64>) -> Result<Self, RecordError> {
        let reader = Reader::open(path)?;
        let now_ns = reader.info.started_ns;
        Ok(Self {
            reader,
            speed,
            pending: VecDeque::new(),
            origin: None,
            now_ns,
            ended: false,
            replayed: 0,
            lost: 0,
            skipped_runs: 0,
        })
    }

    pub fn info(&self) -> &SourceInfo {
        &self.reader.info
    }

    pub(super) fn info_mut(&mut self) -> &mut SourceInfo {
        &mut self.reader.info
    }

    pub fn health(&self) -> Health {
        let trailer = self.reader.trailer().cloned();
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
                chunks: self.reader.chunks(),
                damage: self.reader.damage().to_vec(),
                trailer,
            }),
        }
    }

    /// The recorded time the replay has reached.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn refill(&mut self) -> bool {
        while self.pending.is_empty() {
            match self.reader.next_chunk() {
                Some(chunk) => self.pending.extend(chunk.decoded.events),
                None => return false,
            }
        }
        true
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
                Event::Lost(l) => self.lost = self.lost.max(l.total),
                Event::Skipped(s) => self.skipped_runs += s.new,
                _ => {}
            }
            out.push(e);
        }
    }

    fn end(&mut self) {
        self.ended = true;
        if let Some(t) = self.reader.trailer() {
            self.now_ns = self.now_ns.max(t.ended_ns);
        }
    }

    /// Stopping a replay (Ctrl-C) leaves the rest of the recording unread.
    pub fn finish(&mut self) {
        self.end();
    }
}
