//! The report on a made-up recording, written in the real format: the numbers, the findings
//! and the page.

use std::net::SocketAddr;

use super::build_blocking as build;
use crate::{
    event::ExistingSocket,
    event::Sysctls,
    event::{
        DeathReason, DropEvent, Event, PortSearchEvent, Process, SearchOp, SocketFlow, TimeWaitChange, TimeWaitEvent,
        TimeWaitSubstate,
    },
    record::{Recorder, Trailer},
    report::{html, text},
    source_info::SourceInfo,
    time::WallClock,
};

const S: u64 = 1_000_000_000;
const START: u64 = 100 * S;

fn flow(local: &str, remote: &str) -> SocketFlow {
    SocketFlow { local: local.parse().unwrap(), remote: remote.parse().unwrap() }
}

fn curl() -> Option<Process> {
    Some(Process { pid: 4242, tid: 4242, comm: "cu<r>l".into(), cgroup_id: 1 })
}

/// A client with a ten-port range: nine ports held by TIME_WAIT sockets at start, three
/// failed connects, one socket living its 60 s, and PAWS drops from one NATed address.
fn incident(name: &str, finish: bool) -> std::path::PathBuf {
    incident_with(name, finish, Vec::new())
}

/// [`incident`] with `extra` events besides.
fn incident_with(name: &str, finish: bool, extra: Vec<Event>) -> std::path::PathBuf {
    let info = SourceInfo {
        host: "web-7".into(),
        kernel: "6.12.117".into(),
        clock: WallClock { realtime_ns: 1_795_000_000 * S, monotonic_ns: START },
        started_ns: START,
        sysctls: Sysctls {
            ip_local_port_range: (32768, 32777),
            tcp_max_tw_buckets: Some(10),
            tcp_tw_reuse: Some(2),
            tcp_timestamps: Some(1),
            tcp_fin_timeout: Some(30),
        },
        backends: Vec::new(),
        namespaces: Vec::new(),
        netns: None,
        port: None,
        filter: String::new(),
        sockets: (0..9)
            .map(|i| ExistingSocket {
                netns: 1,
                flow: flow(&format!("10.0.0.1:{}", 32768 + i), "10.0.0.2:80"),
                state: 6,
                expires_ms: 50_000,
            })
            .collect(),
        segment: None,
    };
    let path = std::env::temp_dir().join(format!("twtrace-report-{}-{name}.twr", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut rec = Recorder::create(&path, &info, false).unwrap();
    let mut events = extra;
    for i in 0..3 {
        events.push(Event::PortSearch(PortSearchEvent {
            ts_ns: START + (2 + i) * S,
            op: SearchOp::Connect,
            duration_ns: 40_000,
            errno: 99,
            candidates: Some(10),
            approximate: false,
            netns: 1,
            remote: Some("10.0.0.2:80".parse().unwrap()),
            local: Some("10.0.0.1:0".parse().unwrap()),
            process: curl(),
        }));
    }
    let tw = |ts, change| {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: ts,
            tw_id: 1,
            flow: Some(flow("10.0.0.3:80", "192.0.2.9:5555")),
            netns: 1,
            owner: curl(),
            change,
        })
    };
    events.push(tw(
        START + S,
        TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None },
    ));
    events.push(tw(START + 61 * S, TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60 * S }));
    for port in [1000u16, 1001, 1002, 1000] {
        events.push(Event::Drop(DropEvent {
            ts_ns: START + 30 * S,
            reason: "TCP_RFC7323_TW_PAWS".into(),
            reason_code: 94,
            netns: 1,
            flow: Some(SocketFlow {
                local: "10.0.0.3:80".parse().unwrap(),
                remote: SocketAddr::new("198.51.100.7".parse().unwrap(), port),
            }),
            tcp_flags: 2,
            seq: 1,
            ack_seq: 0,
            outgoing: false,
        }));
    }
    events.sort_by_key(Event::ts_ns);
    for e in &events {
        rec.write(e).unwrap();
    }
    if finish {
        rec.finish(&Trailer {
            events: events.len() as u64,
            lost: 0,
            ended_ns: START + 70 * S,
            decoder: Default::default(),
        })
        .unwrap();
    } else {
        rec.seal_now().unwrap();
        drop(rec);
    }
    path
}

#[test]
fn an_exhausted_port_range_and_nat_paws_drops_are_the_findings() {
    let path = incident("findings", true);
    let r = build(&path, 10).unwrap();
    assert!(r.recording.complete && r.recording.damage.is_empty(), "{:?}", r.recording);
    assert_eq!((r.recording.events, r.recording.seconds), (9, 70.0));
    assert_eq!((r.timewait.peak, r.timewait.at_start, r.timewait.births, r.timewait.expired), (10, 9, 1, 1));
    assert_eq!(r.timewait.lifetime_p50_ms.map(|v| v.round()), Some(60_000.0));
    let d = &r.destinations[0];
    assert_eq!(
        (d.destination.remote.to_string().as_str(), d.peak_in_use, d.range, d.failures),
        ("10.0.0.2:80", 9, 10, 3)
    );
    assert_eq!(r.failures[0].count, 3);
    assert_eq!((r.paws.drops, r.paws.sources[0].flows), (4, 3));
    let findings = r.findings.join("\n");
    for expected in [
        "Port space toward 10.0.0.2:80 from 10.0.0.1 in namespace 1 peaked at 90% (9 of 10 ports)",
        "3 connect() calls found no free local port (EADDRNOTAVAIL): cu<r>l[4242] x3",
        "TIME_WAIT sockets lived 60.0 s (median)",
        "tcp_fin_timeout does not shorten it (tcp_fin_timeout is 30 s)",
        "TIME_WAIT peaked at 10, 100% of tcp_max_tw_buckets (10)",
        "4 segments were dropped by PAWS (TCP_RFC7323_TW_PAWS 4) from 1 source(s); 1 source(s) with several flows",
    ] {
        assert!(findings.contains(expected), "missing `{expected}` in\n{findings}");
    }
    // The TIME_WAIT timeline: nine at start, ten once born, nine after the death at 61 s
    // (the nine older ones expire at 50 s, so: 9, then 10, then 1, then 0).
    assert_eq!(r.timeline.timewait_live.first(), Some(&9.0));
    assert_eq!(r.timeline.timewait_live.iter().copied().fold(0.0, f64::max), 10.0);
    assert_eq!(r.timeline.timewait_live.last(), Some(&0.0));
    let text = text(&r);
    assert!(text.contains("TIME_WAIT  peak 10/10"), "{text}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_unfinished_recording_is_reported_as_such() {
    let path = incident("unfinished", false);
    let r = build(&path, 10).unwrap();
    assert!(!r.recording.complete);
    assert_eq!(r.recording.events, 9, "everything sealed is kept");
    assert!(r.findings[0].starts_with("The recording is incomplete or damaged"), "{:?}", r.findings);
    assert!(text(&r).contains("NOT FINISHED"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_page_is_self_contained_and_escapes_names() {
    let path = incident("html", true);
    let page = html(&build(&path, 10).unwrap());
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 5);
    assert!(page.contains("cu&lt;r&gt;l[4242]") && !page.contains("cu<r>l"), "process names are escaped");
    for outside in ["http://", "https://", "<script", "<link", "@import", "url("] {
        assert!(!page.contains(outside), "the page must not fetch anything ({outside})");
    }
    std::fs::remove_file(&path).unwrap();
}

fn mark(at_s: u64, text: &str) -> Event {
    Event::Mark(crate::event::MarkEvent {
        ts_ns: START + at_s * S,
        unix_ns: 1_795_000_000 * S + at_s * S,
        uid: Some(0),
        pid: Some(77),
        text: text.into(),
    })
}

#[test]
fn marks_are_listed_at_their_time_and_drawn_on_every_timeline() {
    let path = incident_with("marks", true, vec![mark(20, "deploy <v2>"), mark(45, "rollback")]);
    let r = build(&path, 10).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["marks"],
        serde_json::json!([
            {"at": "2026-11-18T11:07:00.000000Z", "text": "deploy <v2>", "uid": 0, "pid": 77},
            {"at": "2026-11-18T11:07:25.000000Z", "text": "rollback", "uid": 0, "pid": 77},
        ])
    );
    // Marks are events of the stream, counted like the others.
    assert_eq!(r.recording.events, 11);
    let text = text(&r);
    assert!(text.contains("  1  11:07:00  \"deploy <v2>\"  (uid 0 pid 77)"), "{text}");
    // 71 one-second points, two to a column of the 60-wide sparkline: mark 1 (20 s) in
    // column 10, mark 2 (45 s) in column 22.
    let ruler = text.lines().find(|l| l.starts_with("  marks ")).expect("a ruler under the population");
    assert_eq!(ruler, format!("  marks       {}1{}2", " ".repeat(10), " ".repeat(11)));
    let page = html(&r);
    assert_eq!(page.matches("<g class=\"mark\">").count(), 2 * 5, "both marks on all five charts");
    assert!(page.contains("<td>deploy &lt;v2&gt;</td>") && !page.contains("deploy <v2>"), "escaped");
    std::fs::remove_file(&path).unwrap();
}
