//! Rendered frames on a test backend, compared with reviewed snapshots in `snapshots/`
//! (`UPDATE_SNAPSHOTS=1` rewrites them; review the diff before committing).

use ratatui::{Terminal, backend::TestBackend};

use super::{
    render::{Header, draw},
    state::{Key, UiState},
};
use crate::{
    aggregate::{Aggregator, Settings, Snapshot},
    event::{
        DropEvent, Event, NamespaceDescription, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent, Sysctls,
        TimeWaitChange, TimeWaitEvent, TimeWaitSubstate,
    },
    findings::{self, Finding, Kind, Severity},
    source::Health,
    source_info::SourceInfo,
};

const S: u64 = 1_000_000_000;

/// A client churning toward one server (710 requests/s for 10 s), some failing, and SYNs from
/// one NAT address dropped by PAWS.
fn incident() -> Snapshot {
    let mut agg = Aggregator::new(Settings { port_range: (32_768, 60_999), max_tw_buckets: Some(262_144), top: 5 });
    let app = Some(Process { pid: 3121, tid: 3121, comm: "api-gateway".into(), cgroup_id: 42 });
    for i in 0..7_100u64 {
        let ts = 100 * S + i * S / 710;
        let port = 32_768 + (i % 28_000) as u16;
        let flow =
            SocketFlow { local: format!("10.0.0.5:{port}").parse().unwrap(), remote: "10.0.0.9:8080".parse().unwrap() };
        let connecting = SocketFlow { local: "10.0.0.5:0".parse().unwrap(), remote: flow.remote };
        let state = |old: u8, new: u8, f: SocketFlow| {
            Event::State(StateEvent {
                ts_ns: ts,
                sk_addr: i,
                netns: 1,
                old_state: old,
                new_state: new,
                flow: Some(f),
                task: app,
            })
        };
        for (old, new, f) in [(7, 2, connecting), (2, 1, flow), (1, 4, flow)] {
            agg.apply(&state(old, new, f));
        }
        // The kernel's order: tcp_time_wait() creates the TIME_WAIT socket, then tcp_done()
        // closes the full one.
        agg.apply(&Event::TimeWait(TimeWaitEvent {
            ts_ns: ts,
            tw_id: i,
            flow: Some(flow),
            netns: 1,
            owner: app,
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::TimeWait,
                timeout_ms: 60_000,
                timestamps: None,
            },
        }));
        agg.apply(&state(5, 7, flow));
        agg.apply(&Event::PortSearch(PortSearchEvent {
            ts_ns: ts,
            op: SearchOp::Connect,
            duration_ns: 8_000 + (i % 50) * 1_000,
            errno: if i % 1000 == 999 { 99 } else { 0 },
            candidates: Some(1 + (i % 40) as u32),
            approximate: false,
            netns: 1,
            remote: Some(flow.remote),
            local: Some(flow.local),
            process: app,
        }));
    }
    for port in 40_000..40_006u16 {
        agg.apply(&Event::Drop(DropEvent {
            ts_ns: 109 * S,
            reason: "TCP_RFC7323_PAWS".into(),
            reason_code: 36,
            netns: 1,
            flow: Some(SocketFlow {
                local: "10.0.0.5:443".parse().unwrap(),
                remote: format!("198.51.100.7:{port}").parse().unwrap(),
            }),
            tcp_flags: 0x02,
            seq: 1,
            ack_seq: 0,
            outgoing: false,
        }));
    }
    agg.apply(&Event::Netstat(crate::event::NetstatEvent {
        ts_ns: 109 * S,
        netns: 1,
        deltas: vec![("PAWSActive".into(), 6), ("TW".into(), 7100)],
    }));
    agg.advance(110 * S);
    agg.snapshot(110 * S)
}

/// The incident's host, and beside it a pod whose own 100-port range two workers of one
/// command have filled: the pod is what fails, and must be on top.
fn pods() -> Snapshot {
    pods_model().snapshot(110 * S)
}

/// [`pods`]' model, and what `doctor` finds in it, as `top` computes them each frame.
fn pods_findings() -> (Snapshot, Vec<Finding>) {
    let model = pods_model();
    let snap = model.snapshot(110 * S);
    let info = SourceInfo::for_tests("6.12.117");
    let found = findings::of(&crate::report::live(&model, &snap, &info, &Health::default()));
    (snap, found)
}

fn pods_model() -> Aggregator {
    let mut agg = Aggregator::new(Settings { port_range: (32_768, 60_999), max_tw_buckets: Some(262_144), top: 5 });
    let describe = |netns: u32, name: &str, range: (u16, u16), buckets: u64| NamespaceDescription {
        netns,
        name: name.into(),
        sysctls: Some(Sysctls { ip_local_port_range: range, tcp_max_tw_buckets: Some(buckets), ..Sysctls::default() }),
        live: true,
    };
    agg.describe(&describe(1, "host", (32_768, 60_999), 262_144));
    agg.describe(&describe(2, "pod checkout-7d9f", (40_000, 40_099), 4_096));
    let worker = |pid: u32| Some(Process { pid, tid: pid, comm: "worker".into(), cgroup_id: 77 });
    let server: std::net::SocketAddr = "10.96.0.10:5432".parse().unwrap();
    for i in 0..130u64 {
        let ts = 100 * S + i * S / 20;
        let owner = worker(51 + (i % 2) as u32);
        if i >= 100 {
            agg.apply(&Event::PortSearch(PortSearchEvent {
                ts_ns: ts,
                op: SearchOp::Connect,
                duration_ns: 90_000,
                errno: 99,
                candidates: Some(100),
                approximate: false,
                netns: 2,
                remote: Some(server),
                local: Some("10.1.4.7:0".parse().unwrap()),
                process: owner,
            }));
            continue;
        }
        let flow = SocketFlow { local: format!("10.1.4.7:{}", 40_000 + i).parse().unwrap(), remote: server };
        for (old, new) in [(7, 2), (2, 1), (1, 4)] {
            agg.apply(&Event::State(StateEvent {
                ts_ns: ts,
                sk_addr: 1_000 + i,
                netns: 2,
                old_state: old,
                new_state: new,
                flow: Some(flow),
                task: owner,
            }));
        }
        agg.apply(&Event::TimeWait(TimeWaitEvent {
            ts_ns: ts,
            tw_id: 1_000 + i,
            flow: Some(flow),
            netns: 2,
            owner,
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::TimeWait,
                timeout_ms: 60_000,
                timestamps: None,
            },
        }));
    }
    // The host: a few TIME_WAIT sockets of a server, far from any limit.
    for i in 0..20u64 {
        agg.apply(&Event::TimeWait(TimeWaitEvent {
            ts_ns: 105 * S,
            tw_id: i,
            flow: Some(SocketFlow {
                local: "10.0.0.5:443".parse().unwrap(),
                remote: format!("203.0.113.{}:50000", i + 1).parse().unwrap(),
            }),
            netns: 1,
            owner: Some(Process { pid: 900, tid: 900, comm: "nginx".into(), cgroup_id: 1 }),
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::TimeWait,
                timeout_ms: 60_000,
                timestamps: None,
            },
        }));
    }
    agg.advance(110 * S);
    agg
}

fn header() -> Header {
    Header {
        host: "web-7".into(),
        kernel: "6.12.117".into(),
        backends: ["timewait", "portsearch", "state", "drops"]
            .iter()
            .map(|f| (f.to_string(), "fentry".to_string()))
            .collect(),
        events_per_s: 3550.0,
        cpu_percent: Some(2.5),
        bpf_us_per_s: None,
        replay: None,
    }
}

fn render(width: u16, height: u16, ui: &UiState) -> String {
    render_snapshot(&incident(), width, height, ui)
}

fn render_snapshot(snap: &Snapshot, width: u16, height: u16, ui: &UiState) -> String {
    render_with(snap, &[], width, height, ui)
}

fn render_with(snap: &Snapshot, found: &[Finding], width: u16, height: u16, ui: &UiState) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, snap, &header(), ui, found)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, frame: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tui/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, frame).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {}: run with UPDATE_SNAPSHOTS=1 and review it", path.display()));
    assert_eq!(frame, expected, "frame {name} changed:\n{frame}");
}

#[test]
fn incident_at_80x24() {
    check("incident_80x24", &render(80, 24, &UiState::default()));
}

#[test]
fn incident_at_120x36_grouped_by_owner_paused() {
    let mut ui = UiState::default();
    ui.on_key(Key::Char('g'));
    ui.on_key(Key::Char('g'));
    ui.on_key(Key::Char('p'));
    check("incident_120x36_owner_paused", &render(120, 36, &ui));
}

#[test]
fn pods_at_120x36_grouped_by_command() {
    let mut ui = UiState::default();
    for _ in 0..3 {
        ui.on_key(Key::Char('g'));
    }
    assert_eq!(ui.group_by, crate::tui::state::GroupBy::Command);
    let frame = render_snapshot(&pods(), 120, 36, &ui);
    check("pods_120x36_command", &frame);
    // The pod at 100 % of its own range is the first row, ahead of the idle host.
    let first_row = frame.lines().find(|l| l.contains("-> 10.96.0.10:5432")).expect("the pod's row");
    assert!(first_row.contains("pod checkout-7d9f") && first_row.contains("100.0%"), "{frame}");
    assert!(frame.contains("worker (2 processes)"), "one row for both workers:\n{frame}");
    assert!(frame.contains("[pod checkout-7d9f] worker (2 processes, e.g. 51) EADDRNOTAVAIL x30"), "{frame}");
    ui.on_key(Key::Char('g'));
    let by_namespace = render_snapshot(&pods(), 120, 36, &ui);
    assert!(by_namespace.contains("pod checkout-7d9f (of 4096)"), "{by_namespace}");
}

#[test]
fn help_overlay_at_80x24() {
    let mut ui = UiState::default();
    ui.on_key(Key::Char('?'));
    check("help_80x24", &render(80, 24, &ui));
}

#[test]
fn the_numbers_on_screen_are_the_models() {
    let frame = render(120, 36, &UiState::default());
    let snap = incident();
    assert!(frame.contains(&format!("TIME_WAIT {}/262144", snap.timewait.live)), "{frame}");
    let d = &snap.port_space.destinations[0];
    assert!(frame.contains(&format!("{:.1}%", d.utilisation * 100.0)), "{frame}");
    assert!(frame.contains("api-gateway[3121] EADDRNOTAVAIL x7"), "{frame}");
    assert!(frame.contains("198.51.100.7"), "{frame}");
}

/// The pod that ran out of ports: `f` shows doctor's findings in the PAWS panel's place, the
/// port space and the failures first (critical), with the model's own figures.
#[test]
fn findings_pane_at_120x36() {
    let (snap, found) = pods_findings();
    let kinds: Vec<(Severity, Kind)> = found.iter().map(|f| (f.severity, f.kind)).collect();
    assert_eq!(
        kinds[..2],
        [(Severity::Critical, Kind::PortSpace), (Severity::Critical, Kind::ConnectFailures)],
        "{found:#?}"
    );
    let mut ui = UiState::default();
    let hidden = render_with(&snap, &found, 120, 36, &ui);
    assert!(hidden.contains("PAWS drops") && hidden.contains("f findings (2 CRITICAL)"), "{hidden}");
    ui.on_key(Key::Char('f'));
    let frame = render_with(&snap, &found, 120, 36, &ui);
    check("pods_findings_120x36", &frame);
    assert!(!frame.contains("PAWS drops"), "the pane takes the PAWS panel's place:\n{frame}");
    assert!(frame.contains(&format!("Findings {}", found.len())), "{frame}");
    // The pane's text, unwrapped: each headline whole, worst first.
    let pane: String = frame
        .lines()
        .skip_while(|l| !l.contains("Findings"))
        .skip(1)
        .map(|l| l.trim_matches(|c: char| c == '│' || c.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" ");
    let port = pane.find("CRITICAL Port space toward 10.96.0.10:5432 from 10.1.4.7 in namespace pod checkout-7d9f");
    let failed = pane.find("CRITICAL 30 connect() calls found no free local port (EADDRNOTAVAIL)");
    assert!(port.is_some() && failed.is_some() && port < failed, "{pane}");
    assert!(pane.contains("peaked at 100% (100 of 100 ports)"), "{pane}");
    assert!(!pane.contains("Reuse connections"), "headlines only, the advice is doctor's:\n{pane}");
}

#[test]
fn the_latest_mark_shows_in_the_header() {
    let mut agg = Aggregator::new(Settings { port_range: (32_768, 60_999), max_tw_buckets: None, top: 5 });
    agg.apply(&Event::Mark(crate::event::MarkEvent {
        ts_ns: 100 * S,
        unix_ns: 1_795_385_599 * S,
        uid: Some(0),
        pid: Some(4242),
        text: "deploy v2".into(),
    }));
    agg.advance(130 * S);
    let frame = render_snapshot(&agg.snapshot(130 * S), 120, 36, &UiState::default());
    assert!(frame.contains("MARK 22:13:19 \"deploy v2\" (30s ago)"), "{frame}");
}
