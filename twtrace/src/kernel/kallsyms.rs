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

/// Address of each requested symbol (text or data), in the order asked.
pub fn lookup(names: &[&str]) -> Result<Vec<u64>, KallsymsError> {
    let file = std::fs::File::open("/proc/kallsyms")?;
    let mut found: Vec<Option<u64>> = vec![None; names.len()];
    for line in BufReader::with_capacity(1 << 16, file).lines() {
        let line = line?;
        let mut parts = line.split_ascii_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name) {
            if found[i].is_none() {
                found[i] = Some(u64::from_str_radix(addr, 16).unwrap_or(0));
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
    }
    names
        .iter()
        .zip(found)
        .map(|(name, addr)| match addr {
            None => Err(KallsymsError::Missing((*name).into())),
            Some(0) => Err(KallsymsError::Hidden((*name).into())),
            Some(a) => Ok(a),
        })
        .collect()
}
