//! The remote tier: counts and blocks shared between several servers through one of Apache's
//! socache providers (`DOSCache memcache:…` or `redis:…`), in plain Rust.
//!
//! One record per client lives in the backend: its active block (and remembered generation)
//! and a few site/page windows. A request reads it once (post_read_request, the only time the
//! request waits on the network), updates the copy in memory in fixups and log_transaction, and
//! writes it back in log_transaction, after the response has gone. The local shared-memory store
//! keeps counting exactly within this server; the decision takes the larger of the two scores.
//!
//! The socache API has no atomic increment, so two servers updating one client's record at the
//! same instant race (read, modify, write: the last writer wins and the other's increments of
//! that moment are lost). Each server's own count stays exact, so a client is never counted
//! below what any single server saw; what is lost is at most the overlap of concurrent updates
//! (measured in docs/several-servers.md).
//!
//! Records coming back from the backend are untrusted: fixed layout, magic, version, length and
//! a keyed checksum are checked, and anything else is treated as absent.
#![forbid(unsafe_code)]
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::log::Level;
use crate::store::{Micros, Region, Rule};

/// Site and page windows kept per client in one remote record.
pub const ENTRIES: usize = 8;
const MAGIC: u32 = u32::from_le_bytes(*b"SHR1");
const VERSION: u16 = 1;
const ENTRY_BYTES: usize = 32;
const HEADER_BYTES: usize = 64;
/// Encoded size of a record: header, entries, checksum.
pub const RECORD_BYTES: usize = HEADER_BYTES + ENTRIES * ENTRY_BYTES + 8;
/// The checksum key is fixed so that every server agrees on it; it detects garbage and foreign
/// data, it is not a secret.
const SUM_KEY: (u64, u64) = (0x6d6f_645f_7368_6965, 0x6c64_2072_656d_6f74);

/// The socache id of a client's record: a prefix and the address bytes.
pub fn record_id(client: IpAddr) -> Vec<u8> {
    let mut id = b"shield:".to_vec();
    match client {
        IpAddr::V4(a) => id.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => id.extend_from_slice(&a.octets()),
    }
    id
}

fn entry_key(kind: Rule, host: &str, path: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(SUM_KEY.0 ^ 1, SUM_KEY.1);
    h.write_u8(kind.code());
    h.write_usize(host.len());
    h.write(host.as_bytes());
    h.write_usize(path.len());
    h.write(path.as_bytes());
    // 0 marks an empty slot.
    h.finish().max(1)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    key: u64,
    origin: Micros,
    interval: u32,
    score: i64,
}

/// The block part of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteBlock {
    pub until: Micros,
    pub started: Micros,
    pub generation: u32,
    pub rule: Option<Rule>,
    pub count: u32,
    pub interval: u32,
    pub score: i64,
    /// The generation is remembered until then.
    pub remembered_until: Micros,
}

/// One client's shared record, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteRecord {
    pub block: RemoteBlock,
    entries: [Entry; ENTRIES],
    /// Changed since it was read: owed a write-back.
    pub dirty: bool,
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(SUM_KEY.0, SUM_KEY.1);
    h.write(bytes);
    h.finish()
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

impl RemoteRecord {
    /// The fixed little-endian layout:
    /// `magic u32 | version u16 | rule u8 | 0 u8 | until i64 | started i64 | remembered i64 |
    ///  score i64 | generation u32 | count u32 | interval u32 | pad to 64 |
    ///  ENTRIES × (key u64 | origin i64 | score i64 | interval u32 | pad u32) | checksum u64`.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0u8; RECORD_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self.block.rule.map_or(0, Rule::code);
        let blk = &self.block;
        b[8..16].copy_from_slice(&blk.until.to_le_bytes());
        b[16..24].copy_from_slice(&blk.started.to_le_bytes());
        b[24..32].copy_from_slice(&blk.remembered_until.to_le_bytes());
        b[32..40].copy_from_slice(&blk.score.to_le_bytes());
        b[40..44].copy_from_slice(&blk.generation.to_le_bytes());
        b[44..48].copy_from_slice(&blk.count.to_le_bytes());
        b[48..52].copy_from_slice(&blk.interval.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let o = HEADER_BYTES + i * ENTRY_BYTES;
            b[o..o + 8].copy_from_slice(&e.key.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&e.origin.to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&e.score.to_le_bytes());
            b[o + 24..o + 28].copy_from_slice(&e.interval.to_le_bytes());
        }
        let sum = checksum(&b[..RECORD_BYTES - 8]);
        b[RECORD_BYTES - 8..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decode bytes from the backend; None for anything that is not a record of this version.
    pub fn decode(b: &[u8]) -> Option<RemoteRecord> {
        if b.len() != RECORD_BYTES
            || get_u32(b, 0) != MAGIC
            || u16::from_le_bytes([b[4], b[5]]) != VERSION
            || get_u64(b, RECORD_BYTES - 8) != checksum(&b[..RECORD_BYTES - 8])
        {
            return None;
        }
        let rule = match b[6] {
            0 => None,
            code => Some(Rule::from_code(code)?),
        };
        let block = RemoteBlock {
            until: get_u64(b, 8) as i64,
            started: get_u64(b, 16) as i64,
            remembered_until: get_u64(b, 24) as i64,
            score: get_u64(b, 32) as i64,
            generation: get_u32(b, 40),
            count: get_u32(b, 44),
            interval: get_u32(b, 48),
            rule,
        };
        let mut entries = [Entry::default(); ENTRIES];
        for (i, e) in entries.iter_mut().enumerate() {
            let o = HEADER_BYTES + i * ENTRY_BYTES;
            *e = Entry {
                key: get_u64(b, o),
                origin: get_u64(b, o + 8) as i64,
                score: (get_u64(b, o + 16) as i64).max(0),
                interval: get_u32(b, o + 24),
            };
        }
        Some(RemoteRecord {
            block,
            entries,
            dirty: false,
        })
    }

    /// Add `delta` to the window of (kind, host, path), as the local store does: a fixed window
    /// restarted once `interval` has passed, never below 0. Returns the score.
    pub fn add(
        &mut self,
        kind: Rule,
        host: &str,
        path: &str,
        delta: i64,
        interval: u32,
        now: Micros,
    ) -> i64 {
        let key = entry_key(kind, host, path);
        let span = i64::from(interval) * 1_000_000;
        let live = |e: &Entry| {
            e.key != 0
                && e.origin <= now
                && now.saturating_sub(e.origin) < i64::from(e.interval) * 1_000_000
        };
        let slot = match self.entries.iter().position(|e| e.key == key) {
            Some(i) => i,
            // A free or expired slot, else the window that started longest ago.
            None => match self.entries.iter().position(|e| !live(e)) {
                Some(i) => i,
                None => (0..ENTRIES)
                    .min_by_key(|&i| self.entries[i].origin)
                    .unwrap_or(0),
            },
        };
        let e = &mut self.entries[slot];
        // Origins come from the backend (untrusted): an origin in the future or far in the past
        // is a window that has to restart, computed without overflow.
        if e.key != key || e.origin > now || now.saturating_sub(e.origin) >= span {
            *e = Entry {
                key,
                origin: now,
                interval,
                score: 0,
            };
        }
        e.interval = interval;
        e.score = e.score.saturating_add(delta).max(0);
        self.dirty = true;
        e.score
    }

    /// Make the window of (kind, host, path) at least `score`: the write-back then carries this
    /// server's exact count even when another server's concurrent write-back lost increments.
    pub fn raise(&mut self, kind: Rule, host: &str, path: &str, score: i64) {
        let key = entry_key(kind, host, path);
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            if e.score < score {
                e.score = score;
                self.dirty = true;
            }
        }
    }

    /// Restart that window (a block started from it).
    pub fn reset(&mut self, kind: Rule, host: &str, path: &str, now: Micros) {
        let key = entry_key(kind, host, path);
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.origin = now;
            e.score = 0;
            self.dirty = true;
        }
    }

    /// The active block, if any.
    pub fn active_block(&self, now: Micros) -> Option<RemoteBlock> {
        (self.block.until > now && self.block.generation > 0).then_some(self.block)
    }

    /// Record a block another tier started (the generation it chose wins if higher).
    pub fn set_block(&mut self, block: RemoteBlock) {
        if block.until > self.block.until || block.generation > self.block.generation {
            self.block = block;
            self.dirty = true;
        }
    }

    /// The generation a new block of this client should have: one past the remembered one.
    pub fn next_generation(&self, now: Micros) -> u32 {
        if self.block.generation > 0 && self.block.remembered_until > now {
            self.block.generation.saturating_add(1)
        } else {
            1
        }
    }

    /// Until when the backend must keep the record.
    pub fn expiry(&self, now: Micros) -> Micros {
        let windows = self
            .entries
            .iter()
            .filter(|e| e.key != 0)
            .map(|e| e.origin.saturating_add(i64::from(e.interval) * 1_000_000))
            .max()
            .unwrap_or(now);
        // redis refuses expiries under a second away.
        windows
            .max(self.block.remembered_until)
            .max(now + 2_000_000)
    }
}

/// A backend's health, shared by every worker of this server (in shared memory), so that an
/// outage is logged once and skipped by everyone: while the backend is down, requests do not
/// touch the network except one probe per `RETRY_US`.
pub struct Health {
    region: Region,
}

const DOWN_SINCE: usize = 0;
const NEXT_PROBE: usize = 8;
const FAILURES: usize = 16;
const BACK_SINCE: usize = 24;
const RETRY_US: i64 = 1_000_000;
/// After the backend comes back, each worker process finds its own stale connections (the
/// providers' clients retry a dead server 5 s after marking it): failures in this time are the
/// same outage settling, not a new one.
const SETTLE_US: i64 = 10_000_000;

/// What a caller should log after reporting to [`Health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameBack { down_for_us: i64 },
}

impl Transition {
    /// The one log line of a change of the backend's health (`backend` names it as
    /// `DOSCache` does, `why` is the failure): once per outage and server.
    pub fn message(self, backend: &str, why: &str) -> Option<(Level, String)> {
        match self {
            Transition::None => None,
            Transition::WentDown => Some((
                Level::Warning,
                format!(
                    "DOSCache {backend} unavailable ({why}): requests are served and counted by this server only until it returns"
                ),
            )),
            Transition::CameBack { down_for_us } => Some((
                Level::Notice,
                format!(
                    "DOSCache {backend} available again after {} s: sharing counts and blocks resumes",
                    down_for_us / 1_000_000
                ),
            )),
        }
    }
}

impl Health {
    pub fn new() -> std::io::Result<Health> {
        Ok(Health {
            region: Region::new(64)?,
        })
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        self.region.u64_at(off)
    }

    /// Whether this request may use the backend now.
    pub fn may_try(&self, now: Micros) -> bool {
        if self.word(DOWN_SINCE).load(Ordering::Acquire) == 0 {
            return true;
        }
        // Down: one caller per retry interval probes it.
        let next = self.word(NEXT_PROBE).load(Ordering::Acquire) as i64;
        now >= next
            && self
                .word(NEXT_PROBE)
                .compare_exchange(
                    next as u64,
                    (now + RETRY_US) as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub fn failed(&self, now: Micros) -> Transition {
        self.word(FAILURES).fetch_add(1, Ordering::Relaxed);
        let back = self.word(BACK_SINCE).load(Ordering::Acquire) as i64;
        if back != 0 && now.saturating_sub(back) < SETTLE_US {
            return Transition::None;
        }
        self.word(NEXT_PROBE)
            .store((now + RETRY_US) as u64, Ordering::Release);
        match self.word(DOWN_SINCE).compare_exchange(
            0,
            now.max(1) as u64,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => Transition::WentDown,
            Err(_) => Transition::None,
        }
    }

    pub fn succeeded(&self, now: Micros) -> Transition {
        let since = self.word(DOWN_SINCE).load(Ordering::Acquire);
        if since == 0 {
            return Transition::None;
        }
        match self
            .word(DOWN_SINCE)
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                self.word(BACK_SINCE)
                    .store(now.max(1) as u64, Ordering::Release);
                Transition::CameBack {
                    down_for_us: now.saturating_sub(since as i64),
                }
            }
            Err(_) => Transition::None,
        }
    }

    /// Down since (µs), or None when up.
    pub fn down_since(&self) -> Option<Micros> {
        let v = self.word(DOWN_SINCE).load(Ordering::Acquire);
        (v != 0).then_some(v as i64)
    }

    pub fn failures(&self) -> u64 {
        self.word(FAILURES).load(Ordering::Relaxed)
    }
}

/// The shared tier as the status page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTier {
    /// `provider:args` as configured.
    pub label: String,
    pub down_since: Option<Micros>,
    pub failures: u64,
}

impl SharedTier {
    pub fn state(&self) -> &'static str {
        if self.down_since.is_some() {
            "down"
        } else {
            "up"
        }
    }

    pub fn describe(&self) -> String {
        match self.down_since {
            None => format!("up ({} failed calls so far)", self.failures),
            Some(since) => format!(
                "down since {} s after the epoch: requests are served and counted by this server only ({} failed calls)",
                since / 1_000_000,
                self.failures
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000_000_000;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut r = RemoteRecord::default();
        assert_eq!(r.add(Rule::Page, "h", "/a", 1, 60, T0), 1);
        assert_eq!(r.add(Rule::Page, "h", "/a", 1, 60, T0 + 1), 2);
        r.set_block(RemoteBlock {
            until: T0 + 5_000_000,
            started: T0,
            generation: 2,
            rule: Some(Rule::Page),
            count: 5,
            interval: 60,
            score: 6,
            remembered_until: T0 + 86_400_000_000,
        });
        let bytes = r.encode();
        let back = RemoteRecord::decode(&bytes).unwrap();
        assert_eq!(back.block, r.block);
        assert_eq!(back.entries, r.entries);
        for i in [0, 5, 70, RECORD_BYTES - 1] {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(RemoteRecord::decode(&bad).is_none(), "flip at {i} accepted");
        }
        assert!(RemoteRecord::decode(&bytes[..RECORD_BYTES - 1]).is_none());
        assert!(RemoteRecord::decode(b"").is_none());
    }

    #[test]
    fn windows_are_fixed_and_never_negative() {
        let mut r = RemoteRecord::default();
        r.add(Rule::Site, "h", "", 5, 2, T0);
        assert_eq!(r.add(Rule::Site, "h", "", -9, 2, T0 + 1), 0);
        assert_eq!(r.add(Rule::Site, "h", "", 3, 2, T0 + 1_999_999), 3);
        // The window restarts once the interval has passed.
        assert_eq!(r.add(Rule::Site, "h", "", 1, 2, T0 + 2_000_000), 1);
        // Site and page keys do not mix.
        assert_eq!(r.add(Rule::Page, "h", "", 1, 2, T0 + 2_000_000), 1);
    }

    #[test]
    fn a_full_record_replaces_the_oldest_window() {
        let mut r = RemoteRecord::default();
        for i in 0..ENTRIES as i64 {
            r.add(Rule::Page, "h", &format!("/{i}"), 1, 60, T0 + i);
        }
        assert_eq!(r.add(Rule::Page, "h", "/new", 1, 60, T0 + 100), 1);
        // "/0" was the oldest and is gone; "/1" is still counted.
        assert_eq!(r.add(Rule::Page, "h", "/0", 1, 60, T0 + 101), 1);
        assert_eq!(r.add(Rule::Page, "h", "/2", 1, 60, T0 + 102), 2);
    }

    #[test]
    fn raise_never_lowers() {
        let mut r = RemoteRecord::default();
        r.add(Rule::Page, "h", "/a", 4, 60, T0);
        r.raise(Rule::Page, "h", "/a", 9);
        assert_eq!(r.add(Rule::Page, "h", "/a", 0, 60, T0 + 1), 9);
        r.raise(Rule::Page, "h", "/a", 2);
        assert_eq!(r.add(Rule::Page, "h", "/a", 0, 60, T0 + 2), 9);
        // Absent windows are not created by raise.
        r.raise(Rule::Site, "h", "", 5);
        assert_eq!(r.add(Rule::Site, "h", "", 0, 60, T0 + 3), 0);
    }

    #[test]
    fn generations_are_remembered() {
        let mut r = RemoteRecord::default();
        assert_eq!(r.next_generation(T0), 1);
        r.set_block(RemoteBlock {
            until: T0 + 1,
            generation: 1,
            remembered_until: T0 + 100,
            ..Default::default()
        });
        assert_eq!(r.next_generation(T0 + 50), 2);
        assert_eq!(r.next_generation(T0 + 100), 1);
        assert!(r.active_block(T0).is_some());
        assert!(r.active_block(T0 + 1).is_none());
        assert!(r.expiry(T0) >= T0 + 100);
    }

    #[test]
    fn health_logs_one_outage_and_probes_once_per_interval() {
        let h = Health::new().unwrap();
        assert!(h.may_try(T0));
        assert_eq!(h.failed(T0), Transition::WentDown);
        let (level, line) = Transition::WentDown
            .message("memcache:127.0.0.1:11211", "connection refused")
            .unwrap();
        assert_eq!(level, Level::Warning);
        assert!(
            line.starts_with("DOSCache memcache:127.0.0.1:11211 unavailable (connection refused)")
        );
        let (level, line) = Transition::CameBack {
            down_for_us: 7_500_000,
        }
        .message("redis:127.0.0.1:6379", "")
        .unwrap();
        assert_eq!(level, Level::Notice);
        assert!(line.contains("available again after 7 s"), "{line}");
        assert_eq!(Transition::None.message("x", "y"), None);
        assert_eq!(h.failed(T0 + 1), Transition::None);
        assert!(!h.may_try(T0 + 10));
        assert!(h.may_try(T0 + 1 + RETRY_US));
        assert!(!h.may_try(T0 + 2 + RETRY_US));
        assert_eq!(
            h.succeeded(T0 + 3_000_000),
            Transition::CameBack {
                down_for_us: 3_000_000
            }
        );
        assert_eq!(h.succeeded(T0 + 3_000_001), Transition::None);
        assert!(h.may_try(T0 + 3_000_002));
        assert_eq!(h.failures(), 2);
        // Stale connections found just after the return are the same outage settling...
        assert_eq!(h.failed(T0 + 4_000_000), Transition::None);
        assert!(h.may_try(T0 + 4_000_001));
        // ...a failure well after it is a new outage.
        assert_eq!(h.failed(T0 + 3_000_000 + SETTLE_US), Transition::WentDown);
    }

    #[test]
    fn ids_differ_by_family() {
        let v4: IpAddr = "1.2.3.4".parse().unwrap();
        let v6: IpAddr = "::1.2.3.4".parse().unwrap();
        assert_ne!(record_id(v4), record_id(v6));
        assert!(record_id(v6).len() < 100);
    }
}
