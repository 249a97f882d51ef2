//! `twtrace trace`: one line per event, for people or (with `--json`) for tools.

use std::io::Write;

use serde_json::{Value, json};

use super::SourceArgs;
use crate::{
    drive::{self, Control, Limits, Sink, Status},
    event::{Event, Process, SearchOp, SocketFlow, TimeWaitChange, errno_name, tcp_state_name},
    time::WallClock,
};

#[derive(clap::Args)]
pub struct TraceArgs {
    /// JSON Lines on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this long (seconds, or with s, m, h).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    duration: Option<std::time::Duration>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Prints the stream until Ctrl-C, SIGTERM, `--duration` or the end of a recording, then a
/// summary (a JSON line with `--json`, a sentence on stderr).
pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let (mut source, filter) = args.source.open(false, None)?;
    let printer = Printer::new(std::io::BufWriter::new(std::io::stdout().lock()), args.json, source.info().clock);
    let mut sink = TraceSink { printer, events: 0 };
    drive::drive(&mut source, filter, &mut sink, Limits { duration: args.duration }).await
}

/// The `trace` sink: the printer, and the count for the summary.
struct TraceSink<W: Write> {
    printer: Printer<W>,
    events: u64,
}

impl<W: Write> Sink for TraceSink<W> {
    type Wake = ();

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        if !matches!(event, Event::Lost(_)) {
            self.events += 1;
        }
        Ok(self.printer.event(event)?)
    }

    /// Once per batch, so pipes (jq, tests) see events within a drain interval.
    fn batch_done(&mut self, _status: &Status) -> anyhow::Result<Control> {
        self.printer.flush()?;
        Ok(Control::Continue)
    }

    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        let health = status.health();
        let events = self.events;
        let lost = health.lost;
        let mut summary =
            json!({"event": "summary", "events": events, "lost": lost, "backends": status.info().backends});
        if let Some(replay) = &health.replay {
            let damage: Vec<String> = replay.damage.iter().map(ToString::to_string).collect();
            summary["damage"] = json!(damage);
            self.printer.summary(&summary)?;
            crate::note!("{}", replay.summary());
        } else if let Some(stats) = health.decoder {
            summary["decoder"] = json!(stats);
            self.printer.summary(&summary)?;
            crate::note!(
                "{events} events, {lost} lost in the kernel (ring buffer full), {} malformed records, \
                 {} TIME_WAIT deaths of sockets born before tracing started{}",
                stats.malformed + stats.wrong_version,
                stats.untracked_deaths,
                stats.owner_resets_note()
            );
        }
        Ok(())
    }
}

/// The `trace` sink.
pub struct Printer<W: Write> {
    out: W,
    json: bool,
    clock: WallClock,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, json: bool, clock: WallClock) -> Self {
        Self { out, json, clock }
    }

    pub fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if self.json {
            let value = event_json(event, self.clock);
            writeln!(self.out, "{value}")
        } else {
            writeln!(self.out, "{}", event_text(event, self.clock))
        }
    }

    /// A JSON line for tools (the human summary goes to stderr).
    pub fn summary(&mut self, summary: &Value) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{summary}")?;
        }
        self.out.flush()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn event_json(event: &Event, clock: WallClock) -> Value {
    let ts_ns = event.ts_ns();
    let mut v = json!({"ts": clock.at(ts_ns), "mono_ns": ts_ns});
    let m = v.as_object_mut().expect("object");
    let mut put = |key: &str, value: Value| {
        m.insert(key.into(), value);
    };
    match event {
        Event::TimeWait(e) => {
            put("tw_id", json!(e.tw_id));
            put("netns", json!(e.netns));
            put_flow(&mut put, e.flow);
            put_process(&mut put, "owner_", e.owner.as_ref());
            match &e.change {
                TimeWaitChange::Birth { substate, timeout_ms, .. } | TimeWaitChange::Rearm { substate, timeout_ms } => {
                    let kind = if matches!(e.change, TimeWaitChange::Birth { .. }) { "birth" } else { "rearm" };
                    put("event", json!(format!("timewait_{kind}")));
                    put("substate", json!(substate.name()));
                    // Every duration in ns, as lifetime_ns and duration_ns; timeout_ms stays for
                    // the tools that read it (deprecated: docs/cli.md).
                    put("timeout_ns", json!(timeout_ms.saturating_mul(1_000_000)));
                    put("timeout_ms", json!(timeout_ms));
                    if let TimeWaitChange::Birth { timestamps: Some(ts), .. } = e.change {
                        put("timestamps", json!(ts));
                    }
                }
                TimeWaitChange::Death { reason, lifetime_ns } => {
                    put("event", json!("timewait_death"));
                    put("reason", json!(reason));
                    put("lifetime_ns", json!(lifetime_ns));
                }
            }
        }
        Event::State(e) => {
            put("event", json!("state"));
            put("sk", json!(format!("{:#x}", e.sk_addr)));
            put("netns", json!(e.netns));
            put("old_state", json!(tcp_state_name(e.old_state)));
            put("new_state", json!(tcp_state_name(e.new_state)));
            put_flow(&mut put, e.flow);
            put_process(&mut put, "task_", e.task.as_ref());
        }
        Event::Drop(e) => {
            put("event", json!("drop"));
            put("reason", json!(e.reason));
            put("reason_code", json!(e.reason_code));
            put("class", json!(e.class()));
            put("direction", json!(if e.outgoing { "sent" } else { "received" }));
            put("netns", json!(e.netns));
            put_flow(&mut put, e.flow);
            put("tcp_flags", json!(tcp_flags(e.tcp_flags)));
            put("seq", json!(e.seq));
            put("ack_seq", json!(e.ack_seq));
        }
        Event::PortSearch(e) => {
            put("event", json!("port_search"));
            put("op", json!(e.op));
            put("duration_ns", json!(e.duration_ns));
            put("errno", json!(e.errno));
            put("error", json!(errno_name(e.errno)));
            if let Some(c) = e.candidates {
                put("candidates", json!(c));
            }
            put("approximate", json!(e.approximate));
            put("netns", json!(e.netns));
            if let Some(remote) = e.remote {
                put("remote", json!(remote.to_string()));
            }
            if let Some(local) = e.local {
                put("local", json!(local.to_string()));
            }
            put_process(&mut put, "", e.process.as_ref());
        }
        Event::Netstat(e) => {
            put("event", json!("netstat"));
            put("netns", json!(e.netns));
            put("deltas", Value::Object(e.deltas.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        }
        Event::Lost(e) => {
            put("event", json!("lost"));
            put("count", json!(e.new));
            put("total", json!(e.total));
        }
        // In the JSON Lines as before it had an event of its own: a counter sample beside the
        // kernel's TCP counters (tools and the recording format read it so).
        Event::Skipped(e) => {
            put("event", json!("netstat"));
            put("netns", json!(0));
            put("deltas", json!({SKIPPED_RUNS: e.new}));
        }
        Event::Mark(e) => {
            put("event", json!("mark"));
            put("at", json!(crate::time::WallTime::from_unix_ns(e.unix_ns).rfc3339()));
            put("text", json!(e.text));
            put("uid", json!(e.uid));
            put("pid", json!(e.pid));
        }
        Event::Namespace(e) => {
            let ns = &e.namespace;
            put("event", json!("namespace"));
            put("netns", json!(ns.netns));
            put("name", json!(ns.name));
            put("live", json!(ns.live));
            put("settings", json!(ns.sysctls));
        }
    }
    v
}

fn put_flow(put: &mut impl FnMut(&str, Value), flow: Option<SocketFlow>) {
    if let Some(flow) = flow {
        put("ip", json!(flow.ip_version()));
        put("local", json!(flow.local.to_string()));
        put("remote", json!(flow.remote.to_string()));
    }
}

fn put_process(put: &mut impl FnMut(&str, Value), prefix: &str, process: Option<&Process>) {
    if let Some(p) = process {
        put(&format!("{prefix}pid"), json!(p.pid));
        put(&format!("{prefix}comm"), json!(p.comm));
        put(&format!("{prefix}cgroup_id"), json!(p.cgroup_id));
    }
}

/// `SA` for SYN+ACK, like tcpdump's letters (F S R P . U).
fn tcp_flags(flags: u8) -> String {
    [(0x01, 'F'), (0x02, 'S'), (0x04, 'R'), (0x08, 'P'), (0x10, '.'), (0x20, 'U')]
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

fn process_text(p: Option<&Process>) -> String {
    p.map(|p| format!("{}[{}]", p.comm, p.pid)).unwrap_or_else(|| "-".into())
}

fn flow_text(flow: Option<SocketFlow>) -> String {
    flow.map(|f| format!("{} <- {}", f.local, f.remote)).unwrap_or_else(|| "?".into())
}

/// The name skipped runs go by in `trace` output, as a counter.
const SKIPPED_RUNS: &str = "SkippedRuns";

pub fn event_text(event: &Event, clock: WallClock) -> String {
    let (ts_ns, netns, what) = match event {
        Event::TimeWait(e) => {
            let flow = flow_text(e.flow);
            let owner = process_text(e.owner.as_ref());
            let what = match &e.change {
                TimeWaitChange::Birth { substate, timeout_ms, timestamps } => format!(
                    "TW born   #{:<6} {flow}  {} timeout {}{}  by {owner}",
                    e.tw_id,
                    substate.name(),
                    seconds(timeout_ms * 1_000_000),
                    match timestamps {
                        Some(true) => "  ts",
                        Some(false) => "  no-ts",
                        None => "",
                    }
                ),
                TimeWaitChange::Rearm { substate, timeout_ms } => format!(
                    "TW rearm  #{:<6} {flow}  {} timeout {}",
                    e.tw_id,
                    substate.name(),
                    seconds(timeout_ms * 1_000_000)
                ),
                TimeWaitChange::Death { reason, lifetime_ns } => {
                    format!("TW died   #{:<6} {flow}  {} after {}", e.tw_id, reason.as_str(), seconds(*lifetime_ns))
                }
            };
            (e.ts_ns, e.netns, what)
        }
        Event::State(e) => (
            e.ts_ns,
            e.netns,
            format!(
                "STATE     {} -> {}  {}  task {}",
                tcp_state_name(e.old_state),
                tcp_state_name(e.new_state),
                flow_text(e.flow),
                process_text(e.task.as_ref())
            ),
        ),
        Event::Drop(e) => (
            e.ts_ns,
            e.netns,
            format!(
                "DROP      {}  {}  flags {} seq {}",
                e.reason,
                // The packet's way: out from this host's end, or in to it.
                match (e.outgoing, e.flow) {
                    (true, Some(f)) => format!("sent {} -> {}", f.local, f.remote),
                    (false, Some(f)) => format!("received {} <- {}", f.local, f.remote),
                    (_, None) => "?".into(),
                },
                tcp_flags(e.tcp_flags),
                e.seq
            ),
        ),
        Event::Netstat(e) => {
            let deltas: Vec<String> = e.deltas.iter().map(|(k, v)| format!("{k} {v:+}")).collect();
            (e.ts_ns, e.netns, format!("COUNTERS  {}", deltas.join(", ")))
        }
        Event::Lost(e) => (e.ts_ns, 0, format!("LOST      {} events (ring buffer full; {} so far)", e.new, e.total)),
        Event::Namespace(e) => {
            let ns = &e.namespace;
            let settings = match &ns.sysctls {
                Some(s) => format!(
                    "ip_local_port_range {}-{}  tcp_max_tw_buckets {}",
                    s.ip_local_port_range.0,
                    s.ip_local_port_range.1,
                    s.tcp_max_tw_buckets.map_or("?".into(), |v| v.to_string())
                ),
                None => "settings unreadable".into(),
            };
            let state = if ns.live { "" } else { "  (gone)" };
            (e.ts_ns, ns.netns, format!("NETNS     {}  {settings}{state}", ns.name))
        }
        Event::Skipped(e) => (e.ts_ns, 0, format!("COUNTERS  {SKIPPED_RUNS} {:+}", e.new)),
        Event::Mark(e) => (e.ts_ns, 0, format!("MARK      {:?}  ({})", e.text, e.author())),
        Event::PortSearch(e) => {
            let op = if e.op == SearchOp::Connect { "connect()" } else { "bind()" };
            let addr = e.remote.or(e.local).map(|a| a.to_string()).unwrap_or_else(|| "?".into());
            let chosen = match (e.op, e.local) {
                (SearchOp::Connect, Some(local)) => format!(" from port {}", local.port()),
                _ => String::new(),
            };
            let approx = if e.approximate { " (approximate)" } else { "" };
            let candidates = e.candidates.map(|c| format!(" {c} candidates")).unwrap_or_default();
            (
                e.ts_ns,
                e.netns,
                format!(
                    "PORT      {op} {addr}{chosen} {} in {}{approx}{candidates}  by {}",
                    errno_name(e.errno),
                    micros(e.duration_ns),
                    process_text(e.process.as_ref())
                ),
            )
        }
    };
    format!("{} {what}  netns {netns}", clock.at(ts_ns).time_of_day_micros())
}

fn micros(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1e3)
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::event::{DeathReason, SocketFlow, TimeWaitEvent, TimeWaitSubstate};

    const CLOCK: WallClock = WallClock { realtime_ns: 1_795_385_599_000_000_000, monotonic_ns: 1_000_000_000 };

    fn death() -> Event {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: 61_500_000_000,
            tw_id: 7,
            flow: Some(SocketFlow {
                local: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                remote: "[::1]:40000".parse::<SocketAddr>().unwrap(),
            }),
            netns: 4026531840,
            owner: None,
            change: TimeWaitChange::Death { reason: DeathReason::Expired, lifetime_ns: 60_750_000_000 },
        })
    }

    #[test]
    fn json_line_has_stable_field_names() {
        let v = event_json(&death(), CLOCK);
        assert_eq!(v["event"], "timewait_death");
        assert_eq!(v["reason"], "expired");
        assert_eq!(v["lifetime_ns"], 60_750_000_000u64);
        assert_eq!(v["local"], "127.0.0.1:8080");
        assert_eq!(v["remote"], "[::1]:40000");
        assert_eq!(v["ts"], "2026-11-22T22:14:19.500000Z");
        assert_eq!(v["mono_ns"], 61_500_000_000u64);
    }

    #[test]
    fn text_line() {
        assert_eq!(
            event_text(&death(), CLOCK),
            "22:14:19.500000 TW died   #7      127.0.0.1:8080 <- [::1]:40000  expired after 60.750s  netns 4026531840"
        );
        let birth = Event::TimeWait(TimeWaitEvent {
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::FinWait2,
                timeout_ms: 60_000,
                timestamps: None,
            },
            ..match death() {
                Event::TimeWait(e) => e,
                _ => unreachable!(),
            }
        });
        assert!(
            event_text(&birth, CLOCK)
                .contains("TW born   #7      127.0.0.1:8080 <- [::1]:40000  FIN_WAIT2 timeout 60.000s")
        );
        let v = event_json(&birth, CLOCK);
        assert_eq!(v["timeout_ns"], 60_000_000_000u64, "every duration in ns");
        assert_eq!(v["timeout_ms"], 60_000u64, "kept for the tools that read it");
    }
}
