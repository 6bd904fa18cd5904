//! The farm engine's health, shared by every worker process of one server (in shared memory,
//! made before the workers fork), so that an outage is logged once per server, not once per
//! process or request; and the shared tier as the status page shows it.
#![forbid(unsafe_code)]
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::Level;
use crate::store::{Micros, Region};

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
const EXTRA: usize = 32;
/// Counters after the health words, in the same 64-byte mapping.
pub const EXTRA_WORDS: usize = 4;
const RETRY_US: i64 = 1_000_000;

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

    /// [`Health::failed`] of a call that began at `started`: nothing when the engine was seen
    /// back since (the call was caught in the outage that ended; counted, no state change).
    pub fn failed_since(&self, started: Micros, now: Micros) -> Transition {
        let back = self.word(BACK_SINCE).load(Ordering::Acquire) as i64;
        if back != 0 && back >= started {
            self.word(FAILURES).fetch_add(1, Ordering::Relaxed);
            return Transition::None;
        }
        self.failed(now)
    }

    pub fn failed(&self, now: Micros) -> Transition {
        // Every failure marks the engine down, also one right after it came back: a second
        // outage must be noticed at once. (A failure of a connection kept through the outage
        // that ended is no failure here: the farm reports it as older than the return, see
        // `failed_since`.)
        self.word(FAILURES).fetch_add(1, Ordering::Relaxed);
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

    /// One of the [`EXTRA_WORDS`] counters kept beside the health (the farm's figures).
    pub fn extra(&self, i: usize) -> u64 {
        self.word(EXTRA + 8 * (i % EXTRA_WORDS))
            .load(Ordering::Relaxed)
    }

    pub fn bump_extra(&self, i: usize) {
        self.word(EXTRA + 8 * (i % EXTRA_WORDS))
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The shared tier as the status page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTier {
    /// The engine as configured (`redis:…`, `memcache:…`; passwords masked).
    pub label: String,
    pub down_since: Option<Micros>,
    pub failures: u64,
    /// Engine calls by requests, additions counted through the farm, events heard.
    pub stats: crate::farm::FarmStats,
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
            None => format!(
                "up: {} round trips for {} counted, {} events from other servers, {} failed calls so far",
                self.stats.round_trips, self.stats.counted, self.stats.events, self.failures
            ),
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
        // A call caught in the outage that failed just after the return is not a new one...
        assert_eq!(
            h.failed_since(T0 + 2_000_000, T0 + 3_100_000),
            Transition::None
        );
        assert!(h.down_since().is_none());
        // ...a failure of a call begun after the return is, noticed at once.
        assert_eq!(
            h.failed_since(T0 + 3_200_000, T0 + 4_000_000),
            Transition::WentDown
        );
        assert!(!h.may_try(T0 + 4_000_001));
    }
}
