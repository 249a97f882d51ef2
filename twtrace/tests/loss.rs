//! Loss is never silent: a flood into a deliberately tiny ring buffer, with twtrace stopped so
//! nothing drains, is reported with exactly the count the kernel side kept.

mod support;

use std::{net::TcpListener, time::Duration};

use support::{Netns, can_trace, kernel_lost, server_closes_first};

#[test]
fn overflowing_a_small_ring_buffer_reports_the_kernels_lost_count() {
    if !can_trace() {
        return;
    }
    let ns = Netns::new("loss");
    let Some(tracer) =
        support::tracer_for_with("timewait", &["-v"], &["--netns", &ns.name, "--ring-buffer-size", "4096"])
    else {
        return;
    };
    let map_id = support::counters_map_id(&tracer.stderr()).expect("twtrace -v logs its counters map id");

    tracer.signal(libc::SIGSTOP);
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&listener, 200, None);
    });
    std::thread::sleep(Duration::from_millis(200));
    let lost_in_kernel = kernel_lost(&map_id);
    tracer.signal(libc::SIGCONT);
    let lines = tracer.stop();

    assert!(lost_in_kernel > 0, "200 connections must overflow 4 KiB");
    let summary = lines.iter().rfind(|v| v["event"] == "summary").expect("summary line");
    assert_eq!(summary["lost"], lost_in_kernel, "{summary}");
    let reported: u64 = lines.iter().filter(|v| v["event"] == "lost").map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(reported, lost_in_kernel, "lost lines add up to the kernel's count");
    let received = lines.iter().filter(|v| v["event"] != "lost" && v["event"] != "summary").count();
    assert!(received > 0, "what fitted was delivered");
}
