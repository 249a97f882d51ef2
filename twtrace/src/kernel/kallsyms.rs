//! Kernel symbol addresses from /proc/kallsyms.

use std::io::{BufRead, BufReader};

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read /proc/kallsyms: {0}")]
    Read(#[from] std::io::Error),
    #[error("kernel symbol `{0}` not found in /proc/kallsyms")]
    Missing(String),
    #[error(
        "/proc/kallsyms shows `{0}` at address 0: addresses are hidden (kernel.kptr_restrict); \
         run as root with CAP_SYSLOG, or set `sysctl kernel.kptr_restrict=1`"
    )]
    Hidden(String),
}

/// Symbol addresses (text or data) found in one pass over /proc/kallsyms. Reading it costs
/// about 40 ms on 6.18 (the kernel formats each of its 120k lines), so every symbol the
/// families need is looked up in the same pass.
pub struct Symbols {
    found: Vec<(&'static str, Option<u64>)>,
}

impl Symbols {
    pub fn read(names: &[&'static str]) -> Result<Self, KallsymsError> {
        let file = std::fs::File::open("/proc/kallsyms")?;
        let mut found: Vec<(&'static str, Option<u64>)> = names.iter().map(|n| (*n, None)).collect();
        for line in BufReader::with_capacity(1 << 16, file).lines() {
            let line = line?;
            let mut parts = line.split_ascii_whitespace();
            let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if let Some((_, slot @ None)) = found.iter_mut().find(|(n, _)| *n == name) {
                *slot = Some(u64::from_str_radix(addr, 16).unwrap_or(0));
                if found.iter().all(|(_, a)| a.is_some()) {
                    break;
                }
            }
        }
        Ok(Self { found })
    }

    /// The address of `name`, one of the names read.
    pub fn address(&self, name: &str) -> Result<u64, KallsymsError> {
        match self.found.iter().find(|(n, _)| *n == name).and_then(|(_, a)| *a) {
            None => Err(KallsymsError::Missing(name.into())),
            Some(0) => Err(KallsymsError::Hidden(name.into())),
            Some(a) => Ok(a),
        }
    }
}
