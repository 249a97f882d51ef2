//! What twtrace says about itself, read the way the scale ladder reads it: the `scale:` line
//! every view prints on stderr at its end, the `model` object of `stat --json`, serve's
//! exposition, the TUI's screen, and the end lines of serve, top and doctor. Each parser
//! takes text and returns what it found; anything absent stays `None`.

use std::collections::BTreeMap;

use serde_json::Value;

/// `twtrace: scale: views N, build p50 X ms p99 Y ms max Z ms, on CPU p50 A ms p99 B ms;
/// drain stall max S ms; queued peak Q events; lost L` (the CPU figures since 2026-12-07).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleLine {
    pub views: u64,
    pub build_p50_ms: f64,
    pub build_p99_ms: f64,
    pub build_max_ms: f64,
    /// The building thread's CPU time: the build's cost without the waits for a CPU.
    pub build_cpu_p50_ms: Option<f64>,
    pub build_cpu_p99_ms: Option<f64>,
    pub drain_stall_max_ms: f64,
    pub queued_peak: u64,
    pub lost: u64,
    /// Runs of twtrace's programs the kernel skipped (since 2026-12-07's line).
    pub skipped: Option<u64>,
}

/// The word after the words `key` (`["p99"]`, `["stall", "max"]`) in `words`.
fn after<'a>(words: &[&'a str], key: &[&str]) -> Option<&'a str> {
    words.windows(key.len() + 1).find(|w| &w[..key.len()] == key).map(|w| w[key.len()])
}

/// What follows `marker` in `line`, wherever in the line it starts.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

fn number<T: std::str::FromStr>(word: Option<&str>) -> Option<T> {
    word?.trim_end_matches([',', ';']).parse().ok()
}

/// One `scale:` line, or `None` if `line` is not one or lacks a figure. Whatever comes before
/// `twtrace: ` is passed over: `serve`'s text lines start with a timestamp.
pub fn scale_line(line: &str) -> Option<ScaleLine> {
    let rest = after_marker(line.trim(), "twtrace: scale: ")?;
    let parts: Vec<Vec<&str>> = rest.split(';').map(|p| p.split_whitespace().collect()).collect();
    let [views, stall, queued, lost] = parts.as_slice() else { return None };
    let (wall, cpu) = match views.iter().position(|w| *w == "CPU") {
        Some(at) => views.split_at(at),
        None => (views.as_slice(), &[][..]),
    };
    Some(ScaleLine {
        views: number(after(wall, &["views"]))?,
        build_p50_ms: number(after(wall, &["p50"]))?,
        build_p99_ms: number(after(wall, &["p99"]))?,
        build_max_ms: number(after(wall, &["max"]))?,
        build_cpu_p50_ms: number(after(cpu, &["p50"])),
        build_cpu_p99_ms: number(after(cpu, &["p99"])),
        drain_stall_max_ms: number(after(stall, &["stall", "max"]))?,
        queued_peak: number(after(queued, &["peak"]))?,
        lost: number(after(lost, &["lost"]))?,
        skipped: number(after(lost, &["skipped"])),
    })
}

/// The last `scale:` line among a process's stderr lines.
pub fn last_scale_line<S: AsRef<str>>(lines: &[S]) -> Option<ScaleLine> {
    lines.iter().rev().find_map(|l| scale_line(l.as_ref()))
}

/// Rows of twtrace's model by kind (`destinations`, `searches`, `timewait_sockets`,
/// `connections`, `failure_rows`, `paws_sources`, `evicted`).
pub type Model = BTreeMap<String, u64>;

/// What a view of twtrace said about the namespace(s) at the end of the load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub timewait_live: Option<u64>,
    pub births: Option<u64>,
    pub lost: Option<u64>,
    pub events: Option<u64>,
    pub model: Option<Model>,
}

/// One line of `twtrace stat --json`. With `only`, the live count of the namespaces whose
/// name starts with it (births are host-wide only: then `None`).
pub fn stat_json(line: &str, only: Option<&str>) -> Option<View> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let model = v["model"].as_object().map(|m| m.iter().filter_map(|(k, n)| Some((k.clone(), n.as_u64()?))).collect());
    let timewait_live = match only {
        None => v["timewait"]["live"].as_u64(),
        Some(prefix) => v["namespaces"].as_array().map(|all| {
            all.iter()
                .filter(|n| n["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
                .filter_map(|n| n["timewait_live"].as_u64())
                .sum()
        }),
    };
    Some(View {
        timewait_live,
        births: v["timewait"]["births_total"].as_u64().filter(|_| only.is_none()),
        lost: v["lost"].as_u64(),
        events: v["events"].as_u64(),
        model,
    })
}

/// A sample of an OpenMetrics exposition: name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (head, value) = match line.find('}') {
        Some(end) => (&line[..=end], &line[end + 1..]),
        None => line.split_once(' ')?,
    };
    let value = value.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (head, ""),
    };
    // Label values here never hold `",`: namespace names and kinds do not.
    let labels = labels
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect();
    Some((name.trim(), labels, value))
}

/// Serve's `/metrics`: sums over namespaces (with `only`, those whose name starts with it;
/// births are host-wide only: then `None`), and the model's rows by kind.
pub fn exposition(text: &str, only: Option<&str>) -> View {
    let mut view = View::default();
    let mut model = Model::new();
    let add = |slot: &mut Option<u64>, v: f64| *slot = Some(slot.unwrap_or(0) + v as u64);
    let wanted = |labels: &[(&str, &str)]| {
        only.is_none_or(|prefix| labels.iter().any(|(k, v)| *k == "namespace" && v.starts_with(prefix)))
    };
    for (name, labels, value) in text.lines().filter_map(sample) {
        match name {
            "twtrace_timewait_sockets" if wanted(&labels) => add(&mut view.timewait_live, value),
            "twtrace_timewait_births_total" if only.is_none() => add(&mut view.births, value),
            "twtrace_lost_records_total" => add(&mut view.lost, value),
            "twtrace_events_total" => add(&mut view.events, value),
            "twtrace_model_rows" => {
                if let Some((_, kind)) = labels.iter().find(|(k, _)| *k == "kind") {
                    *model.entry((*kind).to_owned()).or_default() += value as u64;
                }
            }
            _ => {}
        }
    }
    view.model = (!model.is_empty()).then_some(model);
    view
}

/// The TUI's screen (`tmux capture-pane -p`): the TIME_WAIT box's title and the header's
/// loss (`lost 0`, or `LOST N`).
pub fn top_screen(text: &str) -> View {
    let words: Vec<&str> = text.split_whitespace().collect();
    // The first `KEY number` (the words also appear in findings and help, without one).
    let first = |key: &str| {
        words.windows(2).find_map(|w| if w[0] == key { w[1].split('/').next()?.parse::<u64>().ok() } else { None })
    };
    View { timewait_live: first("TIME_WAIT"), lost: first("LOST").or(first("lost")), ..View::default() }
}

/// `twtrace: top ended; N events, M lost in the kernel` and `twtrace: serve ended; N events,
/// M lost in the kernel`: (events, lost), after whatever prefix (`serve`'s timestamp).
pub fn end_line<S: AsRef<str>>(lines: &[S]) -> Option<(u64, u64)> {
    lines.iter().rev().find_map(|l| {
        let l = l.as_ref();
        let rest = after_marker(l, "twtrace: top ended; ").or_else(|| after_marker(l, "twtrace: serve ended; "))?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        Some((number(words.first().copied())?, number(words.get(2).copied())?))
    })
}

/// `twtrace doctor --json`: what it observed.
pub fn doctor_json(text: &str) -> View {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return View::default() };
    View { lost: v["observed"]["lost"].as_u64(), events: v["observed"]["events"].as_u64(), ..View::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_line_is_read_whole() {
        let line = "twtrace: scale: views 58, build p50 1.5 ms p99 12.25 ms max 40 ms; drain stall max 3.1 ms; \
                    queued peak 16384 events; lost 0";
        assert_eq!(
            scale_line(line),
            Some(ScaleLine {
                views: 58,
                build_p50_ms: 1.5,
                build_p99_ms: 12.25,
                build_max_ms: 40.0,
                build_cpu_p50_ms: None,
                build_cpu_p99_ms: None,
                drain_stall_max_ms: 3.1,
                queued_peak: 16384,
                lost: 0,
                skipped: None,
            })
        );
        let skipped = format!("{line}, skipped 7");
        assert_eq!(scale_line(&skipped).map(|s| (s.lost, s.skipped)), Some((0, Some(7))));
        let with_cpu = "twtrace: scale: views 58, build p50 1.5 ms p99 12.25 ms max 40 ms, on CPU p50 1.2 ms p99 9.5 ms; \
                        drain stall max 3.1 ms; queued peak 16384 events; lost 0";
        let s = scale_line(with_cpu).unwrap();
        assert_eq!((s.build_p50_ms, s.build_p99_ms, s.build_max_ms), (1.5, 12.25, 40.0), "wall figures first");
        assert_eq!((s.build_cpu_p50_ms, s.build_cpu_p99_ms), (Some(1.2), Some(9.5)));
        let lost = "twtrace: scale: views 3, build p50 812.0 ms p99 9000.7 ms max 9000.7 ms; drain stall max 10002.4 \
                    ms; queued peak 2000000 events; lost 235206";
        let s = scale_line(lost).unwrap();
        assert_eq!((s.views, s.build_max_ms, s.drain_stall_max_ms, s.lost), (3, 9000.7, 10002.4, 235206));
        // Other lines, a cut line, words where numbers belong: nothing.
        assert_eq!(scale_line("twtrace: serve ended; 189459 events, 0 lost in the kernel"), None);
        assert_eq!(scale_line("twtrace: scale: views 3, build p50 1 ms p99 2 ms max 3 ms; drain stall max 1 ms"), None);
        assert_eq!(
            scale_line(
                "twtrace: scale: views many, build p50 1 ms p99 2 ms max 3 ms; drain stall max 1 ms; queued peak 1 events; lost 0"
            ),
            None
        );
        let lines =
            ["twtrace: tracing; timewait: tracepoint", line, "twtrace: top ended; 5 events, 0 lost in the kernel"];
        assert_eq!(last_scale_line(&lines).map(|s| s.views), Some(58));
        // `serve`'s text lines start with a timestamp.
        let stamped = format!("2026-12-08T10:11:12.123456Z {line}");
        assert_eq!(scale_line(&stamped), scale_line(line));
    }

    #[test]
    fn stat_lines_give_the_model_and_the_live_counts() {
        let line =
            r#"{"mono_ns":1,"seconds":10.0,"events":189459,"lost":7,"timewait":{"live":14758,"births_total":29173},
            "model":{"destinations":1000,"searches":1000,"timewait_sockets":14758,"connections":3,"failure_rows":0,
            "paws_sources":0,"evicted":0},"ts":"x"}"#
                .replace('\n', "");
        let v = stat_json(&line, None).unwrap();
        assert_eq!((v.timewait_live, v.births, v.lost, v.events), (Some(14758), Some(29173), Some(7), Some(189459)));
        let model = v.model.unwrap();
        assert_eq!(model["destinations"], 1000);
        assert_eq!(model["timewait_sockets"], 14758);
        assert_eq!(model.len(), 7);
        // Before the model object exists: the counts still, no model.
        let old = stat_json(r#"{"events":5,"lost":0,"timewait":{"live":2,"births_total":3}}"#, None).unwrap();
        assert_eq!((old.timewait_live, old.model), (Some(2), None));
        assert_eq!(stat_json("not json", None), None);
        // Only the bench's namespaces: other work on the host has its own.
        let host =
            r#"{"timewait":{"live":450,"births_total":900},"namespaces":[{"name":"twscale-ns0001","timewait_live":40},
            {"name":"root","timewait_live":10},{"name":"twscale-ns0002","timewait_live":400}]}"#
                .replace('\n', "");
        let mine = stat_json(&host, Some("twscale-")).unwrap();
        assert_eq!((mine.timewait_live, mine.births), (Some(440), None));
    }

    #[test]
    fn the_exposition_is_summed_over_namespaces() {
        let text = "# HELP twtrace_timewait_sockets TIME_WAIT sockets in the namespace now.\n\
                    # TYPE twtrace_timewait_sockets gauge\n\
                    twtrace_timewait_sockets{netns=\"4026532174\",namespace=\"twscale-ns0001\"} 14758\n\
                    twtrace_timewait_sockets{netns=\"4026532175\",namespace=\"twscale-ns0002\"} 2\n\
                    twtrace_timewait_max_buckets{netns=\"4026532174\",namespace=\"a\"} 131072\n\
                    twtrace_timewait_births_total 29173\n\
                    twtrace_events_total 189459\n\
                    twtrace_lost_records_total 0\n\
                    twtrace_model_rows{kind=\"destinations\"} 100000\n\
                    twtrace_model_rows{kind=\"timewait_sockets\"} 14760\n\
                    twtrace_model_rows{kind=\"evicted\"} 0\n\
                    twtrace_probe_info{family=\"timewait\",backend=\"tracepoint\",hooks=\"a,b\"} 1\n\
                    # EOF\n";
        let v = exposition(text, None);
        assert_eq!((v.timewait_live, v.births, v.lost, v.events), (Some(14760), Some(29173), Some(0), Some(189459)));
        let mine = exposition(text, Some("twscale-ns0002"));
        assert_eq!((mine.timewait_live, mine.births, mine.lost), (Some(2), None, Some(0)));
        let model = v.model.unwrap();
        assert_eq!((model["destinations"], model["timewait_sockets"], model["evicted"]), (100000, 14760, 0));
        assert_eq!(exposition("# EOF\n", None), View::default());
    }

    #[test]
    fn the_tui_screen_and_end_lines() {
        let screen = "│ twtrace  host 6.18  events 0/s  namespaces 1  lost 0  cpu 99.8%\n\
                      ┌ TIME_WAIT 32707/2000000 ─────────┐\n";
        let v = top_screen(screen);
        assert_eq!((v.timewait_live, v.lost), (Some(32707), Some(0)));
        let lossy = top_screen("TIME_WAIT sockets pile up\nevents 12/s LOST 235206 cpu 40%\n┌ TIME_WAIT 12 ┐");
        assert_eq!((lossy.timewait_live, lossy.lost), (Some(12), Some(235206)));
        let lines = ["twtrace: tracing; x", "twtrace: top ended; 197091 events, 0 lost in the kernel"];
        assert_eq!(end_line(&lines), Some((197091, 0)));
        assert_eq!(end_line(&["twtrace: serve ended; 189459 events, 12 lost in the kernel"]), Some((189459, 12)));
        assert_eq!(end_line(&["twtrace: tracing;"]), None);
        let stamped = ["2026-12-08T10:11:12.123456Z twtrace: serve ended; 189459 events, 12 lost in the kernel"];
        assert_eq!(end_line(&stamped), Some((189459, 12)));
    }

    #[test]
    fn doctor_json_gives_what_it_observed() {
        let doctor = r#"{"severity":"warning","observed":{"events":1200,"lost":3,"seconds":15.0},"findings":[]}"#;
        let v = doctor_json(doctor);
        assert_eq!((v.events, v.lost), (Some(1200), Some(3)));
        assert_eq!(doctor_json("twtrace: error"), View::default());
    }
}
