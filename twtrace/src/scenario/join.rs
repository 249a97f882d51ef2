//! Joins a scenario's steps with what twtrace recorded meanwhile: each step's connect() port
//! searches in the run's namespace and time window, and a check per step that twtrace saw as
//! many searches and failures as the generator made (short only by the events it reported
//! missing). Replaying is the same path `report` takes: the recording is a source.

use std::{collections::BTreeMap, path::Path};

use super::report::{Check, EARLY_LISTED, Quantiles, ScenarioReport, Seen, TimeWaitSeen, Tracing};
use crate::{
    drive::{self, Limits, Sink, Status},
    event::{DeathReason, DropEvent, Event, PortSearchEvent, SearchOp, TimeWaitChange, TimeWaitEvent, errno_name},
    filter::Filter,
    record::directory::Window,
    source::Source,
};

/// Replays `recording` and fills in twtrace's view of every step.
pub async fn join(report: &mut ScenarioReport, recording: &Path) -> anyhow::Result<()> {
    let mut source = Source::replay(recording, None, Window::default())?;
    let mut sink = Searches::default();
    drive::drive(&mut source, Filter::default(), &mut sink, Limits::default()).await?;
    let tracing =
        Tracing { recording: recording.display().to_string(), backends: sink.backends, blind_spots: sink.blind_spots };
    apply(report, &sink.searches, tracing);
    apply_time_wait(report, &sink.time_wait);
    apply_drops(report, &sink.drops);
    Ok(())
}

/// The connect() searches of a recording, and what the recording says it may lack.
#[derive(Default)]
struct Searches {
    searches: Vec<PortSearchEvent>,
    time_wait: Vec<TimeWaitEvent>,
    drops: Vec<DropEvent>,
    backends: BTreeMap<String, String>,
    blind_spots: u64,
}

impl Sink for Searches {
    type Wake = ();

    fn start(&mut self, status: &Status) -> anyhow::Result<()> {
        for family in &status.info().backends {
            let backend = family.running.map_or_else(|| "none".to_owned(), |b| b.to_string());
            self.backends.insert(family.family.to_string(), backend);
        }
        Ok(())
    }

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        match event {
            Event::PortSearch(e) if e.op == SearchOp::Connect => self.searches.push(e.clone()),
            Event::TimeWait(e) => self.time_wait.push(e.clone()),
            Event::Drop(e) => self.drops.push(e.clone()),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        let health = status.health();
        self.blind_spots = health.lost + health.skipped_runs;
        Ok(())
    }
}

/// Fills each step's [`Seen`] from `searches` and adds the checks. Pure: the unit tests feed
/// it events directly.
pub fn apply(report: &mut ScenarioReport, searches: &[PortSearchEvent], tracing: Tracing) {
    let allowance = tracing.blind_spots;
    for run in &mut report.runs {
        for step in &mut run.steps {
            let (from, to) = step.window_ns;
            let inside: Vec<&PortSearchEvent> =
                searches.iter().filter(|e| e.netns == run.netns && (from..=to).contains(&e.ts_ns)).collect();
            let mut failures = BTreeMap::new();
            for e in inside.iter().filter(|e| e.errno != 0 && e.errno != crate::event::EINPROGRESS) {
                *failures.entry(errno_name(e.errno)).or_insert(0u64) += 1;
            }
            let mut search_us: Vec<f64> = inside.iter().map(|e| e.duration_ns as f64 / 1e3).collect();
            let mut candidates: Vec<f64> = inside.iter().filter_map(|e| e.candidates.map(f64::from)).collect();
            let seen = Seen {
                searches: inside.len() as u64,
                failures,
                search_us: Quantiles::of(&mut search_us),
                approximate: inside.iter().any(|e| e.approximate),
                candidates: (!candidates.is_empty()).then(|| Quantiles::of(&mut candidates)),
            };
            let what = |thing: &str| format!("{} {}: {thing} (generator vs twtrace)", run.label, step.label);
            report.checks.push(Check::within(what("connect() searches"), step.attempts, seen.searches, allowance));
            let names: std::collections::BTreeSet<&String> = step.failures.keys().chain(seen.failures.keys()).collect();
            for name in names {
                let made = step.failures.get(name).copied().unwrap_or(0);
                let traced = seen.failures.get(name).copied().unwrap_or(0);
                report.checks.push(Check::within(what(&format!("{name} failures")), made, traced, allowance));
            }
            step.twtrace = Some(seen);
        }
    }
    report.twtrace = Some(tracing);
}

/// Each run's TIME_WAIT births and deaths; where the run counted its TIME_WAIT sockets at the
/// end, the check that twtrace's births minus deaths is what the kernel listed. Deaths before
/// the timer ran out are listed with their reason: a kernel ending sockets early is a finding.
pub fn apply_time_wait(report: &mut ScenarioReport, events: &[TimeWaitEvent]) {
    let allowance = report.twtrace.as_ref().map_or(0, |t| t.blind_spots);
    for run in &mut report.runs {
        let (Some(first), Some(last)) = (run.steps.first(), run.steps.last()) else { continue };
        let from = first.window_ns.0;
        let to = if run.counted_at_ns > 0 { run.counted_at_ns } else { last.window_ns.1 + END_SLACK_NS };
        let mut seen = TimeWaitSeen::default();
        let mut early_ms = Vec::new();
        // Only the deaths of sockets born in the run. A namespace inode can come back while
        // the namespace that had it is still being torn down (seen on 5.10: its TIME_WAIT
        // purge follows the inode's release), so a death in the run's namespace and window
        // can belong to another process's (or an earlier test's) namespace.
        let mut born = std::collections::HashSet::new();
        for e in events.iter().filter(|e| e.netns == run.netns && (from..=to).contains(&e.ts_ns)) {
            match &e.change {
                TimeWaitChange::Birth { .. } if run.born_by_ns.is_some_and(|by| e.ts_ns > by) => {}
                TimeWaitChange::Birth { .. } => {
                    seen.births += 1;
                    born.insert(e.tw_id);
                }
                TimeWaitChange::Rearm { .. } => {}
                TimeWaitChange::Death { .. } if !born.contains(&e.tw_id) => {}
                TimeWaitChange::Death { reason, lifetime_ns } => {
                    let name = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *seen.deaths.entry(name.clone()).or_insert(0) += 1;
                    if *reason != DeathReason::Expired {
                        early_ms.push(*lifetime_ns as f64 / 1e6);
                        if seen.early.len() < EARLY_LISTED {
                            let local = e.flow.map_or_else(String::new, |f| f.local.to_string());
                            seen.early.push((*lifetime_ns as f64 / 1e3, name, local));
                        }
                    }
                }
            }
        }
        seen.early_lifetime_ms = (!early_ms.is_empty()).then(|| Quantiles::of(&mut early_ms));
        if let Some(listed) = run.time_wait_at_end {
            let died: u64 = seen.deaths.values().sum();
            report.checks.push(Check::within(
                format!("{}: TIME_WAIT at the end, twtrace's births minus deaths vs sock_diag", run.label),
                seen.births.saturating_sub(died),
                listed,
                allowance,
            ));
            let connected: u64 = run.steps.iter().map(|s| s.connected).sum();
            report.checks.push(Check::within(
                format!(
                    "{}: TIME_WAIT births (generator's connects, less those that left none, vs twtrace)",
                    run.label
                ),
                connected - run.time_wait_refused,
                seen.births,
                allowance,
            ));
        }
        // The path the run caused, against the kernel's count of it (a counter, or the
        // sockets sock_diag no longer lists). The kernel may end a socket early by another
        // path meanwhile (an RST under load, see docs/studies/tw-deaths.md): twtrace lists
        // those, and the count they took from the expected path is allowed for. Births minus
        // deaths against sock_diag (above) still holds twtrace to every death.
        let other_paths: u64 = seen
            .deaths
            .iter()
            .filter(|(path, _)| *path != EXPIRED && !run.expected_deaths.contains_key(*path))
            .map(|(_, n)| n)
            .sum();
        for (path, expected) in &run.expected_deaths {
            let traced = seen.deaths.get(path).copied().unwrap_or(0);
            report.checks.push(Check::within(
                format!("{}: TIME_WAIT deaths by {path} (generator and kernel vs twtrace)", run.label),
                *expected,
                traced,
                allowance + other_paths,
            ));
        }
        run.time_wait = Some(seen);
    }
}

/// twtrace's name for a death at the end of the timer (see [`DeathReason`]).
const EXPIRED: &str = "expired";

/// Each run's expected drops (by reason) against twtrace's drop events of that reason in the
/// run's namespace, from its first step to its count at the end. Pure, like [`apply`].
pub fn apply_drops(report: &mut ScenarioReport, drops: &[DropEvent]) {
    let allowance = report.twtrace.as_ref().map_or(0, |t| t.blind_spots);
    for run in &report.runs {
        let (Some((reason, expected)), Some(first)) = (&run.expected_drops, run.steps.first()) else { continue };
        let (from, to) = (first.window_ns.0, run.counted_at_ns.max(first.window_ns.1));
        let seen = drops
            .iter()
            .filter(|d| d.netns == run.netns && (from..=to).contains(&d.ts_ns) && d.reason == *reason)
            .count() as u64;
        report.checks.push(Check::within(
            format!("{}: packets dropped with reason {reason} (kernel counter vs twtrace)", run.label),
            *expected,
            seen,
            allowance,
        ));
    }
}

/// Without a count at the end, births are counted up to this long after the last connect
/// (they follow it by the close).
const END_SLACK_NS: u64 = 2_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::report::{Run, Step};

    fn step(window: (u64, u64), attempts: u64, eaddrnotavail: u64) -> Step {
        Step {
            label: "50%".into(),
            held: 1,
            held_kernel: 1,
            utilisation: 0.5,
            attempts,
            connected: attempts - eaddrnotavail,
            failures: if eaddrnotavail > 0 {
                BTreeMap::from([("EADDRNOTAVAIL".into(), eaddrnotavail)])
            } else {
                BTreeMap::new()
            },
            connect_us: Quantiles::default(),
            window_ns: window,
            twtrace: None,
        }
    }

    fn search(netns: u32, ts_ns: u64, errno: u32, candidates: u32) -> PortSearchEvent {
        PortSearchEvent {
            ts_ns,
            op: SearchOp::Connect,
            duration_ns: 2_000,
            errno,
            candidates: Some(candidates),
            approximate: false,
            netns,
            remote: None,
            local: None,
            process: None,
        }
    }

    fn report(steps: Vec<Step>) -> ScenarioReport {
        ScenarioReport {
            scenario: "search-cost".into(),
            kernel: "6.1".into(),
            kernel_build: String::new(),
            params: BTreeMap::new(),
            runs: vec![Run { steps, ..Run::new("established/sysctl".into(), 7) }],
            twtrace: None,
            checks: Vec::new(),
            passed: false,
        }
    }

    fn tracing(blind_spots: u64) -> Tracing {
        Tracing { recording: "r".into(), backends: BTreeMap::new(), blind_spots }
    }

    #[test]
    fn a_step_counts_only_its_namespace_and_window() {
        let mut r = report(vec![step((100, 200), 2, 1)]);
        let events = [
            search(7, 100, 0, 3),
            search(7, 200, 99, 9),
            search(7, 201, 0, 1), // after the window
            search(8, 150, 0, 1), // another namespace
            search(7, 99, 0, 1),  // before
        ];
        apply(&mut r, &events, tracing(0));
        r.finish();
        let seen = r.runs[0].steps[0].twtrace.clone().unwrap();
        assert_eq!(seen.searches, 2);
        assert_eq!(seen.failures.get("EADDRNOTAVAIL"), Some(&1));
        assert_eq!(seen.candidates.unwrap().max, 9.0);
        assert_eq!(seen.search_us.p50, 2.0);
        assert!(r.passed, "{:?}", r.checks);
    }

    #[test]
    fn a_missed_search_fails_the_step_unless_twtrace_reported_it_missing() {
        let events = [search(7, 150, 0, 1)];
        let mut r = report(vec![step((100, 200), 2, 0)]);
        apply(&mut r, &events, tracing(0));
        r.finish();
        assert!(!r.passed);
        let mut r = report(vec![step((100, 200), 2, 0)]);
        apply(&mut r, &events, tracing(1));
        r.finish();
        assert!(r.passed, "one search short, one event reported lost");
    }

    fn tw(netns: u32, ts_ns: u64, tw_id: u64, change: TimeWaitChange) -> TimeWaitEvent {
        TimeWaitEvent { ts_ns, tw_id, flow: None, netns, owner: None, change }
    }

    /// A run that caused 3 resets: twtrace must count 3 there; one the kernel ended by another
    /// path (listed) may stand in for one of them, a missing one may not.
    #[test]
    fn deaths_by_the_runs_path_are_checked_and_other_paths_allowed_for() {
        let birth = TimeWaitChange::Birth {
            substate: crate::event::TimeWaitSubstate::TimeWait,
            timeout_ms: 60_000,
            timestamps: None,
        };
        let death = |reason| TimeWaitChange::Death { reason, lifetime_ns: 1_000 };
        let outcome = |reasons: &[DeathReason]| {
            let mut r = report(vec![step((100, 200), 3, 0)]);
            r.runs[0].time_wait_at_end = Some(0);
            r.runs[0].counted_at_ns = 300;
            r.runs[0].expected_deaths = BTreeMap::from([("reset".to_owned(), 3)]);
            let mut events: Vec<TimeWaitEvent> = (1..=3).map(|id| tw(7, 150, id, birth.clone())).collect();
            events.extend(reasons.iter().enumerate().map(|(i, reason)| tw(7, 160, i as u64 + 1, death(*reason))));
            apply(&mut r, &[search(7, 150, 0, 0), search(7, 151, 0, 0), search(7, 152, 0, 0)], tracing(0));
            apply_time_wait(&mut r, &events);
            r.finish();
            r.passed
        };
        use DeathReason::{Reset, Reused};
        assert!(outcome(&[Reset, Reset, Reset]));
        assert!(outcome(&[Reset, Reset, Reused]), "one ended by another path, and listed");
        assert!(!outcome(&[Reset, Reset]), "one death missing");
        // The scenario cannot tell deaths the kernel really ended by another path from deaths
        // twtrace put under the wrong one: the tests on the host, where the kernel ends none by
        // another path, require every death under the run's path.
        assert!(outcome(&[Reused, Reused, Reused]));
    }

    /// A run whose namespace was torn down at 200: a birth at 250 on its inode is another
    /// namespace's (the kernel gave it the freed number).
    #[test]
    fn births_after_the_namespace_was_gone_are_not_the_runs() {
        let birth = TimeWaitChange::Birth {
            substate: crate::event::TimeWaitSubstate::TimeWait,
            timeout_ms: 60_000,
            timestamps: None,
        };
        let mut r = report(vec![step((100, 150), 1, 0)]);
        r.runs[0].time_wait_at_end = Some(1);
        r.runs[0].counted_at_ns = 300;
        r.runs[0].born_by_ns = Some(200);
        let events = [tw(7, 150, 1, birth.clone()), tw(7, 250, 2, birth)];
        apply(&mut r, &[search(7, 120, 0, 0)], tracing(0));
        apply_time_wait(&mut r, &events);
        r.finish();
        assert_eq!(r.runs[0].time_wait.as_ref().unwrap().births, 1);
        assert!(r.passed, "{:?}", r.checks);
    }

    /// Expected drops by reason against twtrace's drop events of that reason, in the run's
    /// namespace and time only.
    #[test]
    fn drops_of_the_expected_reason_are_counted_in_the_run_only() {
        let drop = |netns: u32, ts_ns: u64, reason: &str| DropEvent {
            ts_ns,
            reason: reason.into(),
            reason_code: 0,
            netns,
            flow: None,
            tcp_flags: 0,
            seq: 0,
            ack_seq: 0,
            outgoing: false,
        };
        let mut r = report(vec![step((100, 150), 1, 0)]);
        r.runs[0].counted_at_ns = 300;
        r.runs[0].expected_drops = Some(("TCP_RFC7323_TW_PAWS".into(), 2));
        let drops = [
            drop(7, 160, "TCP_RFC7323_TW_PAWS"),
            drop(7, 200, "TCP_RFC7323_TW_PAWS"),
            drop(7, 200, "NO_SOCKET"),           // another reason
            drop(8, 200, "TCP_RFC7323_TW_PAWS"), // another namespace
            drop(7, 400, "TCP_RFC7323_TW_PAWS"), // after the run
        ];
        apply(&mut r, &[search(7, 120, 0, 0)], tracing(0));
        apply_drops(&mut r, &drops);
        r.finish();
        assert!(r.passed, "{:?}", r.checks);
        apply_drops(&mut r, &drops[..1]);
        r.finish();
        assert!(!r.passed, "one drop short");
    }

    #[test]
    fn only_deaths_of_sockets_born_in_the_run_count() {
        let mut r = report(vec![step((100, 200), 1, 0)]);
        r.runs[0].time_wait_at_end = Some(0);
        r.runs[0].counted_at_ns = 300;
        let birth = TimeWaitChange::Birth {
            substate: crate::event::TimeWaitSubstate::TimeWait,
            timeout_ms: 60_000,
            timestamps: None,
        };
        let killed = |ns| TimeWaitChange::Death { reason: DeathReason::Killed, lifetime_ns: ns };
        let events = [
            tw(7, 150, 1, birth),
            tw(7, 160, 1, killed(10)),
            // The same inode's earlier namespace being purged: born before the run.
            tw(7, 170, 99, killed(5_000_000_000)),
        ];
        apply(&mut r, &[search(7, 150, 0, 0)], tracing(0));
        apply_time_wait(&mut r, &events);
        r.finish();
        let seen = r.runs[0].time_wait.clone().unwrap();
        assert_eq!((seen.births, seen.deaths.get("killed").copied()), (1, Some(1)));
        assert!(r.passed, "{:?}", r.checks);
    }

    #[test]
    fn a_failure_twtrace_saw_that_the_generator_did_not_make_fails() {
        let mut r = report(vec![step((100, 200), 1, 0)]);
        apply(&mut r, &[search(7, 150, 99, 1)], tracing(5));
        r.finish();
        assert!(!r.passed);
        assert!(r.checks.iter().any(|c| !c.passed && c.what.contains("EADDRNOTAVAIL")), "{:?}", r.checks);
    }
}
