//! The ladders of `cargo xtask bench --scale` (issue 25), their rungs, and the load of each
//! rung: which namespaces, which sysctls, which commands run inside them, for how long.

use std::time::Duration;

/// One ladder: a kind of cardinality, raised rung by rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Ladder {
    /// Client-first close toward N distinct loopback destinations (`churn --destinations`).
    Destinations,
    /// Server-side TIME_WAIT sockets from N distinct peers (`churn --sources`).
    Timewait,
    /// N distinct short-lived processes whose connect() fails (EADDRNOTAVAIL).
    Failing,
    /// N network namespaces, each with a little churn.
    Namespaces,
}

impl Ladder {
    pub const ALL: [Ladder; 4] = [Ladder::Destinations, Ladder::Timewait, Ladder::Failing, Ladder::Namespaces];

    /// The rungs, smallest first.
    pub fn rungs(self) -> &'static [u64] {
        match self {
            Ladder::Destinations => &[1_000, 10_000, 100_000, 1_000_000],
            Ladder::Timewait => &[10_000, 100_000, 1_000_000],
            Ladder::Failing => &[1_000, 10_000, 100_000],
            Ladder::Namespaces => &[10, 100, 1_000],
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Ladder::Destinations => "Distinct destinations (client closes first, one namespace)",
            Ladder::Timewait => "Server-side TIME_WAIT sockets from distinct peers (one namespace)",
            Ladder::Failing => "Distinct failing processes (connect() fails with EADDRNOTAVAIL)",
            Ladder::Namespaces => "Network namespaces, each with a little churn",
        }
    }

    /// What a rung counts, and the row of twtrace's model that grows with it.
    pub fn unit(self) -> &'static str {
        match self {
            Ladder::Destinations => "destinations",
            Ladder::Timewait => "sockets",
            Ladder::Failing => "processes",
            Ladder::Namespaces => "namespaces",
        }
    }

    /// The `twtrace churn` flag the ladder's load needs (being added on another branch).
    pub fn needs_churn_flag(self) -> Option<&'static str> {
        match self {
            Ladder::Destinations => Some("--destinations"),
            Ladder::Timewait => Some("--sources"),
            Ladder::Failing | Ladder::Namespaces => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rung {
    pub ladder: Ladder,
    pub size: u64,
}

/// `1000`, `10k`, `1M`, `1m` → a count.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        _ => (t, 1),
    };
    digits.parse::<u64>().map(|n| n * scale).map_err(|_| format!("`{text}` is not a count (1000, 10k, 1M)"))
}

/// 1000 → `1k`, 1000000 → `1M`, 10 → `10`.
pub fn count_label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The rungs to run: each ladder's smallest with `quick`, else those whose size is in
/// `steps` (all when none are given).
pub fn select(ladders: &[Ladder], steps: &[u64], quick: bool) -> Vec<Rung> {
    let mut out = Vec::new();
    for &ladder in ladders {
        let rungs = ladder.rungs();
        let chosen: Vec<u64> = if quick {
            rungs[..1].to_vec()
        } else if steps.is_empty() {
            rungs.to_vec()
        } else {
            rungs.iter().copied().filter(|r| steps.contains(r)).collect()
        };
        out.extend(chosen.into_iter().map(|size| Rung { ladder, size }));
    }
    out
}

/// Every rung's namespaces get these (issue 25): room for every socket, the widest range.
pub const PORT_RANGE: &str = "1024 65000";
pub const TW_BUCKETS: &str = "2000000";
/// The failing ladder's range: two ports, both held by the helper.
pub const TINY_PORT_RANGE: &str = "61000 61001";
/// Where the churn server listens: with --destinations above 1, churn listens on that port
/// of every loopback address, confined to `lo` (its address must stay 127.0.0.1).
pub const LISTEN: &str = "127.0.0.1:8080";

/// The longest load: the first sockets born must still be alive when the counts are read
/// after it (a settle, then `ss` over up to a million sockets), and they live 60 s.
pub const MAX_LOAD_SECONDS: u64 = 50;

/// A program the load runs inside a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// `twtrace <args>`.
    Twtrace(Vec<String>),
    /// `xtask bench-helper <args>` (this binary).
    Helper(Vec<String>),
}

/// What one rung runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub namespaces: Vec<String>,
    /// `sysctl -w` assignments inside each namespace.
    pub sysctls: Vec<(String, String)>,
    /// (namespace, program), all started together.
    pub loads: Vec<(String, Program)>,
    /// How long the load runs (the commands' own duration).
    pub load: Duration,
    /// The tracers' `--netns` (`None`: every namespace).
    pub netns_filter: Option<String>,
}

/// The load's knobs (`--scale-rate`, `--scale-threads`).
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    pub rate: f64,
    pub threads: usize,
}

/// `twtrace churn` as the bench runs it; `destinations`/`sources` are the flags issue 25 adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Churn {
    pub destinations: Option<u64>,
    pub sources: Option<u64>,
    pub closer: &'static str,
    pub rate: f64,
    pub threads: usize,
    pub seconds: u64,
    pub listen: &'static str,
}

impl Churn {
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["churn".to_owned()];
        if let Some(n) = self.destinations {
            a.extend(["--destinations".into(), n.to_string()]);
        }
        if let Some(n) = self.sources {
            a.extend(["--sources".into(), n.to_string()]);
        }
        a.extend([
            "--closer".into(),
            self.closer.into(),
            "--rate".into(),
            format!("{}", self.rate.round() as u64),
            "--threads".into(),
            self.threads.to_string(),
            "--duration".into(),
            format!("{}s", self.seconds),
            "--listen".into(),
            self.listen.into(),
            "--json".into(),
        ]);
        a
    }
}

/// Seconds for `count` connections at `rate` with a margin, well within TIME_WAIT's 60 s life (so
/// every socket born is still alive when the counts are compared) and at least `min`.
fn seconds_for(count: u64, rate: f64, min: u64) -> u64 {
    let needed = (count as f64 / rate.max(1.0) * 1.1).ceil() as u64;
    needed.clamp(min, MAX_LOAD_SECONDS)
}

/// Every namespace of the ladder is named so.
pub const PREFIX: &str = "twscale-";

pub fn plan(rung: Rung, knobs: Knobs) -> Plan {
    let sysctls = |range: &str| {
        vec![
            ("net.ipv4.ip_local_port_range".to_owned(), range.to_owned()),
            ("net.ipv4.tcp_max_tw_buckets".to_owned(), TW_BUCKETS.to_owned()),
        ]
    };
    // One program in one namespace of its own, the view watching that namespace only.
    let alone = |tag: &str, program: Program, range: &str, seconds: u64| {
        let namespaces = vec![format!("{PREFIX}{tag}")];
        Plan {
            loads: vec![(namespaces[0].clone(), program)],
            netns_filter: Some(namespaces[0].clone()),
            namespaces,
            sysctls: sysctls(range),
            load: Duration::from_secs(seconds),
        }
    };
    match rung.ladder {
        Ladder::Destinations => {
            let seconds = seconds_for(rung.size, knobs.rate, 10);
            let churn = Churn {
                destinations: Some(rung.size),
                sources: None,
                closer: "client",
                rate: knobs.rate,
                threads: knobs.threads,
                seconds,
                listen: LISTEN,
            };
            alone("dest", Program::Twtrace(churn.args()), PORT_RANGE, seconds)
        }
        Ladder::Timewait => {
            // As many connections as the rung has sockets, each from its own peer address;
            // a small rung runs slower rather than shorter than 5 s.
            let seconds = seconds_for(rung.size, knobs.rate, 5);
            let rate = (rung.size as f64 / seconds as f64).min(knobs.rate);
            let churn = Churn {
                destinations: None,
                sources: Some(rung.size),
                closer: "server",
                rate,
                threads: knobs.threads,
                seconds,
                listen: LISTEN,
            };
            alone("tw", Program::Twtrace(churn.args()), PORT_RANGE, seconds)
        }
        Ladder::Failing => {
            // The helper forks about 6,000 processes a second here untraced; bounded by
            // count and by this time, which doctor's duration also covers.
            let seconds = (rung.size as f64 / 2_000.0).ceil() as u64 + 5;
            let args = ["fail", "--count", &rung.size.to_string(), "--target", "127.0.0.1:8080", "--seconds"]
                .iter()
                .map(|s| s.to_string())
                .chain([seconds.to_string()])
                .collect();
            alone("fail", Program::Helper(args), TINY_PORT_RANGE, seconds)
        }
        Ladder::Namespaces => {
            let width = count_label(rung.size).len().max(4);
            let namespaces: Vec<String> = (0..rung.size).map(|i| format!("{PREFIX}ns{i:0width$}")).collect();
            let seconds = 20;
            // A little churn each: 2 connections/s, client closes first.
            let churn = Churn {
                destinations: None,
                sources: None,
                closer: "client",
                rate: 2.0,
                threads: 1,
                seconds,
                listen: "127.0.0.1:8080",
            };
            Plan {
                loads: namespaces.iter().map(|ns| (ns.clone(), Program::Twtrace(churn.args()))).collect(),
                netns_filter: None,
                namespaces,
                sysctls: sysctls(PORT_RANGE),
                load: Duration::from_secs(seconds),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOBS: Knobs = Knobs { rate: 20_000.0, threads: 4 };

    fn churn_of(plan: &Plan) -> Vec<String> {
        match &plan.loads[0].1 {
            Program::Twtrace(args) => args.clone(),
            other => panic!("not churn: {other:?}"),
        }
    }

    #[test]
    fn counts_parse_and_print_with_units() {
        assert_eq!(parse_count("1k"), Ok(1_000));
        assert_eq!(parse_count("100K"), Ok(100_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("250"), Ok(250));
        assert!(parse_count("lots").is_err());
        assert_eq!(count_label(1_000_000), "1M");
        assert_eq!(count_label(10_000), "10k");
        assert_eq!(count_label(10), "10");
        assert_eq!(count_label(1_500), "1500");
    }

    #[test]
    fn quick_runs_the_smallest_rung_of_each_ladder() {
        let rungs = select(&Ladder::ALL, &[], true);
        assert_eq!(rungs.iter().map(|r| r.size).collect::<Vec<_>>(), [1_000, 10_000, 1_000, 10]);
        let some = select(&[Ladder::Destinations, Ladder::Namespaces], &[1_000, 100_000], false);
        assert_eq!(
            some,
            [
                Rung { ladder: Ladder::Destinations, size: 1_000 },
                Rung { ladder: Ladder::Destinations, size: 100_000 },
                Rung { ladder: Ladder::Namespaces, size: 1_000 },
            ]
        );
        assert_eq!(select(&[Ladder::Timewait], &[], false).len(), 3);
    }

    #[test]
    fn destinations_churn_command_line() {
        let p = plan(Rung { ladder: Ladder::Destinations, size: 100_000 }, KNOBS);
        assert_eq!(
            churn_of(&p).join(" "),
            "churn --destinations 100000 --closer client --rate 20000 --threads 4 --duration 10s \
             --listen 127.0.0.1:8080 --json"
        );
        assert_eq!(p.netns_filter.as_deref(), Some("twscale-dest"));
        assert!(p.sysctls.contains(&("net.ipv4.ip_local_port_range".into(), "1024 65000".into())));
        assert!(p.sysctls.contains(&("net.ipv4.tcp_max_tw_buckets".into(), "2000000".into())));
        // A million destinations need 50 s at 20k/s: each visited once if churn keeps the rate.
        let big = plan(Rung { ladder: Ladder::Destinations, size: 1_000_000 }, KNOBS);
        assert!(churn_of(&big).join(" ").contains("--destinations 1000000 --closer client --rate 20000"));
        assert_eq!(big.load, Duration::from_secs(50));
    }

    #[test]
    fn timewait_churn_comes_from_as_many_peers_as_sockets() {
        let small = plan(Rung { ladder: Ladder::Timewait, size: 10_000 }, KNOBS);
        assert_eq!(
            churn_of(&small).join(" "),
            "churn --sources 10000 --closer server --rate 2000 --threads 4 --duration 5s --listen 127.0.0.1:8080 --json"
        );
        let big = plan(Rung { ladder: Ladder::Timewait, size: 1_000_000 }, KNOBS);
        assert_eq!(
            churn_of(&big).join(" "),
            "churn --sources 1000000 --closer server --rate 20000 --threads 4 --duration 50s --listen 127.0.0.1:8080 \
             --json"
        );
    }

    #[test]
    fn failing_processes_run_in_a_tiny_held_range() {
        let p = plan(Rung { ladder: Ladder::Failing, size: 100_000 }, KNOBS);
        assert_eq!(
            p.loads,
            [(
                "twscale-fail".to_owned(),
                Program::Helper(
                    "fail --count 100000 --target 127.0.0.1:8080 --seconds 55".split(' ').map(String::from).collect()
                )
            )]
        );
        assert!(p.sysctls.contains(&("net.ipv4.ip_local_port_range".into(), TINY_PORT_RANGE.into())));
    }

    #[test]
    fn every_namespace_gets_its_own_churn_and_the_tracer_watches_all() {
        let p = plan(Rung { ladder: Ladder::Namespaces, size: 1_000 }, KNOBS);
        assert_eq!(p.namespaces.len(), 1_000);
        assert_eq!(p.loads.len(), 1_000);
        assert_eq!(p.namespaces[7], "twscale-ns0007");
        let distinct: std::collections::BTreeSet<_> = p.namespaces.iter().collect();
        assert_eq!(distinct.len(), 1_000);
        assert_eq!(p.netns_filter, None);
        assert_eq!(
            churn_of(&p).join(" "),
            "churn --closer client --rate 2 --threads 1 --duration 20s --listen 127.0.0.1:8080 --json"
        );
    }
}
