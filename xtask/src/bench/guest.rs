//! The backend comparison in a guest: `twtrace record` on each backend beside the same churn,
//! and the kernel's per-program BPF statistics per connection, summed by family.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Runs in the guest: twtrace record on each backend beside the same churn, then the kernel's
/// per-program BPF statistics per connection (busybox awk: the guest has no Python).
const GUEST_SCRIPT: &str = r#"
sysctl -qw kernel.bpf_stats_enabled=1
twtrace probes --programs | sed 's/^/VMCATALOGUE /'
for b in tracepoint fentry kprobe; do
  # A fresh namespace each: the previous run's TIME_WAIT sockets must not fill the table.
  # iproute2 by path: busybox's ip applet (also on PATH) has no netns support.
  /usr/sbin/ip netns add bench-$b
  /usr/sbin/ip netns exec bench-$b /usr/sbin/ip link set lo up
  /usr/sbin/ip netns exec bench-$b /usr/sbin/sysctl -qw net.ipv4.tcp_max_tw_buckets=2000000
  twtrace record -o /tmp/vb.twr --force --backend $b --netns bench-$b 2>/tmp/rec.err &
  pid=$!
  i=0; while ! grep -q "tracing;" /tmp/rec.err && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  echo "VMREADY backend=$b $(grep tracing /tmp/rec.err)"
  conns=$(/usr/sbin/ip netns exec bench-$b twtrace churn --duration 15 --json | sed 's/.*"connections":\([0-9]*\).*/\1/')
  bpftool prog show | awk -v b=$b -v c=$conns '/^[0-9]+:/ { name=$4 } /run_time_ns/ { for (i=1;i<=NF;i++) { if ($i=="run_time_ns") t=$(i+1); if ($i=="run_cnt") n=$(i+1) }; printf "VMPROG backend=%s prog=%s calls_per_conn=%.2f ns_per_conn=%.0f\n", b, name, n/c, t/c }'
  kill -INT $pid; wait $pid
done
"#;

/// The kernel keeps a program's name to BPF_OBJ_NAME_LEN (16) less its NUL: bpftool shows
/// the first 15 characters.
const KERNEL_NAME_LEN: usize = 15;

/// Which family each program belongs to, as `twtrace probes --programs` lists them (`VMCATALOGUE
/// family backend program hook` lines), by the name the kernel shows. A program several
/// families share is listed first under its owner, which is charged with its cost.
fn program_families(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.split("VMCATALOGUE ").nth(1)) {
        let mut fields = line.split_whitespace();
        if let (Some(family), Some(_backend), Some(program)) = (fields.next(), fields.next(), fields.next()) {
            let shown: String = program.chars().take(KERNEL_NAME_LEN).collect();
            families.entry(shown).or_insert_with(|| family.to_owned());
        }
    }
    families
}

/// BPF ns per connection by backend and family, from a guest.
pub fn guest_costs(kernel: &str) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let out = Command::new(std::env::current_exe()?)
        .args(["vm", "--kernel", kernel, "--timeout", "900", "--", "sh", "-c", GUEST_SCRIPT])
        .stderr(Stdio::inherit())
        .output()
        .context("booting the guest")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let families = program_families(&text);
    let mut costs = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.split("VMPROG ").nth(1)) {
        // Per program, for the reader who wants more than the family sums.
        eprintln!("xtask: bench: guest: {line}");
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k).map(str::to_owned));
        if let (Some(b), Some(p), Some(ns)) = (field("backend="), field("prog="), field("ns_per_conn=")) {
            // bpftool lists every program on the guest: only twtrace's are counted.
            let Some(family) = families.get(&p) else { continue };
            *costs.entry((b, family.clone())).or_insert(0.0) += ns.parse::<f64>().unwrap_or(0.0);
        }
    }
    if costs.is_empty() {
        bail!("the guest reported no figures:\n{text}");
    }
    // Which backend each family really ran on: a family that could not attach is missing.
    for line in text.lines().filter_map(|l| l.split("VMREADY ").nth(1)) {
        eprintln!("xtask: bench: guest: {line}");
    }
    Ok(costs)
}

pub fn guest_table(costs: &BTreeMap<(String, String), f64>, kernel: &str) -> String {
    let mut t = format!(
        "\nBPF run time per connection by backend, in a {kernel} guest under QEMU (TCG): absolute times under \
         emulation mean little, ratios to the tracepoint backend in the same guest do.\n\n\
         | family | tracepoint µs | fentry µs (ratio) | kprobe µs (ratio) |\n|---|---:|---:|---:|\n"
    );
    let get = |b: &str, f: &str| costs.get(&(b.to_owned(), f.to_owned())).copied();
    let mut totals = [0.0f64; 3];
    for family in ["timewait", "state", "portsearch", "drops"] {
        let tp = get("tracepoint", family);
        let cell = |b: &str| match (get(b, family), tp) {
            (Some(v), Some(tp)) if tp > 0.0 => format!("{:.1} ({:.2})", v / 1e3, v / tp),
            (Some(v), _) => format!("{:.1}", v / 1e3),
            _ => "-".into(),
        };
        for (i, b) in ["tracepoint", "fentry", "kprobe"].iter().enumerate() {
            totals[i] += get(b, family).unwrap_or(0.0);
        }
        // The tracepoint backend's port search has no programs of its own: it runs in the
        // state and timer_start programs, and its cost is in those rows.
        let shared = family == "portsearch" && tp.is_none() && get("fentry", family).is_some();
        t.push_str(&format!(
            "| {family} | {} | {} | {} |\n",
            tp.map_or(if shared { "in the rows above".into() } else { "-".into() }, |v| format!("{:.1}", v / 1e3)),
            cell("fentry"),
            cell("kprobe")
        ));
    }
    t.push_str(&format!(
        "| all | {:.1} | {:.1} ({:.2}) | {:.1} ({:.2}) |\n",
        totals[0] / 1e3,
        totals[1] / 1e3,
        totals[1] / totals[0].max(1.0),
        totals[2] / 1e3,
        totals[2] / totals[0].max(1.0)
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::program_families;

    #[test]
    fn programs_map_to_their_owner_by_the_kernels_short_name() {
        let text = "noise\n\
                    [ 1.2] VMCATALOGUE timewait tracepoint tw_timer_start_btf tp_btf/timer_start\n\
                    VMCATALOGUE state tracepoint tcp_state_change raw_tp/inet_sock_set_state\n\
                    VMCATALOGUE portsearch fentry check_established6_fentry fentry/__inet6_check_established\n\
                    VMCATALOGUE portsearch tracepoint tw_timer_start_btf tp_btf/timer_start\n";
        let families = program_families(text);
        assert_eq!(families["tw_timer_start_"], "timewait", "the owner comes first and is kept");
        assert_eq!(families["tcp_state_chang"], "state");
        assert_eq!(families["check_establish"], "portsearch");
        assert_eq!(families.len(), 3);
    }
}
