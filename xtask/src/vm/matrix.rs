//! The VM test matrix: every integration test binary, once per forced backend, inside each
//! kernel; one table of kernel x family x backend -> pass / FAIL / unsupported (with reason).

use std::{collections::BTreeMap, io::Write, time::Duration};

use anyhow::bail;

use super::{Verdict, boot, build_initramfs, kernels};

pub const BACKENDS: &[&str] = &["fentry", "kprobe", "tracepoint"];
/// What `cargo xtask test` (and so CI) runs. `sid` is on demand (`--kernel sid`): its
/// packages change under us, and on 7.2 two failures are still unexplained (see README).
pub const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12"];
const RESULT: &str = "TWTRACE-RESULT ";
const NOTE: &str = "TWTRACE-NOTE ";

#[derive(Clone, Debug)]
enum Cell {
    Pass,
    /// Passed, but some of its tests could not run on this kernel (the reason is noted).
    PartialPass(String),
    Fail,
    Unsupported(String),
    NoResult(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pass => write!(f, "pass"),
            Self::PartialPass(_) => write!(f, "pass*"),
            Self::Fail => write!(f, "FAIL"),
            Self::Unsupported(_) => write!(f, "unsupported*"),
            Self::NoResult(_) => write!(f, "NO RESULT"),
        }
    }
}

/// The guest script: three concurrent runs (one per backend), each running every test binary
/// in turn. Failing runs print their log; skips print why.
fn guest_script(tests: &[(String, std::path::PathBuf)]) -> String {
    let mut script = String::from("run_backend() {\n  b=$1\n");
    for (name, path) in tests {
        script.push_str(&format!(
            "  TWTRACE_TEST_BACKEND=$b TWTRACE_TEST_EMULATED=1 {path} --test-threads=8 --nocapture > /tmp/$b-{name}.log 2>&1; rc=$?\n  \
             grep -h 'TWTRACE-UNSUPPORTED' /tmp/$b-{name}.log | sort -u | sed \"s/^/{NOTE}test={name} backend=$b /\"\n  \
             skipped=$(grep -c 'TWTRACE-UNSUPPORTED' /tmp/$b-{name}.log)\n  \
             passed=$(sed -n 's/^test result: [a-zA-Z]*\\. \\([0-9]*\\) passed.*/\\1/p' /tmp/$b-{name}.log | head -n 1)\n  \
             echo \"{RESULT}test={name} backend=$b rc=$rc passed=${{passed:-0}} skipped=$skipped\"\n  \
             if [ $rc -ne 0 ]; then tail -n 80 /tmp/$b-{name}.log | sed \"s/^/[$b {name}] /\"; fi\n",
            path = path.display()
        ));
    }
    script.push_str("}\n");
    for b in BACKENDS {
        script.push_str(&format!("run_backend {b} &\n"));
    }
    script.push_str("wait\n");
    script
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub fn run(kernel_specs: &[String], timeout: Duration, refresh: bool, verbose: bool) -> anyhow::Result<()> {
    let (files, tests) = super::guest_files()?;
    let work = kernels::cache_dir().join("matrix");
    std::fs::create_dir_all(&work)?;
    let initramfs = work.join("initramfs.cpio.gz");
    build_initramfs(&files, &guest_script(&tests), &initramfs)?;

    let families: Vec<&str> = tests.iter().map(|(name, _)| name.as_str()).collect();
    let mut table: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
    let mut kernel_rows: Vec<(String, String)> = Vec::new();
    let mut failed = false;
    for spec_text in kernel_specs {
        let started = std::time::Instant::now();
        let fill = |table: &mut BTreeMap<_, _>, cell: Cell| {
            for f in &families {
                for b in BACKENDS {
                    table.entry((spec_text.clone(), f.to_string(), b.to_string())).or_insert_with(|| cell.clone());
                }
            }
        };
        let image = kernels::KernelSpec::parse(spec_text).and_then(|spec| kernels::kernel_image(&spec, refresh));
        let (image, version) = match image {
            Ok(found) => found,
            Err(e) => {
                // Reported, not skipped: a kernel the matrix cannot get is a failed run.
                eprintln!("xtask: matrix: kernel {spec_text} could not be fetched: {e:#}");
                kernel_rows.push((spec_text.clone(), format!("NOT FETCHED: {e}")));
                fill(&mut table, Cell::NoResult("kernel not fetched".into()));
                failed = true;
                continue;
            }
        };
        eprintln!("xtask: matrix: booting {spec_text} ({version})");
        // Distinct skip reasons per (test binary, backend).
        let mut notes: BTreeMap<(String, String), String> = BTreeMap::new();
        // (rc, tests passed, tests that skipped as unsupported)
        let mut results: BTreeMap<(String, String), (i32, u64, u64)> = BTreeMap::new();
        let stdout = std::io::stdout();
        let verdict = boot(&image, &initramfs, timeout, |line| {
            if let Some(rest) = line.strip_prefix(RESULT) {
                if let (Some(t), Some(b), Some(rc)) = (field(rest, "test"), field(rest, "backend"), field(rest, "rc")) {
                    let count = |key| field(rest, key).and_then(|v| v.parse().ok()).unwrap_or(0);
                    results.insert((t.into(), b.into()), (rc.parse().unwrap_or(-1), count("passed"), count("skipped")));
                }
            } else if let Some(rest) = line.strip_prefix(NOTE) {
                if let (Some(t), Some(b)) = (field(rest, "test"), field(rest, "backend")) {
                    let reason = rest.split("reason=").nth(1).unwrap_or("?").to_owned();
                    let note = notes.entry((t.into(), b.into())).or_default();
                    if !note.split("; ").any(|r| r == reason) {
                        if !note.is_empty() {
                            note.push_str("; ");
                        }
                        note.push_str(&reason);
                    }
                }
            }
            let show = verbose || line.starts_with('[') && !line.starts_with("[    ") || line.contains("Kernel panic");
            if show {
                let _ = writeln!(stdout.lock(), "[{spec_text}] {line}");
            }
        })?;
        eprintln!("xtask: matrix: {spec_text}: guest {verdict} in {:.0}s", started.elapsed().as_secs_f64());
        kernel_rows.push((spec_text.clone(), version));
        for f in &families {
            for b in BACKENDS {
                let key = (f.to_string(), b.to_string());
                // Skipping tests still "pass" in libtest: a family counts as supported when
                // at least one of its tests really ran.
                let cell = match (results.get(&key), notes.get(&key)) {
                    (Some((0, _, 0)), _) => Cell::Pass,
                    (Some((0, passed, skipped)), reason) if skipped < passed => {
                        Cell::PartialPass(format!("{skipped} of {passed} tests skipped: {}", reason.map_or("?", |r| r)))
                    }
                    (Some((0, _, _)), reason) => Cell::Unsupported(reason.cloned().unwrap_or_default()),
                    (Some(_), _) => Cell::Fail,
                    (None, _) => Cell::NoResult(verdict.to_string()),
                };
                failed |= matches!(cell, Cell::Fail | Cell::NoResult(_));
                table.insert((spec_text.clone(), f.to_string(), b.to_string()), cell);
            }
        }
        failed |= !matches!(verdict, Verdict::Exited(_));
    }

    println!("\nVM matrix (kernel x family x backend)");
    println!(
        "{:<8} {:<28} {:<12} {:<14} {:<14} {:<14}",
        "kernel", "version", "family", "fentry", "kprobe", "tracepoint"
    );
    let mut footnotes = Vec::new();
    for (spec, version) in &kernel_rows {
        for f in &families {
            let cells: Vec<String> = BACKENDS
                .iter()
                .map(|b| {
                    let cell = &table[&(spec.clone(), f.to_string(), b.to_string())];
                    if let Cell::Unsupported(why) | Cell::NoResult(why) | Cell::PartialPass(why) = cell {
                        footnotes.push(format!("{spec} {f} {b}: {why}"));
                    }
                    cell.to_string()
                })
                .collect();
            let version: String = version.chars().take(28).collect();
            println!("{spec:<8} {version:<28} {f:<12} {:<14} {:<14} {:<14}", cells[0], cells[1], cells[2]);
        }
    }
    if !footnotes.is_empty() {
        println!("\n* why:");
        footnotes.sort();
        footnotes.dedup();
        for n in footnotes {
            println!("  {n}");
        }
    }
    if failed {
        bail!("the VM matrix has failures");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest script, run on this host with a fake test binary: the result lines carry the
    /// exit status and the passed / skipped counts the matrix needs.
    #[test]
    fn guest_script_reports_counts() {
        let dir = std::env::temp_dir().join(format!("twtrace-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("fake-test");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'TWTRACE-UNSUPPORTED family=drops backend=x reason=old kernel'\n\
             echo 'TWTRACE-UNSUPPORTED family=drops backend=x reason=old kernel'\n\
             echo 'test result: ok. 4 passed; 0 failed; 0 ignored'\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let script = guest_script(&[("drops".into(), fake)]);
        let out = std::process::Command::new("sh").arg("-c").arg(&script).current_dir(&dir).output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        for b in BACKENDS {
            assert!(out.contains(&format!("{RESULT}test=drops backend={b} rc=0 passed=4 skipped=2")), "{out}");
            assert!(out.contains(&format!("{NOTE}test=drops backend={b} TWTRACE-UNSUPPORTED")), "{out}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
