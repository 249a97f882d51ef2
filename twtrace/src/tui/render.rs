//! Drawing: a pure function of (snapshot, header facts, UI state) into a ratatui frame.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap},
};

use super::state::{GroupBy, Mode, SortBy, UiState};
use crate::{
    aggregate::{DestinationView, Group, Snapshot},
    findings::{Finding, Severity},
};

/// Facts about the run shown in the header (not part of the aggregated model).
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub host: String,
    pub kernel: String,
    /// (family, backend or "OFF").
    pub backends: Vec<(String, String)>,
    pub events_per_s: f64,
    /// twtrace's own CPU use, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Kernel-side run time of twtrace's programs per wall second (needs
    /// kernel.bpf_stats_enabled=1), in microseconds.
    pub bpf_us_per_s: Option<f64>,
    /// Replaying a recording: where the replay stands (shown instead of twtrace's own costs).
    pub replay: Option<String>,
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn opt(v: Option<f64>, unit: &str, scale: f64, digits: usize) -> String {
    v.map(|v| format!("{:.*}{unit}", digits, v / scale)).unwrap_or_else(|| "-".into())
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.0}h", s / 3600.0),
    }
}

/// `findings` are `crate::findings::of` the same model, worst first (computed once a frame by
/// the caller, not here: drawing stays a pure function of what it is given).
pub fn draw(frame: &mut Frame, snap: &Snapshot, header: &Header, ui: &UiState, findings: &[Finding]) {
    let area = frame.area();
    // The findings pane takes the PAWS panel's place (a PAWS problem is one of its findings),
    // with more room: its lines are sentences.
    let shares = if ui.findings { [27, 33, 40] } else { [34, 36, 30] };
    let [head, tw, ports, bottom, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Percentage(shares[0]),
        Constraint::Percentage(shares[1]),
        Constraint::Percentage(shares[2]),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, head, snap, header, ui);
    draw_timewait(frame, tw, snap, ui);
    draw_ports(frame, ports, snap, ui);
    if ui.findings {
        draw_findings(frame, bottom, findings);
    } else {
        draw_paws(frame, bottom, snap);
    }
    draw_footer(frame, foot, ui, findings);
    if ui.mode == Mode::Help {
        draw_help(frame, area);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, snap: &Snapshot, h: &Header, ui: &UiState) {
    let all_same = h.backends.windows(2).all(|w| w[0].1 == w[1].1);
    let backends = match h.backends.first() {
        Some((_, b)) if all_same => format!("backend {b} (all families)"),
        _ => h.backends.iter().map(|(f, b)| format!("{f}:{b}")).collect::<Vec<_>>().join(" "),
    };
    let first = Line::from(vec![
        Span::styled("twtrace ", bold()),
        Span::raw(format!("{}  {}  ", h.host, h.kernel)),
        Span::raw(backends),
    ]);
    let lost = if snap.lost > 0 {
        Span::styled(format!("LOST {}", snap.lost), bold().add_modifier(Modifier::REVERSED))
    } else {
        Span::raw("lost 0")
    };
    let bpf = match h.bpf_us_per_s {
        Some(us) => format!("bpf {us:.0}us/s"),
        None => "bpf n/a".into(),
    };
    let costs = match &h.replay {
        Some(replay) => Span::styled(format!("  {replay}  up {:.0}s", snap.seconds), bold()),
        None => Span::raw(format!("  cpu {}  {bpf}  up {:.0}s", opt(h.cpu_percent, "%", 1.0, 1), snap.seconds)),
    };
    let mut second =
        vec![Span::raw(format!("events {:.0}/s  namespaces {}  ", h.events_per_s, snap.namespaces_seen)), lost];
    // After loss: the figures are approximate until the model has re-read the sockets, and
    // then how far off they had been.
    if snap.approximate {
        second.push(Span::styled("  APPROXIMATE (resync pending)", bold().add_modifier(Modifier::REVERSED)));
    } else if let Some(r) = &snap.last_resync {
        let ago = snap.mono_ns.saturating_sub(r.mono_ns) as f64 / 1e9;
        second.push(Span::raw(format!(
            "  resynced {ago:.0}s ago (TIME_WAIT {} -> {})",
            r.timewait_model, r.timewait_kernel
        )));
    }
    if snap.model.evicted > 0 {
        second.push(Span::raw(format!("  evicted {}", snap.model.evicted)));
    }
    second.push(costs);
    if ui.paused {
        second.push(Span::styled("  PAUSED", bold().add_modifier(Modifier::REVERSED)));
    }
    if !ui.filter_text.is_empty() {
        second.push(Span::raw(format!("  [{}]", ui.filter_text)));
    }
    // The latest mark: what changed (a deploy) beside the figures it may explain.
    if let Some(m) = &snap.last_mark {
        second.push(Span::styled(
            format!("  MARK {} {:?} ({} ago)", m.at.time_of_day(), m.text, duration(Some(m.ago_s))),
            bold(),
        ));
    }
    frame.render_widget(Paragraph::new(vec![first, Line::from(second)]), area);
}

fn draw_timewait(frame: &mut Frame, area: Rect, snap: &Snapshot, ui: &UiState) {
    let tw = &snap.timewait;
    let limit = tw.max_buckets.map(|m| format!("/{m}")).unwrap_or_default();
    let block =
        Block::default().borders(Borders::ALL).title(Span::styled(format!(" TIME_WAIT {}{limit} ", tw.live), bold()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [stats, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let line = format!(
        "born {:.1}/s  died: expired {:.1}/s killed {:.1}/s  life p50 {} p99 {} max {}",
        tw.births_per_s,
        tw.expired_per_s,
        tw.killed_per_s,
        opt(tw.lifetime_p50_ms, "s", 1e3, 1),
        opt(tw.lifetime_p99_ms, "s", 1e3, 1),
        opt(tw.lifetime_max_ms, "s", 1e3, 1),
    );
    frame.render_widget(Paragraph::new(line), stats);
    let relabelled: Vec<Group>;
    let groups = match ui.group_by {
        GroupBy::Remote => &tw.by_remote,
        GroupBy::Local => &tw.by_local,
        GroupBy::Owner => &tw.by_owner,
        // Each namespace against its own tcp_max_tw_buckets.
        GroupBy::Namespace => {
            relabelled = tw
                .by_namespace
                .iter()
                .map(|g| {
                    let limit = snap.namespaces.iter().find(|n| n.name == g.key).and_then(|n| n.max_tw_buckets);
                    Group {
                        key: limit.map_or_else(|| g.key.clone(), |l| format!("{} (of {l})", g.key)),
                        count: g.count,
                    }
                })
                .collect();
            &relabelled
        }
        GroupBy::Command => {
            relabelled = tw
                .by_command
                .iter()
                .map(|c| Group {
                    key: match c.processes {
                        0 | 1 => c.command.clone(),
                        n => format!("{} ({n} processes)", c.command),
                    },
                    count: c.count,
                })
                .collect();
            &relabelled
        }
    };
    let rows = groups.iter().map(|g| {
        let share = if tw.live > 0 { g.count as f64 * 100.0 / tw.live as f64 } else { 0.0 };
        Row::new(vec![Cell::from(g.key.clone()), Cell::from(g.count.to_string()), Cell::from(format!("{share:.0}%"))])
    });
    let header =
        Row::new(vec![format!("by {} (g)", ui.group_by.label()), "count".into(), "share".into()]).style(bold());
    let widths = [Constraint::Min(24), Constraint::Length(9), Constraint::Length(6)];
    frame.render_widget(Table::new(rows, widths).header(header), table);
}

fn sorted(destinations: &[DestinationView], by: SortBy) -> Vec<&DestinationView> {
    let mut rows: Vec<&DestinationView> = destinations.iter().collect();
    match by {
        SortBy::Utilisation => rows.sort_by(|a, b| b.utilisation.total_cmp(&a.utilisation)),
        SortBy::Failures => rows.sort_by_key(|d| std::cmp::Reverse(d.failures)),
        SortBy::Connects => rows.sort_by(|a, b| b.connects_per_s.total_cmp(&a.connects_per_s)),
    }
    rows
}

fn draw_ports(frame: &mut Frame, area: Rect, snap: &Snapshot, ui: &UiState) {
    let p = &snap.port_space;
    // Each namespace has its own range: one is named in the title, several in the rows.
    let range = match snap.namespaces.as_slice() {
        [] => format!("range {}-{}", p.range.0, p.range.1),
        [one] => format!("range {}-{}", one.port_range.0, one.port_range.1),
        many => format!("{} namespaces, each its own range", many.len()),
    };
    let title = format!(" Port space  {range}  sort {} (s) ", ui.sort_by.label());
    let block = Block::default().borders(Borders::ALL).title(Span::styled(title, bold()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let failures: Vec<String> =
        p.failures.iter().map(|f| format!("[{}] {} {} x{}", f.namespace, f.process, f.error, f.count)).collect();
    let [table, fails] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    // Narrow terminals show the remote endpoint only (one local address is the common case),
    // no range column, and the namespace only when there are several.
    let wide = area.width >= 100;
    let show_netns = wide || snap.namespaces.len() > 1;
    let first = if wide { "local -> destination" } else { "destination" };
    let columns: [(&str, Constraint, bool); 10] = [
        ("netns", Constraint::Length(if wide { 20 } else { 12 }), show_netns),
        (first, Constraint::Min(24), true),
        ("in use", Constraint::Length(7), true),
        ("range", Constraint::Length(6), wide),
        ("util", Constraint::Length(6), true),
        ("conn/s", Constraint::Length(7), true),
        ("full in", Constraint::Length(7), true),
        ("srch p99", Constraint::Length(8), true),
        ("cand", Constraint::Length(6), true),
        ("fail", Constraint::Length(5), true),
    ];
    let shown = |cells: [String; 10]| -> Vec<String> {
        cells.into_iter().zip(&columns).filter(|(_, c)| c.2).map(|(cell, _)| cell).collect()
    };
    let header = Row::new(shown(columns.map(|c| c.0.to_owned()))).style(bold());
    let rows = sorted(&p.destinations, ui.sort_by).into_iter().map(|d| {
        Row::new(shown([
            d.namespace.clone(),
            if wide {
                format!("{} -> {}", d.destination.local, d.destination.remote)
            } else {
                d.destination.remote.to_string()
            },
            d.in_use.to_string(),
            d.range.to_string(),
            format!("{:.1}%", d.utilisation * 100.0),
            format!("{:.1}", d.connects_per_s),
            duration(d.seconds_to_exhaustion),
            opt(d.search_p99_us, "us", 1.0, 0),
            d.candidates_p99.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            d.failures.to_string(),
        ]))
    });
    let widths: Vec<Constraint> = columns.iter().filter(|c| c.2).map(|c| c.1).collect();
    frame.render_widget(Table::new(rows, widths).header(header), table);
    let text =
        if failures.is_empty() { "failures: none".to_owned() } else { format!("failures: {}", failures.join(", ")) };
    frame.render_widget(Paragraph::new(text), fails);
}

fn draw_paws(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let w = &snap.paws;
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" PAWS drops {:.1}/s  total {} ", w.drops_per_s, w.drops_total), bold()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [info, table] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    let reasons: Vec<String> = w.by_reason.iter().map(|r| format!("{} {}", r.reason, r.total)).collect();
    let counters: Vec<String> = w.counters.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
    let lines = vec![
        Line::from(format!("reasons: {}", if reasons.is_empty() { "-".into() } else { reasons.join(", ") })),
        Line::from(format!("kernel counters: {}", if counters.is_empty() { "-".into() } else { counters.join(", ") })),
    ];
    frame.render_widget(Paragraph::new(lines), info);
    let header = Row::new(["source", "drops", "flows", "latest example"]).style(bold());
    let rows = w.sources.iter().map(|s| {
        let example = w
            .recent
            .iter()
            .find(|d| d.remote.is_some_and(|r| r.ip() == s.source))
            .map(|d| {
                format!(
                    "{} -> {} {}",
                    d.remote.map(|r| r.to_string()).unwrap_or_default(),
                    d.local.map(|l| l.to_string()).unwrap_or_default(),
                    d.reason
                )
            })
            .unwrap_or_default();
        Row::new(vec![s.source.to_string(), s.drops.to_string(), s.flows.to_string(), example])
    });
    let widths = [Constraint::Length(22), Constraint::Length(7), Constraint::Length(6), Constraint::Min(10)];
    frame.render_widget(Table::new(rows, widths).header(header), table);
}

/// Each finding's severity and headline, worst first, wrapped to the pane.
fn draw_findings(frame: &mut Frame, area: Rect, findings: &[Finding]) {
    let title = format!(" Findings {}  worst first, as `twtrace doctor` says (f hides) ", findings.len());
    let block = Block::default().borders(Borders::ALL).title(Span::styled(title, bold()));
    let lines: Vec<Line> = findings
        .iter()
        .map(|f| {
            let style = match f.severity {
                Severity::Critical => bold().add_modifier(Modifier::REVERSED),
                Severity::Warning => bold(),
                Severity::Info | Severity::Ok => Style::default(),
            };
            Line::from(vec![
                Span::styled(format!("{:<8}", f.severity.label()), style),
                Span::raw(format!(" {}", f.headline())),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: true }), area);
}

/// `f findings`, and while the pane is hidden how many findings of the worst kind wait there
/// (a warning or worse: notes do not call for a look).
fn findings_key(ui: &UiState, findings: &[Finding]) -> String {
    let worst = crate::findings::worst(findings);
    if ui.findings || worst < Severity::Warning {
        return "f findings".into();
    }
    format!("f findings ({} {})", findings.iter().filter(|f| f.severity == worst).count(), worst.label())
}

fn draw_footer(frame: &mut Frame, area: Rect, ui: &UiState, findings: &[Finding]) {
    let text = match &ui.mode {
        Mode::Filter(text) => format!("filter (pid= port= addr= comm= netns=, empty clears)> {text}_"),
        _ => {
            let keys = format!("q quit  p pause  g group  s sort  / filter  {}  ? help", findings_key(ui, findings));
            match &ui.message {
                Some(m) => format!("{keys}  | {m}"),
                None => keys,
            }
        }
    };
    frame.render_widget(Paragraph::new(text).style(Style::default().add_modifier(Modifier::REVERSED)), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let lines = [
        "q, Esc   quit (Ctrl-C too)",
        "p, Space pause / resume the view",
        "g        group TIME_WAIT by remote, local, owner, command, netns",
        "s        sort destinations by util, failures, conn/s",
        "/        filter: pid= port= addr=CIDR comm= netns=INODE|NAME",
        "f        findings: what doctor would say, in PAWS's place",
        "?, h     this help (any key closes)",
        "",
        "full in: time until the destination's ports run out",
        "at the current net growth; cand: ports examined (p99)",
    ];
    let width = 60.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, popup);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" keys ")), popup);
}
