//! TCP counters from /proc/net/netstat (TcpExt): a cross-check of what the probes report, and
//! the only view of PAWS drops on kernels without drop reasons (before 5.17). With them, the
//! namespace's connection tracking table (when netfilter tracks connections there): how full
//! it is and the packets it dropped for want of room, the cause of new connections stalling
//! at a steady rate on a NAT gateway or a Kubernetes node.

use std::collections::BTreeMap;

/// Counters twtrace follows. Not every kernel has all: PAWSOldAck appeared around 6.14,
/// PAWSTimewait around 6.16 (before that, TIME_WAIT PAWS rejects counted as PAWSEstab).
/// The listeners' ones are on every kernel twtrace runs on.
pub const WATCHED: &[&str] = &[
    "PAWSActive",
    "PAWSEstab",
    "PAWSOldAck",
    "PAWSTimewait",
    "TW",
    "TWKilled",
    "TWRecycled",
    "TCPTimeWaitOverflow",
    LISTEN_OVERFLOWS,
    LISTEN_DROPS,
    SYN_QUEUE_FULL_DROP,
    SYN_QUEUE_FULL_COOKIES,
    CONNTRACK_DROP,
    CONNTRACK_EARLY_DROP,
    CONNTRACK_INSERT_FAILED,
    CONNTRACK_COUNT,
    CONNTRACK_MAX,
];

/// A SYN or a handshake's last ACK found the listener's accept queue full.
pub const LISTEN_OVERFLOWS: &str = "ListenOverflows";
/// Every SYN or handshake a listener dropped, whatever the cause (the overflows above, the
/// SYN queue's, and more).
pub const LISTEN_DROPS: &str = "ListenDrops";
/// A SYN dropped because the listener's SYN queue (handshakes under way) was full and
/// syncookies are off (`tcp_syn_flood_action`); the SYN is consumed, never a drop event.
pub const SYN_QUEUE_FULL_DROP: &str = "TCPReqQFullDrop";
/// The same with syncookies on: answered with a cookie, not dropped.
pub const SYN_QUEUE_FULL_COOKIES: &str = "TCPReqQFullDoCookies";

/// Packets dropped because the conntrack table was full (and no entry could be evicted):
/// /proc/net/stat/nf_conntrack's `drop`, summed over CPUs. The kernel logs "nf_conntrack:
/// table full, dropping packet" for these.
pub const CONNTRACK_DROP: &str = "ConntrackDrop";
/// Entries evicted to make room (unassured ones only: a TCP connection past its handshake is
/// never evicted): `early_drop`.
pub const CONNTRACK_EARLY_DROP: &str = "ConntrackEarlyDrop";
/// Entries that lost a race to be inserted (the packet is dropped): `insert_failed`.
pub const CONNTRACK_INSERT_FAILED: &str = "ConntrackInsertFailed";
/// Entries in the namespace's table now (`net.netfilter.nf_conntrack_count`): a level.
pub const CONNTRACK_COUNT: &str = "ConntrackCount";
/// The limit each namespace's table is held to (`net.netfilter.nf_conntrack_max`: one value
/// for every namespace, set in the initial one, read-only in the others): a level.
pub const CONNTRACK_MAX: &str = "ConntrackMax";

/// Counters that are levels, not totals: their changes are carried like the others', and the
/// first reading of a namespace is carried as a change from zero, so the sum of the changes
/// is the level.
pub const LEVELS: &[&str] = &[CONNTRACK_COUNT, CONNTRACK_MAX];

pub fn is_level(name: &str) -> bool {
    LEVELS.contains(&name)
}

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

/// /proc/net/stat/nf_conntrack: a header of column names, then one line of hexadecimal
/// figures per CPU. Columns come and go between kernels (`chainlength` since 5.12 in place of
/// `delete_list`...), so they are found by name; the three twtrace follows are summed.
pub fn parse_conntrack_stat(text: &str) -> BTreeMap<String, i64> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return BTreeMap::new() };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let wanted =
        [("drop", CONNTRACK_DROP), ("early_drop", CONNTRACK_EARLY_DROP), ("insert_failed", CONNTRACK_INSERT_FAILED)];
    let mut out = BTreeMap::new();
    for (column, name) in wanted {
        let Some(at) = columns.iter().position(|c| *c == column) else { continue };
        let sum = lines
            .clone()
            .filter_map(|line| line.split_whitespace().nth(at))
            .filter_map(|hex| i64::from_str_radix(hex, 16).ok())
            .sum();
        out.insert(name.to_owned(), sum);
    }
    out
}

/// This thread's namespace's counters: TcpExt, and the conntrack figures where netfilter's
/// connection tracking is in the kernel (built in or loaded; otherwise those files do not
/// exist and the figures are left out). /proc/self is the thread group leader: thread-self
/// follows this thread's namespace (the registry reads other namespaces on a thread that
/// entered them).
pub fn read_here() -> std::io::Result<BTreeMap<String, i64>> {
    let mut counters = parse(&std::fs::read_to_string("/proc/thread-self/net/netstat")?);
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack") {
        counters.extend(parse_conntrack_stat(&text));
        let level =
            |file: &str| std::fs::read_to_string(format!("/proc/sys/net/netfilter/{file}")).ok()?.trim().parse().ok();
        for (name, file) in [(CONNTRACK_COUNT, "nf_conntrack_count"), (CONNTRACK_MAX, "nf_conntrack_max")] {
            if let Some(value) = level(file) {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    Ok(counters)
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
        let c = read_here().expect("/proc/net/netstat");
        assert!(c.contains_key("TW"), "{c:?}");
        // Where the kernel tracks connections, the table's limit is there too.
        if std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
            assert!(c[CONNTRACK_MAX] > 0, "{c:?}");
        }
    }

    #[test]
    fn conntrack_stat_columns_by_name_summed_over_cpus() {
        // 6.18's layout, two CPUs.
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop \
                    early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 \
                    0000000a 00000002 00000000  00000000 00000000 00000000 00000000\n\
                    00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 \
                    00000010 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let c = parse_conntrack_stat(text);
        assert_eq!((c[CONNTRACK_DROP], c[CONNTRACK_EARLY_DROP], c[CONNTRACK_INSERT_FAILED]), (26, 2, 1));
        // A kernel without a column: the others still read.
        let c = parse_conntrack_stat("entries drop\n00000001 00000003\n");
        assert_eq!((c.get(CONNTRACK_DROP), c.get(CONNTRACK_EARLY_DROP)), (Some(&3), None));
    }
}
