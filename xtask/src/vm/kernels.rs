//! Kernels for the VM lab: Debian's cloud kernels fetched by version family through a private
//! APT configuration (the host's /etc/apt is never touched), or a local image.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{describe, run_cmd};

mod modules;
pub use modules::{GuestModules, guest_modules, kernel_modules};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org";

/// A kernel to boot: a Debian version family, or an image the user brings.
#[derive(Clone, Debug)]
pub enum KernelSpec {
    Debian(&'static DebianKernel),
    Local(PathBuf),
}

#[derive(Debug)]
pub struct DebianKernel {
    /// What the user types: `5.10`, `6.1`, `6.12`, `6.18`, `sid`.
    pub name: &'static str,
    /// Suites whose lists resolve the package; each group gets its own APT state.
    pub suites: &'static [(&'static str, &'static str)],
    pub group: &'static str,
    pub image: Image,
}

/// Which package carries the kernel.
#[derive(Debug)]
pub enum Image {
    /// A meta package that depends on the current concrete image: ABI numbers change under
    /// security updates and the old image leaves the security archive, so these follow it.
    /// The build used is printed by every run (package, version and the guest's `uname -v`).
    Meta(&'static str),
    /// Exactly this package at exactly this version. If the archive no longer has it, fetching
    /// fails and names what it has instead: a pin never falls back to another build.
    Pinned { package: &'static str, version: &'static str },
    /// The newest build of one kernel line (`6.16`) among the exact packages a suite keeps
    /// (`linux-image-6.16.3+deb13-cloud-amd64`): trixie-backports keeps every line it has
    /// shipped, so `bpo-6.16` to `bpo-7.3` boot the builds Debian users ran.
    Line(&'static str),
}

/// The prefix of a kernel line in trixie-backports: `bpo-6.16`.
const BACKPORTS_PREFIX: &str = "bpo-";

pub const DEBIAN_KERNELS: &[DebianKernel] = &[
    DebianKernel {
        name: "5.10",
        suites: &[("debian", "bullseye"), ("debian-security", "bullseye-security")],
        group: "bullseye",
        image: Image::Meta("linux-image-cloud-amd64"),
    },
    DebianKernel {
        name: "6.1",
        suites: &[("debian", "bookworm"), ("debian-security", "bookworm-security")],
        group: "bookworm",
        image: Image::Meta("linux-image-cloud-amd64"),
    },
    DebianKernel {
        name: "6.12",
        suites: &[("debian", "bookworm"), ("debian-security", "bookworm-security")],
        group: "bookworm",
        image: Image::Meta("linux-image-6.12-cloud-amd64"),
    },
    // The TCP of 6.16+: `__inet_hash_connect` with `hash_port0`, the TCP_RFC7323_TW_PAWS drop
    // reason and the PAWSTimewait counter. trixie-backports keeps older builds under exact
    // package names (6.16.3 to 7.3.4 when this was pinned), so this one can be pinned; 6.18 is
    // also the development host's kernel line (KERNEL-NOTES).
    DebianKernel {
        name: "6.18",
        suites: &[("debian", "trixie-backports")],
        group: "trixie-backports",
        image: Image::Pinned { package: "linux-image-6.18.15+deb13-cloud-amd64", version: "6.18.15-1~bpo13+1" },
    },
    DebianKernel {
        name: "sid",
        suites: &[("debian", "sid")],
        group: "sid",
        image: Image::Meta("linux-image-cloud-amd64"),
    },
];

impl KernelSpec {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        if let Some(k) = DEBIAN_KERNELS.iter().find(|k| k.name == spec) {
            return Ok(Self::Debian(k));
        }
        if let Some((line, pin)) = spec.split_once('@') {
            return Self::pinned(spec, line, pin);
        }
        if let Some(line) = spec.strip_prefix(BACKPORTS_PREFIX) {
            let mut parts = line.split('.');
            let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !(numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()) {
                bail!("`{spec}`: a trixie-backports kernel line is `{BACKPORTS_PREFIX}MAJOR.MINOR`, e.g. `bpo-6.16`");
            }
            // Leaked once per spec on the command line: a spec lives as long as the run.
            let name: &'static str = Box::leak(spec.to_owned().into_boxed_str());
            let line: &'static str = &name[BACKPORTS_PREFIX.len()..];
            return Ok(Self::Debian(Box::leak(Box::new(DebianKernel {
                name,
                suites: &[("debian", "trixie-backports")],
                group: "trixie-backports",
                image: Image::Line(line),
            }))));
        }
        let path = Path::new(spec);
        if path.is_file() {
            return Ok(Self::Local(path.to_owned()));
        }
        bail!(
            "unknown kernel `{spec}`: use one of {}, a trixie-backports line (`bpo-6.16`), a pinned build \
             (`6.1@linux-image-6.1.0-56-cloud-amd64=6.1.192-2`), or the path of a bzImage/vmlinuz",
            DEBIAN_KERNELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        )
    }

    /// `LINE@PACKAGE=VERSION`: exactly that build from the line's suites (what a study's
    /// results table names: its kernel column is the package's ABI name, its build column the
    /// Debian version), so that a rerun boots the build a published figure came from, or says
    /// plainly that the archive no longer has it.
    fn pinned(spec: &str, line: &str, pin: &str) -> anyhow::Result<Self> {
        let base = match Self::parse(line)? {
            Self::Debian(k) => k,
            Self::Local(_) => bail!("`{spec}`: only a Debian kernel line can be pinned, not an image path"),
        };
        let Some((package, version)) =
            pin.split_once('=').filter(|(p, v)| p.starts_with("linux-image-") && !v.is_empty())
        else {
            bail!(
                "`{spec}`: a pinned build is LINE@PACKAGE=VERSION, e.g. \
                 `6.1@linux-image-6.1.0-56-cloud-amd64=6.1.192-2` (a study's kernel and build columns)"
            );
        };
        // Leaked once per spec on the command line: a spec lives as long as the run. Named by
        // the whole spec, so that its cache is its own and never a line's newest build.
        let leak = |text: &str| -> &'static str { Box::leak(text.to_owned().into_boxed_str()) };
        Ok(Self::Debian(Box::leak(Box::new(DebianKernel {
            name: leak(spec),
            suites: base.suites,
            group: base.group,
            image: Image::Pinned { package: leak(package), version: leak(version) },
        }))))
    }

    pub fn label(&self) -> String {
        match self {
            Self::Debian(k) => k.name.to_owned(),
            Self::Local(p) => p.display().to_string(),
        }
    }
}

pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("twtrace").join("vm")
}

/// The kernel image for `spec` and the build it is (`<package> <Debian version>`), fetched once
/// and cached (`refresh` re-resolves a meta package to its newest build).
pub fn kernel_image(spec: &KernelSpec, refresh: bool) -> anyhow::Result<(PathBuf, String)> {
    let k = match spec {
        KernelSpec::Local(path) => return Ok((path.clone(), path.display().to_string())),
        KernelSpec::Debian(k) => *k,
    };
    let dir = cache_dir().join("kernels").join(k.name);
    let image = dir.join("vmlinuz");
    let version_file = dir.join("version");
    let cached = || -> Option<(PathBuf, String)> {
        let version = std::fs::read_to_string(&version_file).ok()?.trim().to_owned();
        // `<package> <version>`; a cache from before builds were recorded so is fetched anew.
        version.contains(' ').then_some(())?;
        // A pinned kernel's cache counts only if it is that pin (the pin may have moved).
        match k.image {
            Image::Pinned { package, version: pinned } if version != format!("{package} {pinned}") => return None,
            Image::Line(line) if !version.starts_with(&line_package_prefix(line)) => return None,
            _ => {}
        }
        image.is_file().then(|| (image.clone(), version))
    };
    if let Some(found) = cached().filter(|_| !refresh) {
        return Ok(found);
    }
    // One fetch at a time, across threads and processes: concurrent `apt-get update`s on the
    // same lists fail on apt's lock (seen on a fresh machine, where two VM self-tests fetched
    // the 6.1 kernel at once). Whoever waited finds the image already there.
    let _lock = FetchLock::take()?;
    if let Some(found) = cached().filter(|_| !refresh) {
        return Ok(found);
    }
    let apt = AptGroup::new(k)?;
    apt.update()?;
    let (package, version) = match k.image {
        Image::Meta(meta) => apt.resolve_image(meta)?,
        Image::Line(line) => apt.resolve_line(line)?,
        Image::Pinned { package, version } => {
            apt.require(package, version)?;
            (package.to_owned(), version.to_owned())
        }
    };
    let work = dir.join("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    // The image package carries vmlinuz itself (<= 6.x) or depends on a linux-binary-*
    // package that does (sid, 7.x): try the package, then its linux-binary dependency.
    for candidate in apt.kernel_packages(&package, &version, &["linux-binary-"])? {
        let deb = apt.download(&candidate, &work)?;
        if let Some(found) = extract_vmlinuz(&deb, &work)? {
            std::fs::rename(found, &image)?;
            let build = format!("{package} {version}");
            std::fs::write(&version_file, format!("{build}\n"))?;
            let _ = std::fs::remove_dir_all(&work);
            return Ok((image, build));
        }
    }
    bail!("no vmlinuz in {package} or its linux-binary dependency")
}

/// An exclusive `flock` on the kernel cache, released when the file closes (on drop, or when
/// the process dies).
struct FetchLock {
    _held: std::fs::File,
}

impl FetchLock {
    fn take() -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd;
        let dir = cache_dir().join("kernels");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".fetch.lock");
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", path.display()));
        }
        Ok(Self { _held: file })
    }
}

/// Extracts the kernel image of a kernel .deb into `dir`, if it has one.
fn extract_vmlinuz(deb: &Path, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let listing = Command::new("dpkg-deb").arg("-c").arg(deb).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let Some(member) = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.starts_with("./boot/vmlinuz-") || (p.starts_with("./usr/lib/modules/") && p.ends_with("/vmlinuz")))
    else {
        return Ok(None);
    };
    let script = format!("dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'", deb.display(), dir.display());
    run_cmd(Command::new("sh").args(["-c", &script]))?;
    Ok(Some(dir.join(member)))
}

/// A private APT setup (lists, cache, sources) for one group of suites.
struct AptGroup {
    config: PathBuf,
}

impl AptGroup {
    fn new(k: &DebianKernel) -> anyhow::Result<Self> {
        let root = cache_dir().join("apt").join(k.group);
        for sub in ["lists/partial", "archives/partial", "cache", "etc"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let sources: String = k
            .suites
            .iter()
            .map(|(archive, suite)| format!("deb [signed-by={KEYRING}] {MIRROR}/{archive} {suite} main\n"))
            .collect();
        std::fs::write(root.join("etc/sources.list"), sources)?;
        let r = root.display();
        let config = root.join("etc/apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir::Etc::sourcelist \"{r}/etc/sources.list\";\nDir::Etc::sourceparts \"-\";\n\
                 Dir::State::Lists \"{r}/lists\";\nDir::Cache \"{r}/cache\";\nDir::Cache::archives \"{r}/archives\";\n\
                 APT::Architecture \"amd64\";\nAPT::Sandbox::User \"root\";\n"
            ),
        )?;
        Ok(Self { config })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config);
        cmd
    }

    fn update(&self) -> anyhow::Result<()> {
        run_cmd(self.command("apt-get").args(["update", "-q"]))
    }

    /// `package=version` and those of its dependencies whose names start with one of `parts`
    /// (signed builds only): the packages a Debian kernel build's files are in (up to 6.x all
    /// in the image package; 7.x splits them, the image into linux-binary-*, the modules into
    /// linux-modules-*).
    fn kernel_packages(&self, package: &str, version: &str, parts: &[&str]) -> anyhow::Result<Vec<String>> {
        let image = format!("{package}={version}");
        let split = self
            .depends(&image)?
            .into_iter()
            .filter(|d| parts.iter().any(|part| d.starts_with(part)) && !d.contains("unsigned"));
        Ok(std::iter::once(image.clone()).chain(split).collect())
    }

    /// `apt-get download` of `candidate` (`name=version`) into `dir`: the .deb's path.
    fn download(&self, candidate: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        run_cmd(self.command("apt-get").args(["download", "-q", candidate]).current_dir(dir))?;
        let name = candidate.split('=').next().unwrap_or(candidate);
        std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}_"))))
            .with_context(|| format!("downloaded {candidate} but found no .deb"))
    }

    fn depends(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["depends", package]);
        let out = cmd.output().with_context(|| describe(&cmd))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(|d| d.trim_start_matches('<').trim_end_matches('>').to_owned())
            .collect())
    }

    /// Meta package → the concrete `linux-image-<abi>-...` it depends on, and that package's
    /// candidate version.
    fn resolve_image(&self, meta: &str) -> anyhow::Result<(String, String)> {
        let image = self
            .depends(meta)?
            .into_iter()
            .find(|d| d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit))
            .with_context(|| format!("{meta} depends on no concrete linux-image package (is the suite reachable?)"))?;
        let version = self
            .versions(&image)?
            .into_iter()
            .next()
            .with_context(|| format!("{image} has no version in the lists"))?;
        Ok((image, version))
    }

    /// The newest exact cloud image package of kernel line `line` (`6.16`), and its version.
    fn resolve_line(&self, line: &str) -> anyhow::Result<(String, String)> {
        let prefix = line_package_prefix(line);
        let mut packages: Vec<(Vec<u32>, String)> = self
            .cloud_images()?
            .into_iter()
            .filter(|p| p.starts_with(&prefix))
            .map(|p| (numbers(&p["linux-image-".len()..]), p))
            .collect();
        packages.sort();
        let Some((_, package)) = packages.pop() else {
            let all = self.cloud_images()?;
            bail!("trixie-backports has no {prefix}*-cloud-amd64 package; its cloud images: {}", all.join(", "));
        };
        let version =
            self.versions(&package)?.into_iter().next().with_context(|| format!("{package} has no version"))?;
        Ok((package, version))
    }

    /// Every exact `linux-image-<version>...-cloud-amd64` package the lists hold, sorted.
    fn cloud_images(&self) -> anyhow::Result<Vec<String>> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["pkgnames", "linux-image-"]);
        let out = cmd.output().with_context(|| describe(&cmd))?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.ends_with("-cloud-amd64") && n.as_bytes().get(12).is_some_and(u8::is_ascii_digit))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The versions of `package` the lists hold (newest first).
    fn versions(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["madison", package]);
        let out = cmd.output().with_context(|| describe(&cmd))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(|v| v.trim().to_owned())
            .collect())
    }

    /// Fails unless the archive has exactly `package` at `version`, and then says what it has
    /// instead: a pinned kernel never falls back to another build.
    fn require(&self, package: &str, version: &str) -> anyhow::Result<()> {
        let versions = self.versions(package)?;
        if versions.iter().any(|v| v == version) {
            return Ok(());
        }
        let others = self.cloud_images()?;
        bail!(
            "the pinned kernel {package}={version} is gone from the archive (versions of that package there: {}); \
             pin another build (`LINE@PACKAGE=VERSION`, or in xtask/src/vm/kernels.rs and the table \
             in xtask/src/vm/expect.rs). Cloud images there now: {}",
            if versions.is_empty() { "none".to_owned() } else { versions.join(", ") },
            others.join(", ")
        )
    }
}

/// `linux-image-6.16.` for line `6.16`: the packages of that line and no other (`6.1` must not
/// match `6.16`).
fn line_package_prefix(line: &str) -> String {
    format!("linux-image-{line}.")
}

/// The numbers in a version-like text, in order (`6.16.3+deb13` → 6, 16, 3, 13): orders the
/// builds of a line.
fn numbers(text: &str) -> Vec<u32> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::{modules::load_order, *};

    #[test]
    fn backports_lines_parse_and_order_their_builds() {
        let KernelSpec::Debian(k) = KernelSpec::parse("bpo-6.16").unwrap() else { panic!("a Debian kernel") };
        assert!(matches!(k.image, Image::Line("6.16")) && k.name == "bpo-6.16" && k.group == "trixie-backports");
        for bad in ["bpo-6", "bpo-6.16.3", "bpo-x.1", "bpo-"] {
            assert!(KernelSpec::parse(bad).is_err(), "{bad}");
        }
        assert!("linux-image-6.16.3+deb13-cloud-amd64".starts_with(&line_package_prefix("6.16")));
        assert!(!"linux-image-6.16.3+deb13-cloud-amd64".starts_with(&line_package_prefix("6.1")));
        let mut builds = ["6.16.12+deb13", "6.16.3+deb13", "6.16.9+deb13"].map(numbers);
        builds.sort();
        assert_eq!(builds.last().unwrap(), &vec![6, 16, 12, 13]);
    }

    #[test]
    fn modules_load_after_what_they_depend_on() {
        let dep = "kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz\n\
                   kernel/drivers/net/veth.ko.xz:\n\
                   kernel/net/netfilter/nfnetlink.ko.xz:\n\
                   kernel/net/netfilter/nft_ct.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz \
                   kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/net/netfilter/nf_tables.ko.xz \
                   kernel/net/netfilter/nfnetlink.ko.xz\n\
                   kernel/net/netfilter/nf_conntrack.ko.xz: kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz\n\
                   kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz:\n";
        let order = load_order(dep, &["veth", "nft_ct"]).unwrap();
        let names: Vec<&str> =
            order.iter().map(|p| p.rsplit('/').next().unwrap().strip_suffix(".ko.xz").unwrap()).collect();
        assert_eq!(names, ["veth", "nfnetlink", "nf_tables", "nf_defrag_ipv4", "nf_conntrack", "nft_ct"]);
        assert!(load_order(dep, &["nf_nat"]).is_err(), "a module the kernel lacks is an error, not a skip");
    }

    #[test]
    fn a_pinned_build_is_parsed_with_its_lines_suites() {
        let KernelSpec::Debian(k) = KernelSpec::parse("6.1@linux-image-6.1.0-56-cloud-amd64=6.1.192-2").unwrap() else {
            panic!("a Debian kernel")
        };
        assert_eq!((k.group, k.name), ("bookworm", "6.1@linux-image-6.1.0-56-cloud-amd64=6.1.192-2"));
        assert!(matches!(k.image, Image::Pinned { package: "linux-image-6.1.0-56-cloud-amd64", version: "6.1.192-2" }));
        let KernelSpec::Debian(k) =
            KernelSpec::parse("bpo-6.16@linux-image-6.16.3+deb13-cloud-amd64=6.16.3-1~bpo13+1").unwrap()
        else {
            panic!("a Debian kernel")
        };
        assert_eq!(k.group, "trixie-backports");
        for bad in ["6.1@", "6.1@linux-image-x", "6.1@linux-image-x=", "6.1@foo=1", "7.9@linux-image-x=1"] {
            assert!(KernelSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_vanished_pin_fails_loudly_and_names_what_the_archive_has() {
        static GONE: DebianKernel = DebianKernel {
            name: "selftest-vanished-pin",
            suites: &[("debian", "trixie-backports")],
            group: "trixie-backports",
            image: Image::Pinned { package: "linux-image-6.18.15+deb13-cloud-amd64", version: "6.18.15-0~gone" },
        };
        let err = kernel_image(&KernelSpec::Debian(&GONE), false).expect_err("a vanished pin must fail");
        let text = format!("{err:#}");
        eprintln!("{text}");
        assert!(
            text.contains("linux-image-6.18.15+deb13-cloud-amd64=6.18.15-0~gone is gone from the archive"),
            "{text}"
        );
        // The real pin's version is what the archive has for that package.
        let DebianKernel { image: Image::Pinned { version, .. }, .. } =
            DEBIAN_KERNELS.iter().find(|k| k.name == "6.18").unwrap()
        else {
            panic!("6.18 is pinned")
        };
        assert!(text.contains(&format!("versions of that package there: {version}")), "{text}");
        assert!(!cache_dir().join("kernels").join(GONE.name).join("vmlinuz").exists());
    }
}
