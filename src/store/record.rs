//! One 176-byte record (a body and four column words, see `layout.rs`): field access,
//! validation, encoding of clients and display text.
#![forbid(unsafe_code)]

use super::layout::*;
use super::region::Region;
use super::{Area, Counter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

/// The small fields packed in one word, so they are written (and read) together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The area the record belongs to (stored as [`Area::code`]).
    pub kind: Option<Area>,
    pub family: u8,
    /// A block record's rule (stored as [`Counter::code`]); `None` in site and page records.
    pub rule: Option<Counter>,
    pub host_len: u8,
    pub path_len: u8,
    /// The prefix length of a network's record (`crate::prefix`); 0 = the client itself
    /// (every record of layout 5 and before).
    pub prefix: u8,
}

impl Meta {
    pub fn pack(self) -> u64 {
        u64::from(match self.kind {
            Some(area) => area.code(),
            None => 0,
        }) | u64::from(self.family) << 8
            | u64::from(match self.rule {
                Some(rule) => rule.code(),
                None => 0,
            }) << 16
            | u64::from(self.host_len) << 24
            | u64::from(self.path_len) << 32
            | u64::from(self.prefix) << 40
    }

    pub fn unpack(word: u64) -> Meta {
        Meta {
            kind: Area::from_code(word as u8),
            family: (word >> 8) as u8,
            rule: Counter::from_code((word >> 16) as u8),
            host_len: (word >> 24) as u8,
            path_len: (word >> 32) as u8,
            prefix: (word >> 40) as u8,
        }
    }

    /// Whether a record of area `kind` with this meta can be used at all: the kind, a family
    /// of 4 or 6, lengths that fit the text field, for a block a known rule, a prefix
    /// shorter than the family's width. (Every lookup that finds its id checks this, so it
    /// is written without branches: `&`, not `&&`.)
    #[inline]
    pub fn valid_for(self, kind: Area) -> bool {
        // 4 and 6 are the only bytes that are 4 with bit 1 cleared.
        let family = self.family & !2 == 4;
        let text = usize::from(self.host_len) + usize::from(self.path_len) <= TEXT_BYTES;
        let rule = (kind != Area::Block) | self.rule.is_some();
        // 32 for family 4, 128 for family 6.
        let width = 32u32 << (self.family & 2);
        (self.kind == Some(kind)) & family & text & rule & (u32::from(self.prefix) < width)
    }

    /// [`Meta::valid_for`] of the packed word, without unpacking it (the lookups' check).
    #[inline(always)]
    pub fn word_valid_for(word: u64, kind: Area) -> bool {
        let byte = |shift: u32| (word >> shift) as u8;
        // The kind byte, and a family of 4 or 6 (the only bytes that are 4 with bit 1
        // cleared), in one compare.
        let head = word & 0xfd_ff == 0x04_00 | u64::from(kind.code());
        let text = usize::from(byte(24)) + usize::from(byte(32)) <= TEXT_BYTES;
        // Counter codes are 1 and 2.
        let rule = (kind != Area::Block) | (byte(16).wrapping_sub(1) < 2);
        let width = 32u32 << (byte(8) & 2);
        head & text & rule & (u32::from(byte(40)) < width)
    }
}

/// Family byte and the 16 address bytes (IPv4 in the first four) of a client.
pub fn encode_client(client: IpAddr) -> (u8, [u8; 16]) {
    match client {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (4, bytes)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

pub fn decode_client(family: u8, words: [u64; 2]) -> IpAddr {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&words[0].to_le_bytes());
    bytes[8..].copy_from_slice(&words[1].to_le_bytes());
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

pub fn client_words(bytes: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&bytes[..8]);
    hi.copy_from_slice(&bytes[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// Longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Display text: host (at most `HOST_TEXT_MAX` bytes) then path, truncated to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text {
    pub words: [u64; TEXT_BYTES / 8],
    pub host_len: u8,
    pub path_len: u8,
}

impl Text {
    pub fn new(host: &str, path: &str) -> Text {
        let host = cut(host, HOST_TEXT_MAX);
        let path = cut(path, TEXT_BYTES - host.len());
        let mut bytes = [0u8; TEXT_BYTES];
        bytes[..host.len()].copy_from_slice(host.as_bytes());
        bytes[host.len()..host.len() + path.len()].copy_from_slice(path.as_bytes());
        let mut words = [0u64; TEXT_BYTES / 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        Text {
            words,
            host_len: host.len() as u8,
            path_len: path.len() as u8,
        }
    }

    /// Host and path; lengths were validated by `Meta::valid_for`, but are clamped again so
    /// this can never index out of bounds. Invalid UTF-8 (scribbling) is replaced, not trusted.
    pub fn strings(&self) -> (String, String) {
        let mut bytes = [0u8; TEXT_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.words.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let host_end = usize::from(self.host_len).min(TEXT_BYTES);
        let path_end = (host_end + usize::from(self.path_len)).min(TEXT_BYTES);
        (
            String::from_utf8_lossy(&bytes[..host_end]).into_owned(),
            String::from_utf8_lossy(&bytes[host_end..path_end]).into_owned(),
        )
    }
}

/// A record's contents copied out of (or about to be written into) shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub id: [u64; 2],
    pub addr: [u64; 2],
    pub meta: Meta,
    pub score: i64,
    pub origin: i64,
    pub expires: i64,
    pub last_used: i64,
    pub until: i64,
    pub generation: u32,
    pub count: u32,
    pub interval: u32,
    pub text: Text,
}

impl Fields {
    pub fn client(&self) -> IpAddr {
        decode_client(self.meta.family, self.addr)
    }
}

/// A record slot in the region: its sub-cache's offset and its slot there.
#[derive(Clone, Copy)]
pub struct Rec<'r> {
    region: &'r Region,
    sub: usize,
    slot: usize,
}

impl<'r> Rec<'r> {
    pub fn new(region: &'r Region, sub: usize, slot: usize) -> Rec<'r> {
        Rec { region, sub, slot }
    }

    #[inline]
    fn at(&self, field: usize) -> &'r std::sync::atomic::AtomicU64 {
        self.region
            .u64_at(self.sub + field_offset(self.slot, field))
    }

    #[inline]
    pub fn get(&self, field: usize) -> u64 {
        self.at(field).load(Ordering::Relaxed)
    }

    #[inline]
    pub fn get_i64(&self, field: usize) -> i64 {
        self.get(field) as i64
    }

    #[inline]
    pub fn set(&self, field: usize, value: u64) {
        self.at(field).store(value, Ordering::Relaxed)
    }

    #[inline]
    pub fn set_i64(&self, field: usize, value: i64) {
        self.set(field, value as u64)
    }

    #[inline]
    pub fn id(&self) -> [u64; 2] {
        [self.get(R_ID0), self.get(R_ID1)]
    }

    #[inline]
    pub fn meta(&self) -> Meta {
        Meta::unpack(self.get(R_META))
    }

    /// `self.meta().valid_for(kind)`, read from the packed word.
    #[inline(always)]
    pub fn valid_for(&self, kind: Area) -> bool {
        Meta::word_valid_for(self.get(R_META), kind)
    }

    pub fn read(&self) -> Fields {
        let gen_count = self.get(R_GEN_COUNT);
        let mut words = [0u64; TEXT_BYTES / 8];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.get(R_TEXT + i * 8);
        }
        let meta = self.meta();
        Fields {
            id: self.id(),
            addr: [self.get(R_ADDR0), self.get(R_ADDR1)],
            meta,
            score: self.get_i64(R_SCORE),
            origin: self.get_i64(R_ORIGIN),
            expires: self.get_i64(R_EXPIRES),
            last_used: self.get_i64(R_LAST_USED),
            until: self.get_i64(R_UNTIL),
            generation: gen_count as u32,
            count: (gen_count >> 32) as u32,
            interval: self.get(R_INTERVAL) as u32,
            text: Text {
                words,
                host_len: meta.host_len,
                path_len: meta.path_len,
            },
        }
    }

    /// Writes every field; the caller holds the lock and has unpublished the slot's tag.
    pub fn write(&self, f: &Fields) {
        self.set(R_ID0, f.id[0]);
        self.set(R_ID1, f.id[1]);
        self.set(R_ADDR0, f.addr[0]);
        self.set(R_ADDR1, f.addr[1]);
        self.set_i64(R_SCORE, f.score);
        self.set_i64(R_ORIGIN, f.origin);
        self.set_i64(R_EXPIRES, f.expires);
        self.set_i64(R_LAST_USED, f.last_used);
        self.set_i64(R_UNTIL, f.until);
        self.set(
            R_GEN_COUNT,
            u64::from(f.generation) | u64::from(f.count) << 32,
        );
        self.set(R_INTERVAL, u64::from(f.interval));
        for (i, word) in f.text.words.iter().enumerate() {
            self.set(R_TEXT + i * 8, *word);
        }
        let meta = Meta {
            host_len: f.text.host_len,
            path_len: f.text.path_len,
            ..f.meta
        };
        self.set(R_META, meta.pack());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_validates() {
        let m = Meta {
            kind: Some(Area::Block),
            family: 6,
            rule: Some(Counter::Page),
            host_len: 40,
            path_len: 40,
            prefix: 48,
        };
        assert_eq!(Meta::unpack(m.pack()), m);
        assert!(!Meta { prefix: 128, ..m }.valid_for(Area::Block));
        assert!(!Meta {
            prefix: 32,
            family: 4,
            ..m
        }
        .valid_for(Area::Block));
        assert!(m.valid_for(Area::Block));
        assert!(!m.valid_for(Area::Site));
        assert!(!Meta { path_len: 41, ..m }.valid_for(Area::Block));
        assert!(!Meta { family: 5, ..m }.valid_for(Area::Block));
        assert!(!Meta { rule: None, ..m }.valid_for(Area::Block));
        assert_eq!(Meta::unpack(m.pack() | 3 << 16).rule, None, "3 is no rule");
        assert!(Meta {
            rule: None,
            kind: Some(Area::Page),
            ..m
        }
        .valid_for(Area::Page));
    }

    #[test]
    fn the_packed_check_is_the_unpacked_one() {
        // Every value of each byte the check reads, over the others' interesting values.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Small values in each byte often enough to hit the valid cases.
            let mut word = x & 0xffff_ffff_ffff;
            if i % 2 == 0 {
                word &= 0x7f_3f_3f_07_07_03;
            }
            for kind in Area::ALL {
                assert_eq!(
                    Meta::word_valid_for(word, kind),
                    Meta::unpack(word).valid_for(kind),
                    "{word:#x} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn text_truncates_on_char_boundaries() {
        let host = "é".repeat(30); // 60 bytes
        let path = "/ü".repeat(40); // 120 bytes
        let t = Text::new(&host, &path);
        let (h, p) = t.strings();
        assert_eq!(h, "é".repeat(20));
        assert!(p.len() <= TEXT_BYTES - 40 && path.starts_with(&p) && !p.is_empty());
        let t = Text::new("example.org", "/a");
        assert_eq!(t.strings(), ("example.org".into(), "/a".into()));
    }

    #[test]
    fn clients_round_trip() {
        for ip in ["192.0.2.7", "2001:db8::1", "::ffff:1.2.3.4"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (family, bytes) = encode_client(ip);
            assert_eq!(decode_client(family, client_words(&bytes)), ip);
        }
    }
}
