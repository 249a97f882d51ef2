//! `twtrace serve`: the probes and the aggregator, continuously, behind a Prometheus
//! endpoint. The sink applies events as every view does and, once per `--publish-interval`,
//! builds an [`Exposition`] and hands it to the HTTP server through a watch channel: a scrape
//! never touches the model, never waits for the loop, and the loop never waits for a scrape.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{FilterArgs, ProbeArgs, record::SegmentArgs};
use crate::{
    aggregate::Aggregator,
    drive::{self, Control, Limits, Sink, Status, ViewTimes},
    event::{Event, ExistingSocket},
    export::{
        http::{self, Published},
        model::{self, Builder, Exposition, Family, Kind, Series, Value},
        webconfig::WebConfig,
    },
    probes::FamilyReport,
    record::segments::{FlightRecorder, RecorderStats},
    source::Source,
};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to serve on. Loopback by default: give another address (e.g. 0.0.0.0:9977)
    /// only with --web-config-file protecting it, or a network policy.
    #[arg(long, default_value = "127.0.0.1:9977", value_name = "ADDR")]
    listen: SocketAddr,
    /// TLS and basic auth, in the web configuration format of node_exporter and the
    /// Prometheus exporter toolkit (tls_server_config, basic_auth_users).
    #[arg(long, value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Series of their own per kind of row (destinations, connect searches, PAWS sources);
    /// the rest are summed into `other`. (Was --top-k, still accepted.)
    #[arg(long = "top", alias = "top-k", default_value_t = 20, value_name = "N")]
    top: usize,
    /// Leave out a destination that holds no port and whose counters stood still this long.
    #[arg(long, default_value = "10m", value_parser = super::parse_duration, value_name = "DURATION")]
    idle_after: Duration,
    /// How often the model is turned into what scrapes return.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration, value_name = "DURATION")]
    publish_interval: Duration,
    /// Also keep a flight recording of the stream in this directory (as `record
    /// --record-dir`): segments rotated and deleted by --segment, --segment-size, --keep,
    /// --keep-size.
    #[arg(long, value_name = "DIR")]
    record_dir: Option<PathBuf>,
    #[command(flatten)]
    segments: SegmentArgs,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filters: FilterArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.top == 0 {
        anyhow::bail!("--top must be at least 1");
    }
    if args.publish_interval < Duration::from_millis(100) || args.publish_interval > Duration::from_secs(60) {
        anyhow::bail!("--publish-interval must be between 100ms and 60s");
    }
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    if !args.listen.ip().is_loopback() && web.auth.is_none() {
        log::warn!("serving on {} without basic auth: anyone who reaches it can read the metrics", args.listen);
    }
    // Bound before the probes load: a taken port is reported at once.
    let listener = http::bind(args.listen).await?;
    let policy = args.segments.policy()?;
    let filter = args.filters.filter();
    let mut source = Source::live(&args.probes.options()?, true)?;
    source.set_filter_description(filter.describe());
    let recorder = match &args.record_dir {
        Some(dir) => Some(super::keep::start_flight(dir, policy, source.info())?),
        None => None,
    };
    let limits = model::Limits { top_k: args.top, idle_after: args.idle_after };
    serve(source, filter, listener, web, limits, args.publish_interval, recorder).await
}

/// Serves `source`'s model on `listener` until SIGINT/SIGTERM, then publishes the last
/// events, finishes the scrapes in flight and returns.
pub async fn serve(
    mut source: Source,
    filter: crate::filter::Filter,
    listener: tokio::net::TcpListener,
    web: WebConfig,
    limits: model::Limits,
    publish_interval: Duration,
    recorder: Option<FlightRecorder>,
) -> anyhow::Result<()> {
    let info = source.info();
    let aggregator = super::aggregator_for(info, model::MODEL_ROWS);
    let mut builder = Builder::new(limits);
    let backends = info.backends.clone();
    let now = source.now_ns();
    let first = builder.build(&aggregator, now, &source.health(), &backends);
    let (publish, published) = watch::channel(Published { exposition: Arc::new(first), at: std::time::Instant::now() });
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let auth = if web.auth.is_some() { " (basic auth)" } else { "" };
    let server = http::spawn(listener, web, published);
    crate::note!("serving metrics on {scheme}://{}/metrics{auth}", server.local_addr);
    if let Some(r) = &recorder {
        crate::note!("recording to {} (segments)", r.dir().display());
    }
    let interval_ns = publish_interval.as_nanos() as u64;
    let mut sink = ServeSink {
        aggregator,
        builder,
        backends,
        publish,
        interval_ns,
        next_ns: now + interval_ns,
        events: 0,
        recorder,
        times: ViewTimes::default(),
    };
    let result = drive::drive(&mut source, filter, &mut sink, Limits::default()).await;
    server.stop().await;
    result
}

struct ServeSink {
    aggregator: Aggregator,
    builder: Builder,
    backends: Vec<FamilyReport>,
    publish: watch::Sender<Published>,
    interval_ns: u64,
    next_ns: u64,
    events: u64,
    /// The flight recorder (`--record-dir`): a second sink on the same stream.
    recorder: Option<FlightRecorder>,
    times: ViewTimes,
}

impl ServeSink {
    fn publish(&mut self, status: &Status) {
        let now = status.now_ns();
        let health = status.health();
        let (aggregator, builder, backends, recorder) =
            (&mut self.aggregator, &mut self.builder, &self.backends, &self.recorder);
        let exposition: Exposition = self.times.time(|| {
            aggregator.advance(now);
            let mut exposition = builder.build(aggregator, now, &health, backends);
            if let Some(r) = recorder {
                exposition.families.extend(recorder_families(&r.stats()));
            }
            exposition
        });
        self.publish.send_replace(Published { exposition: Arc::new(exposition), at: std::time::Instant::now() });
    }
}

impl Sink for ServeSink {
    type Wake = ();

    fn event(&mut self, event: &Event, _status: &Status) -> anyhow::Result<()> {
        self.events += 1;
        self.aggregator.apply(event);
        if let Some(r) = &mut self.recorder {
            r.event(event);
        }
        Ok(())
    }

    fn batch_done(&mut self, status: &Status) -> anyhow::Result<Control> {
        let now = status.now_ns();
        if let Some(r) = &mut self.recorder {
            r.tick(now, super::record::run_totals(status));
        }
        if now >= self.next_ns {
            self.publish(status);
            // After a stall, the next tick is an interval from now, not a burst of catch-ups.
            self.next_ns = (self.next_ns + self.interval_ns).max(now + self.interval_ns / 2);
        }
        Ok(Control::Continue)
    }

    fn resync_due(&self, now_ns: u64) -> bool {
        self.aggregator.resync_due(now_ns)
    }

    fn resync(&mut self, now_ns: u64, sockets: Option<&[ExistingSocket]>) {
        self.aggregator.resync(now_ns, sockets);
    }

    /// The events drained at the stop are published for the scrapes still in flight.
    fn finish(&mut self, status: &Status) -> anyhow::Result<()> {
        if let Some(r) = self.recorder.take() {
            let dir = r.dir().display().to_string();
            let stats = r.finish(status.now_ns(), super::record::run_totals(status));
            crate::note!("{}", stats.summary(&dir, status.health().lost));
        }
        self.publish(status);
        let health = status.health();
        crate::note!("serve ended; {} events, {} lost in the kernel", self.events, health.lost);
        crate::note!("{}", self.times.line(&health));
        Ok(())
    }
}

/// The flight recorder's own series (only with `--record-dir`).
fn recorder_families(stats: &RecorderStats) -> Vec<Family> {
    let one = |name, kind, help, value| Family {
        name,
        help,
        seconds: false,
        kind,
        series: vec![Series { labels: Vec::new(), value: Value::Int(value) }],
    };
    vec![
        one(
            "twtrace_recorder_write_errors",
            Kind::Counter,
            "Failed writes or segment creations of the flight recorder (a full disk above all).",
            stats.write_errors,
        ),
        one(
            "twtrace_recorder_events_not_recorded",
            Kind::Counter,
            "Events the flight recorder could not write (it was stopped by a write error).",
            stats.events_not_recorded,
        ),
        one(
            "twtrace_recorder_bytes",
            Kind::Gauge,
            "Bytes of segments in the recording directory, as of the last rotation.",
            stats.bytes,
        ),
        one(
            "twtrace_recorder_recording",
            Kind::Gauge,
            "1 while the flight recorder writes, 0 while a write error has stopped it.",
            u64::from(stats.recording),
        ),
    ]
}
