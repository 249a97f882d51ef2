//! What a scenario run found: the generator's own figures per step, the kernel's count, and
//! (with `--record`) twtrace's, side by side, with the checks between them. Serialised as the
//! scenario's `--json` output, which `cargo xtask study` compares across kernels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: String,
    /// `uname -r` and `uname -v` of the kernel it ran on.
    pub kernel: String,
    pub kernel_build: String,
    /// The generator's settings, as given.
    pub params: BTreeMap<String, String>,
    pub runs: Vec<Run>,
    /// Present when the run was recorded (`--record`).
    pub twtrace: Option<Tracing>,
    /// Generator against kernel, and twtrace against both. A failed check fails the scenario.
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// One configuration of the scenario (a holder kind, a variant), in a namespace of its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// e.g. `established/sysctl`.
    pub label: String,
    /// The namespace it ran in (nsfs inode).
    pub netns: u32,
    /// Why the run did not happen on this kernel (a missing option), when it did not.
    pub unavailable: Option<String>,
    pub steps: Vec<Step>,
    /// TIME_WAIT sockets the kernel listed when the run ended (sock_diag), if counted, and
    /// when (CLOCK_MONOTONIC ns): twtrace's births and deaths are counted up to then (after
    /// it, the namespace's teardown kills the rest).
    pub time_wait_at_end: Option<u64>,
    #[serde(default)]
    pub counted_at_ns: u64,
    /// Connections of the steps that left no TIME_WAIT socket: refused for the namespace's
    /// limit (the kernel's `TCPTimeWaitOverflow` over the run), or closed with an RST on
    /// purpose. twtrace must see no birth for them.
    #[serde(default)]
    pub time_wait_refused: u64,
    /// Early TIME_WAIT deaths the run caused on purpose, by twtrace's name for the path
    /// (`reused`, `reset`, ...), as the generator and the kernel count them: twtrace must see
    /// exactly these (less any the kernel ended by another path meanwhile, which it lists).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expected_deaths: BTreeMap<String, u64>,
    /// CLOCK_MONOTONIC ns after which no TIME_WAIT socket can be born in the run's namespace
    /// (it was torn down): a birth after it on the same inode is another namespace's, which
    /// the kernel gave the freed number (deaths are matched to births already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_by_ns: Option<u64>,
    /// Packet drops the run caused, by the kernel's drop reason, as its counter counts them:
    /// twtrace must see exactly these in the run's namespace and time (where the kernel names
    /// that reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_drops: Option<(String, u64)>,
    /// paws-nat: what the clients that came later from the same address saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub later_clients: Option<LaterClients>,
    /// twtrace's TIME_WAIT births and deaths in the run's namespace (with `--record`).
    pub time_wait: Option<TimeWaitSeen>,
}

impl Run {
    /// A run in namespace `netns` with nothing measured yet.
    pub fn new(label: String, netns: u32) -> Self {
        Self {
            label,
            netns,
            unavailable: None,
            steps: Vec::new(),
            time_wait_at_end: None,
            counted_at_ns: 0,
            time_wait_refused: 0,
            expected_deaths: BTreeMap::new(),
            born_by_ns: None,
            expected_drops: None,
            later_clients: None,
            time_wait: None,
        }
    }
}

/// Clients reconnecting from the 4-tuples the server holds in TIME_WAIT (paws-nat): bound
/// connects, outside the steps (whose connect() searches twtrace must count).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LaterClients {
    /// `net.ipv4.tcp_timestamps` of the first clients and of the later ones (1: a random
    /// offset per connection or per address pair; 2: the plain clock).
    pub first_tcp_timestamps: String,
    pub later_tcp_timestamps: String,
    /// First connections closed again (with an RST) because their clock was not ahead.
    pub set_aside: u64,
    pub connected: u64,
    /// Of those, how many took a second or more (a SYN retransmitted after the initial RTO).
    pub after_a_retransmission: u64,
    pub still_waiting: u64,
    /// The kernel's count (`PAWSEstab` + `PAWSTimewait`).
    pub paws_rejections: u64,
    /// connect() start to established, microseconds.
    pub connect_us: Quantiles,
}

/// TIME_WAIT sockets twtrace saw born and die in a run's namespace, deaths by reason.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TimeWaitSeen {
    pub births: u64,
    pub deaths: BTreeMap<String, u64>,
    /// The first deaths before their timer ran out (up to [`EARLY_LISTED`]): (lifetime µs,
    /// reason, local address).
    pub early: Vec<(f64, String, String)>,
    /// Lifetimes of all the sockets that died before their timer ran out, milliseconds.
    pub early_lifetime_ms: Option<Quantiles>,
}

/// Early deaths listed one by one in a report; the rest are in the quantiles.
pub const EARLY_LISTED: usize = 20;

/// A measured interval: what the generator did in it, what the kernel listed, what twtrace saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub label: String,
    /// Ports toward the destination the generator holds during the step (at its start).
    pub held: u64,
    /// The same, as sock_diag lists them (`ss`).
    pub held_kernel: u64,
    /// `held` over the ports the range allows.
    pub utilisation: f64,
    /// connect() calls timed in the step, and how many connected.
    pub attempts: u64,
    pub connected: u64,
    /// Failed connect() calls by errno name.
    pub failures: BTreeMap<String, u64>,
    /// connect(2) as the caller timed it, microseconds.
    pub connect_us: Quantiles,
    /// CLOCK_MONOTONIC ns: the step's connects all fall inside.
    pub window_ns: (u64, u64),
    /// twtrace's view of the same connects (with `--record`).
    pub twtrace: Option<Seen>,
}

/// What twtrace recorded for a step's connect() calls.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    /// connect() port searches in the window, in the run's namespace.
    pub searches: u64,
    pub failures: BTreeMap<String, u64>,
    /// Search time, microseconds: around the search (fentry, kprobe), or approximate (the
    /// tracepoint backend measures from the state change to the SYN).
    pub search_us: Quantiles,
    pub approximate: bool,
    /// Candidate ports examined (calls of `__inet_check_established`), where the backend sees
    /// them (not on the tracepoint backend).
    pub candidates: Option<Quantiles>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub n: u64,
    pub mean: f64,
    #[serde(default)]
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of `values` (any order).
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Self {
            n: values.len() as u64,
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values[0],
            p50: rank(0.5),
            p99: rank(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// Which backend recorded, and what it could not see.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tracing {
    pub recording: String,
    /// family → backend.
    pub backends: BTreeMap<String, String>,
    /// Records the kernel dropped plus runs it skipped: events twtrace may have missed.
    pub blind_spots: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// What is compared, e.g. `established/sysctl 50%: ports held (generator vs sock_diag)`.
    pub what: String,
    pub expected: u64,
    pub observed: u64,
    /// How far apart they may be and why (twtrace's reported blind spots); 0: exact.
    pub allowance: u64,
    pub passed: bool,
}

impl Check {
    pub fn exact(what: String, expected: u64, observed: u64) -> Self {
        Self::within(what, expected, observed, 0)
    }

    /// Passes when `observed` falls short of `expected` by no more than `allowance` (events a
    /// tracer reported missing); never when it exceeds it.
    pub fn within(what: String, expected: u64, observed: u64, allowance: u64) -> Self {
        let passed = observed <= expected && expected - observed <= allowance;
        Self { what, expected, observed, allowance, passed }
    }
}

impl ScenarioReport {
    pub fn finish(&mut self) {
        self.passed = self.checks.iter().all(|c| c.passed);
    }

    /// The report for people: per run, one line per step, then failed checks.
    pub fn text(&self) -> String {
        let mut out = format!("{} on {} ({})\n", self.scenario, self.kernel, self.kernel_build);
        if let Some(t) = &self.twtrace {
            let backends: Vec<String> = t.backends.iter().map(|(f, b)| format!("{f} {b}")).collect();
            out += &format!("recorded to {} ({}; {} blind spots)\n", t.recording, backends.join(", "), t.blind_spots);
        }
        for run in &self.runs {
            out += &format!("\n{} (netns {})\n", run.label, run.netns);
            if let Some(why) = &run.unavailable {
                out += &format!("  not run: {why}\n");
                continue;
            }
            out += "  step      held  util%  connects  failed  connect p50/p99 us  search p50/p99 us  candidates mean/max\n";
            for s in &run.steps {
                let failed: u64 = s.failures.values().sum();
                let (search, candidates) = match &s.twtrace {
                    Some(seen) => (
                        format!(
                            "{:.1}/{:.1}{}",
                            seen.search_us.p50,
                            seen.search_us.p99,
                            if seen.approximate { "~" } else { "" }
                        ),
                        seen.candidates.map_or("-".into(), |c| format!("{:.1}/{:.0}", c.mean, c.max)),
                    ),
                    None => ("-".into(), "-".into()),
                };
                out += &format!(
                    "  {:<8} {:>5} {:>6.1} {:>9} {:>7}  {:>18}  {:>17}  {:>19}\n",
                    s.label,
                    s.held,
                    s.utilisation * 100.0,
                    s.attempts,
                    failed,
                    format!("{:.1}/{:.1}", s.connect_us.p50, s.connect_us.p99),
                    search,
                    candidates
                );
            }
            if let Some(l) = &run.later_clients {
                out += &format!(
                    "  later clients (tcp_timestamps {} after {}; {} first connections set aside): {} connected, \
                     {} after a retransmission, {} still waiting; PAWS rejections {}; connect p50/max {:.0}/{:.0} us\n",
                    l.later_tcp_timestamps,
                    l.first_tcp_timestamps,
                    l.set_aside,
                    l.connected,
                    l.after_a_retransmission,
                    l.still_waiting,
                    l.paws_rejections,
                    l.connect_us.p50,
                    l.connect_us.max
                );
            }
            if let Some(tw) = &run.time_wait {
                let deaths: Vec<String> = tw.deaths.iter().map(|(r, n)| format!("{n} {r}")).collect();
                out += &format!(
                    "  TIME_WAIT: {} born, died: {}\n",
                    tw.births,
                    if deaths.is_empty() { "none".into() } else { deaths.join(", ") }
                );
                if let Some(q) = &tw.early_lifetime_ms {
                    out += &format!(
                        "    ended early: {} sockets, lifetime ms min/p50/p99/max {:.1}/{:.1}/{:.1}/{:.1}\n",
                        q.n, q.min, q.p50, q.p99, q.max
                    );
                }
                for (us, reason, local) in tw.early.iter().take(3) {
                    out += &format!("    e.g. {local} after {us:.0} us ({reason})\n");
                }
            }
        }
        let failed: Vec<&Check> = self.checks.iter().filter(|c| !c.passed).collect();
        out += &format!("\n{} checks, {} failed\n", self.checks.len(), failed.len());
        for c in failed {
            out += &format!(
                "  FAILED {}: expected {}, observed {} (allowance {})\n",
                c.what, c.expected, c.observed, c.allowance
            );
        }
        out
    }
}

/// `uname -r` and `uname -v`.
pub fn uname() -> (String, String) {
    // SAFETY: an all-zero utsname is valid output space.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::uname(&mut u) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = Quantiles::of(&mut v);
        assert_eq!((q.n, q.min, q.p50, q.p99, q.max, q.mean), (100, 1.0, 50.0, 99.0, 100.0, 50.5));
        assert_eq!(Quantiles::of(&mut []), Quantiles::default());
        assert_eq!(Quantiles::of(&mut [7.0]).p99, 7.0);
    }

    #[test]
    fn a_check_allows_only_a_shortfall_within_the_blind_spots() {
        assert!(Check::within("a".into(), 10, 8, 2).passed);
        assert!(!Check::within("a".into(), 10, 7, 2).passed);
        assert!(!Check::within("a".into(), 10, 11, 5).passed, "more than happened is never explained by loss");
        assert!(Check::exact("a".into(), 3, 3).passed);
    }
}
