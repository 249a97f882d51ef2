//! `twtrace doctor` on settings that fix nothing: a lowered `tcp_fin_timeout` beside TIME_WAIT
//! sockets that lived 60 s, timestamps off, `tcp_tw_reuse` on a namespace that only accepts,
//! and reuse toward a peer with timestamps and one without.
//! The same findings come from a recording of the scenario (`--replay`).

#[path = "support/doctor.rs"]
mod doctor_support;
mod support;

use std::process::Command;

use doctor_support::*;
use serde_json::Value;
use support::{Netns, can_trace};

/// `ss` in the namespace: its TIME_WAIT sockets.
fn time_wait_in(ns: &Netns) -> usize {
    let out =
        support::output(Command::new("ip").args(["netns", "exec", &ns.name, "ss", "-Htan", "state", "time-wait"]));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A namespace with `tcp_fin_timeout` lowered to 10 s, the forums' TIME_WAIT "fix": 20
/// connections closed first by the client, watched until `ss` sees their TIME_WAIT sockets
/// gone. They lived 60 s, and the findings say so next to the namespace's own 10 s; the
/// lowered setting is named as fixing nothing; the peak is the 20 sockets the test made.
#[test]
fn a_lowered_fin_timeout_is_named_beside_time_wait_sockets_that_lived_60_s() {
    const CONNECTIONS: usize = 20;
    if !can_trace() {
        return;
    }
    let ns = Netns::new("docfin");
    ns.sysctl("net.ipv4.tcp_fin_timeout", "10");
    let mut made = 0;
    // Without the drops family: before 6.11 other tests' crafted PAWS drops carry no
    // namespace and would reach this one's report (docs/kernels.md, known issues), in the live run and
    // the recording unequally over its 65 s.
    let families = ["timewait", "portsearch", "state"];
    let (status, live, replayed) = live_and_replayed(&ns, "fin", &families, || {
        ns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), CONNECTIONS));
        made = time_wait_in(&ns);
        // TCP_TIMEWAIT_LEN is 60 s; the timer wheel may add a little.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(75);
        while time_wait_in(&ns) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        // Their deaths reach doctor.
        std::thread::sleep(std::time::Duration::from_secs(2));
    });
    assert_eq!(made, CONNECTIONS, "ss saw every TIME_WAIT socket");
    assert_eq!(time_wait_in(&ns), 0, "ss: all expired");
    // Before 6.11 other tests' crafted PAWS drops, unlabelled, pass the --netns filter and
    // warn (docs/kernels.md, known issues): the status says so, nothing else may.
    assert!(status == 0 || (other_tests_drops_show() && status == 1), "notes only: {status}: {live:#}");
    for report in [&live, &replayed] {
        let lifetime = finding(report, "time_wait_lifetime");
        let text = lifetime["text"].as_str().unwrap();
        let median: f64 = text
            .strip_prefix("TIME_WAIT sockets lived ")
            .and_then(|t| t.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        // The timer wheel never fires early, and rounds a 60 s timer up by its level's
        // granularity: up to 4.096 s at HZ=1000 (this host's 6.18 measured 61.8 s), 2.048 s at
        // HZ=250; a busy emulated guest may run it a little later still.
        assert!((60.0..=65.0).contains(&median), "TCP_TIMEWAIT_LEN, not tcp_fin_timeout: {text}");
        assert!(text.contains(&format!("(tcp_fin_timeout is 10 s in {})", ns.name)), "the namespace's own: {text}");
        let lowered = finding(report, "fin_timeout_lowered");
        assert_eq!(lowered["place"]["namespace"], ns.name.as_str());
        assert!(lowered["text"].as_str().unwrap().contains("tcp_fin_timeout 10 s"), "{lowered:#}");
        only_notes_besides(report, None);
    }
    let peak = finding(&live, "time_wait_peak");
    assert!(peak["text"].as_str().unwrap().contains(&format!("({CONNECTIONS} sockets)")), "{peak:#}");
}

/// Timestamps off in a namespace whose client closes first: reuse cannot work there and PAWS
/// cannot protect it; a warning naming the namespace, and nothing else.
#[test]
fn timestamps_off_where_connections_are_made_is_a_warning() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("doctsoff");
    ns.sysctl("net.ipv4.tcp_timestamps", "0");
    let (status, live, replayed) = live_and_replayed(&ns, "tsoff", &[], || {
        ns.run(|| support::client_closes_first(&std::net::TcpListener::bind("127.0.0.1:7000").unwrap(), 10));
    });
    assert_eq!(time_wait_in(&ns), 10, "ss");
    assert_eq!(status, 1, "a warning: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "timestamps_off");
        assert_eq!(
            (f["severity"].as_str(), f["place"]["namespace"].as_str()),
            (Some("warning"), Some(ns.name.as_str()))
        );
        assert!(f["remedies"][0]["action"].as_str().unwrap().contains("tcp_timestamps=1"), "{f:#}");
    }
}

/// Two namespaces joined by veth pair `n`, the client's end 10.77.n.1, the server's 10.77.n.2:
/// loopback would put both ends in one namespace (a namespace that only accepts needs its
/// clients elsewhere; two peers with different settings need two namespaces).
/// `false` (the skip recorded) where the kernel has no veth device type.
#[must_use]
fn veth_pair(client: &Netns, server: &Netns, n: u8) -> bool {
    let (c, s) = (format!("twc{n}"), format!("tws{n}"));
    let link = ["link", "add", &c, "netns", &client.name, "type", "veth", "peer", "name", &s, "netns", &server.name];
    let made = support::output(Command::new("ip").args(link));
    if !made.status.success() {
        let why = String::from_utf8_lossy(&made.stderr);
        if why.contains("Unknown device type") {
            support::skip("doctor", NO_VETH);
            return false;
        }
        panic!("veth pair {c}/{s}: {why}");
    }
    for (ns, dev, addr) in [(client, &c, format!("10.77.{n}.1/24")), (server, &s, format!("10.77.{n}.2/24"))] {
        support::run(Command::new("ip").args(["-n", &ns.name, "addr", "add", &addr, "dev", dev]));
        support::run(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
    }
    true
}

/// The guests' kernels build veth as a module, and only guests with the lab's tools load it.
const NO_VETH: &str = "no veth device type (a module this kernel did not load); the host runs this test";

/// `tcp_tw_reuse=1` on a namespace that only accepts (a server closing first, its clients in
/// another namespace across a veth pair): reuse applies to connect() only, so the setting does
/// nothing for its TIME_WAIT sockets. A note naming that namespace; no destination of its own.
#[test]
fn reuse_on_a_namespace_that_only_accepts_is_named_as_doing_nothing() {
    if !can_trace() {
        return;
    }
    let server = Netns::new("docaccept");
    let client = Netns::new("docaclient");
    if !veth_pair(&client, &server, 0) {
        return;
    }
    server.sysctl("net.ipv4.tcp_tw_reuse", "1");
    let (status, live, replayed) = live_and_replayed(&server, "accept", &[], || {
        let listener = server.run(|| std::net::TcpListener::bind("10.77.0.2:7000").unwrap());
        // The listener (and what it accepts) stays in the server's namespace; the thread that
        // connects is in the client's.
        client.run(move || support::server_closes_first(&listener, 10, None));
    });
    assert_eq!(time_wait_in(&server), 10, "ss: the server holds the TIME_WAIT sockets");
    assert_eq!(time_wait_in(&client), 0, "ss: the client holds none");
    assert!(status == 0 || (other_tests_drops_show() && status == 1), "a note: {status}: {live:#}");
    for report in [&live, &replayed] {
        let f = only_finding(report, "reuse_only_accepting");
        assert_eq!(
            (f["severity"].as_str(), f["place"]["namespace"].as_str()),
            (Some("info"), Some(server.name.as_str()))
        );
    }
}

/// The same client workload toward two peers, one that sends TCP timestamps and one whose
/// namespace has them off: a 100-port client range runs out toward each (100 connections
/// closed first by the client, then one more that fails). Reuse is possible toward the first
/// and impossible toward the second, and each finding says so with the count of the
/// connections it saw (`tw_ts_recent_stamp` at each TIME_WAIT birth, on every backend).
#[test]
fn reuse_is_possible_toward_a_peer_with_timestamps_and_not_toward_one_without() {
    const RANGE: (u16, u16) = (40_000, 40_099);
    const PORTS: usize = 100;
    if !can_trace() {
        return;
    }
    let client = Netns::new("doctsclient");
    let with = Netns::new("doctswith");
    let without = Netns::new("doctswithout");
    if !(veth_pair(&client, &with, 1) && veth_pair(&client, &without, 2)) {
        return;
    }
    client.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    client.sysctl("net.ipv4.tcp_tw_reuse", "0");
    without.sysctl("net.ipv4.tcp_timestamps", "0");
    let peers = ["10.77.1.2:7000", "10.77.2.2:7000"];
    let mut refused = Vec::new();
    // ss is asked at once: the live run and the replay after it can outlast the sockets' 60 s
    // in an emulated guest (6.18 under kprobe, 2026-12-07: 71 of 100 left when asked after).
    let mut held = Vec::new();
    let (_, live, replayed) = live_and_replayed(&client, "timestamps", &[], || {
        for (server, peer) in [&with, &without].into_iter().zip(peers) {
            let listener = server.run(move || std::net::TcpListener::bind(peer).unwrap());
            let failed = client.run(move || {
                support::client_closes_first(&listener, PORTS);
                std::net::TcpStream::connect(peer).err().and_then(|e| e.raw_os_error())
            });
            refused.push(failed);
            held.push(client.ports_to(peer, RANGE).len());
        }
    });
    assert_eq!(refused, [Some(libc::EADDRNOTAVAIL); 2], "each destination's 100 ports ran out");
    assert_eq!(held, [PORTS; 2], "ss toward {peers:?}");
    for report in [&live, &replayed] {
        let toward = |peer: &str| -> &Value {
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["kind"] == "port_space" && f["place"]["destination"] == peer)
                .unwrap_or_else(|| panic!("no port_space finding toward {peer}: {report:#}"))
        };
        let reuse = |f: &Value| -> String {
            f["remedies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["action"].as_str().unwrap().contains("tcp_tw_reuse=1"))
                .map(|r| r["tradeoff"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("no reuse remedy: {f:#}"))
        };
        let (yes, no) = (toward(peers[0]), toward(peers[1]));
        // The TIME_WAIT sockets twtrace saw born toward each peer: all 100, but under kprobe in
        // an emulated guest up to 20 % fewer (missed hits: 92 in the 6.18 guest, 2026-12-07).
        let known = |f: &Value| -> usize {
            let line = f["evidence"].as_array().unwrap().iter().filter_map(Value::as_str).find_map(|e| {
                e.strip_prefix("peer timestamps on ")?.split(" of ").nth(1)?.split(' ').next()?.parse().ok()
            });
            let known = line.unwrap_or_else(|| panic!("no peer timestamps evidence: {f:#}"));
            let least = if support::kprobe_emulated() { PORTS * 4 / 5 } else { PORTS };
            assert!((least..=PORTS).contains(&known), "{known} TIME_WAIT sockets known of {PORTS}: {f:#}");
            known
        };
        let (known_yes, known_no) = (known(yes), known(no));
        let can = format!("it can work: the peer sent timestamps on all {known_yes} connections");
        assert!(reuse(yes).contains(&can), "{yes:#}");
        let cannot = format!("it cannot work: the peer sent no timestamps on any of the {known_no} connections");
        assert!(reuse(no).contains(&cannot), "{no:#}");
        for (f, seen, known) in [(yes, known_yes, known_yes), (no, 0, known_no)] {
            let line = format!("peer timestamps on {seen} of {known} TIME_WAIT sockets holding ports toward it");
            assert!(f["evidence"].as_array().unwrap().iter().any(|e| e == line.as_str()), "{f:#}");
        }
    }
}
