//! Userspace memory with 1,000,000 live TIME_WAIT sockets: their births go through the
//! decoder (which tracks each socket by kernel address) and the aggregator (which keeps each
//! for the views), as in `twtrace top`. Prints one line with the figure and the target.
//!
//! Then, in a fresh process (this binary again, so the first figure's heap does not hide the
//! second's), 100,000 distinct destinations: one client-first connection toward each remote
//! address, each leaving a client-side TIME_WAIT socket that holds its port (issue 25). Prints
//! the RSS per destination, and per destination row less the per-socket cost measured first.

#[path = "support/scale_events.rs"]
mod scale_events;

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
const DESTINATIONS: u64 = 100_000;
/// Issue 25's targets.
const TARGET_BYTES_PER_SOCKET: f64 = 200.0;
const TARGET_BYTES_PER_ROW: f64 = 600.0;
/// The argument that runs the destinations' measurement in this process.
const DESTINATIONS_ARG: &str = "--destinations-child";

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok()).unwrap()
}

fn main() {
    // As twtrace's main does: the figures are the tool's.
    twtrace::memory::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == DESTINATIONS_ARG) {
        let per_socket = args.get(i + 1).and_then(|b| b.parse().ok()).unwrap_or(0.0);
        return destinations(per_socket);
    }
    let per_socket = sockets();
    let child = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .args([DESTINATIONS_ARG, &format!("{per_socket:.1}")])
        .output()
        .expect("the destinations' measurement");
    print!("{}", String::from_utf8_lossy(&child.stdout));
    assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
}

/// A million server-side TIME_WAIT sockets; prints the figure and returns bytes per socket.
fn sockets() -> f64 {
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
    let per_socket = (after - before) as f64 * 1024.0 / SOCKETS as f64;
    println!(
        "RSS growth per live TIME_WAIT socket tracked (decoder + aggregator): {per_socket:.0} B (target ≤ \
         {TARGET_BYTES_PER_SOCKET} B: {})",
        if per_socket <= TARGET_BYTES_PER_SOCKET { "met" } else { "MISSED" }
    );
    per_socket
}

/// 100k destinations, each with one live client-side TIME_WAIT socket.
fn destinations(per_socket: f64) {
    let before = rss_kib("VmRSS:");
    let mut aggregator = Aggregator::new(scale_events::settings());
    let mut decoder = scale_events::decoder();
    let now = scale_events::feed(&mut aggregator, &mut decoder, DESTINATIONS, |i| {
        scale_events::client_first(i, DESTINATIONS)
    });
    aggregator.advance(now);
    let snapshot = aggregator.snapshot(now);
    assert_eq!(snapshot.timewait.live, DESTINATIONS, "every client-side socket is tracked");
    let after = rss_kib("VmRSS:");
    let per_destination = (after - before) as f64 * 1024.0 / DESTINATIONS as f64;
    let per_row = per_destination - per_socket;
    println!(
        "RSS growth per destination at {DESTINATIONS} distinct destinations (decoder + aggregator, each with its \
         port search and one live client-side TIME_WAIT socket): {per_destination:.0} B; less {per_socket:.0} B for \
         the socket: {per_row:.0} B per destination row (target ≤ {TARGET_BYTES_PER_ROW} B: {})",
        if per_row <= TARGET_BYTES_PER_ROW { "met" } else { "MISSED" }
    );
}
