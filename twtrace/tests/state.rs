//! State family against the real kernel: the transitions of one client socket, in order, and
//! the task that owns it, carried over to the transitions made in softirq.

mod support;

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    time::Duration,
};

use support::{NETNS_THREAD, Netns, addr, can_trace};

/// Two tracers on the same traffic: every family (the client's final → CLOSE is folded into
/// its TIME_WAIT birth) and the state family alone (where it is reported).
#[test]
fn client_socket_transitions_in_order_with_owner() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("state");
    let Some(all) = support::tracer_for("state", &["--netns", &ns.name]) else { return };
    let Some(state_only) = support::tracer_for("state", &["--netns", &ns.name, "--family", "state"]) else { return };
    let (client_addr, server, refused_err) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let client_addr = client.local_addr().unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        drop(client); // the client closes first: FIN_WAIT1
        assert_eq!(accepted.read(&mut [0u8; 1]).unwrap(), 0);
        drop(accepted); // then the server: the client's FIN_WAIT2 socket becomes TIME_WAIT
        let refused = TcpStream::connect("127.0.0.1:9").expect_err("nothing listens on port 9");
        (client_addr, server, refused.raw_os_error())
    });
    assert_eq!(refused_err, Some(libc::ECONNREFUSED));
    let mut runs = Vec::new();
    for tracer in [all, state_only] {
        tracer.wait_for("state", Duration::from_secs(10), |events| {
            events.iter().any(|e| e["old_state"] == "SYN_SENT" && e["remote"] == "127.0.0.1:9")
        });
        std::thread::sleep(Duration::from_millis(200));
        runs.push(tracer.stop());
    }
    let births: Vec<_> = runs[0].iter().filter(|v| v["event"] == "timewait_birth").collect();
    assert_eq!(births.len(), 1, "{births:?}");
    assert_eq!(addr(births[0], "local"), client_addr);
    assert_eq!(births[0]["owner_pid"], std::process::id(), "{:?}", births[0]);

    // Every family: the two connect()s' port searches; the state family alone: none (on the
    // tracepoint backend one program serves both families).
    let searches = |lines: &[serde_json::Value]| {
        lines.iter().filter(|v| v["event"] == "port_search" && v["op"] == "connect").count()
    };
    assert_eq!((searches(&runs[0]), searches(&runs[1])), (2, 0));
    for (lines, last) in [(&runs[0], None), (&runs[1], Some(("FIN_WAIT2", "CLOSE")))] {
        check_transitions(lines, client_addr, server, last);
    }
}

/// The client socket's transitions, each naming the test thread; the accepted socket's, naming
/// no one; the refused connect.
fn check_transitions(
    lines: &[serde_json::Value],
    client_addr: std::net::SocketAddr,
    server: std::net::SocketAddr,
    last: Option<(&str, &str)>,
) {
    let states: Vec<_> = lines.iter().filter(|v| v["event"] == "state").collect();

    // The client socket, by kernel address: its local port is still 0 at SYN_SENT.
    let sk = states
        .iter()
        .find(|e| e["new_state"] == "ESTABLISHED" && addr(e, "local") == client_addr)
        .expect("client reached ESTABLISHED")["sk"]
        .clone();
    let client: Vec<(&str, &str)> = states
        .iter()
        .filter(|e| e["sk"] == sk && e["remote"] == server.to_string())
        .map(|e| (e["old_state"].as_str().unwrap(), e["new_state"].as_str().unwrap()))
        .collect();
    let mut expected = vec![("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1")];
    expected.extend(last);
    assert_eq!(client, expected, "{states:?}");
    // connect() and close() run in the owner; ESTABLISHED and CLOSE run in softirq, and get
    // the owner carried over by socket address.
    for e in states.iter().filter(|e| e["sk"] == sk) {
        assert_eq!(e["task_pid"], std::process::id(), "{e}");
        assert_eq!(e["task_comm"], NETNS_THREAD, "{e}");
    }
    // The accepted socket: its only reported transition (LAST_ACK -> CLOSE, on the client's
    // last ACK) runs in softirq, and no process acted on it in a reported transition, so it
    // names no task rather than whichever one the softirq interrupted.
    let accepted: Vec<_> = states
        .iter()
        .filter(|e| addr(e, "local") == server && addr(e, "remote") == client_addr)
        .map(|e| (e["old_state"].as_str().unwrap(), e["new_state"].as_str().unwrap(), e.get("task_pid").cloned()))
        .collect();
    assert_eq!(accepted, [("LAST_ACK", "CLOSE", None)], "{states:?}");
    // A refused connect: SYN_SENT -> CLOSE with a local port (unlike exhaustion, port 0).
    let refused: Vec<_> =
        states.iter().filter(|e| e["old_state"] == "SYN_SENT" && e["remote"] == "127.0.0.1:9").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["new_state"], "CLOSE");
    assert_ne!(addr(refused[0], "local").port(), 0);
}
