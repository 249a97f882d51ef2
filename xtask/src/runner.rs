//! The host's test binaries, several at once.
//!
//! `cargo test` runs one test binary after another. The integration tests mostly wait on the
//! kernel (TIME_WAIT sockets living 60 s, Prometheus scrapes, recorder rotations): doctor and
//! timewait take 70-80 s each on the host, the rest 1-40 s, and together with the no-BTF pass
//! they spent 400 s of CI's budget one by one, mostly asleep. Their tests already share a
//! machine with each other (libtest's threads, and in the VM matrix three backends at once):
//! each makes its own namespaces, records skips with one appended line, and names its own
//! ports. So here they run [`JOBS`] binaries at a time, the slowest first, each one's output
//! printed whole when it ends, and a closing `N passed, N failed` line over all of them.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Binaries running at once. Four keeps the two cores busy without starving the timing
/// tests (connects with 300 ms timeouts, churn at a set rate).
pub const JOBS: usize = 4;

/// Binaries that must not share the machine with other tests: `top` reads every namespace of
/// the host into one 120-column terminal, and its failures line, ordered by count, fills up
/// with the other binaries' namespaces (a churn's 150 refusals push its pod's 80 off the
/// edge; in a 6.12 guest a containers pod out of ports took its rows). `serve` runs a
/// Prometheus, TLS handshakes and bcrypt checks beside twtrace: sharing an emulated guest's two
/// vCPUs with three other binaries' churn, its scrapes and curls timed out (6.18, 2026-12-07).
/// The host runs `top` after the others (`ALONE_ON_HOST`), the VM matrix runs these before a
/// guest's lanes (`vm::plan`).
pub const ALONE: &[&str] = &["top", "serve"];

/// On the host, also the TIME_WAIT family's binary: its churn test counts every birth against
/// the kernel's counter exactly, allowing only the runs the kernel says it skipped; with three
/// other binaries starving the two CPUs, one birth in 20,000-40,000 went missing without a
/// counted skip (2 of about 6 loaded runs, 2026-12-07; never alone). The guests run their
/// cells in lanes whatever this says (`vm::plan`).
const ALONE_ON_HOST: &[&str] = &["top", "timewait"];

/// Binaries known to take longest (seconds on the host, 2026-12), started first so that the
/// run is not left waiting on one of them at the end.
const SLOWEST_FIRST: &[&str] =
    &["doctor_settings", "timewait", "xtask", "flight", "serve", "scenario", "doctor_limits", "doctor"];

/// One run of a test binary: the binary, where cargo would run it, and extra environment.
#[derive(Clone)]
pub struct Run {
    /// `tests/doctor.rs`, `unittests twtrace`; a run with extra environment names it after
    /// (`tests/doctor.rs (TWTRACE_TEST_BACKEND=kprobe)`).
    pub label: String,
    /// The target's name: `doctor`, `twtrace`, `xtask`.
    pub name: String,
    pub path: PathBuf,
    /// The package's directory: cargo runs a test binary there.
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Builds the test binaries of `cargo test <args>` without running them and lists them.
pub fn build(args: &[&str]) -> anyhow::Result<Vec<Run>> {
    let started = Instant::now();
    let out = Command::new("cargo")
        .args(args)
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .current_dir(crate::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    eprintln!("xtask: ({:.0}s) cargo {} --no-run", started.elapsed().as_secs_f64(), args.join(" "));
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut runs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe), Some(manifest)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        let src = msg["target"]["src_path"].as_str().unwrap_or("");
        let label = match src.rsplit_once("/tests/") {
            Some((_, file)) => format!("tests/{file}"),
            None => format!("unittests {name}"),
        };
        runs.push(Run {
            label,
            name: name.to_owned(),
            path: PathBuf::from(exe),
            dir: Path::new(manifest).parent().context("a manifest path has a directory")?.to_owned(),
            env: Vec::new(),
        });
    }
    if runs.is_empty() {
        bail!("cargo built no test binary");
    }
    Ok(runs)
}

/// What the runs came to, from libtest's closing lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Labels of the runs that exited non-zero.
    pub failing: Vec<String>,
}

/// Runs every binary, `jobs` at a time, with `env` on top of each run's own; prints each
/// run's output when it ends, then the totals. Fails if any run did.
pub fn run_all(mut runs: Vec<Run>, jobs: usize, env: &[(&str, &Path)]) -> anyhow::Result<()> {
    let started = Instant::now();
    runs.sort_by_key(|r| SLOWEST_FIRST.iter().position(|s| *s == r.name).unwrap_or(SLOWEST_FIRST.len()));
    let count = runs.len();
    let (alone, together): (Vec<Run>, Vec<Run>) =
        runs.into_iter().partition(|r| ALONE_ON_HOST.contains(&r.name.as_str()));
    // Numbered, for each run's own log file (one binary may run under several environments).
    let queue = Mutex::new(VecDeque::from_iter(together.into_iter().enumerate()));
    let totals = Mutex::new(Totals::default());
    let logs = std::env::temp_dir().join(format!("xtask-tests-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let record = |(index, run): &(usize, Run)| {
        let outcome = run_one(run, env, &logs.join(format!("{index}-{}.log", run.name)));
        let mut totals = totals.lock().unwrap();
        match outcome {
            Ok((ok, output)) => {
                add_closing_lines(&mut totals, &output);
                if !ok {
                    totals.failing.push(run.label.clone());
                }
            }
            Err(e) => {
                eprintln!("xtask: {}: {e:#}", run.label);
                totals.failing.push(run.label.clone());
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, count) {
            s.spawn(|| {
                // Not `while let`: its guard would hold the queue for the whole run.
                loop {
                    let Some(run) = queue.lock().unwrap().pop_front() else { break };
                    record(&run);
                }
            });
        }
    });
    alone.into_iter().enumerate().map(|(i, run)| (count + i, run)).for_each(|r| record(&r));
    let _ = std::fs::remove_dir_all(&logs);
    let totals = totals.into_inner().unwrap();
    eprintln!(
        "xtask: ({:.0}s) {count} test binaries, {jobs} at a time",
        started.elapsed().as_secs_f64(),
        jobs = jobs.clamp(1, count)
    );
    // The plain closing line CI reads, over every binary.
    println!("{} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    if !totals.failing.is_empty() {
        bail!("test binaries failed: {}", totals.failing.join(", "));
    }
    Ok(())
}

/// Runs one binary with its output in a file (so that runs do not interleave), then prints it
/// whole. `Ok((passed, output))`.
fn run_one(run: &Run, env: &[(&str, &Path)], log: &Path) -> anyhow::Result<(bool, String)> {
    let file = std::fs::File::create(log)?;
    let started = Instant::now();
    let status = Command::new(&run.path)
        .current_dir(&run.dir)
        .env("CARGO_MANIFEST_DIR", &run.dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {}", run.path.display()))?;
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let verdict = if status.success() { "passed".to_owned() } else { format!("FAILED ({status})") };
    // One write: the block stays whole beside the other runs' output.
    let block = format!(
        "\n     Running {} ({})\n{output}xtask: ({:.0}s) {} {verdict}\n",
        run.label,
        run.path.display(),
        started.elapsed().as_secs_f64(),
        run.label,
    );
    print!("{block}");
    Ok((status.success(), output))
}

/// Adds libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines of `output`.
fn add_closing_lines(totals: &mut Totals, output: &str) {
    for line in output.lines().filter_map(|l| l.strip_prefix("test result: ")) {
        let count = |what: &str| -> u64 {
            line.split(';')
                .find_map(|part| part.trim().strip_suffix(what)?.trim().rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        totals.passed += count(" passed");
        totals.failed += count(" failed");
        totals.ignored += count(" ignored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_lines_are_summed() {
        let mut totals = Totals::default();
        add_closing_lines(
            &mut totals,
            "running 4 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 \
             filtered out; finished in 35.05s\n",
        );
        add_closing_lines(
            &mut totals,
            "test result: FAILED. 3 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out; finished in 62.40s\n",
        );
        assert_eq!((totals.passed, totals.failed, totals.ignored), (6, 4, 1));
    }
}
