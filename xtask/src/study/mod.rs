//! `cargo xtask study <scenario>`: the same `twtrace scenario` with `--record`, on the host
//! and in a guest per kernel, then one comparison (table on stdout, Markdown, JSON, SVG
//! chart). Every run checks twtrace against the kernel and its generator; a run whose checks
//! failed, or that gave no report, fails the study (its figures are not published).

mod compare;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::vm::{self, GuestFiles, kernels, protocol};

#[derive(clap::Args)]
pub struct StudyArgs {
    /// search-cost, client-exhaustion, tw-reuse, tw-buckets, tw-deaths, paws-nat, tw-timer-cpu or
    /// tw-abort (`twtrace scenario --help`).
    pub scenario: String,
    /// Where to run: `host` and kernels the VM lab boots (5.10, 6.1, 6.12, 6.18, sid,
    /// `bpo-6.16` and the other trixie-backports lines, or an image path), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "host,5.10,6.1,6.12,6.18")]
    pub kernels: Vec<String>,
    /// Force this backend in every run (default: the best each kernel loads).
    #[arg(long)]
    pub backend: Option<String>,
    /// Output directory (default: target/study/<scenario>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare the reports an earlier run left in the output directory (`<where>.json`)
    /// again, without running anything.
    #[arg(long)]
    pub compare_only: bool,
    /// Guests booted at once (default: the host's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Scenario arguments, after `--` (e.g. `-- --range 1000 --probes 20`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub scenario_args: Vec<String>,
}

/// One place the scenario ran: its report and recording, or why there are none.
pub struct Outcome {
    pub label: String,
    pub report: Option<serde_json::Value>,
    pub problem: Option<String>,
}

pub fn run(args: &StudyArgs) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let out = args.out.clone().unwrap_or_else(|| crate::workspace_root().join("target/study").join(&args.scenario));
    std::fs::create_dir_all(&out)?;
    // Absolute: the guest's initramfs is packed from inside its directory.
    let out = out.canonicalize()?;
    if args.compare_only {
        let outcomes: Vec<Outcome> = args
            .kernels
            .iter()
            .map(|label| {
                let text = std::fs::read_to_string(out.join(format!("{label}.json"))).unwrap_or_default();
                outcome(label.clone(), &text, true, &out)
            })
            .collect();
        return compare(&args.scenario, &outcomes, &out);
    }
    let twtrace = vm::build_static_twtrace()?;
    let mut scenario = vec!["scenario".to_owned(), args.scenario.clone()];
    scenario.extend(args.scenario_args.iter().cloned());
    if let Some(b) = &args.backend {
        scenario.extend(["--backend".into(), b.clone()]);
    }
    let (host, guests): (Vec<&String>, Vec<&String>) = args.kernels.iter().partition(|k| *k == "host");
    let mut outcomes = Vec::new();
    if !host.is_empty() {
        outcomes.push(on_host(&twtrace, &scenario, &out)?);
    }
    if !guests.is_empty() {
        let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        outcomes.extend(in_guests(&twtrace, &scenario, &guests, &out, jobs)?);
    }
    compare(&args.scenario, &outcomes, &out)
}

/// Prints and writes the comparison; fails if any place failed.
fn compare(scenario: &str, outcomes: &[Outcome], out: &Path) -> anyhow::Result<()> {
    let comparison = compare::Comparison::new(scenario, outcomes);
    let markdown = comparison.markdown();
    println!("\n{markdown}");
    std::fs::write(out.join(format!("{scenario}.md")), &markdown)?;
    std::fs::write(out.join(format!("{scenario}.json")), serde_json::to_string_pretty(&comparison.json())?)?;
    std::fs::write(out.join(format!("{scenario}.svg")), comparison.svg())?;
    eprintln!("xtask: study: reports, recordings, table and chart in {}", out.display());
    let failed: Vec<String> =
        outcomes.iter().filter_map(|o| o.problem.as_ref().map(|p| format!("{}: {p}", o.label))).collect();
    if !failed.is_empty() {
        bail!("the study failed where it ran:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

fn on_host(twtrace: &Path, scenario: &[String], out: &Path) -> anyhow::Result<Outcome> {
    if !crate::setup::is_root() {
        bail!(
            "a scenario on the host makes a network namespace and loads BPF programs: run the study as root, or leave `host` out of --kernels"
        );
    }
    let recording = out.join("host.twr");
    let _ = std::fs::remove_file(&recording);
    eprintln!("xtask: study: host: twtrace {}", scenario.join(" "));
    let output = Command::new(twtrace)
        .args(scenario)
        .arg("--record")
        .arg(&recording)
        .arg("--json")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the scenario on the host")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok(outcome("host".into(), &text, output.status.success(), out))
}

/// The report of one run, kept as `<label>.json`; its problem, if any.
fn outcome(label: String, report_text: &str, exited_ok: bool, out: &Path) -> Outcome {
    let report: Option<serde_json::Value> = serde_json::from_str(report_text.trim()).ok();
    if report.is_some() {
        let _ = std::fs::write(out.join(format!("{label}.json")), report_text.trim());
    }
    let problem = match &report {
        None => Some("no report (the scenario did not finish; its errors are above)".to_owned()),
        Some(r) if r["passed"] != true => Some(format!(
            "checks failed: {}",
            r["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["passed"] != true)
                .map(|c| format!("{} (expected {}, observed {})", c["what"], c["expected"], c["observed"]))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Some(_) if !exited_ok => Some("the scenario exited with an error".to_owned()),
        Some(_) => None,
    };
    Outcome { label, report, problem }
}

/// The guest's command: the scenario, its report and recording handed back over the console.
/// init runs it as a child shell: the markers' variables are read again here.
fn guest_script(scenario: &[String]) -> String {
    let command: Vec<String> = scenario.iter().map(|a| vm::shell_quote(a)).collect();
    format!(
        ". /etc/twtrace-protocol\n\
         m=/lib/twtrace-modules/$(uname -r); if [ -d $m ]; then for k in $m/*.ko; do insmod $k || echo \"insmod $k failed\"; done; fi\n\
         twtrace {} --record /tmp/study.twr --json > /tmp/report.json\n\
         rc=$?\n\
         echo \"$MARK_FILE report.json\"; cat /tmp/report.json; echo; echo \"$MARK_FILE_END\"\n\
         if [ -f /tmp/study.twr ]; then echo \"$MARK_FILE recording\"; base64 /tmp/study.twr; echo \"$MARK_FILE_END\"; fi\n\
         exit $rc\n",
        command.join(" ")
    )
}

fn in_guests(
    twtrace: &Path,
    scenario: &[String],
    kernels: &[&String],
    out: &Path,
    jobs: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let mut files = GuestFiles::default();
    files.at(twtrace, Path::new("/usr/bin/twtrace"));
    for (release, module) in extra_modules(scenario, kernels)? {
        let name = module.file_name().expect("a file name");
        files.at(&module, &Path::new("/lib/twtrace-modules").join(release).join(name));
    }
    let initramfs = out.join("initramfs.cpio.gz");
    vm::build_initramfs(&files, &guest_script(scenario), &initramfs)?;
    let queue = Mutex::new(kernels.iter().enumerate());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, kernels.len()) {
            s.spawn(|| {
                loop {
                    let Some((i, spec)) = queue.lock().unwrap().next() else { break };
                    let outcome = in_guest(spec, &initramfs, out).unwrap_or_else(|e| Outcome {
                        label: (*spec).clone(),
                        report: None,
                        problem: Some(format!("{e:#}")),
                    });
                    done.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let _ = std::fs::remove_file(&initramfs);
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, o)| o).collect())
}

/// Modules a scenario needs that Debian builds as modules and the guests do not otherwise load,
/// per kernel: (release, file), loaded by the guest script in their order.
/// - tw-abort: sock_diag's TCP handler (inet_diag, then tcp_diag), or no `SOCK_DESTROY` (nor
///   `ss`) reaches `tcp_abort()`.
fn extra_modules(scenario: &[String], kernels: &[&String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let names: &[&str] = match scenario.get(1).map(String::as_str) {
        Some("tw-abort") => &["net/ipv4/inet_diag", "net/ipv4/tcp_diag"],
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for spec in kernels {
        let spec = kernels::KernelSpec::parse(spec)?;
        if matches!(spec, kernels::KernelSpec::Local(_)) {
            continue;
        }
        let (release, files) = kernels::kernel_modules(&spec, names)
            .with_context(|| format!("fetching the modules {names:?} of {}", spec.label()))?;
        out.extend(files.into_iter().map(|f| (release.clone(), f)));
    }
    Ok(out)
}

fn in_guest(spec_text: &str, initramfs: &Path, out: &Path) -> anyhow::Result<Outcome> {
    let spec = kernels::KernelSpec::parse(spec_text)?;
    let (image, build) = kernels::kernel_image(&spec, false)?;
    eprintln!("xtask: study: booting {spec_text} ({build})");
    let mut files = FileCollector::default();
    let boot = vm::boot(&image, initramfs, Duration::from_secs(900), |line| {
        if !files.line(line) {
            println!("[{spec_text}] {line}");
        }
    })?;
    eprintln!("xtask: study: {spec_text}: guest {}", boot.verdict);
    if let Some(lines) = files.done.get("recording") {
        let recording = out.join(format!("{spec_text}.twr"));
        decode_base64(lines, &recording).with_context(|| format!("decoding the recording of {spec_text}"))?;
    }
    let report = files.done.get("report.json").map(|l| l.join("")).unwrap_or_default();
    let mut outcome = outcome(spec_text.to_owned(), &report, boot.verdict == vm::Verdict::Exited(0), out);
    if outcome.problem.is_none() && boot.verdict != vm::Verdict::Exited(0) {
        outcome.problem = Some(format!("the guest {}", boot.verdict));
    }
    Ok(outcome)
}

/// Files a guest prints between [`protocol::FILE`] and [`protocol::FILE_END`].
#[derive(Default)]
struct FileCollector {
    current: Option<(String, Vec<String>)>,
    done: BTreeMap<String, Vec<String>>,
}

impl FileCollector {
    /// Takes the line if it belongs to a file; false for console lines to show.
    fn line(&mut self, line: &str) -> bool {
        if line.starts_with(protocol::FILE_END) {
            if let Some((name, lines)) = self.current.take() {
                self.done.insert(name, lines);
            }
            return true;
        }
        if let Some(name) = line.strip_prefix(protocol::FILE).and_then(|r| r.strip_prefix(' ')) {
            self.current = Some((name.trim().to_owned(), Vec::new()));
            return true;
        }
        match &mut self.current {
            // A kernel message can land between a file's lines: it starts with `[`, which
            // neither base64 nor the JSON report's one line does.
            Some((_, lines)) if !line.starts_with('[') => {
                lines.push(line.to_owned());
                true
            }
            _ => false,
        }
    }
}

fn decode_base64(lines: &[String], to: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(to)?)
        .spawn()
        .context("base64 -d")?;
    child.stdin.take().expect("piped").write_all(lines.join("\n").as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "base64 -d: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_back_between_markers_and_kernel_lines_stay_out() {
        let mut c = FileCollector::default();
        assert!(!c.line("booting"));
        assert!(c.line(&format!("{} report.json", protocol::FILE)));
        assert!(c.line("{\"a\":1}"));
        assert!(!c.line("[   12.5] random: crng init done"));
        assert!(c.line(protocol::FILE_END));
        assert!(!c.line("after"));
        assert_eq!(c.done["report.json"], ["{\"a\":1}"]);
    }

    #[test]
    fn a_report_with_a_failed_check_is_a_problem() {
        let dir = std::env::temp_dir();
        let ok = outcome("x".into(), r#"{"passed":true,"checks":[]}"#, true, &dir);
        assert!(ok.problem.is_none());
        let bad = outcome(
            "x".into(),
            r#"{"passed":false,"checks":[{"what":"w","expected":2,"observed":1,"passed":false}]}"#,
            false,
            &dir,
        );
        assert!(bad.problem.unwrap().contains("expected 2, observed 1"));
        assert!(outcome("x".into(), "", false, &dir).problem.unwrap().contains("no report"));
    }
}
