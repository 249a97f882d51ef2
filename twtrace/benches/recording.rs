//! Recording size and replay speed. With a path (`cargo bench --bench recording -- FILE`, as
//! `cargo xtask bench` does with the recording of its saturating churn) it measures that real
//! recording; without, a synthetic churn of the same shape. Prints `bytes/event:` and
//! `replay events/s:` lines that the xtask reads.

use std::time::Instant;

use twtrace::{
    event::Sysctls,
    event::{
        DeathReason, Event, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent, TimeWaitChange, TimeWaitEvent,
        TimeWaitSubstate,
    },
    record::{Reader, Recorder, Trailer},
    source_info::SourceInfo,
    time::WallClock,
};

/// Per connection, what twtrace sees of a server-closes-first churn on loopback.
fn synthetic(connections: u64) -> Vec<Event> {
    let process = Some(Process { pid: 4242, tid: 4243, comm: "churn".into(), cgroup_id: 1 });
    let mut events = Vec::new();
    for i in 0..connections {
        let ts = 1_000_000_000 + i * 40_000;
        let port = 32768 + (i % 28_000) as u16;
        let client = SocketFlow {
            local: format!("127.0.0.1:{port}").parse().unwrap(),
            remote: "127.0.0.1:8080".parse().unwrap(),
        };
        let server = SocketFlow { local: client.remote, remote: client.local };
        let sk = 0xffff_8881_0000_0000 + (i % 4096) * 2048;
        let state = |dt: u64, sk: u64, old: u8, new: u8, flow: SocketFlow| {
            Event::State(StateEvent {
                ts_ns: ts + dt,
                sk_addr: sk,
                netns: 4026532177,
                old_state: old,
                new_state: new,
                flow: Some(flow),
                task: process,
            })
        };
        events.push(state(0, sk, 7, 2, client));
        events.push(state(3_000, sk + 1024, 3, 1, server));
        events.push(state(3_100, sk, 2, 1, client));
        events.push(Event::PortSearch(PortSearchEvent {
            ts_ns: ts + 3_200,
            op: SearchOp::Connect,
            duration_ns: 15_000 + (i % 7) * 300,
            errno: 0,
            candidates: None,
            approximate: true,
            netns: 4026532177,
            remote: Some(client.remote),
            local: None,
            process,
        }));
        events.push(state(5_000, sk + 1024, 1, 4, server));
        events.push(state(6_000, sk, 1, 8, client));
        events.push(state(6_500, sk + 1024, 4, 5, server));
        events.push(state(7_000, sk, 8, 9, client));
        events.push(state(8_000, sk, 9, 7, client));
        let tw = |dt: u64, change| {
            Event::TimeWait(TimeWaitEvent {
                ts_ns: ts + dt,
                tw_id: i + 1,
                flow: Some(server),
                netns: 4026532177,
                owner: process,
                change,
            })
        };
        events.push(tw(
            8_100,
            TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None },
        ));
        events
            .push(tw(1_100_000_000, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 1_099_991_900 }));
    }
    events.sort_by_key(Event::ts_ns);
    events
}

fn info() -> SourceInfo {
    SourceInfo {
        host: "bench".into(),
        kernel: "bench".into(),
        clock: WallClock { realtime_ns: 1_795_000_000_000_000_000, monotonic_ns: 0 },
        started_ns: 0,
        sysctls: Sysctls::default(),
        backends: Vec::new(),
        namespaces: Vec::new(),
        netns: None,
        port: None,
        filter: String::new(),
        sockets: Vec::new(),
        segment: None,
    }
}

fn read_all(bytes: &[u8]) -> u64 {
    let mut reader = Reader::new(bytes).expect("a readable recording");
    let mut events = 0;
    while let Some(chunk) = reader.next_chunk() {
        events += chunk.decoded.events.len() as u64;
    }
    events
}

fn main() {
    // `cargo bench` passes `--bench`; the recording is the first other argument.
    let path = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let (bytes, what) = match path.as_deref().filter(|p| std::path::Path::new(p).exists()) {
        Some(p) => (std::fs::read(p).expect("read the recording"), format!("recording {p}")),
        None => {
            let events = synthetic(200_000);
            let file = std::env::temp_dir().join(format!("twtrace-bench-{}.twr", std::process::id()));
            let started = Instant::now();
            let mut rec = Recorder::create(&file, &info(), true).unwrap();
            for e in &events {
                rec.write(e).unwrap();
            }
            rec.finish(&Trailer { events: events.len() as u64, ..Trailer::default() }).unwrap();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "record events/s: {:.0} (encode, compress and write {} events)",
                events.len() as f64 / seconds,
                events.len()
            );
            let bytes = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            (bytes, "synthetic churn, 200000 connections".into())
        }
    };
    let events = read_all(&bytes);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(read_all(&bytes), events);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("{what}: {events} events, {} bytes", bytes.len());
    println!("bytes/event: {:.2}", bytes.len() as f64 / events.max(1) as f64);
    println!("replay events/s: {:.0} (read and decode from memory, best of 5)", events as f64 / best);
}
