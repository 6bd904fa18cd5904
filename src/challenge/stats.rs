//! Challenges issued and passed, in a small shared mapping every worker adds to and the
//! status page reads (made by the parent before the workers fork, like the would-be block
//! ring). Counters only: a display aid, reset when the parent process starts.
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use crate::store::Region;

pub struct Stats {
    region: Region,
}

/// The counters, in slot order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Challenge pages served.
    pub issued: u64,
    /// Solutions accepted (passes handed out).
    pub passed: u64,
    /// Submissions refused (bad, stale or insufficient work).
    pub failed: u64,
    /// Requests let through a block by a valid pass.
    pub pass_requests: u64,
}

const ISSUED: usize = 0;
const PASSED: usize = 8;
const FAILED: usize = 16;
const PASS_REQUESTS: usize = 24;

impl Stats {
    pub fn new() -> std::io::Result<Stats> {
        Ok(Stats {
            region: Region::new(64)?,
        })
    }
    fn bump(&self, off: usize) {
        self.region.u64_at(off).fetch_add(1, Ordering::Relaxed);
    }
    pub fn issued(&self) {
        self.bump(ISSUED)
    }
    pub fn passed(&self) {
        self.bump(PASSED)
    }
    pub fn failed(&self) {
        self.bump(FAILED)
    }
    pub fn pass_request(&self) {
        self.bump(PASS_REQUESTS)
    }
    pub fn counts(&self) -> Counts {
        let get = |off| self.region.u64_at(off).load(Ordering::Relaxed);
        Counts {
            issued: get(ISSUED),
            passed: get(PASSED),
            failed: get(FAILED),
            pass_requests: get(PASS_REQUESTS),
        }
    }
}

/// This server's counters, mapped on first use (by the parent, before the workers fork), or
/// why they could not be.
pub fn stats_mapping() -> Result<&'static Stats, &'static std::io::Error> {
    static STATS: OnceLock<std::io::Result<Stats>> = OnceLock::new();
    STATS.get_or_init(Stats::new).as_ref()
}

/// This server's counters (None when the mapping could not be made).
pub fn stats() -> Option<&'static Stats> {
    stats_mapping().ok()
}
