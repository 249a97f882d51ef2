//! `twtrace stat` against `ss`: sockets that exist before start count from the first report,
//! and a single-destination client's port use matches the kernel's own socket table.

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    sync::{Arc, Mutex},
};

use serde_json::Value;
use support::{Netns, can_trace, server_closes_first};

/// Runs `twtrace stat --json` with one-second reports; `during` runs once tracing has started.
/// With `count`, stat stops by itself after that many reports; without, it is stopped with
/// SIGINT once `during` is done and its final report is the last. Returns the reports.
fn stat_reports(ns: &Netns, count: Option<u32>, during: impl FnOnce()) -> Option<Vec<Value>> {
    let mut args = vec!["stat".to_string(), "--json".into(), "--interval".into(), "1".into()];
    args.extend(["--netns".into(), ns.name.clone()]);
    if let Some(count) = count {
        args.extend(["--count".into(), count.to_string()]);
    }
    let started = support::started(support::twtrace_cmd(&args).stdout(Stdio::piped()), "twtrace")
        .unwrap_or_else(|said| panic!("twtrace stat did not start: {said}"));
    let (mut child, _) = started.keep_stderr("twtrace");
    during();
    if count.is_none() {
        // Let the last events reach the ring buffer and be drained, then stop: the final
        // report covers everything `during` did, however long it took (emulated guests are
        // slow).
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let reports: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    Some(reports)
}

#[test]
fn time_wait_sockets_from_before_start_are_in_the_first_report() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("statseed");
    let port = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, 25, None);
        listener.local_addr().unwrap().port()
    });
    let in_kernel = ns.time_wait_sockets().len();
    assert_eq!(in_kernel, 25);
    let reports = stat_reports(&ns, Some(1), || {}).unwrap();
    let first = &reports[0];
    assert_eq!(first["timewait"]["live"], in_kernel as u64, "{first}");
    assert_eq!(first["timewait"]["by_local"][0]["key"], format!("127.0.0.1:{port}"));
    assert_eq!(first["timewait"]["by_owner"][0]["key"], "(before start)");
}

#[test]
fn single_destination_port_use_matches_ss_within_two_percent() {
    if !can_trace() {
        return;
    }
    const RANGE: (u16, u16) = (40_000, 40_999);
    const CONNECTIONS: usize = 400;
    let ns = Netns::new("statports");
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    // 5.10 defaults to tcp_tw_reuse=2 (loopback): connect() would reclaim TIME_WAIT ports
    // toward this destination and the count would depend on port choice. Pin it.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let listener = ns.run(move || TcpListener::bind(server).unwrap());
    let used = Arc::new(Mutex::new(BTreeSet::new()));
    let ports_used = Arc::clone(&used);
    let reports = stat_reports(&ns, None, || {
        ns.run(move || {
            // Non-keep-alive requests, client closes first: client-side TIME_WAIT holds ports.
            for _ in 0..CONNECTIONS {
                let client = TcpStream::connect(server).unwrap();
                ports_used.lock().unwrap().insert(client.local_addr().unwrap());
                let (accepted, _) = listener.accept().unwrap();
                drop(client);
                let mut buf = [0u8; 1];
                assert_eq!(std::io::Read::read(&mut &accepted, &mut buf).unwrap(), 0);
            }
        })
    })
    .unwrap();
    let used = std::mem::take(&mut *used.lock().unwrap());
    let in_ss: BTreeSet<SocketAddr> = ns.ports_to_settled("127.0.0.1:8080", RANGE, CONNECTIONS).into_iter().collect();
    // Every port connect() handed out holds a TIME_WAIT socket in ss. On 6.1 guests connect()
    // once handed out a port twice in 400 requests with tcp_tw_reuse=0 (399 distinct, TW 400,
    // TWKilled 0; also seen by the churn test): a kernel's doing, not twtrace's, so the
    // workload is judged by the distinct ports, and the NOTE keeps it visible.
    if used.len() < CONNECTIONS {
        eprintln!(
            "NOTE: connect() handed out {} distinct ports for {CONNECTIONS} requests; counters {:?}",
            used.len(),
            ns.time_wait_counters()
        );
    }
    assert!(used.len() >= CONNECTIONS - CONNECTIONS / 100, "ports handed out: {}", used.len());
    assert_eq!(
        in_ss,
        used,
        "each port handed out holds a client-side TIME_WAIT socket; not in ss: {:?}; counters {:?}",
        used.difference(&in_ss).collect::<Vec<_>>(),
        ns.time_wait_counters()
    );
    let in_kernel = in_ss.len();
    let last = reports.last().unwrap();
    let dest = last["port_space"]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["remote"] == "127.0.0.1:8080" && d["local"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("destination row: {last}"))
        .clone();
    let in_use = dest["in_use"].as_u64().unwrap() as f64;
    assert!((in_use - in_kernel as f64).abs() <= in_kernel as f64 * 0.02, "twtrace {in_use} vs ss {in_kernel}: {dest}");
    assert_eq!(dest["range"], u64::from(RANGE.1 - RANGE.0 + 1));
    let utilisation = dest["utilisation"].as_f64().unwrap();
    assert!((utilisation - in_kernel as f64 / 1000.0).abs() <= 0.02 * in_kernel as f64 / 1000.0, "{dest}");
}
