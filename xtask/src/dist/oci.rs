//! The container image, written as an OCI image layout by hand: no registry, no base image,
//! no container runtime. FROM scratch: one layer holding `/twtrace`, the static binary.
//!
//! ```text
//! oci-layout                      {"imageLayoutVersion": "1.0.0"}
//! index.json                      the image index: one manifest, named twtrace:VERSION
//! manifest.json                   the same image for `docker load` (its archive format)
//! blobs/sha256/<digest>           the manifest, the config and the layer (tar+gzip)
//! ```
//!
//! The config runs `/twtrace serve --listen 0.0.0.0:9977`, as deploy/Containerfile's image
//! does; the DaemonSet (deploy/kubernetes) gives it the capabilities it needs. [`Loaded`] runs
//! the image under podman, where it is installed, as the packaging's last checks.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use super::{Version, install, sha256, tar};
use crate::run_cmd;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes the layout under `stage` and archives it as `out/twtrace-VERSION-oci.tar`.
pub fn image(binary: &Path, v: &Version, stage: &Path, out: &Path, epoch: u64) -> anyhow::Result<PathBuf> {
    let layout = stage.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    // The layer: the binary at /twtrace. Its diff_id is the digest of the uncompressed tar.
    let root = stage.join("rootfs");
    install(binary, &root.join("twtrace"), 0o755)?;
    let layer_gz = stage.join("layer.tar.gz");
    tar(&root, &["twtrace"], &layer_gz, epoch)?;
    let layer_tar = stage.join("layer.tar");
    let unpacked = Command::new("gzip").arg("-dc").arg(&layer_gz).output().context("gzip -dc")?;
    ensure!(unpacked.status.success(), "gzip -dc {} failed", layer_gz.display());
    std::fs::write(&layer_tar, &unpacked.stdout)?;
    let diff_id = format!("sha256:{}", sha256(&layer_tar)?);
    let layer = add_blob(&blobs, &std::fs::read(&layer_gz)?, LAYER)?;
    let created = super::rfc3339(epoch);
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/twtrace"],
            "Cmd": ["serve", "--listen", "0.0.0.0:9977"],
            "ExposedPorts": {"9977/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "twtrace",
                "org.opencontainers.image.version": v.version,
                "org.opencontainers.image.revision": v.commit,
                "org.opencontainers.image.licenses": "MIT OR Apache-2.0",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask dist: the static twtrace at /twtrace"}],
    });
    let config = add_blob(&blobs, config.to_string().as_bytes(), CONFIG)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": {"org.opencontainers.image.version": v.version, "org.opencontainers.image.revision": v.commit},
    });
    let mut manifest_desc = add_blob(&blobs, manifest.to_string().as_bytes(), MANIFEST)?;
    // The reference `podman load` and `skopeo` give the image: twtrace:VERSION.
    manifest_desc["annotations"] = json!({"org.opencontainers.image.ref.name": format!("twtrace:{}", v.version)});
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]});
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(layout.join("oci-layout"), json!({"imageLayoutVersion": "1.0.0"}).to_string())?;
    let blob =
        |d: &Value| format!("blobs/sha256/{}", d["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:"));
    let docker =
        json!([{"Config": blob(&config), "RepoTags": [format!("twtrace:{}", v.version)], "Layers": [blob(&layer)]}]);
    std::fs::write(layout.join("manifest.json"), docker.to_string())?;
    let path = out.join(format!("twtrace-{}-oci.tar", v.version));
    run_cmd(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu"])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&path)
            .args(["oci-layout", "index.json", "manifest.json", "blobs"]),
    )?;
    Ok(path)
}

/// The rlimits containers get here: podman asks by default for an open-files limit of
/// 1,048,576, which a runtime inside a container whose hard limit is lower (this machine's and
/// CI's: 20,000) may not set. crun fails on that here even with these; runc with limits under
/// the hard one starts. `podman run` takes them as flags, `podman kube play` from a
/// containers.conf ([`super::play`]).
pub const RUNTIME: &str = "runc";
pub const ULIMITS: [&str; 2] = ["nofile=1024:1024", "nproc=1024:1024"];

/// An image `podman load`ed from an archive, removed from podman's store when dropped: it is
/// there only for the checks.
pub struct Loaded {
    pub name: String,
}

impl Loaded {
    pub fn load(archive: &Path) -> anyhow::Result<Self> {
        let load = Command::new("podman").args(["load", "-i"]).arg(archive).output().context("podman load")?;
        let said = String::from_utf8_lossy(&load.stdout).into_owned() + &String::from_utf8_lossy(&load.stderr);
        ensure!(load.status.success(), "podman load failed: {said}");
        let name = said
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("podman load named no image: {said}"))?;
        Ok(Self { name })
    }

    /// Runs the image as a user would, `podman run IMAGE --version`, whose line must name
    /// `commit`. Returns that line. `--network none`: --version needs no network.
    pub fn version(&self, commit: Option<&str>) -> anyhow::Result<String> {
        let mut run = Command::new("podman");
        run.args(["run", "--rm", "--runtime", RUNTIME, "--network", "none"]);
        for limit in ULIMITS {
            run.args(["--ulimit", limit]);
        }
        let out = run.args([self.name.as_str(), "--version"]).output().context("podman run")?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            out.status.success(),
            "podman run {} --version failed ({}): {line}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(line.starts_with("twtrace "), "the image's --version printed {line:?}");
        if let Some(commit) = commit {
            ensure!(
                line.contains(&format!("commit {commit}")),
                "the image's --version names another commit than {commit}: {line}"
            );
        }
        Ok(line)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "--force", &self.name]).output();
    }
}

/// Stores `bytes` under their digest; returns their descriptor.
fn add_blob(blobs: &Path, bytes: &[u8], media_type: &str) -> anyhow::Result<Value> {
    let scratch = blobs.join("incoming");
    std::fs::write(&scratch, bytes)?;
    let digest = sha256(&scratch)?;
    std::fs::rename(&scratch, blobs.join(&digest))?;
    Ok(json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len()}))
}

/// Validates an archive as an image layout: `oci-layout`, `index.json` whose manifest, config
/// and layer are blobs of the digest and size their descriptors give, a layer whose tar holds
/// an executable `twtrace`, and `manifest.json` naming the same blobs.
pub fn check(archive: &Path) -> anyhow::Result<()> {
    let dir = archive.with_extension("check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    run_cmd(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&dir))?;
    let result = check_layout(&dir);
    std::fs::remove_dir_all(&dir)?;
    result.with_context(|| format!("{} is not a valid image layout", archive.display()))
}

fn check_layout(dir: &Path) -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(dir.join(name)).with_context(|| name.to_owned())?;
        serde_json::from_str(&text).with_context(|| name.to_owned())
    };
    ensure!(read("oci-layout")?["imageLayoutVersion"] == "1.0.0", "oci-layout");
    let index = read("index.json")?;
    ensure!(index["schemaVersion"] == 2, "index.json: schemaVersion");
    let manifests = index["manifests"].as_array().context("index.json: manifests")?;
    ensure!(manifests.len() == 1, "index.json: one manifest");
    let manifest: Value = serde_json::from_slice(&blob(dir, &manifests[0], MANIFEST)?)?;
    let config: Value = serde_json::from_slice(&blob(dir, &manifest["config"], CONFIG)?)?;
    ensure!(config["os"] == "linux" && config["architecture"] == "amd64", "config: platform");
    ensure!(config["config"]["Entrypoint"] == json!(["/twtrace"]), "config: entrypoint");
    let layers = manifest["layers"].as_array().context("manifest: layers")?;
    ensure!(layers.len() == 1 && config["rootfs"]["diff_ids"].as_array().is_some_and(|d| d.len() == 1), "one layer");
    let layer = dir.join("layer.tar.gz");
    std::fs::write(&layer, blob(dir, &layers[0], LAYER)?)?;
    let listing = Command::new("tar").arg("-tvzf").arg(&layer).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    ensure!(
        listing.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" twtrace")),
        "the layer holds no executable /twtrace:\n{listing}"
    );
    let unpacked = Command::new("gzip").arg("-dc").arg(&layer).output()?;
    let tar = dir.join("layer.tar");
    std::fs::write(&tar, &unpacked.stdout)?;
    ensure!(config["rootfs"]["diff_ids"][0] == format!("sha256:{}", sha256(&tar)?), "config: diff_id");
    let docker = read("manifest.json")?;
    let named =
        |d: &Value| format!("blobs/sha256/{}", d["digest"].as_str().unwrap_or("").trim_start_matches("sha256:"));
    ensure!(
        docker[0]["Config"] == named(&manifest["config"]) && docker[0]["Layers"][0] == named(&layers[0]),
        "manifest.json"
    );
    Ok(())
}

/// The blob a descriptor names, checked against its media type, digest and size.
fn blob(dir: &Path, descriptor: &Value, media_type: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(descriptor["mediaType"] == media_type, "{descriptor}: not a {media_type}");
    let digest = descriptor["digest"].as_str().and_then(|d| d.strip_prefix("sha256:")).context("a sha256 digest")?;
    let path = dir.join("blobs/sha256").join(digest);
    let bytes = std::fs::read(&path).with_context(|| format!("blob {digest}"))?;
    ensure!(descriptor["size"] == bytes.len(), "blob {digest}: size {} against {}", bytes.len(), descriptor["size"]);
    ensure!(sha256(&path)? == digest, "blob {digest}: its content has another digest");
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of a stand-in binary is a valid layout, and a blob changed after the fact is
    /// caught.
    #[test]
    fn the_layout_written_is_valid_and_a_changed_blob_is_caught() {
        let dir = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("twtrace-standin");
        std::fs::write(&binary, b"\x7fELF stand-in").unwrap();
        let v = Version { version: "0.1.0".into(), commit: "abc1234".into(), line: String::new() };
        let archive = image(&binary, &v, &dir.join("stage"), &dir, 1_800_000_000).unwrap();
        check(&archive).unwrap();
        // The index names the manifest; its tag is the version.
        let listing = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        for name in ["oci-layout", "index.json", "manifest.json", "blobs/sha256/"] {
            assert!(listing.lines().any(|l| l.starts_with(name)), "{name} in\n{listing}");
        }
        assert_eq!(listing.lines().filter(|l| l.starts_with("blobs/sha256/") && l.len() > 20).count(), 3);
        // The same inputs give the same bytes.
        std::fs::create_dir_all(dir.join("again")).unwrap();
        let again = image(&binary, &v, &dir.join("stage2"), &dir.join("again"), 1_800_000_000).unwrap();
        assert_eq!(sha256(&archive).unwrap(), sha256(&again).unwrap(), "reproducible");
        // A layer blob rewritten: the digest check fails.
        let unpacked = dir.join("unpacked");
        std::fs::create_dir_all(&unpacked).unwrap();
        run_cmd(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&unpacked)).unwrap();
        let blobs: Vec<PathBuf> =
            std::fs::read_dir(unpacked.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
        let biggest = blobs.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
        std::fs::write(biggest, b"tampered").unwrap();
        let error = check_layout(&unpacked).unwrap_err();
        assert!(format!("{error:#}").contains("size"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
