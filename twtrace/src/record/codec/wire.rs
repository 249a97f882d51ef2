//! The format's numbers, shared by the encoder and the decoder: record tags, flag bits, limits
//! and the integer encodings (the table in `codec`'s own documentation).

use crate::event::TimeWaitSubstate;

pub(super) const TW_BIRTH: u8 = 1;
pub(super) const TW_REARM: u8 = 2;
pub(super) const TW_DEATH: u8 = 3;
pub(super) const STATE: u8 = 4;
pub(super) const DROP: u8 = 5;
pub(super) const SEARCH: u8 = 6;
pub(super) const COUNTERS: u8 = 7;
pub(super) const LOST: u8 = 8;
pub(super) const SOCKET: u8 = 9;
pub(super) const NAMESPACE: u8 = 10;
pub(super) const SOCKET_NS: u8 = 11;
pub(super) const MARK: u8 = 12;
pub(super) const DROP_SENT: u8 = 13;
pub(super) const DEF_IPV4: u8 = 0x80;
pub(super) const DEF_IPV6: u8 = 0x81;
pub(super) const DEF_PROCESS: u8 = 0x82;
pub(super) const DEF_NAME: u8 = 0x83;
pub(super) const DEF_NETNS: u8 = 0x84;
pub(super) const DEF_SK: u8 = 0x85;

pub(super) const SEARCH_BIND: u8 = 1;
pub(super) const SEARCH_APPROXIMATE: u8 = 2;
pub(super) const SEARCH_CANDIDATES: u8 = 4;
pub(super) const SEARCH_REMOTE: u8 = 8;
pub(super) const SEARCH_LOCAL: u8 = 16;

pub(super) const NAMESPACE_LIVE: u8 = 1;
pub(super) const NAMESPACE_SETTINGS: u8 = 2;

/// Skipped runs ([`Event::Skipped`]) are stored as a counter record of this name in namespace
/// 0, as the stream carried them before they had an event of their own: recordings of either
/// form read the same, and older readers still read new recordings.
pub(super) const SKIPPED_RUNS_COUNTER: &str = "SkippedRuns";

/// Longest name (drop reason, counter) and command a reader accepts.
pub(super) const MAX_NAME: usize = 256;

pub(super) fn substate_byte(s: TimeWaitSubstate) -> u8 {
    match s {
        TimeWaitSubstate::FinWait2 => 5,
        TimeWaitSubstate::TimeWait => 6,
        TimeWaitSubstate::Other(v) => v & SUBSTATE_MASK,
    }
}

/// A birth's substate byte (format 4+): the kernel's TCP state in the low six bits (states end
/// at 12), whether the peer's timestamps were read in bit 7 and what they said in bit 6.
/// Format 3 wrote the state alone, so its births read as "not known".
pub(super) const SUBSTATE_MASK: u8 = 0x3f;
pub(super) const TS_KNOWN_BIT: u8 = 0x80;
pub(super) const TS_SEEN_BIT: u8 = 0x40;

pub(super) fn timestamps_bits(timestamps: Option<bool>) -> u8 {
    match timestamps {
        None => 0,
        Some(false) => TS_KNOWN_BIT,
        Some(true) => TS_KNOWN_BIT | TS_SEEN_BIT,
    }
}

pub(super) fn timestamps_of(byte: u8) -> Option<bool> {
    (byte & TS_KNOWN_BIT != 0).then_some(byte & TS_SEEN_BIT != 0)
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}
