//! The `other` series of folded rows, kept monotonic.
//!
//! Summing the folded rows afresh at each build made `other` a counter that could fall: a row
//! leaving the fold for a series of its own took its whole count out of `other`, which
//! `rate()` reads as a counter reset (and a spike). Here each build adds to `other` what the
//! rows folded at that build did since the build before (a row first seen adds its whole
//! count: it started at 0), and never takes anything out. A row whose series starts with a
//! count already made (named after being folded) shows that count in its first sample, which
//! `rate()` does not take as an increase, so no increase is counted twice in a rate; sums over
//! the series may exceed the total by what rows did while folded and before they were named.
//!
//! Rows are identified across builds by what the exporter already keeps: per destination its
//! last (in use, connects, failures) (`Builder::activity`), per PAWS source its last drop
//! count, and for connect searches the whole histogram and the named rows' histograms.

use std::net::{IpAddr, SocketAddr};

use foldhash::HashMap;

use crate::aggregate::stats::Histogram;

#[derive(Default)]
pub(super) struct OtherCounters {
    pub connects: u64,
    pub failures: u64,
    pub paws_drops: u64,
    /// Each PAWS source's drops at the last build.
    paws_seen: HashMap<(u32, IpAddr), u64>,
    /// Connect searches: every search at the last build, and the named rows' histograms then.
    searches_all: Option<(Histogram, Histogram)>,
    searches_named: HashMap<(u32, SocketAddr), (Histogram, Histogram)>,
    pub search_duration: Histogram,
    pub search_candidates: Histogram,
}

impl OtherCounters {
    /// A destination folded at this build: what it did since `previous` (its last connects and
    /// failures; `None`: first seen).
    pub fn fold_destination(&mut self, connects: u64, failures: u64, previous: Option<(u64, u64)>) {
        let (c, f) = previous.unwrap_or_default();
        self.connects += connects.saturating_sub(c);
        self.failures += failures.saturating_sub(f);
    }

    /// Every PAWS source of this build, `named` (true) or folded, with its drops.
    pub fn paws_sources<'a>(&mut self, sources: impl Iterator<Item = ((u32, IpAddr), u64, bool)> + 'a) {
        let mut seen = HashMap::default();
        for (key, drops, named) in sources {
            if !named {
                self.paws_drops += drops.saturating_sub(self.paws_seen.get(&key).copied().unwrap_or(0));
            }
            seen.insert(key, drops);
        }
        self.paws_seen = seen;
    }

    /// Connect searches at this build: `all` of them so far (evicted rows' too) and the rows
    /// `named` now. Adds what the folded rows did since the last build: all the growth less
    /// that of the rows named at both builds. At the first build, everything not named.
    pub fn searches(&mut self, all: (&Histogram, &Histogram), named: &[((u32, SocketAddr), &Histogram, &Histogram)]) {
        let (mut d, mut c) = (all.0.clone(), all.1.clone());
        match &self.searches_all {
            None => {
                for (_, rd, rc) in named {
                    d.subtract(rd);
                    c.subtract(rc);
                }
            }
            Some((pd, pc)) => {
                d.subtract(pd);
                c.subtract(pc);
                for (key, rd, rc) in named {
                    if let Some((pd, pc)) = self.searches_named.get(key) {
                        let (mut gd, mut gc) = ((*rd).clone(), (*rc).clone());
                        gd.subtract(pd);
                        gc.subtract(pc);
                        d.subtract(&gd);
                        c.subtract(&gc);
                    }
                }
            }
        }
        self.search_duration.merge(&d);
        self.search_candidates.merge(&c);
        self.searches_all = Some((all.0.clone(), all.1.clone()));
        self.searches_named = named.iter().map(|(k, rd, rc)| (*k, ((*rd).clone(), (*rc).clone()))).collect();
    }
}
