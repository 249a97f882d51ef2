//! A Debian kernel build's modules for the VM lab's guests: the tools guests' set, loaded at
//! boot in dependency order, and single modules a study needs (fetched from the very build the
//! guest boots, and cached beside its image).

use super::*;

/// Modules a guest with the lab's tools loads at boot (expect.rs, `tools`): the veth device
/// type (two namespaces joined by a pair) and nftables with connection tracking (doctor's
/// firewall, conntrack and listener scenarios). Debian builds them as modules.
pub const GUEST_MODULES: &[&str] = &["veth", "nfnetlink", "nf_tables", "nf_conntrack", "nft_ct"];

/// A kernel build's modules for the guest: a tree to lay over the guest's root
/// (`lib/modules/<release>/...`, decompressed) and the guest paths in load order.
#[derive(Clone, Debug)]
pub struct GuestModules {
    pub root: PathBuf,
    pub load_order: Vec<String>,
}

/// [`GUEST_MODULES`] and every module they depend on (the package's own modules.dep, made by
/// `busybox depmod`: Debian ships none in the .deb, its postinst runs depmod), taken from the
/// very build `build` (`<package> <version>`, as [`kernel_image`] returned it) and cached.
pub fn guest_modules(spec: &KernelSpec, build: &str) -> anyhow::Result<GuestModules> {
    let KernelSpec::Debian(k) = spec else {
        bail!("a local kernel image comes without its modules; the lab's tools need a Debian kernel");
    };
    let (package, version) = build.split_once(' ').context("a build is `<package> <version>`")?;
    let dir = cache_dir().join("kernels").join(k.name).join(format!("modules-{version}"));
    let order_file = dir.join("load-order");
    let cached = || -> Option<GuestModules> {
        let text = std::fs::read_to_string(&order_file).ok()?;
        Some(GuestModules { root: dir.join("root"), load_order: text.lines().map(str::to_owned).collect() })
    };
    if let Some(found) = cached() {
        return Ok(found);
    }
    let _lock = FetchLock::take()?;
    if let Some(found) = cached() {
        return Ok(found);
    }
    let apt = AptGroup::new(k)?;
    let work = dir.with_extension("download");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&work)?;
    // The modules are in the image package (<= 6.x) or in its linux-binary dependency.
    let candidates = apt.kernel_packages(package, version, &["linux-binary-"])?;
    let tree = work.join("tree");
    let mut modules = None;
    for candidate in &candidates {
        let deb = match apt.download(candidate, &work) {
            Ok(deb) => deb,
            Err(_) => {
                // The lists may be older than the archive: update once, then fetch again.
                apt.update()?;
                apt.download(candidate, &work)?
            }
        };
        std::fs::create_dir_all(&tree)?;
        let script = format!("dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}'", deb.display(), tree.display());
        run_cmd(Command::new("sh").args(["-c", &script]))?;
        // bullseye's packages keep modules under /lib, later ones under /usr/lib.
        for base in [tree.join("usr"), tree.clone()] {
            let Ok(entries) = std::fs::read_dir(base.join("lib/modules")) else { continue };
            if let Some(release) = entries.filter_map(Result::ok).find(|e| e.path().join("kernel").is_dir()) {
                modules = Some((base, release.file_name().to_string_lossy().into_owned()));
                break;
            }
        }
        if modules.is_some() {
            break;
        }
    }
    let (base, release) =
        modules.with_context(|| format!("no lib/modules/<release>/kernel in {}", candidates.join(" or ")))?;
    run_cmd(Command::new("busybox").arg("depmod").arg("-b").arg(&base).arg(&release))?;
    let from = base.join("lib/modules").join(&release);
    let dep = std::fs::read_to_string(from.join("modules.dep")).context("busybox depmod wrote no modules.dep")?;
    let order = load_order(&dep, GUEST_MODULES)?;
    let root = dir.join("root");
    let guest_dir = format!("lib/modules/{release}");
    let mut load_order = Vec::new();
    for path in order {
        let plain = strip_compression(&path);
        let to = root.join(&guest_dir).join(plain);
        std::fs::create_dir_all(to.parent().expect("a module's path has a directory"))?;
        decompress(&from.join(&path), &to)?;
        load_order.push(format!("/{guest_dir}/{plain}"));
    }
    std::fs::write(dir.join("load-order"), load_order.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    let _ = std::fs::remove_dir_all(&work);
    cached().context("the module cache was just written")
}

/// A module file as the guest's insmod reads it, decompressed here so that the guest needs no
/// decompressor. busybox (the guests' own, installed by setup) reads xz and gzip; zstd for
/// packages that use it.
fn decompress(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tool = match from.extension().and_then(|e| e.to_str()) {
        Some("xz") => "busybox xzcat",
        Some("gz") => "busybox zcat",
        Some("zst") => "zstd -dc",
        _ => return std::fs::copy(from, to).map(drop).with_context(|| format!("copying {}", from.display())),
    };
    let script = format!("{tool} '{}' > '{}'", from.display(), to.display());
    run_cmd(Command::new("sh").args(["-c", &script]))
}

fn strip_compression(path: &str) -> &str {
    [".xz", ".zst", ".gz"].iter().find_map(|ext| path.strip_suffix(ext)).unwrap_or(path)
}

/// The order in which to load `wanted` and what they depend on, from a modules.dep (each line
/// `path: dep dep ...`, the dependencies listed so that the last loads first), as modprobe
/// does: every module after its dependencies, each once.
pub fn load_order(modules_dep: &str, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let name_of = |path: &str| {
        let file = strip_compression(path).rsplit('/').next().unwrap_or(path);
        file.strip_suffix(".ko").unwrap_or(file).replace('-', "_")
    };
    let mut deps = std::collections::BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else { continue };
        deps.insert(name_of(path), (path.to_owned(), rest.split_whitespace().map(str::to_owned).collect::<Vec<_>>()));
    }
    let mut order: Vec<String> = Vec::new();
    for want in wanted {
        let (path, needs) =
            deps.get(*want).with_context(|| format!("no module {want} in this kernel's modules.dep"))?;
        for p in needs.iter().rev().chain(std::iter::once(path)) {
            if !order.contains(p) {
                order.push(p.clone());
            }
        }
    }
    Ok(order)
}

/// Modules of a cached Debian kernel build, for guests that need one the kernel does not have
/// built in (`names` as paths under `kernel/`, without `.ko`: `net/ipv4/inet_diag`): the
/// kernel's release (`uname -r`) and each module, decompressed, in the order asked. Fetched
/// once from the build's image package (or its linux-binary dependency, 7.x) into the kernel's
/// cache directory. A local image has none.
pub fn kernel_modules(spec: &KernelSpec, names: &[&str]) -> anyhow::Result<(String, Vec<PathBuf>)> {
    let KernelSpec::Debian(k) = spec else { bail!("{}: a local image has no module packages", spec.label()) };
    let (_, build) = kernel_image(spec, false)?;
    let (package, version) = build.split_once(' ').with_context(|| format!("unexpected build {build}"))?;
    let dir = cache_dir().join("kernels").join(k.name).join(format!("extra-modules-{version}"));
    let wanted = |release: &str| -> Vec<PathBuf> {
        names.iter().enumerate().map(|(i, n)| dir.join(release).join(format!("{i}-{}.ko", module_base(n)))).collect()
    };
    let cached_release = std::fs::read_to_string(dir.join("release")).ok().map(|r| r.trim().to_owned());
    if let Some(release) = cached_release.filter(|r| wanted(r).iter().all(|p| p.is_file())) {
        let files = wanted(&release);
        return Ok((release, files));
    }
    let _lock = FetchLock::take()?;
    let apt = AptGroup::new(k)?;
    let work = dir.join("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    if apt.depends(&format!("{package}={version}"))?.is_empty() {
        apt.update()?;
    }
    let mut found: Vec<Option<(String, PathBuf)>> = vec![None; names.len()];
    for candidate in apt.kernel_packages(package, version, &["linux-binary-", "linux-modules-"])? {
        let deb = apt.download(&candidate, &work)?;
        let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output()?;
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        for (i, module) in names.iter().enumerate() {
            let member = listing.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| {
                [".ko", ".ko.xz", ".ko.zst"].iter().any(|ext| p.ends_with(&format!("/kernel/{module}{ext}")))
            });
            let Some(member) = member else { continue };
            // ./lib/modules/<release>/kernel/... or ./usr/lib/modules/<release>/kernel/...
            let release = member.split("/modules/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default();
            let script =
                format!("dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'", deb.display(), work.display());
            run_cmd(Command::new("sh").args(["-c", &script]))?;
            found[i] = Some((release.to_owned(), work.join(member)));
        }
    }
    let mut release = String::new();
    let mut files = Vec::new();
    for (module, got) in names.iter().zip(found) {
        let (r, path) = got.with_context(|| format!("{package}={version} has no module {module}"))?;
        release = r;
        let out = dir.join(&release).join(format!("{}-{}.ko", files.len(), module_base(module)));
        std::fs::create_dir_all(out.parent().expect("a parent"))?;
        decompress(&path, &out)?;
        files.push(out);
    }
    std::fs::write(dir.join("release"), format!("{release}\n"))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok((release, files))
}

/// `inet_diag` of `net/ipv4/inet_diag`.
fn module_base(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}
