use std::net::SocketAddr;

use super::*;
use crate::event::{
    DeathReason, DropClass, DropEvent, Event, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent,
    TimeWaitChange, TimeWaitEvent, TimeWaitSubstate,
};

const S: u64 = 1_000_000_000;
const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2:80";

fn flow(local: &str, remote: &str) -> SocketFlow {
    SocketFlow { local: local.parse().unwrap(), remote: remote.parse().unwrap() }
}

fn curl() -> Option<Process> {
    Some(Process { pid: 4242, tid: 4242, comm: "curl".into(), cgroup_id: 9 })
}

fn state(ts: u64, sk: u64, old: u8, new: u8, f: SocketFlow) -> Event {
    Event::State(StateEvent {
        ts_ns: ts,
        sk_addr: sk,
        netns: 1,
        old_state: old,
        new_state: new,
        flow: Some(f),
        task: curl(),
    })
}

fn tw(ts: u64, id: u64, f: SocketFlow, change: TimeWaitChange) -> Event {
    Event::TimeWait(TimeWaitEvent { ts_ns: ts, tw_id: id, flow: Some(f), netns: 1, owner: curl(), change })
}

fn birth() -> TimeWaitChange {
    TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None }
}

/// One non-keep-alive request: connect, close first (client-side TIME_WAIT holds the port).
fn request(agg: &mut Aggregator, ts: u64, i: u64, port: u16) {
    let f = flow(&format!("{CLIENT}:{port}"), SERVER);
    let connecting = flow(&format!("{CLIENT}:0"), SERVER);
    agg.apply(&state(ts, i, 7, 2, connecting));
    agg.apply(&state(ts, i, 2, 1, f));
    agg.apply(&state(ts, i, 1, 4, f));
    agg.apply(&tw(ts, i, f, birth()));
    agg.apply(&state(ts, i, 5, 7, f));
}

fn settings(range: (u16, u16)) -> Settings {
    Settings { port_range: range, max_tw_buckets: Some(262_144), top: 5 }
}

/// With the TIME_WAIT family on, the kernel leaves out the → CLOSE a birth stands for: port
/// accounting must come out the same with and without it.
#[test]
fn port_accounting_is_the_same_whether_the_close_after_a_birth_is_reported_or_not() {
    let figures = |with_close: bool| {
        let mut agg = Aggregator::new(settings((32_768, 32_867)));
        for i in 0..20u64 {
            let port = 32_768 + i as u16;
            let f = flow(&format!("{CLIENT}:{port}"), SERVER);
            agg.apply(&state(S + i, i, 7, 2, flow(&format!("{CLIENT}:0"), SERVER)));
            agg.apply(&state(S + i, i, 2, 1, f));
            agg.apply(&state(S + i, i, 1, 4, f));
            agg.apply(&tw(S + i, i, f, birth()));
            if with_close {
                agg.apply(&state(S + i, i, 5, 7, f));
            }
        }
        // Half of them die.
        for i in 0..10u64 {
            let f = flow(&format!("{CLIENT}:{}", 32_768 + i as u16), SERVER);
            let death = TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * S };
            agg.apply(&tw(61 * S, i, f, death));
        }
        let snap = snap(&mut agg, 61 * S);
        let d = &snap.port_space.destinations[0];
        (d.in_use, snap.timewait.live, agg.connected.len(), agg.client_flows.len())
    };
    assert_eq!(figures(true), (10, 10, 0, 0));
    assert_eq!(figures(false), (10, 10, 0, 0));
}

#[test]
fn single_destination_client_fills_its_range_and_projects_exhaustion() {
    let mut agg = Aggregator::new(settings((32_768, 32_867))); // 100 ports
    // 10 requests per second for 5 seconds.
    for i in 0..50u64 {
        request(&mut agg, 100 * S + i * S / 10, i, 32_768 + i as u16);
    }
    let snap = snap(&mut agg, 105 * S);
    assert_eq!(snap.timewait.live, 50);
    assert_eq!(snap.timewait.births_total, 50);
    let d = &snap.port_space.destinations[0];
    assert_eq!(
        (d.destination.local.to_string(), d.destination.remote.to_string()),
        (CLIENT.to_string(), SERVER.to_string())
    );
    assert_eq!(d.in_use, 50, "TIME_WAIT sockets hold their ports; closed sockets were released");
    assert_eq!(d.range, 100);
    assert!((d.utilisation - 0.5).abs() < 1e-9);
    assert!((d.connects_per_s - 10.0).abs() < 0.5, "{}", d.connects_per_s);
    // Taken 10/s (ESTABLISHED, then TIME_WAIT), freed 10/s (CLOSE): net growth 10/s.
    assert!((d.net_growth_per_s - 10.0).abs() < 0.5, "{}", d.net_growth_per_s);
    let eta = d.seconds_to_exhaustion.expect("growing");
    assert!((eta - 5.0).abs() < 0.3, "50 free ports at 10/s: {eta}");
    assert_eq!(snap.timewait.by_owner, vec![Group { key: "curl[4242]".into(), count: 50 }]);
    assert_eq!(snap.timewait.by_remote, vec![Group { key: "10.0.0.2".into(), count: 50 }]);
}

#[test]
fn deaths_release_ports_and_feed_lifetimes() {
    let mut agg = Aggregator::new(settings((32_768, 32_867)));
    for i in 0..10u64 {
        request(&mut agg, 100 * S, i, 32_768 + i as u16);
    }
    for i in 0..10u64 {
        let f = flow(&format!("{CLIENT}:{}", 32_768 + i), SERVER);
        let lifetime = 60 * S + i * 100_000_000; // 60.0 .. 60.9 s
        let reason = if i == 9 { DeathReason::Killed } else { DeathReason::Expired };
        agg.apply(&tw(100 * S + lifetime, i, f, TimeWaitChange::Death { reason, lifetime_ns: lifetime }));
    }
    let snap = snap(&mut agg, 161 * S);
    assert_eq!(snap.timewait.live, 0);
    assert_eq!((snap.timewait.expired_total, snap.timewait.killed_total), (9, 1));
    let p50 = snap.timewait.lifetime_p50_ms.unwrap();
    assert!((p50 - 60_400.0).abs() / 60_400.0 < 1.0 / 32.0, "{p50}");
    assert_eq!(snap.timewait.lifetime_max_ms, Some(60_900.0));
    assert!(snap.port_space.destinations.is_empty(), "an idle destination without ports in use is not shown");
}

#[test]
fn server_side_time_wait_on_an_ephemeral_listening_port_holds_no_connect_port() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    agg.seed(S, &[ExistingSocket { netns: 1, flow: flow("127.0.0.1:41234", "0.0.0.0:0"), state: 10, expires_ms: 0 }]);
    // The server (listening on 41234, inside the range) closes first.
    agg.apply(&tw(2 * S, 1, flow("127.0.0.1:41234", "127.0.0.2:43001"), birth()));
    let snap = snap(&mut agg, 3 * S);
    assert_eq!(snap.timewait.live, 1);
    assert!(snap.port_space.destinations.is_empty(), "{:?}", snap.port_space.destinations);
}

#[test]
fn server_side_time_wait_holds_no_ephemeral_port() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    agg.apply(&tw(S, 1, flow("10.0.0.2:80", "10.0.0.1:40000"), birth()));
    let snap = snap(&mut agg, 2 * S);
    assert_eq!(snap.timewait.live, 1);
    assert!(snap.port_space.destinations.is_empty(), "{:?}", snap.port_space.destinations);
}

#[test]
fn existing_sockets_count_from_the_first_frame_and_leave_on_their_timer() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let existing: Vec<ExistingSocket> = (0..3)
        .map(|i| ExistingSocket {
            netns: 1,
            flow: flow(&format!("{CLIENT}:{}", 40_000 + i), SERVER),
            state: 6,
            expires_ms: 10_000,
        })
        .chain([ExistingSocket { netns: 1, flow: flow(&format!("{CLIENT}:41000"), SERVER), state: 1, expires_ms: 0 }])
        .collect();
    agg.seed(100 * S, &existing);
    let first = snap(&mut agg, 100 * S);
    assert_eq!(first.timewait.live, 3);
    assert_eq!(first.port_space.destinations[0].in_use, 4);
    assert_eq!(first.timewait.by_owner[0].key, "(before start)");
    // The established one closes (seen by flow), the TIME_WAIT ones expire after 10 s.
    agg.apply(&state(105 * S, 77, 1, 7, flow(&format!("{CLIENT}:41000"), SERVER)));
    let later = snap(&mut agg, 111 * S);
    assert_eq!(later.timewait.live, 0);
    assert_eq!(later.port_space.destinations.len(), 0, "nothing in use any more");
}

#[test]
fn failures_by_process_and_search_cost() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let remote: SocketAddr = SERVER.parse().unwrap();
    for i in 0..4u64 {
        agg.apply(&Event::PortSearch(PortSearchEvent {
            ts_ns: S + i,
            op: SearchOp::Connect,
            duration_ns: 1_000 * (i + 1),
            errno: if i < 3 { 99 } else { 0 },
            candidates: Some(28_232),
            approximate: false,
            netns: 1,
            remote: Some(remote),
            local: Some(format!("{CLIENT}:0").parse().unwrap()),
            process: curl(),
        }));
    }
    let snap = snap(&mut agg, 2 * S);
    assert_eq!(
        snap.port_space.failures,
        vec![FailureView {
            netns: 1,
            namespace: "1".into(),
            process: "curl[4242]".into(),
            command: "curl".into(),
            processes: 1,
            example_pid: 4242,
            error: "EADDRNOTAVAIL".into(),
            count: 3
        }]
    );
    assert_eq!(snap.port_space.failures_total, [("EADDRNOTAVAIL".to_owned(), 3)]);
    let d = &snap.port_space.destinations[0];
    assert_eq!(d.failures, 3);
    // Histogram precision: within 1/32 below the true value.
    let p50 = d.candidates_p50.unwrap();
    assert!(p50 <= 28_232 && p50 as f64 >= 28_232.0 * (1.0 - 1.0 / 32.0), "{p50}");
    let p99 = d.search_p99_us.unwrap();
    assert!((4.0 * (1.0 - 1.0 / 32.0)..=4.0).contains(&p99), "{p99}");
}

#[test]
fn paws_sources_show_the_nat_signature() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let drop = |ts: u64, remote: &str| {
        Event::Drop(DropEvent {
            ts_ns: ts,
            reason: "TCP_RFC7323_PAWS".into(),
            reason_code: 36,
            netns: 1,
            flow: Some(flow("10.0.0.2:443", remote)),
            tcp_flags: 0x02,
            seq: 1,
            ack_seq: 0,
            outgoing: false,
        })
    };
    for port in 50_000..50_012u16 {
        agg.apply(&drop(S, &format!("198.51.100.7:{port}"))); // 12 flows behind one NAT address
    }
    agg.apply(&drop(S, "203.0.113.9:40000"));
    agg.apply(&drop(S, "203.0.113.9:40000"));
    let snap = snap(&mut agg, 2 * S);
    assert_eq!(snap.paws.drops_total, 14);
    assert_eq!(
        snap.paws.sources[0],
        SourceView { netns: 1, source: "198.51.100.7".parse().unwrap(), drops: 12, flows: 12 }
    );
    assert_eq!(
        snap.paws.sources[1],
        SourceView { netns: 1, source: "203.0.113.9".parse().unwrap(), drops: 2, flows: 1 }
    );
    assert_eq!(snap.paws.by_reason[0].reason, "TCP_RFC7323_PAWS");
    assert_eq!(snap.paws.recent.len(), 8, "bounded");
}

/// Netfilter's and the accept queue's drops count in their namespace, by reason, apart from
/// PAWS: SYNs (connection attempts) counted, those this host sent told apart, and the service
/// end named (a sent SYN's remote end, a received one's local end).
#[test]
fn drops_that_cost_connections_count_in_their_namespace_apart_from_paws() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let drop = |reason: &str, local: &str, remote: &str, tcp_flags: u8, outgoing: bool| {
        Event::Drop(DropEvent {
            ts_ns: S,
            reason: reason.into(),
            reason_code: 14,
            netns: 7,
            flow: Some(flow(local, remote)),
            tcp_flags,
            seq: 1,
            ack_seq: 0,
            outgoing,
        })
    };
    for port in 40_000..40_003u16 {
        agg.apply(&drop("NETFILTER_DROP", &format!("10.0.0.1:{port}"), "10.0.0.9:5432", 0x02, true));
    }
    agg.apply(&drop("NETFILTER_DROP", "10.0.0.1:8080", "192.0.2.1:1234", 0x02, false));
    agg.apply(&drop("NETFILTER_DROP", "10.0.0.1:8080", "192.0.2.1:1234", 0x12, false)); // a SYN-ACK
    agg.apply(&drop("TCP_LISTEN_OVERFLOW", "10.0.0.1:8080", "192.0.2.2:999", 0x10, false));
    let snap = snap(&mut agg, 2 * S);
    assert_eq!(snap.paws.drops_total, 0, "none of these is PAWS");
    let ns = snap.namespaces.iter().find(|n| n.netns == 7).expect("its namespace has something to show");
    let nf = &ns.setup_drops[0];
    assert_eq!((nf.reason.as_str(), nf.class), ("NETFILTER_DROP", DropClass::Netfilter));
    assert_eq!((nf.total, nf.syns, nf.syns_sent), (5, 4, 3));
    let service = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    assert_eq!(nf.services, vec![(service("10.0.0.9:5432"), 3), (service("10.0.0.1:8080"), 2)]);
    let listen = &ns.setup_drops[1];
    assert_eq!((listen.class, listen.total, listen.syns), (DropClass::ListenOverflow, 1, 0));
}

/// The views at `now`, the model's clock moved there first.
fn snap(agg: &mut Aggregator, now: u64) -> Snapshot {
    agg.advance(now);
    agg.snapshot(now)
}

#[test]
fn a_namespace_that_goes_takes_its_sockets_from_before_start_with_it() {
    use crate::event::NamespaceDescription;
    let mut agg = Aggregator::new(Settings::default());
    let described = |live| NamespaceDescription { netns: 7, name: "pod-a".into(), sysctls: None, live };
    agg.describe(&described(true));
    let existing: Vec<ExistingSocket> = (0..3)
        .map(|i| ExistingSocket {
            netns: 7,
            flow: flow(&format!("10.0.0.1:{}", 40_000 + i), "10.0.0.2:80"),
            state: 6,
            expires_ms: 50_000,
        })
        .collect();
    agg.seed(S, &existing);
    let before = snap(&mut agg, 2 * S);
    assert_eq!((before.timewait.live, before.namespaces.len()), (3, 1));
    assert_eq!(before.port_space.destinations[0].in_use, 3);
    // `ip netns del`: the kernel destroys its TIME_WAIT sockets; no death is traced for
    // those born before start.
    agg.describe(&described(false));
    let after = snap(&mut agg, 3 * S);
    assert_eq!(after.timewait.live, 0);
    assert!(after.namespaces.is_empty(), "a gone namespace has no view now: {:?}", after.namespaces);
    assert!(after.port_space.destinations.iter().all(|d| d.in_use == 0));
}

/// The probes attach before the sockets are read at start, so a socket made in between is
/// both in the read and in the stream (told after the read): it holds one port, not two.
#[test]
fn a_socket_both_read_at_start_and_told_by_the_stream_counts_once() {
    let in_use = |agg: &mut Aggregator, at: u64| {
        snap(agg, at).port_space.destinations.first().map_or(0, |d: &DestinationView| d.in_use)
    };
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let (a, b, c) = (
        flow(&format!("{CLIENT}:40001"), SERVER),
        flow(&format!("{CLIENT}:40002"), SERVER),
        flow(&format!("{CLIENT}:40003"), SERVER),
    );
    agg.seed(
        S,
        &[
            // Connected just before the read: its connect is in the ring buffer.
            ExistingSocket { netns: 1, flow: a, state: tcp_state::ESTABLISHED, expires_ms: 0 },
            // Connected and closed first just before the read: its birth too.
            ExistingSocket { netns: 1, flow: b, state: tcp_state::TIME_WAIT, expires_ms: 60_000 },
            // Connected long before the start; it closes first later.
            ExistingSocket { netns: 1, flow: c, state: tcp_state::ESTABLISHED, expires_ms: 0 },
        ],
    );
    assert_eq!(in_use(&mut agg, S), 3);
    agg.apply(&state(S / 2, 1, tcp_state::SYN_SENT, tcp_state::ESTABLISHED, a));
    assert_eq!(in_use(&mut agg, S), 3, "a: read and connected: one port");
    agg.apply(&state(S / 2, 2, tcp_state::SYN_SENT, tcp_state::ESTABLISHED, b));
    agg.apply(&tw(S / 2, 2, b, birth()));
    assert_eq!(in_use(&mut agg, S), 3, "b: read as TIME_WAIT and born: one port");
    agg.apply(&tw(2 * S, 3, c, birth()));
    assert_eq!(in_use(&mut agg, 2 * S), 3, "c: its TIME_WAIT keeps the port it held");
    assert_eq!(snap(&mut agg, 2 * S).timewait.live, 2, "b and c, each once");
    agg.apply(&tw(62 * S, 3, c, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * S }));
    assert_eq!(in_use(&mut agg, 62 * S), 2, "c's port is free when its TIME_WAIT ends");
}

/// Each port-holding TIME_WAIT socket counts toward its destination's peer timestamps: those
/// whose peer sent them, those whose peer did not; births not read (older recordings) and
/// server-side sockets (no port held) in neither.
#[test]
fn peer_timestamps_are_counted_per_destination_from_port_holding_births() {
    let mut agg = Aggregator::new(settings((32_768, 32_867)));
    let other = "10.0.0.3:80";
    for i in 0..6u64 {
        let (remote, timestamps) = match i {
            0..=2 => (SERVER, Some(true)),
            3 => (SERVER, None),
            _ => (other, Some(false)),
        };
        let port = 32_768 + i as u16;
        let f = flow(&format!("{CLIENT}:{port}"), remote);
        agg.apply(&state(S + i, i, 7, 2, flow(&format!("{CLIENT}:0"), remote)));
        agg.apply(&state(S + i, i, 2, 1, f));
        agg.apply(&state(S + i, i, 1, 4, f));
        let birth = TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps };
        agg.apply(&tw(S + i, i, f, birth));
    }
    // A server's TIME_WAIT socket holds no ephemeral port: not counted.
    let served = flow("10.0.0.1:80", "10.0.0.9:5555");
    let birth =
        TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: Some(true) };
    agg.apply(&tw(2 * S, 99, served, birth));
    let snap = snap(&mut agg, 3 * S);
    let of = |remote: &str| {
        let d = snap.port_space.destinations.iter().find(|d| d.destination.remote.to_string() == remote).unwrap();
        d.peer_timestamps
    };
    assert_eq!(of(SERVER), Some(PeerTimestamps { seen: 3, absent: 0 }));
    assert_eq!(of(other), Some(PeerTimestamps { seen: 0, absent: 2 }));
}

fn lost(ts: u64, total: u64) -> Event {
    Event::Lost(crate::event::LostEvent { ts_ns: ts, new: total, total })
}

fn death(ts: u64, id: u64, f: SocketFlow) -> Event {
    tw(ts, id, f, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * S })
}

fn kernel_tw(port: u16) -> ExistingSocket {
    ExistingSocket { netns: 1, flow: flow(&format!("{CLIENT}:{port}"), SERVER), state: 6, expires_ms: 30_000 }
}

/// Deaths lost: the model keeps sockets the kernel no longer has until a resync drops them;
/// births lost: it lacks sockets the kernel has until a resync adds them. After the resync
/// the live count is the kernel's, the ports too, and the views say what was repaired.
#[test]
fn a_resync_after_loss_makes_the_live_sockets_and_ports_the_kernels() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    for (i, port) in [40_001u16, 40_002, 40_003].into_iter().enumerate() {
        request(&mut agg, S, i as u64 + 1, port);
    }
    assert_eq!(snap(&mut agg, S).port_space.destinations[0].in_use, 3);
    // 40_001's death and 40_004's whole life (connect, birth) were in lost records.
    agg.apply(&lost(2 * S, 5));
    let before = snap(&mut agg, 2 * S);
    assert!(before.approximate);
    assert_eq!(before.unrepaired_lost, 5);
    assert!(!agg.resync_due(2 * S + S / 2), "not while the loss may go on");
    assert!(agg.resync_due(3 * S));
    agg.resync(3 * S, Some(&[kernel_tw(40_002), kernel_tw(40_003), kernel_tw(40_004)]));
    let after = snap(&mut agg, 3 * S);
    assert!(!after.approximate);
    assert_eq!(after.timewait.live, 3);
    assert_eq!(after.port_space.destinations[0].in_use, 3, "40_002, 40_003 and 40_004");
    let r = after.last_resync.expect("the resync is shown");
    assert_eq!((r.count, r.repaired_lost, r.timewait_model, r.timewait_kernel), (1, 5, 3, 3));
    assert_eq!((r.removed, r.added), (1, 1));
    assert!(!agg.resync_due(4 * S), "nothing lost since");
    // The socket added by the read leaves at its timer (its death is not in the stream) ...
    let later = snap(&mut agg, 3 * S + 30 * S);
    assert_eq!(later.timewait.live, 2);
    // ... and one seen born leaves at its death, as before.
    agg.apply(&death(34 * S, 2, flow(&format!("{CLIENT}:40002"), SERVER)));
    let end = snap(&mut agg, 34 * S);
    assert_eq!(end.timewait.live, 1);
    assert_eq!(end.port_space.destinations[0].in_use, 1);
}

/// Events queued before the read are applied after it: each must find the read's work done
/// and count nothing twice.
#[test]
fn events_queued_before_a_resync_count_once_after_it() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    agg.apply(&lost(S, 1));
    agg.resync(2 * S, Some(&[kernel_tw(40_010)]));
    assert_eq!(snap(&mut agg, 2 * S).timewait.live, 1);
    // The birth of the socket the read found, applied after the read.
    request(&mut agg, 2 * S, 10, 40_010);
    let s = snap(&mut agg, 2 * S);
    assert_eq!(s.timewait.live, 1, "one socket, read and told");
    assert_eq!(s.port_space.destinations[0].in_use, 1);
    assert_eq!(s.timewait.by_owner[0].key, "curl[4242]", "the stream's owner replaces the read's");
}

/// A 4-tuple reused while the earlier socket's death was lost: the model holds two records
/// for one kernel socket until the resync keeps only the newest.
#[test]
fn a_resync_keeps_one_socket_per_four_tuple() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    request(&mut agg, S, 1, 40_020);
    request(&mut agg, 2 * S, 2, 40_020);
    assert_eq!(snap(&mut agg, 2 * S).timewait.live, 2);
    agg.apply(&lost(3 * S, 1));
    agg.resync(4 * S, Some(&[kernel_tw(40_020)]));
    let s = snap(&mut agg, 4 * S);
    assert_eq!(s.timewait.live, 1);
    assert_eq!(s.port_space.destinations[0].in_use, 1);
    agg.apply(&death(5 * S, 2, flow(&format!("{CLIENT}:40020"), SERVER)));
    assert_eq!(snap(&mut agg, 5 * S).timewait.live, 0, "the newest was the one kept");
}

/// The same where the model's 32-bit ids wrap between the two births (four billion births
/// into a run): the newest is the one born last, not the one with the larger key.
#[test]
fn a_resync_keeps_the_newest_socket_across_the_ids_wrap() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let (older, newer) = (u64::from(u32::MAX), u64::from(u32::MAX) + 2);
    request(&mut agg, S, older, 40_021);
    request(&mut agg, 2 * S, newer, 40_021);
    assert_eq!(snap(&mut agg, 2 * S).timewait.live, 2, "distinct sockets");
    agg.apply(&lost(3 * S, 1));
    agg.resync(4 * S, Some(&[kernel_tw(40_021)]));
    assert_eq!(snap(&mut agg, 4 * S).timewait.live, 1);
    agg.apply(&death(5 * S, newer, flow(&format!("{CLIENT}:40021"), SERVER)));
    assert_eq!(snap(&mut agg, 5 * S).timewait.live, 0, "the newest was the one kept");
}

/// A connection whose close was lost holds its port until a read shows it gone; a failed
/// read changes nothing and is not retried at once.
#[test]
fn a_resync_releases_the_ports_of_connections_whose_close_was_lost() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    let f = flow(&format!("{CLIENT}:40030"), SERVER);
    agg.apply(&state(S, 9, 7, 2, flow(&format!("{CLIENT}:0"), SERVER)));
    agg.apply(&state(S, 9, 2, 1, f));
    agg.apply(&lost(2 * S, 1));
    agg.resync(3 * S, None);
    assert!(snap(&mut agg, 3 * S).approximate, "a failed read repairs nothing");
    assert!(!agg.resync_due(4 * S), "and waits before it tries again");
    assert!(agg.resync_due(8 * S));
    agg.resync(8 * S, Some(&[]));
    let s = snap(&mut agg, 8 * S);
    assert!(s.port_space.destinations.iter().all(|d| d.in_use == 0), "{:?}", s.port_space.destinations);
    assert_eq!(s.model.connections, 0);
}

/// The views read kept counts: a million sockets must not be walked per frame, and the
/// counts must follow sockets out as well as in.
#[test]
fn time_wait_groups_follow_births_deaths_and_expiries() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    agg.seed(S, &[kernel_tw(41_000), kernel_tw(41_001)]);
    request(&mut agg, S, 1, 40_040);
    let s = snap(&mut agg, S);
    assert_eq!(
        s.timewait.by_owner.iter().map(|g| (g.key.as_str(), g.count)).collect::<Vec<_>>(),
        [("(before start)", 2), ("curl[4242]", 1)]
    );
    assert_eq!(s.timewait.by_command[0].processes, 0, "sockets read have no process");
    assert_eq!((s.timewait.by_command[1].command.as_str(), s.timewait.by_command[1].processes), ("curl", 1));
    assert_eq!(s.timewait.by_remote[0].count, 3);
    agg.apply(&death(2 * S, 1, flow(&format!("{CLIENT}:40040"), SERVER)));
    let s = snap(&mut agg, 40 * S);
    assert!(s.timewait.by_owner.is_empty() && s.timewait.by_remote.is_empty() && s.timewait.by_command.is_empty());
    assert!(s.timewait.by_namespace.is_empty() && s.timewait.by_local.is_empty());
}

/// Past the row limit the least recently active destinations that hold no port go, their
/// counts kept; rows holding ports stay whatever the limit, and evicted numbers are reused.
#[test]
fn rows_beyond_the_limit_are_evicted_least_recent_first_and_counted() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    agg.limit_rows(20);
    // Ten destinations hold a port each (client-side TIME_WAIT) ...
    for i in 0..10u16 {
        let f = flow(&format!("{CLIENT}:{}", 40_000 + i), &format!("10.1.0.{i}:80"));
        agg.apply(&state(S, u64::from(i), 7, 2, f));
        agg.apply(&state(S, u64::from(i), 2, 1, f));
        agg.apply(&tw(S, u64::from(i), f, birth()));
    }
    // ... then thirty are only connected to and closed, one a second.
    for i in 0..30u64 {
        let f = flow(&format!("{CLIENT}:{}", 41_000 + i), &format!("10.2.0.{i}:80"));
        agg.apply(&state((2 + i) * S, 100 + i, 7, 2, f));
        agg.apply(&state((2 + i) * S, 100 + i, 2, 7, f));
    }
    let s = snap(&mut agg, 40 * S);
    assert!(s.model.destinations <= 20, "{:?}", s.model);
    assert_eq!(s.model.evicted, agg.evicted().destinations);
    let evicted = agg.evicted();
    assert_eq!(evicted.connects, evicted.destinations, "each evicted row had one connect");
    assert_eq!(evicted.destinations + s.model.destinations, 40);
    // Every port-holding row is still there; the newest idle ones too.
    assert_eq!(s.namespaces[0].ports_in_use, 10);
    assert_eq!(agg.connects_total(&Destination::of(1, &flow(&format!("{CLIENT}:41029"), "10.2.0.29:80"))), 1);
    assert_eq!(agg.connects_total(&Destination::of(1, &flow(&format!("{CLIENT}:41000"), "10.2.0.0:80"))), 0);
    // The port holders still release their ports at death (their rows were never reused).
    for i in 0..10u16 {
        let f = flow(&format!("{CLIENT}:{}", 40_000 + i), &format!("10.1.0.{i}:80"));
        agg.apply(&death(41 * S, u64::from(i), f));
    }
    let end = snap(&mut agg, 41 * S);
    assert_eq!(end.timewait.live, 0);
    assert!(end.namespaces.iter().all(|n| n.ports_in_use == 0));
    // An evicted destination that comes back takes a freed number, found again by its index.
    let back = flow(&format!("{CLIENT}:42000"), "10.2.0.0:80");
    agg.apply(&state(42 * S, 500, 7, 2, back));
    agg.apply(&state(42 * S, 500, 2, 7, back));
    assert_eq!(agg.connects_total(&Destination::of(1, &back)), 1);
    assert_eq!(agg.connects_total(&Destination::of(1, &flow(&format!("{CLIENT}:41029"), "10.2.0.29:80"))), 1);
}

/// An owner's name lives as long as a live socket names it: a client per request must not
/// grow the name table for ever.
#[test]
fn names_of_owners_whose_sockets_are_gone_are_freed() {
    let mut agg = Aggregator::new(settings((32_768, 60_999)));
    for pid in 0..1_000u32 {
        let f = flow(&format!("{CLIENT}:{}", 40_000 + pid), SERVER);
        let owner = Some(Process { pid, tid: pid, comm: "curl".into(), cgroup_id: 9 });
        let birth_of = |ts| {
            Event::TimeWait(TimeWaitEvent {
                ts_ns: ts,
                tw_id: u64::from(pid),
                flow: Some(f),
                netns: 1,
                owner,
                change: birth(),
            })
        };
        agg.apply(&birth_of(S));
        agg.apply(&death(2 * S, u64::from(pid), f));
    }
    let s = snap(&mut agg, 3 * S);
    assert_eq!(s.timewait.live, 0);
    assert_eq!(s.model.names, 0, "no live socket, no name");
    // A name freed and taken again works as new.
    request(&mut agg, 4 * S, 5_000, 45_000);
    let s = snap(&mut agg, 4 * S);
    assert_eq!(s.timewait.by_owner[0].key, "curl[4242]");
    assert_eq!(s.timewait.by_local[0].key, CLIENT);
}
