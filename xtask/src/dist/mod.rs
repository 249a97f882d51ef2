//! `cargo xtask dist`: what a person installs on the host that is in trouble, in target/dist/
//! (under `CARGO_TARGET_DIR` when that is set):
//!
//! ```text
//! twtrace-VERSION-x86_64-linux.tar.gz   the static binary, man pages, completions, README, licences
//! twtrace_VERSION_amd64.deb             the same, where Debian puts them (dpkg-deb, no debhelper)
//! twtrace-VERSION-oci.tar               an OCI image layout, FROM scratch, built offline
//! SHA256SUMS
//! ```
//!
//! The binary is the static build the VM guests run (`vm::build_static_twtrace`: glibc with
//! `+crt-static`); the man pages and completions come from it (`twtrace generate`, from the
//! clap definitions). Archives are made with fixed owners, names in order and the commit's
//! time as every file's time, so the same commit packs to the same bytes. aarch64 is not
//! built: its Rust standard library is not installed here and cannot be fetched.
//!
//! `cargo xtask test` packages its own static build the same way and checks the package
//! ([`self_test`]): the .deb unpacked holds a static twtrace naming HEAD's commit, its man
//! pages and its completions.

#[allow(dead_code, reason = "the image's creation time needs only civil_from_days")]
#[path = "../../../twtrace/src/time/civil.rs"]
mod civil;
mod oci;
mod play;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{run_cmd, workspace_root};

#[derive(clap::Args)]
pub struct DistArgs {
    /// Package this static twtrace instead of building one (it must be static, and its
    /// --version name HEAD's commit, as the package's check requires).
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
}

pub fn run(args: &DistArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            crate::setup::ensure()?;
            crate::vm::build_static_twtrace()?
        }
    };
    ensure!(is_static(&binary)?, "{} is not statically linked", binary.display());
    let out = crate::target_dir().join("dist");
    let made = package(&binary, &out)?;
    check_deb(&made.deb, head_commit().as_deref())?;
    oci::check(&made.oci)?;
    eprintln!("xtask: dist: {}", run_image(&made, None)?);
    eprintln!("xtask: dist: aarch64 not built (no aarch64 Rust standard library here, and none can be fetched)");
    for path in [&made.tarball, &made.deb, &made.oci] {
        let size = std::fs::metadata(path)?.len();
        println!("{}  ({:.1} MiB)", path.display(), size as f64 / (1 << 20) as f64);
    }
    Ok(())
}

/// What [`package`] wrote.
pub struct Made {
    pub tarball: PathBuf,
    pub deb: PathBuf,
    pub oci: PathBuf,
}

/// What `twtrace --version` says: `twtrace 0.1.0 (commit abc1234, built ..., ...)`.
pub struct Version {
    pub version: String,
    pub commit: String,
    pub line: String,
}

pub fn version_of(binary: &Path) -> anyhow::Result<Version> {
    let out = Command::new(binary).arg("--version").output().with_context(|| binary.display().to_string())?;
    ensure!(out.status.success(), "{} --version failed", binary.display());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = line.split_whitespace().nth(1).context("no version")?.to_owned();
    let commit = line.split("(commit ").nth(1).and_then(|r| r.split([',', ')']).next()).unwrap_or("unknown");
    Ok(Version { version, commit: commit.to_owned(), line })
}

/// Packages `binary` into `out` (replacing what is there).
pub fn package(binary: &Path, out: &Path) -> anyhow::Result<Made> {
    let v = version_of(binary)?;
    let stage = out.join(".stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let generated = stage.join("generated");
    run_cmd(Command::new(binary).arg("generate").arg(&generated))?;
    let epoch = source_epoch();
    let tarball = tarball(binary, &generated, &v, &stage, out, epoch)?;
    let deb = deb(binary, &generated, &v, &stage, out, epoch)?;
    let oci = oci::image(binary, &v, &stage.join("oci"), out, epoch)?;
    let mut sums = String::new();
    for path in [&tarball, &deb, &oci] {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        sums.push_str(&format!("{}  {name}\n", sha256(path)?));
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    std::fs::remove_dir_all(&stage)?;
    Ok(Made { tarball, deb, oci })
}

fn tarball(
    binary: &Path,
    generated: &Path,
    v: &Version,
    stage: &Path,
    out: &Path,
    epoch: u64,
) -> anyhow::Result<PathBuf> {
    let name = format!("twtrace-{}-x86_64-linux", v.version);
    let top = stage.join("tar").join(&name);
    install(binary, &top.join("twtrace"), 0o755)?;
    copy_tree(&generated.join("man"), &top.join("man"))?;
    copy_tree(&generated.join("completions"), &top.join("completions"))?;
    let root = workspace_root();
    for file in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        install(&root.join(file), &top.join(file), 0o644)?;
    }
    install(&root.join("docs/cli.md"), &top.join("docs/cli.md"), 0o644)?;
    let path = out.join(format!("{name}.tar.gz"));
    tar(&stage.join("tar"), &[&name], &path, epoch)?;
    Ok(path)
}

/// Where the Debian package puts the completions.
pub const DEB_COMPLETIONS: [(&str, &str); 3] = [
    ("twtrace.bash", "usr/share/bash-completion/completions/twtrace"),
    ("_twtrace", "usr/share/zsh/vendor-completions/_twtrace"),
    ("twtrace.fish", "usr/share/fish/vendor_completions.d/twtrace.fish"),
];

fn deb(binary: &Path, generated: &Path, v: &Version, stage: &Path, out: &Path, epoch: u64) -> anyhow::Result<PathBuf> {
    let root = stage.join("deb");
    install(binary, &root.join("usr/bin/twtrace"), 0o755)?;
    let man = root.join("usr/share/man/man1");
    std::fs::create_dir_all(&man)?;
    for page in sorted_entries(&generated.join("man/man1"))? {
        let target = man.join(page.file_name().context("a file name")?);
        install(&page, &target, 0o644)?;
        // Debian's man pages are gzipped, without a name or time inside (reproducible).
        run_cmd(Command::new("gzip").args(["-9n", "-f"]).arg(&target))?;
    }
    for (from, to) in DEB_COMPLETIONS {
        install(&generated.join("completions").join(from), &root.join(to), 0o644)?;
    }
    let doc = root.join("usr/share/doc/twtrace");
    std::fs::create_dir_all(&doc)?;
    std::fs::write(doc.join("copyright"), COPYRIGHT)?;
    set_mode(&doc.join("copyright"), 0o644)?;
    let installed_kib = tree_bytes(&root)?.div_ceil(1024);
    let control = format!(
        "Package: twtrace\n\
         Version: {}\n\
         Architecture: amd64\n\
         Maintainer: The twtrace developers <twtrace@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Description: TIME_WAIT, ephemeral port search and PAWS tracer for Linux TCP\n \
         twtrace traces with eBPF the part of Linux TCP that breaks busy servers and\n \
         clients: TIME_WAIT sockets, the ephemeral port search of connect() and bind(),\n \
         and PAWS (timestamp) drops. top is the live view for incidents, doctor says what\n \
         is wrong and what to do, record and report keep a postmortem, serve exports to\n \
         Prometheus. One static binary (commit {}); needs Linux 5.8+ with BTF, and root.\n",
        v.version, v.commit
    );
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::write(root.join("DEBIAN/control"), control)?;
    // dpkg-deb takes every file's time as it is: the commit's, as in the tarball.
    let touched = Command::new("touch").arg("-h").arg(format!("--date=@{epoch}")).args(files_under(&root)?).status()?;
    ensure!(touched.success(), "touch failed on {}", root.display());
    let path = out.join(format!("twtrace_{}_amd64.deb", v.version));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&path)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    Ok(path)
}

/// The package's copyright file (machine-readable format 1.0).
const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: twtrace
Upstream-Contact: The twtrace developers <twtrace@example.invalid>

Files: *
Copyright: 2026 The twtrace developers
License: MIT or Apache-2.0
Comment: The eBPF programs built into /usr/bin/twtrace are MIT or GPL-2.0-only and
 declare \"Dual MIT/GPL\" to the kernel, as the GPL-only helpers they call require.
 The binary is linked statically with the Rust crates twtrace depends on (their
 licences: MIT, Apache-2.0, ISC, BSD-3-Clause, Zlib, Unicode-3.0) and with the GNU C
 Library (LGPL-2.1+).

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of
 this software and associated documentation files (the \"Software\"), to deal in
 the Software without restriction, including without limitation the rights to
 use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
 the Software, and to permit persons to whom the Software is furnished to do so,
 subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all
 copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
 FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
 COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN
 AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
 WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

License: GPL-2
 On Debian systems, the full text of the GNU General Public License, version 2,
 is in /usr/share/common-licenses/GPL-2.

License: LGPL-2.1
 On Debian systems, the full text of the GNU Lesser General Public License,
 version 2.1, is in /usr/share/common-licenses/LGPL-2.1.
";

/// The acceptance check of a .deb: unpacked with `dpkg-deb -x`, it holds a static
/// /usr/bin/twtrace whose `--version` names `commit` (when known), its man pages and its
/// completions.
pub fn check_deb(deb: &Path, commit: Option<&str>) -> anyhow::Result<()> {
    let dir = deb.with_extension("check");
    let _ = std::fs::remove_dir_all(&dir);
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    let result = (|| {
        let binary = dir.join("usr/bin/twtrace");
        ensure!(is_static(&binary)?, "{} in the package is not static", binary.display());
        let v = version_of(&binary)?;
        if let Some(commit) = commit {
            ensure!(v.commit == commit, "the package's twtrace says `{}`, HEAD is {commit}", v.line);
        }
        for page in ["twtrace.1.gz", "twtrace-doctor.1.gz", "twtrace-top.1.gz", "twtrace-serve.1.gz"] {
            let path = dir.join("usr/share/man/man1").join(page);
            ensure!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 0), "no man page {}", path.display());
        }
        for (_, installed) in DEB_COMPLETIONS {
            let text = std::fs::read_to_string(dir.join(installed)).with_context(|| installed.to_owned())?;
            ensure!(text.contains("twtrace") && text.contains("doctor"), "{installed} does not complete twtrace");
        }
        ensure!(dir.join("usr/share/doc/twtrace/copyright").is_file(), "no copyright file");
        let fields = Command::new("dpkg-deb").args(["-f"]).arg(deb).args(["Package", "Architecture"]).output()?;
        let fields = String::from_utf8_lossy(&fields.stdout);
        ensure!(fields.contains("Package: twtrace") && fields.contains("Architecture: amd64"), "control: {fields}");
        eprintln!("xtask: dist: {} holds a static twtrace ({}), man pages, completions", deb.display(), v.line);
        Ok(())
    })();
    std::fs::remove_dir_all(&dir)?;
    result
}

/// `cargo xtask test`'s check of the packaging, with its own static build: a .deb, a tarball
/// and an OCI archive made from it (in target/dist-test/), the .deb checked as a user would
/// install it and the image layout validated.
pub fn self_test(binary: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let out = crate::target_dir().join("dist-test");
    let _ = std::fs::remove_dir_all(&out);
    let made = package(binary, &out)?;
    check_deb(&made.deb, head_commit().as_deref())?;
    oci::check(&made.oci)?;
    let ran = run_image(&made, Some(binary))?;
    let listing = Command::new("tar").arg("-tzf").arg(&made.tarball).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    for needed in ["/twtrace", "/man/man1/twtrace-doctor.1", "/completions/_twtrace", "/LICENSE-MIT", "/README.md"] {
        ensure!(listing.lines().any(|l| l.ends_with(needed)), "the tarball has no {needed}:\n{listing}");
    }
    std::fs::remove_dir_all(&out)?;
    eprintln!("xtask: ({:.0}s) dist: tarball, .deb and OCI image checked; {ran}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs the OCI image under podman, which `cargo xtask setup` installs; on a machine set up by
/// hand without it, says the image was not run. With `binary` (the test), the DaemonSet's pod
/// is played too, and loopback churn made with `binary` must reach its metrics.
fn run_image(made: &Made, binary: Option<&Path>) -> anyhow::Result<String> {
    if crate::which("podman").is_none() {
        return Ok("podman is not installed: the image was not run".to_owned());
    }
    let image = oci::Loaded::load(&made.oci)?;
    let mut said = format!("the image ran: {}", image.version(head_commit().as_deref())?);
    if let Some(binary) = binary {
        let scratch = made.oci.with_extension("play");
        said.push_str(&format!("; {}", play::serve_pod(&image.name, binary, &scratch)?));
    }
    Ok(said)
}

/// `git rev-parse --short HEAD` of the workspace, if it is a checkout.
pub fn head_commit() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(workspace_root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Every file's time in the archives: SOURCE_DATE_EPOCH, else HEAD's commit time, else 0.
fn source_epoch() -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok()) {
        return epoch;
    }
    let out = Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(workspace_root()).output();
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0)
}

/// `2027-01-15T08:00:00Z` for seconds since the Unix epoch (days to a civil date in the
/// proleptic Gregorian calendar, by 400-year eras of 146,097 days).
pub fn rfc3339(epoch: u64) -> String {
    let (days, secs) = ((epoch / 86_400) as i64, epoch % 86_400);
    let (year, month, day) = civil::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Whether an ELF executable is static: it has no program interpreter (PT_INTERP), as a
/// static or static-pie binary has none.
pub fn is_static(path: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    ensure!(bytes.len() > 64 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2, "{} is no 64-bit ELF", path.display());
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into()?) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    for i in 0..count {
        let at = phoff + i * size;
        let p_type = bytes.get(at..at + 4).context("truncated program headers")?;
        if u32::from_le_bytes(p_type.try_into()?) == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A gzipped tar of `names` under `dir`: names in order, owner root, every time `epoch`.
fn tar(dir: &Path, names: &[&str], out: &Path, epoch: u64) -> anyhow::Result<()> {
    let plain = out.with_extension("");
    run_cmd(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(&plain)
            .args(names),
    )?;
    run_cmd(Command::new("gzip").args(["-9n", "-f"]).arg(&plain))?;
    let gz = PathBuf::from(format!("{}.gz", plain.display()));
    if gz != out {
        std::fs::rename(&gz, out)?;
    }
    Ok(())
}

pub fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned())
}

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.parent().context("a parent")?)?;
    std::fs::copy(from, to).with_context(|| format!("{} -> {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in sorted_entries(from)? {
        let target = to.join(entry.file_name().context("a name")?);
        if entry.is_dir() { copy_tree(&entry, &target)? } else { install(&entry, &target, 0o644)? }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

/// Every file and directory under `dir`, `dir` included.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_owned()];
    for entry in sorted_entries(dir)? {
        if entry.is_dir() { out.extend(files_under(&entry)?) } else { out.push(entry) }
    }
    Ok(out)
}

fn tree_bytes(dir: &Path) -> anyhow::Result<u64> {
    files_under(dir)?.iter().filter(|p| p.is_file()).map(|p| Ok(std::fs::metadata(p)?.len())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn a_static_binary_has_no_interpreter() {
        // This test binary is dynamic (a debug build for the host); /bin/sh too.
        assert!(!is_static(&std::env::current_exe().unwrap()).unwrap());
        assert!(is_static(Path::new("Cargo.toml")).is_err(), "not an ELF file");
    }
}
