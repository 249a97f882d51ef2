//! The report as one self-contained HTML page: inline CSS and SVG charts drawn here, no
//! scripts, fonts or anything else fetched, so it opens on an air-gapped laptop.

use std::fmt::Write as _;

use super::{
    MarkSummary, Report,
    text::{ms_text, us_text},
};
use crate::time::WallTime;

/// Colours of the chart series, in order (distinct in print and for common colour blindness).
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Series<'a> {
    name: &'a str,
    values: &'a [f64],
}

/// A compact number for axis labels: 1.2k, 35, 0.25.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart over the timeline's times. `y_max`: a fixed top (percentages), otherwise the
/// data's maximum. `mark`: a dashed horizontal line with its label (a limit). `marks`: the
/// recording's marks, each a dotted vertical line with its number (as in the list of marks).
fn line_chart(
    id: &str,
    title: &str,
    t: &[f64],
    series: &[Series],
    y_max: Option<f64>,
    mark: Option<(f64, &str)>,
    marks: &[MarkSummary],
) -> String {
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    const L: f64 = 60.0;
    const R: f64 = 40.0;
    const T: f64 = 30.0;
    const B: f64 = 40.0;
    let data_max = series.iter().flat_map(|s| s.values.iter().copied()).fold(0.0, f64::max);
    // A limit is drawn when it is near the data (within 2x); a far-away limit would flatten it.
    let near_mark = mark.map(|m| m.0).filter(|&m| m <= data_max * 2.0).unwrap_or(0.0);
    let mut top = y_max.unwrap_or(data_max.max(near_mark));
    if top <= 0.0 {
        top = 1.0;
    }
    let (t0, t1) = (t.first().copied().unwrap_or(0.0), t.last().copied().unwrap_or(1.0));
    let span = (t1 - t0).max(1.0);
    let x = |ti: f64| L + (ti - t0) / span * (W - L - R);
    let y = |v: f64| T + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - T - B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><svg class="chart" id="{id}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{title}">"#,
        title = esc(title)
    );
    let _ = write!(svg, r#"<text x="{L}" y="18" class="title">{}</text>"#, esc(title));
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    for i in 0..=5 {
        let ti = t0 + span * f64::from(i) / 5.0;
        let label = WallTime::from_unix_secs(ti).time_of_day();
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" class="axis" text-anchor="middle">{}</text>"#,
            x(ti),
            H - B + 18.0,
            label
        );
    }
    let _ = write!(svg, r##"<line x1="{L}" x2="{L}" y1="{T}" y2="{}" stroke="#888"/>"##, H - B);
    if let Some((v, label)) = mark {
        if v <= top {
            let yy = y(v);
            let _ = write!(
                svg,
                r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
                W - R,
                W - R,
                yy - 4.0,
                esc(label)
            );
        }
    }
    for (i, m) in marks.iter().enumerate() {
        let at = m.at.unix_secs();
        // A mark outside the drawn span (before the first point) is pinned to its edge.
        let xx = x(at.clamp(t0, t0 + span));
        let _ = write!(
            svg,
            r##"<g class="mark"><title>{} {} ({})</title><line x1="{xx:.1}" x2="{xx:.1}" y1="{T}" y2="{}" stroke="#7a2" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" class="axis">{}</text></g>"##,
            esc(&m.at.time_of_day()),
            esc(&m.text),
            esc(&m.author()),
            H - B,
            xx + 3.0,
            T + 10.0,
            i + 1
        );
    }
    if series.is_empty() || t.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" class="axis" text-anchor="middle">nothing to draw</text>"#,
            W / 2.0,
            H / 2.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = t.iter().zip(s.values).map(|(ti, v)| format!("{:.1},{:.1}", x(*ti), y(*v))).collect();
        // A single point draws no line: show it as a dot.
        if points.len() == 1 {
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, x(t[0]), y(s.values[0]));
        }
        let _ = write!(
            svg,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            esc(s.name),
            points.join(" ")
        );
    }
    svg.push_str("</svg><figcaption>");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<span class="key"><span class="swatch" style="background:{}"></span>{}</span>"#,
            COLOURS[i % COLOURS.len()],
            esc(s.name)
        );
    }
    svg.push_str("</figcaption></figure>\n");
    svg
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return format!("<p class=\"none\">{}: none</p>\n", esc(head[0]));
    }
    let mut out = String::from("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn render(r: &Report) -> String {
    let rec = &r.recording;
    let tl = &r.timeline;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>twtrace report: {host} {started}</title><style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:960px;color:#222}}
h1{{font-size:22px}} h2{{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left}}
th{{background:#f4f4f4}} .title{{font-size:14px;font-weight:600}} .axis{{font-size:11px;fill:#555}}
.damage{{background:#fee;border:1px solid #c00;padding:8px}} .none{{color:#888}}
.key{{margin-right:16px;font-size:12px}} .swatch{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
li{{margin:4px 0}} figure{{margin:8px 0}}
</style></head><body>
"#,
        host = esc(&rec.host),
        started = esc(&rec.started.rfc3339())
    );
    let _ = writeln!(
        h,
        "<h1>twtrace report: {} ({})</h1><p>{} to {} ({:.0} s) &middot; {} events &middot; {} lost &middot; {} chunks{}</p>",
        esc(&rec.host),
        esc(&rec.kernel),
        esc(&rec.started.rfc3339()),
        esc(&rec.ended.rfc3339()),
        rec.seconds,
        rec.events,
        rec.lost,
        rec.chunks,
        if rec.complete { "" } else { " &middot; <b>not finished</b>" }
    );
    if !rec.damage.is_empty() {
        h.push_str("<div class=\"damage\"><b>This recording is damaged.</b><ul>");
        for d in &rec.damage {
            let _ = write!(h, "<li>{}</li>", esc(d));
        }
        h.push_str("</ul></div>\n");
    }
    h.push_str("<h2>Findings</h2><ul>");
    for f in &r.findings {
        let _ = write!(h, "<li>{}</li>", esc(f));
    }
    h.push_str("</ul>\n");
    if !r.marks.is_empty() {
        h.push_str("<h2>Marks</h2>\n");
        let rows: Vec<Vec<String>> = r
            .marks
            .iter()
            .enumerate()
            .map(|(i, m)| vec![(i + 1).to_string(), m.at.rfc3339(), m.text.clone(), m.author()])
            .collect();
        h.push_str(&table(&["mark", "at", "text", "by"], &rows));
    }
    h.push_str("<h2>TIME_WAIT</h2>\n");
    let tw = &r.timewait;
    let limit = tw.max_buckets.map(|m| (m as f64, "tcp_max_tw_buckets"));
    h.push_str(&line_chart(
        "chart-timewait",
        "TIME_WAIT sockets",
        &tl.t,
        &[Series { name: "TIME_WAIT sockets", values: &tl.timewait_live }],
        None,
        limit,
        &r.marks,
    ));
    h.push_str(&line_chart(
        "chart-churn",
        "TIME_WAIT births and deaths per second",
        &tl.t,
        &[Series { name: "births/s", values: &tl.births_per_s }, Series { name: "deaths/s", values: &tl.deaths_per_s }],
        None,
        None,
        &r.marks,
    ));
    h.push_str(&table(
        &["peak", "peak at", "at start", "at end", "born", "expired", "killed", "lifetime p50", "p99", "max"],
        &[vec![
            tw.peak.to_string(),
            opt(tw.peak_at),
            tw.at_start.to_string(),
            tw.at_end.to_string(),
            tw.births.to_string(),
            tw.expired.to_string(),
            tw.killed.to_string(),
            ms_text(tw.lifetime_p50_ms),
            ms_text(tw.lifetime_p99_ms),
            ms_text(tw.lifetime_max_ms),
        ]],
    ));
    h.push_str("<h3>At the peak, by remote address and by owner</h3>");
    let groups =
        |g: &[crate::aggregate::Group]| g.iter().map(|g| vec![g.key.clone(), g.count.to_string()]).collect::<Vec<_>>();
    h.push_str(&table(&["remote", "sockets"], &groups(&tw.by_remote_at_peak)));
    h.push_str(&table(&["owner", "sockets"], &groups(&tw.by_owner_at_peak)));

    h.push_str("<h2>Port space per destination</h2>\n");
    let labels: Vec<String> = tl.destinations.iter().map(|s| s.destination.label()).collect();
    let dest_series: Vec<Series> =
        tl.destinations.iter().zip(&labels).map(|(s, name)| Series { name, values: &s.utilisation }).collect();
    let percent: Vec<Vec<f64>> = dest_series.iter().map(|s| s.values.iter().map(|v| v * 100.0).collect()).collect();
    let percent_series: Vec<Series> =
        dest_series.iter().zip(&percent).map(|(s, v)| Series { name: s.name, values: v }).collect();
    h.push_str(&line_chart(
        "chart-ports",
        "Ephemeral ports in use, % of the range",
        &tl.t,
        &percent_series,
        Some(100.0),
        None,
        &r.marks,
    ));
    h.push_str(&line_chart(
        "chart-failures",
        "connect() failures per second",
        &tl.t,
        &[Series { name: "failures/s", values: &tl.connect_failures_per_s }],
        None,
        None,
        &r.marks,
    ));
    let rows: Vec<Vec<String>> = r
        .destinations
        .iter()
        .map(|d| {
            vec![
                d.namespace.clone(),
                d.destination.local.to_string(),
                d.destination.remote.to_string(),
                format!("{}-{} ({})", d.port_range.0, d.port_range.1, d.range),
                format!("{} ({:.1}%)", d.peak_in_use, d.peak_utilisation * 100.0),
                d.peak_at.rfc3339(),
                d.in_use_at_end.to_string(),
                us_text(d.search_p50_us),
                us_text(d.search_p99_us),
                opt(d.candidates_p99),
                d.failures.to_string(),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "namespace",
            "local",
            "remote",
            "port range",
            "peak in use",
            "peak at",
            "at end",
            "search p50",
            "search p99",
            "candidates p99",
            "failures",
        ],
        &rows,
    ));
    h.push_str("<h3>Failures by process</h3>");
    let rows: Vec<Vec<String>> = r
        .failures
        .iter()
        .map(|f| vec![f.namespace.clone(), f.process.clone(), f.error.clone(), f.count.to_string()])
        .collect();
    h.push_str(&table(&["namespace", "process", "error", "count"], &rows));

    h.push_str("<h2>PAWS drops</h2>\n");
    h.push_str(&line_chart(
        "chart-paws",
        "PAWS drops per second",
        &tl.t,
        &[Series { name: "drops/s", values: &tl.drops_per_s }],
        None,
        None,
        &r.marks,
    ));
    let rows: Vec<Vec<String>> = r.paws.by_reason.iter().map(|(k, v)| vec![k.clone(), v.to_string()]).collect();
    h.push_str(&table(&["reason", "drops"], &rows));
    let rows: Vec<Vec<String>> =
        r.paws.sources.iter().map(|s| vec![r.source_label(s), s.drops.to_string(), s.flows.to_string()]).collect();
    h.push_str(&table(&["source (namespace)", "drops", "flows"], &rows));
    let rows: Vec<Vec<String>> = r.paws.counters.iter().map(|(k, v)| vec![k.clone(), format!("{v:+}")]).collect();
    h.push_str(&table(&["kernel counter", "change"], &rows));

    h.push_str("<h2>Other drops that cost connections</h2>\n");
    let rows: Vec<Vec<String>> = r
        .namespaces
        .iter()
        .flat_map(|n| {
            n.setup_drops.iter().map(|d| {
                let services: Vec<String> = d.services.iter().map(|(s, c)| format!("{s} x{c}")).collect();
                vec![
                    n.name.clone(),
                    d.reason.clone(),
                    d.total.to_string(),
                    d.syns.to_string(),
                    d.syns_sent.to_string(),
                    services.join(", "),
                ]
            })
        })
        .collect();
    h.push_str(&table(&["namespace", "reason", "drops", "SYNs", "sent by this host", "to"], &rows));

    h.push_str("<h2>Recording</h2>\n");
    let s = &rec.sysctls;
    let rows = vec![
        vec!["file".into(), rec.file.clone()],
        vec!["host".into(), rec.host.clone()],
        vec!["kernel".into(), rec.kernel.clone()],
        vec!["backends".into(), rec.backends.iter().map(|(f, b)| format!("{f}: {b}")).collect::<Vec<_>>().join(", ")],
        vec!["ip_local_port_range".into(), format!("{} {}", s.ip_local_port_range.0, s.ip_local_port_range.1)],
        vec!["tcp_tw_reuse".into(), opt(s.tcp_tw_reuse)],
        vec!["tcp_timestamps".into(), opt(s.tcp_timestamps)],
        vec!["tcp_max_tw_buckets".into(), opt(s.tcp_max_tw_buckets)],
        vec!["tcp_fin_timeout".into(), opt(s.tcp_fin_timeout)],
        vec!["namespace filter".into(), opt(rec.netns)],
        vec!["port filter".into(), opt(rec.port)],
        vec!["other filters".into(), if rec.filter.is_empty() { "-".into() } else { rec.filter.clone() }],
        vec!["sockets at start".into(), rec.sockets_at_start.to_string()],
        vec!["timeline step".into(), format!("{} s", tl.step_s)],
    ];
    h.push_str(&table(&["", ""], &rows));
    h.push_str(
        "<p class=\"none\">Made by twtrace from a recording; every figure above comes from it.</p></body></html>\n",
    );
    h
}
