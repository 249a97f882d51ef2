//! TIME_WAIT family against the real kernel: births, early kills and natural expiry, checked
//! against `ss` and against what each test did. Each test runs in its own network namespace and
//! traces only that namespace, so the tests can run in parallel.

mod support;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use support::{Netns, addr, can_trace, server_closes_first};

const BIRTHS: usize = 40;

/// What a tracer says it may have missed: records lost, and runs of its programs the kernel
/// skipped.
fn missed(lines: &[serde_json::Value]) -> i64 {
    lines
        .iter()
        .map(|v| match v["event"].as_str() {
            Some("lost") => v["count"].as_i64().unwrap_or(0),
            Some("netstat") => v["deltas"]["SkippedRuns"].as_i64().unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn births_match_ss(tag: &str, server: &'static str) {
    if !can_trace() {
        return;
    }
    let ns = Netns::new(tag);
    let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
    let (port, clients) = ns.run(move || {
        let listener = TcpListener::bind(server).unwrap();
        (listener.local_addr().unwrap().port(), server_closes_first(&listener, BIRTHS, None))
    });
    assert_eq!(clients.len(), BIRTHS);

    let births = tracer.wait_for("timewait_birth", Duration::from_secs(10), |b| b.len() >= BIRTHS);
    let in_kernel: BTreeSet<(SocketAddr, SocketAddr)> =
        ns.time_wait_sockets().into_iter().filter(|(local, _)| local.port() == port).collect();
    let lines = tracer.stop();
    let births_after_stop = lines.iter().filter(|v| v["event"] == "timewait_birth").count();

    // What twtrace itself says it may have missed: records lost, and runs of its programs the
    // kernel skipped (a kprobe program is skipped while another BPF program runs on its CPU;
    // counted since 6.7, and frequent in an emulated guest running three tracers at once).
    let missed = missed(&lines);
    let traced: BTreeSet<(SocketAddr, SocketAddr)> =
        births.iter().map(|b| (addr(b, "local"), addr(b, "remote"))).collect();
    assert_eq!(traced.len(), births.len(), "4-tuples are distinct");
    assert!(births_after_stop <= BIRTHS, "no extra births: {births_after_stop}");
    if births.len() < BIRTHS && (BIRTHS - births.len()) as i64 <= missed {
        eprintln!("NOTE: {} of {BIRTHS} births traced; twtrace reported {missed} possibly missed", births.len());
        assert!(traced.is_subset(&in_kernel), "every traced birth is one of ss's TIME_WAIT sockets");
        return;
    }
    assert_eq!(births.len(), BIRTHS, "exactly one birth per connection ({missed} reported possibly missed)");
    assert_eq!(births_after_stop, BIRTHS, "no extra births");
    assert_eq!(traced, in_kernel, "twtrace's births equal ss's TIME_WAIT sockets");
    let expected_remotes: BTreeSet<SocketAddr> = clients.into_iter().collect();
    assert_eq!(traced.iter().map(|(_, r)| *r).collect::<BTreeSet<_>>(), expected_remotes);
    let netns = support::netns_inode(&ns.name);
    for b in &births {
        assert_eq!(b["netns"], netns, "{b}");
        assert!(b["timeout_ms"].as_u64().unwrap() > 0, "{b}");
        // The socket became TIME_WAIT in softirq; the owner is carried over from the close().
        assert_eq!(b["owner_pid"], std::process::id(), "{b}");
        assert_eq!(b["owner_comm"], support::NETNS_THREAD, "{b}");
    }
}

#[test]
fn ipv4_births_match_ss() {
    births_match_ss("births4", "127.0.0.1:0");
}

#[test]
fn ipv6_births_match_ss() {
    births_match_ss("births6", "[::1]:0");
}

/// A new SYN for a 4-tuple the server holds in TIME_WAIT kills that socket early, and the
/// death names that path: `tcp_v4_rcv` accepting the SYN over it (`incoming`).
#[test]
fn reusing_a_four_tuple_kills_the_time_wait_socket() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("kill");
    let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
    let client_addr: SocketAddr = "127.0.0.1:41000".parse().unwrap();
    let (server_addr, second) = ns.run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, 1, Some(client_addr));
        // Let the timestamp clock tick so the new SYN is newer than what TIME_WAIT remembers.
        std::thread::sleep(Duration::from_millis(50));
        let second = support::connect_from(client_addr, listener.local_addr().unwrap());
        let accepted = listener.accept().unwrap();
        (listener.local_addr().unwrap(), (second, accepted, listener))
    });
    let deaths = tracer.wait_for("timewait_death", Duration::from_secs(10), |d| !d.is_empty());
    let left_in_time_wait = ns.time_wait_sockets();
    let lines = tracer.stop();
    drop(second);

    let births: Vec<_> = lines.iter().filter(|v| v["event"] == "timewait_birth").collect();
    let deaths_final: Vec<_> = lines.iter().filter(|v| v["event"] == "timewait_death").collect();
    assert_eq!(births.len(), 1, "{births:?}");
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    assert_eq!(deaths_final.len(), 1, "{deaths_final:?}");
    let death = &deaths[0];
    assert_eq!(death["reason"], "incoming", "{death}");
    assert_eq!(death["tw_id"], births[0]["tw_id"]);
    assert_eq!((addr(death, "local"), addr(death, "remote")), (server_addr, client_addr));
    assert!(death["lifetime_ns"].as_u64().unwrap() < 10_000_000_000, "{death}");
    assert!(left_in_time_wait.is_empty(), "ss still shows {left_in_time_wait:?}");
}

/// `TCP_FIN_WAIT2` in include/net/tcp_states.h.
const FIN_WAIT2: u8 = 5;

/// The socket's state: `tcpi_state`, the first byte of `struct tcp_info`.
fn tcp_state_of(socket: &std::net::TcpStream) -> u8 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our buffer.
    let got = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(got, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info[0]
}

/// An RST for a TIME_WAIT socket kills it (`tcp_timewait_state_process`): the client closes
/// first and its socket waits in TIME_WAIT's FIN_WAIT2 substate (an orphan whose FIN was
/// acknowledged); the server then closes with SO_LINGER 0, which sends an RST instead of a FIN.
/// In that substate an RST kills on every kernel whatever `tcp_rfc1337` says.
#[test]
fn an_rst_kills_the_time_wait_socket_and_says_so() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("rst");
    let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
    let (client_addr, server_addr) = ns.run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (client_addr, server_addr) = (client.local_addr().unwrap(), listener.local_addr().unwrap());
        // The FIN first, and close() only once it is acknowledged: an orphan whose FIN is
        // acknowledged during close() itself (loopback answers at once, while close() holds
        // the socket) stays a full FIN_WAIT2 socket; closed in FIN_WAIT2 it becomes TIME_WAIT.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &accepted, &mut buf).expect("read EOF"), 0);
        // The server acknowledges a FIN with a delayed ACK (up to 200 ms).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tcp_state_of(&client) != FIN_WAIT2 {
            assert!(std::time::Instant::now() < deadline, "the client never reached FIN_WAIT2");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(client);
        // Closing with a zero linger sends an RST instead of a FIN.
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a socket we own, with a linger struct of the size given.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&accepted),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        drop(accepted);
        (client_addr, server_addr)
    });
    let deaths = tracer.wait_for("timewait_death", Duration::from_secs(10), |d| !d.is_empty());
    let left_in_time_wait = ns.time_wait_sockets();
    let lines = tracer.stop();
    let births: Vec<_> = lines.iter().filter(|v| v["event"] == "timewait_birth").collect();
    assert_eq!(births.len(), 1, "{births:?}");
    assert_eq!(births[0]["substate"], "FIN_WAIT2", "{}", births[0]);
    assert_eq!(deaths.len(), 1, "{deaths:?} {lines:?} {left_in_time_wait:?}");
    let death = &deaths[0];
    assert_eq!(death["reason"], "reset", "{death}");
    assert_eq!(death["tw_id"], births[0]["tw_id"]);
    assert_eq!((addr(death, "local"), addr(death, "remote")), (client_addr, server_addr));
    assert!(left_in_time_wait.is_empty(), "ss still shows {left_in_time_wait:?}");
}

/// TIME_WAIT lasts TCP_TIMEWAIT_LEN (60 s) whatever tcp_fin_timeout says; the timer wheel adds
/// up to one bucket of its level (2-5 s, see below).
#[test]
fn natural_expiry_after_sixty_seconds() {
    if !can_trace() {
        return;
    }
    const COUNT: usize = 10;
    let ns = Netns::new("expiry");
    ns.sysctl("net.ipv4.tcp_fin_timeout", "5");
    let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
    ns.run(|| {
        // A fixed port: an ephemeral one could be one of the client ports below (bind() takes
        // odd ones, like 45001, seen on a 5.10 guest).
        let listener = TcpListener::bind("127.0.0.1:8080").unwrap();
        // A distinct client port each: an ephemeral port the kernel happens to hand out twice
        // would meet its own server-side TIME_WAIT socket and kill it (seen once, 6.1 guest).
        for i in 0..COUNT {
            let client = SocketAddr::from(([127, 0, 0, 1], 45_000 + i as u16));
            server_closes_first(&listener, 1, Some(client));
        }
    });
    let births = tracer.wait_for("timewait_birth", Duration::from_secs(10), |b| b.len() >= COUNT);
    assert_eq!(births.len(), COUNT);
    let deaths = tracer.wait_for("timewait_death", Duration::from_secs(75), |d| d.len() >= COUNT);
    let remaining = ns.time_wait_sockets();
    let lines = tracer.stop();

    assert_eq!(deaths.len(), COUNT, "{deaths:?}");
    assert_eq!(lines.iter().filter(|v| v["event"] == "timewait_death").count(), COUNT);
    // The timer wheel (4.8+) files a timer by its distance and fires it up to one bucket
    // late: a 60 s timeout lands at level 3 (512 jiffies: 5.12 s at HZ=100, 2.05 s at
    // HZ=250) or, at HZ=1000, level 4 (4096 jiffies, 4.1 s). 62.04 s was seen on this host
    // (HZ=250). So up to 65.2 s is the kernel keeping its contract, whatever HZ; the guests
    // (an emulated CPU shared by three test runs, softirqs run late) get three seconds more.
    // The claim under test is the lower end: 60 s, not tcp_fin_timeout's 5.
    let latest = if std::env::var_os("TWTRACE_TEST_EMULATED").is_some() { 68.5 } else { 65.5 };
    for d in &deaths {
        assert_eq!(d["reason"], "expired", "{d}");
        let lifetime = d["lifetime_ns"].as_u64().unwrap() as f64 / 1e9;
        assert!((59.0..=latest).contains(&lifetime), "lifetime {lifetime:.3}s: {d}");
    }
    let born: BTreeSet<u64> = births.iter().map(|b| b["tw_id"].as_u64().unwrap()).collect();
    let died: BTreeSet<u64> = deaths.iter().map(|d| d["tw_id"].as_u64().unwrap()).collect();
    assert_eq!(born, died);
    assert!(remaining.is_empty(), "ss still shows {remaining:?}");
}

/// The tracepoint backend reads through BTF-typed pointers where the kernel has BTF (tp_btf
/// for the timers and states: no helper call per kernel timer) and with probe reads otherwise;
/// `twtrace probes` names the hooks that run, and the port search runs on the same ones.
/// `cargo xtask test` runs this file again with the probe-read variants forced.
#[test]
fn tracepoint_backend_reads_through_btf_where_it_exists() {
    if !can_trace() {
        return;
    }
    if support::forced_backend().is_some_and(|b| b != "tracepoint") {
        return support::skip("timewait", "tests the tracepoint backend only");
    }
    let raw_forced = std::env::var_os("TWTRACE_NO_BTF_READS").is_some_and(|v| !v.is_empty());
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    let out = support::output(std::process::Command::new(env!("CARGO_BIN_EXE_twtrace")).args([
        "probes",
        "--backend",
        "tracepoint",
        "--family",
        "timewait",
        "--family",
        "state",
        "--family",
        "portsearch",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let kind = if btf && !raw_forced { "tp_btf" } else { "raw_tp" };
    for hook in ["timer_start", "timer_cancel", "timer_expire_entry", "inet_sock_set_state"] {
        assert!(text.contains(&format!("{kind}/{hook}")), "{kind}/{hook} runs:\n{text}");
    }
    let portsearch = text.lines().find(|l| l.starts_with("portsearch: ")).expect("portsearch line");
    for hook in ["inet_sock_set_state", "timer_start"] {
        assert!(portsearch.contains(&format!("{kind}/{hook}")), "{kind}/{hook} serves the port search:\n{text}");
    }
    eprintln!("{text}");
}

/// Churn that reuses ports: each TIME_WAIT socket is killed by the next connection on the same
/// 4-tuple, and its memory is reused at once, sometimes by a socket born on the other CPU while
/// the kill is still undecided. Every birth must still count as one: exactly as many as the
/// kernel counted (`__inet_twsk_schedule` adds each new TIME_WAIT socket to `TW`, or to
/// `TWKilled` when its timeout is short: 6.1 and later; 5.10 counts at expiry and skips),
/// less only the program runs the kernel skipped and said so.
#[test]
fn births_under_port_reuse_churn_equal_the_kernels_count() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("twchurn");
    // 500 ports under saturating churn: each 4-tuple comes back within milliseconds.
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40499");
    let path = std::env::temp_dir().join(format!("twtrace-test-churn-{}.twr", std::process::id()));
    let counted = |c: &std::collections::HashMap<String, i64>| c["TW"] + c.get("TWKilled").copied().unwrap_or(0);
    // kprobe: the kernel skips a kprobe program while another kprobe program runs on its CPU
    // (a softirq's TIME_WAIT birth during a process-context state or port-search program),
    // and before 6.7 it does not count the skip. The other families' kprobes are left out
    // there: 10 of 892 births went missing with them on a 6.1 guest. Every other backend
    // records every family, whose records the re-arm decisions also read.
    let kprobe = support::forced_backend().as_deref() == Some("kprobe");
    let recording = support::Recording::start_families(&ns, &path, if kprobe { &["timewait"] } else { &[] });
    let before = counted(&ns.netstat());
    let churn = support::output(std::process::Command::new("ip").args(["netns", "exec", &ns.name]).args([
        env!("CARGO_BIN_EXE_twtrace"),
        "churn",
        "--duration",
        "3",
        "--json",
    ]));
    assert!(churn.status.success(), "churn: {}", String::from_utf8_lossy(&churn.stderr));
    let in_kernel = counted(&ns.netstat()) - before;
    std::thread::sleep(Duration::from_millis(300));
    recording.stop();

    let replay = support::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_twtrace")).args(["trace", "--json", "--replay"]).arg(&path),
    );
    let _ = std::fs::remove_file(&path);
    assert!(replay.status.success(), "replay: {}", String::from_utf8_lossy(&replay.stderr));
    let (mut births, mut rearms, mut lost, mut skipped) = (0i64, 0i64, 0i64, 0i64);
    for line in String::from_utf8_lossy(&replay.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["event"].as_str() {
            Some("timewait_birth") => births += 1,
            Some("timewait_rearm") => rearms += 1,
            Some("lost") => lost += v["count"].as_i64().unwrap(),
            Some("netstat") => skipped += v["deltas"]["SkippedRuns"].as_i64().unwrap_or(0),
            _ => {}
        }
    }
    eprintln!(
        "churn: {in_kernel} TIME_WAIT births in the kernel; traced {births} births, {rearms} re-arms, {lost} lost, {skipped} skipped runs"
    );
    // A floor, not the check (that is the equality with the kernel's count below): a 6.12 guest
    // made only 70 in 3 s while another guest shared the host's two cores.
    assert!(births > 20, "the churn must make TIME_WAIT sockets (emulated guests make 70 to hundreds): {births}");
    if in_kernel == 0 {
        // 5.10 counts TW/TWKilled when the timer fires, not when the socket is born: none
        // fire within these 3 s. (6.1, 6.12 and 6.18 count births.)
        support::skip("timewait", "this kernel counts TW at expiry, not at birth: no ground truth for births");
        return;
    }
    assert_eq!(lost, 0, "the default buffer holds this churn");
    // A kprobe program is skipped while another BPF program runs on its CPU, and kernels
    // before 6.7 do not count those skips; a kprobe hit while another kprobe's handler runs is
    // missed without a count twtrace reads (docs/kernels.md, known issues): 1 of 804 births on the 6.1
    // guest, 6 of 381 on 6.18 with three tracers on two emulated CPUs. There 1 % is allowed
    // (5 % emulated); everywhere else the count is exact.
    let uncounted = match (kprobe, support::emulated()) {
        (true, true) => in_kernel / 20,
        (true, false) => in_kernel / 100,
        (false, _) => 0,
    };
    assert!(
        births <= in_kernel && in_kernel - births <= skipped + uncounted,
        "births {births} vs kernel {in_kernel} (skipped runs {skipped}, allowed uncounted {uncounted})"
    );
}

/// Every birth says whether the peer sent TCP timestamps (`tw_ts_recent_stamp`), on every
/// backend: the same client-closed connections in a namespace with timestamps on and in one
/// with them off (both ends are in the namespace, so off means none were negotiated).
#[test]
fn each_birth_says_whether_the_peer_sent_timestamps() {
    const CONNECTIONS: usize = 8;
    if !can_trace() {
        return;
    }
    for (tag, on) in [("tson", true), ("tsoff", false)] {
        let ns = Netns::new(tag);
        ns.sysctl("net.ipv4.tcp_timestamps", if on { "1" } else { "0" });
        let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
        ns.run(|| support::client_closes_first(&TcpListener::bind("127.0.0.1:7000").unwrap(), CONNECTIONS));
        let births = tracer.wait_for("timewait_birth", Duration::from_secs(10), |b| b.len() >= CONNECTIONS);
        let lines = tracer.stop();
        // The client's TIME_WAIT sockets (ss agrees there are that many), each with the flag;
        // fewer births only as far as twtrace reported runs it may have missed (kprobes under
        // emulation, see births_match_ss).
        assert_eq!(ns.time_wait_sockets().len(), CONNECTIONS, "ss");
        let missed = missed(&lines);
        // A kprobe hit while another kprobe's handler runs is missed without a count twtrace
        // reads yet (docs/kernels.md, known issues): under emulation the flags of the births seen count.
        let kprobe_emulated = support::kprobe_emulated();
        let unreported = if kprobe_emulated { CONNECTIONS as i64 } else { 0 };
        assert!(
            births.len() == CONNECTIONS
                || (!births.is_empty() && (CONNECTIONS - births.len()) as i64 <= missed + unreported),
            "{} births of {CONNECTIONS}, {missed} reported missed: {births:#?}",
            births.len()
        );
        assert!(births.iter().all(|b| b["timestamps"] == on), "timestamps {on}: {births:#?}");
    }
}
