//! What each kernel of the VM matrix must support: one table, per test binary (a probe family
//! or a feature of twtrace) and backend. By default every test runs on every backend of every
//! kernel; the table lists the exceptions ("gaps"), each with the kernel fact behind it (the
//! version that added the hook, drop reason or counter) or the lab fact (what the guest lacks).
//!
//! The matrix compares each cell with this table in both directions: a test that skips where
//! the table says it runs is a lost capability (FAIL), and a test that runs where the table
//! says it cannot is a changed kernel or a stale table (FAIL too, with the row to update). So
//! a backend that breaks on one kernel cannot hide behind a skip.

use std::collections::BTreeMap;

use super::protocol::Skip;

pub const BACKENDS: &[&str] = &["fentry", "kprobe", "tracepoint"];
const ALL: &[&str] = BACKENDS;
const FENTRY_KPROBE: &[&str] = &["fentry", "kprobe"];

/// A test that cannot run on a kernel (or in any guest) under some backends, and why.
#[derive(Debug)]
pub struct Gap {
    /// Test binary: `twtrace/tests/<binary>.rs`.
    pub binary: &'static str,
    /// Test function, as libtest names it.
    pub test: &'static str,
    pub backends: &'static [&'static str],
    pub why: &'static str,
}

/// One kernel of the matrix and what it cannot do.
#[derive(Debug)]
pub struct KernelRow {
    /// The matrix's name for it (`cargo xtask test --kernel <name>`).
    pub kernel: &'static str,
    /// Whether it has BTF (`/sys/kernel/btf/vmlinux`): BTF-dependent tests skip only where
    /// this is false. Debian has built every kernel here with BTF.
    pub btf: bool,
    /// Whether its guest carries the lab's tools (`vm::GUEST_TOOLS_EXTRA`): nft, Prometheus and
    /// promtool, curl, openssl, Python's OpenMetrics parser, and this build's veth, nf_tables
    /// and nf_conntrack modules loaded at boot. Without them the [`NO_TOOLS`] gaps apply. They
    /// add about 40 MB to the initramfs, so only the kernel that runs doctor and serve on
    /// fentry and kprobe (plan.rs) has them.
    pub tools: bool,
    pub gaps: &'static [Gap],
}

const fn gap(binary: &'static str, test: &'static str, backends: &'static [&'static str], why: &'static str) -> Gap {
    Gap { binary, test, backends, why }
}

/// Gaps on every kernel: how the tests or the guest are made, not what a kernel has.
pub const EVERY_GUEST: &[Gap] = &[
    gap(
        "timewait",
        "tracepoint_backend_reads_through_btf_where_it_exists",
        FENTRY_KPROBE,
        "tests the tracepoint backend's BTF-typed variants only",
    ),
    gap(
        "record",
        "html_report_renders_with_charts_in_a_browser",
        ALL,
        "no browser in the guest (chromium with its libraries is hundreds of MB; the host runs this test)",
    ),
];

/// Gaps where the guest has no lab tools (a row with `tools: false`): no nft nor the netfilter
/// and veth modules, no Prometheus. A guest with the tools runs all of these.
pub const NO_TOOLS: &[Gap] = &[
    gap("serve", "prometheus_sees_each_namespace_as_ss_does", ALL, NO_PROMETHEUS),
    gap("serve", "tls_and_basic_auth_from_the_web_config_file", ALL, NO_PROMETHEUS),
    gap("serve", "slow_clients_and_sigterm_during_scrapes", ALL, NO_PROMETHEUS),
    gap("serve", "pods_laid_out_as_the_kubelet_does_are_named_in_prometheus", ALL, NO_PROMETHEUS),
    gap(
        "doctor_limits",
        "a_full_conntrack_table_is_named_with_its_own_counts",
        ALL,
        "Debian builds netfilter's connection tracking as modules, and the guest loads none (nor has nft); the host runs this test",
    ),
    gap("doctor_limits", "syns_dropped_by_a_firewall_rule_are_named_with_the_rules_counts", ALL, NO_NFT),
    gap("doctor_limits", "an_overflowing_syn_queue_is_named_with_the_kernels_counts", ALL, NO_NFT),
    gap("doctor_limits", "a_last_ack_meeting_a_full_accept_queue_is_a_drop_event", ALL, NO_NFT),
    gap("doctor_settings", "reuse_on_a_namespace_that_only_accepts_is_named_as_doing_nothing", ALL, NO_VETH),
    gap("doctor_settings", "reuse_is_possible_toward_a_peer_with_timestamps_and_not_toward_one_without", ALL, NO_VETH),
];

/// Scenarios with nftables rules, in a guest without the lab's tools.
const NO_NFT: &str = "nft (nftables) is missing: `cargo xtask setup` installs it on the host; VM guests without the lab's tools have none";

/// Scenarios with two namespaces joined by a veth pair: Debian builds veth as a module, and a
/// guest without the lab's tools loads none; the host runs them. (The timewait binary checks the timestamps each birth
/// carries on every backend, in one namespace.)
const NO_VETH: &str = "no veth device type (a module this kernel did not load); the host runs this test";

/// The exporter's tests run a real Prometheus (and curl, openssl, Python's strict OpenMetrics
/// parser): Debian packages the host installs, in the initramfs of a guest with the tools only.
const NO_PROMETHEUS: &str =
    "no Prometheus, promtool, curl, openssl or Python prometheus-client in the guest; the host runs these tests";

// Kernel facts behind the gaps below (Linux versions):
// - 5.17 added `kfree_skb_reason` and the `reason` field of `skb:kfree_skb`; the RFC 7323
//   reasons (`TCP_RFC7323_PAWS`) came with the TCP drop reasons after that, and 6.16 split
//   `TCP_RFC7323_TW_PAWS` (and the `PAWSTimewait` counter) off for TIME_WAIT sockets.
const PAWS_ESTABLISHED: &str = "no TCP_RFC7323_PAWS drop reason (drop reasons are 5.17+; 6.1 has this one)";
const PAWS_TIME_WAIT: &str = "no TCP_RFC7323_TW_PAWS drop reason / PAWSTimewait counter (6.16+)";

/// The tests that need TIME_WAIT PAWS drops with their own reason (6.16+).
const fn tw_paws(binary: &'static str, test: &'static str) -> Gap {
    gap(binary, test, ALL, PAWS_TIME_WAIT)
}

pub const KERNELS: &[KernelRow] = &[
    KernelRow {
        kernel: "5.10",
        btf: true,
        tools: false,
        gaps: &[
            gap("drops", "ipv4_established_paws_drops_match_counter", ALL, PAWS_ESTABLISHED),
            gap("drops", "ipv6_established_paws_drops_match_counter", ALL, PAWS_ESTABLISHED),
            tw_paws("drops", "ipv4_time_wait_paws_drops_match_counter"),
            tw_paws("drops", "ipv6_time_wait_paws_drops_match_counter"),
            tw_paws("top", "paws_drops_are_attributed_to_their_source"),
            tw_paws("doctor", "paws_drops_from_one_address_are_named_as_nat"),
            gap(
                "namespaces",
                "an_inode_given_to_a_namespace_a_process_made_is_not_the_old_one",
                ALL,
                "no SO_NETNS_COOKIE (5.14+): a namespace on a freed inode held only by processes cannot be told from \
                 the old one",
            ),
            gap(
                "timewait",
                "births_under_port_reuse_churn_equal_the_kernels_count",
                ALL,
                "5.10 counts TW/TWKilled in tw_timer_handler, at expiry, so they do not rise during the 3 s \
                 churn: no ground truth for births (6.1 and later count them in __inet_twsk_schedule)",
            ),
            gap(
                "scale",
                "twenty_thousand_destinations_are_counted_exactly",
                ALL,
                "5.10 counts TW at expiry, not at birth: no ground truth for births within the test",
            ),
        ],
    },
    KernelRow {
        kernel: "6.1",
        btf: true,
        tools: false,
        gaps: &[
            tw_paws("drops", "ipv4_time_wait_paws_drops_match_counter"),
            tw_paws("drops", "ipv6_time_wait_paws_drops_match_counter"),
            tw_paws("top", "paws_drops_are_attributed_to_their_source"),
            tw_paws("doctor", "paws_drops_from_one_address_are_named_as_nat"),
        ],
    },
    KernelRow {
        kernel: "6.12",
        btf: true,
        tools: false,
        gaps: &[
            tw_paws("drops", "ipv4_time_wait_paws_drops_match_counter"),
            tw_paws("drops", "ipv6_time_wait_paws_drops_match_counter"),
            tw_paws("top", "paws_drops_are_attributed_to_their_source"),
            tw_paws("doctor", "paws_drops_from_one_address_are_named_as_nat"),
        ],
    },
    // Everything of 6.16+: the TIME_WAIT PAWS tests (drops, top) run on all three backends
    // here, and the port search hooks `__inet_hash_connect` with its 2025 `hash_port0`
    // argument (fexit chosen by the function's arity in BTF). Its guest has the lab's tools:
    // doctor's firewall, conntrack, listener and veth scenarios and the whole exporter run
    // here on fentry and kprobe.
    KernelRow { kernel: "6.18", btf: true, tools: true, gaps: &[] },
    // The newest Debian kernel (on demand, not pinned): the table expects everything.
    KernelRow { kernel: "sid", btf: true, tools: true, gaps: &[] },
];

pub fn row(kernel: &str) -> Option<&'static KernelRow> {
    KERNELS.iter().find(|k| k.kernel == kernel)
}

/// The tests of `binary` that the table says cannot run under `backend` on `kernel`, with why.
/// `None` for a kernel the table does not know (a local image): nothing to compare with.
pub fn expected_gaps(kernel: &str, binary: &str, backend: &str) -> Option<BTreeMap<&'static str, &'static str>> {
    let row = row(kernel)?;
    Some(
        EVERY_GUEST
            .iter()
            .chain(if row.tools { &[][..] } else { NO_TOOLS })
            .chain(row.gaps)
            .filter(|g| g.binary == binary && g.backends.contains(&backend))
            .map(|g| (g.test, g.why))
            .collect(),
    )
}

/// Unit tests that read the running kernel's BTF, run once per kernel in the guest (backend
/// `any`): (row name, libtest path of the test).
pub const BTF_UNIT_TESTS: &[(&str, &str)] = &[("unit-btf", "kernel::btf::tests::running_kernel_offsets")];
pub const ANY_BACKEND: &str = "any";
const NO_BTF: &str = "the table says this kernel has no BTF";

/// What the table expects of a BTF unit-test row on `kernel`: nothing skips where the kernel
/// has BTF; the test skips where it has none. `None` for a kernel the table does not know.
pub fn expected_unit_gaps(kernel: &str, test: &'static str) -> Option<BTreeMap<&'static str, &'static str>> {
    let row = row(kernel)?;
    let name = test.rsplit("::").next().unwrap_or(test);
    Some(if row.btf { BTreeMap::new() } else { [(name, NO_BTF)].into() })
}

/// Environment for the guest of `kernel` (its kernel command line): tells BTF-dependent tests
/// that a missing BTF is expected here, so they skip instead of failing.
pub fn guest_env(kernel: &str) -> Vec<(&'static str, &'static str)> {
    match row(kernel) {
        Some(r) if !r.btf => vec![(super::protocol::NO_BTF_ENV, NO_BTF)],
        _ => Vec::new(),
    }
}

/// How one cell (kernel, binary, backend) differs from the table: empty when it matches.
pub fn compare(expected: &BTreeMap<&str, &str>, skipped: &[Skip]) -> Vec<String> {
    let mut changes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in skipped {
        if !seen.insert(s.test.as_str()) {
            continue;
        }
        if !expected.contains_key(s.test.as_str()) {
            changes.push(format!("{} did not run, but the table says it must: {}", s.test, s.reason));
        }
    }
    for (test, why) in expected {
        if !seen.contains(test) {
            changes.push(format!(
                "{test} ran, but the table says it cannot ({why}): the kernel gained it or the table is stale"
            ));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(test: &str, reason: &str) -> Skip {
        Skip { test: test.into(), family: "drops".into(), backend: "fentry".into(), reason: reason.into() }
    }

    #[test]
    fn every_kernel_of_the_default_matrix_has_a_row() {
        for k in super::super::matrix::DEFAULT_KERNELS {
            assert!(row(k).is_some(), "{k} has no row");
        }
        let mut names: Vec<_> = KERNELS.iter().map(|k| k.kernel).collect();
        names.dedup();
        assert_eq!(names.len(), KERNELS.len(), "one row per kernel");
    }

    #[test]
    fn every_gap_names_known_backends_and_a_reason() {
        for g in KERNELS.iter().flat_map(|k| k.gaps).chain(EVERY_GUEST).chain(NO_TOOLS) {
            assert!(!g.backends.is_empty() && g.backends.iter().all(|b| BACKENDS.contains(b)), "{g:?}");
            assert!(!g.why.is_empty(), "{g:?}");
        }
    }

    /// A gap names a test of its binary: moving a test to another file moves its gaps too.
    #[test]
    fn every_gap_names_a_test_of_its_binary() {
        let tests = crate::workspace_root().join("twtrace/tests");
        for g in KERNELS.iter().flat_map(|k| k.gaps).chain(EVERY_GUEST) {
            let source = std::fs::read_to_string(tests.join(format!("{}.rs", g.binary)))
                .unwrap_or_else(|e| panic!("{g:?}: twtrace/tests/{}.rs: {e}", g.binary));
            assert!(
                source.contains(&format!("fn {}(", g.test)),
                "{g:?}: no such test in twtrace/tests/{}.rs",
                g.binary
            );
        }
    }

    /// 6.16+ kernels run the TIME_WAIT PAWS tests on every backend; older ones do not.
    #[test]
    fn time_wait_paws_runs_on_the_6_18_kernel_only() {
        for b in BACKENDS {
            assert!(expected_gaps("6.18", "drops", b).unwrap().is_empty());
            assert!(expected_gaps("6.12", "drops", b).unwrap().contains_key("ipv4_time_wait_paws_drops_match_counter"));
        }
        assert_eq!(expected_gaps("/some/bzImage", "drops", "fentry"), None);
    }

    /// doctor and serve run in full where the guest has the tools, and only there.
    #[test]
    fn doctor_and_serve_run_in_full_where_the_guest_has_the_tools() {
        for b in FENTRY_KPROBE {
            assert_eq!(expected_gaps("6.18", "doctor", b).unwrap(), BTreeMap::new());
            assert_eq!(expected_gaps("6.18", "serve", b).unwrap(), BTreeMap::new());
            assert!(
                expected_gaps("6.12", "serve", b).unwrap().contains_key("tls_and_basic_auth_from_the_web_config_file")
            );
        }
        assert!(KERNELS.iter().any(|k| k.tools && super::super::matrix::DEFAULT_KERNELS.contains(&k.kernel)));
    }

    #[test]
    fn btf_unit_tests_skip_only_without_btf() {
        for k in KERNELS {
            let gaps = expected_unit_gaps(k.kernel, BTF_UNIT_TESTS[0].1).unwrap();
            assert_eq!(gaps.is_empty(), k.btf, "{}", k.kernel);
            assert_eq!(guest_env(k.kernel).is_empty(), k.btf, "{}", k.kernel);
        }
        let changes =
            compare(&expected_unit_gaps("6.1", BTF_UNIT_TESTS[0].1).unwrap(), &[skip("running_kernel_offsets", "x")]);
        assert_eq!(changes.len(), 1, "a BTF test skipping on a kernel with BTF is a change");
    }

    #[test]
    fn a_cell_like_the_table_has_no_changes() {
        let expected = expected_gaps("6.12", "drops", "kprobe").unwrap();
        let skipped: Vec<Skip> = expected.keys().map(|t| skip(t, "whatever twtrace said")).collect();
        // The same test skipping twice (two tracers in one test) is one skip.
        let twice: Vec<Skip> = skipped.iter().chain(&skipped).cloned().collect();
        assert_eq!(compare(&expected, &twice), Vec::<String>::new());
    }

    /// The example: fentry breaks on 6.12, the state test turns into a skip.
    #[test]
    fn a_lost_capability_is_a_change() {
        let expected = expected_gaps("6.12", "state", "fentry").unwrap();
        let changes = compare(&expected, &[skip("states_match_ss", "state: OFF (fentry: attach failed)")]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].contains("states_match_ss did not run, but the table says it must"), "{changes:?}");
        assert!(changes[0].contains("attach failed"), "the cell's message carries twtrace's reason: {changes:?}");
    }

    #[test]
    fn a_gained_capability_is_a_change_too() {
        let expected = expected_gaps("6.12", "drops", "tracepoint").unwrap();
        let changes = compare(&expected, &[skip("ipv4_time_wait_paws_drops_match_counter", "no reason")]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].starts_with("ipv6_time_wait_paws_drops_match_counter ran, but the table says it cannot"));
        assert!(changes[0].contains("6.16+"), "{changes:?}");
    }
}
