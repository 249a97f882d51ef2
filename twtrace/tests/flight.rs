//! The flight recorder (`record --record-dir DIR`) against the real kernel: rotation under a size
//! bound, a window across three segments against `ss` and what the scenario did, a `kill -9`
//! and a segment cut by hand, and a full file system.

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Netns, can_trace};

fn twtrace(args: &[&str]) -> std::process::Output {
    support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(args))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("twtrace-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `twtrace record --record-dir` in the background; its stderr lines arrive on a channel.
struct Flight {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Flight {
    fn start(ns: &Netns, dir: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<String> =
            vec!["record".into(), "--record-dir".into(), dir.display().to_string(), "--netns".into(), ns.name.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut child = support::spawn(support::twtrace_cmd(&args).stdout(Stdio::null()).stderr(Stdio::piped()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[record] {line}");
                let _ = tx.send(line);
            }
        });
        let mut flight = Self { child, lines, seen: Vec::new() };
        flight.wait_line(support::READY, support::start_patience());
        flight
    }

    /// The first stderr line containing `text`, waiting up to `timeout` for it.
    fn wait_line(&mut self, text: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?} from twtrace record; seen: {:#?}", self.seen),
            }
        }
    }

    /// Ctrl-C: the open segment is finished. Returns every stderr line.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "twtrace record exited with {status}");
        self.seen.extend(self.lines.iter());
        self.seen
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

/// Segment files in `dir`: (number, size, name), by number.
fn segments(dir: &Path) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_suffix(".twr")?.rsplit('-').next()?.parse().ok()?;
            Some((seq, e.metadata().ok()?.len(), name))
        })
        .collect();
    out.sort();
    out
}

/// Waits until a segment numbered above `after` exists (a rotation happened); returns its number.
fn wait_rotation(dir: &Path, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(&(seq, _, _)) = segments(dir).last().filter(|s| s.0 > after) {
            return seq;
        }
        assert!(Instant::now() < deadline, "no rotation past segment {after}: {:?}", segments(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rfc3339_now() -> String {
    let ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    twtrace::time::WallTime::from_unix_ns(ns).rfc3339()
}

/// TIME_WAIT births in a replay of `dir` within the window, as (local, remote).
fn births_in(dir: &Path, window: &[&str]) -> BTreeSet<(SocketAddr, SocketAddr)> {
    let mut args = vec!["trace", "--json", "--replay", dir.to_str().unwrap()];
    args.extend(window);
    let out = twtrace(&args);
    assert!(out.status.success(), "trace --replay: {}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let births: Vec<_> = events
        .iter()
        .filter(|v| v["event"] == "timewait_birth")
        .map(|v| (support::addr(v, "local"), support::addr(v, "remote")))
        .collect();
    let set: BTreeSet<_> = births.iter().copied().collect();
    assert_eq!(set.len(), births.len(), "no birth twice");
    set
}

/// A namespace for [`burst`]s. `tcp_tw_reuse` 0: a burst's listener may get an earlier
/// burst's port (bind(0) once the old listener closed), and its connect()s toward it then start
/// at the same ports, whose TIME_WAIT sockets the loopback default (2) lets them take over
/// after a second: one 4-tuple in `ss` before and after, and a burst short by one (CI's 6.18
/// guest: 11 of 12).
fn burst_netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    ns
}

/// One burst of client-closed connections in `ns`: the TIME_WAIT sockets it made, from the
/// sockets themselves. (Not from `ss`: twice a 5.10 guest's `ss` showed one socket of a burst
/// fewer than it made, 8 of 9 and 11 of 12, with nothing on the test's side to say why; the
/// births twtrace must record are the connections made.)
fn burst(ns: &Netns, count: usize) -> BTreeSet<(SocketAddr, SocketAddr)> {
    let made = ns.run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        support::connections_closed_by_client(&listener, count)
    });
    let made: BTreeSet<_> = made.into_iter().collect();
    assert_eq!(made.len(), count, "every connection of a burst has its own 4-tuple");
    made
}

#[test]
fn rotation_holds_the_size_bound_and_a_window_of_three_segments_holds_exactly_its_events() {
    if !can_trace() {
        return;
    }
    let ns = burst_netns("flight");
    let dir = temp("flight-rotate");
    // Room for the burst phase's segments (one a second or so, each with its ~2 KiB header:
    // in a slow emulated guest the five bursts take 15 s and more; 24 KiB, 12 s, lost bursts
    // 2 and 3 to retention there), and the filler churns until retention has deleted.
    const KEEP: u64 = 64 << 10;
    // Without kept windows: their analyses may spare two segments more (docs/recording.md).
    let keep = format!("{}KiB", KEEP >> 10);
    let flight = Flight::start(
        &ns,
        &dir,
        &["--segment", "1s", "--segment-size", "4KiB", "--keep-size", &keep, "--keep-windows", "0"],
    );
    // Filler: churn until retention has deleted segments, checking the bound at every look.
    let mut largest = 0;
    let check_bound = |largest: &mut u64| {
        let now = segments(&dir);
        *largest = (*largest).max(now.iter().map(|s| s.1).max().unwrap_or(0));
        let total: u64 = now.iter().map(|s| s.1).sum();
        assert!(total <= KEEP + *largest, "{total} bytes in the directory, bound {KEEP} + one segment {largest}");
    };
    let mut last = 0;
    for round in 0.. {
        let churn = support::churn_in(&ns, "client", 4, Duration::ZERO);
        while !churn.is_finished() {
            last = wait_rotation(&dir, last);
            check_bound(&mut largest);
        }
        churn.join().unwrap();
        if segments(&dir).first().is_some_and(|s| s.0 > 0) {
            break;
        }
        assert!(round < 15, "retention deleted no segment in a minute of churn: {:?}", segments(&dir));
    }
    // Five bursts, each in a segment of its own; the window holds bursts 2 to 4.
    let mut bursts = Vec::new();
    let mut marks = Vec::new();
    for k in 0..5 {
        last = wait_rotation(&dir, last);
        check_bound(&mut largest);
        if k == 1 {
            marks.push(rfc3339_now());
        }
        bursts.push(burst(&ns, 10 + k));
        if k == 3 {
            // Past the kernel's last timestamp of the burst on any clock mapping error.
            std::thread::sleep(Duration::from_millis(100));
            marks.push(rfc3339_now());
        }
    }
    last = wait_rotation(&dir, last);
    let lines = flight.stop();
    check_bound(&mut largest);
    let kept = segments(&dir);
    eprintln!("kept {} segments: {:?}", kept.len(), kept.iter().map(|s| s.0).collect::<Vec<_>>());
    // The oldest went first: what is left is an unbroken run of the newest numbers.
    let numbers: Vec<u64> = kept.iter().map(|s| s.0).collect();
    assert!(numbers[0] > 0, "retention deleted segments: {numbers:?}");
    assert_eq!(numbers, (numbers[0]..=numbers[0] + numbers.len() as u64 - 1).collect::<Vec<_>>());
    assert!(*numbers.last().unwrap() >= last);
    assert!(lines.iter().any(|l| l.contains("deleted")), "{lines:?}");

    let window = ["--since", marks[0].as_str(), "--until", marks[1].as_str()];
    // The window spans three segments at least: two start inside it.
    let (since, until) = (marks[0].replace(['-', ':'], ""), marks[1].replace(['-', ':'], ""));
    let starts_inside = kept.iter().filter(|s| s.2[8..23] >= since[..15] && s.2[8..23] <= until[..15]).count();
    assert!(starts_inside >= 2, "{kept:?} against {marks:?}");
    let expected: BTreeSet<_> = bursts[1..4].iter().flatten().copied().collect();
    assert_eq!(expected.len(), 11 + 12 + 13);
    let replayed = births_in(&dir, &window);
    if replayed != expected {
        // Which bursts the window held instead, and what the recording says of the times.
        let held: Vec<(usize, usize, usize)> =
            bursts.iter().enumerate().map(|(k, b)| (k + 1, b.intersection(&replayed).count(), b.len())).collect();
        let report = twtrace(&["report", "--json", dir.to_str().unwrap()]);
        let report: Value = serde_json::from_slice(&report.stdout).unwrap_or_default();
        panic!(
            "the window {marks:?} holds, of bursts 1 to 5 (burst, held, made): {held:?}, and {} sockets of no burst; \
             the recording: {:#}",
            replayed.iter().filter(|s| !bursts.iter().any(|b| b.contains(s))).count(),
            report["recording"]
        );
    }

    let report = twtrace(&["report", "--json", dir.to_str().unwrap(), "--since", &marks[0], "--until", &marks[1]]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["timewait"]["births"], 36, "{:#}", report["recording"]);
    assert_eq!(report["recording"]["damage"], serde_json::json!([]), "{:#}", report["recording"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_9_and_a_segment_cut_by_hand_leave_a_readable_directory_with_the_damage_named() {
    if !can_trace() {
        return;
    }
    let ns = burst_netns("flight-kill");
    let dir = temp("flight-kill");
    let flight = Flight::start(&ns, &dir, &["--segment", "1s"]);
    let mut last = 0;
    let mut expected = BTreeSet::new();
    for k in 0..4 {
        last = wait_rotation(&dir, last);
        expected.extend(burst(&ns, 5 + k));
    }
    // Two rotations after the last burst: every burst is in a finished segment; then kill -9
    // leaves the open one without its end.
    last = wait_rotation(&dir, last);
    wait_rotation(&dir, last);
    flight.kill();
    let kept = segments(&dir);
    // A crash between creating the next segment and writing its header leaves this.
    let first = std::fs::read(dir.join(&kept[0].2)).unwrap();
    let partial = format!("twtrace-20991231T000000Z-{:06}.twr", kept.last().unwrap().0 + 1);
    std::fs::write(dir.join(&partial), &first[..12]).unwrap();
    // A finished segment with births, cut by hand inside its end chunk.
    let cut =
        kept.iter().find(|s| !births_in(&dir.join(&s.2), &[]).is_empty()).expect("a segment holds births").clone();
    std::fs::OpenOptions::new().write(true).open(dir.join(&cut.2)).unwrap().set_len(cut.1 - 10).unwrap();

    let out = twtrace(&["report", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let damage: Vec<&str> = stderr.lines().filter(|l| l.starts_with("twtrace: damage:")).collect();
    eprintln!("{damage:#?}");
    assert!(damage.iter().any(|d| d.contains(&cut.2) && d.contains("ends inside")), "{damage:#?}");
    assert!(damage.iter().any(|d| d.contains(&partial) && d.contains("unreadable")), "{damage:#?}");
    // The segment open at the kill has no end marker, or, killed just as it was created,
    // nothing at all (both named).
    let killed = &kept.last().unwrap().2;
    assert!(
        damage.iter().any(|d| d.contains(killed.as_str()) && (d.contains("no end marker") || d.contains("empty file"))),
        "{damage:#?}"
    );
    // The damage cost no event: every burst's TIME_WAIT socket, as the test made it, and no other.
    assert_eq!(births_in(&dir, &[]), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_file_system_stops_recording_without_stopping_twtrace_and_it_resumes() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("flight-full");
    let mount = temp("flight-tmpfs");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = support::output(Command::new("mount").args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"]).arg(&mount));
    assert!(mounted.status.success(), "mount: {}", String::from_utf8_lossy(&mounted.stderr));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(mount.clone());
    // Leave about 24 KiB free: a few segments' worth.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; (512 - 24) << 10]).unwrap();
    let dir = mount.join("rec");
    let mut flight = Flight::start(&ns, &dir, &["--segment", "1s", "--keep-size", "off"]);
    let churn = support::churn_in(&ns, "client", 15, Duration::ZERO);
    let stopped = flight.wait_line("stopped: the file system is full", Duration::from_secs(60));
    eprintln!("{stopped}");
    // An outage longer than the silence a rotation leaves, so the readers call it a gap.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&filler).unwrap();
    let resumed = flight.wait_line("resumed after", Duration::from_secs(60));
    eprintln!("{resumed}");
    let after = segments(&dir).last().unwrap().0;
    wait_rotation(&dir, after);
    churn.join().unwrap();
    let lines = flight.stop();
    let stops = lines.iter().filter(|l| l.contains("stopped: the file system is full")).count();
    assert_eq!(stops, 1, "one line per outage: {lines:#?}");
    let summary = lines.iter().find(|l| l.contains("write errors")).expect("the summary counts the errors");
    assert!(summary.contains("events not recorded while stopped"), "{summary}");

    let out = twtrace(&["report", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let damage: Vec<&str> = stderr.lines().filter(|l| l.starts_with("twtrace: damage:")).collect();
    // What the disk and the recorder said, for a failure's reader.
    let listing = segments(&dir);
    assert!(
        damage.iter().any(|d| d.contains("nothing recorded from") && d.contains("stopped writing")),
        "the outage is a gap: {damage:#?}\nsegments (number, bytes, name): {listing:#?}\ntwtrace record said: {lines:#?}"
    );
    assert!(!damage.iter().any(|d| d.contains("ends inside")), "cut back to whole chunks: {damage:#?}");
    // Every event the recorder counted as not recorded is declared by the segment after its
    // outage, however short the outage was (CI's 6.18 guest once resumed within a second).
    let number_before = |text: &str, what: &str| -> u64 {
        text.split(what)
            .next()
            .and_then(|head| head.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let declared: u64 = damage
        .iter()
        .filter(|d| d.contains("events not recorded"))
        .map(|d| number_before(d, " events not recorded"))
        .sum();
    assert_eq!(declared, number_before(summary, " events not recorded while stopped"), "{summary}\n{damage:#?}");
}

#[test]
fn serve_records_the_stream_it_serves() {
    if !can_trace() {
        return;
    }
    let ns = burst_netns("flight-serve");
    let dir = temp("flight-serve");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--listen", &listen, "--record-dir", dir.to_str().unwrap(), "--segment", "1s"];
    args.extend(["--netns", &ns.name]);
    // On the cell's backend, as every other tracer here (this one used to run the default).
    let started = support::started(support::twtrace_cmd(&args).stdout(Stdio::null()), "serve")
        .unwrap_or_else(|said| panic!("twtrace serve did not start: {said}"));
    let support::Started { mut child, stderr, .. } = started;
    let lines = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>());
    let last = wait_rotation(&dir, 0);
    let made = burst(&ns, 12);
    let last = wait_rotation(&dir, last);
    wait_rotation(&dir, last);
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let lines = lines.join().unwrap();
    eprintln!("{lines:#?}");
    assert!(metrics.contains("twtrace_recorder_write_errors_total 0"), "{metrics}");
    assert!(metrics.contains("twtrace_recorder_recording 1"), "{metrics}");
    assert!(lines.iter().any(|l| l.contains("recorded") && l.contains("segments opened")), "{lines:#?}");
    // The directory holds exactly the burst's TIME_WAIT sockets, as the test made them.
    assert_eq!(births_in(&dir, &[]), made);
    let out = twtrace(&["report", dir.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("damage"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mark_made_while_recording_is_in_the_stream_between_the_bursts_around_it_and_in_every_report() {
    if !can_trace() {
        return;
    }
    let ns = burst_netns("flight-mark");
    let dir = temp("flight-mark");
    let flight = Flight::start(&ns, &dir, &["--segment", "1s"]);
    let before = burst(&ns, 7);
    let (earliest, marked, latest) = {
        let earliest = rfc3339_now();
        let out = twtrace(&["mark", "--record-dir", dir.to_str().unwrap(), "deploy", "v2\u{1b}[2J"]);
        let latest = rfc3339_now();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let at = stderr.trim().rsplit(' ').next().unwrap().to_owned();
        (earliest, at, latest)
    };
    assert!(earliest <= marked && marked <= latest, "{earliest} <= {marked} <= {latest}");
    let after = burst(&ns, 9);
    let last = wait_rotation(&dir, 0);
    wait_rotation(&dir, last);
    flight.stop();

    // In the stream: after every birth of the first burst, before every birth of the second.
    let out = twtrace(&["trace", "--json", "--replay", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let at = events.iter().position(|v| v["event"] == "mark").expect("the mark is in the stream");
    let births = |range: &[Value]| -> BTreeSet<(SocketAddr, SocketAddr)> {
        range
            .iter()
            .filter(|v| v["event"] == "timewait_birth")
            .map(|v| (support::addr(v, "local"), support::addr(v, "remote")))
            .collect()
    };
    assert_eq!(births(&events[..at]), before);
    assert_eq!(births(&events[at + 1..]), after);
    assert_eq!(events.iter().filter(|v| v["event"] == "mark").count(), 1);

    let report = twtrace(&["report", "--json", dir.to_str().unwrap()]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let marks = report["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0]["text"], "deploy v2 [2J", "one line, no escape sequence");
    assert_eq!(marks[0]["at"], marked.as_str());
    assert_eq!(marks[0]["uid"], 0);
    assert_eq!(report["timewait"]["births"], 16);

    let html = dir.with_extension("html");
    let text = twtrace(&["report", dir.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    let time_of_day = &marked[11..19];
    assert!(text.contains(&format!("  1  {time_of_day}  \"deploy v2 [2J\"  (uid 0 pid ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  marks ") && l.contains('1')), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<td>deploy v2 [2J</td>") && page.contains("<g class=\"mark\">"), "{page}");

    // No recorder any more: `mark` says so and fails.
    let out = twtrace(&["mark", "--record-dir", dir.to_str().unwrap(), "too late"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no flight recorder runs on"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&html).unwrap();
}

#[test]
fn a_namespace_running_out_of_ports_keeps_its_window_and_report_past_retention() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("flight-kept");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40029");
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let dir = temp("flight-kept");
    // Retention by age alone, short: the window's segments leave DIR within seconds.
    let flight = Flight::start(&ns, &dir, &["--segment", "1s", "--keep", "3s", "--keep-size", "off"]);
    wait_rotation(&dir, 0);
    // 60 connections/s for 3 s into 30 ports held 60 s each: connect() fails from 0.5 s on
    // (in a 5.10 guest under kprobe the churn made fewer than 100 connections in 3 s).
    let summary = support::churn_in(&ns, "client", 3, Duration::ZERO).join().unwrap();
    let refused = summary["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0);
    assert!(refused > 0, "the range ran out: {summary}");
    // The window's report is written once a segment without failures follows them. Only this
    // incident's window counts: a loaded guest may have another (a 6.18 guest under kprobe
    // kept a `paws` window too: duplicates of delayed segments meet PAWS on loopback).
    let kept = dir.join("kept");
    let ours = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.ends_with("-connect_failures") || name.ends_with("-port_space")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let window = loop {
        let found = std::fs::read_dir(&kept)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| ours(p) && p.join("report.txt").exists() && p.join("report.html").exists());
        if let Some(w) = found {
            break w;
        }
        assert!(Instant::now() < deadline, "no kept window with its report in {}", kept.display());
        std::thread::sleep(Duration::from_millis(100));
    };
    let in_window = segments(&window);
    assert!(in_window.len() >= 3, "before, during and after: {in_window:?}");
    // Retention removes the window's segments from DIR; the window keeps them.
    let newest_kept = in_window.last().unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while segments(&dir).first().is_none_or(|s| s.0 <= newest_kept) {
        assert!(Instant::now() < deadline, "retention never passed segment {newest_kept}: {:?}", segments(&dir));
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = flight.stop();
    assert!(lines.iter().any(|l| l.contains("deleted")), "{lines:#?}");

    let name = window.file_name().unwrap().to_string_lossy().into_owned();
    let windows: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(windows.iter().filter(|p| ours(p)).count(), 1, "one incident, one window: {windows:?}");
    let text = std::fs::read_to_string(window.join("report.txt")).unwrap();
    assert!(text.contains("found no free local port (EADDRNOTAVAIL)"), "{text}");
    let page = std::fs::read_to_string(window.join("report.html")).unwrap();
    assert!(page.contains("EADDRNOTAVAIL"), "the page names the finding too");

    // Every failure of the churn is in the window (they are contiguous, and the window runs
    // from the segment before the first to the first segment without any).
    let report = twtrace(&["report", "--json", window.to_str().unwrap()]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let counted = report["failures_total"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f[0] == "EADDRNOTAVAIL")
        .map_or(0, |f| f[1].as_u64().unwrap());
    let blind = report["recording"]["lost"].as_u64().unwrap() + report["recording"]["skipped_runs"].as_u64().unwrap();
    eprintln!("window {name}: {in_window:?}; churn refused {refused}, the window counts {counted} (blind {blind})");
    assert!(counted.abs_diff(refused) <= blind, "churn saw {refused}, the window {counted} (blind {blind})");
    assert_eq!(report["recording"]["damage"], serde_json::json!([]));
    std::fs::remove_dir_all(&dir).unwrap();
}
