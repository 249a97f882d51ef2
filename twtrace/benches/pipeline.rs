//! Micro-benchmarks of the userspace pipeline: ring-buffer records through the decoder, and
//! events through the aggregator (criterion; events per second in its throughput lines).

use std::{collections::HashMap, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use twtrace::{
    aggregate::{Aggregator, Settings},
    event::Event,
    probes::{Decoder, record_bytes},
};
use twtrace_common::{
    AF_INET, EventHeader, EventKind, Flow, SCHEMA_VERSION,
    state::{StateEvent as RawState, tcp_state::*},
    timewait::{TimeWaitEvent as RawTimeWait, TimerPhase},
};

const CONNECTIONS: u64 = 10_000;

/// Per connection, the records the kernel writes into the ring buffer when the server closes
/// first: the client's connect() and ESTABLISHED, the server's close() (FIN_WAIT1), the
/// server's TIME_WAIT birth, then both sockets' → CLOSE. Only connect() and close() name the
/// task; the decoder carries it over to the others.
fn records() -> Vec<Vec<u8>> {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"churn");
    let header = |kind: EventKind, ts: u64, with_task: bool| EventHeader {
        kind: kind as u16,
        version: SCHEMA_VERSION,
        cpu: 0,
        ts_ns: ts,
        pid_tgid: if with_task { (4242 << 32) | 4242 } else { 0 },
        cgroup_id: if with_task { 1 } else { 0 },
        comm: if with_task { comm } else { [0; 16] },
        ..EventHeader::default()
    };
    let mut out = Vec::new();
    for i in 0..CONNECTIONS {
        let ts = 1_000_000_000 + i * 40_000;
        let mut client = Flow { family: AF_INET, sport: 32768 + (i % 28_000) as u16, dport: 8080, ..Flow::default() };
        client.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        client.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let server = Flow { sport: client.dport, dport: client.sport, ..client };
        let client_sk = 0xffff_8881_0000_0000 + i * 4096;
        let server_sk = client_sk + 2048;
        let state = |n: u64, sk: u64, flow: Flow, old: u8, new: u8| {
            let with_task = new == SYN_SENT || new == FIN_WAIT1;
            record_bytes(&RawState {
                header: header(EventKind::State, ts + n * 1_000, with_task),
                sk_addr: sk,
                netns: 4026532177,
                old_state: old,
                new_state: new,
                flow,
                ..RawState::default()
            })
        };
        out.push(state(0, client_sk, Flow { sport: 0, ..client }, CLOSE, SYN_SENT));
        out.push(state(1, client_sk, client, SYN_SENT, ESTABLISHED));
        out.push(state(2, server_sk, server, ESTABLISHED, FIN_WAIT1));
        out.push(record_bytes(&RawTimeWait {
            header: header(EventKind::TimeWait, ts + 3_000, false),
            tw_addr: 0xffff_8882_0000_0000 + i * 256,
            timeout_jiffies: 15_000,
            netns: 4026532177,
            phase: TimerPhase::Start as u8,
            substate: 6,
            flow: server,
            ..RawTimeWait::default()
        }));
        out.push(state(4, server_sk, server, FIN_WAIT2, CLOSE));
        out.push(state(5, client_sk, client, LAST_ACK, CLOSE));
    }
    out
}

fn decoded(records: &[Vec<u8>]) -> Vec<Event> {
    let mut decoder = Decoder::new(250, HashMap::new());
    let mut out = Vec::new();
    for r in records {
        decoder.decode(r, &mut out);
    }
    decoder.flush(u64::MAX, &mut out);
    out
}

fn pipeline(c: &mut Criterion) {
    let records = records();
    let events = decoded(&records);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("decoder", |b| b.iter(|| black_box(decoded(black_box(&records)).len())));
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("aggregator", |b| {
        b.iter(|| {
            let mut aggregator = Aggregator::new(Settings::default());
            for e in &events {
                aggregator.apply(black_box(e));
            }
            black_box(aggregator.snapshot(2_000_000_000).events)
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
