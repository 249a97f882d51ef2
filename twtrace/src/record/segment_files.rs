//! A flight recorder directory's segment files: how they are named and found. Apart from
//! `segments` (which writes and deletes them) so that `kept` and `directory`, which read them,
//! need only the names, and `segments` can own the `Keeper` without a circle.

use std::path::{Path, PathBuf};

use crate::time::{TimeSpec, WallTime};

pub const PREFIX: &str = "twtrace-";
pub const SUFFIX: &str = ".twr";

/// A segment's file name: `twtrace-<start, UTC>-<number>.twr`. Ordered by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub seq: u64,
    /// The segment's start, to the second (Unix seconds).
    pub start_unix_s: u64,
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        let start = WallTime::from_unix_ns(self.start_unix_s.saturating_mul(1_000_000_000)).to_second();
        let compact: String = start.chars().filter(|c| *c != '-' && *c != ':').collect();
        format!("{PREFIX}{compact}Z-{:06}{SUFFIX}", self.seq)
    }

    pub fn parse(file_name: &str) -> Option<Self> {
        let core = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (time, seq) = core.split_once("Z-")?;
        let b = time.as_bytes();
        if b.len() != 15 || b[8] != b'T' || !seq.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let at = |r: std::ops::Range<usize>| time.get(r).unwrap_or("");
        let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", at(0..4), at(4..6), at(6..8), at(9..11), at(11..13), at(13..15));
        let TimeSpec::At(start) = TimeSpec::parse(&rfc3339).ok()? else { return None };
        Some(Self { seq: seq.parse().ok()?, start_unix_s: start.unix_ns() / 1_000_000_000 })
    }
}

/// A segment file found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDisk {
    pub name: SegmentName,
    pub path: PathBuf,
    pub bytes: u64,
    /// Last write (Unix ns): what `--keep` ages by.
    pub modified_unix_ns: u64,
}

/// The segments in `dir`, by number. Other files are left alone and not counted.
pub fn list(dir: &Path) -> std::io::Result<Vec<OnDisk>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) else { continue };
        // A segment deleted meanwhile (by a second twtrace, or by hand) is simply not there.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        out.push(OnDisk {
            name,
            path: entry.path(),
            bytes: meta.len(),
            modified_unix_ns: modified.map_or(0, |d| d.as_nanos() as u64),
        });
    }
    out.sort_by_key(|s| s.name);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_number_and_carry_the_start() {
        let name = SegmentName { seq: 42, start_unix_s: 1_795_385_599 };
        assert_eq!(name.file_name(), "twtrace-20261122T221319Z-000042.twr");
        assert_eq!(SegmentName::parse(&name.file_name()), Some(name));
        let big = SegmentName { seq: 12_345_678, start_unix_s: 0 };
        assert_eq!(SegmentName::parse(&big.file_name()), Some(big));
        for other in [
            "twtrace-20261122T221319Z-000042.twr.tmp",
            "notes.txt",
            "twtrace-2026-000001.twr",
            "twtrace-20261322T221319Z-1.twr",
        ] {
            assert_eq!(SegmentName::parse(other), None, "{other}");
        }
    }
}
