//! The store speaks up under pressure: when a flood makes it evict live site or page records
//! or active blocks, one warning line a minute at most, naming `DOSCache` and the rate.
//!
//! The store's eviction counters live in every sub-cache (written only by their lock holder),
//! so summing them is a pass over the areas: too much for each request, cheap every
//! [`PRESSURE_CHECK_EVERY`]. One request of all workers runs each check (the metrics
//! mapping's CAS picks it); the mark it leaves says what was seen and when.
#![forbid(unsafe_code)]

use crate::config::CacheSpec;
use crate::log::{Level, Log};
use crate::metrics::{Metrics, PressureMark, PRESSURE_CHECK_EVERY};
use crate::store::{Micros, Store};

/// At most one warning this often.
pub const WARN_EVERY: Micros = 60_000_000;

/// The totals the store shows now.
fn totals(store: &Store, now: Micros) -> PressureMark {
    PressureMark {
        at: now,
        live_evicted: store.live_evicted(),
        blocks_evicted: store.blocks_evicted(),
        warned: 0,
    }
}

/// One check (the caller won it, see `Metrics::pressure_due`): compare the store's eviction
/// totals with the mark and warn when something live was evicted, unless a warning was
/// logged less than a minute ago (then the evictions add up for the next one).
pub fn check(metrics: &Metrics, store: &Store, cache: &CacheSpec, now: Micros, log: &dyn Log) {
    let mark = metrics.pressure_mark();
    let seen = totals(store, now);
    let went_back =
        seen.live_evicted < mark.live_evicted || seen.blocks_evicted < mark.blocks_evicted;
    if mark.at == 0 || went_back {
        // First look, or a new store (a resize): start counting from here.
        metrics.set_pressure_mark(PressureMark {
            warned: mark.warned,
            ..seen
        });
        return;
    }
    let live = seen.live_evicted - mark.live_evicted;
    let blocks = seen.blocks_evicted - mark.blocks_evicted;
    if live == 0 && blocks == 0 {
        metrics.set_pressure_mark(PressureMark {
            warned: mark.warned,
            ..seen
        });
        return;
    }
    if mark.warned != 0 && now.saturating_sub(mark.warned) < WARN_EVERY {
        return;
    }
    log.log(Level::Warning, &line(cache, live, blocks, now - mark.at));
    metrics.set_pressure_mark(PressureMark {
        warned: now,
        ..seen
    });
}

/// The warning: what was evicted, over how long, and what to do.
pub fn line(cache: &CacheSpec, live: u64, blocks: u64, over: Micros) -> String {
    let secs = (over.max(PRESSURE_CHECK_EVERY / 10) as f64) / 1e6;
    let rate = (live + blocks) as f64 / secs;
    format!(
        "DOSCache {cache} is too small for this traffic: {live} live records and {blocks} \
         active blocks evicted in the last {secs:.0} s ({rate:.1} a second); raise its size"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Lines;
    use crate::store::{Counter, KeyParts};
    use std::net::{IpAddr, Ipv4Addr};

    const T0: Micros = 1_800_000_000_000_000;
    const SEC: Micros = 1_000_000;

    fn flood(store: &Store, clients: u32, now: Micros) {
        for i in 0..clients {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let key = KeyParts {
                client,
                host: "h",
                path: "/",
            };
            store.add(Counter::Site, &key, 1, 60, now).unwrap();
        }
    }

    #[test]
    fn warns_once_a_minute_with_the_rate_and_only_when_live_records_go() {
        let store = Store::create(8192).unwrap(); // 32 records per area
        let metrics = Metrics::new().unwrap();
        let cache = CacheSpec::Shmcb { bytes: 8192 };
        let log = Lines::default();
        // First look: a baseline, nothing to say.
        check(&metrics, &store, &cache, T0, &log);
        assert!(log.take().is_empty());
        // Room for all: no eviction, no line.
        flood(&store, 20, T0 + SEC);
        check(&metrics, &store, &cache, T0 + 10 * SEC, &log);
        assert!(log.take().is_empty());
        // 100 more clients in 32 slots: evictions, one warning naming DOSCache and the rate.
        flood(&store, 120, T0 + 11 * SEC);
        let evicted = store.live_evicted();
        assert!(evicted > 0);
        check(&metrics, &store, &cache, T0 + 20 * SEC, &log);
        let lines = log.take();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, Level::Warning);
        assert!(
            lines[0].1.starts_with(&format!(
                "DOSCache shmcb:none(8192) is too small for this traffic: {evicted} live \
                 records and 0 active blocks evicted in the last 10 s"
            )),
            "{}",
            lines[0].1
        );
        // More evictions within the minute: no line yet, they add up for the next one.
        flood(&store, 200, T0 + 25 * SEC);
        check(&metrics, &store, &cache, T0 + 30 * SEC, &log);
        check(&metrics, &store, &cache, T0 + 70 * SEC, &log);
        assert!(log.take().is_empty());
        check(&metrics, &store, &cache, T0 + 80 * SEC, &log);
        let lines = log.take();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let more = store.live_evicted() - evicted;
        assert!(
            lines[0].1.contains(&format!("{more} live records")),
            "{}",
            lines[0].1
        );
        assert!(lines[0].1.contains("in the last 60 s"), "{}", lines[0].1);
    }

    #[test]
    fn the_check_is_claimed_by_one_caller_each_period() {
        let metrics = Metrics::new().unwrap();
        assert!(metrics.pressure_due(T0));
        assert!(!metrics.pressure_due(T0));
        assert!(!metrics.pressure_due(T0 + PRESSURE_CHECK_EVERY - 1));
        assert!(metrics.pressure_due(T0 + PRESSURE_CHECK_EVERY));
        let winners = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| metrics.pressure_due(T0 + 5 * PRESSURE_CHECK_EVERY)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(winners, 1);
    }
}
