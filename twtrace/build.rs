use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs (`twtrace-ebpf`) with nightly + bpf-linker and places the object in
/// OUT_DIR, where `src/probes/mod.rs` embeds it. `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.join("twtrace-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf([Package { name: "twtrace-ebpf", root_dir: root, ..Default::default() }], Toolchain::Nightly)
}
