//! The commands. Each is a sink driven by [`crate::drive`] (or, for `probes` and `churn`, no
//! stream at all); what they share on the command line is here.

pub mod churn;
pub mod doctor;
pub mod keep;
pub mod mark;
pub mod probes;
pub mod record;
pub mod report;
pub mod serve;
pub mod stat;
pub mod top;
pub mod trace;

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    aggregate::{Aggregator, Settings},
    event::NamespaceDescription,
    filter::{self, Filter},
    kernel,
    probes::{Backend, Family, Options},
    record::directory::Window,
    source::Source,
    source_info::SourceInfo,
    time::TimeSpec,
};

/// Where events come from: the kernel (the default) or a recording.
#[derive(Args)]
pub struct SourceArgs {
    /// Read this recording instead of tracing the kernel (no root needed): a file, or a
    /// flight-recorder directory (`record --record-dir`, `serve --record-dir`) read as one stream.
    /// --port and --netns (an inode, or a name the recording's header gives) then filter it.
    #[arg(long, value_name = "FILE|DIR")]
    replay: Option<PathBuf>,
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

impl SourceArgs {
    /// The source and the userspace filter. `with_sockets`: the views need the sockets that
    /// exist at start. `speed`: pacing of a replay (`None`: as fast as possible).
    pub fn open(&self, with_sockets: bool, speed: Option<f64>) -> anyhow::Result<(Source, Filter)> {
        let mut filter = self.filters.filter();
        let Some(path) = &self.replay else {
            if !self.window.window().is_empty() {
                anyhow::bail!("--since and --until apply to --replay, not to live tracing");
            }
            let source = Source::live(&self.probes.options()?, with_sockets)?;
            return Ok((source, filter));
        };
        let p = &self.probes;
        if p.backend.is_some() || p.ring_buffer_size != DEFAULT_RING_BYTES || !p.family.is_empty() {
            anyhow::bail!("--backend, --family and --ring-buffer-size apply to live tracing, not to --replay");
        }
        let source = Source::replay(path, speed, self.window.window())?;
        if let Some(netns) = &p.netns {
            filter.netns.push(recorded_netns(netns, &source.info().namespaces)?);
        }
        filter.ports.extend(p.port);
        Ok((source, filter))
    }

    /// The recording to replay, if one was given.
    pub fn replay_path(&self) -> Option<String> {
        self.replay.as_ref().map(|p| p.display().to_string())
    }
}

/// `--netns` in a replay: an inode number, or the name the recording gives a namespace in its
/// header (its `ip netns` name, `host`, a pod or container). A path names a namespace of this
/// machine, not of the recording.
fn recorded_netns(spec: &str, described: &[NamespaceDescription]) -> anyhow::Result<u32> {
    if let Ok(inode) = spec.parse() {
        return Ok(inode);
    }
    let named: Vec<&NamespaceDescription> = described.iter().filter(|d| d.name == spec).collect();
    match named.as_slice() {
        [one] => Ok(one.netns),
        [] => {
            let known: Vec<String> = described.iter().map(|d| format!("{} ({})", d.name, d.netns)).collect();
            anyhow::bail!(
                "with --replay, --netns takes an inode number or a namespace name the recording's header gives; \
                 `{spec}` is not one of them{}",
                if known.is_empty() {
                    " (this recording names none: give the inode)".to_owned()
                } else {
                    format!(": {}", known.join(", "))
                }
            )
        }
        many => anyhow::bail!(
            "--netns {spec}: the recording names {} namespaces so ({}): give the inode",
            many.len(),
            many.iter().map(|d| d.netns.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A stretch of recorded time to read.
#[derive(Args, Clone, Default)]
pub struct WindowArgs {
    /// Read from this recorded time on: HH:MM[:SS] in UTC (as twtrace prints times; its first
    /// occurrence from the recording's start), or RFC 3339 (2026-11-27T02:50:00Z, or with an
    /// offset such as +01:00).
    #[arg(long, value_name = "TIME", value_parser = TimeSpec::parse)]
    since: Option<TimeSpec>,
    /// Read up to this recorded time (included); same forms as --since, a time of day counted
    /// from --since.
    #[arg(long, value_name = "TIME", value_parser = TimeSpec::parse)]
    until: Option<TimeSpec>,
}

impl WindowArgs {
    pub fn window(&self) -> Window {
        Window { since: self.since, until: self.until }
    }
}

/// What `top` and `stat` both take: the source, the filters and the size of the rankings.
#[derive(Args)]
pub struct ViewArgs {
    /// Rows per ranking (destinations, remotes, owners, sources). `serve --top` is the same
    /// for its series.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    #[command(flatten)]
    source: SourceArgs,
}

const DEFAULT_RING_BYTES: u32 = 8 << 20;

#[derive(Args, Clone)]
pub struct ProbeArgs {
    /// Use this backend for every family instead of the best one that works.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Only sockets in this network namespace: inode number, name under /run/netns, or a path
    /// such as /proc/PID/ns/net. With --replay: an inode, or a name the recording gives.
    #[arg(long, value_name = "NETNS")]
    netns: Option<String>,
    /// Only flows with this local or remote port (filtered in the kernel).
    #[arg(long)]
    port: Option<u16>,
    /// Ring buffer size in bytes (power of two, at least 4096).
    #[arg(long, default_value_t = DEFAULT_RING_BYTES, value_name = "BYTES")]
    ring_buffer_size: u32,
    /// Only this probe family (repeatable); the others are not attached and cost nothing.
    #[arg(long, value_enum, value_name = "FAMILY")]
    family: Vec<Family>,
}

impl ProbeArgs {
    pub fn options(&self) -> anyhow::Result<Options> {
        let netns = self.netns.as_deref().map(kernel::netns_spec).transpose().map_err(anyhow::Error::msg)?;
        Ok(Options {
            backend: self.backend,
            netns: netns.as_ref().map(|(inode, _)| *inode),
            netns_path: netns.and_then(|(_, path)| path),
            port: self.port,
            ring_bytes: self.ring_buffer_size,
            families: (!self.family.is_empty()).then(|| self.family.clone()),
        })
    }
}

/// Filters on who and where, applied to events after decoding.
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// Only events of this process (the owner of a TIME_WAIT socket, the caller of connect()).
    /// Repeatable.
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only events of processes with this command name. Repeatable.
    #[arg(long, value_name = "COMM")]
    comm: Vec<String>,
    /// Only events of processes in this cgroup (id as in bpf_get_current_cgroup_id). Repeatable.
    #[arg(long, value_name = "ID")]
    cgroup: Vec<u64>,
    /// Only flows with a local or remote address in this prefix, e.g. 10.0.0.0/8. Repeatable.
    #[arg(long, value_name = "CIDR")]
    addr: Vec<filter::Cidr>,
}

impl FilterArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            cgroups: self.cgroup.clone(),
            addrs: self.addr.clone(),
            ..Filter::default()
        }
    }
}

/// The aggregator for a source: the traced namespace's settings, seeded with the sockets that
/// existed when the source started. What `stat`, `top` and `report` all start from.
pub fn aggregator_for(info: &SourceInfo, top: usize) -> Aggregator {
    let mut aggregator = Aggregator::new(settings_for(info, top));
    for namespace in &info.namespaces {
        aggregator.describe(namespace);
    }
    aggregator.seed(info.started_ns, &info.sockets);
    aggregator
}

/// The aggregator's settings: the traced namespace's range and bucket limit.
pub fn settings_for(info: &SourceInfo, top: usize) -> Settings {
    Settings { port_range: info.sysctls.ip_local_port_range, max_tw_buckets: info.sysctls.tcp_max_tw_buckets, top }
}

/// Parses every duration of the command line (`--duration`, `--interval`, `--segment`, ...):
/// seconds, or a number with s, m or h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1.0),
        Some((i, 'm')) => (&text[..i], 60.0),
        Some((i, 'h')) => (&text[..i], 3600.0),
        _ => (text, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("`{text}` is not a duration: use seconds, or a number with s, m or h (90, 90s, 5m, 1h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn a_replayed_netns_is_an_inode_or_a_recorded_name() {
        let ns = |netns, name: &str| NamespaceDescription { netns, name: name.into(), sysctls: None, live: true };
        let described = [ns(4026531840, "host"), ns(4026532001, "tw-a"), ns(7, "twin"), ns(8, "twin")];
        assert_eq!(recorded_netns("4026532001", &described).unwrap(), 4026532001);
        assert_eq!(recorded_netns("tw-a", &described).unwrap(), 4026532001);
        assert_eq!(recorded_netns("host", &described).unwrap(), 4026531840);
        let unknown = recorded_netns("tw-b", &described).unwrap_err().to_string();
        assert!(unknown.contains("`tw-b` is not one of them: host (4026531840), tw-a (4026532001)"), "{unknown}");
        assert!(recorded_netns("twin", &described).unwrap_err().to_string().contains("give the inode"));
        assert!(recorded_netns("x", &[]).unwrap_err().to_string().contains("names none"));
    }
}
