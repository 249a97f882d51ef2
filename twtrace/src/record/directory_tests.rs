//! The flight recorder end to end without a kernel: a made-up stream through
//! [`FlightRecorder`] with the stream's own clock driving rotation, read back as a directory.

use std::{path::PathBuf, time::Duration};

use super::*;
use crate::{
    event::{Sysctls, TimeWaitChange, TimeWaitEvent, TimeWaitSubstate},
    record::{
        Recorder,
        directory::fuzz_input,
        segment_files::list,
        segments::{FlightRecorder, Policy, RunTotals},
    },
    source_info::SegmentMark,
    time::WallClock,
};

const S: u64 = 1_000_000_000;
/// 2026-11-22T22:00:00Z at monotonic 1000 s.
const REALTIME_AT_1000: u64 = 1_795_384_800 * S;

fn info(clock: WallClock, started_ns: u64, namespaces: Vec<NamespaceDescription>) -> SourceInfo {
    SourceInfo {
        host: "web-7".into(),
        kernel: "6.12".into(),
        clock,
        started_ns,
        sysctls: Sysctls::default(),
        namespaces,
        backends: Vec::new(),
        netns: None,
        port: None,
        filter: String::new(),
        sockets: Vec::new(),
        segment: None,
    }
}

fn namespace(netns: u32, name: &str, live: bool) -> NamespaceDescription {
    NamespaceDescription { netns, name: name.into(), sysctls: None, live }
}

fn birth(ts_ns: u64, tw_id: u64) -> Event {
    Event::TimeWait(TimeWaitEvent {
        ts_ns,
        tw_id,
        flow: None,
        netns: 7,
        owner: None,
        change: TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None },
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("twtrace-dir-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn every_10s() -> Policy {
    Policy {
        segment_time: Duration::from_secs(10),
        segment_bytes: 1 << 30,
        keep_age: None,
        keep_bytes: None,
        keep_windows: 0,
    }
}

/// One run: a birth every second from `from` s for `seconds` s (monotonic), ticking after
/// each, so a 10 s policy makes a segment per 10 s. `extra` events go in at their second.
fn run(dir: &Path, clock: WallClock, from: u64, seconds: u64, extra: &[(u64, Event)]) {
    let namespaces = vec![namespace(7, "tw-a", true)];
    let mut recorder = FlightRecorder::start(dir, every_10s(), &info(clock, from * S, namespaces)).unwrap();
    for second in from..from + seconds {
        for (_, e) in extra.iter().filter(|(at, _)| *at == second) {
            recorder.event(e);
        }
        recorder.event(&birth(second * S + S / 2, second));
        recorder.tick(second * S + S - 1, RunTotals::default());
    }
    recorder.finish((from + seconds) * S, RunTotals::default());
}

fn read_all(dir: &Path, window: Window) -> (DirectoryReader, Vec<Event>) {
    let mut reader = DirectoryReader::open(dir, window).unwrap();
    let mut events = Vec::new();
    while let Some(batch) = reader.next_events() {
        events.extend(batch);
    }
    (reader, events)
}

fn at(text: &str) -> Option<TimeSpec> {
    Some(TimeSpec::parse(text).unwrap())
}

#[test]
fn segments_rotate_by_the_streams_time_and_read_back_as_one_stream() {
    let dir = temp_dir("rotate");
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    run(&dir, clock, 1000, 60, &[]);
    let names: Vec<String> =
        list(&dir).unwrap().iter().map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names[0], "twtrace-20261122T220000Z-000000.twr");
    assert_eq!(names[5], "twtrace-20261122T220050Z-000005.twr", "named after its start, rounded down");
    let (reader, events) = read_all(&dir, Window::default());
    assert_eq!(events.len(), 60);
    assert!(events.windows(2).all(|w| w[0].ts_ns() < w[1].ts_ns()), "in order");
    assert_eq!(reader.damage(), &[] as &[Damage]);
    assert_eq!(reader.trailer().map(|t| t.events), Some(60), "the end markers' sum");
    assert_eq!(reader.segments_read(), 6);
    // Each segment reads alone, with the run's description.
    let alone = Reader::open(&dir.join(&names[3])).unwrap();
    assert_eq!(alone.info.segment.map(|m| (m.seq, m.part)), Some((3, 3)));
    // Rotated at the first tick 10 s after the start: 1000, 1010.999..., 1020.999..., 1030.999...
    assert_eq!(alone.info.started_ns, 1031 * S - 1);
    assert_eq!(alone.info.namespaces, vec![namespace(7, "tw-a", true)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_window_across_three_segments_holds_exactly_its_events() {
    let dir = temp_dir("window");
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    run(&dir, clock, 1000, 60, &[]);
    // Births at hh:mm:ss.5: 22:00:12.5 .. 22:00:37.5 are 26, in segments 1 (22:00:11-20),
    // 2 (21-30) and 3 (31-40).
    let window = Window { since: at("22:00:12"), until: at("2026-11-22T22:00:38Z") };
    let (reader, events) = read_all(&dir, window);
    assert_eq!(reader.segments_read(), 3, "segments 0 and 4 are left out by their names");
    let inside: Vec<u64> = events
        .iter()
        .filter(|e| reader.bounds.contains(clock.to_unix_ns(e.ts_ns())))
        .map(|e| match e {
            Event::TimeWait(t) => t.tw_id,
            _ => 0,
        })
        .collect();
    assert_eq!(inside, (1012..=1037).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleted_and_truncated_segments_are_named() {
    let dir = temp_dir("damage");
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    run(&dir, clock, 1000, 50, &[]);
    let segments = list(&dir).unwrap();
    std::fs::remove_file(&segments[2].path).unwrap();
    // Segment 3 cut in the middle of its last chunk, as a crash would leave it.
    let cut = &segments[3];
    let file = std::fs::OpenOptions::new().write(true).open(&cut.path).unwrap();
    file.set_len(cut.bytes - 40).unwrap();
    let (reader, events) = read_all(&dir, Window::default());
    let damage: Vec<String> = reader.damage().iter().map(ToString::to_string).collect();
    assert_eq!(damage.len(), 3, "{damage:#?}");
    assert!(
        damage[0].starts_with("nothing recorded from 2026-11-22T22:00:20")
            && damage[0].contains("segment 2 is missing"),
        "{damage:#?}"
    );
    let name3 = cut.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        matches!(&reader.damage()[1], Damage::InSegment { segment, damage } if *segment == name3
        && matches!(**damage, Damage::Truncated { .. })),
        "{damage:#?}"
    );
    assert!(matches!(&reader.damage()[2], Damage::InSegment { damage, .. } if **damage == Damage::Unfinished));
    // Segment 2's ten births are gone; the cut took segment 3's end marker, not its births.
    assert_eq!(events.len(), 40, "{damage:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn namespaces_carry_across_segments_and_into_a_window() {
    let dir = temp_dir("namespaces");
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    let created = Event::Namespace(NamespaceEvent { ts_ns: 1005 * S, namespace: namespace(9, "tw-b", true) });
    let gone = Event::Namespace(NamespaceEvent { ts_ns: 1015 * S, namespace: namespace(7, "tw-a", false) });
    run(&dir, clock, 1000, 30, &[(1005, created), (1015, gone)]);
    let segments = list(&dir).unwrap();
    let headers: Vec<Vec<String>> = segments
        .iter()
        .map(|s| Reader::open(&s.path).unwrap().info.namespaces.iter().map(|n| n.name.clone()).collect())
        .collect();
    assert_eq!(headers, vec![vec!["tw-a".to_owned()], vec!["tw-a".into(), "tw-b".into()], vec!["tw-b".into()]]);
    // Segment 1 deleted: reading from segment 0 straight to 2, the stream learns that tw-a is
    // gone from segment 2's header.
    std::fs::remove_file(&segments[1].path).unwrap();
    let (_, events) = read_all(&dir, Window::default());
    let described: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Namespace(n) => Some((n.namespace.name.clone(), n.namespace.live)),
            _ => None,
        })
        .collect();
    assert_eq!(described, vec![("tw-b".into(), true), ("tw-a".into(), false)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restart_is_a_gap_and_its_events_join_the_first_runs_clock() {
    let dir = temp_dir("restart");
    let first = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    run(&dir, first, 1000, 20, &[]);
    // Rebooted: the second run's monotonic clock starts near zero, 100 s of wall time later.
    let second = WallClock { realtime_ns: REALTIME_AT_1000 + 120 * S, monotonic_ns: 10 * S };
    run(&dir, second, 10, 20, &[]);
    let names: Vec<u64> = list(&dir).unwrap().iter().map(|s| s.name.seq).collect();
    assert_eq!(names, vec![0, 1, 2, 3], "numbers go on across runs");
    let (reader, events) = read_all(&dir, Window::default());
    assert_eq!(events.len(), 40);
    assert!(events.windows(2).all(|w| w[0].ts_ns() < w[1].ts_ns()), "one timeline");
    // The second run's first birth is 120.5 s of wall time after the first run's start.
    assert_eq!(events[20].ts_ns(), 1120 * S + S / 2);
    let ids: Vec<u64> = events
        .iter()
        .map(|e| match e {
            Event::TimeWait(t) => t.tw_id,
            _ => 0,
        })
        .collect();
    assert_eq!(ids[20], 10 + (1 << 48), "a later run's socket numbers do not meet the first's");
    assert_eq!(
        reader.damage(),
        &[Damage::Gap {
            from_unix_ns: REALTIME_AT_1000 + 20 * S,
            to_unix_ns: REALTIME_AT_1000 + 120 * S,
            cause: GapCause::Restarted
        }]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One segment of run 1 written by hand: births at each half second from `from` s for
/// `seconds` s, its header declaring `not_recorded` events lost before it.
fn segment_by_hand(dir: &Path, clock: WallClock, seq: u64, from_ns: u64, seconds: u64, not_recorded: u64) {
    let mut header = info(clock, from_ns, vec![namespace(7, "tw-a", true)]);
    header.segment = Some(SegmentMark { run: 1, seq, part: seq as u32, not_recorded });
    let name = SegmentName { seq, start_unix_s: clock.to_unix_ns(from_ns) / S };
    let mut recorder = Recorder::create(&dir.join(name.file_name()), &header, false).unwrap();
    for k in 0..seconds {
        recorder.write(&birth(from_ns + k * S + S / 2, seq * 100 + k)).unwrap();
    }
    let trailer = Trailer { events: seconds, lost: 0, ended_ns: from_ns + seconds * S, decoder: Default::default() };
    recorder.finish(&trailer).unwrap();
}

#[test]
fn an_outage_too_short_to_see_is_a_gap_when_the_next_segment_declares_its_loss() {
    let dir = temp_dir("short-outage");
    std::fs::create_dir_all(&dir).unwrap();
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    // 0.5 s of silence between the segments: well inside a rotation's tolerance.
    segment_by_hand(&dir, clock, 0, 1000 * S, 5, 0);
    segment_by_hand(&dir, clock, 1, 1005 * S + S / 2, 5, 0);
    let (reader, events) = read_all(&dir, Window::default());
    assert_eq!(events.len(), 10);
    assert_eq!(reader.damage(), &[], "silence alone this short is a rotation");
    // The same, the second segment declaring 12 events it could not write.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    segment_by_hand(&dir, clock, 0, 1000 * S, 5, 0);
    segment_by_hand(&dir, clock, 1, 1005 * S + S / 2, 5, 12);
    let (reader, _) = read_all(&dir, Window::default());
    let gap = Damage::Gap {
        from_unix_ns: REALTIME_AT_1000 + 5 * S,
        to_unix_ns: REALTIME_AT_1000 + 5 * S + S / 2,
        cause: GapCause::Stopped { not_recorded: 12 },
    };
    assert_eq!(reader.damage(), std::slice::from_ref(&gap));
    assert!(
        gap.to_string()
            .ends_with("(0.5 s): twtrace stopped writing (a full disk or a write error): 12 events not recorded"),
        "{gap}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_segments_are_skipped_and_named() {
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    let dir = temp_dir("unreadable");
    run(&dir, clock, 1000, 20, &[]);
    let mut segments: Vec<(String, Vec<u8>)> = list(&dir)
        .unwrap()
        .iter()
        .map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&s.path).unwrap()))
        .collect();
    segments.insert(0, ("twtrace-20261122T215950Z-000099.twr".into(), Vec::new()));
    segments.push(("notes.txt".into(), b"not a segment".to_vec()));
    let mut reader = DirectoryReader::from_bytes(segments, Window::default()).unwrap();
    let mut events = 0;
    while let Some(batch) = reader.next_events() {
        events += batch.len();
    }
    assert_eq!(events, 20);
    assert_eq!(reader.damage().len(), 1, "{:?}", reader.damage());
    assert!(reader.damage()[0].to_string().contains("000099.twr: unreadable"), "{:?}", reader.damage());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the fuzz target checks, over a real two-run directory cut at every few bytes and with
/// bytes flipped along it: stitching never panics, and hands out at most what is there.
#[test]
fn stitching_survives_every_cut_and_flip() {
    let dir = temp_dir("fuzzlike");
    let first = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    run(&dir, first, 1000, 25, &[]);
    let second = WallClock { realtime_ns: REALTIME_AT_1000 + 60 * S, monotonic_ns: 5 * S };
    run(&dir, second, 5, 25, &[]);
    let base = fuzz_input::base_unix_s();
    let packed: Vec<(u16, u16, Vec<u8>)> = list(&dir)
        .unwrap()
        .iter()
        .map(|s| (s.name.seq as u16, (s.name.start_unix_s - base) as u16, std::fs::read(&s.path).unwrap()))
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    let whole = fuzz_input::pack(Some(10), Some(75), &packed);
    let read = |data: &[u8]| -> usize {
        let (window, segments) = fuzz_input::unpack(data);
        let Ok(mut reader) = DirectoryReader::from_bytes(segments, window) else { return 0 };
        let mut events = 0;
        while let Some(batch) = reader.next_events() {
            events += batch.len();
        }
        for d in reader.damage() {
            let _ = d.to_string();
        }
        events
    };
    // Intact: 50 births; the window (22:00:10 to 22:01:15) drops only whole segments before
    // and after it, so what is read covers it.
    assert_eq!(read(&fuzz_input::pack(None, None, &packed)), 50);
    assert!(read(&whole) >= 30, "{}", read(&whole));
    for cut in (0..whole.len()).step_by(7) {
        assert!(read(&whole[..cut]) <= 50);
    }
    let mut flipped = whole.clone();
    for at in (0..whole.len()).step_by(13) {
        flipped[at] ^= 0x5a;
        assert!(read(&flipped) <= 50 + 4, "at {at}");
        flipped[at] ^= 0x5a;
    }
}

#[test]
fn a_mark_sent_to_the_running_recorder_is_in_the_stream_in_order_and_acknowledged() {
    let dir = temp_dir("mark");
    let clock = WallClock { realtime_ns: REALTIME_AT_1000, monotonic_ns: 1000 * S };
    let mut recorder = FlightRecorder::start(&dir, every_10s(), &info(clock, 1000 * S, Vec::new())).unwrap();
    recorder.event(&birth(1000 * S + 1, 1));
    let client = {
        let dir = dir.clone();
        std::thread::spawn(move || crate::record::control::send_mark(&dir, "deploy v2"))
    };
    // Batches go on (each a tick) until the client is answered: the mark is stamped with the
    // tick that took it.
    let mut second = 1001;
    while !client.is_finished() {
        recorder.tick(second * S, RunTotals::default());
        recorder.event(&birth(second * S + 1, second));
        second += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let at = client.join().unwrap().expect("the recorder confirms the mark");
    recorder.finish(second * S, RunTotals::default());
    let (_, events) = read_all(&dir, Window::default());
    let marks: Vec<(usize, &crate::event::MarkEvent)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| if let Event::Mark(m) = e { Some((i, m)) } else { None })
        .collect();
    assert_eq!(marks.len(), 1, "{events:?}");
    let (i, mark) = marks[0];
    assert_eq!(mark.text, "deploy v2");
    assert_eq!(crate::time::WallTime::from_unix_ns(mark.unix_ns).rfc3339(), at);
    assert_eq!(clock.to_unix_ns(mark.ts_ns), mark.unix_ns, "on the stream's clock");
    // After every event of the batches before it, before every one after.
    assert!(events[..i].iter().all(|e| e.ts_ns() < mark.ts_ns));
    assert!(events[i + 1..].iter().all(|e| e.ts_ns() > mark.ts_ns));
    assert!(!dir.join(crate::record::control::SOCKET_NAME).exists(), "the socket went with the recorder");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Inputs the fuzzer found (`cargo xtask fuzz --target read_directory`), read as the fuzz
/// target reads them: no panic. The first: a lost-records total near `u64::MAX` in a later run
/// overflowed when the earlier runs' losses were added to it.
#[test]
fn fuzzer_findings_read_without_panic() {
    for input in [&include_bytes!("testdata/directory-lost-total-overflow.bin")[..]] {
        let (window, segments) = fuzz_input::unpack(input);
        let Ok(mut reader) = DirectoryReader::from_bytes(segments, window) else { continue };
        while reader.next_events().is_some() {}
        for damage in reader.damage() {
            let _ = damage.to_string();
        }
    }
}
