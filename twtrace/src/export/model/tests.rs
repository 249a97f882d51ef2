use std::net::SocketAddr;

use super::*;
use crate::{
    aggregate::Settings,
    event::{
        DeathReason, Event, PortSearchEvent, Process, SearchOp, SocketFlow, StateEvent, TimeWaitChange, TimeWaitEvent,
        TimeWaitSubstate,
    },
};

const S: u64 = 1_000_000_000;

fn curl() -> Option<Process> {
    Some(Process { pid: 4242, tid: 4242, comm: "curl".into(), cgroup_id: 9 })
}

/// Client connects from `local_port` toward `remote` and closes first: one port held.
fn request(agg: &mut Aggregator, ts: u64, sk: u64, local_port: u16, remote: &str) {
    let f = SocketFlow { local: format!("10.0.0.1:{local_port}").parse().unwrap(), remote: remote.parse().unwrap() };
    let zero = SocketFlow { local: "10.0.0.1:0".parse().unwrap(), remote: f.remote };
    let state = |old, new, flow| {
        Event::State(StateEvent {
            ts_ns: ts,
            sk_addr: sk,
            netns: 1,
            old_state: old,
            new_state: new,
            flow: Some(flow),
            task: curl(),
        })
    };
    agg.apply(&state(7, 2, zero));
    agg.apply(&state(2, 1, f));
    agg.apply(&state(1, 4, f));
    let birth = TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: None };
    agg.apply(&Event::TimeWait(TimeWaitEvent {
        ts_ns: ts,
        tw_id: sk,
        flow: Some(f),
        netns: 1,
        owner: curl(),
        change: birth,
    }));
}

fn failed_search(agg: &mut Aggregator, ts: u64, remote: &str) {
    agg.apply(&Event::PortSearch(PortSearchEvent {
        ts_ns: ts,
        op: SearchOp::Connect,
        duration_ns: 20_000,
        errno: 99,
        candidates: None,
        approximate: true,
        netns: 1,
        remote: Some(remote.parse::<SocketAddr>().unwrap()),
        local: None,
        process: curl(),
    }));
}

fn aggregator() -> Aggregator {
    Aggregator::new(Settings { port_range: (40_000, 40_099), max_tw_buckets: Some(5_000), top: MODEL_ROWS })
}

fn value<'a>(e: &'a Exposition, family: &str, label: (&str, &str)) -> Option<&'a Value> {
    let f = e.family(family)?;
    f.series.iter().find(|s| s.labels.iter().any(|(k, v)| *k == label.0 && v == label.1)).map(|s| &s.value)
}

/// Every one of `lines` is a whole line of `text`.
fn assert_has_lines<L: AsRef<str>>(text: &str, lines: impl IntoIterator<Item = L>) {
    for line in lines {
        let line = line.as_ref();
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn destinations_beyond_top_k_are_folded_into_other_with_their_count() {
    let mut agg = aggregator();
    // Five destinations; destination i holds i + 1 ports.
    let mut sk = 0;
    for d in 0..5u16 {
        for p in 0..=d {
            sk += 1;
            request(&mut agg, S, sk, 40_000 + d * 10 + p, &format!("10.0.0.9:{}", 80 + d));
        }
    }
    let mut builder = Builder::new(Limits { top_k: 2, idle_after: Duration::from_secs(600) });
    agg.advance(2 * S);
    let e = builder.build(&agg, 2 * S, &Health::default(), &[]);
    let in_use = e.family("twtrace_destination_ports_in_use").unwrap();
    // The two fullest keep their own series; three are summed into `other`.
    assert_eq!(in_use.series.len(), 3, "{in_use:#?}");
    assert_eq!(value(&e, "twtrace_destination_ports_in_use", ("remote", "10.0.0.9:84")), Some(&Value::Int(5)));
    assert_eq!(value(&e, "twtrace_destination_ports_in_use", ("remote", "10.0.0.9:83")), Some(&Value::Int(4)));
    assert_eq!(value(&e, "twtrace_destination_ports_in_use", ("remote", "other")), Some(&Value::Int(1 + 2 + 3)));
    assert_eq!(value(&e, "twtrace_destination_connects_total", ("remote", "other")), Some(&Value::Int(6)));
    assert_eq!(value(&e, "twtrace_series_folded", ("kind", "destination")), Some(&Value::Int(3)));
    let ratio = value(&e, "twtrace_destination_port_utilisation_ratio", ("remote", "10.0.0.9:84"));
    assert_eq!(ratio, Some(&Value::Float(0.05)));
    // Namespace-level figures are not folded.
    assert_eq!(value(&e, "twtrace_timewait_sockets", ("netns", "1")), Some(&Value::Int(15)));
}

#[test]
fn idle_destinations_age_out_and_come_back_when_they_move() {
    let mut agg = aggregator();
    let idle = Duration::from_secs(60);
    let mut builder = Builder::new(Limits { top_k: 10, idle_after: idle });
    failed_search(&mut agg, S, "10.0.0.7:443");
    let has_row =
        |e: &Exposition| value(e, "twtrace_destination_connect_failures_total", ("remote", "10.0.0.7:443")).is_some();
    let build = |b: &mut Builder, agg: &mut Aggregator, at: u64| {
        agg.advance(at);
        b.build(agg, at, &Health::default(), &[])
    };
    assert!(has_row(&build(&mut builder, &mut agg, 2 * S)));
    assert!(has_row(&build(&mut builder, &mut agg, 30 * S)), "not idle long enough yet");
    let later = build(&mut builder, &mut agg, 63 * S);
    assert!(!has_row(&later), "idle for 61 s: aged out");
    assert_eq!(value(&later, "twtrace_series_aged_out", ("kind", "destination")), Some(&Value::Int(1)));
    // The per-namespace errno counter stays: it is not a destination series.
    let errno = value(&later, "twtrace_port_search_failures_total", ("errno", "EADDRNOTAVAIL"));
    assert_eq!(errno, Some(&Value::Int(1)));
    failed_search(&mut agg, 64 * S, "10.0.0.7:443");
    assert!(has_row(&build(&mut builder, &mut agg, 65 * S)), "moved again: back");
}

#[test]
fn histograms_are_cumulative_with_sum_count_and_inf() {
    let mut agg = aggregator();
    request(&mut agg, S, 1, 40_000, "10.0.0.9:80");
    let death = TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60_700_000_000 };
    let f = SocketFlow { local: "10.0.0.1:40000".parse().unwrap(), remote: "10.0.0.9:80".parse().unwrap() };
    agg.apply(&Event::TimeWait(TimeWaitEvent {
        ts_ns: 62 * S,
        tw_id: 1,
        flow: Some(f),
        netns: 1,
        owner: None,
        change: death,
    }));
    agg.advance(63 * S);
    let e = Builder::new(Limits::default()).build(&agg, 63 * S, &Health::default(), &[]);
    let Some(Value::Histogram { sum, count, buckets }) =
        e.family("twtrace_timewait_lifetime_seconds").map(|f| &f.series[0].value)
    else {
        panic!("no lifetime histogram: {e:#?}")
    };
    assert_eq!(*count, 1);
    assert!((sum - 60.7).abs() < 1e-9, "{sum}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    // Below 60 s: none; from 62 s up: the one (bucket precision is about 3%).
    let at = |le: f64| buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert_eq!(at(59.0), 0);
    assert_eq!(at(62.0), 1);
    assert_eq!(value(&e, "twtrace_timewait_deaths_total", ("reason", "expired")), Some(&Value::Int(1)));
}

#[test]
fn the_encoding_is_openmetrics_with_units_and_suffixes() {
    let mut agg = aggregator();
    request(&mut agg, S, 1, 40_000, "10.0.0.9:80");
    failed_search(&mut agg, S, "10.0.0.9:80");
    agg.advance(2 * S);
    let backends = [FamilyReport::off(crate::probes::Family::Drops)];
    let e = Builder::new(Limits::default()).build(&agg, 2 * S, &Health { lost: 3, ..Health::default() }, &backends);
    let text = encode(Arc::new(e));
    assert_has_lines(
        &text,
        [
            "# TYPE twtrace_timewait_lifetime_seconds histogram",
            "# UNIT twtrace_timewait_lifetime_seconds seconds",
            "twtrace_timewait_lifetime_seconds_bucket{le=\"+Inf\"} 0",
            "twtrace_lost_records_total 3",
            "twtrace_probe_info{family=\"drops\",backend=\"off\",hooks=\"\"} 1",
            "twtrace_timewait_sockets{netns=\"1\",netns_name=\"1\",namespace=\"\",pod=\"\",container=\"\"} 1",
            "twtrace_port_search_failures_total{netns=\"1\",netns_name=\"1\",namespace=\"\",pod=\"\",container=\"\",errno=\"EADDRNOTAVAIL\"} 1",
            "twtrace_destination_ports_in_use{netns=\"1\",netns_name=\"1\",namespace=\"\",pod=\"\",container=\"\",local=\"10.0.0.1\",remote=\"10.0.0.9:80\"} 1",
            "twtrace_build_info{version=\"0.1.0\"} 1",
        ],
    );
    assert!(text.ends_with("# EOF\n"));
    // Every family once.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let unique: std::collections::BTreeSet<&&str> = types.iter().collect();
    assert_eq!(types.len(), unique.len());
}

/// A pod's network namespace is labelled with its Kubernetes namespace and pod, its own name
/// (CNI's registered one) under `netns_name`; a container outside Kubernetes under `container`;
/// anything else by `netns_name` alone, the rest empty (sent, so that a target's own labels
/// cannot fill them under honor_labels).
#[test]
fn namespace_names_give_kubernetes_and_netns_labels() {
    use namespaces::Identity;
    let id = |name: &str, registered: Option<&str>| {
        let i = Identity::of(name, registered);
        [i.netns_name, i.namespace, i.pod, i.container]
    };
    let cni = "cni-3f8e2a10-5b7c-4d2e-9a1f-0c6b8d4e2f71";
    assert_eq!(id("shop/web-7d9f8c6b5-x2x4q", Some(cni)), [cni, "shop", "web-7d9f8c6b5-x2x4q", ""]);
    assert_eq!(id("shop/web-7d9f8c6b5-x2x4q", None), ["shop/web-7d9f8c6b5-x2x4q", "shop", "web-7d9f8c6b5-x2x4q", ""]);
    assert_eq!(id("docker:3f2a1b9c0d1e", None), ["docker:3f2a1b9c0d1e", "", "", "docker:3f2a1b9c0d1e"]);
    assert_eq!(id("pod 1234-abcd", None), ["pod 1234-abcd", "", "", ""]);
    assert_eq!(id("twt-1-pod100", Some("twt-1-pod100")), ["twt-1-pod100", "", "", ""]);
    assert_eq!(id("host", None), ["host", "", "", ""]);

    // Through a build: every per-namespace family carries the five labels.
    use crate::event::{NamespaceDescription, Sysctls};
    let mut agg = aggregator();
    let sysctls = Sysctls { tcp_tw_reuse: Some(1), tcp_timestamps: Some(1), ..Sysctls::default() };
    agg.describe(&NamespaceDescription {
        netns: 1,
        name: "shop/web-7d9f8c6b5-x2x4q".into(),
        sysctls: Some(sysctls),
        live: true,
    });
    request(&mut agg, S, 1, 40_000, "10.0.0.9:80");
    agg.advance(2 * S);
    let e = Builder::with_ip_netns_dir(Limits::default(), None).build(&agg, 2 * S, &Health::default(), &[]);
    let text = encode(Arc::new(e));
    let pod = "netns=\"1\",netns_name=\"shop/web-7d9f8c6b5-x2x4q\",namespace=\"shop\",pod=\"web-7d9f8c6b5-x2x4q\",container=\"\"";
    assert_has_lines(
        &text,
        [
            format!("twtrace_namespace_info{{{pod}}} 1"),
            format!("twtrace_tcp_tw_reuse{{{pod}}} 1"),
            format!("twtrace_tcp_timestamps{{{pod}}} 1"),
            format!("twtrace_timewait_sockets{{{pod}}} 1"),
        ],
    );
}

/// Per destination, TIME_WAIT births by whether the peer sent timestamps: what tells whether
/// tcp_tw_reuse can free its ports (the gate of TwtracePortRangeExhausted).
#[test]
fn timewait_births_toward_a_destination_by_peer_timestamps() {
    let mut agg = aggregator();
    for (sk, seen) in [(1, true), (2, true), (3, false)] {
        let f = SocketFlow {
            local: format!("10.0.0.1:{}", 40_000 + sk).parse().unwrap(),
            remote: "10.0.0.9:80".parse().unwrap(),
        };
        let zero = SocketFlow { local: "10.0.0.1:0".parse().unwrap(), remote: f.remote };
        let state = |old, new, flow| {
            Event::State(StateEvent {
                ts_ns: S,
                sk_addr: sk,
                netns: 1,
                old_state: old,
                new_state: new,
                flow: Some(flow),
                task: curl(),
            })
        };
        agg.apply(&state(7, 2, zero));
        agg.apply(&state(2, 1, f));
        agg.apply(&state(1, 4, f));
        let birth =
            TimeWaitChange::Birth { substate: TimeWaitSubstate::TimeWait, timeout_ms: 60_000, timestamps: Some(seen) };
        agg.apply(&Event::TimeWait(TimeWaitEvent {
            ts_ns: S,
            tw_id: sk,
            flow: Some(f),
            netns: 1,
            owner: curl(),
            change: birth,
        }));
    }
    agg.advance(2 * S);
    let e = Builder::new(Limits::default()).build(&agg, 2 * S, &Health::default(), &[]);
    let births = e.family("twtrace_destination_timewait_births_total").expect("the family");
    let of = |peer: &str| {
        births.series.iter().find(|s| s.labels.contains(&("peer_timestamps", peer.to_owned()))).map(|s| &s.value)
    };
    assert_eq!((of("sent"), of("absent")), (Some(&Value::Int(2)), Some(&Value::Int(1))));
}

/// Samples as Prometheus stores them: a histogram is its buckets, sum and count.
fn samples(e: &Exposition) -> usize {
    e.families
        .iter()
        .flat_map(|f| &f.series)
        .map(|s| match &s.value {
            Value::Histogram { buckets, .. } => buckets.len() + 2,
            _ => 1,
        })
        .sum()
}

#[test]
fn many_rows_stay_within_the_readme_worst_case() {
    let mut agg = aggregator();
    // Described, so it has its per-namespace series.
    agg.describe(&crate::event::NamespaceDescription { netns: 1, name: "web".into(), sysctls: None, live: true });
    let mut sk = 0;
    for d in 0..200u16 {
        let remote = format!("10.0.{}.{}:80", d / 250, d % 250);
        sk += 1;
        request(&mut agg, S, sk, 40_000 + d % 100, &remote);
        failed_search(&mut agg, S, &remote);
        agg.apply(&Event::Drop(crate::event::DropEvent {
            ts_ns: S,
            reason: "TCP_RFC7323_PAWS".into(),
            reason_code: 36,
            netns: 1,
            flow: Some(SocketFlow {
                local: "10.0.0.1:443".parse().unwrap(),
                remote: format!("10.9.{}.{}:5000", d / 250, d % 250).parse().unwrap(),
            }),
            tcp_flags: 0x02,
            seq: 1,
            ack_seq: 0,
            outgoing: false,
        }));
    }
    agg.advance(2 * S);
    let k = 20;
    let e = Builder::new(Limits { top_k: k, idle_after: Duration::from_secs(600) }).build(
        &agg,
        2 * S,
        &Health::default(),
        &[],
    );
    // docs/serve.md, "Cardinality": 24 + (8K + 3) + 32 (K + 1) + 17 + (R + 2K + 1) + 23
    // + N (32 + E + 3D), here with one namespace, one errno, four reasons, no setup drops.
    let (n, errnos, reasons) = (1, 1, 4);
    let bound = 24 + (8 * k + 3) + 32 * (k + 1) + 17 + (reasons + 2 * k + 1) + 23 + n * (32 + errnos);
    let got = samples(&e);
    assert!(got <= bound, "{got} samples, docs/serve.md says at most {bound}");
    assert_eq!(e.family("twtrace_namespace_timewait_deaths_total").map(|f| f.series.len()), Some(7 * n));
    // Folding did happen for each kind, and nothing of 200 rows leaked past K.
    for kind in ["destination", "connect_search", "paws_source"] {
        assert_eq!(value(&e, "twtrace_series_folded", ("kind", kind)), Some(&Value::Int(180)), "{kind}");
    }
    assert_eq!(e.family("twtrace_destination_ports_in_use").unwrap().series.len(), k + 1);
    assert_eq!(e.family("twtrace_paws_source_drops_total").unwrap().series.len(), k + 1);
    assert_eq!(value(&e, "twtrace_paws_source_drops_total", ("source", "other")), Some(&Value::Int(180)));
}

/// Conntrack figures arrive as counters of the namespace: the two levels become gauges (the
/// first reading carried whole, then changes), the drops a counter by reason; none of them is
/// a TcpExt counter.
#[test]
fn conntrack_levels_are_gauges_and_its_drops_a_counter_by_reason() {
    use crate::event::{NamespaceDescription, NetstatEvent};
    let mut agg = aggregator();
    agg.describe(&NamespaceDescription { netns: 1, name: "pod-a".into(), sysctls: None, live: true });
    let counters = |ts, deltas: &[(&str, i64)]| {
        Event::Netstat(NetstatEvent {
            ts_ns: ts,
            netns: 1,
            deltas: deltas.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect(),
        })
    };
    agg.apply(&counters(S, &[("ConntrackCount", 40), ("ConntrackMax", 50)]));
    agg.apply(&counters(2 * S, &[("ConntrackCount", 10), ("ConntrackDrop", 7), ("TW", 3)]));
    let e = Builder::new(Limits::default()).build(&agg, 2 * S, &Health::default(), &[]);
    assert_eq!(value(&e, "twtrace_conntrack_entries", ("netns_name", "pod-a")), Some(&Value::Int(50)));
    assert_eq!(value(&e, "twtrace_conntrack_max_entries", ("netns_name", "pod-a")), Some(&Value::Int(50)));
    assert_eq!(value(&e, "twtrace_conntrack_dropped_packets_total", ("reason", "full")), Some(&Value::Int(7)));
    let tcpext = e.family("twtrace_tcpext_total").unwrap();
    assert_eq!(tcpext.series.len(), 1, "only TW: {:?}", tcpext.series);
}

/// "Which pod churns?": births, deaths by reason and PAWS drops per namespace, each namespace
/// its own, summing to the host-wide families.
#[test]
fn births_deaths_and_paws_drops_are_counted_per_namespace() {
    use crate::event::{DropEvent, NamespaceDescription};
    let mut agg = aggregator();
    for (netns, name) in [(1, "shop/web-1"), (2, "shop/db-0")] {
        agg.describe(&NamespaceDescription { netns, name: name.into(), sysctls: None, live: true });
    }
    // Namespace 1: three births, one expires, one is reused by connect().
    for k in 0..3 {
        request(&mut agg, S + k, 10 + k, 40_000 + k as u16, "10.0.0.9:80");
    }
    let death = |tw_id: u64, reason: DeathReason| {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: 61 * S,
            tw_id,
            flow: None,
            netns: 1,
            owner: None,
            change: TimeWaitChange::Death { reason, lifetime_ns: 60 * S },
        })
    };
    agg.apply(&death(10, DeathReason::Expired));
    agg.apply(&death(11, DeathReason::Reused));
    // Namespace 2: two PAWS drops, and nothing of TIME_WAIT.
    for seq in 0..2 {
        agg.apply(&Event::Drop(DropEvent {
            ts_ns: 61 * S,
            reason: "TCP_RFC7323_TW_PAWS".into(),
            reason_code: 0,
            netns: 2,
            flow: Some(SocketFlow { local: "10.0.0.2:80".parse().unwrap(), remote: "192.0.2.7:5555".parse().unwrap() }),
            tcp_flags: crate::event::TCP_FLAG_SYN,
            seq,
            ack_seq: 0,
            outgoing: false,
        }));
    }
    agg.advance(62 * S);
    let e = Builder::with_ip_netns_dir(Limits::default(), None).build(&agg, 62 * S, &Health::default(), &[]);
    let of = |family: &str, netns: &str, reason: Option<&str>| -> Option<u64> {
        let f = e.family(family)?;
        f.series
            .iter()
            .find(|s| {
                s.labels.iter().any(|(k, v)| *k == "netns" && v == netns)
                    && reason.is_none_or(|r| s.labels.iter().any(|(k, v)| *k == "reason" && v == r))
            })
            .and_then(|s| match s.value {
                Value::Int(n) => Some(n),
                _ => None,
            })
    };
    let births = "twtrace_namespace_timewait_births_total";
    let deaths = "twtrace_namespace_timewait_deaths_total";
    let paws = "twtrace_namespace_paws_drops_total";
    assert_eq!([of(births, "1", None), of(births, "2", None)], [Some(3), Some(0)]);
    assert_eq!(of(deaths, "1", Some("expired")), Some(1));
    assert_eq!(of(deaths, "1", Some("reused")), Some(1));
    assert_eq!(of(deaths, "1", Some("reset")), Some(0), "every reason, from 0");
    assert_eq!(of(deaths, "2", Some("expired")), Some(0));
    assert_eq!([of(paws, "1", None), of(paws, "2", None)], [Some(0), Some(2)]);
    // The host-wide families are their sums.
    let host = |family: &str| e.family(family).map(|f| f.series.iter().map(|s| s.value.clone()).collect::<Vec<_>>());
    assert_eq!(host("twtrace_timewait_births_total"), Some(vec![Value::Int(3)]));
    let text = encode(Arc::new(e));
    let ns1 = "netns=\"1\",netns_name=\"shop/web-1\",namespace=\"shop\",pod=\"web-1\",container=\"\"";
    assert_has_lines(
        &text,
        [
            format!("twtrace_namespace_timewait_births_total{{{ns1}}} 3"),
            format!("twtrace_namespace_timewait_deaths_total{{{ns1},reason=\"reused\"}} 1"),
            format!("twtrace_namespace_paws_drops_total{{{ns1}}} 0"),
        ],
    );
}

/// The process families every client library exports, read from /proc/self.
#[test]
fn the_process_metrics_are_there_under_their_usual_names() {
    // Some CPU time for certain (the counter has the kernel's 10 ms ticks; a filtered test
    // run may not have used one yet).
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_millis(50) {
        std::hint::black_box(spin.elapsed());
    }
    let e = Builder::new(Limits::default()).build(&aggregator(), S, &Health::default(), &[]);
    let one = |name: &str| -> f64 {
        match e.family(name).map(|f| &f.series[..]) {
            Some([s]) => match s.value {
                Value::Int(n) => n as f64,
                Value::Float(x) => x,
                _ => panic!("{name}: {:?}", s.value),
            },
            other => panic!("{name}: {other:?}"),
        }
    };
    assert!(one("process_resident_memory_bytes") > 1e6);
    assert!(one("process_virtual_memory_bytes") >= one("process_resident_memory_bytes"));
    assert!(one("process_open_fds") >= 3.0);
    assert!(one("process_max_fds") >= one("process_open_fds"));
    assert!(one("process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = one("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 3600.0, "started {started}, now {now}");
}

/// `other` is a counter: a folded row that gets a series of its own (here by utilisation,
/// which its counters do not rank) must not take its count out of `other` (a fall that
/// `rate()` reads as a reset), and what folded rows do later still adds up.
#[test]
fn other_never_falls_when_a_folded_row_is_named() {
    let mut agg = aggregator();
    let mut builder = Builder::new(Limits { top_k: 1, idle_after: Duration::from_secs(600) });
    let (a, b) = ("10.0.0.7:443", "10.0.0.8:80");
    // A: one port held, ten failed searches; B: two ports held. B is fuller: named.
    request(&mut agg, S, 1, 40_000, a);
    for k in 0..10 {
        failed_search(&mut agg, S + k, a);
    }
    request(&mut agg, S, 2, 40_010, b);
    request(&mut agg, S, 3, 40_011, b);
    let other = |e: &Exposition, family: &str| match value(e, family, ("remote", "other")) {
        Some(Value::Int(n)) => *n,
        v => panic!("{family}: {v:?}"),
    };
    agg.advance(2 * S);
    let first = builder.build(&agg, 2 * S, &Health::default(), &[]);
    assert_eq!(other(&first, "twtrace_destination_connect_failures_total"), 10);
    assert_eq!(other(&first, "twtrace_destination_connects_total"), 1);
    // A fills up past B: A is named, B folded.
    request(&mut agg, 3 * S, 4, 40_001, a);
    request(&mut agg, 3 * S, 5, 40_002, a);
    agg.advance(4 * S);
    let second = builder.build(&agg, 4 * S, &Health::default(), &[]);
    assert!(value(&second, "twtrace_destination_ports_in_use", ("remote", a)).is_some(), "A is named now");
    assert_eq!(other(&second, "twtrace_destination_connect_failures_total"), 10, "A's failures stay counted");
    assert_eq!(other(&second, "twtrace_destination_connects_total"), 1);
    assert_eq!(other(&second, "twtrace_destination_ports_in_use"), 2, "a gauge: B's ports now");
    // B, folded, connects again: `other` grows by that.
    request(&mut agg, 5 * S, 6, 40_012, b);
    agg.advance(6 * S);
    let third = builder.build(&agg, 6 * S, &Health::default(), &[]);
    assert_eq!(other(&third, "twtrace_destination_connects_total"), 2);
}
