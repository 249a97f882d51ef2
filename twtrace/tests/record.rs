//! `twtrace record` against a live `twtrace trace` on the same traffic, then `report` against
//! `ss`, and the HTML report in a real browser.

mod support;

use std::{
    collections::BTreeMap,
    io::BufReader,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use support::{Netns, Recording, can_trace, client_closes_first, server_closes_first};

const SERVER_CLOSES: usize = 40;
const CLIENT_CLOSES: usize = 30;

fn twtrace(args: &[&str]) -> std::process::Output {
    let out = support::output(Command::new(env!("CARGO_BIN_EXE_twtrace")).args(args));
    assert!(out.status.success(), "twtrace {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Events keyed by everything but their times, each with its times (timestamp, duration,
/// timeout). Two tracers never agree on times to the nanosecond: each attached program reads
/// the clock (and, for a timer's timeout, jiffies) itself, one after the other. The
/// wall-clock string and counter samples (each process samples at its own moments) are left
/// out.
fn comparable(lines: &[Value]) -> BTreeMap<String, Vec<(u64, u64, u64)>> {
    let mut events: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for line in lines {
        if ["summary", "netstat"].contains(&line["event"].as_str().unwrap_or("")) {
            continue;
        }
        // Drops of unknown namespace (netns 0: a TCP drop after the socket lookup, before
        // 6.11) pass every --netns filter, so other tests' drops reach both tracers, and one
        // that comes between the recording's stop and the live tracer's is only live (two
        // PAWS drops of another test's namespace, once, on a 6.1 guest).
        if line["netns"] == 0 {
            continue;
        }
        let mut v = line.clone();
        let m = v.as_object_mut().unwrap();
        m.remove("ts");
        let mono = m.remove("mono_ns").and_then(|t| t.as_u64()).expect("mono_ns");
        let duration = m.remove("duration_ns").and_then(|t| t.as_u64()).unwrap_or(0);
        let timeout_ns = m.remove("timeout_ms").and_then(|t| t.as_u64()).unwrap_or(0) * 1_000_000;
        events.entry(v.to_string()).or_default().push((mono, duration, timeout_ns));
    }
    for times in events.values_mut() {
        times.sort();
    }
    events
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("twtrace-it-{}-{name}", std::process::id()))
}

#[test]
fn record_equals_live_trace_and_its_report_matches_ss() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("record");
    let Some(tracer) = support::tracer_for("timewait", &["--netns", &ns.name]) else { return };
    let path = temp("roundtrip.twr");
    let recording = Recording::start(&ns, &path);
    let client_side = ns.run(|| {
        // Two listeners: a client-closed connection to the listener whose side holds
        // TIME_WAIT sockets could get one of their client ports back, and its SYN would end
        // one of them early (69 of 70 in ss, once, on a 6.1 guest).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, SERVER_CLOSES, None);
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        client_closes_first(&other, CLIENT_CLOSES);
        // A refused connect(): a port search with an error, and state changes.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(TcpStream::connect(closed).is_err());
        other.local_addr().unwrap()
    });
    let in_ss = ns.time_wait_sockets_settled(SERVER_CLOSES + CLIENT_CLOSES).len();
    // 69 of 70 was seen twice on 6.1 guests without the wait; if it recurs with it, a
    // TIME_WAIT socket really died early, and the counters say which way.
    assert_eq!(in_ss, SERVER_CLOSES + CLIENT_CLOSES, "{:?}", ns.time_wait_counters());
    // Both tracers drain within their drain interval; then both stop.
    std::thread::sleep(Duration::from_millis(500));
    recording.stop();
    let live = tracer.stop();

    let replay = twtrace(&["trace", "--json", "--replay", path.to_str().unwrap()]);
    let replayed: Vec<Value> =
        String::from_utf8_lossy(&replay.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (live_events, replayed_events) = (comparable(&live), comparable(&replayed));
    let births = |lines: &[Value]| lines.iter().filter(|v| v["event"] == "timewait_birth").count();
    assert_eq!(births(&live), in_ss, "the live tracer saw every birth");
    type Timed = BTreeMap<String, Vec<(u64, u64, u64)>>;
    let only = |a: &Timed, b: &Timed| -> Vec<String> {
        a.iter().filter(|(k, n)| b.get(*k).map(Vec::len) != Some(n.len())).map(|(k, _)| k.clone()).take(3).collect()
    };
    assert!(
        only(&live_events, &replayed_events).is_empty() && only(&replayed_events, &live_events).is_empty(),
        "the recording holds exactly the events trace printed live\nonly live: {:#?}\nonly replayed: {:#?}",
        only(&live_events, &replayed_events),
        only(&replayed_events, &live_events)
    );
    let mut worst = (0u64, 0u64, 0u64);
    for (key, live_times) in &live_events {
        for ((t1, d1, o1), (t2, d2, o2)) in live_times.iter().zip(&replayed_events[key]) {
            worst = (worst.0.max(t1.abs_diff(*t2)), worst.1.max(d1.abs_diff(*d2)), worst.2.max(o1.abs_diff(*o2)));
        }
    }
    eprintln!(
        "{} events in both; times differ by at most {} ns, durations by {} ns, timeouts by {} ns",
        live_events.values().map(Vec::len).sum::<usize>(),
        worst.0,
        worst.1,
        worst.2
    );
    // Under emulation (the VM matrix) an interrupt between the two tracers' programs takes
    // milliseconds: 2-10 ms were seen on 5.10, 6.1 and 6.12 guests. A timeout is read in
    // jiffies: a tick between the two programs changes it by one (4 ms at HZ=250, seen on 6.1).
    let emulated = std::env::var_os("TWTRACE_TEST_EMULATED").is_some();
    let bound = if emulated { 50_000_000 } else { 1_000_000 };
    let jiffy_bound = if emulated { 50_000_000 } else { 10_000_000 };
    assert!(
        worst.0 < bound && worst.1 < bound && worst.2 <= jiffy_bound,
        "the same events, at the same moments: {worst:?}"
    );
    let summary = replayed.iter().rfind(|v| v["event"] == "summary").expect("summary");
    assert_eq!(summary["damage"], serde_json::json!([]), "{summary}");

    let report = twtrace(&["report", "--json", path.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["recording"]["complete"], true);
    assert_eq!(report["timewait"]["births"], in_ss as u64, "{}", report["timewait"]);
    assert_eq!(report["timewait"]["peak"], in_ss as u64, "{}", report["timewait"]);
    // The client's TIME_WAIT sockets hold its ports toward the server.
    let dests = report["destinations"].as_array().unwrap();
    let dest = dests
        .iter()
        .find(|d| d["remote"] == client_side.to_string())
        .unwrap_or_else(|| panic!("a destination row for {client_side}: {dests:?}"));
    assert_eq!(dest["peak_in_use"], CLIENT_CLOSES as u64, "{dest}");
    let owners = &report["timewait"]["by_owner_at_peak"];
    assert!(
        owners.as_array().unwrap().iter().any(|g| g["key"].as_str().unwrap().starts_with(support::NETNS_THREAD)),
        "owners at the peak name the test thread: {owners}"
    );

    damaged_and_foreign_copies_read_without_root(&path, in_ss as u64);
    std::fs::remove_file(&path).unwrap();
}

/// The recording as another machine gets it: readable by an unprivileged user, and cut short
/// (as by `kill -9` mid-write), it still reports what it holds and says what was lost.
fn damaged_and_foreign_copies_read_without_root(path: &Path, births: u64) {
    let bytes = std::fs::read(path).unwrap();
    let copy = temp("copy.twr");
    let cut = temp("cut.twr");
    let empty = temp("empty.twr");
    std::fs::write(&copy, &bytes).unwrap();
    // Everything but the end chunk and the last bytes of the chunk before it.
    std::fs::write(&cut, &bytes[..bytes.len() - 120]).unwrap();
    std::fs::write(&empty, b"").unwrap();
    for p in [&copy, &cut, &empty] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    // util-linux's setpriv drops root. The VM guests have only busybox's applet of that name,
    // without --reuid: there the reading runs as root (the host run proves the unprivileged
    // case).
    let setpriv = which("setpriv").is_some()
        && support::output(Command::new("setpriv").arg("--version"))
            .stdout
            .windows(b"util-linux".len())
            .any(|w| w == b"util-linux");
    let as_nobody = |args: &[&str]| {
        let mut cmd = if setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_twtrace")]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_twtrace"))
        };
        support::output(cmd.args(args))
    };
    let out = as_nobody(&["report", "--json", copy.to_str().unwrap()]);
    assert!(out.status.success(), "an unprivileged user reads a recording: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["timewait"]["births"], births);

    let out = as_nobody(&["report", "--json", cut.to_str().unwrap()]);
    assert!(out.status.success(), "a cut recording still reports: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damage: no end marker"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recording"]["complete"], false);
    assert!(report["recording"]["events"].as_u64().unwrap() > 0, "the intact chunks are kept");

    let out = as_nobody(&["trace", "--replay", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty file (0 bytes): nothing was recorded"), "{stderr}");
    for p in [copy, cut, empty] {
        let _ = std::fs::remove_file(p);
    }
}

/// The HTML report in headless Chromium: the DOM has every chart with data, and the
/// screenshot shows the series' colours.
#[test]
fn html_report_renders_with_charts_in_a_browser() {
    if !can_trace() {
        return;
    }
    if which("chromium").is_none() {
        support::skip("record", "chromium is not installed here (cargo xtask setup installs it on the host)");
        return;
    }
    let ns = Netns::new("html");
    let path = temp("html.twr");
    let recording = Recording::start(&ns, &path);
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, SERVER_CLOSES, None);
        client_closes_first(&listener, CLIENT_CLOSES);
    });
    std::thread::sleep(Duration::from_millis(300));
    recording.stop();
    let recording = path.as_path();
    let html = temp("report.html");
    let png = temp("report.png");
    twtrace(&["report", recording.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    let url = format!("file://{}", html.display());
    let chromium = |extra: &[&str]| {
        support::output(
            Command::new("chromium")
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,3000"])
                .args(extra)
                .arg(&url)
                .env("HOME", std::env::temp_dir()),
        )
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 5, "five charts in the rendered DOM");
    let timewait_chart = dom.split("id=\"chart-timewait\"").nth(1).expect("TIME_WAIT chart");
    let points = timewait_chart.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(points.split(' ').count() >= 2, "the TIME_WAIT series has points: {points}");

    let shot = chromium(&[&format!("--screenshot={}", png.display())]);
    assert!(png.exists(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let channels = frame.color_type.samples();
    let pixels = &buf[..frame.buffer_size()];
    let count = |rgb: [u8; 3]| pixels.chunks(channels).filter(|p| p[..3] == rgb).count();
    // The first series colour (#1f77b4) draws the TIME_WAIT line and others; the second
    // (#d62728) the deaths line.
    let (blue, red) = (count([0x1f, 0x77, 0xb4]), count([0xd6, 0x27, 0x28]));
    eprintln!("screenshot {}x{}: {blue} series-blue pixels, {red} series-red pixels", frame.width, frame.height);
    assert!(blue > 1000, "the charts' lines are drawn ({blue} blue pixels)");
    assert!(red > 300, "the second series is drawn ({red} red pixels)");
    let _ = std::fs::remove_file(&html);
    let _ = std::fs::remove_file(&png);
    let _ = std::fs::remove_file(&path);
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// `kill -9` in the middle of a recording (no chance to finish the file): everything older
/// than about a second is on disk, and readers say the end is missing.
#[test]
fn a_killed_recording_keeps_all_but_the_last_second() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("kill9");
    let path = temp("kill9.twr");
    let recording = Recording::start(&ns, &path);
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, SERVER_CLOSES, None);
    });
    // Chunks are sealed every second once a batch arrives: two seconds cover the last births.
    // An emulated guest is given up to twenty, asking the file as it grows: on a 6.18 guest
    // sharing the host with another it held none of the 40 births after two, 29 after five.
    let births_in = |path: &std::path::Path| -> u64 {
        let report = twtrace(&["report", "--json", path.to_str().unwrap()]);
        serde_json::from_slice::<Value>(&report.stdout).map_or(0, |r| r["timewait"]["births"].as_u64().unwrap_or(0))
    };
    if support::emulated() {
        let start = std::time::Instant::now();
        while births_in(&path) < SERVER_CLOSES as u64 && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(500));
        }
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    recording.kill();
    let report = twtrace(&["report", "--json", path.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["recording"]["complete"], false);
    assert_eq!(report["timewait"]["births"], SERVER_CLOSES as u64, "{}", report["timewait"]);
    let damage = report["recording"]["damage"].to_string();
    assert!(damage.contains("no end marker"), "{damage}");
    std::fs::remove_file(&path).unwrap();
}
