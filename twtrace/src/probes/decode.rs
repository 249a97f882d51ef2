//! Ring-buffer records to events. Pure: unit-tested on byte records, benchmarked without BPF.

use std::collections::HashMap;

use serde::Serialize;
use twtrace_common::{EventHeader, EventKind, SCHEMA_VERSION};

use super::{drops, owners, portsearch, state, timewait};
use crate::event::Event;

/// Counters of records the decoder could not use: never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DecodeStats {
    pub records: u64,
    pub malformed: u64,
    pub wrong_version: u64,
    /// TIME_WAIT sockets that died during the run but were born before it started.
    pub untracked_deaths: u64,
    /// Times the owner join's tables hit their bound and started over (only lost records
    /// leave entries behind): owners of sockets open at that moment are unknown afterwards.
    #[serde(default)]
    pub owner_table_resets: u64,
}

impl DecodeStats {
    /// `, owner tables reset N times (...)` when that happened (only after lost records), or
    /// nothing: for the end-of-run sentences.
    pub fn owner_resets_note(&self) -> String {
        match self.owner_table_resets {
            0 => String::new(),
            n => format!(", owner tables reset {n} times (owners of sockets open then are unknown)"),
        }
    }
}

/// Turns ring-buffer records into events. Pure: unit-tested on byte records.
pub struct Decoder {
    pub stats: DecodeStats,
    pub timewait: timewait::Tracker,
    owners: owners::Owners,
    /// `skb_drop_reason` names by value on the kernel that produced the records.
    drop_reasons: HashMap<u32, String>,
}

impl Decoder {
    pub fn new(hz: u64, drop_reasons: HashMap<u32, String>) -> Self {
        Self {
            stats: DecodeStats::default(),
            timewait: timewait::Tracker::new(hz),
            owners: owners::Owners::new(),
            drop_reasons,
        }
    }

    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Event>) {
        self.stats.records += 1;
        let Some(header) = read_record::<EventHeader>(record) else {
            self.stats.malformed += 1;
            return;
        };
        if header.version != SCHEMA_VERSION {
            self.stats.wrong_version += 1;
            return;
        }
        let kind = EventKind::from_u16(header.kind);
        if kind != Some(EventKind::TimeWait) {
            self.timewait.on_other_record(header.cpu, out);
        }
        match kind {
            Some(EventKind::TimeWait) => match read_record(record) {
                Some(raw) => self.timewait.on_record(&raw, &mut self.owners, out),
                None => self.stats.malformed += 1,
            },
            Some(EventKind::State) => match read_record(record) {
                Some(raw) => {
                    let owner = self.owners.on_state(&raw);
                    out.push(state::decode(&raw, owner));
                }
                None => self.stats.malformed += 1,
            },
            Some(EventKind::Drop) => match read_record(record) {
                Some(raw) => out.push(drops::decode(&raw, &self.drop_reasons)),
                None => self.stats.malformed += 1,
            },
            Some(EventKind::PortSearch) => match read_record(record).and_then(|raw| portsearch::decode(&raw)) {
                Some(event) => out.push(event),
                None => self.stats.malformed += 1,
            },
            None => self.stats.malformed += 1,
        }
    }

    /// Resolves decisions that wait on what follows (see `timewait::Tracker::flush`).
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        self.timewait.flush(now_ns, out);
    }

    /// Every count, the family trackers' included.
    pub fn stats(&self) -> DecodeStats {
        DecodeStats {
            untracked_deaths: self.timewait.untracked_deaths,
            owner_table_resets: self.owners.resets,
            ..self.stats
        }
    }
}

/// Copies a `T` out of the front of a record, if the record is long enough.
fn read_record<T: aya::Pod>(record: &[u8]) -> Option<T> {
    if record.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is Pod (any bit pattern valid); unaligned read.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

/// The bytes of a Pod value, as the kernel would write them (for tests and benchmarks).
pub fn record_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
    // SAFETY: T is Pod: plain bytes without padding.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}
