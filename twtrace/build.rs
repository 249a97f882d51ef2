use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

#[allow(dead_code, reason = "the build date needs only civil_from_days")]
#[path = "src/time/civil.rs"]
mod civil;

/// Builds the kernel programs (`twtrace-ebpf`) with nightly + bpf-linker and places the object in
/// OUT_DIR, where `src/probes/mod.rs` embeds it. `cargo xtask setup` installs what this needs.
/// Then sets `TWTRACE_BUILD`, what `--version` says beyond the crate version: the commit, the
/// build date and a checksum of that object.
fn main() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().context("workspace root")?.join("twtrace-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package { name: "twtrace-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::Nightly,
    )?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    // With AYA_BUILD_SKIP (clippy of the eBPF crate alone) there is no object: say so.
    let object = match std::fs::read(out.join("twtrace")) {
        Ok(bytes) => format!("{:08x}", crc32fast::hash(&bytes)),
        Err(_) => "none".to_owned(),
    };
    let commit = git(manifest, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    watch_head(manifest);
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
        });
    println!("cargo:rustc-env=TWTRACE_COMMIT={commit}");
    println!("cargo:rustc-env=TWTRACE_BUILD_DATE={}", date(epoch));
    println!("cargo:rustc-env=TWTRACE_BPF_CRC32={object}");
    Ok(())
}

/// `git args` run in `dir`, its trimmed output, or `None` (no git, not a checkout).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branch it points to (a
/// commit) and packed-refs. Only files that exist: cargo reruns on every build for one that
/// does not, and a build from a tarball has none.
fn watch_head(dir: &Path) {
    let mut refs = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    refs.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in refs {
        let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) else { continue };
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// `2026-12-08` for seconds since the Unix epoch, UTC (days to a civil date, proleptic
/// Gregorian calendar, counted in 400-year eras of 146,097 days).
fn date(epoch: i64) -> String {
    let (year, month, day) = civil::civil_from_days(epoch.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}
