//! The comparison of one scenario's reports across kernels: a Markdown table per run (the
//! same steps on every kernel side by side), the same as JSON, and an SVG chart of the curve.
//! Pure: built from the reports' JSON, unit-tested below.

use serde_json::{Value, json};

use super::Outcome;

/// One kernel's column.
struct Column {
    label: String,
    kernel: String,
    build: String,
    backend: String,
    status: String,
    /// What differs by kernel among the report's parameters (the rate achieved, when the
    /// first connect() failed).
    measured: String,
}

/// Report parameters the scenario measured rather than was given.
const MEASURED_PARAMS: &[&str] = &[
    "achieved",
    "first_failure_after",
    "namespace_default_limit",
    "child_namespace_default_limit",
    "child_ehash_entries_read",
    "tw_timer",
    "armed_then_expired_on",
    "busy_during_wait",
    "sock_diag_tcp",
    "destroy_established",
    "destroy_time_wait",
];

/// One step of one run on one kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cell {
    utilisation: f64,
    connect_p50: f64,
    search_p50: Option<f64>,
    approximate: bool,
    candidates_mean: Option<f64>,
    failed: u64,
    attempts: u64,
}

/// What a run measured beyond its steps, read from its report wherever the scenario recorded it
/// (paws-nat's clients that came later, a run's expected drops): a row per figure, shown where
/// any kernel has it. Every figure is read from the reports as they are, never computed anew.
struct Figure {
    name: &'static str,
    /// The figure's text for one run (`run`) of one report (`report`, for its checks), if any.
    read: fn(run: &Value, report: &Value) -> Option<String>,
}

const RUN_FIGURES: &[Figure] = &[
    Figure {
        name: "`tcp_timestamps` of the first / the later clients",
        read: |run, _| {
            let l = &run["later_clients"];
            Some(format!("{} / {}", l["first_tcp_timestamps"].as_str()?, l["later_tcp_timestamps"].as_str()?))
        },
    },
    Figure {
        name: "first connections set aside (clock not ahead)",
        read: |run, _| count(&run["later_clients"]["set_aside"]),
    },
    Figure { name: "later clients connected", read: |run, _| count(&run["later_clients"]["connected"]) },
    Figure {
        name: "later clients still waiting when the watch ended",
        read: |run, _| count(&run["later_clients"]["still_waiting"]),
    },
    Figure {
        name: "later clients connected after 0.9 s or more",
        read: |run, _| count(&run["later_clients"]["after_a_retransmission"]),
    },
    Figure {
        name: "later clients' connect() µs, p50 / max",
        read: |run, _| {
            let q = &run["later_clients"]["connect_us"];
            (q["n"].as_u64()? > 0)
                .then(|| format!("{:.0} / {:.0}", q["p50"].as_f64().unwrap_or(0.0), q["max"].as_f64().unwrap_or(0.0)))
        },
    },
    Figure {
        name: "SYNs rejected by PAWS (kernel counters)",
        read: |run, _| count(&run["later_clients"]["paws_rejections"]),
    },
    Figure { name: "packets dropped, twtrace / kernel counter", read: drops_seen },
];

fn count(v: &Value) -> Option<String> {
    v.as_u64().map(|n| n.to_string())
}

/// A run's expected drops (reason and the kernel's count) against twtrace's drop events of
/// that reason, as the run's check compared them.
fn drops_seen(run: &Value, report: &Value) -> Option<String> {
    let reason = run["expected_drops"][0].as_str()?;
    let label = run["label"].as_str()?;
    let what = format!("{label}: packets dropped with reason {reason}");
    let check =
        report["checks"].as_array()?.iter().find(|c| c["what"].as_str().is_some_and(|w| w.starts_with(&what)))?;
    Some(format!("{} / {} ({reason})", check["observed"].as_u64()?, check["expected"].as_u64()?))
}

/// A run (holder/variant) with its steps in order, a cell per column.
struct RunRows {
    label: String,
    /// Per column: why the run did not happen there.
    unavailable: Vec<Option<String>>,
    /// Per column: TIME_WAIT sockets that ended before their timer, as `local after N µs (reason)`.
    early: Vec<Vec<String>>,
    steps: Vec<(String, Vec<Option<Cell>>)>,
    /// Per figure of [`RUN_FIGURES`] (by index): its text per column.
    measured: Vec<Vec<Option<String>>>,
}

pub struct Comparison {
    scenario: String,
    params: Value,
    columns: Vec<Column>,
    runs: Vec<RunRows>,
}

impl Comparison {
    pub fn new(scenario: &str, outcomes: &[Outcome]) -> Self {
        let columns = outcomes
            .iter()
            .map(|o| {
                let r = o.report.as_ref();
                let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_owned();
                Column {
                    label: o.label.clone(),
                    kernel: text(r.map(|r| &r["kernel"])),
                    build: text(r.map(|r| &r["kernel_build"])),
                    backend: text(r.map(|r| &r["twtrace"]["backends"]["portsearch"])),
                    measured: MEASURED_PARAMS
                        .iter()
                        .filter_map(|k| r.and_then(|r| r["params"][*k].as_str()).map(|v| format!("{k} {v}")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    status: match (&o.problem, r) {
                        (None, Some(r)) => format!("{} checks passed", r["checks"].as_array().map_or(0, Vec::len)),
                        (Some(p), _) => format!("FAILED: {p}"),
                        (None, None) => "no report".into(),
                    },
                }
            })
            .collect();
        let mut params = outcomes.iter().find_map(|o| o.report.as_ref()).map_or(Value::Null, |r| r["params"].clone());
        if let Some(given) = params.as_object_mut() {
            given.retain(|k, _| !MEASURED_PARAMS.contains(&k.as_str()));
        }
        let mut runs: Vec<RunRows> = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let Some(report) = &o.report else { continue };
            for run in report["runs"].as_array().into_iter().flatten() {
                let label = run["label"].as_str().unwrap_or("?").to_owned();
                let at = match runs.iter().position(|r| r.label == label) {
                    Some(at) => at,
                    None => {
                        runs.push(RunRows {
                            label,
                            unavailable: vec![None; outcomes.len()],
                            early: vec![Vec::new(); outcomes.len()],
                            steps: Vec::new(),
                            measured: vec![vec![None; outcomes.len()]; RUN_FIGURES.len()],
                        });
                        runs.len() - 1
                    }
                };
                let rows = &mut runs[at];
                rows.unavailable[i] = run["unavailable"].as_str().map(str::to_owned);
                rows.early[i] = early_deaths(&run["time_wait"]);
                for (f, figure) in RUN_FIGURES.iter().enumerate() {
                    rows.measured[f][i] = (figure.read)(run, report);
                }
                for step in run["steps"].as_array().into_iter().flatten() {
                    let name = step["label"].as_str().unwrap_or("?").to_owned();
                    let row = match rows.steps.iter().position(|(n, _)| *n == name) {
                        Some(row) => row,
                        None => {
                            rows.steps.push((name, vec![None; outcomes.len()]));
                            rows.steps.len() - 1
                        }
                    };
                    rows.steps[row].1[i] = Some(cell(step));
                }
            }
        }
        Self { scenario: scenario.to_owned(), params, columns, runs }
    }

    pub fn markdown(&self) -> String {
        let mut md = format!("# Study: {}\n\nParameters: {}\n\n", self.scenario, self.params);
        md += "| where | kernel | build | port-search backend | checks | measured |\n|---|---|---|---|---|---|\n";
        for c in &self.columns {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                c.label, c.kernel, c.build, c.backend, c.status, c.measured
            );
        }
        md += "\nEach cell: connect() p50 µs as the generator timed it / port search p50 µs as twtrace \
               measured it (`~`: approximate, the tracepoint backend) / candidates examined, mean \
               (`-` where the backend cannot see them); `(n failed)` when connects failed. Times \
               under software emulation (the guests) are not comparable with the host's; \
               candidates are.\n";
        for run in &self.runs {
            md += &format!("\n## {}\n\n| step |", run.label);
            for c in &self.columns {
                md += &format!(" {} |", c.label);
            }
            md += "\n|---|";
            md += &"---|".repeat(self.columns.len());
            md += "\n";
            for (name, cells) in &run.steps {
                md += &format!("| {name} |");
                for cell in cells {
                    md += &format!(" {} |", cell.map_or("".to_owned(), |c| c.text()));
                }
                md += "\n";
            }
            let measured: Vec<(&Figure, &Vec<Option<String>>)> =
                RUN_FIGURES.iter().zip(&run.measured).filter(|(_, cells)| cells.iter().any(Option::is_some)).collect();
            if !measured.is_empty() {
                md += "\n| measured |";
                for c in &self.columns {
                    md += &format!(" {} |", c.label);
                }
                md += "\n|---|";
                md += &"---|".repeat(self.columns.len());
                md += "\n";
                for (figure, cells) in measured {
                    md += &format!("| {} |", figure.name);
                    for cell in cells {
                        md += &format!(" {} |", cell.as_deref().unwrap_or(""));
                    }
                    md += "\n";
                }
            }
            for (c, why) in self.columns.iter().zip(&run.unavailable) {
                if let Some(why) = why {
                    md += &format!("\n{}: not run ({why}).\n", c.label);
                }
            }
            for (c, early) in self.columns.iter().zip(&run.early) {
                if !early.is_empty() {
                    md += &format!("\n{}: TIME_WAIT sockets that ended early: {}.\n", c.label, early.join("; "));
                }
            }
        }
        md
    }

    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "params": self.params,
            "kernels": self.columns.iter().map(|c| json!({
                "where": c.label, "kernel": c.kernel, "build": c.build, "backend": c.backend, "status": c.status,
                "measured": c.measured,
            })).collect::<Vec<_>>(),
            "runs": self.runs.iter().map(|r| json!({
                "run": r.label,
                "time_wait_ended_early": self.columns.iter().zip(&r.early).map(|(c, e)| json!({"where": c.label, "sockets": e})).collect::<Vec<_>>(),
                "measured": RUN_FIGURES.iter().zip(&r.measured).filter(|(_, cells)| cells.iter().any(Option::is_some)).map(|(f, cells)| json!({
                    "figure": f.name,
                    "by_kernel": self.columns.iter().zip(cells).map(|(c, v)| json!({"where": c.label, "value": v})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "steps": r.steps.iter().map(|(name, cells)| json!({
                    "step": name,
                    "by_kernel": self.columns.iter().zip(cells).map(|(c, cell)| json!({
                        "where": c.label,
                        "utilisation": cell.map(|x| x.utilisation),
                        "connect_p50_us": cell.map(|x| x.connect_p50),
                        "search_p50_us": cell.and_then(|x| x.search_p50),
                        "approximate": cell.map(|x| x.approximate),
                        "candidates_mean": cell.and_then(|x| x.candidates_mean),
                        "failed": cell.map(|x| x.failed),
                        "attempts": cell.map(|x| x.attempts),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// One panel per run: candidates examined (mean) against utilisation, a line per kernel
    /// that sees candidates; where none does, search p50 instead.
    pub fn svg(&self) -> String {
        const W: f64 = 720.0;
        const H: f64 = 220.0;
        const PAD: f64 = 48.0;
        const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
        let mut body = String::new();
        for (p, run) in self.runs.iter().enumerate() {
            let top = p as f64 * (H + 40.0);
            let use_candidates =
                run.steps.iter().any(|(_, cells)| cells.iter().flatten().any(|c| c.candidates_mean.is_some()));
            let value = |c: &Cell| if use_candidates { c.candidates_mean } else { c.search_p50 };
            let ymax =
                run.steps.iter().flat_map(|(_, cells)| cells.iter().flatten().filter_map(value)).fold(1.0f64, f64::max);
            let x = |u: f64| PAD + u * (W - 2.0 * PAD);
            let y = |v: f64| top + H - PAD + 10.0 - v / ymax * (H - PAD - 10.0);
            let metric = if use_candidates { "candidates examined (mean)" } else { "search p50 µs" };
            body += &format!(
                "<text x=\"{PAD}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"bold\">{}: {metric}</text>\n",
                top + 16.0,
                run.label
            );
            body += &format!(
                "<line x1=\"{PAD}\" y1=\"{b:.0}\" x2=\"{:.0}\" y2=\"{b:.0}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"{:.0}\" x2=\"{PAD}\" y2=\"{b:.0}\" stroke=\"#888\"/>\n",
                W - PAD,
                top + 20.0,
                b = y(0.0)
            );
            for (u, label) in [(0.0, "0%"), (0.25, "25%"), (0.5, "50%"), (0.75, "75%"), (1.0, "100%")] {
                body += &format!(
                    "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"10\">{label}</text>\n",
                    x(u) - 8.0,
                    y(0.0) + 14.0
                );
            }
            body += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"10\" fill=\"#555\">ports held, % of the range</text>\n",
                x(0.5) - 60.0,
                y(0.0) + 26.0
            );
            body += &format!("<text x=\"4\" y=\"{:.0}\" font-size=\"10\">{:.0}</text>\n", y(ymax) + 4.0, ymax);
            for (k, column) in self.columns.iter().enumerate() {
                let points: Vec<String> = run
                    .steps
                    .iter()
                    .filter_map(|(_, cells)| {
                        cells[k].and_then(|c| value(&c).map(|v| format!("{:.1},{:.1}", x(c.utilisation), y(v))))
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let colour = COLOURS[k % COLOURS.len()];
                // Kernels often agree: earlier lines are drawn wider, so a line on top of
                // another leaves it visible at its edges.
                let width = 1.5 + 1.5 * (self.columns.len() - 1 - k) as f64;
                body += &format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-opacity=\"0.8\" points=\"{}\"/>\n",
                    points.join(" ")
                );
                body += &format!(
                    "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"{colour}\">{} ({})</text>\n",
                    PAD + 10.0,
                    top + 34.0 + 13.0 * k as f64,
                    column.label,
                    column.kernel
                );
            }
        }
        let height = self.runs.len().max(1) as f64 * (H + 40.0);
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
        )
    }
}

/// TIME_WAIT sockets a run saw end before their timer: how many, their lifetimes, and the
/// first few.
fn early_deaths(time_wait: &Value) -> Vec<String> {
    let q = &time_wait["early_lifetime_ms"];
    let Some(n) = q["n"].as_u64() else { return Vec::new() };
    // By the path that ended them (twtrace's names; `killed`: path unknown).
    let by_path: Vec<String> = time_wait["deaths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(path, _)| *path != "expired")
        .map(|(path, count)| format!("{path} {}", count.as_u64().unwrap_or(0)))
        .collect();
    let by_path = if by_path.is_empty() { String::new() } else { format!(" ({})", by_path.join(", ")) };
    let mut out = vec![format!(
        "{n}{by_path}, lifetime ms min/p50/max {:.1}/{:.1}/{:.1}",
        q["min"].as_f64().unwrap_or(0.0),
        q["p50"].as_f64().unwrap_or(0.0),
        q["max"].as_f64().unwrap_or(0.0)
    )];
    if n <= 3 {
        out.extend(time_wait["early"].as_array().into_iter().flatten().map(|e| {
            format!(
                "{} after {:.0} µs ({})",
                e[2].as_str().unwrap_or("?"),
                e[0].as_f64().unwrap_or(0.0),
                e[1].as_str().unwrap_or("?")
            )
        }));
    }
    out
}

fn cell(step: &Value) -> Cell {
    let seen = &step["twtrace"];
    Cell {
        utilisation: step["utilisation"].as_f64().unwrap_or(0.0),
        connect_p50: step["connect_us"]["p50"].as_f64().unwrap_or(0.0),
        search_p50: seen["search_us"]["p50"].as_f64(),
        approximate: seen["approximate"] == true,
        candidates_mean: seen["candidates"]["mean"].as_f64(),
        failed: step["failures"].as_object().map_or(0, |f| f.values().filter_map(Value::as_u64).sum()),
        attempts: step["attempts"].as_u64().unwrap_or(0),
    }
}

impl Cell {
    fn text(&self) -> String {
        let search =
            self.search_p50.map_or("-".into(), |s| format!("{s:.1}{}", if self.approximate { "~" } else { "" }));
        let candidates = self.candidates_mean.map_or("-".into(), |c| format!("{c:.1}"));
        let failed = if self.failed > 0 { format!(" ({} failed)", self.failed) } else { String::new() };
        format!("{:.1} / {search} / {candidates}{failed}", self.connect_p50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kernel: &str, candidates: Option<f64>) -> Value {
        json!({
            "kernel": kernel, "kernel_build": "#1", "params": {"range": "40000-40009"}, "passed": true,
            "checks": [{"passed": true}],
            "twtrace": {"backends": {"portsearch": "fentry"}},
            "runs": [{"label": "established/sysctl", "unavailable": null, "steps": [
                {"label": "0%", "utilisation": 0.0, "attempts": 5, "failures": {}, "connect_us": {"p50": 10.0},
                 "twtrace": {"search_us": {"p50": 2.0}, "approximate": false, "candidates": candidates.map(|m| json!({"mean": m}))}},
                {"label": "100%", "utilisation": 1.0, "attempts": 5, "failures": {"EADDRNOTAVAIL": 5}, "connect_us": {"p50": 30.0},
                 "twtrace": {"search_us": {"p50": 9.0}, "approximate": true, "candidates": null}},
            ]}, {"label": "established/sockopt", "unavailable": "not in this kernel", "steps": []}],
        })
    }

    fn outcomes() -> Vec<Outcome> {
        vec![
            Outcome { label: "host".into(), report: Some(report("6.18.4", None)), problem: None },
            Outcome { label: "6.1".into(), report: Some(report("6.1.9", Some(1.5))), problem: None },
            Outcome { label: "5.10".into(), report: None, problem: Some("no report".into()) },
        ]
    }

    #[test]
    fn steps_line_up_across_kernels_and_gaps_stay_visible() {
        let c = Comparison::new("search-cost", &outcomes());
        let md = c.markdown();
        assert!(md.contains("| 0% | 10.0 / 2.0 / - | 10.0 / 2.0 / 1.5 |  |"), "{md}");
        assert!(md.contains("| 100% | 30.0 / 9.0~ / - (5 failed) |"), "{md}");
        assert!(md.contains("| 5.10 | ? | ? | ? | FAILED: no report |  |"), "{md}");
        assert!(md.contains("host: not run (not in this kernel)"), "{md}");
        let j = c.json();
        assert_eq!(j["runs"][0]["steps"][0]["by_kernel"][1]["candidates_mean"], 1.5);
        assert_eq!(j["runs"][0]["steps"][1]["by_kernel"][0]["failed"], 5);
    }

    #[test]
    fn early_deaths_are_summarised_and_a_few_are_named() {
        let few = json!({"early_lifetime_ms": {"n": 1, "min": 16.2, "p50": 16.2, "max": 16.2},
                         "early": [[16235.0, "killed", "127.0.0.1:41950"]]});
        assert_eq!(
            early_deaths(&few),
            ["1, lifetime ms min/p50/max 16.2/16.2/16.2", "127.0.0.1:41950 after 16235 µs (killed)"]
        );
        let many = json!({"early_lifetime_ms": {"n": 400, "min": 1000.7, "p50": 1025.0, "max": 1990.4},
                          "deaths": {"expired": 3, "reused": 399, "reset": 1},
                          "early": [[1.0, "reused", "a"], [2.0, "reused", "b"], [3.0, "reused", "c"], [4.0, "reset", "d"]]});
        assert_eq!(early_deaths(&many), ["400 (reset 1, reused 399), lifetime ms min/p50/max 1000.7/1025.0/1990.4"]);
        assert!(early_deaths(&json!(null)).is_empty());
    }

    #[test]
    fn figures_a_run_measured_get_a_row_each_where_a_kernel_has_them() {
        let run = |drops: bool| {
            json!({"label": "clock behind", "unavailable": null,
                "steps": [{"label": "first clients", "utilisation": 0.0, "attempts": 3, "failures": {}, "connect_us": {"p50": 10.0}}],
                "later_clients": {"first_tcp_timestamps": "1", "later_tcp_timestamps": "2", "set_aside": 4, "connected": 3,
                                  "after_a_retransmission": 0, "still_waiting": 0, "paws_rejections": 3,
                                  "connect_us": {"n": 3, "mean": 1.0, "p50": 11234.4, "p99": 2.0, "max": 12000.0}},
                "expected_drops": if drops { json!(["TCP_RFC7323_TW_PAWS", 3]) } else { Value::Null }})
        };
        let report = |kernel: &str, drops: bool| {
            json!({"kernel": kernel, "kernel_build": "#1", "params": {"clients": "3"}, "passed": true,
                "twtrace": {"backends": {"portsearch": "fentry"}}, "runs": [run(drops)],
                "checks": [{"what": "clock behind: packets dropped with reason TCP_RFC7323_TW_PAWS (kernel counter vs twtrace)",
                            "expected": 3, "observed": 3, "passed": true}]})
        };
        let places = vec![
            Outcome { label: "6.12".into(), report: Some(report("6.12.1", false)), problem: None },
            Outcome { label: "6.18".into(), report: Some(report("6.18.1", true)), problem: None },
        ];
        let c = Comparison::new("paws-nat", &places);
        let md = c.markdown();
        assert!(md.contains("| measured | 6.12 | 6.18 |"), "{md}");
        assert!(md.contains("| later clients' connect() µs, p50 / max | 11234 / 12000 | 11234 / 12000 |"), "{md}");
        assert!(md.contains("| SYNs rejected by PAWS (kernel counters) | 3 | 3 |"), "{md}");
        // Only where the kernel names the reason.
        assert!(md.contains("| packets dropped, twtrace / kernel counter |  | 3 / 3 (TCP_RFC7323_TW_PAWS) |"), "{md}");
        let j = c.json();
        assert_eq!(j["runs"][0]["measured"][2]["figure"], "later clients connected");
        assert_eq!(j["runs"][0]["measured"][2]["by_kernel"][1]["value"], "3");
        // A scenario without such figures gets no measured table.
        assert!(!Comparison::new("search-cost", &outcomes()).markdown().contains("\n| measured |"));
    }

    #[test]
    fn the_chart_draws_a_line_per_kernel_that_has_the_metric() {
        let svg = Comparison::new("search-cost", &outcomes()).svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Candidates exist on 6.1 only: one line in the first panel, none in the empty second.
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert!(svg.contains("6.1 (6.1.9)"));
    }
}
