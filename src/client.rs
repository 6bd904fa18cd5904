//! Who the client is: the address text httpd gives us (`r->useragent_ip`, after mod_remoteip),
//! normalised so one host has one identity, grouped so one IPv6 subnet counts as one client,
//! and the whitelist that exempts clients from everything.
#![forbid(unsafe_code)]

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses `r->useragent_ip`. An IPv6 zone id (`fe80::1%eth0`) is dropped, and the result is
/// normalised (IPv4-mapped IPv6 becomes IPv4). `None` when the text is not an address.
pub fn parse_client(useragent_ip: &str) -> Option<IpAddr> {
    let text = useragent_ip.trim();
    // The zone id only says which interface a link-local address came in on; the address
    // without it is the identity we key on.
    let text = match text.split_once('%') {
        Some((addr, zone)) if addr.contains(':') && !zone.is_empty() => addr,
        Some(_) => return None,
        None => text,
    };
    text.parse::<IpAddr>().ok().map(normalise)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4 address it carries, so a dual-stack
/// listener and an IPv4 listener see the same client. Everything else is unchanged.
#[inline(always)]
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        // `::ffff:a.b.c.d` (what `Ipv6Addr::to_ipv4_mapped` takes, here without a call).
        IpAddr::V6(v6) if u128::from(v6) >> 32 == 0xffff => {
            IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32))
        }
        ip => ip,
    }
}

/// The identity a client is counted under: IPv6 addresses are masked to `ipv6_prefix` bits
/// (one end site usually owns a whole /64, so counting single addresses would let it rotate
/// through 2^64 of them); IPv4 addresses are unchanged. The input is normalised first.
#[inline(always)]
pub fn group(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match normalise(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & v6_mask(ipv6_prefix))),
        v4 => v4,
    }
}

/// Network mask of `prefix` leading one bits (prefixes above 128 mean the whole address).
#[inline]
fn v6_mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

#[inline]
fn v4_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// One `DOSWhitelist` entry, kept in the form it was written so it can be printed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhitelistEntry {
    /// One address (`10.1.2.3`, `2001:db8::1`); IPv4-mapped IPv6 is stored as IPv4.
    Exact(IpAddr),
    /// A CIDR network, stored truncated to its network address (`1.2.3.1/24` → `1.2.3.0/24`).
    Net(IpNet),
    /// mod_evasive's wildcard form: four octets, `None` where the entry has `*`.
    Wildcard([Option<u8>; 4]),
}

/// The value/mask pair an entry matches with: `addr & mask == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Matcher {
    V4 { value: u32, mask: u32 },
    V6 { value: u128, mask: u128 },
}

impl WhitelistEntry {
    fn matcher(&self) -> Matcher {
        match *self {
            WhitelistEntry::Exact(IpAddr::V4(a)) => Matcher::V4 {
                value: u32::from(a),
                mask: u32::MAX,
            },
            WhitelistEntry::Exact(IpAddr::V6(a)) => Matcher::V6 {
                value: u128::from(a),
                mask: u128::MAX,
            },
            WhitelistEntry::Net(IpNet::V4(n)) => {
                let mask = v4_mask(n.prefix_len());
                Matcher::V4 {
                    value: u32::from(n.network()) & mask,
                    mask,
                }
            }
            WhitelistEntry::Net(IpNet::V6(n)) => {
                let mask = v6_mask(n.prefix_len());
                Matcher::V6 {
                    value: u128::from(n.network()) & mask,
                    mask,
                }
            }
            WhitelistEntry::Wildcard(octets) => {
                let (mut value, mut mask) = (0u32, 0u32);
                for octet in octets {
                    value <<= 8;
                    mask <<= 8;
                    if let Some(o) = octet {
                        value |= u32::from(o);
                        mask |= 0xff;
                    }
                }
                Matcher::V4 { value, mask }
            }
        }
    }
}

impl fmt::Display for WhitelistEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhitelistEntry::Exact(ip) => write!(f, "{ip}"),
            WhitelistEntry::Net(net) => write!(f, "{net}"),
            WhitelistEntry::Wildcard(octets) => {
                for (i, octet) in octets.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    match octet {
                        Some(o) => write!(f, "{o}")?,
                        None => f.write_str("*")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Why a `DOSWhitelist` entry is none (each message names the entry).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("an empty entry is not an address")]
    Empty,
    #[error("'{0}' is not a valid wildcard (four parts, each 0-255 or *, e.g. 192.168.*.*)")]
    Wildcard(String),
    #[error("'{0}' is not a valid CIDR network (e.g. 10.0.0.0/8, 2001:db8::/48; prefix at most 32 for IPv4, 128 for IPv6)")]
    Network(String),
    #[error("'{0}' is not a valid IPv4 or IPv6 address, CIDR network or wildcard")]
    Address(String),
}

/// The addresses that are never counted or blocked. Matching is a scan of value/mask pairs
/// split by family: a whitelist has a handful of entries and the scan touches no pointers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Whitelist {
    entries: Vec<WhitelistEntry>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Whitelist {
    /// Parses one entry: an IPv4/IPv6 address, a CIDR network (`10.0.0.0/8`,
    /// `2a03:dead:beef::/48`) or a wildcard with four parts (`192.168.*.*`, `10.*.3.*`).
    /// IPv4-mapped IPv6 entries become IPv4 entries. The error names the entry.
    pub fn parse_entry(s: &str) -> Result<WhitelistEntry, EntryError> {
        if s.is_empty() {
            return Err(EntryError::Empty);
        }
        if s.contains('*') {
            return parse_wildcard(s).ok_or_else(|| EntryError::Wildcard(s.to_string()));
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| EntryError::Network(s.to_string()))?;
            return Ok(WhitelistEntry::Net(normalise_net(net.trunc())));
        }
        let ip: IpAddr = s.parse().map_err(|_| EntryError::Address(s.to_string()))?;
        Ok(WhitelistEntry::Exact(normalise(ip)))
    }

    /// Adds an entry; an entry matching exactly the same addresses as one already present is
    /// skipped, so a vhost repeating the server's entries costs nothing.
    pub fn push(&mut self, e: WhitelistEntry) {
        let m = e.matcher();
        let dup = match m {
            Matcher::V4 { value, mask } => self.v4.contains(&(value, mask)),
            Matcher::V6 { value, mask } => self.v6.contains(&(value, mask)),
        };
        if dup {
            return;
        }
        match m {
            Matcher::V4 { value, mask } => self.v4.push((value, mask)),
            Matcher::V6 { value, mask } => self.v6.push((value, mask)),
        }
        self.entries.push(e);
    }

    /// Adds every entry of `other` (a `<VirtualHost>` whitelist adds to the server's).
    pub fn extend(&mut self, other: &Whitelist) {
        for e in &other.entries {
            self.push(*e);
        }
    }

    /// Whether `ip` is whitelisted. IPv4-mapped IPv6 input matches IPv4 entries.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalise(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(value, mask)| a & mask == value)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(value, mask)| a & mask == value)
            }
        }
    }

    /// The entries as text, in the order they were added.
    pub fn entries(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.to_string()).collect()
    }

    /// The entries themselves, in the order they were added.
    pub fn entry_list(&self) -> &[WhitelistEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `a.b.*.*` style: exactly four parts, each `*` or a decimal octet.
fn parse_wildcard(s: &str) -> Option<WhitelistEntry> {
    let mut octets = [None; 4];
    let mut parts = s.split('.');
    for slot in octets.iter_mut() {
        let part = parts.next()?;
        *slot = match part {
            "*" => None,
            p if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u8>().ok()?)
            }
            _ => return None,
        };
    }
    if parts.next().is_some() {
        return None;
    }
    Some(WhitelistEntry::Wildcard(octets))
}

/// `::ffff:a.b.c.d/n` with n >= 96 is an IPv4 network written in IPv6 form.
fn normalise_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.network().to_ipv4_mapped() {
                if let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn wl(entries: &[&str]) -> Whitelist {
        let mut w = Whitelist::default();
        for e in entries {
            w.push(Whitelist::parse_entry(e).unwrap());
        }
        w
    }

    #[test]
    fn normalise_is_to_ipv4_mapped() {
        let mut x = 0x2545_f491_4f6c_dd1du128;
        for i in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mapped, nearly mapped, compatible (::a.b.c.d) and arbitrary addresses.
            let v = match i % 4 {
                0 => 0xffff_0000_0000 | (x & 0xffff_ffff),
                1 => (x & 0xf_ffff_0000_0000) | (x & 0xffff_ffff),
                2 => x & 0xffff_ffff,
                _ => x,
            };
            let v6 = Ipv6Addr::from(v);
            let want = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            assert_eq!(normalise(IpAddr::V6(v6)), want, "{v6}");
        }
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(normalise(v4), v4);
    }

    #[test]
    fn parse_client_plain_and_normalised() {
        assert_eq!(parse_client("192.0.2.7"), Some(ip("192.0.2.7")));
        assert_eq!(parse_client("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_client("::ffff:192.0.2.7"), Some(ip("192.0.2.7")));
        assert_eq!(parse_client("::FFFF:c000:0207"), Some(ip("192.0.2.7")));
        assert_eq!(parse_client("fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(parse_client(" 10.0.0.1 "), Some(ip("10.0.0.1")));
    }

    #[test]
    fn parse_client_rejects_garbage() {
        for bad in [
            "",
            "abc",
            "999.1.1.1",
            "10.0.0.1%eth0",
            "fe80::1%",
            "1.2.3",
            "[::1]",
        ] {
            assert_eq!(parse_client(bad), None, "{bad}");
        }
    }

    #[test]
    fn compat_v4_is_not_mapped() {
        // ::a.b.c.d (deprecated IPv4-compatible) is a real IPv6 address, not a mapped one.
        assert_eq!(normalise(ip("::192.0.2.7")), ip("::192.0.2.7"));
        assert_eq!(normalise(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn group_masks_v6_only() {
        assert_eq!(group(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(group(ip("2001:db8:1:2:3:4:5:6"), 48), ip("2001:db8:1::"));
        assert_eq!(
            group(ip("2001:db8:1:2:3:4:5:6"), 128),
            ip("2001:db8:1:2:3:4:5:6")
        );
        assert_eq!(group(ip("2001:db8:1:2:3:4:5:6"), 1), ip("::"));
        assert_eq!(group(ip("ffff::1"), 1), ip("8000::"));
        assert_eq!(group(ip("198.51.100.9"), 64), ip("198.51.100.9"));
        assert_eq!(group(ip("::ffff:198.51.100.9"), 64), ip("198.51.100.9"));
    }

    #[test]
    fn whitelist_exact_cidr_wildcard() {
        let w = wl(&[
            "10.0.0.0/8",
            "192.168.*.*",
            "10.*.3.*",
            "203.0.113.5",
            "2a03:dead:beef::/48",
            "2001:db8::1",
        ]);
        assert!(w.contains(ip("10.200.1.1")));
        assert!(w.contains(ip("192.168.44.1")));
        assert!(!w.contains(ip("192.169.0.1")));
        assert!(w.contains(ip("203.0.113.5")));
        assert!(!w.contains(ip("203.0.113.6")));
        assert!(w.contains(ip("2a03:dead:beef:1::9")));
        assert!(!w.contains(ip("2a03:dead:bef0::9")));
        assert!(w.contains(ip("2001:db8::1")));
        assert!(!w.contains(ip("2001:db8::2")));
        assert!(!w.contains(ip("11.0.3.1")));
        let w2 = wl(&["10.*.3.*"]);
        assert!(w2.contains(ip("10.77.3.200")));
        assert!(!w2.contains(ip("10.77.4.200")));
        assert!(!w2.contains(ip("11.77.3.200")));
    }

    #[test]
    fn whitelist_mapped_inputs_and_entries() {
        let w = wl(&["198.51.100.0/24"]);
        assert!(w.contains(ip("::ffff:198.51.100.20")));
        let w = wl(&["::ffff:198.51.100.20"]);
        assert_eq!(w.entries(), vec!["198.51.100.20"]);
        assert!(w.contains(ip("198.51.100.20")));
        let w = wl(&["::ffff:198.51.100.0/120"]);
        assert_eq!(w.entries(), vec!["198.51.100.0/24"]);
        assert!(w.contains(ip("198.51.100.99")));
        assert!(!w.contains(ip("198.51.101.99")));
    }

    #[test]
    fn whitelist_host_bits_are_truncated() {
        let w = wl(&["1.2.3.1/24"]);
        assert_eq!(w.entries(), vec!["1.2.3.0/24"]);
        assert!(w.contains(ip("1.2.3.255")));
        assert!(w.contains(ip("1.2.3.0")));
    }

    #[test]
    fn whitelist_rejects_bad_entries_naming_them() {
        for bad in [
            "999.1.1.1",
            "10.0.0.0/33",
            "1.2.*",
            "1.2.*.*.*",
            "1.2.3*.*",
            "256.*.*.*",
            "*.*.*.-1",
            "2001:db8::/129",
            "abc",
            "1.2.3.4/",
            "/8",
            "",
            "1.2.3.4/8/9",
            "10.0.0.1 ",
        ] {
            let err = Whitelist::parse_entry(bad).unwrap_err().to_string();
            if !bad.is_empty() {
                assert!(err.contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn whitelist_entries_print_as_written() {
        let w = wl(&[
            "10.0.0.0/8",
            "192.168.*.*",
            "2001:db8::/32",
            "127.0.0.1",
            "*.*.*.*",
        ]);
        assert_eq!(
            w.entries(),
            vec![
                "10.0.0.0/8",
                "192.168.*.*",
                "2001:db8::/32",
                "127.0.0.1",
                "*.*.*.*"
            ]
        );
        for e in w.entries() {
            assert_eq!(Whitelist::parse_entry(&e).unwrap().to_string(), e);
        }
    }

    #[test]
    fn whitelist_push_dedups_and_extend_adds() {
        let mut a = wl(&["10.0.0.0/8", "127.0.0.1"]);
        let b = wl(&["127.0.0.1", "192.0.2.0/24"]);
        a.extend(&b);
        assert_eq!(a.entries(), vec!["10.0.0.0/8", "127.0.0.1", "192.0.2.0/24"]);
        assert_eq!(a.len(), 3);
        assert!(Whitelist::default().is_empty());
        assert!(!Whitelist::default().contains(ip("127.0.0.1")));
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    proptest! {
        #[test]
        fn group_is_idempotent(addr in any_ip(), prefix in 1u8..=128) {
            let g = group(addr, prefix);
            prop_assert_eq!(group(g, prefix), g);
        }

        #[test]
        fn one_slash64_groups_together(net in any::<u64>(), a in any::<u64>(), b in any::<u64>()) {
            let x = IpAddr::V6(Ipv6Addr::from((u128::from(net) << 64) | u128::from(a)));
            let y = IpAddr::V6(Ipv6Addr::from((u128::from(net) << 64) | u128::from(b)));
            // Mapped addresses (::ffff:0:0/96) live in net 0 and normalise to IPv4 instead.
            prop_assume!(net != 0);
            prop_assert_eq!(group(x, 64), group(y, 64));
        }

        #[test]
        fn different_slash64_stay_apart(n1 in 1u64.., n2 in 1u64.., host in any::<u64>()) {
            prop_assume!(n1 != n2);
            let x = IpAddr::V6(Ipv6Addr::from((u128::from(n1) << 64) | u128::from(host)));
            let y = IpAddr::V6(Ipv6Addr::from((u128::from(n2) << 64) | u128::from(host)));
            prop_assert_ne!(group(x, 64), group(y, 64));
        }

        #[test]
        fn parse_client_roundtrips(addr in any_ip()) {
            prop_assert_eq!(parse_client(&addr.to_string()), Some(normalise(addr)));
        }

        #[test]
        fn cidr_contains_matches_ipnet(addr in any::<u32>(), net in any::<u32>(), prefix in 0u8..=32) {
            let n = ipnet::Ipv4Net::new(Ipv4Addr::from(net), prefix).unwrap().trunc();
            let mut w = Whitelist::default();
            w.push(Whitelist::parse_entry(&n.to_string()).unwrap());
            prop_assert_eq!(w.contains(IpAddr::V4(Ipv4Addr::from(addr))), n.contains(&Ipv4Addr::from(addr)));
        }
    }
}
