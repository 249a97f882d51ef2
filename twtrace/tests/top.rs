//! `twtrace top` in a real terminal (tmux): what a person sees, checked against `ss` and
//! against what the test did.

mod support;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use support::{Netns, can_trace, connect_from, packets};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Option<Self> {
        Self::start_sized(name, command, 40)
    }

    /// A terminal `rows` high: a view of every namespace on a busy machine (the VM matrix runs
    /// other tests' namespaces beside it) needs more rows than 40 to show this test's.
    fn start_sized(name: &str, command: &str, rows: u16) -> Option<Self> {
        if std::env::var_os("PATH").is_none_or(|p| !std::env::split_paths(&p).any(|d| d.join("tmux").is_file())) {
            support::skip("top", "tmux is not installed here");
            return None;
        }
        let session = format!("twt-{}-{name}", std::process::id());
        let ok = support::output(Command::new("tmux").args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            &rows.to_string(),
            command,
        ]))
        .status
        .success();
        assert!(ok, "tmux new-session");
        Some(Self { session })
    }

    fn screen(&self) -> String {
        let out = support::output(Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        // Under emulation top loads its programs and reads every namespace first: slower (a
        // 6.12 guest with three tops side by side needed more than 60 s once).
        let deadline = Instant::now() + Duration::from_secs(if support::emulated() { 120 } else { 20 });
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, keys: &str) {
        support::output(Command::new("tmux").args(["send-keys", "-t", &self.session, keys]));
    }

    fn alive(&self) -> bool {
        support::output(Command::new("tmux").args(["has-session", "-t", &self.session])).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = support::output(Command::new("tmux").args(["kill-session", "-t", &self.session]));
    }
}

fn top_command(ns: &Netns) -> String {
    let backend = support::forced_backend().map(|b| format!(" --backend {b}")).unwrap_or_default();
    // `; sleep` keeps the pane after top exits, to see what it left on the terminal.
    format!("{} top --netns {}{backend}; sleep 30", env!("CARGO_BIN_EXE_twtrace"), ns.name)
}

/// The "in use" number of the row `local -> remote` on the screen.
fn in_use_on_screen(screen: &str, row: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(row))?;
    line.split(row).nth(1)?.split_whitespace().next()?.parse().ok()
}

#[test]
fn churning_client_utilisation_rises_and_matches_ss() {
    if !can_trace() {
        return;
    }
    const RANGE: (u16, u16) = (40_000, 40_999);
    let ns = Netns::new("topports");
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1));
    // No TIME_WAIT reuse on loopback (the 5.10 default): every request keeps its port.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let Some(tmux) = Tmux::start("ports", &top_command(&ns)) else { return };
    tmux.wait_for("the TIME_WAIT panel", |s| s.contains("TIME_WAIT"));
    let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let listener = ns.run(move || TcpListener::bind(server).unwrap());
    let churn = |listener: TcpListener, n: usize| {
        ns.run(move || {
            for _ in 0..n {
                let client = TcpStream::connect(server).unwrap();
                let (accepted, _) = listener.accept().unwrap();
                drop(client); // client closes first: its TIME_WAIT holds the port
                assert_eq!(std::io::Read::read(&mut &accepted, &mut [0u8; 1]).unwrap(), 0);
            }
            listener
        })
    };
    let row = "127.0.0.1 -> 127.0.0.1:8080";
    // Wait for the screen to come within the 2 % the comparison with ss allows, not for every
    // port: the kernel skips a kprobe program while another BPF program runs on its CPU
    // (docs/kernels.md, known issues), and a 6.12 guest under --backend kprobe showed 499 of 500 (TW +500).
    let listener = churn(listener, 200);
    let first = tmux.wait_for("200 ports in use", |s| in_use_on_screen(s, row).is_some_and(|n| n >= 196));
    let _listener = churn(listener, 300);
    let screen = tmux.wait_for("500 ports in use", |s| in_use_on_screen(s, row).is_some_and(|n| n >= 490));
    let in_kernel = ns.ports_to("127.0.0.1:8080", RANGE).len();
    let shown = in_use_on_screen(&screen, row).unwrap();
    assert!(
        (shown as f64 - in_kernel as f64).abs() <= 0.02 * in_kernel as f64,
        "screen {shown} vs ss {in_kernel}:\n{screen}"
    );
    let util = |s: &str| -> f64 {
        let line = s.lines().find(|l| l.contains(row)).unwrap();
        line.split_whitespace().find(|w| w.ends_with('%')).unwrap().trim_end_matches('%').parse().unwrap()
    };
    assert!(util(&screen) > util(&first), "utilisation rose:\n{first}\n{screen}");
    assert!((util(&screen) - in_kernel as f64 / 10.0).abs() <= 0.02 * in_kernel as f64 / 10.0, "{screen}");
    // q quits and gives the terminal back.
    tmux.keys("q");
    let after = tmux.wait_for("top to exit", |s| s.contains("top ended"));
    assert!(!after.contains("Port space"), "the alternate screen is gone:\n{after}");
    assert!(tmux.alive());
}

#[test]
fn paws_drops_are_attributed_to_their_source() {
    if !can_trace() {
        return;
    }
    // The crafted segments are TIME_WAIT PAWS rejects: a drop event only where the kernel
    // gives them a reason (before 6.16 only the counter PAWSEstab rises).
    if !support::kernel_has_drop_reason("TCP_RFC7323_TW_PAWS") {
        return support::skip("top", "TIME_WAIT PAWS rejects have no drop reason (TCP_RFC7323_TW_PAWS, 6.16+)");
    }
    let ns = Netns::new("toppaws");
    let Some(tmux) = Tmux::start("paws", &top_command(&ns)) else { return };
    tmux.wait_for("the PAWS panel", |s| s.contains("PAWS drops"));
    // SYNs with an old timestamp for 4-tuples the server (127.0.0.3) holds in TIME_WAIT, from
    // 127.0.0.1.
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.3:0").unwrap();
        let server = listener.local_addr().unwrap();
        let mut crafted = Vec::new();
        for port in [43_001u16, 43_002, 43_003] {
            let client_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let client = connect_from(client_addr, server);
            let ts = packets::tcp_timestamp(&client);
            drop(listener.accept().unwrap().0);
            assert_eq!(std::io::Read::read(&mut &client, &mut [0u8; 1]).unwrap(), 0);
            drop(client);
            crafted.push((client_addr, ts));
        }
        std::thread::sleep(Duration::from_millis(50));
        for (src, ts) in crafted {
            let syn = packets::Segment {
                src,
                dst: server,
                seq: 7,
                ack: 0,
                flags: packets::SYN,
                tsval: ts.wrapping_sub(100_000),
                tsecr: 0,
                payload_len: 0,
            };
            packets::send(&syn, &[]);
        }
    });
    let is_row =
        |l: &str| l.trim_start_matches('│').trim_start().starts_with("127.0.0.1 ") && l.contains("TCP_RFC7323");
    let screen = tmux.wait_for("the source row", |s| s.lines().any(is_row));
    let row = screen.lines().find(|l| is_row(l)).unwrap();
    let numbers: Vec<&str> = row.trim_start_matches('│').split_whitespace().take(3).collect();
    assert_eq!(numbers, ["127.0.0.1", "3", "3"], "3 drops from 3 flows of 127.0.0.1:\n{screen}");
    assert!(row.contains("-> 127.0.0.3:"), "the example names the server side:\n{screen}");
    tmux.keys("q");
}

/// `top --replay`: a recording drives the same view, to its end, with no probes loaded.
#[test]
fn replay_shows_the_recording_to_its_end() {
    if !can_trace() {
        return;
    }
    const CONNECTIONS: usize = 30;
    let ns = Netns::new("topreplay");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let path = std::env::temp_dir().join(format!("twtrace-it-{}-top-replay.twr", std::process::id()));
    let recording = support::Recording::start(&ns, &path);
    let server: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    ns.run(move || support::client_closes_first(&TcpListener::bind(server).unwrap(), CONNECTIONS));
    let in_kernel = ns.ports_to_settled("127.0.0.1:8081", (1, 65535), CONNECTIONS).len() as u64;
    std::thread::sleep(Duration::from_millis(300));
    recording.stop();

    let command = format!("{} top --replay {} --speed max; sleep 30", env!("CARGO_BIN_EXE_twtrace"), path.display());
    let Some(tmux) = Tmux::start("replay", &command) else { return };
    let row = "127.0.0.1 -> 127.0.0.1:8081";
    let screen = tmux.wait_for("the end of the recording", |s| s.contains("(end of recording)"));
    assert!(screen.contains("REPLAY"), "{screen}");
    assert_eq!(in_use_on_screen(&screen, row), Some(in_kernel), "the ports ss counted:\n{screen}");
    assert_eq!(in_kernel, CONNECTIONS as u64);
    tmux.keys("q");
    let after = tmux.wait_for("top to exit", |s| s.contains("top ended"));
    assert!(after.contains("the recording is complete and intact"), "{after}");
    let _ = std::fs::remove_file(&path);
}

/// A container host: top in the root namespace, two namespaces churning, each with its own
/// range. The one that ran out is the first row, counted against its own 100 ports, with its
/// EADDRNOTAVAIL; the other is counted against its own 1,000. The findings pane (`f`) names
/// the full one as doctor would, with the same figures.
#[test]
fn namespaces_each_against_their_own_range_the_full_one_on_top() {
    if !can_trace() {
        return;
    }
    let small = Netns::new("topsmall");
    let large = Netns::new("toplarge");
    for (ns, range) in [(&small, "40000 40099"), (&large, "41000 41999")] {
        ns.sysctl("net.ipv4.ip_local_port_range", range);
        ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    }
    let backend = support::forced_backend().map(|b| format!(" --backend {b}")).unwrap_or_default();
    let command = format!("{} top{backend}; sleep 30", env!("CARGO_BIN_EXE_twtrace"));
    let Some(tmux) = Tmux::start_sized("pods", &command, 100) else { return };
    tmux.wait_for("the TIME_WAIT panel", |s| s.contains("TIME_WAIT"));
    let churn = |ns| support::churn_in(ns, "client", 3, Duration::ZERO);
    let (a, b) = (churn(&small), churn(&large));
    let (small_churn, _) = (a.join().unwrap(), b.join().unwrap());
    let refused = small_churn["failures"]["EADDRNOTAVAIL"].as_u64().unwrap();
    assert!(refused > 0, "the 100 ports ran out: {small_churn}");
    let in_ss = large.ports_to("127.0.0.1:7000", (41_000, 41_999)).len() as u64;
    let row = |s: &str, ns: &Netns| {
        s.lines().find(|l| l.contains(&ns.name) && l.contains("-> 127.0.0.1:7000")).map(str::to_owned)
    };
    // in use, range, util, ... after the destination.
    let numbers = |r: &str| -> Vec<String> {
        r.split("-> 127.0.0.1:7000").nth(1).unwrap().split_whitespace().map(str::to_owned).collect()
    };
    let in_use = |r: &str| numbers(r)[0].parse::<u64>().unwrap();
    let shown_failures = |s: &str| -> Option<u64> {
        s.split("EADDRNOTAVAIL x").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // Within 2 % of the truth, as the other top tests compare (a kprobe program can be skipped
    // while another BPF program runs on its CPU, most of all in an emulated guest).
    let near = |shown: u64, truth: u64| shown.abs_diff(truth) as f64 <= (0.02 * truth as f64).max(1.0);
    let screen = tmux.wait_for("both namespaces' rows, final", |s| {
        row(s, &small).is_some_and(|r| near(in_use(&r), 100))
            && row(s, &large).is_some_and(|r| near(in_use(&r), in_ss))
            && shown_failures(s).is_some_and(|n| near(n, refused))
    });
    // The first row of the port table is the namespace that ran out, against its own range.
    let first = screen.lines().skip_while(|l| !l.contains("local -> destination")).nth(1).unwrap();
    assert!(first.contains(&small.name), "the full namespace on top:\n{screen}");
    assert_eq!(numbers(first)[1], "100", "its own range:\n{screen}");
    assert!(numbers(first)[2].ends_with('%'), "{screen}");
    let large_row = row(&screen, &large).unwrap();
    assert_eq!(numbers(&large_row)[1], "1000", "its own range:\n{screen}");
    assert!(screen.contains(&format!("[{}] twtrace[", small.name)), "the failures name the namespace:\n{screen}");

    // `f`: doctor's findings on the same model. The full namespace's port space is critical,
    // with the figures of the row beside it, and its failures with the failures line's count.
    tmux.keys("f");
    let headline = format!("Port space toward 127.0.0.1:7000 from 127.0.0.1 in namespace {} peaked at", small.name);
    let screen = tmux.wait_for("the findings pane", |s| findings_pane(s).is_some_and(|p| p.contains(&headline)));
    let pane = findings_pane(&screen).unwrap();
    assert!(!screen.contains("PAWS drops"), "the pane is in the PAWS panel's place:\n{screen}");
    let finding = pane.split(&headline).nth(1).unwrap();
    assert!(pane.contains(&format!("CRITICAL {headline}")), "{pane}");
    // "... peaked at 100% (100 of 100 ports) at 19:13:47: ..."
    let held: u64 = finding.split('(').nth(1).and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap();
    assert!(finding.contains(&format!("({held} of 100 ports)")), "{pane}");
    assert_eq!(Some(held), row(&screen, &small).map(|r| in_use(&r)), "the row's figure:\n{screen}");
    assert!(near(held, 100), "{pane}");
    // "[ns] twtrace[PID] EADDRNOTAVAIL x80" on the failures line; "twtrace[PID] x80" in the finding.
    let failed = screen.split(&format!("[{}] ", small.name)).nth(1).unwrap();
    let (process, count) = failed.split_once(" EADDRNOTAVAIL x").unwrap();
    let count: u64 = count.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    assert!(near(count, refused), "churn counted {refused}:\n{screen}");
    // The whole screen on failure: a 5.10 guest under kprobe showed "{process} x8" here with
    // 159 refusals counted, and the pane alone did not say why.
    assert!(pane.contains(&format!("no free local port (EADDRNOTAVAIL): {process} x{count}")), "{pane}\n{screen}");
    assert!(screen.contains("f findings"), "the footer names the key:\n{screen}");
    tmux.keys("q");
    tmux.wait_for("top to exit", |s| s.contains("top ended"));
}

/// The findings pane's text, its wrapped lines joined (words are never split).
fn findings_pane(screen: &str) -> Option<String> {
    let mut lines = screen.lines().skip_while(|l| !l.contains(" Findings "));
    lines.next()?;
    let text: Vec<&str> = lines
        .take_while(|l| !l.starts_with('└'))
        .map(|l| l.trim_matches(|c: char| c == '│' || c.is_whitespace()))
        .filter(|l| !l.is_empty())
        .collect();
    Some(text.join(" "))
}
