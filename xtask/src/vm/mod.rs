//! The VM lab: boots kernels under QEMU with a tiny busybox init that runs one command and
//! prints one verdict line on the serial console.

pub mod expect;
pub mod kernels;
pub mod matrix;
pub mod plan;
pub mod protocol;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{run_cmd, workspace_root};

/// Host tools the integration tests run inside the guest, copied with their libraries. tmux
/// drives `twtrace top` in a real terminal (tests/top.rs).
const GUEST_TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/bin/ss", "/usr/sbin/sysctl", "/usr/sbin/bpftool", "/usr/bin/tmux"];

/// Data files the guest tools need, copied when the host has them: tmux wants a UTF-8 locale
/// (glibc's C.UTF-8, from libc-bin) and the terminfo entries of its own terminal and of the
/// outer one (ncurses-base). Debian 12 paths.
const GUEST_DATA: &[&str] = &[
    "/usr/lib/locale/C.utf8",
    "/lib/terminfo/t/tmux",
    "/lib/terminfo/t/tmux-256color",
    "/lib/terminfo/s/screen",
    "/lib/terminfo/s/screen-256color",
    "/lib/terminfo/x/xterm",
    "/lib/terminfo/x/xterm-256color",
];

/// The lab's tools, for a guest whose kernel row has `tools` (expect.rs): copied with their
/// libraries. nft for doctor's firewall, conntrack and listener scenarios; Debian's Prometheus
/// and promtool (Go, about 100 MB together: hence not in every guest), curl and openssl for
/// serve's tests.
const GUEST_TOOLS_EXTRA: &[&str] =
    &["/usr/sbin/nft", "/usr/bin/prometheus", "/usr/bin/promtool", "/usr/bin/curl", "/usr/bin/openssl"];

/// Data files of those tools: openssl's configuration (where its OPENSSLDIR looks), and the
/// names nft resolves.
const GUEST_DATA_EXTRA: &[(&str, &str)] = &[
    ("/usr/lib/ssl/openssl.cnf", "/usr/lib/ssl/openssl.cnf"),
    ("/etc/protocols", "/etc/protocols"),
    ("/etc/services", "/etc/services"),
];

/// The strict OpenMetrics check of serve's test is the Python client's parser (Debian's
/// python3-prometheus-client), as on the host. The guest gets the interpreter and exactly the
/// files that importing and running the parser loads on the host (each module's source and
/// its compiled form, mtimes kept so that the compiled form stays valid): about 12 MB, not
/// the whole standard library.
const PYTHON: &str = "/usr/bin/python3";
const PYTHON_FILES: &str = "import sys, importlib.util, os
from prometheus_client.openmetrics.parser import text_string_to_metric_families as p
list(p('# TYPE a counter\\na_total 1\\n# EOF\\n'))
for m in list(sys.modules.values()):
    f = getattr(m, '__file__', None)
    if not f:
        continue
    print(f)
    if f.endswith('.py'):
        c = importlib.util.cache_from_source(f)
        if os.path.exists(c):
            print(c)
";

/// The guest's init (busybox sh): one booted line, one exit line, power off.
const INIT: &str = include_str!("guest/init.sh");

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The guest command ran and exited with this status.
    Exited(i32),
    /// The kernel panicked (or QEMU died) before the command finished.
    Crashed(String),
    /// Nothing conclusive before the deadline: QEMU was killed.
    TimedOut,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(0) => write!(f, "passed"),
            Self::Exited(rc) => write!(f, "failed (exit status {rc})"),
            Self::Crashed(why) => write!(f, "crashed ({why})"),
            Self::TimedOut => write!(f, "timed out"),
        }
    }
}

/// Files to place in the guest: host path → guest path (same path unless stated).
#[derive(Default)]
pub struct GuestFiles {
    files: Vec<(PathBuf, PathBuf)>,
    /// Generated files: guest path → contents.
    contents: Vec<(PathBuf, String)>,
}

impl GuestFiles {
    /// At the same absolute path as on the host (test binaries find twtrace through the path
    /// baked in at compile time).
    pub fn same_path(&mut self, path: &Path) {
        self.files.push((path.to_owned(), path.to_owned()));
    }

    pub fn at(&mut self, host: &Path, guest: &Path) {
        self.files.push((host.to_owned(), guest.to_owned()));
    }

    /// A file made here, with these contents.
    pub fn write(&mut self, guest: &Path, contents: impl Into<String>) {
        self.contents.push((guest.to_owned(), contents.into()));
    }
}

/// The lab's tools for a kernel's guest ([`GUEST_TOOLS_EXTRA`], Python's parser, serve's
/// deploy/ files and `modules`), packed as an initramfs of their own: the kernel unpacks
/// concatenated archives one after the other, so a guest with the tools boots the base
/// archive followed by this one ([`initramfs_with`]).
pub fn build_tools_cpio(modules: &kernels::GuestModules, out: &Path) -> anyhow::Result<()> {
    let root = out.with_extension("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc"))?;
    let mut libraries = BTreeSet::new();
    for tool in GUEST_TOOLS_EXTRA.iter().chain([&PYTHON]) {
        copy(Path::new(tool), &root.join(tool.trim_start_matches('/')))?;
        libraries.extend(shared_libraries(Path::new(tool))?);
    }
    for (host, guest) in GUEST_DATA_EXTRA {
        copy(Path::new(host), &root.join(guest.trim_start_matches('/')))?;
    }
    let listed = Command::new(PYTHON).args(["-c", PYTHON_FILES]).output().context("python3")?;
    if !listed.status.success() {
        bail!(
            "the OpenMetrics parser does not run on this host (`cargo xtask setup` installs \
             python3-prometheus-client): {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
    for file in String::from_utf8_lossy(&listed.stdout).lines().map(Path::new) {
        let to = root.join(file.strip_prefix("/").unwrap_or(file));
        copy(file, &to)?;
        // A compiled module is used only while its source's mtime matches the one it records.
        let modified = std::fs::metadata(file)?.modified()?;
        std::fs::File::options().write(true).open(&to)?.set_modified(modified)?;
        if file.extension().is_some_and(|e| e == "so") {
            libraries.extend(shared_libraries(file)?);
        }
    }
    for lib in &libraries {
        copy(lib, &root.join(lib.strip_prefix("/").unwrap_or(lib)))?;
    }
    // serve's test reads the deploy/ files at the path it was built with,
    // `<workspace>/twtrace/../deploy`: that path resolves only if twtrace/ exists too.
    let deploy = workspace_root().join("deploy");
    copy_tree(&deploy, &root.join(deploy.strip_prefix("/").unwrap_or(&deploy)))?;
    let crate_dir = workspace_root().join("twtrace");
    std::fs::create_dir_all(root.join(crate_dir.strip_prefix("/").unwrap_or(&crate_dir)))?;
    copy_tree(&modules.root, &root)?;
    std::fs::write(
        root.join("etc/twtrace-modules"),
        modules.load_order.iter().map(|m| format!("{m}\n")).collect::<String>(),
    )?;
    pack(&root, out)
}

/// `base` followed by `extra`, as one initramfs for QEMU's `-initrd`, written to `out`.
pub fn initramfs_with(base: &Path, extra: &Path, out: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(out)?;
    for part in [base, extra] {
        std::io::copy(&mut std::fs::File::open(part)?, &mut file)?;
    }
    Ok(())
}

/// The initramfs for a guest of `spec` (built `build`): `base` as is, or with the lab's tools
/// where the table says the kernel's guest has them (expect.rs), into `work`.
pub fn initramfs_for(spec: &str, build: &str, base: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    if !expect::row(spec).is_some_and(|r| r.tools) {
        return Ok(base.to_owned());
    }
    let kernel = kernels::KernelSpec::parse(spec)?;
    let modules = kernels::guest_modules(&kernel, build)?;
    let name = kernel.label().replace(['/', ' '], "_");
    let tools = work.join(format!("tools-{name}.cpio.gz"));
    build_tools_cpio(&modules, &tools)?;
    let out = work.join(format!("initramfs-{name}.cpio.gz"));
    initramfs_with(base, &tools, &out)?;
    let _ = std::fs::remove_file(&tools);
    Ok(out)
}

/// Builds a gzip'd newc initramfs: busybox, the guest tools with their libraries, `files`, and
/// an init that runs `script` (a shell script) and reports its status.
pub fn build_initramfs(files: &GuestFiles, script: &str, out: &Path) -> anyhow::Result<()> {
    let root = out.with_extension("root");
    let _ = std::fs::remove_dir_all(&root);
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "lib64"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    let mut libraries = BTreeSet::new();
    for tool in GUEST_TOOLS {
        copy(Path::new(tool), &root.join(tool.trim_start_matches('/')))?;
        libraries.extend(shared_libraries(Path::new(tool))?);
    }
    for lib in &libraries {
        copy(lib, &root.join(lib.strip_prefix("/").unwrap_or(lib)))?;
    }
    for data in GUEST_DATA.iter().map(Path::new).filter(|p| p.exists()) {
        copy_tree(data, &root.join(data.strip_prefix("/").unwrap_or(data)))?;
    }
    for (host, guest) in &files.files {
        copy(host, &root.join(guest.strip_prefix("/").unwrap_or(guest)))?;
    }
    for (guest, contents) in &files.contents {
        let path = root.join(guest.strip_prefix("/").unwrap_or(guest));
        std::fs::create_dir_all(path.parent().expect("guest paths are absolute"))?;
        std::fs::write(path, contents)?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(root.join("etc/twtrace-protocol"), protocol::shell_definitions())?;
    std::fs::write(root.join("command.sh"), script)?;
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    pack(&root, out)
}

/// Packs the tree at `root` as a gzip'd newc archive at `out`, and removes the tree.
fn pack(root: &Path, out: &Path) -> anyhow::Result<()> {
    let pack = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        out.display()
    );
    run_cmd(Command::new("sh").args(["-c", &pack]))?;
    std::fs::remove_dir_all(root)?;
    Ok(())
}

/// A file, or a directory with everything under it.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        copy(from, to)
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Follow symlinks: the guest gets the file itself.
    std::fs::copy(from, to).with_context(|| format!("copying {} into the guest", from.display()))?;
    Ok(())
}

/// The shared libraries (and the loader) a dynamic executable needs, from ldd.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// What one boot ended with.
#[derive(Debug)]
pub struct Boot {
    pub verdict: Verdict,
    /// The build that ran, as the guest saw it (`uname -r | uname -v`: Debian's `uname -v`
    /// names the package version), or `None` if init never started.
    pub build: Option<String>,
}

/// Boots `kernel` with `initramfs`, streams the console (each line passed to `on_line`), and
/// returns the verdict. QEMU is killed at `timeout`.
pub fn boot(kernel: &Path, initramfs: &Path, timeout: Duration, on_line: impl FnMut(&str)) -> anyhow::Result<Boot> {
    boot_with(kernel, initramfs, &[], timeout, on_line)
}

/// [`boot`] with `NAME=value` pairs on the kernel command line: the kernel hands those it does
/// not know to init as environment variables (values without spaces).
pub fn boot_with(
    kernel: &Path,
    initramfs: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<Boot> {
    let mut append = "console=ttyS0 panic=-1 oops=panic quiet loglevel=4".to_owned();
    for (name, value) in env {
        append.push_str(&format!(" {name}={}", value.replace(char::is_whitespace, "_")));
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    // KVM does not work on this machine kind (KERNEL-NOTES): software emulation, always.
    // Single-threaded TCG: with multi-threaded TCG a 7.2 guest intermittently took an int3
    // Oops in run_timer_softirq during early boot (kernel text patching racing with the
    // other vCPU). Two vCPUs are kept, scheduled round-robin on one host thread.
    qemu.args(["-accel", "tcg,thread=single", "-cpu", "max", "-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(&append)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = qemu.spawn().context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let tx_err = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx_err.send(format!("qemu: {l}"))))
    });
    let deadline = Instant::now() + timeout;
    let mut verdict = None;
    let mut build = None;
    let mut panic_line = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_owned();
                on_line(&line);
                if let Some(rc) = line.strip_prefix(protocol::EXIT) {
                    verdict = Some(Verdict::Exited(rc.trim().parse().unwrap_or(-1)));
                } else if let Some(at) = line.find(protocol::BOOTED) {
                    // Anywhere in the line: early in boot a kernel message can share it.
                    build = Some(line[at + protocol::BOOTED.len()..].trim().to_owned());
                } else if line.contains("Kernel panic") && panic_line.is_none() {
                    panic_line = Some(line.clone());
                }
            }
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Boot { verdict: verdict.unwrap_or(Verdict::TimedOut), build });
            }
        }
    }
    let status = child.wait()?;
    let verdict = verdict.unwrap_or_else(|| {
        Verdict::Crashed(panic_line.unwrap_or_else(|| format!("QEMU exited ({status}) without a verdict")))
    });
    Ok(Boot { verdict, build })
}

/// Static builds for guests (no shared libraries there but the tools').
pub struct StaticBuild {
    pub twtrace: PathBuf,
    /// Integration test binaries: (name, binary).
    pub tests: Vec<(String, PathBuf)>,
    /// twtrace's unit tests (the library's test binary), built by the same `cargo test`.
    pub unit: PathBuf,
}

const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
const STATIC_ENV: [(&str, &str); 2] =
    [("RUSTFLAGS", "-C target-feature=+crt-static"), ("CARGO_PROFILE_RELEASE_DEBUG", "false")];

/// A static release build of twtrace alone, for guests (and for studies on the host, so both
/// run the same binary).
pub fn build_static_twtrace() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    run_cmd(
        Command::new("cargo")
            .args(["build", "--release", "--package", "twtrace", "--target", STATIC_TARGET])
            .envs(STATIC_ENV)
            .current_dir(&root),
    )?;
    Ok(crate::target_dir().join(STATIC_TARGET).join("release/twtrace"))
}

/// Static builds of twtrace, of the integration test binaries and of the library's unit tests,
/// all from one `cargo test --no-run`: twtrace is the binary it builds for the tests
/// (`CARGO_BIN_EXE_twtrace`). A `cargo build` of twtrace first, as before, cost CI 260 s on
/// top of the test build's 220 s, because the dev-dependencies change the features of shared
/// dependencies (serde, aya, rustls, ...) and cargo builds those twice.
pub fn build_static() -> anyhow::Result<StaticBuild> {
    const TARGET: &str = STATIC_TARGET;
    let envs = STATIC_ENV;
    let root = workspace_root();
    let started = std::time::Instant::now();
    let out = Command::new("cargo")
        .args([
            // Overflow checks in twtrace's own code, as a debug build has them: these are the
            // host's test binaries too (`xtask/src/test.rs`). Not through the environment,
            // which the eBPF crate's build would inherit.
            "--config",
            "profile.release.package.twtrace.overflow-checks=true",
            "test",
            "--release",
            "--package",
            "twtrace",
            "--tests",
            "--no-run",
            "--message-format=json",
            "--target",
            TARGET,
        ])
        .envs(envs)
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .context("building test binaries")?;
    if !out.status.success() {
        bail!("building the static test binaries failed");
    }
    eprintln!("xtask: ({:.0}s) static test build (host and guests)", started.elapsed().as_secs_f64());
    let mut tests = Vec::new();
    let mut unit = None;
    let mut twtrace = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) else { continue };
        let kind = &msg["target"]["kind"][0];
        if kind == "test" && msg["target"]["src_path"].as_str().is_some_and(|p| p.contains("/tests/")) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        } else if kind == "lib" && msg["profile"]["test"] == true {
            unit = Some(PathBuf::from(exe));
        } else if kind == "bin" && name == "twtrace" && msg["profile"]["test"] == false {
            twtrace = Some(PathBuf::from(exe));
        }
    }
    tests.sort();
    let unit = unit.context("cargo built no unit-test binary for twtrace's library")?;
    let twtrace = twtrace.context("cargo built no twtrace binary for the integration tests")?;
    Ok(StaticBuild { twtrace, tests, unit })
}

/// Static twtrace (at its host path, where the tests look, and on PATH) and the test binaries,
/// as guest files; also returns what was built.
pub fn guest_files() -> anyhow::Result<(GuestFiles, StaticBuild)> {
    let build = build_static()?;
    let mut files = GuestFiles::default();
    files.same_path(&build.twtrace);
    files.at(&build.twtrace, Path::new("/usr/bin/twtrace"));
    for (_, test) in &build.tests {
        files.same_path(test);
    }
    files.same_path(&build.unit);
    Ok((files, build))
}

/// `cargo xtask vm --kernel K -- command`: boot each kernel and run the command in it.
pub fn run(kernels: &[String], command: &[String], timeout: Duration, refresh: bool) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    if command.is_empty() {
        bail!("nothing to run: `cargo xtask vm --kernel 6.1 -- twtrace probes`");
    }
    let (files, _) = guest_files()?;
    let script = format!("{}\n", command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
    let work = kernels::cache_dir().join("run");
    std::fs::create_dir_all(&work)?;
    let base = work.join("initramfs.cpio.gz");
    build_initramfs(&files, &script, &base)?;
    let mut failed = false;
    for spec_text in kernels {
        let spec = kernels::KernelSpec::parse(spec_text)?;
        let (image, version) = kernels::kernel_image(&spec, refresh)?;
        let initramfs = initramfs_for(spec_text, &version, &base, &work)?;
        eprintln!("xtask: vm: booting {} ({version})", spec.label());
        let stdout = std::io::stdout();
        let outcome = boot(&image, &initramfs, timeout, |line| {
            let _ = writeln!(stdout.lock(), "[{}] {line}", spec.label());
        })?;
        eprintln!("xtask: vm: {}: {}", spec.label(), outcome.verdict);
        failed |= outcome.verdict != Verdict::Exited(0);
    }
    if failed {
        bail!("a guest did not pass");
    }
    Ok(())
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Real boots with deliberately broken guests: each must end with the right verdict, well
/// within its timeout. They need QEMU (installed by setup) and fetch the 6.1 kernel once.
#[cfg(test)]
mod tests {
    use super::*;

    fn guest(name: &str, script: &str) -> (PathBuf, PathBuf) {
        let (kernel, _) =
            kernels::kernel_image(&kernels::KernelSpec::parse("6.1").unwrap(), false).expect("6.1 kernel");
        let dir = kernels::cache_dir().join("selftest");
        std::fs::create_dir_all(&dir).unwrap();
        let initramfs = dir.join(format!("{name}.cpio.gz"));
        build_initramfs(&GuestFiles::default(), script, &initramfs).unwrap();
        (kernel, initramfs)
    }

    fn timed_boot(kernel: &Path, initramfs: &Path, timeout: Duration) -> (Verdict, Duration) {
        let started = Instant::now();
        let verdict = boot(kernel, initramfs, timeout, |_| {}).unwrap().verdict;
        (verdict, started.elapsed())
    }

    #[test]
    fn a_failing_command_reports_its_status_and_the_build_that_ran() {
        let (kernel, initramfs) = guest("exit7", "exit 7\n");
        let outcome = boot(&kernel, &initramfs, Duration::from_secs(120), |_| {}).unwrap();
        assert_eq!(outcome.verdict, Verdict::Exited(7));
        // `6.1.0-NN-cloud-amd64 | #1 SMP PREEMPT_DYNAMIC Debian 6.1.x-y (date)`
        let build = outcome.build.expect("the booted line");
        assert!(build.starts_with("6.1.") && build.contains(" | #1 ") && build.contains("Debian 6.1."), "{build}");
    }

    #[test]
    fn a_kernel_panic_is_a_crash_verdict() {
        let (kernel, initramfs) = guest("panic", "echo c > /proc/sysrq-trigger\nsleep 600\n");
        let (verdict, took) = timed_boot(&kernel, &initramfs, Duration::from_secs(120));
        assert!(matches!(&verdict, Verdict::Crashed(why) if why.contains("Kernel panic")), "{verdict:?}");
        assert!(took < Duration::from_secs(100), "panic=-1 -no-reboot ends QEMU at once, took {took:?}");
    }

    #[test]
    fn a_hanging_guest_is_cut_off_at_its_timeout() {
        let (kernel, initramfs) = guest("hang", "sleep 600\n");
        let (verdict, took) = timed_boot(&kernel, &initramfs, Duration::from_secs(30));
        assert_eq!(verdict, Verdict::TimedOut);
        assert!(took < Duration::from_secs(40), "{took:?}");
    }

    #[test]
    fn a_kernel_that_cannot_boot_fails_fast() {
        let dir = kernels::cache_dir().join("selftest");
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("not-a-kernel");
        std::fs::write(&garbage, b"this is not a kernel image").unwrap();
        let initramfs = dir.join("garbage.cpio.gz");
        build_initramfs(&GuestFiles::default(), "exit 0\n", &initramfs).unwrap();
        let (verdict, took) = timed_boot(&garbage, &initramfs, Duration::from_secs(60));
        assert!(matches!(verdict, Verdict::Crashed(_)), "{verdict:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}
