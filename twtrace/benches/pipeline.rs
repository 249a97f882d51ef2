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
    AF_INET, EventHeader, EventKind, Flow, Owner, SCHEMA_VERSION,
    state::StateEvent as RawState,
    timewait::{TimeWaitEvent as RawTimeWait, TimerPhase},
};

const CONNECTIONS: u64 = 10_000;

/// Per connection: four state transitions of the client socket and a TIME_WAIT birth on the
/// server, as the kernel writes them into the ring buffer.
fn records() -> Vec<Vec<u8>> {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"churn");
    let header = |kind: EventKind, ts: u64| EventHeader {
        kind: kind as u16,
        version: SCHEMA_VERSION,
        cpu: 0,
        ts_ns: ts,
        pid_tgid: (4242 << 32) | 4242,
        cgroup_id: 1,
        comm,
        ..EventHeader::default()
    };
    let mut out = Vec::new();
    for i in 0..CONNECTIONS {
        let ts = 1_000_000_000 + i * 40_000;
        let mut flow = Flow { family: AF_INET, sport: 32768 + (i % 28_000) as u16, dport: 8080, ..Flow::default() };
        flow.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        for (n, (old, new)) in [(7u8, 2u8), (2, 1), (1, 8), (8, 9)].into_iter().enumerate() {
            let raw = RawState {
                header: header(EventKind::State, ts + n as u64 * 1_000),
                sk_addr: 0xffff_8881_0000_0000 + i * 2048,
                netns: 4026532177,
                old_state: old,
                new_state: new,
                flow,
                ..RawState::default()
            };
            out.push(record_bytes(&raw));
        }
        let tw = RawTimeWait {
            header: header(EventKind::TimeWait, ts + 5_000),
            tw_addr: 0xffff_8882_0000_0000 + i * 256,
            timeout_jiffies: 15_000,
            netns: 4026532177,
            phase: TimerPhase::Start as u8,
            substate: 6,
            flow: Flow { sport: flow.dport, dport: flow.sport, ..flow },
            owner: Owner { pid_tgid: (4242 << 32) | 4242, cgroup_id: 1, comm },
            ..RawTimeWait::default()
        };
        out.push(record_bytes(&tw));
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
