#![allow(dead_code, reason = "each bench uses part of it")]

//! Ring-buffer records for the scale benches (issue 25), as the kernel writes them on the
//! tracepoint backend, fed through the public decoder and aggregator only: the aggregator's
//! internals change, its `new`/`apply`/`advance`/`snapshot` do not.

use std::collections::HashMap;

use twtrace::{
    aggregate::{Aggregator, Settings},
    event::Event,
    probes::{Decoder, record_bytes},
};
use twtrace_common::{
    AF_INET, EventHeader, EventKind, Flow, SCHEMA_VERSION,
    portsearch::{PortSearchEvent as RawSearch, SearchOp},
    state::{StateEvent as RawState, tcp_state::*},
    timewait::{TimeWaitEvent as RawTimeWait, TimerPhase},
};

pub const NETNS: u32 = 4026532177;
/// Nanoseconds between two connections (20k/s, as the bench's ladder).
pub const SPACING_NS: u64 = 50_000;
const START_NS: u64 = 1_000_000_000;

fn header(kind: EventKind, ts_ns: u64, cpu: u32, comm: Option<&[u8]>) -> EventHeader {
    let mut name = [0u8; 16];
    if let Some(c) = comm {
        name[..c.len()].copy_from_slice(c);
    }
    EventHeader {
        kind: kind as u16,
        version: SCHEMA_VERSION,
        cpu,
        ts_ns,
        pid_tgid: if comm.is_some() { (4242 << 32) | 4242 } else { 0 },
        cgroup_id: u64::from(comm.is_some()),
        comm: name,
        ..EventHeader::default()
    }
}

fn state(ts_ns: u64, cpu: u32, sk: u64, flow: Flow, old: u8, new: u8, comm: Option<&[u8]>) -> Vec<u8> {
    record_bytes(&RawState {
        header: header(EventKind::State, ts_ns, cpu, comm),
        sk_addr: sk,
        netns: NETNS,
        old_state: old,
        new_state: new,
        flow,
        ..RawState::default()
    })
}

fn birth(ts_ns: u64, cpu: u32, tw_addr: u64, flow: Flow) -> Vec<u8> {
    record_bytes(&RawTimeWait {
        header: header(EventKind::TimeWait, ts_ns, cpu, None),
        tw_addr,
        timeout_jiffies: 15_000,
        netns: NETNS,
        phase: TimerPhase::Start as u8,
        substate: TIME_WAIT,
        flow,
        ..RawTimeWait::default()
    })
}

/// An IPv4 address of 127.0.0.0/8 (or 10.0.0.0/8) numbered `i` from 1.
fn addr(first: u8, i: u64) -> [u8; 4] {
    let n = i + 1;
    [first, (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// Connection `i` toward destination `i % destinations`, the client closing first (the
/// ladder's `churn --destinations N --closer client`): connect() with its port search, the
/// close, the client's TIME_WAIT birth (holding its port toward that destination), then
/// both full sockets' → CLOSE. Each destination is its own remote address, 127.a.b.c:8080.
pub fn client_first(i: u64, destinations: u64) -> Vec<Vec<u8>> {
    let ts = START_NS + i * SPACING_NS;
    let cpu = (i % 2) as u32;
    let mut client = Flow { family: AF_INET, sport: 1024 + (i % 63_977) as u16, dport: 8080, ..Flow::default() };
    client.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    client.daddr[..4].copy_from_slice(&addr(127, i % destinations));
    let server = Flow { saddr: client.daddr, daddr: client.saddr, sport: client.dport, dport: client.sport, ..client };
    let client_sk = 0xffff_8881_0000_0000 + i * 4096;
    let server_sk = client_sk + 2048;
    let comm = Some(&b"churn"[..]);
    let search = RawSearch {
        header: header(EventKind::PortSearch, ts + 2_000, cpu, comm),
        duration_ns: 4_000,
        netns: NETNS,
        op: SearchOp::Connect as u8,
        approximate: 1,
        flow: client,
        ..RawSearch::default()
    };
    vec![
        state(ts, cpu, client_sk, Flow { sport: 0, ..client }, CLOSE, SYN_SENT, comm),
        record_bytes(&search),
        state(ts + 3_000, cpu, client_sk, client, SYN_SENT, ESTABLISHED, None),
        state(ts + 4_000, cpu, client_sk, client, ESTABLISHED, FIN_WAIT1, comm),
        birth(ts + 5_000, cpu, 0xffff_8882_0000_0000 + i * 256, client),
        state(ts + 6_000, cpu, client_sk, client, FIN_WAIT2, CLOSE, None),
        state(ts + 7_000, cpu, server_sk, server, LAST_ACK, CLOSE, None),
    ]
}

/// Connection `i` from its own peer 10.a.b.c toward a server that closes first (the ladder's
/// `churn --sources N --closer server`): the server's close and its TIME_WAIT birth.
pub fn server_first(i: u64) -> Vec<Vec<u8>> {
    let ts = START_NS + i * SPACING_NS;
    let cpu = (i % 2) as u32;
    let mut flow = Flow { family: AF_INET, sport: 8080, dport: 1024 + (i % 60_000) as u16, ..Flow::default() };
    flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    flow.daddr[..4].copy_from_slice(&addr(10, i));
    let sk = 0xffff_8881_0000_0000 + i * 2048;
    vec![
        state(ts, cpu, sk, flow, ESTABLISHED, FIN_WAIT1, Some(&b"nginx"[..])),
        birth(ts + 1_000, cpu, 0xffff_8880_0000_0000 + i * 256, flow),
        state(ts + 2_000, cpu, sk, flow, FIN_WAIT2, CLOSE, None),
    ]
}

/// Settings of the ladder's namespaces (range 1024-65000, 2M buckets).
pub fn settings() -> Settings {
    Settings { port_range: (1024, 65000), max_tw_buckets: Some(2_000_000), ..Settings::default() }
}

/// Decodes and applies `count` connections made by `connection`; returns the stream's time
/// after the last one.
pub fn feed(
    aggregator: &mut Aggregator,
    decoder: &mut Decoder,
    count: u64,
    connection: impl Fn(u64) -> Vec<Vec<u8>>,
) -> u64 {
    let mut out: Vec<Event> = Vec::with_capacity(16);
    for i in 0..count {
        for record in connection(i) {
            decoder.decode(&record, &mut out);
        }
        for e in out.drain(..) {
            aggregator.apply(&e);
        }
    }
    START_NS + count * SPACING_NS
}

pub fn decoder() -> Decoder {
    Decoder::new(250, HashMap::new())
}
