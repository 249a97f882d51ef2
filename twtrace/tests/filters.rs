//! Attribution and address filters against real traffic: the same connections seen by four
//! tracers, two of which must see none of them.

mod support;

use std::{net::TcpListener, time::Duration};

use support::{Netns, can_trace, server_closes_first};

const CONNECTIONS: usize = 5;

#[test]
fn pid_and_address_filters_select_exactly_the_matching_time_wait_births() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("filters");
    let me = std::process::id().to_string();
    let tracers: Vec<_> = [["--pid", me.as_str()], ["--pid", "1"], ["--addr", "127.0.0.0/8"], ["--addr", "10.0.0.0/8"]]
        .iter()
        .map(|filter| {
            let mut args = vec!["--netns", ns.name.as_str()];
            args.extend(filter);
            support::tracer_for("timewait", &args)
        })
        .collect();
    if tracers.iter().any(Option::is_none) {
        return;
    }
    let tracers: Vec<_> = tracers.into_iter().flatten().collect();
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, CONNECTIONS, None);
    });
    tracers[0].wait_for("timewait_birth", Duration::from_secs(10), |b| b.len() >= CONNECTIONS);
    tracers[2].wait_for("timewait_birth", Duration::from_secs(10), |b| b.len() >= CONNECTIONS);
    std::thread::sleep(Duration::from_millis(300));
    let births: Vec<usize> =
        tracers.into_iter().map(|t| t.stop().iter().filter(|v| v["event"] == "timewait_birth").count()).collect();
    assert_eq!(births, [CONNECTIONS, 0, CONNECTIONS, 0], "--pid me, --pid 1, --addr 127/8, --addr 10/8");
}
