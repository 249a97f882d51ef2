//! Installs what a fresh machine lacks, and nothing else. Each requirement is checked cheaply
//! first, so a machine that has everything is done in well under two seconds.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{describe, run_cmd};

/// bpf-linker 0.10.4 loads the LLVM of the rustc that invokes it, so it always matches the
/// nightly that builds the eBPF crate (a linker with an older LLVM than the compiler fails with
/// `Invalid record`). Newer releases link a system LLVM instead, which Debian 12 lacks.
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the build, the tests and twtrace's own use need, with what needs them.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip netns and ss for the integration tests"),
    ("procps", "sysctl inside test network namespaces"),
    ("bpftool", "reads the kernel's own loss counter in the loss and doctor tests"),
    ("qemu-system-x86", "the VM lab boots other kernels under QEMU"),
    ("busybox-static", "the VM guests' init and shell"),
    ("cpio", "packs the VM guests' initramfs"),
    ("tmux", "drives twtrace top in a real terminal in the tests"),
    ("chromium", "renders twtrace report's HTML page in the tests (headless)"),
    ("bpftrace", "the reference tracer `cargo xtask bench` compares twtrace with"),
    ("prometheus", "the real Prometheus server (and promtool) the serve test scrapes with"),
    ("python3-prometheus-client", "the strict OpenMetrics parser the serve test checks the exposition with"),
    ("openssl", "makes the serve test's TLS certificate"),
    ("curl", "the serve test's HTTP(S) client"),
    ("podman", "runs the OCI image `cargo xtask dist` builds, as the packaging test's last check"),
    ("runc", "the runtime that test runs the image with (crun cannot set podman's rlimits here)"),
    ("catatonit", "podman builds the pause image of the DaemonSet's played pod from it (only Recommended by podman)"),
    ("python3-venv", "the virtualenv xtask's deploy test installs kubernetes-validate (PyPI) into"),
    (
        "nftables",
        "rules in test namespaces: connection tracking (conntrack full), SYNs and ACKs dropped (doctor's firewall and listener scenarios)",
    ),
];

pub fn ensure() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut did = Vec::new();
    ensure_nightly(&mut did)?;
    ensure_bpf_linker(&mut did)?;
    ensure_apt_packages(&mut did)?;
    if did.is_empty() {
        eprintln!("xtask: setup: nothing to do ({:.2}s)", started.elapsed().as_secs_f64());
    } else {
        eprintln!("xtask: setup: {} ({:.1}s)", did.join("; "), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The eBPF crate builds with nightly (`-Z build-std=core`), which needs rust-src; the eBPF
/// crate is linted with nightly clippy.
fn ensure_nightly(did: &mut Vec<String>) -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !installed.lines().any(|l| l.starts_with("nightly")) {
        run_cmd(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("installing the nightly toolchain (needs the Rust distribution server)")?;
        did.push("installed nightly".into());
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            run_cmd(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
            did.push(format!("added {component} to nightly"));
        }
    }
    let stable = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in ["clippy", "rustfmt"] {
        if !stable.lines().any(|l| l.starts_with(component)) {
            run_cmd(Command::new("rustup").args(["component", "add", component]))?;
            did.push(format!("added {component}"));
        }
    }
    Ok(())
}

fn ensure_bpf_linker(did: &mut Vec<String>) -> anyhow::Result<()> {
    let current = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if current.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
        return Ok(());
    }
    run_cmd(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]))?;
    did.push(format!("installed bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}

fn ensure_apt_packages(did: &mut Vec<String>) -> anyhow::Result<()> {
    let names: Vec<&str> = APT_PACKAGES.iter().map(|(name, _)| *name).collect();
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(&names)
        .output()
        .context("dpkg-query (twtrace's setup expects Debian or Ubuntu)")?;
    let text = String::from_utf8_lossy(&status.stdout);
    let missing: Vec<&str> =
        names.iter().copied().filter(|n| !text.lines().any(|l| l == format!("{n} installed"))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; install them with `sudo apt-get install {}` (or run this as root)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    // An apt cache that was never filled finds nothing: update first when it looks empty.
    if !Path::new("/var/lib/apt/lists")
        .read_dir()
        .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("_Packages"))))
        .unwrap_or(false)
    {
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    }
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing);
    if run_cmd(&mut install).is_err() {
        // Stale lists are the usual cause: refresh once and retry.
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        run_cmd(&mut install).with_context(|| format!("`{}`", describe(&install)))?;
    }
    did.push(format!("installed {}", missing.join(", ")));
    Ok(())
}

pub fn is_root() -> bool {
    // /proc/self/status Uid line: real, effective, ...
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", describe(cmd), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
