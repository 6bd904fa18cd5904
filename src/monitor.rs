//! Would-be blocks of `DOSEnabled monitor`: the most recent ones, in a small ring in shared
//! memory that every worker writes and the status page reads.
//!
//! Layout: a header word (the next slot, counting up forever) and [`SLOTS`] slots of four
//! words: `at` (µs, 0 = empty), `client` high and low halves (IPv6 form; IPv4 as mapped),
//! and `rule | count | score` packed. A writer claims a slot with one fetch_add and stores the
//! words; a reader may see a slot half-written by a concurrent writer and then shows a mix of
//! two would-be blocks — acceptable for a display, and nothing is decoded unchecked.
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;

use crate::client::normalise;
use crate::store::{Counter, Micros, Region};

/// How many recent would-be blocks are kept.
pub const SLOTS: usize = 64;
const WORDS: usize = 4;

/// One would-be block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock {
    pub at: Micros,
    /// The client, or the network address of a network's would-be block.
    pub client: IpAddr,
    /// 0, or the network's prefix length.
    pub prefix: u8,
    pub rule: Counter,
    pub score: i64,
    pub count: u32,
}

pub struct WouldBlocks {
    region: Region,
}

fn slot_offset(slot: usize) -> usize {
    8 + slot * WORDS * 8
}

impl WouldBlocks {
    pub fn new() -> std::io::Result<WouldBlocks> {
        Ok(WouldBlocks {
            region: Region::new(slot_offset(SLOTS))?,
        })
    }

    /// Remember a would-be block.
    pub fn record(&self, w: &WouldBlock) {
        let slot = (self.region.u64_at(0).fetch_add(1, Ordering::Relaxed) as usize) % SLOTS;
        let o = slot_offset(slot);
        let v6 = match w.client {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        let bits = u128::from(v6);
        let rule = u64::from(w.rule.code()) | u64::from(crate::prefix::code(w.prefix)) << 4;
        let score = w.score.clamp(0, i64::from(u32::MAX >> 8)) as u64;
        // 8 bits rule (low 4) and network level (high 4) | 24 bits score (capped) | 32 bits count.
        let packed = rule << 56 | score << 32 | u64::from(w.count);
        self.region
            .u64_at(o + 8)
            .store((bits >> 64) as u64, Ordering::Relaxed);
        self.region
            .u64_at(o + 16)
            .store(bits as u64, Ordering::Relaxed);
        self.region.u64_at(o + 24).store(packed, Ordering::Relaxed);
        self.region
            .u64_at(o)
            .store(w.at.max(1) as u64, Ordering::Release);
    }

    /// The would-be blocks of the last `window` µs, newest first.
    pub fn recent(&self, now: Micros, window: Micros) -> Vec<WouldBlock> {
        let mut out: Vec<WouldBlock> = (0..SLOTS)
            .filter_map(|slot| {
                let o = slot_offset(slot);
                let at = self.region.u64_at(o).load(Ordering::Acquire) as i64;
                if at <= 0 || at > now || now.saturating_sub(at) > window {
                    return None;
                }
                let hi = self.region.u64_at(o + 8).load(Ordering::Relaxed);
                let lo = self.region.u64_at(o + 16).load(Ordering::Relaxed);
                let packed = self.region.u64_at(o + 24).load(Ordering::Relaxed);
                let rule = Counter::from_code(((packed >> 56) & 0xf) as u8)?;
                let prefix = crate::prefix::from_code((packed >> 60) as u8);
                let client = normalise(IpAddr::V6(Ipv6Addr::from(
                    u128::from(hi) << 64 | u128::from(lo),
                )));
                Some(WouldBlock {
                    at,
                    client,
                    prefix,
                    rule,
                    score: ((packed >> 32) & 0xff_ffff) as i64,
                    count: packed as u32,
                })
            })
            .collect();
        out.sort_by_key(|w| std::cmp::Reverse(w.at));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000_000_000;

    fn w(client: &str, at: Micros) -> WouldBlock {
        WouldBlock {
            at,
            client: client.parse().unwrap(),
            prefix: 0,
            rule: Counter::Page,
            score: 3,
            count: 2,
        }
    }

    #[test]
    fn keeps_the_most_recent_newest_first() {
        let ring = WouldBlocks::new().unwrap();
        assert!(ring.recent(T0, 60_000_000).is_empty());
        ring.record(&w("192.0.2.1", T0));
        ring.record(&w("2001:db8::", T0 + 1));
        let got = ring.recent(T0 + 2, 60_000_000);
        assert_eq!(got, vec![w("2001:db8::", T0 + 1), w("192.0.2.1", T0)]);
        // Older than the window: gone from the list.
        assert!(ring.recent(T0 + 61_000_000, 60_000_000).is_empty());
    }

    #[test]
    fn a_network_s_would_be_block_keeps_its_prefix() {
        let ring = WouldBlocks::new().unwrap();
        let net = WouldBlock {
            prefix: 48,
            rule: Counter::Site,
            ..w("2001:db8:aa::", T0)
        };
        ring.record(&net);
        assert_eq!(ring.recent(T0 + 1, 60_000_000), vec![net]);
    }

    #[test]
    fn a_full_ring_overwrites_the_oldest() {
        let ring = WouldBlocks::new().unwrap();
        for i in 0..(SLOTS as i64 + 10) {
            ring.record(&w("192.0.2.9", T0 + i));
        }
        let got = ring.recent(T0 + 1000, 60_000_000);
        assert_eq!(got.len(), SLOTS);
        assert_eq!(got[0].at, T0 + SLOTS as i64 + 9);
        assert_eq!(got[SLOTS - 1].at, T0 + 10);
    }

    #[test]
    fn shared_with_a_forked_child() {
        let ring = WouldBlocks::new().unwrap();
        // SAFETY: the child only writes to the shared mapping and exits without unwinding.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                ring.record(&w("198.51.100.7", T0));
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        assert_eq!(ring.recent(T0 + 1, 60_000_000), vec![w("198.51.100.7", T0)]);
    }
}
