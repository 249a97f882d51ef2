use twtrace_common::{AF_INET, EventHeader, EventKind, Flow, SCHEMA_VERSION};

use super::*;
use crate::probes::{Decoder, record_bytes};

const SEC: u64 = 1_000_000_000;

fn raw(phase: TimerPhase, cpu: u32, ts_ns: u64, tw_addr: u64) -> RawTimeWait {
    let mut flow = Flow { family: AF_INET, sport: 8080, dport: 40000, ..Flow::default() };
    flow.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    flow.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
    RawTimeWait {
        header: EventHeader {
            kind: EventKind::TimeWait as u16,
            version: SCHEMA_VERSION,
            cpu,
            ts_ns,
            ..EventHeader::default()
        },
        tw_addr,
        timeout_jiffies: if phase == TimerPhase::Start { 15_000 } else { 0 },
        netns: 42,
        phase: phase as u8,
        substate: 6,
        flow: if phase == TimerPhase::Start { flow } else { Flow::default() },
        ..RawTimeWait::default()
    }
}

fn run(records: &[RawTimeWait], flush_at: u64) -> (Vec<Event>, Decoder) {
    run_after_closes(&[], records, flush_at)
}

/// The state family's → FIN_WAIT1 record of the connection `birth` will carry, made by
/// `pid_tgid` in close() (the TIME_WAIT owner comes from it).
fn closed_by(birth: &RawTimeWait, pid_tgid: u64, comm: &[u8]) -> twtrace_common::state::StateEvent {
    use twtrace_common::state::tcp_state::{ESTABLISHED, FIN_WAIT1};
    let (ts_ns, sk_addr) = (birth.header.ts_ns - 1000, 0xffff_0000 | birth.tw_addr);
    super::super::fixtures::raw_record(
        ts_ns,
        sk_addr,
        birth.netns,
        birth.flow,
        (ESTABLISHED, FIN_WAIT1),
        Some((pid_tgid, comm)),
    )
}

/// Decodes the state records `closes` (dropping their events), then `records`.
fn run_after_closes(
    closes: &[twtrace_common::state::StateEvent],
    records: &[RawTimeWait],
    flush_at: u64,
) -> (Vec<Event>, Decoder) {
    let mut decoder = Decoder::new(250, Default::default());
    let mut out = Vec::new();
    for c in closes {
        decoder.decode(&record_bytes(c), &mut out);
    }
    out.clear();
    for r in records {
        decoder.decode(&record_bytes(r), &mut out);
    }
    decoder.flush(flush_at, &mut out);
    (out, decoder)
}

fn changes(events: &[Event]) -> Vec<(u64, TimeWaitChange)> {
    events
        .iter()
        .map(|e| match e {
            Event::TimeWait(e) => (e.tw_id, e.change.clone()),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn birth_decodes_flow_timeout_and_substate() {
    let (events, _) = run(&[raw(TimerPhase::Start, 0, SEC, 0xa0)], 2 * SEC);
    let Event::TimeWait(e) = &events[0] else { panic!("{events:?}") };
    assert_eq!(e.flow.unwrap().local.to_string(), "127.0.0.1:8080");
    assert_eq!(e.flow.unwrap().remote.to_string(), "127.0.0.2:40000");
    assert_eq!(e.netns, 42);
    assert_eq!(
        e.change,
        TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None }
    );
}

#[test]
fn deaths_carry_the_births_flow_and_owner_ipv4_and_ipv6() {
    let mut v6 = raw(TimerPhase::Start, 0, SEC, 0xb0);
    v6.flow.family = twtrace_common::AF_INET6;
    v6.flow.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
    v6.flow.daddr = "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let v4 = raw(TimerPhase::Start, 1, SEC, 0xa0);
    let kill = |cpu, addr| RawTimeWait { phase: TimerPhase::Kill as u8, ..raw(TimerPhase::Kill, cpu, 2 * SEC, addr) };
    let (events, d) =
        run_after_closes(&[closed_by(&v4, 7 << 32 | 8, b"nginx")], &[v6, v4, kill(0, 0xb0), kill(1, 0xa0)], 3 * SEC);
    let [Event::TimeWait(b6), Event::TimeWait(b4), Event::TimeWait(d6), Event::TimeWait(d4)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((d6.flow, d6.owner, d6.netns), (b6.flow, b6.owner, 42));
    assert_eq!((d4.flow, d4.owner), (b4.flow, b4.owner));
    assert_eq!(d6.flow.unwrap().remote.to_string(), "[2001:db8::7]:40000");
    assert_eq!(b6.owner, None, "no close was seen for the IPv6 connection");
    assert_eq!(d4.owner.as_ref().map(|p| p.pid), Some(7));
    assert_eq!(d.timewait.live_count(), 0);
    assert!(d.timewait.v6_flows.is_empty(), "IPv6 4-tuples leave with their sockets");
}

#[test]
fn cancel_then_expire_on_same_cpu_is_natural_expiry() {
    let (events, d) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 1, 61 * SEC, 0xa0),
            raw(TimerPhase::Expire, 1, 61 * SEC + 3_000, 0xa0),
        ],
        u64::MAX,
    );
    assert_eq!(
        changes(&events)[1],
        (1, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * SEC + 3_000 })
    );
    assert_eq!(d.timewait.live_count(), 0);
}

#[test]
fn cancel_alone_is_a_kill_once_the_grace_period_passes() {
    let records = [raw(TimerPhase::Start, 0, SEC, 0xa0), raw(TimerPhase::Cancel, 0, 5 * SEC, 0xa0)];
    let (events, _) = run(&records, 5 * SEC + CANCEL_GRACE_NS / 2);
    assert_eq!(events.len(), 1, "still undecided inside the grace period");
    let (events, _) = run(&records, 5 * SEC + CANCEL_GRACE_NS + 1);
    assert_eq!(changes(&events)[1], (1, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 4 * SEC }));
}

#[test]
fn another_event_on_the_same_cpu_decides_a_kill_at_once() {
    let (events, _) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 0, 2 * SEC, 0xa0),
            raw(TimerPhase::Start, 0, 2 * SEC + 10, 0xb0),
        ],
        2 * SEC + 20,
    );
    let c = changes(&events);
    assert_eq!(c[1], (1, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: SEC }));
    assert!(matches!(c[2], (2, TimeWaitChange::Birth { .. })));
}

#[test]
fn cancel_then_start_of_same_socket_is_a_rearm_not_a_death() {
    let (events, d) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 1, 2 * SEC, 0xa0),
            raw(TimerPhase::Start, 1, 2 * SEC + 2_000, 0xa0),
        ],
        u64::MAX,
    );
    let c = changes(&events);
    assert_eq!(c.len(), 2);
    assert!(matches!(c[1], (1, TimeWaitChange::Rearm { timeout_ms: 60_000, .. })));
    assert_eq!(d.timewait.live_count(), 1);
}

#[test]
fn a_slow_rearm_is_still_a_rearm_but_another_cpu_record_means_a_kill() {
    // Descheduled vCPU: 3 ms between mod_timer's cancel and start.
    let (events, _) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 1, 2 * SEC, 0xa0),
            raw(TimerPhase::Start, 1, 2 * SEC + 3_000_000, 0xa0),
        ],
        u64::MAX,
    );
    assert!(matches!(changes(&events)[1], (1, TimeWaitChange::Rearm { .. })));
    let mut decoder = Decoder::new(250, Default::default());
    let mut out = Vec::new();
    decoder.decode(&record_bytes(&raw(TimerPhase::Start, 0, SEC, 0xa0)), &mut out);
    decoder.decode(&record_bytes(&raw(TimerPhase::Cancel, 1, 2 * SEC, 0xa0)), &mut out);
    let mut state = super::super::fixtures::raw_record(2 * SEC + 5, 0, 0, Flow::default(), (0, 0), None);
    state.header.cpu = 1;
    decoder.decode(&record_bytes(&state), &mut out);
    assert!(
        matches!(&out[1], Event::TimeWait(e) if e.change == TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: SEC }),
        "{out:?}"
    );
}

#[test]
fn a_start_at_an_address_whose_cancel_is_pending_on_another_cpu_is_a_new_socket() {
    // The kill's cancel on CPU 1, and the freed memory already reused on CPU 0 for the
    // same 4-tuple (the client reconnected from the same port) before CPU 1 reported
    // anything else.
    let (events, d) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 1, 2 * SEC, 0xa0),
            raw(TimerPhase::Start, 0, 2 * SEC + 50_000, 0xa0),
        ],
        2 * SEC + 60_000,
    );
    let c = changes(&events);
    assert_eq!(c[1], (1, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: SEC }), "{c:?}");
    assert!(matches!(c[2], (2, TimeWaitChange::Birth { .. })), "{c:?}");
    assert_eq!(d.timewait.live_count(), 1);
}

#[test]
fn a_start_with_another_four_tuple_at_a_live_address_is_a_new_socket() {
    // The first socket's cancel was never seen (a skipped program run).
    let mut second = raw(TimerPhase::Start, 0, 3 * SEC, 0xa0);
    second.flow.dport = 40001;
    let (events, _) = run(&[raw(TimerPhase::Start, 0, SEC, 0xa0), second], u64::MAX);
    let c = changes(&events);
    assert_eq!(c[1], (1, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 2 * SEC }), "{c:?}");
    assert!(matches!(c[2], (2, TimeWaitChange::Birth { .. })), "{c:?}");
}

#[test]
fn reused_address_after_a_kill_is_a_new_socket() {
    let (events, _) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Cancel, 0, 2 * SEC, 0xa0),
            raw(TimerPhase::Start, 0, 3 * SEC, 0xa0),
        ],
        3 * SEC,
    );
    let c = changes(&events);
    assert!(matches!(c[1], (1, TimeWaitChange::Death { reason: DeathReason::Killed, .. })));
    assert!(matches!(c[2], (2, TimeWaitChange::Birth { .. })));
}

#[test]
fn explicit_phases_of_the_function_backends() {
    let (events, d) = run(
        &[
            raw(TimerPhase::Start, 0, SEC, 0xa0),
            raw(TimerPhase::Rearm, 1, 2 * SEC, 0xa0),
            raw(TimerPhase::Kill, 1, 3 * SEC, 0xa0),
            raw(TimerPhase::Start, 0, 4 * SEC, 0xb0),
            raw(TimerPhase::Expire, 0, 64 * SEC, 0xb0),
        ],
        u64::MAX,
    );
    let c = changes(&events);
    assert!(matches!(c[1], (1, TimeWaitChange::Rearm { .. })));
    assert_eq!(c[2], (1, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 2 * SEC }));
    assert_eq!(c[4], (2, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * SEC }));
    assert_eq!(d.timewait.untracked_deaths, 0);
}

#[test]
fn owner_is_carried_from_the_close_to_birth_and_death() {
    let birth = raw(TimerPhase::Start, 0, SEC, 0xa0);
    let close = closed_by(&birth, (4242 << 32) | 4243, b"curl");
    let (events, _) = run_after_closes(&[close], &[birth, raw(TimerPhase::Kill, 0, 2 * SEC, 0xa0)], u64::MAX);
    assert_eq!(events.len(), 2);
    for e in &events {
        let Event::TimeWait(e) = e else { panic!() };
        let owner = e.owner.as_ref().expect("owner");
        assert_eq!((owner.pid, owner.tid, owner.comm.as_str()), (4242, 4243, "curl"));
    }
}

#[test]
fn deaths_of_sockets_born_before_start_are_counted_not_invented() {
    let (events, d) =
        run(&[raw(TimerPhase::Cancel, 0, SEC, 0xc0), raw(TimerPhase::Expire, 0, SEC + 5, 0xc0)], u64::MAX);
    assert!(events.is_empty());
    assert_eq!(d.timewait.untracked_deaths, 1);
}

#[test]
fn malformed_and_foreign_records_are_counted() {
    let mut d = Decoder::new(250, Default::default());
    let mut out = Vec::new();
    d.decode(&[1, 2, 3], &mut out);
    let mut r = raw(TimerPhase::Start, 0, SEC, 0xa0);
    r.header.version = SCHEMA_VERSION + 1;
    d.decode(&record_bytes(&r), &mut out);
    let mut r = raw(TimerPhase::Start, 0, SEC, 0xa0);
    r.header.kind = 999;
    d.decode(&record_bytes(&r), &mut out);
    let bytes = record_bytes(&raw(TimerPhase::Start, 0, SEC, 0xa0));
    d.decode(&bytes[..bytes.len() - 1], &mut out);
    assert!(out.is_empty());
    assert_eq!((d.stats.records, d.stats.malformed, d.stats.wrong_version), (4, 3, 1));
}

/// A live socket keeps 32 bits of its id and of its birth in microseconds: ids past 2^32 and
/// a birth just before the microsecond clock wraps still come back whole.
#[test]
fn ids_and_lifetimes_survive_the_compact_live_record() {
    let mut tracker = Tracker::new(250);
    tracker.next_id = (1 << 32) - 1;
    let mut owners = crate::probes::owners::Owners::new();
    let mut out = Vec::new();
    // Born 1 ms before the 2^32 µs boundary, and after it.
    let wrap_ns = (1u64 << 32) * 1_000;
    let born = [wrap_ns - 1_000_000, wrap_ns + 5_000];
    for (k, ts) in born.iter().enumerate() {
        tracker.on_record(&raw(TimerPhase::Start, 0, *ts, 0xb0 + k as u64), &mut owners, &mut out);
    }
    for (k, ts) in born.iter().enumerate() {
        tracker.on_record(&raw(TimerPhase::Kill, 0, ts + 60 * SEC, 0xb0 + k as u64), &mut owners, &mut out);
    }
    assert_eq!(
        changes(&out),
        vec![
            (u64::from(u32::MAX), out_birth(&out[0])),
            (1 << 32, out_birth(&out[1])),
            (u64::from(u32::MAX), TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 60 * SEC }),
            (1 << 32, TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 60 * SEC }),
        ]
    );
    // A death stamped before its birth (another CPU's clock read first) lived 0, not 71 minutes.
    assert_eq!(lifetime_ns(micros(10 * SEC), 10 * SEC - 2_000), 0);
}

fn out_birth(e: &Event) -> TimeWaitChange {
    match e {
        Event::TimeWait(t) => t.change.clone(),
        _ => panic!("{e:?}"),
    }
}

/// Origins (namespace, owner) leave with the last socket holding them: a new process per
/// connection must not grow the tracker for the rest of the run.
#[test]
fn origins_are_forgotten_with_their_last_socket() {
    let mut tracker = Tracker::new(250);
    let mut owners = crate::probes::owners::Owners::new();
    let mut out = Vec::new();
    for round in 0..2u64 {
        for k in 0..1_000u64 {
            // A distinct origin each (its namespace here; a new process's would do the same).
            let mut born = raw(TimerPhase::Start, 0, (10 * round + 1) * SEC + k, 0x1000 + k);
            born.netns = 1_000 + k as u32;
            tracker.on_record(&born, &mut owners, &mut out);
        }
        assert_eq!(tracker.origins_held(), 1_000);
        for k in 0..1_000u64 {
            tracker.on_record(&raw(TimerPhase::Kill, 0, (10 * round + 2) * SEC + k, 0x1000 + k), &mut owners, &mut out);
        }
        assert_eq!(tracker.origins_held(), 0, "round {round}");
    }
    assert_eq!(tracker.origins.len(), 1_000, "numbers reused, not grown");
    // Each death still names its own socket's namespace.
    let deaths: Vec<u32> = out
        .iter()
        .filter_map(|e| match e {
            Event::TimeWait(t) if matches!(t.change, TimeWaitChange::Death { .. }) => Some(t.netns),
            _ => None,
        })
        .collect();
    assert_eq!(deaths.len(), 2_000);
    assert_eq!(deaths[..3], [1_000, 1_001, 1_002]);
    assert_eq!(deaths[1_000..1_003], [1_000, 1_001, 1_002]);
}
