//! Ground truth inside the bench's namespaces: `ss`'s TIME_WAIT count and the kernel's
//! TIME_WAIT counters (`TcpExtTW`, `TcpExtTWKilled` of /proc/net/netstat read inside).

use std::{
    collections::BTreeMap,
    io::Read as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The kernel's counters of one namespace: `TcpExt` and the other sections, by `Section`+name
/// (`TcpExtTW`), as nstat names them.
pub fn parse_netstat(text: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((section, names)), Some((_, values))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                out.insert(format!("{section}{name}"), v);
            }
        }
    }
    out
}

/// TIME_WAIT births as the kernel counts them since 6.1 (`__inet_twsk_schedule` adds each
/// new socket to TW, or to TWKilled when its timeout is short).
pub fn births(counters: &BTreeMap<String, i64>) -> i64 {
    counters.get("TcpExtTW").copied().unwrap_or(0) + counters.get("TcpExtTWKilled").copied().unwrap_or(0)
}

fn in_netns(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    cmd
}

/// /proc/net/netstat read inside `ns`.
pub fn netstat(ns: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let out = in_netns(ns).args(["cat", "/proc/net/netstat"]).output().context("reading /proc/net/netstat")?;
    if !out.status.success() {
        bail!("cannot read /proc/net/netstat in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse_netstat(&String::from_utf8_lossy(&out.stdout)))
}

/// TIME_WAIT sockets `ss` lists inside `ns` (lines counted as they stream: a million sockets
/// are 100 MB of text).
pub fn ss_timewait(ns: &str) -> anyhow::Result<u64> {
    let mut child = in_netns(ns)
        .args(["ss", "-H", "-tan", "state", "time-wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running ss")?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    if !child.wait()?.success() {
        bail!("ss failed in {ns}");
    }
    Ok(lines)
}

/// Counters summed over `namespaces` (the namespace ladder's thousand).
pub fn netstat_sum(namespaces: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut sum = BTreeMap::new();
    for ns in namespaces {
        for (k, v) in netstat(ns)? {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    Ok(sum)
}

pub fn ss_timewait_sum(namespaces: &[String]) -> anyhow::Result<u64> {
    namespaces.iter().map(|ns| ss_timewait(ns)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_sections_pair_names_with_values() {
        let text = "TcpExt: SyncookiesSent TW TWRecycled TWKilled PAWSActive\n\
                    TcpExt: 0 100000 0 12 0\n\
                    IpExt: InNoRoutes InTruncatedPkts\n\
                    IpExt: 0 3\n";
        let c = parse_netstat(text);
        assert_eq!(c["TcpExtTW"], 100_000);
        assert_eq!(c["TcpExtTWKilled"], 12);
        assert_eq!(c["IpExtInTruncatedPkts"], 3);
        assert_eq!(births(&c), 100_012);
        assert_eq!(births(&BTreeMap::new()), 0);
    }
}
