//! The format on made-up streams: every event kind survives a round trip, and every kind of
//! damage is reported while the intact part is kept.

use std::path::PathBuf;

use super::*;
use crate::{
    event::ExistingSocket,
    event::Sysctls,
    event::{
        DeathReason, DropEvent, LostEvent, NetstatEvent, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent,
        TimeWaitChange, TimeWaitEvent, TimeWaitSubstate,
    },
    event::{NamespaceDescription, NamespaceEvent, SkippedEvent},
    probes::{Attempt, Backend, Family, FamilyReport},
    source_info::SourceInfo,
    time::WallClock,
};

fn flow(local: &str, remote: &str) -> Option<SocketFlow> {
    Some(SocketFlow { local: local.parse().unwrap(), remote: remote.parse().unwrap() })
}

fn proc(pid: u32, comm: &str) -> Option<Process> {
    Some(Process { pid, tid: pid + 1, comm: comm.into(), cgroup_id: 7_000_000_000 + u64::from(pid) })
}

/// One of every kind and variant, with the awkward values: no flow, no owner, IPv6,
/// timestamps and ids going backwards, an unknown substate, negative counter changes.
fn every_kind(base: u64) -> Vec<Event> {
    let tw = |ts, id, change, f, owner| {
        Event::TimeWait(TimeWaitEvent { ts_ns: ts, tw_id: id, flow: f, netns: 4026531840, owner, change })
    };
    vec![
        tw(
            base,
            10,
            TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: Some(true) },
            flow("10.0.0.1:40000", "10.0.0.2:80"),
            proc(42, "curl"),
        ),
        tw(
            base + 5,
            11,
            TimeWaitChange::Birth { substate: TimeWaitSubstate::FinWait2, timeout_ms: 60_000, timestamps: Some(false) },
            flow("[2001:db8::1]:40001", "[2001:db8::2]:443"),
            None,
        ),
        tw(
            base + 4,
            12,
            TimeWaitChange::Birth { substate: TimeWaitSubstate::Other(9), timeout_ms: 1, timestamps: None },
            None,
            None,
        ),
        tw(
            base + 3,
            11,
            TimeWaitChange::Rearm { substate: TimeWaitSubstate::Other(9), timeout_ms: 1 },
            None,
            proc(43, "nginx"),
        ),
        tw(
            base + 60_000_000_000,
            10,
            TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60_000_000_000 },
            flow("10.0.0.1:40000", "10.0.0.2:80"),
            proc(42, "curl"),
        ),
        tw(
            base + 60_000_000_001,
            11,
            TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: 1 },
            flow("[2001:db8::1]:40001", "[2001:db8::2]:443"),
            None,
        ),
        Event::State(StateEvent {
            ts_ns: base + 7,
            sk_addr: 0xffff_8881_0a0b_0c00,
            netns: 4026531840,
            old_state: 7,
            new_state: 2,
            flow: flow("10.0.0.1:0", "10.0.0.2:80"),
            task: proc(42, "curl"),
        }),
        Event::State(StateEvent {
            ts_ns: base + 8,
            sk_addr: 0xffff_8881_0a0b_0c00,
            netns: 1,
            old_state: 2,
            new_state: 1,
            flow: None,
            task: None,
        }),
        Event::Drop(DropEvent {
            ts_ns: base + 9,
            reason: "TCP_RFC7323_TW_PAWS".into(),
            reason_code: 94,
            netns: 0,
            flow: flow("10.0.0.2:80", "198.51.100.7:5000"),
            tcp_flags: 0x02,
            seq: u32::MAX,
            ack_seq: 0,
            outgoing: false,
        }),
        Event::Drop(DropEvent {
            ts_ns: base + 10,
            reason: "NOT_SPECIFIED".into(),
            reason_code: 2,
            netns: 5,
            flow: None,
            tcp_flags: 0,
            seq: 1,
            ack_seq: 2,
            outgoing: true,
        }),
        Event::PortSearch(PortSearchEvent {
            ts_ns: base + 11,
            op: SearchOp::Connect,
            duration_ns: 123_456,
            errno: 99,
            candidates: Some(28_232),
            approximate: false,
            netns: 4026531840,
            remote: Some("10.0.0.2:80".parse().unwrap()),
            local: Some("10.0.0.1:0".parse().unwrap()),
            process: proc(42, "curl"),
        }),
        Event::PortSearch(PortSearchEvent {
            ts_ns: base + 12,
            op: SearchOp::Bind,
            duration_ns: 0,
            errno: 0,
            candidates: None,
            approximate: true,
            netns: 4026531840,
            remote: None,
            local: None,
            process: None,
        }),
        Event::Netstat(NetstatEvent {
            ts_ns: base + 13,
            netns: 0,
            deltas: vec![("PAWSTimewait".into(), 3), ("TW".into(), -2)],
        }),
        Event::Netstat(NetstatEvent { ts_ns: base + 14, netns: 0, deltas: vec![] }),
        Event::Lost(LostEvent { ts_ns: base + 15, new: 5, total: u64::MAX }),
        Event::Skipped(SkippedEvent { ts_ns: base + 16, new: 61 }),
        Event::Namespace(NamespaceEvent {
            ts_ns: base + 17,
            namespace: NamespaceDescription {
                netns: 4026532999,
                name: "docker:3f2a1b9c0d1e".into(),
                sysctls: Some(Sysctls {
                    ip_local_port_range: (40000, 40099),
                    tcp_max_tw_buckets: Some(0),
                    tcp_tw_reuse: None,
                    tcp_timestamps: Some(1),
                    tcp_fin_timeout: Some(u64::MAX - 1),
                }),
                live: true,
            },
        }),
        Event::Mark(crate::event::MarkEvent {
            ts_ns: base + 19,
            unix_ns: 1_795_000_000_123_456_789,
            uid: Some(0),
            pid: None,
            text: "deploy v2 → canary ✓".into(),
        }),
        Event::Namespace(NamespaceEvent {
            ts_ns: base + 18,
            namespace: NamespaceDescription {
                netns: 4026532999,
                name: "4026532999".into(),
                sysctls: None,
                live: false,
            },
        }),
    ]
}

fn info() -> SourceInfo {
    SourceInfo {
        host: "web-7".into(),
        kernel: "6.12.117".into(),
        clock: WallClock { realtime_ns: 1_795_000_000_000_000_000, monotonic_ns: 1_000_000_000 },
        started_ns: 1_000_000_000,
        sysctls: Sysctls {
            ip_local_port_range: (32768, 60999),
            tcp_max_tw_buckets: Some(131072),
            tcp_tw_reuse: Some(2),
            tcp_timestamps: Some(1),
            tcp_fin_timeout: Some(60),
        },
        backends: vec![FamilyReport {
            family: Family::TimeWait,
            running: Some(Backend::Tracepoint),
            hooks: vec!["tp_btf/timer_start".into()],
            attempts: vec![Attempt { backend: Backend::Fentry, error: Some("no trampolines".into()) }],
            blind_spots: None,
        }],
        namespaces: vec![NamespaceDescription {
            netns: 4026531840,
            name: "host".into(),
            sysctls: Some(Sysctls { ip_local_port_range: (32768, 60999), ..Sysctls::default() }),
            live: true,
        }],
        netns: Some(4026531840),
        port: None,
        filter: "--pid 42".into(),
        sockets: vec![
            ExistingSocket {
                netns: 7,
                flow: flow("10.0.0.1:50000", "10.0.0.2:80").unwrap(),
                state: 6,
                expires_ms: 30_000,
            },
            ExistingSocket {
                netns: 4026531840,
                flow: flow("[::1]:8080", "[::1]:50001").unwrap(),
                state: 1,
                expires_ms: 0,
            },
        ],
        segment: None,
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("twtrace-test-{}-{name}.twr", std::process::id()))
}

/// A recording of three event chunks (every kind in each) and its events per chunk.
fn recording(name: &str) -> (Vec<u8>, Vec<Vec<Event>>) {
    let path = temp_path(name);
    let _ = std::fs::remove_file(&path);
    let mut rec = Recorder::create(&path, &info(), false).unwrap();
    let chunks: Vec<Vec<Event>> = (0..3).map(|i| every_kind(2_000_000_000 + i * 100_000_000_000)).collect();
    for chunk in &chunks {
        for e in chunk {
            rec.write(e).unwrap();
        }
        rec.seal_now().unwrap();
    }
    let trailer = Trailer { events: 42, lost: 5, ended_ns: 999, decoder: Default::default() };
    let size = rec.finish(&trailer).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(size, bytes.len() as u64);
    std::fs::remove_file(&path).unwrap();
    (bytes, chunks)
}

fn read(bytes: &[u8]) -> Result<(Reader<&[u8]>, Vec<Event>), RecordError> {
    let mut reader = Reader::new(bytes)?;
    let mut events = Vec::new();
    while let Some(chunk) = reader.next_chunk() {
        events.extend(chunk.decoded.events);
    }
    Ok((reader, events))
}

/// Offsets where each chunk starts, and the end of the file.
fn chunk_starts(bytes: &[u8]) -> Vec<usize> {
    let json = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut at = FILE_HEADER_LEN + json;
    let mut starts = Vec::new();
    while at < bytes.len() {
        starts.push(at);
        let stored = u32::from_le_bytes(bytes[at + 28..at + 32].try_into().unwrap()) as usize;
        at += CHUNK_HEADER_LEN + stored;
    }
    assert_eq!(at, bytes.len());
    starts
}

#[test]
fn every_event_kind_and_the_header_survive_a_round_trip() {
    let (bytes, chunks) = recording("roundtrip");
    let (reader, events) = read(&bytes).unwrap();
    assert_eq!(events, chunks.concat());
    assert_eq!(reader.damage(), &[] as &[Damage]);
    assert_eq!(reader.trailer().unwrap().lost, 5);
    assert_eq!(reader.info.sockets, info().sockets);
    assert_eq!(reader.info.sysctls, info().sysctls);
    assert_eq!((reader.info.host.as_str(), reader.info.filter.as_str()), ("web-7", "--pid 42"));
    assert_eq!(reader.info.backends[0].attempts[0].error.as_deref(), Some("no trampolines"));
    // sockets, three event chunks, end.
    assert_eq!(reader.chunks(), 5);
}

#[test]
fn the_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = temp_path("mode");
    let _ = std::fs::remove_file(&path);
    Recorder::create(&path, &info(), false).unwrap().finish(&Trailer::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let again = Recorder::create(&path, &info(), false).err().expect("an existing file is refused");
    assert!(again.to_string().contains("--force"), "{again}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn truncation_at_every_chunk_boundary_keeps_every_complete_chunk() {
    let (bytes, chunks) = recording("boundary");
    let starts = chunk_starts(&bytes);
    // starts: sockets, 3 event chunks, end chunk.
    assert_eq!(starts.len(), 5);
    for (complete, &cut) in starts.iter().enumerate().skip(1) {
        let (reader, events) = read(&bytes[..cut]).unwrap();
        let event_chunks = complete - 1;
        assert_eq!(events, chunks[..event_chunks].concat(), "cut at chunk {complete}");
        assert_eq!(reader.damage(), &[Damage::Unfinished], "cut at chunk {complete}");
        assert_eq!(reader.info.sockets.len(), 2);
    }
}

#[test]
fn truncation_inside_a_chunk_says_what_was_cut() {
    let (bytes, chunks) = recording("mid");
    let starts = chunk_starts(&bytes);
    for cut in [starts[2] + 3, starts[2] + CHUNK_HEADER_LEN, starts[3] - 1] {
        let (reader, events) = read(&bytes[..cut]).unwrap();
        assert_eq!(events, chunks[0], "cut at byte {cut}");
        let damage = reader.damage();
        assert_eq!(damage.len(), 2, "{damage:?}");
        assert!(matches!(damage[0], Damage::Truncated { offset, .. } if offset == starts[2] as u64), "{damage:?}");
        assert_eq!(damage[1], Damage::Unfinished);
        assert!(damage[0].to_string().contains("the file ends inside the chunk"), "{}", damage[0]);
    }
}

#[test]
fn a_flipped_byte_costs_only_its_chunk() {
    let (bytes, chunks) = recording("flip");
    let starts = chunk_starts(&bytes);
    for at in [starts[2] + 1, starts[2] + 20, starts[2] + CHUNK_HEADER_LEN + 5, starts[3] - 1] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        let (reader, events) = read(&damaged).unwrap();
        assert_eq!(events, [chunks[0].clone(), chunks[2].clone()].concat(), "byte {at} flipped");
        let damage = reader.damage();
        assert!(matches!(damage[0], Damage::Corrupt { offset, .. } if offset == starts[2] as u64), "{damage:?}");
        assert!(damage.contains(&Damage::MissingChunks { after: Some(1), next: 3 }), "{damage:?}");
        assert!(reader.trailer().is_some(), "the end is still found");
    }
}

#[test]
fn header_problems_are_named() {
    let (bytes, _) = recording("header");
    let error = |b: &[u8]| read(b).err().expect("must fail").to_string();
    assert_eq!(error(&[]), "empty file (0 bytes): nothing was recorded");
    assert!(error(b"GIF89a\x01\x00 and more bytes here").starts_with("not a twtrace recording"));
    let mut future = bytes.clone();
    future[8] = (FORMAT_VERSION + 1) as u8;
    assert_eq!(
        error(&future),
        format!(
            "recording format version {} is newer than this twtrace reads (up to {FORMAT_VERSION}): upgrade twtrace",
            FORMAT_VERSION + 1
        )
    );
    // A version-2 file (before marks) is the same but for marks: it reads as it did.
    let mut before_marks = bytes.clone();
    before_marks[8] = 2;
    assert_eq!(read(&before_marks).unwrap().1, read(&bytes).unwrap().1);
    let mut flipped = bytes.clone();
    flipped[FILE_HEADER_LEN + 3] ^= 1;
    assert!(error(&flipped).contains("header is damaged (checksum mismatch)"), "{}", error(&flipped));
    assert!(error(&bytes[..30]).contains("the file ends inside the header"), "{}", error(&bytes[..30]));
    assert!(error(&bytes[..5]).contains("only 5 bytes"), "{}", error(&bytes[..5]));
}

#[test]
fn bytes_after_the_end_are_reported() {
    let (mut bytes, chunks) = recording("trailing");
    bytes.extend_from_slice(b"garbage");
    let (reader, events) = read(&bytes).unwrap();
    assert_eq!(events, chunks.concat());
    assert!(matches!(reader.damage(), [Damage::TrailingBytes { bytes: 7, .. }]), "{:?}", reader.damage());
}

/// Not a fuzzer (that is `cargo xtask fuzz`), but every single-byte flip and every cut of a
/// small recording must read without a panic and keep at most what was written.
#[test]
fn no_damage_panics() {
    let (bytes, chunks) = recording("exhaustive");
    let all = chunks.concat();
    for cut in 0..bytes.len() {
        if let Ok((_, events)) = read(&bytes[..cut]) {
            assert!(events.len() <= all.len());
        }
    }
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] = damaged[at].wrapping_add(0x5b);
        if let Ok((reader, events)) = read(&damaged) {
            assert!(events.len() <= all.len(), "byte {at}");
            assert!(!reader.damage().is_empty() || events == all, "byte {at}: damage must be reported");
        }
    }
}

/// Seeds for `cargo xtask fuzz`: a valid recording with every kind (for `read_recording`) and
/// one chunk's raw records after an 8-byte base time (for `decode_chunk`). Run by the xtask
/// with TWTRACE_FUZZ_SEEDS set to the corpus root.
#[test]
#[ignore = "writes fuzz seeds; run by cargo xtask fuzz"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(std::env::var("TWTRACE_FUZZ_SEEDS").expect("TWTRACE_FUZZ_SEEDS"));
    let (bytes, _) = recording("seed");
    std::fs::create_dir_all(root.join("read_recording")).unwrap();
    std::fs::write(root.join("read_recording/every_kind.twr"), &bytes).unwrap();
    let mut encoder = codec::ChunkEncoder::new();
    for e in every_kind(5_000) {
        encoder.event(&e);
    }
    for s in &info().sockets {
        encoder.socket(s);
    }
    let base = encoder.base_ts();
    let (raw, _, _) = encoder.into_parts();
    let mut seed = base.to_le_bytes().to_vec();
    seed.extend_from_slice(&raw);
    std::fs::create_dir_all(root.join("decode_chunk")).unwrap();
    std::fs::write(root.join("decode_chunk/every_kind.bin"), seed).unwrap();
    // A directory: two runs of a flight recorder, every kind of event, rotated every 10 s.
    let dir = root.join("directory-source");
    let _ = std::fs::remove_dir_all(&dir);
    let policy = segments::Policy {
        segment_time: std::time::Duration::from_secs(10),
        segment_bytes: 1 << 30,
        keep_age: None,
        keep_bytes: None,
        keep_windows: 0,
    };
    for run in 0..2u64 {
        let mut info = info();
        info.clock.realtime_ns = directory::fuzz_input::base_unix_s() * 1_000_000_000 + run * 100_000_000_000;
        let mut recorder = segments::FlightRecorder::start(&dir, policy, &info).unwrap();
        for second in 0..25u64 {
            for e in every_kind(info.started_ns + second * 1_000_000_000) {
                recorder.event(&e);
            }
            recorder.tick(info.started_ns + second * 1_000_000_000 + 999_999_999, segments::RunTotals::default());
        }
        recorder.finish(info.started_ns + 25_000_000_000, segments::RunTotals::default());
    }
    let packed: Vec<(u16, u16, Vec<u8>)> = segment_files::list(&dir)
        .unwrap()
        .iter()
        .map(|s| {
            let start = s.name.start_unix_s - directory::fuzz_input::base_unix_s();
            (s.name.seq as u16, start as u16, std::fs::read(&s.path).unwrap())
        })
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.join("read_directory")).unwrap();
    std::fs::write(root.join("read_directory/two_runs.bin"), directory::fuzz_input::pack(None, None, &packed)).unwrap();
    let window = directory::fuzz_input::pack(Some(12), Some(130), &packed);
    std::fs::write(root.join("read_directory/two_runs_window.bin"), window).unwrap();
}

/// The packed form the directory fuzz target reads gives back what it was given.
#[test]
fn fuzz_input_round_trips() {
    let segments = vec![(3u16, 10u16, b"abc".to_vec()), (4, 20, Vec::new())];
    let (window, unpacked) = directory::fuzz_input::unpack(&directory::fuzz_input::pack(Some(5), None, &segments));
    assert!(window.since.is_some() && window.until.is_none());
    assert_eq!(unpacked.len(), 2);
    assert_eq!(unpacked[0].1, b"abc");
    assert_eq!(segment_files::SegmentName::parse(&unpacked[1].0).map(|n| n.seq), Some(4));
}
