//! The loopback addresses churn spreads its connections over. All of 127.0.0.0/8 answers on
//! `lo`; churn splits it in two disjoint halves so that a socket's two ends tell which side
//! is which: destinations count up from 127.0.0.1 in 127.0.0.0/9, sources from 127.128.0.1 in
//! 127.128.0.0/9. Both skip addresses ending in .0 and .255 (they look like network and
//! broadcast addresses to people and some tools, though on `lo` they are ordinary), so each
//! half holds [`MAX_ADDRESSES`]: 128 × 256 × 254.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

/// Addresses per half of 127.0.0.0/8 without .0 and .255: 8,323,072.
pub const MAX_ADDRESSES: u32 = 128 * 256 * 254;

/// Usable last octets: 1 to 254.
const PER_LAST_OCTET: u32 = 254;

/// The first `count` addresses of one half, taken round-robin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// The half's second octet: 0 or 128.
    second_octet: u8,
    count: u32,
}

impl Addresses {
    /// `count` destinations from 127.0.0.1 up; `flag` names the option in the error.
    pub fn destinations(count: u32, flag: &str) -> anyhow::Result<Self> {
        Self::new(0, count, flag)
    }

    /// `count` sources from 127.128.0.1 up.
    pub fn sources(count: u32, flag: &str) -> anyhow::Result<Self> {
        Self::new(128, count, flag)
    }

    fn new(second_octet: u8, count: u32, flag: &str) -> anyhow::Result<Self> {
        let half = Self { second_octet, count: MAX_ADDRESSES };
        anyhow::ensure!(count >= 1, "{flag} must be at least 1");
        anyhow::ensure!(
            count <= MAX_ADDRESSES,
            "{flag} {count}: at most {MAX_ADDRESSES} loopback addresses fit ({} to {}, skipping those that end \
             in .0 or .255)",
            half.nth(0),
            half.nth(u64::from(MAX_ADDRESSES) - 1),
        );
        Ok(Self { second_octet, count })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The address of attempt `attempt`: round-robin over the `count` addresses, so the first
    /// `count` attempts each get a different one.
    pub fn nth(&self, attempt: u64) -> Ipv4Addr {
        let index = (attempt % u64::from(self.count)) as u32;
        let rest = index / PER_LAST_OCTET;
        // Below 128 × 256: the second octet stays inside the half.
        Ipv4Addr::new(
            127,
            self.second_octet + (rest / 256) as u8,
            (rest % 256) as u8,
            (1 + index % PER_LAST_OCTET) as u8,
        )
    }
}

/// Where each attempt goes and where from, shared by the client threads: attempt k (counted
/// over all threads) goes from source k mod M to destination k mod N, so the first N attempts
/// reach N distinct destinations and the first M leave from M distinct sources.
#[derive(Debug)]
pub(super) struct Targets {
    /// The listener's address; with one destination, the destination.
    server: SocketAddr,
    /// More than one destination: the enumeration, on the server's port.
    destinations: Option<Addresses>,
    /// More than one source: the enumeration. Else no bind (the kernel's source).
    sources: Option<Addresses>,
    next: AtomicU64,
}

impl Targets {
    pub(super) fn new(server: SocketAddr, destinations: Addresses, sources: Addresses) -> Self {
        let spread = |a: Addresses| (a.count() > 1).then_some(a);
        Self { server, destinations: spread(destinations), sources: spread(sources), next: AtomicU64::new(0) }
    }

    /// The next attempt's destination and source (`None`: leave it to the kernel).
    pub(super) fn next(&self) -> (SocketAddr, Option<IpAddr>) {
        if self.destinations.is_none() && self.sources.is_none() {
            return (self.server, None);
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let destination =
            self.destinations.map_or(self.server, |d| SocketAddr::new(d.nth(k).into(), self.server.port()));
        (destination, self.sources.map(|s| s.nth(k).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn last(a: Addresses) -> Ipv4Addr {
        a.nth(u64::from(a.count()) - 1)
    }

    #[test]
    fn destinations_start_at_127_0_0_1_and_skip_0_and_255() {
        let d = Addresses::destinations(MAX_ADDRESSES, "--destinations").unwrap();
        assert_eq!(d.nth(0), ip("127.0.0.1"));
        assert_eq!(d.nth(1), ip("127.0.0.2"));
        assert_eq!(d.nth(253), ip("127.0.0.254"));
        // .255 and .0 skipped.
        assert_eq!(d.nth(254), ip("127.0.1.1"));
        assert_eq!(d.nth(255), ip("127.0.1.2"));
        assert_eq!(d.nth(256 * 254 - 1), ip("127.0.255.254"));
        assert_eq!(d.nth(256 * 254), ip("127.1.0.1"));
        assert_eq!(last(d), ip("127.127.255.254"));
        assert_eq!(last(Addresses::destinations(2000, "--destinations").unwrap()), ip("127.0.7.222"));
        assert_eq!(last(Addresses::destinations(1, "--destinations").unwrap()), ip("127.0.0.1"));
    }

    #[test]
    fn sources_start_at_127_128_0_1_and_end_inside_the_net() {
        let s = Addresses::sources(MAX_ADDRESSES, "--sources").unwrap();
        assert_eq!(s.nth(0), ip("127.128.0.1"));
        assert_eq!(s.nth(254), ip("127.128.1.1"));
        assert_eq!(last(s), ip("127.255.255.254"));
        assert_eq!(last(Addresses::sources(500, "--sources").unwrap()), ip("127.128.1.246"));
    }

    #[test]
    fn round_robin_wraps_after_count() {
        let d = Addresses::destinations(3, "--destinations").unwrap();
        let seen: Vec<_> = (0..7).map(|i| d.nth(i).octets()[3]).collect();
        assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
        // Huge attempt numbers stay in range.
        assert_eq!(d.nth(u64::MAX), d.nth(u64::MAX % 3));
    }

    #[test]
    fn counts_are_bounded_with_a_clear_error() {
        assert!(Addresses::destinations(MAX_ADDRESSES, "--destinations").is_ok());
        let too_many = Addresses::destinations(MAX_ADDRESSES + 1, "--destinations").unwrap_err().to_string();
        assert!(too_many.contains("at most 8323072"), "{too_many}");
        assert!(too_many.contains("127.0.0.1 to 127.127.255.254"), "{too_many}");
        let zero = Addresses::sources(0, "--sources").unwrap_err().to_string();
        assert_eq!(zero, "--sources must be at least 1");
        let sources = Addresses::sources(MAX_ADDRESSES + 1, "--sources").unwrap_err().to_string();
        assert!(sources.contains("127.128.0.1 to 127.255.255.254"), "{sources}");
    }

    /// Every address of both halves, walked in order: in 127.0.0.0/8, never ending in .0 or
    /// .255, strictly increasing (so all distinct), and the halves do not meet.
    #[test]
    fn enumerations_are_distinct_loopback_and_disjoint() {
        for (half, addresses) in [
            (0, Addresses::destinations(MAX_ADDRESSES, "d").unwrap()),
            (128, Addresses::sources(MAX_ADDRESSES, "s").unwrap()),
        ] {
            let mut previous = None;
            for i in 0..u64::from(MAX_ADDRESSES) {
                let addr = addresses.nth(i);
                let [a, second, _, fourth] = addr.octets();
                assert!(a == 127 && (1..=254).contains(&fourth) && second & 128 == half, "{addr}");
                assert!(previous < Some(u32::from(addr)), "{addr} after {previous:?}");
                previous = Some(u32::from(addr));
            }
        }
        let (d, s) = (Addresses::destinations(MAX_ADDRESSES, "d").unwrap(), Addresses::sources(1, "s").unwrap());
        assert!(last(d) < s.nth(0));
    }
}
