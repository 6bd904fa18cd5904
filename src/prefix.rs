//! The wider networks a client belongs to, counted beside the client itself: IPv6 /56 and
//! /48, IPv4 /24. One attacker with many addresses (a /48 rotating through its /64s, a /24
//! through its 256 addresses) is one of these networks, and each network has its own site
//! threshold (`DOSPrefixCount`), higher than `DOSSiteCount` because many honest clients may
//! share it.
//!
//! A prefix length of 0 means "the client itself" wherever a length travels with an address
//! (records, block states, labels).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The counted levels: (family, prefix length, default multiple of `DOSSiteCount`).
pub const LEVELS: [(Family, u8, u32); 3] = [
    (Family::V4, 24, 8),
    (Family::V6, 56, 8),
    (Family::V6, 48, 32),
];

// What `PrefixCounts::count` and `lens_for` spell out: one IPv4 level, then two IPv6 levels,
// narrowest first.
const _: () = {
    assert!(matches!(LEVELS[0], (Family::V4, 24, _)));
    assert!(matches!(LEVELS[1], (Family::V6, 56, _)));
    assert!(matches!(LEVELS[2], (Family::V6, 48, _)));
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Whether `len` is one of the counted levels (what `DOSPrefixCount` accepts).
pub fn is_level(len: u8) -> bool {
    LEVELS.iter().any(|l| l.1 == len)
}

/// The site threshold of each level; `None` = not counted (`DOSPrefixCount LEN off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixCounts {
    /// In the order of [`LEVELS`].
    counts: [Option<u32>; 3],
}

impl PrefixCounts {
    /// Each level at its documented multiple of `site_count` (saturating), except where
    /// `set` (from `DOSPrefixCount`, in the order of [`LEVELS`]) says otherwise.
    pub fn resolve(site_count: u32, set: &[Option<Option<u32>>; 3]) -> PrefixCounts {
        let mut counts = [None; 3];
        for (i, (_, _, times)) in LEVELS.iter().enumerate() {
            counts[i] = set[i].unwrap_or(Some(site_count.saturating_mul(*times)));
        }
        PrefixCounts { counts }
    }

    /// Every level off.
    pub const OFF: PrefixCounts = PrefixCounts { counts: [None; 3] };

    /// The threshold of the `/len` level, if counted.
    #[inline]
    pub fn count(&self, len: u8) -> Option<u32> {
        // The levels spelled out (checked against LEVELS below): no search on the request
        // path.
        match len {
            24 => self.counts[0],
            56 => self.counts[1],
            48 => self.counts[2],
            _ => None,
        }
    }

    /// The levels counted for `client` (already grouped by `ipv6_prefix`), narrowest first,
    /// 0 where there is none. A level no wider than the client's own group (an IPv6 server
    /// grouping by /48 has no /56 level) is skipped: it would only count the client again.
    #[inline]
    pub fn lens_for(&self, client: IpAddr, ipv6_prefix: u8) -> [u8; 2] {
        // The levels spelled out (checked against LEVELS below), without a loop: an IPv4
        // client has the /24 alone; an IPv6 client the /56 then the /48.
        let on = |i: usize, own: u8| {
            if self.counts[i].is_some() && LEVELS[i].1 < own {
                LEVELS[i].1
            } else {
                0
            }
        };
        match client {
            IpAddr::V4(_) => [on(0, 32), 0],
            IpAddr::V6(_) => match (on(1, ipv6_prefix), on(2, ipv6_prefix)) {
                (0, wide) => [wide, 0],
                (narrow, wide) => [narrow, wide],
            },
        }
    }

    /// The `DOSPrefixCount` lines these thresholds are (all three levels).
    pub fn lines(&self) -> Vec<String> {
        LEVELS
            .iter()
            .zip(self.counts)
            .map(|((_, len, _), c)| {
                let name = crate::config::rows::PREFIX_COUNT.name_str();
                match c {
                    Some(n) => format!("{name} {len} {n}"),
                    None => format!("{name} {len} off"),
                }
            })
            .collect()
    }
}

/// The network of `ip` with `len` leading bits (`len` 0, or past the family's width: `ip`).
#[inline(always)]
pub fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if (1..32).contains(&len) => IpAddr::V4(Ipv4Addr::from(
            u32::from(v4) & (u32::MAX << (32 - u32::from(len))),
        )),
        IpAddr::V6(v6) if (1..128).contains(&len) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6) & (u128::MAX << (128 - u32::from(len))),
        )),
        other => other,
    }
}

/// How a block or record is named to people and firewalls: the client as
/// [`crate::notify::client_label`] names it, or for a prefix `net/len` (`2001:db8:aa::/48`,
/// `192.0.2.0/24`).
pub fn label(ip: IpAddr, len: u8, ipv6_prefix: u8) -> String {
    if len == 0 {
        crate::notify::client_label(ip, ipv6_prefix)
    } else {
        format!("{ip}/{len}")
    }
}

/// A level's small code (1..=3, 0 = the client itself), for places that have a few bits
/// only (the monitor ring).
pub fn code(len: u8) -> u8 {
    LEVELS
        .iter()
        .position(|l| l.1 == len)
        .map_or(0, |i| i as u8 + 1)
}

/// The prefix length of a [`code`] (0 for 0 or anything unknown).
pub fn from_code(code: u8) -> u8 {
    match code {
        1..=3 => LEVELS[usize::from(code) - 1].1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_multiples_of_the_site_count() {
        let c = PrefixCounts::resolve(20, &[None; 3]);
        assert_eq!(
            (c.count(24), c.count(56), c.count(48)),
            (Some(160), Some(160), Some(640))
        );
        assert_eq!(c.count(64), None);
        let c = PrefixCounts::resolve(u32::MAX, &[None, Some(None), Some(Some(7))]);
        assert_eq!(
            (c.count(24), c.count(56), c.count(48)),
            (Some(u32::MAX), None, Some(7))
        );
        assert_eq!(
            c.lines(),
            [
                "DOSPrefixCount 24 4294967295",
                "DOSPrefixCount 56 off",
                "DOSPrefixCount 48 7"
            ]
        );
    }

    #[test]
    fn levels_of_a_client() {
        let c = PrefixCounts::resolve(50, &[None; 3]);
        assert_eq!(c.lens_for(ip("192.0.2.9"), 64), [24, 0]);
        assert_eq!(c.lens_for(ip("2001:db8::"), 64), [56, 48]);
        assert_eq!(c.lens_for(ip("2001:db8::"), 56), [48, 0]);
        assert_eq!(c.lens_for(ip("2001:db8::"), 48), [0, 0]);
        let off = PrefixCounts::resolve(50, &[Some(None), None, Some(None)]);
        assert_eq!(off.lens_for(ip("192.0.2.9"), 64), [0, 0]);
        assert_eq!(off.lens_for(ip("2001:db8::"), 64), [56, 0]);
        assert_eq!(PrefixCounts::OFF.lens_for(ip("2001:db8::"), 64), [0, 0]);
    }

    /// The loop over LEVELS that `lens_for` and `count` spell out.
    fn lens_by_loop(c: &PrefixCounts, client: IpAddr, ipv6_prefix: u8) -> [u8; 2] {
        let (family, own) = match client {
            IpAddr::V4(_) => (Family::V4, 32),
            IpAddr::V6(_) => (Family::V6, ipv6_prefix),
        };
        let mut out = [0u8; 2];
        let mut n = 0;
        for (i, &(f, len, _)) in LEVELS.iter().enumerate() {
            if f == family && len < own && c.counts[i].is_some() && n < out.len() {
                out[n] = len;
                n += 1;
            }
        }
        out
    }

    #[test]
    fn the_spelled_out_levels_are_the_levels() {
        for set in 0..8u32 {
            let counts = [0, 1, 2].map(|i| (set >> i & 1 != 0).then_some(10 + i));
            let c = PrefixCounts { counts };
            for len in 0..=128u8 {
                let by_loop = LEVELS
                    .iter()
                    .position(|l| l.1 == len)
                    .and_then(|i| c.counts[i]);
                assert_eq!(c.count(len), by_loop, "{set} {len}");
            }
            for prefix in 1..=128u8 {
                for client in [ip("192.0.2.9"), ip("2001:db8::1")] {
                    assert_eq!(
                        c.lens_for(client, prefix),
                        lens_by_loop(&c, client, prefix),
                        "{set} {client} {prefix}"
                    );
                }
            }
        }
    }

    #[test]
    fn networks_and_labels() {
        assert_eq!(network(ip("192.0.2.200"), 24), ip("192.0.2.0"));
        assert_eq!(network(ip("2001:db8:aa:bb:1::"), 48), ip("2001:db8:aa::"));
        assert_eq!(
            network(ip("2001:db8:aa:bb01:1::"), 56),
            ip("2001:db8:aa:bb00::")
        );
        assert_eq!(network(ip("2001:db8:aa:bb::"), 0), ip("2001:db8:aa:bb::"));
        assert_eq!(label(ip("2001:db8:aa::"), 48, 64), "2001:db8:aa::/48");
        assert_eq!(label(ip("2001:db8:aa::"), 0, 64), "2001:db8:aa::/64");
        assert_eq!(label(ip("192.0.2.0"), 24, 64), "192.0.2.0/24");
        for len in [0, 24, 56, 48] {
            assert_eq!(from_code(code(len)), len);
        }
        assert_eq!(from_code(9), 0);
    }
}
