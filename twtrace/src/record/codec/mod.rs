//! The bytes of one chunk: events as compact records, before compression.
//!
//! Every chunk decodes on its own, so a damaged chunk costs only itself. Repeated values
//! (addresses, processes, namespaces, socket addresses, names) are defined once per chunk,
//! inline before their first use, and referred to by a small number afterwards. Timestamps and
//! TIME_WAIT ids are stored as differences from the previous record. Integers are LEB128
//! varints; signed differences are zigzag-encoded.
//!
//! A record is a tag byte and its fields:
//!
//! | tag | record     | fields |
//! |-----|------------|--------|
//! | 1/2 | TW birth / re-arm | ts, tw_id, netns, flow, owner, substate u8, timeout_ms |
//! | 3   | TW death   | ts, tw_id, netns, flow, owner, reason u8, lifetime_ns |
//! | 4   | state      | ts, sk, netns, old u8, new u8, flow, task |
//! | 5   | drop       | ts, reason name, reason code, netns, flow, flags u8, seq u32, ack u32 |
//! | 6   | port search| ts, bits u8, duration_ns, errno, [candidates], netns, [remote], [local], process |
//! | 7   | counters   | ts, netns, n, n × (name, zigzag delta); skipped runs are a counter named `SkippedRuns` |
//! | 8   | lost       | ts, new, total |
//! | 9   | socket     | (initial picture only, format 1) flow, state u8, expires_ms |
//! | 10  | namespace  | ts, netns, name, bits u8 (1 live, 2 settings), [lo, hi, 4 × optional number] |
//! | 11  | socket     | (initial picture only, format 2) netns, flow, state u8, expires_ms |
//! | 12  | mark       | (format 3) ts, unix_ns, optional uid, optional pid, text (length, UTF-8) |
//! | 13  | drop, sent | (format 5) as 5, of a packet this host sent (a drop record is one received) |
//! | 0x80.. | definitions | IPv4 (4 bytes), IPv6 (16), process (pid, tid, cgroup, comm), name, netns, sk (u64) |
//!
//! A flow is (local address ref, local port u16, remote address ref, remote port u16), with
//! address ref 0 meaning "no flow". References count from 1; 0 is "none". An optional number
//! is a varint of the value plus one, 0 for "none".

mod decode;
mod encode;
mod wire;

pub use decode::{CodecError, Decoded, decode_chunk};
pub use encode::ChunkEncoder;
pub use wire::put_varint;
