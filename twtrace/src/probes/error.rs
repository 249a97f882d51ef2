//! Why the probes could not be loaded. Its own module: the families' `configure`, `attach` and
//! `live` all return it, and `live` calls the other two.

use crate::kernel;

/// Why loading or attaching stopped; each variant names its cause.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] kernel::PrivilegeError),
    #[error(transparent)]
    Btf(#[from] kernel::btf::BtfError),
    #[error(transparent)]
    Kallsyms(#[from] kernel::kallsyms::KallsymsError),
    #[error("loading the kernel object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("ring buffer size {0} must be a power of two and at least 4096 bytes")]
    RingSize(u32),
    #[error("map `{0}` is missing from the kernel object")]
    MissingMap(&'static str),
    #[error("map `{0}`: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("no probe family could attach:\n{0}")]
    NothingAttached(String),
    #[error("cannot start the thread that drains the ring buffer: {0}")]
    Drain(std::io::Error),
}
