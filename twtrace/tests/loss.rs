//! Loss is never silent: a flood into a deliberately tiny ring buffer, with twtrace stopped so
//! nothing drains, is reported with exactly the count the kernel side kept.

mod support;

use std::{net::TcpListener, process::Command, time::Duration};

use support::{Netns, can_trace, server_closes_first};

/// Sum over CPUs of slot 0 (lost records) of the per-CPU counters map, read with bpftool.
fn kernel_lost(map_id: &str) -> u64 {
    let out =
        support::output(Command::new("bpftool").args(["-j", "map", "lookup", "id", map_id, "key", "0", "0", "0", "0"]));
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cpu| {
            let bytes: Vec<u8> = cpu["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                .collect();
            u64::from_le_bytes(bytes[..8].try_into().unwrap())
        })
        .sum()
}

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
    let map_id = tracer
        .stderr()
        .iter()
        .find_map(|l| l.split("COUNTERS map id ").nth(1).map(|id| id.trim().to_owned()))
        .expect("twtrace -v logs its counters map id");

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
