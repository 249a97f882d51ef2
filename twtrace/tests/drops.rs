//! PAWS drops against the real kernel: crafted segments with an old TSval, in a fresh network
//! namespace, checked against the namespace's own /proc/net/netstat counters.

mod support;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use support::{
    Netns, addr, can_trace, connect_from,
    packets::{self, ACK, PSH, SYN, Segment},
};

/// Older than anything the peer sent: TSval is a millisecond clock, so 100 s in the past.
const OLDER: u32 = 100_000;

/// What twtrace's counter samples add up to for `counter`.
fn netstat_total(lines: &[serde_json::Value], counter: &str) -> i64 {
    lines.iter().filter(|v| v["event"] == "netstat").filter_map(|v| v["deltas"][counter].as_i64()).sum()
}

/// Drops whose packet went to `server`. Before 6.11 some TCP drops carry no namespace (0) and
/// pass every namespace filter, so concurrent tests' drops could show up: select by flow too.
fn drops(lines: &[serde_json::Value], server: SocketAddr, netns: u64) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|v| v["event"] == "drop" && addr(v, "local") == server)
        .inspect(|v| assert!(v["netns"] == netns || v["netns"] == 0, "drop from another namespace: {v}"))
        .cloned()
        .collect()
}

/// SYNs with an old TSval for 4-tuples the server holds in TIME_WAIT: one drop per 4-tuple,
/// matching PAWSTimewait (6.16+; PAWSEstab before).
fn time_wait_paws(tag: &str, server: &'static str, client_ip: &'static str) {
    if !can_trace() {
        return;
    }
    if !support::kernel_has_drop_reason("TCP_RFC7323_TW_PAWS") {
        support::skip("drops", "this kernel gives TIME_WAIT PAWS rejects no drop reason (TCP_RFC7323_TW_PAWS, 6.16+)");
        return;
    }
    const TUPLES: u16 = 3;
    let ns = Netns::new(tag);
    let Some(tracer) = support::tracer_for("drops", &["--netns", &ns.name]) else { return };
    let before = ns.netstat();
    let (server, clients) = ns.run(move || {
        let listener = TcpListener::bind(server).unwrap();
        let server = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..TUPLES {
            let client_addr = SocketAddr::new(client_ip.parse().unwrap(), 42_000 + i);
            let client = connect_from(client_addr, server);
            let tsval_now = packets::tcp_timestamp(&client);
            drop(listener.accept().unwrap().0); // the server closes first: TIME_WAIT is its
            assert_eq!((&client).read(&mut [0u8; 1]).unwrap(), 0);
            drop(client);
            clients.push((client_addr, tsval_now));
        }
        std::thread::sleep(Duration::from_millis(50));
        for &(client_addr, tsval_now) in &clients {
            let syn = Segment {
                src: client_addr,
                dst: server,
                seq: 7,
                ack: 0,
                flags: SYN,
                tsval: tsval_now.wrapping_sub(OLDER),
                tsecr: 0,
                payload_len: 0,
            };
            packets::send(&syn, &[]);
        }
        (server, clients.into_iter().map(|(a, _)| a).collect::<BTreeSet<_>>())
    });
    tracer.wait_for("drop", Duration::from_secs(10), |d| d.len() >= TUPLES as usize);
    std::thread::sleep(Duration::from_millis(300));
    let after = ns.netstat();
    let lines = tracer.stop();
    let drops = drops(&lines, server, support::netns_inode(&ns.name));

    let counter = if before.contains_key("PAWSTimewait") { "PAWSTimewait" } else { "PAWSEstab" };
    let delta = after[counter] - before[counter];
    assert_eq!(delta, i64::from(TUPLES), "{counter} rose by one per 4-tuple");
    assert_eq!(netstat_total(&lines, counter), delta, "twtrace's counter samples see the same rise");
    assert_eq!(drops.len() as i64, delta, "one drop event per {counter} increment: {drops:?}");
    for d in &drops {
        assert_eq!(d["reason"], "TCP_RFC7323_TW_PAWS", "{d}");
        assert_eq!(addr(d, "local"), server, "{d}");
        assert_eq!(d["tcp_flags"], "S", "{d}");
    }
    let remotes: BTreeSet<SocketAddr> = drops.iter().map(|d| addr(d, "remote")).collect();
    assert_eq!(remotes, clients, "each crafted 4-tuple reported with its own source");
}

#[test]
fn ipv4_time_wait_paws_drops_match_counter() {
    time_wait_paws("twpaws4", "127.0.0.1:0", "127.0.0.1");
}

#[test]
fn ipv6_time_wait_paws_drops_match_counter() {
    time_wait_paws("twpaws6", "[::1]:0", "::1");
}

/// In-window data segments with an old TSval on an ESTABLISHED connection: each is dropped
/// (TCP_RFC7323_PAWS) and counted in PAWSEstab.
fn established_paws(tag: &str, server: &'static str) {
    if !can_trace() {
        return;
    }
    if !support::kernel_has_drop_reason("TCP_RFC7323_PAWS") {
        support::skip("drops", "this kernel has no TCP_RFC7323_PAWS drop reason (5.17+)");
        return;
    }
    const SEGMENTS: usize = 3;
    let ns = Netns::new(tag);
    let Some(tracer) = support::tracer_for("drops", &["--netns", &ns.name]) else { return };
    let before = ns.netstat();
    let (server, client_addr, keep) = ns.run(move || {
        let listener = TcpListener::bind(server).unwrap();
        let server = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(server).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let client_addr = client.local_addr().unwrap();
        // Learn the live sequence numbers and timestamps from a real segment.
        let seen = packets::capture(
            || client.write_all(b"x").unwrap(),
            |s| s.src == client_addr && s.dst == server && s.payload_len == 1,
        );
        accepted.read_exact(&mut [0u8; 1]).unwrap();
        for _ in 0..SEGMENTS {
            let old = Segment {
                seq: seen.seq.wrapping_add(1),
                flags: ACK | PSH,
                tsval: seen.tsval.wrapping_sub(OLDER),
                payload_len: 1,
                ..seen
            };
            packets::send(&old, b"y");
        }
        (server, client_addr, (client, accepted, listener))
    });
    tracer.wait_for("drop", Duration::from_secs(10), |d| d.len() >= SEGMENTS);
    std::thread::sleep(Duration::from_millis(300));
    let after = ns.netstat();
    let lines = tracer.stop();
    let drops: Vec<_> = drops(&lines, server, support::netns_inode(&ns.name))
        .into_iter()
        .filter(|d| addr(d, "remote") == client_addr)
        .collect();
    drop(keep);

    let delta = after["PAWSEstab"] - before["PAWSEstab"];
    assert_eq!(delta, SEGMENTS as i64, "PAWSEstab rose once per segment");
    assert_eq!(netstat_total(&lines, "PAWSEstab"), delta, "twtrace's counter samples see the same rise");
    assert_eq!(drops.len() as i64, delta, "{drops:?}");
    for d in &drops {
        assert_eq!(d["reason"], "TCP_RFC7323_PAWS", "{d}");
        assert_eq!((addr(d, "local"), addr(d, "remote")), (server, client_addr), "{d}");
    }
}

#[test]
fn ipv4_established_paws_drops_match_counter() {
    established_paws("estpaws4", "127.0.0.1:0");
}

#[test]
fn ipv6_established_paws_drops_match_counter() {
    established_paws("estpaws6", "[::1]:0");
}
