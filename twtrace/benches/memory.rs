//! Userspace memory with 1,000,000 live TIME_WAIT sockets: their births go through the
//! decoder (which tracks each socket by kernel address) and the aggregator (which keeps each
//! for the views), as in `twtrace top`. Prints one line with the figure and the target.

use std::collections::HashMap;

use twtrace::{
    aggregate::{Aggregator, Settings},
    probes::{Decoder, record_bytes},
};
use twtrace_common::{
    AF_INET, EventHeader, EventKind, Flow, SCHEMA_VERSION,
    state::{
        StateEvent as RawState,
        tcp_state::{CLOSE, ESTABLISHED, FIN_WAIT1, FIN_WAIT2},
    },
    timewait::{TimeWaitEvent as RawTimeWait, TimerPhase},
};

const SOCKETS: u64 = 1_000_000;
const TARGET_MIB: f64 = 200.0;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok()).unwrap()
}

fn main() {
    let before = rss_kib("VmRSS:");
    let mut decoder = Decoder::new(250, HashMap::new());
    let mut aggregator = Aggregator::new(Settings { max_tw_buckets: Some(2_000_000), ..Settings::default() });
    let mut out = Vec::with_capacity(1024);
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    for i in 0..SOCKETS {
        // Server-side TIME_WAIT sockets toward many clients (distinct 4-tuples), as a busy web
        // server accumulates them.
        let mut flow = Flow { family: AF_INET, sport: 443, dport: 1024 + (i % 60_000) as u16, ..Flow::default() };
        flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        // The server's close() names the owner (→ FIN_WAIT1); the birth takes it over.
        let sk_addr = 0xffff_8881_0000_0000 + i * 2048;
        let state = |pid_tgid: u64, old_state: u8, new_state: u8| RawState {
            header: EventHeader {
                kind: EventKind::State as u16,
                version: SCHEMA_VERSION,
                cpu: (i % 2) as u32,
                ts_ns: 1_000_000_000 + i * 1_000,
                pid_tgid,
                cgroup_id: 1,
                comm: if pid_tgid == 0 { [0; 16] } else { comm },
                ..EventHeader::default()
            },
            sk_addr,
            netns: 4026531840,
            old_state,
            new_state,
            _pad: [0; 2],
            flow,
        };
        decoder.decode(&record_bytes(&state((1234 << 32) | 1234, ESTABLISHED, FIN_WAIT1)), &mut out);
        let raw = RawTimeWait {
            header: EventHeader {
                kind: EventKind::TimeWait as u16,
                version: SCHEMA_VERSION,
                cpu: (i % 2) as u32,
                ts_ns: 1_000_000_000 + i * 1_000,
                ..EventHeader::default()
            },
            tw_addr: 0xffff_8880_0000_0000 + i * 256,
            timeout_jiffies: 15_000,
            netns: 4026531840,
            phase: TimerPhase::Start as u8,
            substate: 6,
            flow,
            ..RawTimeWait::default()
        };
        decoder.decode(&record_bytes(&raw), &mut out);
        decoder.decode(&record_bytes(&state(0, FIN_WAIT2, CLOSE)), &mut out);
        for e in out.drain(..) {
            if let twtrace::event::Event::TimeWait(tw) = &e {
                assert!(tw.owner.is_some(), "the close names the owner: {tw:?}");
            }
            aggregator.apply(&e);
        }
    }
    let snapshot = aggregator.snapshot(1_000_000_000 + SOCKETS * 1_000);
    assert_eq!(snapshot.timewait.live, SOCKETS, "every socket is tracked");
    let after = rss_kib("VmRSS:");
    let state = (after - before) as f64 / 1024.0;
    let rss = after as f64 / 1024.0;
    let peak = rss_kib("VmHWM:") as f64 / 1024.0;
    println!(
        "RSS with {SOCKETS} live TIME_WAIT sockets tracked (decoder + aggregator): {rss:.0} MiB, of which the sockets' \
         state {state:.0} MiB; peak {peak:.0} MiB while the tables grew (target ≤ {TARGET_MIB} MiB RSS: {})",
        if rss <= TARGET_MIB { "met" } else { "MISSED" }
    );
}
