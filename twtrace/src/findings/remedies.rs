//! What to do about each kind of finding: the remedies, in order of preference, and the
//! command that shows a fix. The rules in `findings` fill in the place (a namespace, its
//! range); the runbooks (`runbooks`) print the same text with placeholders, so a runbook never
//! says other than `doctor` does.

use super::{Remedy, remedy};

/// `Loss`: events lost in the ring buffer.
pub(super) fn loss() -> Vec<Remedy> {
    vec![remedy(
        "run twtrace with a larger --ring-buffer-size (a power of two, e.g. 33554432)",
        "more locked kernel memory",
        None,
    )]
}

/// `PortSpace`: a destination's ports running out in `namespace`, whose range is `range`
/// (`40000-40099`) of `ports` ports (`None` in the runbooks); `reuse_outlook` says whether
/// `tcp_tw_reuse` can work toward it. Every kernel release named here has its row, commit and
/// title in docs/kernel-facts.md.
pub(super) fn port_space(namespace: &str, range: &str, ports: Option<u64>, reuse_outlook: &str) -> Vec<Remedy> {
    // connect() takes over only sockets about 1 s old (tw-reuse F3), so each port serves at
    // most one connection a second toward one destination.
    let ceiling = match ports {
        Some(n) => format!("above about {n} connects/s toward one destination (the range's {n} ports ÷ 1 s)"),
        None => "above (the range's ports ÷ 1 s) connects/s toward one destination".to_owned(),
    };
    vec![
        remedy(
            "reuse connections: HTTP keep-alive or a connection pool toward this destination",
            "none in the kernel; needs the client (and the server's keep-alive timeout) to allow it",
            None,
        ),
        remedy(
            format!("widen ip_local_port_range in namespace {namespace} (now {range}, e.g. 1024-65535)"),
            "the range must not cover ports that services listen on (reserve them with ip_local_reserved_ports)",
            None,
        ),
        remedy(
            "spread connections over more destination addresses or ports (each adds a whole range of 4-tuples)",
            "more backends or listeners to run",
            None,
        ),
        remedy(
            "set net.ipv4.tcp_tw_reuse=1 in that namespace: connect() may take over a port still in TIME_WAIT \
             toward this destination",
            format!(
                "only for outgoing connections, and only from TIME_WAIT sockets whose peer sent TCP timestamps \
                 (tcp_timestamps on here and at the peer; a load balancer with timestamps off defeats it): \
                 {reuse_outlook}. Only sockets about 1 s old or older are taken over: before 6.14 those whose \
                 peer's last timestamp came in an earlier second of the clock, from 6.14 those older than \
                 net.ipv4.tcp_tw_reuse_delay (ms, default 1000). So {ceiling} connect() still fails"
            ),
            Some(
                "any kernel for 1; the default 2 (since 4.18) reuses only loopback connections (an address in \
                 127.0.0.0/8 or ::1 at either end, or a socket bound to lo), never a pod's traffic to a service",
            ),
        ),
        remedy(
            "if the client bind()s before connect(): set IP_BIND_ADDRESS_NO_PORT on the socket, so the port is \
             chosen per destination at connect()",
            "a code change in the client",
            Some("Linux 4.2+"),
        ),
        remedy(
            "give the client's sockets their own range with the IP_LOCAL_PORT_RANGE socket option",
            "a code change that adds no ports: it can only narrow the namespace's range. What it gains: from 6.8 \
             a socket with its own range searches it port by port, without the split into odd and even ports, \
             so connect() stays cheap past half the range (docs/studies/search-cost.md F2), and processes that \
             share a namespace can be given ranges that do not overlap. Before 6.8 (Debian's 6.1 accepts the \
             option) the split stays, and so does the cost past half the range",
            Some("Linux 6.3+; 6.8+ for the search without the split"),
        ),
    ]
}

/// `TimeWaitBuckets`: TIME_WAIT at or beyond `tcp_max_tw_buckets` in `namespace`.
pub(super) fn timewait_buckets(namespace: &str) -> Vec<Remedy> {
    vec![
        remedy("make fewer connections: keep-alive or pooling", "none in the kernel", None),
        remedy(
            format!(
                "raise tcp_max_tw_buckets in namespace {namespace}, and set it in every pod's own namespace \
                 (a pod's sysctls, or its CNI's tuning plugin): the host's value is not inherited"
            ),
            "about 200 bytes of kernel memory per TIME_WAIT socket. A new namespace gets its own default when it \
             is made: half the entries of the global established hash, sized by memory at boot (dmesg: \"TCP \
             established hash table entries\"), or from 6.1 half its own hash when the namespace that creates it has \
             tcp_child_ehash_entries set. So the same pod gets a different limit on a bigger node, and changing \
             the host's limit changes no pod's",
            Some("Linux 4.11+ for a limit per namespace"),
        ),
    ]
}

/// `Conntrack`: a connection tracking table full or nearly.
pub(super) fn conntrack() -> Vec<Remedy> {
    vec![
        remedy(
            "keep connections alive (pooling): each closed connection keeps its entry 120 s \
             (nf_conntrack_tcp_timeout_time_wait)",
            "application change",
            None,
        ),
        remedy(
            "raise net.netfilter.nf_conntrack_max in the initial namespace",
            "about 300 bytes of kernel memory per entry; one limit for every namespace",
            None,
        ),
        remedy(
            "lower net.netfilter.nf_conntrack_tcp_timeout_time_wait",
            "a late segment of a closed connection may then pass as INVALID or NEW",
            None,
        ),
        remedy(
            "do not track traffic that needs no NAT or stateful rule (nftables `notrack` in a raw-priority chain)",
            "rules that match on ct state stop seeing it",
            None,
        ),
    ]
}

/// `Paws`, with the sources known (drop events).
pub(super) fn paws() -> Vec<Remedy> {
    vec![
        remedy(
            "keep net.ipv4.tcp_rfc1337 at 0 (the default) on the server: the client whose SYN was rejected \
             answers the server's ACK with an RST, which ends the TIME_WAIT socket, and its quick retry connects \
             (docs/studies/paws-nat.md F2)",
            "none; at 1 the server ignores that RST, and every such client stays stuck, each retry rejected and \
             the TIME_WAIT socket re-armed to 60 s (paws-nat F3)",
            None,
        ),
        remedy(
            "check the middleboxes and connection tracking between the clients and the server: one that drops the \
             server's ACK to the rejected SYN (out of window for the client's new connection) or the client's \
             RST that answers it leaves the client to its SYN retransmission (1 s, then 3 s) or to failure",
            "connection tracking may take such an ACK or RST for INVALID (out of window), and a rule that drops \
             INVALID packets then drops it: find that rule's counter (`nft list ruleset`, `iptables-save -c`)",
            None,
        ),
        remedy(
            "make the clients behind one address not reuse 4-tuples quickly (keep-alive, fewer new connections)",
            "client-side change",
            None,
        ),
        remedy(
            "on the server, avoid being the side that closes first for these clients (no server-side TIME_WAIT)",
            "application change",
            None,
        ),
    ]
}

/// `Paws` from the kernel's counters alone: the sources must be found first.
pub(super) fn paws_counted() -> Vec<Remedy> {
    let mut out = vec![remedy(
        "find the sources with a capture on the server: tcpdump -nv 'tcp[tcpflags] & tcp-syn != 0', looking \
         for one address whose SYNs' TSval goes backwards across ports",
        "manual; a 6.16+ kernel lets twtrace name each drop's source",
        None,
    )];
    out.extend(paws());
    out
}

/// `NetfilterDrops`: SYNs a rule dropped.
pub(super) fn netfilter_drops() -> Vec<Remedy> {
    vec![
        remedy(
            "find the rule: its packet counter grows with each retry (`nft list ruleset`, `iptables-save -c`)",
            "none",
            None,
        ),
        remedy(
            "where refusing is meant, reject instead of drop (`reject with tcp reset`): clients fail at once",
            "tells a scanner the port is filtered",
            None,
        ),
    ]
}

/// `ListenOverflow`: a listener's queues overflowing; `syn_queue`: the SYN queue's too.
pub(super) fn listen_overflow(syn_queue: bool) -> Vec<Remedy> {
    let mut out = vec![
        remedy("accept faster: more accepting threads or workers", "application change", None),
        remedy(
            "raise the listen() backlog and net.core.somaxconn (the SYN queue is bounded by the backlog too)",
            "a longer queue hides a slow acceptor for longer",
            None,
        ),
    ];
    if syn_queue {
        out.push(remedy(
            "set net.ipv4.tcp_syncookies=1 (the default): a full SYN queue then answers with cookies instead of \
             dropping",
            "a connection made by cookie loses the TCP options the SYN-ACK could not carry (window scaling \
             without timestamps)",
            None,
        ));
    }
    out
}

/// `TimestampsOff` in `namespace`.
pub(super) fn timestamps_off(namespace: &str) -> Vec<Remedy> {
    vec![remedy(
        format!("set net.ipv4.tcp_timestamps=1 in namespace {namespace}"),
        "12 bytes of options per segment",
        None,
    )]
}

/// The commands that show a fix. `prefix` runs them in the namespace (`ip netns exec NAME `,
/// empty for the host's or a name `ip netns` does not know).
pub(super) mod verify {
    pub(in super::super) fn port_space(prefix: &str, remote: &str, namespace: &str) -> String {
        format!("{prefix}ss -Htan dst {remote} | wc -l   # ports held toward it; or twtrace top --netns {namespace}")
    }

    pub(in super::super) fn timewait_buckets(prefix: &str) -> String {
        format!("{prefix}nstat -az TcpExtTCPTimeWaitOverflow")
    }

    pub(in super::super) fn conntrack(prefix: &str) -> String {
        format!("{prefix}cat /proc/sys/net/netfilter/nf_conntrack_count /proc/sys/net/netfilter/nf_conntrack_max")
    }

    pub(in super::super) fn paws(prefix: &str) -> String {
        format!("{prefix}nstat -az TcpExtPAWSActive TcpExtPAWSEstab TcpExtPAWSTimewait")
    }

    pub(in super::super) fn netfilter_drops(prefix: &str) -> String {
        format!("{prefix}nft list ruleset | grep -E 'drop|counter'")
    }

    pub(in super::super) fn listen_overflow(prefix: &str) -> String {
        format!(
            "{prefix}nstat -az TcpExtListenOverflows TcpExtListenDrops TcpExtTCPReqQFullDrop; ss -Hltn   # Recv-Q \
             against Send-Q (the backlog)"
        )
    }
}
