//! The VM test matrix: integration test binaries under forced backends inside each kernel
//! (which cells: `plan.rs`); one table of kernel x test binary x backend, each cell judged
//! against what `expect.rs` says that kernel must support.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::bail;

pub use super::expect::BACKENDS;
use super::{
    boot_with, build_initramfs,
    expect::{self, ANY_BACKEND, BTF_UNIT_TESTS},
    kernels, plan,
    protocol::{self, Skip},
};

/// What `cargo xtask test` (and so CI) runs: the oldest LTS kernel Debian still builds, the
/// LTS kernels of bookworm and of trixie (these three follow their Debian meta packages, and
/// every run prints the builds it used), and 6.18, pinned to one exact build in kernels.rs.
/// The host's own kernel is 6.18 too, but it allows only the tracepoint backend: the 6.18
/// guest is where the TCP of 6.16+ (TIME_WAIT PAWS drops and their counter, the newer drop
/// reasons, `hash_port0`) meets fentry and kprobe, and its guest carries the lab's tools
/// (expect.rs) so that doctor and serve run in full there. `sid` is on demand (`--kernel sid`).
pub const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12", "6.18"];

/// Lanes a guest runs side by side (`guest/matrix.sh`), three test threads each.
const LANES: usize = 4;

/// Guests per kernel, each with its share of the kernel's cells (`plan::shards`).
const SHARDS: usize = 2;

/// The guest's environment variable that names its plan file (`/matrix/plan-N`).
const PLAN_ENV: &str = "TWTRACE_MATRIX_PLAN";

/// The guest side of the matrix (runs as /command.sh).
const GUEST_SCRIPT: &str = include_str!("guest/matrix.sh");

/// One cell: a test binary under one forced backend on one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Every test ran and passed, as the table says.
    Pass,
    /// Passed; the tests the table says cannot run here skipped, and only those.
    PassWithGaps(Vec<String>),
    /// Every test skipped, as the table says.
    Unsupported(Vec<String>),
    /// The tests passed but what ran differs from the table: a failure.
    Changed(Vec<String>),
    /// A test failed (exit status of the binary); differences from the table, if any.
    Fail(i32, Vec<String>),
    /// The binary never reported (the guest crashed, hung, or the kernel was not fetched).
    NoResult(String),
    /// A kernel the table does not know (a local image): skips are listed, not judged.
    Unjudged(Vec<String>),
}

impl Cell {
    pub fn failed(&self) -> bool {
        matches!(self, Self::Changed(_) | Self::Fail(..) | Self::NoResult(_))
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that the table's column widths apply.
        f.pad(match self {
            Self::Pass => "pass",
            Self::PassWithGaps(_) => "pass*",
            Self::Unsupported(_) => "unsupported*",
            Self::Changed(_) => "CHANGED",
            Self::Fail(..) => "FAIL",
            Self::NoResult(_) => "NO RESULT",
            Self::Unjudged(n) if n.is_empty() => "pass?",
            Self::Unjudged(_) => "pass?*",
        })
    }
}

/// What one binary reported under one backend.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub rc: i32,
    /// Tests libtest counted as passed (skipped ones included: they return early).
    pub passed: u64,
    pub skips: Vec<Skip>,
    /// Its wall time in the guest, whole seconds (the guest's clock).
    pub secs: Option<u64>,
}

/// Judges one cell against the table (`expected`: `None` for a kernel it does not know).
pub fn judge(expected: Option<&BTreeMap<&str, &str>>, outcome: Option<&Outcome>, verdict: &str) -> Cell {
    let Some(outcome) = outcome else { return Cell::NoResult(verdict.to_owned()) };
    let skipped: std::collections::BTreeSet<&str> = outcome.skips.iter().map(|s| s.test.as_str()).collect();
    let Some(expected) = expected else {
        let notes = outcome.skips.iter().map(|s| format!("{}: {}", s.test, s.reason)).collect();
        return if outcome.rc == 0 { Cell::Unjudged(notes) } else { Cell::Fail(outcome.rc, notes) };
    };
    let changes = expect::compare(expected, &outcome.skips);
    if outcome.rc != 0 {
        return Cell::Fail(outcome.rc, changes);
    }
    if !changes.is_empty() {
        return Cell::Changed(changes);
    }
    let gaps: Vec<String> = expected.iter().map(|(t, why)| format!("{t}: {why}")).collect();
    if gaps.is_empty() {
        Cell::Pass
    } else if skipped.len() as u64 >= outcome.passed {
        Cell::Unsupported(gaps)
    } else {
        Cell::PassWithGaps(gaps)
    }
}

/// Reads the guest's result and skip lines into outcomes per (binary, backend).
#[derive(Default)]
struct Collector {
    outcomes: BTreeMap<(String, String), Outcome>,
    skips: BTreeMap<(String, String), Vec<Skip>>,
}

impl Collector {
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix(protocol::RESULT) {
            let (Some(binary), Some(backend), Some(rc)) =
                (protocol::field(rest, "binary"), protocol::field(rest, "backend"), protocol::field(rest, "rc"))
            else {
                return;
            };
            let passed = protocol::field(rest, "passed").and_then(|v| v.parse().ok()).unwrap_or(0);
            let key = (binary.to_owned(), backend.to_owned());
            let skips = self.skips.remove(&key).unwrap_or_default();
            let secs = protocol::field(rest, "secs").and_then(|v| v.parse().ok());
            self.outcomes.insert(key, Outcome { rc: rc.parse().unwrap_or(-1), passed, skips, secs });
        } else if let Some(rest) = line.strip_prefix(protocol::SKIP) {
            // The script's own `binary=` and `backend=` come first (the record's backend is
            // the one the test saw).
            if let (Some(binary), Some(backend), Some(skip)) =
                (protocol::field(rest, "binary"), protocol::field(rest, "backend"), Skip::parse(rest))
            {
                self.skips.entry((binary.to_owned(), backend.to_owned())).or_default().push(skip);
            }
        }
    }
}

/// One kernel's run.
struct KernelRun {
    spec: String,
    /// `<package> <version>` (or the image's path), or why it could not be had.
    build: String,
    /// The guest's own `uname -r | uname -v`.
    booted: Option<String>,
    verdict: String,
    /// What is wrong with the run as a whole (crash, hang, another build than fetched).
    problems: Vec<String>,
    /// Each of its guests' wall time.
    took: Vec<Duration>,
    cells: BTreeMap<(String, String), Cell>,
    /// Wall time per binary: its slowest backend (they run side by side).
    secs: BTreeMap<String, u64>,
}

impl KernelRun {
    /// Another guest's run of the same kernel folded in.
    fn merge(mut self, other: KernelRun) -> KernelRun {
        self.booted = self.booted.or(other.booted);
        if other.verdict != self.verdict {
            self.verdict = format!("{}; {}", self.verdict, other.verdict);
        }
        self.problems.extend(other.problems);
        self.took.extend(other.took);
        self.cells.extend(other.cells);
        for (binary, secs) in other.secs {
            let slowest = self.secs.entry(binary).or_default();
            *slowest = (*slowest).max(secs);
        }
        self
    }
}

/// One guest of the matrix: a kernel and its share of that kernel's cells.
struct Job<'a> {
    kernel: usize,
    spec: &'a str,
    /// The plan's number (`/matrix/plan-N`, `/matrix/unit-N`).
    plan: usize,
    /// Which of the kernel's guests this is (from 1), of how many.
    part: (usize, usize),
    shard: plan::Shard,
}

fn run_kernel(
    job: &Job,
    fetched: &Result<(PathBuf, String, PathBuf), String>,
    timeout: Duration,
    verbose: bool,
) -> KernelRun {
    let started = Instant::now();
    let spec_text = job.spec;
    let cells: Vec<plan::Cell> = job.shard.cells().cloned().collect();
    let mut run = KernelRun {
        spec: spec_text.to_owned(),
        build: String::new(),
        booted: None,
        verdict: String::new(),
        problems: Vec::new(),
        took: Vec::new(),
        cells: BTreeMap::new(),
        secs: BTreeMap::new(),
    };
    let (image, build, initramfs) = match fetched {
        Ok(found) => found.clone(),
        Err(e) => {
            // A failed run, never a skip: a kernel the matrix cannot get (a vanished pin
            // included) fails the matrix with apt's reason.
            run.build = format!("NOT FETCHED: {e}");
            run.verdict = "kernel not fetched".into();
            for (b, backend) in cell_keys(&cells, job.shard.unit) {
                run.cells.insert((b, backend), Cell::NoResult(run.verdict.clone()));
            }
            return run;
        }
    };
    run.build = build;
    eprintln!("xtask: matrix: booting {spec_text} ({})", run.build);
    let mut collector = Collector::default();
    let stdout = std::io::stdout();
    let index = job.plan.to_string();
    let mut env = expect::guest_env(spec_text);
    env.push((PLAN_ENV, &index));
    let outcome = boot_with(&image, &initramfs, &env, timeout, |line| {
        collector.line(line);
        let show = verbose || line.starts_with('[') && !line.starts_with("[    ") || line.contains("Kernel panic");
        if show {
            let _ = writeln!(stdout.lock(), "[{spec_text}] {line}");
        }
    });
    run.took = vec![started.elapsed()];
    let (verdict, booted) = match outcome {
        Ok(b) => {
            // Results that came before a panic or a hang are judged, but the run still fails.
            if !matches!(b.verdict, super::Verdict::Exited(_)) {
                run.problems.push(format!("the guest {}", b.verdict));
            }
            (b.verdict.to_string(), b.build)
        }
        Err(e) => {
            run.problems.push(format!("QEMU: {e:#}"));
            (format!("{e:#}"), None)
        }
    };
    run.problems.extend(build_mismatch(&run.build, booted.as_deref()));
    eprintln!(
        "xtask: matrix: {spec_text} ({} of {}): guest {verdict} in {:.0}s (expected about {}s)",
        job.part.0,
        job.part.1,
        started.elapsed().as_secs_f64(),
        job.shard.expected_secs
    );
    run.verdict = verdict;
    run.booted = booted;
    for (b, backend) in cell_keys(&cells, job.shard.unit) {
        let expected = match BTF_UNIT_TESTS.iter().find(|(name, _)| *name == b) {
            Some((_, test)) => expect::expected_unit_gaps(spec_text, test),
            None => expect::expected_gaps(spec_text, &b, &backend),
        };
        let outcome = collector.outcomes.get(&(b.clone(), backend.clone()));
        if let Some(secs) = outcome.and_then(|o| o.secs) {
            let slowest = run.secs.entry(b.clone()).or_default();
            *slowest = (*slowest).max(secs);
        }
        let cell = judge(expected.as_ref(), outcome, &run.verdict);
        run.cells.insert((b, backend), cell);
    }
    run
}

/// Debian's `uname -v` names the package version (`... Debian 6.18.15-1~bpo13+1 (date)`): a
/// guest that booted another build than the one fetched (a stale cache) is a failed run.
fn build_mismatch(build: &str, booted: Option<&str>) -> Option<String> {
    let (package, version) = build.split_once(' ')?;
    if !package.starts_with("linux-") {
        return None; // a local image
    }
    match booted {
        Some(uname) if uname.contains(&format!("Debian {version} ")) => None,
        Some(uname) => Some(format!("fetched {build} but the guest booted `{uname}`")),
        None => Some(format!("the guest never printed its build (fetched {build})")),
    }
}

/// Every cell of a guest: its (binary, backend) pairs, and with `unit` each BTF unit test row
/// (backend `any`).
fn cell_keys(cells: &[plan::Cell], unit: bool) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = cells.iter().map(|c| (c.binary.clone(), c.backend.to_owned())).collect();
    if unit {
        keys.extend(BTF_UNIT_TESTS.iter().map(|(name, _)| (name.to_string(), ANY_BACKEND.to_owned())));
    }
    keys
}

/// Runs the matrix on `kernel_specs`, `jobs` guests at a time.
pub fn run(
    kernel_specs: &[String],
    timeout: Duration,
    refresh: bool,
    verbose: bool,
    jobs: usize,
    full: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut files, build) = super::guest_files()?;
    let built = started.elapsed();
    let binaries: Vec<String> = build.tests.iter().map(|(name, _)| name.clone()).collect();
    let paths: BTreeMap<&str, &Path> = build.tests.iter().map(|(name, path)| (name.as_str(), path.as_path())).collect();
    let unit: String =
        BTF_UNIT_TESTS.iter().map(|(name, test)| format!("{name} {} {test}\n", build.unit.display())).collect();
    let mut jobs_list = Vec::new();
    for (kernel, spec) in kernel_specs.iter().enumerate() {
        let shards = plan::shards(&plan::cells(spec, &binaries, full), SHARDS, LANES);
        let parts = shards.len();
        for (part, shard) in shards.into_iter().enumerate() {
            let plan = jobs_list.len();
            let mut text = String::new();
            let line = |lane: &str, c: &plan::Cell| {
                format!("{lane} {} {} {}\n", c.binary, c.backend, paths[c.binary.as_str()].display())
            };
            for c in &shard.alone {
                text.push_str(&line("alone", c));
            }
            for (lane, cells) in shard.lanes.iter().enumerate() {
                for c in cells {
                    text.push_str(&line(&lane.to_string(), c));
                }
            }
            files.write(Path::new(&format!("/matrix/plan-{plan}")), text);
            files.write(
                Path::new(&format!("/matrix/unit-{plan}")),
                if shard.unit { unit.clone() } else { String::new() },
            );
            jobs_list.push(Job { kernel, spec, plan, part: (part + 1, parts), shard });
        }
    }
    // Every kernel fetched before any boots (two guests of one kernel must not fetch it at
    // once), and in the order given.
    let fetched: Vec<Result<(PathBuf, String), String>> = kernel_specs
        .iter()
        .map(|spec| {
            kernels::KernelSpec::parse(spec).and_then(|k| kernels::kernel_image(&k, refresh)).map_err(|e| {
                eprintln!("xtask: matrix: kernel {spec} could not be fetched: {e:#}");
                format!("{e:#}")
            })
        })
        .collect();
    // One initramfs per run: a second matrix run (another checkout) must not replace it while
    // this run's guests still boot from it.
    let work = kernels::cache_dir().join(format!("matrix-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let base: PathBuf = work.join("initramfs.cpio.gz");
    build_initramfs(&files, GUEST_SCRIPT, &base)?;
    // The base, or the base and the lab's tools (expect.rs), per kernel. A kernel whose tools
    // cannot be had (its modules not fetched) fails like a kernel not fetched.
    let fetched: Vec<Result<(PathBuf, String, PathBuf), String>> = fetched
        .into_iter()
        .zip(kernel_specs)
        .map(|(found, spec)| {
            let (image, build) = found?;
            let initramfs = super::initramfs_for(spec, &build, &base, &work).map_err(|e| {
                eprintln!("xtask: matrix: the tools of kernel {spec} could not be had: {e:#}");
                format!("{e:#}")
            })?;
            Ok((image, build, initramfs))
        })
        .collect();

    // Each guest is one host thread (single-threaded TCG), so up to one guest per host core.
    // The heaviest first (longest processing time first), so that the slots end together.
    jobs_list.sort_by_key(|j| std::cmp::Reverse(j.shard.expected_secs));
    let slots = jobs.clamp(1, jobs_list.len().max(1));
    let queue = Mutex::new(jobs_list.iter());
    let runs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..slots {
            s.spawn(|| {
                loop {
                    let Some(job) = queue.lock().unwrap().next() else { break };
                    let run = run_kernel(job, &fetched[job.kernel], timeout, verbose);
                    runs.lock().unwrap().push((job.kernel, run));
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    let mut merged: BTreeMap<usize, KernelRun> = BTreeMap::new();
    for (kernel, run) in runs.into_inner().unwrap() {
        let run = match merged.remove(&kernel) {
            Some(earlier) => earlier.merge(run),
            None => run,
        };
        merged.insert(kernel, run);
    }
    let runs: Vec<KernelRun> = merged.into_values().collect();
    let failed = report(&runs, &binaries, full);
    let took =
        |r: &KernelRun| r.took.iter().map(|t| format!("{:.0}s", t.as_secs_f64())).collect::<Vec<_>>().join(" + ");
    println!(
        "\nVM matrix: {} kernels in {} guests, {slots} at a time: {:.0}s wall time, of which {:.0}s building (guests: {})",
        runs.len(),
        jobs_list.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        runs.iter().map(|r| format!("{} {}", r.spec, took(r))).collect::<Vec<_>>().join(", ")
    );
    if failed {
        bail!("the VM matrix differs from its table or has failures (see CHANGED / FAIL / NO RESULT above)");
    }
    Ok(())
}

/// Prints the table, the builds, the gaps and every difference; true if anything failed.
fn report(runs: &[KernelRun], binaries: &[String], full: bool) -> bool {
    println!("\nVM matrix (kernel x test binary x backend), judged against xtask/src/vm/expect.rs");
    println!("{:<8} {:<12} {:<14} {:<14} {:<14}", "kernel", "binary", "fentry", "kprobe", "tracepoint");
    let mut gaps = Vec::new();
    let mut problems = Vec::new();
    let mut skips = 0;
    for run in runs {
        let rows = binaries
            .iter()
            .map(|b| (b.as_str(), BACKENDS))
            .chain(BTF_UNIT_TESTS.iter().map(|(name, _)| (*name, &[ANY_BACKEND][..])));
        for (b, backends) in rows {
            let cells: Vec<Option<&Cell>> =
                backends.iter().map(|backend| run.cells.get(&(b.to_owned(), backend.to_string()))).collect();
            let shown = |c: Option<&Cell>| c.map_or("-".to_owned(), |c| c.to_string());
            match &cells[..] {
                [one] => println!("{:<8} {:<12} {:<44}", run.spec, b, format!("{} (once, any backend)", shown(*one))),
                _ => println!(
                    "{:<8} {:<12} {:<14} {:<14} {:<14}",
                    run.spec,
                    b,
                    shown(cells[0]),
                    shown(cells[1]),
                    shown(cells[2])
                ),
            }
            for (backend, cell) in backends.iter().zip(&cells).filter_map(|(b, c)| Some((b, (*c)?))) {
                let at = format!("{} {b} {backend}", run.spec);
                match cell {
                    Cell::PassWithGaps(n) | Cell::Unsupported(n) | Cell::Unjudged(n) => {
                        skips += n.len();
                        gaps.extend(n.iter().map(|n| format!("{at}: {n}")));
                    }
                    Cell::Changed(n) => problems.extend(n.iter().map(|n| format!("{at}: CHANGED: {n}"))),
                    Cell::Fail(rc, n) => {
                        problems.push(format!("{at}: FAIL: the test binary exited with {rc} (its log is above)"));
                        problems.extend(n.iter().map(|n| format!("{at}: CHANGED: {n}")));
                    }
                    Cell::NoResult(why) => problems.push(format!("{at}: NO RESULT: {why}")),
                    Cell::Pass => {}
                }
            }
        }
    }
    if !full {
        println!(
            "  -: not in this run: the binaries outside {:?} run once per kernel (xtask/src/vm/plan.rs; \
             `--full-matrix` runs every cell)",
            plan::EVERY_BACKEND
        );
    }
    println!("\nKernel builds:");
    for run in runs {
        let pinned = matches!(
            kernels::KernelSpec::parse(&run.spec),
            Ok(kernels::KernelSpec::Debian(kernels::DebianKernel { image: kernels::Image::Pinned { .. }, .. }))
        );
        println!(
            "  {:<6} {}{}\n         booted: {}",
            run.spec,
            run.build,
            if pinned { " (pinned)" } else { "" },
            run.booted.as_deref().unwrap_or("never (no booted line)")
        );
    }
    println!("\nWall time per test binary in each guest, seconds (its slowest backend):");
    println!("{:<12} {}", "binary", runs.iter().map(|r| format!("{:>6}", r.spec)).collect::<String>());
    for b in binaries {
        let secs = |r: &KernelRun| r.secs.get(b).map_or("-".to_owned(), u64::to_string);
        println!("{:<12} {}", b, runs.iter().map(|r| format!("{:>6}", secs(r))).collect::<String>());
    }
    if !gaps.is_empty() {
        println!("\n* {skips} skips, each one the table expects:");
        gaps.sort();
        gaps.dedup();
        for g in &gaps {
            println!("  {g}");
        }
    }
    for run in runs {
        problems.extend(run.problems.iter().map(|p| format!("{}: {p}", run.spec)));
    }
    if !problems.is_empty() {
        println!("\nDifferences from the table and failures:");
        for p in &problems {
            println!("  {p}");
        }
    }
    runs.iter().any(|r| !r.problems.is_empty() || r.cells.values().any(Cell::failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest script, run on this host with a fake test binary: skip lines with the binary,
    /// then one result line per backend with the status and the passed count.
    #[test]
    fn guest_script_reports_skips_and_results() {
        let dir = std::env::temp_dir().join(format!("twtrace-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("fake-test");
        // Writes one skip record to the log the script names, as tests/support does.
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"test=t_one family=drops backend=${b} reason=old kernel (5.17+)\" >> \"${log}\"\n\
                 echo 'test result: ok. 4 passed; 0 failed; 0 ignored'\n[ \"${b}\" = kprobe ] && exit 101\nexit 0\n",
                b = protocol::BACKEND_ENV,
                log = protocol::SKIP_LOG_ENV
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // The guest's files, at a path of our own: /matrix and /etc are the guest's.
        let script = GUEST_SCRIPT
            .replace("/tmp/", &format!("{}/", dir.display()))
            .replace("/etc/twtrace-protocol", &dir.join("protocol").display().to_string())
            .replace("/matrix/", &format!("{}/", dir.display()));
        std::fs::write(dir.join("protocol"), protocol::shell_definitions()).unwrap();
        // Two lanes: fentry and tracepoint in one, kprobe in the other.
        let plan: String =
            BACKENDS.iter().map(|b| format!("{} drops {b} {}\n", u8::from(*b == "kprobe"), fake.display())).collect();
        std::fs::write(dir.join("plan-7"), plan).unwrap();
        std::fs::write(dir.join("unit-7"), format!("unit-x {} some::test\n", fake.display())).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env(PLAN_ENV, "7")
            .current_dir(&dir)
            .output()
            .unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let mut collector = Collector::default();
        out.lines().for_each(|l| collector.line(l));
        for b in BACKENDS {
            let o =
                collector.outcomes.get(&("drops".to_owned(), b.to_string())).unwrap_or_else(|| panic!("{b}: {out}"));
            assert_eq!((o.rc, o.passed), (if *b == "kprobe" { 101 } else { 0 }, 4), "{b}: {out}");
            assert_eq!(o.skips.len(), 1, "{out}");
            assert_eq!(o.skips[0].test, "t_one");
            assert_eq!(o.skips[0].backend, *b);
            assert_eq!(o.skips[0].reason, "old kernel (5.17+)");
            assert!(o.secs.is_some_and(|s| s < 60), "its wall time: {out}");
        }
        let unit = &collector.outcomes[&("unit-x".to_owned(), ANY_BACKEND.to_owned())];
        assert_eq!((unit.rc, unit.passed, unit.skips.len()), (0, 4, 1), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_booted_build_must_be_the_fetched_one() {
        let build = "linux-image-6.18.15+deb13-cloud-amd64 6.18.15-1~bpo13+1";
        let uname = "6.18.15+deb13-cloud-amd64 | #1 SMP PREEMPT_DYNAMIC Debian 6.18.15-1~bpo13+1 (2026-03-12)";
        assert_eq!(build_mismatch(build, Some(uname)), None);
        let other = uname.replace("6.18.15-1~bpo13+1", "6.18.15-1~bpo13+2");
        assert!(build_mismatch(build, Some(&other)).is_some_and(|m| m.contains("booted")));
        assert!(build_mismatch(build, None).is_some());
        assert_eq!(build_mismatch("/tmp/bzImage", None), None);
    }

    #[test]
    fn skip_records_round_trip() {
        let s = Skip {
            test: "a_test".into(),
            family: "timewait".into(),
            backend: "fentry".into(),
            reason: "timewait: OFF (fentry: __inet_twsk_schedule: no such function\nin BTF)".into(),
        };
        let line = format!("{} binary=timewait {}", protocol::SKIP, s.to_line());
        let back = Skip::parse(&line).unwrap();
        assert_eq!(back.reason, "timewait: OFF (fentry: __inet_twsk_schedule: no such function in BTF)");
        assert_eq!((back.test.as_str(), back.family.as_str(), back.backend.as_str()), ("a_test", "timewait", "fentry"));
        assert_eq!(protocol::field(&line, "binary"), Some("timewait"));
    }

    fn outcome(rc: i32, passed: u64, skipped: &[&str]) -> Outcome {
        let skips = skipped
            .iter()
            .map(|t| Skip { test: t.to_string(), family: "f".into(), backend: "fentry".into(), reason: "why".into() })
            .collect();
        Outcome { rc, passed, skips, secs: None }
    }

    #[test]
    fn cells_are_judged_against_the_table() {
        let none = BTreeMap::new();
        let one: BTreeMap<&str, &str> = [("t1", "6.16+")].into();
        assert_eq!(judge(Some(&none), Some(&outcome(0, 3, &[])), ""), Cell::Pass);
        assert_eq!(judge(Some(&one), Some(&outcome(0, 3, &["t1"])), ""), Cell::PassWithGaps(vec!["t1: 6.16+".into()]));
        assert_eq!(judge(Some(&one), Some(&outcome(0, 1, &["t1"])), ""), Cell::Unsupported(vec!["t1: 6.16+".into()]));
        // Lost: a test skipped that must run.
        assert!(matches!(judge(Some(&none), Some(&outcome(0, 3, &["t2"])), ""), Cell::Changed(c) if c.len() == 1));
        // Gained: a test ran that the table says cannot.
        assert!(
            matches!(judge(Some(&one), Some(&outcome(0, 3, &[])), ""), Cell::Changed(c) if c[0].contains("t1 ran"))
        );
        assert!(matches!(judge(Some(&one), Some(&outcome(101, 3, &["t1"])), ""), Cell::Fail(101, c) if c.is_empty()));
        assert_eq!(judge(Some(&one), None, "timed out"), Cell::NoResult("timed out".into()));
        // A local image: listed, not judged; still fails on a failing test.
        assert!(!judge(None, Some(&outcome(0, 3, &["t1"])), "").failed());
        assert!(judge(None, Some(&outcome(1, 3, &[])), "").failed());
        for cell in [Cell::Changed(vec![]), Cell::Fail(1, vec![]), Cell::NoResult(String::new())] {
            assert!(cell.failed(), "{cell:?}");
        }
    }
}
