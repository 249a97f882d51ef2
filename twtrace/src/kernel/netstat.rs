//! TCP counters from /proc/net/netstat (TcpExt): a cross-check of what the probes report, and
//! the only view of PAWS drops on kernels without drop reasons (before 5.17).

use std::{collections::BTreeMap, path::PathBuf};

/// Counters twtrace follows. Not every kernel has all: PAWSOldAck appeared around 6.14,
/// PAWSTimewait around 6.16 (before that, TIME_WAIT PAWS rejects counted as PAWSEstab).
/// ListenOverflows and ListenDrops: a full accept queue (every kernel twtrace runs on).
pub const WATCHED: &[&str] = &[
    "PAWSActive",
    "PAWSEstab",
    "PAWSOldAck",
    "PAWSTimewait",
    "TW",
    "TWKilled",
    "TWRecycled",
    "TCPTimeWaitOverflow",
    "ListenOverflows",
    "ListenDrops",
];

/// `TcpExt: name name ...` / `TcpExt: value value ...` line pairs into name → value.
pub fn parse(text: &str) -> BTreeMap<String, i64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut counters = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) = (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                counters.insert(name.to_owned(), v);
            }
        }
    }
    counters
}

/// Where to read the counters: our own namespace, or another one entered by a short-lived
/// thread (/proc/net follows the reading thread's namespace only through thread-self).
#[derive(Clone, Debug)]
pub enum Source {
    OwnNamespace,
    Namespace(PathBuf),
}

impl Source {
    pub fn read(&self) -> std::io::Result<BTreeMap<String, i64>> {
        match self {
            Self::OwnNamespace => read_here(),
            Self::Namespace(path) => super::netns::run_in(Some(path), read_here),
        }
    }
}

/// /proc/self is the thread group leader; thread-self follows this thread's namespace.
fn read_here() -> std::io::Result<BTreeMap<String, i64>> {
    Ok(parse(&std::fs::read_to_string("/proc/thread-self/net/netstat")?))
}

/// Remembers the last sample and reports what changed.
pub struct Sampler {
    source: Source,
    last: BTreeMap<String, i64>,
}

impl Sampler {
    pub fn new(source: Source) -> std::io::Result<Self> {
        let last = source.read()?;
        Ok(Self { source, last })
    }

    /// Non-zero deltas of the watched counters since the last call.
    pub fn deltas(&mut self) -> std::io::Result<Vec<(String, i64)>> {
        let now = self.source.read()?;
        let deltas = delta(&self.last, &now);
        self.last = now;
        Ok(deltas)
    }
}

/// Non-zero changes of the watched counters from `before` to `after`.
pub fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    WATCHED
        .iter()
        .filter_map(|name| {
            let d = after.get(*name)? - before.get(*name).copied().unwrap_or(0);
            (d != 0).then(|| ((*name).to_owned(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "TcpExt: SyncookiesSent TW TWKilled PAWSEstab\nTcpExt: 0 12 1 3\n\
                          IpExt: InNoRoutes PAWSEstab\nIpExt: 5 99\n";

    #[test]
    fn parses_only_tcpext() {
        let c = parse(SAMPLE);
        assert_eq!(c["TW"], 12);
        assert_eq!(c["PAWSEstab"], 3, "IpExt's same-named field must not win");
        assert!(!c.contains_key("InNoRoutes"));
    }

    #[test]
    fn deltas_of_watched_counters_only() {
        let before = parse(SAMPLE);
        let after = parse("TcpExt: SyncookiesSent TW TWKilled PAWSEstab PAWSTimewait\nTcpExt: 9 15 1 3 2\n");
        assert_eq!(delta(&before, &after), vec![("PAWSTimewait".to_owned(), 2), ("TW".to_owned(), 3)]);
    }

    #[test]
    fn reads_this_machine() {
        let c = Source::OwnNamespace.read().expect("/proc/net/netstat");
        assert!(c.contains_key("TW"), "{c:?}");
    }
}
