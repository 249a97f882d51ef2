//! The report as text: findings first, then TIME_WAIT, port space and PAWS, with sparklines.

use super::{MarkSummary, Report};

/// A line of block characters for a series (the text report's timelines).
fn sparkline(values: &[f64], width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() {
        return String::new();
    }
    let per = values.len().div_ceil(width).max(1);
    let points: Vec<f64> = values.chunks(per).map(|c| c.iter().copied().fold(0.0, f64::max)).collect();
    let max = points.iter().copied().fold(0.0, f64::max);
    points.iter().map(|v| if max <= 0.0 { BLOCKS[0] } else { BLOCKS[((v / max) * 7.0).round() as usize] }).collect()
}

/// The marks' numbers under a [`sparkline`] of the same `width` over `t` (Unix seconds of
/// each point): mark 1 under the column its time falls in, and so on (`*` past 9, or where
/// two share a column).
fn mark_ruler(t: &[f64], marks: &[MarkSummary], width: usize) -> String {
    if t.is_empty() {
        return String::new();
    }
    let per = t.len().div_ceil(width).max(1);
    let columns = t.len().div_ceil(per);
    let mut ruler = vec![' '; columns];
    for (i, m) in marks.iter().enumerate() {
        // The first point at or after the mark: the sample that already includes it.
        let point = t.partition_point(|&ti| ti < m.at.unix_secs()).min(t.len() - 1);
        let column = &mut ruler[point / per];
        *column = if *column == ' ' && i < 9 { char::from(b'1' + i as u8) } else { '*' };
    }
    ruler.into_iter().collect::<String>().trim_end().to_owned()
}

pub(super) fn ms_text(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}s", v / 1e3))
}

pub(super) fn us_text(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}us"))
}

pub fn text(r: &Report) -> String {
    let rec = &r.recording;
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("twtrace report: {}", rec.file));
    line(format!(
        "  host {} kernel {}  {} .. {} ({:.0} s)  {} events, {} lost, {} chunks{}",
        rec.host,
        rec.kernel,
        rec.started,
        rec.ended,
        rec.seconds,
        rec.events,
        rec.lost,
        rec.chunks,
        if rec.complete { "" } else { ", NOT FINISHED" }
    ));
    let s = &rec.sysctls;
    let opt = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    line(format!(
        "  ip_local_port_range {}-{}  tcp_tw_reuse {}  tcp_timestamps {}  tcp_max_tw_buckets {}  tcp_fin_timeout {}",
        s.ip_local_port_range.0,
        s.ip_local_port_range.1,
        opt(s.tcp_tw_reuse),
        opt(s.tcp_timestamps),
        opt(s.tcp_max_tw_buckets),
        opt(s.tcp_fin_timeout)
    ));
    let backends: Vec<String> = rec.backends.iter().map(|(f, b)| format!("{f}:{b}")).collect();
    line(format!(
        "  backends {}{}",
        backends.join(" "),
        if rec.filter.is_empty() { String::new() } else { format!("  filter {}", rec.filter) }
    ));
    for d in &rec.damage {
        line(format!("  DAMAGE: {d}"));
    }
    line(String::new());
    line("Findings".into());
    for f in &r.findings {
        line(format!("  - {f}"));
    }
    line(String::new());
    if !r.marks.is_empty() {
        line("Marks".into());
        for (i, m) in r.marks.iter().enumerate() {
            line(format!("  {}  {}  {:?}  ({})", i + 1, m.at.time_of_day(), m.text, m.author()));
        }
        line(String::new());
    }
    let tw = &r.timewait;
    line(format!(
        "TIME_WAIT  peak {}{} at {}  start {} end {}  born {} expired {} killed {}  lifetime p50 {} p99 {} max {}",
        tw.peak,
        tw.max_buckets.map(|m| format!("/{m}")).unwrap_or_default(),
        tw.peak_at.map_or("-".into(), |t| t.time_of_day()),
        tw.at_start,
        tw.at_end,
        tw.births,
        tw.expired,
        tw.killed,
        ms_text(tw.lifetime_p50_ms),
        ms_text(tw.lifetime_p99_ms),
        ms_text(tw.lifetime_max_ms)
    ));
    if tw.killed > 0 {
        line(format!("  killed by   {}", tw.killed_by.text()));
    }
    line(format!("  population  {}", sparkline(&r.timeline.timewait_live, 60)));
    if !r.marks.is_empty() {
        line(format!("  marks       {}", mark_ruler(&r.timeline.t, &r.marks, 60)));
    }
    for g in tw.by_remote_at_peak.iter().take(5) {
        line(format!("  at peak toward {} x{}", g.key, g.count));
    }
    for g in tw.by_owner_at_peak.iter().take(5) {
        line(format!("  at peak owned by {} x{}", g.key, g.count));
    }
    line(String::new());
    line("Port space per destination (each against its namespace's range)".into());
    for d in &r.destinations {
        let series = r
            .timeline
            .destinations
            .iter()
            .find(|s| s.destination == d.destination)
            .map_or(&[][..], |s| s.utilisation.as_slice());
        line(format!(
            "  [{}] {} -> {}  range {}-{}  peak {} ({:.1}%) at {}  end {}  search p50 {} p99 {}  candidates p99 {}  failures {}  {}",
            d.namespace,
            d.destination.local,
            d.destination.remote,
            d.port_range.0,
            d.port_range.1,
            d.peak_in_use,
            d.peak_utilisation * 100.0,
            d.peak_at.time_of_day(),
            d.in_use_at_end,
            us_text(d.search_p50_us),
            us_text(d.search_p99_us),
            d.candidates_p99.map_or("-".into(), |c| c.to_string()),
            d.failures,
            sparkline(series, 30)
        ));
    }
    for f in &r.failures {
        line(format!("  failed [{}] {} {} x{}", f.namespace, f.process, f.error, f.count));
    }
    line(String::new());
    let p = &r.paws;
    let reasons: Vec<String> = p.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
    line(format!(
        "PAWS drops {}  {}  peak {:.1}/s{}",
        p.drops,
        reasons.join(", "),
        p.peak_per_s,
        p.peak_at.map(|t| format!(" at {}", t.time_of_day())).unwrap_or_default()
    ));
    for s in &p.sources {
        line(format!("  from {} drops {} flows {}", r.source_label(s), s.drops, s.flows));
    }
    if !p.counters.is_empty() {
        let c: Vec<String> = p.counters.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
        line(format!("  counters {}", c.join(", ")));
    }
    let setup: Vec<(&str, &crate::aggregate::SetupDropView)> =
        r.namespaces.iter().flat_map(|n| n.setup_drops.iter().map(|d| (n.name.as_str(), d))).collect();
    if !setup.is_empty() {
        line(String::new());
        line("Other drops that cost connections (by namespace and reason)".into());
        for (ns, d) in setup {
            line(format!("  [{ns}] {} {}  SYNs {} (sent by this host {})", d.reason, d.total, d.syns, d.syns_sent));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::WallTime;

    fn mark(unix_s: f64) -> MarkSummary {
        MarkSummary { at: WallTime::from_unix_secs(unix_s), text: "m".into(), uid: Some(0), pid: None }
    }

    #[test]
    fn marks_sit_under_the_sparkline_column_of_their_time() {
        let t: Vec<f64> = (0..10).map(|i| 100.0 + f64::from(i)).collect();
        // One point per column: the mark at 103.5 belongs to the sample at 104.
        assert_eq!(mark_ruler(&t, &[mark(100.0), mark(103.5)], 60), "1   2");
        // Two points per column (20 points, width 10); two marks in one column show as `*`.
        let t: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i)).collect();
        assert_eq!(mark_ruler(&t, &[mark(101.0), mark(101.0), mark(119.0)], 10), "*        3");
        // Beyond the last point: the last column.
        assert_eq!(mark_ruler(&t, &[mark(500.0)], 10), "         1");
        assert_eq!(mark_ruler(&[], &[mark(1.0)], 10), "");
    }
}
