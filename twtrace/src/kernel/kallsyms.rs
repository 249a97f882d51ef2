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
    found: Vec<Found>,
}

struct Found {
    name: &'static str,
    start: Option<u64>,
    /// The next higher address listed after it: where its text ends.
    end: Option<u64>,
}

impl Symbols {
    pub fn read(names: &[&'static str]) -> Result<Self, KallsymsError> {
        let file = std::fs::File::open("/proc/kallsyms")?;
        Ok(Self::parse(BufReader::with_capacity(1 << 16, file), names)?)
    }

    /// The pass itself. The kernel's own symbols come first, in address order (modules follow,
    /// each in its own order), so a symbol's end is the first higher address after it.
    fn parse(reader: impl BufRead, names: &[&'static str]) -> std::io::Result<Self> {
        let mut found: Vec<Found> = names.iter().map(|n| Found { name: n, start: None, end: None }).collect();
        for line in reader.lines() {
            let line = line?;
            let mut parts = line.split_ascii_whitespace();
            let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let addr = u64::from_str_radix(addr, 16).unwrap_or(0);
            for f in found.iter_mut().filter(|f| f.end.is_none() && f.start.is_some_and(|s| addr > s)) {
                f.end = Some(addr);
            }
            if let Some(f) = found.iter_mut().find(|f| f.name == name && f.start.is_none()) {
                f.start = Some(addr);
            }
            if found.iter().all(|f| f.start.is_some() && f.end.is_some()) {
                break;
            }
        }
        Ok(Self { found })
    }

    /// The text of `name` as `[start, end)`, if it was read and its addresses are shown.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let f = self.found.iter().find(|f| f.name == name)?;
        match (f.start, f.end) {
            (Some(start), Some(end)) if start != 0 && end > start => Some((start, end)),
            _ => None,
        }
    }

    /// The address of `name`, one of the names read.
    pub fn address(&self, name: &str) -> Result<u64, KallsymsError> {
        match self.found.iter().find(|f| f.name == name).and_then(|f| f.start) {
            None => Err(KallsymsError::Missing(name.into())),
            Some(0) => Err(KallsymsError::Hidden(name.into())),
            Some(a) => Ok(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_ends_where_the_next_higher_address_starts() {
        let text = "ffffffff81000000 T _stext\nffffffff81000100 T tcp_v4_rcv\nffffffff81000100 t alias\n\
                    ffffffff81000400 T tcp_v6_rcv\nffffffff81000500 T last\n";
        let symbols = Symbols::parse(text.as_bytes(), &["tcp_v4_rcv", "tcp_v6_rcv", "absent"]).unwrap();
        assert_eq!(symbols.range("tcp_v4_rcv"), Some((0xffffffff81000100, 0xffffffff81000400)));
        assert_eq!(symbols.range("tcp_v6_rcv"), Some((0xffffffff81000400, 0xffffffff81000500)));
        assert_eq!(symbols.range("absent"), None);
        assert_eq!(symbols.address("tcp_v6_rcv").unwrap(), 0xffffffff81000400);
        // Addresses hidden (kptr_restrict): all zero, no range.
        let hidden =
            Symbols::parse("0000000000000000 T tcp_v4_rcv\n0000000000000000 T x\n".as_bytes(), &["tcp_v4_rcv"]);
        assert_eq!(hidden.unwrap().range("tcp_v4_rcv"), None);
    }
}
