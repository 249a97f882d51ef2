//! Building the views at scale (issue 25): `Aggregator::snapshot` (what `stat`, `top` and
//! `doctor` build per view) and `export::model::Builder::build` (what `serve` publishes once
//! a second), at 10k and 100k destination rows (client-first churn, each destination its own
//! remote address, with its port search) and at 100k and 1M tracked TIME_WAIT sockets from
//! distinct peers. Fed through the public decoder and aggregator only. The two sizes of each
//! kind show how a view's cost grows with the rows.
//!
//! `cargo bench -p twtrace --bench scale [-- FILTER]`, e.g. `-- destinations/10k`.

#[path = "support/scale_events.rs"]
mod scale_events;

use std::{cell::OnceCell, hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use twtrace::{
    aggregate::Aggregator,
    export::model::{Builder, Limits, MODEL_ROWS},
    source::Health,
};

/// The aggregator after `count` connections, and the stream's time then.
fn fed(count: u64, connection: Connection) -> (Aggregator, u64) {
    let mut settings = scale_events::settings();
    // As serve ranks rows for the exporter; stat and top rank their `--top` (10).
    settings.top = MODEL_ROWS;
    let mut aggregator = Aggregator::new(settings);
    let mut decoder = scale_events::decoder();
    let now = scale_events::feed(&mut aggregator, &mut decoder, count, connection);
    aggregator.advance(now);
    (aggregator, now)
}

/// Records of connection `i`.
type Connection = fn(u64) -> Vec<Vec<u8>>;

fn views(c: &mut Criterion) {
    let cases: [(&str, u64, Connection); 4] = [
        ("destinations/10k", 10_000, |i| scale_events::client_first(i, 10_000)),
        ("destinations/100k", 100_000, |i| scale_events::client_first(i, 100_000)),
        ("timewait_sockets/100k", 100_000, scale_events::server_first),
        ("timewait_sockets/1M", 1_000_000, scale_events::server_first),
    ];
    let mut group = c.benchmark_group("scale");
    // A view that takes seconds (the quadratic snapshot issue 25 found) must still finish.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for (name, count, connection) in cases {
        // Fed once per case, and only when criterion's filter runs one of its benches.
        let fed_once = OnceCell::new();
        let state = || fed_once.get_or_init(|| fed(count, connection));
        group.bench_function(format!("snapshot/{name}"), |b| {
            let (aggregator, now) = state();
            b.iter(|| black_box(aggregator.snapshot(black_box(*now))))
        });
        // One builder across publications, as serve keeps it (it remembers activity).
        let mut builder = Builder::new(Limits::default());
        let health = Health::default();
        group.bench_function(format!("export_build/{name}"), |b| {
            let (aggregator, now) = state();
            b.iter(|| black_box(builder.build(aggregator, black_box(*now), &health, &[]).series_count()))
        });
    }
    group.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);
